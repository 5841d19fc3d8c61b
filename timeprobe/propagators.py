"""Wave-equation propagators: forward, adjoint, Born, adjoint Born (exact and probed).

Every propagator is a Devito ``Operator`` built by a factory and memoised on the
grid :class:`~timeprobe.kernels.Workspace`, so each configuration compiles once
and serves every shot and every model of the same grid.

Time axes. Traces (``Data``) live on their geometry's axis (usually 2–4 ms);
propagation runs on the computational axis ``t_n = n·dt``, ``n = 0 … nt−1``
covering the recording time. Wavelets are resampled onto it and receiver traces
back with the windowed-sinc operator ``R`` of :func:`timeprobe.geometry.resampling_operator`;
adjoint propagators apply the exact transpose ``Rᵀ``.

Linear algebra conventions (plain Euclidean inner products on both sides):

* ``F q``       forward modelling, ``Fᵀ d`` adjoint modelling (:func:`forward`, :func:`adjoint`);
* ``J δm``      Born modelling (:func:`born`);
* ``Jᵀ δd = −Σ_n u[n] · v̈[n]``  adjoint Born (:func:`born_adjoint`, full storage), where
  ``v`` is the adjoint field driven by ``Rᵀ δd`` (``v̈`` the centred second difference).

Probing (:class:`Probing`): the forward pass accumulates
``ū_p = Σ_s k·dt · Q[s, p] · u[k s]`` and the adjoint pass either
``v̄_p = Σ_s Q[s, p] · v̈[k s]`` or directly ``g −= Σ_s v̈[k s] · Σ_p Q[s, p] ū_p``
(``k`` the time-subsampling factor). With ``k = 1`` and ``QQᵀ = I`` this equals the
full-storage ``−dt Σ_n u[n]·v̈[n]`` up to float32 round-off.
"""
from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, field

import numpy as np
import sympy
from devito import ConditionalDimension, DefaultDimension, Eq, Function, Inc, TimeFunction

from .geometry import Data, Geometry, resampling_operator
from .kernels import build, release, wave_stencil, workspace

__all__ = ["forward", "adjoint", "born", "born_adjoint", "computational_axis", "Probing",
           "run_forward", "run_adjoint", "run_born"]


# --------------------------------------------------------------------------- time axes
def computational_axis(model, *geometries):
    """(dt, nt) of the computational axis covering the longest recording of ``geometries``."""
    t_end = max(g.t for g in geometries)
    dt = model.dt
    nt = int(math.ceil(t_end / dt - 1e-4)) + 1  # tolerate float32 round-off in dt
    return dt, nt


_R_CACHE = {}


def _resampler(t0_in, dt_in, nt_in, t0_out, dt_out, nt_out):
    key = tuple(round(v, 9) for v in (t0_in, dt_in, nt_in, t0_out, dt_out, nt_out))
    R = _R_CACHE.get(key)
    if R is None:
        if len(_R_CACHE) > 64:
            _R_CACHE.clear()
        R = _R_CACHE[key] = resampling_operator(t0_in + dt_in * np.arange(nt_in),
                                                t0_out + dt_out * np.arange(nt_out)).tocsr()
    return R


_CHUNK = 256  # traces per resampling product: its float64 temporaries stay small


def _apply(R, traces, out=None):
    """``R @ traces`` in float64 arithmetic, stored float32 (into ``out`` if given).

    Done a few traces at a time: a whole-record float64 temporary would be several
    times the record itself and would count in the gradient's peak memory.
    """
    traces = np.asarray(traces)
    if out is None:
        out = np.empty((R.shape[0],) + traces.shape[1:], dtype=np.float32)
    if traces.ndim == 1:
        out[:] = R @ traces.astype(np.float64)
        return out
    for j in range(0, traces.shape[1], _CHUNK):
        out[:, j:j + _CHUNK] = R @ traces[:, j:j + _CHUNK].astype(np.float64)
    return out


