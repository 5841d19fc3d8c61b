"""Wave-equation propagators: forward, adjoint, Born, adjoint Born (exact and probed).

The per-shot runners (:func:`run_forward`, :func:`run_adjoint`, :func:`run_born`) apply the
operators of :mod:`timeprobe.operators` to one shot on the computational axis; the public
functions (:func:`forward`, :func:`adjoint`, :func:`born`, :func:`born_adjoint`) loop over shots
and resample traces between the data axes and the computational axis
(:mod:`timeprobe.geometry`).

Linear algebra conventions (plain Euclidean inner products on both sides):

* ``F q``       forward modelling, ``Fᵀ d`` adjoint modelling (:func:`forward`, :func:`adjoint`);
* ``J δm``      Born modelling (:func:`born`), the derivative of ``F`` w.r.t. the physical
  ``m`` (``δm`` edge-padded into the absorbing layers like ``m``);
* ``Jᵀ δd = Eᵀ(−Σ_n u[n] · v̈[n])``  adjoint Born (:func:`born_adjoint`, full storage), where
  ``v`` is the adjoint field driven by ``Rᵀ δd`` (``v̈`` the centred second difference) and
  ``Eᵀ`` = :meth:`Model.pad_adjoint` folds the absorbing layers onto the edge points.

Exactness: the operators' ``−Σ_{n=1}^{nt−1} u[n]·v̈[n]`` is the exact derivative of the discrete
misfit w.r.t. the padded ``m`` (derivation in :mod:`timeprobe.operators`); ``Eᵀ`` maps it to
the physical ``m``.

Probing (:class:`timeprobe.probing.Probing`): the forward pass accumulates
``ū_p = Σ_s k·dt · Q[s, p] · u[k s]`` and the adjoint pass either
``v̄_p = Σ_s Q[s, p] · v̈[k s]`` or directly ``g −= Σ_s v̈[k s] · Σ_p Q[s, p] ū_p``
(``k`` the time-subsampling factor). With ``k = 1`` and ``QQᵀ = I`` this equals the
full-storage ``−dt Σ_n u[n]·v̈[n]`` up to float32 round-off.

MPI (``DEVITO_MPI=1 mpirun -n R``): the runners work on the grid split over the ranks (the
saved wavefield, ū and v̄ stay split) and return global traces and gradients on every rank
(:mod:`timeprobe.mpi`).
"""
from __future__ import annotations

import numpy as np
from devito import TimeFunction

from .compat import mapped_allocator, release, skip_argument_halo_exchange
from .geometry import (Data, Geometry, computational_axis, from_computational, from_computational_adjoint,
                       grid_coordinates, to_computational, to_computational_adjoint)
from .mpi import global_array, is_distributed
from .operators import adjoint_operator, forward_operator
from .probe_buffers import (FLUSH_TIME, buffer_view, new_buffer, probe_layout, region_slices, ring_slots,
                            swap_probe_axis)
from .utils import serial_blas
from .workspace import use_model

__all__ = ["forward", "adjoint", "born", "born_adjoint", "run_forward", "run_adjoint", "run_born",
           "check_inputs", "check_dm", "computational_axis", "adjoint_source_buffer", "adjoint_receivers"]


# --------------------------------------------------------------------------- validation
def check_inputs(model, q=None, rec_geometry=None, d=None):
    """Validate sources/receivers/data against the model and each other (``ValueError``/``TypeError``)."""
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


def check_dm(model, dm):
    """A model perturbation ``dm`` (s²/km², the model's shape, finite) as the model's dtype."""
    dm = np.asarray(dm)
    if dm.shape != model.shape:
        raise ValueError(f"dm has shape {dm.shape}, the model has shape {model.shape}")
    if not np.all(np.isfinite(dm)):
        raise ValueError("dm contains NaN or inf")
    return dm.astype(model.dtype)


