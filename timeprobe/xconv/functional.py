r"""Functional probed convolutions (the ``F.conv2d`` counterparts of :mod:`.modules`).

Mathematics
-----------
Write the layer as :math:`\mathbf{Y} = \operatorname{conv}(\mathbf{X}; \mathbf{W})` with
input :math:`\mathbf{X}\in\mathbb{R}^{b\times c_i\times N}` (:math:`N` = product of the
spatial sizes) and weight :math:`\mathbf{W}\in\mathbb{R}^{c_o\times c_i/g\times K}`. For any
stride, dilation, zero padding :math:`\mathbf{P}` and group count :math:`g`, the exact weight
gradient is the *bilinear* correlation

.. math::
    \delta\mathbf{W} = \mathcal{C}(\mathbf{P}\mathbf{X}, \delta\mathbf{Y}), \qquad
    \delta W_{o,i,k} = \sum_{s=1}^{b}\sum_{n} \delta Y_{s,o,n}\,
    (\mathbf{P}\mathbf{X})_{s,\,i,\ \sigma n + \eta k}

(``torch.nn.grad.conv2d_weight``; :math:`\sigma` stride, :math:`\eta` dilation, channel
index restricted to the group of :math:`o`) — in the notation of the method, the trace
:math:`\operatorname{tr}(\mathbf{X}\,\delta\mathbf{Y}^\top\mathbf{T}_{-k})` per channel
pair. Given probes with :math:`\mathbb{E}[\mathbf{Z}\mathbf{Z}^\top]=\mathbf{I}`
(:mod:`.probes`), :math:`\widehat{\mathbf{X}} = \mathbf{Z}\mathbf{Z}^\top\mathbf{X}` is
unbiased for :math:`\mathbf{X}`, hence by linearity

.. math::
    \widehat{\delta\mathbf{W}} = \mathcal{C}(\mathbf{P}\mathbf{Z}\mathbf{Z}^\top\mathbf{X},
    \delta\mathbf{Y}), \qquad \mathbb{E}\,\widehat{\delta\mathbf{W}} = \delta\mathbf{W}

for *every* configuration (the probes are padded by the same :math:`\mathbf{P}` as the
input: zero fill at the borders, never a circular roll). The forward pass keeps only the
sketch :math:`\bar{\mathbf{X}} = \mathbf{Z}^\top\mathbf{X}` and the seed of
:math:`\mathbf{Z}`; the backward pass regenerates :math:`\mathbf{Z}` from the seed.

``mode="all"`` — one probe vector over channels and space of a sample,
:math:`\mathbf{Z}\in\mathbb{R}^{c_iN\times r}`, :math:`\bar{\mathbf{X}}\in\mathbb{R}^{b\times r}`
(stored: :math:`4\,b\,r` bytes). The batch contracts first,
:math:`\mathbf{G}_p = \sum_s \bar X_{s,p}\,\delta\mathbf{Y}_s` (:math:`r` pseudo-samples),
and :math:`\widehat{\delta\mathbf{W}} = \mathcal{C}(\mathbf{P}\mathbf{Z}, \mathbf{G})` is one
ordinary weight-gradient convolution with batch :math:`r` instead of :math:`b` (all
:math:`K` taps in one pass over :math:`\mathbf{G}`): :math:`b/r` times fewer flops than the
exact gradient. The probes are generated in blocks of rows of the first spatial axis
(block ``j`` from ``mix_seed(seed, j)``, at most ``max_probe_bytes`` each): the forward pass
accumulates :math:`\bar{\mathbf{X}}` block by block, and the backward pass walks tiles of
output rows, forming the tile of :math:`\mathbf{G}` from the tile of :math:`\delta\mathbf{Y}`
and regenerating just the probe rows it needs (with the halo of the kernel and zero fill
at the borders). Input and :math:`\delta\mathbf{Y}` are each read once, in place (strided
matrix products, no copies), and the transient probe and pseudo-batch tiles live in two
buffers reused by every tile (default budget: 1/16 of the input, 4-16 MiB). Orthogonal
probes need the whole frame (QR) and are generated in one block.

On the CPU the forward convolution and, for stride 1, the input gradient (a convolution
with the flipped kernel) are also computed in bands of output rows through one reused
buffer (:func:`conv_rows`): oneDNN otherwise converts whole activations to its blocked
layout and back around every call, which costs more memory traffic than the arithmetic
and an extra activation of peak memory. Same kernels, same results (to rounding).

``mode="channel"`` — the same spatial probes for every channel,
:math:`\mathbf{Z}\in\mathbb{R}^{N\times r}`, :math:`\bar{\mathbf{X}}\in\mathbb{R}^{b\times c_i\times r}`
(stored: :math:`4\,b\,c_i\,r` bytes). Backward computes
:math:`\bar{Y}_{s,o,p,k} = \sum_n \delta Y_{s,o,n}(\mathbf{P}\mathbf{z}_p)_{\sigma n+\eta k}`
(one correlation of :math:`\delta\mathbf{Y}` with all probes) and
:math:`\widehat{\delta W}_{o,i,k} = \sum_{s,p}\bar X_{s,i,p}\bar Y_{s,o,p,k}`. Lower variance
than ``"all"`` at equal :math:`r`, :math:`c_i` times more storage, no flop saving.

The input gradient :math:`\delta\mathbf{X} = \mathbf{P}^\top\operatorname{conv}^\top(\delta\mathbf{Y};\mathbf{W})`
and the bias gradient :math:`\sum_{s,n}\delta\mathbf{Y}_{s,\cdot,n}` are exact.

Padding modes other than zeros (``reflect``, ``replicate``, ``circular``) are applied by the
modules as an explicit ``F.pad`` before the probed convolution (so :math:`\mathbf{X}` above is
the padded input and the estimator stays unbiased); asymmetric ``padding="same"`` (even
kernels) is handled the same way with zero fill.

Precision: probes are generated in float32 and cast to the input dtype; the sketch
:math:`\bar{\mathbf{X}}` is stored in float32 (float64 for float64 inputs); gradients are returned in the dtypes of
the inputs. Under ``torch.autocast`` the inputs are cast to the autocast dtype as
``F.conv2d`` would be, and the casts' backward returns gradients in the parameter dtype.
"""
from __future__ import annotations

