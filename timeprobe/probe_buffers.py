"""Where the probe fields live: the probe region, the ring buffer and their data layouts.

The probed gradient keeps, instead of the nt snapshots of the forward wavefield, r probe
fields ``ū_p`` (and, for imaging conditions other than the cross-correlation, r fields ``v̄_p``
of the adjoint run). This module owns their memory and layout; the equations that fill them
are built in :mod:`timeprobe.operators`, the probe vectors designed in :mod:`timeprobe.probing`.

* **Probe region.** The gradient is only ever returned on the physical domain, so the probe
  fields, the ring buffer and the probed gradient cover the physical domain plus
  ``space_order/2`` points (:func:`probe_margin`) — enough for the spatial derivatives of the
  imaging conditions — instead of the padded grid (31 % less memory and work on the 801×207
  Overthrust with 40 absorbing points). The region has dimensions of its own
  (:class:`ProbeRegion`); equations read the grid's fields at ``x_region + margin``.
* **Ring buffer** (``method="blocked"``): every k-th snapshot is copied into one of ``B`` slots;
  once per block of ``B`` snapshots the operator applies the block's rows of ``Qᵀ`` to the
  buffer. The slots sit just outside the innermost spatial axis, ``(x, b, y)``.
* **Layouts of ū** (:func:`inner_probe_axis`): the forward flush runs with ``p`` innermost
  (``(x, y, p)``, the block weights stay in registers, ū streams once); the adjoint's direct
  update ``g −= Σ_p ū_p·Σ_b W[b, p]·ring_b`` runs on ū transposed in place to ``(x, p, y)``
  (:func:`swap_probe_axis`), where every probe is one unit-stride sweep.
* **Buffers** are numpy arrays wrapped by Devito functions without a copy
  (:func:`new_buffer`): ``np.zeros`` maps zero pages, where Devito's own allocation would
  zero-fill through its ``Data`` indexing machinery (tens of ms per gradient).
* **Gathers** (:class:`GatherLayout`): the image domain (the physical domain, with dimensions of
  its own), the imaging-factor buffers (extended by zeros along the offset axis for the exact,
  per-time-step correlation; blocks of probes for the probed one) and the gathers array.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from devito import ConditionalDimension, DefaultDimension, Function

from .compat import wrap_array

__all__ = ["ProbeLayout", "probe_layout", "probe_margin", "region_slices", "ProbeRegion", "probe_region",
           "probe_dims", "block_dim", "inner_probe_axis", "swap_probe_axis", "placeholder",
           "new_buffer", "buffer_view", "TIME_INDEXED", "GatherLayout", "ImageDomain",
           "image_domain", "extended_dims", "gather_dims", "gather_placeholder", "new_gather_buffer"]

#: probe arrays indexed by time (their first axis has the run's length, not the placeholder's)
TIME_INDEXED = ("Qt", "Qblk", "Wtail")


class ProbeLayout(NamedTuple):
    """The operator configuration of a probed run (what the compiled code depends on)."""
    method: str      # "blocked" or "eq"
    r: int           # number of probes
    subsample: int   # time-subsampling factor k
    block: int       # ring-buffer slots B
    direct: bool     # adjoint accumulates g directly (no v̄)
    margin: int      # absorbing-layer points left out of the probe region


def probe_layout(probing, model, direct=None):
    """The :class:`ProbeLayout` of ``probing`` (a :class:`timeprobe.probing.Probing`) on
    ``model``'s grid; ``direct`` overrides ``probing.direct`` (the adjoint decides it with its
    imaging condition)."""
    return ProbeLayout(probing.method, probing.r, probing.subsample, probing.block,
                       bool(probing.direct if direct is None else direct), probe_margin(model))


def probe_margin(model):
    """Points of each absorbing layer that the probe fields leave out (module docstring)."""
    return max(model.nbl - model.space_order // 2, 0)


def region_slices(model):
    """Index of the probe region in padded-grid arrays."""
    t = probe_margin(model)
    return tuple(slice(t, n - t) for n in model.shape_padded)


class ProbeRegion:
    """The box ``[t, n − t)`` of the padded grid, with dimensions of its own.

    Probe fields are plain Functions over these dimensions; equations read the grid's fields
    at ``x_region + t``. (Devito's SubDomain functions would do the same, but only map indices
    for fields whose spatial dimensions come first, and the layouts here put ``p`` or ``b``
    between them.)
    """

    def __init__(self, ws, t):
        self.t = t
        self.shape = tuple(n - 2 * t for n in ws.shape)
        self.dimensions = tuple(DefaultDimension(name=f"{d.name}r", default_value=n)
                                for d, n in zip(ws.space_dims, self.shape))
        self.to_grid = {d: dr + t for d, dr in zip(ws.space_dims, self.dimensions)}

    def at(self, expr):
        """``expr`` (grid fields and derivatives) evaluated at the region's points."""
        return expr.evaluate.subs(self.to_grid)


