"""Tests of timeprobe.xconv (PyTorch probed convolutions). CPU only, small shapes."""
import copy
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from scipy import stats  # noqa: E402
from torch import nn  # noqa: E402

from timeprobe import xconv as X  # noqa: E402
from timeprobe.xconv import (BitReLU, Xconv1D, Xconv2D, Xconv3D, convert_net,  # noqa: E402
                             draw_probes, mix_seed, xconv2d)

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
XCONV = {1: Xconv1D, 2: Xconv2D, 3: Xconv3D}

# configuration classes: (name, conv kwargs, input shape)
CONFIGS = [
    ("basic", dict(ci=3, co=4, k=3, padding=1), (2, 3, 7, 6)),
    ("valid", dict(ci=3, co=4, k=3, padding=0), (2, 3, 7, 6)),
    ("stride_nonsquare", dict(ci=3, co=4, k=(3, 2), stride=(2, 1), padding=(1, 0)), (2, 3, 9, 5)),
    ("dilation", dict(ci=2, co=3, k=3, dilation=(2, 1), padding=(2, 1)), (2, 2, 9, 7)),
    ("groups", dict(ci=4, co=6, k=3, groups=2, padding=1), (2, 4, 6, 6)),
    ("depthwise", dict(ci=3, co=3, k=3, groups=3, padding=1, stride=2), (2, 3, 7, 8)),
    ("even_same", dict(ci=2, co=3, k=(4, 2), padding="same"), (2, 2, 6, 5)),
    ("reflect", dict(ci=2, co=3, k=3, padding=1, padding_mode="reflect"), (2, 2, 6, 5)),
    ("replicate", dict(ci=2, co=3, k=3, padding=(1, 2), padding_mode="replicate"), (2, 2, 6, 5)),
    ("circular", dict(ci=2, co=3, k=3, padding=1, padding_mode="circular"), (2, 2, 6, 5)),
    ("batch1", dict(ci=3, co=4, k=3, padding=1), (1, 3, 7, 6)),
    ("conv1d", dict(ci=3, co=4, k=4, padding=2, stride=2, dilation=2), (2, 3, 17)),
    ("conv3d", dict(ci=2, co=3, k=(3, 2, 3), padding=1, stride=(1, 2, 1)), (2, 2, 5, 4, 5)),
]
IDS = [c[0] for c in CONFIGS]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny shapes: one intra-op thread is faster, and immune to OpenMP barrier stalls when
    # the CI machine's cores are shared with other jobs
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(cfg, shape, ps=8, mode="all", probe="rademacher", seed=0, dtype=torch.float64):
    kw = dict(cfg)
    ci, co, k = kw.pop("ci"), kw.pop("co"), kw.pop("k")
    d = len(shape) - 2
    g = torch.Generator().manual_seed(1234)
    layer = XCONV[d](ci, co, k, bias=True, ps=ps, mode=mode, probe=probe, seed=seed, dtype=dtype,
                     **kw)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=dtype))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=dtype))
    x = torch.randn(shape, generator=g, dtype=dtype)
    return layer, x


def exact_grads(layer, x, R):
    ps = layer.ps
    layer.ps = 0
    try:
        x = x.detach().requires_grad_(True)
        y = layer(x)
        gx, gw, gb = torch.autograd.grad((y * R).sum(), (x, layer.weight, layer.bias))
    finally:
        layer.ps = ps
    return y.detach(), gx, gw, gb


def probed_grads(layer, x, R):
    x = x.detach().requires_grad_(True)
    y = layer(x)
    gx, gw, gb = torch.autograd.grad((y * R).sum(), (x, layer.weight, layer.bias))
    return y.detach(), gx, gw, gb


def output_like(layer, x, seed=99):
    with torch.no_grad():
        y = CONV[x.dim() - 2].forward(layer, x)
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)


def zscores(samples, exact):
    samples = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    exact = np.asarray(exact, dtype=np.float64).reshape(-1)
    n = samples.shape[0]
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / math.sqrt(n)
    se = np.maximum(se, 1e-9 * (np.abs(exact).max() + 1e-30))
    return (mean - exact) / se, n


def unbiased(samples, exact, alpha=1e-3):
    """Statistical check: every element's t-statistic within the Bonferroni bound of a
    two-sided level-alpha test, and the mean squared z-score consistent with 1."""
    z, n = zscores(samples, exact)
    m = z.size
    zcrit = stats.t.ppf(1 - alpha / (2 * m), n - 1)
    agg = float(np.mean(z ** 2))
    return bool(np.abs(z).max() <= zcrit and agg <= 1.0 + 8.0 * math.sqrt(2.0 / m) + 0.05), z


