"""Per-grid Devito symbols, the operator cache and its lock.

A :class:`Workspace` holds, for one grid configuration (padded shape, spacing, space order,
dtype), the Devito ``Grid``, the model ``Function``s ``m`` and ``damp`` and the named
placeholder functions the operators are compiled with. Operators are memoised on the
workspace (:meth:`Workspace.operator`), so each configuration compiles once and serves every
shot and every model of that grid; per-shot runs pass fresh functions of the same names.

Thread safety: a workspace's model functions and placeholder wavefields are shared state. Every
run holds the workspace's lock from loading the model until its results are copied out::

    with use_model(model) as ws:      # lock taken, model loaded
        ...build/apply operators...
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
from devito import Function, Grid, Operator, SparseTimeFunction, TimeFunction

from .compat import check_devito_version, wrap_array
from .mpi import check_same, configure_compiler, is_distributed

check_devito_version()  # fail at import, naming the supported range, not deep inside a run

__all__ = ["Workspace", "workspace", "use_model", "compile_operator"]


class Workspace:
    """Grid, model functions, placeholders and memoised operators for one grid configuration."""

    def __init__(self, shape, spacing, space_order, dtype):
        configure_compiler()  # under DEVITO_MPI: the mpich wheel's mpicc, if none is on PATH
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(h) for h in spacing)
        self.space_order = int(space_order)
        self.dtype = np.dtype(dtype).type
        extent = tuple((n - 1) * h for n, h in zip(self.shape, self.spacing))
        self.grid = Grid(shape=self.shape, extent=extent, origin=(0.0,) * len(self.shape),
                         dtype=self.dtype)
        self.m = Function(name="m", grid=self.grid, space_order=self.space_order)
        self.damp = Function(name="damp", grid=self.grid, space_order=0)
        self._objects = {}
        self._ops = {}
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ symbols
    def cached(self, key, make):
        """The object stored under ``key``, made once by ``make()``.

        Devito tells symbols (dimensions, placeholders) apart by identity: every operator of
        this workspace must see the same object for the same role.
        """
        obj = self._objects.get(key)
        if obj is None:
            obj = self._objects[key] = make()
        return obj

    def field(self, name, **kwargs):
        """A named placeholder ``TimeFunction`` (time order 2) shared by the operators."""
        return self.cached(("field", name, tuple(sorted(kwargs.items()))),
                           lambda: TimeFunction(name=name, grid=self.grid, time_order=2,
                                                space_order=self.space_order, **kwargs))

    def function(self, name, **kwargs):
        """A named placeholder ``Function`` (space order 0 unless given)."""
        kwargs.setdefault("space_order", 0)
        return self.cached(("function", name, tuple(sorted(kwargs.items()))),
                           lambda: Function(name=name, grid=self.grid, **kwargs))

    def sparse(self, name):
        """A placeholder ``SparseTimeFunction`` for point sources or receivers."""
        return self.cached(("sparse", name),
                           lambda: SparseTimeFunction(name=name, grid=self.grid, npoint=1, nt=1))

    def new_sparse(self, name, coordinates, data=None, nt=None, buffer=None):
        """A fresh ``SparseTimeFunction`` named like the placeholder, for one shot.

        ``coordinates`` on the padded grid (m, origin 0); ``nt`` samples (default: those of
        ``data``); ``data`` fills the first rows, the rest stay zero — written in place, without
        a padded copy of the traces. ``buffer``: a C-contiguous array (nt, npoint) of the
        workspace dtype used as the function's data *without a copy*; the caller owns it.

        Distributed (Devito MPI, several ranks): Devito shares the points out over the ranks, so
        ``buffer`` is copied in (each rank keeps its share) instead of wrapped; read the traces
        back with :func:`timeprobe.mpi.global_array`. Coordinates and data must be the same on
        every rank (checked).
        """
        coordinates = np.asarray(coordinates)
        npoint = coordinates.shape[0]
        if is_distributed(self.grid):
            check_same(coordinates, f"the coordinates of {name!r}")
            if buffer is not None:
                if buffer.shape != (nt, npoint):
                    raise ValueError(f"sparse buffer must be {(nt, npoint)}, got {buffer.shape}")
                data, buffer = buffer, None
            if data is not None:
                check_same(data, f"the traces of {name!r}")
        if buffer is not None:
            if (buffer.dtype != self.dtype or not buffer.flags.c_contiguous
                    or buffer.shape != (nt, npoint)):
                raise ValueError(f"sparse buffer must be C-contiguous {np.dtype(self.dtype).name} "
                                 f"{(nt, npoint)}, got {buffer.dtype} {buffer.shape}")
            f = SparseTimeFunction(name=name, grid=self.grid, npoint=npoint, nt=nt,
                                   **wrap_array(buffer))
        else:
            nt = data.shape[0] if nt is None else nt
            f = SparseTimeFunction(name=name, grid=self.grid, npoint=npoint, nt=nt)
        f.coordinates.data[:] = coordinates
        if data is not None:
            f.data[:data.shape[0]] = data
        return f

    # ------------------------------------------------------------------ model
    def set_model(self, model):
        """Copy ``model``'s padded squared slowness and damping into the workspace.

        Call with :attr:`lock` held (:func:`use_model` does). Under MPI each rank copies its
        part of the (global, identical on every rank: checked) model."""
        if is_distributed(self.grid):
            check_same(model.m_padded, "the model (squared slowness)")
        # Always copy: cheap next to one propagation, and immune to in-place edits of model.m.
        self.m.data[:] = model.m_padded
        self.damp.data[:] = model.damp

    # ------------------------------------------------------------------ operators
    def operator(self, key, build):
        """The operator for ``key``, compiled once by ``build()``."""
        with self.lock:
            if key not in self._ops:
                self._ops[key] = compile_operator(build())
            return self._ops[key]

    @property
    def dt_symbol(self):
        """The time-step symbol of the grid (``dt`` at run time)."""
        return self.grid.stepping_dim.spacing

    @property
    def time_dim(self):
        return self.grid.time_dim

    @property
    def space_dims(self):
        return self.grid.dimensions


def compile_operator(op):
    """Generate and compile ``op``'s code now (not inside a timed run); returns ``op``."""
    op.cfunction  # noqa: B018 — the property compiles
    return op