def to_computational(traces, geometry, dt, nt, out=None):
    """Traces on ``geometry``'s axis → computational axis (``R_in``)."""
    return _apply(_resampler(geometry.t0, geometry.dt, geometry.nt, 0.0, dt, nt), traces, out)


def from_computational(traces, geometry, dt, nt, out=None):
    """Computational-axis traces → ``geometry``'s axis (``R_out``)."""
    return _apply(_resampler(0.0, dt, nt, geometry.t0, geometry.dt, geometry.nt), traces, out)


def from_computational_adjoint(traces, geometry, dt, nt, out=None):
    """Exact adjoint ``R_outᵀ`` of :func:`from_computational`."""
    return _apply(_resampler(0.0, dt, nt, geometry.t0, geometry.dt, geometry.nt).T.tocsr(), traces, out)


def to_computational_adjoint(traces, geometry, dt, nt, out=None):
    """Exact adjoint ``R_inᵀ`` of :func:`to_computational`."""
    return _apply(_resampler(geometry.t0, geometry.dt, geometry.nt, 0.0, dt, nt).T.tocsr(), traces, out)


def grid_coordinates(model, coords):
    """Physical coordinates (m) → coordinates on the padded Devito grid (origin 0)."""
    return np.asarray(coords) - np.asarray(model.origin) + model.nbl * np.asarray(model.spacing)


# --------------------------------------------------------------------------- validation
def check_inputs(model, q=None, rec_geometry=None, d=None):
    """Validate sources/receivers/data against the model and each other."""
    from .model import Model
    if not isinstance(model, Model):
        raise TypeError(f"model must be a timeprobe.Model, got {type(model).__name__}")
    if q is not None:
        if not isinstance(q, Data):
            raise TypeError(f"q must be timeprobe.Data (source wavelets), got {type(q).__name__}")
        q.geometry.check_inside(model, "source")
    if rec_geometry is not None:
        if not isinstance(rec_geometry, Geometry):
            raise TypeError(f"receiver geometry must be a timeprobe.Geometry, got {type(rec_geometry).__name__}")
        rec_geometry.check_inside(model, "receiver")
    if d is not None:
        if not isinstance(d, Data):
            raise TypeError(f"d must be timeprobe.Data (shot records), got {type(d).__name__}")
        d.geometry.check_inside(model, "receiver")
    if q is not None and (rec_geometry is not None or d is not None):
        n_rec = (rec_geometry if rec_geometry is not None else d.geometry).nshots
        if q.nshots != n_rec:
            raise ValueError(f"mismatched numbers of shots: {q.nshots} source shot(s), {n_rec} receiver shot(s)")