def draw(layer, x, R, n):
    return torch.stack([probed_grads(layer, x, R)[2] for _ in range(n)]).numpy()


# ------------------------------------------------------------------------------------------ import
def test_import_timeprobe_does_not_import_torch():
    code = "import sys, timeprobe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------ probes
@pytest.mark.parametrize("probe", ["rademacher", "gaussian", "orthogonal"])
@pytest.mark.parametrize("r", [1, 3, 6])
def test_probes_identity_in_expectation(probe, r):
    D, n = 6, 4000
    acc = torch.zeros(n, D, D, dtype=torch.float64)
    for i in range(n):
        z = draw_probes(mix_seed(7, i), r, (2, 3), probe, dtype=torch.float64).reshape(r, D)
        acc[i] = z.t() @ z
    ok, z = unbiased(acc.numpy(), np.eye(D))
    assert ok, f"E[ZZ^T] != I for {probe}, r={r}: max|z|={np.abs(z).max():.2f}"


def test_probe_properties():
    z = draw_probes(3, 5, (4, 3), "rademacher")
    assert z.shape == (5, 4, 3)
    assert torch.allclose(z.abs(), torch.full_like(z, 1 / math.sqrt(5)))
    q = draw_probes(3, 5, (4, 3), "orthogonal", dtype=torch.float64).reshape(5, 12)
    assert torch.allclose(q @ q.t(), torch.eye(5, dtype=torch.float64) * 12 / 5, atol=1e-5)
    full = draw_probes(4, 12, (12,), "orthogonal", dtype=torch.float64)
    assert torch.allclose(full.t() @ full, torch.eye(12, dtype=torch.float64), atol=1e-5)
    with pytest.raises(ValueError, match="orthogonal"):
        draw_probes(3, 13, (12,), "orthogonal")
    for p in X.PROBES:
        assert torch.equal(draw_probes(11, 3, (7,), p), draw_probes(11, 3, (7,), p))
        assert not torch.equal(draw_probes(11, 3, (7,), p), draw_probes(12, 3, (7,), p))


def test_unscaled_orthogonal_is_detected_as_biased():
    # negative control of the statistical checker: an orthogonal frame without sqrt(D/r)
    D, r, n = 6, 2, 4000
    acc = np.stack([(lambda q: q.t() @ q)(draw_probes(i, r, (D,), "orthogonal",
                                                      dtype=torch.float64) * math.sqrt(r / D)
                                           ).numpy() for i in range(n)])
    ok, _ = unbiased(acc, np.eye(D))
    assert not ok


# ------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name,cfg,shape", CONFIGS, ids=IDS)
@pytest.mark.parametrize("mode,budget", [("all", None), ("channel", None), ("all", 1)])
def test_forward_dx_bias_exact(name, cfg, shape, mode, budget):
    """Output, dX and bias gradient equal nn.ConvNd's; budget=1 byte runs the CPU row-band
    convolutions (forward and dX) one output row at a time (halos, border zero rows)."""
    layer, x = build(cfg, shape, ps=4, mode=mode)
    layer.max_probe_bytes = budget
    R = output_like(layer, x)
    y0, gx0, _, gb0 = exact_grads(layer, x, R)
    y1, gx1, _, gb1 = probed_grads(layer, x, R)
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb1, gb0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,cfg,shape", [c for c in CONFIGS if c[0] in
                                            ("stride_nonsquare", "groups", "even_same", "reflect")])
@pytest.mark.parametrize("budget", [None, 1])
def test_gradcheck_input_and_bias(name, cfg, shape, budget):
    layer, x = build(cfg, shape, ps=3)
    layer.max_probe_bytes = budget
    layer.weight.requires_grad_(False)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(layer, (x,))
    # bias gradient through the functional form (weight held fixed, probing active)
    w = layer.weight.detach().requires_grad_(True)
    pad = layer._reversed_padding_repeated_twice
    xp = F.pad(x.detach(), pad, mode=layer.padding_mode if layer.padding_mode != "zeros"
               else "constant")
    fn = lambda inp, b: X.xconv(inp, w, b, layer.stride, 0, layer.dilation, layer.groups,
                                ps=3, seed=1)
    assert torch.autograd.gradcheck(fn, (xp.requires_grad_(True),
                                         layer.bias.detach().requires_grad_(True)),
                                    nondet_tol=0.0)


