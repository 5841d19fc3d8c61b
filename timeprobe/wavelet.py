"""Source wavelet estimation by frequency-domain least squares against modelled impulse responses.

Model: the recorded trace ``j`` of shot ``i`` is the earth's impulse response convolved
with the source wavelet, ``d_ij = h_ij * w_i``. Modelling the same shot in a model ``m``
with a band-limited spike ``s`` as the source gives ``g_ij = h_ij * s`` (the wave
equation is linear and time invariant), so in the frequency domain

    D_ij(ω) = W_i(ω) · G_ij(ω) / S(ω).

The least-squares estimate over the traces ``j`` of one shot (``per_shot=True``) or over
every trace of the survey (one wavelet for all shots) is, per frequency,

    Ŵ(ω) = S(ω) · Σ_j conj(G_j(ω)) D_j(ω) / (Σ_j |G_j(ω)|² + ε · max_ω Σ_j |G_j(ω)|²).

Where the spike has energy and ``ε`` is negligible, ``Ŵ = W`` exactly when ``m`` is the
true model; above the spike's band ``Ŵ → 0``, so the spike's corner ``fmax`` must cover
the wavelet's band. Records are zero-padded to twice their length before the FFT
(linear, not circular, convolution). In a wrong model the estimate absorbs part of
the model error — the usual compromise of source estimation before FWI.

Units: times in ms, frequencies in kHz. The wavelet is returned on the data's time
axis (``Data`` with one trace per shot on the source geometry), ready to be the ``q``
of :func:`timeprobe.forward` / :func:`timeprobe.fwi_objective`.
"""
from __future__ import annotations

import numbers

import numpy as np

from .geometry import Data, Geometry
from .preprocessing import bandpass, frequency_band

__all__ = ["bandlimited_spike", "impulse_responses", "estimate_wavelet"]


def bandlimited_spike(geometry, fmax, delay=None):
    """A unit spike at ``delay`` ms low-passed (zero phase) at ``fmax`` kHz, on ``geometry``'s time axis.

    ``geometry`` is a source :class:`Geometry` (one wavelet per shot, all equal).
    ``delay`` defaults to ``3 / fmax`` (rounded to a sample): room for the two-sided
    filter response (the filtered spike is symmetric about ``delay``).
    """
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a timeprobe.Geometry, got {type(geometry).__name__}")
    if isinstance(fmax, bool) or not isinstance(fmax, numbers.Real) or not fmax > 0:
        raise ValueError(f"fmax must be a positive frequency in kHz, got {fmax!r}")
    t = geometry.time
    delay = 3.0 / fmax if delay is None else float(delay)
    k = int(round((delay - geometry.t0) / geometry.dt))
    if not 0 <= k < len(t):
        raise ValueError(f"spike delay {delay} ms lies outside the time axis [{t[0]}, {t[-1]}] ms")
    spike = np.zeros((len(t), 1), dtype=np.float32)
    spike[k] = 1.0
    one = Geometry([geometry.coordinates[0]], dt=geometry.dt, t=geometry.t, t0=geometry.t0)
    s = bandpass(Data(one, [spike]), fmax=fmax).arrays[0]
    return Data(geometry, [s] * geometry.nshots)


def impulse_responses(model, src_geometry, rec_geometry, fmax, delay=None):
    """Shot records modelled in ``model`` with :func:`bandlimited_spike` sources: ``(G, S)``.

    ``G`` (:class:`Data` on ``rec_geometry``) and the spike ``S`` (:class:`Data` on
    ``src_geometry``) share the time axis of ``rec_geometry``.
    """
    from .propagators import forward
    axis = src_geometry.with_time(dt=rec_geometry.dt, t=rec_geometry.t, t0=rec_geometry.t0)
    s = bandlimited_spike(axis, fmax, delay)
    return forward(model, s, rec_geometry), s


