r"""Stored-wavefield gradients: Nyquist-subsampled snapshots of ``u``, raw or compressed, in RAM or on disk.

The FWI gradient ``g = −dt Σ_n u[n]·v̈[n]`` is a zero-lag correlation of two fields band-limited to
the source's ``f_max``; sampled every ``k`` steps with ``k = ⌊1/(2 f_max dt)⌋``
(:func:`timeprobe.probing.default_subsample`, the Poisson bound) the sum

.. math:: g \approx -k\,\Delta t \sum_{s} u[k s]\cdot\ddot v[k s]

is exact up to the source spectrum's −60 dB tail (measured: cosine 1.000000 with the exact gradient
on four 2–8 s shots, ``benchmarks/probe_designs.md``). The bound assumes band-limited fields: a
record cut while strong arrivals still come in starts the adjoint field abruptly (broadband) at
``t = T``; on a 0.5 s test record that costs 1e-4 in cosine, and a high-pass image (``ic="kspace"``)
magnifies it — set ``StorageOptions(subsample=...)`` smaller there. So only
``nsnap = ⌊(nt−1)/k⌋ + 1`` snapshots of
``u`` are needed, on the region the gradient needs (:func:`stored_margin`: the padded grid when the
absorbing layers are summed onto the edge, ``sum_padding=True``; else the physical domain), stored through
a :class:`~timeprobe.compression.Codec` (32 bit raw, 16 bit ``int16`` tiles, 8 bit ``int8`` tiles)
in RAM or in a temporary file.

How a shot runs (:func:`run_stored_forward`, :func:`run_stored_adjoint`):

* two sets of slots (:func:`slot_sets`): while the operator runs one chunk on one core fewer, a
  second thread encodes the chunk before (forward) or decodes the chunk after (adjoint) — NumPy
  and the file calls release the GIL. On the 2D Overthrust shot (3 s, 2-core VM, alternated in
  one process) that took ``fwi_objective(storage="nyquist8")`` from 1.00 to 0.78 s and
  ``"nyquist"`` from 0.94 to 0.79 s (a plain forward: 0.39 s);
* the forward runs in chunks of ``k·B`` time steps (one operator call per chunk, its arguments
  processed once: :class:`~timeprobe.compat.WindowedRun`; the modulo-buffered ``u`` continues
  between calls); the operator
  (:func:`~timeprobe.operators.slot_forward_operator`) writes every k-th ``u`` into ``B`` float32
  slots; after each chunk NumPy encodes the slots into the store;
* the adjoint runs backwards over the same chunks; before each it decodes the chunk's snapshots
  into the slots, and its operator (:func:`~timeprobe.operators.slot_adjoint_operator`)
  accumulates ``g −= k·dt·u_s·v̈`` at ``n = k·s``.

With ``bits=32`` the result equals the ``"subsample"`` strategy (the same terms, on the stored
region). Compressed: every stored sample obeys the codec's bound (``|e| ≤ s_b/2`` per tile), so

.. math:: |g_{\rm stored}(x) - g_{\rm raw}(x)| \le k\,\Delta t\sum_s \tfrac12 s_{b(x),s}\,|\ddot v[k s, x]| .

Working memory beyond plain forward modelling, in bytes (:func:`stored_memory`; ``N_p`` points of
the stored region, ``nbytes = N_p·bits/8 + 4·ntiles`` per snapshot):

* RAM:  ``nsnap·nbytes + (S·B + 2)·4·N_p`` (store, the slots, the encoder's scratch / the
  gradient; ``S = 2`` slot sets when the run has more than one chunk, else 1);
* disk: ``B·nbytes + (S·B + 2)·4·N_p`` (one chunk staged for the file; the file is not resident).

Disk files: a new file made by :func:`tempfile.mkstemp` in the chosen folder (never an existing
name), unlinked as soon as it is open where the OS allows it (POSIX: nothing is left behind even if
the process dies), else removed by :meth:`SnapshotStore.close`; shots close their store in a
``finally`` block, so errors clean up too.
"""
from __future__ import annotations

import functools
import numbers
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from devito import Function

from .compat import WindowedRun, release, wrap_array
from .compression import codec_for_bits
from .geometry import grid_coordinates
from .mpi import is_distributed
from .probe_buffers import region_bounds
from .operators import (forward_operator, slot_adjoint_operator, slot_forward_operator, slot_gradient,
                        snapshot_slots)
