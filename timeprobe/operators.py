"""Devito operators of timeprobe: shared equation builders and every operator factory.

Physics (units in :mod:`timeprobe.model`):

* forward  ``m ü − Δu + η u̇ = q``, ``u = u̇ = 0`` at ``t = 0``;
* adjoint  ``m v̈ − Δv − η v̇ = Pᵀ r``, run backward from ``v = v̇ = 0`` at ``t = T``;
* Born     ``m δü − Δδu + η δu̇ = −δm ü``.

Discretisation: second order in time (leapfrog), ``space_order`` in space, sources injected as
``dt²/m · q`` into ``u(t + dt)`` and receivers sampled from ``u(t)`` by bilinear (trilinear)
interpolation — the conventions of Devito's ``examples.seismic.acoustic``. Time step ``n``
therefore computes ``u[n+1]``, samples ``rec[n] = P u[n]`` and injects ``src[n]``. The loops run
over ``n = 1 … nt−1`` in every operator (forward, adjoint, Born, gradient, probed), so that the
full-storage field ``u[0 … nt]`` fits ``nt + 1`` snapshots and all paths sum exactly the same
terms: the first source sample ``src[0]`` is not injected (``u[0] = u[1] = 0``), which the
adjoint mirrors (``srca[0] = 0``).

The gradient is the exact derivative of this discrete scheme. Devito's ``u.dt``
(time order 2) is the forward difference, so step ``n`` solves, pointwise, ::

    (m + η dt) u[n+1] − (2m + η dt + dt² Δ_h) u[n] + m u[n−1] = dt² Wᵀ src[n],

the injection ``u[n+1] += dt²/m · Wᵀ src[n]`` being this equation divided by
``m + η dt`` where ``η = 0`` (Devito evaluates ``m`` at the grid points it injects
into, all inside the physical domain, where the damping vanishes; so ``m`` enters the
injection only through that division and the source term carries no derivative).
With multipliers ``λ[n]`` (``n = 1 … nt−1``) the Lagrangian's stationarity in
``u[2 … nt]`` is the adjoint stencil below (``damp·v.dt.T``) run from ``λ[nt−1] =
λ[nt] = 0`` down to ``λ[1]``, ``λ = v/dt²`` for ``v`` driven by ``dt²/m·Pᵀ ∂f/∂rec``
injected into ``v[n−1]`` at step ``n``; and ``∂f/∂m_pad = −Σ_{n=1}^{nt−1} λ[n]·
(u[n+1] − 2u[n] + u[n−1]) = −Σ_n v[n]·ü[n]``. Summation by parts turns this into the
``−Σ_n u[n]·v̈[n]`` the operators accumulate with no remainder: the boundary terms
``u[nt−1]v[nt] − u[0]v[1] + u[1]v[0] − u[nt]v[nt−1]`` vanish. The only term the
padded-grid sum misses is the chain rule through ``m_pad = E m`` (the absorbing layers
copy the edge points): :meth:`timeprobe.Model.pad_adjoint` applies ``Eᵀ``.

Equation builders (each written once, used by every factory):

* :func:`wave_stencil` — the leapfrog update, forward or adjoint (transposed damping);
* :func:`propagation` — stencil + point-source injection + receiver interpolation;
* :func:`imaging_condition` — the per-time-step image expressions (``"as"``: ``u·v̈``,
  ``"isic"``: ``u·Δv + ∇u·∇v``);
* :func:`probe_equations` — accumulation of ``Qᵀ`` applied to a field (ring buffer or per step),
  completed inside the time loop (no flush after it);
* :func:`slot_equations` — every k-th field value into one of ``B`` slots (stored strategies);
* :func:`imaging_factors` — the imaging condition split into factors of each field
  (``Σ_c a_c(u)·b_c(v)``), which the subsurface-offset / time-lag gathers correlate at shifted points.

Factories (memoised on the :class:`~timeprobe.workspace.Workspace`, each configuration compiled
once): :func:`forward_operator`, :func:`adjoint_operator`, :func:`derivatives_operator`; the
chunked pair of the stored (Nyquist, compressed, disk) strategies :func:`slot_forward_operator`,
:func:`slot_adjoint_operator`; and for gathers :func:`gather_factors_operator` (probed: the imaging
factors of a block of probe fields) and :func:`gather_adjoint_operator` (exact: the correlation in
the adjoint's time loop).
"""
from __future__ import annotations