# --------------------------------------------------------------------------- per-shot runs
def run_forward(model, src_coords, wavelet_c, rec_coords, dt, nt, save=False, probing=None, dm=None,
                illumination=False):
    """Propagate one shot on the computational axis.

    Returns ``(rec (nt, nrec), extra)`` where ``extra`` is the saved wavefield
    (``save=True``, a Devito ``TimeFunction``), the ``ū`` Function (``probing``)
    or None. ``dm``: Born modelling, ``rec`` samples ``δu``. ``illumination=True`` also
    accumulates the source illumination ``Λ = dt·Σ_n u[n]²`` and returns ``(rec, extra, Λ)``
    (padded grid).
    """
    if save and probing is not None:
        raise ValueError("run_forward: choose full storage (save=True) or probing, not both")
    with use_model(model) as ws:
        # Sparse functions get nt + 1 samples (last one zero) to match the nt + 1
        # snapshots of the full-storage field: Devito needs one time size per operator.
        src = ws.new_sparse("src", grid_coordinates(model, src_coords), wavelet_c, nt=nt + 1)
        # the traces live in a numpy buffer we own (see adjoint_source_buffer)
        traces = np.zeros((nt + 1, len(rec_coords)), dtype=ws.dtype)
        rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1, buffer=traces)
        kwargs = dict(src=src, rec=rec, dt=dt, time_m=1, time_M=nt - 1)
        extra = ring = layout = None
        if probing is not None:
            probing.check_axis(nt)
            layout = probe_layout(probing, model)
        if save:
            op = forward_operator(ws, save=nt + 1, born=dm is not None, illum=illumination)
            extra = kwargs["usave"] = TimeFunction(name="usave", grid=ws.grid, time_order=2,
                                                   space_order=model.space_order, save=nt + 1,
                                                   **mapped_allocator())
            if is_distributed(ws.grid):  # the operators exchange its halos per time step themselves
                skip_argument_halo_exchange(extra)
        else:
            ws.field("u").data[:] = 0
            op = forward_operator(ws, probing=layout, born=dm is not None, illum=illumination)
        if probing is not None:
            extra = kwargs["ubar"] = new_buffer(ws, "ubar", layout)
            scale = probing.subsample * dt
            if probing.method == "eq":
                kwargs["Qt"] = new_buffer(ws, "Qt", layout, probing.time_weights(nt, scale))
            else:
                kwargs["Qblk"] = new_buffer(ws, "Qblk", layout, probing.blocked_weights(nt, scale))
                if ring_slots(layout.block):
                    kwargs["ring"] = ring = new_buffer(ws, "ring", layout)
                # the last snapshot ends its block, finished or not (operators.probe_equations)
                kwargs[FLUSH_TIME] = probing.subsample * (probing.nsub - 1)
        if dm is not None:
            ws.field("du").data[:] = 0
            # edge padding, as m itself (Model.m_padded): J is then the derivative of
            # forward(model.with_m(m)) and its adjoint ends with Model.pad_adjoint
            ws.function("dm").data[:] = model.pad(check_dm(model, dm), mode="edge")
        if illumination:
            ws.function("illum").data[:] = 0
        op.apply(**kwargs)
        if is_distributed(ws.grid):  # each rank sampled its share of the receivers
            traces[:] = global_array(rec)
        release(rec, src, ring)
        if illumination:
            return traces[:nt], extra, np.array(global_array(ws.function("illum")))
        return traces[:nt], extra


def adjoint_source_buffer(residual_c, nt):
    """The (nt + 1)-row buffer behind ``residual_c`` if it is the first nt rows of one (the traces
    :func:`run_forward` returns, overwritten in place by an adjoint source), else None. Such a
    buffer is injected without a copy: one nt × nrec array less at the gradient's peak."""
    base = residual_c.base
    if (isinstance(base, np.ndarray) and base.dtype == residual_c.dtype and base.flags.c_contiguous
            and base.ndim == 2 and base.shape == (nt + 1, residual_c.shape[1])
            and residual_c.shape[0] == nt and residual_c.flags.c_contiguous
            and residual_c.__array_interface__["data"][0] == base.__array_interface__["data"][0]):
        base[nt] = 0.0
        return base
    return None


def adjoint_source(traces, geometry, dt, nt, dtype=np.float32):
    """``traces`` (a shot's records on ``geometry``'s axis) as an adjoint source on the
    computational axis (:func:`~timeprobe.geometry.from_computational_adjoint`), written into
    the first nt rows of an (nt + 1)-row buffer: :func:`run_adjoint` injects it without a copy
    (:func:`adjoint_source_buffer`)."""
    buf = np.zeros((nt + 1, np.shape(traces)[1]), dtype=dtype)
    return from_computational_adjoint(traces, geometry, dt, nt, out=buf[:nt])


