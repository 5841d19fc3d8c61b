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
from devito.data.allocators import ExternalAllocator

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


def _resampler(t0_in, dt_in, nt_in, t0_out, dt_out, nt_out, transpose=False):
    """The (cached) resampling matrix between two uniform axes, or its transpose (CSR)."""
    key = tuple(round(v, 9) for v in (t0_in, dt_in, nt_in, t0_out, dt_out, nt_out)) + (transpose,)
    R = _R_CACHE.get(key)
    if R is None:
        if len(_R_CACHE) > 64:
            _R_CACHE.clear()
        R = resampling_operator(t0_in + dt_in * np.arange(nt_in), t0_out + dt_out * np.arange(nt_out))
        R = _R_CACHE[key] = (R.T if transpose else R).tocsr()
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
    return _apply(_resampler(0.0, dt, nt, geometry.t0, geometry.dt, geometry.nt, transpose=True), traces, out)


def to_computational_adjoint(traces, geometry, dt, nt, out=None):
    """Exact adjoint ``R_inᵀ`` of :func:`to_computational`."""
    return _apply(_resampler(geometry.t0, geometry.dt, geometry.nt, 0.0, dt, nt, transpose=True), traces, out)


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


def _inner_probe_axis(space, p):
    """``(x, p, y)`` / ``(x, y, p, z)``: the probe axis just before the innermost spatial one.

    Layouts of ū. The forward flush ``ū[x, y, :] += Σ_b W[b, :]·ring_b[x, y]``
    runs best with ``p`` innermost (the block weights stay in registers, ū streams
    once). The adjoint's ``g[x, y] −= Σ_p ū_p[x, y]·Σ_b W[b, p]·ring_b[x, y]`` with
    ``p`` innermost is either a horizontal reduction per point or r-strided
    gathers; with ``p`` just outside the innermost axis every probe is one
    unit-stride vector sweep. ū is therefore transposed in place between the passes
    (:func:`_swap_probe_axis`, a few ms).
    """
    return tuple(space[:-1]) + (p,) + tuple(space[-1:])