import builtins

import sympy
from devito import ConditionalDimension, DefaultDimension, Eq, Function, Inc, TimeFunction, solve

from .compat import floor_div
from .probe_buffers import (buffered_slots, flush_time, gather_dims, gather_placeholder, image_domain,
                            inner_probe_axis, placeholder, probe_dims, probe_region, read_slot)
from .workspace import build_operator

__all__ = ["wave_stencil", "propagation", "imaging_condition", "probe_equations", "IMAGING_EXPRESSIONS",
           "forward_operator", "adjoint_operator", "derivatives_operator", "snapshot_field", "slot_equations",
           "snapshot_slots", "slot_gradient", "slot_forward_operator", "slot_adjoint_operator",
           "imaging_factors", "gather_factors_operator", "gather_adjoint_operator"]

#: imaging conditions with a per-time-step expression (:func:`imaging_condition`)
IMAGING_EXPRESSIONS = ("as", "isic")


# =========================================================================== equation builders
def wave_stencil(field, m, damp, forward=True, source=0):
    """Leapfrog update of ``m f̈ − Δf ± η ḟ = source`` for ``f(t ± dt)``.

    The adjoint (``forward=False``) uses the transposed first time derivative so that the
    backward scheme is the discrete adjoint of the forward one.
    """
    if forward:
        pde = m * field.dt2 - field.laplace + damp * field.dt - source
        return Eq(field.forward, solve(pde, field.forward))
    pde = m * field.dt2 - field.laplace + damp * field.dt.T - source
    return Eq(field.backward, solve(pde, field.backward))


def propagation(ws, field, forward=True, inject="src", sample="rec", source=0, sample_expr=None):
    """Stencil, point injection and point sampling of one wavefield, one time step.

    Forward: ``field(t + dt)`` from the stencil, the sparse function ``inject`` (sources) added
    as ``dt²/m · q``, ``sample`` (receivers) interpolated from ``sample_expr`` (default the
    field). Adjoint (``forward=False``): the same backward in time; the receivers are injected
    and the sources sampled. ``inject``/``sample``: placeholder names, or None to skip.
    ``source``: a distributed source term of the PDE (Born: ``−δm ü``).
    """
    s = ws.dt_symbol
    eqs = [wave_stencil(field, ws.m, ws.damp, forward=forward, source=source)]
    if inject is not None:
        q = ws.sparse(inject)
        eqs += q.inject(field=field.forward if forward else field.backward, expr=q * s**2 / ws.m)
    if sample is not None:
        eqs += ws.sparse(sample).interpolate(expr=field if sample_expr is None else sample_expr)
    return eqs


def _grad_dot(a, b, dims):
    return builtins.sum(getattr(a, "d" + d.name) * getattr(b, "d" + d.name) for d in dims)


def imaging_condition(ic, u, v, dims):
    """The per-time-step image of forward field ``u`` and adjoint field ``v``.

    ``"as"``: ``u·v̈`` (the adjoint-state gradient is ``−dt Σ_n`` of it); ``"isic"``:
    ``u·Δv + ∇u·∇v`` (the inverse-scattering imaging condition: ``m u v̈`` replaced through the
    wave equation by ``u Δv``, plus the gradient term that cancels back-scattering). The
    derivatives are the propagators' ``space_order`` stencils.
    """
    if ic == "as":
        return u * v.dt2
    if ic == "isic":
        return u * v.laplace + _grad_dot(u, v, dims)
    raise ValueError(f"no per-time-step expression for imaging condition {ic!r}; "
                     f"use one of {IMAGING_EXPRESSIONS}")


