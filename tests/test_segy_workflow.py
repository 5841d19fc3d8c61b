"""SEG-Y to Geometry/Data: grouping, units, header checks, crooked lines, summaries and round trips."""
import numpy as np
import pytest
import segyio

from timeprobe.io import project_line, read_segy, segy_summary, write_segy
from timeprobe.preprocessing import reject_bad_traces


def write_raw(path, headers, traces, interval_bin=2000, measurement=0):
    """A SEG-Y file with hand-made trace headers (segyio names)."""
    spec = segyio.spec()
    spec.format = 5
    spec.samples = np.arange(traces.shape[1])
    spec.tracecount = traces.shape[0]
    with segyio.create(str(path), spec) as f:
        f.bin.update({segyio.BinField.Interval: interval_bin, segyio.BinField.Samples: traces.shape[1],
                      segyio.BinField.MeasurementSystem: measurement})
        for i, h in enumerate(headers):
            f.header[i] = {getattr(segyio.TraceField, k): v for k, v in h.items()}
            f.trace[i] = traces[i]
    return path


def headers_for(src_x, rec_x, ffid, scalar=-100, **extra):
    return [dict(FieldRecord=k, SourceX=int(s * 100), GroupX=int(r * 100), SourceGroupScalar=scalar,
                 ElevationScalar=-100, SourceDepth=500, ReceiverGroupElevation=1000, **extra)
            for s, r, k in zip(src_x, rec_x, ffid)]


@pytest.fixture
def traces():
    return np.random.default_rng(0).standard_normal((4, 50)).astype(np.float32)


def test_interleaved_traces_are_sorted_into_shots(tmp_path, traces):
    # traces stored A B A B (e.g. sorted by receiver): two shots, not four
    path = write_raw(tmp_path / "mixed.segy", headers_for([100, 300, 100, 300], [0, 0, 50, 50], [1, 2, 1, 2]),
                     traces)
    d, src = read_segy(path)
    assert d.nshots == 2
    np.testing.assert_allclose([c[0, 0] for c in src.coordinates], [100, 300])
    np.testing.assert_array_equal(d.arrays[0], traces[[0, 2]].T)
    np.testing.assert_allclose(d.geometry.coordinates[1], [[0, 10], [50, 10]])
    assert read_segy(path, sort=False)[0].nshots == 4                  # contiguous runs only


def test_units_scalars_and_depth_conventions(tmp_path, traces):
    h = headers_for([100] * 4, [0, 10, 20, 30], [1] * 4, SourceSurfaceElevation=2000)
    feet = read_segy(write_raw(tmp_path / "ft.segy", h, traces, measurement=2))[0]
    np.testing.assert_allclose(feet.geometry.coordinates[0][:, 0], 0.3048 * np.array([0, 10, 20, 30]))
    metres = read_segy(tmp_path / "ft.segy", units="m")[0]
    np.testing.assert_allclose(metres.geometry.coordinates[0][:, 0], [0, 10, 20, 30])
    # standard SEG-Y elevations: a charge 5 m below a surface at 20 m elevation is at depth -15 m
    _, src = read_segy(tmp_path / "ft.segy", units="m", depth_sign=-1)
    np.testing.assert_allclose(src.coordinates[0][0], [100, 5 - 20])
    d_up, _ = read_segy(tmp_path / "ft.segy", units="m", depth_sign=-1)
    np.testing.assert_allclose(d_up.geometry.coordinates[0][:, 1], -10)


@pytest.mark.parametrize("change, message", [
    (dict(SourceGroupScalar=-3), r"SourceGroupScalar \(byte 71\) = -3"),
    (dict(ElevationScalar=7), r"ElevationScalar \(byte 69\) = 7"),
    (dict(TRACE_SAMPLE_INTERVAL=2), r"2 μs = 0.002 ms .*stores it in μs"),
    (dict(SourceGroupScalar=10, SourceX=2_000_000_000), r"SourceGroupScalar \(byte 71\); a scalar"),
    (dict(DelayRecordingTime=4), r"DelayRecordingTime \(byte 109\) varies"),
])
def test_inconsistent_headers_are_named(tmp_path, traces, change, message):
    h = headers_for([100] * 4, [0, 10, 20, 30], [1] * 4)
    h[1].update(change)
    with pytest.raises(ValueError, match=message):
        read_segy(write_raw(tmp_path / "bad.segy", h, traces))


def test_missing_geometry_and_nonfinite_samples(tmp_path, traces):
    h = headers_for([0] * 4, [0] * 4, [1] * 4)
    with pytest.raises(ValueError, match=r"SourceX/SourceY \(bytes 73/77\) and GroupX/GroupY"):
        read_segy(write_raw(tmp_path / "nogeom.segy", h, traces))
    bad = traces.copy()
    bad[2, 7] = np.nan
    path = write_raw(tmp_path / "nan.segy", headers_for([100] * 4, [0, 10, 20, 30], [5] * 4), bad)
    with pytest.raises(ValueError, match=r"trace 2 \(FFID 5, TraceNumber 0\).*nonfinite='zero'"):
        read_segy(path)
    d, _ = read_segy(path, nonfinite="zero")
    assert not d.arrays[0][:, 2].any()
    clean, kept = reject_bad_traces(d)
    assert kept[0].tolist() == [True, True, False, True] and clean.geometry.npoints(0) == 3


