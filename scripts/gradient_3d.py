"""One probed 3D FWI gradient on a model whose full wavefield storage does not fit (issue #15).

The case: the SYNTHETIC 3D thrust model (:func:`models.synthetic_thrust_3d`, 25 m, 20-point
absorbing layers, space order 8) and its smoothed initial model, one source at the centre
(50 m deep), receivers on an areal grid every 50 m at 12.5 m depth, a 10 Hz Ricker, 3 s.
The default grid, 281 × 281 × 141, needs 148 GB for full storage (more than 5× a 24 GB machine);
the probed gradient (r = 32 QR probes) needs about 1.5 GB.

Stages, each written to ``--out`` as soon as it is done (``record.json``, ``gradient_3d.h5``,
PNG slices); a rerun with the same configuration resumes after the last finished stage, a
different configuration in the same folder is refused (``--overwrite`` starts afresh):

1. ``data``    observed data in the true model (plain forward modelling);
2. ``timing``  the operators are compiled first, then, interleaved ``--repeat`` times, a plain
   forward + plain adjoint (no storage, the time baseline) and the probed gradient (probe
   design from the data + probed forward + probed adjoint); records the ratio of the minima,
   the peak working memory of each (peak RSS − RSS before; Linux ``VmHWM``) and writes the
   gradient (HDF5 and PNG slices);
3. ``memory``  what every strategy needs for this model by formula (float32):

   - full storage ``(nt+1)·N_h`` (``N_h`` the padded grid with the stencil halo),
   - Nyquist-subsampled storage ``⌈(nt+1)/k⌉·N + 3·N_h`` (``k`` the probing's subsampling
     factor, the Poisson bound of the source spectrum),
   - optimal checkpointing ``(2c+3)·N_h`` with ``c`` checkpoints of the two time levels of u
     holding as much as the probed gradient, and Revolve's forward steps ``t·l − C(c+t, c+1)``
     (``t`` the smallest repetition number with ``C(c+t, c) ≥ l``, ``l = nt − 1`` steps),
   - probing ``(r+B+1)·N_r`` (``N_r`` the probe region: physical domain + 4 points per side,
     :func:`timeprobe.probe_buffers.region_shape`);

4. ``small``   on a smaller 3D model where the exact gradient fits (``--small``): the exact
   (full-storage) gradient, the probed one (goal: cosine ≥ 0.97 at r = 32), Nyquist-subsampled
   storage and optimal checkpointing at the probed gradient's memory, each run twice (the first
   builds its operators; not with ``--quick``) and measured the second time: time, peak working memory next to its
   formula, and the cosine with the exact gradient.

Progress goes to a tqdm bar (one step per stage and sub-step). Usage::

    python scripts/gradient_3d.py                                  # the full case (lead machine)
    python scripts/gradient_3d.py --shape 121 121 61 --t 1500 --out results/g3d_reduced
    python scripts/gradient_3d.py --quick --out /tmp/g3d           # tiny grids, seconds (tests)
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DEVITO_LANGUAGE", "openmp")
os.environ.setdefault("DEVITO_LOGGING", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402

import timeprobe as tp  # noqa: E402
from models import initial_model, synthetic_thrust_3d  # noqa: E402
from timeprobe import acquisition as acq  # noqa: E402
from timeprobe.compat import release  # noqa: E402
from timeprobe.geometry import (computational_axis, from_computational, from_computational_adjoint,  # noqa: E402
                                to_computational)
from timeprobe.io import peak_memory_mb, reset_peak_memory  # noqa: E402
from timeprobe.operators import adjoint_operator, forward_operator  # noqa: E402
from timeprobe.probe_buffers import probe_layout, region_shape  # noqa: E402
from timeprobe.probing import DEFAULT_BLOCK, ProbingOptions, probes_for_shot  # noqa: E402
from timeprobe.propagators import run_adjoint, run_forward  # noqa: E402
from timeprobe.workspace import use_model  # noqa: E402

STAGES = ("data", "timing", "memory", "small")
GIB = 1024.0 ** 3
MIB = 1024.0 ** 2


# --------------------------------------------------------------------------- configuration
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[281, 281, 141], metavar=("NX", "NY", "NZ"),
                    help="grid of the main case (points, 25 m spacing by default)")
    ap.add_argument("--spacing", type=float, default=25.0, help="grid spacing (m)")
    ap.add_argument("--nbl", type=int, default=20, help="absorbing-layer points per side")
    ap.add_argument("--t", type=float, default=3000.0, help="recording time (ms)")
    ap.add_argument("--f0", type=float, default=0.010, help="Ricker peak frequency (kHz)")
    ap.add_argument("--rec-spacing", type=float, default=50.0, help="receiver grid spacing (m)")
    ap.add_argument("--ps", type=int, default=32, help="number of probes r")
    ap.add_argument("--block", type=int, default=None, help=f"snapshots per block B (default {DEFAULT_BLOCK})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved timing repeats (minimum kept)")
    ap.add_argument("--small", type=int, nargs=3, default=[81, 81, 41], metavar=("NX", "NY", "NZ"),
                    help="grid of the smaller model where the exact gradient fits")
    ap.add_argument("--small-t", type=float, default=1500.0, help="recording time of the smaller model (ms)")
    ap.add_argument("--skip-small", action="store_true", help="leave out stage 'small'")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time (with OMP_NUM_THREADS=1 on a shared machine it leaves out "
                         "the time the process waits for a core)")
    ap.add_argument("--out", default="results/gradient_3d")
    ap.add_argument("--overwrite", action="store_true", help="start afresh in an existing --out")
    ap.add_argument("--quick", action="store_true", help="tiny grids, r = 8 (a test run of seconds)")
    ap.add_argument("--sum-padding", type=int, choices=(0, 1), default=1,
                    help="1 (default): exact derivatives, probe fields over the padded grid; 0: the "
                         "physical part (exact on every point but the outermost), probe fields skip the layers")
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    if a.quick:
        a.shape, a.small, a.nbl, a.t, a.small_t, a.ps, a.f0, a.rec_spacing = \
            [31, 29, 21], [23, 21, 17], 10, 500.0, 400.0, 8, 0.015, 100.0
    for name in ("shape", "small"):
        if any(n < 5 for n in getattr(a, name)):
            raise SystemExit(f"--{name} needs at least 5 points per axis, got {getattr(a, name)}")
    if a.ps < 1 or a.repeat < 1 or a.t <= 0 or a.small_t <= 0 or a.spacing <= 0:
        raise SystemExit("--ps, --repeat, --t, --small-t and --spacing must be positive")
    return a


def config_of(a):
    """What the results depend on (a resumed run must have the same)."""
    return {k: getattr(a, k) for k in ("shape", "spacing", "nbl", "t", "f0", "rec_spacing", "ps", "block",
                                       "seed", "small", "small_t", "skip_small", "quick", "clock", "repeat",
                                       "sum_padding")}


# --------------------------------------------------------------------------- run folder
class Run:
    """The output folder: ``record.json`` (configuration, finished stages), HDF5, PNGs."""

    def __init__(self, out, config, overwrite):
        self.out = Path(out)
        self.path = self.out / "record.json"
        self.h5 = self.out / "gradient_3d.h5"
        if self.path.exists() and overwrite:
            for p in [self.path, self.h5, self.out / "data.h5", self.out / "data_small.h5",
                      *self.out.glob("*.png")]:
                if p.exists():
                    p.unlink()
        if self.path.exists():
            self.record = json.loads(self.path.read_text())
            if self.record["config"] != config:
                raise SystemExit(f"{self.out} holds a run with another configuration "
                                 f"({self.record['config']}); choose another --out or pass --overwrite")
        else:
            if self.out.exists() and any(self.out.iterdir()) and not overwrite:
                raise SystemExit(f"{self.out} exists and is not a gradient_3d run folder; choose another --out")
            self.out.mkdir(parents=True, exist_ok=True)
            self.record = dict(config=config, stages={}, machine=machine())
            self.save()

    def done(self, stage):
        return stage in self.record["stages"]

    def finish(self, stage, values):
        values["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        self.record["stages"][stage] = values
        self.save()

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=1, default=float))
        tmp.replace(self.path)  # atomic: a crash never leaves half a record

    def write_arrays(self, group, **arrays):
        import h5py
        with h5py.File(self.h5, "a") as f:
            g = f.require_group(group)
            for k, v in arrays.items():
                if k in g:
                    del g[k]  # the stage is being redone (it had not finished)
                g.create_dataset(k, data=v)


def machine():
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":")[1].strip()
    except OSError:
        pass
    import devito
    return dict(host=platform.node(), processor=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), memory=mem, commit=commit, devito=devito.__version__,
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"), python=platform.python_version())


# --------------------------------------------------------------------------- the case
def case(shape, a, t):
    """True and initial model (dt the stabler of the two), source, receivers, wavelet."""
    # 500 m of water, or a fifth of the depth on small grids (whole grid rows)
    water = min(500.0, a.spacing * round(0.2 * (shape[2] - 1)))
    true = synthetic_thrust_3d(*shape, spacing=a.spacing, water_depth=water, nbl=a.nbl, space_order=8)
    init = initial_model(true, sigma_m=12 * a.spacing)
    true.dt = init.dt = min(true.critical_dt, init.critical_dt)
    (x0, x1), (y0, y1) = true.domain_bounds[0], true.domain_bounds[1]
    src = np.array([[(x0 + x1) / 2, (y0 + y1) / 2, 50.0]])
    rec = acq.grid((x0, x1), (y0, y1), a.rec_spacing, depth=12.5, centred=True)
    survey = acq.survey(true, src, rec, dt=4.0, t=t, f0=a.f0)
    return true, init, survey.q, survey.rec


def sizes(model, nt, k, r, B, layers=True):
    """Grid sizes (points) and the float32 memory formulas (bytes) of every strategy (``layers``:
    the probe fields cover the absorbing layers, sum_padding=True)."""
    so = model.space_order
    N = int(np.prod(model.shape_padded))
    N_h = int(np.prod([n + 2 * so for n in model.shape_padded]))  # Devito's halo: space_order per side
    N_r = int(np.prod(region_shape(model, layers)))
    nsub = -(-(nt + 1) // k)
    probe = (r + B + 1) * N_r
    c = max(1, probe // (2 * N_h))  # checkpoints holding as much as the probed gradient
    steps = nt - 1
    rep = 0
    while math.comb(c + rep, c) < steps:
        rep += 1
    fwd_steps = rep * steps - math.comb(c + rep, c + 1)
    return dict(N=N, N_h=N_h, N_r=N_r, nt=nt, k=k, r=r, B=B, checkpoints=c, revolve_forward_steps=fwd_steps,
                revolve_recompute_factor=fwd_steps / steps,
                bytes=dict(full=4.0 * (nt + 1) * N_h, nyquist=4.0 * (nsub * N + 3 * N_h),
                           checkpointing=4.0 * (2 * c + 3) * N_h, probing=4.0 * probe),
                formulas=dict(full="(nt+1)·N_h", nyquist="⌈(nt+1)/k⌉·N + 3·N_h",
                              checkpointing="(2c+3)·N_h", probing="(r+B+1)·N_r"))


def save_data(path, d):
    import h5py
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=d.arrays[0])


def load_data(path, rec):
    import h5py
    with h5py.File(path, "r") as f:
        return tp.Data(rec, [f["d"][()]])


def observed(run, name, true, q, rec):
    path = run.out / name
    if path.exists():
        return load_data(path, rec)
    d = tp.forward(true, q, rec)
    save_data(path, d)
    return d


# --------------------------------------------------------------------------- measurement
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def measured(fn, clock="wall"):
    """``(result, seconds, peak working memory MiB)`` of ``fn()``: peak RSS during the call
    minus RSS before it (freed heap pages handed back first); ``clock`` wall or CPU time."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    reset_peak_memory()
    before = rss_mb()
    t = CLOCK[clock]()
    out = fn()
    seconds = CLOCK[clock]() - t
    return out, seconds, peak_memory_mb() - before


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class Shot:
    """One shot on the computational axis, with the adjoint source of the initial model."""

    def __init__(self, init, q, d):
        self.model, self.d = init, d
        self.dt, self.nt = computational_axis(init, q.geometry, d.geometry)
        self.wc = to_computational(q.arrays[0], q.geometry, self.dt, self.nt)
        self.sc, self.rc = q.geometry.coordinates[0], d.geometry.coordinates[0]
        rec_c, _ = run_forward(init, self.sc, self.wc, self.rc, self.dt, self.nt)
        res = from_computational(rec_c, d.geometry[0], self.dt, self.nt) - d.arrays[0]
        self.y = (d.dt / self.dt) * from_computational_adjoint(res, d.geometry[0], self.dt, self.nt)

    def probing(self, opts, seed):
        return probes_for_shot(opts, self.wc, self.dt, self.nt, self.d, np.random.default_rng(seed))

    def compile(self, probing):
        """Build every operator the timed runs use (code generation is not timed)."""
        with use_model(self.model) as ws:
            forward_operator(ws)
            adjoint_operator(ws)
            forward_operator(ws, probing=probe_layout(probing, self.model))
            adjoint_operator(ws, probing=probe_layout(probing, self.model, direct=True))

    def plain(self):
        run_forward(self.model, self.sc, self.wc, self.rc, self.dt, self.nt)
        run_adjoint(self.model, self.rc, self.y, self.dt, self.nt)

    def probed(self, opts, seed):
        p = self.probing(opts, seed)
        _, ubar = run_forward(self.model, self.sc, self.wc, self.rc, self.dt, self.nt, probing=p)
        g = run_adjoint(self.model, self.rc, self.y, self.dt, self.nt, probing=p, ubar=ubar, restore_ubar=False)[1]
        release(ubar)
        return self.model.unpad(g)