def _reference_estimate(layer, x, R, mode, seed):
    """conv_weight(P Z Z^T X, dY) computed independently from the probes of `seed`."""
    d = x.dim() - 2
    if layer.padding_mode != "zeros":
        x = F.pad(x, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        pad = 0
    elif layer.padding == "same":
        pads = layer._reversed_padding_repeated_twice
        x = F.pad(x, pads)
        pad = 0
    else:
        pad = layer.padding
    b = x.shape[0]
    if mode == "all":
        z = X.functional.probes_for(seed, layer.ps, x.shape, layer.probe, "all",
                                    layer.max_probe_bytes, dtype=x.dtype)
        zf = z.reshape(layer.ps, -1)
        xhat = ((x.reshape(b, -1) @ zf.t()) @ zf).reshape(x.shape)
    else:
        z = draw_probes(seed, layer.ps, x.shape[2:], layer.probe, dtype=x.dtype)
        zf = z.reshape(layer.ps, -1)
        xhat = ((x.reshape(-1, zf.shape[1]) @ zf.t()) @ zf).reshape(x.shape)
    fn = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight,
          3: torch.nn.grad.conv3d_weight}[d]
    return fn(xhat, layer.weight.shape, R, layer.stride, pad, layer.dilation, layer.groups)


@pytest.mark.parametrize("name,cfg,shape", CONFIGS, ids=IDS)
@pytest.mark.parametrize("mode,probe,budget", [("all", "rademacher", None),
                                               ("all", "gaussian", 200),
                                               ("channel", "gaussian", None),
                                               ("all", "orthogonal", None)])