# --------------------------------------------------------------------------- probing spec
@dataclass
class Probing:
    """How a probed gradient is accumulated.

    Parameters
    ----------
    Q : array (nsub, r)
        Probe vectors on the (sub-sampled) computational axis ``t = k·s·dt``.
    subsample : int
        Time-subsampling factor ``k`` (``nsub = (nt − 1)//k + 1``).
    method : {"blocked", "eq"}
        ``"eq"`` is the reference formulation of the design: one Devito ``Eq``
        per time step, ``ū[x, p] += k·dt·Q[s, p]·u(x)`` (streams the r×N
        accumulator through memory every step). ``"blocked"`` (default) copies
        ``block`` sub-sampled snapshots into a ring buffer and, once per block,
        applies ``Qᵀ`` to the buffer in one register-blocked Devito loop nest
        (``x`` parallel, the r probes vectorised): the same sum, reordered, at a
        fraction of the memory traffic.
    block : int
        Ring-buffer length ``B`` for ``"blocked"`` (memory ``B·N`` floats).
    direct : bool
        Adjoint pass accumulates the gradient ``g −= v̈·(Q ū)`` directly instead
        of storing ``v̄`` (saves r·N floats; only for the cross-correlation image).
    """
    Q: np.ndarray
    subsample: int = 1
    method: str = "blocked"
    block: int = 4
    direct: bool = True
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.Q = np.ascontiguousarray(self.Q, dtype=np.float32)
        if self.Q.ndim != 2:
            raise ValueError(f"probe matrix Q must be 2D (nsub, r), got shape {self.Q.shape}")
        if self.method not in ("blocked", "eq"):
            raise ValueError(f"unknown probing method {self.method!r}; use 'blocked' or 'eq'")
        if int(self.subsample) != self.subsample or self.subsample < 1:
            raise ValueError(f"subsample must be a positive integer, got {self.subsample}")
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")
        self.subsample = int(self.subsample)
        self.block = int(self.block)

    @property
    def r(self):
        return self.Q.shape[1]

    @property
    def nsub(self):
        return self.Q.shape[0]

    def check_axis(self, nt):
        expected = (nt - 1) // self.subsample + 1
        if self.nsub != expected:
            raise ValueError(f"Q has {self.nsub} rows; the computational axis (nt = {nt}, subsample = "
                             f"{self.subsample}) needs {expected}")

    def blocked_weights(self, nt, scale, adjoint):
        """Q arranged per ring-buffer block: (nblocks + 2, B, r), rows scaled by ``scale``.

        Forward: the block ending before time ``c·k·B`` is accumulated at that time
        step, from row ``c``. Adjoint (backward in time): block ``c`` is accumulated
        at time ``c·k·B`` once its first slot is written, from row ``c``.
        """
        B, k = self.block, self.subsample
        nblk = (nt - 1) // (k * B) + 2
        W = np.zeros((nblk + 1, B, self.r), dtype=np.float32)
        for s in range(self.nsub):
            c, b = divmod(s, B)
            W[c if adjoint else c + 1, b] = scale * self.Q[s]
        return W


# --------------------------------------------------------------------------- operator factories
def _probe_dims(ws, r, B=None):
    """The probe (``p``, size r) and ring-buffer (``b``, size B) dimensions, one object each per workspace.

    Devito tells dimensions apart by identity: two ``p`` objects would become two nested loops.
    """
    def dim(name, size):
        key = ("dim", name, size)
        if key not in ws._fields:
            ws._fields[key] = DefaultDimension(name=name, default_value=size)
        return ws._fields[key]
    return dim("p", r), (dim("b", B) if B else None)


def _block_dim(ws, k, B):
    """The once-per-block time dimension (factor k·B), one object per (k, B) per workspace."""
    key = ("dim", "tblk", k * B)
    if key not in ws._fields:
        ws._fields[key] = ConditionalDimension(name="tblk", parent=ws.time_dim, factor=k * B)
    return ws._fields[key]


def _placeholder_dims(ws, name, probing):
    """Dimensions of the placeholder ``name`` in the operators built for ``probing``."""
    p, b = _probe_dims(ws, probing.r, probing.block)
    x = ws.space_dims
    return {"ubar": x + (p,), "vbar": x + (p,), "Qt": (ws.time_dim, p),
            "Qblk": (_block_dim(ws, probing.subsample, probing.block), b, p),
            "ring": (b,) + x, "Wtail": (b, p)}[name]


def _op_forward(ws, save=None, probing=None, born_dm=False, illum=False):
    """Forward operator. ``save``: full storage (nt); ``probing``: (method, r, k, B, direct);
    ``illum``: also accumulate the source illumination ``illum += dt·u²``."""
    key = ("forward", save, probing, born_dm, illum)

    def make():
        u = ws.field("usave", save=save) if save else ws.field("u")
        src = ws.sparse("src")
        rec = ws.sparse("rec")
        s = ws.dt_symbol
        eqs = [wave_stencil(u, ws.m, ws.damp)]
        eqs += src.inject(field=u.forward, expr=src * s**2 / ws.m)
        if born_dm:
            du = ws.field("du")
            dm = ws.function("dm")
            eqs += [wave_stencil(du, ws.m, ws.damp, source=-dm * u.dt2)]
            eqs += rec.interpolate(expr=du)
        else:
            eqs += rec.interpolate(expr=u)
        if illum:
            eqs += [Inc(ws.function("illum"), s * u * u)]
        if probing is not None:
            eqs += _probe_eqs(ws, u, probing, adjoint=False)
        return build(ws, eqs, "Forward")
    return ws.operator(key, make)


