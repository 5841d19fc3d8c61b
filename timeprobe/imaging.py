"""Imaging on compressed wavefields: RTM, LS-RTM, subsurface-offset and time-lag gathers.

Every imaging condition here is a *space-only* operation applied, time step by
time step, to a product of the forward field ``u`` and the adjoint field ``v``.
Space operators commute with the time projection ``Qᵀ`` (METHOD.md), so each
condition applies unchanged to the probed fields

    ū_p(x) = k·dt Σ_s Q[s, p] u(k s, x)     (accumulated in the forward run)
    v̄_p(x) =      Σ_s Q[s, p] w(k s, x)     (adjoint run; w = v̈ or v)

and no nt×N array is ever formed. Images use :func:`timeprobe.jacobian_adjoint`'s
scaling (``Jᵀδd = −Σ_n u[n]·v̈[n]``, i.e. the operators' ``−dt Σ_n …`` divided by dt),
and the adjoint field is driven by ``Rᵀ d`` (``R`` the computational→data resampling).

Imaging conditions (``ic=``):

``"as"``      zero-lag cross-correlation, the adjoint-state gradient
              ``I = −Σ_n u[n]·v̈[n]``  ≈ ``−(1/dt) Σ_p ū_p·v̄_p`` (v̄ of v̈);
``"isic"``    inverse-scattering imaging condition
              ``I = −Σ_n (u[n] Δv[n] + ∇u[n]·∇v[n])`` ≈ ``−(1/dt) Σ_p (ū_p Δv̄_p + ∇ū_p·∇v̄_p)``
              (v̄ of v). It replaces ``m u v̈`` through the wave equation by ``u Δv``
              and adds the gradient term that cancels the low-wavenumber
              back-scattering (diving/turning-wave) energy.
              The derivatives are Devito's ``space_order`` centred stencils —
              the same ones the exact operator applies per time step.
``"kspace"``  the ``"as"`` image high-pass filtered in the wavenumber domain,
              ``I_k = F⁻¹[(|k|/k_N)² F[I_as]]`` (``k_N = π/h_min`` the Nyquist
              wavenumber; zero-padded FFT so no wrap-around). It equals
              ``−Δ I_as / k_N²`` (a Laplacian filter, the classic suppression of
              low-wavenumber RTM artefacts) and, being linear and space-only, is
              identical whether applied to the exact or the probed image.

Extended images (:func:`gathers`). Write an imaging condition as a sum of products of
*factors* of each field, ``Σ_c a_c(u)·b_c(v)`` (``"as"``: ``u·v̈``; ``"isic"``:
``u·Δv + Σ_i ∂_i u·∂_i v``; :func:`timeprobe.operators.imaging_factors`). With a subsurface
offset ``h`` along one axis (``e_h``) and a time lag ``τ``, the gather is

    I(τ, h, x) = −Σ_n Σ_c a_c(u[n − L])(x − h e_h) · b_c(v[n])(x + h e_h),   L = 2τ/dt,

i.e. ``−Σ_t u(t − τ, x − h)·v(t + τ, x + h)`` (Sava & Fomel's symmetric convention), with
the factors taken on the physical domain only (zero outside, so the absorbing layers never
enter). ``h = τ = 0`` is the image. Exact (``ps=None``): the adjoint run correlates, at every
time step and for every offset and lag at once, the stored forward field (``storage="full"``,
(nt+1)·N floats) or the forward field recomputed from Revolve checkpoints
(``storage="checkpoint"``, no lags) with the adjoint field
(:func:`timeprobe.operators.gather_adjoint_operator`) — the in-loop baseline of the field.
Probed (``ps=r``): after one probed forward and one probed adjoint run,

    I(τ, h, x) ≈ −(1/dt) Σ_p Σ_c a_c(ū_p)(x − h e_h) · b_c(v̄_{τ,p})(x + h e_h),

computed from ū and v̄ alone (r·N floats each) by batched BLAS: for a tile of image points along
the offset axis, one product ``Σ_c A_c B_cᵀ`` (``A_c``: the factors of ū on the rows the tile reads,
probes as columns) per line of the other axes holds every offset's correlation on its band
(:func:`shifted_correlation`); the ISIC factors (derivatives) come from
:func:`timeprobe.operators.gather_factors_operator`, a block of probes at a time. A time lag
is a change of probes: ``v̄_τ = (S_τᵀQ)ᵀ w`` with ``(S_τᵀQ)[s, p] = q_p(t_s − 2τ)`` (band-limited
interpolation of the probe columns; exact shifts when ``2τ`` is a multiple of ``k·dt``). All lags
come from one adjoint run with the probes ``Q_a = [orth(Q) | E]``, ``E`` the dominant left
singular vectors of the shifted probes' part outside ``span(Q)`` (:func:`lag_probes`):
``v̄_τ = C_τᵀ Qₐᵀw`` with ``C_τ = Q_aᵀ S_τᵀQ`` — exact when the shifted probes lie in
``span(Q_a)`` (identity probes), and for ``E`` empty the two-sided estimate
``ūᵀ (QᵀS_τᵀQ)… `` from the same ū and v̄.
"""
from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import numpy as np

from .compat import release
from .accuracy import sampled_exact_gradient
from .geometry import (Data, computational_axis, grid_coordinates,
                       resampling_operator, to_computational)
from .mpi import global_array, is_distributed
from .objectives import choose_strategy, jacobian_adjoint, shot_infos, strategy_info
from .operators import derivatives_operator, forward_operator, gather_adjoint_operator, gather_factors_operator
from .probe_buffers import GatherLayout, new_gather_buffer, region_margin, region_slices
from .probing import DEFAULT_BLOCK, Probing, ProbingOptions, probes_for_shot, shot_generators
from .propagators import (adjoint_receivers, adjoint_source, born, check_dm, check_inputs, forward, run_adjoint,
                          run_forward)
from .storage import run_stored_adjoint, run_stored_forward, stored_subsample
from .utils import serial_blas
from .workspace import use_model

__all__ = ["rtm", "gathers", "Gathers", "lsrtm_objective", "IMAGING_CONDITIONS", "GATHER_STORAGE",
           "kspace_filter", "offset_shifts", "offset_axis", "lag_steps", "lag_probes", "shift_probes",
           "shifted_correlation"]

IMAGING_CONDITIONS = ("as", "isic", "kspace")

#: how the exact gathers keep the forward field (``ps=None``)
GATHER_STORAGE = ("full", "checkpoint")

#: probes per correlation block of the probed gathers (memory: 2·ncomp·block·N floats)
GATHER_BLOCK = 16

