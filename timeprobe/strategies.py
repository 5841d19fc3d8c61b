"""Gradient strategies behind one switch — the seed's memory/compute table, runnable.

Every strategy returns the FWI misfit and gradient of :func:`timeprobe.objectives.fwi_objective`::

    f = ½ Σ_shots dt_d ‖R P u − d‖²,        g(x) = −dt Σ_n u[n, x] · v̈[n, x]

(``v`` the adjoint field driven by ``(dt_d/dt)·Rᵀ r``; ``n = 1 … nt−1``, the loop
range of every timeprobe operator), mapped to the physical grid by ``Model.pad_adjoint``
(the absorbing layers fold onto the edge points they copy). They differ in how ``u`` is made available
to the adjoint pass:

=============  =====================================================  ===================  ==================
strategy       what is kept of ``u``                                  extra memory         extra compute
=============  =====================================================  ===================  ==================
``full``       every snapshot (``fwi_objective(ps=None)``)            ``nt·N``             none
``subsample``  every k-th snapshot (Devito ``ConditionalDimension``;  ``(nt−1)/k·N``        none
               ``g ≈ −k·dt Σ_{n ≡ 0 mod k} u[n]·v̈[n]``)
``dft``        on-the-fly DFT at ``nf`` frequencies = probing with    ``2·nf·N`` (+ ring)  the accumulation
               ``mode="dft"``: ``2·nf`` real columns (cos/sin pairs)
``nyquist``    every k-th snapshot (padded grid), k at the source's   ``nsnap·N·b/8``      encoding (NumPy)
               Poisson bound, stored in ``bits`` = 32, 16             (+ tile scales,
               or 8 (int tiles) in RAM or a temporary file            chunk slots)
               (``fwi_objective(storage=...)``, :mod:`timeprobe.storage`)
``checkpoint`` ``c`` checkpoints of 2 time levels of ``u`` (pyrevolve  ``2·c·N_halo``       recomputation
               optimal schedule + ``devito.checkpointing``); exact    (+ ``v``: 3·N_halo)  (≈ 1–2 extra fwd)
``probe``      ``ū = dt·Qᵀu``, r columns (``fwi_objective(ps=r)``)    ``r·N`` (+ ring)      the accumulation
``auto``       the most accurate of full / nyquist / probe that fits  ``≤ budget_mb``      —
               ``budget_mb`` (``fwi_objective(budget_mb=...)``,
               :mod:`timeprobe.budget`)
=============  =====================================================  ===================  ==================

``N``: the padded grid (the gradient's probe fields and stored snapshots cover the absorbing
layers, whose ``m`` copies the edge points: :meth:`timeprobe.Model.pad_adjoint`; with
``sum_padding=False`` the probe fields cover the physical domain plus ``space_order/2`` points,
:func:`timeprobe.probe_buffers.probe_margin`, and stored snapshots the physical domain ``N_p``);
``N_halo``: the padded grid with the stencil halo. ``full`` and ``checkpoint`` are exact
(identical terms, round-off only); ``subsample`` with ``k = 1`` is exact too; ``nyquist`` with
``bits=32`` equals ``subsample`` at the same k.
"""
from __future__ import annotations

import numbers

import numpy as np
from devito import TimeFunction

from .compat import mapped_allocator, release
from .geometry import (computational_axis, from_computational, from_computational_adjoint, grid_coordinates,
                       to_computational)
from .mpi import global_array
from .objectives import fwi_objective, to_physical
from .operators import adjoint_operator, forward_operator, snapshot_field
from .propagators import check_inputs
from .storage import StorageOptions
from .utils import serial_blas
from .workspace import use_model

__all__ = ["gradient", "STRATEGIES"]

