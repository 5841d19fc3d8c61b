"""Objectives and gradients: FWI misfit, adjoint Born (RTM), exact or probed.

Misfit (data-sampling weighted, so it approximates ½∫‖r‖²dt and does not change
with the computational time step)::

    f(m) = ½ Σ_shots dt_d · ‖R P u − d‖²,     r = R P u − d

with ``dt_d`` the observed-data sampling interval and ``R`` the resampling from
the computational axis to the data axis. Its gradient w.r.t. squared slowness::

    g = Eᵀ g_pad,     g_pad(x) = −dt Σ_{n=1}^{nt−1} u[n, x] · v̈[n, x]

where ``v`` is the adjoint field driven by ``(dt_d/dt)·Rᵀ r`` (``dt`` the computational step)
and ``Eᵀ`` (:meth:`~timeprobe.Model.pad_adjoint`) folds the absorbing layers, whose ``m`` copies
the edge points, onto those points — i.e. ``g = dt_d · Jᵀ Rᵀ r`` with
:func:`~timeprobe.propagators.born_adjoint`'s convention. It is the exact derivative of the
discrete ``f`` as implemented (leapfrog, damping, injection, resampling, padding; see
:mod:`timeprobe.propagators`); ``sum_padding=False`` returns the physical part of ``g_pad``
instead (equal except on the outermost points). ``ps=None`` stores the forward wavefield
(exact); ``ps=r`` probes it (:mod:`timeprobe.probing`), storing r fields instead of nt.
"""
from __future__ import annotations

import numpy as np

from .compat import release
from .geometry import computational_axis, from_computational, from_computational_adjoint, to_computational
from .probing import ProbingOptions, probes_for_shot, shot_generators
from .propagators import check_inputs, run_adjoint, run_forward

__all__ = ["fwi_objective", "jacobian_adjoint", "shot_objective", "shot_gradient", "to_physical"]


# --------------------------------------------------------------------------- one shot
def shot_gradient(model, q, rec_geometry, adjoint_traces, opts, rng=None, probe_data=None):
    """Forward (storing or probing the wavefield), then the adjoint driven by ``adjoint_traces``.

    ``adjoint_traces(rec_c, dt, nt)`` maps the computational-axis receiver traces to the
    computational-axis adjoint source (and may record the misfit). It should write the
    source into ``rec_c`` in place and return it: :func:`run_adjoint` then injects that
    buffer without a copy. Returns the gradient ``−dt Σ u·v̈`` (probed if ``opts.ps``)
    on the padded grid and ``dt``.
    """
    dt, nt = computational_axis(model, q.geometry, rec_geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt, dtype=model.dtype)
    src_coords, rec_coords = q.geometry.coordinates[0], rec_geometry.coordinates[0]
    usave = probing = ubar = None
    if opts.ps is None:
        rec, usave = run_forward(model, src_coords, wc, rec_coords, dt, nt, save=True)
    else:
        probing = probes_for_shot(opts, wc, dt, nt, probe_data, rng, dtype=model.dtype)
        rec, ubar = run_forward(model, src_coords, wc, rec_coords, dt, nt, probing=probing)
    y = adjoint_traces(rec, dt, nt)
    del rec  # the traces' buffer now holds y (or, if y is a new array, is freed here)
    _, grad, _ = run_adjoint(model, rec_coords, y, dt, nt, usave=usave, probing=probing, ubar=ubar,
                             restore_ubar=False)
    release(usave, ubar)  # free nt·N (or r·N) floats now, before the next shot allocates its own
    return grad, dt


def shot_objective(model, q, d, opts, rng=None):
    """Misfit and gradient (padded grid) of one shot — the unit of parallel work.

    ``q``, ``d`` one-shot :class:`~timeprobe.Data`; ``opts`` a
    :class:`~timeprobe.probing.ProbingOptions`; ``rng`` the shot's Generator (probes)."""
    misfit = []

    def residual_source(rec, dt, nt):
        res = from_computational(rec, d.geometry[0], dt, nt, dtype=rec.dtype)
        res -= d.arrays[0]
        misfit.append(0.5 * d.dt * float(np.einsum("ij,ij->", res, res, dtype=np.float64)))
        # the synthetic traces are dead: the adjoint source overwrites them in place,
        # and run_adjoint injects that buffer without a copy
        from_computational_adjoint(res, d.geometry[0], dt, nt, out=rec)
        rec *= d.dt / dt
        return rec

    grad, _ = shot_gradient(model, q, d.geometry, residual_source, opts, rng, probe_data=d)
    return misfit[0], grad