from .probing import default_subsample
from .propagators import adjoint_receivers
from .utils import aligned_zeros
from .workspace import use_model

__all__ = ["StorageOptions", "SnapshotStore", "STORAGE_NAMES", "DEFAULT_CHUNK", "stored_subsample",
           "stored_memory", "stored_buffers", "run_stored_forward", "run_stored_adjoint", "stored_margin",
           "stored_bounds", "slot_sets", "OVERLAP", "run_segmented_gradient", "segment_chunks",
           "segment_memory", "chunk_count"]

#: snapshots per chunk (device slots B): one operator call per chunk (arguments processed once
#: per run, :class:`~timeprobe.compat.WindowedRun`); the slots cost B·4·N_p bytes
DEFAULT_CHUNK = 8

#: double-buffered slots: while the operator runs one chunk, a second thread encodes the previous
#: one (forward) or decodes the next one (adjoint), and the operator runs on one core fewer
#: (:func:`slot_sets`)
OVERLAP = True

#: the string shorthands of :meth:`StorageOptions.parse`
STORAGE_NAMES = ("nyquist", "nyquist16", "nyquist8", "disk", "disk16", "disk8")

_NAME = re.compile(r"^(nyquist|disk)(32|16|8)?$")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class StorageOptions:
    """How the forward wavefield is stored for a gradient (the alternative to probing).

    bits : 32, 16 or 8
        32: raw float32; 16: int16 with one scale per tile; 8: int8 with one scale per tile
        (:func:`timeprobe.compression.codec_for_bits`).
    where : "ram" or "disk"
        Disk: a temporary file in ``directory`` (default :func:`tempfile.gettempdir`).
    directory : str or None
        Existing folder of the temporary file (``where="disk"``).
    subsample : "auto" or int
        ``k``; "auto": :func:`timeprobe.probing.default_subsample` (the Poisson bound).
    chunk : int
        Snapshots per chunk ``B`` (float32 slots on the device).
    tile : int or None
        Tile edge (points per axis) of the integer codecs' scales (None: 8 in 2D, 4 in 3D —
        64 points per float32 scale).
    segments : int
        ``S > 1``: checkpointed segments (:func:`run_segmented_gradient`) — the forward run keeps
        only the wavefield at the start of each of ``S`` segments; the snapshots of one segment at
        a time are stored, by re-running it from its start, just before the adjoint needs them.
        One more forward run, for ``S`` states of 2 fields plus ``1/S`` of the snapshots.

    String shorthands (:meth:`parse`): ``"nyquist"``/``"nyquist16"``/``"nyquist8"`` (RAM, 32/16/8
    bit), ``"disk"``/``"disk16"``/``"disk8"``.
    """
    bits: int = 32
    where: str = "ram"
    directory: object = None
    subsample: object = "auto"
    chunk: int = DEFAULT_CHUNK
    tile: int | None = None
    segments: int = 1

    def __post_init__(self):
        if self.bits not in (32, 16, 8) or isinstance(self.bits, bool):
            raise ValueError(f"storage bits must be 32, 16 or 8, got {self.bits!r}")
        if self.where not in ("ram", "disk"):
            raise ValueError(f"storage where must be 'ram' or 'disk', got {self.where!r}")
        if self.directory is not None:
            if self.where != "disk":
                raise ValueError("storage directory is only used with where='disk'")
            if not os.path.isdir(self.directory):
                raise ValueError(f"storage directory {self.directory!r} is not an existing folder")
        if self.subsample != "auto":
            _check_int("storage subsample (k)", self.subsample, 1)
        _check_int("storage chunk (snapshots per chunk)", self.chunk, 1)
        if self.tile is not None:
            _check_int("storage tile", self.tile, 1)
        _check_int("storage segments", self.segments, 1)

    @classmethod
    def parse(cls, spec):
        """``None`` → None; a :class:`StorageOptions` → itself; a name of :data:`STORAGE_NAMES`
        (also ``"nyquist32"``/``"disk32"``); a dict of the fields."""
        if spec is None or isinstance(spec, cls):
            return spec
        if isinstance(spec, str):
            m = _NAME.match(spec)
            if not m:
                raise ValueError(f"unknown storage {spec!r}; use one of {', '.join(STORAGE_NAMES)} "
                                 f"or a timeprobe.storage.StorageOptions")
            return cls(bits=int(m.group(2) or 32), where="ram" if m.group(1) == "nyquist" else "disk")
        if isinstance(spec, dict):
            return cls(**spec)
        raise TypeError(f"storage must be None, a name ({', '.join(STORAGE_NAMES)}), a dict or a "
                        f"StorageOptions, got {type(spec).__name__}")

    @property
    def name(self):
        """``"nyquist8"``, ``"disk"``, … (the shorthand of bits and where), ``"nyquist8 (6 segments)"``."""
        name = ("nyquist" if self.where == "ram" else "disk") + ("" if self.bits == 32 else str(self.bits))
        return name + (f" ({self.segments} segments)" if self.segments > 1 else "")

    @property
    def codec(self):
        return codec_for_bits(self.bits, self.tile)


