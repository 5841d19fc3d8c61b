"""Built-in synthetic models (no download needed) and initial-model smoothing.

:func:`synthetic_thrust` is a **synthetic** layered model cut by a thrust fault,
built from formulas in this file. It is *not* the SEG/EAGE Overthrust model, only
a structure of the same kind (water layer, dipping layers, a thrust ramp with an
uplifted, folded hanging wall) for offline examples and tests.
"""
from __future__ import annotations

import numpy as np

from timeprobe.model import Model, smooth_model
from timeprobe.optimize import detect_water_rows

__all__ = ["synthetic_thrust", "initial_model", "detect_water_rows", "SYNTHETIC_LAYER_VELOCITIES"]

# Interval velocities (km/s) from the sea floor down: a slow near-surface unit, a
# low-velocity layer under a fast cap (as thrust belts often show), then carbonates/basement.
SYNTHETIC_LAYER_VELOCITIES = (1.9, 2.3, 2.8, 3.4, 3.0, 3.9, 4.4, 4.8, 5.2)


def synthetic_thrust(nx=401, nz=121, spacing=(25.0, 25.0), water_depth=500.0, dip_deg=4.0,
                     fault_x=0.45, fault_dip_deg=30.0, throw=600.0, fold_amplitude=400.0,
                     velocities=SYNTHETIC_LAYER_VELOCITIES, gradient=0.2, **model_kwargs):
    r"""SYNTHETIC thrust-and-layers model (not the SEG/EAGE Overthrust), as a :class:`timeprobe.Model`.

    Construction, with ``x`` lateral and ``z`` depth coordinates (m), ``X, Z`` the
    model extents:

    * water ``vp = 1.5`` km/s for ``z < water_depth`` (rounded to whole grid rows);
    * layer interfaces below the sea floor, ``z_k(x) = z_w + (k + ½) H + tan(dip) x``
      (``H`` = sub-sea-floor depth / number of layers), i.e. parallel layers dipping by
      ``dip_deg``;
    * a thrust fault, the plane ``z = z_w + tan(θ) (x − x_f)`` with ``x_f = fault_x·X``
      and ``θ = fault_dip_deg``; points above it (the hanging wall) take the layering
      at ``(x + s cos θ, z + s sin θ)`` with ``s = throw`` (moved up-dip along the ramp),
      plus an anticline ``fold_amplitude · exp(−((x − x_f − X/8)/(X/10))²)`` lifting
      the hanging-wall layers;
    * layer ``k`` gets ``velocities[k]`` plus ``gradient`` km/s per km of depth
      below its top, and nothing exceeds ``max(velocities) + 0.3`` km/s.

    With the defaults: 401 × 121 points at 25 m (10 km × 3 km), 20 water rows,
    ``vp`` from 1.5 to about 5.2 km/s. Deterministic (no random numbers).

    Parameters
    ----------
    nx, nz : int
        Grid size (lateral, depth).
    spacing : (float, float)
        Grid spacing (m).
    water_depth : float
        Water thickness (m); 0 for none.
    dip_deg, fault_x, fault_dip_deg, throw, fold_amplitude
        Structure, see above (degrees, fraction of the width, degrees, m, m).
    velocities : sequence of float
        Interval velocities (km/s) from the sea floor down, all in [1.5, 8].
    gradient : float
        Velocity increase within each layer (km/s per km).
    **model_kwargs
        Passed to :class:`timeprobe.Model` (``nbl``, ``space_order``, ``dt``...).
    """
    for name, v in (("nx", nx), ("nz", nz)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (2,)))
    if min(spacing) <= 0:
        raise ValueError(f"spacing must be positive (m), got {spacing}")
    velocities = np.asarray(velocities, dtype=np.float64)
    if velocities.ndim != 1 or velocities.size == 0 or velocities.min() < 1.5 or velocities.max() > 8:
        raise ValueError(f"velocities must be a non-empty list of km/s values in [1.5, 8], got {velocities}")
    dx, dz = spacing
    wrows = int(round(water_depth / dz))
    if water_depth < 0 or wrows >= nz - 1:
        raise ValueError(f"water_depth = {water_depth} m leaves no sediment in a model {(nz - 1) * dz} m deep")
    if not 0 <= fault_x <= 1:
        raise ValueError(f"fault_x is a fraction of the model width in [0, 1], got {fault_x}")
    if not 0 < fault_dip_deg < 90:
        raise ValueError(f"fault_dip_deg must lie in (0, 90), got {fault_dip_deg}")

    x = np.arange(nx)[:, None] * dx
    z = np.arange(nz)[None, :] * dz
    X, Z = (nx - 1) * dx, (nz - 1) * dz
    zw = wrows * dz
    nlay = velocities.size
    H = (Z - zw) / nlay
    tan_dip = np.tan(np.radians(dip_deg))

    def layering(xq, zq):
        """Layer index and depth below the layer top for the undeformed, dipping stack."""
        rel = zq - zw - tan_dip * xq - 0.5 * H  # depth relative to the first interface
        k = np.clip(np.floor(rel / H) + 1, 0, nlay - 1)
        top = zw + tan_dip * xq + np.where(k > 0, (k - 0.5) * H, -np.inf)
        below_top = np.clip(zq - np.maximum(top, zw), 0, None)
        return k.astype(int), below_top

    theta = np.radians(fault_dip_deg)
    xf = fault_x * X
    hanging = z < zw + np.tan(theta) * (x - xf)
    fold = fold_amplitude * np.exp(-(((x - xf - X / 8) / (X / 10)) ** 2))
    # the fault dips towards +x, so up-dip is −x: a hanging-wall point came from
    # (x + s cos θ, z + s sin θ); undo that displacement and the fold to read the hanging wall's original layering
    xs = np.where(hanging, x + throw * np.cos(theta), x)
    zs = np.where(hanging, z + throw * np.sin(theta) + fold, z)
    k, below = layering(np.broadcast_to(xs, (nx, nz)), np.broadcast_to(zs, (nx, nz)))
    vp = velocities[k] + gradient * below / 1000.0
    vp = np.minimum(vp, velocities.max() + 0.3)
    vp[:, :wrows] = 1.5
    return Model(vp=vp.astype(np.float32), spacing=spacing, **model_kwargs)


