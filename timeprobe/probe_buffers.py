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
* **Ring buffer** (``method="blocked"``): every k-th snapshot is copied into one of ``B`` slots;
  once per block of ``B`` snapshots the operator applies the block's rows of ``Qᵀ`` to the
  buffer. The slots sit just outside the innermost spatial axis, ``(x, b, y)``.
* **Layouts of ū** (:func:`inner_probe_axis`): the forward flush runs with ``p`` innermost
  (``(x, y, p)``, the block weights stay in registers, ū streams once); the adjoint's direct
  update ``g −= Σ_p ū_p·Σ_b W[b, p]·ring_b`` runs on ū transposed in place to ``(x, p, y)``
  (:func:`swap_probe_axis`), where every probe is one unit-stride sweep.
* **Domain decomposition** (Devito MPI, several ranks, :func:`timeprobe.mpi.is_distributed`):
  Devito splits only functions defined on the grid's own dimensions, so there the probe
  region is the whole padded grid on the grid's dimensions (:class:`GridRegion`, margin 0)
  and every spatial probe field is a grid ``Function`` carrying its extra ``p``/``b``
  dimension in the same position as serially: each rank holds its own part of ū, v̄, the
  ring buffer and the probed gradient (about 1/ranks of each), and the operators are built
  by the same equation builders. Images then cover the layers too and are cut to the physical
  domain as usual (same values there: the probe fields are pointwise).
* **Buffers** are numpy arrays wrapped by Devito functions without a copy
  (:func:`new_buffer`): ``np.zeros`` maps zero pages, where Devito's own allocation would
  zero-fill through its ``Data`` indexing machinery (tens of ms per gradient).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from devito import ConditionalDimension, DefaultDimension, Function

from .compat import wrap_array
from .mpi import is_distributed

__all__ = ["ProbeLayout", "probe_layout", "probe_margin", "region_margin", "region_slices", "ProbeRegion", "probe_region",
           "GridRegion", "probe_dims", "block_dim", "inner_probe_axis", "swap_probe_axis", "placeholder",
           "new_buffer", "buffer_view", "TIME_INDEXED"]

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
                       bool(probing.direct if direct is None else direct), region_margin(model, probing))


def probe_margin(model):
    """Points of each absorbing layer that probe fields skipping the layers leave out."""
    return max(model.nbl - model.space_order // 2, 0)


def region_margin(model, probing):
    """The probe region's margin for ``probing``: 0 (the whole padded grid) when its fields
    cover the absorbing layers (``probing.layers``) or the grid is split over MPI ranks
    (:class:`GridRegion`), else :func:`probe_margin`."""
    return 0 if probing.layers or is_distributed() else probe_margin(model)


def region_slices(model, probing):
    """Index of ``probing``'s probe region in padded-grid arrays."""
    t = region_margin(model, probing)
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
    time-indexed weights) or zeros of the placeholder's shape (this rank's part of it when
    the grid is split over MPI ranks)."""
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
    grid = _grid_kwargs(ws, ph.dimensions)
    if grid:  # distributed: the global shape; buffer is this rank's part (ph.shape is local)
        shape = ph.shape_global
    return Function(name=name, dimensions=ph.dimensions, shape=shape, space_order=0,
                    dtype=ws.dtype, **grid, **wrap_array(view))
