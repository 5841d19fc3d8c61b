"""Deepwave 0.1.0 (the peer) on timeprobe's benchmark shots: its exact gradient and every low-memory mode.

For one shot of ``bench_harness.py`` (true model, initial model, one source with a Ricker wavelet,
a receiver line, record length T, data sampling dt_d) this computes, each configuration in its own
process, Deepwave's FWI gradient with respect to the squared slowness:

* ``dw_exact``  history in memory, float32, every time step (Deepwave's exact discrete gradient);
* ``dw_8bit``  ``storage_compression=True`` (8-bit block max-abs quantisation, lossy);
* ``dw_nyq_k{k}``  ``model_gradient_sampling_interval = k``, the Nyquist interval timeprobe uses
  for probing (``timeprobe.objectives.default_subsample``: k·dt ≤ 1/(2 f_max), f_max the −60 dB
  point of the source spectrum);
* ``dw_8bit_nyq_k{k}``  both;
* ``dw_disk``, ``dw_disk_nyq_k{k}``, ``dw_disk_8bit_nyq_k{k}``  ``storage_mode="disk"`` (history in
  files under ``--storage-path``, one staging field in memory);
* ``dw_ckpt_s{S}``, ``dw_ckpt_s{S}_8bit_nyq_k{k}``  ``checkpoint_segments = S`` (each segment's
  forward pass rerun under ``torch.utils.checkpoint`` during the backward pass; S ≈ √(n_s/2) for
  n_s stored steps, which balances one segment's history against the S boundary states);
* ``dw_plain``  forward modelling only (``torch.no_grad``): the memory baseline and time unit;
  (``storage_mode="cpu"`` is no row: on a CPU device Deepwave runs it as ``"device"``);
* ``tp_exact``, ``tp_probe_r{r}``  timeprobe's full-storage and QR-probed gradients of the same
  shot (``fwi_objective``), so that both sides are measured in one run.

Each row records the wall time (minimum of ``--repeats`` runs after a warm-up run), the working
memory (peak RSS during the gradient − peak RSS during plain modelling of the same engine, same
process, peak mark reset before each: ``bench_harness.reset_peak``), the memory the configuration
holds by construction (:func:`deepwave_memory_model`, and Deepwave's own lower bound
``deepwave.estimate_memory``), and two cosines taken on the physical domain below the water rows,
without the outermost ring of cells (see "Model edges" below): with Deepwave's own exact gradient
and with timeprobe's exact gradient. Observed data are modelled by the engine that computes the
gradient (Deepwave data for Deepwave gradients, timeprobe data for timeprobe gradients), each in
the true model; gradients at the initial model.

How the Deepwave run is made to solve timeprobe's problem (:class:`DeepwaveShot`)
---------------------------------------------------------------------------------
* Units. Deepwave is unit-agnostic; it gets SI: v = 1000·vp (m/s), spacing (m), dt (s). Its
  gradient is with respect to v; timeprobe's with respect to m = 1/vp² (s²/km²), so
  ``g_m = g_v·dv/dm = −g_v·v³/(2·10⁶)`` (v in m/s).
* Time axis. Deepwave runs at timeprobe's computational dt of the same model (``Model.dt``, nt =
  ``computational_axis``): the user dt passed is that dt and ``courant_number`` is set to
  dt·v_max·√(Σ 1/h²) so that Deepwave takes one internal step per sample (``step_ratio`` 1; its
  default Courant number 0.6 would halve dt). Both are leapfrog schemes with the same stability
  limit (8th-order central weights).
* Source. timeprobe's wavelet resampled to the computational axis (its windowed-sinc operator),
  negated (Deepwave adds −v²dt²·f to u(t+dt), timeprobe +dt²/m·q), first sample zeroed (timeprobe
  never injects src[0]). Both record ``rec[n] = u[n]``: no time shift.
* Points off the grid. Deepwave gets integer cells (``location_interpolation="none"``): every
  source / receiver becomes its 2^d surrounding cells with bilinear (trilinear) weights, the
  interpolation timeprobe's Devito operators use (Deepwave's own off-grid method, Hicks'
  windowed sinc, would be a different discretisation).
* Absorbing boundaries. ``pml_width`` = timeprobe's ``nbl`` on every face (no free surface on
  either side), ``pml_freq`` = the Ricker peak frequency, ``max_vel`` = the model's maximum.
  Deepwave's C-PML and timeprobe's damping layer (Devito's profile) differ: this is the one
  difference left. Measured on ``overthrust_small`` (``--cases overthrust_small [--nbl 80] --only
  dw_exact``): with 40 absorbing points the two data sets have cosine 0.996 and the misfits differ
  by 0.65 %, the exact gradients' cosine is 0.99967; with 80 points on both sides 0.99994, 3e-5 and
  0.999997. Timeprobe's misfit moves by 0.65 % between 40 and 80 points, Deepwave's by 3e-5:
  timeprobe's 40-point damping layer reflects, Deepwave's 40-point C-PML has converged.
* FD order. ``accuracy=8`` for ``space_order=8`` (the benchmarks' order).
* Misfit. ``f = ½ dt_d ‖R u_rec − d‖²`` with ``R`` timeprobe's resampling from the computational
  axis to the data axis (timeprobe's misfit, same constant); the adjoint source ``dt_d Rᵀ(R u_rec
  − d)`` is handed to ``rec.backward``. Deepwave's data and misfit then equal timeprobe's up to
  the boundary difference above: the misfits are reported side by side.
* Record length. ``model_gradient_sampling_interval`` (and aligned checkpoint segments) must
  divide the number of steps: the run is padded to ``nt_run`` ≥ nt steps with a silent source;
  the samples after nt carry zero residual, so the gradient is that of the nt-step problem.
* Model edges. Deepwave extends v into its PML by replicating the edge cells, so the adjoint of
  that padding adds the PML's gradient into the outermost ring of cells; timeprobe discards the
  gradient of its absorbing layers. Scores leave that ring out (it also holds Deepwave's largest
  compression errors, its documentation says); ``cos_own_all`` keeps it.

Deepwave's memory per mode (scalar propagator, float32; :func:`deepwave_memory_model`)
--------------------------------------------------------------------------------------
N_dw = Π (n_i + 2·nbl + accuracy) cells (the model, its PML and the FD padding); n_s = nt_run / k
stored steps (k the sampling interval). What Deepwave stores per step is ``2·v·dt²·∇²u`` (the
derivative of the update with respect to v), one value per cell:

* ``device`` (exact, or with an interval): n_s·N_dw·4 B — 4 bytes per cell and stored step;
* ``device`` + 8-bit: n_s·⌈(N_dw + 4·n_blocks)/4⌉·4 B (1 byte per cell plus one float32 scale per
  8×8 (2D) or 8×8×8 (3D) block: 1.0625 / 1.0078 B per cell and step) + 2 staging fields (2·N_dw·4 B);
* ``disk``: one staging field in memory (N_dw·4 B; + one compressed step with 8-bit), the history
  n_s·N_dw·4 B (or the compressed size) in files — written through the page cache, which is not
  the process' memory but is the machine's;
* ``checkpoint_segments = S``: one segment's history (n_s/S steps, as above) + S boundary states
  (Deepwave's ``auxiliary_state_bytes``: the two wavefields and the PML's auxiliary slabs);
* all: the backward pass' own wavefields, gradient buffers and model copies (a few N_dw·4 B, not
  in the formula; Deepwave's estimate calls them the unmodelled fixed overhead).

Outputs: one record (script ``peers``) appended to the benchmark history (``scripts/records.py``:
``benchmarks/history.jsonl``) unless ``--quick`` or ``--no-record``; in a fresh folder
(``results/peers-<time>/``, git-ignored, or beside ``--out``; nothing is overwritten) the JSON, a
Markdown table per case (``<stem>.md``) and the Pareto plot ``figures/<stem>_pareto.png`` (working
memory against 1 − cosine with the engine's own exact gradient, times on the labels).
``--write-docs`` copies the table and the plot to ``benchmarks/peers.md`` and
``benchmarks/figures/peers_pareto.png``; the table names its history record.

Usage (one at a time, on a quiet machine; ``--quick`` runs tiny cases, never recorded)::

    python scripts/peers.py                                   # overthrust2d 3 s and 8 s, layered3d
    python scripts/peers.py --cases overthrust_small overthrust_small:8000 --out /tmp/peers/peers.json
    python scripts/peers.py --cases overthrust_small --nbl 80 --only dw_exact   # the boundaries
    python scripts/peers.py --quick
    python scripts/benchmark_gradients.py --part peers        # the same, from the benchmark script

Needs the ``peers`` extra (``pip install -e ".[peers]"``: deepwave 0.1.0 and torch).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_harness import (CACHE, MIB, ROOT, cache_path, cached_record, cosine, in_subprocess, meta,  # noqa: E402
                           parse_case, reset_peak, setup, shot, vmhwm_mb)
import records  # noqa: E402

import timeprobe as tp  # noqa: E402
from timeprobe.budget import gradient_sizes  # noqa: E402
from timeprobe.geometry import resampling_operator  # noqa: E402
from timeprobe.geometry import computational_axis  # noqa: E402
from timeprobe.probing import default_subsample  # noqa: E402

DEEPWAVE_VERSION = "0.1.0"
FULL = dict(cases=[("overthrust2d", 3000.0), ("overthrust2d", 8000.0), ("layered3d", 1000.0)], r=32, repeats=2)
QUICK = dict(cases=[("layered2d_61_41", 600.0), ("layered3d_21_21_17", 300.0)], r=8, repeats=1)
ACCURACY = 8


def import_deepwave():
    """``(torch, deepwave)``; a clear error naming the extra when they are missing or another version."""
    try:
        import deepwave
        import torch
    except ImportError as e:
        raise ImportError(f"the peer benchmark needs deepwave=={DEEPWAVE_VERSION} and torch: "
                          f"pip install -e '.[peers]' ({e})") from e
    if deepwave.__version__ != DEEPWAVE_VERSION:
        raise ImportError(f"the peer benchmark is written for deepwave=={DEEPWAVE_VERSION}, "
                          f"found {deepwave.__version__}")
    return torch, deepwave


def n_threads():
    """Threads of both engines: OMP_NUM_THREADS (Devito's OpenMP) if set, else every CPU."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())


# --------------------------------------------------------------------------- translation
def corner_weights(model, coords):
    """Grid cells and bilinear (trilinear) weights of physical points (m).

    Returns ``(cells, W)``: ``cells`` (n_cells, dim) int64 cell indices of the unpadded model,
    each listed once; ``W`` (n_points × n_cells, CSR) with ``value(point) = W @ value(cells)`` —
    Devito's linear interpolation (injection is its transpose). Weights below 1e-6 of a cell
    (points on a grid line, up to round-off) are dropped, so on-grid points keep one cell.
    """
    coords = np.atleast_2d(np.asarray(coords, dtype=np.float64))
    pos = (coords - np.asarray(model.origin)) / np.asarray(model.spacing)
    near = np.round(pos)
    pos = np.where(np.abs(pos - near) < 1e-6, near, pos)
    base = np.floor(pos).astype(np.int64)
    frac = pos - base
    upper = np.asarray(model.shape) - 1
    if (base < 0).any() or (base + (frac > 0) > upper).any():
        bad = coords[(pos < 0).any(1) | (pos > upper).any(1)][:3]
        raise ValueError(f"points outside the model (cells 0…{tuple(upper)}, origin {model.origin}): {bad}")
    cells, rows, cols, vals = {}, [], [], []
    for i in range(len(coords)):
        for off in itertools.product((0, 1), repeat=coords.shape[1]):
            w = float(np.prod([1 - f if o == 0 else f for f, o in zip(frac[i], off)]))
            if w < 1e-6:
                continue
            j = cells.setdefault(tuple(int(b + o) for b, o in zip(base[i], off)), len(cells))
            rows.append(i)
            cols.append(j)
            vals.append(w)
    W = sp.csr_matrix((vals, (rows, cols)), shape=(len(coords), len(cells)))
    return np.array(list(cells), dtype=np.int64).reshape(-1, coords.shape[1]), W


def nyquist_k(wavelet_c, dt):
    """timeprobe's time-subsampling factor at the Poisson bound (``default_subsample`` with r = 1,
    i.e. never reduced for a probe count): k·dt ≤ 1/(2 f_max)."""
    return int(default_subsample(wavelet_c, dt, len(wavelet_c), 1))


def checkpoint_segments(n_steps, interval):
    """Segments S and the padded run length for ``checkpoint_segments`` with this interval.

    S ≈ √(n_s/2) (n_s = n_steps/interval stored steps) minimises one segment's history (n_s/S
    fields) plus S boundary states (≈ 2 fields each); among S within ×1.5 of it the one needing
    the fewest padding steps (every segment a multiple of ``interval`` steps) is taken.
    Returns ``(S, nt_run)``.
    """
    ns = n_steps / interval
    s0 = max(1.0, math.sqrt(ns / 2))
    best = None
    for s in range(max(1, int(s0 / 1.5)), int(math.ceil(s0 * 1.5)) + 1):
        unit = s * interval
        nt_run = -(-n_steps // unit) * unit
        key = (nt_run, abs(s - s0))
        if best is None or key < best[0]:
            best = (key, s, nt_run)
    return best[1], best[2]


class DeepwaveShot:
    """One timeprobe shot, in Deepwave's terms, on the computational axis of ``model``.

    See the module docstring for every convention. ``gradient`` returns timeprobe's misfit
    ``f = ½ dt_d ‖R u_rec − d‖²`` and its gradient with respect to the squared slowness (s²/km²),
    the model's shape, in ``dtype`` (float32, as the benchmarks; float64 for derivative checks).
    ``v`` is the velocity handed to Deepwave (m/s, the model's shape, ``dtype``); replacing it runs
    the same shot in another model (the time step and the PML stay those of ``model``/``max_vel``).
    """

    def __init__(self, model, q, rec, f0, max_vel=None, dtype=np.float32):
        if q.nshots != 1 or rec.nshots != 1:
            raise ValueError(f"one shot at a time (got {q.nshots} source and {rec.nshots} receiver shots)")
        self.torch, self.deepwave = import_deepwave()
        self.model = model
        self.dt, self.nt = computational_axis(model, q.geometry, rec)
        t_c = self.dt * np.arange(self.nt)
        self.wavelet = tp.resample(q.arrays[0], q.geometry.time, t_c)          # (nt, nsrc)
        self.src_cells, self.W_src = corner_weights(model, q.geometry.coordinates[0])
        self.rec_cells, self.W_rec = corner_weights(model, rec.coordinates[0])
        self.R = resampling_operator(t_c, rec.time).tocsr()                    # data ← computational
        self.dt_data = float(rec.dt)
        self.nt_data = int(rec.nt)
        self.pml_freq = 1e3 * f0                                               # Hz
        self.dtype = np.dtype(dtype)                                           # float32 (or float64 for tests)
        self.v = (1e3 * np.asarray(model.vp, dtype=np.float64)).astype(self.dtype)  # m/s
        self.vmax = float(self.v.max()) if max_vel is None else 1e3 * float(max_vel)   # m/s
        h = np.asarray(model.spacing, dtype=np.float64)
        crit = self.deepwave.discretisation.critical_courant_number(ACCURACY, propagator="scalar")
        # the Courant number of timeprobe's dt, a hair above so that Deepwave's ceil() gives one step
        self.courant = min(1e-3 * self.dt * self.vmax * float(np.sqrt((1 / h ** 2).sum())) * (1 + 1e-7), crit)
        self.step_ratio = None

    @property
    def nyquist_interval(self):
        """Deepwave's ``model_gradient_sampling_interval`` at timeprobe's Nyquist factor k. The
        interval counts user steps; the user dt passed to Deepwave is timeprobe's dt, so the
        sampling period interval·dt equals k·dt."""
        return nyquist_k(self.wavelet, self.dt)

    @property
    def shape_propagated(self):
        """The grid Deepwave propagates: the model, its PML (nbl per face) and the FD padding
        (accuracy/2 per face); N_dw is its size."""
        return tuple(n + 2 * self.model.nbl + ACCURACY for n in self.model.shape)

    def _sources(self, nt_run):
        src = np.zeros((self.W_src.shape[1], nt_run), self.dtype)
        src[:, :self.nt] = -(self.W_src.T @ self.wavelet.T.astype(np.float64))
        src[:, 0] = 0.0
        return self.torch.from_numpy(src[None])

    def propagate(self, v, nt_run=None, **kwargs):
        """Deepwave's ``scalar`` on this shot: receiver-cell traces (1, n_cells, nt_run)."""
        torch = self.torch
        nt_run = nt_run or self.nt
        out = self.deepwave.scalar(
            v, [float(h) for h in self.model.spacing], 1e-3 * self.dt,
            source_amplitudes=self._sources(nt_run),
            source_locations=torch.from_numpy(self.src_cells[None]),
            receiver_locations=torch.from_numpy(self.rec_cells[None]),
            accuracy=ACCURACY, pml_width=self.model.nbl, pml_freq=self.pml_freq, max_vel=self.vmax,
            courant_number=self.courant, location_interpolation="none", **kwargs)
        self.step_ratio = int(out.info.step_ratio)
        if self.step_ratio != 1:
            raise RuntimeError(f"Deepwave sub-stepped (step_ratio {self.step_ratio}): its time axis is not timeprobe's")
        return out.receiver_amplitudes

    def to_data(self, traces):
        """Receiver-cell traces (n_cells, ≥ nt) → receiver traces on the data axis (nt_d, nrec)."""
        rc = np.asarray(traces, dtype=np.float64)[:, :self.nt]
        return self.R @ (self.W_rec @ rc).T

    def forward(self):
        """Modelled data on the data axis (nt_d, nrec), float32: plain modelling, no history."""
        with self.torch.no_grad():
            rec = self.propagate(self.torch.from_numpy(self.v))
        return self.to_data(rec[0].numpy()).astype(self.dtype)

    def gradient(self, d_obs, interval=1, storage="device", compression=False, segments=None,
                 storage_path=None, nt_run=None):
        """``(f, g)``: timeprobe's misfit and Deepwave's gradient converted to squared slowness."""
        torch = self.torch
        if d_obs.shape != (self.nt_data, self.W_rec.shape[0]):
            raise ValueError(f"observed data must be (nt_d, nrec) = {(self.nt_data, self.W_rec.shape[0])}, "
                             f"got {d_obs.shape}")
        nt_run = nt_run or -(-self.nt // interval) * interval
        if nt_run % interval or nt_run < self.nt:
            raise ValueError(f"nt_run = {nt_run} must be a multiple of the interval {interval} and ≥ nt = {self.nt}")
        v = torch.from_numpy(self.v.copy()).requires_grad_(True)
        st = self.deepwave.Storage(mode=storage, path=storage_path if storage == "disk" else None,
                                   lossy_compression=compression)
        rec = self.propagate(v, nt_run, model_gradient_sampling_interval=interval, storage=st,
                             checkpoint_segments=segments)
        res = self.to_data(rec[0].detach().numpy()) - d_obs
        f = 0.5 * self.dt_data * float((res ** 2).sum())
        adj = np.zeros(rec.shape[1:], self.dtype)
        adj[:, :self.nt] = (self.W_rec.T @ (self.dt_data * (self.R.T @ res)).T)
        rec.backward(torch.from_numpy(adj[None]))
        g = -v.grad.numpy().astype(np.float64) * self.v.astype(np.float64) ** 3 / 2e6
        return f, g.astype(self.dtype)


# --------------------------------------------------------------------------- configurations
def peer_configs(n_steps, k, rs=(32, 64)):
    """The configurations of one shot (module docstring), with the padded run lengths."""
    nt_k = -(-n_steps // k) * k
    s1, nt_s1 = checkpoint_segments(n_steps, 1)
    sk, nt_sk = checkpoint_segments(n_steps, k)
    dw = lambda name, **o: dict(name=name, engine="deepwave", opts=o)  # noqa: E731
    cfgs = [dw("dw_plain", plain=True),
            dw("dw_exact"),
            dw("dw_8bit", compression=True),
            dw(f"dw_nyq_k{k}", interval=k, nt_run=nt_k),
            dw(f"dw_8bit_nyq_k{k}", compression=True, interval=k, nt_run=nt_k),
            dw("dw_disk", storage="disk"),
            dw(f"dw_disk_nyq_k{k}", storage="disk", interval=k, nt_run=nt_k),
            dw(f"dw_disk_8bit_nyq_k{k}", storage="disk", compression=True, interval=k, nt_run=nt_k),
            dw(f"dw_ckpt_s{s1}", segments=s1, nt_run=nt_s1),
            dw(f"dw_ckpt_s{sk}_8bit_nyq_k{k}", segments=sk, compression=True, interval=k, nt_run=nt_sk)]
    cfgs += [dict(name="tp_plain", engine="timeprobe", opts=dict(plain=True)),
             dict(name="tp_exact", engine="timeprobe", opts={})]
    cfgs += [dict(name=f"tp_probe_r{r}", engine="timeprobe", opts=dict(ps=r, seed=0)) for r in rs]
    cfgs += [dict(name=f"tp_{st}", engine="timeprobe", opts=dict(storage=st))
             for st in ("nyquist", "nyquist16", "nyquist8", "disk8")]
    return cfgs


#: Deepwave rows whose measured working memory becomes a timeprobe budget (``tp_budget@<row>``)
LOW_MEMORY = ("dw_8bit", "dw_nyq", "dw_8bit_nyq", "dw_disk", "dw_ckpt")


def budget_configs(rows, sizes, disk_path=None):
    """``tp_budget@<dw row>``: ``fwi_objective(budget_mb=W)`` with ``W`` the working memory measured
    for each low-memory Deepwave row (issue #14 goal 5: at the peer's memory, timeprobe's autopilot);
    the rows of Deepwave's disk mode let timeprobe use the disk too (``allow_disk``: ``disk_path``, or
    the system's temporary folder). ``(configs, skipped)`` — a budget below every timeprobe strategy
    is reported, not run."""
    from timeprobe.budget import plan
    cfgs, skipped = [], {}
    for name, row in rows.items():
        w = row.get("working_mb")
        if row["cfg"]["engine"] != "deepwave" or w is None or not name.startswith(LOW_MEMORY):
            continue
        disk = (disk_path or True) if row["cfg"]["opts"].get("storage") == "disk" else False
        try:
            chosen = plan(sizes, w, allow_disk=disk)
        except ValueError as e:
            skipped[f"tp_budget@{name}"] = dict(budget_mb=w, reason=str(e))
            continue
        cfgs.append(dict(name=f"tp_budget@{name}", engine="timeprobe",
                         opts=dict(budget_mb=w, seed=0, **(dict(allow_disk=disk) if disk else {})),
                         peer=name, planned=[chosen.strategy, chosen.ps]))
    return cfgs, skipped


def deepwave_memory_model(opts, shape_dw, nt_run, state_bytes=0):
    """(formula, bytes in memory, bytes on disk) that a Deepwave configuration holds beyond plain
    modelling, by construction (module docstring); float32. ``shape_dw`` is the propagated grid
    (model + PML + FD padding), ``state_bytes`` the checkpoint boundary states (Deepwave's
    ``auxiliary_state_bytes``)."""
    if opts.get("plain"):
        return "baseline", 0, 0
    ns = nt_run // opts.get("interval", 1)
    N = int(np.prod(shape_dw))
    n_blocks = int(np.prod([-(-n // 8) for n in shape_dw]))
    comp = opts.get("compression", False)
    step = (-(-(N + 4 * n_blocks) // 4)) * 4 if comp else 4 * N      # bytes per stored step
    per = f"{step / N:.4f} B/cell" if comp else "4 B/cell"
    if opts.get("storage") == "disk":
        ram = 4 * N + (step if comp else 0)
        return (f"RAM: 1 staging field{' + 1 compressed step' if comp else ''}; disk: n_s·{per}, n_s = {ns}",
                ram, ns * step)
    staging = 2 * 4 * N if comp else 0
    extra = " + 2 staging fields" if comp else ""
    seg = opts.get("segments")
    if seg:
        return (f"(n_s/S)·{per}{extra} + S states, n_s = {ns}, S = {seg}",
                -(-ns // seg) * step + staging + state_bytes, 0)
    return f"n_s·{per}{extra}, n_s = {ns}", ns * step + staging, 0


def deepwave_estimate(deepwave, shape, nt_run, opts, nbl):
    """Deepwave's own lower bound (``deepwave.estimate_memory``) for a configuration, in bytes."""
    if opts.get("plain"):
        return None
    est = deepwave.estimate_memory(
        "scalar", shape, nt_run, 1, accuracy=ACCURACY, pml_width=nbl,
        model_gradient_sampling_interval=opts.get("interval", 1),
        storage=deepwave.Storage(mode=opts.get("storage", "device"), lossy_compression=opts.get("compression", False)),
        models_requiring_grad=["v"], n_segments=opts.get("segments"))
    return {k: int(v) for k, v in est.items() if k.endswith("_bytes") or k.endswith("_lower_bound")}


# --------------------------------------------------------------------------- one configuration (subprocess)
def plain_run(plain):
    """A configuration that only models (the baseline row): ``(f, g) = (None, None)``."""
    def run():
        plain()
        return None, None
    return run


def worker(payload):
    """Subprocess body: warm-up run, memory baseline (plain modelling, same engine, same process),
    timed runs after a peak reset; gradient saved to ``payload["gpath"]``."""
    case, t, cfg, repeats, nbl = payload["case"], payload["t"], payload["cfg"], payload["repeats"], payload.get("nbl")
    opts = dict(cfg["opts"])
    t0 = time.perf_counter()
    threads = n_threads()
    if cfg["engine"] == "deepwave":
        torch, deepwave = import_deepwave()
        torch.set_num_threads(threads)
        s = shot(case, t, nbl)
        true = DeepwaveShot(s.model, s.q, s.rec, s.f0)
        d = cached_record("deepwave_", s.key, (true.nt_data, true.W_rec.shape[0]), true.forward)
        dws = DeepwaveShot(s.model0, s.q, s.rec, s.f0)
        plain = dws.forward
        if opts.pop("plain", False):
            run = plain_run(plain)
        else:
            storage_path = payload.get("storage_path")
            if opts.get("storage") == "disk":
                Path(storage_path).mkdir(parents=True, exist_ok=True)
            run = lambda: dws.gradient(d, storage_path=storage_path, **opts)  # noqa: E731
        extra = dict(step_ratio=None, courant_number=dws.courant, torch_threads=torch.get_num_threads())
    else:
        model0, q, d = setup(case, t, nbl)
        plain = lambda: tp.forward(model0, q, d.geometry)  # noqa: E731
        if opts.pop("plain", False):
            run = plain_run(plain)
        else:
            run = lambda: tp.fwi_objective(model0, q, d, **opts)  # noqa: E731
        extra = {}
    setup_peak = vmhwm_mb()
    t1 = time.perf_counter()
    plain()
    run()  # compiles (Devito) / loads (Deepwave) and runs once
    t2 = time.perf_counter()
    cold_peak = vmhwm_mb()
    reset = reset_peak()
    plain()
    base = vmhwm_mb()
    reset_peak()
    times = []
    for _ in range(repeats):
        t3 = time.perf_counter()
        f, g = run()
        times.append(time.perf_counter() - t3)
    peak = vmhwm_mb()
    if cfg["engine"] == "deepwave":
        extra["step_ratio"] = dws.step_ratio
    if g is not None:
        np.save(payload["gpath"], np.asarray(g, dtype=np.float32))
    return dict(wall_s=min(times), walls_s=times, setup_s=t1 - t0, first_run_s=t2 - t1,
                peak_mb=peak if reset else cold_peak, base_mb=base if reset else None,
                cold_peak_mb=cold_peak, setup_peak_mb=setup_peak, peak_reset=reset,
                f=None if f is None else float(f), threads=threads, **extra)


def data_agreement(s):
    """Cosine and amplitude ratio of the two engines' observed data (true model), from the caches."""
    shape = (s.rec.nt, s.rec.coordinates[0].shape[0])
    paths = [cache_path(tag, s.key) for tag in ("deepwave_", "")]
    if not all(p.exists() for p in paths):
        return None
    a, b = (np.load(p) for p in paths)
    if a.shape != shape or b.shape != shape:
        return None
    return dict(cos_data=cosine(a, b), data_ratio=float(np.vdot(a, b) / np.vdot(b, b)))


def score_mask(shape, water_rows):
    """Physical domain below the water rows, without the outermost ring of cells (module docstring)."""
    mask = np.zeros(shape, bool)
    inner = tuple(slice(1, n - 1) for n in shape[:-1]) + (slice(max(1, water_rows), shape[-1] - 1),)
    mask[inner] = True
    return mask


# --------------------------------------------------------------------------- the part
def part_peers(cases, r=32, repeats=2, tmp=None, storage_path=None, names=None, nbl=None):
    """Every configuration of every case, one process each; rows with times, memories, cosines.
    ``names``: configuration-name prefixes to run (the references always run); ``nbl``: another
    absorbing width for both engines (checks that the remaining difference is the boundaries)."""
    _, deepwave = import_deepwave()
    # torch and deepwave are imported by the Deepwave workers only (≈ 3 s each, before any
    # measurement), not preloaded in the fork server: timeprobe's workers stay those of the table
    # part, without torch's OpenMP runtime (its own libgomp) beside Devito's.
    tmp = tmp or tempfile.mkdtemp(prefix="peers_")
    storage_path = str(storage_path or CACHE / "deepwave_disk")
    out = {}
    for case, t in cases:
        t_case = time.time()
        s = shot(case, t, nbl)
        dws = DeepwaveShot(s.model0, s.q, s.rec, s.f0)
        k = nyquist_k(dws.wavelet, dws.dt)
        interval = dws.nyquist_interval
        cfgs = peer_configs(dws.nt, interval, rs=(r, 2 * r))
        if names:
            cfgs = [c for c in cfgs if any(c["name"].startswith(p) for p in names)
                    or c["name"] in ("dw_plain", "dw_exact", "tp_plain", "tp_exact")]
        shape_dw = dws.shape_propagated
        rows = {}

        def run_configs(cfgs):
            for cfg in cfgs:
                print("peers", case, f"{t:g}", cfg["name"], flush=True)
                gpath = str(Path(tmp) / f"g_{s.key}_{cfg['name']}.npy")
                t0 = time.time()
                try:
                    row = in_subprocess(worker, dict(case=case, t=t, cfg=cfg, gpath=gpath, repeats=repeats,
                                                     storage_path=storage_path, nbl=nbl))
                    row["process_s"] = time.time() - t0
                except RuntimeError as e:  # recorded (and reported at the end); the other rows still run
                    print(e, file=sys.stderr, flush=True)
                    row = dict(error=str(e)[-3000:])
                row["gpath"] = gpath if os.path.exists(gpath) else None
                row["cfg"] = cfg
                rows[cfg["name"]] = row

        run_configs(cfgs)
        for row in rows.values():  # the Deepwave rows' working memory sets the budgets of the autopilot rows
            if "error" not in row and row.get("base_mb") is not None:
                row["working_mb"] = row["peak_mb"] - row["base_mb"]
        skipped = {}
        if not names or any("tp_budget".startswith(p) or p.startswith("tp_budget") for p in names):
            model0, q0, d0 = setup(case, t, nbl)
            Path(storage_path).mkdir(parents=True, exist_ok=True)
            bcfgs, skipped = budget_configs(rows, gradient_sizes(model0, q0, d0), storage_path)
            del model0, q0, d0
            run_configs(bcfgs)
        mask = score_mask(s.model0.shape, s.water_rows)
        load = lambda n: np.load(rows[n]["gpath"]) if n in rows and rows[n].get("gpath") else None  # noqa: E731
        g_dw, g_tp = load("dw_exact"), load("tp_exact")
        base_t = {"deepwave": rows["dw_plain"].get("wall_s"), "timeprobe": rows["tp_plain"].get("wall_s")}
        for name, row in rows.items():
            cfg = row["cfg"]
            ok = "error" not in row
            row["working_mb"] = (row["peak_mb"] - row["base_mb"] if ok and row.get("base_mb") is not None else None)
            row["time_ratio"] = (row["wall_s"] / base_t[cfg["engine"]]
                                 if ok and base_t[cfg["engine"]] else None)
            if cfg["engine"] == "deepwave":
                o = cfg["opts"]
                nt_run = o.get("nt_run", dws.nt)
                est = deepwave_estimate(deepwave, s.model0.shape, nt_run, o, s.model0.nbl)
                formula, ram, disk = deepwave_memory_model(o, shape_dw, nt_run,
                                                           est["auxiliary_state_bytes"] if est else 0)
                row.update(nt_run=nt_run, expected_formula=formula, expected_mb=ram / MIB, expected_disk_mb=disk / MIB,
                           deepwave_estimate=est,
                           deepwave_estimate_mb=(None if est is None else
                                                 (est["backward_storage_bytes"] + est["gradient_scratch_bytes"]
                                                  + est["auxiliary_state_bytes"]) / MIB))
            g = load(name)
            own = g_dw if cfg["engine"] == "deepwave" else g_tp
            if g is not None:
                if own is not None:
                    diff = (g - own)[mask].astype(np.float64)
                    row.update(cos_own=cosine(g[mask], own[mask]), cos_own_all=cosine(g, own),
                               rel_err_own=float(np.linalg.norm(diff) / np.linalg.norm(own[mask].astype(np.float64))))
                if g_tp is not None:
                    row.update(cos_tp_exact=cosine(g[mask], g_tp[mask]),
                               norm_ratio_tp_exact=float(np.linalg.norm(g[mask]) / np.linalg.norm(g_tp[mask])))
            row.pop("gpath", None)
        info = dict(case=case, T=t, shape=list(s.model0.shape), spacing=list(s.model0.spacing), nbl=s.model0.nbl,
                    dt=dws.dt, nt=dws.nt, nt_data=dws.nt_data, dt_data=dws.dt_data, f0_hz=dws.pml_freq,
                    nrec=int(s.rec.coordinates[0].shape[0]), k_nyquist=k, interval=interval,
                    shape_deepwave=list(shape_dw), N_deepwave=int(np.prod(shape_dw)),
                    N_h_timeprobe=int(np.prod([n + 2 * s.model0.nbl + 2 * s.model0.space_order
                                               for n in s.model0.shape])),
                    water_rows=s.water_rows, courant_number=dws.courant, accuracy=ACCURACY,
                    storage_path=storage_path, score="cosines on the physical domain below the water rows, "
                    "outermost ring of cells excluded")
        for name, row in rows.items():  # the autopilot against the Deepwave row whose memory it was given
            peer = rows.get(row["cfg"].get("peer") or "")
            if peer and "error" not in row and "error" not in peer:
                row.update(peer_wall_s=peer["wall_s"], peer_working_mb=peer.get("working_mb"),
                           peer_cos_own=peer.get("cos_own"), speedup_vs_peer=peer["wall_s"] / row["wall_s"])
        info.update(data_agreement(s) or {})
        info["budget_skipped"] = skipped
        fd, ft = rows["dw_exact"].get("f"), rows["tp_exact"].get("f")
        info["misfit_ratio_dw_tp"] = fd / ft if fd and ft else None
        out[f"{case}:{t:g}" + (f":nbl{nbl}" if nbl is not None else "")] = dict(info=info, rows=rows, wall_s=time.time() - t_case,
                                    meta=meta(sys.argv[0], deepwave=deepwave.__version__,
                                              torch=__import__("torch").__version__))
    return out


def markdown(peers, header):
    """One table per case: time, working memory, memory model, both cosines."""
    lines = [header, ""]
    for key, res in peers.items():
        info, rows, m = res["info"], res["rows"], res["meta"]
        lines += [f"## {key}: {'×'.join(map(str, info['shape']))} at {info['spacing'][0]:g} m, nbl {info['nbl']}", "",
                  f"dt = {info['dt']:.4g} ms, nt = {info['nt']}, data {info['nt_data']} samples at "
                  f"{info['dt_data']:g} ms, "
                  f"{info['nrec']} receivers; Nyquist k = {info['k_nyquist']} (Deepwave interval {info['interval']}); "
                  f"Deepwave cells N_dw = {info['N_deepwave']:,}, Courant number {info['courant_number']:.4f}. "
                  f"Data of the two engines (true model): cosine {info.get('cos_data', float('nan')):.6f}, "
                  f"amplitude ratio {info.get('data_ratio', float('nan')):.5f}; misfit ratio Deepwave/timeprobe "
                  f"at m0 {info['misfit_ratio_dw_tp'] or float('nan'):.5f}. Scores: {info['score']} "
                  f"({info['water_rows']} water rows). {m['date']}, {m['host']} ({m['cpus']} CPUs), deepwave "
                  f"{m['deepwave']}, torch {m['torch']}, devito {m['devito']}, `{m['command']}` "
                  f"({res['wall_s']:.0f} s).", "",
                  "| configuration | time (s) | × plain fwd (same engine) | working memory (MiB) | memory model (MiB) "
                  "| Deepwave's estimate (MiB) | cos own exact | cos timeprobe exact |",
                  "|---|---|---|---|---|---|---|---|"]

        def fmt(v, f):
            return "—" if v is None else format(v, f)
        for name, row in rows.items():
            if "error" in row:
                lines.append(f"| {name} | **failed** | | | | | | |")
                continue
            em = row.get("expected_mb")
            exp = ("—" if em is None else f"{em:.1f}" + (f" (+{row['expected_disk_mb']:.0f} on disk)"
                                                          if row.get("expected_disk_mb") else ""))
            lines.append(f"| {name} | {row['wall_s']:.3g} | {fmt(row.get('time_ratio'), '.2f')} | "
                         f"{'baseline' if row['cfg']['opts'].get('plain') else fmt(row.get('working_mb'), '.1f')} | "
                         f"{exp} | {fmt(row.get('deepwave_estimate_mb'), '.1f')} | {fmt(row.get('cos_own'), '.6f')} | "
                         f"{fmt(row.get('cos_tp_exact'), '.6f')} |")
        budget = [(n, r) for n, r in rows.items() if n.startswith("tp_budget@") and "error" not in r]
        if budget or info.get("budget_skipped"):
            lines += ["", "At the working memory of each low-memory Deepwave configuration, timeprobe's "
                      "autopilot (`fwi_objective(budget_mb=W)`, W = that row's measured working memory):", "",
                      "| Deepwave row | its memory (MiB) | its cos | its time (s) | timeprobe's choice | "
                      "memory (MiB) | cos | time (s) | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
            for n, r in budget:
                st, ps = r["cfg"].get("planned", [None, None])
                lines.append(f"| {r['cfg']['peer']} | {fmt(r.get('peer_working_mb'), '.1f')} | "
                             f"{fmt(r.get('peer_cos_own'), '.6f')} | {fmt(r.get('peer_wall_s'), '.3g')} | "
                             f"{st}{'' if ps is None else f' r={ps}'} | {fmt(r.get('working_mb'), '.1f')} | "
                             f"{fmt(r.get('cos_own'), '.6f')} | {r['wall_s']:.3g} | "
                             f"{fmt(r.get('speedup_vs_peer'), '.2f')}× |")
            for n, sk in (info.get("budget_skipped") or {}).items():
                lines.append(f"| {n.split('@', 1)[1]} | {sk['budget_mb']:.1f} | | | nothing fits | | | | |")
        lines += ["", "Working memory: peak RSS of the timed runs − peak RSS of plain modelling by the same engine "
                  "in the same process (peak mark reset before each; one warm-up run first). Memory model: "
                  "`peers.deepwave_memory_model` (Deepwave's history and staging buffers); Deepwave's estimate: "
                  "`deepwave.estimate_memory` (history + gradient scratch + checkpoint states, a lower bound by "
                  "its own documentation). Disk rows write their history through the page cache.", ""]
    return "\n".join(lines)


def plot_pareto(peers, path):
    """Working memory against 1 − cosine with the engine's own exact gradient, one panel per case,
    every point labelled with its name and time (s). Cosines of 1 (the exact gradients) sit on the
    floor line at 1e-9."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    keys = list(peers)
    fig, axs = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 5), squeeze=False)
    floor = 1e-9
    for ax, key in zip(axs[0], keys):
        rows = peers[key]["rows"]
        for engine, mark, colour in (("deepwave", "s", "C3"), ("timeprobe", "o", "C0")):
            pts = [(n, r) for n, r in rows.items() if r["cfg"]["engine"] == engine and "error" not in r
                   and not r["cfg"]["opts"].get("plain") and r.get("cos_own") is not None]
            x = [max(r["working_mb"], 0.1) for _, r in pts]
            y = [max(1 - r["cos_own"], floor) for _, r in pts]
            ax.loglog(x, y, mark, color=colour, label=engine)
            for (n, r), xi, yi in zip(pts, x, y):
                ax.annotate(f"{n} {r['wall_s']:.2g} s", (xi, yi), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axhline(floor, color="0.7", lw=0.5)
        ax.set_xlabel("working memory (MiB; disk rows: in RAM)")
        ax.set_ylabel("1 − cosine with the engine's own exact gradient")
        ax.set_title(key, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- driver
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=None, help="NAME or NAME:T_ms (default overthrust2d:3000 "
                    "overthrust2d:8000 layered3d:1000; quick: tiny ones)")
    ap.add_argument("--quick", action="store_true", help="tiny cases (smoke test); not recorded in the history")
    ap.add_argument("--r", type=int, default=None, help="timeprobe probes (r and 2r; default 32, quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per configuration (minimum kept)")
    ap.add_argument("--only", nargs="+", default=None, help="configurations to run, by name prefix (the "
                    "references dw_plain, dw_exact, tp_plain, tp_exact always run)")
    ap.add_argument("--storage-path", default=None, help="directory for storage_mode='disk' (default "
                    "<TIMEPROBE_BENCH_CACHE>/timeprobe_bench/deepwave_disk; a real disk, not tmpfs)")
    ap.add_argument("--nbl", type=int, default=None, help="absorbing width of both engines (default: the case's, "
                    "40 on the 2D shots); e.g. 80 to see the engines converge")
    ap.add_argument("--out", default=None, help="JSON of this run (must not exist; default "
                    "results/peers-<time>/peers.json); <stem>.md and figures/<stem>_pareto.png beside it")
    records.add_arguments(ap, docs="benchmarks/peers.md and benchmarks/figures/peers_pareto.png")
    a = ap.parse_args(argv)
    if a.repeats is not None and a.repeats < 1:
        ap.error("--repeats must be >= 1")
    records.check_arguments(ap, a)
    import_deepwave()
    conf = QUICK if a.quick else FULL
    cases = [parse_case(c) for c in a.cases] if a.cases else conf["cases"]
    out = Path(a.out) if a.out else records.output_dir("peers" + ("-quick" if a.quick else "")) / "peers.json"
    md, png = out.with_suffix(".md"), out.parent / "figures" / f"{out.stem}_pareto.png"
    records.refuse_existing(out, md, png)  # this run's outputs never replace a file
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = dict(peers=part_peers(cases, a.r or conf["r"], a.repeats or conf["repeats"], tmp,
                                    a.storage_path, a.only, a.nbl), meta=meta(__file__, argv))
    with open(out, "x") as f:
        json.dump(res, f, indent=1, default=str)
    rec = records.record(a, "peers", res, argv, __file__)
    raw = (f"{records.cite(rec)}; also `{out.name}`" if rec else
           f"`{out.name}`, not recorded in the history (--quick / --no-record)")

    def header(raw):
        return ("# timeprobe and Deepwave 0.1.0 on the same shots\n\nGenerated by "
                f"`{res['meta']['command']}` on {res['meta']['date']}. Raw numbers: {raw}. "
                "Do not edit: rerun the command (with `--write-docs` for `benchmarks/peers.md`).")
    md.write_text(markdown(res["peers"], header(raw)) + "\n")
    plot_pareto(res["peers"], png)
    print("wrote", out, md, "and", png, flush=True)
    if getattr(a, "write_docs", False):  # the committed documents name the record only
        doc_md, doc_png = records.DOCS / "peers.md", records.DOCS / "figures" / "peers_pareto.png"
        doc_png.parent.mkdir(parents=True, exist_ok=True)
        doc_md.write_text(markdown(res["peers"], header(records.cite(rec))) + "\n")
        shutil.copyfile(png, doc_png)
        print("wrote", doc_md, "and", doc_png, flush=True)
    failed = [f"{key} {n}" for key, c in res["peers"].items() for n, row in c["rows"].items() if "error" in row]
    if failed:
        sys.exit("failed measurements (errors in the JSON and the record): " + "; ".join(failed))


if __name__ == "__main__":
    main()