def initial_model(model, sigma_m, water_rows=None, vwater=1.5):
    r"""Smooth initial model: Gaussian smoothing of the slowness below the water layer.

    With ``w`` water rows (depth last) and slowness ``s = √m``::

        s̃ = G_σ * E(s),   m0 = s̃²  below the water,   m0 = m  in the top w rows

    where ``E`` replaces the water rows by copies of the first sub-water row, so
    that smoothing does not drag the slow water velocity into the sediments and the
    sea floor stays sharp; ``G_σ`` is a Gaussian of standard deviation ``sigma_m``
    (m; scalar or one per axis).

    Parameters
    ----------
    model : timeprobe.Model
    sigma_m : float or sequence of float
        Smoothing length in m (must be positive).
    water_rows : int, optional
        Number of water rows; detected as the top rows where ``vp ≈ vwater``
        everywhere when omitted (0 if there is no water).

    Returns
    -------
    timeprobe.Model
        Same grid and settings as ``model``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a timeprobe.Model, got {type(model).__name__}")
    sig = np.asarray(sigma_m, dtype=np.float64)
    if sig.size not in (1, model.dim) or np.any(~np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"sigma_m must be a positive length in m (or one per axis), got {sigma_m!r}")
    nz = model.shape[-1]
    if water_rows is None:
        water_rows = detect_water_rows(model.vp, vwater)
    if isinstance(water_rows, bool) or not isinstance(water_rows, (int, np.integer)) or not 0 <= water_rows < nz:
        raise ValueError(f"water_rows must be an integer in [0, {nz - 1}], got {water_rows!r}")
    m = model.m
    ext = np.array(m, dtype=np.float64)
    if water_rows:
        ext[..., :water_rows] = ext[..., water_rows:water_rows + 1]
    out = smooth_model(ext, sig, model.spacing).astype(m.dtype)
    out[..., :water_rows] = m[..., :water_rows]
    return model.with_m(out)
