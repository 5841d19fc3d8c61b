r"""ReLU that keeps a 1-bit mask for backward.

:math:`y = \max(x, 0)`, :math:`\delta x = \delta y \odot \mathbb{1}[x > 0]`. ``nn.ReLU``
keeps its output (``4n`` bytes in float32) for backward; :class:`BitReLU` keeps the mask
:math:`\mathbb{1}[x>0]` packed eight elements per byte (:math:`\lceil n/8\rceil` bytes),
so a probed convolution followed by :class:`BitReLU` keeps no full-size tensor at all.
Gradients are identical to ``nn.ReLU`` (same convention: zero gradient at :math:`x = 0`).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BitReLU", "bit_relu", "pack_bits", "unpack_bits"]

_SHIFTS: dict = {}


def _shifts(device):
    s = _SHIFTS.get(device)
    if s is None:
        s = torch.arange(8, dtype=torch.uint8, device=device)
        _SHIFTS[device] = s
    return s


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into a flat uint8 tensor of ``ceil(numel/8)`` bytes (LSB first)."""
    flat = mask.reshape(-1)
    n = flat.numel()
    rem = (-n) % 8
    if rem:
        flat = torch.cat([flat, flat.new_zeros(rem)])
    f = flat.view(torch.uint8).view(-1, 8)
    packed = f[:, 0].clone()
    for i in range(1, 8):
        packed |= f[:, i] << i
    return packed


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a flat bool tensor of length ``n``."""
    bits = (packed.unsqueeze(-1) >> _shifts(packed.device)) & 1
    return bits.reshape(-1)[:n].view(torch.bool)


class _BitReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, inplace):
        ctx.shape = x.shape
        ctx.save_for_backward(pack_bits(x > 0))
        if inplace:
            ctx.mark_dirty(x)
            return x.relu_()
        return x.relu()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        (packed,) = ctx.saved_tensors
        mask = unpack_bits(packed, gy.numel()).reshape(ctx.shape)
        return torch.where(mask, gy, gy.new_zeros(())), None


def bit_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Functional :class:`BitReLU`."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _BitReLUFunction.apply(x, inplace)
    return x.relu_() if inplace else x.relu()


class BitReLU(nn.ReLU):
    """Drop-in ``nn.ReLU`` whose backward state is a bit-packed mask (n/8 bytes)."""

    def forward(self, input):
        return bit_relu(input, self.inplace)