def adjoint_receivers(ws, model, rec_coords, residual_c, nt):
    """The receivers of an adjoint run injecting ``residual_c`` (nt, nrec): on the buffer behind it
    where it is one (:func:`adjoint_source_buffer`, no copy), else on a copy of it."""
    buf = adjoint_source_buffer(residual_c, nt) if residual_c.dtype == ws.dtype else None
    if buf is not None:
        return ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1, buffer=buf)
    return ws.new_sparse("rec", grid_coordinates(model, rec_coords), residual_c, nt=nt + 1)


def run_adjoint(model, rec_coords, residual_c, dt, nt, src_coords=None, usave=None,
                probing=None, ubar=None, ic="as", restore_ubar=True):
    """Back-propagate receiver traces ``residual_c`` (nt, nrec) on the computational axis.

    Returns ``(srca (nt, nsrc) or None, grad or None, vbar or None)``; ``grad`` (padded grid) is
    ``−dt Σ_n usave[n]·v̈[n]`` with ``usave``, or the probed ``−Σ_p ū_p·v̄_p`` accumulated
    directly with ``probing`` and ``ic="as"``. With ``ic="isic"`` and ``usave``, ``grad`` is the
    exact ISIC image ``−dt Σ_n (usave Δv + ∇usave·∇v)``; with ``probing`` it returns ``v̄`` (of
    ``v``) instead. The blocked direct update works on ``ubar``'s buffer transposed in place; it
    is restored afterwards unless ``restore_ubar=False`` (for callers that drop ū anyway).
    """
    with use_model(model) as ws:
        rec = adjoint_receivers(ws, model, rec_coords, residual_c, nt)
        kwargs = dict(rec=rec, dt=dt, time_m=1, time_M=nt - 1)
        srca = None
        if src_coords is not None:
            srca = ws.new_sparse("src", grid_coordinates(model, src_coords), nt=nt + 1)
            kwargs["src"] = srca
        ws.field("u").data[:] = 0  # the adjoint field (operators.adjoint_operator)
        grad = vbar = layout = None
        if usave is not None:
            op = adjoint_operator(ws, gradient=("full", nt + 1), ic=ic, src_interp=srca is not None)
            grad = ws.function("grad")
            grad.data[:] = 0
            kwargs["usave"] = usave
        elif probing is not None:
            probing.check_axis(nt)
            direct = probing.direct and ic == "as"
            layout = probe_layout(probing, model, direct)
            op = adjoint_operator(ws, probing=layout, ic=ic, src_interp=srca is not None)
            if probing.method == "eq":
                kwargs["Qt"] = new_buffer(ws, "Qt", layout, probing.time_weights(nt, 1.0))
            else:
                W = probing.blocked_weights(nt, 1.0)
                W[0, 0] = 0.0  # time 0 lies outside the loop (n ≥ 1): v̈[0] is not part of the sum
                kwargs["Qblk"] = new_buffer(ws, "Qblk", layout, W)
                if ring_slots(layout.block, adjoint=True, direct=direct):
                    kwargs["ring_adj"] = new_buffer(ws, "ring_adj", layout)
                # block 0 ends at the loop's first step (its slot 0, time 0, is never reached)
                kwargs[FLUSH_TIME] = kwargs["time_m"]
            if direct:
                # the gradient on the probe region only (probe_buffers.region_margin)
                kwargs["grad_r"] = new_buffer(ws, "grad_r", layout)
                if probing.method == "blocked":
                    # ū → (x, p, y) in place for the adjoint's update (probe_buffers.inner_probe_axis)
                    ubar_data = ubar.data.view(np.ndarray)
                    if not ubar_data.flags.c_contiguous:  # space order 0, no padding: never
                        raise RuntimeError("ū is not one contiguous buffer")
                    swap_probe_axis(ubar_data, to_inner=True)
                    kwargs["ubar_t"] = buffer_view(ws, "ubar_t", layout, ubar_data)
                else:
                    kwargs["ubar"] = ubar
            else:
                kwargs["vbar"] = vbar = new_buffer(ws, "vbar", layout)
        else:
            op = adjoint_operator(ws, src_interp=srca is not None)
        op.apply(**kwargs)
        if "ubar_t" in kwargs:
            release(kwargs["ubar_t"])
            if restore_ubar:  # the caller's ū, as it was (else its bytes stay transposed)
                swap_probe_axis(ubar_data, to_inner=False)
        if "grad_r" in kwargs:
            grad = np.zeros(ws.shape, dtype=ws.dtype)
            grad[region_slices(model, probing.layers)] = global_array(kwargs["grad_r"])
        elif grad is not None:
            grad = np.array(global_array(grad))
        out = (None if srca is None else np.array(global_array(srca)[:nt]), grad, vbar)
        release(rec, srca, kwargs.get("ring_adj"), kwargs.get("grad_r"))
        return out


