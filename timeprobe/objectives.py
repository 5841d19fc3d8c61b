"""Objectives and gradients: FWI misfit, adjoint Born (RTM), exact or probed.

Misfit (data-sampling weighted, so it approximates ½∫‖r‖²dt and does not change
with the computational time step)::

    f(m) = ½ Σ_shots dt_d · ‖R P u − d‖²,     r = R P u − d

with ``dt_d`` the observed-data sampling interval and ``R`` the resampling from
the computational axis to the data axis. Its gradient w.r.t. squared slowness::

    g(x) = −dt Σ_n u[n, x] · v̈[n, x]

where ``v`` is the adjoint field driven by ``(dt_d/dt)·Rᵀ r`` (``dt`` the
computational step) — i.e. ``g = dt_d · Jᵀ Rᵀ r`` with :func:`~timeprobe.propagators.born_adjoint`'s
convention. ``ps=None`` stores the forward wavefield (exact); ``ps=r`` probes it
(:mod:`timeprobe.probing`), storing r fields instead of nt.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .geometry import resample
from .kernels import release
from .propagators import (Probing, check_inputs, computational_axis, from_computational,
                          from_computational_adjoint, run_adjoint, run_forward, to_computational)

__all__ = ["fwi_objective", "jacobian_adjoint", "GradientOptions", "max_frequency",
           "default_subsample", "shot_objective"]


# --------------------------------------------------------------------------- options
@dataclass
class GradientOptions:
    """How gradients are computed (shared by the FWI/RTM drivers).

    ps : None or int
        None: exact gradient (full wavefield storage). int r > 0: probed with r probes.
    mode : str
        Probe design, see :func:`timeprobe.probing.design_probes` ("QR" default).
    subsample : "auto" or int
        Time-subsampling factor ``k`` of the probed accumulation. "auto" picks
        the largest ``k`` with ``k·dt ≤ 1/(2 f_max)``, ``f_max`` the frequency
        above which the source spectrum stays below −60 dB of its peak (see
        :func:`default_subsample`).
    method : "blocked" or "eq"
        Probed accumulation (see :class:`timeprobe.propagators.Probing`).
    block : int or None
        Ring-buffer length of the blocked method (None: 4, the fastest measured, see BENCHMARKS.md).
    probe_kwargs : dict
        Extra keyword arguments of ``design_probes`` (power_iterations, shift, …).
    """
    ps: int | None = None
    mode: str = "QR"
    subsample: object = "auto"
    method: str = "blocked"
    block: int | None = None
    probe_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.ps is not None:
            if isinstance(self.ps, bool) or not isinstance(self.ps, numbers.Integral):
                raise TypeError(f"ps (number of probes) must be an integer or None, got {self.ps!r}")
            if self.ps <= 0:
                raise ValueError(f"ps (number of probes) must be positive, got {self.ps}")
            from .probing import PROBE_MODES
            if self.mode not in PROBE_MODES:
                raise ValueError(f"unknown probing mode {self.mode!r}; valid modes: {', '.join(PROBE_MODES)}")
        if self.subsample != "auto" and (isinstance(self.subsample, bool)
                                         or not isinstance(self.subsample, numbers.Integral)
                                         or self.subsample < 1):
            raise ValueError(f"subsample must be 'auto' or a positive integer, got {self.subsample!r}")
        if self.method not in ("blocked", "eq"):
            raise ValueError(f"unknown probing method {self.method!r}; use 'blocked' or 'eq'")


def max_frequency(wavelet, dt, rel=1e-3):
    """Highest frequency (kHz) at which ``|FFT(wavelet)|`` still reaches ``rel`` × its peak."""
    w = np.asarray(wavelet, dtype=np.float64).reshape(len(wavelet), -1).sum(axis=1)
    n = 1 << int(np.ceil(np.log2(max(8 * len(w), 1024))))
    spec = np.abs(np.fft.rfft(w, n))
    freqs = np.fft.rfftfreq(n, dt)
    if spec.max() == 0:
        return freqs[-1]
    above = np.flatnonzero(spec >= rel * spec.max())
    return float(freqs[above[-1]])


def default_subsample(wavelet, dt, nt, r, margin=2.0):
    """Time-subsampling factor for probing: ``k = ⌊1/(margin·f_max·dt)⌋``.

    Why it is safe: the gradient is the zero-lag correlation ``Σ_n u[n]v̈[n]dt``
    of two fields band-limited to ``f_max`` (the wave equation is linear: no
    frequency above the source's appears). Their product is band-limited to
    ``2 f_max`` and, by the Poisson summation formula, its samples at interval
    ``Δ`` sum *exactly* to its integral when ``1/Δ > 2 f_max``: the aliased
    terms are the product's spectrum at multiples of ``1/Δ``. With ``f_max`` the
    −60 dB point of the source spectrum and ``margin = 2`` (``Δ = 1/(2 f_max)``),
    every aliased pair of frequencies has one member at or above ``f_max``, so the
    error is below −60 dB of the sum. Measured on the Overthrust shot of
    BENCHMARKS.md (f_max = 25.5 Hz, dt = 1.96 ms → k = 9): the time-subsampled
    *exact* gradient differs from the full one by 6e-4 (relative L2). ``k`` is
    reduced when needed so that ``nsub ≥ r``.
    """
    fmax = max_frequency(wavelet, dt)
    k = max(1, int(np.floor(1.0 / (margin * fmax * dt))))
    while k > 1 and (nt - 1) // k + 1 < r:
        k -= 1
    return k


def _default_block(r):
    # Measured on the 801×207 Overthrust shot, r = 32, k = 9 (BENCHMARKS.md): B = 4, 8, 16 ran
    # at 1.21×, 1.24×, 1.29× plain propagation in one run — the flushes are bound by their
    # B·r multiply-adds per point, not by the accumulator's memory traffic, once ū streams
    # with unit stride — and B = 4 also stores least.
    return 4


def _probing_for_shot(opts, wavelet_c, dt, nt, probe_data, rng):
    """Design the probes of one shot on its sub-sampled computational axis (``probe_data``:
    the shot record that designs QR/Hutch++ probes)."""
    from .probing import design_probes
    r = opts.ps
    if r > nt:
        raise ValueError(f"ps = {r} probes exceed the {nt} computational time steps")
    k = default_subsample(wavelet_c, dt, nt, r) if opts.subsample == "auto" else int(opts.subsample)
    nsub = (nt - 1) // k + 1
    if r > nsub:
        raise ValueError(f"ps = {r} probes exceed the {nsub} sub-sampled time steps (subsample = {k})")
    t_sub = k * dt * np.arange(nsub)
    kwargs = dict(opts.probe_kwargs)
    if opts.mode in ("QR", "hutchpp"):
        if probe_data is None:
            raise ValueError(f"probing mode {opts.mode!r} needs the observed data to design its probes")
        kwargs["data"] = resample(probe_data.arrays[0], probe_data.time, t_sub)
    if opts.mode == "dft":
        kwargs.setdefault("dt", k * dt)
        kwargs.setdefault("band", (0.0, max_frequency(wavelet_c, dt, rel=1e-2)))
    Q = design_probes(opts.mode, nsub, r, seed=rng, **kwargs)
    block = opts.block or _default_block(r)
    return Probing(Q, subsample=k, method=opts.method, block=block)


def _shot_seeds(seed, nshots):
    """One independent Generator per shot, reproducible from ``seed`` whatever the scheduling."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(
        None if seed is None else seed)
    return [np.random.default_rng(s) for s in ss.spawn(nshots)]