def estimate_wavelet(model, src_geometry, d, per_shot=False, fmax=None, eps=1e-4, delay=None, length=None,
                     return_responses=False):
    """Least-squares source wavelet(s) from shot records ``d`` and a model (module docstring).

    Parameters
    ----------
    model : Model
        Model in which the impulse responses are computed (the best one at hand).
    src_geometry : Geometry
        One source point per shot of ``d`` (its time axis is replaced by the data's).
    d : Data
        Observed shot records.
    per_shot : bool
        One wavelet per shot (sums over that shot's traces) instead of one for the survey.
    fmax : float, optional
        Corner (kHz) of the band-limited spike; it must cover the wavelet's band.
        Default: the highest frequency where the data's mean amplitude spectrum is
        above 1 % of its peak, times 1.5, capped at 80 % of the data's Nyquist frequency.
    eps : float
        Relative damping ``ε`` of the division (stabilises frequencies without energy).
    delay : float, optional
        Spike time (ms); default ``3 / fmax``.
    length : float, optional
        Keep the first ``length`` ms of the estimate (after ``t0``): weight 1 up to
        ``0.8 length``, a cosine taper to 0 at ``length``. Events the model does not explain
        (reflections missing from a smooth model) leak into the estimate at late times;
        the window removes them.
    return_responses : bool
        Also return the impulse responses ``G`` and the spike ``S``.

    Returns
    -------
    q : Data
        The wavelet(s) on ``src_geometry`` with the data's time axis (ms), one trace per
        shot (all equal unless ``per_shot``).
    """
    if not isinstance(d, Data):
        raise TypeError(f"d must be a timeprobe.Data, got {type(d).__name__}")
    if not isinstance(src_geometry, Geometry):
        raise TypeError(f"src_geometry must be a timeprobe.Geometry, got {type(src_geometry).__name__}")
    if src_geometry.nshots != d.nshots:
        raise ValueError(f"{src_geometry.nshots} source position(s) for {d.nshots} shot(s) of data")
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    nyq = 0.5 / d.dt
    if fmax is None:
        fmax = min(1.5 * frequency_band(d)[1], 0.8 * nyq)
    elif not 0 < fmax < nyq:
        raise ValueError(f"fmax = {fmax} kHz must lie between 0 and the data's Nyquist frequency {nyq:g} kHz "
                         f"(frequencies are in kHz: 30 Hz = 0.03)")
    window = np.ones(d.geometry.nt)
    if length is not None:
        length = float(length)
        if not length > 0:
            raise ValueError(f"length must be a positive number of ms, got {length}")
        tau = (d.geometry.time - d.geometry.t0) / length
        window = np.where(tau <= 0.8, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip((tau - 0.8) / 0.2, 0, 1))))
    G, S = impulse_responses(model, src_geometry, d.geometry, fmax, delay)
    nt = d.geometry.nt
    n = 2 * nt
    s_hat = np.fft.rfft(S.arrays[0][:, 0].astype(np.float64), n)
    num = [np.sum(np.conj(np.fft.rfft(g.astype(np.float64), n, axis=0))
                  * np.fft.rfft(a.astype(np.float64), n, axis=0), axis=1) for g, a in zip(G.arrays, d.arrays)]
    den = [np.sum(np.abs(np.fft.rfft(g.astype(np.float64), n, axis=0)) ** 2, axis=1) for g in G.arrays]
    if per_shot:
        pairs = list(zip(num, den))
    else:
        pairs = [(sum(num), sum(den))] * d.nshots
    wavelets = []
    for i, (nu, de) in enumerate(pairs):
        if de.max() == 0:
            raise ValueError(f"shot {i}: the modelled impulse responses are zero (receivers outside the "
                             f"wavefield's reach?)")
        w_hat = s_hat * nu / (de + eps * de.max())
        wavelets.append((np.fft.irfft(w_hat, n)[:nt] * window).astype(np.float32))
    q = Data(src_geometry.with_time(dt=d.dt, t=d.geometry.t, t0=d.geometry.t0), wavelets)
    return (q, G, S) if return_responses else q