def test_estimate_equals_sketch_formula(name, cfg, shape, mode, probe, budget):
    """Deterministic: the implementation computes exactly conv_weight(P Z Z^T X, dY), also
    when the probes are generated in row blocks and the backward runs over row tiles
    (budget=200 bytes: one row per block/tile, halos and border fill exercised)."""
    layer, x = build(cfg, shape, ps=5, mode=mode, probe=probe, seed=3)
    layer.max_probe_bytes = budget
    R = output_like(layer, x)
    _, _, gw, _ = probed_grads(layer, x, R)
    ref = _reference_estimate(layer, x, R, mode, layer.last_seed)
    torch.testing.assert_close(gw, ref, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------ unbiasedness
@pytest.mark.parametrize("name,cfg,shape", CONFIGS, ids=IDS)
@pytest.mark.parametrize("mode", ["all", "channel"])
def test_weight_gradient_unbiased(name, cfg, shape, mode):
    layer, x = build(cfg, shape, ps=8, mode=mode, seed=hash(name) % 1000)
    R = output_like(layer, x)
    _, _, gw0, _ = exact_grads(layer, x, R)
    samples = draw(layer, x, R, 300)
    ok, z = unbiased(samples, gw0.numpy())
    assert ok, f"{name}/{mode}: max|z|={np.abs(z).max():.2f}, mean z^2={np.mean(z**2):.2f}"


@pytest.mark.parametrize("mode", ["all", "channel"])
@pytest.mark.parametrize("probe", ["gaussian", "orthogonal"])
def test_weight_gradient_unbiased_probes(mode, probe):
    cfg = dict(ci=4, co=4, k=(3, 2), stride=(2, 1), dilation=(1, 2), groups=2, padding=(1, 2))
    layer, x = build(cfg, (2, 4, 7, 6), ps=6, mode=mode, probe=probe, seed=5)
    R = output_like(layer, x)
    _, _, gw0, _ = exact_grads(layer, x, R)
    ok, z = unbiased(draw(layer, x, R, 300), gw0.numpy())
    assert ok, f"{probe}/{mode}: max|z|={np.abs(z).max():.2f}, mean z^2={np.mean(z**2):.2f}"


def test_wraparound_bias_is_detected():
    """Negative control: against the gradient of a wrap-around (circular) convolution —
    what a circular-roll probe shift estimates — the same samples must fail the check."""
    cfg = dict(ci=2, co=3, k=3, padding=1)
    layer, x = build(cfg, (2, 2, 6, 5), ps=8, seed=1)
    R = output_like(layer, x)
    samples = draw(layer, x, R, 300)
    _, _, gw0, _ = exact_grads(layer, x, R)
    assert unbiased(samples, gw0.numpy())[0]
    layer.padding_mode = "circular"
    _, _, gw_wrap, _ = exact_grads(layer, x, R)
    assert not unbiased(samples, gw_wrap.numpy())[0]
    assert not unbiased(samples * 1.5, gw0.numpy())[0]  # a scale error (e.g. 1/r vs 1/sqrt(r))


def test_orthogonal_full_rank_is_exact():
    layer, x = build(dict(ci=2, co=2, k=3, padding=1), (2, 2, 3, 3), ps=18, probe="orthogonal")
    R = output_like(layer, x)
    _, _, gw0, _ = exact_grads(layer, x, R)
    _, _, gw, _ = probed_grads(layer, x, R)
    torch.testing.assert_close(gw, gw0, rtol=1e-5, atol=1e-5)
    layer.ps = 19
    with pytest.raises(ValueError, match="orthogonal"):
        probed_grads(layer, x, R)


def test_tiled_probes_unbiased():
    cfg = dict(ci=3, co=4, k=3, padding=1, stride=(2, 1))
    layer, x = build(cfg, (2, 3, 7, 6), ps=8, seed=2)
    layer.max_probe_bytes = 2 * 8 * 3 * 6 * 8  # 2 rows per probe block / output tile
    R = output_like(layer, x)
    _, _, gw0, _ = exact_grads(layer, x, R)
    ok, z = unbiased(draw(layer, x, R, 300), gw0.numpy())
    assert ok


# ------------------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["all", "channel"])
def test_low_precision_matches_same_seed_double(dtype, mode):
    cfg = dict(ci=4, co=6, k=3, padding=1, groups=2)
    lay64, x64 = build(cfg, (3, 4, 8, 8), ps=8, mode=mode, seed=9)
    lay = copy.deepcopy(lay64).to(dtype)
    x = x64.to(dtype)
    R64 = output_like(lay64, x64)
    y64, gx64, gw64, gb64 = probed_grads(lay64, x64, R64)
    y, gx, gw, gb = probed_grads(lay, x, R64.to(dtype))
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == dtype
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}[dtype]
    for a, b in ((y, y64), (gx, gx64), (gw, gw64), (gb, gb64)):
        err = (a.double() - b).norm() / b.norm()
        assert err < tol, (dtype, float(err))
    lay.ps = 0
    _, _, gwe, _ = probed_grads(lay, x, R64.to(dtype))
    _, _, gwe64, _ = exact_grads(lay64, x64, R64)
    assert ((gwe.double() - gwe64).norm() / gwe64.norm()) < tol