def test_crooked_line_is_projected(tmp_path):
    """A line at azimuth 60° with receivers up to 8 m off it: the along-line distances are kept."""
    rng = np.random.default_rng(1)
    az = np.radians(60.0)
    u, n = np.array([np.sin(az), np.cos(az)]), np.array([np.cos(az), -np.sin(az)])
    origin = np.array([512_000.0, 4_000_000.0])                         # UTM-like map coordinates
    s_rec = np.arange(0.0, 1000.0, 25.0)
    wiggle = 8.0 * np.cos(2 * np.pi * (s_rec - s_rec.mean()) / 500.0)   # even: no trend along the line
    rec_xy = origin + np.outer(s_rec, u) + np.outer(wiggle, n)
    s_src = np.array([200.0, 700.0])
    src_xy = origin + np.outer(s_src, u)
    headers, k = [], 0
    for i, (sx, sy) in enumerate(src_xy):
        for rx, ry in rec_xy:
            headers.append(dict(FieldRecord=i + 1, SourceX=int(round(sx * 100)), SourceY=int(round(sy * 100)),
                                GroupX=int(round(rx * 100)), GroupY=int(round(ry * 100)), SourceGroupScalar=-100,
                                ElevationScalar=-100, SourceDepth=500, ReceiverGroupElevation=1000))
            k += 1
    tr = rng.standard_normal((k, 20)).astype(np.float32)
    path = write_raw(tmp_path / "crooked.segy", headers, tr)
    d3, _ = read_segy(path)
    assert d3.geometry.dim == 3
    d, src, proj = read_segy(path, dim=2, return_projection=True)
    assert d.geometry.dim == 2 and proj is not None
    assert proj.azimuth == pytest.approx(60.0, abs=0.01)
    assert proj.max_distance == pytest.approx(np.abs(wiggle - wiggle.mean()).max(), abs=1.0)
    x = d.geometry.coordinates[0][:, 0]
    np.testing.assert_allclose(np.diff(x), 25.0, atol=0.05)              # spacing along the line kept
    np.testing.assert_allclose(src.coordinates[1][0, 0] - src.coordinates[0][0, 0], 500.0, atol=0.05)
    assert x.min() == pytest.approx(0.0, abs=1e-6) and src.coordinates[0][0, 1] == pytest.approx(5.0)
    straight = project_line(np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]))
    assert straight.max_distance == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(straight(np.array([[6.0, 8.0]])), [10.0])


def test_summary_of_the_shared_files(shared_dir):
    s = segy_summary(shared_dir / "data" / "unit_test_shot_records_2.segy")
    assert s["shots"] == 2 and s["traces"] == 240 and s["traces_per_shot"] == (120, 120)
    assert s["samples"] == 501 and s["dt"] == 2.0 and s["t0"] == 0.0 and s["tmax"] == 1000.0
    assert s["scalars"] == {"SourceGroupScalar": [-1000], "ElevationScalar": [-1000]} and s["units"] == ["m"]
    assert s["source_extent"][0] == (100.0, 1100.0) and s["receiver_extent"][1] == (50.0, 50.0)
    assert s["offset_range"][1] == pytest.approx(1050.0) and s["projection"] is None and s["zero_shots"] == []
    one = segy_summary(shared_dir / "data" / "unit_test_shot_records_1.segy")
    assert one["zero_shots"] == [0]                                    # that file's traces are all zero


def test_round_trip_keeps_the_other_toolkits_headers(tmp_path, shared_dir):
    """Read a JUDI/SegyIO.jl file, write it back: same samples, and the headers mean the same."""
    orig = shared_dir / "data" / "unit_test_shot_records_2.segy"
    d, src = read_segy(orig)
    path = write_segy(tmp_path / "copy.segy", d, src)
    F = segyio.TraceField
    with segyio.open(str(orig), ignore_geometry=True) as a, segyio.open(str(path), ignore_geometry=True) as b:
        assert a.tracecount == b.tracecount and len(a.samples) == len(b.samples)
        np.testing.assert_array_equal(a.trace.raw[:], b.trace.raw[:])
        for name in ("FieldRecord", "TRACE_SAMPLE_INTERVAL", "TRACE_SAMPLE_COUNT", "DelayRecordingTime"):
            np.testing.assert_array_equal(a.attributes(getattr(F, name))[:], b.attributes(getattr(F, name))[:])

        def scaled(f, field, scalar):
            s = f.attributes(scalar)[:].astype(float)
            return f.attributes(field)[:] * np.where(s < 0, -1 / s, np.where(s > 0, s, 1))

        for field in (F.SourceX, F.GroupX):
            np.testing.assert_allclose(scaled(a, field, F.SourceGroupScalar), scaled(b, field, F.SourceGroupScalar))
        np.testing.assert_allclose(scaled(a, F.ReceiverGroupElevation, F.ElevationScalar),
                                   scaled(b, F.ReceiverGroupElevation, F.ElevationScalar))
        np.testing.assert_allclose(scaled(a, F.SourceSurfaceElevation, F.ElevationScalar),
                                   scaled(b, F.SourceSurfaceElevation, F.ElevationScalar))
    d2, src2 = read_segy(path)
    assert d2.geometry == d.geometry and src2 == src