import itertools
import math
import numbers

import torch
import torch.nn.functional as F

from .probes import check_mode, check_probe, draw_probes, mix_seed, new_seed

__all__ = ["xconv1d", "xconv2d", "xconv3d", "xconv", "check_ps", "check_seed", "check_max_probe_bytes",
           "DEFAULT_MAX_PROBE_BYTES", "probe_storage_bytes", "probes_for", "band_budget", "conv_rows",
           "input_grad_rows"]

#: ``max_probe_bytes=None`` (default) bounds each transient tile of ``mode="all"`` (probe
#: block, input tile, pseudo-batch tile) by ``clamp(input_bytes / 16, 4 MiB, 16 MiB)`` (below
#: glibc's 32 MiB mmap threshold, so CPU tile buffers are recycled, not page-faulted anew).
DEFAULT_MAX_PROBE_BYTES = None
_AUTO_MIN, _AUTO_MAX = 4 * 2 ** 20, 16 * 2 ** 20

_DEFAULT_STREAM_SEED = new_seed()
_DEFAULT_COUNTER = itertools.count()


def check_ps(ps) -> int:
    """Validate the number of probes: an int >= 0 (0 means exact gradients)."""
    if isinstance(ps, bool) or not isinstance(ps, numbers.Integral):
        raise TypeError(f"ps (number of probes) must be an int >= 0, got {ps!r}")
    if ps < 0:
        raise ValueError(f"ps (number of probes) must be >= 0 (0 = exact gradient), got {ps}")
    return int(ps)


def check_max_probe_bytes(v):
    """Validate ``max_probe_bytes``: None or a positive int."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"max_probe_bytes must be a positive int or None, got {v!r}")
    return int(v)


def check_seed(seed):
    """Validate a probe seed: None or an int."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return int(seed)