def run_born(model, src_coords, wavelet_c, rec_coords, dm, dt, nt):
    """Born data ``J δm`` of one shot on the computational axis."""
    rec, _ = run_forward(model, src_coords, wavelet_c, rec_coords, dt, nt, dm=dm)
    return rec


# --------------------------------------------------------------------------- public API
@serial_blas()
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
        wc = to_computational(q.arrays[i], q.geometry, dt, nt, dtype=model.dtype)
        rec, u = run_forward(model, q.geometry.coordinates[i], wc, rec_geometry.coordinates[i],
                             dt, nt, save=save)
        out.append(from_computational(rec, rec_geometry[i], dt, nt, dtype=model.dtype))
        fields.append(u)
    d = Data(rec_geometry, out, dtype=model.dtype)
    return (d, fields) if save else d


@serial_blas()
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
        rc = adjoint_source(d.arrays[i], d.geometry[i], dt, nt, dtype=model.dtype)
        srca, _, _ = run_adjoint(model, d.geometry.coordinates[i], rc, dt, nt,
                                 src_coords=src_geometry.coordinates[i])
        out.append(to_computational_adjoint(srca, src_geometry[i], dt, nt, dtype=model.dtype))
    return Data(src_geometry, out, dtype=model.dtype)


@serial_blas()
def born(model, q, dm, rec_geometry):
    """Born (linearised) modelling ``δd = J(m) δm`` with ``δm`` in s²/km², shape of the model.

    ``J`` is the derivative of ``forward(model.with_m(m), q, rec_geometry)`` w.r.t. the physical
    ``m``: ``δm`` is padded into the absorbing layers like ``m`` (edge values, :meth:`Model.pad`),
    so ``J δm = lim (F(m + hδm) − F(m))/h`` exactly (discrete scheme)."""
    check_inputs(model, q, rec_geometry)
    dm = check_dm(model, dm)
    dt, nt = computational_axis(model, q.geometry, rec_geometry)
    out = []
    for i in range(q.nshots):
        wc = to_computational(q.arrays[i], q.geometry, dt, nt, dtype=model.dtype)
        rec = run_born(model, q.geometry.coordinates[i], wc, rec_geometry.coordinates[i], dm, dt, nt)
        out.append(from_computational(rec, rec_geometry[i], dt, nt, dtype=model.dtype))
    return Data(rec_geometry, out, dtype=model.dtype)


@serial_blas()
def born_adjoint(model, q, d):
    """Adjoint Born ``Jᵀ δd = Eᵀ(−Σ_n u[n]·v̈[n])`` summed over shots (full wavefield storage).

    ``n = 1 … nt−1``; ``Eᵀ`` is :meth:`Model.pad_adjoint` (the transpose of the edge padding
    :func:`born` applies to δm). The exact reference every cheaper gradient is measured
    against. Returns an array of the model's shape and dtype.
    """
    check_inputs(model, q, d=d)
    dt, nt = computational_axis(model, q.geometry, d.geometry)
    g = np.zeros(model.shape, dtype=np.float64)
    for i in range(q.nshots):
        wc = to_computational(q.arrays[i], q.geometry, dt, nt, dtype=model.dtype)
        _, usave = run_forward(model, q.geometry.coordinates[i], wc, d.geometry.coordinates[i],
                               dt, nt, save=True)
        rc = adjoint_source(d.arrays[i], d.geometry[i], dt, nt, dtype=model.dtype)
        _, grad, _ = run_adjoint(model, d.geometry.coordinates[i], rc, dt, nt, usave=usave)
        release(usave)
        g += model.pad_adjoint(grad) / dt  # operator computes −dt·Σ u·v̈
    return g.astype(model.dtype)
