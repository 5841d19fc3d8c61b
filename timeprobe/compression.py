r"""Codecs for stored wavefield snapshots: raw float32, 16 bit and 8 bit (NumPy only).

A snapshot ``x`` (a float32 array of any shape, 2D or 3D) is encoded into a fixed number of bytes
(:meth:`Codec.nbytes`), so that a run's snapshots form one ``(nsnap, nbytes)`` byte array, in RAM
or in a file (:mod:`timeprobe.storage`). Codecs (:data:`CODECS`):

``"float32"``
    the values themselves (lossless).
``"float16"``
    one float32 scale per snapshot, :math:`s = \max|x| / 2^{15}`, and ``float16(x / s)``:
    relative error :math:`|x - \hat x| \le 2^{-11}|x|` (plus :math:`2^{-25}s` for the
    subnormals, values below :math:`2^{-29}\max|x|`).
``"int16"``, ``"int8"``
    block max-abs quantisation: the snapshot is cut into tiles of ``tile`` points per axis (the
    last tile of an axis may be shorter); each tile ``b`` keeps one float32 scale
    :math:`s_b = \max_{x\in b}|x| / L` (``L = 32767`` or ``127``) and the integers
    :math:`q = \mathrm{rint}(x / s_b) \in [-L, L]`. Round to nearest:

    .. math:: |x - s_b\,q| \le s_b / 2 \quad\text{for every sample of tile } b

    in exact arithmetic, 0 in an all-zero tile; the float32 products add at most
    :math:`L\,2^{-22}s_b` (:meth:`Codec.error_bound`). Tiles whose values are all below
    :math:`10^{-30}` are stored as zeros with :math:`s_b = 2\max|x|` (the bound still holds).
    Bytes per snapshot: ``n·bits/8 + 4·ntiles``. Default tiles hold 64 points (8×8 in 2D, 4×4×4
    in 3D): 8.5 bits per point at 8 bit, the overhead and error of Deepwave's 2D blocks in every
    dimension (its 8×8×8 blocks in 3D share one scale among 512 points).

Error statistics: :meth:`Codec.encode` returns ``(Σx², Σ e_model²)`` with
``e_model² = n_b s_b²/12`` per tile (the variance of a uniform rounding error, the usual model
of quantisation noise; 0 for float32, ``Σ (2^{-11}x)²/3`` for float16), from which
:mod:`timeprobe.storage` reports the relative quantisation error of the whole store.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["CODECS", "Codec", "codec_for_bits", "DEFAULT_TILE"]

#: codec names → bits per value
CODECS = {"float32": 32, "float16": 16, "int16": 16, "int8": 8}

#: default tile edge (points per axis) of the block-scaled integer codecs, per dimension (64 points)
DEFAULT_TILE = {1: 64, 2: 8, 3: 4}

_LEVELS = {"int16": 32767.0, "int8": 127.0}
_INT_TYPES = {"int16": np.int16, "int8": np.int8}
_F16_TOP = 2.0 ** 15
_TINY = np.float32(1e-30)


def codec_for_bits(bits, tile=None):
    """The codec timeprobe uses for ``bits`` ∈ {32, 16, 8} (32: float32, 16: int16 tiles,
    8: int8 tiles; the choices measured in ``benchmarks/storage_strategies.md``)."""
    name = {32: "float32", 16: "int16", 8: "int8"}.get(bits if not isinstance(bits, bool) else None)
    if name is None:
        raise ValueError(f"bits must be 32, 16 or 8, got {bits!r}")
    return Codec(name, tile)


def _tile_max(a, tile):
    """Max over the tiles of ``a`` (``tile`` points per axis, the last tile of an axis shorter):
    one strided ``maximum`` per offset within a tile, axis by axis (no reduceat, no copies of ``a``)."""
    for ax in range(a.ndim):
        lead = (slice(None),) * ax
        out = a[lead + (slice(0, None, tile),)].copy()
        for i in range(1, tile):
            b = a[lead + (slice(i, None, tile),)]
            o = out[lead + (slice(0, b.shape[ax]),)]
            np.maximum(o, b, out=o)
        a = out
    return a


def _tile_counts(shape, tile):
    """Points per tile, as an array of the tiles' shape."""
    counts = np.ones((), dtype=np.float64)
    for n in shape:
        sizes = np.full(-(-n // tile), float(tile))
        sizes[-1] = n - tile * (sizes.size - 1)
        counts = np.multiply.outer(counts, sizes)
    return counts


@dataclass(frozen=True)
class Codec:
    """One snapshot codec: ``name`` in :data:`CODECS`, ``tile`` the block edge (points per axis)
    of the integer codecs (None: :data:`DEFAULT_TILE` for the snapshot's dimension; ignored by the
    float ones)."""
    name: str = "float32"
    tile: int | None = None

    def __post_init__(self):
        if self.name not in CODECS:
            raise ValueError(f"unknown snapshot codec {self.name!r}; use one of {', '.join(CODECS)}")
        if self.tile is not None:
            if isinstance(self.tile, bool) or not isinstance(self.tile, numbers.Integral) or self.tile < 1:
                raise ValueError(f"tile must be a positive integer (points per axis) or None, got {self.tile!r}")
            object.__setattr__(self, "tile", int(self.tile))

    def edge(self, ndim):
        """The tile edge used for ``ndim``-dimensional snapshots."""
        return self.tile if self.tile is not None else DEFAULT_TILE.get(ndim, 4)

    @property
    def bits(self):
        return CODECS[self.name]

    @property
    def lossless(self):
        return self.name == "float32"

    def nscales(self, shape):
        """Number of float32 scales per snapshot of ``shape``."""
        if self.name in _LEVELS:
            t = self.edge(len(shape))
            return int(np.prod([-(-n // t) for n in shape]))
        return 1 if self.name == "float16" else 0

    def nbytes(self, shape):
        """Bytes per encoded snapshot of ``shape``: ``n·bits/8 + 4·nscales``."""
        return int(np.prod(shape)) * self.bits // 8 + 4 * self.nscales(shape)

    def _split(self, buf, shape):
        ns = self.nscales(shape)
        scales = buf[:4 * ns].view(np.float32)
        vtype = {"float32": np.float32, "float16": np.float16}.get(self.name) or _INT_TYPES[self.name]
        values = buf[4 * ns:].view(vtype).reshape(shape)
        return scales, values

    def _tile_scales_full(self, scales, shape):
        """Per-point array of the tile values ``scales`` (ntiles per axis) — the broadcast back."""
        full = scales
        t = self.edge(len(shape))
        for ax, n in enumerate(shape):
            full = np.repeat(full, t, axis=ax)
            if full.shape[ax] != n:
                full = full[(slice(None),) * ax + (slice(0, n),)]
        return full

    def encode(self, x, out, work=None):
        """Encode the float32 array ``x`` into the uint8 array ``out`` (:meth:`nbytes` long).

        ``work``: an optional float32 scratch array of ``x``'s shape (reused between calls; else
        one is allocated). Returns ``(Σ x², modelled Σ e²)`` in float64 (module docstring)."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise TypeError(f"snapshots must be float32, got {x.dtype}")
        if out.dtype != np.uint8 or out.size != self.nbytes(x.shape):
            raise ValueError(f"encoded snapshot buffer must be {self.nbytes(x.shape)} uint8, got {out.size} "
                             f"{out.dtype}")
        flat = x.reshape(-1)
        energy = float(np.dot(flat, flat))
        scales, values = self._split(out, x.shape)
        if self.name == "float32":
            values[...] = x
            return energy, 0.0
        if self.name == "float16":
            top = max(float(np.max(x)), -float(np.min(x))) if x.size else 0.0
            s = np.float32(top / _F16_TOP) if top > 0 else np.float32(1.0)
            scales[0] = s
            np.divide(x, s, out=values, casting="unsafe")
            return energy, energy * (2.0 ** -11) ** 2 / 3.0
        levels = np.float32(_LEVELS[self.name])
        work = np.empty_like(x) if work is None else work
        np.abs(x, out=work)
        tmax = _tile_max(work, self.edge(x.ndim))
        # tiles whose values are all below _TINY are stored as zeros with s_b = 2·max (so that the
        # bound |e| ≤ s_b/2 still holds), where L/max would overflow float32
        tiny = tmax < _TINY
        sc = np.where(tiny, 2 * tmax, tmax / levels).astype(np.float32)
        scales[:] = sc.ravel()
        inv = np.where(tiny, np.float32(0.0), levels / np.where(tiny, np.float32(1.0), tmax)).astype(np.float32)
        np.multiply(x, self._tile_scales_full(inv, x.shape), out=work)
        np.rint(work, out=work)
        np.copyto(values, work, casting="unsafe")
        counts = _tile_counts(x.shape, self.edge(x.ndim))
        noise = float(np.sum(counts * sc.astype(np.float64) ** 2) / 12.0)
        return energy, noise

    def decode(self, buf, out):
        """Decode ``buf`` (uint8, :meth:`nbytes`) into the float32 array ``out`` (its shape)."""
        scales, values = self._split(buf, out.shape)
        if self.name == "float32":
            out[...] = values
        elif self.name == "float16":
            np.multiply(values, scales[0], out=out)
        else:
            ntiles = [-(-n // self.edge(out.ndim)) for n in out.shape]
            full = self._tile_scales_full(scales.reshape(ntiles), out.shape)
            np.multiply(values, full, out=out)
        return out

    def error_bound(self, buf, shape):
        """Per-point bound of ``|x − decode(encode(x))|`` (float32 array of ``shape``):
        ``s_b·(1/2 + L·2^{-22})`` per tile (integer codecs: the rounding to nearest, plus the
        float32 round-off of ``x·(L/m)`` and ``q·s_b``, ≤ 0.008 s_b at 16 bit, 3e-5 s_b at 8 bit),
        ``2^{-11}|x̂|·(1 + 2^{-10}) + 2^{-25}s`` (float16), 0 (float32)."""
        scales, values = self._split(buf, shape)
        if self.name == "float32":
            return np.zeros(shape, np.float32)
        if self.name == "float16":
            s = float(scales[0])
            return (np.abs(values.astype(np.float32)) * s * (2.0 ** -11 * (1 + 2.0 ** -10))
                    + 2.0 ** -25 * s).astype(np.float32)
        ntiles = [-(-n // self.edge(len(shape))) for n in shape]
        factor = np.float32(0.5 + _LEVELS[self.name] * 2.0 ** -22)
        return self._tile_scales_full(scales.reshape(ntiles) * factor, shape)