def probe_storage_bytes(input_shape, ps: int, mode: str = "all") -> int:
    """Bytes the probed layer keeps for backward (besides the weight): the float32 sketch
    ``Z^T X`` — ``4*b*ps`` for ``mode="all"``, ``4*b*c_in*ps`` for ``mode="channel"``."""
    b, ci = int(input_shape[0]), int(input_shape[1])
    return 4 * b * ps * (ci if mode == "channel" else 1)


def _tup(v, d, name):
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return (int(v),) * d
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return v * d
    if len(v) != d:
        raise ValueError(f"{name} must be an int or a tuple of {d} ints, got {v}")
    return v


def band_budget(x_bytes: int, max_bytes) -> int:
    """Bytes of one transient band/tile buffer: ``max_bytes`` if given, else
    ``clamp(x_bytes / 16, 4 MiB, 16 MiB)`` (see :data:`DEFAULT_MAX_PROBE_BYTES`)."""
    if max_bytes is not None:
        return max_bytes
    return min(max(x_bytes // 16, _AUTO_MIN), _AUTO_MAX)


def _block_rows(x_shape, r, itemsize, probe, max_bytes) -> int:
    """Rows (along the first spatial axis) per generation block of the ``mode="all"``
    probes: a probe block ``(r, c_in, rows, ...)`` stays within the budget."""
    ci, H = x_shape[1], x_shape[2]
    if probe == "orthogonal":
        return H  # the QR needs the whole frame: one block
    per_row = r * ci * math.prod(x_shape[3:]) * itemsize
    x_bytes = math.prod(x_shape) * itemsize
    return max(1, min(H, band_budget(x_bytes, max_bytes) // per_row))


class _RowProbes:
    """The probes of ``mode="all"``, shape ``(r, c_in, H, *rest)``, generated in blocks of
    ``hb`` rows of the first spatial axis; block ``j`` comes from ``mix_seed(seed, j)``, so any
    row range can be regenerated on its own (backward tiles with halos)."""

    def __init__(self, seed, r, x_shape, hb, probe, device, dtype):
        self.seed, self.r, self.hb, self.probe = seed, r, hb, probe
        self.ci, self.H, self.rest = x_shape[1], x_shape[2], tuple(x_shape[3:])
        self.device, self.dtype = device, dtype
        self.cache = {}

    def nblocks(self):
        return -(-self.H // self.hb)

    def block(self, j):
        z = self.cache.get(j)
        if z is None:
            h0, h1 = j * self.hb, min(self.H, (j + 1) * self.hb)
            z = draw_probes(mix_seed(self.seed, j), self.r, (self.ci, h1 - h0) + self.rest,
                            self.probe, device=self.device, dtype=self.dtype, total=self.r)
            self.cache[j] = z
        return z

    def fill(self, out, a0):
        """Write probe rows ``[a0, a0 + out.shape[2])`` into ``out`` (any layout), block by
        block; cached blocks below ``a0`` are released, the last one is kept for the next
        tile's halo."""
        a1 = a0 + out.shape[2]
        j0, j1 = a0 // self.hb, (a1 - 1) // self.hb
        for j in [j for j in self.cache if j < j0]:
            del self.cache[j]
        for j in range(j0, j1 + 1):
            lo, hi = max(a0, j * self.hb), min(a1, (j + 1) * self.hb)
            out.narrow(2, lo - a0, hi - lo).copy_(self.block(j).narrow(2, lo - j * self.hb,
                                                                        hi - lo))
        return out

    def full(self):
        z = torch.empty((self.r, self.ci, self.H) + self.rest, device=self.device,
                        dtype=self.dtype)
        return self.fill(z, 0)


def _layout_perm(x):
    """Dimension order of ``x`` in memory: channels-last inputs are read without a copy."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return [0, 2, 3, 1]
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last_3d):
        return [0, 2, 3, 4, 1]
    return list(range(x.dim()))


def _memory_format(perm):
    if perm is not None and perm[1] != 1:
        return torch.channels_last if len(perm) == 4 else torch.channels_last_3d
    return torch.contiguous_format


def probes_for(seed, ps, x_shape, probe="rademacher", mode="all", max_probe_bytes=None,
               dtype=torch.float32, device=None):
    """The probe matrix a probed layer uses for an input of shape ``x_shape`` and per-call
    seed ``seed``: ``(ps, c_in, *spatial)`` for ``mode="all"``, ``(ps, *spatial)`` for
    ``mode="channel"`` (``dtype`` = the input dtype; it sets the block layout)."""
    if mode == "channel":
        return draw_probes(seed, ps, tuple(x_shape[2:]), probe, device=device, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    hb = _block_rows(tuple(x_shape), ps, itemsize, probe, max_probe_bytes)
    return _RowProbes(seed, ps, tuple(x_shape), hb, probe, device, dtype).full()


def _band_rows(o0, o1, s0, p0, d0, k0, H):
    """Input rows ``[i0, i1)`` that output rows ``[o0, o1)`` read along the first spatial
    axis (``i0 < 0`` / ``i1 > H`` reach into the zero padding), and their part ``[a0, a1)``
    inside the input (empty, ``a1 <= a0``, when the band sees only padding)."""
    i0 = o0 * s0 - p0
    i1 = (o1 - 1) * s0 - p0 + d0 * (k0 - 1) + 1
    return i0, i1, max(i0, 0), min(i1, H)


def _fill_band(t, i0, a0, a1, write):
    """Fill the band buffer ``t`` (input rows ``[i0, i0 + t.shape[2])``): zero rows outside
    ``[a0, a1)`` (padding, never a wrap-around), ``write(dst, a0)`` for the rows inside."""
    if a1 <= a0:
        t.zero_()
        return t
    if a0 > i0:
        t.narrow(2, 0, a0 - i0).zero_()
    if i0 + t.shape[2] > a1:
        t.narrow(2, a1 - i0, i0 + t.shape[2] - a1).zero_()
    write(t.narrow(2, a0 - i0, a1 - a0), a0)
    return t


def conv_rows(x, weight, bias, stride, padding, dilation, groups, budget):
    """``aten.convolution(x, weight, bias, ...)`` computed band by band of output rows (first
    spatial axis) on the CPU.

    Why: oneDNN converts a whole NCHW tensor to its blocked layout and back around every
    convolution (activation-sized copies, freshly page-faulted). Fed a band of rows at a
    time through one reused, cache-sized buffer (input rows with the kernel's halo, zero
    rows at the borders), it does the same arithmetic with a fraction of the memory traffic
    and without the activation-sized transients. The result equals the single call's to
    rounding (same kernels). Other devices, and inputs that fit one band, take the single
    call."""
    d = x.dim() - 2
    b, ci, H = x.shape[:3]
    k0, s0, p0, d0 = weight.shape[2], stride[0], padding[0], dilation[0]
    out_sp = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight.shape[2 + i] - 1) - 1)
              // stride[i] + 1 for i in range(d)]
    Ho, itemsize = out_sp[0], x.element_size()
    per_row = b * max(s0 * ci * math.prod(x.shape[3:]),
                      weight.shape[0] * math.prod(out_sp[1:])) * itemsize
    ob = max(1, budget // per_row)
    if x.device.type != "cpu" or ob >= Ho or min(out_sp) <= 0:
        return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False,
                                          [0] * d, groups)
    fmt = _memory_format(_layout_perm(x))
    opts = dict(device=x.device, dtype=x.dtype, memory_format=fmt)
    y = torch.empty((b, weight.shape[0], *out_sp), **opts)
    buf = torch.empty((b, ci, (ob - 1) * s0 + d0 * (k0 - 1) + 1) + tuple(x.shape[3:]), **opts)
    pad_rest = [0] + list(padding[1:])

    def rows_of_x(dst, a0):
        dst.copy_(x.narrow(2, a0, dst.shape[2]))

    for o0 in range(0, Ho, ob):
        o1 = min(Ho, o0 + ob)
        i0, i1, a0, a1 = _band_rows(o0, o1, s0, p0, d0, k0, H)
        t = _fill_band(buf.narrow(2, 0, i1 - i0), i0, a0, a1, rows_of_x)
        y.narrow(2, o0, o1 - o0).copy_(torch.ops.aten.convolution(
            t, weight, bias, stride, pad_rest, dilation, False, [0] * d, groups))
    return y


def input_grad_rows(gy, weight, x_shape, stride, padding, dilation, groups, budget):
    """Exact dX = P^T conv^T(dY; W). On the CPU, for stride 1 and padding <=
    dilation*(k-1), it is the ordinary convolution of dY with the flipped, channel-transposed
    kernel and padding dilation*(k-1) - padding, computed in row bands by
    :func:`conv_rows`; otherwise (and on other devices) a transposed
    convolution whose output_padding restores the exact input size. (The
    aten.convolution_backward route with an expanded proxy input makes oneDNN materialise
    an input-sized tensor.)"""
    d = weight.dim() - 2
    k = weight.shape[2:]
    flippable = all(s == 1 for s in stride) and all(
        p <= dl * (kk - 1) for p, dl, kk in zip(padding, dilation, k))
    if gy.device.type == "cpu" and flippable:
        co, cig = weight.shape[:2]
        wt = weight.reshape((groups, co // groups, cig) + tuple(k)).transpose(1, 2)
        wt = wt.reshape((groups * cig, co // groups) + tuple(k)).flip(list(range(2, d + 2)))
        wt = wt.contiguous(memory_format=_memory_format(_layout_perm(weight)))
        pad = [dl * (kk - 1) - p for p, dl, kk in zip(padding, dilation, k)]
        return conv_rows(gy, wt, None, [1] * d, pad, list(dilation), groups, budget)
    out_pad = [x_shape[2 + i] - ((gy.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                 + dilation[i] * (k[i] - 1) + 1) for i in range(d)]
    return torch.ops.aten.convolution(gy, weight, None, stride, padding, dilation, True,
                                      out_pad, groups)


def _sketch_rows(xbar, x, z, h0, perm):
    """``xbar += X[:, :, h0:h0+rows] · Z_blockᵀ`` (flattened per sample) without copying X:
    channels-first inputs take one product per channel (each a strided view of X),
    channels-last inputs one product over the contiguous row slab of every sample."""
    b, r, rows = x.shape[0], z.shape[0], z.shape[2]

    def acc(a, bt):
        if xbar.dtype == a.dtype:
            xbar.addmm_(a, bt)
        else:
            xbar.add_(torch.mm(a, bt))

    if perm[1] == 1:
        for c in range(x.shape[1]):
            acc(x[:, c].narrow(1, h0, rows).reshape(b, -1), z[:, c].reshape(r, -1).t())
    else:
        xt = x.permute(perm).narrow(1, h0, rows).reshape(b, -1)
        acc(xt, z.permute(perm).reshape(r, -1).t())


def _pseudo_batch_rows(G, xbar_t, gy, o0, perm):
    """``G = Xbarᵀ · dY[:, :, o0:o0+rows]`` written into the tile buffer ``G`` (r pseudo-
    samples), reading dY in place (same per-channel / per-slab split as :func:`_sketch_rows`)."""
    b, r, rows = gy.shape[0], G.shape[0], G.shape[2]
    if perm[1] == 1:
        for o in range(gy.shape[1]):
            torch.mm(xbar_t, gy[:, o].narrow(1, o0, rows).reshape(b, -1),
                     out=G[:, o].view(r, -1))
    else:
        torch.mm(xbar_t, gy.permute(perm).narrow(1, o0, rows).reshape(b, -1),
                 out=G.permute(perm).view(r, -1))


class _XConvFunction(torch.autograd.Function):
    """Convolution whose weight gradient is estimated by probing (see module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, ps, mode, probe, seed,
                max_bytes):
        y = conv_rows(x, weight, bias, list(stride), list(padding), list(dilation), groups,
                       band_budget(x.numel() * x.element_size(), max_bytes))
        ctx.meta = (stride, padding, dilation, groups, ps, mode, probe, seed)
        ctx.x_shape = tuple(x.shape)
        ctx.has_bias = bias is not None
        ctx.max_bytes = max_bytes
        if ctx.needs_input_grad[1]:
            b = x.shape[0]
            acc = torch.promote_types(x.dtype, torch.float32)
            if mode == "all":
                hb = _block_rows(x.shape, ps, x.element_size(), probe, max_bytes)
                zs = _RowProbes(seed, ps, x.shape, hb, probe, x.device, x.dtype)
                xbar = torch.zeros((b, ps), device=x.device, dtype=acc)
                ctx.perm = perm = _layout_perm(x)
                for j in range(zs.nblocks()):
                    _sketch_rows(xbar, x, zs.block(j), j * hb, perm)
                    del zs.cache[j]
                ctx.hb = hb
            else:
                N = math.prod(x.shape[2:])
                z = draw_probes(seed, ps, x.shape[2:], probe, device=x.device, dtype=x.dtype)
                xbar = torch.mm(x.reshape(-1, N), z.reshape(ps, N).t()).to(acc)
                xbar = xbar.reshape(b, x.shape[1], ps)
                del z
            ctx.save_for_backward(weight, xbar)
        else:
            ctx.save_for_backward(weight)
        return y

    @staticmethod
    def _weight_grad_all(ctx, gy, perm, xbar, weight, stride, padding, dilation, groups, ps,
                         probe, seed):
        """sum over tiles of output rows [o0, o1) of conv_weight(P Z[rows], G[o0:o1]) with
        G = Xbar^T dY (r pseudo-samples): one pass over dY, probes regenerated per tile.

        Speed on the CPU comes from never copying dY or allocating per tile: G is written by
        matrix products that read dY in place (strided views) into one tile buffer, and the
        probe rows of a tile (with the kernel's halo and zero fill at the borders) are
        written into a second buffer; both stay cache-sized and are reused by every tile."""
        x_shape = ctx.x_shape
        co, ci = gy.shape[1], x_shape[1]
        H, Ho = x_shape[2], gy.shape[2]
        in_rest, out_rest = tuple(x_shape[3:]), tuple(gy.shape[3:])
        s0, p0, d0, k0 = stride[0], padding[0], dilation[0], weight.shape[2]
        zs = _RowProbes(seed, ps, x_shape, ctx.hb, probe, gy.device, gy.dtype)
        itemsize = gy.element_size()
        per_row = ps * (co * math.prod(out_rest) + s0 * ci * math.prod(in_rest)) * itemsize
        budget = band_budget(math.prod(x_shape) * itemsize, ctx.max_bytes)
        ob = max(1, min(Ho, budget // per_row)) if probe != "orthogonal" else Ho
        zrows = (ob - 1) * s0 + d0 * (k0 - 1) + 1
        d = weight.dim() - 2
        fmt = _memory_format(perm)
        opts = dict(device=gy.device, dtype=gy.dtype, memory_format=fmt)
        gbuf = torch.empty((ps, co, ob) + out_rest, **opts)
        zbuf = torch.empty((ps, ci, zrows) + in_rest, **opts)
        xbar_t = xbar.t().to(gy.dtype)
        gw = None
        for o0 in range(0, Ho, ob):
            o1 = min(Ho, o0 + ob)
            i0, i1, a0, a1 = _band_rows(o0, o1, s0, p0, d0, k0, H)
            if a1 <= a0:
                continue                               # tile sees only zero padding
            z = _fill_band(zbuf.narrow(2, 0, i1 - i0), i0, a0, a1, zs.fill)
            G = gbuf.narrow(2, 0, o1 - o0)
            _pseudo_batch_rows(G, xbar_t, gy, o0, perm)
            part = torch.ops.aten.convolution_backward(
                G, z, weight, None, stride, [0] + padding[1:], dilation, False, [0] * d,
                groups, (False, True, False))[1]
            gw = part if gw is None else gw.add_(part)
        if gw is None:
            gw = torch.zeros_like(weight)
        return gw

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        stride, padding, dilation, groups, ps, mode, probe, seed = ctx.meta
        saved = ctx.saved_tensors
        weight = saved[0]
        # dY is used in the layout it arrives in when that is dense (a mean() loss hands a
        # channels-last network a row-major dY: converting it would keep two copies alive);
        # otherwise (e.g. expanded by sum()) it is materialised once, in the input's layout
        perm = _layout_perm(gy)
        if perm == list(range(gy.dim())) and not gy.is_contiguous():
            perm = getattr(ctx, "perm", perm)  # set by mode="all"; row-major otherwise
        gy = gy.contiguous(memory_format=_memory_format(perm))
        d = weight.dim() - 2
        x_shape = ctx.x_shape
        gx = gw = gb = None
        stride, padding, dilation = list(stride), list(padding), list(dilation)
        if ctx.needs_input_grad[0]:
            gx = input_grad_rows(gy, weight, x_shape, stride, padding, dilation, groups,
                             band_budget(math.prod(x_shape) * gy.element_size(), ctx.max_bytes))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(dim=[0] + list(range(2, gy.dim())))
        if ctx.needs_input_grad[1]:
            xbar = saved[1]
            b, co = gy.shape[0], gy.shape[1]
            out_sp = tuple(gy.shape[2:])
            if mode == "all":
                gw = _XConvFunction._weight_grad_all(ctx, gy, perm, xbar, weight, stride, padding,
                                                     dilation, groups, ps, probe, seed)
            else:
                ci = x_shape[1]
                z = draw_probes(seed, ps, x_shape[2:], probe, device=gy.device, dtype=gy.dtype)
                wproxy = gy.new_empty(1).expand((b * co, ps) + tuple(weight.shape[2:]))
                ybar = torch.ops.aten.convolution_backward(
                    gy.reshape((1, b * co) + out_sp), z.unsqueeze(0), wproxy, None, stride,
                    padding, dilation, False, [0] * d, 1, (False, True, False))[1]
                K = math.prod(weight.shape[2:])
                g, cig, cog = groups, ci // groups, co // groups
                ybar = ybar.reshape(b, g, cog, ps, K)
                xb = xbar.to(ybar.dtype).reshape(b, g, cig, ps)
                gw = torch.einsum("bgir,bgork->goik", xb, ybar).reshape(weight.shape)
            gw = gw.to(weight.dtype)
        return gx, gw, gb, None, None, None, None, None, None, None, None, None


def _same_padding(kernel, dilation, stride):
    if any(s != 1 for s in stride):
        raise ValueError("padding='same' is not supported for strided convolutions")
    total = [dl * (k - 1) for k, dl in zip(kernel, dilation)]
    left = [t // 2 for t in total]
    right = [t - l for t, l in zip(total, left)]
    return left, right


def xconv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, ps=8,
          mode="all", probe="rademacher", seed=None, max_probe_bytes=DEFAULT_MAX_PROBE_BYTES):
    r"""N-d convolution (N = ``weight.dim() - 2`` in 1, 2, 3) with a probed weight gradient.

    Same semantics and arguments as :func:`torch.nn.functional.conv2d` (``padding`` may be an
    int, a tuple, ``"valid"`` or ``"same"``; zero fill), plus:

    Parameters
    ----------
    ps : int
        Number of probes :math:`r` (``0``: plain ``F.conv`` with exact gradients).
    mode : {"all", "channel"}
        Probe over channels and space of a sample (stores :math:`b\,r` floats) or over space
        only, same probes for all channels (stores :math:`b\,c_i\,r` floats).
    probe : {"rademacher", "gaussian", "orthogonal"}
        Probe distribution, see :mod:`timeprobe.xconv.probes`.
    seed : int, optional
        Seed of the probes of this call. ``None`` draws one from a private stream of this
        module (seeded from OS entropy; never the global torch RNG).
    max_probe_bytes : int or None
        Bound on the transient tiles of ``mode="all"`` (memory/speed trade-off; the probes
        depend on it through the block layout of the random stream). ``None``: see
        :data:`DEFAULT_MAX_PROBE_BYTES`.

    Returns
    -------
    torch.Tensor, the convolution output (exact). In backward, ``input`` and ``bias``
    gradients are exact, the ``weight`` gradient is the unbiased probed estimate.
    """
    ps = check_ps(ps)
    check_mode(mode)
    check_probe(probe)
    seed = check_seed(seed)
    max_probe_bytes = check_max_probe_bytes(max_probe_bytes)
    if not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    d = weight.dim() - 2
    if d not in (1, 2, 3):
        raise ValueError(f"weight must be 3-, 4- or 5-dimensional, got shape {tuple(weight.shape)}")
    unbatched = input.dim() == d + 1
    if unbatched:
        input = input.unsqueeze(0)
    if input.dim() != d + 2:
        raise ValueError(f"expected a {d + 1}-d (unbatched) or {d + 2}-d (batched) input for a "
                         f"{d}-d convolution, got shape {tuple(input.shape)}")
    if input.shape[1] != weight.shape[1] * groups:
        # checked here: the CPU row bands would otherwise report a band's shape, not the input's
        raise ValueError(f"input has {input.shape[1]} channels, the weight of shape "
                         f"{tuple(weight.shape)} with groups={groups} expects "
                         f"{weight.shape[1] * groups}")
    stride = _tup(stride, d, "stride")
    dilation = _tup(dilation, d, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * d
        elif padding == "same":
            left, right = _same_padding(weight.shape[2:], dilation, stride)
            if left != right:
                pads = []
                for l, r in zip(reversed(left), reversed(right)):
                    pads += [l, r]
                input = F.pad(input, pads)
                padding = (0,) * d
            else:
                padding = tuple(left)
        else:
            raise ValueError(f"padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    else:
        padding = _tup(padding, d, "padding")
        if any(p < 0 for p in padding):
            raise ValueError(f"padding must be non-negative, got {padding}")

    dev = input.device.type
    autocast = dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev)
    needs_grad = torch.is_grad_enabled() and (
        input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    if ps == 0 or not needs_grad:
        out = torch.ops.aten.convolution(input, weight, bias, list(stride), list(padding),
                                         list(dilation), False, [0] * d, groups) if not autocast \
            else _conv_autocast(input, weight, bias, stride, padding, dilation, groups)
        return out.squeeze(0) if unbatched else out
    if seed is None:
        seed = mix_seed(_DEFAULT_STREAM_SEED, next(_DEFAULT_COUNTER))
    if autocast:
        dt = torch.get_autocast_dtype(dev)
        cast = (lambda t: t.to(dt) if t is not None and t.is_floating_point() else t)
        input, weight, bias = cast(input), cast(weight), cast(bias)
        with torch.autocast(dev, enabled=False):
            out = _XConvFunction.apply(input, weight, bias, stride, padding, dilation, groups,
                                       ps, mode, probe, seed, max_probe_bytes)
    else:
        out = _XConvFunction.apply(input, weight, bias, stride, padding, dilation, groups, ps,
                                   mode, probe, seed, max_probe_bytes)
    return out.squeeze(0) if unbatched else out


def _conv_autocast(input, weight, bias, stride, padding, dilation, groups):
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[weight.dim() - 2]
    return fn(input, weight, bias, stride, padding, dilation, groups)


def xconv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """1-d probed convolution, see :func:`xconv` (``F.conv1d`` semantics)."""
    if weight.dim() != 3:
        raise ValueError(f"xconv1d expects a 3-d weight, got shape {tuple(weight.shape)}")
    return xconv(input, weight, bias, stride, padding, dilation, groups, **kw)


def xconv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """2-d probed convolution, see :func:`xconv` (``F.conv2d`` semantics)."""
    if weight.dim() != 4:
        raise ValueError(f"xconv2d expects a 4-d weight, got shape {tuple(weight.shape)}")
    return xconv(input, weight, bias, stride, padding, dilation, groups, **kw)


def xconv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **kw):
    """3-d probed convolution, see :func:`xconv` (``F.conv3d`` semantics)."""
    if weight.dim() != 5:
        raise ValueError(f"xconv3d expects a 5-d weight, got shape {tuple(weight.shape)}")
    return xconv(input, weight, bias, stride, padding, dilation, groups, **kw)