def stored_margin(model, layers=True):
    """Points of each absorbing layer the stored snapshots leave out: none when the gradient sums
    the layers onto the edge points (``layers``, ``sum_padding=True``: every padded point's
    ``u`` is needed), else the whole layer (the physical domain)."""
    return 0 if layers else model.nbl


def stored_bounds(model, layers=True):
    """``[(start, stop)]`` per padded-grid axis of the stored region (:func:`stored_margin`; the
    innermost axis aligned like the probe region, :func:`timeprobe.probe_buffers.region_bounds`)."""
    return region_bounds(model.shape_padded, stored_margin(model, layers))


def stored_subsample(options, wavelet_c, dt, nt):
    """The ``k`` of ``options`` for this shot (``"auto"``: the Poisson bound of the wavelet)."""
    if options.subsample == "auto":
        return int(default_subsample(wavelet_c, dt, nt, 1))
    return int(options.subsample)


def stored_buffers(options, shape, nt, k):
    """``(store, buffers)`` bytes of a stored gradient (module docstring): the encoded snapshots held
    in RAM (all of them, or one staged chunk for the disk) and the ``S·B + 2`` float32 fields of the
    stored region of ``shape`` (``S`` :func:`slot_sets` of ``B`` slots, the encoder's scratch / the
    gradient)."""
    n_p = int(np.prod(shape))
    nsnap = (nt - 1) // k + 1
    B = min(options.chunk, nsnap)
    per = options.codec.nbytes(tuple(shape))
    store = nsnap * per if options.where == "ram" else B * per
    return store, (slot_sets(chunk_count(nt, k, B)) * B + 2) * 4 * n_p


def stored_memory(options, shape, nt, k):
    """Bytes a stored gradient holds beyond plain forward modelling (module docstring), for a
    stored region of ``shape`` (:func:`stored_margin`), ``nt`` computational steps and subsampling ``k``."""
    return sum(stored_buffers(options, shape, nt, k))


