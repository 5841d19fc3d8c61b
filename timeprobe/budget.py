r"""The working-memory budget autopilot: which gradient strategy, and how large, fits a budget.

Working memory is what a gradient holds beyond plain forward modelling (the quantity
``scripts/benchmark_gradients.py`` and ``scripts/peers.py`` measure: peak RSS of the gradient − peak
RSS of plain forward modelling in the same process). Per shot, in bytes (float32 fields; sizes from
:func:`gradient_sizes`)::

    predicted   = 1.02·payload + 1 MiB + max(0, buffers + common − reused)  (+ estimate)

    payload     full        4·(nt + 1)·N_h            every snapshot with its halo
                nyquist b   nsnap·nbytes_b            the encoded snapshots (timeprobe.storage.stored_buffers)
                disk b      B·nbytes_b                one chunk staged for the file
                probe r     4·r·N_r                   r accumulators ū
    buffers     full        4·N                       the image copy
                stored      4·(S·B + 2)·N_s           S slot sets of B (2, double-buffered, with more than one
                            (+ 4·N_s below 32 bit)    chunk), scratch and gradient (+ the codec's work array)
                probe       4·(B_ring + 1)·N_r        the ring and the gradient
    common      12·N + 4·N_p + 4·nt_d·nrec            objective's float64 sum and the shot's padded
                                                      gradient, the returned gradient, the residual
    reused      8·nt_d·nrec + 6.5 MiB                 what plain modelling already peaked with (its
                                                      trace buffers and transients), reused by the gradient
    estimate    4·M·(nt + 1 + nsub)                   probing with ``return_info`` (timeprobe.accuracy);
                                                      M ≤ 1000 points; under a budget at most a fifth
                                                      of it (none below 20 points)

The ``reused`` term and the margins are calibrated on the shots of ``scripts/peers.py`` (2D
Overthrust 801×207 at 3 s, 3D layered 61×61×41 at 1 s): there the measured working memory of every
strategy was a payload plus a strategy-independent extra of about 1 MiB (2D, where plain modelling's
trace buffers are large) or 30 MiB (3D, where the fields dominate), which this form reproduces; the
previous sum of every term over-predicted by 10–17 MiB and made the autopilot choose probing where
8-bit snapshots fit (history record of ``peers`` dated 2026-12-02T06:43:44Z).

with ``N`` the padded grid, ``N_h`` the padded grid with the stencil halo, ``N_r`` the probe region
and ``N_s`` the stored snapshots' region (both the padded grid with ``sum_padding=True``, the
default; else the physical domain + space_order/2, and the physical domain), ``N_p`` the physical
domain, ``nt`` computational steps, ``nt_d·nrec`` the shot record, ``nsnap = ⌊(nt−1)/k⌋ + 1``
Nyquist snapshots, ``nbytes_b = N_s·b/8 + 4·ntiles`` per encoded snapshot, ``B`` snapshots per chunk, ``B_ring`` the
probes' ring slots.

The plan (:func:`plan`) walks the candidates in order of expected accuracy and takes the first
that fits:

    full (exact) > nyquist 32 bit > disk 32 bit > nyquist 16 > disk 16 > nyquist 8 > disk 8
                 > the same in RAM with checkpointed segments (32, 16, 8 bit; one more forward run,
                   the number of segments and the chunk that need the least memory)
                 > probing with the largest r that fits (r ≤ nsub)

Disk candidates only with ``allow_disk`` (True or a folder). Stored candidates try chunks
``B = 8, 4, 2, 1`` (fewer slots, more ``apply`` calls). Measured cosines behind this order
(``benchmarks/storage_strategies.md``, ``benchmarks/probe_designs.md``): Nyquist ≥ 0.99999 (−60 dB
Poisson bound), 16 bit ≈ Nyquist, 8 bit (8×8 tiles) 0.99998–0.99999, probing 0.87–0.995 at
r = 16–64 — every storage mode is more accurate than any probing that fits in less memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .accuracy import DEFAULT_SAMPLES, sampling_memory
from .geometry import computational_axis, to_computational
from .probe_buffers import region_shape
from .probing import DEFAULT_BLOCK, default_subsample
from .storage import StorageOptions, chunk_count, segment_memory, stored_bounds, stored_buffers

__all__ = ["Plan", "gradient_sizes", "strategy_memory", "plan", "estimate_samples", "MIB", "MIN_SAMPLES",
           "BASELINE_SLACK", "PAYLOAD_MARGIN", "FIXED_MARGIN"]

#: fewest points of a sampled accuracy estimate (below: none, ``accuracy`` None)
MIN_SAMPLES = 20

MIB = 2.0 ** 20

_STORED_ORDER = ((32, "ram"), (32, "disk"), (16, "ram"), (16, "disk"), (8, "ram"), (8, "disk"))
_CHUNKS = (8, 4, 2, 1)


def gradient_sizes(model, q, d, layers=True):
    """The sizes the memory formulas need, for the shots of ``q``/``d`` (the largest over shots).

    ``layers``: the gradient sums the absorbing layers onto the edge (``sum_padding=True``), so
    probe fields and stored snapshots cover the padded grid; False: the probe region and the
    physical domain (:func:`timeprobe.probe_buffers.region_shape`,
    :func:`timeprobe.storage.stored_margin`)."""
    dt, nt = computational_axis(model, q.geometry, d.geometry)
    so = model.space_order
    ks = [int(default_subsample(to_computational(q.arrays[i], q.geometry[i], dt, nt), dt, nt, 1))
          for i in range(q.nshots)]
    stored = tuple(b - a for a, b in stored_bounds(model, layers))
    return dict(N=int(np.prod(model.shape_padded)), N_h=int(np.prod([n + 2 * so for n in model.shape_padded])),
                N_r=int(np.prod(region_shape(model, layers))), N_p=int(np.prod(model.shape)),
                N_s=int(np.prod(stored)), shape=stored, nt=int(nt), dt=float(dt), k=min(ks),
                traces=max(int(np.prod(a.shape)) for a in d.arrays))


def _nsub(nt, k):
    return (nt - 1) // k + 1


#: plain forward modelling's own transients that a gradient reuses (beyond its trace buffers), bytes
BASELINE_SLACK = int(6.5 * MIB)
#: safety factor on the payload (allocator rounding, page granularity) and a fixed margin, bytes
PAYLOAD_MARGIN, FIXED_MARGIN = 1.02, int(1 * MIB)


def strategy_memory(sizes, strategy, ps=None, storage=None, samples=0, block=None):
    """Predicted working memory (bytes) of one shot's gradient (module docstring).

    ``strategy``: "full", "probe" (with ``ps``) or "stored" (with ``storage``, a
    :class:`~timeprobe.storage.StorageOptions`); ``samples``: points of the sampled accuracy
    estimate (probing with ``return_info``); ``block``: the probes' ring slots."""
    s = sizes
    common = 12 * s["N"] + 4 * s["N_p"] + 4 * s["traces"]
    if strategy == "full":
        payload, buffers = 4 * (s["nt"] + 1) * s["N_h"], 4 * s["N"]
    elif strategy == "stored":
        k = s["k"] if storage.subsample == "auto" else int(storage.subsample)
        payload, buffers = stored_buffers(storage, s["shape"], s["nt"], k)
        if storage.segments > 1:  # one segment's snapshots, and the states at the segments' starts
            payload = sum(segment_memory(storage, s["shape"], s["N_h"], s["nt"], k))
        buffers += 4 * s["N_s"] if storage.bits < 32 else 0  # the codec's work array
    elif strategy == "probe":
        B = block or DEFAULT_BLOCK
        payload, buffers = 4 * ps * s["N_r"], 4 * (B + 1) * s["N_r"]
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    extra = sampling_memory(samples, s["nt"], _nsub(s["nt"], s["k"])) if strategy == "probe" and samples else 0
    reused = 8 * s["traces"] + BASELINE_SLACK
    return int(PAYLOAD_MARGIN * payload) + FIXED_MARGIN + max(0, buffers + common - reused) + extra