def imaging_factors(ic, field, side, dims, probed=False):
    """The imaging condition ``ic`` split into factors of one field: ``Σ_c a_c(u)·b_c(v)`` equals
    :func:`imaging_condition` ``(ic, u, v)`` term by term.

    ``side="u"`` (forward field): ``"as"``: ``[u]``; ``"isic"``: ``[u, ∂_1 u, …, ∂_d u]``.
    ``side="v"`` (adjoint field): ``"as"``: ``[v̈]``; ``"isic"``: ``[Δv, ∂_1 v, …, ∂_d v]``.
    ``probed``: ``field`` is a probe field ``v̄``, which for ``"as"`` already holds ``Qᵀv̈``
    (the factor is then ``v̄`` itself). The derivatives are the propagators' stencils.
    """
    if ic not in IMAGING_EXPRESSIONS:
        raise ValueError(f"no per-time-step expression for imaging condition {ic!r}; "
                         f"use one of {IMAGING_EXPRESSIONS}")
    grads = [getattr(field, "d" + d.name) for d in dims]
    if side == "u":
        return [field] + (grads if ic == "isic" else [])
    if side != "v":
        raise ValueError(f"side must be 'u' or 'v', got {side!r}")
    if ic == "isic":
        return [field.laplace] + grads
    return [field if probed else field.dt2]


def probe_equations(ws, expr, layout, adjoint):
    """Equations accumulating ``Qᵀ`` applied to ``expr`` (a grid expression) on the probe region.

    ``layout`` a :class:`~timeprobe.probe_buffers.ProbeLayout`. ``"eq"``: one ``Eq`` per time
    step, ``acc[x, p] += Qt[t, p]·expr`` (or, adjoint and direct, ``g −= expr·Σ_p Qt[t, p] ū_p``).
    ``"blocked"``: the k-subsampled ``expr`` of a block of B snapshots (times
    ``c·kB + j·k``) goes to the ring buffer (but the one :func:`~timeprobe.probe_buffers.read_slot`
    names); at the time step of the block's last snapshot the run reaches, after the slot writes,
    ``acc[x, p] += Σ_j Qblk[c, j, p]·s_j`` with ``s_j`` the buffered snapshots or ``expr`` itself
    (adjoint direct: ``g −= ū_tᵀ·(Σ_j Qblk[c, j, p]·s_j)``), ``c = time / (k·B)``. One more flush
    runs at the time step :data:`~timeprobe.probe_buffers.FLUSH_TIME` given at run time (the
    forward's last snapshot, ending an unfinished block; the adjoint's first step, ending block
    0, whose snapshot at time 0 lies outside the loop and has weight 0).
    """
    time = ws.time_dim
    ph = lambda name: placeholder(ws, name, layout)  # noqa: E731
    region = probe_region(ws, layout.margin)
    x = region.dimensions
    expr = region.at(expr)
    if layout.method == "eq":
        p, _ = probe_dims(ws, layout.r)
        Qt = ph("Qt")
        if adjoint and layout.direct:
            return [Inc(ph("grad_r"), -expr * Qt[time, p] * ph("ubar"))]
        acc = ph("vbar" if adjoint else "ubar")
        return [Eq(acc, acc + Qt[time, p] * expr)]
    k, B = layout.subsample, layout.block
    p, _ = probe_dims(ws, layout.r, B)
    W = ph("Qblk")
    c = floor_div(time, k * B)
    direct = adjoint and layout.direct
    last = read_slot(B, adjoint, direct)
    snapshots = {} if last is None else {last: expr}
    writes = []
    for j, slot in buffered_slots(B, adjoint, direct):
        when = ConditionalDimension(name=f"snap{j}", parent=time,
                                    condition=sympy.Eq(sympy.Mod(time, k * B), j * k))
        ring = ph("ring_adj" if adjoint else "ring")[inner_probe_axis(x, slot)]
        writes.append(Eq(ring, expr, implicit_dims=(when,)))
        snapshots[j] = ring
    combo = builtins.sum(W[c, j, p] * snapshots[j] for j in range(B))
    at = (B - 1 if not adjoint else 0) * k  # the block's last snapshot the run reaches
    flush = ConditionalDimension(name="flush", parent=time, condition=sympy.Or(
        sympy.Eq(sympy.Mod(time, k * B), at), sympy.Eq(time, flush_time(ws))))
    if direct:
        # ū in the (x, p, y) layout: loops x, p, y with y unit-stride (probe_buffers)
        acc = Inc(ph("grad_r"), -combo * ph("ubar_t"), implicit_dims=(flush,))
    else:
        out = ph("vbar" if adjoint else "ubar")
        acc = Eq(out, out + combo, implicit_dims=(flush,))
    # the flush reads the slots written at its own time step (the unfinished last block)
    return writes + [acc]