#: ``lag_columns="auto"``: extra adjoint columns until the shifted probes' left-out part is below
#: this fraction. Measured on the Overthrust shot (2 s, 21 lags of ±105 ms, probes from the full
#: record): r = 64 gives lag-gather cosines 0.9965 / 0.9999 / 0.9999 with 0 / 8 / 32 extra
#: columns (left-out 0.24 / 0.11 / 0.0006); r = 32 gives 0.957 / 0.979 / 0.980 with 0 / 8 / 32.
LAG_TOL = 0.1


# --------------------------------------------------------------------------- validation
def _check_ic(ic):
    if not isinstance(ic, str):
        raise TypeError(f"ic (imaging condition) must be a string, one of {IMAGING_CONDITIONS}, "
                        f"got {type(ic).__name__}")
    if ic not in IMAGING_CONDITIONS:
        raise ValueError(f"unknown imaging condition ic={ic!r}; valid: {', '.join(IMAGING_CONDITIONS)}")
    return ic


def _check_probe_data(probe_data, d):
    if probe_data is None:
        return
    if not isinstance(probe_data, Data):
        raise TypeError(f"probe_data must be timeprobe.Data (records per shot), got {type(probe_data).__name__}")
    if probe_data.nshots != d.nshots:
        raise ValueError(f"probe_data has {probe_data.nshots} shot(s), d has {d.nshots}")


def offset_axis(model, axis):
    """The spatial axis index of ``axis`` ("x", "y" (3D) or "z"; depth is the last axis)."""
    names = ("x", "z") if model.dim == 2 else ("x", "y", "z")
    if not isinstance(axis, str):
        raise TypeError(f"axis must be one of {names} (a string), got {axis!r}")
    if axis not in names:
        raise ValueError(f"axis must be one of {names} for a {model.dim}D model, got {axis!r}")
    return names.index(axis)


def offset_shifts(model, offsets, axis="x"):
    """Subsurface offsets (m) along ``axis`` → integer grid shifts; validated.

    Offsets must be distinct multiples of the spacing along ``axis`` and
    ``|h| < (n − 1)·Δ / 2`` (the two fields are shifted by ``±h``, so larger offsets leave
    no overlap).
    """
    a = offset_axis(model, axis)
    h = np.atleast_1d(np.asarray(offsets, dtype=np.float64))
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"offsets must be a non-empty 1D list of subsurface offsets (m), got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("offsets contain NaN or inf")
    dx = model.spacing[a]
    s = np.rint(h / dx)
    if np.any(np.abs(s * dx - h) > 1e-6 * dx):
        raise ValueError(f"offsets must be multiples of the {axis} spacing {dx:g} m, got {h.tolist()}")
    if len(np.unique(s)) != len(s):
        raise ValueError(f"offsets must be distinct, got {h.tolist()}")
    hmax = (model.shape[a] - 1) * dx / 2
    if np.any(np.abs(h) >= hmax):
        raise ValueError(f"offsets up to {float(np.abs(h).max()):g} m exceed the model: |h| must be below "
                         f"(n{axis} - 1)·d{axis}/2 = {hmax:g} m")
    return s.astype(int)


def lag_steps(lags, dt, nt, exact):
    """Time lags τ (ms) → relative shifts ``L = 2τ/dt`` in computational time steps (floats).

    ``|2τ|`` must stay below the record length ``(nt − 1)·dt``; the exact gathers
    (``exact=True``) need ``2τ`` to be a multiple of ``dt`` (τ a multiple of dt/2); the probed
    ones take any lag.
    """
    tau = np.atleast_1d(np.asarray(lags, dtype=np.float64))
    if tau.ndim != 1 or tau.size == 0:
        raise ValueError(f"lags must be a non-empty 1D list of time lags (ms), got shape {tau.shape}")
    if not np.all(np.isfinite(tau)):
        raise ValueError("lags contain NaN or inf")
    if len(np.unique(tau)) != len(tau):
        raise ValueError(f"lags must be distinct, got {tau.tolist()}")
    L = 2 * tau / dt
    T = (nt - 1) * dt
    if np.any(np.abs(2 * tau) >= T):
        raise ValueError(f"lags up to {float(np.abs(tau).max()):g} ms: |2τ| must be below the record "
                         f"length {T:g} ms")
    if exact and np.any(np.abs(L - np.rint(L)) > 1e-6):
        raise ValueError(f"exact (ps=None) time-lag gathers need lags that are multiples of dt/2 = "
                         f"{dt / 2:g} ms (the model's time step is {dt:g} ms), got {tau.tolist()}; "
                         f"e.g. lags = dt/2 · np.arange(-n, n + 1)")
    return np.where(np.abs(L - np.rint(L)) <= 1e-6, np.rint(L), L)


def shift_probes(Q, shift):
    """The probe columns delayed by ``shift`` samples: ``out[s, p] = q_p(s − shift)`` (zero
    outside the axis). Integer shifts move rows; fractional ones use the project's windowed-sinc
    interpolator (:func:`timeprobe.geometry.resampling_operator`), exact for probes band-limited
    inside the Nyquist band of their axis (data-derived "QR" probes, "dft")."""
    Q = np.asarray(Q, dtype=np.float64)
    n = Q.shape[0]
    if abs(shift - round(shift)) <= 1e-9:
        s = int(round(shift))
        out = np.zeros_like(Q)
        if abs(s) < n:
            if s >= 0:
                out[s:] = Q[:n - s]
            else:
                out[:n + s] = Q[-s:]
        return out
    t = np.arange(n, dtype=np.float64)
    return np.asarray(resampling_operator(t, t - shift) @ Q)


def lag_probes(Q, shifts, extra="auto", tol=1e-3):
    """Adjoint probes for time-lag gathers from one forward probing ``Q`` (nsub, r).

    ``shifts``: the lags as delays of the probes in sub-sampled samples (``2τ/(k·dt)``). The
    shifted probes ``Q_τ = S_τᵀQ`` (:func:`shift_probes`) are represented in the orthonormal
    basis ``Q_a = [U | E]``: ``U = orth(Q)``, ``E`` the ``e`` dominant left singular vectors of
    ``[(I − UUᵀ) Q_τ]_τ``. One adjoint run with ``Q_a`` gives ``v̄_a = Q_aᵀ w``, and every lag
    ``v̄_τ = Q_τᵀ w ≈ C_τᵀ v̄_a`` with ``C_τ = Q_aᵀ Q_τ`` (exact when ``Q_τ ∈ span(Q_a)``, and
    always at ``τ = 0``).

    ``extra``: ``e`` as an int, or ``"auto"``: the smallest ``e ≤ r`` whose left-out part is
    below ``tol`` of the shifted probes (Frobenius norm). Returns ``(Q_a, C, info)`` with ``C``
    (nlag, r + e, r) and ``info`` ``{"extra": e, "residual": relative left-out part}``.
    """
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2:
        raise ValueError(f"Q must be (nsub, r), got shape {Q.shape}")
    nsub, r = Q.shape
    Qs = [shift_probes(Q, s) for s in np.atleast_1d(shifts)]
    U, _ = np.linalg.qr(Q)
    R = np.hstack([Qt - U @ (U.T @ Qt) for Qt in Qs])
    total = float(np.sqrt(sum(np.sum(Qt ** 2) for Qt in Qs))) or 1.0
    W, sv, _ = np.linalg.svd(R, full_matrices=False)
    tail = np.sqrt(np.maximum(np.cumsum((sv ** 2)[::-1])[::-1], 0.0))  # tail[i]: norm left out keeping i
    tail = np.append(tail, 0.0)
    # at most r extra columns, and only directions outside span(Q) (numerical rank of the residual)
    room = min(nsub - r, int(np.sum(sv > 1e-10 * sv[0])) if sv.size and sv[0] > 0 else 0)
    if extra == "auto":
        e = next((i for i in range(min(r, room) + 1) if tail[i] <= tol * total), min(r, room))
    elif isinstance(extra, numbers.Integral) and not isinstance(extra, bool) and extra >= 0:
        e = min(int(extra), room)
    else:
        raise ValueError(f"lag_columns must be 'auto' or an integer >= 0, got {extra!r}")
    Qa = np.hstack([U, W[:, :e]])
    C = np.stack([Qa.T @ Qt for Qt in Qs])
    return Qa, C, {"extra": e, "residual": float(tail[e] / total)}