def _probe_eqs(ws, field_expr_source, probing, adjoint, expr=None):
    """Equations accumulating ``Qᵀ`` applied to ``expr`` (default the field itself)."""
    method, r, k, B, direct = probing
    time = ws.time_dim
    x = ws.space_dims
    expr = field_expr_source if expr is None else expr
    if method == "eq":
        p, _ = _probe_dims(ws, r)
        Qt = _probe_function(ws, "Qt", (time, p))
        acc = _probe_function(ws, "vbar" if adjoint else "ubar", x + (p,))
        if adjoint and direct:
            ubar = _probe_function(ws, "ubar", x + (p,))
            grad = ws.function("grad")
            return [Inc(grad, -expr * Qt[time, p] * ubar)]
        return [Eq(acc, acc + Qt[time, p] * expr)]
    p, b = _probe_dims(ws, r, B)
    tblk = _block_dim(ws, k, B)
    W = _probe_function(ws, "Qblk", (tblk, b, p))
    buf = _probe_function(ws, "ring", (b,) + x)
    writes = []
    for j in range(B):
        cj = ConditionalDimension(name=f"slot{j}", parent=time,
                                  condition=sympy.Eq(sympy.Mod(time, k * B), j * k))
        writes.append(Eq(buf[(j,) + x], expr, implicit_dims=(cj,)))
    if adjoint and direct:
        ubar = _probe_function(ws, "ubar", x + (p,))
        grad = ws.function("grad")
        if r <= _UNROLL_MAX_R:
            # The sum over probes written out: one expression per point that the compiler
            # vectorises, instead of a loop-carried reduction into grad[x] (measured 5× slower).
            combo = builtins.sum(builtins.sum(W[tblk, j, i] * buf[(j,) + x] for j in range(B))
                                 * ubar[x + (i,)] for i in range(r))
        else:
            combo = builtins.sum(W[tblk, j, p] * buf[(j,) + x] for j in range(B)) * ubar
        acc = [Inc(grad, -combo, implicit_dims=(tblk,))]
    else:
        out = _probe_function(ws, "vbar" if adjoint else "ubar", x + (p,))
        combo = builtins.sum(W[tblk, j, p] * buf[(j,) + x] for j in range(B))
        acc = [Eq(out, out + combo, implicit_dims=(tblk,))]
    # forward: flush the finished block before slot 0 is overwritten;
    # adjoint (backward in time): slot 0 is the last one written in a block.
    return (acc + writes) if not adjoint else (writes + acc)


_UNROLL_MAX_R = 64  # the adjoint's direct gradient update is unrolled over probes up to this r


def _probe_function(ws, name, dims):
    """Placeholder ``Function`` over probe/buffer/space dimensions (shape set at run time)."""
    key = ("probe", name, tuple(id(d) for d in dims))
    if key not in ws._fields:
        shape = []
        for d in dims:
            if d in ws.space_dims:
                shape.append(ws.shape[ws.space_dims.index(d)])
            else:
                shape.append(getattr(d, "default_value", None) or 1)
        grid = ws.grid if any(d in ws.space_dims for d in dims) else None
        ws._fields[key] = Function(name=name, dimensions=tuple(dims), shape=tuple(shape),
                                   grid=grid, space_order=0, dtype=ws.dtype)
    return ws._fields[key]


