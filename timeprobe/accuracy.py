r"""A-posteriori accuracy estimates of cheap gradients (NumPy only).

The quality measure is the cosine between the computed gradient :math:`g_c` and the exact one
:math:`g` (whole model). Two estimates, chosen by the strategy:

**Sampled exact gradient** (probing). Before the run, ``M`` grid points :math:`x_i` of the physical
domain are drawn at random, stratified by their distance to the sources and receivers, where the
gradient concentrates (:func:`sample_points`); the forward run records ``u`` there (as extra
receivers), the adjoint run records ``v`` (as sampled "sources"), and

.. math:: g(x_i) = -k\,\Delta t\sum_s u[k s, x_i]\,\ddot v[k s, x_i]

is the exact gradient at those points (Nyquist sum, see :mod:`timeprobe.storage`;
``v̈`` the centred second difference, as in the operators). With :math:`g = g_c + e`,

.. math:: \cos(g_c, g) = \frac{\|g_c\|^2 + \langle g_c, e\rangle}
                             {\|g_c\|\sqrt{\|g_c\|^2 + 2\langle g_c, e\rangle + \|e\|^2}},

where :math:`\|g_c\|^2` is known exactly and the two sums over the model,
:math:`\langle g_c, e\rangle` and :math:`\|e\|^2`, are estimated from the sample
(:math:`\sum_i w_i\,\cdot`, :math:`w_i` the points of :math:`x_i`'s stratum per sampled point):
the computed gradient acts as a control variate, so that the estimate
is much less noisy than the cosine of the two samples (``scripts/probe_designs.py``,
``benchmarks/probe_designs.md``). Its spread is reported by a bootstrap over the points.
Cost: ``M·(nt + 1)`` floats for the recorded ``u`` (kept as ``M·nsub`` after the forward run) and
``M·(nt + 1)`` for ``v`` (:func:`sampling_memory`).

**Quantisation model** (compressed storage). The codecs report the modelled noise energy of the
stored snapshots, :math:`\rho^2 = \sum_s\|e_s\|^2/\sum_s\|u_s\|^2`
(:meth:`timeprobe.storage.SnapshotStore.relative_error`); the gradient's relative error is then
at most about :math:`\rho` (0.65 ρ measured on the tests' layered case) and
:math:`\cos \gtrsim 1 - \rho^2/2` — a conservative estimate, ≈ 0.9999 at 8 bit.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["SamplePoints", "sample_points", "edge_mask", "sampled_exact_gradient", "cosine_estimate", "quantisation_cosine",
           "sampling_memory", "DEFAULT_SAMPLES"]

#: points sampled for the estimate (capped at the number of physical points)
DEFAULT_SAMPLES = 1000


class SamplePoints(NamedTuple):
    """Points of the sampled estimate: ``flat`` indices into the model's arrays, physical
    ``coords`` (m) (m, ndim), the ``weight`` of each (points of its stratum per sampled point) and
    its ``stratum``."""
    flat: np.ndarray
    coords: np.ndarray
    weight: np.ndarray
    stratum: np.ndarray


def _shells(model, centres):
    """Stratum of every physical grid point: 0 within one grid step of a centre (source or
    receiver), then ``1 + ⌊log2 d⌋`` for the distance ``d`` (grid steps) to the nearest one."""
    from scipy.spatial import cKDTree
    origin = np.array([b[0] for b in model.domain_bounds])
    h = np.asarray(model.spacing, dtype=np.float64)
    tree = cKDTree((np.asarray(centres, dtype=np.float64).reshape(-1, len(h)) - origin) / h)
    shape = model.shape
    rest = np.stack(np.meshgrid(*[np.arange(n) for n in shape[1:]], indexing="ij"), -1).reshape(-1, len(shape) - 1)
    out = np.empty(shape, dtype=np.int8)
    step = max(1, (1 << 16) // max(rest.shape[0], 1))
    for i0 in range(0, shape[0], step):
        i = np.arange(i0, min(i0 + step, shape[0]))
        pts = np.hstack([np.repeat(i, rest.shape[0])[:, None], np.tile(rest, (len(i), 1))])
        d, _ = tree.query(pts)
        out[i0:i0 + len(i)] = np.where(d < 1, 0, 1 + np.floor(np.log2(np.maximum(d, 1)))).reshape(
            (len(i),) + shape[1:])
    return out


def edge_mask(shape):
    """True on the outermost points of a grid of ``shape``."""
    mask = np.zeros(shape, dtype=bool)
    for ax, n in enumerate(shape):
        idx = [slice(None)] * len(shape)
        idx[ax] = [0, n - 1] if n > 1 else [0]
        mask[tuple(idx)] = True
    return mask


def _allocate(counts, m):
    """Points per stratum: half of ``m`` shared equally, half in proportion to the stratum sizes,
    none above a stratum's size (the excess goes to the strata with room left)."""
    counts = np.asarray(counts, dtype=np.int64)
    m = int(min(m, counts.sum()))
    want = 0.5 * m / len(counts) + 0.5 * m * counts / counts.sum()
    alloc = np.minimum(counts, np.floor(want).astype(np.int64))
    while alloc.sum() < m:
        room = counts - alloc
        alloc[np.argmax(np.where(room > 0, want - alloc + 1e-9 * room, -np.inf))] += 1
    return alloc


