"""scripts/benchmark_imaging.py --quick: every configuration timed in one process and measured in its
own; JSON and Markdown with the run's date, command, commit and machine."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_imaging.py"


@pytest.mark.slow
def test_benchmark_imaging_quick(tmp_path):
    env = dict(os.environ)
    env.setdefault("DEVITO_LANGUAGE", "openmp")
    env.setdefault("OMP_NUM_THREADS", "1")  # millisecond runs on a shared machine: no spinning threads
    env["TIMEPROBE_BENCH_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "g.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
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