class SnapshotStore:
    """``nsnap`` encoded snapshots of ``shape`` (fixed ``codec.nbytes`` each), in RAM or in a file.

    Use as a context manager (or call :meth:`close`): the file is removed on exit, error or not.
    ``stats``: ``{"energy": Σ‖u_s‖², "noise": modelled Σ‖e_s‖², "max_scale": max tile scale}``.
    """

    def __init__(self, codec, shape, nsnap, where="ram", directory=None):
        self.codec, self.shape, self.nsnap, self.where = codec, tuple(shape), int(nsnap), where
        self.nbytes = codec.nbytes(self.shape)
        self.stats = {"energy": 0.0, "noise": 0.0}
        self._fd = self._path = None
        self._ram = None
        if where == "ram":
            self._ram = aligned_zeros((self.nsnap, self.nbytes), np.uint8)  # pages mapped when written
        elif where == "disk":
            fd, path = tempfile.mkstemp(prefix="timeprobe-snapshots-", suffix=".bin", dir=directory)
            self._fd, self._path = fd, path
            try:
                os.unlink(path)  # POSIX: the open descriptor keeps the data; nothing left on a crash
                self._path = None
            except OSError:
                pass
        else:
            raise ValueError(f"where must be 'ram' or 'disk', got {where!r}")

    @property
    def path(self):
        """The file's path while it exists on the file system (None in RAM or once unlinked)."""
        return self._path

    @property
    def stored_bytes(self):
        return self.nsnap * self.nbytes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Free the RAM store / close and remove the file (idempotent)."""
        self._ram = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
            self._path = None

    def _check(self, s0, n):
        if self._ram is None and self._fd is None:
            raise RuntimeError("snapshot store is closed")
        if s0 < 0 or s0 + n > self.nsnap:
            raise IndexError(f"snapshots {s0}..{s0 + n - 1} outside 0..{self.nsnap - 1}")

    def staging(self, n):
        """Where :meth:`write` wants ``n`` encoded snapshots: the store's own rows (RAM) or a
        reusable buffer (disk)."""
        if self._ram is None:
            buf = getattr(self, "_stage", None)
            if buf is None or buf.shape[0] < n:
                buf = self._stage = aligned_zeros((n, self.nbytes), np.uint8)
            return buf[:n]
        return None

    def encode(self, s0, slots, work=None):
        """Encode ``slots`` (n, *shape float32) as snapshots ``s0 … s0+n−1``."""
        n = slots.shape[0]
        self._check(s0, n)
        rows = self._ram[s0:s0 + n] if self._ram is not None else self.staging(n)
        for j in range(n):
            energy, noise = self.codec.encode(slots[j], rows[j], work)
            self.stats["energy"] += energy
            self.stats["noise"] += noise
        if self._ram is None:
            _pwrite_all(self._fd, rows, s0 * self.nbytes)

    def decode(self, s0, slots):
        """Decode snapshots ``s0 … s0+n−1`` into ``slots`` (n, *shape float32)."""
        n = slots.shape[0]
        self._check(s0, n)
        if self._ram is not None:
            rows = self._ram[s0:s0 + n]
        else:
            rows = self.staging(n)
            _pread_all(self._fd, rows, s0 * self.nbytes)
        for j in range(n):
            self.codec.decode(rows[j], slots[j])

    def rows(self, s0, n):
        """The encoded bytes of snapshots ``s0 … s0+n−1`` (a copy for disk)."""
        self._check(s0, n)
        if self._ram is not None:
            return self._ram[s0:s0 + n]
        rows = np.empty((n, self.nbytes), dtype=np.uint8)
        _pread_all(self._fd, rows, s0 * self.nbytes)
        return rows

    def relative_error(self):
        """Modelled relative quantisation error of the whole store, ``sqrt(Σ‖e‖²/Σ‖u‖²)``."""
        e = self.stats["energy"]
        return float(np.sqrt(self.stats["noise"] / e)) if e > 0 else 0.0


def _pwrite_all(fd, arr, offset):
    view = memoryview(np.ascontiguousarray(arr)).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _pread_all(fd, arr, offset):
    view = memoryview(arr).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"snapshot file ended {len(view) - done} bytes early")
        done += got


# --------------------------------------------------------------------------- per-shot runs
@functools.lru_cache(maxsize=4096)
def _chunks(nt, k, B):
    """(c, time_m, time_M, s0, n) of every chunk holding at least one time step of ``1 … nt−1``
    (a tuple, cached: the autopilot's segmented search asks for the same chunks hundreds of
    times per plan)."""
    nsnap = (nt - 1) // k + 1
    out = []
    for c in range(-(-nsnap // B)):
        tm, tM = max(1, c * k * B), min(nt - 1, (c + 1) * k * B - 1)
        s0 = c * B
        n = min(B, nsnap - s0)
        if tm <= tM:
            out.append((c, tm, tM, s0, n))
    return tuple(out)


def _check_serial():
    """Refuse stored snapshots on a grid split over MPI ranks (they are not implemented there)."""
    if is_distributed():
        raise NotImplementedError("stored snapshots (storage=...) do not run under Devito MPI yet: use ps=r "
                                  "or full storage")


def run_stored_forward(model, src_coords, wavelet_c, rec_coords, dt, nt, options, k, illumination=False,
                       layers=True):
    """Forward-model one shot, storing every k-th ``u`` (the region of :func:`stored_margin` with
    ``layers``) through ``options``.

    Returns ``(traces (nt, nrec), store)`` — and the padded illumination ``dt·Σ u²`` with
    ``illumination=True``. The caller closes ``store`` (a :class:`SnapshotStore`; it also carries
    ``k``, ``chunk`` and the region margin for :func:`run_stored_adjoint`).
    """
    options = StorageOptions.parse(options)
    _check_serial()
    if options.segments > 1:
        raise ValueError(f"storage with segments={options.segments}: checkpointed segments run in gradients "
                         "(fwi_objective, jacobian_adjoint: run_segmented_gradient); this run stores every "
                         "snapshot, use segments=1")
    margin = stored_margin(model, layers)
    shape = tuple(b - a for a, b in stored_bounds(model, layers))
    nsnap = (nt - 1) // k + 1
    B = min(options.chunk, nsnap)
    store = SnapshotStore(options.codec, shape, nsnap, options.where, options.directory)
    store.k, store.chunk, store.margin = k, B, margin
    try:
        with use_model(model) as ws:
            src = ws.new_sparse("src", grid_coordinates(model, src_coords), wavelet_c, nt=nt + 1)
            traces = np.zeros((nt + 1, len(rec_coords)), dtype=ws.dtype)
            rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1, buffer=traces)
            op = slot_forward_operator(ws, k, B, margin, illum=illumination)
            chunks = _chunks(nt, k, B)
            nbuf = slot_sets(len(chunks))
            slots, ubufs = _new_slots(ws, B, margin, nbuf)
            ws.field("u").data[:] = 0
            if illumination:
                ws.function("illum").data[:] = 0
            work = np.empty(shape, dtype=np.float32)
            runs = [WindowedRun(op, chunks[0][1], chunks[-1][2], spare_core=nbuf > 1, src=src, rec=rec,
                                ubuf=ubuf, dt=dt) for ubuf in ubufs]
            _fill_store(runs, chunks, slots, store, work)
            illum = np.array(ws.function("illum").data) if illumination else None
            release(src, rec, *ubufs)
    except BaseException:
        store.close()
        raise
    return (traces[:nt], store, illum) if illumination else (traces[:nt], store)


def slot_sets(nchunks):
    """Slot sets of a stored run of ``nchunks`` chunks: 2 (the operator fills or reads one while a
    second thread encodes or decodes the other, :data:`OVERLAP`) or 1."""
    return 2 if OVERLAP and nchunks > 1 else 1


class _CodecThread:
    """Runs the snapshot codec work of slot set ``j`` in one worker thread (NumPy and the file
    calls release the GIL, so it overlaps the operator's run); with one slot set, in the caller."""

    def __init__(self, nbuf):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timeprobe-codec") if nbuf > 1 else None
        self._pending = [None] * nbuf

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                for j in range(len(self._pending)):
                    self.wait(j)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        return False

    def submit(self, j, fn, *args):
        if self._pool is None:
            fn(*args)
        else:
            self._pending[j] = self._pool.submit(fn, *args)

    def wait(self, j):
        """Block until slot set ``j``'s codec work is done (re-raising its error)."""
        pending, self._pending[j] = self._pending[j], None
        if pending is not None:
            pending.result()


def _fill_store(runs, chunks, slots, store, work, base=0):
    """Run the forward ``chunks`` (in time order), encoding each chunk's slots into ``store`` as
    snapshots ``s0 − base …``: chunk i fills slot set ``i % S`` while the codec thread encodes
    chunk i − 1 (``runs``/``slots``: one :class:`WindowedRun` and slot array per set)."""
    nbuf = len(runs)
    with _CodecThread(nbuf) as codec:
        for i, (_, tm, tM, s0, n) in enumerate(chunks):
            j = i % nbuf
            codec.wait(j)  # slot set j encoded: free again
            runs[j](tm, tM)
            codec.submit(j, store.encode, s0 - base, slots[j][:n], work)


def _drain_store(runs, chunks, slots, store, base=0, after=None):
    """Run the adjoint ``chunks`` (backwards in time, in the order given), each after its
    snapshots ``s0 − base …`` are decoded from ``store`` into its slot set; with two sets the next
    chunk is decoded while the operator runs. ``after(s0, n)`` is called after each chunk."""
    nbuf = len(runs)
    with _CodecThread(nbuf) as codec:
        codec.submit(0, store.decode, chunks[0][3] - base, slots[0][:chunks[0][4]])
        for i, (_, tm, tM, s0, n) in enumerate(chunks):
            j = i % nbuf
            codec.wait(j)  # chunk i decoded into slot set j
            follow = chunks[i + 1] if i + 1 < len(chunks) else None
            if follow is not None and nbuf > 1:
                codec.submit(1 - j, store.decode, follow[3] - base, slots[1 - j][:follow[4]])
            runs[j](tm, tM)
            if follow is not None and nbuf == 1:
                codec.submit(0, store.decode, follow[3] - base, slots[0][:follow[4]])
            if after is not None:
                after(s0, n)


def chunk_count(nt, k, B):
    """Chunks of ``B`` snapshots (every k-th of ``nt`` steps) a stored run makes."""
    return len(_chunks(nt, k, B))


def segment_chunks(nt, k, B, segments):
    """The chunks of :func:`_chunks` cut into ``min(segments, nchunks)`` consecutive segments of
    whole chunks (as equal as they go)."""
    chunks = _chunks(nt, k, B)
    S = min(int(segments), len(chunks))
    return [[chunks[i] for i in part] for part in np.array_split(np.arange(len(chunks)), S)]


def segment_memory(options, shape, npad, nt, k):
    """``(store, states)`` bytes of a segmented run (:func:`run_segmented_gradient`): the encoded
    snapshots of its largest segment, and the wavefield states (2 fields per segment start, the
    adjoint field's 3 time buffers; ``npad`` points per field: the padded grid with its halo)."""
    nsnap = (nt - 1) // k + 1
    B = min(options.chunk, nsnap)
    segs = segment_chunks(nt, k, B, options.segments)
    per = options.codec.nbytes(tuple(shape))
    most = max(sum(c[4] for c in seg) for seg in segs)
    store = most * per if options.where == "ram" else B * per
    return store, (2 * len(segs) + 3) * 4 * int(npad)


def run_segmented_gradient(model, src_coords, wavelet_c, rec_coords, dt, nt, options, k, adjoint_traces,
                           layers=True):
    """The stored gradient of one shot with checkpointed segments (``options.segments = S``).

    1. A plain forward run over ``1 … nt−1`` keeps only ``u[t₀]`` and ``u[t₀ − 1]`` at the start
       ``t₀`` of each segment (whole chunks, :func:`segment_chunks`), and the receiver traces.
    2. ``y = adjoint_traces(traces, dt, nt)`` (as for :func:`run_stored_adjoint`'s caller).
    3. For the segments from last to first: the forward is re-run over the segment from its saved
       start (no receivers), its snapshots stored through ``options`` (the same codec, slots and
       codec thread as :func:`run_stored_forward`), then the adjoint runs backwards over the
       segment, continuing from where the previous (later) segment left it.

    Every snapshot and every adjoint step is the one of :func:`run_stored_forward` followed by
    :func:`run_stored_adjoint`, so the gradient is theirs exactly, for one more forward run and a
    store of one segment. Returns ``(gradient on the padded grid, store stats, store bytes)``.
    """
    options = StorageOptions.parse(options)
    _check_serial()
    margin = stored_margin(model, layers)
    shape = tuple(b - a for a, b in stored_bounds(model, layers))
    nsnap = (nt - 1) // k + 1
    B = min(options.chunk, nsnap)
    segs = segment_chunks(nt, k, B, options.segments)
    most = max(sum(c[4] for c in seg) for seg in segs)
    with use_model(model) as ws, SnapshotStore(options.codec, shape, most, options.where,
                                               options.directory) as store:
        u = ws.field("u")
        u.data[:] = 0
        fields = u.data_with_halo.view(np.ndarray)  # the time buffers: u[n] in fields[n % nbuf_t]
        nbuf_t = fields.shape[0]
        src = ws.new_sparse("src", grid_coordinates(model, src_coords), wavelet_c, nt=nt + 1)
        traces = np.zeros((nt + 1, len(rec_coords)), dtype=ws.dtype)
        rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1, buffer=traces)
        run = WindowedRun(forward_operator(ws), 1, nt - 1, src=src, rec=rec, dt=dt)
        states = []
        for seg in segs:
            t0 = seg[0][1]
            states.append(np.stack([fields[t0 % nbuf_t], fields[(t0 - 1) % nbuf_t]]))
            run(t0, seg[-1][2])
        release(rec)
        y = adjoint_traces(traces[:nt], dt, nt)
        del traces
        rec = adjoint_receivers(ws, model, rec_coords, y, nt)
        del y
        nbuf = slot_sets(sum(len(seg) for seg in segs))
        slots, ubufs = _new_slots(ws, B, margin, nbuf)
        g_region, grad_s = _new_gradient(ws, margin)
        fop = slot_forward_operator(ws, k, B, margin, sample=False)
        aop = slot_adjoint_operator(ws, k, B, margin)
        fruns = [WindowedRun(fop, 1, nt - 1, spare_core=nbuf > 1, src=src, ubuf=ub, dt=dt) for ub in ubufs]
        aruns = [WindowedRun(aop, 1, nt - 1, spare_core=nbuf > 1, rec=rec, ubuf=ub, grad_s=grad_s, dt=dt)
                 for ub in ubufs]
        work = np.empty(shape, dtype=np.float32)
        adjoint_state = None
        for i in reversed(range(len(segs))):
            seg, base = segs[i], segs[i][0][3]
            if adjoint_state is not None:
                np.copyto(adjoint_state, fields)  # the adjoint field after the later segments
            t0 = seg[0][1]
            fields[t0 % nbuf_t], fields[(t0 - 1) % nbuf_t] = states[i]
            states[i] = None
            _fill_store(fruns, seg, slots, store, work, base)
            if adjoint_state is None:
                fields[...] = 0  # v = 0 after the last step
                adjoint_state = np.empty_like(fields)
            else:
                np.copyto(fields, adjoint_state)
            _drain_store(aruns, seg[::-1], slots, store, base)
        stats = dict(store.stats)
        release(src, rec, grad_s, *ubufs)
    return _padded(model, margin, g_region), stats, store.stored_bytes


