"""Training accuracy with probed convolutions on real data: scikit-learn's bundled
handwritten digits (1797 8x8 images, no download).

A small CNN (timeprobe.xconv.nets.digits_cnn: three 3x3 convolutions, max-pool, linear
head) is trained with Adam from the same initialisation and the same mini-batch order,
exact (nn.Conv2d) vs probed weight gradients (convert_net, ps = 8 and 32, mode 'all',
Rademacher), for several seeds. Reports the final test accuracy per seed, the mean and the
paired difference to exact, and plots test accuracy vs epoch.

    python scripts/xconv_digits.py [--seeds 5] [--epochs 40] [--ps 8,32] [--mode all]
                                   [--out FILE.json] [--fig FILE.png] [--write-docs]

Each run (not --no-record) appends one record (script ``xconv_digits``) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``). The JSON and the figure go to a fresh
``results/xconv_digits-<time>/`` (git-ignored) unless ``--out`` / ``--fig`` name new files
(existing files are refused); ``--write-docs`` also draws the committed
``benchmarks/figures/xconv_digits.png``.
"""
import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import records  # noqa: E402
from xconv_common import machine_info, reset_parameters, save_json  # noqa: E402

from timeprobe.xconv import convert_net, nets  # noqa: E402


def load_digits_split(split_seed=0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]  # (n, 1, 8, 8)
    y = d.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=split_seed,
                                          stratify=y)
    mu, sd = Xtr.mean(), Xtr.std()
    t = lambda a: torch.from_numpy(a)
    return t((Xtr - mu) / sd), t(ytr), t((Xte - mu) / sd), t(yte)


def accuracy(net, X, y):
    net.eval()
    with torch.no_grad():
        acc = (net(X).argmax(1) == y).float().mean().item()
    net.train()
    return acc


def train(net, data, epochs, batch, lr, order_seed):
    Xtr, ytr, Xte, yte = data
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(order_seed)
    hist = []
    for ep in range(epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            F.cross_entropy(net(Xtr[idx]), ytr[idx]).backward()
            opt.step()
        hist.append(accuracy(net, Xte, yte))
    return hist


def plot_digits(res, epochs, seeds, mode, path):
    """Test accuracy against epoch, mean ± std over the seeds, one curve per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ep = np.arange(1, epochs + 1)
    for ps in res["hist"]:
        h = 100 * np.array(res["hist"][ps])
        m, s = h.mean(0), h.std(0)
        lab = "exact (nn.Conv2d)" if ps == "0" else f"XConv r = {ps}"
        ax.plot(ep, m, label=lab)
        ax.fill_between(ep, m - s, m + s, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(80, 100)
    ax.set_title(f"sklearn digits, {seeds} seeds (mean ± std), mode '{mode}'", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ps", default="8,32")
    ap.add_argument("--mode", default="all", choices=["all", "channel"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON file (must not exist; default "
                    "results/xconv_digits-<time>/xconv_digits.json)")
    ap.add_argument("--fig", default=None, help="figure (must not exist; default beside the default JSON)")
    records.add_arguments(ap, docs="benchmarks/figures/xconv_digits.png")
    a = ap.parse_args(argv)
    records.check_arguments(ap, a)
    records.refuse_existing(a.out, a.fig)  # before the run, not after it
    if a.out:
        out, fig = a.out, a.fig
    else:
        run_dir = records.output_dir("xconv_digits")
        out, fig = run_dir / "xconv_digits.json", a.fig or run_dir / "xconv_digits.png"
    torch.set_num_threads(a.threads)
    data = load_digits_split()
    variants = [0] + [int(p) for p in a.ps.split(",")]
    res = {"machine": machine_info(), "cmd": " ".join(sys.argv), "args": vars(a),
           "n_train": len(data[0]), "n_test": len(data[2]), "hist": {}, "final": {}}
    t0 = time.time()
    for seed in range(a.seeds):
        base = reset_parameters(nets.digits_cnn(), torch.Generator().manual_seed(1000 + seed))
        for ps in variants:
            net = copy.deepcopy(base)
            if ps:
                convert_net(net, ps=ps, mode=a.mode, seed=seed)
            h = train(net, data, a.epochs, a.batch, a.lr, order_seed=seed)
            res["hist"].setdefault(str(ps), []).append(h)
            res["final"].setdefault(str(ps), []).append(h[-1])
            print(f"seed {seed} ps={ps:2d}: test accuracy {100 * h[-1]:.2f}%  "
                  f"({time.time() - t0:.0f}s)", flush=True)
    ex = np.array(res["final"]["0"])
    res["summary"] = {}
    for ps in variants:
        f = np.array(res["final"][str(ps)])
        diff = f - ex
        res["summary"][str(ps)] = {
            "mean_acc": float(f.mean()), "std_acc": float(f.std(ddof=1)) if len(f) > 1 else 0.0,
            "mean_diff_vs_exact_pp": float(100 * diff.mean()),
            "std_diff_pp": float(100 * diff.std(ddof=1)) if len(f) > 1 else 0.0}
        s = res["summary"][str(ps)]
        print(f"ps={ps:2d}: {100 * s['mean_acc']:.2f} ± {100 * s['std_acc']:.2f}%  "
              f"paired diff vs exact {s['mean_diff_vs_exact_pp']:+.2f} ± {s['std_diff_pp']:.2f} pp")
    save_json(out, res)
    print("wrote", out)
    if fig:
        plot_digits(res, a.epochs, a.seeds, a.mode, fig)
    rec = records.record(a, "xconv_digits", {k: v for k, v in res.items() if k != "cmd"}, argv, __file__)
    if rec and a.write_docs:
        plot_digits(res, a.epochs, a.seeds, a.mode, records.DOCS / "figures" / "xconv_digits.png")
    return res


if __name__ == "__main__":
    main()
