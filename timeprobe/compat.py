"""Every Devito internal timeprobe relies on, in one place.

timeprobe uses Devito through its public API (``Grid``, ``Function``, ``TimeFunction``,
``SparseTimeFunction``, ``Eq``/``Inc``, ``Operator``, ``ConditionalDimension``,
``DefaultDimension``, ``DataReference``, ``devito.checkpointing``). Two things it needs are not
public, and live here so that a Devito upgrade breaks one module with a named test
(``tests/test_compat.py``) instead of silently leaking memory:

* :func:`release` drops a function's reference to its data buffer (the private attributes
  ``_data`` and ``_allocator``). Devito's symbolic objects sit in reference cycles, so their
  buffers would otherwise stay resident until the cyclic garbage collector runs — for a
  full-storage wavefield, nt·N floats on top of the next shot's.
* :func:`wrap_array` makes a Devito function use an existing numpy array as its data
  (public ``DataReference`` allocator) and :func:`is_wrapped` tells whether it does;
  :func:`mapped_allocator` makes it allocate its data with :func:`timeprobe.utils.aligned_zeros`
  (a subclass of the public ``MemoryAllocator`` overriding ``alloc``).
* :func:`fixed_dimension` — a dimension whose loop bounds are compile-time constants
  (``CustomDimension``, which Devito documents as not meant for user code), and
  :func:`floor_div` — C integer division in an index (``devito.symbolics.IntDiv``). The probe
  loops use them: with a constant trip count the compiler keeps a block's probe weights in
  registers, and an index ``time / (k·B)`` selects a block's weights without the implicit
  guard ``time % (k·B) == 0`` that indexing by a factor ``ConditionalDimension`` adds.
* :func:`skip_argument_halo_exchange` (Devito MPI) stops the Python-side halo exchange Devito
  runs on every grid function it collects as an operator argument (the private method
  ``_halo_exchange``, called by ``_data_allocated``): for a saved wavefield that is the halo
  slabs of all its snapshots, copied at every ``apply``; the generated code exchanges the
  halos it reads itself.
* :class:`WindowedRun` runs one operator over consecutive time windows with its arguments
  processed once (``Operator.arguments``, then the compiled function, ``Operator.cfunction``,
  called with only ``time_m``/``time_M`` replaced, and Devito's return-code check
  ``Operator._postprocess_errors``): the stored-snapshot gradients run in windows of ``k·B``
  steps, and ``apply``'s argument processing costs 2–3 ms per window; it can leave a core free
  (the thread-count arguments ``nthreads``/``nthreads_nonaffine`` of the generated code).

Supported Devito versions: :data:`SUPPORTED_DEVITO` (``setup.cfg`` pins the same range;
``tests/test_compat.py`` checks every internal named here).
"""
from __future__ import annotations

import gc

import numpy as np

__all__ = ["SUPPORTED_DEVITO", "devito_version", "check_devito_version", "wrap_array", "is_wrapped",
           "release", "without_gc", "fixed_dimension", "floor_div", "skip_argument_halo_exchange",
           "WindowedRun", "THREAD_ARGUMENTS", "mapped_allocator"]

#: the Devito releases timeprobe is tested with (lower bound inclusive, upper exclusive)
SUPPORTED_DEVITO = ("4.8.23", "4.9")


def _as_tuple(version):
    out = []
    for part in str(version).split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def devito_version():
    """The installed Devito version string."""
    import devito
    return devito.__version__


def check_devito_version(version=None):
    """Raise ``ImportError`` if ``version`` (default: the installed one) is outside
    :data:`SUPPORTED_DEVITO`."""
    version = devito_version() if version is None else version
    lo, hi = SUPPORTED_DEVITO
    if not _as_tuple(lo) <= _as_tuple(version) < _as_tuple(hi):
        raise ImportError(f"timeprobe supports Devito >= {lo}, < {hi}; found Devito {version}. "
                          f"Install a supported release: pip install 'devito>={lo},<{hi}'")
    return version


def wrap_array(array):
    """Keyword arguments making a Devito function use ``array`` as its data, without a copy.

    Usage: ``Function(..., **wrap_array(a))``. ``array`` must be C-contiguous and have the
    function's exact shape and dtype (space order 0, no padding); the caller keeps it alive.
    The no-op initializer keeps Devito from zero-filling the caller's data.
    """
    from devito.data.allocators import DataReference
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError("wrap_array needs a C-contiguous numpy array")
    return dict(allocator=DataReference(array), initializer=_no_init)


def _no_init(data):
    pass


_MAPPED_ALLOCATOR = []


def mapped_allocator():
    """Keyword arguments making a Devito function allocate its data (domain, halo and padding,
    the shape Devito asks for) with :func:`timeprobe.utils.aligned_zeros`: for large buffers a
    private anonymous mapping of their own with transparent huge pages, unmapped when the last
    view of the data goes. Usage: ``TimeFunction(..., save=nt + 1, **mapped_allocator())``.

    Why: a full-storage wavefield is nt·N floats allocated afresh for every shot. Devito's
    default allocator (``posix_memalign``) gets 4 KiB pages, and the first write of each costs
    a page fault. With huge pages there are 512 times fewer.
    """
    if not _MAPPED_ALLOCATOR:
        from devito.data.allocators import MemoryAllocator

        from .utils import aligned_zeros

        class MappedAllocator(MemoryAllocator):
            def alloc(self, shape, dtype, padding=0):
                # Devito's padding argument is for allocators that over-allocate and offset
                # the data pointer themselves; aligned_zeros aligns the data directly
                return aligned_zeros(shape, dtype), None

            def _alloc_C_libcall(self, size, ctype):  # never called: alloc is overridden
                raise NotImplementedError

            def free(self, *args):  # the mapping goes with its last view
                pass

        _MAPPED_ALLOCATOR.append(MappedAllocator())
    return dict(allocator=_MAPPED_ALLOCATOR[0])


