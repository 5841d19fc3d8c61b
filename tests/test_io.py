"""Tests of timeprobe.io: SEG-Y shot records (files written by another toolkit, round trips) and results files."""
import h5py
import numpy as np
import pytest
import segyio  # a dependency of timeprobe.io: fail, do not skip, when it is missing

from timeprobe.geometry import Data, Geometry
from timeprobe.io import ResultsWriter, new_run_dir, peak_memory_mb, read_results, read_segy, write_segy


@pytest.fixture
def segy1(shared_dir):
    return shared_dir / "data" / "unit_test_shot_records_1.segy"


@pytest.fixture
def segy2(shared_dir):
    return shared_dir / "data" / "unit_test_shot_records_2.segy"


# --------------------------------------------------------------------------- reading real files
def test_read_one_shot_file(segy1):
    d, src = read_segy(segy1)
    assert isinstance(d, Data) and isinstance(src, Geometry)
    assert d.nshots == src.nshots == 1
    assert d.arrays[0].shape == (501, 120) and d.arrays[0].dtype == np.float32
    assert d.dt == 2.0 and src.dt == 2.0          # from the trace header: the binary header says 0
    assert d.geometry.t0 == 0.0 and d.geometry.t == 1000.0 and d.geometry.nt == 501
    assert d.geometry.dim == 2 and src.dim == 2
    np.testing.assert_allclose(src.coordinates[0], [[100.0, 20.0]])   # SourceX 100000 / 1000
    rec = d.geometry.coordinates[0]
    assert rec.shape == (120, 2)
    np.testing.assert_allclose(rec[[0, 1, -1], 0], [50.0, 59.244, 1150.0])
    np.testing.assert_allclose(rec[:, 1], 50.0)   # ReceiverGroupElevation 50000 / 1000
    assert np.all(np.diff(rec[:, 0]) > 0)
    assert np.all(np.isfinite(d.arrays[0]))


def test_read_two_shot_file(segy2):
    d, src = read_segy(segy2)
    assert d.nshots == 2 and [d.geometry.npoints(i) for i in range(2)] == [120, 120]
    np.testing.assert_allclose(np.concatenate(src.coordinates), [[100.0, 20.0], [1100.0, 20.0]])
    assert d.dt == 2.0 and d.geometry.nt == 501
    for a in d.arrays:
        assert np.all(np.isfinite(a)) and np.abs(a).max() > 0
    # grouping by FFID only or by source position only gives the same shots here
    for key in ("ffid", "source"):
        d2, src2 = read_segy(segy2, group_by=key)
        assert d2.nshots == 2 and src2 == src


def test_read_several_files(segy1, segy2):
    d, src = read_segy([segy1, segy2])
    assert d.nshots == 3
    np.testing.assert_allclose([c[0, 0] for c in src.coordinates], [100.0, 100.0, 1100.0])


def test_read_errors(tmp_path, segy1):
    with pytest.raises(FileNotFoundError, match="nope.segy"):
        read_segy(tmp_path / "nope.segy")
    junk = tmp_path / "junk.segy"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="SEG-Y"):
        read_segy(junk)
    with pytest.raises(ValueError, match="group_by"):
        read_segy(segy1, group_by="cdp")
    with pytest.raises(ValueError, match="no SEG-Y file"):
        read_segy([])


# --------------------------------------------------------------------------- round trips
def test_round_trip_real_file(tmp_path, segy2):
    d, src = read_segy(segy2)
    out = write_segy(tmp_path / "copy.segy", d, src)
    d2, src2 = read_segy(out)
    assert src2 == src and d2.geometry == d.geometry
    for a, b in zip(d.arrays, d2.arrays):
        np.testing.assert_array_equal(a, b)


def _synthetic_records(dim, rng, nshots=3, t0=0.0, dt=4.0, t=400.0):
    src, rec = [], []
    for s in range(nshots):
        nrec = 5 + 2 * s                                  # receivers differ from shot to shot
        xy = rng.uniform(0, 12_345.678, (nrec, dim - 1))
        rec.append(np.column_stack([xy, rng.uniform(0, 300, nrec)]))
        src.append(np.concatenate([rng.uniform(0, 12_345.678, dim - 1), [rng.uniform(5, 15)]])[None, :])
    rg = Geometry(rec, dt=dt, t=t, t0=t0)
    sg = Geometry(src, dt=dt, t=t, t0=t0)
    data = Data(rg, [rng.standard_normal((rg.nt, rg.npoints(i))).astype(np.float32) for i in range(nshots)])
    return data, sg