# --------------------------------------------------------------------------- stages
def stage_timing(run, a, shot, opts, bar):
    p = shot.probing(opts, a.seed)
    bar.set_postfix_str("compiling")
    shot.compile(p)
    plain_s, probed_s, plain_mb, probed_mb, g = [], [], [], [], None
    for i in range(a.repeat):
        bar.set_postfix_str(f"plain forward + adjoint ({i + 1}/{a.repeat})")
        _, s, mb = measured(shot.plain, a.clock)
        plain_s.append(s)
        plain_mb.append(mb)
        bar.set_postfix_str(f"probed gradient ({i + 1}/{a.repeat})")
        g, s, mb = measured(lambda: shot.probed(opts, a.seed), a.clock)
        probed_s.append(s)
        probed_mb.append(mb)
    run.write_arrays("main", gradient=g)
    plot(run, g, shot.model, "gradient_probed.png", f"probed gradient, r = {a.ps}")
    return dict(nt=shot.nt, dt=shot.dt, k=p.subsample, B=p.block, r=p.r, clock=a.clock, plain_s=plain_s,
                probed_s=probed_s,
                ratio=min(probed_s) / min(plain_s), plain_peak_mb=max(plain_mb), probed_peak_mb=max(probed_mb),
                probed_working_mb=max(probed_mb) - max(plain_mb))


