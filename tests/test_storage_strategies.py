"""Stored-snapshot gradients (timeprobe.compression, timeprobe.storage): codec error bounds, the RAM and
disk stores, equality with the "subsample" strategy, a pointwise bound on the compressed gradient's
error, and the public API (fwi_objective(storage=...), strategies.gradient("nyquist", ...))."""
import os

import numpy as np
import pytest

import timeprobe as tp
from timeprobe.compression import CODECS, Codec, codec_for_bits
from timeprobe.geometry import (computational_axis, from_computational, from_computational_adjoint,
                                to_computational)
from timeprobe.storage import (SnapshotStore, StorageOptions, run_stored_adjoint, run_stored_forward,
                               stored_bounds, stored_memory, stored_subsample)
from timeprobe.strategies import gradient

from conftest import acquisition, layered_model


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def _wavefield(shape, seed=0):
    """A wavefield-like snapshot: a decaying oscillation, an all-zero region, tiny and huge values."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum((g - 0.3) ** 2 for g in grids))
    x = np.sin(40 * r) * np.exp(-8 * r) + 1e-3 * rng.standard_normal(shape)
    x[tuple(slice(0, n // 4) for n in shape)] = 0.0
    x[tuple(slice(n // 4, n // 4 + 3) for n in shape)] = 1e-35  # far below float32's 1/L·max
    x[(-1,) * len(shape)] = 1e4
    return x.astype(np.float32)


# --------------------------------------------------------------------------- codecs (NumPy only)
@pytest.mark.parametrize("shape", [(37, 23), (9, 17, 11)])
@pytest.mark.parametrize("name", ["int8", "int16"])
@pytest.mark.parametrize("tile", [1, 4, 8])
def test_integer_codecs_error_within_half_scale(shape, name, tile):
    """|x − x̂| ≤ s_b/2 per tile (+ the documented float32 term L·2⁻²² s_b); ragged edge tiles too."""
    codec = Codec(name, tile)
    x = _wavefield(shape)
    buf = np.empty(codec.nbytes(shape), np.uint8)
    codec.encode(x, buf)
    y = np.empty_like(x)
    codec.decode(buf, y)
    err = np.abs(y.astype(np.float64) - x)
    bound = codec.error_bound(buf, shape).astype(np.float64)
    assert np.all(err <= bound), float(np.max(err - bound))
    # the bound is the half step of each tile: s_b/2 with s_b = max|x| / L over the tile
    levels = 127 if name == "int8" else 32767
    scales = buf[:4 * codec.nscales(shape)].view(np.float32)
    t0 = np.abs(x[tuple(slice(0, min(tile, n)) for n in shape)]).max()
    first = scales[0] if t0 >= 1e-30 else np.float32(0)
    assert first == pytest.approx(t0 / levels if t0 >= 1e-30 else 2 * t0, rel=1e-6, abs=0)
    # tight: some sample reaches ≈ s_b/2 (tile 1: every value is ±L·s_b exactly, no error)
    if tile > 1:
        ratio = err[bound > 0] / bound[bound > 0]
        assert ratio.max() > 0.9
    # all-zero tiles decode to exact zeros
    zero = tuple(slice(0, n // 4 // tile * tile) for n in shape)
    assert np.all(y[zero] == 0)


def test_float16_codec_relative_bound_and_lossless_float32():
    x = _wavefield((40, 30))
    for name in ("float16", "float32"):
        codec = Codec(name)
        buf = np.empty(codec.nbytes(x.shape), np.uint8)
        energy, noise = codec.encode(x, buf)
        y = codec.decode(buf, np.empty_like(x))
        assert energy == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-6)
        if name == "float32":
            assert np.array_equal(x, y) and noise == 0
        else:
            assert np.all(np.abs(y - x) <= codec.error_bound(buf, x.shape))
            assert 0 < _rel(y, x) < 2 ** -10


def test_codec_sizes_and_noise_model():
    shape = (64, 40)
    assert codec_for_bits(32).name == "float32" and codec_for_bits(16).name == "int16"
    assert codec_for_bits(8).name == "int8" and set(CODECS) == {"float32", "float16", "int16", "int8"}
    c8 = Codec("int8", 8)
    assert c8.nscales(shape) == 8 * 5 and c8.nbytes(shape) == 64 * 40 + 4 * 40
    # default tiles: 64 points per scale in 2D (8×8) and 3D (4×4×4)
    assert Codec("int8").nbytes(shape) == c8.nbytes(shape) and Codec("int8").nbytes((8, 8, 12)) == 768 + 4 * 12
    assert Codec("int16", 8).nbytes(shape) == 2 * 64 * 40 + 4 * 40
    # the modelled noise (s_b²/12 per point) matches the actual rounding error of a busy field
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    buf = np.empty(c8.nbytes(shape), np.uint8)
    energy, noise = c8.encode(x, buf)
    actual = float(np.sum((c8.decode(buf, np.empty_like(x)) - x.astype(np.float64)) ** 2))
    assert noise == pytest.approx(actual, rel=0.15)


def test_codec_bad_input():
    with pytest.raises(ValueError, match="unknown snapshot codec"):
        Codec("int4")
    with pytest.raises(ValueError, match="tile"):
        Codec("int8", 0)
    with pytest.raises(ValueError, match="bits"):
        codec_for_bits(12)
    c = Codec("int8")
    with pytest.raises(TypeError, match="float32"):
        c.encode(np.zeros((4, 4)), np.empty(c.nbytes((4, 4)), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        c.encode(np.zeros((4, 4), np.float32), np.empty(3, np.uint8))


# --------------------------------------------------------------------------- stores
def test_ram_and_disk_stores_round_trip(tmp_path):
    shape, n = (13, 7), 5
    snaps = np.stack([_wavefield(shape, seed=s) for s in range(n)])
    keep = tmp_path / "mine.bin"
    keep.write_bytes(b"user data")
    out = {}
    for where in ("ram", "disk"):
        with SnapshotStore(Codec("int8", 4), shape, n, where, directory=tmp_path if where == "disk" else None) as st:
            st.encode(0, snaps[:3])
            st.encode(3, snaps[3:])
            got = np.empty_like(snaps)
            st.decode(2, got[:3])
            out[where] = got[:3].copy()
            assert st.path is None  # unlinked as soon as opened (POSIX)
            with pytest.raises(IndexError):
                st.decode(4, got[:2])
        with pytest.raises(RuntimeError, match="closed"):
            st.decode(0, got[:1])
    assert np.array_equal(out["ram"], out["disk"])
    assert np.all(np.abs(out["ram"] - snaps[2:5]) <= 0.51 * np.abs(snaps[2:5]).max() / 127 + 1e-30)
    assert sorted(os.listdir(tmp_path)) == ["mine.bin"] and keep.read_bytes() == b"user data"


def test_storage_options():
    assert StorageOptions.parse(None) is None
    o = StorageOptions.parse("disk8")
    assert (o.bits, o.where, o.name) == (8, "disk", "disk8")
    assert StorageOptions.parse("nyquist").name == "nyquist" and StorageOptions.parse("nyquist32").bits == 32
    assert StorageOptions.parse({"bits": 16}).name == "nyquist16"
    for bad in ("nyquist4", "ram", "fulll"):
        with pytest.raises(ValueError, match="unknown storage"):
            StorageOptions.parse(bad)
    with pytest.raises(TypeError, match="storage must be"):
        StorageOptions.parse(8)
    with pytest.raises(ValueError, match="not an existing folder"):
        StorageOptions(where="disk", directory="/nonexistent/folder")
    with pytest.raises(ValueError, match="only used with where='disk'"):
        StorageOptions(directory=".")
    with pytest.raises(ValueError, match="chunk"):
        StorageOptions(chunk=0)
    # memory formula: nsnap·nbytes + (S·B + 2)·4·N_p (RAM); B·nbytes + (S·B + 2)·4·N_p (disk), with
    # S = 2 slot sets (double buffering) when the run has more than one chunk
    shape, nt, k = (50, 20), 101, 5
    n_p, nsnap = 1000, 21
    assert stored_memory(StorageOptions(), shape, nt, k) == nsnap * 4 * n_p + 18 * 4 * n_p
    per = Codec("int8").nbytes(shape)
    assert stored_memory(StorageOptions(bits=8, where="disk", chunk=4), shape, nt, k) == 4 * per + 10 * 4 * n_p
    # one chunk holds every snapshot: one slot set
    assert stored_memory(StorageOptions(chunk=32), shape, nt, k) == nsnap * 4 * n_p + 23 * 4 * n_p


# --------------------------------------------------------------------------- gradients (Devito)
@pytest.fixture(scope="module")
def case():
    model = layered_model(shape=(41, 31), nbl=10)
    model0 = layered_model(shape=(41, 31), nbl=10, smooth=True)
    q, rec = acquisition(model, nshots=2, nrec=21, t=400.0, dt=2.0, f0=0.02)
    d = tp.forward(model, q, rec)
    f, g = tp.fwi_objective(model0, q, d)
    return model0, q, d, f, g


def _region(model0):
    """Index of the stored region of ``layers=False`` (the physical domain, its innermost axis
    aligned like the probe region's) in padded arrays, and its shape."""
    bounds = stored_bounds(model0, layers=False)
    return tuple(slice(a, b) for a, b in bounds), tuple(b - a for a, b in bounds)


def _shot_run(model0, q, d, opts, record=None):
    """One shot through run_stored_forward/adjoint on the physical domain (``layers=False``):
    (gradient on the stored region, k, the store's rows)."""
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry[0], dt, nt, dtype=model0.dtype)
    k = stored_subsample(opts, wc, dt, nt)
    traces, store = run_stored_forward(model0, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt,
                                       opts, k, layers=False)
    with store:
        res = from_computational(traces, d.geometry[0], dt, nt, dtype=model0.dtype) - d.arrays[0]
        adj = (d.dt / dt) * from_computational_adjoint(res, d.geometry[0], dt, nt, dtype=model0.dtype)
        g = run_stored_adjoint(model0, d.geometry.coordinates[0], adj, dt, nt, store, record=record)
        rows = np.array(store.rows(0, store.nsnap))
    return g[_region(model0)[0]], k, dt, rows


