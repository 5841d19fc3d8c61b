#!/usr/bin/env python
"""Speed-up of the Dask shot-parallel objective over the serial loop.

Times ``fwi_objective`` (probed, r=16) of an ``--nshots`` objective on the
synthetic thrust model, serially (Devito OpenMP on all cores) and on a
``LocalCluster`` of ``--workers`` processes (cores/workers OpenMP threads each),
after a warm-up call that compiles the operators in every process. Reports the
best of ``--repeat`` wall-clock times and checks that both give the same ``f``.

Each run appends one record (script ``bench_parallel``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``) unless ``--no-record``.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402
import timeprobe as tp  # noqa: E402
from models import initial_model, synthetic_thrust  # noqa: E402
from timeprobe.parallel import close_client, local_client  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nshots", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, nargs=2, default=(201, 61))
    p.add_argument("--tmax", type=float, default=1500.0)
    p.add_argument("--ps", type=int, default=16)
    p.add_argument("--repeat", type=int, default=2)
    records.add_arguments(p)
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    true = synthetic_thrust(nx=a.size[0], nz=a.size[1], spacing=(25.0, 25.0), water_depth=250.0, nbl=30)
    init = initial_model(true, 200.0)
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    xb = true.extent[0]
    src = tp.Geometry([np.array([[x, 25.0]]) for x in np.linspace(0.1 * xb, 0.9 * xb, a.nshots)], dt=4.0, t=a.tmax)
    rx = np.arange(0, xb + 1e-6, 50.0)
    rec = tp.Geometry([np.stack([rx, np.full_like(rx, 25.0)], 1)] * a.nshots, dt=4.0, t=a.tmax)
    q = tp.Data(src, [tp.ricker(0.008, 4.0, a.tmax)] * a.nshots)
    d = tp.forward(true, q, rec)

    def best(client):
        tp.fwi_objective(init, q[:a.workers], d[:a.workers], ps=a.ps, seed=0, client=client)  # warm-up/compile
        ts, f = [], None
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            f, _ = tp.fwi_objective(init, q, d, ps=a.ps, seed=0, client=client)
            ts.append(time.perf_counter() - t0)
        return min(ts), f

    t_serial, f_serial = best(None)
    client = local_client(a.workers)
    try:
        t_par, f_par = best(client)
    finally:
        close_client(client)
    print(f"grid {true.shape}, {a.nshots} shots, r={a.ps}: serial {t_serial:.2f} s, "
          f"{a.workers} workers {t_par:.2f} s, speed-up {t_serial / t_par:.2f}x, f equal: {f_serial == f_par}")
    figures = dict(shape=true.shape, nshots=a.nshots, workers=a.workers, tmax=a.tmax, ps=a.ps, repeat=a.repeat,
                   serial_s=t_serial, parallel_s=t_par, speedup=t_serial / t_par, f_serial=f_serial,
                   f_parallel=f_par, f_equal=bool(f_serial == f_par))
    records.record(a, "bench_parallel", figures, argv, __file__)
    return figures


if __name__ == "__main__":
    main()