@pytest.mark.parametrize("dim", [2, 3])
def test_round_trip_synthetic(tmp_path, dim):
    rng = np.random.default_rng(2024 + dim)
    data, src = _synthetic_records(dim, rng, t0=8.0)
    path = write_segy(tmp_path / f"d{dim}.segy", data, src)
    d2, s2 = read_segy(path)
    assert d2.geometry.dim == dim and d2.nshots == 3
    assert d2.geometry.t0 == 8.0 and d2.dt == 4.0 and d2.geometry.nt == data.geometry.nt
    for a, b in zip(data.arrays, d2.arrays):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(data.geometry.coordinates + src.coordinates, d2.geometry.coordinates + s2.coordinates):
        np.testing.assert_allclose(a, b, atol=5e-4)     # written with scalar -1000 (mm)
    with segyio.open(str(path), ignore_geometry=True) as f:
        assert f.header[0][segyio.TraceField.SourceGroupScalar] == -1000
        assert f.bin[segyio.BinField.Interval] == 4000
        assert list(f.attributes(segyio.TraceField.FieldRecord)[:5]) == [1] * 5


def test_write_refuses_overwrite(tmp_path, segy1):
    d, src = read_segy(segy1)
    path = write_segy(tmp_path / "a.segy", d, src)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_segy(path, 2.0 * d, src)
    assert path.read_bytes() == before
    write_segy(path, 2.0 * d + d, src, overwrite=True)
    assert read_segy(path)[0].geometry == d.geometry


def test_write_errors(tmp_path, segy2):
    d, src = read_segy(segy2)
    with pytest.raises(ValueError, match="source position"):
        write_segy(tmp_path / "x.segy", d, src[0])
    two_points = Geometry([np.array([[0.0, 10.0], [5.0, 10.0]])] * 2, dt=2.0, t=1000.0)
    with pytest.raises(ValueError, match="one source point per shot"):
        write_segy(tmp_path / "x.segy", d, two_points)
    odd = Data(d.geometry.with_time(dt=0.0005, t=0.25), [np.zeros((501, 120), np.float32)] * 2)
    with pytest.raises(ValueError, match="whole number of μs"):
        write_segy(tmp_path / "x.segy", odd, src.with_time(dt=0.0005, t=0.25))
    with pytest.raises(TypeError, match="Data"):
        write_segy(tmp_path / "x.segy", d.arrays, src)
    assert not (tmp_path / "x.segy").exists()


def _write_raw(path, headers, traces, interval_bin):
    """A SEG-Y file with hand-made headers (to exercise conventions our writer does not use)."""
    spec = segyio.spec()
    spec.format = 5
    spec.samples = np.arange(traces.shape[1])
    spec.tracecount = traces.shape[0]
    with segyio.create(str(path), spec) as f:
        f.bin.update({segyio.BinField.Interval: interval_bin, segyio.BinField.Samples: traces.shape[1]})
        for i, h in enumerate(headers):
            f.header[i] = {getattr(segyio.TraceField, k): v for k, v in h.items()}
            f.trace[i] = traces[i]
    return path


def test_header_conventions(tmp_path):
    tr = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    # positive scalar multiplies, zero scalar means 1; interval only in the binary header;
    # two FFIDs at the same source position are two shots; SourceDepth preferred when set
    headers = [
        dict(FieldRecord=7, SourceX=12, GroupX=15, SourceGroupScalar=10, ElevationScalar=0,
             SourceDepth=6, SourceSurfaceElevation=99, ReceiverGroupElevation=3),
        dict(FieldRecord=7, SourceX=12, GroupX=16, SourceGroupScalar=10, ElevationScalar=0,
             SourceDepth=6, SourceSurfaceElevation=99, ReceiverGroupElevation=3),
        dict(FieldRecord=8, SourceX=12, GroupX=15, SourceGroupScalar=10, ElevationScalar=0,
             SourceDepth=6, SourceSurfaceElevation=99, ReceiverGroupElevation=3),
        dict(FieldRecord=8, SourceX=12, GroupX=17, SourceGroupScalar=10, ElevationScalar=0,
             SourceDepth=6, SourceSurfaceElevation=99, ReceiverGroupElevation=3),
    ]
    path = _write_raw(tmp_path / "raw.segy", headers, tr, interval_bin=500)
    d, src = read_segy(path)
    assert d.dt == 0.5 and d.nshots == 2
    np.testing.assert_allclose(src.coordinates[0], [[120.0, 6.0]])
    np.testing.assert_allclose(d.geometry.coordinates[1], [[150.0, 3.0], [170.0, 3.0]])
    np.testing.assert_array_equal(d.arrays[1], tr[2:].T)
    merged, msrc = read_segy(path, group_by="source")
    assert merged.nshots == 1 and merged.geometry.npoints(0) == 4
    up, _ = read_segy(path, depth_sign=-1)          # elevations positive up -> negative depth
    np.testing.assert_allclose(up.geometry.coordinates[0][:, 1], -3.0)
    # FFID grouping must not merge different source positions silently
    headers[1]["SourceX"] = 13
    bad = _write_raw(tmp_path / "bad.segy", headers, tr, interval_bin=500)
    with pytest.raises(ValueError, match="different source positions"):
        read_segy(bad, group_by="ffid")
    assert read_segy(bad)[0].nshots == 3            # auto: FFID and source position