def _new_slots(ws, B, margin, nbuf):
    """``nbuf`` sets of ``B`` zeroed float32 slots on the stored region, and their Functions."""
    slots = [aligned_zeros(snapshot_slots(ws, B, margin).shape, ws.dtype) for _ in range(nbuf)]
    return slots, [_slot_view(ws, B, margin, a) for a in slots]


def _new_gradient(ws, margin):
    """The chunked adjoint's gradient on the stored region: a zeroed array and its Function."""
    g_ph = slot_gradient(ws, margin)
    g_region = aligned_zeros(g_ph.shape, ws.dtype)
    return g_region, Function(name=g_ph.name, dimensions=g_ph.dimensions, shape=g_ph.shape, space_order=0,
                              dtype=ws.dtype, **wrap_array(g_region))


def _padded(model, margin, g_region):
    """``g_region`` (the stored region) placed in a zero gradient on the padded grid."""
    grad = np.zeros(model.shape_padded, dtype=model.dtype)
    grad[tuple(slice(a, b) for a, b in region_bounds(model.shape_padded, margin))] = g_region
    return grad


def _slot_view(ws, B, margin, array, name="ubuf"):
    ph = snapshot_slots(ws, B, margin, name)
    return Function(name=ph.name, dimensions=ph.dimensions, shape=ph.shape, space_order=0, dtype=ws.dtype,
                    **wrap_array(array))


