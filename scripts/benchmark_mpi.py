"""Devito MPI: one shot on 1 rank (the ordinary serial run) vs R ranks (``DEVITO_MPI=1 mpirun``).

For a 2D and a 3D shot of the synthetic thrust models (``models.synthetic_thrust``/``_3d``; one
source mid-model, a receiver line or areal grid near the surface; observed data in the true
model, gradients in the smoothed ``models.initial_model``), each rank count runs in its own
process group and measures, through the public API:

* ``forward``  — ``timeprobe.forward`` (plain modelling);
* ``exact``    — ``timeprobe.fwi_objective(ps=None)`` (full wavefield storage);
* ``probed``   — ``timeprobe.fwi_objective(ps=r, seed=0)`` (QR probes, default blocked method).

Each is run twice; the second run is measured (the first generates and compiles the operators
it needs). Time: wall clock between two barriers (the slowest rank). Memory, per rank: the
peak resident size ``VmHWM`` during the measured run (``timeprobe.io.peak_memory_mb`` after
``reset_peak_memory``) and the working memory = that peak − the resident size just before it
(what the operation added: the saved wavefield, ū, traces, temporaries). Also per rank, by
formula from the rank's part of the grid (``workspace(model).m.shape`` is rank-local under MPI):
ū = ``r·N_rank`` floats and full storage = ``(nt + 1)·N_rank,halo`` floats.

Threads: every configuration uses the same total of OpenMP threads (``--threads``, default all
cores): R ranks get ``threads // R`` each; or ``--threads-per-rank T`` for every rank (strong
scaling: R ranks use R·T cores). The 1-rank run is the serial code (no ``DEVITO_MPI``).

Under MPI, Devito 4.8 exchanges the halo of every grid function passed to an operator in Python
when it collects the arguments (``_data_allocated`` → ``_halo_exchange``): for the saved wavefield
of the exact gradient that is the halo slabs of all nt + 1 snapshots, copied at every ``apply``
(a transient of about ``2·space_order/n_x,rank`` of the saved field per rank, and its time). The
probe fields have no halo.

Each run appends one record (script ``benchmark_mpi``) to the benchmark history
(``scripts/records.py``) unless ``--quick`` or ``--no-record``; per-run JSON and Markdown go to
a fresh ``results/benchmark_mpi-<time>/`` (or ``--out``); ``--write-docs`` rewrites the table of
``benchmarks/mpi.md`` naming the record.

    python scripts/benchmark_mpi.py [--ranks 1 2] [--cases 2d 3d] [--ps 16] [--threads N | --threads-per-rank T]
                                    [--shape-2d 301 121] [--shape-3d 81 81 49] [--quick]
                                    [--out DIR] [--note TEXT] [--no-record] [--write-docs]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "benchmarks" / "mpi.md"
OPERATIONS = ("forward", "exact", "probed")
TABLE_START, TABLE_END = "<!-- benchmark_mpi table: start -->", "<!-- benchmark_mpi table: end -->"


# --------------------------------------------------------------------------- the case
def build_case(case, shape, t_ms):
    """True model, initial model, sources with wavelets, receivers of one shot."""
    import numpy as np

    from models.synthetic import initial_model, synthetic_thrust, synthetic_thrust_3d
    from timeprobe.acquisition import grid, line, survey

    if case == "2d":
        h = 12.5
        model = synthetic_thrust(nx=shape[0], nz=shape[1], spacing=(h, h), water_depth=100.0, nbl=40,
                                 space_order=8)
        x_max = (shape[0] - 1) * h
        receivers = line(0.0, x_max, 2 * h, 2 * h)
        source = np.array([[x_max / 2, 2 * h]])
        f0 = 0.012
    elif case == "3d":
        h = 25.0
        model = synthetic_thrust_3d(nx=shape[0], ny=shape[1], nz=shape[2], spacing=(h, h, h),
                                    water_depth=100.0, nbl=16, space_order=8)
        x_max, y_max = (shape[0] - 1) * h, (shape[1] - 1) * h
        receivers = grid((0.0, x_max), (0.0, y_max), 4 * h, h)
        source = np.array([[x_max / 2, y_max / 2, h]])
        f0 = 0.008
    else:
        raise ValueError(f"unknown case {case!r}; use 2d or 3d")
    model0 = initial_model(model, sigma_m=8 * h)
    model0.dt = model.dt = min(model.critical_dt, model0.critical_dt)
    src, rec, q = survey(model, source, receivers, dt=4.0, t=t_ms, f0=f0)
    return model, model0, q, rec


def child(case, shape, t_ms, ps, out_path):
    """Run inside the process group (1 process, or the R ranks of mpirun)."""
    import numpy as np

    import timeprobe as tp
    from timeprobe import mpi
    from timeprobe.geometry import computational_axis
    from timeprobe.io import peak_memory_mb, reset_peak_memory, resident_memory_mb
    from timeprobe.workspace import workspace

    model, model0, q, rec = build_case(case, shape, t_ms)
    d = tp.forward(model, q, rec)
    dt, nt = computational_axis(model0, q.geometry, rec)
    ops = {"forward": lambda: tp.forward(model0, q, rec),
           "exact": lambda: tp.fwi_objective(model0, q, d),
           "probed": lambda: tp.fwi_objective(model0, q, d, ps=ps, seed=0)}
    comm = mpi.comm()
    barrier = comm.Barrier if comm is not None else (lambda: None)
    rows = {}
    for name, run in ops.items():
        run()  # generates and compiles the operators, allocates the workspace's own fields
        barrier()
        reset_peak_memory()
        before = resident_memory_mb()
        barrier()
        t0 = time.perf_counter()
        run()
        barrier()
        seconds = time.perf_counter() - t0
        peak = peak_memory_mb()
        rows[name] = dict(seconds=max(mpi.allgather(seconds)), peak_mib=mpi.allgather(peak),
                          working_mib=mpi.allgather(peak - before))
    ws = workspace(model0)
    local = [int(n) for n in ws.m.shape]  # this rank's part of the padded grid
    so = model0.space_order
    formula = dict(local_shape=mpi.allgather(local),
                   ubar_mib=mpi.allgather(ps * int(np.prod(local)) * 4 / 2**20),
                   full_storage_mib=mpi.allgather((nt + 1) * int(np.prod([n + 2 * so for n in local])) * 4 / 2**20))
    if mpi.is_root():
        result = dict(case=case, shape=list(shape), shape_padded=list(model0.shape_padded), t_ms=t_ms, nt=nt,
                      ps=ps, ranks=mpi.size(), omp_threads=os.environ.get("OMP_NUM_THREADS"),
                      rows=rows, formula=formula)
        with open(out_path, "w") as f:
            json.dump(records.plain(result), f)


# --------------------------------------------------------------------------- the parent
def run_group(case, shape, t_ms, ps, ranks, threads):
    """One configuration in its own process group (``threads`` OpenMP threads per rank); its result."""
    from timeprobe import mpi
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        args = [sys.executable, __file__, "--child", case, "--child-shape", *map(str, shape),
                "--child-t", str(t_ms), "--ps", str(ps), "--child-out", str(out)]
        # every array above 128 KiB its own mapping, returned to the OS when freed: resident
        # memory tracks live arrays (benchmark_memory.py does the same)
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.pop("DEVITO_MPI", None)
        if ranks > 1:
            launcher = mpi.launcher()
            if launcher is None:
                raise RuntimeError("no mpirun/mpiexec: install the mpi extra (pip install -e '.[mpi]')")
            env["DEVITO_MPI"] = "1"
            args = [launcher, "-n", str(ranks)] + args
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def table(result):
    """Markdown rows: case, ranks, operation, time, speed-up, per-rank peak and working memory."""
    lines = ["| case | ranks | operation | time (s) | speed-up | peak VmHWM per rank (MiB) | "
             "working per rank (MiB) | ū per rank (MiB, formula) | full storage per rank (MiB, formula) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case, groups in result["cases"].items():
        base = groups[0]
        for g in groups:
            shape = "×".join(map(str, g["shape_padded"]))
            for op in OPERATIONS:
                row = g["rows"][op]
                speed = base["rows"][op]["seconds"] / row["seconds"]
                fmt = lambda v: " / ".join(f"{x:.0f}" for x in v)  # noqa: E731
                ubar = fmt(g["formula"]["ubar_mib"]) if op == "probed" else ""
                full = fmt(g["formula"]["full_storage_mib"]) if op == "exact" else ""
                lines.append(f"| {case} {shape}, nt {g['nt']} | {g['ranks']} × {g['omp_threads']} thr | {op} | "
                             f"{row['seconds']:.2f} | {speed:.2f}× | {fmt(row['peak_mib'])} | "
                             f"{fmt(row['working_mib'])} | {ubar} | {full} |")
    return "\n".join(lines)


def write_doc(result, rec):
    """Replace the table of benchmarks/mpi.md (between its markers) by this run's, naming the record."""
    text = DOC.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise RuntimeError(f"{DOC} lacks the table markers {TABLE_START} … {TABLE_END}")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    m = result["machine"]
    block = (f"{TABLE_START}\nFrom {records.cite(rec)}: `{rec['command']}`, machine {m['cpu']}, "
             f"{m['cores']} cores, {m['memory_gb']} GB.\n\n{table(result)}\n{TABLE_END}")
    DOC.write_text(head + block + tail)
    print(f"wrote {DOC}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cases", nargs="+", default=["2d", "3d"], choices=["2d", "3d"])
    ap.add_argument("--ps", type=int, default=16, help="probes of the probed gradient")
    ap.add_argument("--threads", type=int, default=None,
                    help="total OpenMP threads of every configuration, shared by its ranks (default: all cores)")
    ap.add_argument("--threads-per-rank", type=int, default=None,
                    help="OpenMP threads of every rank instead (R ranks then use R times as many)")
    ap.add_argument("--shape-2d", type=int, nargs=2, default=[301, 121], metavar=("NX", "NZ"))
    ap.add_argument("--shape-3d", type=int, nargs=3, default=[81, 81, 49], metavar=("NX", "NY", "NZ"))
    ap.add_argument("--t-2d", type=float, default=1500.0, help="recording time of the 2D shot (ms)")
    ap.add_argument("--t-3d", type=float, default=800.0, help="recording time of the 3D shot (ms)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, a smoke run (not recorded)")
    ap.add_argument("--out", default=None, help="folder of this run's JSON/Markdown (new or empty)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-shape", type=int, nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--child-t", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    records.add_arguments(ap, docs="benchmarks/mpi.md table")
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.child_shape, a.child_t, a.ps, a.child_out)
    records.check_arguments(ap, a)
    if any(r < 1 for r in a.ranks) or a.ranks[0] != 1:
        ap.error("--ranks must start with 1 (the serial reference) and be positive")
    if a.quick:
        a.shape_2d, a.shape_3d, a.t_2d, a.t_3d = [61, 41], [25, 25, 21], 400.0, 300.0
    threads = a.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    per_rank = (lambda r: a.threads_per_rank) if a.threads_per_rank else (lambda r: max(1, threads // r))
    outdir = records.output_dir("benchmark_mpi" + ("-quick" if a.quick else ""), a.out)
    shapes = {"2d": a.shape_2d, "3d": a.shape_3d}
    times = {"2d": a.t_2d, "3d": a.t_3d}
    result = dict(cases={}, threads=threads, threads_per_rank=a.threads_per_rank, ps=a.ps,
                  machine=records.machine(), load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)
    for case in a.cases:
        result["cases"][case] = []
        for ranks in a.ranks:
            print(f"{case}: {ranks} rank(s) × {per_rank(ranks)} thread(s) …", flush=True)
            g = run_group(case, shapes[case], times[case], a.ps, ranks, per_rank(ranks))
            result["cases"][case].append(g)
            print("  " + ", ".join(f"{op} {g['rows'][op]['seconds']:.2f} s" for op in OPERATIONS), flush=True)
    md = table(result)
    print(md)
    (outdir / "benchmark_mpi.json").write_text(json.dumps(records.plain(result), indent=1))
    (outdir / "benchmark_mpi.md").write_text(md + "\n")
    print(f"wrote {outdir}")
    rec = records.record(a, "benchmark_mpi", result, argv, __file__)
    if a.write_docs and rec is not None:
        write_doc(result, rec)
    return result


if __name__ == "__main__":
    main()
