"""Devito symbols and the acoustic wave-equation stencils.

Physics (units in :mod:`timeprobe.model`):

* forward  ``m ü − Δu + η u̇ = q``, ``u = u̇ = 0`` at ``t = 0``;
* adjoint  ``m v̈ − Δv − η v̇ = Pᵀ r``, run backward from ``v = v̇ = 0`` at ``t = T``;
* Born     ``m δü − Δδu + η δu̇ = −δm ü``.

Discretisation: second order in time (leapfrog), ``space_order`` in space,
sources injected as ``dt²/m · q`` into ``u(t + dt)`` and receivers sampled from
``u(t)`` by bilinear (trilinear) interpolation — the conventions of Devito's
``examples.seismic.acoustic``. Time step ``n`` therefore computes ``u[n+1]``,
samples ``rec[n] = P u[n]`` and injects ``src[n]``. The loops run over
``n = 1 … nt−1`` in every operator (forward, adjoint, Born, gradient, probed),
so that the full-storage field ``u[0 … nt]`` fits ``nt + 1`` snapshots and all
paths sum exactly the same terms: the first source sample ``src[0]`` is not
injected (``u[0] = u[1] = 0``), which the adjoint mirrors (``srca[0] = 0``).

A :class:`Workspace` holds, for one grid configuration (padded shape, spacing,
space order, dtype), the Devito ``Grid``, the model ``Function``s and the
placeholders the operators are compiled with. Operators are memoised on the
workspace (:meth:`Workspace.operator`), so each configuration compiles once and
serves every shot and every model of that grid.
"""
from __future__ import annotations

import threading

import numpy as np
from devito import (Eq, Function, Grid, Operator, SparseTimeFunction, TimeFunction,
                    solve)
from devito.data.allocators import ExternalAllocator

__all__ = ["Workspace", "workspace", "wave_stencil", "release"]


def wave_stencil(field, m, damp, forward=True, source=0):
    """Leapfrog update of ``m f̈ − Δf ± η ḟ = source`` for ``f(t ± dt)``.

    The adjoint (``forward=False``) uses the transposed first time derivative
    so that the backward scheme is the discrete adjoint of the forward one.
    """
    if forward:
        pde = m * field.dt2 - field.laplace + damp * field.dt - source
        return Eq(field.forward, solve(pde, field.forward))
    pde = m * field.dt2 - field.laplace + damp * field.dt.T - source
    return Eq(field.backward, solve(pde, field.backward))


