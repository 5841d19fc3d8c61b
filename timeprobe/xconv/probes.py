r"""Probe vectors for the randomized weight-gradient estimator.

A probe matrix :math:`\mathbf{Z}\in\mathbb{R}^{D\times r}` satisfies

.. math::
    \mathbb{E}\left[\mathbf{Z}\mathbf{Z}^\top\right] = \mathbf{I}_D ,

so that :math:`\mathbf{Z}\mathbf{Z}^\top\mathbf{X}` is an unbiased sketch-and-lift of
:math:`\mathbf{X}` and every quantity linear in :math:`\mathbf{X}` (such as a convolution
weight gradient) is estimated without bias. Three distributions are provided:

``"rademacher"`` (default)
    :math:`z_{ij} = \pm 1/\sqrt{r}` with equal probability. Lowest variance of the
    three for Hutchinson-type estimators (no diagonal term), and the cheapest to draw
    (64 probe entries per 64-bit random word).
``"gaussian"``
    :math:`z_{ij} \sim \mathcal{N}(0, 1/r)`.
``"orthogonal"``
    :math:`\mathbf{Z} = \sqrt{D/r}\,\mathbf{Q}` with :math:`\mathbf{Q}` a Haar-random
    :math:`D\times r` matrix with orthonormal columns (QR of a Gaussian matrix). The span
    of :math:`\mathbf{Q}` is uniformly distributed, hence
    :math:`\mathbb{E}[\mathbf{Q}\mathbf{Q}^\top] = (r/D)\,\mathbf{I}` and the
    :math:`\sqrt{D/r}` factor makes the estimator unbiased for every :math:`r\le D`
    (at :math:`r = D` it is exact). Requires :math:`r \le D`.

Probes are returned *probe-major*, i.e. as a tensor of shape ``(r, *dims)`` whose row
``p`` is the probe vector :math:`\mathbf{z}_p` reshaped to ``dims``
(:math:`D = \prod` ``dims``).

Randomness never touches PyTorch's global generator: each draw uses a fresh
:class:`torch.Generator` seeded with an explicit 63-bit integer, so the same seed
reproduces the same probes (on a given device type).
"""
from __future__ import annotations

import math
import os

import torch

__all__ = ["PROBES", "MODES", "draw_probes", "mix_seed", "new_seed", "check_probe", "check_mode"]

#: supported probe distributions
PROBES = ("rademacher", "gaussian", "orthogonal")
#: supported probing modes: ``"all"`` probes the flattened (channel x space) input of one
#: sample, ``"channel"`` probes space only, with the same probes for every channel.
MODES = ("all", "channel")

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(seed: int, *counters: int) -> int:
    """Derive a 63-bit seed from ``seed`` and integer counters (SplitMix64 hashing).

    Pure Python: consumes no random state. ``mix_seed(s, i)`` for ``i = 0, 1, ...``
    gives a reproducible stream of statistically independent seeds.
    """
    h = _splitmix64(int(seed) & _MASK64)
    for c in counters:
        h = _splitmix64(h ^ (int(c) & _MASK64))
    return h & _MASK63


def new_seed() -> int:
    """A fresh 63-bit seed from the operating system's entropy (not from torch)."""
    return int.from_bytes(os.urandom(8), "little") & _MASK63


def check_probe(probe) -> str:
    if not isinstance(probe, str):
        raise TypeError(f"probe must be a string, one of {PROBES}, got {type(probe).__name__}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe distribution {probe!r}; expected one of {PROBES}")
    return probe


def check_mode(mode) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, one of {MODES}, got {type(mode).__name__}")
    if mode not in MODES:
        raise ValueError(f"unknown probing mode {mode!r}; expected one of {MODES}")
    return mode


_SIGN_TABLES: dict = {}


def _sign_table(device, dtype, scale):
    """256 x 8 table: row v holds the 8 signs encoded by the bits of v, times ``scale``."""
    key = (device, dtype, scale)
    t = _SIGN_TABLES.get(key)
    if t is None:
        bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
        t = ((bits * 2 - 1).to(torch.float64) * scale).to(device=device, dtype=dtype)
        _SIGN_TABLES[key] = t
    return t


def draw_probes(seed: int, r: int, dims, probe: str = "rademacher", *, device=None,
                dtype=torch.float32, total: int | None = None) -> torch.Tensor:
    r"""Draw ``r`` probe vectors of dimension :math:`D=\prod` ``dims``, scaled so that
    :math:`\mathbb{E}[\sum_p \mathbf{z}_p\mathbf{z}_p^\top] = \mathbf{I}_D`.

    Parameters
    ----------
    seed : int
        Seed of the private generator (same seed -> same probes on the same device type).
    r : int
        Number of probes (> 0).
    dims : tuple of int
        Shape of one probe vector.
    probe : {"rademacher", "gaussian", "orthogonal"}
    device, dtype
        Where and in which precision to return the probes. Random numbers (and the QR of
        the orthogonal mode) are always generated in float32 (Rademacher signs are exact in
        every dtype), so probes for a given seed are the same up to rounding whatever
        ``dtype`` is.
    total : int, optional
        For Rademacher/Gaussian probes drawn in chunks: these ``r`` probes are part of a set
        of ``total`` probes and are scaled by :math:`1/\sqrt{total}` (default ``r``).

    Returns
    -------
    torch.Tensor of shape ``(r, *dims)``.
    """
    check_probe(probe)
    dims = tuple(int(d) for d in dims)
    D = math.prod(dims)
    if r <= 0:
        raise ValueError(f"number of probes must be positive, got {r}")
    total = r if total is None else int(total)
    if total < r:
        raise ValueError(f"total ({total}) must be >= r ({r})")
    device = torch.device("cpu") if device is None else torch.device(device)
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) & _MASK63)
    if probe == "rademacher":
        n = r * D
        words = torch.randint(-(2 ** 63), 2 ** 63 - 1, ((n + 63) // 64,), generator=g,
                              dtype=torch.int64, device=device)
        idx = words.view(torch.uint8).to(torch.int32)
        table = _sign_table(device, dtype, 1.0 / math.sqrt(total))
        z = torch.nn.functional.embedding(idx, table).reshape(-1)[:n]
        return z.reshape((r,) + dims)
    if probe == "gaussian":
        z = torch.randn((r,) + dims, generator=g, device=device, dtype=torch.float32)
        z.mul_(1.0 / math.sqrt(total))
        return z.to(dtype)
    # orthogonal
    if total != r:
        raise ValueError("orthogonal probes cannot be drawn in chunks (total != r)")
    if r > D:
        raise ValueError(
            f"orthogonal probing needs ps <= D (the probed dimension), got ps={r} > D={D}; "
            "use fewer probes, ps=0 (exact) or probe='rademacher'/'gaussian'")
    gmat = torch.randn((D, r), generator=g, device=device, dtype=torch.float32)
    q, _ = torch.linalg.qr(gmat, mode="reduced")
    q.mul_(math.sqrt(D / r))
    return q.t().reshape((r,) + dims).to(dtype)