def test_nyquist32_equals_subsample(case):
    """Raw Nyquist storage, chunked, = the "subsample" strategy at the same k (same terms)."""
    model0, q, d, f, g = case
    fn, gn = gradient(model0, q, d, "nyquist", chunk=3)
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    k = stored_subsample(StorageOptions(), to_computational(q.arrays[0], q.geometry[0], dt, nt), dt, nt)
    assert k > 1
    fs, gs = gradient(model0, q, d, "subsample", k=k)
    assert fn == pytest.approx(fs, rel=1e-7) and fn == pytest.approx(f, rel=1e-7)
    assert _rel(gn, gs) < 1e-6
    assert _cos(gn, g) > 0.9999


@pytest.mark.parametrize("opts", [StorageOptions(chunk=3), StorageOptions(bits=8, chunk=2),
                                  StorageOptions(bits=8, where="disk", chunk=3)])
def test_codec_thread_changes_nothing(case, opts, monkeypatch):
    """Double-buffered slots with the codec in a second thread (several chunks: two slot sets)
    give the gradient and the store of the serial run, bit for bit, and the operator runs on
    one OpenMP thread fewer; an error in the codec thread reaches the caller."""
    import timeprobe.storage as storage
    model0, q, d, _, _ = case
    q1, d1 = q[0], d[0]
    g2, _, _, rows2 = _shot_run(model0, q1, d1, opts)
    monkeypatch.setattr(storage, "OVERLAP", False)
    assert storage.slot_sets(5) == 1
    g1, _, _, rows1 = _shot_run(model0, q1, d1, opts)
    np.testing.assert_array_equal(g2, g1)
    np.testing.assert_array_equal(rows2, rows1)
    monkeypatch.setattr(storage, "OVERLAP", True)
    assert storage.slot_sets(5) == 2 and storage.slot_sets(1) == 1

    def broken(self, *args):
        raise RuntimeError("codec failed")
    monkeypatch.setattr(storage.SnapshotStore, "encode", broken)
    with pytest.raises(RuntimeError, match="codec failed"):
        _shot_run(model0, q1, d1, opts)


