"""Memory of probed convolutions (timeprobe.xconv) vs nn.Conv2d, measured.

1. Saved-tensor bytes of one layer (torch.autograd.graph.saved_tensors_hooks; parameters
   excluded) at the four benchmark sizes, vs the formula 4*b*r (mode='all').
2. Peak memory of a forward+backward (second iteration) of whole networks: the seed's
   4-layer 16-channel 3x3 stack on 128x16x256x256, a ResNet-18-like and a SqueezeNet-like
   network (built in timeprobe.xconv.nets, random weights), exact vs probed (r = 8, 32),
   optionally with the 1-bit ReLU. Each case runs in a fresh subprocess.
   CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats().
   CPU: glibc is told to mmap every allocation >= 64 KiB (MALLOC_MMAP_THRESHOLD_) so the
   resident set follows the allocated bytes; the peak resident set (VmHWM, reset through
   /proc/self/clear_refs before the measured iteration) above the resident set before it,
   plus the bytes of the tensors alive before it (input, parameters, gradients), estimates
   the same quantity as CUDA's max_memory_allocated.

    python scripts/xconv_memory.py [--device cpu|cuda] [--quick] [--out FILE.json]

Each run (not --quick, not --no-record) appends one record (script ``xconv_memory``) to the
benchmark history (``scripts/records.py``: ``benchmarks/history.jsonl``). The JSON goes to a
fresh ``results/xconv_memory-<time>/`` (git-ignored) unless ``--out`` names a new file.
"""
import argparse
import gc
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import records  # noqa: E402
from xconv_common import machine_info, reset_parameters, save_json  # noqa: E402

from timeprobe.xconv import Xconv2D, convert_net, nets  # noqa: E402

MiB = 2 ** 20
SIZES = [(128, 16, 256), (128, 64, 128), (64, 256, 64), (32, 16, 1024)]


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def build(net_name, device):
    if net_name == "stack4":
        return nets.conv_stack(16, 4), (128, 16, 256, 256)
    if net_name == "resnet18":
        return nets.resnet18_like(num_classes=1000), (32, 3, 224, 224)
    if net_name == "squeezenet":
        return nets.squeezenet_like(num_classes=1000), (64, 3, 224, 224)
    raise ValueError(net_name)


def child(spec):
    device = torch.device(spec["device"])
    g = torch.Generator().manual_seed(0)
    net, shape = build(spec["net"], device)
    if spec.get("batch"):
        shape = (spec["batch"],) + shape[1:]
    reset_parameters(net, g)
    if spec["ps"] > 0:
        convert_net(net, ps=spec["ps"], relu=spec["relu"], seed=1)
    net = net.to(device)
    x = torch.randn(shape, generator=g).to(device)
    if spec.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        loss = net(x).mean()
        loss.backward()
        del loss

    step()
    net.zero_grad(set_to_none=False)
    gc.collect()
    live = x.numel() * x.element_size() + 2 * sum(p.numel() * p.element_size()
                                                  for p in net.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_bytes": peak, "base_bytes": base, "method": "cuda.max_memory_allocated"}
    rss0 = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step()
    hwm = _status("VmHWM")
    return {"peak_bytes": live + hwm - rss0, "base_bytes": live, "rss0": rss0, "hwm": hwm,
            "method": "VmHWM-VmRSS0+live tensors (MALLOC_MMAP_THRESHOLD_=65536)"}


def run_child(spec):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class SavedBytes:
    def __init__(self, exclude=()):
        self.exclude = {t.data_ptr() for t in exclude}
        self.nbytes = 0

    def __enter__(self):
        self.h = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.h.__enter__()
        return self

    def pack(self, t):
        if t.data_ptr() not in self.exclude:
            self.nbytes += t.numel() * t.element_size()
        return t

    def __exit__(self, *a):
        self.h.__exit__(*a)


def saved_bytes_table(device, sizes):
    rows = []
    g = torch.Generator().manual_seed(0)
    for b, c, n in sizes:
        x = torch.randn(b, c, n, n, generator=g).to(device).requires_grad_(True)
        row = {"b": b, "c": c, "n": n, "input_bytes": x.numel() * 4}
        for ps in (0, 8, 32):
            lay = Xconv2D(c, c, 3, padding=1, bias=False, ps=ps, seed=0).to(device)
            with SavedBytes(exclude=lay.parameters()) as s:
                y = lay(x)
            del y
            row[f"saved_r{ps}"] = s.nbytes
            row[f"formula_r{ps}"] = x.numel() * 4 if ps == 0 else 4 * b * ps
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--child")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="small batches (smoke test)")
    ap.add_argument("--nets", default="stack4,resnet18,squeezenet")
    ap.add_argument("--out", default=None, help="JSON file (must not exist; default "
                    "results/xconv_memory-<time>/xconv_memory_<device>.json)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-saved", action="store_true", help="skip the saved-bytes table")
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    if a.out:
        records.refuse_existing(a.out)  # before the run, not after it
        out = a.out
    else:
        out = records.output_dir("xconv_memory" + ("-quick" if a.quick else "")) / f"xconv_memory_{a.device}.json"
    res = {"machine": machine_info(), "device": a.device, "cmd": " ".join(sys.argv)}
    res["saved_bytes"] = [] if a.no_saved else saved_bytes_table(
        a.device, [(min(b, 4), c, n) for b, c, n in SIZES] if a.quick else SIZES)
    print("saved-tensor bytes per layer (MiB): size, nn.Conv2d, r=8, r=32 (formula 4*b*r)")
    for r in res["saved_bytes"]:
        print(f"  b={r['b']} c={r['c']} {r['n']}^2: {r['saved_r0'] / MiB:.1f}  "
              f"{r['saved_r8'] / MiB:.4f}  {r['saved_r32'] / MiB:.4f}  "
              f"(formula {r['formula_r8'] / MiB:.4f}, {r['formula_r32'] / MiB:.4f})")
    res["peak"] = []
    for net in a.nets.split(","):
        variants = [(0, False), (8, False), (32, False)]
        if net != "stack4":
            variants += [(8, True), (32, True)]
        for ps, relu in variants:
            spec = {"net": net, "ps": ps, "relu": relu, "device": a.device,
                    "channels_last": a.channels_last}
            if a.quick:
                spec["batch"] = 8
            r = run_child(spec)
            r.update(spec)
            res["peak"].append(r)
            print(f"  {net:10s} ps={ps:2d} bitrelu={relu!s:5s} peak {r['peak_bytes'] / MiB:9.1f} MiB"
                  f" (live before: {r['base_bytes'] / MiB:.1f} MiB)", flush=True)
    save_json(out, res)
    print("wrote", out)
    records.record(a, "xconv_memory", {k: v for k, v in res.items() if k != "cmd"}, argv, __file__)
    return res


if __name__ == "__main__":
    main()
