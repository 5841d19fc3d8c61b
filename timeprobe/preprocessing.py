"""Shot-record preprocessing before FWI: mute, band-pass, gain, normalisation, bad traces.

Every function takes a :class:`~timeprobe.geometry.Data` (one ``(nt, ntraces)`` array
per shot) and returns a new one; the input is never modified. Units as everywhere in
timeprobe: times in ms, frequencies in kHz (8 Hz = 0.008 kHz), distances in m,
velocities in km/s (so ``offset / velocity`` is in ms).

* :func:`offsets` — source–receiver distance of every trace;
* :func:`frequency_band` — peak and highest frequency of the survey's spectrum;
* :func:`top_mute` — zero everything that arrives before ``t0 + offset / v`` (direct
  wave, noise ahead of the first break), with a cosine taper;
* :func:`bandpass` — zero-phase Butterworth filter (``scipy.signal``); applied with the
  same corners to the source wavelet and the data it keeps ``d = G * q`` (multiscale FWI);
* :func:`delay` — shift traces later (room for a zero-phase filter's precursor);
* :func:`time_gain` — ``(t / t_ref)^p`` amplitude gain (geometrical-spreading correction);
* :func:`normalize_traces` — each trace divided by its L2 or maximum norm;
* :func:`reject_bad_traces` — drop dead and abnormally strong traces.
"""
from __future__ import annotations

import numbers

import numpy as np

from .geometry import Data, Geometry

__all__ = ["offsets", "frequency_band", "top_mute", "bandpass", "delay", "time_gain", "normalize_traces", "reject_bad_traces"]


def _check_data(d, name="d"):
    if not isinstance(d, Data):
        raise TypeError(f"{name} must be a timeprobe.Data, got {type(d).__name__}")
    return d


def _check_positive(name, v, unit):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number of {unit}, got {v!r}")
    return float(v)


def offsets(d, src_geometry):
    """Source–receiver distance ``‖x_r − x_s‖`` (m) of every trace: one array per shot.

    The distance includes the depth difference (for a surface survey it equals the
    horizontal offset). ``src_geometry`` holds one source point per shot.
    """
    _check_data(d)
    if not isinstance(src_geometry, Geometry):
        raise TypeError(f"src_geometry must be a timeprobe.Geometry, got {type(src_geometry).__name__}")
    if src_geometry.nshots != d.nshots:
        raise ValueError(f"{src_geometry.nshots} source position(s) for {d.nshots} shot(s)")
    if src_geometry.dim != d.geometry.dim:
        raise ValueError(f"source coordinates are {src_geometry.dim}D, receivers {d.geometry.dim}D")
    out = []
    for i in range(d.nshots):
        src = src_geometry.coordinates[i]
        if len(src) != 1:
            raise ValueError(f"shot {i}: offsets need one source point per shot, got {len(src)}")
        out.append(np.linalg.norm(d.geometry.coordinates[i] - src[0], axis=1))
    return out


def frequency_band(d, rel=1e-2):
    """``(f_peak, f_high)`` in kHz: the peak of the survey's mean amplitude spectrum and the highest
    frequency where it still reaches ``rel`` × that peak (traces zero-padded to twice their length).
    Raises ``ValueError`` if every sample is zero."""
    _check_data(d)
    n = 2 * d.geometry.nt
    spec = sum(np.abs(np.fft.rfft(a.astype(np.float64), n, axis=0)).sum(axis=1) for a in d.arrays)
    f = np.fft.rfftfreq(n, d.dt)
    if spec.max() == 0:
        raise ValueError("the data are all zero: no frequency band")
    return float(f[spec.argmax()]), float(f[np.flatnonzero(spec >= rel * spec.max())[-1]])