_WORKSPACES = {}
_LOCK = threading.Lock()


def workspace(model):
    """The (cached) :class:`Workspace` for ``model``'s grid configuration (no model loaded)."""
    key = (model.shape_padded, model.spacing, model.space_order, np.dtype(model.dtype).str)
    with _LOCK:
        ws = _WORKSPACES.get(key)
        if ws is None:
            ws = _WORKSPACES[key] = Workspace(*key[:3], model.dtype)
    return ws


@contextlib.contextmanager
def use_model(model):
    """``with use_model(model) as ws``: the workspace of ``model``'s grid, locked and loaded
    with ``model`` for the duration of the block."""
    ws = workspace(model)
    with ws.lock:
        ws.set_model(model)
        yield ws


#: Devito's optimisation options for every timeprobe operator. ``par-dynamic-work``: Devito
#: schedules a parallel loop dynamically when it estimates more than this many operations per
#: iteration (default 10, so every wave-equation stencil), one OpenMP chunk per row; the stencils
#: do the same work on every row, and static scheduling ran the 2D Overthrust forward 11 % faster
#: on the 2-core VM (0.37–0.385 s against 0.416–0.424 s, three alternated runs each)
OPT = ("advanced", {"par-dynamic-work": 10 ** 9})


def build_operator(ws, eqs, name):
    """A Devito ``Operator`` for ``eqs`` on ``ws`` (grid spacing substituted to save flops;
    optimisation options :data:`OPT`)."""
    return Operator(eqs, subs=ws.grid.spacing_map, name=name, opt=OPT)