def fixed_dimension(name, size):
    """A dimension iterating ``0 … size − 1`` with the bounds written into the generated code
    (a ``DefaultDimension`` passes them at run time): the loop has a constant trip count."""
    from devito import CustomDimension
    size = int(size)
    if size < 1:
        raise ValueError(f"dimension {name!r} needs a positive size, got {size}")
    return CustomDimension(name=name, symbolic_min=0, symbolic_max=size - 1, symbolic_size=size)


def floor_div(a, b):
    """``a // b`` for non-negative integer expressions, as C integer division in an index."""
    from devito.symbolics import IntDiv
    return IntDiv(a, b)


def is_wrapped(function):
    """Whether ``function``'s data is an external array (see :func:`wrap_array`)."""
    from devito.data.allocators import DataReference
    return isinstance(getattr(function, "_allocator", None), DataReference)


def release(*functions):
    """Free the buffers of per-shot Devito functions now, not at the next garbage collection.

    Dropping the function's own reference to its buffer frees it as soon as no array view of it
    remains (a view returned to the caller keeps its buffer alive, and only it). The functions are
    unusable afterwards. ``None`` entries are skipped. For sparse functions the coordinates are
    released too.
    """
    for f in functions:
        if f is None:
            continue
        # Devito's own idiom (SparseFunction.free_data); a DataReference allocator holds the
        # wrapped numpy array, so it must go as well
        f._data = None
        f._allocator = None
        coords = getattr(f, "coordinates", None)
        if coords is not None:
            coords._data = None


def skip_argument_halo_exchange(function):
    """Under Devito MPI, no Python-side halo exchange when ``function`` is passed to an Operator.

    Devito (4.8) hands a grid function's buffer to ``Operator.apply`` through
    ``_data_allocated``, which first exchanges its halo in Python (numpy copies of every halo
    slab, then ``Sendrecv``). For a saved wavefield (nt + 1 snapshots) that is a transient of
    about ``2·space_order/n_x,rank`` of the field per rank, and its copying time, at every
    ``apply``. The generated code exchanges, at each time step, the halo of every field it reads
    with a stencil, so for a field that only operators read and write the Python-side exchange
    is redundant. Afterwards the function's ``data_with_halo`` may hold stale halos (its domain
    data is exact). Returns ``function``.
    """
    function._halo_exchange = _no_halo_exchange
    return function


def _no_halo_exchange():
    pass


#: the run-time arguments of Devito's generated code that set OpenMP thread counts
THREAD_ARGUMENTS = ("nthreads", "nthreads_nonaffine")


class WindowedRun:
    """``op`` run over time windows ``[time_m, time_M]`` inside ``[first, last]``, every other
    argument fixed (``kwargs``, as for ``op.apply``).

    The arguments are processed once, for the whole range ``[first, last]`` (so Devito checks
    every buffer against the whole run), and each call runs the compiled function with only the
    window's ``time_m`` and ``time_M`` replaced. The buffers the arguments point to must stay
    the same between windows (their contents may change: that is how the snapshot slots are
    refilled). Under Devito MPI (where ``apply`` also scatters and gathers sparse data) every
    window is a plain ``op.apply``.

    ``spare_core``: run the parallel loops on one OpenMP thread fewer than Devito's default (at
    least one), leaving a core to a thread of the caller's that works between windows (the
    snapshot codecs of :mod:`timeprobe.storage`).
    """

    def __init__(self, op, first, last, spare_core=False, **kwargs):
        from devito import configuration
        self.op, self.kwargs = op, kwargs
        self.first, self.last = int(first), int(last)
        self._values = None
        if not configuration["mpi"]:
            cfunction = op.cfunction
            args = op.arguments(time_m=self.first, time_M=self.last, **kwargs)
            names = [p.name for p in op.parameters]
            self._cfunction, self._values = cfunction, [args[n] for n in names]
            self._tm, self._tM = names.index("time_m"), names.index("time_M")
            if spare_core:  # Devito's OpenMP thread counts (its defaults: every core) less one
                for i, n in enumerate(names):
                    if n in THREAD_ARGUMENTS:
                        self._values[i] = max(1, int(self._values[i]) - 1)

    @property
    def threads(self):
        """The OpenMP threads of the compiled function's parallel loops (None: Devito's default)."""
        if self._values is None:
            return None
        names = [p.name for p in self.op.parameters]
        return {n: int(self._values[names.index(n)]) for n in THREAD_ARGUMENTS if n in names}

    def __call__(self, time_m, time_M):
        if not self.first <= time_m <= time_M <= self.last:
            raise ValueError(f"time window [{time_m}, {time_M}] outside [{self.first}, {self.last}]")
        if self._values is None:
            self.op.apply(time_m=time_m, time_M=time_M, **self.kwargs)
            return
        values = list(self._values)
        values[self._tm], values[self._tM] = int(time_m), int(time_M)
        self.op._postprocess_errors(self._cfunction(*values))


class without_gc:
    """Context manager that disables the cyclic garbage collector (tests of :func:`release`)."""

    def __enter__(self):
        self._enabled = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        if self._enabled:
            gc.enable()
        return False