# --------------------------------------------------------------------------- k-space filter
def kspace_filter(image, spacing):
    """``F⁻¹[(|k|/k_N)² F[image]]`` over the spatial axes (the last ``len(spacing)`` axes).

    ``k_N = π / min(spacing)``. Zero-padded to twice the size so the circular
    convolution of the FFT does not wrap; the result equals ``−Δ image / k_N²``
    for band-limited images. Linear and space-only: applied to the summed image
    it gives the same result as applying it per shot or per probe.
    """
    image = np.asarray(image, dtype=np.float64)
    nd = len(spacing)
    axes = tuple(range(image.ndim - nd, image.ndim))
    shape = image.shape[-nd:]
    nfft = tuple(2 * n for n in shape)
    k2 = 0.0
    for i, (n, h) in enumerate(zip(nfft, spacing)):
        k = 2 * np.pi * (np.fft.rfftfreq(n, h) if i == nd - 1 else np.fft.fftfreq(n, h))
        k2 = k2 + (k ** 2).reshape([-1 if j == i else 1 for j in range(nd)])
    k2 = k2 / (np.pi / min(spacing)) ** 2
    spec = np.fft.rfftn(image, s=nfft, axes=axes)
    out = np.fft.irfftn(spec * k2, s=nfft, axes=axes)
    return out[(Ellipsis,) + tuple(slice(0, n) for n in shape)]


# --------------------------------------------------------------------------- grids split over MPI ranks
def _derivatives(model, a):
    """Devito-stencil Laplacian and gradient of a padded field ``a`` (global, the same on every
    rank): ``(lap, [d_x, …, d_z])``, global arrays on every rank."""
    with use_model(model) as ws:
        op, f, outs = derivatives_operator(ws)
        f.data[:] = a
        op.apply()
        return np.array(global_array(outs[0])), [np.array(global_array(o)) for o in outs[1:]]


def _probed_image_distributed(model, ubar, vbar, ic):
    """The probed image ``−Σ_p Σ_c a_c(ū_p)·b_c(v̄_p)`` (no offsets, no lags) on a grid split
    over MPI ranks: each rank images its own part of the probe Functions ``ubar``/``vbar`` (the
    derivatives exchange halos), and only the image is gathered — ū and v̄ are never assembled.
    Returns the padded-grid image (global, on every rank), float64, not divided by dt.
    (Serially the probed ISIC image is :func:`gathers`' zero-offset panel.)"""
    with use_model(model) as ws:
        op, f, outs = derivatives_operator(ws)
        u_loc, v_loc = ubar.data.view(np.ndarray), vbar.data.view(np.ndarray)  # this rank's part
        image = ws.function("image", dtype=np.float64)
        image.data[:] = 0
        local = image.data.view(np.ndarray)

        def derivatives(a):
            f.data.view(np.ndarray)[:] = a
            op.apply()
            return [np.array(o.data.view(np.ndarray)) for o in outs]

        for p in range(u_loc.shape[-1]):
            u_p, v_p = u_loc[..., p], v_loc[..., p]
            if ic == "isic":
                lap_v, *dv = derivatives(v_p)
                _, *du = derivatives(u_p)
                pairs = [(u_p, lap_v)] + list(zip(du, dv))
            else:
                pairs = [(u_p, v_p)]
            for a, b in pairs:
                local -= a.astype(np.float64) * b
        return np.array(global_array(image))


# --------------------------------------------------------------------------- gathers
class Gathers(NamedTuple):
    """Extended images from :func:`gathers`.

    image : ndarray, float32, (n_lags, n_offsets, *model.shape)
        ``image[l, j]`` is the image at lag ``lags[l]`` and offset ``offsets[j]`` (depth last);
        a common-image gather at lateral position ``ix`` is ``image[l, :, ix]`` (offsets × depth).
    offsets : ndarray (m)
        Subsurface half-offsets ``h`` along ``axis`` (the fields are correlated at ``x ∓ h``).
    axis : str
        "x", "y" (3D) or "z" (vertical offsets).
    lags : ndarray (ms)
        Time lags τ (the fields are correlated at ``t ∓ τ``).
    illumination : ndarray (model shape, float32) or None
        The source illumination Λ the image was divided by (None when not requested).
    info : dict
        What the run did: ``ps``, ``ic``, ``storage`` (exact) or per-shot ``k`` (time subsampling),
        ``lag_columns`` (extra adjoint probe columns for the lags) and ``lag_residual``.
    """
    image: np.ndarray
    offsets: np.ndarray
    axis: str
    lags: np.ndarray
    illumination: np.ndarray | None
    info: dict


def _physical_slices(model, layers=False):
    """Index of the physical domain inside the probe region (arrays of the region's shape;
    ``layers``: :attr:`timeprobe.probing.Probing.layers`, see :func:`region_margin`)."""
    off = model.nbl - region_margin(model, layers)
    return tuple(slice(off, off + n) for n in model.shape)


