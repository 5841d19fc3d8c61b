"""Imaging on compressed wavefields: RTM, LS-RTM and subsurface-offset gathers.

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

Subsurface horizontal offsets: ``I(h, x, z) = −(1/dt) Σ_p ū_p(x − h, z)·v̄_p(x + h, z)``
(shifts with zero fill; ISIC shifts ``ū, ∇ū`` and ``Δv̄, ∇v̄`` the same way).
"""
from __future__ import annotations

import numpy as np

from .compat import release
from .geometry import Data, computational_axis, from_computational_adjoint, to_computational
from .accuracy import sampled_exact_gradient
from .mpi import global_array, is_distributed
from .objectives import choose_strategy, jacobian_adjoint, shot_infos, strategy_info
from .operators import derivatives_operator
from .probe_buffers import region_slices
from .probing import DEFAULT_BLOCK, Probing, ProbingOptions, probes_for_shot, shot_generators
from .propagators import born, check_dm, check_inputs, forward, run_adjoint, run_forward
from .storage import run_stored_adjoint, run_stored_forward, stored_subsample
from .workspace import use_model

__all__ = ["rtm", "lsrtm_objective", "IMAGING_CONDITIONS", "kspace_filter", "isic_image",
           "probed_image", "offset_shifts"]

IMAGING_CONDITIONS = ("as", "isic", "kspace")


# --------------------------------------------------------------------------- validation
def _check_ic(ic):
    if not isinstance(ic, str):
        raise TypeError(f"ic (imaging condition) must be a string, one of {IMAGING_CONDITIONS}, "
                        f"got {type(ic).__name__}")
    if ic not in IMAGING_CONDITIONS:
        raise ValueError(f"unknown imaging condition ic={ic!r}; valid: {', '.join(IMAGING_CONDITIONS)}")
    return ic


def offset_shifts(model, offsets):
    """Horizontal subsurface offsets (m) → integer grid shifts along x; validated.

    Offsets must be multiples of the x spacing and ``|h| < (nx − 1)·dx / 2`` (the
    two fields are shifted by ``±h``, so larger offsets leave no overlap).
    """
    h = np.atleast_1d(np.asarray(offsets, dtype=np.float64))
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"offsets must be a non-empty 1D list of horizontal offsets (m), got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("offsets contain NaN or inf")
    dx = model.spacing[0]
    s = np.rint(h / dx)
    if np.any(np.abs(s * dx - h) > 1e-6 * dx):
        raise ValueError(f"offsets must be multiples of the x spacing {dx} m, got {h.tolist()}")
    hmax = (model.shape[0] - 1) * dx / 2
    if np.any(np.abs(h) >= hmax):
        raise ValueError(f"offsets up to {float(np.abs(h).max()):g} m exceed the model: |h| must be below "
                         f"(nx - 1)·dx/2 = {hmax} m")
    return s.astype(int)


def _shift_x(a, s):
    """``a(x + s)`` along axis 0 with zero fill (no wrap-around: a roll would bias the image)."""
    if s == 0:
        return a
    out = np.zeros_like(a)
    if s > 0:
        out[:-s] = a[s:]
    else:
        out[-s:] = a[:s]
    return out


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


# --------------------------------------------------------------------------- derivatives
def _derivatives(model, a):
    """Devito-stencil Laplacian and gradient of a padded field ``a``: ``(lap, [d_x, d_z])``."""
    with use_model(model) as ws:
        op, f, outs = derivatives_operator(ws)
        f.data[:] = a
        op.apply()
        return np.array(global_array(outs[0])), [np.array(global_array(o)) for o in outs[1:]]


def _probed_image_distributed(model, ubar, vbar, ic):
    """:func:`probed_image` (no shifts) on a grid split over MPI ranks: each rank images its own
    part of the probe Functions ``ubar``/``vbar`` (the derivatives exchange halos), and only the
    image is gathered — ū and v̄ are never assembled. Returns the padded-grid image (global, on
    every rank), float64, not divided by dt."""
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


