"""Measured memory/compute table of the gradient strategies, and the speed ratios of probing.

Cases: one Overthrust 2D shot (801×207 at 25 m, nbl 40 → 881×287, 3 s, source mid-model at
50 m depth, receivers every grid column at 12.5 m depth, 8 Hz Ricker) and a small 3D layered
case. Gradients at the smoothed model ``m0`` of data modelled in the true model.

Parts (``--part``):

* ``table``  every strategy in its own subprocess: wall time (second run, operators warm),
  peak RSS (VmHWM), gradient working memory = peak − peak of plain forward modelling (own
  subprocess), cosine with the exact (full-storage) gradient.
* ``speed``  one process, operators warmed up, configurations interleaved, 3 repeats, min:
  plain fwd+adj, probed blocked (auto k / k=1 / B=4,8,16), eq reference path, full storage,
  checkpointing; ratios and cosines.
* ``sweep``  scaling of probed/plain time with N, nt, r on small 2D grids (+ PNG).

Usage::

    python scripts/benchmark_gradients.py --part table speed sweep --out benchmarks/gradients.json
"""
from __future__ import annotations

import argparse
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
SHARED = Path(os.environ.get("TIMEPROBE_DATA", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("TIMEPROBE_BENCH_CACHE", tempfile.gettempdir())) / "timeprobe_bench"

import timeprobe as tp  # noqa: E402


def vmhwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# --------------------------------------------------------------------------- cases
def _overthrust_models():
    import h5py
    with h5py.File(SHARED / "models" / "overthrust_2D.h5", "r") as f:
        n = tuple(int(v) for v in f["n"][()])
        d = tuple(float(v) for v in f["d"][()])
        m, m0 = (np.asarray(f[k][()]) for k in ("m", "m0"))
    if m.shape == n[::-1]:
        m, m0 = m.T, m0.T
    mk = lambda a: tp.Model(m=a.astype(np.float32), spacing=d, nbl=40, space_order=8)  # noqa: E731
    return mk(m), mk(m0)


def _layered3d(n=(61, 61, 41), h=20.0):
    vp = np.full(n, 1.5, np.float32)
    vp[..., n[2] // 3:] = 2.2
    vp[..., 2 * n[2] // 3:] = 3.0
    model = tp.Model(vp=vp, spacing=(h,) * 3, nbl=20, space_order=8)
    return model, model.smooth(3 * h)


def _layered2d(nx, nz, h=25.0):
    vp = np.full((nx, nz), 1.5, np.float32)
    vp[:, nz // 3:] = 2.5
    vp[:, 2 * nz // 3:] = 3.5
    model = tp.Model(vp=vp, spacing=(h, h), nbl=40, space_order=8)
    return model, model.smooth(3 * h)


def setup(case, t=None):
    """(model0, q, d) of ``case``; observed data cached on disk (modelled once)."""
    if case == "overthrust2d":
        model, model0 = _overthrust_models()
        T, dtd, f0 = 3000.0, 2.0, 0.008
        (xa, xb), (za, zb) = model.domain_bounds
        src = np.array([[0.5 * (xa + xb), 50.0]])
        nx = model.shape[0]
        rec = np.stack([xa + model.spacing[0] * np.arange(nx), np.full(nx, 12.5)], 1)
    elif case == "layered3d":
        model, model0 = _layered3d()
        T, dtd, f0 = 1000.0, 2.0, 0.010
        b = model.domain_bounds
        cx, cy = 0.5 * (b[0][0] + b[0][1]), 0.5 * (b[1][0] + b[1][1])
        src = np.array([[cx, cy, 40.0]])
        xs = np.linspace(b[0][0], b[0][1], model.shape[0])
        ys = np.linspace(b[1][0], b[1][1], 11)
        X, Y = np.meshgrid(xs, ys, indexing="ij")
        rec = np.stack([X.ravel(), Y.ravel(), np.full(X.size, 20.0)], 1)
    elif case.startswith("layered2d"):
        _, nx, nz = case.split("_")
        model, model0 = _layered2d(int(nx), int(nz))
        T, dtd, f0 = (t or 1500.0), 2.0, 0.010
        (xa, xb), _ = model.domain_bounds
        src = np.array([[0.5 * (xa + xb), 50.0]])
        rec = np.stack([np.linspace(xa, xb, int(nx)), np.full(int(nx), 12.5)], 1)
    else:
        raise ValueError(f"unknown case {case!r}")
    qg = tp.Geometry([src], dt=dtd, t=T)
    q = tp.Data(qg, [tp.ricker(f0, dtd, T)])
    rg = tp.Geometry([rec], dt=dtd, t=T)
    CACHE.mkdir(parents=True, exist_ok=True)
    fn = CACHE / f"{case}_{T:g}.npy"
    if fn.exists():
        d = tp.Data(rg, [np.load(fn)])
    else:
        d = tp.forward(model, q, rg)
        np.save(fn, d.arrays[0])
    return model0, q, d


# --------------------------------------------------------------------------- one configuration
def plain_fwd_adj(model0, q, d, adjoint=True):
    """Plain forward (+ adjoint) propagation of one shot: no storage, no probing."""
    from timeprobe.propagators import computational_axis, run_adjoint, run_forward, to_computational
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    rec, _ = run_forward(model0, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt)
    if adjoint:
        run_adjoint(model0, d.geometry.coordinates[0], rec, dt, nt)


def run_config(model0, q, d, cfg):
    """Run one configuration; returns the gradient (None for plain runs)."""
    from timeprobe.strategies import gradient
    s = cfg["strategy"]
    if s == "plain_forward":
        plain_fwd_adj(model0, q, d, adjoint=False)
        return None
    if s == "plain":
        plain_fwd_adj(model0, q, d)
        return None
    return gradient(model0, q, d, s, **cfg.get("opts", {}))[1]


def worker(case, cfg, gpath):
    """Subprocess body: warm-up run (compiles), timed run, VmHWM; gradient saved to gpath."""
    model0, q, d = setup(case)
    base = vmhwm_mb()
    run_config(model0, q, d, cfg)
    t0 = time.perf_counter()
    g = run_config(model0, q, d, cfg)
    wall = time.perf_counter() - t0
    if g is not None:
        np.save(gpath, g)
    from timeprobe.propagators import computational_axis
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    return dict(wall_s=wall, peak_mb=vmhwm_mb(), setup_peak_mb=base, dt=dt, nt=nt,
                N=int(np.prod(model0.shape_padded)))


def in_subprocess(case, cfg, tmp):
    gpath = str(Path(tmp) / f"g_{case}_{cfg['name']}.npy")
    cmd = [sys.executable, __file__, "--worker", json.dumps(dict(case=case, cfg=cfg, gpath=gpath))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["gpath"] = gpath if os.path.exists(gpath) else None
    return res


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- parts
def table_configs(case, r=32):
    ncp = -(-(r + 8) // 3)  # 3-level checkpoints holding at least the probed working set
    cfgs = [dict(name="plain_forward", strategy="plain_forward"),
            dict(name="full", strategy="full"),
            dict(name="subsample_auto", strategy="subsample", opts=dict(k="auto")),
            dict(name=f"dft_nf{r // 2}", strategy="dft", opts=dict(nf=r // 2, seed=0)),
            dict(name=f"checkpoint_c{ncp}", strategy="checkpoint", opts=dict(n_checkpoints=ncp)),
            dict(name=f"probe_r{r}", strategy="probe", opts=dict(r=r, seed=0))]
    if case == "overthrust2d":
        cfgs += [dict(name=f"probe_r{r}_B{B}", strategy="probe", opts=dict(r=r, seed=0, block=B))
                 for B in (4, 16)]
    return cfgs


def part_table(cases, tmp):
    out = {}
    for case in cases:
        setup(case)  # model the observed data once
        rows = {}
        cfgs = table_configs(case)
        for cfg in cfgs:
            if cfg["strategy"] == "subsample" and cfg["opts"]["k"] == "auto":
                cfg["opts"]["k"] = auto_k(case)
                cfg["name"] = f"subsample_k{cfg['opts']['k']}"
            print("table", case, cfg["name"], flush=True)
            rows[cfg["name"]] = in_subprocess(case, cfg, tmp)
        g_ex = np.load(rows["full"]["gpath"])
        base = rows["plain_forward"]["peak_mb"]
        for name, row in rows.items():
            row["working_mb"] = row["peak_mb"] - base
            row["cosine"] = cosine(np.load(row["gpath"]), g_ex) if row["gpath"] else None
            row["cfg"] = next(c for c in cfgs if c["name"] == name)
        out[case] = rows
    return out


def auto_k(case):
    from timeprobe.objectives import default_subsample
    from timeprobe.propagators import computational_axis, to_computational
    model0, q, d = setup(case)
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    return default_subsample(to_computational(q.arrays[0], q.geometry, dt, nt), dt, nt, 32)


def part_speed(case="overthrust2d", r=32, repeats=3, eq_repeats=1):
    model0, q, d = setup(case)
    ncp = -(-(r + 8) // 3)
    cfgs = [dict(name="plain_fwd_adj", strategy="plain"),
            dict(name="probe_blocked_auto", strategy="probe", opts=dict(r=r, seed=0)),
            dict(name="probe_blocked_k1", strategy="probe", opts=dict(r=r, seed=0, subsample=1)),
            dict(name="probe_blocked_B4", strategy="probe", opts=dict(r=r, seed=0, block=4)),
            dict(name="probe_blocked_B16", strategy="probe", opts=dict(r=r, seed=0, block=16)),
            dict(name="full", strategy="full"),
            dict(name=f"checkpoint_c{ncp}", strategy="checkpoint", opts=dict(n_checkpoints=ncp)),
            dict(name="probe_eq_auto", strategy="probe", opts=dict(r=r, seed=0, method="eq"))]
    times = {c["name"]: [] for c in cfgs}
    grads = {}
    for c in cfgs:  # warm-up: compile every operator outside the timings
        print("warm", c["name"], flush=True)
        t0 = time.perf_counter()
        grads[c["name"]] = run_config(model0, q, d, c)
        times[c["name"]].append(("warm", time.perf_counter() - t0))
    for rep in range(repeats):
        for c in cfgs:
            if c["name"] == "probe_eq_auto" and rep >= eq_repeats:
                continue
            t0 = time.perf_counter()
            run_config(model0, q, d, c)
            times[c["name"]].append((rep, time.perf_counter() - t0))
            print("rep", rep, c["name"], round(times[c["name"]][-1][1], 2), flush=True)
    best = {k: min(t for tag, t in v if tag != "warm") for k, v in times.items()}
    g_ex = grads["full"]
    cos = {k: (cosine(g, g_ex) if g is not None else None) for k, g in grads.items()}
    from timeprobe.propagators import computational_axis
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    p = best["probe_blocked_auto"]
    ratios = {"probe_auto / plain_fwd_adj": p / best["plain_fwd_adj"],
              "probe_k1 / plain_fwd_adj": best["probe_blocked_k1"] / best["plain_fwd_adj"],
              "full / probe_auto": best["full"] / p,
              f"checkpoint_c{ncp} / probe_auto": best[f"checkpoint_c{ncp}"] / p,
              "eq_auto / probe_auto": best["probe_eq_auto"] / p,
              "eq_auto / plain_fwd_adj": best["probe_eq_auto"] / best["plain_fwd_adj"],
              "B4 / B8(auto)": best["probe_blocked_B4"] / p,
              "B16 / B8(auto)": best["probe_blocked_B16"] / p}
    return dict(case=case, r=r, dt=dt, nt=nt, N=int(np.prod(model0.shape_padded)), k_auto=auto_k(case),
                raw=times, best_s=best, ratios=ratios, cosine=cos,
                cos_blocked_minus_eq=cos["probe_blocked_auto"] - cos["probe_eq_auto"])


def part_sweep(repeats=2):
    """probe(r)/plain time ratio versus N (grid), nt (recording time) and r."""
    rows = []
    grid = [("layered2d_201_101", 1500.0, 32), ("layered2d_401_201", 1500.0, 32),
            ("layered2d_801_201", 1500.0, 32), ("layered2d_401_201", 750.0, 32),
            ("layered2d_401_201", 3000.0, 32), ("layered2d_401_201", 1500.0, 8),
            ("layered2d_401_201", 1500.0, 64)]
    for case, T, r in grid:
        model0, q, d = setup(case, t=T)
        cp = dict(strategy="probe", opts=dict(r=r, seed=0))
        cpl = dict(strategy="plain")
        run_config(model0, q, d, cp), run_config(model0, q, d, cpl)
        tp_, tpl = [], []
        for _ in range(repeats):
            t0 = time.perf_counter(); run_config(model0, q, d, cpl); tpl.append(time.perf_counter() - t0)  # noqa: E702
            t0 = time.perf_counter(); run_config(model0, q, d, cp); tp_.append(time.perf_counter() - t0)  # noqa: E702
        from timeprobe.propagators import computational_axis
        dt, nt = computational_axis(model0, q.geometry, d.geometry)
        rows.append(dict(case=case, T=T, r=r, N=int(np.prod(model0.shape_padded)), nt=nt,
                         plain_s=min(tpl), probe_s=min(tp_), ratio=min(tp_) / min(tpl)))
        print("sweep", rows[-1], flush=True)
    return rows


def plot_sweep(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for r in sorted({x["r"] for x in rows}):
        sel = [x for x in rows if x["r"] == r]
        w = [x["N"] * x["nt"] for x in sel]
        ax[0].loglog(w, [x["probe_s"] for x in sel], "o", label=f"probe r={r}")
    ax[0].loglog([x["N"] * x["nt"] for x in rows], [x["plain_s"] for x in rows], "k+", label="plain fwd+adj")
    ax[0].set_xlabel("N·nt"); ax[0].set_ylabel("time (s)"); ax[0].legend()  # noqa: E702
    ax[1].plot([x["r"] for x in rows], [x["ratio"] for x in rows], "o")
    ax[1].set_xlabel("r"); ax[1].set_ylabel("probed / plain time")  # noqa: E702
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", default=["table", "speed", "sweep"],
                    choices=["table", "speed", "sweep"])
    ap.add_argument("--cases", nargs="+", default=["overthrust2d", "layered3d"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "gradients.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        w = json.loads(a.worker)
        print(json.dumps(worker(w["case"], w["cfg"], w["gpath"])))
        return
    res = json.loads(Path(a.out).read_text()) if Path(a.out).exists() else {}
    res["machine"] = dict(host=platform.node(), cpus=os.cpu_count(), python=platform.python_version(),
                          devito=__import__("devito").__version__, omp=os.environ.get("OMP_NUM_THREADS"))
    res["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    with tempfile.TemporaryDirectory() as tmp:
        for part in a.part:
            t0 = time.time()
            if part == "table":
                res["table"] = part_table(a.cases, tmp)
            elif part == "speed":
                res["speed"] = part_speed()
            else:
                res["sweep"] = part_sweep()
                plot_sweep(res["sweep"], ROOT / "benchmarks" / "figures" / "gradients_scaling.png")
            res.setdefault("part_wall_s", {})[part] = time.time() - t0
            for row in res.get("table", {}).values():
                for v in row.values():
                    v.pop("gpath", None) if isinstance(v, dict) and False else None
            Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: v for k, v in res.items() if k in ("speed",)}, indent=1, default=str)[:4000])


if __name__ == "__main__":
    main()
