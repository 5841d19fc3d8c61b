"""Stored-snapshot strategies and the budget autopilot, measured: time, working memory, accuracy.

For one case of ``scripts/benchmark_gradients.py`` (same models, acquisition and cached observed
data), every configuration runs in its own process through that script's worker (warm-up run,
peak-RSS reset, timed runs; working memory = peak of the gradient − peak of plain forward modelling,
both in the same process): exact full storage, Nyquist storage at 32/16/8 bit in RAM, 8 bit on disk,
probing (r), and the autopilot at a few budgets. Recorded for each: wall time, its ratio to plain
forward + adjoint, measured working memory, the working memory :mod:`timeprobe.budget` predicts,
the cosine with the exact gradient, and (autopilot) the strategy chosen and its accuracy estimate.

Usage (≈ 3 min for overthrust2d on 2 cores; results to ``--out``, refused if it exists)::

    python scripts/storage_strategies.py --case overthrust2d --out results/storage
    python scripts/storage_strategies.py --quick --out /tmp/storage      # tiny smoke test

Writes ``storage_strategies.json`` and ``storage_strategies.md`` into ``--out``; ``--render JSON
--out FILE.md [--no-times]`` writes the Markdown of an earlier run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchmark_gradients as bg  # noqa: E402  (the table's cases, worker and memory method)
import records  # noqa: E402

from timeprobe.budget import MIB, gradient_sizes, plan, strategy_memory  # noqa: E402
from timeprobe.storage import StorageOptions  # noqa: E402


def configs(r, budgets):
    cfgs = [dict(name="full", strategy="full"),
            dict(name="nyquist", strategy="nyquist", opts=dict(bits=32)),
            dict(name="nyquist16", strategy="nyquist", opts=dict(bits=16)),
            dict(name="nyquist8", strategy="nyquist", opts=dict(bits=8)),
            dict(name="disk8", strategy="nyquist", opts=dict(bits=8, storage="disk")),
            dict(name=f"probe_r{r}", strategy="probe", opts=dict(ps=r, seed=0)),
            dict(name=f"probe_r{2 * r}", strategy="probe", opts=dict(ps=2 * r, seed=0))]
    cfgs += [dict(name=f"auto_{b:g}MB", strategy="auto", opts=dict(budget_mb=b, seed=0)) for b in budgets]
    return cfgs + [dict(name="plain", strategy="plain"), dict(name="plain_forward", strategy="plain_forward")]


def predicted(cfg, sizes):
    s, o = cfg["strategy"], cfg.get("opts", {})
    if s == "full":
        return strategy_memory(sizes, "full")
    if s == "nyquist":
        st = StorageOptions(bits=o["bits"], where=o.get("storage", "ram"))
        return strategy_memory(sizes, "stored", storage=st)
    if s == "probe":
        return strategy_memory(sizes, "probe", ps=o["ps"])
    if s == "auto":
        return plan(sizes, o["budget_mb"]).predicted_bytes
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="overthrust2d", help="a benchmark_gradients case, NAME or NAME:T_ms")
    ap.add_argument("--r", type=int, default=32)
    ap.add_argument("--budgets", nargs="+", type=float, default=None,
                    help="autopilot budgets (MiB; default: between the strategies' predicted memories)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="layered2d_61_41:600, r = 8, one repeat")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-times", action="store_true", help="leave the wall times out of the Markdown")
    ap.add_argument("--render", metavar="JSON", help="only write the Markdown of an earlier run's JSON to --out")
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.render:
        if out.exists():
            raise SystemExit(f"{out} exists: choose a new --out")
        Path(out).write_text(render(json.loads(Path(a.render).read_text()), times=not a.no_times))
        return
    if out.exists():
        raise SystemExit(f"{out} exists: choose a new --out")
    out.mkdir(parents=True)
    if a.quick:
        a.case, a.r, a.repeats = "layered2d_61_41:600", 8, 1
    case, t = bg.parse_case(a.case)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                            text=True).stdout.strip()  # the code the workers run (imported at the start)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        def measure(cfg):
            print("run", cfg["name"], flush=True)
            gpath = str(Path(tmp) / f"g_{cfg['name']}.npy")
            row = bg.in_subprocess(dict(mode="table", case=case, t=t, cfg=cfg, gpath=gpath, repeats=a.repeats))
            row["gpath"] = gpath if os.path.exists(gpath) else None
            rows[cfg["name"]] = row
        measure(dict(name="plain_forward", strategy="plain_forward"))  # models and caches the data
        model0, q, d = bg.setup(case, t)
        sizes = gradient_sizes(model0, q, d)
        budgets = a.budgets
        if budgets is None:  # just above the probe, nyquist8 and nyquist16 predictions
            base = [strategy_memory(sizes, "probe", ps=a.r), strategy_memory(sizes, "stored",
                                                                                storage=StorageOptions(bits=8)),
                    strategy_memory(sizes, "stored", storage=StorageOptions(bits=16))]
            budgets = [round(1.02 * b / MIB, 1) for b in base]
        cfgs = configs(a.r, budgets)
        for cfg in cfgs:
            if cfg["name"] not in rows:
                measure(cfg)
        g_ex = np.load(rows["full"]["gpath"])
        t_plain = rows["plain"]["wall_s"]
        table = []
        for cfg in cfgs:
            row = rows[cfg["name"]]
            wm = row["peak_mb"] - row["base_mb"] if row.get("base_mb") is not None else None
            pred = predicted(cfg, sizes)
            cos = None
            if row["gpath"]:
                g = np.load(row["gpath"])
                cos = float(np.dot(g.ravel().astype(np.float64), g_ex.ravel()) /
                            (np.linalg.norm(g.astype(np.float64)) * np.linalg.norm(g_ex.astype(np.float64))))
            chosen = plan(sizes, cfg["opts"]["budget_mb"]) if cfg["strategy"] == "auto" else None
            table.append(dict(name=cfg["name"], cfg=cfg, wall_s=row["wall_s"], time_ratio=row["wall_s"] / t_plain,
                              working_mb=wm, predicted_mb=None if pred is None else pred / MIB, cosine=cos,
                              chosen=None if chosen is None else (chosen.strategy, chosen.ps)))
    import devito
    meta = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), host=platform.node(), cpus=os.cpu_count(),
                devito=devito.__version__, commit=commit,
                command=" ".join(["python", "scripts/storage_strategies.py"] + (argv or sys.argv[1:])))
    res = dict(meta=meta, case=case, T=t, sizes={k: v for k, v in sizes.items() if k != "shape"},
               shape=list(sizes["shape"]), rows=table)
    (out / "storage_strategies.json").write_text(json.dumps(res, indent=1, default=str))
    text = render(res, times=not a.no_times)
    (out / "storage_strategies.md").write_text(text)
    print(text)
    records.record(a, "storage_strategies", res, argv, __file__)


def render(res, times=True):
    """The Markdown table of a result (``times=False``: without the wall times, for records made on
    a machine whose timings are not representative)."""
    meta, case, t, sizes, table = res["meta"], res["case"], res["T"], res["sizes"], res["rows"]
    sizes = dict(sizes, shape=tuple(res["shape"]))
    lines = [f"# Stored-snapshot strategies and the budget autopilot: {case}, T = {t:g} ms", "",
             f"Generated {meta['date']} by `{meta['command']}` at commit `{meta['commit']}`; machine {meta['host']} "
             f"({meta['cpus']} CPUs), devito {meta['devito']}. Physical grid {sizes['shape']}, nt = {sizes['nt']}, "
             f"Nyquist k = {sizes['k']}. Working memory: peak RSS − peak RSS of plain forward modelling in the same "
             "process (`scripts/benchmark_gradients.py` method); predicted: `timeprobe.budget` formulas.", "",
             "| configuration | time (s) | time / plain fwd+adj | working memory (MiB) | predicted (MiB) | "
             "cosine with exact | autopilot's choice |", "|---|---|---|---|---|---|---|"]

    def fmt(v, f):
        return "—" if v is None else format(v, f)

    for x in table:
        choice = ""
        if x["chosen"] is not None:
            strategy, r = x["chosen"]
            choice = strategy if r is None else f"{strategy} r={r}"
        timing = f"{x['wall_s']:.3f} | {x['time_ratio']:.2f}" if times and x["wall_s"] is not None else "— | —"
        lines.append(f"| {x['name']} | {timing} | {fmt(x['working_mb'], '.1f')} | "
                     f"{fmt(x['predicted_mb'], '.1f')} | {fmt(x['cosine'], '.6f')} | {choice} |")
    if not times:
        lines += ["", "Times left out: measured on a shared, loaded machine; rerun the command on a quiet machine "
                  "for them."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
