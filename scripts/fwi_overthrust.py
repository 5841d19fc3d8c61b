#!/usr/bin/env python
"""2D Overthrust FWI: standard (exact gradient) versus probed gradients (the seed's comparison).

Every run solves, by SPG with velocity bounds and a fixed water layer::

    min_m  f_k(m) = ½ Σ_{i ∈ B_k} dt_d ‖R P_i u_i(m) − d_i‖²,    1/vmax² ≤ m ≤ 1/vmin²

with ``B_k`` a random batch of shots drawn afresh at iteration ``k`` from
``(seed, k)`` (identical for every run), the exact gradient (``ps=None``, full
wavefield storage: (nt+1)·N floats) or the probed one (``ps=r``: r·N floats plus a
B·N ring buffer). The gradient is scaled so that its first max-norm is 1
(:class:`timeprobe.optimize.ScaledObjective`; SPG's first step then changes m by
≤10 %).

Acquisition (seed, scaled to the model): sources every 200 m at 50 m depth,
receivers every 50 m at 25 m depth (all shots see all receivers), 3 s records
at 4 ms, 8 Hz Ricker.

Outputs, in a fresh folder (``results/fwi-<time>`` unless ``--out``; never
overwritten): ``<run>.h5`` per run (per iteration: model, objective, time, peak
memory, relative model error), PNG figures, and a final summary (printed and
in ``summary.json``).

Default (``python scripts/fwi_overthrust.py``): overthrust_small (401×121, 25 m)
coarsened ×2, batches of 2 shots, 8 iterations, exact vs probed r=32 (QR) —
about 10 minutes on 2 cores. ``--full``: overthrust_2D, all shots, 20 iterations.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import timeprobe as tp  # noqa: E402
from timeprobe.io import ResultsWriter, new_run_dir, peak_memory_mb  # noqa: E402
from timeprobe.optimize import ScaledObjective, ShotBatches, slowness_bounds, spg, water_mask  # noqa: E402
from timeprobe.propagators import computational_axis  # noqa: E402


# --------------------------------------------------------------------------- arguments
def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="small", choices=["small", "2D", "synthetic"],
                   help="Overthrust file (small: 401x121 window, 2D: 801x207) or the built-in synthetic model")
    p.add_argument("--model-file", default=None, help="explicit Overthrust HDF5 file (datasets n, d, o, m, m0)")
    p.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("NX", "NZ"),
                   help="grid of the synthetic model (default: the Overthrust size)")
    p.add_argument("--coarsen", type=int, default=2, help="keep every k-th grid point (spacing ×k)")
    p.add_argument("--ps", type=int, nargs="+", default=[32], help="numbers of probes of the probed runs")
    p.add_argument("--modes", nargs="+", default=["QR"], help="probe designs (QR, rademacher, gaussian, dft, ...)")
    p.add_argument("--no-exact", action="store_true", help="skip the standard (exact gradient) run")
    p.add_argument("--iterations", type=int, default=8, help="SPG iterations per run")
    p.add_argument("--batch", type=int, default=4, help="shots per iteration (fresh random batch each iteration)")
    p.add_argument("--seed", type=int, default=1, help="seed of batches and probes (same for every run)")
    p.add_argument("--src-spacing", type=float, default=200.0, help="source interval (m)")
    p.add_argument("--src-depth", type=float, default=50.0, help="source depth (m)")
    p.add_argument("--rec-spacing", type=float, default=50.0, help="receiver interval (m)")
    p.add_argument("--rec-depth", type=float, default=25.0, help="receiver depth (m)")
    p.add_argument("--tmax", type=float, default=3000.0, help="record length (ms)")
    p.add_argument("--dt-data", type=float, default=4.0, help="data sampling (ms)")
    p.add_argument("--f0", type=float, default=8.0, help="Ricker peak frequency (Hz)")
    p.add_argument("--vmin", type=float, default=1.3, help="lower velocity bound (km/s)")
    p.add_argument("--vmax", type=float, default=6.5, help="upper velocity bound (km/s)")
    p.add_argument("--nbl", type=int, default=40, help="absorbing layer width (grid points)")
    p.add_argument("--space-order", type=int, default=8)
    p.add_argument("--workers", type=int, default=1, help="Dask workers (>1: a LocalCluster)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (instead of --workers)")
    p.add_argument("--out", default=None, help="run folder (must not exist or be empty); default: new under ./results")
    p.add_argument("--results", default="results", help="parent of the default run folder")
    p.add_argument("--full", action="store_true", help="the full experiment: overthrust_2D, no coarsening, "
                                                       "all shots per iteration, 20 iterations")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.full:
        defaults = build_parser().parse_args([])
        if args.model == defaults.model:
            args.model = "2D"
        if args.coarsen == defaults.coarsen:
            args.coarsen = 1
        if args.iterations == defaults.iterations:
            args.iterations = 20
        args.batch = None  # all shots
    for name in ("coarsen", "iterations", "nbl"):
        v = getattr(args, name)
        if v < (0 if name == "nbl" else 1):
            parser.error(f"--{name} must be a positive integer, got {v}")
    if args.batch is not None and args.batch < 1:
        parser.error(f"--batch must be positive, got {args.batch}")
    if any(r < 1 for r in args.ps):
        parser.error(f"--ps values must be positive, got {args.ps}")
    from timeprobe.probing import PROBE_MODES
    bad = [m for m in args.modes if m not in PROBE_MODES]
    if bad:
        parser.error(f"unknown probe mode(s) {bad}; valid: {', '.join(PROBE_MODES)}")
    for name in ("src_spacing", "rec_spacing", "tmax", "dt_data", "f0"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


# --------------------------------------------------------------------------- setup
def coarsen_model(model, k):
    """Every k-th grid point (spacing ×k); k = 1 returns the model unchanged."""
    if k == 1:
        return model
    m = model.m[::k, ::k]
    return tp.Model(m=m, spacing=tuple(s * k for s in model.spacing), origin=model.origin, nbl=model.nbl,
                    space_order=model.space_order)


def load_models(args, log=print):
    """``(true, initial, label)`` on the run grid, both with the same time step."""
    kw = dict(nbl=args.nbl, space_order=args.space_order)
    if args.model == "synthetic":
        from models import initial_model, synthetic_thrust
        nx, nz = args.synthetic_size or (401, 121)
        true = synthetic_thrust(nx=nx, nz=nz, spacing=(25.0, 25.0), water_depth=min(500.0, 25.0 * (nz // 6)),
                                **kw)
        init = initial_model(true, 300.0)
        label = f"synthetic thrust model {nx}x{nz} (NOT Overthrust)"
    else:
        from models import initial_model, overthrust_pair, synthetic_thrust
        try:
            search = [args.model_file] if args.model_file else None
            true, init = overthrust_pair(args.model, search=search, use_defaults=args.model_file is None,
                                         download=False, **kw)
            label = f"SEG/EAGE Overthrust ({args.model})"
        except FileNotFoundError as e:
            if args.model_file:  # an explicit file that is missing is an error, not a fallback
                raise
            nx, nz = {"small": (401, 121), "2D": (801, 207)}[args.model]
            bar = "!" * 78
            log(f"{bar}\n!! {str(e).splitlines()[0]}\n!! FALLING BACK to the SYNTHETIC thrust model {nx}x{nz} "
                f"(NOT the SEG/EAGE Overthrust).\n!! Set TIMEPROBE_DATA or --model-file to use the real model.\n{bar}")
            warnings.warn("Overthrust model not found; using the synthetic thrust model", UserWarning)
            true = synthetic_thrust(nx=nx, nz=nz, spacing=(25.0, 25.0), water_depth=500.0, **kw)
            init = initial_model(true, 300.0)
            label = f"synthetic thrust model {nx}x{nz} (NOT Overthrust; file not found)"
    true, init = coarsen_model(true, args.coarsen), coarsen_model(init, args.coarsen)
    dt = min(true.critical_dt, init.critical_dt)
    true.dt = dt
    init.dt = dt
    if args.coarsen > 1:
        label += f", coarsened x{args.coarsen}"
    return true, init, label


def acquisition(model, args):
    """Sources every ``src_spacing`` m (centred), receivers every ``rec_spacing`` m; Ricker wavelets."""
    (xa, xb), (za, zb) = model.domain_bounds[0], model.domain_bounds[-1]
    for name, depth in (("source", args.src_depth), ("receiver", args.rec_depth)):
        if not za <= depth <= zb:
            raise ValueError(f"{name} depth {depth} m lies outside the model depth range [{za}, {zb}] m")
    width = xb - xa
    nsrc = int(math.floor(width / args.src_spacing + 1e-9))
    if nsrc < 1:
        raise ValueError(f"source spacing {args.src_spacing} m exceeds the model width {width} m")
    src_x = xa + args.src_spacing * (np.arange(nsrc) + 0.5) + (width - nsrc * args.src_spacing) / 2
    nrec = int(math.floor(width / args.rec_spacing + 1e-9)) + 1
    rec_x = xa + args.rec_spacing * np.arange(nrec)
    rec = np.stack([rec_x, np.full(nrec, args.rec_depth)], axis=1)
    src_geom = tp.Geometry([np.array([[x, args.src_depth]]) for x in src_x], dt=args.dt_data, t=args.tmax)
    rec_geom = tp.Geometry([rec] * nsrc, dt=args.dt_data, t=args.tmax)
    w = tp.ricker(args.f0 / 1000.0, args.dt_data, args.tmax)
    q = tp.Data(src_geom, [w] * nsrc)
    return q, rec_geom


class ObservedData:
    """Observed shot records modelled in the true model on demand (cached): batches need few shots."""

    def __init__(self, model, q, rec_geom, client=None):
        self.model, self.q, self.rec_geom, self.client = model, q, rec_geom, client
        self._cache = {}

    def __call__(self, idx):
        idx = [int(i) for i in idx]
        need = [i for i in idx if i not in self._cache]
        if need:
            if self.client is None:
                d = tp.forward(self.model, self.q[need], self.rec_geom[need])
                arrays = d.arrays
            else:
                futs = [self.client.submit(_forward_one, self.model, self.q[[i]], self.rec_geom[[i]], pure=True,
                                           retries=3) for i in need]
                arrays = [f.result() for f in futs]
            for i, a in zip(need, arrays):
                self._cache[i] = a
        return tp.Data(self.rec_geom[idx], [self._cache[i] for i in idx])


def _forward_one(model, q, rec_geom):
    return tp.forward(model, q, rec_geom).arrays[0]


def relative_error(vp, vp_true):
    """‖vp − vp_true‖₂ / ‖vp_true‖₂ (whole model)."""
    return float(np.linalg.norm(vp - vp_true) / np.linalg.norm(vp_true))


def run_name(ps, mode):
    return "exact" if ps is None else f"probed-{mode}-r{ps}"


def gradient_memory(model, q, rec_geom, ps, block=None):
    """Floats held for the gradient: (nt+1)·N (exact) or (r + B)·N (probed, B the ring buffer)."""
    dt, nt = computational_axis(model, q.geometry, rec_geom)
    N = int(np.prod(model.shape_padded))
    if ps is None:
        return (nt + 1) * N, nt, N
    B = block or max(4, min(16, ps // 4))
    return (ps + B) * N, nt, N


# --------------------------------------------------------------------------- one FWI run
def run_fwi(name, ps, mode, true, init, q, obs, args, out, client=None, log=print):
    lo, up = slowness_bounds(args.vmin, args.vmax, init.shape)
    mask = water_mask(init)
    lo, up = mask.pin_bounds(lo, up, init.m)
    batches = ShotBatches(q.nshots, args.batch or q.nshots, seed=args.seed)
    mem_floats, nt, N = gradient_memory(init, q, obs.rec_geom, ps)
    writer = ResultsWriter(out / f"{name}.h5", attrs=dict(
        run=name, ps=-1 if ps is None else ps, mode="exact" if ps is None else mode, seed=args.seed,
        batch=args.batch or q.nshots, nt=nt, N=N, gradient_floats=mem_floats,
        gradient_memory_mb=mem_floats * 4 / 2**20, vmin=args.vmin, vmax=args.vmax,
        water_rows=int((~mask.free[0]).sum()), command=" ".join(sys.argv)))
    t0 = time.perf_counter()
    state = {"f": np.nan}

    def fun(m):
        idx = batches.current
        d = obs(idx)
        f, g = tp.fwi_objective(init.with_m(m), q[idx], d, ps=ps, mode=mode,
                                seed=[args.seed, batches.iteration], client=client)
        state["f"] = f
        return f, mask(g)

    obj = ScaledObjective(fun)
    err0 = relative_error(init.vp, true.vp)
    writer.append(iteration=0, m=init.m, vp=init.vp, objective=np.nan, rel_error=err0, time=0.0,
                  peak_memory=peak_memory_mb())
    hist = {"rel_error": [err0], "objective": [np.nan], "time": [0.0]}

    def callback(x, info):
        err = relative_error(1.0 / np.sqrt(x), true.vp)
        el = time.perf_counter() - t0
        f_unscaled = info["f"] / obj.c
        writer.append(iteration=info["iteration"], m=x, vp=(1.0 / np.sqrt(x)).astype(np.float32),
                      objective=f_unscaled, rel_error=err, time=el, nfev=info["nfev"],
                      peak_memory=peak_memory_mb())
        hist["rel_error"].append(err)
        hist["objective"].append(f_unscaled)
        hist["time"].append(el)
        batches.advance()

    res = spg(obj, init.m, lo, up, maxiter=args.iterations, memory=3, return_best=False, callback=callback,
              progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    vp = 1.0 / np.sqrt(res.x)
    writer.set_attrs(message=res.message, nfev=res.nfev, nit=res.nit, elapsed=elapsed,
                     final_rel_error=relative_error(vp, true.vp))
    log(f"  {name}: {res.nit} iterations, {res.nfev} evaluations, {elapsed:.1f} s, "
        f"relative model error {err0:.4f} -> {hist['rel_error'][-1]:.4f} ({res.message})")
    return dict(name=name, ps=ps, mode=mode, vp=vp, hist=hist, time=elapsed, nit=res.nit, nfev=res.nfev,
                rel_error=relative_error(vp, true.vp), rel_error0=err0, gradient_floats=mem_floats, nt=nt, N=N,
                peak_memory=peak_memory_mb(), h5=str(writer.path))


# --------------------------------------------------------------------------- figures
def plot_all(runs, true, init, label, out):
    """models.png, profiles.png and convergence.png in ``out`` (redrawn after every run)."""
    from timeprobe import plotting
    panels = {"true": true, "initial": init, **{r["name"]: r["vp"] for r in runs}}
    plotting.plot_models(panels, grid=true, vmin=float(true.vp.min()), vmax=float(true.vp.max()), title=label,
                         path=out / "models.png", overwrite=True)
    styles = {"true": dict(color="k", lw=2), "initial": dict(color="k", ls="--")}
    plotting.plot_profiles(panels, grid=true, styles=styles, path=out / "profiles.png", overwrite=True)
    plotting.plot_convergence({r["name"]: r["hist"] for r in runs}, title=label,
                              objective_title="objective (batch of the iteration)",
                              path=out / "convergence.png", overwrite=True)


# --------------------------------------------------------------------------- main
def main(argv=None, log=print):
    args = parse_args(argv)
    true, init, label = load_models(args, log=log)
    q, rec_geom = acquisition(true, args)
    if args.batch is not None and args.batch > q.nshots:
        raise ValueError(f"--batch {args.batch} asks for more shots per iteration than the {q.nshots} shots of "
                         f"this acquisition (sources every {args.src_spacing} m over "
                         f"{true.extent[0]:.0f} m)")
    # the bounds must contain the initial model (outside the fixed water layer, which is pinned)
    free = water_mask(init).free
    v0 = init.vp[free]
    if v0.size and (v0.min() < args.vmin or v0.max() > args.vmax):
        raise ValueError(f"velocity bounds [{args.vmin}, {args.vmax}] km/s exclude the initial model "
                         f"(its vp ranges {v0.min():.3f}–{v0.max():.3f} km/s below the water)")
    if args.out:
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"--out {out} exists and is not empty; results are never overwritten")
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = new_run_dir(args.results, "fwi")
    runs_spec = [(r, m) for m in args.modes for r in args.ps]
    # probed runs first: peak memory (max RSS) is monotone in a process, so the exact run goes last
    if not args.no_exact:
        runs_spec.append((None, None))
    dt, nt = computational_axis(init, q.geometry, rec_geom)
    log(f"{label}: grid {init.shape} at {init.spacing} m (padded {init.shape_padded}), {q.nshots} shots, "
        f"{rec_geom.npoints(0)} receivers, nt = {nt} steps of {dt} ms, batch {args.batch or q.nshots}, "
        f"{args.iterations} iterations, seed {args.seed} -> {out}")
    client = None
    own_client = False
    if args.scheduler:
        from timeprobe.parallel import get_client
        client = get_client(args.scheduler)
    elif args.workers > 1:
        from timeprobe.parallel import local_client
        client = local_client(args.workers)
        own_client = True
    obs = ObservedData(true, q, rec_geom, client=client)
    runs = []
    try:
        for ps, mode in runs_spec:
            name = run_name(ps, mode)
            log(f"run {name}")
            runs.append(run_fwi(name, ps, mode, true, init, q, obs, args, out, client=client, log=log))
            if not args.no_plots:
                plot_all(runs, true, init, label, out)
    finally:
        if own_client:
            from timeprobe.parallel import close_client
            close_client(client)
    summary = summarize(runs, label, args, out)
    log(summary["text"])
    return summary


def summarize(runs, label, args, out):
    exact = next((r for r in runs if r["ps"] is None), None)
    lines = [f"FWI summary — {label}", f"{'run':<22}{'rel. error':>11}{'(initial)':>11}{'time s':>9}"
             f"{'grad. mem MB':>14}{'mem ratio':>11}{'err/exact':>11}"]
    rows = []
    for r in runs:
        mem_mb = r["gradient_floats"] * 4 / 2**20
        ratio = exact["gradient_floats"] / r["gradient_floats"] if exact else (r["nt"] + 1) * r["N"] / r["gradient_floats"]
        rel = r["rel_error"] / exact["rel_error"] if exact else float("nan")
        lines.append(f"{r['name']:<22}{r['rel_error']:>11.4f}{r['rel_error0']:>11.4f}{r['time']:>9.1f}"
                     f"{mem_mb:>14.1f}{ratio:>10.1f}x{rel:>11.3f}")
        rows.append(dict(name=r["name"], ps=r["ps"], mode=r["mode"], rel_error=r["rel_error"],
                         rel_error0=r["rel_error0"], time=r["time"], nit=r["nit"], nfev=r["nfev"],
                         gradient_memory_mb=mem_mb, memory_ratio_vs_exact=ratio, error_ratio_vs_exact=rel,
                         nt=r["nt"], N=r["N"], h5=r["h5"]))
    lines.append(f"results in {out}")
    text = "\n".join(lines)
    summary = dict(label=label, runs=rows, out=str(out), text=text, args=vars(args))
    with open(out / "summary.json", "x") as f:
        json.dump(summary, f, indent=1, default=str)
    return summary


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