def run_stored_adjoint(model, rec_coords, residual_c, dt, nt, store, record=None):
    """Back-propagate ``residual_c`` (nt, nrec) and correlate with the stored snapshots.

    Returns the gradient ``−k·dt Σ_s u_s·v̈[k s]`` on the padded grid (zero outside the stored region).
    ``record``: a float32 store (:class:`SnapshotStore` with the same ``nsnap`` and region) that also
    receives ``v̈[k s]`` on that region (for studies of the gradient's time structure).
    """
    k, B, margin = store.k, store.chunk, store.margin
    with use_model(model) as ws:
        # the forward's traces overwritten by the adjoint source are injected without a copy
        rec = adjoint_receivers(ws, model, rec_coords, residual_c, nt)
        op = slot_adjoint_operator(ws, k, B, margin, record=record is not None)
        chunks = _chunks(nt, k, B)[::-1]
        nbuf = slot_sets(len(chunks))
        slots, ubufs = _new_slots(ws, B, margin, nbuf)
        kwargs = dict(rec=rec, dt=dt)
        if record is not None:
            if record.nsnap != store.nsnap:
                raise ValueError(f"record store holds {record.nsnap} snapshots, the run has {store.nsnap}")
            vslots = aligned_zeros(slots[0].shape, ws.dtype)
            kwargs["vbuf"] = _slot_view(ws, B, margin, vslots, "vbuf")
        g_region, kwargs["grad_s"] = _new_gradient(ws, margin)
        ws.field("u").data[:] = 0
        runs = [WindowedRun(op, chunks[-1][1], chunks[0][2], spare_core=nbuf > 1, ubuf=ubuf, **kwargs)
                for ubuf in ubufs]
        _drain_store(runs, chunks, slots, store,
                     after=None if record is None else (lambda s0, n: record.encode(s0, vslots[:n])))
        release(rec, kwargs["grad_s"], kwargs.get("vbuf"), *ubufs)
    return _padded(model, margin, g_region)