def top_mute(d, src_geometry, velocity, t0=0.0, taper=20.0):
    """Zero the samples that arrive before ``t_mute = t0 + offset / velocity``.

    The weight of sample ``t`` of a trace at offset ``h`` (m, :func:`offsets`) is 0 for
    ``t < t_mute``, rises as ``½(1 − cos(π (t − t_mute)/taper))`` over ``taper`` ms and is
    1 afterwards. ``velocity`` (km/s) is the apparent velocity of the mute line (e.g. the
    water velocity to remove everything above the direct wave, or a little below the
    first-arrival velocity), ``t0`` (ms) its intercept at zero offset (e.g. minus half the
    wavelet's length, to keep the first break whole).
    """
    _check_data(d)
    v = _check_positive("velocity", velocity, "km/s")
    if v > 20:
        raise ValueError(f"velocity = {v} km/s is not a seismic velocity; velocities are in km/s (1500 m/s = 1.5)")
    taper = float(taper)
    if not np.isfinite(taper) or taper < 0:
        raise ValueError(f"taper must be a non-negative number of ms, got {taper!r}")
    t = d.geometry.time[:, None]
    out = []
    for h, a in zip(offsets(d, src_geometry), d.arrays):
        tm = float(t0) + h[None, :] / v               # m / (km/s) = ms
        if taper > 0:
            w = 0.5 * (1 - np.cos(np.pi * np.clip((t - tm) / taper, 0.0, 1.0)))
        else:
            w = (t >= tm).astype(np.float64)
        out.append((a * w).astype(np.float32))
    return Data(d.geometry, out)


def bandpass(d, fmin=None, fmax=None, order=4):
    """Zero-phase Butterworth band-pass (``fmin`` and ``fmax`` in kHz; None: that side open).

    Each trace is zero-padded on both sides, filtered forwards and backwards
    (``scipy.signal.sosfiltfilt``, so the amplitude response is the Butterworth one
    squared, ``|H(f)|² = 1/(1 + (f/f_max)^{2n}) · (f/f_min)^{2n}/(1 + (f/f_min)^{2n})``, and
    the phase is zero) and cropped. With the zero padding the filter is one linear,
    time-invariant operator for every trace: filtering a source wavelet and the data it
    generated with the same corners keeps ``d = G * q`` — provided the wavelet starts late
    enough for the filtered wavelet's precursor (the zero-phase response is two-sided) to
    stay inside the record. Measured on a 10 Hz Ricker (delay 100 ms) low-passed at 5 Hz:
    37 % of the filtered wavelet's energy falls before t = 0 and is lost, 0.2 % when the
    wavelet and the data are first delayed by ``2 / f`` (:func:`delay`, ``f`` the lowest
    corner), which is what :func:`timeprobe.fwi` does for each frequency band.
    ``fmin = None`` gives a low-pass, ``fmax = None`` a high-pass.
    """
    from scipy.signal import butter, sosfiltfilt
    _check_data(d)
    if fmin is None and fmax is None:
        raise ValueError("bandpass needs fmin and/or fmax (kHz)")
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or not 1 <= order <= 16:
        raise ValueError(f"order must be an integer in 1…16, got {order!r}")
    nyq = 0.5 / d.dt
    for name, f in (("fmin", fmin), ("fmax", fmax)):
        if f is None:
            continue
        _check_positive(name, f, "kHz")
        if f >= nyq:
            raise ValueError(f"{name} = {f} kHz is at or above the Nyquist frequency {nyq:g} kHz of dt = {d.dt} ms "
                             f"(frequencies are in kHz: 8 Hz = 0.008)")
    if fmin is not None and fmax is not None and fmin >= fmax:
        raise ValueError(f"fmin = {fmin} kHz must be below fmax = {fmax} kHz")
    if fmin is None:
        sos = butter(order, fmax, btype="lowpass", fs=1.0 / d.dt, output="sos")
    elif fmax is None:
        sos = butter(order, fmin, btype="highpass", fs=1.0 / d.dt, output="sos")
    else:
        sos = butter(order, [fmin, fmax], btype="bandpass", fs=1.0 / d.dt, output="sos")
    # long enough for the impulse response to decay: several periods of the lowest corner
    f_low = min(f for f in (fmin, fmax) if f is not None)
    npad = int(np.ceil(4.0 * order / (f_low * d.dt)))
    out = []
    for a in d.arrays:
        padded = np.pad(a.astype(np.float64), ((npad, npad), (0, 0)))
        y = sosfiltfilt(sos, padded, axis=0, padtype=None)
        out.append(y[npad:npad + a.shape[0]].astype(np.float32))
    return Data(d.geometry, out)


