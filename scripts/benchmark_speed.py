"""Speed of the probed gradient vs plain propagation, full storage and the reference Eq path.

One shot of overthrust_2D.h5 (801×207, nbl 40), 3 s, 8 Hz Ricker, source mid-model at 50 m,
receivers every grid column at 12.5 m. Every configuration is warmed up (compiled) first, then
timed interleaved ``--repeat`` times; the minimum per configuration is reported, with the ratios
to "plain forward + plain adjoint" taken from the same run.

Each run appends one record (script ``benchmark_speed``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``) unless ``--no-record``; ``--out`` also
writes the figures to a new JSON file.

    python scripts/benchmark_speed.py [--model PATH] [--ps 32] [--repeat 3] [--eq] [--out FILE.json]
                                      [--note TEXT] [--no-record]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

import timeprobe as tp  # noqa: E402
from timeprobe.geometry import (computational_axis, from_computational, from_computational_adjoint,  # noqa: E402
                                to_computational)
from timeprobe.probing import ProbingOptions, probes_for_shot  # noqa: E402
from timeprobe.propagators import run_adjoint, run_forward  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("TIMEPROBE_DATA", Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--model", default=str(default / "models" / "overthrust_2D.h5"))
    ap.add_argument("--ps", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--eq", action="store_true", help="also time the reference Eq path (slow)")
    ap.add_argument("--blocks", nargs="*", type=int, default=[], help="extra ring-buffer lengths B to time")
    ap.add_argument("--checkpoints", type=int, default=0,
                    help="also time optimal checkpointing (Revolve) with this many snapshots "
                         "(each holds the 2 time levels of u with halo: 2·c·N_halo floats)")
    ap.add_argument("--sum-padding", type=int, choices=(0, 1), default=1,
                    help="1 (default): probe fields over the padded grid (the exact derivative); "
                         "0: they skip the absorbing layers")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file (must not exist)")
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if a.out:
        records.refuse_existing(a.out)  # before the run, not after it

    true = tp.Model.from_h5(a.model, key="m")
    init = tp.Model.from_h5(a.model, key="m0")
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    nx = true.shape[0]
    T = 3000.0
    q = tp.Data(tp.Geometry([np.array([[(nx // 2) * 25.0, 50.0]])], dt=4.0, t=T), [tp.ricker(0.008, 4.0, T)])
    rec = tp.Geometry([np.stack([np.arange(nx) * 25.0, np.full(nx, 12.5)], 1)], dt=4.0, t=T)
    d = tp.forward(true, q, rec)
    dt, nt = computational_axis(init, q.geometry, rec)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    sc, rc = q.geometry.coordinates[0], rec.coordinates[0]

    def adjoint_source(rec_c):
        res = from_computational(rec_c, rec, dt, nt) - d.arrays[0]
        return (d.dt / dt) * from_computational_adjoint(res, rec, dt, nt)

    rec_c, _ = run_forward(init, sc, wc, rc, dt, nt)
    y = adjoint_source(rec_c)
    _, g_exact, _ = run_adjoint(init, rc, y, dt, nt, usave=run_forward(init, sc, wc, rc, dt, nt, save=True)[1])

    def plain():
        run_forward(init, sc, wc, rc, dt, nt)
        run_adjoint(init, rc, y, dt, nt)

    def full():
        r, u = run_forward(init, sc, wc, rc, dt, nt, save=True)
        return run_adjoint(init, rc, y, dt, nt, usave=u)[1]

    def probed(method, subsample, block=None):
        opts = ProbingOptions(ps=a.ps, subsample=subsample, method=method, block=block,
                              sum_padding=bool(a.sum_padding))
        def run():
            p = probes_for_shot(opts, wc, dt, nt, d, np.random.default_rng(0))
            r, ub = run_forward(init, sc, wc, rc, dt, nt, probing=p)
            return run_adjoint(init, rc, y, dt, nt, probing=p, ubar=ub, restore_ubar=False)[1], p
        return run

    configs = {"plain fwd+adj": plain, "full storage": full,
               "probed blocked (k auto)": probed("blocked", "auto"),
               "probed blocked (k=1)": probed("blocked", 1)}
    for B in a.blocks:
        configs[f"probed blocked (k auto, B={B})"] = probed("blocked", "auto", B)
    if a.eq:
        configs["probed eq (k=1, reference)"] = probed("eq", 1)
    if a.checkpoints:
        from timeprobe.strategies import gradient

        def checkpointing():
            # timeprobe.strategies runs one plain forward for the residual, then the Revolve sweep
            return gradient(init, q, d, strategy="checkpoint", n_checkpoints=a.checkpoints)[1]
        # a Devito checkpoint holds the two time levels of u with their halo: 2·c·N_halo floats
        configs[f"checkpointing (Revolve, {a.checkpoints} snapshots = {2 * a.checkpoints}·N_halo)"] = checkpointing
    def cos(g):
        ge = g_exact if g.shape == g_exact.shape else init.unpad(g_exact)  # strategies return unpadded g
        return float(np.dot(g.ravel(), ge.ravel()) / np.linalg.norm(g) / np.linalg.norm(ge))
    info = {}
    for name, fn in configs.items():  # warm-up: compile, and record accuracy
        out = fn()
        if isinstance(out, tuple):
            info[name] = dict(cosine=cos(out[0]), subsample=out[1].subsample, block=out[1].block)
        elif out is not None:
            info[name] = dict(cosine=cos(out))
    times = {k: [] for k in configs}
    for _ in range(a.repeat):
        for name, fn in configs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = min(times["plain fwd+adj"])
    rows = {k: dict(seconds=min(v), ratio=min(v) / base, **info.get(k, {})) for k, v in times.items()}
    # date, machine and versions are the record's own fields
    result = dict(model=Path(a.model).name, shape=init.shape_padded, nt=nt, dt=dt, ps=a.ps,
                  sum_padding=a.sum_padding, repeat=a.repeat, rows=rows)
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "x") as f:
            json.dump(records.plain(result), f, indent=1)
    records.record(a, "benchmark_speed", result, argv, __file__)
    return result


if __name__ == "__main__":
    main()