def test_autocast_cpu_bf16():
    lay, x = build(dict(ci=4, co=4, k=3, padding=1), (2, 4, 8, 8), ps=8, seed=4,
                   dtype=torch.float32)
    ref = copy.deepcopy(lay)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lay(x)
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
    assert lay.weight.grad.dtype == torch.float32 and lay.bias.grad.dtype == torch.float32
    # same as casting by hand
    w16 = ref.weight.detach().to(torch.bfloat16).requires_grad_(True)
    y2 = xconv2d(x.to(torch.bfloat16), w16, ref.bias.to(torch.bfloat16), padding=1, ps=8,
                 seed=lay.last_seed)
    torch.testing.assert_close(y, y2)
    y2.float().square().sum().backward()
    torch.testing.assert_close(lay.weight.grad, w16.grad.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_dtypes(dtype):
    lay, x = build(dict(ci=4, co=6, k=3, padding=1, groups=2), (3, 4, 8, 8), ps=8, seed=1)
    lay64 = copy.deepcopy(lay)
    lay = lay.to("cuda", dtype)
    R = output_like(lay64, x)
    _, gx64, gw64, _ = exact_grads(lay64, x, R)
    _, gx, gw, _ = probed_grads(lay, x.to("cuda", dtype), R.to("cuda", dtype))
    assert gw.dtype == dtype and gw.is_cuda
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert (gx.double().cpu() - gx64).norm() / gx64.norm() < tol
    with torch.autocast("cuda", dtype=torch.float16):
        y = lay.float()(x.cuda().float())
    assert y.dtype == torch.float16


# ------------------------------------------------------------------------------------------ randomness
def test_no_global_rng_and_reproducible():
    state = torch.random.get_rng_state()
    la, x = build(dict(ci=3, co=4, k=3, padding=1), (2, 3, 6, 6), ps=4, seed=17)
    lb = copy.deepcopy(la)
    R = output_like(la, x)
    state = torch.random.get_rng_state()
    ga = [probed_grads(la, x, R)[2] for _ in range(3)]
    gb = [probed_grads(lb, x, R)[2] for _ in range(3)]
    w = la.weight.detach().clone().requires_grad_(True)
    y = xconv2d(x, w, padding=1, ps=4)  # default seed stream
    y.sum().backward()
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG consumed"
    for a, b in zip(ga, gb):
        assert torch.equal(a, b)
    assert not torch.equal(ga[0], ga[1])
    # a given per-call seed reproduces the gradient through the functional form
    w1 = la.weight.detach().clone().requires_grad_(True)
    xconv2d(x, w1, la.bias.detach(), padding=1, ps=4, seed=la.last_seed).mul(R).sum().backward()
    torch.testing.assert_close(w1.grad, ga[2])


def test_no_probe_drawn_without_grad():
    la, x = build(dict(ci=3, co=4, k=3, padding=1), (2, 3, 6, 6), ps=4, seed=17)
    with torch.no_grad():
        y = la(x)
    assert la._calls == 0 and la.last_seed is None
    torch.testing.assert_close(y, F.conv2d(x, la.weight, la.bias, padding=1))


# ------------------------------------------------------------------------------------------ memory
class SavedBytes:
    def __init__(self, exclude=()):
        self.exclude = {t.data_ptr() for t in exclude}
        self.nbytes = 0
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def pack(self, t):
        if t.data_ptr() not in self.exclude:
            self.nbytes += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self.ctx.__enter__()
        return self

    def __exit__(self, *a):
        self.ctx.__exit__(*a)


@pytest.mark.parametrize("mode", ["all", "channel"])
@pytest.mark.parametrize("ps", [1, 8])
def test_saved_bytes_equal_probe_storage(mode, ps):
    lay, x = build(dict(ci=5, co=6, k=3, padding=1, stride=2), (3, 5, 16, 12), ps=ps,
                   mode=mode, dtype=torch.float32)
    x.requires_grad_(True)
    with SavedBytes(exclude=lay.parameters()) as s:
        y = lay(x)
    assert s.nbytes == lay.probe_storage_bytes(x.shape) == 4 * 3 * ps * (5 if mode == "channel" else 1)
    y.sum().backward()
    lay.ps = 0
    with SavedBytes(exclude=lay.parameters()) as s0:
        lay(x)
    assert s0.nbytes == x.numel() * 4  # nn.Conv2d keeps its input


def test_converted_stack_saves_only_sketches():
    net = X.nets.conv_stack(16, 4)
    x = torch.randn(2, 16, 32, 32, requires_grad=True)
    convert_net(net, ps=8, relu=True, seed=0)
    with SavedBytes(exclude=net.parameters()) as s:
        net(x).sum().backward()
    assert s.nbytes == 4 * 4 * 2 * 8


def test_bitrelu_saved_bytes_and_grad():
    x = torch.randn(3, 5, 7, requires_grad=True)  # 105 elements -> 14 bytes
    x.data[0, 0, 0] = 0.0
    with SavedBytes() as s:
        y = BitReLU()(x)
    assert s.nbytes == math.ceil(x.numel() / 8)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    x2 = x.detach().clone().requires_grad_(True)
    (gx2,) = torch.autograd.grad(F.relu(x2), x2, g)
    assert torch.equal(y, F.relu(x)) and torch.equal(gx, gx2)
    # in-place on a non-leaf
    x3 = x.detach().clone().requires_grad_(True)
    h = x3 * 1.0
    out = BitReLU(inplace=True)(h)
    assert out.data_ptr() == h.data_ptr()
    (gx3,) = torch.autograd.grad(out, x3, g)
    assert torch.equal(gx3, gx2)


def test_pack_unpack_roundtrip():
    for n in (1, 7, 8, 9, 64, 1001):
        m = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
        p = X.relu.pack_bits(m)
        assert p.numel() == math.ceil(n / 8) and p.dtype == torch.uint8
        assert torch.equal(X.relu.unpack_bits(p, n), m)


# ------------------------------------------------------------------------------------------ API
def test_construction_errors():
    with pytest.raises(ValueError, match="ps"):
        Xconv2D(2, 2, 3, ps=-1)
    with pytest.raises(TypeError, match="ps"):
        Xconv2D(2, 2, 3, ps=1.5)
    with pytest.raises(TypeError, match="ps"):
        Xconv2D(2, 2, 3, ps=True)
    with pytest.raises(ValueError, match="mode"):
        Xconv2D(2, 2, 3, mode="pixel")
    with pytest.raises(ValueError, match="probe"):
        Xconv2D(2, 2, 3, probe="sobol")
    with pytest.raises(ValueError, match="padding_mode"):
        Xconv2D(2, 2, 3, padding_mode="mirror")
    with pytest.raises(TypeError, match="seed"):
        Xconv2D(2, 2, 3, seed="a")
    with pytest.raises(ValueError, match="max_probe_bytes"):
        Xconv2D(2, 2, 3, max_probe_bytes=0)
    with pytest.raises(ValueError, match="max_probe_bytes"):
        Xconv2D(2, 2, 3, max_probe_bytes=1.5)
    with pytest.raises(ValueError, match="ps"):
        convert_net(nn.Sequential(nn.Conv2d(1, 1, 1)), ps=-2)
    with pytest.raises(ValueError, match="ps"):
        xconv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), ps=-1)
    with pytest.raises(ValueError, match="input has 5 channels"):  # not a band's shape
        Xconv2D(3, 4, 3, padding=1, ps=4, max_probe_bytes=1)(torch.randn(2, 5, 8, 8))


