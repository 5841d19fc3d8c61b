"""Acquisition layouts: source and receiver positions, and the survey's :class:`~timeprobe.Geometry`.

Coordinates are in m, ``(x, z)`` in 2D and ``(x, y, z)`` in 3D, depth last (as the
model arrays). The functions here only build point sets (NumPy arrays, one row per
point); :func:`survey` turns them into the source and receiver geometries of a whole
survey on one time axis and checks that every point lies inside the model.

* :func:`line` — points every ``spacing`` m along a straight line at a constant depth:
  a 2D receiver line or source line, or a 3D line in any horizontal direction.
* :func:`grid` — a regular areal 3D grid at a constant depth (ocean-bottom nodes, a
  land receiver patch, a 3D source carpet).
* :func:`patches` — per-shot receiver subsets: the receivers within a given
  horizontal distance of each source (a moving patch around the shot).
* :func:`survey` — ``Survey(src, rec, q)``: one shot per source point, receivers per
  shot, the time axis ``0, dt, …, t`` (ms) and, given a peak frequency, Ricker wavelets.

Example, a 3D ocean-bottom-node survey on a 6 × 6 km model::

    from timeprobe import acquisition as acq
    nodes = acq.grid((0, 6000), (0, 6000), spacing=100.0, depth=500.0)
    shots = acq.grid((500, 5500), (500, 5500), spacing=(250.0, 500.0), depth=10.0)
    src, rec, q = acq.survey(model, shots, acq.patches(shots, nodes, half_width=2000.0),
                             dt=4.0, t=3000.0, f0=0.010)

and the 2D counterpart::

    src, rec, q = acq.survey(model, acq.line(0, 10000, 200.0, depth=50.0, centred=True),
                             acq.line(0, 10000, 25.0, depth=25.0), dt=4.0, t=3000.0, f0=0.010)
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional

import numpy as np

from .geometry import Data, Geometry, ricker
from .model import Model

__all__ = ["line", "grid", "patches", "survey", "Survey"]


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of m, got {value!r}")
    return float(value)


def _finite(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number of m, got {value!r}")
    return float(value)


def _steps(length, spacing):
    """Number of whole ``spacing`` steps in ``length`` (tolerating round-off at the end)."""
    return int(np.floor(length / spacing + 1e-9))


def line(start, stop, spacing, depth, centred=False):
    r"""Points every ``spacing`` m on the straight line from ``start`` to ``stop``, at ``depth``.

    ``start`` and ``stop`` are horizontal positions: numbers ``x`` for a 2D line
    (points ``(x, depth)``), or pairs ``(x, y)`` for a 3D line in any horizontal
    direction (points ``(x, y, depth)``). With ``L = |stop − start|`` the line holds
    ``n = ⌊L/spacing⌋ + 1`` points::

        p_i = start + (o + i·spacing)·(stop − start)/L,   i = 0 … n−1

    with ``o = 0`` (the first point on ``start``; the last one at or before ``stop``)
    or, with ``centred=True``, ``o = (L − (n−1)·spacing)/2`` (the leftover split evenly
    between both ends). ``start == stop`` gives the single point ``start``.

    Parameters
    ----------
    start, stop : float or (float, float)
        Ends of the line (m).
    spacing : float
        Distance between neighbouring points (m), positive.
    depth : float
        Depth of every point (m).
    centred : bool
        Centre the points between ``start`` and ``stop``.

    Returns
    -------
    ndarray, shape (n, 2) or (n, 3)
        One row per point, depth last.
    """
    spacing = _positive("spacing", spacing)
    depth = _finite("depth", depth)
    a = np.atleast_1d(np.asarray(start, dtype=np.float64))
    b = np.atleast_1d(np.asarray(stop, dtype=np.float64))
    if a.shape != b.shape or a.ndim != 1 or a.size not in (1, 2):
        raise ValueError(f"start and stop must both be x (2D) or both (x, y) (3D), got {start!r} and {stop!r}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"start and stop must be finite, got {start!r} and {stop!r}")
    length = float(np.linalg.norm(b - a))
    if length == 0:
        return np.append(a, depth)[None, :]
    n = _steps(length, spacing) + 1
    offset = (length - (n - 1) * spacing) / 2 if centred else 0.0
    s = offset + spacing * np.arange(n)
    horizontal = a[None, :] + s[:, None] * ((b - a) / length)[None, :]
    return np.column_stack([horizontal, np.full(n, depth)])


def grid(x_range, y_range, spacing, depth, centred=False):
    r"""A regular areal 3D grid of points at ``depth``: receivers (nodes) or sources (a carpet).

    Along x the points are those of ``line(x_range[0], x_range[1], dx, …)``, along y
    those of ``line(y_range[0], y_range[1], dy, …)`` (same ``centred`` rule), and the
    grid is every combination, ordered with x the slow and y the fast index (row
    ``i·n_y + j`` is ``(x_i, y_j, depth)``, like a C-ordered ``(n_x, n_y)`` array).

    Parameters
    ----------
    x_range, y_range : (float, float)
        Extent of the grid along x and y (m), ``min ≤ max``.
    spacing : float or (float, float)
        Point spacing (m), one value or ``(dx, dy)``.
    depth : float
        Depth of every point (m).
    centred : bool
        Centre the points in each range.

    Returns
    -------
    ndarray, shape (n_x·n_y, 3)
    """
    ranges = []
    for name, r in (("x_range", x_range), ("y_range", y_range)):
        r = np.asarray(r, dtype=np.float64)
        if r.shape != (2,) or not np.all(np.isfinite(r)) or r[0] > r[1]:
            raise ValueError(f"{name} must be (min, max) in m with min <= max, got {r.tolist()}")
        ranges.append(r)
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.ndim > 1 or sp.size not in (1, 2):
        raise ValueError(f"spacing must be one value or (dx, dy) in m, got {spacing!r}")
    dx, dy = np.broadcast_to(sp, (2,))
    xs = line(ranges[0][0], ranges[0][1], float(dx), 0.0, centred)[:, 0]
    ys = line(ranges[1][0], ranges[1][1], float(dy), 0.0, centred)[:, 0]
    depth = _finite("depth", depth)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    return np.column_stack([X.ravel(), Y.ravel(), np.full(X.size, depth)])


def _as_points(name, points, dim=None):
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] not in (2, 3) or p.shape[0] == 0:
        raise ValueError(f"{name} must be an (npoints, 2 or 3) array of coordinates (m), got shape {p.shape}")
    if dim is not None and p.shape[1] != dim:
        raise ValueError(f"{name} are {p.shape[1]}D points, expected {dim}D ones")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contain NaN or inf")
    return p


def patches(sources, receivers, half_width):
    r"""Per-shot receiver patches: the receivers within ``half_width`` of each source.

    For source ``s`` the patch is every receiver ``r`` with ``|r_x − s_x| ≤ h_x`` (and
    ``|r_y − s_y| ≤ h_y`` in 3D): a rectangle centred on the shot, cut at the
    edge of the receiver layout. Receivers keep their order.

    Parameters
    ----------
    sources : array (nshots, dim)
        One source point per shot (m).
    receivers : array (nrec, dim)
        All receiver positions (m), e.g. from :func:`grid` or :func:`line`.
    half_width : float or (float, float)
        Largest horizontal source–receiver offset (m) along x (and y); one value for both.

    Returns
    -------
    list of ndarray
        One ``(n_s, dim)`` array per shot, for :func:`survey` or :class:`~timeprobe.Geometry`.

    Raises
    ------
    ValueError
        If a shot's patch holds no receiver (the message names the shot and its position).
    """
    src = _as_points("sources", sources)
    rec = _as_points("receivers", receivers, dim=src.shape[1])
    nh = src.shape[1] - 1
    h = np.asarray(half_width, dtype=np.float64)
    if h.ndim > 1 or h.size not in (1, nh) or not np.all(np.isfinite(h)) or np.any(h <= 0):
        raise ValueError(f"half_width must be positive (m), one value or one per horizontal axis, got {half_width!r}")
    h = np.broadcast_to(h, (nh,))
    out = []
    for s, p in enumerate(src):
        keep = np.all(np.abs(rec[:, :nh] - p[:nh]) <= h * (1 + 1e-12), axis=1)
        if not keep.any():
            raise ValueError(f"shot {s} at {_fmt(p)} m has no receiver within half_width = {h.tolist()} m")
        out.append(rec[keep])
    return out


def _fmt(point):
    return "(" + ", ".join(f"{float(v):g}" for v in point) + ")"


class Survey(NamedTuple):
    """The geometries of a survey: ``src, rec, q = survey(...)``."""
    src: Geometry
    """Source positions, one shot per source point (or per source array)."""
    rec: Geometry
    """Receiver positions of every shot."""
    q: Optional[Data]
    """Source wavelets (Ricker of peak ``f0``) on ``src``; ``None`` when no ``f0`` was given."""


def survey(model, sources, receivers, dt, t, f0=None, t0=0.0):
    r"""Source and receiver :class:`~timeprobe.Geometry` of a whole survey on one time axis.

    Shot ``s`` fires source ``sources[s]`` and records at ``receivers`` (the same
    receivers for every shot) or at ``receivers[s]`` (one array per shot, e.g. from
    :func:`patches`). Traces are sampled at ``t0, t0 + dt, …, t`` (ms). With ``f0``
    (kHz) every shot also gets a Ricker wavelet of that peak frequency
    (:func:`timeprobe.ricker`, peak at ``1/f0``).

    Parameters
    ----------
    model : timeprobe.Model
        Every point must lie inside its (unpadded) domain; the dimension must match.
    sources : array (nshots, dim) or list of arrays
        One source point per shot, or one ``(npoints, dim)`` array per shot (a source array).
    receivers : array (nrec, dim) or list of arrays
        Receivers shared by all shots, or one array per shot.
    dt, t : float
        Sampling interval and recording end time of the data (ms).
    f0 : float, optional
        Ricker peak frequency (kHz, e.g. 0.010 for 10 Hz).
    t0 : float
        First sampling time (ms).

    Returns
    -------
    Survey
        ``(src, rec, q)``; ``q`` is ``None`` without ``f0``.

    Raises
    ------
    ValueError
        If a point lies outside the model (naming the shot, the point, the axis and
        the model's range along it), the counts or dimensions disagree, or the time
        axis is invalid.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a timeprobe.Model, got {type(model).__name__}")
    per_shot = lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and np.ndim(v[0]) == 2  # noqa: E731
    if per_shot(sources):
        src_coords = [_as_points(f"sources of shot {s}", c, dim=model.dim) for s, c in enumerate(sources)]
    else:
        src_coords = [p[None, :] for p in _as_points("sources", sources, dim=model.dim)]
    nshots = len(src_coords)
    if per_shot(receivers):
        rec_coords = [_as_points(f"receivers of shot {s}", c, dim=model.dim) for s, c in enumerate(receivers)]
        if len(rec_coords) != nshots:
            raise ValueError(f"{len(rec_coords)} receiver arrays for {nshots} shots: give one per shot, or one "
                             f"(nrec, {model.dim}) array for all")
    else:
        rec_coords = [_as_points("receivers", receivers, dim=model.dim)] * nshots
    src = Geometry(src_coords, dt=dt, t=t, t0=t0)
    rec = Geometry(rec_coords, dt=dt, t=t, t0=t0)
    src.check_inside(model, "source")
    rec.check_inside(model, "receiver")
    q = None
    if f0 is not None:
        w = ricker(f0, dt, t, t0)
        q = Data(src, [np.repeat(w[:, None], src.npoints(s), axis=1) for s in range(nshots)])
    return Survey(src, rec, q)