def _gathers_exact_shot(model, src_coords, wc, rec_coords, adjoint_traces, dt, nt, glayout, ic, steps, storage,
                        n_checkpoints, illumination, G):
    """Exact in-loop gathers of one shot, accumulated into ``G`` (nlag, nh, *shape; float32);
    ``adjoint_traces()`` makes the adjoint source (computational axis) when it is needed.
    Returns the illumination Λ (padded grid) or None."""
    lam = None
    fic = "isic" if ic == "isic" else "as"
    if storage == "full":
        out = run_forward(model, src_coords, wc, rec_coords, dt, nt, save=True, illumination=illumination)
        usave, lam = out[1], (out[2] if illumination else None)
    elif illumination:  # the checkpointed forward runs more than once: Λ from a plain run
        _, _, lam = run_forward(model, src_coords, wc, rec_coords, dt, nt, illumination=True)
    with use_model(model) as ws:
        reca = adjoint_receivers(ws, model, rec_coords, adjoint_traces(), nt)  # its buffer, no copy
        gath = new_gather_buffer(ws, "gath", glayout, G)
        gfu, gfv = new_gather_buffer(ws, "gfu", glayout), new_gather_buffer(ws, "gfv", glayout)
        bufs = dict(rec=reca, gath=gath, gfu=gfu, gfv=gfv, dt=dt, time_m=1, time_M=nt - 1)
        ws.field("u").data[:] = 0
        if storage == "full":
            op = gather_adjoint_operator(ws, glayout, fic, ("full", nt + 1), tuple(int(L) for L in steps))
            op.apply(usave=usave, **bufs)
            release(usave)
        else:
            _checkpointed(model, ws, src_coords, wc, rec_coords, dt, nt, glayout, fic, n_checkpoints, bufs)
        release(reca, gath, gfu, gfv)
    return lam


def _checkpointed(model, ws, src_coords, wc, rec_coords, dt, nt, glayout, fic, n_checkpoints, bufs):
    """The adjoint with gathers against the forward field recomputed from Revolve checkpoints
    (pyrevolve's optimal schedule, ``n_checkpoints`` of u's two time levels; None: its choice)."""
    from devito.checkpointing import CheckpointOperator, DevitoCheckpoint
    from pyrevolve import Revolver
    fop = forward_operator(ws)
    gop = gather_adjoint_operator(ws, glayout, fic, ("buffer",))
    u, v = ws.field("u"), ws.field("v")
    src = ws.new_sparse("src", grid_coordinates(model, src_coords), wc, nt=nt + 1)
    rec = ws.new_sparse("rec", grid_coordinates(model, rec_coords), nt=nt + 1)  # forward traces, unused
    u.data[:] = 0
    v.data[:] = 0
    cp = DevitoCheckpoint([u])
    wrap_fw = CheckpointOperator(fop, src=src, rec=rec, u=u, dt=dt, time_m=1, time_M=nt - 1)
    wrap_rev = CheckpointOperator(gop, u=u, v=v, **bufs)
    wrp = Revolver(cp, wrap_fw, wrap_rev, n_checkpoints, nt - 1)
    wrp.apply_forward()
    wrp.apply_reverse()
    release(src, rec)