def _swap_probe_axis(a, to_inner):
    """In place, on the bytes of the C-contiguous ``a`` of shape (…, n, r): its content
    (…, n, r) → (…, r, n) (``to_inner``) or back (a few rows at a time, no full-size
    temporary; ``a``'s shape attribute is left as it is)."""
    n, r = a.shape[-2], a.shape[-1]
    rows = a.reshape(-1, n * r)
    src_shape = (n, r) if to_inner else (r, n)
    step = max(1, (1 << 20) // (4 * n * r))  # ≈ 1 MiB per chunk
    for i in range(0, rows.shape[0], step):
        chunk = rows[i:i + step]
        chunk[:] = chunk.reshape((-1,) + src_shape).swapaxes(1, 2).reshape(chunk.shape)


def probe_margin(model):
    """Points of each absorbing layer that the probe fields leave out.

    The gradient is only ever returned on the physical domain (the objectives and
    images drop the absorbing layers), so ū, v̄, the ring buffer and the probed
    gradient cover the physical domain plus ``space_order/2`` points — enough for
    the spatial derivatives of the imaging conditions — instead of the padded grid:
    on the 801×207 Overthrust with 40 absorbing points, 31 % less probe memory and
    work. The probed gradient is zero in the rest of the absorbing layers.
    """
    return max(model.nbl - model.space_order // 2, 0)


class _Region:
    """The box ``[t, n − t)`` of the padded grid, with dimensions of its own.

    Probe fields are plain Functions over these dimensions; equations read the
    grid's fields at ``x_region + t``. (Devito's SubDomain functions would do
    the same, but only map indices for fields whose spatial dimensions come
    first, and the layouts here put ``p`` or ``b`` between them.)
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


def _region(ws, t):
    """The probe region of thickness ``t``, one object per workspace (dimension identity)."""
    key = ("region", t)
    if key not in ws._fields:
        ws._fields[key] = _Region(ws, t)
    return ws._fields[key]


def region_slices(model):
    """Index of the probe region in padded-grid arrays."""
    t = probe_margin(model)
    return tuple(slice(t, n - t) for n in model.shape_padded)


def _placeholder_dims(ws, name, key):
    """Dimensions of the placeholder ``name`` in the operators built for probing ``key``."""
    method, r, k, B, direct, t = key
    p, b = _probe_dims(ws, r, B)
    x = _region(ws, t).dimensions
    return {"ubar": x + (p,), "vbar": x + (p,), "ubar_t": _inner_probe_axis(x, p), "grad_r": x,
            "Qt": (ws.time_dim, p), "Qblk": (_block_dim(ws, k, B), b, p),
            "ring": _inner_probe_axis(x, b), "Wtail": (b, p)}[name]


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
    method, r, k, B, direct, t = probing
    time = ws.time_dim
    expr = field_expr_source if expr is None else expr
    ph = lambda name: _placeholder(ws, name, probing)  # noqa: E731
    region = _region(ws, t)
    x = region.dimensions
    expr = region.at(expr)
    if method == "eq":
        p, _ = _probe_dims(ws, r)
        Qt = ph("Qt")
        acc = ph("vbar" if adjoint else "ubar")
        if adjoint and direct:
            return [Inc(ph("grad_r"), -expr * Qt[time, p] * ph("ubar"))]
        return [Eq(acc, acc + Qt[time, p] * expr)]
    p, b = _probe_dims(ws, r, B)
    tblk = _block_dim(ws, k, B)
    W = ph("Qblk")
    buf = ph("ring")
    writes = []
    for j in range(B):
        cj = ConditionalDimension(name=f"slot{j}", parent=time,
                                  condition=sympy.Eq(sympy.Mod(time, k * B), j * k))
        writes.append(Eq(buf[_inner_probe_axis(x, j)], expr, implicit_dims=(cj,)))
    if adjoint and direct:
        # ū in the (x, p, y) layout: loops x, p, y with y unit-stride (see _inner_probe_axis)
        combo = builtins.sum(W[tblk, j, p] * buf[_inner_probe_axis(x, j)] for j in range(B)) * ph("ubar_t")
        acc = [Inc(ph("grad_r"), -combo, implicit_dims=(tblk,))]
    else:
        out = ph("vbar" if adjoint else "ubar")
        combo = builtins.sum(W[tblk, j, p] * buf[_inner_probe_axis(x, j)] for j in range(B))
        acc = [Eq(out, out + combo, implicit_dims=(tblk,))]
    # forward: flush the finished block before slot 0 is overwritten;
    # adjoint (backward in time): slot 0 is the last one written in a block.
    return (acc + writes) if not adjoint else (writes + acc)



def _placeholder(ws, name, key):
    """The placeholder ``Function`` ``name`` of the operators built for probing ``key``.

    Its shape is that of the per-shot arrays (probe, block and region dimensions
    carry their sizes); the time-indexed weights ``Qt``/``Qblk`` get theirs at run time.
    """
    dims = _placeholder_dims(ws, name, key)
    fkey = ("probe", name, tuple(id(d) for d in dims))
    if fkey not in ws._fields:
        method, r, k, B, direct, t = key
        region = _region(ws, t)
        p, b = _probe_dims(ws, r, B)
        sizes = {**dict(zip(region.dimensions, region.shape)), p: r, b: B}
        shape = tuple(sizes.get(d, 1) for d in dims)  # 1: the time-indexed dimension of Qt/Qblk
        ws._fields[fkey] = Function(name=name, dimensions=dims, shape=shape,
                                    space_order=0, dtype=ws.dtype)
    return ws._fields[fkey]


def _op_flush(ws, key):
    """``ubar += Σ_b Wtail[b, p] · ring[b]`` — the last, unfinished forward block."""
    def make():
        B, t = key[3], key[5]
        p, _ = _probe_dims(ws, key[1], B)
        x = _region(ws, t).dimensions
        buf, out, Wt = (_placeholder(ws, name, key) for name in ("ring", "ubar", "Wtail"))
        combo = builtins.sum(Wt[j, p] * buf[_inner_probe_axis(x, j)] for j in range(B))
        return build(ws, [Eq(out, out + combo)], "Flush")
    return ws.operator(("flush",) + tuple(key[1:4]) + (key[5],), make)


def _op_flush_adjoint(ws, key):
    """The adjoint's first block (times 0 … kB−1): its in-loop flush would fire at time 0,
    which the loop (``n ≥ 1``) never reaches."""
    def make():
        B, direct, t = key[3], key[4], key[5]
        ph = lambda name: _placeholder(ws, name, key)  # noqa: E731
        p, _ = _probe_dims(ws, key[1], B)
        x = _region(ws, t).dimensions
        buf, Wt = ph("ring"), ph("Wtail")
        combo = builtins.sum(Wt[j, p] * buf[_inner_probe_axis(x, j)] for j in range(B))
        if direct:
            return build(ws, [Inc(ph("grad_r"), -combo * ph("ubar_t"))], "FlushAdjoint")
        out = ph("vbar")
        return build(ws, [Eq(out, out + combo)], "FlushAdjoint")
    return ws.operator(("flush_adjoint",) + tuple(key[1:]), make)


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
def _probe_data(ws, name, key, arr=None):
    """A fresh Function like the placeholder ``name`` of probing ``key``, holding ``arr``
    (the time-indexed weights) or zeros of the placeholder's shape.

    ``key`` (:func:`_probe_key`) selects the placeholder of the operators built for that
    configuration (several configurations coexist on one workspace, each with its own
    dimensions). The buffer is a numpy array wrapped without a copy (``np.zeros`` maps
    zero pages: no fill pass, where Devito's own allocation zero-fills through its
    ``Data`` indexing machinery — tens of ms per gradient for ū and the ring buffer).
    """
    if arr is None:
        buffer = np.zeros(_placeholder(ws, name, key).shape, dtype=ws.dtype)
    else:
        buffer = np.array(arr, dtype=ws.dtype)
    return _probe_view(ws, name, key, buffer)


def _probe_view(ws, name, key, buffer):
    """A Function like the placeholder ``name`` whose data *is* ``buffer`` (no copy),
    viewed with the placeholder's shape (or ``buffer``'s, for the time-indexed weights)."""
    ph = _placeholder(ws, name, key)
    shape = buffer.shape if name in ("Qt", "Qblk", "Wtail") else ph.shape
    view = buffer.reshape(shape)
    if not np.shares_memory(view, buffer):
        raise RuntimeError("probe buffer could not be viewed without a copy")
    return Function(name=name, dimensions=ph.dimensions, shape=shape, space_order=0,
                    dtype=ws.dtype, allocator=ExternalAllocator(view), initializer=lambda a: None)


def _probe_key(probing, model, direct=None):
    """The operator configuration of ``probing`` on ``model``'s grid (``direct`` overrides
    ``probing.direct``: the adjoint run decides it with its imaging condition)."""
    return (probing.method, probing.r, probing.subsample, probing.block,
            probing.direct if direct is None else direct, probe_margin(model))


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
            pkey = None if probing is None else _probe_key(probing, model)
            op = _op_forward(ws, probing=pkey, born_dm=dm is not None, illum=illumination)
        if probing is not None:
            probing.check_axis(nt)
            extra = kwargs["ubar"] = _probe_data(ws, "ubar", pkey)
            scale = probing.subsample * dt
            if probing.method == "eq":
                Qt = np.zeros((nt + 1, probing.r), dtype=np.float32)  # nt + 1: sparse functions have nt + 1 samples
                Qt[:nt:probing.subsample] = scale * probing.Q
                kwargs["Qt"] = _probe_data(ws, "Qt", pkey, Qt)
            else:
                W = probing.blocked_weights(nt, scale, adjoint=False)
                kwargs["Qblk"] = _probe_data(ws, "Qblk", pkey, W)
                kwargs["ring"] = ring = _probe_data(ws, "ring", pkey)
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
            _op_flush(ws, pkey).apply(ubar=extra, ring=ring, Wtail=_probe_data(ws, "Wtail", pkey, Wt))
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
                probing=None, ubar=None, ic="as", restore_ubar=True):
    """Back-propagate receiver traces ``residual_c`` (nt, nrec) on the computational axis.

    Returns ``(srca (nt, nsrc) or None, grad or None, vbar or None)``; ``grad``
    (padded grid, float32) is ``−dt Σ_n usave[n]·v̈[n]`` with ``usave`` or the
    probed ``−Σ_p ū_p·v̄_p`` accumulated directly with ``probing``. The blocked
    direct update works on ``ubar``'s buffer transposed in place; it is restored
    afterwards unless ``restore_ubar=False`` (for callers that drop ū anyway).
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
            pkey = _probe_key(probing, model, direct)
            op = _op_adjoint(ws, probing=pkey, ic=ic, src_interp=srca is not None)
            if probing.method == "eq":
                Qt = np.zeros((nt + 1, probing.r), dtype=np.float32)  # nt + 1: sparse functions have nt + 1 samples
                Qt[:nt:probing.subsample] = probing.Q
                kwargs["Qt"] = _probe_data(ws, "Qt", pkey, Qt)
            else:
                W = probing.blocked_weights(nt, 1.0, adjoint=True)
                kwargs["Qblk"] = _probe_data(ws, "Qblk", pkey, W)
                kwargs["ring"] = _probe_data(ws, "ring", pkey)
            if direct:
                # the gradient on the probe region only (see probe_margin)
                kwargs["grad_r"] = _probe_data(ws, "grad_r", pkey)
                if probing.method == "blocked":
                    # ū → (x, p, y) in place for the adjoint's update (see _inner_probe_axis)
                    ubar_data = ubar.data.view(np.ndarray)
                    if not ubar_data.flags.c_contiguous:  # space order 0, no padding: never
                        raise RuntimeError("ū is not one contiguous buffer")
                    _swap_probe_axis(ubar_data, to_inner=True)
                    kwargs["ubar_t"] = _probe_view(ws, "ubar_t", pkey, ubar_data)
                else:
                    kwargs["ubar"] = ubar
            else:
                kwargs["vbar"] = vbar_f = _probe_data(ws, "vbar", pkey)
        else:
            op = _op_adjoint(ws, src_interp=srca is not None)
        op.apply(**kwargs)
        if probing is not None and probing.method == "blocked":
            # block 0 is still in the ring buffer (slot 0 = time 0 lies outside the loop: weight 0)
            Wt = W[0].copy()
            Wt[0] = 0.0
            fl = dict(ring=kwargs["ring"], Wtail=_probe_data(ws, "Wtail", pkey, Wt))
            fl.update(ubar_t=kwargs["ubar_t"], grad_r=kwargs["grad_r"]) if direct else fl.update(vbar=vbar_f)
            _op_flush_adjoint(ws, pkey).apply(**fl)
            if direct:
                release(kwargs["ubar_t"])
                if restore_ubar:  # the caller's ū, as it was (else its bytes stay transposed)
                    _swap_probe_axis(ubar_data, to_inner=False)
        if "grad_r" in kwargs:
            grad = np.zeros(ws.shape, dtype=ws.dtype)
            grad[region_slices(model)] = kwargs["grad_r"].data
        elif grad is not None:
            grad = np.array(grad.data)
        out = (None if srca is None else np.array(srca.data[:nt]), grad, vbar_f)
        release(rec, srca, kwargs.get("ring"), kwargs.get("grad_r"))
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
