"""Built-in synthetic models (no download needed) and initial-model smoothing.

:func:`synthetic_thrust` (2D) and :func:`synthetic_thrust_3d` are **synthetic**
layered models cut by a thrust fault, built from formulas in this file. They are
*not* the SEG/EAGE Overthrust model, only structures of the same kind (water layer,
dipping layers, a thrust ramp with an uplifted, folded hanging wall; in 3D also a
curved fault trace, a plunging fold, a buried channel and a low-velocity pocket) for
offline examples and tests.
"""
from __future__ import annotations

import numpy as np

from timeprobe.model import Model, smooth_model
from timeprobe.optimize import detect_water_rows

__all__ = ["synthetic_thrust", "synthetic_thrust_3d", "initial_model", "detect_water_rows",
           "SYNTHETIC_LAYER_VELOCITIES"]

# Interval velocities (km/s) from the sea floor down: a slow near-surface unit, a
# low-velocity layer under a fast cap (as thrust belts often show), then carbonates/basement.
SYNTHETIC_LAYER_VELOCITIES = (1.9, 2.3, 2.8, 3.4, 3.0, 3.9, 4.4, 4.8, 5.2)

# points per block when a 3D model is built in slabs of constant y (bounds the temporaries)
_BLOCK_POINTS = 1 << 19


def _check_size(**sizes):
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")


def _check_spacing(spacing, ndim):
    s = np.asarray(spacing, dtype=float)
    if s.ndim > 1 or s.size not in (1, ndim):
        raise ValueError(f"spacing must be one value or {ndim} values (m), got {spacing!r}")
    spacing = tuple(float(v) for v in np.broadcast_to(s, (ndim,)))
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"spacing must be positive (m), got {spacing}")
    return spacing


def _check_structure(velocities, water_depth, dz, nz, fault_x, fault_dip_deg):
    """Validated layer velocities (float64 array) and the number of water rows."""
    velocities = np.asarray(velocities, dtype=np.float64)
    if velocities.ndim != 1 or velocities.size == 0 or velocities.min() < 1.5 or velocities.max() > 8:
        raise ValueError(f"velocities must be a non-empty list of km/s values in [1.5, 8], got {velocities}")
    wrows = int(round(water_depth / dz))
    if water_depth < 0 or wrows >= nz - 1:
        raise ValueError(f"water_depth = {water_depth} m leaves no sediment in a model {(nz - 1) * dz} m deep")
    if not 0 <= fault_x <= 1:
        raise ValueError(f"fault_x is a fraction of the model width in [0, 1], got {fault_x}")
    if not 0 < fault_dip_deg < 90:
        raise ValueError(f"fault_dip_deg must lie in (0, 90), got {fault_dip_deg}")
    return velocities, wrows