STRATEGIES = ("full", "subsample", "nyquist", "dft", "checkpoint", "probe", "auto")


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- per shot
def _shot_subsample(model, src_coords, wc, rec_coords, res_fn, dt, nt, k):
    # Devito needs one consistent time size across the operator's functions: the
    # sparse traces get nsnap·k ≥ nt + 1 samples (zero-padded), usub nsnap snapshots.
    nsnap = -(-(nt + 1) // k)
    npad = nsnap * k
    with use_model(model) as ws:
        fop = forward_operator(ws, snapshots=(k, nsnap))
        usub_ph = snapshot_field(ws, k, nsnap)
        usub = TimeFunction(name="usub", grid=ws.grid, time_order=0, space_order=0, save=nsnap,
                            time_dim=usub_ph.time_dim,  # this shot's snapshots, like the placeholder
                            **mapped_allocator())
        src = ws.new_sparse("src", grid_coordinates(model, src_coords), wc, nt=npad)
        rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=npad)
        ws.field("u").data[:] = 0
        fop.apply(src=src, rec=rec, usub=usub, dt=dt, time_m=1, time_M=nt - 1)
        f, adj = res_fn(np.array(global_array(rec)[:nt]))
        aop = adjoint_operator(ws, gradient=("snapshots", k, nsnap))
        reca = ws.new_sparse("rec", grid_coordinates(model, rec_coords), adj, nt=npad)
        ws.field("u").data[:] = 0
        grad = ws.function("grad")
        grad.data[:] = 0
        aop.apply(rec=reca, usub=usub, grad=grad, dt=dt, time_m=1, time_M=nt - 1)
        release(usub, src, rec, reca)
        return f, np.array(global_array(grad))


def _shot_checkpoint(model, src_coords, wc, rec_coords, res_fn, dt, nt, n_checkpoints):
    from devito.checkpointing import CheckpointOperator, DevitoCheckpoint
    from pyrevolve import Revolver
    with use_model(model) as ws:
        fop = forward_operator(ws)
        gop = adjoint_operator(ws, gradient=("buffer",))
        u, v, grad = ws.field("u"), ws.field("v"), ws.function("grad")
        # first pass: plain forward for the residual (the adjoint source must be known
        # before the reverse sweep; pyrevolve's forward sweep recomputes u anyway).
        src = ws.new_sparse("src", grid_coordinates(model, src_coords), wc, nt=nt + 1)
        rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1)
        u.data[:] = 0
        fop.apply(src=src, rec=rec, dt=dt, time_m=1, time_M=nt - 1)
        f, adj = res_fn(np.array(global_array(rec)[:nt]))
        reca = ws.new_sparse("rec", grid_coordinates(model, rec_coords), adj, nt=nt + 1)
        rec2 = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1)
        u.data[:] = 0
        v.data[:] = 0
        grad.data[:] = 0
        cp = DevitoCheckpoint([u])
        wrap_fw = CheckpointOperator(fop, src=src, rec=rec2, u=u, dt=dt, time_m=1, time_M=nt - 1)
        wrap_rev = CheckpointOperator(gop, u=u, v=v, rec=reca, grad=grad, dt=dt, time_m=1, time_M=nt - 1)
        wrp = Revolver(cp, wrap_fw, wrap_rev, n_checkpoints, nt - 1)
        wrp.apply_forward()
        wrp.apply_reverse()
        release(src, rec, reca, rec2)  # the checkpoints themselves are freed with wrp
        return f, np.array(global_array(grad))


def _own_loop(model, q, d, shot_fn, sum_padding=True):
    f = 0.0
    g = np.zeros(model.shape_padded, dtype=np.float64)
    for i in range(q.nshots):
        qi, di = q[i], d[i]
        dt, nt = computational_axis(model, qi.geometry, di.geometry)
        wc = to_computational(qi.arrays[0], qi.geometry, dt, nt, dtype=model.dtype)

        def res_fn(rec_c, di=di, dt=dt, nt=nt):
            res = from_computational(rec_c, di.geometry[0], dt, nt, dtype=model.dtype) - di.arrays[0]
            fi = 0.5 * di.dt * float(np.sum(res.astype(np.float64) ** 2))
            return fi, (di.dt / dt) * from_computational_adjoint(res, di.geometry[0], dt, nt,
                                                                   dtype=model.dtype)

        fi, gi = shot_fn(model, qi.geometry.coordinates[0], wc, di.geometry.coordinates[0], res_fn, dt, nt)
        f += fi
        g += gi
    return f, to_physical(model, g, sum_padding)