@dataclass
class Plan:
    """What the autopilot chose: ``strategy`` ("full", "probe" or a storage name such as
    "nyquist8"), ``ps`` (probing) or ``storage`` (a StorageOptions), the predicted working
    memory (bytes) and the candidates it considered ``[(name, bytes, fits)]``."""
    strategy: str
    ps: int | None = None
    storage: StorageOptions | None = None
    predicted_bytes: int = 0
    budget_bytes: int = 0
    candidates: list = field(default_factory=list)
    samples: int = 0

    @property
    def predicted_mb(self):
        return self.predicted_bytes / MIB


def _check_budget(budget_mb):
    if isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float, np.integer, np.floating)):
        raise TypeError(f"budget_mb must be a number (MiB), got {budget_mb!r}")
    if not np.isfinite(budget_mb) or budget_mb <= 0:
        raise ValueError(f"budget_mb must be a positive number of MiB, got {budget_mb!r}")
    return float(budget_mb)


def estimate_samples(sizes, budget_bytes=None):
    """Points of the sampled accuracy estimate: :data:`~timeprobe.accuracy.DEFAULT_SAMPLES` (at most
    the physical points); under a budget, as many as fit in a fifth of it — 0 (no estimate) when
    that is fewer than :data:`MIN_SAMPLES`."""
    m = min(DEFAULT_SAMPLES, sizes["N_p"])
    if budget_bytes is not None:
        per = sampling_memory(1, sizes["nt"], _nsub(sizes["nt"], sizes["k"]))
        m = min(m, int(0.2 * budget_bytes // per))
    return int(m) if m >= MIN_SAMPLES else 0


def _segmented(sizes, bits, tile, consider):
    """The segmented stored candidate of ``bits`` (RAM) with the least memory over the chunks
    ``_CHUNKS`` and ``S = 2 … 64`` segments, offered to ``consider``; its Plan or None."""
    best = None
    for B in _CHUNKS:
        nchunks = chunk_count(sizes["nt"], sizes["k"], min(B, _nsub(sizes["nt"], sizes["k"])))
        for S in range(2, min(64, nchunks) + 1):
            opts = StorageOptions(bits=bits, chunk=B, segments=S, **({} if tile is None else dict(tile=tile)))
            need = strategy_memory(sizes, "stored", storage=opts)
            if best is None or need < best[0]:
                best = (need, opts)
    if best is None:
        return None
    need, opts = best
    found = consider(opts.name if opts.chunk == _CHUNKS[0] else f"{opts.name} (chunk {opts.chunk})", need,
                     storage=opts)
    if found is not None:
        found.strategy = opts.name
    return found


def plan(sizes, budget_mb, allow_disk=False, samples=0, block=None, tile=None, stored=True, segments=True):
    """The most accurate strategy whose working memory fits ``budget_mb`` MiB (module docstring).

    ``sizes`` from :func:`gradient_sizes`; ``allow_disk``: False, True (system temp folder) or an
    existing folder for the snapshot files; ``samples``: points of the probing's accuracy estimate
    (counted in its memory; ``True``: :func:`estimate_samples`); ``stored=False``: full storage or
    probing only; ``segments=False``: no checkpointed segments (:func:`timeprobe.rtm` stores every
    snapshot). Raises ``ValueError`` naming the smallest need when nothing fits."""
    budget = _check_budget(budget_mb) * MIB
    if samples is True:
        samples = estimate_samples(sizes, budget)
    directory = None
    if allow_disk not in (False, True, None):
        directory = str(allow_disk)
    cands = []

    def consider(name, nbytes, **kw):
        fits = nbytes <= budget
        cands.append((name, int(nbytes), fits))
        return Plan(name, predicted_bytes=int(nbytes), budget_bytes=int(budget), candidates=cands, **kw) \
            if fits else None

    found = consider("full", strategy_memory(sizes, "full"))
    for bits, where in _STORED_ORDER if stored else ():
        if found is not None:
            break
        if where == "disk" and not allow_disk:
            continue
        for B in _CHUNKS:
            opts = StorageOptions(bits=bits, where=where, chunk=B, directory=directory if where == "disk" else None,
                                  **({} if tile is None else dict(tile=tile)))
            found = consider(opts.name if B == _CHUNKS[0] else f"{opts.name} (chunk {B})",
                             strategy_memory(sizes, "stored", storage=opts), storage=opts)
            if found is not None:
                found.strategy = opts.name
                break
    for bits in (32, 16, 8) if stored and segments and found is None else ():
        found = _segmented(sizes, bits, tile, consider)
        if found is not None:
            break
    if found is None:
        nsub = _nsub(sizes["nt"], sizes["k"])
        fixed = strategy_memory(sizes, "probe", ps=0, samples=samples, block=block)
        r = int(min(nsub, max(0, budget - fixed) // (PAYLOAD_MARGIN * 4 * sizes["N_r"])))
        while r >= 1 and strategy_memory(sizes, "probe", ps=r, samples=samples, block=block) > budget:
            r -= 1  # the rounding of the payload margin
        if r >= 1:
            found = consider(f"probe r={r}", strategy_memory(sizes, "probe", ps=r, samples=samples, block=block),
                             ps=r, samples=int(samples))
            found.strategy = "probe"
        else:
            consider("probe r=1", strategy_memory(sizes, "probe", ps=1, samples=samples, block=block))
    if found is None:
        need = min(c[1] for c in cands)
        raise ValueError(f"budget_mb={budget / MIB:g} MiB is below the smallest strategy's working memory "
                         f"({need / MIB:.1f} MiB: {min(cands, key=lambda c: c[1])[0]})"
                         + ("" if allow_disk else "; allow_disk=True would add the disk strategies"))
    found.candidates = cands
    return found