def _op_flush(ws, r, B):
    """``ubar += Σ_b Wtail[b, p] · ring[b]`` — the last, unfinished forward block."""
    def make():
        p, b = _probe_dims(ws, r, B)
        x = ws.space_dims
        buf = _probe_function(ws, "ring", (b,) + x)
        out = _probe_function(ws, "ubar", x + (p,))
        Wt = _probe_function(ws, "Wtail", (b, p))
        combo = builtins.sum(Wt[j, p] * buf[(j,) + x] for j in range(B))
        return build(ws, [Eq(out, out + combo)], "Flush")
    return ws.operator(("flush", r, B), make)


def _op_flush_adjoint(ws, r, B, direct):
    """The adjoint's first block (times 0 … kB−1): its in-loop flush would fire at time 0,
    which the loop (``n ≥ 1``) never reaches."""
    def make():
        p, b = _probe_dims(ws, r, B)
        x = ws.space_dims
        buf = _probe_function(ws, "ring", (b,) + x)
        Wt = _probe_function(ws, "Wtail", (b, p))
        combo = builtins.sum(Wt[j, p] * buf[(j,) + x] for j in range(B))
        if direct:
            ubar = _probe_function(ws, "ubar", x + (p,))
            return build(ws, [Inc(ws.function("grad"), -combo * ubar)], "FlushAdjoint")
        out = _probe_function(ws, "vbar", x + (p,))
        return build(ws, [Eq(out, out + combo)], "FlushAdjoint")
    return ws.operator(("flush_adjoint", r, B, direct), make)


def _op_adjoint(ws, grad_save=None, probing=None, ic="as", src_interp=True):
    """Adjoint operator: receivers injected backward in time.

    ``grad_save``: nt of the saved forward field → ``grad −= dt·usave·v̈`` (exact);
    ``probing``: accumulate ``Qᵀ v̈`` (or ``Qᵀ v`` for ``ic="v"``) or the gradient directly.
    """
    key = ("adjoint", grad_save, probing, ic, src_interp)

    def make():
        # The adjoint field lives in the forward field's three time buffers: u is dead
        # once the forward pass is done, so the gradient costs no extra 3·N.
        v = ws.field("u")
        rec = ws.sparse("rec")
        s = ws.dt_symbol
        eqs = [wave_stencil(v, ws.m, ws.damp, forward=False)]
        eqs += rec.inject(field=v.backward, expr=rec * s**2 / ws.m)
        if src_interp:
            srca = ws.sparse("src")
            eqs += srca.interpolate(expr=v)
        if grad_save:
            usave = ws.field("usave", save=grad_save)
            grad = ws.function("grad")
            eqs += [Inc(grad, -s * usave * v.dt2)]
        if probing is not None:
            expr = v.dt2 if ic == "as" else v
            eqs += _probe_eqs(ws, v, probing, adjoint=True, expr=expr)
        return build(ws, eqs, "Adjoint")
    return ws.operator(key, make)


# --------------------------------------------------------------------------- per-shot runs
def _probe_data(ws, name, arr, probing):
    """A fresh Function shaped like the placeholder ``name``, holding ``arr``.

    ``probing`` selects the placeholder of the operators built for that configuration
    (several configurations coexist on one workspace, each with its own dimensions).

    ``arr`` may be a shape tuple: the Function is then zero (Devito zero-fills on
    allocation) and no numpy temporary of that size is made — it would double the
    probe storage at its peak.
    """
    ph = ws._fields[("probe", name, tuple(id(d) for d in _placeholder_dims(ws, name, probing)))]
    shape = tuple(arr) if isinstance(arr, tuple) else arr.shape
    f = Function(name=name, dimensions=ph.dimensions, shape=shape,
                 grid=ph.grid, space_order=0, dtype=ws.dtype)
    if not isinstance(arr, tuple):
        f.data[:] = arr
    return f


def _probe_key(probing):
    return (probing.method, probing.r, probing.subsample, probing.block, probing.direct)


