"""The benchmark history: one append-only JSON-lines file, ``benchmarks/history.jsonl``.

Every benchmark script appends one record per run::

    {"date": "2026-12-02T14:03:11Z", "commit": "3b5622a", "dirty": false,
     "machine": {"cpu": "AMD EPYC …", "cores": 2, "memory_gb": 23.4, "gpu": null},
     "versions": {"python": "3.11.7", "numpy": "2.4.3", "devito": "4.8.23", …},
     "command": "python scripts/benchmark_speed.py --repeat 3", "script": "benchmark_speed",
     "figures": {…}}

``figures`` holds what the script measured (its JSON output). Records are never rewritten:
:func:`append` opens the file in append mode, and a figure quoted in README.md or
BENCHMARKS.md names the record it comes from (script, date, commit).

``TIMEPROBE_HISTORY`` overrides the file (tests point it at a temporary one); scripts pass
``record=False`` for smoke runs.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT / "benchmarks" / "history.jsonl"


def history_path():
    """The history file: ``$TIMEPROBE_HISTORY`` or ``benchmarks/history.jsonl``."""
    return Path(os.environ.get("TIMEPROBE_HISTORY", HISTORY))


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine():
    """CPU model, cores, memory and GPU of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return dict(cpu=cpu, cores=cores, memory_gb=mem, gpu=gpu)


def versions():
    """Versions of the packages the figures depend on (those already imported)."""
    out = dict(python=platform.python_version())
    for name in ("numpy", "devito", "torch", "deepwave", "scipy"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", None)
    return out


def command(argv=None):
    """The command line that produced the record, relative to the repository."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        try:
            argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
        except ValueError:
            pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def append(script, figures, argv=None, note=None, path=None):
    """Append one record to the history; returns it."""
    rec = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               commit=_git("rev-parse", "--short", "HEAD"),
               dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
               machine=machine(), versions=versions(), command=command(argv), script=script,
               figures=figures)
    if note:
        rec["note"] = note
    path = Path(path) if path is not None else history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # append only: earlier records are never touched
        f.write(json.dumps(rec, sort_keys=False) + "\n")
    print(f"recorded in {path}")
    return rec


def read(path=None, script=None):
    """Every record of the history (optionally of one script), oldest first."""
    path = Path(path) if path is not None else history_path()
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if script is None or r.get("script") == script]
