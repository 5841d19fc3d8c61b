"""The Devito internals timeprobe relies on (timeprobe.compat): each fails loudly if Devito changes it."""
import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

from timeprobe import compat
from timeprobe.workspace import workspace

from conftest import layered_model


def _rss_mib():
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_supported_version_range():
    assert compat.check_devito_version() == compat.devito_version()
    lo, hi = compat.SUPPORTED_DEVITO
    compat.check_devito_version(lo)
    with pytest.raises(ImportError, match="supports Devito"):
        compat.check_devito_version(hi)
    with pytest.raises(ImportError, match="supports Devito"):
        compat.check_devito_version("4.7.1")
    # 4.8.12 rejects the subsampled-snapshot buffer override (tests/test_strategies.py fails there)
    with pytest.raises(ImportError, match="supports Devito"):
        compat.check_devito_version("4.8.12")
    # setup.cfg pins the same range
    setup_cfg = (Path(__file__).resolve().parents[1] / "setup.cfg").read_text()
    assert f"devito>={lo},<{hi}" in setup_cfg


def test_release_returns_memory_without_garbage_collection():
    """A released 128 MiB wavefield leaves the process at once, although Devito's functions
    sit in reference cycles (without release() it stays resident until gc runs)."""
    from devito import TimeFunction
    model = layered_model(shape=(201, 201), nbl=0, space_order=2)
    ws = workspace(model)
    nt = 800  # 800 · 201² · 4 B = 123 MiB
    with compat.without_gc():
        before = _rss_mib()
        u = TimeFunction(name="usave", grid=ws.grid, time_order=2, space_order=0, save=nt)
        u.data[:] = 1.0  # touch every page
        grown = _rss_mib() - before
        alive = weakref.ref(u._data)
        compat.release(u)
        del u
        assert alive() is None, "release() did not drop Devito's data buffer (Devito internals changed?)"
        freed = before + grown - _rss_mib()
    assert grown > 100, grown
    assert freed > 0.9 * grown, (grown, freed)
    # the negative control: the same function, only deleted, stays in its reference cycle
    with compat.without_gc():
        u = TimeFunction(name="usave", grid=ws.grid, time_order=2, space_order=0, save=nt)
        u.data[:] = 1.0
        alive = weakref.ref(u._data)
        del u
        kept = alive() is not None
    gc.collect()
    assert kept, "a deleted Devito function freed its buffer without gc: release() may be unnecessary now"


def test_release_views_and_wrapped_buffers():
    """A view handed out keeps its buffer alive, and only it; wrapped numpy buffers are let go."""
    model = layered_model(shape=(41, 31), nbl=10)
    ws = workspace(model)
    with compat.without_gc():
        f = ws.new_sparse("rec", np.zeros((3, 2)) + 50.0, nt=20)
        g = ws.new_sparse("rec", np.zeros((3, 2)) + 50.0, nt=20)
        f.data[:], g.data[:] = 1.0, 2.0  # Devito allocates on first access
        alive_f, alive_g = weakref.ref(f._data), weakref.ref(g._data)
        view = g.data[:10].view(np.ndarray)
        compat.release(f, g, None)
        del f, g
        assert alive_f() is None
        assert alive_g() is not None  # still referenced by the view
        del view
        assert alive_g() is None
        buf = np.zeros((20, 3), dtype=np.float32)
        alive_buf = weakref.ref(buf)
        h = ws.new_sparse("rec", np.zeros((3, 2)) + 50.0, nt=20, buffer=buf)
        assert compat.is_wrapped(h)
        h.data[:] = 3.0
        del buf
        compat.release(h)
        del h
        assert alive_buf() is None


def test_wrap_array_shares_memory():
    """A wrapped array is the function's data: no copy, no zero fill, writes visible both ways."""
    from devito import Function
    model = layered_model(shape=(41, 31), nbl=10)
    ws = workspace(model)
    a = np.arange(np.prod(ws.shape), dtype=np.float32).reshape(ws.shape)
    f = Function(name="fin", grid=ws.grid, space_order=0, **compat.wrap_array(a))
    assert f.data[3, 4] == a[3, 4] != 0  # not zero-filled
    f.data[3, 4] = -1.0
    assert a[3, 4] == -1.0
    assert np.shares_memory(f.data.view(np.ndarray), a)
    with pytest.raises(ValueError, match="C-contiguous"):
        compat.wrap_array(a.T)


