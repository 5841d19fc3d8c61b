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

Only :class:`Model`, :class:`Geometry`, :class:`Data` and the wavelet/resampling helpers are
imported with the package; the Devito side (propagators, objectives, imaging, …) is imported
on first use, and the PyTorch sibling :mod:`timeprobe.xconv` needs neither Devito nor
matplotlib — ``pip install "timeprobe[torch]"`` is enough for it.
"""
import importlib as _importlib
import os as _os

# Devito reads its configuration from the environment at import: default to
# OpenMP (all cores) and quiet logs unless the user chose otherwise.
_os.environ.setdefault("DEVITO_LANGUAGE", "openmp")
_os.environ.setdefault("DEVITO_LOGGING", "WARNING")

from .mpi import default_threads as _default_threads  # noqa: E402

_default_threads()  # under DEVITO_MPI: the cores shared out between the ranks of one machine

from .geometry import Data, Geometry, resample, ricker, time_axis  # noqa: E402
from .model import Model, smooth_model  # noqa: E402

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "forward": "propagators", "adjoint": "propagators", "born": "propagators",
    "born_adjoint": "propagators",
    "fwi_objective": "objectives", "jacobian_adjoint": "objectives",
    "rtm": "imaging", "lsrtm_objective": "imaging",
    "gradient": "strategies", "gathers": "imaging", "Gathers": "imaging",
    "design_probes": "probing", "ProbingOptions": "probing",
    "read_segy": "io", "write_segy": "io",
    "spg": "optimize", "lbfgsb": "optimize",
    "local_client": "parallel",
    "fwi": "inversion",
    "jacobian_operator": "linops",
}
_SUBMODULES = ("xconv", "propagators", "objectives", "imaging", "strategies", "probing", "io", "optimize",
               "parallel", "operators", "workspace", "compat", "probe_buffers", "testing", "utils", "inversion",
               "cli", "preprocessing", "wavelet", "acquisition", "plotting", "linops", "mpi")

__all__ = ["Model", "Geometry", "Data", "ricker", "resample", "time_axis", "smooth_model"] + list(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None and name not in _SUBMODULES:
        raise AttributeError(f"module 'timeprobe' has no attribute {name!r}")
    try:
        mod = _importlib.import_module(f".{module or name}", __name__)
    except ModuleNotFoundError as e:
        if e.name == "devito":
            raise ImportError(f"timeprobe.{name} needs Devito, which is not installed: "
                              f"pip install 'timeprobe[seismic]' (or 'devito>=4.8.23,<4.9')") from e
        raise
    value = getattr(mod, name) if module else mod
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
