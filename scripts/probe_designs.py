"""Probe designs per byte, and a-posteriori accuracy estimates, measured on small-to-medium shots.

For each case (one shot; observed data modelled in the true model, the gradient at a smoothed
model, the adjoint driven by the residual as in FWI) the script records, once, the Nyquist
snapshots of the forward field ``U[s] = u[k s]`` and of the adjoint field ``V[s] = v̈[k s]``
(physical domain, float32; :func:`timeprobe.storage.run_stored_forward` /
``run_stored_adjoint(record=...)``; ``k`` the probing's automatic subsampling). Every design is
then evaluated in NumPy, exactly as the propagators would compute it:

    exact (Nyquist):  g = −k·dt Σ_s U[s]·V[s]
    probed with Q:    g_Q = −k·dt Σ_p (QᵀU)_p · (QᵀV)_p      (ū = k·dt·QᵀU, v̄ = QᵀV)

and compared (cosine, whole model) with the exact full-storage gradient of ``fwi_objective``
(``--check``: also against the real probed run, ``fwi_objective(ps=32)``, same probes).

Designs (``Q`` of r columns on the subsampled axis; r ∈ --ps):

* ``QR``           the default (``probes_for_shot``: randomized SVD of the observed record, 1 power
                   iteration, oversampling r);
* ``QR_p3``, ``QR_os3r``  3 power iterations / oversampling 3r;
* ``QR_res``       from the residual alone; ``QR_obs+res`` from [D/‖D‖, R/‖R‖] side by side;
* ``QR_syn``       from the synthetic record of the current model; ``QR_obs+syn`` side by side
                   (``fwi_objective(probe_data="synthetic")``, a plain forward run first);
* ``win{W}``       block-diagonal: W time windows, r/W QR columns of each window's record;
* ``win{W}_i8``    the same, the finished windows' ū stored in 8 bit (int8, 8×8 tiles) — bytes
                   per point counted with only the open window in float32;
* ``nyquist{32,16,8}``  stored snapshots through the codecs of :mod:`timeprobe.compression`.

Bytes per physical point: probing ``4·(r + B + 1)`` (B = 4 ring slots, the gradient);
``win{W}_i8`` ``4·(r/W + B + 1) + (r − r/W)·(1 + 4/64)``; Nyquist ``nsnap·bits/8 (+ tile scales)
+ 4·(B_chunk + 2)``.

Estimators of the probed gradient's cosine (recorded for the default QR at every r):

* ``lattice{M}``   cosine of exact and probed gradients at M uniformly random points of the physical
                   domain, 20 draws: mean, std and worst error; ``cv{M}`` the same with the probed
                   gradient's exact norm as a control variate; ``strat{M}`` also stratified by
                   distance to the source and receivers — timeprobe's estimate
                   (:mod:`timeprobe.accuracy`, sampling u and v at those points during the run);
* ``proj_obs``, ``proj_res``, ``proj_syn``  relative energy of the observed / residual / synthetic
                   record outside span(Q) (``probing.projector_error``);
* ``half``         1 − cos(g_{r/2}, g_r) (nested QR bases).

Usage (a few minutes on 2 cores; results and figures to a fresh folder)::

    python scripts/probe_designs.py --out results/probe_designs
    python scripts/probe_designs.py --quick --out /tmp/pd     # tiny smoke test

Writes ``probe_designs.json`` (as it goes) and ``probe_designs.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DEVITO_LOGGING", "WARNING")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("TIMEPROBE_DATA", ROOT.parent / "shared"))

import timeprobe as tp  # noqa: E402
sys.path.insert(0, str(ROOT / "scripts"))
import records  # noqa: E402
from timeprobe.accuracy import cosine_estimate, sample_points  # noqa: E402
from timeprobe.compression import Codec  # noqa: E402
from timeprobe.geometry import (computational_axis, from_computational, from_computational_adjoint,  # noqa: E402
                                resample, to_computational)
from timeprobe.probing import (ProbingOptions, design_probes, probes_for_shot, projector_error,  # noqa: E402
                               shot_generators)
from timeprobe.storage import SnapshotStore, StorageOptions, run_stored_adjoint, run_stored_forward  # noqa: E402

B_RING = 4


# --------------------------------------------------------------------------- cases
def _line(model, n, depth):
    (xa, xb), _ = model.domain_bounds
    return np.stack([np.linspace(xa, xb, n), np.full(n, depth)], 1)


def case_overthrust(t):
    import h5py
    with h5py.File(SHARED / "models" / "overthrust_small.h5", "r") as f:
        n = tuple(int(v) for v in f["n"][()])
        d = tuple(float(v) for v in f["d"][()])
        m, m0 = (np.asarray(f[k][()]) for k in ("m", "m0"))
    if m.shape == n[::-1]:
        m, m0 = m.T, m0.T
    true = tp.Model(m=m.astype(np.float32), spacing=d, nbl=40, space_order=8)
    init = tp.Model(m=m0.astype(np.float32), spacing=d, nbl=40, space_order=8, dt=true.dt)
    xs = 0.5 * sum(true.domain_bounds[0])
    return true, init, np.array([[xs, 12.5]]), _line(true, true.shape[0], 12.5), t, 0.010


def case_edge(t=2500.0, shape=(301, 141), h=10.0):
    """Layered with a Gaussian anomaly, source 100 m from the left edge (the issue's hard case)."""
    nx, nz = shape
    z = np.arange(nz) * h
    vp = np.where(z < 300, 1.6, np.where(z < 700, 2.2, np.where(z < 1100, 2.8, 3.4)))[None].repeat(nx, 0)
    x = np.arange(nx)[:, None] * h
    vp = vp + 0.5 * np.exp(-((x - 0.55 * nx * h) ** 2 + (z[None] - 800.0) ** 2) / (2 * 150.0 ** 2))
    true = tp.Model(vp=vp.astype(np.float32), spacing=(h, h), nbl=40, space_order=8)
    init = true.smooth(120.0)
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    return true, init, np.array([[100.0, 20.0]]), _line(true, nx, 10.0), t, 0.010


def case_salt(t=2000.0, shape=(251, 121), h=10.0):
    """Sediments (1.7 → 3.0 km/s) over a salt body (4.5 km/s); edge source, strong contrast."""
    nx, nz = shape
    x = np.arange(nx)[:, None] * h
    z = np.arange(nz)[None] * h
    vp = 1.7 + 1.3 * z / (nz * h) + 0 * x
    salt = ((x - 1400.0) / 500.0) ** 2 + ((z - 700.0) / 220.0) ** 2 < 1
    vp = np.where(salt, 4.5, vp)
    true = tp.Model(vp=vp.astype(np.float32), spacing=(h, h), nbl=40, space_order=8)
    init = true.smooth(100.0)
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    return true, init, np.array([[60.0, 20.0]]), _line(true, nx, 10.0), t, 0.012


def case_tiny(t=600.0):
    nx, nz = 61, 41
    vp = np.full((nx, nz), 1.5, np.float32)
    vp[:, 15:] = 2.2
    vp[:, 28:] = 3.0
    true = tp.Model(vp=vp, spacing=(15.0, 15.0), nbl=20, space_order=8)
    init = true.smooth(45.0)
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    return true, init, np.array([[100.0, 20.0]]), _line(true, nx, 10.0), t, 0.015


CASES = {
    "overthrust_small": lambda: case_overthrust(3000.0),
    "overthrust_small_8s": lambda: case_overthrust(8000.0),
    "edge_layered": case_edge,
    "salt_edge": case_salt,
    "tiny": case_tiny,
}


def setup(name):
    true, init, src, rec, t, f0 = CASES[name]()
    dtd = 4.0
    q = tp.Data(tp.Geometry([src], dt=dtd, t=t), [tp.ricker(f0, dtd, t)])
    rg = tp.Geometry([rec], dt=dtd, t=t)
    d = tp.forward(true, q, rg)
    return true, init, q, d


# --------------------------------------------------------------------------- records
def record(init, q, d):
    """U, V (nsnap, *shape float32), k, dt, nt and the records on the subsampled axis."""
    dt, nt = computational_axis(init, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt, dtype=init.dtype)
    k = probes_for_shot(ProbingOptions(ps=1, mode="rademacher"), wc, dt, nt, seed=0).subsample
    opts = StorageOptions(chunk=16)
    traces, store = run_stored_forward(init, q.geometry.coordinates[0], wc, d.geometry.coordinates[0], dt, nt,
                                       opts, k, layers=False)
    syn = from_computational(traces, d.geometry[0], dt, nt, dtype=init.dtype)
    res = syn - d.arrays[0]
    adj = (d.dt / dt) * from_computational_adjoint(res, d.geometry[0], dt, nt, dtype=init.dtype)
    rec_v = SnapshotStore(Codec("float32"), store.shape, store.nsnap)
    # the stored region is the physical domain, its innermost axis extended for alignment: crop it
    crop = (slice(None),) + tuple(slice(0, n) for n in init.shape)
    with store, rec_v:
        g = run_stored_adjoint(init, d.geometry.coordinates[0], adj, dt, nt, store, record=rec_v)
        U = store.rows(0, store.nsnap).view(np.float32).reshape((store.nsnap,) + store.shape)[crop].copy()
        V = rec_v.rows(0, rec_v.nsnap).view(np.float32).reshape((store.nsnap,) + store.shape)[crop].copy()
    nsub = store.nsnap
    t_sub = k * dt * np.arange(nsub)
    sub = lambda a: resample(a, d.time, t_sub)  # noqa: E731
    return dict(U=U, V=V, k=k, dt=dt, nt=nt, nsub=nsub, wc=wc, g_store=init.unpad(g),
                D=sub(d.arrays[0]), R=sub(res), S=sub(syn), syn=syn)


def probed(U, V, Q, k, dt):
    """−k·dt Σ_p (QᵀU)_p (QᵀV)_p (float64 result)."""
    Q = np.asarray(Q, dtype=np.float32)
    n = U.shape[0]
    Uf, Vf = U.reshape(n, -1), V.reshape(n, -1)
    return -(k * dt) * np.einsum("pi,pi->i", Q.T @ Uf, Q.T @ Vf, dtype=np.float64).reshape(U.shape[1:])


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def cv_cosine(g_probed, idx, g_exact_at_idx):
    """cos(g_probed, g) from g at the points ``idx`` only: ``g = g_r + e``, ‖g_r‖ exact, ⟨g_r, e⟩ and
    ‖e‖² scaled up from the sample (the probed gradient acts as a control variate)."""
    n, m = g_probed.size, len(idx)
    gr = g_probed.astype(np.float64)
    e = g_exact_at_idx.astype(np.float64) - gr[idx]
    nr2 = gr @ gr
    cross = n / m * (gr[idx] @ e)
    ee = n / m * (e @ e)
    return float((nr2 + cross) / np.sqrt(nr2 * max(nr2 + 2 * cross + ee, 1e-300)))


def normalised(*mats):
    return np.hstack([m / np.linalg.norm(m) for m in mats])


def windowed(nsub, r, W, data, seed):
    """Block-diagonal Q: W windows of the axis, r/W QR columns of the record in each."""
    edges = np.linspace(0, nsub, W + 1).round().astype(int)
    Q = np.zeros((nsub, r))
    per = r // W
    for w in range(W):
        a, b = edges[w], edges[w + 1]
        rw = per if w < W - 1 else r - per * (W - 1)
        rw = min(rw, b - a)
        Q[a:b, w * per:w * per + rw] = design_probes("QR", b - a, rw, data=data[a:b], seed=seed, dtype=np.float64)
    return Q, edges, per


def quantised_window_gradient(U, V, Q, edges, per, k, dt, codec):
    """g with each finished window's ū (all but the last) through ``codec`` (int8 tiles)."""
    n = U.shape[0]
    shape = U.shape[1:]
    Uf, Vf = U.reshape(n, -1), V.reshape(n, -1)
    ubar = (k * dt) * (Q.T.astype(np.float32) @ Uf)
    vbar = Q.T.astype(np.float32) @ Vf
    nW = len(edges) - 1
    buf = np.empty(codec.nbytes(shape), np.uint8)
    for p in range(ubar.shape[0]):
        if p // per < nW - 1:  # a finished window
            codec.encode(np.ascontiguousarray(ubar[p].reshape(shape)), buf)
            codec.decode(buf, ubar[p].reshape(shape))
    return -np.einsum("pi,pi->i", ubar, vbar, dtype=np.float64).reshape(shape)


# --------------------------------------------------------------------------- one case
def run_case(name, ps, seeds, check, lattice_sizes, t_out):
    t0 = time.time()
    true, init, q, d = setup(name)
    t_setup = time.time() - t0
    rec = record(init, q, d)
    U, V, k, dt, nsub = rec["U"], rec["V"], rec["k"], rec["dt"], rec["nsub"]
    n_p = int(np.prod(init.shape))
    g_nyq = -(k * dt) * np.einsum("si,si->i", U.reshape(nsub, -1), V.reshape(nsub, -1),
                                  dtype=np.float64).reshape(init.shape)
    t1 = time.time()
    _, g_ex = tp.fwi_objective(init, q, d, sum_padding=False)  # exact, full storage, physical part
    t_exact = time.time() - t1
    out = dict(case=name, shape=list(init.shape), nt=rec["nt"], dt=rec["dt"], k=k, nsub=nsub,
               seconds_setup=t_setup, seconds_exact=t_exact,
               cos_nyquist_vs_exact=cosine(g_nyq, g_ex), cos_store_vs_numpy=cosine(rec["g_store"], g_nyq),
               designs={}, estimators={})
    rng_shot = lambda seed: shot_generators(seed, 1)[0]  # noqa: E731  (as fwi_objective draws them)
    D, R, S = rec["D"], rec["R"], rec["S"]

    def score(label, r, g, bytes_pp):
        out["designs"].setdefault(label, []).append(dict(r=r, cos=cosine(g, g_ex), bytes_per_point=bytes_pp))

    # stored snapshots through the codecs (the reference the probes compete with)
    for codec in (Codec("float32"), Codec("int16"), Codec("float16"), Codec("int8", 4), Codec("int8", 8),
                  Codec("int8", 16), Codec("int8", 32)):
        Uq = np.empty_like(U)
        buf = np.empty(codec.nbytes(init.shape), np.uint8)
        for s in range(nsub):
            codec.encode(U[s], buf)
            codec.decode(buf, Uq[s])
        g = -(k * dt) * np.einsum("si,si->i", Uq.reshape(nsub, -1), V.reshape(nsub, -1),
                                  dtype=np.float64).reshape(init.shape)
        label = f"nyquist_{codec.name}" + (f"_t{codec.tile}" if codec.name.startswith("int") else "")
        score(label, None, g, nsub * codec.nbytes(init.shape) / n_p + 4 * (8 + 2))
    for r in ps:
        if r > nsub:
            continue
        bpp = 4 * (r + B_RING + 1)
        for seed in seeds:
            Qd = probes_for_shot(ProbingOptions(ps=r), rec["wc"], dt, rec["nt"], d[0], rng_shot(seed)).Q
            g_qr = probed(U, V, Qd, k, dt)
            score("QR", r, g_qr, bpp)
            if seed != seeds[0]:
                continue
            # estimators of the default design's cosine
            est = dict(r=r, cos=cosine(g_qr, g_ex), proj_obs=projector_error(Qd, D),
                       proj_res=projector_error(Qd, R), proj_syn=projector_error(Qd, S))
            if r >= 4:
                est["half"] = 1 - cosine(probed(U, V, Qd[:, :r // 2], k, dt), g_qr)
            gen = np.random.default_rng(123)
            flat_ex, flat_qr = g_ex.ravel(), g_qr.ravel()
            centres = np.vstack([q.geometry.coordinates[0], d.geometry.coordinates[0]])
            for M in lattice_sizes:
                for variant in ("plain", "cv", "strat"):
                    errs = []
                    for _ in range(20):
                        if variant == "strat":  # what timeprobe runs (timeprobe.accuracy)
                            pts = sample_points(init, M, gen, centres=centres)
                            c = cosine_estimate(g_qr, pts, flat_ex[pts.flat], n_boot=0)[0]
                            errs.append(c - est["cos"])
                            continue
                        idx = gen.choice(flat_ex.size, size=min(M, flat_ex.size), replace=False)
                        if variant == "plain":
                            c = cosine(flat_qr[idx], flat_ex[idx])
                        else:  # control variate: the probed gradient's norm is known exactly
                            c = cv_cosine(flat_qr, idx, flat_ex[idx])
                        errs.append(c - est["cos"])
                    tag = {"plain": f"lattice{M}", "cv": f"cv{M}", "strat": f"strat{M}"}[variant]
                    est[f"{tag}_mean_err"] = float(np.mean(errs))
                    est[f"{tag}_std"] = float(np.std(errs))
                    est[f"{tag}_worst"] = float(np.max(np.abs(errs)))
            out["estimators"].setdefault("QR", []).append(est)
            if check and r == 32:
                _, g_run = tp.fwi_objective(init, q, d, ps=32, seed=seed, sum_padding=False)
                out["cos_emulated_vs_run_r32"] = cosine(g_run, g_qr)
            # [observed, synthetic] exactly as fwi_objective(probe_data="synthetic") designs them
            syn = tp.Data(d.geometry, [rec["syn"]])
            Qs = probes_for_shot(ProbingOptions(ps=r), rec["wc"], dt, rec["nt"], (d[0], syn), rng_shot(seed)).Q
            score("QR_obs+syn", r, probed(U, V, Qs, k, dt), bpp)
            if check and r == 32:
                _, g_run = tp.fwi_objective(init, q, d, ps=32, seed=seed, probe_data="synthetic", sum_padding=False)
                out["cos_emulated_vs_run_r32_obs+syn"] = cosine(g_run, probed(U, V, Qs, k, dt))
            variants = {
                "QR_p3": dict(power_iterations=3), "QR_os3r": dict(oversample=3 * r),
                "QR_res": dict(data=R), "QR_obs+res": dict(data=normalised(D, R)),
                "QR_syn": dict(data=S), "QR_obs+syn+res": dict(data=normalised(D, S, R)),
            }
            for label, kw in variants.items():
                data = kw.pop("data", D)
                Q = design_probes("QR", nsub, r, data=data, seed=rng_shot(seed), dtype=np.float64, **kw)
                score(label, r, probed(U, V, Q, k, dt), bpp)
            for W in (2, 4):
                if r % W or r // W < 1:
                    continue
                Q, edges, per = windowed(nsub, r, W, D, rng_shot(seed))
                score(f"win{W}", r, probed(U, V, Q, k, dt), bpp)
                g8 = quantised_window_gradient(U, V, Q, edges, per, k, dt, Codec("int8", 8))
                score(f"win{W}_i8", r, g8, 4 * (r // W + B_RING + 1) + (r - r // W) * (1 + 4 / 64))
    out["seconds"] = time.time() - t0
    return out


def markdown(results, meta):
    lines = ["# Probe designs per byte, and accuracy estimates", "",
             f"Generated {meta['date']} by `{meta['command']}` at commit `{meta['commit']}`; machine "
             f"{meta['host']} ({meta['cpus']} CPUs), devito {meta['devito']}. Cosines against the exact "
             "(full-storage) gradient on the whole model; one shot per case; probed gradients emulated "
             "from the recorded Nyquist snapshots exactly as the propagators compute them "
             "(`scripts/probe_designs.py` docstring). Bytes per physical point of the gradient's working "
             "memory (probing: r accumulators, 4 ring slots and the gradient, float32).", ""]
    for res in results:
        lines += [f"## {res['case']}: {res['shape'][0]}×{res['shape'][1]}, nt = {res['nt']}, k = {res['k']}, "
                  f"nsub = {res['nsub']}", "",
                  f"Nyquist vs exact: cos {res['cos_nyquist_vs_exact']:.6f}" +
                  (f"; emulated vs real probed run (r = 32): cos {res['cos_emulated_vs_run_r32']:.6f}"
                   if "cos_emulated_vs_run_r32" in res else "") +
                  (f", with probe_data='synthetic': cos {res['cos_emulated_vs_run_r32_obs+syn']:.6f}"
                   if "cos_emulated_vs_run_r32_obs+syn" in res else ""), "",
                  "| design | r | cosine (mean over seeds) | min | bytes / point |", "|---|---|---|---|---|"]
        for label, rows in res["designs"].items():
            by_r = {}
            for x in rows:
                by_r.setdefault(x["r"], []).append(x)
            for r, xs in by_r.items():
                cs = [x["cos"] for x in xs]
                lines.append(f"| {label} | {r if r is not None else '—'} | {np.mean(cs):.5f} | {np.min(cs):.5f} | "
                             f"{xs[0]['bytes_per_point']:.1f} |")
        lines += ["", "Estimators of the default QR design's cosine:", "",
                  "| r | cosine | proj_obs | proj_res | proj_syn | 1 − cos(g_r/2, g_r) | " +
                  " | ".join(f"sampled at M={M}: mean err ± std (worst); control variate; stratified + control variate"
                             for M in meta["lattice"]) + " |",
                  "|---" * (6 + len(meta["lattice"])) + "|"]
        for e in res["estimators"].get("QR", []):
            lines.append(f"| {e['r']} | {e['cos']:.5f} | {e['proj_obs']:.4f} | {e['proj_res']:.4f} | "
                         f"{e['proj_syn']:.4f} | {e.get('half', float('nan')):.5f} | " +
                         " | ".join(f"{e[f'lattice{M}_mean_err']:+.4f} ± {e[f'lattice{M}_std']:.4f} "
                                    f"({e[f'lattice{M}_worst']:.4f}); cv {e[f'cv{M}_mean_err']:+.4f} ± "
                                    f"{e[f'cv{M}_std']:.4f} ({e[f'cv{M}_worst']:.4f}); stratified cv "
                                    f"{e[f'strat{M}_mean_err']:+.4f} ± {e[f'strat{M}_std']:.4f} "
                                    f"({e[f'strat{M}_worst']:.4f})"
                                    for M in meta["lattice"]) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["overthrust_small", "edge_layered", "salt_edge",
                                                   "overthrust_small_8s"], choices=sorted(CASES))
    ap.add_argument("--ps", nargs="+", type=int, default=[16, 32, 64])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--lattice", nargs="+", type=int, default=[200, 500, 1000, 2000])
    ap.add_argument("--check", action="store_true", help="compare the emulation with a real probed run (r=32)")
    ap.add_argument("--quick", action="store_true", help="tiny case, r = 8 16, one seed")
    ap.add_argument("--out", required=True, help="a new folder (refused if it exists)")
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    out = Path(a.out)
    if out.exists():
        raise SystemExit(f"{out} exists: choose a new --out")
    out.mkdir(parents=True)
    if a.quick:
        a.cases, a.ps, a.seeds, a.lattice = ["tiny"], [8, 16], [0], [100, 300]
    import devito
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    meta = dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), host=platform.node(), cpus=os.cpu_count(),
                devito=devito.__version__, commit=commit, lattice=a.lattice,
                command=" ".join(["python", "scripts/probe_designs.py"] + (argv or sys.argv[1:])))
    results = []
    for name in a.cases:
        print("case", name, flush=True)
        results.append(run_case(name, a.ps, a.seeds, a.check, a.lattice, out))
        (out / "probe_designs.json").write_text(json.dumps(dict(meta=meta, results=results), indent=1))
        (out / "probe_designs.md").write_text(markdown(results, meta) + "\n")
        print(f"  {results[-1]['seconds']:.0f} s", flush=True)
    print("wrote", out / "probe_designs.md")
    records.record(a, "probe_designs", dict(meta=meta, results=results), argv, __file__)


if __name__ == "__main__":
    main()