def sample_points(model, m, rng, centres=None, skip_edge=False):
    """``m`` distinct grid points of the physical domain, drawn by ``rng`` (a Generator).

    ``skip_edge``: leave out the outermost points, onto which a ``sum_padding=True`` gradient folds
    the absorbing layers (their exact value would need ``u`` and ``v`` in the layers; they are
    ≈ 2/n of the points, so the estimate of the whole-model cosine barely changes).

    Without ``centres``: uniform. With ``centres`` (physical coordinates of the sources and
    receivers, (n, ndim)): stratified by distance to the nearest centre in octaves
    (:func:`_shells`), half the points shared equally among the strata, half in proportion to
    their size — the gradient concentrates near sources and receivers (in 3D ⅔ of ‖g‖² lay within
    1.5 grid steps of the source on a test shot), which uniform points would miss.
    Returns a :class:`SamplePoints`."""
    n = int(np.prod(model.shape))
    origin = np.array([b[0] for b in model.domain_bounds])
    edge = edge_mask(model.shape).ravel() if skip_edge else None
    if centres is None:
        pool = np.arange(n) if edge is None else np.flatnonzero(~edge)
        m = min(int(m), pool.size)
        flat = np.sort(rng.choice(pool, size=m, replace=False))
        weight = np.full(m, pool.size / m)
        stratum = np.zeros(m, dtype=np.int8)
    else:
        shells = _shells(model, centres).ravel()
        if edge is not None:
            shells[edge] = -1  # never drawn: not a stratum
        m = min(int(m), n if edge is None else int(n - edge.sum()))
        labels, counts = np.unique(shells, return_counts=True)
        if edge is not None:
            keep = labels >= 0
            labels, counts = labels[keep], counts[keep]
        alloc = _allocate(counts, m)
        flats, weights, strata = [], [], []
        for lab, cnt, k in zip(labels, counts, alloc):
            if k == 0:
                continue
            if cnt > n // 8:  # a large stratum: uniform draws over the model, kept if in it
                chosen = np.empty(0, dtype=np.int64)
                while chosen.size < k:
                    draw = rng.integers(0, n, size=4 * (k - chosen.size) * n // cnt + 16)
                    chosen = np.unique(np.concatenate([chosen, draw[shells[draw] == lab]]))
                chosen = rng.permutation(chosen)[:k]
            else:
                chosen = rng.choice(np.flatnonzero(shells == lab), size=k, replace=False)
            flats.append(chosen)
            weights.append(np.full(k, cnt / k))
            strata.append(np.full(k, lab, dtype=np.int8))
        flat = np.concatenate(flats)
        order = np.argsort(flat)
        flat, weight, stratum = flat[order], np.concatenate(weights)[order], np.concatenate(strata)[order]
    idx = np.stack(np.unravel_index(flat, model.shape), axis=1)
    return SamplePoints(flat, origin + idx * np.asarray(model.spacing), weight, stratum)


def sampled_exact_gradient(u_sub, v, k, dt):
    """``−k·dt Σ_s u_sub[s]·v̈[k s]`` per point: ``u_sub`` (nsub, m) the forward samples every k
    steps, ``v`` (≥ nt, m) the adjoint field at every step (``v̈`` the centred second difference;
    the first snapshot, ``u[0] = 0``, contributes nothing)."""
    nsub = u_sub.shape[0]
    n = k * np.arange(1, nsub)
    vdd = (v[n + 1].astype(np.float64) - 2 * v[n] + v[n - 1]) / dt ** 2
    return -k * dt * np.einsum("sm,sm->m", u_sub[1:].astype(np.float64), vdd)


def _cv_cosine(nr2, gc, e, w):
    cross = float(np.sum(w * gc * e))
    ee = float(np.sum(w * e * e))
    den = nr2 * max(nr2 + 2 * cross + ee, 0.0)
    return float((nr2 + cross) / np.sqrt(den)) if den > 0 else 1.0


def cosine_estimate(g_computed, points, g_exact_at, n_boot=200, seed=0):
    """Estimate ``cos(g_computed, g_exact)`` from ``g_exact`` at the sampled points (module
    docstring): ``points`` a :class:`SamplePoints` (or flat indices of a uniform sample).
    Returns ``(estimate, bootstrap std)``: the bootstrap resamples each stratum (strata taken
    whole stay fixed); its draws come from ``seed`` (``n_boot=0``: std NaN)."""
    gc_all = np.asarray(g_computed, dtype=np.float64).ravel()
    if not isinstance(points, SamplePoints):
        flat = np.asarray(points)
        points = SamplePoints(flat, None, np.full(flat.size, gc_all.size / flat.size), np.zeros(flat.size, np.int8))
    nr2 = float(gc_all @ gc_all)
    if nr2 == 0:
        return 0.0, 0.0
    gc = gc_all[points.flat]
    e = np.asarray(g_exact_at, dtype=np.float64) - gc
    w = np.asarray(points.weight, dtype=np.float64)
    est = min(_cv_cosine(nr2, gc, e, w), 1.0)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(points.stratum == s) for s in np.unique(points.stratum)]
    groups = [g for g in groups if not np.all(w[g] == 1.0)]  # strata taken whole have no sampling error
    fixed = np.setdiff1d(np.arange(gc.size), np.concatenate(groups) if groups else [])
    boots = []
    for _ in range(n_boot):
        i = np.concatenate([fixed] + [rng.choice(g, g.size) for g in groups])
        boots.append(min(_cv_cosine(nr2, gc[i], e[i], w[i]), 1.0))
    return est, (float(np.std(boots)) if boots else float("nan"))


def quantisation_cosine(rel_error):
    """``1 − ρ²/2``: the cosine expected from a relative quantisation error ``ρ`` of the snapshots."""
    return 1.0 - 0.5 * float(rel_error) ** 2


def sampling_memory(m, nt, nsub):
    """Bytes the sampled estimate holds: ``4·m·((nt + 1) + nsub)`` (the adjoint's samples of ``v``
    and the forward's samples of ``u`` every k steps)."""
    return 4 * int(m) * ((nt + 1) + nsub)