def snapshot_field(ws, k, nsnap):
    """The placeholder of every k-th forward snapshot (``usub[s] = u[k·s]``, nsnap of them) and
    its time dimension (a ``ConditionalDimension`` of factor k)."""
    def make():
        tsub = ConditionalDimension(name="tsub", parent=ws.time_dim, factor=k)
        return TimeFunction(name="usub", grid=ws.grid, time_order=0, space_order=0, save=nsnap,
                            time_dim=tsub)
    return ws.cached(("snapshots", k, nsnap), make)


# =========================================================================== factories
def forward_operator(ws, save=None, snapshots=None, probing=None, born=False, illum=False):
    """Forward modelling ``rec = P u``, optionally keeping (some of) ``u``.

    ``save``: full storage, ``usave`` with ``save`` snapshots; ``snapshots``: ``(k, nsnap)``,
    every k-th snapshot in ``usub`` (:func:`snapshot_field`); ``probing``: a
    :class:`~timeprobe.probe_buffers.ProbeLayout`, ``ū += Qᵀu``; ``born``: the receivers sample
    the Born field ``δu`` driven by ``−δm ü`` instead; ``illum``: also ``illum += dt·u²``.
    """
    key = ("forward", save, snapshots, probing, born, illum)

    def make():
        u = ws.field("usave", save=save) if save else ws.field("u")
        eqs = propagation(ws, u, inject="src", sample=None if born else "rec")
        if born:
            du = ws.field("du")
            eqs += propagation(ws, du, inject=None, sample="rec", source=-ws.function("dm") * u.dt2)
        if illum:
            eqs += [Inc(ws.function("illum"), ws.dt_symbol * u * u)]
        if snapshots is not None:
            eqs += [Eq(snapshot_field(ws, *snapshots), u)]
        if probing is not None:
            eqs += probe_equations(ws, u, probing, adjoint=False)
        return build_operator(ws, eqs, "Forward")
    return ws.operator(key, make)


def adjoint_operator(ws, gradient=None, ic="as", probing=None, src_interp=False):
    """Adjoint modelling (receivers injected backward in time), optionally imaging.

    ``gradient`` — the forward wavefield the image correlates with, ``grad −= w·dt·I(u, v)``
    with ``I`` the :func:`imaging_condition` ``ic``:

    * ``("full", nsave)``: the full-storage field ``usave`` (``w = 1``);
    * ``("snapshots", k, nsnap)``: every k-th snapshot ``usub`` (``w = k``, at ``n ≡ 0 mod k``);
    * ``("buffer",)``: the 3-level forward buffer ``u`` recomputed alongside (checkpointing); the
      adjoint field is then ``v``, else it reuses ``u``'s buffers (the forward field is dead
      once the forward pass is done, so the gradient costs no extra 3·N).

    ``probing`` (a :class:`~timeprobe.probe_buffers.ProbeLayout`): accumulate ``Qᵀ v̈`` (``"as"``)
    or ``Qᵀ v`` (``"isic"``), or the gradient directly. ``src_interp``: also sample the adjoint
    field at the sources (``Fᵀ``).
    """
    key = ("adjoint", gradient, ic, probing, src_interp)

    def make():
        kind = None if gradient is None else gradient[0]
        v = ws.field("v" if kind == "buffer" else "u")
        eqs = propagation(ws, v, forward=False, inject="rec", sample="src" if src_interp else None)
        if gradient is not None:
            s, w = ws.dt_symbol, 1
            if kind == "full":
                u = ws.field("usave", save=gradient[1])
            elif kind == "snapshots":
                u, w = snapshot_field(ws, gradient[1], gradient[2]), gradient[1]
            elif kind == "buffer":
                u = ws.field("u")
            else:
                raise ValueError(f"unknown gradient source {gradient!r}")
            eqs += [Inc(ws.function("grad"), -w * s * imaging_condition(ic, u, v, ws.space_dims))]
        if probing is not None:
            eqs += probe_equations(ws, v.dt2 if ic == "as" else v, probing, adjoint=True)
        return build_operator(ws, eqs, "Adjoint")
    return ws.operator(key, make)


