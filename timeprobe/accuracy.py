r"""A-posteriori accuracy estimates of cheap gradients (NumPy only).

The quality measure is the cosine between the computed gradient :math:`g_c` and the exact one
:math:`g` (whole model). Two estimates, chosen by the strategy:

**Sampled exact gradient** (probing). Before the run, ``M`` grid points :math:`x_i` of the physical
domain are drawn at random (:func:`sample_points`); the forward run records ``u`` there (as extra
receivers), the adjoint run records ``v`` (as sampled "sources"), and

.. math:: g(x_i) = -k\,\Delta t\sum_s u[k s, x_i]\,\ddot v[k s, x_i]

is the exact gradient at those points (Nyquist sum, see :mod:`timeprobe.storage`;
``v̈`` the centred second difference, as in the operators). With :math:`g = g_c + e`,

.. math:: \cos(g_c, g) = \frac{\|g_c\|^2 + \langle g_c, e\rangle}
                             {\|g_c\|\sqrt{\|g_c\|^2 + 2\langle g_c, e\rangle + \|e\|^2}},

where :math:`\|g_c\|^2` is known exactly and the two sums over the model,
:math:`\langle g_c, e\rangle` and :math:`\|e\|^2`, are estimated from the sample
(:math:`\frac{N}{M}\sum_i`): the computed gradient acts as a control variate, so that the estimate
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

import numpy as np

__all__ = ["sample_points", "sampled_exact_gradient", "cosine_estimate", "quantisation_cosine",
           "sampling_memory", "DEFAULT_SAMPLES"]

#: points sampled for the estimate (capped at the number of physical points)
DEFAULT_SAMPLES = 1000


def sample_points(model, m, rng):
    """``m`` distinct grid points of the physical domain, drawn by ``rng`` (a Generator).

    Returns ``(flat, coords)``: flat indices into the model's arrays (``model.shape``) and the
    points' physical coordinates (m), shape (m, ndim)."""
    n = int(np.prod(model.shape))
    m = min(int(m), n)
    flat = np.sort(rng.choice(n, size=m, replace=False))
    idx = np.stack(np.unravel_index(flat, model.shape), axis=1)
    origin = np.array([b[0] for b in model.domain_bounds])
    return flat, origin + idx * np.asarray(model.spacing)


def sampled_exact_gradient(u_sub, v, k, dt):
    """``−k·dt Σ_s u_sub[s]·v̈[k s]`` per point: ``u_sub`` (nsub, m) the forward samples every k
    steps, ``v`` (≥ nt, m) the adjoint field at every step (``v̈`` the centred second difference;
    the first snapshot, ``u[0] = 0``, contributes nothing)."""
    nsub = u_sub.shape[0]
    n = k * np.arange(1, nsub)
    vdd = (v[n + 1].astype(np.float64) - 2 * v[n] + v[n - 1]) / dt ** 2
    return -k * dt * np.einsum("sm,sm->m", u_sub[1:].astype(np.float64), vdd)


def _cv_cosine(nr2, gc, e, n):
    m = gc.size
    cross = n / m * float(gc @ e)
    ee = n / m * float(e @ e)
    den = nr2 * max(nr2 + 2 * cross + ee, 0.0)
    return float((nr2 + cross) / np.sqrt(den)) if den > 0 else 1.0


def cosine_estimate(g_computed, flat, g_exact_at, n_boot=200, seed=0):
    """Estimate ``cos(g_computed, g_exact)`` from ``g_exact`` at the points ``flat`` (module
    docstring). Returns ``(estimate, bootstrap std)``; the bootstrap draws come from ``seed``."""
    gc_all = np.asarray(g_computed, dtype=np.float64).ravel()
    nr2 = float(gc_all @ gc_all)
    gc = gc_all[flat]
    e = np.asarray(g_exact_at, dtype=np.float64) - gc
    if nr2 == 0:
        return 0.0, 0.0
    est = min(_cv_cosine(nr2, gc, e, gc_all.size), 1.0)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, gc.size, gc.size)
        boots.append(min(_cv_cosine(nr2, gc[i], e[i], gc_all.size), 1.0))
    return est, float(np.std(boots))


def quantisation_cosine(rel_error):
    """``1 − ρ²/2``: the cosine expected from a relative quantisation error ``ρ`` of the snapshots."""
    return 1.0 - 0.5 * float(rel_error) ** 2


def sampling_memory(m, nt, nsub):
    """Bytes the sampled estimate holds: ``4·m·((nt + 1) + nsub)`` (the adjoint's samples of ``v``
    and the forward's samples of ``u`` every k steps)."""
    return 4 * int(m) * ((nt + 1) + nsub)