@pytest.mark.parametrize("bits", [32, 8])
def test_segments_give_the_stored_gradient(case, bits):
    """Checkpointed segments (a forward run keeping the segment starts, each segment re-run just
    before its adjoint) give the misfit and gradient of the plain stored run, bit for bit, and the
    budget formula counts one segment's snapshots plus the states."""
    from timeprobe.storage import segment_chunks, segment_memory
    model0, q, d, _, _ = case
    f1, g1 = tp.fwi_objective(model0, q, d, storage=StorageOptions(bits=bits, chunk=2))
    seg = StorageOptions(bits=bits, chunk=2, segments=3)
    assert seg.name.endswith("(3 segments)")
    f2, g2 = tp.fwi_objective(model0, q, d, storage=seg)
    assert f2 == f1
    np.testing.assert_array_equal(g2, g1)
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    parts = segment_chunks(nt, 5, 2, 3)
    assert len(parts) == 3 and [c for p in parts for c in p] == segment_chunks(nt, 5, 2, 1)[0]
    store, states = segment_memory(seg, (10, 10), 1000, nt, 5)
    most = max(sum(c[4] for c in p) for p in parts)
    assert store == most * seg.codec.nbytes((10, 10)) and states == (2 * 3 + 3) * 4 * 1000
    with pytest.raises(ValueError, match="segments"):
        StorageOptions(segments=0)
    # runs that store every snapshot (rtm's image) refuse segments instead of ignoring them
    with pytest.raises(ValueError, match="segments=3"):
        tp.rtm(model0, q, d, storage=seg, ic="as")