# --------------------------------------------------------------------------- results
def test_results_writer_appends_and_flushes(tmp_path):
    run = new_run_dir(tmp_path / "runs", "fwi")
    w = ResultsWriter(run, attrs=dict(ps=16, mode="QR", shape=(4, 3)))
    assert w.path == run / "results.h5"
    rng = np.random.default_rng(0)
    ms = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    for k, m in enumerate(ms):
        extra = dict(step=0.5 * k) if k != 1 else {}
        w.append(model=m, objective=10.0 - k, **extra)
        # the file is complete on disk after every record (another process could read it now)
        with h5py.File(w.path, "r") as f:
            assert f["model"].shape == (k + 1, 4, 3) and f["objective"].shape == (k + 1,)
    r = read_results(run)
    np.testing.assert_array_equal(r["model"], np.stack(ms))
    np.testing.assert_array_equal(r["objective"], [10.0, 9.0, 8.0])
    np.testing.assert_array_equal(r["iteration"], [0, 1, 2])
    assert np.all(np.diff(r["time"]) >= 0) and np.all(r["peak_memory"] > 0)
    assert r["step"][0] == 0.0 and np.isnan(r["step"][1]) and r["step"][2] == 1.0
    assert r["attrs"]["ps"] == 16 and r["attrs"]["mode"] == "QR" and r["attrs"]["shape"] == "[4, 3]"
    late = ResultsWriter(tmp_path / "late.h5")
    late.append(objective=1.0)
    late.append(objective=2.0, gnorm=3.0)            # a key first seen later: earlier rows NaN
    r = read_results(late.path)
    assert np.isnan(r["gnorm"][0]) and r["gnorm"][1] == 3.0


def test_results_writer_never_overwrites(tmp_path):
    w = ResultsWriter(tmp_path / "r.h5")
    w.append(objective=1.0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ResultsWriter(tmp_path / "r.h5")
    assert read_results(tmp_path / "r.h5")["objective"].tolist() == [1.0]
    w2 = ResultsWriter(tmp_path / "r.h5", overwrite=True)
    w2.append(objective=5.0)
    assert read_results(tmp_path / "r.h5")["objective"].tolist() == [5.0]


def test_results_writer_errors(tmp_path):
    w = ResultsWriter(tmp_path / "e.h5")
    w.append(model=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        w.append(model=np.zeros((3, 2)))
    with pytest.raises(TypeError, match="numeric"):
        w.append(note="hello")
    with pytest.raises(ValueError, match="at least one"):
        w.append()
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "missing.h5")


def test_new_run_dir_is_always_fresh(tmp_path):
    dirs = [new_run_dir(tmp_path, "exp") for _ in range(3)]
    assert len(set(dirs)) == 3 and all(p.is_dir() and p.parent == tmp_path for p in dirs)
    assert all(p.name.startswith("exp-") for p in dirs)
    numbered = [new_run_dir(tmp_path / "n", "run", timestamp=False) for _ in range(2)]
    assert [p.name for p in numbered] == ["run-001", "run-002"]
    (numbered[0] / "keep.txt").write_text("x")
    assert new_run_dir(tmp_path / "n", "run", timestamp=False).name == "run-003"
    assert (numbered[0] / "keep.txt").read_text() == "x"
    with pytest.raises(ValueError, match="name"):
        new_run_dir(tmp_path, "a/b")


def test_peak_memory_tracks_an_allocation():
    """A 200 MiB array raises the peak by about 200 MiB; after reset_peak_memory the mark is back
    near the current size (the peak of a later, smaller computation is not hidden)."""
    from timeprobe.io import reset_peak_memory, resident_memory_mb
    assert reset_peak_memory(), "/proc/self/clear_refs unavailable: peak resets unsupported here"
    before = peak_memory_mb()
    a = np.ones(200 * 2**20 // 8)  # 200 MiB, every page touched
    grown = peak_memory_mb() - before
    del a
    assert 190 < grown < 230, grown
    reset_peak_memory()
    base = resident_memory_mb()
    assert peak_memory_mb() - base < 20  # the 200 MiB peak is forgotten
    b = np.ones(50 * 2**20 // 8)
    assert 45 < peak_memory_mb() - base < 70
    del b