def probed_image(model, ubar, vbar, ic, shifts=(0,), region=None):
    """``−Σ_p`` of the imaging condition ``ic`` applied to the compressed fields.

    ``ubar`` (…, r) and ``vbar`` (…, r) on the padded grid (v̄ of v̈ for "as"/"kspace",
    of v for "isic"), or on its sub-box ``region`` (slices; zero outside, as the
    propagators' probe region). Returns (len(shifts), *padded shape), float64; shift
    ``s`` correlates ``ū(x − s)`` with ``v̄(x + s)``. Not divided by dt.
    """
    out = np.zeros((len(shifts),) + tuple(model.shape_padded), dtype=np.float64)

    def padded(a):
        if region is None:
            return a
        full = np.zeros(model.shape_padded, dtype=a.dtype)
        full[region] = a
        return full

    for p in range(ubar.shape[-1]):
        u_p, v_p = padded(ubar[..., p]), padded(vbar[..., p])
        if ic == "isic":
            lap_v, dv = _derivatives(model, v_p)
            _, du = _derivatives(model, u_p)
            pairs = [(u_p, lap_v)] + list(zip(du, dv))
        else:
            pairs = [(u_p, v_p)]
        for j, s in enumerate(shifts):
            for a, b in pairs:
                out[j] -= _shift_x(a, -s).astype(np.float64) * _shift_x(b, s)
    return out


def isic_image(model, ubar, vbar):
    """Probed ISIC image ``−Σ_p (ū_p Δv̄_p + ∇ū_p·∇v̄_p)`` on the padded grid (not divided by dt)."""
    return probed_image(model, ubar, vbar, "isic")[0]


