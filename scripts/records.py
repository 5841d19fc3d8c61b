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

``TIMEPROBE_HISTORY`` overrides the file (tests point it at a temporary one).

What the scripts share (:func:`add_arguments`, :func:`record`): a normal run appends exactly one
record (``benchmark_gradients.py``: one per part); ``--quick`` (smoke) runs and ``--no-record``
append none; ``--note`` is stored with the record (e.g. "A/B: before"). Per-run detailed outputs
(JSON, Markdown, PNG) go to a fresh folder (:func:`output_dir`: ``results/<script>-<time>``, which
git ignores, or ``--out``) and never replace an existing file (:func:`refuse_existing`). Committed
documents generated from a run (``benchmarks/gradients_table.md`` …) are written only with
``--write-docs``, which needs a recorded run: they name their record (:func:`cite`).
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
RESULTS = ROOT / "results"
DOCS = ROOT / "benchmarks"


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


def dirty():
    """Whether tracked files differ from the commit (None outside a git checkout), the history
    itself left out: the records appended by earlier runs would otherwise mark every later run of
    a session as made from uncommitted code."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  f":(exclude){HISTORY.relative_to(ROOT).as_posix()}")
    return None if status is None else bool(status)


def plain(obj):
    """``obj`` as strict JSON values: numpy scalars and arrays as numbers and lists, paths as
    strings, NaN and ±inf as None (JSON has no such numbers; a reader of the line must not choke)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars
        return plain(obj.tolist())
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)  # paths, dtypes, devices


def append(script, figures, argv=None, note=None, path=None):
    """Append one record to the history; returns it."""
    rec = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               commit=_git("rev-parse", "--short", "HEAD"),
               dirty=dirty(),
               machine=machine(), versions=versions(), command=command(argv), script=script,
               figures=plain(figures))
    if note:
        rec["note"] = note
    path = Path(path) if path is not None else history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(rec, sort_keys=False, allow_nan=False) + "\n"
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:  # a last line without its newline (edited by hand) stays whole
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
    with open(path, "a") as f:  # append only: earlier records are never touched
        f.write(line)
    print(f"recorded in {path}")
    return rec


def read(path=None, script=None):
    """Every record of the history (optionally of one script), oldest first."""
    path = Path(path) if path is not None else history_path()
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if script is None or r.get("script") == script]


# --------------------------------------------------------------------------- what the scripts share
def add_arguments(parser, docs=None):
    """Add ``--no-record`` and ``--note`` to a script's parser; ``docs``: the committed documents
    the script can (re)write, which adds ``--write-docs``."""
    g = parser.add_argument_group("benchmark history (benchmarks/history.jsonl, or $TIMEPROBE_HISTORY)")
    g.add_argument("--no-record", action="store_true",
                   help="do not append this run to the history (--quick runs never do)")
    g.add_argument("--note", default=None, help="a note stored with the record (e.g. 'A/B: before')")
    if docs:
        g.add_argument("--write-docs", action="store_true",
                       help=f"also (re)write the committed {docs}, naming this run's history record "
                            "(needs a recorded run: not with --quick or --no-record)")


def recording(args):
    """Whether the run of ``args`` appends to the history: not with ``--quick`` or ``--no-record``."""
    return not getattr(args, "no_record", False) and not getattr(args, "quick", False)


def check_arguments(parser, args):
    """``--write-docs`` needs a record for the documents to name: refuse it with --quick / --no-record."""
    if getattr(args, "write_docs", False) and not recording(args):
        parser.error("--write-docs needs a recorded run (not --quick or --no-record): "
                     "the documents name the history record they come from")


def record(args, script, figures, argv=None, program=None):
    """Append one record of ``script`` if the run records (:func:`recording`), else nothing.

    ``argv``: the arguments a script's ``main(argv)`` was called with (None: ``sys.argv``);
    ``program``: the script's path, put before them. Returns the record, or None.
    """
    if not recording(args):
        why = "--quick" if getattr(args, "quick", False) else "--no-record"
        print(f"not recorded in the history ({why})", flush=True)
        return None
    full = None if argv is None else [str(program or script), *map(str, argv)]
    return append(script, figures, argv=full, note=getattr(args, "note", None))


def output_dir(name, out=None):
    """The folder of one run's detailed outputs: ``out`` (created; it must not exist or be
    empty) or a fresh ``results/<name>-<YYYYmmdd-HHMMSS>`` (never an existing folder)."""
    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} exists and is not empty; results are never overwritten: "
                                  "choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        return out
    from timeprobe.io import new_run_dir  # no Devito: the torch-only scripts use it too
    return new_run_dir(RESULTS, name)


def refuse_existing(*paths):
    """Raise ``FileExistsError`` naming every path that exists: outputs never replace a file."""
    existing = [str(p) for p in paths if p is not None and Path(p).exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                              "results are never overwritten: choose another --out")


def cite(rec):
    """How a generated document names the record it comes from: history file, script, date, commit."""
    path = history_path().resolve()
    try:
        shown = path.relative_to(ROOT)
    except ValueError:
        shown = path
    at = f"at commit {rec['commit']}" if rec.get("commit") else "at an unknown commit (no git checkout)"
    changes = " with uncommitted changes" if rec.get("dirty") else ""
    return f"the history record of `{rec['script']}` dated {rec['date']} {at}{changes} (`{shown}`)"