class _ThrustStack:
    """The dipping layer stack, cut by the thrust plane and folded above it.

    Shared by the 2D and 3D builders: the 3D model is the 2D construction with a
    fault position and fold amplitude that vary along y, plus an optional cross dip.
    """

    def __init__(self, X, Z, zw, velocities, dip_deg, fault_dip_deg, throw, gradient, cross_dip_deg=0.0):
        self.X, self.zw = X, zw
        self.velocities = velocities
        self.nlay = velocities.size
        self.H = (Z - zw) / self.nlay
        self.tan_dip = np.tan(np.radians(dip_deg))
        self.tan_cross = np.tan(np.radians(cross_dip_deg))
        self.theta = np.radians(fault_dip_deg)
        self.throw = throw
        self.gradient = gradient

    def layering(self, xq, zq, y=None):
        """Layer index and depth below the layer top for the undeformed, dipping stack."""
        shift = self.tan_dip * xq
        if y is not None:
            shift = shift + self.tan_cross * y
        rel = zq - self.zw - shift - 0.5 * self.H  # depth relative to the first interface
        k = np.clip(np.floor(rel / self.H) + 1, 0, self.nlay - 1)
        top = self.zw + shift + np.where(k > 0, (k - 0.5) * self.H, -np.inf)
        below_top = np.clip(zq - np.maximum(top, self.zw), 0, None)
        return k.astype(int), below_top

    def fold(self, x, xf, amplitude):
        """Uplift (m) of the hanging-wall layers: an anticline X/8 in front of the fault trace."""
        return amplitude * np.exp(-(((x - xf - self.X / 8) / (self.X / 10)) ** 2))

    def vp(self, x, z, xf, fold, y=None):
        """Velocity (km/s, float64) at the points ``x, z`` (and ``y``), broadcast together.

        ``xf``: where the fault plane meets the sea floor (m); ``fold``: hanging-wall uplift (m).
        """
        hanging = z < self.zw + np.tan(self.theta) * (x - xf)
        # the fault dips towards +x, so up-dip is −x: a hanging-wall point came from
        # (x + s cos θ, z + s sin θ); undo that displacement and the fold to read the hanging wall's original layering
        xs = np.where(hanging, x + self.throw * np.cos(self.theta), x)
        zs = np.where(hanging, z + self.throw * np.sin(self.theta) + fold, z)
        xs, zs = np.broadcast_arrays(xs, zs)
        k, below = self.layering(xs, zs, y)
        vp = self.velocities[k] + self.gradient * below / 1000.0
        return np.minimum(vp, self.velocities.max() + 0.3)


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
    :func:`synthetic_thrust_3d` is the 3D counterpart.

    Parameters
    ----------
    nx, nz : int
        Grid size (lateral, depth).
    spacing : float or (float, float)
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
    _check_size(nx=nx, nz=nz)
    spacing = _check_spacing(spacing, 2)
    dx, dz = spacing
    velocities, wrows = _check_structure(velocities, water_depth, dz, nz, fault_x, fault_dip_deg)
    X, Z = (nx - 1) * dx, (nz - 1) * dz
    stack = _ThrustStack(X, Z, wrows * dz, velocities, dip_deg, fault_dip_deg, throw, gradient)
    x = np.arange(nx)[:, None] * dx
    z = np.arange(nz)[None, :] * dz
    xf = fault_x * X
    vp = stack.vp(x, z, xf, stack.fold(x, xf, fold_amplitude))
    vp[:, :wrows] = 1.5
    return Model(vp=vp.astype(np.float32), spacing=spacing, **model_kwargs)


