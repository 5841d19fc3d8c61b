#!/usr/bin/env python
"""2D Overthrust FWI: multiscale, exact gradient versus probed gradients, through timeprobe.fwi.

Every run solves, band after band (low-pass corners ``--bands``, the last one the
unfiltered data), by SPG with velocity bounds and a fixed water layer::

    min_m  f_k(m) = ½ Σ_{i ∈ B_k} dt_d ‖R P_i u_i(m; L q_i) − L d_i‖²,    1/vmax² ≤ m ≤ 1/vmin²

with ``L`` the band's zero-phase filter, ``B_k`` a random batch of shots drawn afresh at
iteration ``k`` from ``(seed, k)`` (identical for every run), and the exact gradient
(``ps=None``, full wavefield storage: (nt+1)·N floats) or the probed one (``ps=r``:
r·N floats plus a B·N ring buffer) — :func:`timeprobe.fwi` does all of it.

Acquisition (seed, scaled to the model): sources every 200 m at 50 m depth,
receivers every 50 m at 25 m depth (all shots see all receivers), 3 s records
at 4 ms, 8 Hz Ricker.

Default (``python scripts/fwi_overthrust.py``): the full 2D Overthrust (801×207 at
25 m, not coarsened), bands 4 Hz, 6 Hz and the full data, 5 iterations per band,
batches of 4 shots, exact and probed r = 32 (QR). The summary table gives, per run,
the wall time, the working memory (peak resident memory during the run above the
memory held when it started, :func:`timeprobe.io.reset_peak_memory`) and the relative
model error. ``--quick``: the 401×121 window coarsened ×2, 2 bands × 2 iterations
(a few minutes); tests pass explicit tiny settings.

Outputs, in a fresh folder (``results/fwi-<time>`` unless ``--out``; never
overwritten): per run ``<run>.h5`` (per iteration: model, objective, band, time, peak
memory, relative model error) and the resumable run folder of :func:`timeprobe.fwi`
(``<run>/result.h5``, ``state.h5``, ``qc/``), PNG figures, and a final summary (printed
and in ``summary.json``). The summary table (per run: time, working memory, model error) is
appended as one record (script ``fwi_overthrust``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``), except with ``--quick`` or ``--no-record``.
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
sys.path.insert(0, str(ROOT / "scripts"))

import records  # noqa: E402

import timeprobe as tp  # noqa: E402
from timeprobe.io import (ResultsWriter, new_run_dir, peak_memory_mb, reset_peak_memory,  # noqa: E402
                          resident_memory_mb)
from timeprobe.optimize import detect_water_rows, water_mask  # noqa: E402
from timeprobe.propagators import computational_axis  # noqa: E402


# --------------------------------------------------------------------------- arguments
def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="2D", choices=["small", "2D", "synthetic"],
                   help="Overthrust file (2D: 801x207, small: 401x121 window) or the built-in synthetic model")
    p.add_argument("--model-file", default=None, help="explicit Overthrust HDF5 file (datasets n, d, o, m, m0)")
    p.add_argument("--synthetic-size", type=int, nargs=2, default=None, metavar=("NX", "NZ"),
                   help="grid of the synthetic model (default: the Overthrust size)")
    p.add_argument("--coarsen", type=int, default=1, help="keep every k-th grid point (spacing ×k)")
    p.add_argument("--bands", type=float, nargs="+", default=[4.0, 6.0, 0.0],
                   help="low-pass corners (Hz) of the frequency bands, low first; 0: the unfiltered data")
    p.add_argument("--iterations", type=int, nargs="+", default=[5],
                   help="SPG iterations per band (one number: the same for every band)")
    p.add_argument("--ps", type=int, nargs="+", default=[32], help="numbers of probes of the probed runs")
    p.add_argument("--modes", nargs="+", default=["QR"], help="probe designs (QR, rademacher, gaussian, dft, ...)")
    p.add_argument("--no-exact", action="store_true", help="skip the standard (exact gradient) run")
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
    p.add_argument("--quick", action="store_true", help="a few minutes (not recorded): overthrust_small coarsened x2, "
                                                        "bands 4 Hz and full, 2 iterations each")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    records.add_arguments(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        defaults = build_parser().parse_args([])
        for name, value in (("model", "small"), ("coarsen", 2), ("bands", [4.0, 0.0]), ("iterations", [2])):
            if getattr(args, name) == getattr(defaults, name):
                setattr(args, name, value)
    for name in ("coarsen", "nbl"):
        v = getattr(args, name)
        if v < (0 if name == "nbl" else 1):
            parser.error(f"--{name} must be a positive integer, got {v}")
    if any(i < 0 for i in args.iterations):
        parser.error(f"--iterations must be non-negative, got {args.iterations}")
    if len(args.iterations) not in (1, len(args.bands)):
        parser.error(f"--iterations takes one number or one per band ({len(args.bands)}), got {args.iterations}")
    if any(b < 0 for b in args.bands) or any(b == 0 for b in args.bands[:-1]):
        parser.error(f"--bands must be positive low-pass corners (Hz), 0 (unfiltered) only last; got {args.bands}")
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


def bands_khz(args):
    """``--bands`` (Hz, 0 = unfiltered) as :func:`timeprobe.fwi` bands (kHz, None = unfiltered)."""
    return [b / 1e3 if b > 0 else None for b in args.bands]


def iterations_per_band(args):
    return args.iterations * len(args.bands) if len(args.iterations) == 1 else list(args.iterations)


# --------------------------------------------------------------------------- setup
def coarsen_model(model, k):
    """Every k-th grid point (spacing ×k); k = 1 returns the model unchanged."""
    if k == 1:
        return model
    m = model.m[::k, ::k]
    return tp.Model(m=m, spacing=tuple(s * k for s in model.spacing), origin=model.origin, nbl=model.nbl,
                    space_order=model.space_order)


def load_models(args, log=print):
    """``(true, initial, label)`` on the run grid, both with the same time step.

    The Overthrust file is looked up locally (``--model-file``, ``$TIMEPROBE_DATA``, the
    shared folder, the cache) and otherwise downloaded from the public SLIM server into
    the cache and verified (:func:`models.find_overthrust`); offline (or with
    ``$TIMEPROBE_OFFLINE`` set) the run falls back to the synthetic thrust model and says
    so loudly. An explicit ``--model-file`` that is missing is an error, not a fallback.
    """
    kw = dict(nbl=args.nbl, space_order=args.space_order)
    if args.model == "synthetic":
        from models import initial_model, synthetic_thrust
        nx, nz = args.synthetic_size or (401, 121)
        true = synthetic_thrust(nx=nx, nz=nz, spacing=(25.0, 25.0), water_depth=min(500.0, 25.0 * (nz // 6)),
                                **kw)
        init = initial_model(true, 300.0)
        label = f"synthetic thrust model {nx}x{nz} (NOT Overthrust)"
    else:
        from models import OVERTHRUST_URLS, initial_model, overthrust_pair, synthetic_thrust
        try:
            search = [args.model_file] if args.model_file else None
            true, init = overthrust_pair(args.model, search=search, use_defaults=args.model_file is None,
                                         download=args.model_file is None, **kw)
            label = f"SEG/EAGE Overthrust ({args.model})"
        except FileNotFoundError as e:
            if args.model_file:  # an explicit file that is missing is an error, not a fallback
                raise
            nx, nz = {"small": (401, 121), "2D": (801, 207)}[args.model]
            bar = "!" * 78
            lines = str(e).splitlines()
            # the lookup error's first line, and why the download did not happen
            why = [lines[0].replace(" Looked in:", "")] + [ln.strip() for ln in lines[lines.index("Download:") + 1:]
                                if ln.startswith("  ")][:2] if "Download:" in lines else lines[:1]
            log(f"{bar}\n!! " + "\n!! ".join(why) + f"\n!! FALLING BACK to the SYNTHETIC thrust model {nx}x{nz} "
                f"(NOT the SEG/EAGE Overthrust).\n!! Set TIMEPROBE_DATA or --model-file, or connect to the internet "
                f"(download from {OVERTHRUST_URLS[0]}), to use the real model.\n{bar}")
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


def observed_data(model, q, rec_geom, client=None):
    """Shot records modelled in the true model (all shots; in parallel with a Dask client)."""
    if client is None:
        return tp.forward(model, q, rec_geom)
    futs = [client.submit(_forward_one, model, q[[i]], rec_geom[[i]], pure=True, retries=3)
            for i in range(q.nshots)]
    return tp.Data(rec_geom, [f.result() for f in futs])


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
def run_fwi(name, ps, mode, true, init, q, d, args, out, client=None, log=print):
    """One multiscale FWI run through :func:`timeprobe.fwi`; its working memory is the peak resident
    memory during the run above what the process held when it started (peaks reset first)."""
    mem_floats, nt, N = gradient_memory(init, q, d.geometry, ps)
    water_rows = detect_water_rows(init)
    writer = ResultsWriter(out / f"{name}.h5", attrs=dict(
        run=name, ps=-1 if ps is None else ps, mode="exact" if ps is None else mode, seed=args.seed,
        batch=args.batch or q.nshots, bands_hz=args.bands, iterations=iterations_per_band(args), nt=nt, N=N,
        gradient_floats=mem_floats, gradient_memory_mb=mem_floats * 4 / 2**20, vmin=args.vmin, vmax=args.vmax,
        water_rows=water_rows, command=" ".join(sys.argv)))
    err0 = relative_error(init.vp, true.vp)
    writer.append(iteration=0, band=-1, m=init.m, vp=init.vp, objective=np.nan, rel_error=err0, time=0.0,
                  peak_memory=peak_memory_mb())
    hist = {"rel_error": [err0], "objective": [np.nan], "time": [0.0], "band": [-1]}

    def record(info):
        vp = (1.0 / np.sqrt(info["m"])).astype(np.float32)
        err = relative_error(vp, true.vp)
        writer.append(iteration=info["iteration"], band=info["band"], m=info["m"], vp=vp, objective=info["f"],
                      rel_error=err, time=info["time"], nfev=info["nfev"], peak_memory=peak_memory_mb())
        for k, v in (("rel_error", err), ("objective", info["f"]), ("time", info["time"]), ("band", info["band"])):
            hist[k].append(v)

    reset = reset_peak_memory()
    base_mb = resident_memory_mb()
    t0 = time.perf_counter()
    res = tp.fwi(init, q, d, bands=bands_khz(args), iterations=iterations_per_band(args),
                 batch=args.batch, ps=ps, mode=mode, seed=args.seed, vmin=args.vmin, vmax=args.vmax,
                 water=water_rows, client=client, out=out / name, progress=not args.quiet,
                 plots=not args.no_plots, callback=record)
    elapsed = time.perf_counter() - t0
    working_mb = peak_memory_mb() - base_mb if reset else float("nan")
    vp = res.model.vp
    writer.set_attrs(messages=res.messages, nit=res.iterations, elapsed=elapsed, working_memory_mb=working_mb,
                     final_rel_error=relative_error(vp, true.vp))
    log(f"  {name}: {res.iterations} iterations, {elapsed:.1f} s, working memory {working_mb:.0f} MiB, "
        f"relative model error {err0:.4f} -> {hist['rel_error'][-1]:.4f} ({'; '.join(res.messages)})")
    return dict(name=name, ps=ps, mode=mode, vp=vp, hist=hist, time=elapsed, nit=res.iterations,
                nfev=int(np.sum(res.history["nfev"][-1:])) if len(res.history["nfev"]) else 0,
                rel_error=relative_error(vp, true.vp), rel_error0=err0, gradient_floats=mem_floats, nt=nt, N=N,
                working_memory_mb=working_mb, peak_memory=peak_memory_mb(), h5=str(writer.path))


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
    if not args.no_exact:
        runs_spec.append((None, None))
    dt, nt = computational_axis(init, q.geometry, rec_geom)
    log(f"{label}: grid {init.shape} at {init.spacing} m (padded {init.shape_padded}), {q.nshots} shots, "
        f"{rec_geom.npoints(0)} receivers, nt = {nt} steps of {dt} ms, bands {args.bands} Hz, "
        f"{iterations_per_band(args)} iterations, batch {args.batch or q.nshots}, seed {args.seed} -> {out}")
    client = None
    own_client = False
    if args.scheduler:
        from timeprobe.parallel import get_client
        client = get_client(args.scheduler)
    elif args.workers > 1:
        from timeprobe.parallel import local_client
        client = local_client(args.workers)
        own_client = True
    runs = []
    try:
        t0 = time.perf_counter()
        d = observed_data(true, q, rec_geom, client=client)
        log(f"observed data: {q.nshots} shots modelled in {time.perf_counter() - t0:.1f} s")
        for ps, mode in runs_spec:
            name = run_name(ps, mode)
            log(f"run {name}")
            runs.append(run_fwi(name, ps, mode, true, init, q, d, args, out, client=client, log=log))
            if not args.no_plots:
                plot_all(runs, true, init, label, out)
    finally:
        if own_client:
            from timeprobe.parallel import close_client
            close_client(client)
    summary = summarize(runs, label, args, out)
    log(summary["text"])
    figures = dict(label=label, shape=init.shape, spacing=init.spacing, nshots=q.nshots, nt=nt, dt=dt,
                   bands_hz=args.bands, iterations=iterations_per_band(args), batch=args.batch or q.nshots,
                   seed=args.seed, workers=args.workers, out=str(out),
                   runs=[{k: v for k, v in r.items() if k != "h5"} for r in summary["runs"]])
    summary["record"] = records.record(args, "fwi_overthrust", figures, argv, __file__)
    return summary


def summarize(runs, label, args, out):
    exact = next((r for r in runs if r["ps"] is None), None)
    lines = [f"FWI summary — {label}",
             f"{'run':<18}{'time s':>9}{'vs exact':>10}{'working MiB':>13}{'vs exact':>10}{'grad. MiB':>11}"
             f"{'rel. error':>12}{'(initial)':>11}"]
    rows = []
    for r in runs:
        mem_mb = r["gradient_floats"] * 4 / 2**20
        full_storage = exact["gradient_floats"] if exact else (r["nt"] + 1) * r["N"]
        ratio = full_storage / r["gradient_floats"]
        speed = exact["time"] / r["time"] if exact else float("nan")
        work = exact["working_memory_mb"] / r["working_memory_mb"] if exact else float("nan")
        rel = r["rel_error"] / exact["rel_error"] if exact else float("nan")
        lines.append(f"{r['name']:<18}{r['time']:>9.1f}{speed:>9.2f}x{r['working_memory_mb']:>13.0f}{work:>9.1f}x"
                     f"{mem_mb:>11.1f}{r['rel_error']:>12.4f}{r['rel_error0']:>11.4f}")
        rows.append(dict(name=r["name"], ps=r["ps"], mode=r["mode"], rel_error=r["rel_error"],
                         rel_error0=r["rel_error0"], time=r["time"], speedup_vs_exact=speed, nit=r["nit"],
                         working_memory_mb=r["working_memory_mb"], working_memory_ratio_vs_exact=work,
                         gradient_memory_mb=mem_mb, memory_ratio_vs_exact=ratio, error_ratio_vs_exact=rel,
                         nt=r["nt"], N=r["N"], h5=r["h5"]))
    lines.append("time: wall clock of the run; working memory: peak resident memory above the run's start; "
                 "grad.: the gradient's stored fields ((nt+1)·N or (r+B)·N floats)")
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