def derivatives_operator(ws):
    """``(Δf, ∂f/∂x_i …)`` of one field ``fin`` with the propagators' stencils.

    Returns ``(op, fin, [flap, fd_x, …])`` (the operator and its input/output functions)."""
    def make():
        f = Function(name="fin", grid=ws.grid, space_order=ws.space_order, dtype=ws.dtype)
        outs = [Function(name="flap", grid=ws.grid, space_order=0, dtype=ws.dtype)]
        outs += [Function(name="fd" + d.name, grid=ws.grid, space_order=0, dtype=ws.dtype)
                 for d in ws.space_dims]
        exprs = [f.laplace] + [getattr(f, "d" + d.name) for d in ws.space_dims]
        return f, outs, [Eq(o, e) for o, e in zip(outs, exprs)]
    f, outs, eqs = ws.cached(("derivatives",), make)
    return ws.operator(("derivatives",), lambda: build_operator(ws, eqs, "Derivatives")), f, outs


# =========================================================================== chunked stored runs
def snapshot_slots(ws, B, margin, name="ubuf"):
    """The placeholder ``ubuf[j, x_r]`` of ``B`` snapshot slots on the region that leaves out
    ``margin`` points of each absorbing layer (:func:`~timeprobe.probe_buffers.probe_region`;
    ``margin = nbl`` is the physical domain). Slot-major: each slot is one contiguous array.
    ``name``: ``"ubuf"`` (forward snapshots) or ``"vbuf"`` (recorded adjoint ``v̈``)."""
    def make():
        region = probe_region(ws, margin)
        slot = ws.cached(("dim", "slot", B), lambda: DefaultDimension(name="slot", default_value=B))
        return Function(name=name, dimensions=(slot,) + region.dimensions, shape=(B,) + region.shape,
                        space_order=0, dtype=ws.dtype)
    return ws.cached(("snapshot_slots", name, B, margin), make)


def slot_gradient(ws, margin):
    """The placeholder of the gradient on the region (``grad_s[x_r]``) of the chunked adjoint."""
    def make():
        region = probe_region(ws, margin)
        return Function(name="grad_s", dimensions=region.dimensions, shape=region.shape, space_order=0,
                        dtype=ws.dtype)
    return ws.cached(("slot_gradient", margin), make)


def _slot_conditions(ws, k, B):
    """``c_j``: time steps ``n`` with ``n mod k·B = j·k`` (slot ``j`` of the chunk holding ``n``)."""
    return ws.cached(("slot_conditions", k, B), lambda: [
        ConditionalDimension(name=f"sslot{j}", parent=ws.time_dim,
                             condition=sympy.Eq(sympy.Mod(ws.time_dim, k * B), j * k)) for j in range(B)])


def slot_equations(ws, expr, k, B, margin, weight=None, name="ubuf"):
    """Every k-th value of ``expr`` (a grid expression) into the ``B`` slots, or back out of them.

    ``weight=None`` (forward): ``ubuf[j] = expr`` at time steps ``n ≡ j·k (mod k·B)``, so that once
    the chunk of times ``[c·kB, (c+1)·kB)`` has run, slot ``j`` holds ``expr`` at ``n = c·kB + j·k``,
    i.e. snapshot ``s = c·B + j``. Otherwise (adjoint): ``grad_s += weight·ubuf[j]·expr`` at those
    time steps — the caller fills the slots with the chunk's snapshots before running it.
    ``name``: the slot buffer (:func:`snapshot_slots`).
    """
    region = probe_region(ws, margin)
    x = region.dimensions
    buf = snapshot_slots(ws, B, margin, name)
    expr = region.at(expr)
    conds = _slot_conditions(ws, k, B)
    if weight is None:
        return [Eq(buf[(j,) + x], expr, implicit_dims=(c,)) for j, c in enumerate(conds)]
    grad = slot_gradient(ws, margin)
    return [Inc(grad, weight * buf[(j,) + x] * expr, implicit_dims=(c,)) for j, c in enumerate(conds)]


