"""timeprobe — low-memory wave-equation inversion by randomized trace estimation.

The adjoint-state gradient of ½‖F(m)q − d‖² with respect to the squared slowness,
``g(x) = −Σ_t dt·u(t, x)·v̈(t, x)``, is a trace over time. timeprobe estimates it
with probe vectors ``Q`` (nt × r) accumulated *during* propagation, so the
forward wavefield is never stored: memory r·N instead of nt·N.

Main entry points::

    import timeprobe as tp
    model = tp.Model(vp=vp, spacing=(25., 25.))
    d = tp.forward(model, q, rec_geometry)
    f, g = tp.fwi_objective(model0, q, d, ps=32)       # probed gradient (ps=None: exact)

Units: m, ms, km/s, kHz; squared slowness in s²/km² (see :mod:`timeprobe.model`).
The PyTorch sibling lives in :mod:`timeprobe.xconv` (imported on first use; torch
is not needed for the rest of the package).
"""
import os as _os

# Devito reads its configuration from the environment at import: default to
# OpenMP (all cores) and quiet logs unless the user chose otherwise.
_os.environ.setdefault("DEVITO_LANGUAGE", "openmp")
_os.environ.setdefault("DEVITO_LOGGING", "WARNING")

from .geometry import Data, Geometry, resample, ricker, time_axis  # noqa: E402
from .model import Model, smooth_model  # noqa: E402
from .propagators import adjoint, born, born_adjoint, forward  # noqa: E402
from .objectives import fwi_objective, jacobian_adjoint  # noqa: E402
from .imaging import lsrtm_objective, rtm  # noqa: E402
from .fwi import fwi  # noqa: E402  (the function; the module stays importable as timeprobe.fwi)

__version__ = "0.1.0"

__all__ = ["Model", "Geometry", "Data", "ricker", "resample", "time_axis", "smooth_model",
           "forward", "adjoint", "born", "born_adjoint", "fwi_objective", "jacobian_adjoint"]
__all__ += ["rtm", "lsrtm_objective", "fwi"]


def __getattr__(name):
    # Lazy sub-packages: `timeprobe.xconv` needs torch, the rest must not.
    if name == "xconv":
        import importlib
        return importlib.import_module(".xconv", __name__)
    raise AttributeError(f"module 'timeprobe' has no attribute {name!r}")