def run_forward(model, src_coords, wavelet_c, rec_coords, dt, nt, save=False, probing=None, dm=None,
                illumination=False):
    """Propagate one shot on the computational axis.

    Returns ``(rec (nt, nrec), extra)`` where ``extra`` is the saved wavefield
    (``save=True``, a Devito ``TimeFunction``), the ``ū`` Function (``probing``)
    or None. ``illumination=True`` also accumulates the source illumination
    ``Λ = dt·Σ_n u[n]²`` and returns ``(rec, extra, Λ)`` (padded grid).
    """
    if save and probing is not None:
        raise ValueError("run_forward: choose full storage (save=True) or probing, not both")
    ws = workspace(model)
    with ws.lock:
        # Sparse functions get nt + 1 samples (last one zero) to match the nt + 1
        # snapshots of the full-storage field: Devito needs one time size per operator.
        src = ws.new_sparse("src", grid_coordinates(model, src_coords), wavelet_c, nt=nt + 1)
        # the traces live in a numpy buffer we own (see _adjoint_source_buffer)
        traces = np.zeros((nt + 1, len(rec_coords)), dtype=ws.dtype)
        rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1, buffer=traces)
        kwargs = dict(src=src, rec=rec, dt=dt, time_m=1, time_M=nt - 1)
        extra = ring = None
        if save:
            op = _op_forward(ws, save=nt + 1, born_dm=dm is not None, illum=illumination)
            extra = kwargs["usave"] = TimeFunction(name="usave", grid=ws.grid, time_order=2,
                                                   space_order=model.space_order, save=nt + 1)
        else:
            ws.field("u").data[:] = 0
            pkey = None if probing is None else _probe_key(probing)
            op = _op_forward(ws, probing=pkey, born_dm=dm is not None, illum=illumination)
        if probing is not None:
            probing.check_axis(nt)
            extra = kwargs["ubar"] = _probe_data(ws, "ubar", ws.shape + (probing.r,), probing)
            scale = probing.subsample * dt
            if probing.method == "eq":
                Qt = np.zeros((nt + 1, probing.r), dtype=np.float32)  # nt + 1: sparse functions have nt + 1 samples
                Qt[:nt:probing.subsample] = scale * probing.Q
                kwargs["Qt"] = _probe_data(ws, "Qt", Qt, probing)
            else:
                W = probing.blocked_weights(nt, scale, adjoint=False)
                kwargs["Qblk"] = _probe_data(ws, "Qblk", W, probing)
                kwargs["ring"] = ring = _probe_data(ws, "ring", (probing.block,) + ws.shape, probing)
        if dm is not None:
            _zero_born(ws, dm, model)
        if illumination:
            ws.function("illum").data[:] = 0
        op.apply(**kwargs)
        if ring is not None:
            # the last, unfinished block is still in the ring buffer: flush it
            B, k = probing.block, probing.subsample
            c_last = (nt - 1) // (k * B)
            Wt = np.zeros((B, probing.r), dtype=np.float32)
            rows = probing.Q[c_last * B:(c_last + 1) * B]
            Wt[:rows.shape[0]] = scale * rows
            _op_flush(ws, probing.r, B).apply(ubar=extra, ring=ring,
                                             Wtail=_probe_data(ws, "Wtail", Wt, probing))
        release(rec, src, ring)
        if illumination:
            return traces[:nt], extra, np.array(ws.function("illum").data)
        return traces[:nt], extra


def _adjoint_source_buffer(residual_c, nt):
    """The (nt + 1)-row buffer behind ``residual_c`` if it is the first nt rows of one
    (the traces :func:`run_forward` returns, overwritten in place by an adjoint source),
    else None. Such a buffer is injected without a copy: one nt × nrec array less at the
    gradient's peak."""
    base = residual_c.base
    if (isinstance(base, np.ndarray) and base.dtype == np.float32 and base.flags.c_contiguous
            and base.ndim == 2 and base.shape == (nt + 1, residual_c.shape[1])
            and residual_c.shape[0] == nt and residual_c.flags.c_contiguous
            and residual_c.__array_interface__["data"][0] == base.__array_interface__["data"][0]):
        base[nt] = 0.0
        return base
    return None