def probe_region(ws, t):
    """The probe region of thickness ``t``, one object per workspace (dimension identity)."""
    return ws.cached(("region", t), lambda: ProbeRegion(ws, t))


def probe_dims(ws, r, B=None):
    """The probe (``p``, size r) and ring-buffer (``b``, size B) dimensions, one object each per
    workspace (two ``p`` objects would become two nested loops)."""
    def dim(name, size):
        return ws.cached(("dim", name, size), lambda: DefaultDimension(name=name, default_value=size))
    return dim("p", r), (dim("b", B) if B else None)


def block_dim(ws, k, B):
    """The once-per-block time dimension (factor k·B), one object per (k, B) per workspace."""
    return ws.cached(("dim", "tblk", k * B),
                     lambda: ConditionalDimension(name="tblk", parent=ws.time_dim, factor=k * B))


def inner_probe_axis(space, p):
    """``(x, p, y)`` / ``(x, y, p, z)``: the probe axis just before the innermost spatial one."""
    return tuple(space[:-1]) + (p,) + tuple(space[-1:])


def swap_probe_axis(a, to_inner):
    """In place, on the bytes of the C-contiguous ``a`` of shape (…, n, r): its content
    (…, n, r) → (…, r, n) (``to_inner``) or back (a few rows at a time, no full-size
    temporary; ``a``'s shape attribute is left as it is)."""
    n, r = a.shape[-2], a.shape[-1]
    rows = a.reshape(-1, n * r)
    src_shape = (n, r) if to_inner else (r, n)
    step = max(1, (1 << 20) // (a.itemsize * n * r))  # ≈ 1 MiB per chunk
    for i in range(0, rows.shape[0], step):
        chunk = rows[i:i + step]
        chunk[:] = chunk.reshape((-1,) + src_shape).swapaxes(1, 2).reshape(chunk.shape)


def _dimensions(ws, name, layout):
    p, b = probe_dims(ws, layout.r, layout.block)
    x = probe_region(ws, layout.margin).dimensions
    return {"ubar": x + (p,), "vbar": x + (p,), "ubar_t": inner_probe_axis(x, p), "grad_r": x,
            "Qt": (ws.time_dim, p), "Qblk": (block_dim(ws, layout.subsample, layout.block), b, p),
            "ring": inner_probe_axis(x, b), "Wtail": (b, p)}[name]


def placeholder(ws, name, layout):
    """The placeholder ``Function`` ``name`` of the operators built for ``layout``.

    Names: ``ubar`` (region, p), ``ubar_t`` (ū transposed, see :func:`swap_probe_axis`),
    ``vbar``, ``grad_r`` (the probed gradient on the region), ``ring`` (the ring buffer),
    ``Qt`` (time, p: the weights of the reference ``"eq"`` method), ``Qblk`` (block, b, p: the
    blocked weights), ``Wtail`` (b, p: the weights of the last block's flush). Its shape is that
    of the per-shot arrays; the time-indexed weights (:data:`TIME_INDEXED`) get theirs at run time.
    """
    dims = _dimensions(ws, name, layout)

    def make():
        region = probe_region(ws, layout.margin)
        p, b = probe_dims(ws, layout.r, layout.block)
        sizes = {**dict(zip(region.dimensions, region.shape)), p: layout.r, b: layout.block}
        shape = tuple(sizes.get(d, 1) for d in dims)  # 1: the time-indexed axis of Qt/Qblk
        return Function(name=name, dimensions=dims, shape=shape, space_order=0, dtype=ws.dtype)
    return ws.cached(("probe", name, tuple(id(d) for d in dims)), make)


def new_buffer(ws, name, layout, arr=None):
    """A fresh Function like the placeholder ``name`` holding a copy of ``arr`` (the
    time-indexed weights) or zeros of the placeholder's shape."""
    if arr is None:
        buffer = np.zeros(placeholder(ws, name, layout).shape, dtype=ws.dtype)
    else:
        buffer = np.array(arr, dtype=ws.dtype)
    return buffer_view(ws, name, layout, buffer)


def buffer_view(ws, name, layout, buffer):
    """A Function like the placeholder ``name`` whose data *is* ``buffer`` (no copy), viewed
    with the placeholder's shape (or ``buffer``'s, for the time-indexed weights)."""
    ph = placeholder(ws, name, layout)
    shape = buffer.shape if name in TIME_INDEXED else ph.shape
    view = buffer.reshape(shape)
    if not np.shares_memory(view, buffer):
        raise RuntimeError("probe buffer could not be viewed without a copy")
    return Function(name=name, dimensions=ph.dimensions, shape=shape, space_order=0,
                    dtype=ws.dtype, **wrap_array(view))


# =========================================================================== gathers
# Subsurface-offset and time-lag gathers (timeprobe.imaging.gathers) correlate *imaging factors*
# of the two fields (``a_c`` of u, ``b_c`` of v, with Σ_c a_c·b_c the imaging condition) at
# points shifted by ±h along one axis; the factors and the gathers live on the physical domain
# (the factors are zero outside it). The exact, per-time-step correlation reads factor buffers
# extended by ``pad = max|s|`` zero points on both sides of the offset axis, so that one loop nest
# reads every shift in bounds. The probed correlation (batched BLAS, in timeprobe.imaging) takes
# a block of probes at a time: its factor buffers are (*image, comp, block), probes innermost.


class GatherLayout(NamedTuple):
    """The operator configuration of a gathers run (what the compiled code depends on)."""
    axis: int        # spatial axis of the offsets (0: x, …, dim − 1: z)
    shifts: tuple    # grid shifts s_j of the offsets h_j = s_j·spacing[axis]
    ncomp: int       # imaging factors per side (1: "as"; 1 + dim: "isic")
    nlag: int        # lags per operator run (exact in-loop gathers); 1 for the probed ones
    block: int       # probes per factor block (probed); 0: exact
    nbl: int         # absorbing points on every side: the image is the physical domain

    @property
    def pad(self):
        return max(abs(int(s)) for s in self.shifts)


class ImageDomain:
    """The physical domain ``[nbl, n − nbl)`` of the padded grid, with dimensions of its own
    (images, gathers and imaging factors live there)."""

    def __init__(self, ws, nbl):
        self.t = nbl
        self.grid_dimensions = ws.space_dims
        self.shape = tuple(n - 2 * nbl for n in ws.shape)
        self.dimensions = tuple(DefaultDimension(name=f"{d.name}i", default_value=n)
                                for d, n in zip(ws.space_dims, self.shape))
        # the same points, looped over when the exact correlation's factors are written:
        # distinct loop dimensions keep the correlation of the shifted factors in a loop nest of
        # its own, after theirs (Devito fuses nests over the same dimensions even when a
        # statement reads what a later iteration writes)
        self.write_dimensions = tuple(DefaultDimension(name=f"{d.name}w", default_value=n)
                                      for d, n in zip(ws.space_dims, self.shape))

    def at(self, expr, subs=None, write=False):
        """``expr`` (grid fields and derivatives) evaluated at the image points, indexed by
        :attr:`dimensions` (or :attr:`write_dimensions`), after the extra substitutions ``subs``
        (e.g. a time shift)."""
        e = expr.evaluate
        if subs:
            e = e.subs(subs)
        dims = self.write_dimensions if write else self.dimensions
        return e.subs({d: di + self.t for d, di in zip(self.grid_dimensions, dims)})


def image_domain(ws, nbl):
    """The :class:`ImageDomain` of ``nbl`` absorbing points, one object per workspace."""
    return ws.cached(("image", nbl), lambda: ImageDomain(ws, nbl))


def _dim(ws, name, size):
    return ws.cached(("dim", name, size), lambda: DefaultDimension(name=name, default_value=size))


def extended_dims(ws, glayout):
    """The image dimensions with the offset axis replaced by its ``pad``-extended version, and
    their sizes."""
    dom = image_domain(ws, glayout.nbl)
    dims, shape = list(dom.dimensions), list(dom.shape)
    a = glayout.axis
    shape[a] += 2 * glayout.pad
    dims[a] = _dim(ws, ws.space_dims[a].name + "e", shape[a])
    return tuple(dims), tuple(shape)


def gather_dims(ws, glayout):
    """``{name: (dimensions, shape)}`` of the gathers placeholders (:func:`gather_placeholder`)."""
    dom = image_domain(ws, glayout.nbl)
    nlag, nh, nc = glayout.nlag, len(glayout.shifts), glayout.ncomp
    lag, hoff, comp = _dim(ws, "lag", nlag), _dim(ws, "hoff", nh), _dim(ws, "comp", nc)
    out = {"gath": ((lag, hoff) + dom.dimensions, (nlag, nh) + dom.shape)}
    if glayout.block:
        blk = _dim(ws, "blk", glayout.block)
        factors = (dom.dimensions + (comp, blk), dom.shape + (nc, glayout.block))
        out.update(gfu=factors, gfv=factors, gin=(ws.space_dims + (blk,), ws.shape + (glayout.block,)))
    else:
        ext, ext_shape = extended_dims(ws, glayout)
        out.update(gfu=((lag, comp) + ext, (nlag, nc) + ext_shape), gfv=((comp,) + ext, (nc,) + ext_shape))
    return out


def gather_placeholder(ws, name, glayout):
    """The placeholder ``Function`` ``name`` of the gathers operators built for ``glayout``.

    Names: ``gath`` (lag, offset, *image dims: the exact gathers), ``gfu``/``gfv`` (the imaging
    factors of u and v: exact ``(lag, comp, *extended image)`` / ``(comp, *extended image)``;
    probed ``(*image, comp, block)``), ``gin`` (probed: a block of probe fields on the padded
    grid, ``(*grid, block)`` with the stencil halo, whose derivatives give the factors).
    """
    dims, shape = gather_dims(ws, glayout)[name]

    def make():
        if name == "gin":
            return Function(name=name, grid=ws.grid, dimensions=dims, shape=shape,
                            space_order=ws.space_order, dtype=ws.dtype)
        return Function(name=name, dimensions=dims, shape=shape, space_order=0, dtype=ws.dtype)
    return ws.cached(("gather", name, tuple(id(d) for d in dims)), make)


def new_gather_buffer(ws, name, glayout, buffer=None):
    """A fresh Function like the gathers placeholder ``name``, on ``buffer`` (C-contiguous, the
    placeholder's shape; no copy) or on zeros. ``gin`` has the stencil halo: Devito allocates it."""
    ph = gather_placeholder(ws, name, glayout)
    if name == "gin":
        return Function(name=name, grid=ws.grid, dimensions=ph.dimensions, shape=ph.shape,
                        space_order=ws.space_order, dtype=ws.dtype)
    if buffer is None:
        buffer = np.zeros(ph.shape, dtype=ws.dtype)
    if buffer.shape != ph.shape or buffer.dtype != ws.dtype:
        raise ValueError(f"gathers buffer {name!r} must be {np.dtype(ws.dtype).name} {ph.shape}, "
                         f"got {buffer.dtype} {buffer.shape}")
    return Function(name=name, dimensions=ph.dimensions, shape=ph.shape, space_order=0, dtype=ws.dtype,
                    **wrap_array(buffer))
