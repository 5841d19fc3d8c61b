"""Accuracy of probed gradients vs the exact one (the seed's accuracy figures).

For one shot of a model file (SLIM/JUDI HDF5 layout, keys n, d, o, m, m0): the exact FWI gradient
at ``m0`` (full wavefield storage) and probed gradients for every probing mode and
r ∈ {2, 4, …, 256}; writes

* ``accuracy.json``   — cosine similarity and relative error vs r for every mode,
* ``cosine_vs_r.png`` — the curves,
* ``gradients.png``   — exact gradient, QR-probed r = 8/32/128 and their differences,
* ``probes.png``      — the probe matrices ``QQᵀ`` (r = 32) of every mode.

Example (default acquisition = the issue's benchmark: one shot at the middle, receivers at every
grid column at 12.5 m depth, 3 s, 10 Hz Ricker, data at 4 ms)::

    python scripts/gradient_accuracy.py ../shared/models/overthrust_small.h5

Results go to a fresh folder (``results/gradient_accuracy-<time>``, git-ignored, or ``--out``, which
must not exist unless ``--overwrite``). The scores (``accuracy.json``) are also appended as one
record (script ``gradient_accuracy``) to the benchmark history (``scripts/records.py``:
``benchmarks/history.jsonl``) unless ``--no-record``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="HDF5 model file (keys n, d, o, m, m0)")
    ap.add_argument("--out", default=None, help="results folder (default: a new results/gradient_accuracy-<time>)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    ap.add_argument("--modes", nargs="+", default=["QR", "hutchpp", "dft", "rademacher", "gaussian", "orthogonal"])
    ap.add_argument("--ps", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64, 128, 256])
    ap.add_argument("--panels", nargs="+", type=int, default=[8, 32, 128])
    ap.add_argument("--f0", type=float, default=0.010, help="Ricker peak frequency (kHz)")
    ap.add_argument("--t", type=float, default=3000.0, help="recording time (ms)")
    ap.add_argument("--rec-depth", type=float, default=12.5)
    ap.add_argument("--src-depth", type=float, default=12.5)
    ap.add_argument("--water-rows", type=int, default=20, help="rows excluded from the scores")
    ap.add_argument("--seed", type=int, default=1)
    records.add_arguments(ap)
    a = ap.parse_args(argv)

    from tqdm.auto import tqdm

    import timeprobe as tp
    from timeprobe import plotting
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.probing import ProbingOptions, probes_for_shot

    if a.out is None:
        out = records.output_dir("gradient_accuracy")
    else:
        out = Path(a.out)
        if out.exists():
            if not a.overwrite:
                raise SystemExit(f"{out} exists; choose another --out or pass --overwrite")
            shutil.rmtree(out)
        out.mkdir(parents=True)

    true = tp.Model.from_h5(a.model, key="m")
    init = tp.Model.from_h5(a.model, key="m0")
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    nx = true.shape[0]
    h = true.spacing[0]
    xs = true.origin[0] + (nx // 2) * h
    q = tp.Data(tp.Geometry([np.array([[xs, a.src_depth]])], dt=4.0, t=a.t), [tp.ricker(a.f0, 4.0, a.t)])
    rx = true.origin[0] + h * np.arange(nx)
    rec = tp.Geometry([np.stack([rx, np.full(nx, a.rec_depth)], 1)], dt=4.0, t=a.t)
    d = tp.forward(true, q, rec)
    t0 = time.perf_counter()
    _, g = tp.fwi_objective(init, q, d)
    t_exact = time.perf_counter() - t0
    below = (slice(None), slice(a.water_rows, None))
    dt, nt = computational_axis(init, q.geometry, rec)

    scores = {"model": str(a.model), "nt": nt, "dt": dt, "exact_seconds": t_exact, "f0": a.f0, "t": a.t,
              "seed": a.seed, "water_rows": a.water_rows, "modes": {}}
    panels = {}
    jobs = [(m, r) for m in a.modes for r in a.ps if r <= nt and not (m == "dft" and r % 2)]
    for mode, r in tqdm(jobs, desc="probed gradients"):
        t0 = time.perf_counter()
        try:
            _, gp = tp.fwi_objective(init, q, d, ps=r, mode=mode, seed=a.seed)
        except ValueError as e:  # e.g. r above the sub-sampled axis length
            scores["modes"].setdefault(mode, []).append(dict(r=r, error=str(e)))
            continue
        scores["modes"].setdefault(mode, []).append(dict(
            r=r, cosine=cosine(gp[below], g[below]), cosine_all=cosine(gp, g),
            rel_error=float(np.linalg.norm(gp[below] - g[below]) / np.linalg.norm(g[below])),
            seconds=time.perf_counter() - t0))
        if mode == "QR" and r in a.panels:
            panels[r] = gp
        (out / "accuracy.json").write_text(json.dumps(scores, indent=1))  # as we go

    # cosine vs r
    curves = {mode: ([x["r"] for x in rows if "cosine" in x], [x["cosine"] for x in rows if "cosine" in x])
              for mode, rows in scores["modes"].items()}
    plotting.plot_accuracy(curves, path=out / "cosine_vs_r.png")

    # gradient panels: exact, QR-probed and their differences on one symmetric scale
    clip = np.percentile(np.abs(g[below]), 98)
    rs = sorted(panels)
    fig, axs = plotting.figure(2, len(rs) + 1, figsize=(4 * (len(rs) + 1), 5.5), squeeze=False)
    plotting.plot_gradient(g, true, ax=axs[0, 0], title="exact", vmax=clip, cmap="gray", colorbar=False)
    axs[1, 0].axis("off")
    for j, r in enumerate(rs, 1):
        plotting.plot_gradient(panels[r], true, ax=axs[0, j], title=f"QR r = {r}", vmax=clip, cmap="gray",
                               colorbar=False)
        plotting.plot_gradient(panels[r] - g, true, ax=axs[1, j], title=f"difference r = {r}", vmax=clip,
                               cmap="gray", colorbar=False)
    fig.colorbar(axs[0, 0].get_images()[0], ax=axs, label="gradient ∂f/∂m", shrink=0.8)
    plotting.save(fig, out / "gradients.png")

    # probe matrices QQᵀ at r = 32
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    fig, axs = plotting.figure(1, len(a.modes), figsize=(3 * len(a.modes), 3.2), squeeze=False)
    for ax, mode in zip(axs[0], a.modes):
        p = probes_for_shot(ProbingOptions(ps=32, mode=mode), wc, dt, nt, d, np.random.default_rng(a.seed))
        P = p.Q.astype(np.float64) @ p.Q.T.astype(np.float64)
        lim = np.abs(P).max()
        ax.imshow(P, cmap="seismic", vmin=-lim, vmax=lim)
        ax.set_title(f"{mode}: QQᵀ (k = {p.subsample})", fontsize=9)
        ax.axis("off")
    plotting.save(fig, out / "probes.png")
    print(json.dumps({m: [(x["r"], round(x.get("cosine", float("nan")), 4)) for x in rows]
                      for m, rows in scores["modes"].items()}))
    records.record(a, "gradient_accuracy", scores, argv, __file__)
    print(f"results in {out}")
    return scores


if __name__ == "__main__":
    main()