# --------------------------------------------------------------------------- one shot
def _shot_gradient(model, q, rec_geometry, adjoint_traces, opts, rng, probe_data=None):
    """Forward (storing or probing the wavefield), then the adjoint driven by ``adjoint_traces``.

    ``adjoint_traces(rec_c, dt, nt)`` maps the computational-axis receiver traces to the
    computational-axis adjoint source (and may record the misfit). It should write the
    source into ``rec_c`` in place and return it: :func:`run_adjoint` then injects that
    buffer without a copy. Returns the gradient ``−dt Σ u·v̈`` (probed if ``opts.ps``)
    on the padded grid and ``dt``.
    """
    dt, nt = computational_axis(model, q.geometry, rec_geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    src_coords, rec_coords = q.geometry.coordinates[0], rec_geometry.coordinates[0]
    usave = probing = ubar = None
    if opts.ps is None:
        rec, usave = run_forward(model, src_coords, wc, rec_coords, dt, nt, save=True)
    else:
        probing = _probing_for_shot(opts, wc, dt, nt, probe_data, rng)
        rec, ubar = run_forward(model, src_coords, wc, rec_coords, dt, nt, probing=probing)
    y = adjoint_traces(rec, dt, nt)
    del rec  # the traces' buffer now holds y (or, if y is a new array, is freed here)
    _, grad, _ = run_adjoint(model, rec_coords, y, dt, nt, usave=usave, probing=probing, ubar=ubar,
                             restore_ubar=False)
    release(usave, ubar)  # free nt·N (or r·N) floats now, before the next shot allocates its own
    return grad, dt


def shot_objective(model, q, d, opts, rng=None):
    """Misfit and gradient (padded grid, float32) of one shot — the unit of parallel work."""
    misfit = []

    def residual_source(rec, dt, nt):
        res = from_computational(rec, d.geometry[0], dt, nt)
        res -= d.arrays[0]
        misfit.append(0.5 * d.dt * float(np.einsum("ij,ij->", res, res, dtype=np.float64)))
        # the synthetic traces are dead: the adjoint source overwrites them in place,
        # and run_adjoint injects that buffer without a copy
        from_computational_adjoint(res, d.geometry[0], dt, nt, out=rec)
        rec *= d.dt / dt
        return rec

    grad, _ = _shot_gradient(model, q, d.geometry, residual_source, opts, rng, probe_data=d)
    return misfit[0], grad


def fwi_objective(model, q, d, ps=None, mode="QR", seed=None, *, subsample="auto", method="blocked",
                  block=None, probe_kwargs=None, client=None, progress=False):
    """FWI misfit and gradient summed over the shots of ``q``/``d``.

    Parameters
    ----------
    model : Model
        Current model (squared slowness).
    q : Data
        Source wavelets per shot.
    d : Data
        Observed shot records (any sampling; resampled internally).
    ps : None or int
        None → exact gradient (full storage); r → probed gradient with r probes.
    mode, seed, subsample, method, block, probe_kwargs
        Probing options, see :class:`GradientOptions`; ``seed`` (int, SeedSequence
        or None) spawns one independent generator per shot.
    client : dask.distributed.Client, str or None
        Run shots as Dask tasks (see :mod:`timeprobe.parallel`); serial when None.

    Returns
    -------
    f : float
        ``½ Σ dt_d ‖R P u − d‖²``.
    g : ndarray (float32, model shape)
        Gradient w.r.t. squared slowness.
    """
    check_inputs(model, q, d=d)
    opts = GradientOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                           probe_kwargs=dict(probe_kwargs or {}))
    if client is not None:
        from .parallel import parallel_objective
        return parallel_objective(model, q, d, opts, seed=seed, client=client)
    rngs = _shot_seeds(seed, q.nshots)
    f = 0.0
    g = np.zeros(model.shape_padded, dtype=np.float64)
    shots = range(q.nshots)
    if progress:
        from tqdm.auto import tqdm
        shots = tqdm(shots, desc="shots", leave=False)
    for i in shots:
        fi, gi = shot_objective(model, q[i], d[i], opts, rngs[i])
        f += fi
        g += gi
    return f, model.unpad(g).astype(np.float32)