# --------------------------------------------------------------------------- switch
@serial_blas()
def gradient(model, q, d, strategy="probe", **opts):
    """FWI misfit and gradient ``(f, g)`` by one of :data:`STRATEGIES`.

    Options per strategy:

    * ``"full"``: none.
    * ``"subsample"``: ``k`` (int ≥ 1, default 1) — snapshots ``u[k·s]`` kept, weight ``k·dt``.
    * ``"dft"``: ``nf`` (frequencies; the probe matrix has ``2·nf`` real cos/sin
      columns), ``seed``, ``subsample`` ("auto" or k), ``method``, ``block`` —
      forwarded to ``fwi_objective(ps=2·nf, mode="dft")``.
    * ``"checkpoint"``: ``n_checkpoints`` (default ``None``: pyrevolve's choice for the
      available memory; an int fixes the number of 3-level checkpoints).
    * ``"nyquist"``: ``bits`` (32, 16 or 8; default 32), ``storage`` ("ram" or "disk"),
      ``k`` ("auto": the Poisson bound, or an int), ``chunk``, ``tile``, ``directory`` (disk),
      ``return_info`` — ``fwi_objective(storage=StorageOptions(...))``.
    * ``"probe"``: ``ps`` (number of probes, default 32), ``mode`` ("QR"), ``seed``,
      ``subsample``, ``method``, ``block``, ``probe_kwargs``, ``return_info`` — forwarded to
      ``fwi_objective(ps=ps, ...)``.
    * ``"auto"``: ``budget_mb`` (required), ``allow_disk``, ``seed``, ``return_info`` —
      ``fwi_objective(budget_mb=...)``.

    Every strategy also takes ``sum_padding`` (default True, see :func:`fwi_objective`).
    With ``return_info=True`` the result is ``(f, g, info)`` (:func:`timeprobe.fwi_objective`).
    Unknown strategies or options raise ``ValueError``/``TypeError``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown gradient strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    allowed = {"full": set(), "subsample": {"k"},
               "dft": {"nf", "seed", "subsample", "method", "block"},
               "checkpoint": {"n_checkpoints"},
               "nyquist": {"bits", "storage", "k", "chunk", "tile", "directory", "return_info"},
               "probe": {"ps", "mode", "seed", "subsample", "method", "block", "probe_kwargs", "return_info"},
               "auto": {"budget_mb", "allow_disk", "seed", "return_info"}}[strategy]
    allowed = allowed | {"sum_padding"}
    bad = set(opts) - allowed
    if bad:
        raise TypeError(f"strategy {strategy!r} takes options {sorted(allowed)}, got unexpected {sorted(bad)}")
    check_inputs(model, q, d=d)
    opts = dict(opts)
    sum_padding = opts.pop("sum_padding", True)
    if strategy == "full":
        return fwi_objective(model, q, d, ps=None, sum_padding=sum_padding)
    if strategy == "probe":
        o = dict(opts)
        ps = _check_int("ps", o.pop("ps", 32))
        return fwi_objective(model, q, d, ps=ps, sum_padding=sum_padding, **o)
    if strategy == "nyquist":
        o = dict(opts)
        info = o.pop("return_info", False)
        storage = StorageOptions(bits=o.pop("bits", 32), where=o.pop("storage", "ram"), subsample=o.pop("k", "auto"),
                                 **o)
        return fwi_objective(model, q, d, storage=storage, return_info=info, sum_padding=sum_padding)
    if strategy == "auto":
        if "budget_mb" not in opts:
            raise TypeError("strategy 'auto' needs budget_mb (the working-memory budget, MiB)")
        return fwi_objective(model, q, d, sum_padding=sum_padding, **opts)
    if strategy == "dft":
        o = dict(opts)
        nf = _check_int("nf", o.pop("nf", 16))
        return fwi_objective(model, q, d, ps=2 * nf, mode="dft", sum_padding=sum_padding, **o)
    if strategy == "subsample":
        k = _check_int("k", opts.get("k", 1))
        return _own_loop(model, q, d, lambda *a: _shot_subsample(*a, k), sum_padding)
    ncp = opts.get("n_checkpoints")
    if ncp is not None:
        ncp = _check_int("n_checkpoints", ncp)
    return _own_loop(model, q, d, lambda *a: _shot_checkpoint(*a, ncp), sum_padding)
