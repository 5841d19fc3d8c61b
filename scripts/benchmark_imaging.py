"""Subsurface-offset gathers, exact (in-loop) vs probed: time, working memory, cosine.

For each case (one shot; reflection data ``d − F(m0)q`` modelled once and cached on disk) and
each configuration:

* **time ÷ plain forward + adjoint** — every configuration of a case runs in *one* process,
  operators built beforehand, interleaved ``--repeats`` times (minimum kept), so the ratios
  come from the same run of the same machine state (on a shared machine they are still noisy);
* **working memory** — each configuration in its own subprocess (the method of
  ``scripts/benchmark_gradients.py``; glibc maps every allocation ≥ 128 KiB on its own there,
  the timing process keeps the default allocator): after a first run (code generation,
  compilation), the peak resident memory (VmHWM) of one plain forward modelling is the
  baseline, and the working memory is the peak of one run of the configuration minus that
  baseline (both with heap pages returned to the OS and the peak reset in between);
* **cosine with exact** — the probed gathers against the exact in-loop gathers of the same
  offsets (and imaging condition, lags) over the whole gather cube;
* the memory each configuration holds **by construction** (formula, MiB).

Configurations: ``plain`` (forward + adjoint, no storage: the time reference), ``exact_h{nh}``
(the correlation in the adjoint's time loop against the stored forward field, ``ps=None``) and
``probe_h{nh}_r{r}`` (``ps=r``, "QR" probes), for ``nh`` offsets (``--offsets``, along x at the
grid spacing, centred on 0) and ``r`` probes (``--r``); all with ``ic="as"`` and no illumination.
Extras on the first case (``--extras``): ISIC and 21 time lags at 41 offsets / r = 64.

Data: the reflection data ``d_obs − F(m0)q`` are migrated; the "QR" probes are designed from the
observed record ``d_obs`` (``probe_data``): designed from the reflections alone they miss the
forward field's early, near-source part (cosine ≈ 0.5 at r = 64 on the Overthrust shot).

Cases: ``overthrust2d`` — ``overthrust_small`` (401×121 at 25 m, nbl 40, from
``$TIMEPROBE_DATA/models``), 2 s record, 8 Hz Ricker at mid-model, 50 m depth, a receiver on every
column at 12.5 m; ``thrust3d`` — ``models.synthetic_thrust_3d`` 81×81×51 at 25 m (nbl 10), 1 s,
10 Hz, source at the centre, 11 receiver lines (exact fits: cosine measured);
``thrust3d_large`` — 241×241×121 (nbl 10), 1 s: probed only, the exact gathers cannot fit
(the JSON and the table give the formula ``(nt+1)·N_h·4 B``); ``layered2d_{nx}_{nz}`` and
``thrust3d_{nx}_{ny}_{nz}`` at other sizes (``--quick``).

Usage::

    python scripts/benchmark_imaging.py                      # overthrust2d, thrust3d (≈ 15 min on 2 cores)
    python scripts/benchmark_imaging.py --write-docs         # … and rewrite benchmarks/imaging_gathers.md
    python scripts/benchmark_imaging.py --cases thrust3d_large --offsets 41 --r 32 --note "3D, no exact"
    python scripts/benchmark_imaging.py --quick --out /tmp/bi/imaging_gathers.json   # smoke test

Every run but ``--quick`` / ``--no-record`` appends one record (script ``benchmark_imaging``, its
figures: every case's rows, sizes and the run's machine state) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``; ``--note`` is stored with it) and prints
the Markdown table. Files are written only when asked, and never replace one: ``--out FILE.json``
writes the figures there (rewritten as each case finishes) and the table beside it (``.md``),
both refused if they exist; ``--write-docs`` (a recorded run) rewrites the committed
``benchmarks/imaging_gathers.md``, naming the history record it comes from.
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
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DEVITO_LANGUAGE", "openmp")
os.environ.setdefault("DEVITO_LOGGING", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
SHARED = Path(os.environ.get("TIMEPROBE_DATA", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("TIMEPROBE_BENCH_CACHE", tempfile.gettempdir())) / "timeprobe_bench"

import records  # noqa: E402  (scripts/, on sys.path as the script's folder)
import timeprobe as tp  # noqa: E402
from bench_harness import reset_peak  # noqa: E402  (heap trimmed, peak mark reset)
from timeprobe.io import peak_memory_mb  # noqa: E402
from timeprobe.probing import DEFAULT_BLOCK  # noqa: E402

#: the committed report (--write-docs)
DOC = ROOT / "benchmarks" / "imaging_gathers.md"

MIB = 2.0 ** 20
FLOAT = 4

FULL = dict(cases=["overthrust2d", "thrust3d"], offsets=[21, 41, 81], r=[16, 32, 64], repeats=3,
            offsets3d=[21, 41], extras=True)
QUICK = dict(cases=["layered2d_61_41:600", "thrust3d_21_21_17:300"], offsets=[5], r=[8], repeats=1,
             offsets3d=[5], extras=True)
DEFAULT_T = {"overthrust2d": 2000.0, "thrust3d": 1000.0, "thrust3d_large": 1000.0}


# --------------------------------------------------------------------------- cases
def parse_case(spec):
    """``"name"`` or ``"name:T_ms"`` → (name, T)."""
    name, _, t = spec.partition(":")
    return name, float(t) if t else DEFAULT_T.get(name, 1000.0)


def models_of(case):
    """(true model, smooth background) of ``case``."""
    from models import initial_model, overthrust_pair, synthetic_thrust_3d
    if case == "overthrust2d":
        return overthrust_pair("small", search=[SHARED], download=False, nbl=40, space_order=8)
    if case.startswith("thrust3d"):
        if case == "thrust3d":
            n = (81, 81, 51)
        elif case == "thrust3d_large":
            n = (241, 241, 121)
        else:
            n = tuple(int(v) for v in case.split("_")[1:4])
        model = synthetic_thrust_3d(*n, water_depth=min(500.0, 0.2 * n[2] * 25.0), nbl=10, space_order=8)
        model0 = initial_model(model, 75.0)
        model0.dt = model.dt = min(model.critical_dt, model0.critical_dt)
        return model, model0
    if case.startswith("layered2d"):
        nx, nz = (int(v) for v in case.split("_")[1:3])
        vp = np.full((nx, nz), 1.5, np.float32)
        vp[:, nz // 3:] = 2.5
        vp[:, 2 * nz // 3:] = 3.5
        model = tp.Model(vp=vp, spacing=(25.0, 25.0), nbl=20, space_order=8)
        model0 = model.smooth(75.0)
        model0.dt = model.dt
        return model, model0
    raise ValueError(f"unknown case {case!r}")


def setup(case, t):
    """(model0, q, d, d_obs) of one shot of ``case`` recorded for ``t`` ms: the reflection data
    ``d = d_obs − F(m0)q`` (migrated) and the observed record (which designs the "QR" probes: its
    direct arrivals put the forward field's early, near-source part in the probes' span); cached."""
    model, model0 = models_of(case)
    b = model.domain_bounds
    if model.dim == 2:
        src = np.array([[0.5 * (b[0][0] + b[0][1]), 50.0]])
        rec = np.stack([b[0][0] + model.spacing[0] * np.arange(model.shape[0]),
                        np.full(model.shape[0], 12.5)], 1)
        f0 = 0.008
    else:
        src = np.array([[0.5 * (b[0][0] + b[0][1]), 0.5 * (b[1][0] + b[1][1]), 40.0]])
        xs = np.linspace(*b[0], model.shape[0])
        ys = np.linspace(*b[1], 11)
        X, Y = np.meshgrid(xs, ys, indexing="ij")
        rec = np.stack([X.ravel(), Y.ravel(), np.full(X.size, 20.0)], 1)
        f0 = 0.010
    dtd = 2.0
    q = tp.Data(tp.Geometry([src], dt=dtd, t=t), [tp.ricker(f0, dtd, t)])
    rg = tp.Geometry([rec], dt=dtd, t=t)
    CACHE.mkdir(parents=True, exist_ok=True)
    fn = CACHE / f"gathers_{case}_{t:g}.npy"
    arr = np.load(fn) if fn.exists() else None
    if arr is None or arr.shape != (2, rg.nt, rec.shape[0]):
        d1 = tp.forward(model, q, rg).arrays[0]
        d0 = tp.forward(model0, q, rg).arrays[0]
        arr = np.stack([d1 - d0, d1])
        tmp = fn.with_suffix(f".{os.getpid()}.npy")
        np.save(tmp, arr)
        os.replace(tmp, fn)
    return model0, q, tp.Data(rg, [arr[0]]), tp.Data(rg, [arr[1]])


def case_info(model0, q, d):
    from timeprobe.geometry import computational_axis
    from timeprobe.probe_buffers import region_shape
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    so = model0.space_order
    return dict(shape=list(model0.shape), shape_padded=list(model0.shape_padded), dt=float(dt), nt=int(nt),
                N=int(np.prod(model0.shape)), N_pad=int(np.prod(model0.shape_padded)),
                N_h=int(np.prod([s + 2 * so for s in model0.shape_padded])),
                N_r=int(np.prod(region_shape(model0))), nbl=model0.nbl, space_order=so,
                spacing=list(model0.spacing))


# --------------------------------------------------------------------------- configurations
def configs(case, offsets, rs, extras):
    """The configurations of one case (names → dicts)."""
    out = [dict(name="plain", kind="plain"), dict(name="plain_forward", kind="plain_forward")]
    for nh in offsets:
        out.append(dict(name=f"exact_h{nh}", kind="gathers", nh=nh, ps=None))
        out += [dict(name=f"probe_h{nh}_r{r}", kind="gathers", nh=nh, ps=r, exact=f"exact_h{nh}") for r in rs]
    if extras:
        nh, r = (41, 64) if 41 in offsets else (offsets[-1], rs[-1])
        out += [dict(name=f"exact_h{nh}_isic", kind="gathers", nh=nh, ps=None, ic="isic"),
                dict(name=f"probe_h{nh}_r{r}_isic", kind="gathers", nh=nh, ps=r, ic="isic",
                     exact=f"exact_h{nh}_isic"),
                dict(name="exact_lags21", kind="gathers", nh=1, ps=None, nlag=10),
                dict(name=f"probe_lags21_r{r}", kind="gathers", nh=1, ps=r, nlag=10, exact="exact_lags21")]
    return out


def run_config(model0, q, d, d_obs, cfg):
    """Run one configuration; returns its gathers (None for plain runs)."""
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.propagators import run_adjoint, run_forward
    if cfg["kind"].startswith("plain"):
        dt, nt = computational_axis(model0, q.geometry, d.geometry)
        wc = to_computational(q.arrays[0], q.geometry, dt, nt)
        rec, _ = run_forward(model0, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt)
        if cfg["kind"] == "plain":
            run_adjoint(model0, d.geometry.coordinates[0], rec, dt, nt)
        return None
    dx = model0.spacing[0]
    nh = cfg["nh"]
    offsets = dx * (np.arange(nh) - nh // 2)
    lags = None
    if cfg.get("nlag"):
        # τ in steps of 5·dt: the fields are correlated 2τ = 10 time steps apart per lag step
        lags = 5 * model0.dt * np.arange(-cfg["nlag"], cfg["nlag"] + 1)
    g = tp.gathers(model0, q, d, ps=cfg["ps"], offsets=offsets, lags=lags, ic=cfg.get("ic", "as"),
                   illumination=False, seed=0, probe_data=d_obs)
    return g


def expected_memory(cfg, info, extra_columns=0):
    """(formula, floats) a configuration holds by construction beyond plain modelling (float32)."""
    if cfg["kind"].startswith("plain"):
        return ("0", 0)
    N, Nh, Nr, nt = info["N"], info["N_h"], info["N_r"], info["nt"]
    nh, nlag = cfg["nh"], 2 * cfg.get("nlag", 0) + 1
    nc = 1 + len(info["shape"]) if cfg.get("ic") == "isic" else 1
    gathers = nlag * nh * N
    if cfg["ps"] is None:
        return ("(nt+1)·N_h + nlag·nh·N", (nt + 1) * Nh + gathers)
    # ring buffers of B − 1 slots (the block's last snapshot is read from the wavefield)
    r, B = cfg["ps"], DEFAULT_BLOCK
    if nc == 1 and nlag == 1:
        return ("(2r+B−1)·N_r + nh·N", (2 * r + B - 1) * Nr + gathers)
    ra = r + extra_columns
    return ("(r+r_a+B−1)·N_r + 2·nc·16·N + nlag·nh·N", (r + ra + B - 1) * Nr + 2 * nc * 16 * N + gathers)


# --------------------------------------------------------------------------- workers
def worker_memory(case, t, cfg):
    """Subprocess body: working memory of one configuration (peak − plain-modelling peak)."""
    model0, q, d, d_obs = setup(case, t)
    plain = dict(kind="plain_forward")
    run_config(model0, q, d, d_obs, plain)
    out = run_config(model0, q, d, d_obs, cfg)  # code generation, compilation, first run
    info = out.info if out is not None else {}
    del out
    ok = reset_peak()
    run_config(model0, q, d, d_obs, plain)
    base = peak_memory_mb()
    reset_peak()
    t0 = time.perf_counter()
    out = run_config(model0, q, d, d_obs, cfg)
    wall = time.perf_counter() - t0
    peak = peak_memory_mb()
    return dict(base_mb=base, peak_mb=peak, working_mb=peak - base, peak_reset=ok, wall_s=wall,
                info={k: v for k, v in info.items() if k != "ps"})


def worker_timing(case, t, cfgs, repeats, gdir):
    """Subprocess body: every configuration warmed up, then interleaved ``repeats`` times."""
    model0, q, d, d_obs = setup(case, t)
    times = {c["name"]: [] for c in cfgs}
    for c in cfgs:
        print("warm", case, c["name"], flush=True)
        t0 = time.perf_counter()
        g = run_config(model0, q, d, d_obs, c)
        times[c["name"]].append(("warm", time.perf_counter() - t0))
        if g is not None:
            np.save(Path(gdir) / f"{c['name']}.npy", g.image)
            times[c["name"] + ":info"] = {k: v for k, v in g.info.items() if k != "ps"}
        del g
    for rep in range(repeats):
        for c in cfgs:
            t0 = time.perf_counter()
            run_config(model0, q, d, d_obs, c)
            times[c["name"]].append((rep, time.perf_counter() - t0))
            print("rep", rep, c["name"], round(times[c["name"]][-1][1], 3), flush=True)
    return dict(times=times, info=case_info(model0, q, d))


def in_subprocess(payload):
    """Run one worker in a fresh interpreter; its result dict.

    Memory workers tell glibc to map every allocation of 128 KiB or more on its own
    (``MALLOC_MMAP_THRESHOLD_``), so that freed memory leaves the process and the peak is the
    run's own. Timing workers run with the allocator as users have it: with that setting every
    mid-sized temporary costs a fresh mapping and its page faults (records before 2026-12-02
    12:50Z timed with it too)."""
    env = dict(os.environ)
    if payload["mode"] == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(payload)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {payload.get('mode')} {payload.get('cfg', {}).get('name', '')} failed:\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_worker(payload):
    if payload["mode"] == "memory":
        return worker_memory(payload["case"], payload["t"], payload["cfg"])
    return worker_timing(payload["case"], payload["t"], payload["cfgs"], payload["repeats"], payload["gdir"])


# --------------------------------------------------------------------------- one case
def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure_case(case, t, offsets, rs, repeats, extras, no_exact=False):
    cfgs = configs(case, offsets, rs, extras)
    if no_exact:
        cfgs = [c for c in cfgs if c.get("ps", 0) is not None]
    rows = {c["name"]: dict(cfg=c) for c in cfgs}
    with tempfile.TemporaryDirectory() as gdir:
        print("timing", case, flush=True)
        res = in_subprocess(dict(mode="timing", case=case, t=t, cfgs=cfgs, repeats=repeats, gdir=gdir))
        info = res["info"]
        best = {n: min(v for tag, v in ts if tag != "warm") for n, ts in res["times"].items()
                if not n.endswith(":info")}
        for c in cfgs:
            row = rows[c["name"]]
            row["wall_s"] = best[c["name"]]
            row["walls_s"] = [v for _, v in res["times"][c["name"]]]
            row["time_ratio"] = best[c["name"]] / best["plain"]
            row["run_info"] = res["times"].get(c["name"] + ":info")
            if c.get("exact") and c["exact"] in rows:
                row["cosine"] = cosine(np.load(Path(gdir) / f"{c['name']}.npy"),
                                       np.load(Path(gdir) / f"{c['exact']}.npy"))
    for c in cfgs:
        if c["name"] == "plain":
            continue
        print("memory", case, c["name"], flush=True)
        try:
            rows[c["name"]]["memory"] = in_subprocess(dict(mode="memory", case=case, t=t, cfg=c))
        except RuntimeError as e:
            print(e, file=sys.stderr, flush=True)
            rows[c["name"]]["memory"] = dict(error=str(e)[-2000:])
    for c in cfgs:
        row = rows[c["name"]]
        extra = (row.get("run_info") or {}).get("lag_columns", [0])[0]
        formula, floats = expected_memory(c, info, extra)
        row["expected_formula"], row["expected_mb"] = formula, floats * FLOAT / MIB
        row["working_mb"] = row.get("memory", {}).get("working_mb")
    for c in cfgs:  # memory of the exact run of the same offsets ÷ this one
        row = rows[c["name"]]
        ex = rows.get(c.get("exact", ""), {}).get("working_mb")
        if ex and row.get("working_mb"):
            row["memory_ratio_exact"] = ex / row["working_mb"]
    nt, Nh = info["nt"], info["N_h"]
    info["exact_full_storage_gb"] = (nt + 1) * Nh * FLOAT / 1e9
    info["machine_ram_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return dict(info=info, rows=rows, meta=meta())


# --------------------------------------------------------------------------- output
def commit():
    """The short commit, marked ``-dirty`` when tracked files differ from it (the history file
    left out, :func:`records.dirty`)."""
    try:
        h = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip()
        return h + ("-dirty" if records.dirty() else "")
    except OSError:
        return "unknown"


def meta(argv=None):
    import devito
    return dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), host=platform.node(),
                cpus=os.cpu_count(), python=platform.python_version(), devito=devito.__version__,
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"), commit=commit(),
                load_avg=os.getloadavg()[0],
                command=" ".join(["python", os.path.relpath(__file__, Path.cwd())]
                                 + list(sys.argv[1:] if argv is None else map(str, argv))))


def fmt(v, spec=".2f"):
    return "—" if v is None else format(v, spec)


def markdown(results, m, raw):
    """The report of a run: ``results`` its cases, ``m`` its :func:`meta`, ``raw`` where its
    figures are (the history record, :func:`records.cite`, or a JSON file)."""
    lines = ["# Subsurface-offset gathers: exact in-loop vs probed", "",
             f"Generated by `{m['command']}` (`scripts/benchmark_imaging.py`) on {m['date']}, commit "
             f"`{m['commit']}`; machine {m['host']}, {m['cpus']} CPUs, 1-min load average {m['load_avg']:.1f}, "
             f"Python {m['python']}, devito {m['devito']}, OMP_NUM_THREADS={m['omp_num_threads']}. Raw numbers: "
             f"{raw}. Do not edit: rerun the command (with `--write-docs` for this file).", "",
             "Time ÷ plain: minimum over interleaved repeats of every configuration *in one process* (operators "
             "built beforehand), divided by the plain forward + adjoint of the same run. Working memory: each "
             "configuration in its own process, peak RSS of one run minus the peak of one plain forward "
             "modelling (same process, after a first run). Cosine: with the exact in-loop gathers of the same "
             "offsets / lags / imaging condition, over the whole cube. Offsets along x, spaced by the grid "
             "spacing and centred on 0; `ic=\"as\"` unless marked; one shot; reflection data d − F(m0)q "
             "migrated, \"QR\" probes designed from the observed record. `lags21`: 21 time lags τ = 5·dt·k, "
             "k = −10 … 10, at h = 0.", ""]
    for case, res in results.items():
        info, rows = res["info"], res["rows"]
        lines += [f"## {case}", "",
                  f"Grid {'×'.join(map(str, info['shape']))} at {info['spacing'][0]:g} m (padded "
                  f"{'×'.join(map(str, info['shape_padded']))}, nbl {info['nbl']}), nt = {info['nt']} "
                  f"(dt = {info['dt']:.3f} ms); N = {info['N']:,} physical, N_r = {info['N_r']:,} probe region, "
                  f"N_h = {info['N_h']:,} padded with halo. Exact full storage alone: (nt+1)·N_h·4 B = "
                  f"{info['exact_full_storage_gb']:.2f} GB (this machine: {info['machine_ram_gb']:.1f} GB RAM). "
                  f"Measured {res['meta']['date']}, load average {res['meta']['load_avg']:.1f}.", "",
                  "| configuration | time (s) | ÷ plain fwd+adj | working memory (MiB) | formula (MiB) | "
                  "exact memory ÷ this | cosine with exact |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in rows.items():
            if name == "plain_forward":
                continue
            mem = row.get("working_mb")
            lines.append(f"| {name} | {fmt(row.get('wall_s'), '.3f')} | {fmt(row.get('time_ratio'))} | "
                         f"{fmt(mem, '.1f')} | {fmt(row.get('expected_mb'), '.1f')} ({row.get('expected_formula')}) | "
                         f"{fmt(row.get('memory_ratio_exact'), '.1f')} | {fmt(row.get('cosine'), '.4f')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny cases (smoke test); not recorded in the history")
    ap.add_argument("--cases", nargs="+", default=None, help="NAME or NAME:T_ms")
    ap.add_argument("--offsets", nargs="+", type=int, default=None, help="numbers of offsets (2D)")
    ap.add_argument("--r", nargs="+", type=int, default=None, help="numbers of probes")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-extras", action="store_true", help="skip the ISIC and time-lag configurations")
    ap.add_argument("--out", default=None, help="also write this run's figures to this JSON file and the "
                    "Markdown table beside it (.md); neither may exist")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    records.add_arguments(ap, docs="benchmarks/imaging_gathers.md")
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(run_worker(json.loads(a.worker))))
        return None
    records.check_arguments(ap, a)
    if a.repeats is not None and a.repeats < 1:
        ap.error("--repeats must be >= 1")
    out = Path(a.out) if a.out else None
    if out is not None:
        if out.suffix != ".json":
            ap.error(f"--out must name a .json file, got {out}")
        records.refuse_existing(out, out.with_suffix(".md"))  # before the run, not after it
        out.parent.mkdir(parents=True, exist_ok=True)
    conf = QUICK if a.quick else FULL
    cases = [parse_case(c) for c in (a.cases or conf["cases"])]
    res = dict(cases={}, meta=meta(argv))
    for case, t in cases:
        three_d = case.startswith("thrust3d")
        offsets = a.offsets or (conf["offsets3d"] if three_d else conf["offsets"])
        rs = a.r or conf["r"]
        large = case == "thrust3d_large"
        res["cases"][case] = measure_case(case, t, offsets, rs, a.repeats or conf["repeats"],
                                          conf["extras"] and not a.no_extras and not three_d, no_exact=large)
        if out is not None:  # this run's own file (refused above if it existed), as each case finishes
            out.write_text(json.dumps(records.plain(res), indent=1, default=str))
    rec = records.record(a, "benchmark_imaging", res, argv, __file__)
    raw = records.cite(rec) if rec else "not recorded in the history (--quick / --no-record)"
    if out is not None:
        raw += f"; also `{out.name}` beside this file"
    md = markdown(res["cases"], res["meta"], raw)
    print(md, flush=True)
    if out is not None:
        out.with_suffix(".md").write_text(md + "\n")
        print("wrote", out, out.with_suffix(".md"), flush=True)
    if getattr(a, "write_docs", False):  # the committed report names the record only
        DOC.write_text(markdown(res["cases"], res["meta"], records.cite(rec)) + "\n")
        print("wrote", DOC, flush=True)
    return res


if __name__ == "__main__":
    main()
