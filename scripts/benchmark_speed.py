"""Speed of the probed gradient vs plain propagation, full storage and the reference Eq path.

Cases (``--case``):

* ``overthrust2d`` (default): one shot of overthrust_2D.h5 (801×207, nbl 40), 3 s, 8 Hz Ricker,
  source mid-model at 50 m, receivers every grid column at 12.5 m;
* ``thrust3d``: the SYNTHETIC 3D thrust model (``models.synthetic_thrust_3d``, ``--shape``,
  25 m, nbl 20) and its smoothed initial model, ``--t`` ms (default 1500), 10 Hz Ricker, one
  source at the centre (25 m deep), receivers every 50 m on an areal grid at 50 m depth.

Every configuration is warmed up (compiled) first, then timed interleaved ``--repeat`` times;
the minimum per configuration is reported, with the ratios to "plain forward + plain adjoint"
taken from the same run: ``ratio`` of the minima, and ``paired_ratio``, the median over the repeats
of each run's ratio to the plain run of its own round (less moved by a slow spell of the machine).
``--baseline REF`` also times the probed gradient of another commit (its ``timeprobe`` package
exported with ``git archive`` and imported under another name, so both codes run in this one
process, interleaved): before/after ratios on the same machine state.

    python scripts/benchmark_speed.py [--model PATH] [--ps 32] [--repeat 3] [--eq] [--out FILE.json]
    python scripts/benchmark_speed.py --case thrust3d --shape 141 141 71 --t 1500 --baseline bbdf215

``--ps-sweep 8 16 64`` also times the probed gradient at those numbers of probes: the part of
its cost that does not grow with r (the design, the ring copies, the stencil's lost cache) is what
remains as r → 0. ``--floor`` also times the probe design alone and one pass of the probes'
arithmetic (``ū += Σ_n Q[n, :]·s_n`` over the nsub snapshots of the probe region) done by BLAS, and
reports ``1 + design + 2 × pass`` (the forward's ``Qᵀu`` and the adjoint's ``Qᵀv̈``) as a ratio to
plain forward + adjoint: a lower bound on the probed gradient's ratio on this machine for any
implementation whose arithmetic is no faster than BLAS's; and the same bound with the arithmetic
at the cores' peak multiply-add rate (a register-only FMA loop compiled by Devito's compiler).

Each run appends one record (script ``benchmark_speed``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``) unless ``--no-record``; ``--out`` also
writes the figures to a new JSON file.
"""
import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

import timeprobe as tp  # noqa: E402
import timeprobe.model  # noqa: E402
import timeprobe.probing  # noqa: E402
import timeprobe.propagators  # noqa: E402
from timeprobe.geometry import (computational_axis, from_computational, from_computational_adjoint,  # noqa: E402
                                to_computational)
from timeprobe.propagators import run_adjoint, run_forward  # noqa: E402


