"""scripts/benchmark_mpi.py: 1 vs 2 ranks per case; ū per rank halves; the document's table names its record."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_mpi.py"
sys.path.insert(0, str(SCRIPT.parent))
import benchmark_mpi  # noqa: E402
import records  # noqa: E402


def _group(ranks, scale):
    rows = {op: dict(seconds=1.0 * scale, peak_mib=[100.0] * ranks, working_mib=[10.0 * scale] * ranks)
            for op in benchmark_mpi.OPERATIONS}
    return dict(case="2d", shape=[5, 4], shape_padded=[9, 8], t_ms=10.0, nt=7, ps=2, ranks=ranks,
                omp_threads="1", rows=rows,
                formula=dict(ubar_mib=[4.0 * scale] * ranks, full_storage_mib=[40.0 * scale] * ranks))


def test_table_and_document(tmp_path, monkeypatch):
    """The table has one row per configuration and operation with per-rank figures, and
    --write-docs replaces only the marked block of benchmarks/mpi.md, citing the record."""
    result = dict(cases={"2d": [_group(1, 1.0), _group(2, 0.5)]}, machine=dict(cpu="cpu", cores=2, memory_gb=1))
    md = benchmark_mpi.table(result)
    rows = [line for line in md.splitlines()[2:]]
    assert len(rows) == 2 * len(benchmark_mpi.OPERATIONS)
    assert "| 2.00× |" in rows[3] and "5 / 5" in rows[3]  # 2 ranks: twice as fast, per-rank working memory
    doc = tmp_path / "mpi.md"
    doc.write_text(f"intro\n{benchmark_mpi.TABLE_START}\nold\n{benchmark_mpi.TABLE_END}\noutro\n")
    monkeypatch.setattr(benchmark_mpi, "DOC", doc)
    rec = dict(script="benchmark_mpi", date="2026-01-01T00:00:00Z", commit="abc1234", dirty=False,
               command="python scripts/benchmark_mpi.py")
    benchmark_mpi.write_doc(result, rec)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "dated 2026-01-01T00:00:00Z at commit abc1234" in text and md in text
    doc.write_text("no markers")
    with pytest.raises(RuntimeError, match="markers"):
        benchmark_mpi.write_doc(result, rec)


@pytest.mark.slow
def test_benchmark_mpi_quick(tmp_path):
    """A --quick 2D run on 1 and 2 ranks: every operation timed on both, each rank holding half of
    ū and of the saved wavefield's interior; never recorded."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    n_records = len(records.read())
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--cases", "2d", "--ps", "4",
                           "--threads-per-rank", "1", "--out", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert len(records.read()) == n_records  # a --quick run is never recorded
    res = json.loads((tmp_path / "run" / "benchmark_mpi.json").read_text())
    serial, split = res["cases"]["2d"]
    assert (serial["ranks"], split["ranks"]) == (1, 2)
    for g in (serial, split):
        assert all(g["rows"][op]["seconds"] > 0 for op in benchmark_mpi.OPERATIONS)
        assert len(g["rows"]["probed"]["peak_mib"]) == g["ranks"]
    ubar = split["formula"]["ubar_mib"]
    assert abs(sum(ubar) - serial["formula"]["ubar_mib"][0]) < 1e-9 and max(ubar) <= 0.55 * sum(ubar)
