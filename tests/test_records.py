"""scripts/records.py: the append-only benchmark history, and the scripts' record / no-record modes."""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import records  # noqa: E402

REQUIRED = ("date", "commit", "machine", "command", "script", "figures")


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_append_writes_one_valid_line(tmp_path):
    path = tmp_path / "history.jsonl"
    rec = records.append("demo", {"seconds": 1.5, "rows": np.arange(3), "ratio": np.float32(0.25),
                                  "missing": float("nan"), "shape": (881, 287)},
                         argv=[str(ROOT / "scripts" / "demo.py"), "--repeat", "3"], note="A/B: before", path=path)
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    got = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the record"))
    assert got == rec
    for key in REQUIRED:
        assert key in got, key
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got["date"])
    assert got["commit"] is None or re.fullmatch(r"[0-9a-f]{4,40}", got["commit"])
    assert set(got["machine"]) == {"cpu", "cores", "memory_gb", "gpu"} and got["machine"]["cores"] >= 1
    assert got["command"] == "python scripts/demo.py --repeat 3"  # relative to the repository
    assert got["script"] == "demo" and got["note"] == "A/B: before"
    # numpy values as plain numbers, tuples as lists, NaN (no JSON number) as null
    assert got["figures"] == {"seconds": 1.5, "rows": [0, 1, 2], "ratio": 0.25, "missing": None,
                              "shape": [881, 287]}


def test_append_never_touches_earlier_lines(tmp_path):
    path = tmp_path / "history.jsonl"
    records.append("a", {"x": 1}, path=path)
    records.append("b", {"x": 2}, path=path)
    before = path.read_bytes()
    records.append("a", {"x": 3}, path=path)
    after = path.read_bytes()
    assert after[:len(before)] == before and after.count(b"\n") == 3
    assert [r["figures"]["x"] for r in lines(path)] == [1, 2, 3]
    # a last line that lost its newline (edited by hand) is kept whole: the new record starts a new line
    path.write_bytes(after.rstrip(b"\n"))
    cut = path.read_bytes()
    records.append("c", {"x": 4}, path=path)
    assert path.read_bytes()[:len(cut)] == cut
    assert [r["script"] for r in lines(path)] == ["a", "b", "a", "c"]


def test_read_filters_by_script_and_history_path(tmp_path, monkeypatch):
    path = tmp_path / "h" / "history.jsonl"
    monkeypatch.setenv("TIMEPROBE_HISTORY", str(path))
    assert records.history_path() == path and records.read() == []
    for script, x in (("speed", 1), ("memory", 2), ("speed", 3)):
        records.append(script, {"x": x})  # no path: $TIMEPROBE_HISTORY (its folder is created)
    assert [r["figures"]["x"] for r in records.read(script="speed")] == [1, 3]
    assert [r["script"] for r in records.read()] == ["speed", "memory", "speed"]
    assert records.read(script="none") == []
    assert len(records.read(path=path, script="memory")) == 1
    monkeypatch.delenv("TIMEPROBE_HISTORY")
    assert records.history_path() == ROOT / "benchmarks" / "history.jsonl"


def test_committed_history_is_valid():
    """Every line of benchmarks/history.jsonl is one JSON record with the required keys."""
    recs = records.read(path=records.HISTORY)
    assert recs, "benchmarks/history.jsonl is empty"
    for i, r in enumerate(recs):
        assert all(k in r for k in REQUIRED), (i, sorted(r))


def test_flags_outputs_and_citation(tmp_path, monkeypatch):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    records.add_arguments(ap, docs="benchmarks/demo.md")
    assert records.recording(ap.parse_args([]))
    assert not records.recording(ap.parse_args(["--quick"]))
    assert not records.recording(ap.parse_args(["--no-record"]))
    assert ap.parse_args(["--note", "before"]).note == "before"
    records.check_arguments(ap, ap.parse_args(["--write-docs"]))
    for bad in (["--write-docs", "--quick"], ["--write-docs", "--no-record"]):
        with pytest.raises(SystemExit):  # documents must name a record
            records.check_arguments(ap, ap.parse_args(bad))
    path = tmp_path / "h.jsonl"
    monkeypatch.setenv("TIMEPROBE_HISTORY", str(path))
    assert records.record(ap.parse_args(["--quick"]), "demo", {"x": 1}) is None
    assert records.record(ap.parse_args(["--no-record"]), "demo", {"x": 1}) is None
    assert not path.exists()
    rec = records.record(ap.parse_args(["--note", "n"]), "demo", {"x": 1}, argv=["--note", "n"],
                         program=ROOT / "scripts" / "demo.py")
    assert lines(path) == [rec] and rec["command"] == "python scripts/demo.py --note n" and rec["note"] == "n"
    cite = records.cite(rec)
    assert rec["date"] in cite and str(rec["commit"]) in cite and "`demo`" in cite
    # outputs: fresh folders, never an existing file
    monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
    a, b = records.output_dir("demo"), records.output_dir("demo")
    assert a != b and a.parent == b.parent == tmp_path / "results" and a.name.startswith("demo-")
    (a / "x.json").write_text("{}")
    with pytest.raises(FileExistsError, match="never overwritten"):
        records.output_dir("demo", out=a)
    assert records.output_dir("demo", out=tmp_path / "new") == tmp_path / "new"
    with pytest.raises(FileExistsError, match="x.json"):
        records.refuse_existing(tmp_path / "nothing.json", None, a / "x.json")
    records.refuse_existing(tmp_path / "nothing.json", None)


