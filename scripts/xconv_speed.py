"""Speed of one probed convolution layer (timeprobe.xconv.Xconv2D) vs nn.Conv2d.

Forward + backward (input gradient included, as inside a network) of a c->c 3x3 'same'
convolution without bias at the issue's four sizes and r in {8, 32} (mode='all',
Rademacher probes). Variants are timed side by side in one process, interleaved
(round-robin), median over --reps repetitions after one warm-up; ratio = t(nn.Conv2d) /
t(Xconv2D), so > 1 means the probed layer is faster. Runs on CUDA when available
(cudnn.benchmark on, CUDA-event timing), else on the CPU.

    python scripts/xconv_speed.py [--device cpu|cuda] [--reps 3] [--quick] [--dtype float32]
                                  [--out FILE.json] [--fig PATH] [--write-docs]
                                  [--breakdown]   # also time the exact pieces separately

Each run (not --quick, not --no-record) appends one record (script ``xconv_speed``) to the
benchmark history (``scripts/records.py``: ``benchmarks/history.jsonl``). The JSON and the bar
chart go to a fresh ``results/xconv_speed-<time>/`` (git-ignored) unless ``--out`` / ``--fig``
name new files (existing files are refused); ``--write-docs`` also draws the committed
``benchmarks/figures/xconv_speed_<device>.png``.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import records  # noqa: E402
from xconv_common import machine_info, save_json  # noqa: E402

from timeprobe.xconv import Xconv2D  # noqa: E402

SIZES = [(128, 16, 256), (128, 64, 128), (64, 256, 64), (32, 16, 1024)]
QUICK = [(16, 16, 128), (16, 64, 64), (8, 256, 32), (4, 16, 512)]


def timer(device):
    if device.type == "cuda":
        def run(fn):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            return s.elapsed_time(e) / 1e3
    else:
        def run(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
    return run


def breakdown(w, x, gy, reps, run):
    """Median seconds of the pieces of one layer's forward + backward: what nn.Conv2d runs
    (library forward, fused dX+dW backward, and dW alone) and the exact pieces XConv runs
    (row-band forward and input gradient on the CPU; the library's elsewhere)."""
    from timeprobe.xconv.functional import band_budget, conv_rows, input_grad_rows
    conv_bwd = torch.ops.aten.convolution_backward
    args = ([1, 1], [1, 1], [1, 1])
    budget = band_budget(x.numel() * x.element_size(), None)
    parts = {
        "library_forward": lambda: torch.ops.aten.convolution(x, w, None, *args, False, [0, 0], 1),
        "library_backward_dx_dw": lambda: conv_bwd(gy, x, w, None, *args, False, [0, 0], 1,
                                                   (True, True, False)),
        "library_dw_only": lambda: conv_bwd(gy, x, w, None, *args, False, [0, 0], 1,
                                            (False, True, False)),
        "library_dx_only": lambda: torch.ops.aten.convolution(gy, w, None, *args, True, [0, 0], 1),
        "band_forward": lambda: conv_rows(x, w, None, *args, 1, budget),
        "band_dx": lambda: input_grad_rows(gy, w, tuple(x.shape), *args, 1, budget),
    }
    times = {k: [] for k in parts}
    for k, f in parts.items():
        run(f)
    for i in range(reps):
        for k, f in parts.items():
            times[k].append(run(f))
    return {k: statistics.median(v) for k, v in times.items()}


def plot_speed(res, path):
    """Bar chart of the speed-ups (t(nn.Conv2d) / t(XConv)) per size and r."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ks = [k for k in res["rows"][0] if k.startswith("speedup_")]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    wdt = 0.8 / len(ks)
    for j, k in enumerate(ks):
        ax.bar([i + j * wdt for i in range(len(res["rows"]))], [r[k] for r in res["rows"]],
               wdt, label=f"r = {k.split('_r')[1]}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + wdt * (len(ks) - 1) / 2 for i in range(len(res["rows"]))])
    ax.set_xticklabels([f"b={r['b']} c={r['c']}\n{r['n']}²" for r in res["rows"]], fontsize=8)
    ax.set_ylabel("speed vs nn.Conv2d (×)")
    ax.set_title(f"XConv fwd+bwd, {res['device'].split(':')[0].upper()} {res['dtype']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--ps", default="8,32")
    ap.add_argument("--mode", default="all", choices=["all", "channel"])
    ap.add_argument("--out", default=None, help="JSON file (must not exist; default "
                    "results/xconv_speed-<time>/xconv_speed_<device>.json)")
    ap.add_argument("--fig", default=None, help="bar chart (must not exist; default beside the default JSON)")
    ap.add_argument("--sizes", default="1,2,3,4", help="which of the four sizes (1-based)")
    ap.add_argument("--batch-div", type=int, default=1,
                    help="divide the batch sizes (indicative CPU runs of the big-channel sizes)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the components: library vs row-band forward convolution "
                         "and input gradient, exact weight gradient, fused exact backward")
    records.add_arguments(ap, docs="benchmarks/figures/xconv_speed_<device>.png")
    a = ap.parse_args(argv)
    records.check_arguments(ap, a)
    records.refuse_existing(a.out, a.fig)  # before the run, not after it
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    reps = a.reps or (10 if device.type == "cuda" else 3)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run = timer(device)
    g = torch.Generator().manual_seed(0)
    res = {"machine": machine_info(), "device": str(device), "dtype": a.dtype, "reps": reps,
           "mode": a.mode, "cmd": " ".join(sys.argv), "rows": []}
    print(res["machine"])
    sizes = QUICK if a.quick else SIZES
    sizes = [sizes[int(i) - 1] for i in a.sizes.split(",")]
    sizes = [(max(1, b // a.batch_div), c, n) for b, c, n in sizes]
    if a.out:
        out, fig = a.out, a.fig
    else:
        run_dir = records.output_dir("xconv_speed" + ("-quick" if a.quick else ""))
        out, fig = run_dir / f"xconv_speed_{device.type}.json", a.fig or run_dir / f"xconv_speed_{device.type}.png"
    for b, c, n in sizes:
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (3 * c ** 0.5))
        conv = conv.to(device, dtype)
        layers = {"conv": conv}
        for r in map(int, a.ps.split(",")):
            layers[f"r{r}"] = Xconv2D.from_conv(conv, ps=r, mode=a.mode, seed=r)
        x = torch.randn(b, c, n, n, generator=g).to(device, dtype).requires_grad_(True)
        gy = torch.randn(b, c, n, n, generator=g).to(device, dtype)

        def fb(m):
            def f():
                y = m(x)
                y.backward(gy)
                x.grad = None
                conv.weight.grad = None
            return f

        def fwd(m):
            def f():
                with torch.no_grad():
                    m(x)
            return f

        times = {k: [] for k in layers}
        for k, m in layers.items():  # warm-up (cudnn autotune, oneDNN primitive cache)
            run(fb(m))
        for i in range(reps):
            keys = list(layers)
            keys = keys[i % len(keys):] + keys[:i % len(keys)]
            for k in keys:
                times[k].append(run(fb(layers[k])))
        tf = statistics.median(run(fwd(conv)) for _ in range(max(1, reps // 2)))
        row = {"b": b, "c": c, "n": n, "forward_only_conv_s": tf,
               **{f"t_{k}": statistics.median(v) for k, v in times.items()},
               **{f"all_{k}": v for k, v in times.items()}}
        for k in layers:
            if k != "conv":
                row[f"speedup_{k}"] = row["t_conv"] / row[f"t_{k}"]
        if a.breakdown:
            row["breakdown"] = breakdown(conv.weight.detach(), x.detach(), gy, reps, run)
            print("   components (s):", {k: round(v, 3) for k, v in row["breakdown"].items()})
        res["rows"].append(row)
        print(f"b={b:3d} c={c:3d} {n:4d}^2: nn.Conv2d {row['t_conv']:.3f}s  " + "  ".join(
            f"{k} {row[f't_{k}']:.3f}s ({row[f'speedup_{k}']:.2f}x)" for k in layers if k != "conv"),
            flush=True)
        save_json(out, res)
    print("wrote", out)
    if fig:
        plot_speed(res, fig)
    rec = records.record(a, "xconv_speed", {k: v for k, v in res.items() if k != "cmd"}, argv, __file__)
    if rec and a.write_docs:
        plot_speed(res, records.DOCS / "figures" / f"xconv_speed_{device.type}.png")
    return res


if __name__ == "__main__":
    main()
