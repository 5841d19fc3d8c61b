"""Where the probe fields live: the probe region, the ring buffer and their data layouts.

The probed gradient keeps, instead of the nt snapshots of the forward wavefield, r probe
fields ``ū_p`` (and, for imaging conditions other than the cross-correlation, r fields ``v̄_p``
of the adjoint run). This module owns their memory and layout; the equations that fill them
are built in :mod:`timeprobe.operators`, the probe vectors designed in :mod:`timeprobe.probing`.

* **Probe region.** Images, and gradients restricted to the physical domain
  (``sum_padding=False``), are only ever returned on the physical domain, so their probe
  fields, ring buffer and probed gradient cover the physical domain plus ``space_order/2``
  points (:func:`probe_margin`) — enough for the spatial derivatives of the imaging
  conditions — instead of the padded grid (31 % less memory and work on the 801×207
  Overthrust with 40 absorbing points). Exact-derivative gradients (the default) need the
  absorbing layers too (margin 0, :func:`region_margin`). The region has dimensions of its
  own (:class:`ProbeRegion`); equations read the grid's fields at ``x_region + margin``.
* **Ring buffer** (``method="blocked"``): the k-subsampled snapshots are taken in blocks of
  ``B``; once per block, at the time step of the block's last snapshot the run reaches, a flush
  applies the block's rows of ``Qᵀ`` (``ū_p += Σ_b W[c, b, p]·snapshot_b``). The other
  snapshots wait in the slots of the ring buffer; the last one is read straight from the
  wavefield (:func:`read_slot`): the forward buffers ``B − 1`` snapshots (``B = 1`` needs no
  ring buffer at all), the adjoint's direct gradient update all ``B`` (its loop order would
  recompute ``v̈`` per probe). A block's weights are selected by the index ``time / (k·B)``;
  :data:`FLUSH_TIME` adds the one flush off that schedule (the forward's unfinished last block,
  the adjoint's first block). The slots sit just outside the innermost spatial axis,
  ``(x, slot, y)``.
* **Layouts of ū** (:func:`inner_probe_axis`): the forward flush runs with ``p`` innermost
  (``(x, y, p)``, the block weights stay in registers, ū streams once); the adjoint's direct
  update ``g −= Σ_p ū_p·Σ_b W[b, p]·snapshot_b`` runs on ū transposed in place to ``(x, p, y)``
  (:func:`swap_probe_axis`), where every probe is one unit-stride sweep.
* **Loop bounds**: the probe and slot axes are fixed dimensions (constant trip counts in the
  generated code, :func:`timeprobe.compat.fixed_dimension`).
* **Domain decomposition** (Devito MPI, several ranks, :func:`timeprobe.mpi.is_distributed`):
  Devito splits only functions defined on the grid's own dimensions, so there the probe
  region is the whole padded grid on the grid's dimensions (:class:`GridRegion`, margin 0)
  and every spatial probe field is a grid ``Function`` carrying its extra ``p``/``b``
  dimension in the same position as serially: each rank holds its own part of ū, v̄, the
  ring buffer and the probed gradient (about 1/ranks of each), and the operators are built
  by the same equation builders. Images then cover the layers too and are cut to the physical
  domain as usual (same values there: the probe fields are pointwise).
* **Buffers** are numpy arrays wrapped by Devito functions without a copy
  (:func:`new_buffer`): fresh zero pages, where Devito's own allocation would zero-fill through
  its ``Data`` indexing machinery (tens of ms per gradient). They start on a 64-byte boundary,
  and large ones are mapped with transparent huge pages (:func:`timeprobe.utils.aligned_zeros`).
* **Gathers** (:class:`GatherLayout`): the image domain (the physical domain, with dimensions of
  its own), the imaging-factor buffers (extended by zeros along the offset axis for the exact,
  per-time-step correlation; blocks of probes for the probed one) and the gathers array.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from devito import Constant, DefaultDimension, Function

from .compat import fixed_dimension, wrap_array
from .utils import BUFFER_ALIGN, aligned_zeros
from .mpi import is_distributed

__all__ = ["ProbeLayout", "probe_layout", "probe_margin", "region_margin", "region_bounds", "region_slices",
           "region_shape", "PROBE_ALIGN", "ProbeRegion", "GridRegion", "probe_region",
           "probe_dims", "inner_probe_axis", "swap_probe_axis", "placeholder", "flush_time",
           "buffered_slots", "read_slot", "ring_slots", "new_buffer", "buffer_view", "aligned_zeros",
           "TIME_INDEXED", "FLUSH_TIME", "BUFFER_ALIGN", "GatherLayout", "ImageDomain",
           "image_domain", "extended_dims", "gather_dims", "gather_placeholder", "new_gather_buffer"]

#: probe arrays indexed by time (their first axis has the run's length, not the placeholder's)
TIME_INDEXED = ("Qt", "Qblk")

#: name of the run-time scalar holding the time step of the one off-schedule flush
FLUSH_TIME = "tflush"

#: the probe region's innermost extent is a multiple of this many points where the absorbing
#: layer allows (:func:`region_bounds`): the unit-stride probe loops then have no scalar
#: remainder and every row starts 32-byte aligned (the adjoint's update ran 25–35 % faster on
#: the 801×207 Overthrust region, 216 instead of 215 points per row, in a kernel benchmark)
PROBE_ALIGN = 8


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
                       bool(probing.direct if direct is None else direct), region_margin(model, probing.layers))


def probe_margin(model):
    """Points of each absorbing layer that probe fields skipping the layers leave out."""
    return max(model.nbl - model.space_order // 2, 0)


def region_margin(model, layers=False):
    """The probe region's margin: 0 (the whole padded grid) when the probe fields cover the
    absorbing layers (``layers``: :attr:`timeprobe.probing.Probing.layers`, the default of
    gradients) or the grid is split over MPI ranks (:class:`GridRegion`), else
    :func:`probe_margin` (images, ``sum_padding=False`` gradients)."""
    return 0 if layers or is_distributed() else probe_margin(model)


def region_bounds(shape_padded, t):
    """``[(start, stop)]`` per axis of the probe region in a padded grid of ``shape_padded``:
    ``[t, n − t)``, the innermost axis extended by up to ``min(PROBE_ALIGN − 1, t)`` points into
    the absorbing layer to a multiple of :data:`PROBE_ALIGN` (the gradient there is discarded
    with the layer)."""
    bounds = [(t, n - t) for n in shape_padded]
    start, stop = bounds[-1]
    bounds[-1] = (start, stop + min(-(stop - start) % PROBE_ALIGN, t))
    return bounds


def region_slices(model, layers=False):
    """Index of the probe region in padded-grid arrays (``layers``: see :func:`region_margin`)."""
    return tuple(slice(a, b) for a, b in region_bounds(model.shape_padded, region_margin(model, layers)))


def region_shape(model, layers=False):
    """Shape of the probe region (the probe fields' spatial shape; ``layers``: :func:`region_margin`)."""
    return tuple(b - a for a, b in region_bounds(model.shape_padded, region_margin(model, layers)))


class ProbeRegion:
    """The box :func:`region_bounds` (``[t, n − t)``, the innermost axis a little longer) of the
    padded grid, with dimensions of its own.

    Probe fields are plain Functions over these dimensions; equations read the grid's fields
    at ``x_region + t``. (Devito's SubDomain functions would do the same, but only map indices
    for fields whose spatial dimensions come first, and the layouts here put ``p`` or ``b``
    between them.)
    """

    def __init__(self, ws, t):
        self.t = t
        self.shape = tuple(b - a for a, b in region_bounds(ws.shape, t))
        self.dimensions = tuple(DefaultDimension(name=f"{d.name}r", default_value=n)
                                for d, n in zip(ws.space_dims, self.shape))
        self.to_grid = {d: dr + t for d, dr in zip(ws.space_dims, self.dimensions)}

    def at(self, expr):
        """``expr`` (grid fields and derivatives) evaluated at the region's points."""
        return expr.evaluate.subs(self.to_grid)


class GridRegion:
    """The probe region of a grid split over MPI ranks: the whole padded grid, on the grid's own
    dimensions (Devito decomposes only those), so probe fields are split like the wavefields."""

    t = 0

    def __init__(self, ws):
        self.shape = ws.shape
        self.dimensions = tuple(ws.space_dims)
        self.to_grid = {}

    def at(self, expr):
        """``expr`` evaluated at the grid's points (the region is the grid)."""
        return expr.evaluate


def probe_region(ws, t):
    """The probe region of thickness ``t``, one object per workspace (dimension identity); a
    :class:`GridRegion` when the workspace's grid is split over MPI ranks (``t`` must be 0)."""
    if is_distributed(ws.grid):
        if t != 0:
            raise ValueError(f"a grid split over MPI ranks keeps probe fields on the whole padded grid "
                             f"(margin 0), got margin {t}")
        return ws.cached(("region", "grid"), lambda: GridRegion(ws))
    return ws.cached(("region", t), lambda: ProbeRegion(ws, t))


def probe_dims(ws, r, B=None):
    """The probe (``p``, size r) and block (``b``, size B: one weight per snapshot of a block)
    dimensions, fixed-size, one object each per workspace (two ``p`` objects would become two
    nested loops)."""
    def dim(name, size):
        return ws.cached(("dim", name, size), lambda: fixed_dimension(name, size))
    return dim("p", r), (dim("b", B) if B else None)


def read_slot(B, adjoint, direct=False):
    """The snapshot of a block (0 … B−1, in forward time) its flush reads from the wavefield
    instead of the ring buffer: the last one the run reaches (forward ``B − 1``, adjoint ``0``),
    whose time step the flush happens at. None for the adjoint's direct gradient update, whose
    loop order ``(x, p, y)`` would recompute the snapshot (``v̈``, three time levels) for every
    probe: it buffers the whole block and flushes after writing slot 0."""
    if adjoint:
        return None if direct else 0
    return B - 1


def ring_slots(B, adjoint=False, direct=False):
    """Slots of the ring buffer for blocks of B snapshots (:func:`read_slot`)."""
    return B - (read_slot(B, adjoint, direct) is not None)


def buffered_slots(B, adjoint, direct=False):
    """``[(j, slot)]``: snapshot j of a block (in forward time) is copied into ring slot ``slot``
    (every snapshot but :func:`read_slot`, in order)."""
    skip = read_slot(B, adjoint, direct)
    return [(j, i) for i, j in enumerate(j for j in range(B) if j != skip)]


def flush_time(ws):
    """The run-time scalar :data:`FLUSH_TIME` (int): the time step of the one flush off the
    ``time ≡ j·k (mod k·B)`` schedule (j the block's last snapshot the run reaches)."""
    return ws.cached(("constant", FLUSH_TIME), lambda: Constant(name=FLUSH_TIME, dtype=np.int32))


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


def _ring_size(layout, name):
    # "ring": the forward's; "ring_adj": the adjoint's (whole blocks for the direct update)
    return ring_slots(layout.block, adjoint=name == "ring_adj", direct=layout.direct)


def _dimensions(ws, name, layout):
    p, b = probe_dims(ws, layout.r, layout.block)
    x = probe_region(ws, layout.margin).dimensions
    if name in ("ring", "ring_adj"):
        n = _ring_size(layout, name)
        if n < 1:
            raise ValueError("a block of B = 1 snapshot has no ring buffer")
        slot = ws.cached(("dim", "slot", n), lambda: fixed_dimension("slot", n))
        return inner_probe_axis(x, slot)
    blk = ws.cached(("dim", "blk"), lambda: DefaultDimension(name="blk", default_value=1))
    return {"ubar": x + (p,), "vbar": x + (p,), "ubar_t": inner_probe_axis(x, p), "grad_r": x,
            "Qt": (ws.time_dim, p), "Qblk": (blk, b, p)}[name]


def placeholder(ws, name, layout):
    """The placeholder ``Function`` ``name`` of the operators built for ``layout``.

    Names: ``ubar`` (region, p), ``ubar_t`` (ū transposed, see :func:`swap_probe_axis`),
    ``vbar``, ``grad_r`` (the probed gradient on the region), ``ring`` / ``ring_adj`` (the
    forward's / adjoint's ring buffer, :func:`ring_slots`), ``Qt`` (time, p: the weights of the
    reference ``"eq"`` method), ``Qblk`` (block, b, p: the blocked weights, row c for the block
    of times c·k·B … (c+1)·k·B − 1). Its shape is that of the per-shot arrays; the time-indexed
    weights (:data:`TIME_INDEXED`) get theirs at run time.
    """
    dims = _dimensions(ws, name, layout)

    def make():
        region = probe_region(ws, layout.margin)
        p, b = probe_dims(ws, layout.r, layout.block)
        sizes = {**dict(zip(region.dimensions, region.shape)), p: layout.r, b: layout.block}
        if name in ("ring", "ring_adj"):
            sizes[dims[-2]] = _ring_size(layout, name)
        shape = tuple(sizes.get(d, 1) for d in dims)  # 1: the time-indexed axis of Qt/Qblk
        return Function(name=name, dimensions=dims, shape=shape, space_order=0, dtype=ws.dtype,
                        **_grid_kwargs(ws, dims))
    return ws.cached(("probe", name, tuple(id(d) for d in dims)), make)


def _grid_kwargs(ws, dims):
    # split over the MPI ranks with the grid: spatial probe fields of a distributed grid
    if is_distributed(ws.grid) and any(d in dims for d in ws.space_dims):
        return {"grid": ws.grid}
    return {}


def new_buffer(ws, name, layout, arr=None):
    """A fresh Function like the placeholder ``name`` holding a copy of ``arr`` (the
    time-indexed weights) or zeros of the placeholder's shape (this rank's part of it when the grid
    is split over MPI ranks), :data:`BUFFER_ALIGN`-aligned."""
    if arr is None:
        buffer = aligned_zeros(placeholder(ws, name, layout).shape, ws.dtype)
    else:
        arr = np.asarray(arr)
        buffer = aligned_zeros(arr.shape, ws.dtype)
        buffer[...] = arr
    return buffer_view(ws, name, layout, buffer)


def buffer_view(ws, name, layout, buffer):
    """A Function like the placeholder ``name`` whose data *is* ``buffer`` (no copy), viewed
    with the placeholder's shape (or ``buffer``'s, for the time-indexed weights)."""
    ph = placeholder(ws, name, layout)
    shape = buffer.shape if name in TIME_INDEXED else ph.shape
    view = buffer.reshape(shape)
    if not np.shares_memory(view, buffer):
        raise RuntimeError("probe buffer could not be viewed without a copy")
    grid = _grid_kwargs(ws, ph.dimensions)
    if grid:  # distributed: the global shape; buffer is this rank's part (ph.shape is local)
        shape = ph.shape_global
    return Function(name=name, dimensions=ph.dimensions, shape=shape, space_order=0,
                    dtype=ws.dtype, **grid, **wrap_array(view))


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
        buffer = aligned_zeros(ph.shape, ws.dtype)
    if buffer.shape != ph.shape or buffer.dtype != ws.dtype:
        raise ValueError(f"gathers buffer {name!r} must be {np.dtype(ws.dtype).name} {ph.shape}, "
                         f"got {buffer.dtype} {buffer.shape}")
    return Function(name=name, dimensions=ph.dimensions, shape=ph.shape, space_order=0, dtype=ws.dtype,
                    **wrap_array(buffer))
