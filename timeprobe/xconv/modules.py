r"""Probed convolution layers: drop-in subclasses of ``nn.Conv1d/2d/3d``.

``Xconv2D(c_in, c_out, k, ..., ps=8)`` computes exactly what ``nn.Conv2d`` computes; only
the weight gradient is replaced by the unbiased probed estimate of
:mod:`timeprobe.xconv.functional`, so the layer keeps :math:`\bar{\mathbf{X}} =
\mathbf{Z}^\top\mathbf{X}` (``4*b*ps`` bytes in ``mode="all"``, ``4*b*c_in*ps`` in
``mode="channel"``) and a 63-bit seed instead of its input (``b*c_in*N*itemsize`` bytes).

Randomness: each layer owns a seed (``seed=`` at construction, or one drawn from OS
entropy) and a call counter; forward call ``t`` (in grad mode) uses the per-call seed
``mix_seed(seed, t)`` (pure-Python hashing), kept in the autograd context and in
``layer.last_seed``. The global torch RNG is never used. Two layers built with the same
seed produce the same sequence of gradient estimates.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .functional import (DEFAULT_MAX_PROBE_BYTES, check_max_probe_bytes, check_seed, check_ps,
                         probe_storage_bytes, xconv)
from .probes import check_mode, check_probe, mix_seed, new_seed
from .relu import BitReLU

__all__ = ["Xconv1D", "Xconv2D", "Xconv3D", "convert_net"]


class _XconvMixin:
    def _init_probing(self, ps, mode, probe, seed, max_probe_bytes):
        self.ps = check_ps(ps)
        self.mode = check_mode(mode)
        self.probe = check_probe(probe)
        seed = check_seed(seed)
        self.seed = new_seed() if seed is None else seed
        self.max_probe_bytes = check_max_probe_bytes(max_probe_bytes)
        self._calls = 0
        self.last_seed = None

    def next_seed(self) -> int:
        s = mix_seed(self.seed, self._calls)
        self._calls += 1
        self.last_seed = s
        return s

    def probe_storage_bytes(self, input_shape) -> int:
        """Bytes kept for the weight gradient for an input of shape ``input_shape``."""
        return probe_storage_bytes(input_shape, self.ps, self.mode)

    def forward(self, input):
        if self.ps == 0 or not torch.is_grad_enabled():
            return super().forward(input)
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return xconv(input, self.weight, self.bias, self.stride, padding, self.dilation,
                     self.groups, ps=self.ps, mode=self.mode, probe=self.probe,
                     seed=self.next_seed(), max_probe_bytes=self.max_probe_bytes)

    def extra_repr(self):
        return (super().extra_repr() + f", ps={self.ps}, mode={self.mode!r}, "
                f"probe={self.probe!r}")

    @classmethod
    def from_conv(cls, conv, ps=8, mode="all", probe="rademacher", seed=None,
                  max_probe_bytes=DEFAULT_MAX_PROBE_BYTES):
        """Wrap an existing ``nn.ConvNd`` (same parameters objects, buffers and hooks)."""
        if type(conv) is not cls._base:
            raise TypeError(f"{cls.__name__}.from_conv expects a {cls._base.__name__}, got "
                            f"{type(conv).__name__}")
        new = cls.__new__(cls)
        new.__dict__.update(conv.__dict__)
        new._init_probing(ps, mode, probe, seed, max_probe_bytes)
        return new


_DOC = """{n}-d convolution with a probed (unbiased, low-memory) weight gradient.

    Drop-in subclass of ``nn.{base}``: same arguments (``padding`` int/tuple/'valid'/'same',
    ``padding_mode`` 'zeros'/'reflect'/'replicate'/'circular', ``stride``, ``dilation``,
    ``groups``, ``bias``), same forward output, exact input and bias gradients, and keyword
    arguments

    ps : int, default 8
        number of probes r; ``0`` = exact ``nn.{base}`` behaviour.
    mode : {{'all', 'channel'}}, default 'all'
        probe a sample's channels and space jointly (keeps ``b*r`` floats) or space only
        (keeps ``b*c_in*r`` floats).
    probe : {{'rademacher', 'gaussian', 'orthogonal'}}, default 'rademacher'
    seed : int, optional
        base seed of this layer's private probe stream.
    max_probe_bytes : int or None
        chunk bound for the transient probes of ``mode='all'`` (None: automatic, at most
        1/16 of the input).
    """


class Xconv1D(_XconvMixin, nn.Conv1d):
    _base = nn.Conv1d

    def __init__(self, *args, ps=8, mode="all", probe="rademacher", seed=None,
                 max_probe_bytes=DEFAULT_MAX_PROBE_BYTES, **kwargs):
        nn.Conv1d.__init__(self, *args, **kwargs)
        self._init_probing(ps, mode, probe, seed, max_probe_bytes)


class Xconv2D(_XconvMixin, nn.Conv2d):
    _base = nn.Conv2d

    def __init__(self, *args, ps=8, mode="all", probe="rademacher", seed=None,
                 max_probe_bytes=DEFAULT_MAX_PROBE_BYTES, **kwargs):
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_probing(ps, mode, probe, seed, max_probe_bytes)


class Xconv3D(_XconvMixin, nn.Conv3d):
    _base = nn.Conv3d

    def __init__(self, *args, ps=8, mode="all", probe="rademacher", seed=None,
                 max_probe_bytes=DEFAULT_MAX_PROBE_BYTES, **kwargs):
        nn.Conv3d.__init__(self, *args, **kwargs)
        self._init_probing(ps, mode, probe, seed, max_probe_bytes)


for _cls, _n in ((Xconv1D, 1), (Xconv2D, 2), (Xconv3D, 3)):
    _cls.__doc__ = _DOC.format(n=_n, base=_cls._base.__name__)

_CONV_MAP = {nn.Conv1d: Xconv1D, nn.Conv2d: Xconv2D, nn.Conv3d: Xconv3D}


def convert_net(module: nn.Module, ps: int = 8, mode: str = "all", probe: str = "rademacher",
                relu: bool = False, seed=None, max_probe_bytes=DEFAULT_MAX_PROBE_BYTES):
    """Replace, in place, every ``nn.Conv1d/2d/3d`` of ``module`` by its probed counterpart
    (sharing the same parameter objects, so existing optimizers keep working) and, if
    ``relu=True``, every ``nn.ReLU`` by :class:`~timeprobe.xconv.relu.BitReLU`.

    Existing ``Xconv*`` layers get the new ``ps``/``mode``/``probe``. Layer ``i`` (in
    ``named_modules`` order) gets the seed ``mix_seed(seed, i)``. Returns ``module`` (or the
    converted layer if ``module`` itself is a convolution).
    """
    ps = check_ps(ps)
    check_mode(mode)
    check_probe(probe)
    seed = check_seed(seed)
    base = new_seed() if seed is None else seed
    check_max_probe_bytes(max_probe_bytes)
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert_net expects an nn.Module, got {type(module).__name__}")
    counter = [0]

    def convert(m):
        cls = _CONV_MAP.get(type(m))
        if cls is not None:
            s = mix_seed(base, counter[0])
            counter[0] += 1
            return cls.from_conv(m, ps=ps, mode=mode, probe=probe, seed=s,
                                 max_probe_bytes=max_probe_bytes)
        if isinstance(m, _XconvMixin):
            m._init_probing(ps, mode, probe, mix_seed(base, counter[0]), max_probe_bytes)
            counter[0] += 1
            return m
        if relu and type(m) is nn.ReLU:
            new = BitReLU.__new__(BitReLU)
            new.__dict__.update(m.__dict__)
            return new
        return None

    def walk(parent):
        for name, child in list(parent.named_children()):
            new = convert(child)
            if new is not None and new is not child:
                setattr(parent, name, new)
            if new is None:
                walk(child)

    root = convert(module)
    if root is not None:
        return root
    walk(module)
    return module