def stage_small(run, a, opts, bar):
    from timeprobe.strategies import gradient
    true, init, q, rec = case(a.small, a, a.small_t)
    bar.set_postfix_str("small model: observed data")
    d = observed(run, "data_small.h5", true, q, rec)
    shot = Shot(init, q, d)
    p = shot.probing(opts, a.seed)
    sz = sizes(init, shot.nt, p.subsample, p.r, p.block, p.layers)
    rows = {}
    sp = dict(sum_padding=bool(a.sum_padding))

    def one(name, fn, formula_bytes):
        bar.set_postfix_str(f"small model: {name}")
        if not a.quick:
            fn()  # builds and compiles its operators: the measured run below does not count that
        (f, g), s, mb = measured(fn, a.clock)
        rows[name] = dict(seconds=s, working_mb=mb, formula_mb=formula_bytes / MIB)
        return g

    one("plain forward + adjoint", lambda: (shot.plain(), None), 0.0)
    g_exact = one("full storage", lambda: tp.fwi_objective(init, q, d, **sp), sz["bytes"]["full"])
    g_probe = one(f"probing r={p.r}",
                  lambda: tp.fwi_objective(init, q, d, ps=a.ps, seed=a.seed, block=a.block, **sp),
                  sz["bytes"]["probing"])
    g_nyq = one(f"Nyquist k={p.subsample}", lambda: gradient(init, q, d, strategy="subsample", k=p.subsample, **sp),
                sz["bytes"]["nyquist"])
    g_cp = one(f"checkpointing c={sz['checkpoints']}",
               lambda: gradient(init, q, d, strategy="checkpoint", n_checkpoints=sz["checkpoints"], **sp),
               sz["bytes"]["checkpointing"])
    base = rows["plain forward + adjoint"]
    for name, g in ((f"probing r={p.r}", g_probe), (f"Nyquist k={p.subsample}", g_nyq),
                    (f"checkpointing c={sz['checkpoints']}", g_cp), ("full storage", g_exact)):
        rows[name]["cosine"] = cosine(g, g_exact)
        rows[name]["time_ratio"] = rows[name]["seconds"] / base["seconds"]
    run.write_arrays("small", exact=g_exact, probed=g_probe)
    plot(run, g_exact, init, "small_exact.png", "small model: exact gradient (full storage)")
    plot(run, g_probe, init, "small_probed.png", f"small model: probed gradient, r = {a.ps}")
    return dict(shape=list(init.shape), sizes=sz, rows=rows, cosine=rows[f"probing r={p.r}"]["cosine"])