def shifted_correlation(G, A, B, shifts, tile=32, cmax=1 << 18):
    """``G[j, …, x] −= Σ_c Σ_p A_c[…, x − s_j, p]·B_c[…, x + s_j, p]`` by batched matrix products.

    ``G`` (nh, *other, n), the offset axis last; ``A``, ``B``: lists (one per imaging factor) of
    arrays (*other, n, k), the offset axis at −2, probes last (zero outside ``0 … n − 1``).

    The rows a = x − s and b = x + s of one product differ by 2s: they have the same parity.
    For each parity π the rows ``A_π[i] = A[2i + π]`` and ``B_π[j] = B[2j + π]`` give
    ``C_π = Σ_c A_π B_πᵀ`` (one BLAS product per line of the other axes, K = k), and its
    diagonal ``j − i = s`` is the gather of offset s at ``x = i + j + π``: every band entry
    is used. A tile of ``tile`` rows i needs the columns ``[i0 − S, i0 + tile + S)``
    (S = max |s|), so ``(tile + 2S)/nh`` entries are computed per one kept (≈ 1.8 at 41
    offsets; without the parity split it was ≈ 4). ``cmax`` floats bound each work buffer
    (a pass's band diagonals, a tile's products and their sum). With few offsets (the band
    would mostly be thrown away) each offset is one point-wise product summed over the probes
    instead.
    """
    n = A[0].shape[-2]
    shifts = [int(s) for s in shifts]
    S = max(abs(s) for s in shifts)
    if tile + 2 * S > 8 * len(shifts):
        for j, s in enumerate(shifts):
            lo, hi = abs(s), n - abs(s)
            if hi > lo:
                G[j][..., lo:hi] -= sum(np.einsum("...p,...p->...", a[..., lo - s:hi - s, :], b[..., lo + s:hi + s, :])
                                        for a, b in zip(A, B))
        return
    other = A[0].shape[:-2]
    per_lead = int(np.prod(other[1:])) if len(other) > 1 else 1
    width, nd, half = tile + 2 * S, 2 * S + 1, (n + 1) // 2
    # lines of the leading axis per pass: one pass's band diagonals and one tile's C ≤ cmax floats
    step = max(1, cmax // (per_lead * max(nd * half, tile * width)))
    # work buffers for every pass (no allocation per tile): a tile's products, their sum C, the band
    full = (min(step, other[0]),) + tuple(other[1:]) if other else ()
    work = np.empty(full + (tile, width), dtype=G.dtype)
    Cbuf = np.empty(full + (tile, width), dtype=G.dtype)
    bandbuf = np.empty(full + (nd, half), dtype=G.dtype)
    for l0 in range(0, other[0] if other else 1, step):
        lead = slice(l0, l0 + step) if other else Ellipsis
        lines = A[0][lead].shape[:-2]
        nl = lines[0] if lines else None
        C, prod = Cbuf[:nl], work[:nl]
        for par in (0, 1):
            Ap = [a[lead][..., par::2, :] for a in A]
            Bp = [b[lead][..., par::2, :] for b in B]
            m = Ap[0].shape[-2]
            band = bandbuf[:nl, ..., :m]  # band[…, d, i] = C_π[…, i, i + d − S]
            for i0 in range(0, m, tile):
                i1 = min(m, i0 + tile)
                c0, c1 = max(0, i0 - S), min(m, i1 + S)  # the columns this tile reads, [i0 − S, i1 + S) clipped
                inner = i1 - i0 == tile and c0 == i0 - S and c1 == i1 + S
                if not inner:
                    C[...] = 0
                for f, (a, b) in enumerate(zip(Ap, Bp)):
                    bt = np.swapaxes(b[..., c0:c1, :], -1, -2)
                    if inner:  # the whole tile: straight into C (first factor) or the work buffer
                        np.matmul(a[..., i0:i1, :], bt, out=C if f == 0 else prod)
                        if f:
                            C += prod
                    else:
                        C[..., :i1 - i0, c0 - (i0 - S):c1 - (i0 - S)] += np.matmul(a[..., i0:i1, :], bt)
                # the diagonals of C as a strided view: D[…, d, i] = C[…, i, i + d]
                D = np.lib.stride_tricks.as_strided(
                    C, shape=lines + (nd, tile), writeable=False,
                    strides=C.strides[:-2] + (C.strides[-1], C.strides[-2] + C.strides[-1]))
                band[..., i0:i1] = D[..., :i1 - i0]
            for j, s in enumerate(shifts):
                # x = 2i + s + π inside [0, n) for i in [lo, hi)
                lo, hi = max(0, -((s + par) // 2)), min(m, (n - 1 - s - par) // 2 + 1)
                if hi > lo:
                    x0 = 2 * lo + s + par
                    G[j][lead][..., x0:x0 + 2 * (hi - lo) - 1:2] -= band[..., s + S, lo:hi]


def _factor_rows(buf, axis):
    """A factor block ``(*image, comp, block)`` as ``(…, n_axis, comp·block)`` (a view): every
    imaging factor in one product, their probes side by side."""
    flat = buf.reshape(buf.shape[:-2] + (buf.shape[-2] * buf.shape[-1],))
    if not np.shares_memory(flat, buf):
        raise RuntimeError("gathers factor block could not be viewed without a copy")
    return np.moveaxis(flat, axis, -2)


def _isic_factors_distributed(model, fields, side, axis):
    """The ISIC factors (``side="u"``: ``[ū, ∇ū]``; ``"v"``: ``[Δv̄, ∇v̄]``) of a block of probe
    fields ``fields`` (global padded-grid arrays, ``(*grid, n)``) on a grid split over MPI ranks,
    one probe at a time through :func:`_derivatives` (the serial path's
    :func:`gather_factors_operator` writes plain, undistributed factor buffers). Returns what
    :func:`shifted_correlation` reads: ``[(…, n_axis, comp·n)]`` on the physical domain."""
    phys = tuple(slice(model.nbl, model.nbl + n) for n in model.shape)
    out = np.empty(model.shape + (1 + model.dim, fields.shape[-1]), dtype=fields.dtype)
    for p in range(fields.shape[-1]):
        lap, grads = _derivatives(model, fields[..., p])
        for c, f in enumerate([fields[..., p] if side == "u" else lap] + grads):
            out[..., c, p] = f[phys]
    return [_factor_rows(out, axis)]


def _probed_correlation(model, ubar, vbar, glayout, ic, C, G, block, layers=False):
    """``G[l] −= Σ_p`` of the imaging condition's factors of ū_p and v̄_{l,p} at shifted points.

    ``ubar`` (probe region, r), ``vbar`` (probe region, r_a) probe-field arrays (``layers``: the
    region covers the absorbing layers, :attr:`timeprobe.probing.Probing.layers`); ``C``
    (nlag, r_a, r) the lag mixing of v̄ (None: one lag, ``v̄`` itself). The cross-correlation
    without lags uses ū and v̄ as they lie; otherwise blocks of ``block`` probes: their factors
    ("isic": the derivatives, :func:`gather_factors_operator`) or lag-mixed v̄ are formed one
    block at a time. On a grid split over MPI ranks ``ubar``/``vbar`` are the assembled global
    arrays (the whole padded grid) and the ISIC factors come from :func:`_derivatives`.
    """
    a = glayout.axis
    phys = _physical_slices(model, layers)
    r = ubar.shape[-1]
    C = None if C is None else C.astype(ubar.dtype)
    rows = lambda f: np.moveaxis(f, a, -2)  # noqa: E731 — (…, n_axis, probes), as shifted_correlation reads
    Gm = [np.moveaxis(G[lag], 1 + a, -1) for lag in range(G.shape[0])]  # (nh, …, n_axis) views
    Up, Vp = ubar[phys], vbar[phys]
    if ic != "isic" and C is None:
        shifted_correlation(Gm[0], [rows(Up)], [rows(Vp)], glayout.shifts)
        return
    v_block = lambda p0, n, lag: vbar[..., p0:p0 + n] if C is None else vbar @ C[lag][:, p0:p0 + n]  # noqa: E731
    if ic == "isic" and is_distributed():
        for p0 in range(0, r, block):
            n = min(block, r - p0)
            A = _isic_factors_distributed(model, ubar[..., p0:p0 + n], "u", a)
            for lag, Gl in enumerate(Gm):
                shifted_correlation(Gl, A, _isic_factors_distributed(model, v_block(p0, n, lag), "v", a),
                                    glayout.shifts)
        return
    with use_model(model) as ws:
        if ic == "isic":
            gfu, gfv, gin = (new_gather_buffer(ws, n, glayout) for n in ("gfu", "gfv", "gin"))
            gin_in = gin.data.view(np.ndarray)[region_slices(model, layers)]
            fu, fv = (gather_factors_operator(ws, glayout, "isic", side) for side in ("u", "v"))
            factors = lambda f: [_factor_rows(f.data.view(np.ndarray), a)]  # noqa: E731
        for p0 in range(0, r, block):
            n = min(block, r - p0)
            if ic == "isic":
                gin_in[..., :n] = ubar[..., p0:p0 + n]
                gin_in[..., n:] = 0
                fu.apply(gin=gin, gfu=gfu)
                A = factors(gfu)
            else:
                A = [rows(Up[..., p0:p0 + n])]
            for lag, Gl in enumerate(Gm):
                if ic == "isic":
                    gin_in[..., :n] = v_block(p0, n, lag)
                    gin_in[..., n:] = 0
                    fv.apply(gin=gin, gfv=gfv)
                    B = factors(gfv)
                else:  # v̄_τ = C_τᵀ v̄_a, this block's columns
                    B = [rows(Vp @ C[lag][:, p0:p0 + n])]
                shifted_correlation(Gl, A, B, glayout.shifts)
        if ic == "isic":
            release(gfu, gfv, gin)


def _gathers_probed_shot(model, src_coords, wc, rec_coords, adjoint_traces, dt, nt, glayout, ic, steps, probing,
                         lag_columns, illumination, G, info):
    """Probed gathers of one shot into ``G``; returns Λ (padded grid) or None. The adjoint
    source, ``adjoint_traces()``, lives only during the adjoint run: it is not held beside ū
    in the forward run, nor beside ū and v̄ in the correlation."""
    probing.direct = False
    info.setdefault("k", []).append(probing.subsample)
    out = run_forward(model, src_coords, wc, rec_coords, dt, nt, probing=probing, illumination=illumination)
    ubar, lam = out[1], (out[2] if illumination else None)
    C = None
    adj = probing
    if np.any(steps != 0):
        Qa, C, linfo = lag_probes(probing.Q, steps / probing.subsample, extra=lag_columns, tol=LAG_TOL)
        adj = Probing(Qa, subsample=probing.subsample, method=probing.method, block=probing.block,
                      direct=False, dtype=model.dtype, layers=probing.layers)
        info.setdefault("lag_columns", []).append(linfo["extra"])
        info.setdefault("lag_residual", []).append(linfo["residual"])
    _, _, vbar = run_adjoint(model, rec_coords, adjoint_traces(), dt, nt, probing=adj,
                             ic="isic" if ic == "isic" else "as", restore_ubar=False)
    block = min(GATHER_BLOCK, probing.r)
    if is_distributed():  # every rank correlates the assembled ū and v̄ (the image is replicated)
        ubar_a, vbar_a = global_array(ubar), global_array(vbar)
    else:
        ubar_a, vbar_a = ubar.data.view(np.ndarray), vbar.data.view(np.ndarray)
    _probed_correlation(model, ubar_a, vbar_a, glayout._replace(block=block), ic, C, G, block,
                        layers=probing.layers)
    release(ubar, vbar)
    return lam


@serial_blas()
def gathers(model, q, d, ps=None, offsets=None, axis="x", lags=None, ic="isic", illumination=True,
            mode="QR", seed=None, *, probe_data=None, storage="full", n_checkpoints=None, lag_columns="auto",
            subsample="auto", method="blocked", block=None, probe_kwargs=None, eps=1e-3, progress=False):
    """Subsurface-offset and time-lag gathers of ``d``, summed over shots, exact or probed.

    ``image[l, j, x] = −Σ_n Σ_c a_c(u[n − L_l])(x − h_j e) · b_c(v[n])(x + h_j e)`` (module
    docstring): the imaging condition ``ic`` with the forward field ``u`` taken ``τ_l`` earlier and
    ``h_j`` back along ``axis``, the adjoint field ``v`` ``τ_l`` later and ``h_j`` forward
    (``L_l = 2τ_l/dt``). ``image[l, j]`` at ``h = τ = 0`` is :func:`rtm`'s image.

    Parameters
    ----------
    model, q, d
        Migration model, source wavelets, shot records (as :func:`rtm`).
    ps : int or None
        Number of probes r; None (default): exact, the correlation in the adjoint's time loop
        against the stored (``storage="full"``) or checkpointed forward field.
    offsets : sequence of float or None
        Half-offsets h (m): distinct multiples of the spacing along ``axis``, ``|h| < (n − 1)·Δ/2``.
        None: ``[0]``.
    axis : {"x", "y", "z"}
        Offset direction: "x" (default) and, in 3D, "y" horizontal; "z" vertical.
    lags : sequence of float or None
        Time lags τ (ms); exact gathers need multiples of dt/2 (``model.dt``). None: ``[0]``.
    ic : {"as", "isic", "kspace"}
        Imaging condition (module docstring); "kspace" filters every panel of the "as" gathers.
    illumination : bool
        Divide every panel by the source illumination ``Λ + eps·max Λ`` (as :func:`rtm`).
    mode, seed, subsample, method, block, probe_kwargs
        Probe design per shot (:class:`timeprobe.probing.ProbingOptions`; ``mode="identity"``
        with ``ps=nt, subsample=1`` reproduces the exact gathers).
    probe_data : Data or None
        The records that design "QR"/"hutchpp" probes (default ``d``). Migrating reflection data
        (direct waves removed), pass the full records: the forward field's early, near-source part
        is then in the probes' span too.
    storage : {"full", "checkpoint"}
        Exact only: how the forward field is kept ((nt+1)·N floats, or ``n_checkpoints`` Revolve
        checkpoints — recomputation, no lags).
    lag_columns : "auto" or int
        Probed lags: extra adjoint probe columns for the shifted probes (:func:`lag_probes`; "auto":
        until the left-out part is below :data:`LAG_TOL`, at most r). 0: the lags from the same ū and
        v̄ (two-sided projection ``ū·(QᵀS_τᵀQ)ᵀv̄``).
    progress : bool
        A tqdm bar over shots.

    Returns
    -------
    Gathers
        ``image`` float32 (n_lags, n_offsets, *model.shape), ``offsets`` (m), ``axis``, ``lags`` (ms),
        ``illumination``, ``info``.

    Gathers, like :func:`rtm`'s image, live on the physical domain: the probe fields skip the
    absorbing layers and nothing is summed onto the edge (unlike the ``sum_padding=True``
    gradients of :func:`timeprobe.fwi_objective`); the zero-offset, zero-lag panel is
    :func:`rtm`'s image. On a grid split over MPI ranks (Devito MPI) the probed gathers correlate
    the assembled ū and v̄ on every rank, and the exact ones are the probed ones with identity
    probes (offsets only).

    Memory: exact ``(nt+1)·N`` floats (full storage) or the checkpoints, plus the gathers;
    probed ``(r + r_a + B)·N_r`` (ū, v̄ with ``r_a = r + extra lag columns``, the ring buffer),
    the gathers, with ISIC or lags ``2·ncomp·16·N`` floats of factor blocks (``N_r``: the probe
    region), and the correlation's work buffers (band diagonals and tile products, ≤ 3 MiB).
    """
    check_inputs(model, q, d=d)
    _check_ic(ic)
    _check_probe_data(probe_data, d)
    a = offset_axis(model, axis)
    offs = np.zeros(1) if offsets is None else np.atleast_1d(np.asarray(offsets, dtype=np.float64))
    shifts = offset_shifts(model, offs, axis)
    if not (lag_columns == "auto" or (isinstance(lag_columns, numbers.Integral)
                                      and not isinstance(lag_columns, bool) and lag_columns >= 0)):
        raise ValueError(f"lag_columns must be 'auto' or an integer >= 0, got {lag_columns!r}")
    if ps is None and storage not in GATHER_STORAGE:
        raise ValueError(f"storage must be one of {GATHER_STORAGE}, got {storage!r}")
    # gathers are physical-domain quantities like rtm's image: the probe fields skip the
    # absorbing layers (sum_padding=False), nothing is summed onto the edge
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=False)
    dt, nt = computational_axis(model, q.geometry, d.geometry)
    taus = np.zeros(1) if lags is None else np.atleast_1d(np.asarray(lags, dtype=np.float64))
    steps = lag_steps(taus, dt, nt, exact=ps is None)
    if ps is None and storage == "checkpoint" and np.any(steps != 0):
        raise ValueError("exact time-lag gathers need the stored forward field: storage='full' "
                         "(checkpointing recomputes u one step at a time, u[n − L] is gone)")
    # on a grid split over MPI ranks the in-loop correlation (plain, undistributed factor
    # buffers) cannot run: exact gathers there are the probed ones with identity probes (nt probe
    # fields, the memory of full storage), offsets only
    identity = ps is None and is_distributed()
    if identity and (storage != "full" or np.any(steps != 0)):
        raise ValueError("exact gathers on a grid split over MPI ranks support subsurface offsets only, "
                         "with storage='full' (no time lags, no checkpointing); use ps=r (probed) "
                         "or run without DEVITO_MPI")
    ncomp = 1 + model.dim if ic == "isic" else 1
    nlag = len(steps)
    glayout = GatherLayout(axis=a, shifts=tuple(int(s) for s in shifts), ncomp=ncomp,
                           nlag=nlag if ps is None else 1, block=0, nbl=model.nbl)
    G = np.zeros((nlag, len(shifts)) + model.shape, dtype=model.dtype)
    illum = np.zeros(model.shape_padded, dtype=np.float64) if illumination else None
    rngs = shot_generators(seed, q.nshots)
    info = dict(ps=ps, ic=ic, storage=storage if ps is None else None)
    shots = range(q.nshots)
    if progress:
        from tqdm.auto import tqdm
        shots = tqdm(shots, desc="gathers", leave=False)
    for i in shots:
        wc = to_computational(q.arrays[i], q.geometry[i], dt, nt)
        rc = functools.partial(adjoint_source, d.arrays[i], d.geometry[i], dt, nt, model.dtype)
        sc, rcoord = q.geometry.coordinates[i], d.geometry.coordinates[i]
        if identity:
            probing = Probing(np.eye(nt, dtype=model.dtype), subsample=1, method=method,
                              block=block or DEFAULT_BLOCK, direct=False, dtype=model.dtype, layers=False)
            lam = _gathers_probed_shot(model, sc, wc, rcoord, rc, dt, nt, glayout, ic, steps, probing,
                                       0, illumination, G, info)
        elif ps is None:
            lam = _gathers_exact_shot(model, sc, wc, rcoord, rc, dt, nt, glayout, ic, steps, storage,
                                      n_checkpoints, illumination, G)
        else:
            probing = probes_for_shot(opts, wc, dt, nt, (d if probe_data is None else probe_data)[i], rngs[i],
                                      dtype=model.dtype)
            lam = _gathers_probed_shot(model, sc, wc, rcoord, rc, dt, nt, glayout, ic, steps, probing,
                                       lag_columns, illumination, G, info)
        if illumination:
            illum += lam
    if ps is not None or identity:
        G /= dt  # ū carries k·dt (module docstring)
    out = G
    if ic == "kspace":
        out = kspace_filter(out, model.spacing)
    lam_out = None
    if illumination:
        lam_out = model.unpad(illum)
        out = out / (lam_out + eps * lam_out.max())
        lam_out = lam_out.astype(np.float32)
    return Gathers(np.asarray(out, dtype=np.float32), shifts * model.spacing[a], axis, taus, lam_out, info)


# --------------------------------------------------------------------------- RTM
@serial_blas()
def rtm(model, q, d, ps=None, ic="isic", illumination=True, mode="QR", seed=None, offsets=None, *,
        probe_data=None, storage=None, budget_mb=None, allow_disk=False, return_info=False,
        subsample="auto", method="blocked", block=None, probe_kwargs=None, eps=1e-3, progress=False):
    """Reverse-time migration of ``d`` over all shots, exact (``ps=None``) or probed.

    Parameters
    ----------
    model : Model
        Migration (background) model.
    q : Data
        Source wavelets per shot.
    d : Data
        Shot records to migrate (the adjoint field is driven by ``Rᵀ d``).
    ps : int or None
        Number of probes r (memory r·N per field); None (default): full wavefield storage (nt·N).
    ic : {"as", "isic", "kspace"}
        Imaging condition (module docstring).
    illumination : bool
        Accumulate the source illumination ``Λ(x) = Σ_shots dt Σ_n u[n, x]²`` in the
        forward runs (one extra Devito ``Inc``, no stored field) and return
        ``I / (Λ + eps·max Λ)`` (the gathers are divided the same way).
    mode, seed, subsample, method, block, probe_kwargs
        Probe design per shot (see :class:`timeprobe.probing.ProbingOptions`);
        "QR" probes are designed from each shot's ``d`` (or ``probe_data``, see
        :func:`gathers`); ``seed`` spawns one generator per shot.
    offsets : None or sequence of float
        Horizontal subsurface half-offsets h (m, multiples of dx) → the gathers of
        :func:`gathers` (``axis="x"``, no lags): ``I(h, x, z) = −Σ_n u(x − h, z)·v̈(x + h, z)``
        (ISIC: its factors the same way). Exact (in the adjoint's loop) with ``ps=None``.
    storage, budget_mb, allow_disk, return_info
        As in :func:`timeprobe.fwi_objective`: stored Nyquist snapshots (``ic="as"`` or
        ``"kspace"``: the stored snapshots carry no halo for the ISIC derivatives), the
        working-memory autopilot (with ``"isic"`` it chooses between full storage and probing), and
        the info dict (its accuracy estimate is that of the ``"as"`` image; None for the others).
        Not with ``offsets``.
    progress : bool
        A tqdm bar over shots.

    Returns
    -------
    image : ndarray, float32
        Model shape, or (nh, *model shape) with ``offsets``.
    illum : ndarray (model shape, float32) or None
        The illumination Λ (None when ``illumination=False``).
    info : dict
        Only with ``return_info=True`` (:func:`timeprobe.objectives.strategy_info`).
    """
    check_inputs(model, q, d=d)
    _check_ic(ic)
    _check_probe_data(probe_data, d)
    if offsets is not None and (storage is not None or budget_mb is not None or return_info):
        raise ValueError("subsurface offsets (gathers) take ps only, not storage/budget_mb/return_info")
    if storage is not None and ic == "isic":
        raise ValueError("stored snapshots image with ic='as' or 'kspace' (no halo for the ISIC derivatives); "
                         "use ps or full storage for 'isic'")
    kw = dict(mode=mode, seed=seed, subsample=subsample, method=method, block=block, probe_data=probe_data,
              probe_kwargs=probe_kwargs, eps=eps, progress=progress, illumination=illumination, ic=ic)
    if offsets is not None:
        g = gathers(model, q, d, ps=ps, offsets=offsets, axis="x", **kw)
        return g.image[0], g.illumination
    ps, storage, chosen = choose_strategy(model, q, d, ps, storage, budget_mb, allow_disk,
                                          return_info and ic == "as", block, stored=ic != "isic", layers=False,
                                          segments=False)
    # images are restricted to the physical domain: probe fields skip the absorbing layers
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=False, storage=storage)
    if ps is not None and ic == "isic" and not is_distributed():  # the probed ISIC image: the zero-offset gather
        g = gathers(model, q, d, ps=ps, **kw)
        if not return_info:
            return g.image[0, 0], g.illumination
        infos = [dict() for _ in range(q.nshots)]
        return g.image[0, 0], g.illumination, strategy_info(model, q, d, opts, chosen, infos, g.image[0, 0],
                                                             estimate=False)
    # images are restricted to the physical domain: probe fields skip the absorbing layers
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=False, storage=storage)
    rngs = shot_generators(seed, q.nshots)
    infos = [dict() for _ in range(q.nshots)] if return_info else [None] * q.nshots
    if return_info and ic == "as" and ps is not None:  # the sampled estimate (after the shots' generators)
        infos = shot_infos(model, q, opts, seed, True, None if chosen is None else chosen.samples, d.geometry)
    scale = []
    img = np.zeros(model.shape_padded, dtype=np.float64)
    illum = np.zeros(model.shape_padded, dtype=np.float64) if illumination else None
    shots = range(q.nshots)
    if progress:
        from tqdm.auto import tqdm
        shots = tqdm(shots, desc="rtm shots", leave=False)
    dt, nt = computational_axis(model, q.geometry, d.geometry)
    for i in shots:
        wc = to_computational(q.arrays[i], q.geometry[i], dt, nt)
        src_coords, rec_coords = q.geometry.coordinates[i], d.geometry.coordinates[i]
        rc = adjoint_source(d.arrays[i], d.geometry[i], dt, nt, dtype=model.dtype)
        scale.append(1.0 / dt)
        if storage is not None:
            k = stored_subsample(storage, wc, dt, nt)
            _, store, lam = run_stored_forward(model, src_coords, wc, rec_coords, dt, nt, storage, k,
                                               illumination=True, layers=False)
            with store:
                grad = run_stored_adjoint(model, rec_coords, rc, dt, nt, store)
                if infos[i] is not None:
                    infos[i].update(k=k, energy=store.stats["energy"], noise=store.stats["noise"])
        elif ps is None:
            _, usave, lam = run_forward(model, src_coords, wc, rec_coords, dt, nt, save=True,
                                        illumination=True)
            _, grad, _ = run_adjoint(model, rec_coords, rc, dt, nt, usave=usave,
                                     ic="isic" if ic == "isic" else "as")
            release(usave)
        else:  # "as" / "kspace": the image accumulated directly in the adjoint run (no v̄)
            probing = probes_for_shot(opts, wc, dt, nt, (d if probe_data is None else probe_data)[i], rngs[i],
                                      dtype=model.dtype)
            probing.direct = ic != "isic"
            points = None if infos[i] is None else infos[i].get("points")
            fwd_rec = rec_coords if points is None else np.vstack([rec_coords, points.coords])
            traces, ubar, lam = run_forward(model, src_coords, wc, fwd_rec, dt, nt, probing=probing,
                                            illumination=True)
            if infos[i] is not None:
                infos[i].update(k=probing.subsample, r=probing.r)
            u_sub = None if points is None else np.array(traces[::probing.subsample, len(rec_coords):])
            del traces
            v, grad, vbar = run_adjoint(model, rec_coords, rc, dt, nt, probing=probing, ubar=ubar,
                                        ic="isic" if ic == "isic" else "as", restore_ubar=False,
                                        src_coords=None if points is None else points.coords)
            if points is not None:
                v = np.vstack([v, np.zeros((1, v.shape[1]), v.dtype)])  # v[nt] = 0
                infos[i]["exact_samples"] = sampled_exact_gradient(u_sub, v, probing.subsample, dt)
            if grad is None:  # ISIC on a grid split over MPI ranks: the image per rank, ū and v̄ stay split
                grad = _probed_image_distributed(model, ubar, vbar, ic)
                release(vbar)
            release(ubar)
        img += grad / dt
        if illumination:
            illum += lam
    out = model.unpad(img)
    if ic == "kspace":
        # on the physical domain: the filter is non-local, and the image of the absorbing
        # layers (not computed by the probed paths, see probe_margin) must not leak in
        out = kspace_filter(out, model.spacing)
    lam_out = None
    if illumination:
        lam_out = model.unpad(illum)
        out = out / (lam_out + eps * lam_out.max())
        lam_out = lam_out.astype(np.float32)
    image = out.astype(np.float32)
    if not return_info:
        return image, lam_out
    info = strategy_info(model, q, d, opts, chosen, infos, image, scale=scale,
                         weight=None if lam_out is None else 1.0 / (lam_out + eps * lam_out.max()),
                         estimate=ic == "as")
    return image, lam_out, info