def synthetic_thrust_3d(nx=241, ny=241, nz=121, spacing=(25.0, 25.0, 25.0), water_depth=500.0, dip_deg=4.0,
                        cross_dip_deg=2.0, fault_x=0.45, fault_bend=0.05, fault_dip_deg=30.0, throw=600.0,
                        fold_amplitude=400.0, fold_plunge=0.5, velocities=SYNTHETIC_LAYER_VELOCITIES,
                        gradient=0.2, channel_velocity=2.6, channel_x=0.2, channel_depth=None,
                        channel_width=None, channel_thickness=None, anomaly_dv=-0.5, anomaly_depth=None,
                        **model_kwargs):
    r"""SYNTHETIC 3D thrust model (not the SEG/EAGE Overthrust): layers, a thrust fault, a channel, a gas pocket.

    Coordinates ``x`` (across the fault's strike), ``y`` (along strike), ``z`` (depth),
    in m; ``X, Y, Z`` the model extents, ``z_w`` the water depth, ``Z_s = Z − z_w`` the
    sediment thickness. Every ``y`` section is built like :func:`synthetic_thrust`
    (same parameters, same meaning), with these changes:

    * layer interfaces ``z_k(x, y) = z_w + (k + ½) H + tan(dip) x + tan(cross_dip) y``;
    * the fault meets the sea floor on a curved trace (a salient bowed towards −x,
      the transport direction), ``x_f(y) = (fault_x − fault_bend · sin(π y/Y)) · X``;
      the fault plane is ``z = z_w + tan(θ) (x − x_f(y))``;
    * the hanging-wall anticline plunges towards both ends of the fault: its uplift is
      ``a(y) · exp(−((x − x_f(y) − X/8)/(X/10))²)`` with
      ``a(y) = fold_amplitude · (1 − fold_plunge · cos²(π y/Y))`` (a four-way closure);
    * a meandering channel (late, so it cuts the faulted layers), filled with
      ``channel_velocity``: centre line ``x_c(y) = channel_x·X + w sin(3π y/Y)`` (1.5
      meander wavelengths), flat top at ``z_w + channel_depth``, a parabolic base
      ``thickness · (1 − (2d/w)²)`` deeper, ``d`` the horizontal distance to the centre
      line measured across it and ``w = channel_width``;
    * a gas pocket: ``anomaly_dv`` km/s is added inside the ellipsoid centred under the
      fold crest, ``(x_f(Y/2) + X/8, Y/2, z_w + anomaly_depth)``, semi-axes
      ``(X/16, Y/8, max(Z_s/25, 2 dz))`` (a gas sand may be slower than water);
    * water ``vp = 1.5`` km/s above ``water_depth`` (whole grid rows), as in 2D.

    Defaults: 241 × 241 × 121 points at 25 m (6 km × 6 km × 3 km), 20 water rows;
    ``channel_depth = 0.1 Z_s``, ``channel_width = max(X/15, 4 dx)``,
    ``channel_thickness = max(Z_s/20, 3 dz)``, ``anomaly_depth = 0.4 Z_s``.
    ``channel_velocity=None`` drops the channel and ``anomaly_dv=0`` the pocket; with
    those and ``fault_bend = fold_plunge = cross_dip_deg = 0`` every ``y`` section equals
    :func:`synthetic_thrust` with the same parameters. Deterministic (no random numbers).

    Cost: the model is built in slabs of constant ``y`` (about 5·10⁵ points each), so
    the working memory is the float32 result plus a few slab-sized temporaries, and
    :class:`timeprobe.Model` then holds one float64 copy while it converts; no Python
    loop runs over points.

    Parameters
    ----------
    nx, ny, nz : int
        Grid size (x, y, depth), each ≥ 2.
    spacing : float or (float, float, float)
        Grid spacing (m).
    water_depth : float
        Water thickness (m); 0 for none.
    dip_deg, cross_dip_deg : float
        Layer dip along x and along y (degrees).
    fault_x, fault_bend : float
        Fault trace position and bend, fractions of the width ``X``.
    fault_dip_deg, throw, fold_amplitude, fold_plunge
        Fault dip (degrees), throw (m), fold uplift (m), plunge (fraction in [0, 1]).
    velocities : sequence of float
        Interval velocities (km/s) from the sea floor down, all in [1.5, 8].
    gradient : float
        Velocity increase within each layer (km/s per km).
    channel_velocity : float or None
        Channel fill velocity (km/s, in [1.5, 8]); ``None`` for no channel.
    channel_x : float
        Channel centre line, fraction of the width.
    channel_depth, channel_width, channel_thickness : float, optional
        Channel top below the sea floor, width and thickness (m).
    anomaly_dv : float
        Velocity change inside the gas pocket (km/s, in [-1, 2]; 0 for none).
    anomaly_depth : float, optional
        Depth of the pocket's centre below the sea floor (m).
    **model_kwargs
        Passed to :class:`timeprobe.Model` (``nbl``, ``space_order``, ``dt``...).

    Returns
    -------
    timeprobe.Model
        Shape ``(nx, ny, nz)``.
    """
    _check_size(nx=nx, ny=ny, nz=nz)
    spacing = _check_spacing(spacing, 3)
    dx, dy, dz = spacing
    velocities, wrows = _check_structure(velocities, water_depth, dz, nz, fault_x, fault_dip_deg)
    if not 0 <= fold_plunge <= 1:
        raise ValueError(f"fold_plunge must lie in [0, 1], got {fold_plunge}")
    if not 0 <= channel_x <= 1:
        raise ValueError(f"channel_x is a fraction of the model width in [0, 1], got {channel_x}")
    X, Y, Z = (nx - 1) * dx, (ny - 1) * dy, (nz - 1) * dz
    zw = wrows * dz
    Zs = Z - zw
    channel_depth = 0.1 * Zs if channel_depth is None else float(channel_depth)
    channel_width = max(X / 15, 4 * dx) if channel_width is None else float(channel_width)
    channel_thickness = max(Zs / 20, 3 * dz) if channel_thickness is None else float(channel_thickness)
    anomaly_depth = 0.4 * Zs if anomaly_depth is None else float(anomaly_depth)
    if channel_velocity is not None:
        if not 1.5 <= channel_velocity <= 8:
            raise ValueError(f"channel_velocity must lie in [1.5, 8] km/s (or be None), got {channel_velocity}")
        if channel_width <= 0 or channel_thickness <= 0:
            raise ValueError(f"channel_width and channel_thickness must be positive (m), got "
                             f"{channel_width} and {channel_thickness}")
        if channel_depth < 0 or channel_depth + channel_thickness > Zs:
            raise ValueError(f"the channel (top {channel_depth} m below the sea floor, {channel_thickness} m "
                             f"thick) does not fit in the {Zs} m of sediment")
    if not -1.0 <= anomaly_dv <= 2.0:
        raise ValueError(f"anomaly_dv must lie in [-1, 2] km/s, got {anomaly_dv}")
    if anomaly_dv and not 0 <= anomaly_depth <= Zs:
        raise ValueError(f"anomaly_depth = {anomaly_depth} m is not within the {Zs} m of sediment")

    stack = _ThrustStack(X, Z, zw, velocities, dip_deg, fault_dip_deg, throw, gradient, cross_dip_deg)
    x = np.arange(nx)[:, None, None] * dx
    z = np.arange(nz)[None, None, :] * dz
    yall = np.arange(ny) * dy

    def fault_trace(y):
        return (fault_x - fault_bend * np.sin(np.pi * y / Y)) * X

    # gas pocket: ellipsoid under the fold crest at the middle of the fault
    centre = np.array([fault_trace(Y / 2) + X / 8, Y / 2, zw + anomaly_depth])
    radii = np.array([X / 16, Y / 8, max(Zs / 25, 2 * dz)])

    m = np.empty((nx, ny, nz), dtype=np.float32)
    block = max(1, _BLOCK_POINTS // (nx * nz))
    for j0 in range(0, ny, block):
        y = yall[j0:j0 + block][None, :, None]
        xf = fault_trace(y)
        amplitude = fold_amplitude * (1 - fold_plunge * np.cos(np.pi * y / Y) ** 2)
        vp = stack.vp(x, z, xf, stack.fold(x, xf, amplitude), y)
        if channel_velocity is not None:
            phase = 3 * np.pi * y / Y
            xc = channel_x * X + channel_width * np.sin(phase)
            slope = channel_width * 3 * np.pi / Y * np.cos(phase)          # dx_c/dy
            across = np.abs(x - xc) / np.sqrt(1 + slope ** 2)               # distance across the centre line
            top = zw + channel_depth
            base = top + channel_thickness * (1 - (2 * across / channel_width) ** 2)
            vp = np.where((z >= top) & (z <= base), channel_velocity, vp)
        if anomaly_dv:
            r2 = (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                  + ((z - centre[2]) / radii[2]) ** 2)
            vp = np.where(r2 <= 1, vp + anomaly_dv, vp)
        vp[..., :wrows] = 1.5
        # through float32 vp, exactly as the 2D builder hands vp to Model (same bits per section)
        v = vp.astype(np.float32).astype(np.float64)
        m[:, j0:j0 + block] = 1.0 / v ** 2
    return Model(m=m, spacing=spacing, **model_kwargs)


def initial_model(model, sigma_m, water_rows=None, vwater=1.5):
    r"""Smooth initial model: Gaussian smoothing of the slowness below the water layer (2D or 3D).

    With ``w`` water rows (depth last) and slowness ``s = √m``::

        s̃ = G_σ * E(s),   m0 = s̃²  below the water,   m0 = m  in the top w rows

    where ``E`` replaces the water rows by copies of the first sub-water row, so
    that smoothing does not drag the slow water velocity into the sediments and the
    sea floor stays sharp; ``G_σ`` is a Gaussian of standard deviation ``sigma_m``
    (m; scalar or one per axis).

    Memory: the model's array, one copy of it and one float64 working array
    (:func:`timeprobe.smooth_model` filters in place), so a 3D model of a few 10⁸
    points smooths on one machine.

    Parameters
    ----------
    model : timeprobe.Model
        2D ``(nx, nz)`` or 3D ``(nx, ny, nz)``.
    sigma_m : float or sequence of float
        Smoothing length in m (must be positive), one value or one per axis.
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
    m = model.m
    if water_rows is None:
        # a row is water when its slowest and fastest points are: test the per-row extremes
        # (the same decision as on the whole vp array, without its full-size temporaries)
        axes = tuple(range(m.ndim - 1))
        extremes = np.stack([m.min(axis=axes), m.max(axis=axes)])
        water_rows = detect_water_rows((1.0 / np.sqrt(extremes)).astype(model.dtype), vwater)
    if isinstance(water_rows, bool) or not isinstance(water_rows, (int, np.integer)) or not 0 <= water_rows < nz:
        raise ValueError(f"water_rows must be an integer in [0, {nz - 1}], got {water_rows!r}")
    ext = m.copy()
    if water_rows:
        ext[..., :water_rows] = ext[..., water_rows:water_rows + 1]
    out = smooth_model(ext, sig, model.spacing)
    del ext
    out[..., :water_rows] = m[..., :water_rows]
    return model.with_m(out)
