"""Gradient working memory: one probed gradient vs one exact (full-storage) gradient.

One shot of overthrust_2D.h5 (801×207, nbl 40), 3 s, 8 Hz Ricker, source mid-model at 50 m,
receivers every grid column at 12.5 m; observed data modelled in the true model, gradient at
the smoothed model ``m0`` through the public API ``timeprobe.fwi_objective`` (QR probes by
default). Each configuration runs in its own subprocess, which

1. models the observed data and computes one gradient of the configuration, which builds
   (code-generates and compiles) every operator it will use — Devito's code generation
   allocates memory of its own that belongs to no gradient strategy;
2. resets the peak mark (``timeprobe.io.reset_peak_memory``), runs plain forward modelling
   (``timeprobe.forward``) at ``m0`` and reads the peak resident memory (VmHWM): the baseline;
3. resets the mark again, runs ``fwi_objective`` and reads VmHWM.

Gradient working memory = step-3 peak − step-2 peak. Expected (float32, N padded points):
exact ``(nt + 1)·N_halo`` (every snapshot, with its stencil halo); probed ``r·N_region`` (ū)
+ ``B·N_region`` (ring buffer), ``N_region`` the physical domain plus ``space_order/2`` points
(``timeprobe.probe_buffers.region_shape``) with ``--sum-padding 0``, the padded grid otherwise. The gradient array was allocated with the operators, the adjoint field
reuses the forward field's buffers and the adjoint source overwrites the synthetic traces in
place; what both peaks share (the traces, the model) cancels, up to the few MiB by which
plain modelling's own temporaries exceed the gradient's.

Each run appends one record (script ``benchmark_memory``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``) unless ``--no-record``; ``--out`` also
writes the figures to a new JSON file.

    python scripts/benchmark_memory.py [--model PATH] [--ps 32] [--block B] [--mode QR] [--out FILE.json]
                                       [--note TEXT] [--no-record]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402


def child(model_path, config, ps, block, mode, sum_padding=True):
    import numpy as np

    import timeprobe as tp
    from timeprobe.geometry import computational_axis
    from timeprobe.io import peak_memory_mb, reset_peak_memory
    from timeprobe.probe_buffers import region_shape

    true = tp.Model.from_h5(model_path, key="m")
    m = tp.Model.from_h5(model_path, key="m0")
    m.dt = true.dt = min(true.critical_dt, m.critical_dt)
    nx = m.shape[0]
    T = 3000.0
    q = tp.Data(tp.Geometry([np.array([[(nx // 2) * 25.0, 50.0]])], dt=4.0, t=T), [tp.ricker(0.008, 4.0, T)])
    rec = tp.Geometry([np.stack([np.arange(nx) * 25.0, np.full(nx, 12.5)], 1)], dt=4.0, t=T)
    dt, nt = computational_axis(m, q.geometry, rec)
    d = tp.forward(true, q, rec)

    def gradient():
        if config == "exact":
            return tp.fwi_objective(m, q, d, sum_padding=sum_padding)
        return tp.fwi_objective(m, q, d, ps=ps, mode=mode, seed=0, block=block, sum_padding=sum_padding)
    # one gradient first: it generates and compiles every operator the measured one uses
    gradient()
    reset_peak_memory()  # what the set-up above allocated and freed is not the baseline
    tp.forward(m, q, rec)
    base = peak_memory_mb()
    reset_peak_memory()
    gradient()
    peak = peak_memory_mb()
    out = dict(config=config, baseline_mib=base, peak_mib=peak, working_mib=peak - base, nt=nt,
               N=int(np.prod(m.shape_padded)),
               N_halo=int(np.prod([n + 2 * m.space_order for n in m.shape_padded])),
               N_region=int(np.prod(region_shape(m))) if not sum_padding else int(np.prod(m.shape_padded)),
               sum_padding=sum_padding)
    if config == "probed":
        from timeprobe.probing import ProbingOptions, probes_for_shot, shot_generators
        from timeprobe.geometry import to_computational
        wc = to_computational(q.arrays[0], q.geometry, dt, nt)
        probing = probes_for_shot(ProbingOptions(ps=ps, mode=mode, block=block), wc, dt, nt, d[0],
                                  shot_generators(0, 1)[0])
        out.update(r=probing.r, block=probing.block, subsample=probing.subsample, mode=mode)
    print(json.dumps(out))


def main(argv=None):
    default = Path(os.environ.get("TIMEPROBE_DATA", Path(__file__).resolve().parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default / "models" / "overthrust_2D.h5"))
    ap.add_argument("--ps", type=int, default=32)
    ap.add_argument("--block", type=int, default=None, help="snapshots per block (default: the library's DEFAULT_BLOCK)")
    ap.add_argument("--mode", default="QR")
    ap.add_argument("--sum-padding", type=int, choices=(0, 1), default=1,
                    help="1 (default): the exact derivative, probe fields over the padded grid; "
                         "0: the physical part, probe fields skip the absorbing layers")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file (must not exist)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.model, a.child, a.ps, a.block, a.mode, bool(a.sum_padding))
    if a.out:
        records.refuse_existing(a.out)  # before the run, not after it
    rows = {}
    for config in ("exact", "probed"):
        # A fixed glibc mmap threshold: every array above 128 KiB is its own mapping, returned
        # to the OS when freed, so resident memory tracks live arrays (with the default
        # dynamic threshold, freed arrays linger in the heap and later ones reuse them).
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        res = subprocess.run([sys.executable, __file__, "--child", config, "--model", a.model,
                              "--ps", str(a.ps), *(["--block", str(a.block)] if a.block else []), "--mode", a.mode,
                              "--sum-padding", str(a.sum_padding)],
                             capture_output=True, text=True, check=True, env=env)
        rows[config] = json.loads(res.stdout.strip().splitlines()[-1])
    ex, pr = rows["exact"], rows["probed"]
    nt, N, r, B = ex["nt"], ex["N"], pr["r"], pr["block"]
    result = dict(model=Path(a.model).name, mode=a.mode, sum_padding=a.sum_padding, rows=rows, nt=nt, N=N,
                  r=r, block=B, expected_exact_mib=(nt + 1) * ex["N_halo"] * 4 / 2**20,
                  expected_probed_mib=(r + B) * pr["N_region"] * 4 / 2**20,
                  ratio=ex["working_mib"] / pr["working_mib"], goal=0.8 * nt / r)
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "x") as f:
            json.dump(records.plain(result), f, indent=1)
    records.record(a, "benchmark_memory", result, argv, __file__)
    return result


if __name__ == "__main__":
    main()
