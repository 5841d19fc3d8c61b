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

How the forward wavefield reaches the adjoint pass (the same arguments in :func:`fwi_objective`,
:func:`jacobian_adjoint` and :func:`timeprobe.rtm`):

==========================  ==========================================================================
``ps=None, storage=None``   every snapshot (exact; the default)
``storage="nyquist"``       every k-th snapshot (k at the source's Poisson bound), float32, in RAM
``storage="nyquist16"/"8"`` the same in 16 bit / 8 bit with one scale per 8×8(×8) tile
``storage="disk"/16/8``     the same in a temporary file (``timeprobe.storage.StorageOptions`` for
                            the folder, the chunk, k, the tile)
``ps=r``                    r probe fields (:mod:`timeprobe.probing`)
``budget_mb=M``             the most accurate of the above whose working memory fits M MiB
                            (:mod:`timeprobe.budget`; disk only with ``allow_disk``)
==========================  ==========================================================================

``return_info=True`` also returns a dict: the strategy, ``ps``, ``storage``, ``k``, the predicted
working memory (MiB) and an a-posteriori estimate of the cosine between the returned and the exact
gradient (``accuracy``, ``accuracy_std``, ``accuracy_method``; :mod:`timeprobe.accuracy`).
"""
from __future__ import annotations

import functools

import numpy as np

from .accuracy import DEFAULT_SAMPLES, cosine_estimate, edge_mask, quantisation_cosine, sample_points, sampled_exact_gradient
from .budget import MIB, gradient_sizes, plan, strategy_memory
from .compat import release
from .geometry import Data, computational_axis, from_computational, from_computational_adjoint, to_computational
from .probing import ProbingOptions, probes_for_shot, shot_generators
from .propagators import check_inputs, run_adjoint, run_forward
from .storage import (StorageOptions, run_segmented_gradient, run_stored_adjoint, run_stored_forward,
                      stored_subsample)
from .utils import serial_blas

__all__ = ["fwi_objective", "jacobian_adjoint", "shot_objective", "shot_gradient", "to_physical",
           "choose_strategy", "strategy_info", "shot_infos"]


# --------------------------------------------------------------------------- one shot
@serial_blas()
def shot_gradient(model, q, rec_geometry, adjoint_traces, opts, rng=None, probe_data=None, info=None):
    """Forward (storing or probing the wavefield), then the adjoint driven by ``adjoint_traces``.

    ``adjoint_traces(rec_c, dt, nt)`` maps the computational-axis receiver traces to the
    computational-axis adjoint source (and may record the misfit). It should write the
    source into ``rec_c`` in place and return it: :func:`run_adjoint` then injects that
    buffer without a copy. Returns the gradient ``−dt Σ u·v̈`` (probed if ``opts.ps``, from stored
    snapshots if ``opts.storage``) on the padded grid and ``dt``.

    ``info``: a dict filled with the shot's ``k`` and what the accuracy estimate needs — the stored
    snapshots' energy and modelled quantisation noise, or, for probing with ``info["points"]``
    (``(flat, coords)`` of :func:`timeprobe.accuracy.sample_points`), the exact gradient there
    (``info["exact_samples"]``, same units as the gradient).
    """
    dt, nt = computational_axis(model, q.geometry, rec_geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt, dtype=model.dtype)
    src_coords, rec_coords = q.geometry.coordinates[0], rec_geometry.coordinates[0]
    if opts.storage is not None and opts.storage.segments > 1:
        k = stored_subsample(opts.storage, wc, dt, nt)
        grad, stats, nbytes = run_segmented_gradient(model, src_coords, wc, rec_coords, dt, nt, opts.storage, k,
                                                     adjoint_traces, layers=opts.sum_padding)
        if info is not None:
            info.update(k=k, energy=stats["energy"], noise=stats["noise"], stored_bytes=nbytes)
        return grad, dt
    if opts.storage is not None:
        k = stored_subsample(opts.storage, wc, dt, nt)
        rec, store = run_stored_forward(model, src_coords, wc, rec_coords, dt, nt, opts.storage, k,
                                        layers=opts.sum_padding)
        with store:
            y = adjoint_traces(rec, dt, nt)
            del rec
            grad = run_stored_adjoint(model, rec_coords, y, dt, nt, store)
            if info is not None:
                info.update(k=k, energy=store.stats["energy"], noise=store.stats["noise"],
                            stored_bytes=store.stored_bytes)
        return grad, dt
    usave = probing = ubar = None
    points = info.get("points") if info is not None else None
    if opts.ps is None:
        rec, usave = run_forward(model, src_coords, wc, rec_coords, dt, nt, save=True)
    else:
        probing = probes_for_shot(opts, wc, dt, nt, probe_data, rng, dtype=model.dtype)
        if points is None:
            rec, ubar = run_forward(model, src_coords, wc, rec_coords, dt, nt, probing=probing)
        else:  # the sample points ride along as extra receivers
            nrec = len(rec_coords)
            traces, ubar = run_forward(model, src_coords, wc, np.vstack([rec_coords, points.coords]), dt, nt,
                                       probing=probing)
            u_sub = np.array(traces[::probing.subsample, nrec:])
            rec = np.array(traces[:, :nrec])
            del traces
        if info is not None:
            info.update(k=probing.subsample, r=probing.r)
    y = adjoint_traces(rec, dt, nt)
    del rec  # the traces' buffer now holds y (or, if y is a new array, is freed here)
    v, grad, _ = run_adjoint(model, rec_coords, y, dt, nt, usave=usave, probing=probing, ubar=ubar,
                             restore_ubar=False, src_coords=None if points is None or probing is None else points.coords)
    release(usave, ubar)  # free nt·N (or r·N) floats now, before the next shot allocates its own
    if v is not None:
        v = np.vstack([v, np.zeros((1, v.shape[1]), v.dtype)])  # v[nt] = 0
        info["exact_samples"] = sampled_exact_gradient(u_sub, v, probing.subsample, dt)
    return grad, dt


@serial_blas()
def shot_objective(model, q, d, opts, rng=None, info=None, probe_data=None):
    """Misfit and gradient (padded grid) of one shot — the unit of parallel work.

    ``q``, ``d`` one-shot :class:`~timeprobe.Data`; ``opts`` a
    :class:`~timeprobe.probing.ProbingOptions`; ``rng`` the shot's Generator (probes);
    ``info`` see :func:`shot_gradient`; ``probe_data`` as in :func:`fwi_objective` (this shot's)."""
    misfit = []
    design = d
    if probe_data is not None and opts.ps is not None:
        if isinstance(probe_data, str):  # "synthetic": a plain forward run of the current model first
            dt, nt = computational_axis(model, q.geometry, d.geometry)
            wc = to_computational(q.arrays[0], q.geometry, dt, nt, dtype=model.dtype)
            rec, _ = run_forward(model, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt)
            probe_data = Data(d.geometry, [from_computational(rec, d.geometry[0], dt, nt, dtype=model.dtype)])
            del rec
        design = (d, probe_data)

    def residual_source(rec, dt, nt):
        res = from_computational(rec, d.geometry[0], dt, nt, dtype=rec.dtype)
        res -= d.arrays[0]
        misfit.append(0.5 * d.dt * float(np.einsum("ij,ij->", res, res, dtype=np.float64)))
        # the synthetic traces are dead: the adjoint source overwrites them in place,
        # and run_adjoint injects that buffer without a copy
        from_computational_adjoint(res, d.geometry[0], dt, nt, out=rec)
        rec *= d.dt / dt
        return rec

    grad, _ = shot_gradient(model, q, d.geometry, residual_source, opts, rng, probe_data=design, info=info)
    return misfit[0], grad


def to_physical(model, g_pad, sum_padding=True):
    """A padded-grid gradient → the physical grid: ``Eᵀ g_pad`` (:meth:`Model.pad_adjoint`, the
    exact derivative w.r.t. the physical ``m``) or, with ``sum_padding=False``, its physical part."""
    return (model.pad_adjoint(g_pad) if sum_padding else model.unpad(g_pad)).astype(model.dtype)


@serial_blas()
def fwi_objective(model, q, d, ps=None, mode="QR", seed=None, *, storage=None, budget_mb=None, allow_disk=False,
                  return_info=False, probe_data=None, subsample="auto", method="blocked", block=None,
                  probe_kwargs=None, sum_padding=True, client=None, progress=False):
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
        None → exact gradient (full storage, or ``storage``); r → probed gradient with r probes.
    mode, seed, subsample, method, block, probe_kwargs
        Probing options, see :class:`timeprobe.probing.ProbingOptions`; ``seed`` (int,
        SeedSequence or None) spawns one independent generator per shot.
    sum_padding : bool
        True (default): the exact derivative w.r.t. every physical point (module docstring);
        False: the padded gradient's physical part (probe fields then skip the absorbing layers).
    storage : None, str or timeprobe.storage.StorageOptions
        With ``ps=None``: keep every k-th snapshot instead of all — ``"nyquist"`` (float32),
        ``"nyquist16"``, ``"nyquist8"`` (RAM), ``"disk"``, ``"disk16"``, ``"disk8"`` (a temporary
        file; :class:`~timeprobe.storage.StorageOptions` sets its folder, k, the chunk, the tile).
    budget_mb : None or float
        Working-memory budget (MiB, per shot, beyond plain modelling): chooses ``ps``/``storage``
        itself (:func:`timeprobe.budget.plan`); leave ``ps`` and ``storage`` unset.
    allow_disk : bool or str
        Let ``budget_mb`` choose the disk strategies (True: the system temp folder; a folder path).
    return_info : bool
        Also return the dict of :func:`strategy_info` (strategy, r, k, predicted memory, accuracy
        estimate). Runs the shots serially.
    probe_data : None, Data or "synthetic"
        Probing ("QR"/"hutchpp"): records designing the probes together with the observed one, each
        at unit norm, side by side — e.g. the synthetic record of the previous model of an
        inversion, or ``"synthetic"``: the current model's, from a plain forward run first (one
        more propagation per shot). None: the observed record alone. On the edge-source model of
        ``benchmarks/probe_designs.md`` [observed, synthetic] raises the cosine at r = 32 / 64 from
        0.950 / 0.991 to 0.976 / 0.99994, and matches the observed-only design elsewhere.
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
    info : dict
        Only with ``return_info=True``.
    """
    check_inputs(model, q, d=d)
    ps, storage, chosen = choose_strategy(model, q, d, ps, storage, budget_mb, allow_disk, return_info, block,
                                          layers=sum_padding)
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=sum_padding, storage=storage)
    rngs = shot_generators(seed, q.nshots)
    extra = _check_probe_data(probe_data, d)
    if client is not None:
        if return_info:
            raise ValueError("return_info=True runs the shots serially: pass client=None")
        if extra is not None and not isinstance(extra, str):
            raise ValueError("probe_data records run serially (client=None); probe_data='synthetic' runs on Dask")
        from .parallel import reduce_shots
        task = shot_objective if extra is None else functools.partial(shot_objective, probe_data=extra)
        f, g = reduce_shots(task, model, q, d, opts, rngs, client=client, progress=progress)
        return f, to_physical(model, g, sum_padding)
    infos = shot_infos(model, q, opts, seed, return_info, None if chosen is None else chosen.samples, d.geometry)
    f = 0.0
    g = np.zeros(model.shape_padded, dtype=np.float64)
    for i in _shots(q.nshots, progress):
        fi, gi = shot_objective(model, q[i], d[i], opts, rngs[i], info=infos[i],
                                probe_data=extra if extra is None or isinstance(extra, str) else extra[i])
        f += fi
        g += gi
    g = to_physical(model, g, sum_padding)
    if return_info:
        return f, g, strategy_info(model, q, d, opts, chosen, infos, g)
    return f, g


def _check_probe_data(probe_data, d):
    if probe_data is None or (isinstance(probe_data, str) and probe_data == "synthetic"):
        return probe_data
    if isinstance(probe_data, str):
        raise ValueError(f"probe_data must be None, a Data or 'synthetic', got {probe_data!r}")
    if not isinstance(probe_data, Data):
        raise TypeError(f"probe_data must be None, a timeprobe.Data or 'synthetic', got {type(probe_data).__name__}")
    if probe_data.nshots != d.nshots:
        raise ValueError(f"probe_data has {probe_data.nshots} shots, d has {d.nshots}")
    return probe_data


def choose_strategy(model, q, d, ps, storage, budget_mb, allow_disk, return_info=False, block=None, stored=True,
                    layers=True, segments=True):
    """Validated ``(ps, storage, plan)`` from the user's ``ps``/``storage``/``budget_mb``.

    ``plan`` is the :class:`timeprobe.budget.Plan` of ``budget_mb`` (else None); ``stored=False``
    leaves the storage strategies out of the budget's candidates (imaging conditions they lack),
    ``segments=False`` the checkpointed segments (callers that store every snapshot);
    ``layers``: the gradient sums the absorbing layers (``sum_padding``, sizes of
    :func:`timeprobe.budget.gradient_sizes`)."""
    storage = StorageOptions.parse(storage)
    if ps is not None and storage is not None:
        raise ValueError(f"choose probing (ps={ps}) or stored snapshots (storage={storage.name!r}), not both")
    if budget_mb is None:
        if allow_disk:
            raise ValueError("allow_disk only applies with budget_mb (pass storage='disk' to store on disk)")
        return ps, storage, None
    if ps is not None or storage is not None:
        raise ValueError("budget_mb chooses the strategy itself: leave ps and storage unset")
    chosen = plan(gradient_sizes(model, q, d, layers), budget_mb, allow_disk=allow_disk, samples=bool(return_info),
                  block=block, stored=stored, segments=segments)
    return chosen.ps, chosen.storage, chosen


def shot_infos(model, q, opts, seed, return_info, samples=None, rec_geometry=None):
    """Per-shot info dicts (None without ``return_info``); probing gets ``samples`` points (default
    :data:`~timeprobe.accuracy.DEFAULT_SAMPLES`), drawn from the generator after the shots' ones (the
    probes stay those of the same call without it), stratified by distance to the sources and the
    receivers (``rec_geometry``)."""
    if not return_info:
        return [None] * q.nshots
    infos = [dict() for _ in range(q.nshots)]
    if opts.ps is not None and samples != 0:
        if isinstance(seed, np.random.SeedSequence):
            child = seed.spawn(1)[0]  # after shot_generators' children: a new one
        else:  # shot_generators spawned children 0 … nshots−1 of SeedSequence(seed): take the next one
            child = np.random.SeedSequence(seed).spawn(q.nshots + 1)[-1]
        centres = np.vstack(list(q.geometry.coordinates)
                            + ([] if rec_geometry is None else list(rec_geometry.coordinates)))
        pts = sample_points(model, samples or DEFAULT_SAMPLES, np.random.default_rng(child), centres=centres,
                            skip_edge=opts.sum_padding)
        for info in infos:
            info["points"] = pts
    return infos


def strategy_info(model, q, d, opts, chosen, infos, g, scale=None, weight=None, estimate=True):
    """The ``info`` dict of ``return_info=True``.

    Keys: ``strategy`` ("full", "probe", "nyquist", "nyquist16", …), ``ps``, ``storage``
    (StorageOptions or None), ``k`` (per shot), ``predicted_mb`` (working memory of one shot,
    :mod:`timeprobe.budget`), ``budget_mb``, ``candidates`` (the budget's ``[(name, MiB, fits)]``),
    ``accuracy`` (estimated cosine with the exact gradient; probed gradients with ``sum_padding``:
    over the interior, the outermost points — the absorbing layers' sums — left out), ``accuracy_std`` and
    ``accuracy_method``; probing adds ``samples`` (points of the sampled estimate), compressed
    storage ``quantisation_error`` (ρ of :mod:`timeprobe.accuracy`). ``scale``: per-shot factors applied to the exact samples (the images'
    ``1/dt``); ``weight``: a fixed pointwise factor the returned ``g`` carries (an illumination
    normalisation); ``estimate=False``: no accuracy estimate (``accuracy`` None)."""
    sizes = gradient_sizes(model, q, d, opts.sum_padding)
    if opts.storage is not None:
        strategy = opts.storage.name
        mem = strategy_memory(sizes, "stored", storage=opts.storage)
    elif opts.ps is not None:
        strategy = "probe"
        mem = strategy_memory(sizes, "probe", ps=opts.ps, block=opts.block,
                              samples=len(infos[0]["points"].flat) if infos and "points" in infos[0] else 0)
    else:
        strategy = "full"
        mem = strategy_memory(sizes, "full")
    out = dict(strategy=strategy, ps=opts.ps, storage=opts.storage, k=[i.get("k") for i in infos],
               predicted_mb=mem / MIB, budget_mb=None if chosen is None else chosen.budget_bytes / MIB,
               candidates=[] if chosen is None else [(n, b / MIB, fit) for n, b, fit in chosen.candidates])
    if not estimate:
        out.update(accuracy=None, accuracy_std=None, accuracy_method="not estimated (imaging condition)")
    elif strategy == "full":
        out.update(accuracy=1.0, accuracy_std=0.0, accuracy_method="exact (full storage)")
    elif opts.storage is not None:
        energy = sum(i["energy"] for i in infos)
        noise = sum(i["noise"] for i in infos)
        rho = float(np.sqrt(noise / energy)) if energy > 0 else 0.0
        out.update(accuracy=quantisation_cosine(rho), accuracy_std=0.0, quantisation_error=rho,
                   accuracy_method=("Nyquist sum, exact to the −60 dB Poisson bound" if opts.storage.bits == 32
                                    else "quantisation model 1 − ρ²/2, ρ the relative snapshot error"))
    elif not infos or "points" not in infos[0]:
        out.update(accuracy=None, accuracy_std=None,
                   accuracy_method="not estimated (the budget leaves too little memory for sampled points)")
    else:
        points = infos[0]["points"]
        exact = np.zeros(len(points.flat))
        for i, info in enumerate(infos):
            exact += info["exact_samples"] * (1.0 if scale is None else scale[i])
        if weight is not None:
            exact *= np.ravel(weight)[points.flat]
        if opts.sum_padding:  # the outermost points hold the layers' sums, not sampled: the interior's cosine
            g = np.where(edge_mask(model.shape), 0, g)
        est, std = cosine_estimate(g, points, exact)
        out.update(accuracy=est, accuracy_std=std, samples=len(points.flat),
                   accuracy_method=f"exact gradient at {len(points.flat)} random points (stratified by distance "
                                   f"to sources and receivers), control variate"
                                   + (", interior (outermost points left out)" if opts.sum_padding else ""))
    return out


def _shots(nshots, progress, desc="shots"):
    if not progress:
        return range(nshots)
    from tqdm.auto import tqdm
    return tqdm(range(nshots), desc=desc, leave=False)


@serial_blas()
def jacobian_adjoint(model, q, dd, ps=None, mode="QR", seed=None, *, probe_data=None, storage=None,
                     budget_mb=None, allow_disk=False, return_info=False, subsample="auto", method="blocked",
                     block=None, probe_kwargs=None, sum_padding=True, progress=False):
    """Adjoint Born ``Jᵀ δd`` (RTM image), exact (``ps=None``), probed, or from stored snapshots.

    Same convention as :func:`timeprobe.propagators.born_adjoint`
    (``Jᵀ δd = Eᵀ(−Σ_n u[n]·v̈[n])`` with ``v`` driven by ``Rᵀ δd``): the exact adjoint of
    :func:`timeprobe.born` (``sum_padding=False``: the physical part of ``−Σ_n u[n]·v̈[n]``).
    For the "QR" mode the probes are designed from ``probe_data`` (default ``δd`` itself).
    ``storage``, ``budget_mb``, ``allow_disk``, ``return_info``: as in :func:`fwi_objective`
    (returns ``(g, info)``).
    """
    check_inputs(model, q, d=dd)
    ps, storage, chosen = choose_strategy(model, q, dd, ps, storage, budget_mb, allow_disk, return_info, block,
                                          layers=sum_padding)
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=sum_padding, storage=storage)
    rngs = shot_generators(seed, q.nshots)
    infos = shot_infos(model, q, opts, seed, return_info, None if chosen is None else chosen.samples, dd.geometry)
    pdata = dd if probe_data is None else probe_data
    g = np.zeros(model.shape_padded, dtype=np.float64)
    scale = []
    for i in _shots(q.nshots, progress):
        traces = lambda rec, dt, nt, i=i: from_computational_adjoint(dd.arrays[i], dd.geometry[i], dt, nt,
                                                                     out=rec)
        grad, dt = shot_gradient(model, q[i], dd.geometry[i], traces, opts, rngs[i], probe_data=pdata[i],
                                 info=infos[i])
        g += grad / dt  # the operators compute −dt·Σ u·v̈
        scale.append(1.0 / dt)
    g = to_physical(model, g, sum_padding)
    if return_info:
        return g, strategy_info(model, q, dd, opts, chosen, infos, g, scale=scale)
    return g