def to_physical(model, g_pad, sum_padding=True):
    """A padded-grid gradient → the physical grid: ``Eᵀ g_pad`` (:meth:`Model.pad_adjoint`, the
    exact derivative w.r.t. the physical ``m``) or, with ``sum_padding=False``, its physical part."""
    return (model.pad_adjoint(g_pad) if sum_padding else model.unpad(g_pad)).astype(model.dtype)


def fwi_objective(model, q, d, ps=None, mode="QR", seed=None, *, subsample="auto", method="blocked",
                  block=None, probe_kwargs=None, sum_padding=True, client=None, progress=False):
    """FWI misfit and gradient summed over the shots of ``q``/``d``.

    Parameters
    ----------
    model : Model
        Current model (squared slowness).
    q : Data
        Source wavelets per shot.
    d : Data
        Observed shot records (any sampling; resampled internally).
    ps : None or int
        None → exact gradient (full storage); r → probed gradient with r probes.
    mode, seed, subsample, method, block, probe_kwargs
        Probing options, see :class:`timeprobe.probing.ProbingOptions`; ``seed`` (int,
        SeedSequence or None) spawns one independent generator per shot.
    sum_padding : bool
        True (default): the exact derivative w.r.t. every physical point (module docstring);
        False: the padded gradient's physical part (probe fields then skip the absorbing layers).
    client : dask.distributed.Client, str or None
        Run shots as Dask tasks (see :mod:`timeprobe.parallel`); serial when None.
    progress : bool
        A tqdm bar over shots.

    Returns
    -------
    f : float
        ``½ Σ dt_d ‖R P u − d‖²``.
    g : ndarray (model shape and dtype)
        Gradient w.r.t. squared slowness.
    """
    check_inputs(model, q, d=d)
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=sum_padding)
    rngs = shot_generators(seed, q.nshots)
    if client is not None:
        from .parallel import reduce_shots
        f, g = reduce_shots(shot_objective, model, q, d, opts, rngs, client=client, progress=progress)
        return f, to_physical(model, g, sum_padding)
    f = 0.0
    g = np.zeros(model.shape_padded, dtype=np.float64)
    for i in _shots(q.nshots, progress):
        fi, gi = shot_objective(model, q[i], d[i], opts, rngs[i])
        f += fi
        g += gi
    return f, to_physical(model, g, sum_padding)


def _shots(nshots, progress, desc="shots"):
    if not progress:
        return range(nshots)
    from tqdm.auto import tqdm
    return tqdm(range(nshots), desc=desc, leave=False)


def jacobian_adjoint(model, q, dd, ps=None, mode="QR", seed=None, *, probe_data=None,
                     subsample="auto", method="blocked", block=None, probe_kwargs=None, sum_padding=True,
                     progress=False):
    """Adjoint Born ``Jᵀ δd``, exact (``ps=None``) or probed.

    Same convention as :func:`timeprobe.propagators.born_adjoint`
    (``Jᵀ δd = Eᵀ(−Σ_n u[n]·v̈[n])`` with ``v`` driven by ``Rᵀ δd``): the exact adjoint of
    :func:`timeprobe.born` (``sum_padding=False``: the physical part of ``−Σ_n u[n]·v̈[n]``).
    For the "QR" mode the probes are designed from ``probe_data`` (default ``δd`` itself).
    """
    check_inputs(model, q, d=dd)
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=sum_padding)
    rngs = shot_generators(seed, q.nshots)
    pdata = dd if probe_data is None else probe_data
    g = np.zeros(model.shape_padded, dtype=np.float64)
    for i in _shots(q.nshots, progress):
        traces = lambda rec, dt, nt, i=i: from_computational_adjoint(dd.arrays[i], dd.geometry[i], dt, nt,
                                                                     out=rec)
        grad, dt = shot_gradient(model, q[i], dd.geometry[i], traces, opts, rngs[i], probe_data=pdata[i])
        g += grad / dt  # the operators compute −dt·Σ u·v̈
    return to_physical(model, g, sum_padding)
