"""Gradient working memory: one probed gradient vs one exact (full-storage) gradient.

One shot of overthrust_2D.h5 (801×207, nbl 40), 3 s, 8 Hz Ricker, source mid-model at 50 m,
receivers every grid column at 12.5 m; observed data modelled in the true model, gradient at
the smoothed model ``m0`` through the public API ``timeprobe.fwi_objective`` (QR probes by
default). Each configuration runs in its own subprocess, which

1. builds (code-generates and compiles) every operator it will use — Devito's code generation
   allocates memory of its own that belongs to no gradient strategy;
2. models the observed data (and designs the probes, to compile their operators), resets the
   peak mark (``timeprobe.io.reset_peak_memory``), runs plain forward modelling
   (``timeprobe.forward``) at ``m0`` and reads the peak resident memory (VmHWM): the baseline;
3. resets the mark again, runs ``fwi_objective`` and reads VmHWM.

Gradient working memory = step-3 peak − step-2 peak. Expected (float32, N padded points):
exact ``(nt + 1)·N_halo`` (every snapshot, with its stencil halo); probed ``r·N_region`` (ū)
+ ``B·N_region`` (ring buffer), ``N_region`` the physical domain plus ``space_order/2`` points
(``timeprobe.propagators.probe_margin``). The gradient array was allocated with the operators, the adjoint field
reuses the forward field's buffers and the adjoint source overwrites the synthetic traces in
place; what both peaks share (the traces, the model) cancels, up to the few MiB by which
plain modelling's own temporaries exceed the gradient's.

    python scripts/benchmark_memory.py [--model PATH] [--ps 32] [--block 4] [--mode QR] [--out FILE.json]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def child(model_path, config, ps, block, mode):
    import numpy as np

    import timeprobe as tp
    from timeprobe.io import peak_memory_mb, reset_peak_memory
    from timeprobe.kernels import workspace
    from timeprobe.objectives import GradientOptions, _probing_for_shot, _shot_seeds
    from timeprobe.propagators import (_op_adjoint, _op_flush, _op_flush_adjoint, _op_forward, _probe_key,
                                       computational_axis, probe_margin, to_computational)

    true = tp.Model.from_h5(model_path, key="m")
    m = tp.Model.from_h5(model_path, key="m0")
    m.dt = true.dt = min(true.critical_dt, m.critical_dt)
    nx = m.shape[0]
    T = 3000.0
    q = tp.Data(tp.Geometry([np.array([[(nx // 2) * 25.0, 50.0]])], dt=4.0, t=T), [tp.ricker(0.008, 4.0, T)])
    rec = tp.Geometry([np.stack([np.arange(nx) * 25.0, np.full(nx, 12.5)], 1)], dt=4.0, t=T)
    dt, nt = computational_axis(m, q.geometry, rec)
    ws = workspace(m)
    _op_forward(ws)
    d = tp.forward(true, q, rec)
    probing = None
    if config == "exact":
        _op_forward(ws, save=nt + 1)
        _op_adjoint(ws, grad_save=nt + 1, src_interp=False)
    elif config == "probed":
        # the probing fwi_objective will build for this shot (same seed): its operators, compiled now
        wc = to_computational(q.arrays[0], q.geometry, dt, nt)
        opts = GradientOptions(ps=ps, mode=mode, block=block)
        probing = _probing_for_shot(opts, wc, dt, nt, d[0], _shot_seeds(0, 1)[0])
        key = _probe_key(probing, m)
        _op_forward(ws, probing=key)
        _op_adjoint(ws, probing=key, src_interp=False)
        _op_flush(ws, key)
        _op_flush_adjoint(ws, key)
    reset_peak_memory()  # what the set-up above allocated and freed is not the baseline
    tp.forward(m, q, rec)
    base = peak_memory_mb()
    reset_peak_memory()
    if config == "exact":
        tp.fwi_objective(m, q, d)
    else:
        tp.fwi_objective(m, q, d, ps=ps, mode=mode, seed=0, block=block)
    peak = peak_memory_mb()
    out = dict(config=config, baseline_mib=base, peak_mib=peak, working_mib=peak - base, nt=nt,
               N=int(np.prod(m.shape_padded)),
               N_halo=int(np.prod([n + 2 * m.space_order for n in m.shape_padded])),
               N_region=int(np.prod([n - 2 * probe_margin(m) for n in m.shape_padded])))
    if probing is not None:
        out.update(r=probing.r, block=probing.block, subsample=probing.subsample, mode=mode)
    print(json.dumps(out))


def main(argv=None):
    default = Path(os.environ.get("TIMEPROBE_DATA", Path(__file__).resolve().parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default / "models" / "overthrust_2D.h5"))
    ap.add_argument("--ps", type=int, default=32)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--mode", default="QR")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.model, a.child, a.ps, a.block, a.mode)
    rows = {}
    for config in ("exact", "probed"):
        # A fixed glibc mmap threshold: every array above 128 KiB is its own mapping, returned
        # to the OS when freed, so resident memory tracks live arrays (with the default
        # dynamic threshold, freed arrays linger in the heap and later ones reuse them).
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        res = subprocess.run([sys.executable, __file__, "--child", config, "--model", a.model,
                              "--ps", str(a.ps), "--block", str(a.block), "--mode", a.mode],
                             capture_output=True, text=True, check=True, env=env)
        rows[config] = json.loads(res.stdout.strip().splitlines()[-1])
    ex, pr = rows["exact"], rows["probed"]
    nt, N, r, B = ex["nt"], ex["N"], pr["r"], pr["block"]
    result = dict(rows=rows, nt=nt, N=N, r=r, block=B,
                  expected_exact_mib=(nt + 1) * ex["N_halo"] * 4 / 2**20,
                  expected_probed_mib=(r + B) * pr["N_region"] * 4 / 2**20,
                  ratio=ex["working_mib"] / pr["working_mib"], goal=0.8 * nt / r)
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