def slot_forward_operator(ws, k, B, margin, illum=False, sample=True):
    """Forward modelling that also writes every k-th ``u`` into ``B`` slots (:func:`slot_equations`).

    Run in chunks ``time_m = c·kB … time_M = (c+1)·kB − 1``: the modulo-buffered ``u`` continues
    from one call to the next, and after each call the slots hold that chunk's snapshots.
    ``illum``: also ``illum += dt·u²``; ``sample=False``: no receivers (a re-run of a segment
    whose traces are already known).
    """
    def make():
        u = ws.field("u")
        eqs = propagation(ws, u, inject="src", sample="rec" if sample else None)
        if illum:
            eqs += [Inc(ws.function("illum"), ws.dt_symbol * u * u)]
        eqs += slot_equations(ws, u, k, B, margin)
        return build_operator(ws, eqs, "ForwardSlots")
    return ws.operator(("forward_slots", k, B, margin, illum, sample), make)


def slot_adjoint_operator(ws, k, B, margin, record=False):
    """Adjoint modelling with ``grad_s −= k·dt·ubuf[j]·v̈`` at ``n ≡ j·k (mod k·B)`` — the
    ``("snapshots", k, nsnap)`` gradient of :func:`adjoint_operator`, chunk by chunk, on the region.

    Run backwards in the chunks of :func:`slot_forward_operator`, the slots refilled with each
    chunk's snapshots before its call. Cross-correlation imaging condition (``"as"``) only: the
    stored snapshots live on the region, without the halo the ISIC derivatives would need.
    ``record``: also write ``v̈`` at those time steps into the slots ``vbuf`` (studies of the
    gradient's time structure, e.g. ``scripts/probe_designs.py``).
    """
    def make():
        v = ws.field("u")  # the forward field is dead: its buffers carry the adjoint field
        eqs = propagation(ws, v, forward=False, inject="rec", sample=None)
        # the "as" condition correlates u with v̈: imaging_condition("as", 1, v) is v̈ itself
        vdd = imaging_condition("as", 1, v, ws.space_dims)
        eqs += slot_equations(ws, vdd, k, B, margin, weight=-k * ws.dt_symbol)
        if record:
            eqs += slot_equations(ws, vdd, k, B, margin, name="vbuf")
        return build_operator(ws, eqs, "AdjointSlots")
    return ws.operator(("adjoint_slots", k, B, margin, record), make)


# =========================================================================== gathers
def _shifted(dims, axis, offset):
    """Indices of the image points ``dims`` moved by ``offset`` points along ``axis``."""
    out = list(dims)
    out[axis] = out[axis] + offset
    return out


def _factor_equations(ws, glayout, out, lead, factors, subs=None, implicit_dims=()):
    """``out[lead…, c, image point + pad] = factor_c`` (exact: written over the image's write
    dimensions into the pad-extended buffers) or ``out[image point, c, probe]`` (probed: a block of
    probes innermost, no extension)."""
    dom = image_domain(ws, glayout.nbl)
    if glayout.block:  # (*image, comp, block)
        blk = gather_dims(ws, glayout)["gin"][0][-1]
        return [Eq(out[tuple(dom.dimensions) + (c, blk)], dom.at(f, subs)) for c, f in enumerate(factors)]
    index = tuple(_shifted(dom.write_dimensions, glayout.axis, glayout.pad))
    return [Eq(out[tuple(lead) + (c,) + index], dom.at(f, subs, write=True), implicit_dims=implicit_dims)
            for c, f in enumerate(factors)]


def _correlation_terms(glayout, A, B, s, lead, space):
    """``Σ_c A[lead, c, x − s]·B[c, x + s]`` at the image points ``space`` (``x ± s`` along the
    offset axis of the pad-extended factor buffers)."""
    ia = _shifted(space, glayout.axis, glayout.pad - s)
    ib = _shifted(space, glayout.axis, glayout.pad + s)
    return builtins.sum(A[tuple(lead) + (c,) + tuple(ia)] * B[(c,) + tuple(ib)] for c in range(glayout.ncomp))