def test_unbatched_and_ps0_are_nn_conv():
    lay, x = build(dict(ci=3, co=4, k=3, padding=1), (1, 3, 6, 6), ps=4)
    y = lay(x[0].requires_grad_(True))
    assert y.shape == (4, 6, 6)
    lay.ps = 0
    ref = nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)
    ref.load_state_dict(lay.state_dict())
    torch.testing.assert_close(lay(x), ref(x))
    assert "ps=0" in repr(lay)


def test_convert_net_resnet_squeezenet():
    for make_net, shape in ((X.nets.resnet18_like, (2, 3, 32, 32)),
                            (X.nets.squeezenet_like, (2, 3, 35, 35))):
        net = make_net(num_classes=5, **({"width": 8} if make_net is X.nets.resnet18_like else {}))
        net.eval()  # deterministic (dropout/BN) for the comparison
        ref = copy.deepcopy(net)
        params = list(net.parameters())
        convert_net(net, ps=4, relu=True, seed=3)
        assert [p is q for p, q in zip(params, net.parameters())] == [True] * len(params)
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(isinstance(m, Xconv2D) for m in convs)
        assert not any(type(m) is nn.ReLU for m in net.modules())
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = net(xa), ref(xb)
        torch.testing.assert_close(ya, yb)
        ya.sum().backward()
        yb.sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)  # input gradient exact through the net
    single = convert_net(nn.Conv1d(2, 3, 3), ps=2)
    assert isinstance(single, Xconv1D)


def test_pickle_and_deepcopy():
    lay = Xconv3D(2, 2, 3, ps=3, seed=5)
    for other in (copy.deepcopy(lay), pickle.loads(pickle.dumps(lay))):
        assert other.seed == 5 and other.ps == 3


@pytest.mark.parametrize("mode", ["all", "channel"])
@pytest.mark.parametrize("grad_format", [torch.channels_last, torch.contiguous_format])
def test_channels_last_same_estimate(mode, grad_format):
    """Channels-last input (and a dY arriving channels-last or row-major, as from a mean()
    loss) gives the same output, dX and dW estimate as the row-major layer."""
    lay, x = build(dict(ci=4, co=6, k=3, padding=1, stride=(2, 1)), (3, 4, 9, 8), ps=5,
                   mode=mode, seed=3)
    lay.max_probe_bytes = 700  # several row blocks / tiles
    R = output_like(lay, x)
    y0, gx, gw, gb = probed_grads(lay, x, R)
    s = lay.last_seed
    xcl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = lay.weight.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = X.xconv2d(xcl, w, None, (2, 1), 1, ps=5, mode=mode, seed=s, max_probe_bytes=700)
    torch.testing.assert_close(y.detach() + lay.bias.detach().view(1, -1, 1, 1), y0)
    y.backward(R.contiguous(memory_format=grad_format))
    torch.testing.assert_close(xcl.grad, gx)
    torch.testing.assert_close(w.grad, gw)