def test_script_appends_one_record_unless_quick_or_no_record(tmp_path):
    """xconv_speed.py on one tiny layer: a normal run appends exactly one record; --no-record and
    --quick append none; an existing --out is refused before anything runs."""
    pytest.importorskip("torch")
    history = tmp_path / "history.jsonl"
    env = dict(os.environ, TIMEPROBE_HISTORY=str(history), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    tiny = ["--device", "cpu", "--sizes", "1", "--batch-div", "128", "--reps", "1", "--ps", "8"]

    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "xconv_speed.py"), *tiny, *args],
                              env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)

    p = run("--out", str(tmp_path / "a.json"), "--note", "test")
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = lines(history)
    assert rec["script"] == "xconv_speed" and rec["note"] == "test"
    assert rec["command"].startswith("python scripts/xconv_speed.py --device cpu") and "--out" in rec["command"]
    assert rec["figures"]["rows"] == json.loads((tmp_path / "a.json").read_text())["rows"]
    row = rec["figures"]["rows"][0]
    assert (row["b"], row["c"], row["n"]) == (1, 16, 256) and row["t_conv"] > 0 and row["speedup_r8"] > 0
    before = history.read_bytes()
    for args in (["--no-record", "--out", str(tmp_path / "b.json")], ["--quick", "--out", str(tmp_path / "c.json")]):
        p = run(*args)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "not recorded" in p.stdout
        assert json.loads((tmp_path / args[-1]).read_text())["rows"]
    p = run("--out", str(tmp_path / "a.json"))  # exists: refused, nothing appended
    assert p.returncode != 0 and "never overwritten" in p.stderr
    p = run("--quick", "--write-docs")  # the documents must name a record
    assert p.returncode != 0 and "--write-docs needs a recorded run" in p.stderr
    assert history.read_bytes() == before


def test_generated_tables_name_their_record(tmp_path, monkeypatch):
    """benchmark_gradients.py's table header cites the record (script, date, commit) it comes from,
    and says so when a run is not recorded."""
    saved = {k: os.environ.get(k) for k in ("DEVITO_LANGUAGE", "DEVITO_LOGGING")}
    import benchmark_gradients as bg  # its harness sets these defaults: keep the session's environment
    for k, v in saved.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TIMEPROBE_HISTORY", str(tmp_path / "h.jsonl"))
    rec = records.append("benchmark_gradients", {"table": {}})
    m = dict(command="python scripts/benchmark_gradients.py --part table", date="2026-12-02 10:00", host="h",
             cpus=2, python="3.11", devito="4.8.23", devito_language="openmp", omp_num_threads="1")
    header = bg.table_header(m, bg.raw_numbers(rec, tmp_path / "g.json", "table"))
    assert f"dated {rec['date']}" in header and "`benchmark_gradients`" in header and "figures key `table`" in header
    assert (f"at commit {rec['commit']}" if rec["commit"] else "unknown commit") in header
    unrecorded = bg.table_header(m, bg.raw_numbers(None, tmp_path / "g.json", "table"))
    assert "not recorded in the history" in unrecorded and "dated" not in unrecorded


def test_dirty_ignores_the_history_itself():
    """Appending records to the history does not make the checkout count as modified code; any
    other tracked change does (the git pathspec that leaves the history out is in the command)."""
    import records
    calls = []

    def fake_git(*args):
        calls.append(args)
        return ""
    original = records._git
    records._git = fake_git
    try:
        assert records.dirty() is False
    finally:
        records._git = original
    assert any(a.startswith(":(exclude)") and a.endswith("benchmarks/history.jsonl") for a in calls[0])