def jacobian_adjoint(model, q, dd, ps=None, mode="QR", seed=None, *, probe_data=None,
                     subsample="auto", method="blocked", block=None, probe_kwargs=None):
    """Adjoint Born ``Jᵀ δd`` (RTM image), exact (``ps=None``) or probed.

    Same convention as :func:`timeprobe.propagators.born_adjoint`
    (``Jᵀ δd = −Σ_n u[n]·v̈[n]`` with ``v`` driven by ``Rᵀ δd``). For the "QR"
    mode the probes are designed from ``probe_data`` (default ``δd`` itself).
    """
    check_inputs(model, q, d=dd)
    opts = GradientOptions(ps=ps, mode=mode, subsample=subsample, method=method, block=block,
                           probe_kwargs=dict(probe_kwargs or {}))
    rngs = _shot_seeds(seed, q.nshots)
    pdata = dd if probe_data is None else probe_data
    g = np.zeros(model.shape_padded, dtype=np.float64)
    for i in range(q.nshots):
        traces = lambda rec, dt, nt, i=i: from_computational_adjoint(dd.arrays[i], dd.geometry[i], dt, nt,
                                                                     out=rec)
        grad, dt = _shot_gradient(model, q[i], dd.geometry[i], traces, opts, rngs[i], probe_data=pdata[i])
        g += grad / dt  # the operators compute −dt·Σ u·v̈
    return model.unpad(g).astype(np.float32)
