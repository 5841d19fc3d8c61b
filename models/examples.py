"""True/initial model pairs for examples, with an honest offline fallback."""
from __future__ import annotations

import warnings

from .overthrust import overthrust_pair
from .synthetic import initial_model, synthetic_thrust

__all__ = ["example_models"]

# synthetic stand-ins with the grid of each Overthrust file (25 m, 20 water rows)
_SIZES = {"small": (401, 121), "2D": (801, 207)}


def example_models(which="small", download=False, allow_synthetic=True, sigma_m=300.0, **kwargs):
    """``(model_true, model_initial, label)`` for examples and notebooks.

    Returns the SEG/EAGE Overthrust pair (:func:`overthrust_pair`: datasets ``m`` and
    ``m0``) when the file can be found (or downloaded, with ``download=True``).
    Otherwise, with ``allow_synthetic``, returns the SYNTHETIC thrust model of the
    same grid (:func:`synthetic_thrust`, 25 m, 500 m of water) and its
    :func:`initial_model` (smoothing ``sigma_m`` m below the water), warns
    (``UserWarning`` giving the reason), and says so in ``label``. Without
    ``allow_synthetic`` the ``FileNotFoundError`` propagates.

    ``kwargs``: lookup arguments of :func:`find_overthrust` (``search``, ``cache_dir``,
    ``url``, ``use_defaults``) and :class:`timeprobe.Model` arguments (``nbl``...).
    """
    if which not in _SIZES:
        raise ValueError(f"which must be one of {sorted(_SIZES)}, got {which!r}")
    lookup = {k: kwargs.pop(k) for k in ("search", "cache_dir", "url", "use_defaults") if k in kwargs}
    try:
        true, init = overthrust_pair(which, download=download, **lookup, **kwargs)
        return true, init, f"SEG/EAGE Overthrust ({which})"
    except FileNotFoundError as e:
        if not allow_synthetic:
            raise
        reason = str(e).splitlines()[0]
    warnings.warn(f"{reason} Using the SYNTHETIC thrust model instead (not Overthrust); pass download=True, "
                  f"search=... or set TIMEPROBE_DATA to use the real model.", UserWarning, stacklevel=2)
    nx, nz = _SIZES[which]
    fixed_dt = kwargs.pop("dt", None)
    true = synthetic_thrust(nx=nx, nz=nz, spacing=(25.0, 25.0), water_depth=500.0, **kwargs)
    init = initial_model(true, sigma_m, water_rows=20)
    dt = fixed_dt if fixed_dt is not None else min(true.critical_dt, init.critical_dt)
    true.dt = dt
    init.dt = dt
    return true, init, f"synthetic thrust model, {nx}x{nz} (not Overthrust)"