def _zero_born(ws, dm, model):
    ws.field("du").data[:] = 0
    ws.function("dm").data[:] = model.pad(np.asarray(dm, dtype=np.float32), mode="constant")


def run_adjoint(model, rec_coords, residual_c, dt, nt, src_coords=None, usave=None,
                probing=None, ubar=None, ic="as"):
    """Back-propagate receiver traces ``residual_c`` (nt, nrec) on the computational axis.

    Returns ``(srca (nt, nsrc) or None, grad or None, vbar or None)``; ``grad``
    (padded grid, float32) is ``−dt Σ_n usave[n]·v̈[n]`` with ``usave`` or the
    probed ``−Σ_p ū_p·v̄_p`` accumulated directly with ``probing``.
    """
    ws = workspace(model)
    with ws.lock:
        buf = _adjoint_source_buffer(residual_c, nt)
        if buf is not None:
            rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1, buffer=buf)
        else:
            rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), residual_c, nt=nt + 1)
        kwargs = dict(rec=rec, dt=dt, time_m=1, time_M=nt - 1)
        srca = None
        if src_coords is not None:
            srca = ws.new_sparse("src", grid_coordinates(model, src_coords), nt=nt + 1)
            kwargs["src"] = srca
        ws.field("u").data[:] = 0  # the adjoint field (see _op_adjoint)
        grad = vbar_f = None
        if usave is not None:
            op = _op_adjoint(ws, grad_save=nt + 1, src_interp=srca is not None)
            grad = ws.function("grad")
            grad.data[:] = 0
            kwargs["usave"] = usave
        elif probing is not None:
            probing.check_axis(nt)
            direct = probing.direct and ic == "as"
            pkey = _probe_key(probing)[:-1] + (direct,)
            op = _op_adjoint(ws, probing=pkey, ic=ic, src_interp=srca is not None)
            if probing.method == "eq":
                Qt = np.zeros((nt + 1, probing.r), dtype=np.float32)  # nt + 1: sparse functions have nt + 1 samples
                Qt[:nt:probing.subsample] = probing.Q
                kwargs["Qt"] = _probe_data(ws, "Qt", Qt, probing)
            else:
                W = probing.blocked_weights(nt, 1.0, adjoint=True)
                kwargs["Qblk"] = _probe_data(ws, "Qblk", W, probing)
                kwargs["ring"] = _probe_data(ws, "ring", (probing.block,) + ws.shape, probing)
            if direct:
                grad = ws.function("grad")
                grad.data[:] = 0
                kwargs["ubar"] = ubar
            else:
                kwargs["vbar"] = vbar_f = _probe_data(ws, "vbar", ws.shape + (probing.r,), probing)
        else:
            op = _op_adjoint(ws, src_interp=srca is not None)
        op.apply(**kwargs)
        if probing is not None and probing.method == "blocked":
            # block 0 is still in the ring buffer (slot 0 = time 0 lies outside the loop: weight 0)
            Wt = W[0].copy()
            Wt[0] = 0.0
            fl = dict(ring=kwargs["ring"], Wtail=_probe_data(ws, "Wtail", Wt, probing))
            fl.update(ubar=ubar) if direct else fl.update(vbar=vbar_f)
            _op_flush_adjoint(ws, probing.r, probing.block, direct).apply(**fl)
        out = (None if srca is None else np.array(srca.data[:nt]),
               None if grad is None else np.array(grad.data),
               vbar_f)
        release(rec, srca, kwargs.get("ring"))
        return out


def run_born(model, src_coords, wavelet_c, rec_coords, dm, dt, nt):
    """Born data ``J δm`` of one shot on the computational axis."""
    rec, _ = run_forward(model, src_coords, wavelet_c, rec_coords, dt, nt, dm=dm)
    return rec