def test_windowed_run_spares_a_core():
    """spare_core: the generated code's thread counts are Devito's default less one (at least 1)."""
    from devito import Eq, Grid, Operator, TimeFunction
    from timeprobe.compat import WindowedRun
    grid = Grid(shape=(64, 64))
    u = TimeFunction(name="u", grid=grid, space_order=2)
    op = Operator([Eq(u.forward, u.laplace + 1)])
    full, spare = WindowedRun(op, 1, 4, u=u).threads, WindowedRun(op, 1, 4, spare_core=True, u=u).threads
    assert full and set(full) == set(spare)
    assert all(spare[n] == max(1, full[n] - 1) for n in full)


def test_compressed_gradient_error_bound(case):
    """|g_b − g_32|(x) ≤ k·dt Σ_s (s_b(x)/2)·|v̈[k s, x]|, at every point, for 16 and 8 bit; the
    bound is not loose by more than two orders of magnitude."""
    model0, q, d, _, _ = case
    q1, d1 = q[0], d[0]
    g32, k, dt, _ = _shot_run(model0, q1, d1, StorageOptions(chunk=4))
    nsnap = (computational_axis(model0, q1.geometry, d1.geometry)[1] - 1) // k + 1
    shape = _region(model0)[1]
    for bits in (16, 8):
        with SnapshotStore(Codec("float32"), shape, nsnap) as vrec:
            gb, _, _, rows = _shot_run(model0, q1, d1, StorageOptions(bits=bits, chunk=4), record=vrec)
            vdd = vrec.rows(0, nsnap).view(np.float32).reshape((nsnap,) + shape)
            codec = codec_for_bits(bits)
            bound = np.zeros(shape)
            for s in range(nsnap):
                bound += codec.error_bound(rows[s], shape) * np.abs(vdd[s].astype(np.float64))
            bound *= k * dt
        err = np.abs(gb.astype(np.float64) - g32)
        assert np.all(err <= bound * (1 + 1e-4) + 1e-6 * np.abs(g32).max()), bits
        assert err.max() > 1e-3 * bound.max(), bits