class Workspace:
    """Grid, model functions and memoised operators for one grid configuration."""

    def __init__(self, shape, spacing, space_order, dtype):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(h) for h in spacing)
        self.space_order = int(space_order)
        self.dtype = np.dtype(dtype).type
        extent = tuple((n - 1) * h for n, h in zip(self.shape, self.spacing))
        self.grid = Grid(shape=self.shape, extent=extent, origin=(0.0,) * len(self.shape),
                         dtype=self.dtype)
        so = self.space_order
        self.m = Function(name="m", grid=self.grid, space_order=so)
        self.damp = Function(name="damp", grid=self.grid, space_order=0)
        self._fields = {}
        self._ops = {}
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ fields
    def field(self, name, **kwargs):
        """A named placeholder ``TimeFunction`` (time order 2) shared by the operators."""
        key = (name, tuple(sorted(kwargs.items())))
        if key not in self._fields:
            self._fields[key] = TimeFunction(name=name, grid=self.grid, time_order=2,
                                             space_order=self.space_order, **kwargs)
        return self._fields[key]

    def function(self, name, **kwargs):
        """A named placeholder ``Function`` (space order 0)."""
        if name not in self._fields:
            kwargs.setdefault("space_order", 0)
            self._fields[name] = Function(name=name, grid=self.grid, **kwargs)
        return self._fields[name]

    def sparse(self, name, npoint=1, nt=1):
        """A placeholder ``SparseTimeFunction`` for point sources or receivers."""
        key = ("sparse", name)
        if key not in self._fields:
            self._fields[key] = SparseTimeFunction(name=name, grid=self.grid, npoint=npoint, nt=nt)
        return self._fields[key]

    def new_sparse(self, name, coordinates, data=None, nt=None, buffer=None):
        """A fresh ``SparseTimeFunction`` named like the placeholder, for one shot.

        ``nt`` samples (default: those of ``data``); ``data`` fills the first rows, the
        rest stay zero — written in place, without a padded copy of the traces.
        ``buffer``: a C-contiguous float32 array (nt, npoint) used as the function's
        data *without a copy* (Devito's ``ExternalAllocator``); the caller owns it.
        """
        coordinates = np.asarray(coordinates)
        npoint = coordinates.shape[0]
        if buffer is not None:
            if (buffer.dtype != self.dtype or not buffer.flags.c_contiguous
                    or buffer.shape != (nt, npoint)):
                raise ValueError(f"sparse buffer must be C-contiguous {np.dtype(self.dtype).name} "
                                 f"{(nt, npoint)}, got {buffer.dtype} {buffer.shape}")
            f = SparseTimeFunction(name=name, grid=self.grid, npoint=npoint, nt=nt,
                                   allocator=ExternalAllocator(buffer), initializer=lambda a: None)
        else:
            nt = data.shape[0] if nt is None else nt
            f = SparseTimeFunction(name=name, grid=self.grid, npoint=npoint, nt=nt)
        f.coordinates.data[:] = coordinates
        if data is not None:
            f.data[:data.shape[0]] = data
        return f

    # ------------------------------------------------------------------ model
    def set_model(self, model):
        """Copy ``model``'s padded squared slowness and damping into the workspace."""
        # Always copy: cheap next to one propagation, and immune to in-place edits of model.m.
        self.m.data[:] = model.m_padded
        self.damp.data[:] = model.damp

    # ------------------------------------------------------------------ operators
    def operator(self, key, build):
        """The operator for ``key``, compiled once by ``build()``."""
        with self.lock:
            if key not in self._ops:
                op = build()
                op.cfunction  # compile now, not inside a timed run
                self._ops[key] = op
            return self._ops[key]

    @property
    def dt_symbol(self):
        return self.grid.stepping_dim.spacing

    @property
    def time_dim(self):
        return self.grid.time_dim

    @property
    def space_dims(self):
        return self.grid.dimensions


_WORKSPACES = {}
_LOCK = threading.Lock()


def workspace(model):
    """The (cached) :class:`Workspace` for ``model``'s grid configuration, loaded with ``model``."""
    key = (model.shape_padded, model.spacing, model.space_order, np.dtype(model.dtype).str)
    with _LOCK:
        ws = _WORKSPACES.get(key)
        if ws is None:
            ws = _WORKSPACES[key] = Workspace(*key[:3], model.dtype)
    ws.set_model(model)
    return ws


def build(ws, eqs, name):
    """Compile ``eqs`` on workspace ``ws`` (grid spacing substituted to save flops)."""
    return Operator(eqs, subs=ws.grid.spacing_map, name=name)


def release(*functions):
    """Free the buffers of per-shot Devito functions now, not at the next garbage collection.

    Devito's symbolic objects sit in reference cycles (function ↔ its indexed
    objects and sub-functions), so dropping the last Python reference does not
    free their data: a shot's receiver traces, ring buffer, ū or full-storage
    wavefield (nt·N floats) would stay resident until the cyclic collector runs
    — on top of the next shot's. Dropping the function's own reference to its
    buffer frees it as soon as no array view of it remains (a view returned to
    the caller keeps its buffer alive, and only it). The functions are unusable
    afterwards. ``None`` entries are skipped.
    """
    for f in functions:
        if f is None:
            continue
        f._data = None  # Devito's own idiom (SparseFunction.free_data)
        f._allocator = None  # an ExternalAllocator keeps the wrapped numpy buffer alive
        coords = getattr(f, "coordinates", None)
        if coords is not None:
            coords._data = None