# --------------------------------------------------------------------------- public API
def forward(model, q, rec_geometry, save=False):
    """Forward modelling ``d = F(m) q`` for every shot.

    Parameters
    ----------
    model : Model
    q : Data
        Source wavelets: one trace per source point, per shot.
    rec_geometry : Geometry
        Receiver positions per shot and the output sampling.
    save : bool
        Also return the list of full wavefields (``TimeFunction``, nt·N floats each).
    """
    check_inputs(model, q, rec_geometry)
    dt, nt = computational_axis(model, q.geometry, rec_geometry)
    out, fields = [], []
    for i in range(q.nshots):
        wc = to_computational(q.arrays[i], q.geometry, dt, nt)
        rec, u = run_forward(model, q.geometry.coordinates[i], wc, rec_geometry.coordinates[i],
                             dt, nt, save=save)
        out.append(from_computational(rec, rec_geometry[i], dt, nt))
        fields.append(u)
    d = Data(rec_geometry, out)
    return (d, fields) if save else d


def adjoint(model, d, src_geometry):
    """Adjoint modelling ``Fᵀ d``: receiver traces back-propagated, sampled at the sources.

    Exact transpose of :func:`forward` (resampling included) in the Euclidean
    inner products of the two trace spaces.
    """
    check_inputs(model, rec_geometry=src_geometry, d=d)
    if src_geometry.nshots != d.nshots:
        raise ValueError(f"mismatched numbers of shots: {src_geometry.nshots} source, {d.nshots} data")
    dt, nt = computational_axis(model, src_geometry, d.geometry)
    out = []
    for i in range(d.nshots):
        rc = from_computational_adjoint(d.arrays[i], d.geometry[i], dt, nt)
        srca, _, _ = run_adjoint(model, d.geometry.coordinates[i], rc, dt, nt,
                                 src_coords=src_geometry.coordinates[i])
        out.append(to_computational_adjoint(srca, src_geometry[i], dt, nt))
    return Data(src_geometry, out)


def born(model, q, dm, rec_geometry):
    """Born (linearised) modelling ``δd = J(m) δm`` with ``δm`` in s²/km², shape of the model."""
    check_inputs(model, q, rec_geometry)
    dm = _check_dm(model, dm)
    dt, nt = computational_axis(model, q.geometry, rec_geometry)
    out = []
    for i in range(q.nshots):
        wc = to_computational(q.arrays[i], q.geometry, dt, nt)
        rec = run_born(model, q.geometry.coordinates[i], wc, rec_geometry.coordinates[i], dm, dt, nt)
        out.append(from_computational(rec, rec_geometry[i], dt, nt))
    return Data(rec_geometry, out)


def born_adjoint(model, q, d):
    """Adjoint Born ``Jᵀ δd = −Σ_n u[n]·v̈[n]`` summed over shots (full wavefield storage).

    The exact reference every cheaper gradient is measured against. Returns an
    array of the model's shape (float32).
    """
    check_inputs(model, q, d=d)
    dt, nt = computational_axis(model, q.geometry, d.geometry)
    g = np.zeros(model.shape, dtype=np.float64)
    for i in range(q.nshots):
        wc = to_computational(q.arrays[i], q.geometry, dt, nt)
        _, usave = run_forward(model, q.geometry.coordinates[i], wc, d.geometry.coordinates[i],
                               dt, nt, save=True)
        rc = from_computational_adjoint(d.arrays[i], d.geometry[i], dt, nt)
        _, grad, _ = run_adjoint(model, d.geometry.coordinates[i], rc, dt, nt, usave=usave)
        release(usave)
        g += model.unpad(grad) / dt  # operator computes −dt·Σ u·v̈
    return g.astype(np.float32)


def _check_dm(model, dm):
    dm = np.asarray(dm)
    if dm.shape != model.shape:
        raise ValueError(f"dm has shape {dm.shape}, the model has shape {model.shape}")
    if not np.all(np.isfinite(dm)):
        raise ValueError("dm contains NaN or inf")
    return dm.astype(np.float32)
