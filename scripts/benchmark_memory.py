"""Peak memory: one probed gradient (r = 32) vs one exact full-storage gradient, Overthrust 2D shot.

Each configuration runs in its own subprocess (peak = VmHWM of the child, which counts the C
allocations of Devito); plain forward modelling gives the baseline. Gradient working memory =
peak − plain-forward peak. Goal (issue 3 item 6): exact/probed working-memory ratio ≥ 0.8·nt/r.

Expected working sets (float32, N padded grid points):

* exact:  usave (nt+1)·N  + v (3N) + grad N
* probed: ū r·N + ring buffer B·N (forward and again in the adjoint) + v (3N) + grad N

Usage: ``python scripts/benchmark_memory.py [--r 32] [--out benchmarks/memory.json]``
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_gradients as bg  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--r", type=int, default=32)
    ap.add_argument("--case", default="overthrust2d")
    ap.add_argument("--out", default=str(bg.ROOT / "benchmarks" / "memory.json"))
    a = ap.parse_args()
    bg.setup(a.case)
    cfgs = [dict(name="plain_forward", strategy="plain_forward"),
            dict(name="full", strategy="full"),
            dict(name=f"probe_r{a.r}", strategy="probe", opts=dict(r=a.r, seed=0))]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {c["name"]: bg.in_subprocess(a.case, c, tmp) for c in cfgs}
    base = rows["plain_forward"]["peak_mb"]
    nt, N, r = rows["full"]["nt"], rows["full"]["N"], a.r
    B = max(4, min(16, r // 4))
    w_ex, w_pr = rows["full"]["peak_mb"] - base, rows[f"probe_r{r}"]["peak_mb"] - base
    res = dict(rows=rows, nt=nt, N=N, r=r, B=B, working_exact_mb=w_ex, working_probe_mb=w_pr,
               ratio=w_ex / w_pr, goal=0.8 * nt / r,
               expected_exact_mb=(nt + 1) * N * 4 / 2**20, expected_probe_mb=(r + B) * N * 4 / 2**20)
    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
