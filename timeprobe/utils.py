"""Small numerical helpers shared by the modules."""
from __future__ import annotations

import contextlib
import functools
import mmap

import numpy as np

__all__ = ["finite_difference_weights", "as_generator", "fmt", "check_dtype", "working_dtype",
           "aligned_zeros", "BUFFER_ALIGN", "HUGE_PAGE", "HUGE_PAGE_MIN", "serial_blas"]


@functools.lru_cache(maxsize=None)
def _fd_weights(deriv, order):
    from sympy import finite_diff_weights
    half = order // 2
    w = finite_diff_weights(deriv, list(range(-half, half + 1)), 0)[deriv][-1]
    return tuple(float(v) for v in w)


def finite_difference_weights(deriv, order):
    """Centred finite-difference weights (unit spacing) of derivative ``deriv`` and accuracy ``order``."""
    return np.array(_fd_weights(deriv, order))


def as_generator(seed):
    """A ``numpy.random.Generator`` from a seed, a Generator (returned as is) or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def fmt(value):
    """Numbers, arrays and sequences of them as plain text for error messages
    (``5000``, ``(100, 20.5)``; never ``np.float64(5000.0)``)."""
    if isinstance(value, (str, bytes)):
        return str(value)
    if np.ndim(value) == 0:
        v = np.asarray(value).item()
        return f"{v:g}" if isinstance(v, float) else str(v)
    items = ", ".join(fmt(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value))
    return f"[{items}]" if isinstance(value, list) else f"({items})"
_DTYPES = (np.float32, np.float64)


def check_dtype(dtype):
    """``dtype`` as ``np.float32`` or ``np.float64`` (the two precisions timeprobe runs in)."""
    try:
        t = None if dtype is None else np.dtype(dtype).type  # np.dtype(None) would be float64
    except TypeError:
        t = None
    if t not in _DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return t


def working_dtype(a):
    """float64 for float64 arrays, float32 for anything else (timeprobe's default precision)."""
    return np.float64 if np.asarray(a).dtype == np.float64 else np.float32


#: byte alignment of the probe and snapshot buffers: one cache line, the width of an AVX-512 vector
BUFFER_ALIGN = 64

#: size of a transparent huge page (x86-64, arm64 with 4 KiB base pages)
HUGE_PAGE = 2 << 20

#: buffers of at least this many bytes get a mapping of their own with huge pages requested
HUGE_PAGE_MIN = 4 << 20

_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def aligned_zeros(shape, dtype, align=BUFFER_ALIGN):
    """Zeros of ``shape`` whose first element sits on an ``align``-byte boundary.

    Large numpy arrays start 16 bytes into a page (the allocator's header), so every 64-byte
    vector access of the probe loops would straddle two cache lines; Devito's own fields are
    aligned, and the generated loops assume ``aligned(…:64)``.

    Buffers of :data:`HUGE_PAGE_MIN` bytes or more (probe fields, ring buffers, stored snapshots)
    are anonymous mappings of their own, 2 MiB-aligned, with transparent huge pages requested
    (``madvise(MADV_HUGEPAGE)``; Linux, where THP is ``always`` or ``madvise``). Their pages are
    still mapped when first written, but one fault maps 2 MiB instead of 4 KiB. On a 2-core VM
    a fresh 13.6 MiB buffer (one r = 64 probe field of a gathers run) took 6.2 ms to map and
    fill with 4 KiB pages and 1.6 ms like this (``scripts/overheads.py``). The mapping is
    private: Python's default for an anonymous ``mmap`` is a shared one, shared memory that THP
    leaves alone (10.9 ms; the mapping timeprobe used before). Without THP support the mapping
    is a plain zero-filled one. The returned array is a view of the mapping (kept alive through
    ``.base``); it is unmapped when the last view goes.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes >= HUGE_PAGE_MIN and _MADV_HUGEPAGE is not None:
        # private: Python's default for an anonymous mmap is MAP_SHARED, i.e. shared memory
        # (shmem), which THP leaves alone and whose faults are slower
        buf = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        raw = np.frombuffer(buf, dtype=np.uint8)
        start = -raw.ctypes.data % HUGE_PAGE
        # huge pages for the whole 2 MiB pages of the buffer only: its tail stays in 4 KiB
        # pages, so no more than the buffer itself becomes resident
        try:
            buf.madvise(_MADV_HUGEPAGE, start, nbytes // HUGE_PAGE * HUGE_PAGE)
        except OSError:  # THP unsupported: ordinary pages
            pass
    else:
        raw = np.zeros(nbytes + align, dtype=np.uint8)
        start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


_BLAS_CONTROLLER = []


def _blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded now (made once), or None when
    threadpoolctl is not installed."""
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_CONTROLLER.append(None)
        else:
            _BLAS_CONTROLLER.append(ThreadpoolController())
    return _BLAS_CONTROLLER[0]


class serial_blas(contextlib.ContextDecorator):
    """Run the BLAS calls of a block (or of a decorated function) on the calling thread only.

    Why: OpenBLAS, NumPy's and SciPy's BLAS, keeps its worker threads *spinning* for about
    2²⁸ cycles (≈ 0.1 s) after every multi-threaded call, waiting for more work. A Devito
    operator started in that window shares the cores with them: on a 2-core VM a 2D forward
    run took 42 ms alone and 78 ms right after a 600×600 matrix product on both cores
    (``scripts/overheads.py``, BENCHMARKS.md §4), and every probed run designs its probes (a
    QR, an SVD) just before its forward run. timeprobe's own BLAS work (probe design,
    correlations, line-search dot products) is small; single-threaded it costs less than the
    spin it avoids. The public functions that run operators
    are decorated with it; BLAS calls of the caller's own code just before them can still
    slow the first operator (``OPENBLAS_NUM_THREADS=1`` avoids that too). Nested use is fine;
    the previous thread counts come back on exit. The limit is process-wide (BLAS libraries
    have one thread count): threads running other BLAS work meanwhile are serial too. Without
    threadpoolctl (the ``seismic`` extra installs it) this does nothing.
    """

    def _recreate_cm(self):  # a fresh instance per decorated call: calls may nest or recurse
        return type(self)()

    def __enter__(self):
        ctl = _blas_controller()
        self._limit = None if ctl is None else ctl.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limit is not None:
            self._limit.restore_original_limits()
        return False
