"""Gradient working memory: one probed gradient vs one exact (full-storage) gradient.

One shot of overthrust_2D.h5 (801×207, nbl 40), 3 s, 8 Hz Ricker, source mid-model at 50 m,
receivers every grid column at 12.5 m. Each configuration runs in its own subprocess, which

1. builds (code-generates and compiles) every operator it will use — Devito's code generation
   allocates memory of its own that belongs to no gradient strategy;
2. runs plain forward modelling and reads the peak resident memory (VmHWM): the baseline;
3. runs the gradient and reads VmHWM again.

Gradient working memory = step-3 peak − step-2 peak. Expected (float32, N padded points):
exact ``(nt + 1)·N`` (every snapshot) + ``N`` (gradient); probed ``r·N`` (ū) + ``B·N`` (ring
buffer) + ``N`` (gradient) — the adjoint field reuses the forward field's buffers.

    python scripts/benchmark_memory.py [--model PATH] [--ps 32] [--block 4] [--out FILE.json]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def child(model_path, config, ps, block):
    import numpy as np

    import timeprobe as tp
    from timeprobe.io import peak_memory_mb
    from timeprobe.kernels import workspace
    from timeprobe.objectives import GradientOptions, _probing_for_shot
    from timeprobe.propagators import (_op_adjoint, _op_flush, _op_flush_adjoint, _op_forward, _probe_key,
                                       computational_axis, run_adjoint, run_forward, to_computational)

    m = tp.Model.from_h5(model_path, key="m0")
    nx = m.shape[0]
    T = 3000.0
    q = tp.Data(tp.Geometry([np.array([[(nx // 2) * 25.0, 50.0]])], dt=4.0, t=T), [tp.ricker(0.008, 4.0, T)])
    rec = tp.Geometry([np.stack([np.arange(nx) * 25.0, np.full(nx, 12.5)], 1)], dt=4.0, t=T)
    dt, nt = computational_axis(m, q.geometry, rec)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    sc, rc = q.geometry.coordinates[0], rec.coordinates[0]
    ws = workspace(m)
    probing = None
    if config == "exact":
        _op_forward(ws, save=nt + 1)
        _op_adjoint(ws, grad_save=nt + 1, src_interp=False)
    elif config == "probed":
        probing = _probing_for_shot(GradientOptions(ps=ps, mode="rademacher", block=block), wc, dt, nt,
                                    None, None, np.random.default_rng(0))
        key = _probe_key(probing)
        _op_forward(ws, probing=key)
        _op_adjoint(ws, probing=key, src_interp=False)
        _op_flush(ws, probing.r, probing.block)
        _op_flush_adjoint(ws, probing.r, probing.block, True)
    rec_c, _ = run_forward(m, sc, wc, rc, dt, nt)
    base = peak_memory_mb()
    if config == "exact":
        rec, usave = run_forward(m, sc, wc, rc, dt, nt, save=True)
        del rec  # as in objectives._shot_gradient: traces are dropped before the adjoint pass
        run_adjoint(m, rc, rec_c, dt, nt, usave=usave)
    elif config == "probed":
        rec, ubar = run_forward(m, sc, wc, rc, dt, nt, probing=probing)
        del rec  # as in objectives._shot_gradient: traces are dropped before the adjoint pass
        run_adjoint(m, rc, rec_c, dt, nt, probing=probing, ubar=ubar)
    peak = peak_memory_mb()
    out = dict(config=config, baseline_mib=base, peak_mib=peak, working_mib=peak - base, nt=nt,
               N=int(np.prod(m.shape_padded)))
    if probing is not None:
        out.update(r=probing.r, block=probing.block, subsample=probing.subsample)
    print(json.dumps(out))


def main(argv=None):
    default = Path(os.environ.get("TIMEPROBE_DATA", Path(__file__).resolve().parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default / "models" / "overthrust_2D.h5"))
    ap.add_argument("--ps", type=int, default=32)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.model, a.child, a.ps, a.block)
    rows = {}
    for config in ("exact", "probed"):
        res = subprocess.run([sys.executable, __file__, "--child", config, "--model", a.model,
                              "--ps", str(a.ps), "--block", str(a.block)],
                             capture_output=True, text=True, check=True)
        rows[config] = json.loads(res.stdout.strip().splitlines()[-1])
    ex, pr = rows["exact"], rows["probed"]
    nt, N, r, B = ex["nt"], ex["N"], pr["r"], pr["block"]
    mib = 4 * N / 2**20
    result = dict(rows=rows, nt=nt, N=N, r=r, block=B,
                  expected_exact_mib=(nt + 2) * mib, expected_probed_mib=(r + B + 1) * mib,
                  ratio=ex["working_mib"] / pr["working_mib"], goal=0.8 * nt / r)
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
