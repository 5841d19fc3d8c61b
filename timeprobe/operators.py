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

Equation builders (each written once, used by every factory):

* :func:`wave_stencil` — the leapfrog update, forward or adjoint (transposed damping);
* :func:`propagation` — stencil + point-source injection + receiver interpolation;
* :func:`imaging_condition` — the per-time-step image expressions (``"as"``: ``u·v̈``,
  ``"isic"``: ``u·Δv + ∇u·∇v``);
* :func:`probe_equations` — accumulation of ``Qᵀ`` applied to a field (ring buffer or per step);
* :func:`slot_equations` — every k-th field value into one of ``B`` slots (stored strategies).

Factories (memoised on the :class:`~timeprobe.workspace.Workspace`, each configuration compiled
once): :func:`forward_operator`, :func:`adjoint_operator`, :func:`flush_operator`,
:func:`flush_adjoint_operator`, :func:`derivatives_operator`, and the chunked pair of the stored
(Nyquist, compressed, disk) strategies :func:`slot_forward_operator`,
:func:`slot_adjoint_operator`.
"""
from __future__ import annotations

import builtins

import sympy
from devito import ConditionalDimension, DefaultDimension, Eq, Function, Inc, TimeFunction, solve

from .probe_buffers import block_dim, inner_probe_axis, placeholder, probe_dims, probe_region
from .workspace import build_operator

__all__ = ["wave_stencil", "propagation", "imaging_condition", "probe_equations", "IMAGING_EXPRESSIONS",
           "forward_operator", "adjoint_operator", "flush_operator", "flush_adjoint_operator",
           "derivatives_operator", "snapshot_field", "slot_equations", "snapshot_slots", "slot_gradient",
           "slot_forward_operator", "slot_adjoint_operator"]

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


def probe_equations(ws, expr, layout, adjoint):
    """Equations accumulating ``Qᵀ`` applied to ``expr`` (a grid expression) on the probe region.

    ``layout`` a :class:`~timeprobe.probe_buffers.ProbeLayout`. ``"eq"``: one ``Eq`` per time
    step, ``acc[x, p] += Qt[t, p]·expr`` (or, adjoint and direct, ``g −= expr·Σ_p Qt[t, p] ū_p``).
    ``"blocked"``: every k-th ``expr`` is written to slot ``b`` of the ring buffer; once per block
    ``acc[x, p] += Σ_b Qblk[c, b, p]·ring_b`` (adjoint direct: ``g −= ū_tᵀ·(Σ_b Qblk·ring_b)``).
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
    p, b = probe_dims(ws, layout.r, B)
    tblk = block_dim(ws, k, B)
    buf = ph("ring")
    writes = []
    for j in range(B):
        cj = ConditionalDimension(name=f"slot{j}", parent=time,
                                  condition=sympy.Eq(sympy.Mod(time, k * B), j * k))
        writes.append(Eq(buf[inner_probe_axis(x, j)], expr, implicit_dims=(cj,)))
    combo = _block_combination(ph("Qblk"), buf, x, p, B, tblk)
    if adjoint and layout.direct:
        # ū in the (x, p, y) layout: loops x, p, y with y unit-stride (probe_buffers)
        acc = [Inc(ph("grad_r"), -combo * ph("ubar_t"), implicit_dims=(tblk,))]
    else:
        out = ph("vbar" if adjoint else "ubar")
        acc = [Eq(out, out + combo, implicit_dims=(tblk,))]
    # forward: flush the finished block before slot 0 is overwritten;
    # adjoint (backward in time): slot 0 is the last one written in a block.
    return (acc + writes) if not adjoint else (writes + acc)


def _block_combination(W, buf, x, p, B, tblk=None):
    """``Σ_b W[(c,) b, p]·ring_b``: one block of probe weights applied to the ring buffer."""
    if tblk is None:
        return builtins.sum(W[j, p] * buf[inner_probe_axis(x, j)] for j in range(B))
    return builtins.sum(W[tblk, j, p] * buf[inner_probe_axis(x, j)] for j in range(B))


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


def flush_operator(ws, layout):
    """``ū += Σ_b Wtail[b, p]·ring[b]`` — the forward's last, unfinished block."""
    def make():
        p, _ = probe_dims(ws, layout.r, layout.block)
        x = probe_region(ws, layout.margin).dimensions
        ring, out, Wt = (placeholder(ws, name, layout) for name in ("ring", "ubar", "Wtail"))
        return build_operator(ws, [Eq(out, out + _block_combination(Wt, ring, x, p, layout.block))],
                              "Flush")
    return ws.operator(("flush", layout.r, layout.subsample, layout.block, layout.margin), make)


def flush_adjoint_operator(ws, layout):
    """The adjoint's first block (times 0 … kB−1): its in-loop flush would fire at time 0,
    which the loop (``n ≥ 1``) never reaches."""
    def make():
        ph = lambda name: placeholder(ws, name, layout)  # noqa: E731
        p, _ = probe_dims(ws, layout.r, layout.block)
        x = probe_region(ws, layout.margin).dimensions
        combo = _block_combination(ph("Wtail"), ph("ring"), x, p, layout.block)
        if layout.direct:
            return build_operator(ws, [Inc(ph("grad_r"), -combo * ph("ubar_t"))], "FlushAdjoint")
        out = ph("vbar")
        return build_operator(ws, [Eq(out, out + combo)], "FlushAdjoint")
    return ws.operator(("flush_adjoint",) + tuple(layout[1:]), make)


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


def slot_forward_operator(ws, k, B, margin, illum=False):
    """Forward modelling that also writes every k-th ``u`` into ``B`` slots (:func:`slot_equations`).

    Run in chunks ``time_m = c·kB … time_M = (c+1)·kB − 1``: the modulo-buffered ``u`` continues
    from one call to the next, and after each call the slots hold that chunk's snapshots.
    ``illum``: also ``illum += dt·u²``.
    """
    def make():
        u = ws.field("u")
        eqs = propagation(ws, u, inject="src", sample="rec")
        if illum:
            eqs += [Inc(ws.function("illum"), ws.dt_symbol * u * u)]
        eqs += slot_equations(ws, u, k, B, margin)
        return build_operator(ws, eqs, "ForwardSlots")
    return ws.operator(("forward_slots", k, B, margin, illum), make)


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