def baseline_package(ref):
    """``ref``'s ``timeprobe`` package, exported into a temporary folder and imported as
    ``timeprobe_<ref>`` (its modules import each other relatively, so the copy is self-contained)."""
    name = "timeprobe_" + "".join(c if c.isalnum() else "_" for c in ref)
    folder = Path(tempfile.mkdtemp(prefix="timeprobe_baseline_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "timeprobe"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "timeprobe").rename(folder / name)
    sys.path.insert(0, str(folder))
    return {m: importlib.import_module(f"{name}.{m}") for m in ("model", "probing", "propagators")}


def overthrust2d(a):
    true = tp.Model.from_h5(a.model, key="m")
    init = tp.Model.from_h5(a.model, key="m0")
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    nx = true.shape[0]
    T = 3000.0
    q = tp.Data(tp.Geometry([np.array([[(nx // 2) * 25.0, 50.0]])], dt=4.0, t=T), [tp.ricker(0.008, 4.0, T)])
    rec = tp.Geometry([np.stack([np.arange(nx) * 25.0, np.full(nx, 12.5)], 1)], dt=4.0, t=T)
    return true, init, q, rec


def thrust3d(a):
    from models import initial_model, synthetic_thrust_3d
    from timeprobe import acquisition as acq
    water = min(500.0, 25.0 * round(0.2 * (a.shape[2] - 1)))
    true = synthetic_thrust_3d(*a.shape, spacing=25.0, water_depth=water, nbl=20, space_order=8)
    init = initial_model(true, sigma_m=300.0)
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    (x0, x1), (y0, y1) = true.domain_bounds[0], true.domain_bounds[1]
    survey = acq.survey(true, np.array([[(x0 + x1) / 2, (y0 + y1) / 2, 25.0]]),
                        acq.grid((x0, x1), (y0, y1), 50.0, depth=min(50.0, water)), dt=4.0, t=a.t, f0=0.010)
    return true, init, survey.q, survey.rec


def probe_design(a, wc, dt, nt, d):
    """The probe design of the timed probed gradient, alone (``probes_for_shot``, r = ``--ps``)."""
    opts = timeprobe.probing.ProbingOptions(ps=a.ps, subsample="auto", method="blocked",
                                            sum_padding=bool(a.sum_padding))

    def run():
        return None, timeprobe.probing.probes_for_shot(opts, wc, dt, nt, d, np.random.default_rng(0))
    return run


def probe_arithmetic(model, probing, layers):
    """One pass of the probes' arithmetic, ``ū += Σ_n Q[n, :]·s_n`` over the ``nsub`` snapshots
    ``s_n`` of the probe region, done by BLAS (``sgemm``, C ← A·B + C, all cores): in blocks of
    32 snapshots (a ring buffer of 32 slots) and in one product over every snapshot (the rate
    BLAS reaches with the longest inner dimension; it holds all ``nsub`` snapshots, as full
    Nyquist storage would). Each callable carries its flop count (``flops``), the accumulator
    (``ubar``, shared), its snapshots (``snapshots``) and the pause the timing loop makes after it
    (``settle``, s: OpenBLAS's threads spin on after a product and would slow the next run down)."""
    from scipy.linalg.blas import sgemm
    from timeprobe.probe_buffers import region_shape
    npts = int(np.prod(region_shape(model, layers)))
    nsub, r = probing.nsub, probing.r
    Q = np.asfortranarray(probing.Q, dtype=np.float32)
    rng = np.random.default_rng(0)
    ubar = np.zeros((npts, r), dtype=np.float32, order="F")
    passes = {}
    for blk in (32, nsub):
        snaps = np.asfortranarray(rng.standard_normal((npts, blk), dtype=np.float32))

        def run(blk=blk, snaps=snaps):
            for n0 in range(0, nsub, blk):  # the last block may be shorter: its rows of Q only
                nb = min(blk, nsub - n0)
                sgemm(1.0, snaps[:, :nb], Q[n0:n0 + nb], beta=1.0, c=ubar, overwrite_c=1)
        run.flops, run.ubar, run.snapshots, run.settle = 2.0 * npts * nsub * r, ubar, snaps, 0.5
        passes[f"probe arithmetic by BLAS, one pass ({'all' if blk == nsub else blk} snapshots per product)"] = run
    return passes


PEAK_SOURCE = r"""
typedef float v16 __attribute__((vector_size(64)));
double fma_flops(long n)
{
  double flops = 0;
  #pragma omp parallel reduction(+:flops)
  {
    v16 a[12], x, y;
    for (int j = 0; j < 16; j++) { x[j] = 1.0000001f; y[j] = 0.9999999f; }
    for (int i = 0; i < 12; i++) for (int j = 0; j < 16; j++) a[i][j] = (float)i;
    for (long k = 0; k < n; k++)
      for (int i = 0; i < 12; i++) a[i] = a[i] * x + y;  /* 12 independent chains of vector FMAs */
    volatile float sink = 0;
    for (int i = 0; i < 12; i++) for (int j = 0; j < 16; j++) sink += a[i][j];
    flops += 2.0 * 16 * 12 * n;
  }
  return flops;
}
"""


def fma_peak(repeat=5, n=20_000_000):
    """The float32 multiply-add rate (flop/s) of every OpenMP thread Devito would use: twelve
    independent chains of 16-wide vector FMAs per thread, compiled by Devito's compiler and flags
    (``-march=native``), best of ``repeat``. No memory traffic: no kernel does arithmetic faster."""
    import ctypes
    from devito import configuration
    cc = configuration["compiler"]
    with tempfile.TemporaryDirectory(prefix="timeprobe_peak_") as tmp:
        folder = Path(tmp)
        (folder / "peak.c").write_text(PEAK_SOURCE)
        subprocess.run([cc.cc, *cc.cflags, "-fopenmp", str(folder / "peak.c"), "-o", str(folder / "peak.so"),
                        *cc.ldflags], check=True, capture_output=True)
        fn = ctypes.CDLL(str(folder / "peak.so")).fma_flops  # stays loaded once the file is gone
    fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_double
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        flops = fn(n)
        best = max(best, flops / (time.perf_counter() - t))
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("TIMEPROBE_DATA", ROOT.parent / "shared"))
    ap.add_argument("--case", choices=("overthrust2d", "thrust3d"), default="overthrust2d")
    ap.add_argument("--model", default=str(default / "models" / "overthrust_2D.h5"))
    ap.add_argument("--shape", type=int, nargs=3, default=[141, 141, 71], help="thrust3d grid (25 m)")
    ap.add_argument("--t", type=float, default=1500.0, help="thrust3d recording time (ms)")
    ap.add_argument("--ps", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--eq", action="store_true", help="also time the reference Eq path (slow)")
    ap.add_argument("--blocks", nargs="*", type=int, default=[], help="extra block lengths B to time")
    ap.add_argument("--no-full", action="store_true", help="leave out full storage (and its cosine)")
    ap.add_argument("--no-k1", action="store_true", help="leave out the probed run without time subsampling")
    ap.add_argument("--baseline", default=None, metavar="REF",
                    help="also time the probed gradient of git commit REF in this process")
    ap.add_argument("--checkpoints", type=int, default=0,
                    help="also time optimal checkpointing (Revolve) with this many snapshots "
                         "(each holds the 2 time levels of u with halo: 2·c·N_halo floats)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time instead of wall time (with OMP_NUM_THREADS=1 on a shared "
                         "machine it leaves out the time the process waits for a core)")
    ap.add_argument("--sum-padding", type=int, choices=(0, 1), default=1,
                    help="1 (default): probe fields over the padded grid (the exact derivative); "
                         "0: they skip the absorbing layers")
    ap.add_argument("--ps-sweep", nargs="*", type=int, default=[], metavar="R",
                    help="also time the probed gradient with these numbers of probes (k auto): its time "
                         "against r separates the part that grows with r from the part that does not")
    ap.add_argument("--floor", action="store_true",
                    help="also time the probe design alone and the probes' arithmetic done by BLAS "
                         "(sgemm), and report the lower bound they put on the probed gradient's ratio")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file (must not exist)")
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if a.out:
        records.refuse_existing(a.out)  # before the run, not after it

    true, init, q, rec = (overthrust2d if a.case == "overthrust2d" else thrust3d)(a)
    d = tp.forward(true, q, rec)
    dt, nt = computational_axis(init, q.geometry, rec)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    sc, rc = q.geometry.coordinates[0], rec.coordinates[0]

    def adjoint_source(rec_c):
        res = from_computational(rec_c, rec, dt, nt) - d.arrays[0]
        return (d.dt / dt) * from_computational_adjoint(res, rec, dt, nt)

    rec_c, _ = run_forward(init, sc, wc, rc, dt, nt)
    y = adjoint_source(rec_c)
    g_exact = None
    if not a.no_full:
        _, g_exact, _ = run_adjoint(init, rc, y, dt, nt, usave=run_forward(init, sc, wc, rc, dt, nt, save=True)[1])

    def plain():
        run_forward(init, sc, wc, rc, dt, nt)
        run_adjoint(init, rc, y, dt, nt)

    def full():
        r, u = run_forward(init, sc, wc, rc, dt, nt, save=True)
        return run_adjoint(init, rc, y, dt, nt, usave=u)[1]

    def probed(method, subsample, block=None, pkg=None, ps=None):
        pkg = pkg or {"model": timeprobe.model, "probing": timeprobe.probing, "propagators": timeprobe.propagators}
        probing, propagators, model = pkg["probing"], pkg["propagators"], init
        if pkg["model"] is not timeprobe.model:  # the baseline's own Model (and so its own workspaces)
            model = pkg["model"].Model(m=init.m, spacing=init.spacing, nbl=init.nbl, space_order=init.space_order)
            model.dt = init.dt
        kwargs = {} if pkg["probing"] is not timeprobe.probing else dict(sum_padding=bool(a.sum_padding))
        opts = probing.ProbingOptions(ps=a.ps if ps is None else ps, subsample=subsample, method=method, block=block,
                                      **kwargs)

        def run():
            p = probing.probes_for_shot(opts, wc, dt, nt, d, np.random.default_rng(0))
            r, ub = propagators.run_forward(model, sc, wc, rc, dt, nt, probing=p)
            return propagators.run_adjoint(model, rc, y, dt, nt, probing=p, ubar=ub, restore_ubar=False)[1], p
        return run

    configs = {"plain fwd+adj": plain}
    if not a.no_full:
        configs["full storage"] = full
    configs["probed blocked (k auto)"] = probed("blocked", "auto")
    if a.baseline:
        configs[f"probed blocked (k auto), {a.baseline}"] = probed("blocked", "auto", pkg=baseline_package(a.baseline))
    if not a.no_k1:
        configs["probed blocked (k=1)"] = probed("blocked", 1)
    for B in a.blocks:
        configs[f"probed blocked (k auto, B={B})"] = probed("blocked", "auto", B)
    for r in a.ps_sweep:
        configs[f"probed blocked (k auto, r={r})"] = probed("blocked", "auto", ps=r)
    if a.eq:
        configs["probed eq (k=1, reference)"] = probed("eq", 1)
    floor_passes = {}
    if a.floor:
        configs["probe design alone"] = design = probe_design(a, wc, dt, nt, d)
        floor_passes = probe_arithmetic(init, design()[1], bool(a.sum_padding))
        configs.update(floor_passes)
    if a.checkpoints:
        from timeprobe.strategies import gradient

        def checkpointing():
            # timeprobe.strategies runs one plain forward for the residual, then the Revolve sweep
            return gradient(init, q, d, strategy="checkpoint", n_checkpoints=a.checkpoints)[1]
        # a Devito checkpoint holds the two time levels of u with their halo: 2·c·N_halo floats
        configs[f"checkpointing (Revolve, {a.checkpoints} snapshots = {2 * a.checkpoints}·N_halo)"] = checkpointing

    def cos(g):
        ge = g_exact if g.shape == g_exact.shape else init.unpad(g_exact)  # strategies return unpadded g
        if g.shape == init.shape_padded:  # compare on the physical domain
            g, ge = init.unpad(g), init.unpad(g_exact)
        return float(np.dot(g.ravel(), ge.ravel()) / np.linalg.norm(g) / np.linalg.norm(ge))
    info = {}
    for name, fn in configs.items():  # warm-up: compile, and record accuracy
        out = fn()
        g = out[0] if isinstance(out, tuple) else out
        row = {}
        if isinstance(out, tuple):
            row.update(subsample=out[1].subsample, block=out[1].block)
        if g is not None and g_exact is not None:
            row["cosine"] = cos(g)
        info[name] = row
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    times = {k: [] for k in configs}
    for _ in range(a.repeat):
        for name, fn in configs.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
            # OpenBLAS's threads spin on after a product (≈ 0.1 s): let them stop before the next run
            time.sleep(getattr(fn, "settle", 0.0))
    base = min(times["plain fwd+adj"])
    # ratio: of the minima; paired_ratio: the median over repeats of the ratio to the plain run
    # of the same round (timed next to it), which a slow spell of the machine moves less
    plain_times = np.array(times["plain fwd+adj"])
    rows = {k: dict(seconds=min(v), ratio=min(v) / base, paired_ratio=float(np.median(np.array(v) / plain_times)),
                    all_seconds=v, **info.get(k, {}))
            for k, v in times.items()}
    for k, fn in floor_passes.items():
        rows[k]["gflops"] = fn.flops / rows[k]["seconds"] / 1e9
    floor = None
    if a.floor:
        # the probed gradient does at least: plain propagation, the design, and the probes'
        # arithmetic twice (forward Qᵀu, adjoint Qᵀv̈) at the best rate BLAS reaches for it
        best = min(floor_passes, key=lambda k: rows[k]["seconds"])
        peak = fma_peak()
        floor = dict(design_ratio=rows["probe design alone"]["ratio"], best_pass=best,
                     pass_ratio=rows[best]["ratio"], gflops=rows[best]["gflops"],
                     ratio=1.0 + rows["probe design alone"]["ratio"] + 2 * rows[best]["ratio"],
                     paired_ratio=1.0 + rows["probe design alone"]["paired_ratio"]
                     + 2 * min(rows[k]["paired_ratio"] for k in floor_passes),
                     # the same bound with the arithmetic at the cores' peak multiply-add rate
                     peak_gflops=peak / 1e9,
                     ratio_at_peak=1.0 + rows["probe design alone"]["ratio"]
                     + 2 * floor_passes[best].flops / peak / base)
        print(f"lower bound on the probed gradient's ratio: {floor['ratio']:.3f} (design "
              f"{floor['design_ratio']:.3f} + 2 × {floor['pass_ratio']:.3f}, {best}, {floor['gflops']:.0f} GFlop/s); "
              f"{floor['ratio_at_peak']:.3f} with the arithmetic at the cores' peak, {floor['peak_gflops']:.0f} GFlop/s")
    # date, machine and versions are the record's own fields
    result = dict(case=a.case, model=Path(a.model).name if a.case == "overthrust2d" else None,
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"), clock=a.clock,
                  shape=init.shape_padded, nt=nt, dt=dt, ps=a.ps, sum_padding=a.sum_padding,
                  baseline=a.baseline, repeat=a.repeat, rows=rows, floor=floor)
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "x") as f:
            json.dump(records.plain(result), f, indent=1)
    records.record(a, "benchmark_speed", result, argv, __file__)
    return result


if __name__ == "__main__":
    main()