# --------------------------------------------------------------------------- RTM
def rtm(model, q, d, ps=None, ic="isic", illumination=True, mode="QR", seed=None, offsets=None, *,
        storage=None, budget_mb=None, allow_disk=False, return_info=False,
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
        "QR" probes are designed from each shot's ``d``; ``seed`` spawns one
        generator per shot.
    offsets : None or sequence of float
        Horizontal subsurface offsets h (m, multiples of dx) → gathers
        ``I(h, x, z) = −Σ_p ū_p(x − h, z)·v̄_p(x + h, z)`` (ISIC: the same with the
        ISIC terms). With ``ps=None`` the gathers use identity probes
        (``Q = I``, k = 1: exact, and nt·N memory like full storage).
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
    shifts = None if offsets is None else offset_shifts(model, offsets)
    if shifts is not None and (storage is not None or budget_mb is not None or return_info):
        raise ValueError("subsurface offsets (gathers) take ps only, not storage/budget_mb/return_info")
    if storage is not None and ic == "isic":
        raise ValueError("stored snapshots image with ic='as' or 'kspace' (no halo for the ISIC derivatives); "
                         "use ps or full storage for 'isic'")
    ps, storage, chosen = choose_strategy(model, q, d, ps, storage, budget_mb, allow_disk,
                                          return_info and ic == "as", block, stored=ic != "isic", layers=False)
    probed = ps is not None or shifts is not None
    # images are restricted to the physical domain: probe fields skip the absorbing layers
    opts = ProbingOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                          probe_kwargs=probe_kwargs, sum_padding=False, storage=storage)
    rngs = shot_generators(seed, q.nshots)
    infos = [dict() for _ in range(q.nshots)] if return_info else [None] * q.nshots
    if return_info and ic == "as" and ps is not None:  # the sampled estimate (after the shots' generators)
        infos = shot_infos(model, q, opts, seed, True, None if chosen is None else chosen.samples, d.geometry)
    scale = []
    nout = 1 if shifts is None else len(shifts)
    img = np.zeros((nout,) + model.shape_padded, dtype=np.float64)
    illum = np.zeros(model.shape_padded, dtype=np.float64) if illumination else None
    shots = range(q.nshots)
    if progress:
        from tqdm.auto import tqdm
        shots = tqdm(shots, desc="rtm shots", leave=False)
    for i in shots:
        dt, nt = computational_axis(model, q.geometry, d.geometry)
        wc = to_computational(q.arrays[i], q.geometry[i], dt, nt)
        src_coords, rec_coords = q.geometry.coordinates[i], d.geometry.coordinates[i]
        rc = from_computational_adjoint(d.arrays[i], d.geometry[i], dt, nt)
        scale.append(1.0 / dt)
        if storage is not None:
            k = stored_subsample(storage, wc, dt, nt)
            _, store, lam = run_stored_forward(model, src_coords, wc, rec_coords, dt, nt, storage, k,
                                               illumination=True, layers=False)
            with store:
                img[0] += run_stored_adjoint(model, rec_coords, rc, dt, nt, store) / dt
                if infos[i] is not None:
                    infos[i].update(k=k, energy=store.stats["energy"], noise=store.stats["noise"])
        elif not probed:
            _, usave, lam = run_forward(model, src_coords, wc, rec_coords, dt, nt, save=True,
                                        illumination=True)
            _, grad, _ = run_adjoint(model, rec_coords, rc, dt, nt, usave=usave,
                                     ic="isic" if ic == "isic" else "as")
            release(usave)
            img[0] += grad / dt
        else:
            if ps is None:  # exact gathers: identity probes
                Q = np.eye(nt, dtype=np.float32)
                probing = Probing(Q, subsample=1, method=method, block=block or DEFAULT_BLOCK, direct=False,
                                  dtype=model.dtype, layers=False)
            else:
                probing = probes_for_shot(opts, wc, dt, nt, d[i], rngs[i], dtype=model.dtype)
                probing.direct = shifts is None and ic != "isic"
            points = None if infos[i] is None else infos[i].get("points")
            fwd_rec = rec_coords if points is None else np.vstack([rec_coords, points.coords])
            traces, ubar_f, lam = run_forward(model, src_coords, wc, fwd_rec, dt, nt, probing=probing,
                                              illumination=True)
            if infos[i] is not None:
                infos[i].update(k=probing.subsample, r=probing.r)
            u_sub = None if points is None else np.array(traces[::probing.subsample, len(rec_coords):])
            del traces
            adj_ic = "isic" if ic == "isic" else "as"
            v, grad, vbar_f = run_adjoint(model, rec_coords, rc, dt, nt, probing=probing,
                                          ubar=ubar_f, ic=adj_ic, restore_ubar=False,
                                          src_coords=None if points is None else points.coords)
            if points is not None:
                v = np.vstack([v, np.zeros((1, v.shape[1]), v.dtype)])  # v[nt] = 0
                infos[i]["exact_samples"] = sampled_exact_gradient(u_sub, v, probing.subsample, dt)
            if grad is not None:  # "as" accumulated directly in the adjoint run
                img[0] += grad / dt
            elif is_distributed() and shifts is None:  # the image per rank, ū and v̄ stay split
                img[0] += _probed_image_distributed(model, ubar_f, vbar_f, ic) / dt
            else:  # under MPI the offset gathers assemble ū and v̄ on every rank
                img += probed_image(model, global_array(ubar_f), global_array(vbar_f), ic,
                                    shifts=tuple(shifts) if shifts is not None else (0,),
                                    region=region_slices(model, probing.layers)) / dt
            release(ubar_f, vbar_f)
        if illumination:
            illum += lam
    out = np.stack([model.unpad(a) for a in img])
    if ic == "kspace":
        # on the physical domain: the filter is non-local, and the image of the absorbing
        # layers (not computed by the probed paths, see probe_margin) must not leak in
        out = kspace_filter(out, model.spacing)
    lam_out = None
    if illumination:
        lam_out = model.unpad(illum)
        out = out / (lam_out + eps * lam_out.max())
        lam_out = lam_out.astype(np.float32)
    out = out.astype(np.float32)
    image = out[0] if shifts is None else out
    if not return_info:
        return image, lam_out
    info = strategy_info(model, q, d, opts, chosen, infos, image, scale=scale,
                         weight=None if lam_out is None else 1.0 / (lam_out + eps * lam_out.max()),
                         estimate=ic == "as")
    return image, lam_out, info


# --------------------------------------------------------------------------- LS-RTM
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