# --------------------------------------------------------------------------- LS-RTM
@serial_blas()
def lsrtm_objective(model, q, d, dm, ps=None, nlind=False, mode="QR", seed=None, *, probe_data=None,
                    subsample="auto", method="blocked", block=None, probe_kwargs=None, sum_padding=True,
                    d0=None):
    """Least-squares RTM misfit and gradient w.r.t. the reflectivity ``dm``.

    ``f = ½ Σ dt_d ‖J dm − d‖²`` and ``g = dt_d · Jᵀ (J dm − d)`` (Born modelling
    :func:`timeprobe.born`, its dot-tested adjoint :func:`timeprobe.jacobian_adjoint`),
    exact (``ps=None``) or probed with r = ps probes designed from ``probe_data``
    (default: the residual). ``nlind=True`` first subtracts the background data
    ``F(m0) q`` from ``d`` (pass ``d0`` to reuse a computed background).

    ``sum_padding`` as in :func:`timeprobe.fwi_objective` (True: ``g`` is the exact derivative).

    Returns ``(f, g)``: float and an array of the model's shape and dtype.
    """
    check_inputs(model, q, d=d)
    dm = check_dm(model, dm)
    if nlind:
        if d0 is None:
            d0 = forward(model, q, d.geometry)
        d = Data(d.geometry, [a - b for a, b in zip(d.arrays, d0.arrays)], dtype=model.dtype)
    pred = born(model, q, dm, d.geometry)
    res = Data(d.geometry, [p - o for p, o in zip(pred.arrays, d.arrays)], dtype=model.dtype)
    f = 0.0
    for i in range(res.nshots):
        f += 0.5 * res.geometry[i].dt * float(np.sum(res.arrays[i].astype(np.float64) ** 2))
    dts = {round(res.geometry[i].dt, 12) for i in range(res.nshots)}
    if len(dts) == 1:
        g = res.geometry[0].dt * jacobian_adjoint(model, q, res, ps=ps, mode=mode, seed=seed,
                                                  probe_data=probe_data, subsample=subsample,
                                                  method=method, block=block, probe_kwargs=probe_kwargs,
                                                  sum_padding=sum_padding)
    else:  # shots sampled differently: weight each by its own dt_d
        scaled = Data(res.geometry, [res.geometry[i].dt * a for i, a in enumerate(res.arrays)],
                      dtype=model.dtype)
        g = jacobian_adjoint(model, q, scaled, ps=ps, mode=mode, seed=seed,
                             probe_data=probe_data if probe_data is not None else res,
                             subsample=subsample, method=method, block=block, probe_kwargs=probe_kwargs,
                             sum_padding=sum_padding)
    return f, np.asarray(g, dtype=model.dtype)