def plot(run, g, model, name, title):
    from timeprobe import plotting
    fig = plotting.plot_slices(g, grid=model, clip=99.0, title=title, label="gradient (s²/km² per unit misfit)")
    plotting.save(fig, run.out / name, overwrite=True)  # a redone stage replaces its own figure


# --------------------------------------------------------------------------- main
def main(argv=None):
    from tqdm.auto import tqdm
    a = parse(argv)
    run = Run(a.out, config_of(a), a.overwrite)
    stages = [s for s in STAGES if not (s == "small" and a.skip_small)]
    opts = ProbingOptions(ps=a.ps, block=a.block, sum_padding=bool(a.sum_padding))
    bar = tqdm(total=len(stages), desc="gradient_3d", unit="stage")
    bar.update(sum(run.done(s) for s in stages))
    main_case = shot = None
    for stage in stages:
        if run.done(stage):
            continue
        bar.set_description(stage)
        if stage != "small" and main_case is None:
            bar.set_postfix_str("building the models")
            main_case = case(a.shape, a, a.t)
        if stage == "data":
            true, init, q, rec = main_case
            bar.set_postfix_str("observed data (plain forward in the true model)")
            t0 = time.perf_counter()
            observed(run, "data.h5", true, q, rec)
            plot(run, true.vp, true, "model_true.png", "true model vp (km/s)")
            run.finish("data", dict(shape=list(true.shape), padded=list(true.shape_padded),
                                    nrec=int(rec.coordinates[0].shape[0]), seconds=time.perf_counter() - t0))
        elif stage == "timing":
            true, init, q, rec = main_case
            bar.set_postfix_str("adjoint source (plain forward in the initial model)")
            shot = Shot(init, q, observed(run, "data.h5", true, q, rec))
            run.finish("timing", stage_timing(run, a, shot, opts, bar))
            shot = None
        elif stage == "memory":
            t = run.record["stages"]["timing"]
            sz = sizes(main_case[1], t["nt"], t["k"], t["r"], t["B"], bool(a.sum_padding))
            sz["gib"] = {k: v / GIB for k, v in sz["bytes"].items()}
            sz["measured_probed_working_gib"] = t["probed_working_mb"] / 1024.0
            sz["full_over_24GB"] = sz["bytes"]["full"] / 24e9
            run.finish("memory", sz)
        elif stage == "small":
            main_case = None
            gc.collect()
            run.finish("small", stage_small(run, a, opts, bar))
        bar.update()
    bar.set_postfix_str("done")
    bar.close()
    summary(run)
    if all(run.done(s) for s in stages):
        records.record(a, "gradient_3d", run.record, argv, __file__)
    return run.record


def summary(run):
    s = run.record["stages"]
    lines = [f"results in {run.out}"]
    if "timing" in s:
        t = s["timing"]
        lines.append(f"probed gradient (r={t['r']}, k={t['k']}, B={t['B']}, nt={t['nt']}): "
                     f"{min(t['probed_s']):.1f} s = {t['ratio']:.2f}× plain forward + adjoint "
                     f"({min(t['plain_s']):.1f} s); peak working memory {t['probed_working_mb'] / 1024:.2f} GiB")
    if "memory" in s:
        m = s["memory"]
        lines.append("by formula: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in m["gib"].items())
                     + f" (full storage = {m['full_over_24GB']:.1f}× 24 GB)")
    if "small" in s:
        lines.append(f"small model {s['small']['shape']}: cosine(probed, exact) = {s['small']['cosine']:.4f}")
        for name, r in s["small"]["rows"].items():
            lines.append(f"  {name:28s} {r['seconds']:7.2f} s  working {r['working_mb']:9.1f} MiB  "
                         f"formula {r['formula_mb']:9.1f} MiB" + (f"  cosine {r['cosine']:.4f}" if "cosine" in r else ""))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