def delay(d, ms):
    """The traces delayed by ``ms`` (a whole number of samples): ``ms`` of zeros in front and the
    time axis extended by as much (same ``t0``, ``t`` + ``ms``).

    Applied to both a source wavelet and its data it changes nothing physical (the wave
    equation is time invariant and starts at rest), but makes room for the precursor of
    a zero-phase filter (:func:`bandpass`).
    """
    _check_data(d)
    ms = float(ms)
    n = int(round(ms / d.dt))
    if not np.isfinite(ms) or ms < 0 or abs(n * d.dt - ms) > 1e-6 * d.dt:
        raise ValueError(f"delay must be a non-negative multiple of dt = {d.dt} ms, got {ms}")
    g = d.geometry
    geom = Geometry(g.coordinates, dt=g.dt, t=g.t + n * g.dt, t0=g.t0)
    return Data(geom, [np.pad(a, ((n, 0), (0, 0))) for a in d.arrays])


def time_gain(d, power=1.0, t_ref=1000.0):
    """Multiply every sample by ``(t / t_ref)^power`` (``t`` the sample time in ms, ``t ≥ 0``).

    ``power = 1`` roughly undoes 3D geometrical spreading in a constant medium
    (``power = 0.5`` in 2D). Samples at ``t ≤ 0`` get weight 0 for ``power > 0``.
    """
    _check_data(d)
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not np.isfinite(power):
        raise ValueError(f"power must be a finite number, got {power!r}")
    t_ref = _check_positive("t_ref", t_ref, "ms")
    t = np.clip(d.geometry.time, 0.0, None) / t_ref
    with np.errstate(divide="ignore"):
        w = np.where(t > 0, t ** float(power), 0.0 if power > 0 else 1.0)[:, None]
    return Data(d.geometry, [(a * w).astype(np.float32) for a in d.arrays])


def normalize_traces(d, norm="l2"):
    """Every trace divided by its norm (``"l2"``: ``‖a‖₂``; ``"max"``: ``max|a|``); zero traces stay zero.

    Removes source-strength and coupling differences between traces (use with an
    objective that compares normalised traces, or for QC).
    """
    _check_data(d)
    if norm not in ("l2", "max"):
        raise ValueError(f"norm must be 'l2' or 'max', got {norm!r}")
    out = []
    for a in d.arrays:
        a64 = a.astype(np.float64)
        n = np.linalg.norm(a64, axis=0) if norm == "l2" else np.abs(a64).max(axis=0, initial=0.0)
        out.append(np.where(n > 0, a64 / np.where(n > 0, n, 1.0), 0.0).astype(np.float32))
    return Data(d.geometry, out)


def reject_bad_traces(d, dead=1e-4, strong=10.0):
    """Drop dead and abnormally strong traces.

    With ``ρ`` the RMS amplitude of a trace and ``ρ̃`` the median RMS of the live traces
    of the whole survey, a trace is *dead* when ``ρ ≤ dead · ρ̃`` (all zeros, a
    disconnected channel) and *strong* when ``ρ > strong · ρ̃`` (spikes, noise bursts, a
    trace next to the source). Pass ``strong=None`` to keep strong traces.

    Returns
    -------
    clean : Data
        The kept traces (receiver coordinates follow them).
    kept : list of bool arrays
        Per shot, True for the traces kept (to subset other per-trace arrays).

    Raises ``ValueError`` naming the shot if a shot loses every trace (drop that shot
    first), or if every trace of the survey is dead.
    """
    _check_data(d)
    dead = float(dead)
    if not 0 <= dead < 1:
        raise ValueError(f"dead must lie in [0, 1), got {dead}")
    if strong is not None:
        strong = _check_positive("strong", strong, "times the median RMS")
        if strong <= 1:
            raise ValueError(f"strong must exceed 1 (a multiple of the median RMS), got {strong}")
    rms = [np.sqrt(np.mean(a.astype(np.float64) ** 2, axis=0)) for a in d.arrays]
    allrms = np.concatenate(rms)
    live = allrms[allrms > 0]
    if live.size == 0:
        raise ValueError("every trace is zero: nothing to invert")
    ref = float(np.median(live))
    kept, coords, arrays = [], [], []
    for i, (r, a) in enumerate(zip(rms, d.arrays)):
        k = r > dead * ref
        if strong is not None:
            k &= r <= strong * ref
        if not k.any():
            raise ValueError(f"shot {i}: all {len(r)} traces are dead or abnormally strong "
                             f"(median RMS of the survey {ref:.3g}); remove this shot")
        kept.append(k)
        coords.append(d.geometry.coordinates[i][k])
        arrays.append(a[:, k])
    g = d.geometry
    return Data(Geometry(coords, dt=g.dt, t=g.t, t0=g.t0), arrays), kept
