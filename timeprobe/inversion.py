"""Multiscale FWI driver with random shot batches, bounds, a water mask and resumable runs.

:func:`fwi` minimises, band after band (frequency continuation, Bunks et al. 1995),

    f_b(m) = ½ Σ_{i ∈ B_k} dt_d ‖R P_i u_i(m; L_b q_i) − L_b d_i‖²,   1/vmax² ≤ m ≤ 1/vmin²,

with ``L_b`` the zero-phase Butterworth filter of band ``b``
(:func:`timeprobe.preprocessing.bandpass`, applied to the wavelets and the data alike
after delaying both by ``2/f_low`` so the filter's precursor is kept,
:func:`timeprobe.preprocessing.delay`), ``B_k`` the shot batch of global iteration ``k``
(:class:`timeprobe.optimize.ShotBatches`: drawn from ``default_rng([seed, k])``),
the water layer fixed (:class:`timeprobe.optimize.ModelMask`), and the gradient of
:func:`timeprobe.fwi_objective`: exact (``ps=None``), probed (``ps=r``, probes seeded by
``[seed, k]``) or, where ``fwi_objective`` supports it, within a memory budget
(``budget_mb``). Each band is one run of :func:`timeprobe.optimize.spg` or
:func:`timeprobe.optimize.lbfgs` from the previous band's model, on the objective
scaled by its first gradient (:class:`timeprobe.optimize.ScaledObjective`).

Resumable runs (``out=DIR``)
----------------------------
After every iteration the driver replaces two HDF5 files (atomically,
:func:`timeprobe.io.write_snapshot`):

* ``DIR/result.h5`` — dataset ``m`` (latest model, squared slowness s²/km², (nx, nz)),
  ``m0``, ``iteration`` (completed iterations), ``band``, ``history/…`` (per
  iteration: objective, band, time, evaluations, peak memory, relative model error when
  a true model is given), and the grid ``n``, ``d``, ``o`` (the SLIM/JUDI layout:
  ``Model.from_h5("DIR/result.h5", key="m")`` reads the result);
* ``DIR/state.h5`` — everything needed to continue: the optimizer state (iterate,
  gradient, SPG's previous step and non-monotone window or the L-BFGS memory pairs,
  :class:`timeprobe.optimize.OptimizerState`), the scale of the band's objective, the
  band and iteration counters, the batch/probe random streams (their seed and counter:
  every draw is ``default_rng([seed, k])``, so the counter *is* the generator state)
  and a fingerprint of the settings.

``resume=True`` restarts from those files (and starts afresh where there are none) —
after an interruption, a kill, or a run configured with fewer iterations — and ends at the same model as an uninterrupted run
(bit for bit in serial runs; with a Dask client the shot gradients are summed in
completion order, equal to round-off). Resuming with settings other than the
iteration counts (bands, batch, probes, bounds, data…) raises ``ValueError`` naming
them; iterations may be added to the band in progress and to later bands (a band
already closed keeps its count: the resumed run must end where an uninterrupted run
with the new counts ends). Without ``resume`` a ``DIR`` holding results is refused (they are never overwritten).
With ``plots=True`` a QC figure ``DIR/qc/iteration-NNNN.png`` is written per iteration.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry import Data
from .io import peak_memory_mb, read_snapshot, write_snapshot
from .model import Model
from .mpi import is_distributed
from .objectives import fwi_objective
from .optimize import (ModelMask, OptimizerState, ScaledObjective, ShotBatches, detect_water_rows, lbfgs, spg)
from .preprocessing import bandpass, delay
from .utils import serial_blas

__all__ = ["fwi", "FWIResult", "frequency_bands"]

_OPTIMIZERS = {"spg": spg, "lbfgs": lbfgs}
_DEFAULT_MEMORY = {"spg": 3, "lbfgs": 5}
RESULT_FILE = "result.h5"
STATE_FILE = "state.h5"


@dataclass
class FWIResult:
    """Outcome of :func:`fwi`.

    ``model`` the final :class:`Model` (``m`` its squared slowness), ``iterations``
    the completed iterations over all bands, ``history`` per-iteration arrays
    (``iteration, band, objective, time, nfev, peak_memory`` and ``rel_error`` with a
    true model), ``messages`` why each band stopped, ``out`` the run folder (or None),
    ``resumed_from`` the iteration the run resumed at (0 for a fresh run).
    """
    model: Model
    iterations: int
    history: dict
    messages: list = field(default_factory=list)
    out: Path | None = None
    resumed_from: int = 0

    @property
    def m(self):
        return self.model.m


def frequency_bands(bands):
    """Normalise ``bands`` to a list of ``(fmin, fmax)`` pairs in kHz (``fmin`` may be None).

    Accepts None (one unfiltered band, ``[(None, None)]``) or a list of low-pass corners,
    ``(fmin, fmax)`` pairs and ``None`` (the unfiltered data, as the last band). Corners
    must not decrease from band to band.
    """
    if bands is None:
        return [(None, None)]
    if isinstance(bands, (numbers.Real, str)):
        raise TypeError(f"bands must be a list of frequencies (kHz) or (fmin, fmax) pairs, got {bands!r}")
    out = []
    for b in bands:
        if b is None:
            lo, hi = None, None
        elif isinstance(b, numbers.Real):
            lo, hi = None, float(b)
        else:
            b = list(b)
            if len(b) != 2:
                raise ValueError(f"a band is a low-pass corner or a pair (fmin, fmax) in kHz, got {b!r}")
            lo, hi = (None if b[0] in (None, 0) else float(b[0])), (None if b[1] is None else float(b[1]))
        if hi is not None and not hi > 0:
            raise ValueError(f"band corner fmax must be positive (kHz), got {hi}")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"band ({lo}, {hi}) kHz: fmin must be below fmax")
        out.append((lo, hi))
    if not out:
        raise ValueError("bands is empty")
    highs = [np.inf if hi is None else hi for _, hi in out]
    if any(b < a for a, b in zip(highs[:-1], highs[1:])):
        raise ValueError(f"band corners must not decrease (low frequencies first; None, the unfiltered data, "
                         f"last), got {[h for _, h in out]}")
    return out


class _BandData:
    """Wavelets and data of one band, filtered shot by shot when a batch asks for them (no copy of the
    whole survey is held): delayed by 2/f_low (the zero-phase filter's precursor is kept), then
    filtered alike."""

    def __init__(self, q, d, band, order):
        lo, hi = band
        self.q, self.d, self.band, self.order = q, d, band, order
        if lo is None and hi is None:
            self.shift = 0.0
            return
        nyq = 0.5 / d.dt
        if hi is not None and hi >= nyq:
            raise ValueError(f"band corner {hi} kHz is at or above the data's Nyquist frequency {nyq:g} kHz "
                             f"(frequencies are in kHz: 8 Hz = 0.008)")
        self.shift = float(np.ceil(2.0 / (lo if lo is not None else hi) / d.dt) * d.dt)
        if not np.isclose(q.dt, d.dt):  # filter the wavelets on the data's axis
            self.q = q.resample(d.dt, t=d.geometry.t)

    def __call__(self, idx):
        q, d = self.q[idx], self.d[idx]
        if self.band == (None, None):
            return q, d
        lo, hi = self.band
        return (bandpass(delay(q, self.shift), lo, hi, order=self.order),
                bandpass(delay(d, self.shift), lo, hi, order=self.order))


def _digest(*arrays):
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _data_digest(x):
    """Cheap fingerprint of a Data: shapes, time axis, coordinates and per-shot float64 norms."""
    norms = np.array([np.linalg.norm(a.astype(np.float64)) for a in x.arrays])
    g = x.geometry
    return _digest(norms, np.array([g.dt, g.t, g.t0]), *g.coordinates)


def _as_mask(water, model0):
    if isinstance(water, ModelMask):
        mask = water
    elif water is None:
        rows = detect_water_rows(model0)
        mask = ModelMask(np.broadcast_to(np.arange(model0.shape[-1]) >= rows, model0.shape).copy())
    elif isinstance(water, numbers.Integral) and not isinstance(water, bool):
        if not 0 <= water <= model0.shape[-1]:
            raise ValueError(f"water = {water} rows lies outside the model depth (0…{model0.shape[-1]} rows)")
        mask = ModelMask(np.broadcast_to(np.arange(model0.shape[-1]) >= water, model0.shape).copy())
    else:
        mask = ModelMask(np.asarray(water))
    if mask.shape != model0.shape:
        raise ValueError(f"water mask has shape {mask.shape}, the model {model0.shape}")
    return mask


def _stable_dt(model0, vmax):
    """Computational dt stable for every model up to ``vmax`` (km/s): fixed for the whole run."""
    probe = Model(vp=np.full((2,) * model0.dim, vmax), spacing=model0.spacing, nbl=0,
                  space_order=model0.space_order, cfl=model0.cfl)
    return min(model0.dt, probe.critical_dt)


def _prepare_out(out, resume):
    """The run folder; whether it holds a run to resume. Refuses to overwrite results."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    has_state = (out / STATE_FILE).is_file()
    qc = out / "qc"
    has_results = has_state or (out / RESULT_FILE).is_file() or (qc.is_dir() and any(qc.glob("iteration-*.png")))
    if has_results and not resume:
        raise FileExistsError(f"{out} holds the results of a run; results are never overwritten: choose a new "
                              f"folder, or pass resume=True (timeprobe fwi --resume) to continue that run")
    if has_results and not has_state:
        raise FileNotFoundError(f"{out} holds results but no {STATE_FILE}: the run cannot be resumed")
    out.mkdir(parents=True, exist_ok=True)
    (out / "qc").mkdir(exist_ok=True)
    return out, has_state


def _check_fingerprint(saved, current):
    saved = json.loads(saved)
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        detail = "; ".join(f"{k}: stored {saved.get(k)!r}, now {current.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume: the run was started with other settings ({detail}). Only the numbers "
                         f"of iterations may change between a run and its resumption")


def _check_iterations(iters, bands_run, counters, messages, band_list):
    """On resumption, the bands already closed must keep the iterations they ran (or more, if they
    stopped early), and the band in progress cannot get fewer than it ran: a resumed run can only
    end where an uninterrupted run with the new counts would."""
    done = np.bincount(np.asarray(bands_run, dtype=int), minlength=len(band_list))
    current = counters["band"]
    for b in range(current + 1):
        early = len(messages) > b and not messages[b].startswith("maximum number")
        closed = b < current
        if (closed and not (iters[b] == done[b] or (early and iters[b] >= done[b]))) or iters[b] < done[b]:
            raise ValueError(f"cannot resume: band {b} {band_list[b]} kHz has already run {done[b]} iteration(s), "
                             f"the settings ask for {iters[b]}; only the band in progress (band {current}) and "
                             f"later ones can get more iterations")


@serial_blas()
def fwi(model0, q, d, *, bands=None, iterations=10, batch=None, ps=None, mode="QR", seed=0, vmin=None,
        vmax=None, water=None, optimizer="spg", memory=None, budget_mb=None, client=None, out=None,
        resume=False, progress=True, plots=True, true_model=None, filter_order=4, callback=None):
    """Multiscale FWI from ``model0`` (module docstring for the problem solved and the run files).

    Parameters
    ----------
    model0 : Model
        Starting model (its grid, absorbing layers and order are kept).
    q : Data
        Source wavelet(s), one trace per shot (any sampling; resampled to the data's for filtering).
    d : Data
        Observed shot records, as many shots as ``q``.
    bands : None or list
        Frequency bands (kHz), low first: low-pass corners ``[0.004, 0.008]``, pairs
        ``[(0.002, 0.005), …]``, and ``None`` for the unfiltered data (``[0.004, 0.006, None]``);
        ``bands=None`` inverts the data as given.
    iterations : int or list of int
        Iterations per band (one number for all bands).
    batch : int, optional
        Shots per iteration, drawn afresh at every iteration; None uses every shot.
    ps, mode : gradient
        ``ps=None`` exact gradient (full wavefield storage), ``ps=r`` probed with ``r``
        probes of design ``mode`` (:func:`timeprobe.fwi_objective`).
    seed : int
        Seed of the shot batches and the probes.
    vmin, vmax : float (km/s)
        Velocity bounds (default ``0.75 min(vp0)`` and ``1.5 max(vp0)``). The
        computational time step is fixed at the one stable for ``vmax``.
    water : None, int, bool array or ModelMask
        Fixed points: None detects the water rows (``vp ≈ 1.5`` km/s across the model,
        :func:`timeprobe.optimize.detect_water_rows`), an int fixes that many top rows
        (0: none), an array/mask is used as given (True = free). The outermost points are
        always fixed too: they set the absorbing layers' velocity.
    optimizer : {"spg", "lbfgs"}
        :func:`timeprobe.optimize.spg` or the resumable :func:`timeprobe.optimize.lbfgs`.
    memory : int, optional
        SPG's non-monotone window (default 3) or the L-BFGS pairs (default 5).
    budget_mb : float, optional
        Working-memory budget (MiB per shot) of the gradient: ``fwi_objective(budget_mb=...)``
        chooses full storage, stored (compressed) snapshots or the largest r that fits
        (:mod:`timeprobe.budget`); leave ``ps`` unset.
    client : dask.distributed.Client or str, optional
        Shots as Dask tasks (:mod:`timeprobe.parallel`).
    out : str or Path, optional
        Run folder for ``result.h5``, ``state.h5`` and ``qc/`` (none written without it).
    resume : bool
        Continue the run stored in ``out``.
    progress : bool
        tqdm progress bar over all iterations.
    plots : bool
        QC figure per iteration (with ``out``).
    true_model : Model, optional
        Reference for the relative model error ``‖v − v_true‖/‖v_true‖`` per iteration.
    filter_order : int
        Butterworth order of the band filters.
    callback : callable, optional
        ``callback(info)`` after every iteration with ``iteration, band, f, m, nfev, time``.

    Returns
    -------
    FWIResult
    """
    if not isinstance(model0, Model):
        raise TypeError(f"model0 must be a timeprobe.Model, got {type(model0).__name__}")
    for name, x in (("q", q), ("d", d)):
        if not isinstance(x, Data):
            raise TypeError(f"{name} must be a timeprobe.Data, got {type(x).__name__}")
    if q.nshots != d.nshots:
        raise ValueError(f"q has {q.nshots} shot(s), d has {d.nshots}")
    if true_model is not None and getattr(true_model, "shape", None) != model0.shape:
        raise ValueError(f"true_model must be a Model of model0's shape {model0.shape}, got "
                         f"{getattr(true_model, 'shape', type(true_model).__name__)}")
    band_list = frequency_bands(bands)
    nb = len(band_list)
    if isinstance(iterations, numbers.Integral) and not isinstance(iterations, bool):
        iters = [int(iterations)] * nb
    else:
        iters = [int(i) for i in iterations]
    if len(iters) != nb:
        raise ValueError(f"{len(iters)} iteration count(s) for {nb} band(s)")
    if any(i < 0 for i in iters):
        raise ValueError(f"iterations must be non-negative, got {iters}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    memory = _DEFAULT_MEMORY[optimizer] if memory is None else memory
    if ps is not None and (isinstance(ps, bool) or not isinstance(ps, numbers.Integral) or ps < 1):
        raise ValueError(f"ps must be None (exact gradient) or a positive number of probes, got {ps!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    vp0 = model0.vp
    vmin = float(0.75 * vp0.min()) if vmin is None else float(vmin)
    vmax = float(1.5 * vp0.max()) if vmax is None else float(vmax)
    if not 0 < vmin < vmax:
        raise ValueError(f"velocity bounds must satisfy 0 < vmin < vmax (km/s), got vmin={vmin}, vmax={vmax}")
    extra = {}
    if budget_mb is not None:
        if ps is not None:
            raise ValueError(f"budget_mb chooses the gradient itself (storage or probing): leave ps unset, got ps={ps}")
        extra["budget_mb"] = float(budget_mb)
    mask = _as_mask(water, model0)
    if model0.nbl:
        # The outermost points set m in the absorbing layers (Model.pad: edge copies); they stay
        # fixed. The gradient w.r.t. every other point is then exact without folding the
        # layers onto the edges (sum_padding=False), and probe fields skip the layers.
        edges = np.zeros(model0.shape, dtype=bool)
        edges[(slice(1, -1),) * model0.dim] = True
        mask = ModelMask(mask.free & edges)
        extra["sum_padding"] = False
    base = model0.with_m(model0.m)
    base.dt = _stable_dt(model0, vmax)
    lo = np.where(mask.free, 1.0 / vmax**2, model0.m).astype(np.float64)
    up = np.where(mask.free, 1.0 / vmin**2, model0.m).astype(np.float64)
    vfree = vp0[mask.free]
    if vfree.size and (vfree.min() < vmin * (1 - 1e-6) or vfree.max() > vmax * (1 + 1e-6)):
        raise ValueError(f"velocity bounds [{vmin}, {vmax}] km/s exclude the starting model (vp "
                         f"{vfree.min():.3f}–{vfree.max():.3f} km/s where it may change)")
    batches = None if batch is None or batch >= q.nshots else ShotBatches(q.nshots, int(batch), seed=int(seed))

    settings = dict(
        shape=list(model0.shape), spacing=list(model0.spacing), origin=list(model0.origin), nbl=model0.nbl,
        space_order=model0.space_order, dt=base.dt, bands=[list(b) for b in band_list],
        batch=None if batches is None else int(batch), ps=ps, mode=mode if ps is not None else None, seed=int(seed),
        vmin=vmin, vmax=vmax, mask=_digest(mask.free), optimizer=optimizer, memory=int(memory),
        budget_mb=extra.get("budget_mb"), filter_order=int(filter_order), model0=_digest(model0.m),
        q=_data_digest(q), d=_data_digest(d), nshots=q.nshots)

    # ---------------------------------------------------------------- run folder / resume
    history = {k: [] for k in ("iteration", "band", "objective", "time", "nfev", "peak_memory")}
    if true_model is not None:
        history["rel_error"] = []
    counters = dict(iteration=0, band=0, band_complete=0, elapsed=0.0)
    opt_state, scale_c, messages = None, None, []
    m_current = model0.m.copy()
    resumed_from = 0
    band_start = model0.m.copy()
    if out is not None and is_distributed():
        raise ValueError("fwi(out=...) writes its run folder from one process and is not MPI-aware: under "
                         "Devito MPI run it with out=None (every rank gets the same result) and write the "
                         "result from timeprobe.mpi.is_root()")
    if out is not None:
        out, busy = _prepare_out(out, resume)
        if busy:
            # the state file alone restarts the run (result.h5 is output: it may be one iteration ahead)
            state = read_snapshot(out / STATE_FILE)
            _check_fingerprint(state["settings"], settings)
            for k in counters:
                counters[k] = type(counters[k])(state[k])
            for k in history:
                history[k] = list(np.atleast_1d(state["history"].get(k, [])))[:counters["iteration"]]
            messages = json.loads(state["messages"])
            band_start = np.asarray(state["band_start"], dtype=model0.m.dtype)
            m_current = band_start
            if "optimizer" in state:
                opt_state = OptimizerState.from_dict(state["optimizer"])
                scale_c = float(state["scale"])
                m_current = opt_state.x.reshape(model0.shape).astype(model0.m.dtype)
            resumed_from = counters["iteration"]
            _check_iterations(iters, history["band"], counters, messages, band_list)
    run_t0 = time.perf_counter() - counters["elapsed"]

    def save(state_opt=None, c=None):
        if out is None:
            return
        counters["elapsed"] = time.perf_counter() - run_t0
        hist = {k: np.asarray(v) for k, v in history.items()}
        # n, d, o: the SLIM/JUDI layout, so Model.from_h5(result.h5, key="m") reads the result back
        write_snapshot(out / RESULT_FILE, dict(m=m_current, m0=model0.m, iteration=counters["iteration"],
                                               band=counters["band"], history=hist, n=np.array(model0.shape),
                                               d=np.array(model0.spacing), o=np.array(model0.origin)),
                       attrs=dict(spacing=list(model0.spacing), origin=list(model0.origin), units_m="s^2/km^2",
                                  description="timeprobe FWI: m = latest squared slowness (nx, nz)"))
        values = dict(counters, settings=json.dumps(settings), messages=json.dumps(messages), history=hist,
                      band_start=band_start, batch_seed=int(seed), batch_counter=counters["iteration"])
        if state_opt is not None:
            values["optimizer"] = state_opt.to_dict()
            values["scale"] = c
        write_snapshot(out / STATE_FILE, values)

    if out is not None and not resumed_from and not busy:
        save()

    bar = None
    total = sum(iters)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=min(counters["iteration"], total), desc="fwi", unit="it")
    solver = _OPTIMIZERS[optimizer]
    try:
        for b in range(counters["band"], nb):
            if b > counters["band"]:
                counters.update(band=b, band_complete=0)
                opt_state, scale_c = None, None
                band_start = m_current.copy()
                save()
            done_in_band = 0 if opt_state is None else opt_state.iteration
            if counters["band_complete"] and not (len(messages) > b and messages[b].startswith("maximum number")
                                                  and iters[b] > done_in_band):
                continue  # finished for a reason more iterations do not change
            if iters[b] <= done_in_band:
                continue  # already ran the iterations asked for in this band
            band_data = _BandData(q, d, band_list[b], filter_order)

            def objective(m, band_data=band_data):
                k = counters["iteration"]
                idx = list(range(q.nshots)) if batches is None else [int(i) for i in batches.batch_for(k)]
                qb, db = band_data(idx)
                f, g = fwi_objective(base.with_m(m), qb, db, ps=ps, mode=mode, seed=[int(seed), k],
                                     client=client, **extra)
                return f, mask(g)

            obj = ScaledObjective(objective, scale=scale_c if scale_c is not None else "first")
            latest = {}

            def checkpoint(state):
                latest["state"] = state

            def on_iteration(x, info, b=b, obj=obj):
                nonlocal m_current
                counters["iteration"] += 1
                m_current = np.asarray(x, dtype=model0.m.dtype)
                f = info["f"] / obj.c
                el = time.perf_counter() - run_t0
                row = dict(iteration=counters["iteration"], band=b, objective=f, time=el, nfev=info["nfev"],
                           peak_memory=peak_memory_mb())
                if true_model is not None:
                    row["rel_error"] = _relative_error(m_current, true_model)
                for k, v in row.items():
                    history[k].append(v)
                save(latest["state"], obj.c)
                if out is not None and plots:
                    _plot_qc(out / "qc" / f"iteration-{counters['iteration']:04d}.png", base, m_current,
                             model0.m, history, band_list[b], true_model)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(band=b, f=f"{f:.4e}")
                if callback is not None:
                    callback(dict(iteration=counters["iteration"], band=b, f=f, m=m_current, nfev=info["nfev"],
                                  time=el))

            res = solver(obj, m_current, lo, up, maxiter=iters[b], memory=memory, return_best=False,
                         progress=False, state=opt_state, checkpoint=checkpoint, callback=on_iteration)
            m_current = np.asarray(res.x_last, dtype=model0.m.dtype)
            opt_state, scale_c = latest.get("state", opt_state), obj.c
            messages = messages[:b] + [res.message]
            counters["band_complete"] = 1
            save(opt_state, scale_c)
    finally:
        if bar is not None:
            bar.close()
    return FWIResult(model=base.with_m(m_current), iterations=counters["iteration"],
                     history={k: np.asarray(v) for k, v in history.items()}, messages=messages,
                     out=out, resumed_from=resumed_from)


def _relative_error(m, true_model):
    vp, vt = 1.0 / np.sqrt(np.asarray(m, dtype=np.float64)), true_model.vp.astype(np.float64)
    return float(np.linalg.norm(vp - vt) / np.linalg.norm(vt))


def _band_label(band):
    lo, hi = (None if f is None else f * 1e3 for f in band)
    if lo is None and hi is None:
        return "all frequencies"
    if lo is None:
        return f"band ≤ {hi:.3g} Hz"
    return f"band ≥ {lo:.3g} Hz" if hi is None else f"band {lo:.3g}–{hi:.3g} Hz"


def _plot_qc(path, model, m, m0, history, band, true_model):
    """Current velocity, its change since the start and the convergence curves (km axes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    vp, vp0 = 1.0 / np.sqrt(m), 1.0 / np.sqrt(m0)
    if vp.ndim == 3:  # the central inline
        j = vp.shape[1] // 2
        vp, vp0 = vp[:, j], vp0[:, j]
    (x0, x1), (z0, z1) = model.domain_bounds[0], model.domain_bounds[-1]
    ext = [x0 / 1e3, x1 / 1e3, z1 / 1e3, z0 / 1e3]
    fig, axs = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained",
                            gridspec_kw=dict(width_ratios=[1.4, 1.4, 1]))
    im = axs[0].imshow(vp.T, extent=ext, cmap="jet", aspect="auto")
    fig.colorbar(im, ax=axs[0], label="vp (km/s)")
    axs[0].set_title(f"vp, iteration {history['iteration'][-1]}")
    dv = vp - vp0
    lim = float(np.abs(dv).max()) or 1.0
    im = axs[1].imshow(dv.T, extent=ext, cmap="seismic", vmin=-lim, vmax=lim, aspect="auto")
    fig.colorbar(im, ax=axs[1], label="Δvp (km/s)")
    axs[1].set_title(f"update since the start ({_band_label(band)})")
    for ax in axs[:2]:
        ax.set_xlabel("x (km)")
        ax.set_ylabel("z (km)")
    it, bands_run = np.asarray(history["iteration"]), np.asarray(history["band"])
    objective = np.asarray(history["objective"])
    for b in np.unique(bands_run):  # one curve per band: the objective changes with the band's data
        sel = bands_run == b
        axs[2].semilogy(it[sel], objective[sel], "o-", label=f"band {b}")
    axs[2].set_xlabel("iteration")
    axs[2].set_ylabel("objective (shot batch)")
    axs[2].legend(fontsize=8, loc="best")
    if "rel_error" in history and len(history["rel_error"]):
        ax2 = axs[2].twinx()
        ax2.plot(it, np.asarray(history["rel_error"]), "s--", color="tab:red")
        ax2.set_ylabel("relative model error", color="tab:red")
    axs[2].set_title("convergence")
    fig.savefig(path, dpi=80)
    plt.close(fig)