def gather_factors_operator(ws, glayout, ic, side):
    """Probed gathers: the imaging factors (:func:`imaging_factors`, ``probed=True``) of a block
    of probe fields ``gin`` (on the padded grid, zero outside the probe region), written at the
    image points of ``gfu`` (``side="u"``) or ``gfv`` (``side="v"``), ``(*image, comp, block)``."""
    def make():
        gin = gather_placeholder(ws, "gin", glayout)
        out = gather_placeholder(ws, "gf" + side, glayout)
        eqs = _factor_equations(ws, glayout, out, (), imaging_factors(ic, gin, side, ws.space_dims, probed=True))
        return build_operator(ws, eqs, "GatherFactors")
    return ws.operator(("gather_factors", glayout, ic, side), make)


def gather_adjoint_operator(ws, glayout, ic, gradient, lag_steps=(0,)):
    """Adjoint modelling with exact subsurface-offset / time-lag gathers accumulated in the loop.

    At every time step ``n`` of the adjoint run, for every lag ``L_l`` (time steps) and offset
    ``h_j = s_j·Δ``:

        ``gath[l, j, x] −= Σ_c a_c(u[n − L_l])(x − s_j)·b_c(v[n])(x + s_j)``

    with the factors of :func:`imaging_factors` (``"as"``: ``u·v̈``; ``"isic"``: ``u Δv + ∇u·∇v``)
    on the physical domain. ``gradient``: the forward field, ``("full", nsave)`` the stored
    ``usave`` or ``("buffer",)`` the 3-level ``u`` recomputed alongside (checkpointing; the
    adjoint field is then ``v``, and only ``lag_steps=(0,)``). A lag reads ``u[n − L]`` only
    while ``0 ≤ n − L ≤ time_M``; outside, its factors keep the value they had, which is zero
    (``u[0] = u[1] = 0``, and the buffers start at zero).
    """
    key = ("gather_adjoint", glayout, ic, gradient, tuple(lag_steps))

    def make():
        kind = gradient[0]
        if kind not in ("full", "buffer"):
            raise ValueError(f"unknown gradient source {gradient!r}")
        if kind == "buffer" and tuple(lag_steps) != (0,):
            raise ValueError("time lags need the stored forward field (gradient=('full', nsave))")
        v = ws.field("v" if kind == "buffer" else "u")
        u = ws.field("usave", save=gradient[1]) if kind == "full" else ws.field("u")
        eqs = propagation(ws, v, forward=False, inject="rec", sample=None)
        A, B, G = (gather_placeholder(ws, n, glayout) for n in ("gfu", "gfv", "gath"))
        time = ws.time_dim
        for lag, L in enumerate(lag_steps):
            guard = ()
            if L:
                guard = (ConditionalDimension(name=f"lagc{lag}", parent=time, condition=sympy.And(
                    sympy.Ge(time - L, 0), sympy.Le(time - L, time.symbolic_max))),)
            # u[n − L], its index clamped into the stored range: the guard skips those steps, but
            # Devito checks every access's bounds against the whole loop before it runs
            shifted = None
            if L:
                shifted = {time: sympy.Max(time - L, 0) if L > 0 else sympy.Min(time - L, time.symbolic_max)}
            eqs += _factor_equations(ws, glayout, A, (lag,), imaging_factors(ic, u, "u", ws.space_dims),
                                     subs=shifted, implicit_dims=guard)
        eqs += _factor_equations(ws, glayout, B, (), imaging_factors(ic, v, "v", ws.space_dims))
        space = image_domain(ws, glayout.nbl).dimensions
        for lag in range(len(lag_steps)):
            # implicit time: the factors carry no time index, and the correlation must run every step
            eqs += [Inc(G[(lag, j) + tuple(space)], -_correlation_terms(glayout, A, B, s, (lag,), space),
                        implicit_dims=(time,)) for j, s in enumerate(glayout.shifts)]
        return build_operator(ws, eqs, "GatherAdjoint")
    return ws.operator(key, make)