def test_fixed_dimension_and_floor_div_in_generated_code():
    """A fixed dimension's loop has literal bounds, and floor_div indexes without a guard: the
    operator sums row ``time / 3`` of W over a constant-trip loop at every step (the reference
    is numpy; a guard ``time % 3 == 0`` or run-time bounds would show in the code or the sum)."""
    from devito import DefaultDimension, Eq, Function, Grid, Operator
    grid = Grid(shape=(4,))
    p = compat.fixed_dimension("pp", 5)
    W = Function(name="W", dimensions=(grid.dimensions[0], p), shape=(4, 5), space_order=0)
    W.data[:] = np.arange(20, dtype=np.float32).reshape(4, 5)
    acc = Function(name="acc", grid=grid, space_order=0)
    time = grid.time_dim
    row = DefaultDimension(name="row", default_value=4)
    R = Function(name="R", dimensions=(row,), shape=(4,), space_order=0)
    R.data[:] = [1.0, 10.0, 100.0, 1000.0]
    op = Operator([Eq(acc, acc + R[compat.floor_div(time, 3)] * W[grid.dimensions[0], p])])
    code = str(op.ccode)
    assert "for (int pp = 0; pp <= 4; pp += 1)" in code
    assert "R[time / 3]" in code and "%(3)" not in code
    op.apply(time_m=0, time_M=7)
    expect = sum(R.data[t // 3] for t in range(8)) * W.data.sum(axis=1)
    np.testing.assert_allclose(acc.data, expect, rtol=1e-6)
    with pytest.raises(ValueError, match="positive size"):
        compat.fixed_dimension("q", 0)
def test_argument_halo_exchange_can_be_skipped():
    """Devito collects operator arguments through ``_data_allocated``, which calls the function's
    ``_halo_exchange`` (a Python-side exchange under MPI); skip_argument_halo_exchange replaces it
    on one function, and only that one."""
    import inspect

    from devito import Function, TimeFunction
    from devito.types.dense import DiscreteFunction
    source = inspect.getsource(DiscreteFunction._data_allocated.fget)
    assert "self._halo_exchange()" in source, "Devito no longer exchanges halos in _data_allocated"
    model = layered_model(shape=(21, 11), nbl=0, space_order=2)
    ws = workspace(model)
    u = TimeFunction(name="usave", grid=ws.grid, time_order=2, space_order=2, save=3)
    other = Function(name="f", grid=ws.grid, space_order=2)
    u.data  # allocated (its zero-initialisation exchanges halos too)
    calls = []
    u._halo_exchange = lambda: calls.append(1)  # the hook Devito calls, observed
    u._data_buffer()
    assert calls == [1]
    assert compat.skip_argument_halo_exchange(u) is u
    u._data_buffer()
    assert calls == [1]  # not called any more
    assert other._halo_exchange.__self__ is other  # other functions keep Devito's method


def test_windowed_run_equals_one_apply():
    """Consecutive windows of a WindowedRun give the result of one apply over the whole range
    (the buffered u continues between windows; a source injected per step and a sum over
    steps both see every step once), and a window outside the range is refused."""
    from devito import Eq, Function, Grid, Operator, TimeFunction
    grid = Grid(shape=(6,))
    x, time = grid.dimensions[0], grid.time_dim

    def build():
        u = TimeFunction(name="u", grid=grid, space_order=0)
        acc = Function(name="acc", grid=grid, space_order=0)
        return u, acc, Operator([Eq(u.forward, 0.5 * u + time * (x + 1)), Eq(acc, acc + u.forward * time)])

    u1, acc1, op1 = build()
    op1.apply(time_m=2, time_M=13)
    u2, acc2, op2 = build()
    run = compat.WindowedRun(op2, 2, 13, u=u2, acc=acc2)
    for tm, tM in ((2, 5), (6, 6), (7, 13)):
        run(tm, tM)
    assert np.any(acc1.data != 0)
    np.testing.assert_array_equal(acc2.data, acc1.data)
    np.testing.assert_array_equal(u2.data, u1.data)
    with pytest.raises(ValueError, match="outside"):
        run(1, 4)
    with pytest.raises(ValueError, match="outside"):
        run(12, 14)


def test_aligned_zeros_small_and_huge_page_buffers():
    """Small buffers are 64-byte aligned zeros; large ones (a mapping of their own, huge pages
    requested) are 2 MiB aligned zeros, writable, and freed with their last view."""
    from timeprobe.utils import HUGE_PAGE, HUGE_PAGE_MIN, aligned_zeros
    small = aligned_zeros((7, 5), np.float32)
    assert small.ctypes.data % 64 == 0 and small.shape == (7, 5) and small.dtype == np.float32
    assert not small.any()
    n = HUGE_PAGE_MIN // 4 + 1000
    big = aligned_zeros((n // 10, 10), np.float32)
    assert big.shape == (n // 10, 10) and big.flags.c_contiguous and big.flags.writeable
    assert big.ctypes.data % HUGE_PAGE == 0
    assert not big.any()
    big[-1, -1] = 3.0
    assert big.sum() == 3.0
    assert aligned_zeros((3,), np.int8).dtype == np.int8


def _blas_threads():
    from threadpoolctl import threadpool_info
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})


def test_serial_blas_limits_and_restores():
    """Inside ``serial_blas`` (block or decorator, nested) every BLAS library runs one thread;
    the caller's thread counts come back on exit, also after an exception."""
    from threadpoolctl import threadpool_limits
    from timeprobe.utils import serial_blas

    @serial_blas()
    def inner():
        return _blas_threads()

    with threadpool_limits(2, user_api="blas"):
        assert _blas_threads() == [2]
        with serial_blas():
            assert _blas_threads() == [1]
            assert inner() == [1]
            assert _blas_threads() == [1]
        assert _blas_threads() == [2]
        assert inner() == [1] and _blas_threads() == [2]
        with pytest.raises(RuntimeError):
            with serial_blas():
                raise RuntimeError("boom")
        assert _blas_threads() == [2]


def test_operators_run_with_serial_blas(small_case, monkeypatch):
    """The public functions that run operators (modelling, objectives, images, the probe design
    before a probed forward run) hold BLAS to one thread while the operators run: OpenBLAS's
    threads would otherwise spin beside Devito's OpenMP threads after the probe design."""
    from threadpoolctl import threadpool_limits
    import timeprobe.imaging as imaging
    import timeprobe.objectives as objectives
    import timeprobe as tp
    import timeprobe.propagators as propagators

    model, model0, q, rec_geom, d = small_case
    seen = []

    def spy(real):
        def run(*args, **kwargs):
            seen.append(_blas_threads())
            return real(*args, **kwargs)
        return run

    for mod in (propagators, objectives, imaging):
        monkeypatch.setattr(mod, "run_forward", spy(propagators.run_forward))
    with threadpool_limits(2, user_api="blas"):
        tp.forward(model0, q[0], rec_geom[0])
        tp.fwi_objective(model0, q[0], d[0], ps=4, seed=0)
        tp.gathers(model0, q[0], d[0], ps=4, offsets=[0.0], ic="as", seed=0)
        assert _blas_threads() == [2]
    assert len(seen) >= 3 and all(s == [1] for s in seen), seen


def test_mapped_allocator_gives_devito_aligned_zeros(small_case):
    """A TimeFunction allocated by ``mapped_allocator`` holds zeros of Devito's allocated shape
    (domain, halo, padding) in a buffer of its own (2 MiB-aligned when large), works in an
    operator like Devito's own allocation, and the full-storage forward run uses it."""
    from devito import Grid, TimeFunction
    from timeprobe.compat import mapped_allocator
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.propagators import run_forward
    from timeprobe.utils import HUGE_PAGE, HUGE_PAGE_MIN

    grid = Grid((300, 200))
    big = TimeFunction(name="ub", grid=grid, time_order=2, space_order=8, save=40, **mapped_allocator())
    ref = TimeFunction(name="ur", grid=grid, time_order=2, space_order=8, save=40)
    assert big.data_with_halo.shape == ref.data_with_halo.shape
    assert big.data_with_halo.nbytes >= HUGE_PAGE_MIN
    assert big.data_with_halo.ctypes.data % HUGE_PAGE == 0
    assert not big.data_with_halo.any()
    big.data[3] = 2.0
    assert float(big.data.sum()) == 2.0 * 300 * 200
    small = TimeFunction(name="us", grid=Grid((5, 4)), time_order=2, space_order=2, save=3, **mapped_allocator())
    assert small.data_with_halo.ctypes.data % 64 == 0 and not small.data_with_halo.any()

    model, model0, q, rec_geom, d = small_case
    dt, nt = computational_axis(model0, q.geometry, rec_geom)
    wc = to_computational(q.arrays[0], q.geometry[0], dt, nt)
    rec1, usave = run_forward(model0, q.geometry.coordinates[0], wc, rec_geom.coordinates[0], dt, nt, save=True)
    assert usave._allocator is mapped_allocator()["allocator"]
    rec2, _ = run_forward(model0, q.geometry.coordinates[0], wc, rec_geom.coordinates[0], dt, nt)
    np.testing.assert_array_equal(rec1, rec2)
    compat.release(usave)
