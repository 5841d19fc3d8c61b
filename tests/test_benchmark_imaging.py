"""scripts/benchmark_imaging.py: every configuration timed in one process and measured in its own
(--quick); one history record per run (never with --quick / --no-record); files only when asked
(--out, refused if it exists; --write-docs citing the record)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark_imaging.py"
sys.path.insert(0, str(ROOT / "scripts"))
import records  # noqa: E402


def _fake_case(case, t, offsets, rs, repeats, extras, no_exact=False):
    """What measure_case returns, without running anything."""
    info = dict(shape=[3, 2], shape_padded=[5, 4], spacing=[25.0, 25.0], nbl=1, nt=7, dt=1.0, N=6, N_r=12,
                N_h=20, exact_full_storage_gb=1e-6, machine_ram_gb=1.0)
    rows = {"plain": dict(wall_s=1.0, time_ratio=1.0),
            "probe_h5_r8": dict(wall_s=1.5, time_ratio=1.5, working_mb=2.0, expected_mb=1.0,
                                expected_formula="f", memory_ratio_exact=3.0, cosine=0.99)}
    return dict(info=info, rows=rows, meta=dict(date="d", load_avg=0.0))


def test_records_and_files_only_when_asked(tmp_path, monkeypatch):
    """A normal run appends exactly one record (with its --note) and writes no file; --out writes
    JSON + Markdown and refuses existing ones; --write-docs rewrites the report naming the record;
    --quick and --no-record append nothing, and --write-docs is refused with them."""
    import benchmark_imaging as bi
    monkeypatch.setattr(bi, "measure_case", _fake_case)
    doc = tmp_path / "docs" / "imaging_gathers.md"
    doc.parent.mkdir()
    monkeypatch.setattr(bi, "DOC", doc)
    before = len(records.read())
    bi.main(["--cases", "layered2d_61_41:600", "--note", "unit test"])
    recs = records.read()
    assert len(recs) == before + 1 and not doc.exists()
    assert recs[-1]["script"] == "benchmark_imaging" and recs[-1]["note"] == "unit test"
    assert recs[-1]["figures"]["cases"]["layered2d_61_41"]["rows"]["probe_h5_r8"]["cosine"] == 0.99
    bi.main(["--quick", "--cases", "layered2d_61_41:600"])
    bi.main(["--no-record", "--cases", "layered2d_61_41:600"])
    assert len(records.read()) == before + 1
    out = tmp_path / "run" / "g.json"
    bi.main(["--no-record", "--cases", "layered2d_61_41:600", "--out", str(out)])
    assert "layered2d_61_41" in json.loads(out.read_text())["cases"]
    assert "| probe_h5_r8 |" in out.with_suffix(".md").read_text()
    with pytest.raises(FileExistsError, match="never overwritten"):
        bi.main(["--no-record", "--cases", "layered2d_61_41:600", "--out", str(out)])
    with pytest.raises(SystemExit):
        bi.main(["--quick", "--write-docs"])
    assert not doc.exists()
    bi.main(["--cases", "layered2d_61_41:600", "--write-docs"])
    text = doc.read_text()
    assert "the history record of `benchmark_imaging`" in text and "| probe_h5_r8 |" in text
    assert len(records.read()) == before + 2


@pytest.mark.slow
def test_benchmark_imaging_quick(tmp_path):
    env = dict(os.environ)
    env.setdefault("DEVITO_LANGUAGE", "openmp")
    env.setdefault("OMP_NUM_THREADS", "1")  # millisecond runs on a shared machine: no spinning threads
    env["TIMEPROBE_BENCH_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "g.json"
    n_records = len(records.read())
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert len(records.read()) == n_records  # a --quick run is never recorded
    res = json.loads(out.read_text())["cases"]
    assert set(res) == {"layered2d_61_41", "thrust3d_21_21_17"}
    for case, tab in res.items():
        rows = tab["rows"]
        assert rows["plain"]["time_ratio"] == 1.0
        exact, probe = rows["exact_h5"], rows["probe_h5_r8"]
        for row in (exact, probe):
            assert math.isfinite(row["wall_s"]) and row["wall_s"] > 0
            assert math.isfinite(row["time_ratio"]) and row["working_mb"] > 0
        # the stored forward field is really measured, and the probed run holds much less
        assert exact["working_mb"] > 0.8 * exact["expected_mb"], case
        assert probe["memory_ratio_exact"] > 2, case
        assert -1 <= probe["cosine"] <= 1 and "cosine" not in exact
        assert tab["info"]["exact_full_storage_gb"] > 0
    rows = res["layered2d_61_41"]["rows"]
    assert {"exact_h5_isic", "probe_h5_r8_isic", "exact_lags21", "probe_lags21_r8"} <= set(rows)
    assert rows["probe_lags21_r8"]["run_info"]["lag_columns"][0] >= 0
    md = out.with_suffix(".md").read_text()
    for text in ("## layered2d_61_41", "## thrust3d_21_21_17", "÷ plain fwd+adj", "working memory (MiB)",
                 "cosine with exact", "--quick", "commit", "devito"):
        assert text in md, text


def test_overheads_script_records_each_side_by_side_timing(tmp_path, monkeypatch):
    """scripts/overheads.py times each cause of overhead against its alternative and appends one
    record (none with --no-record); the banded resampling equals the sparse product."""
    monkeypatch.setenv("TIMEPROBE_HISTORY", str(tmp_path / "history.jsonl"))
    import overheads
    fig = overheads.main(["--repeats", "1", "--note", "smoke"])
    assert set(fig["blas_spin"]["seconds"]) == {"forward", "after_blas", "after_serial_blas", "product",
                                                 "serial_product"}
    for part in ("blas_spin", "fresh_buffer", "resample", "correlation"):
        assert all(0 < v < 60 for v in fig[part]["seconds"].values()), part
    assert fig["resample"]["max_rel_diff"] < 1e-6
    recs = records.read(tmp_path / "history.jsonl")
    assert len(recs) == 1 and recs[0]["script"] == "overheads" and recs[0]["note"] == "smoke"
    overheads.main(["--repeats", "1", "--no-record"])
    assert len(records.read(tmp_path / "history.jsonl")) == 1