@pytest.mark.parametrize("name,threshold", [("nyquist16", 0.99999), ("nyquist8", 0.9995), ("disk8", 0.9995)])
def test_compressed_cosines(case, name, threshold, tmp_path):
    """Cosine with the exact gradient above the threshold measured on this case (16 bit: 1 − 1e-8 of
    the 32-bit result; 8 bit with 8×8 tiles ≈ 0.99998, see benchmarks/storage_strategies.md)."""
    model0, q, d, f, g = case
    _, g32 = tp.fwi_objective(model0, q, d, storage="nyquist")
    storage = StorageOptions.parse(name)
    if storage.where == "disk":
        storage = StorageOptions(bits=storage.bits, where="disk", directory=str(tmp_path))
    fb, gb, info = tp.fwi_objective(model0, q, d, storage=storage, return_info=True)
    assert fb == pytest.approx(f, rel=1e-7)
    assert _cos(gb, g) > threshold * _cos(g32, g)
    assert 0 < _rel(gb, g32) < (1e-4 if storage.bits == 16 else 2e-2)
    assert info["strategy"] == name and info["quantisation_error"] > 0
    assert os.listdir(tmp_path) == []


def test_disk_equals_ram_and_cleans_up_on_error(case, tmp_path):
    model0, q, d, _, _ = case
    _, g_ram = tp.fwi_objective(model0, q, d, storage="nyquist8")
    _, g_disk = gradient(model0, q, d, "nyquist", bits=8, storage="disk", directory=str(tmp_path))
    assert np.array_equal(g_ram, g_disk)
    # an error between forward and adjoint: the store is closed, no file left behind
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry[0], dt, nt)
    opts = StorageOptions(bits=8, where="disk", directory=str(tmp_path))
    _, store = run_stored_forward(model0, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt, opts, 3)
    with pytest.raises(ZeroDivisionError):
        with store:
            1 / 0
    assert store._fd is None and os.listdir(tmp_path) == []


def test_storage_api_errors(case):
    model0, q, d, _, _ = case
    with pytest.raises(ValueError, match="not both"):
        tp.fwi_objective(model0, q, d, ps=8, storage="nyquist")
    with pytest.raises(ValueError, match="unknown storage"):
        tp.fwi_objective(model0, q, d, storage="nyquist12")
    with pytest.raises(ValueError, match="bits"):
        gradient(model0, q, d, "nyquist", bits=4)
    with pytest.raises(TypeError, match="unexpected"):
        gradient(model0, q, d, "nyquist", ps=3)
    with pytest.raises(ValueError, match="'as' or 'kspace'"):
        tp.rtm(model0, q, d, storage="nyquist8", ic="isic")


def test_jacobian_adjoint_and_rtm_with_storage(case):
    model0, q, d, _, _ = case
    g_ex = tp.jacobian_adjoint(model0, q, d)
    g8 = tp.jacobian_adjoint(model0, q, d, storage="nyquist8")
    assert _cos(g8, g_ex) > 0.999
    im_ex, lam_ex = tp.rtm(model0, q, d, ic="as")
    im8, lam8 = tp.rtm(model0, q, d, ic="as", storage="nyquist8")
    assert np.allclose(lam8, lam_ex, rtol=1e-5) and _cos(im8, im_ex) > 0.999
