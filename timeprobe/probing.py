r"""Probe matrices for time probing (randomized trace estimation of the gradient).

For every grid point :math:`x` the adjoint-state gradient is a trace over time,

.. math::
    g(x) = -\sum_t \Delta t\,\ddot u(t, x)\,v(t, x) = -\mathrm{tr}\big(\ddot{\mathbf u}_x\mathbf v_x^\top\big),
    \qquad \ddot{\mathbf u}_x, \mathbf v_x\in\mathbb R^{n_t}\ (\Delta t \text{ folded into } \ddot{\mathbf u}_x).

With a probe matrix :math:`\mathbf Q\in\mathbb R^{n_t\times r}` the propagators accumulate
:math:`\bar{\mathbf u}_x = \mathbf Q^\top\ddot{\mathbf u}_x` (forward run) and
:math:`\bar{\mathbf v}_x = \mathbf Q^\top\mathbf v_x` (adjoint run), and

.. math::
    g(x) \approx -\bar{\mathbf u}_x^\top\bar{\mathbf v}_x
         = -\ddot{\mathbf u}_x^\top\,\mathbf Q\mathbf Q^\top\,\mathbf v_x ,

which needs :math:`r\cdot N` memory instead of :math:`n_t\cdot N`. The estimate is exact when
:math:`\mathbf Q\mathbf Q^\top = \mathbf I` and unbiased when
:math:`\mathbb E[\mathbf Q\mathbf Q^\top] = \mathbf I`. :func:`design_probes` builds
:math:`\mathbf Q` in one of :data:`PROBE_MODES`:

* ``"QR"`` — orthonormal basis of the dominant time subspace of the observed data
  (randomized SVD); biased projection, exact at ``r = nt``. The package default.
* ``"hutchpp"`` — ``[Q1 | G]``: half the budget on the data subspace, half on a projected
  Rademacher block; unbiased.
* ``"rademacher"`` :math:`\mathbf S/\sqrt r`, ``"gaussian"`` :math:`\mathbf G/\sqrt r` —
  unbiased Hutchinson probes.
* ``"orthogonal"`` — :math:`\sqrt{n_t/r}\,\times` a Haar-random orthonormal frame; unbiased,
  exact at ``r = nt``.
* ``"dft"`` — :math:`\sqrt{2/n_t}\cos(2\pi f t)`, :math:`\sqrt{2/n_t}\sin(2\pi f t)` at
  ``r/2`` Fourier-grid frequencies of the source band; projection on those frequencies.
* ``"identity"`` — :math:`\mathbf I_{n_t}` (``r = nt``); exact, for tests.

Why the ``"QR"`` defaults (``power_iterations=1``, ``oversample=r``, ``keep_unshifted=True``):
measured on the Overthrust (small) model, ocean-bottom receivers at 475 m, source at 25 m,
200 receivers, probes from the observed data, r = 32; Devito full-storage wavefields of the
smooth model, exact :math:`g = -\sum_t\Delta t\,\ddot u v` against
``-dt * probed_trace(Q, ü, v)``; cosine on the whole model / below the water layer; data
shifted by :func:`direct_arrival_shift` (the caller passes ``shift=``; it is 0 by default):

=====================================  ===================  ====================
design                                 8 Hz, 3 s, x = 5 km  10 Hz, 4 s, x = 2 km
=====================================  ===================  ====================
seed: single pass, shifted data only   0.9931 / 0.9892      0.9835 / 0.9606
randomized SVD, shifted data only      0.9973 / 0.9958      0.9918 / 0.9808
default: randomized SVD, [D, T_s D]    0.9972 / 0.9967      0.9916 / 0.9860
=====================================  ===================  ====================

(relative l2 errors 0.118 → 0.074 and 0.180 → 0.129). Without the shift the seed design
reaches only 0.80 and 0.65 on the whole model (the near-source wavefield precedes the first
recorded arrival). Weighting by the source spectrum helped in the second case at r ≤ 32 and
hurt slightly in the first, so it is an option, not the default.

Designs measured against these defaults (``scripts/probe_designs.py``, ``benchmarks/probe_designs.md``;
one shot each of overthrust_small 3 s and 8 s, an edge-source layered model, an edge-source salt
model; adjoint driven by the residual): 3 power iterations or 3r oversampling change the cosine by
< 2e-3; probes from the residual alone are poor (0.38–0.64 at r = 32); the residual beside the
observed record helps at r = 64 and hurts at r = 32; time-windowed (block-diagonal) probes lose
at equal r, and keeping finished windows in 8 bit does not buy it back except in places. What
helps everywhere is the current model's *synthetic* record beside the observed one (``probes_for_shot``
with a tuple of records; ``fwi_objective(probe_data="synthetic")``): edge source 0.950 → 0.976 at
r = 32 and 0.991 → 0.9999 at r = 64, others unchanged or better. It costs a plain forward run (or
the previous iteration's record), so it is an option, not the default.

Time axis: ``nt`` samples ``t = dt * arange(nt)`` (ms); frequencies in kHz. The data ``D``
(observed shot record, ``(nt, nrec)``) must already be resampled onto that axis.

All randomness comes from an explicit ``seed`` (int, ``None`` or a
:class:`numpy.random.Generator`), never from NumPy's global generator; the same seed gives
the same probes. Everything is computed in float64 and returned in ``dtype``.

Probing a shot (everything here is NumPy; the propagators consume the result):

* :class:`ProbingOptions` — what the user chooses (``ps``, ``mode``, ``subsample``, ``method``,
  ``block``, ``probe_kwargs``), validated once;
* :func:`default_subsample` — the time-subsampling rule ``k = ⌊1/(2 f_max dt)⌋`` (Poisson bound);
* :func:`probes_for_shot` — the per-shot :class:`Probing` (Q on the sub-sampled computational
  axis, k, the accumulation method), designed from the shot's record for data-driven modes;
* :func:`shot_generators` — one independent Generator per shot from one seed.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .mpi import broadcast, shared_entropy
from .utils import as_generator, serial_blas

__all__ = ["PROBE_MODES", "PROBE_METHODS", "DEFAULT_BLOCK", "design_probes", "direct_arrival_shift",
           "wavelet_spectrum", "shift_earlier", "projector_error", "orthonormality_error", "probe_quality",
           "probed_trace", "ProbingOptions", "Probing", "max_frequency", "default_subsample",
           "probes_for_shot", "shot_generators", "check_ps"]

#: probing modes understood by :func:`design_probes` (``"QR"`` is the package default)
PROBE_MODES = ("QR", "rademacher", "gaussian", "hutchpp", "dft", "orthogonal", "identity")

#: relative threshold below which a singular value of the sketched data counts as zero
#: (the direction is then replaced by a random orthonormal complement, see ``_data_basis``)
_RANK_RTOL = 1e-10


# ----------------------------------------------------------------------------- validation

def _check_int(name, value, minimum=None):
    # bool is an int subclass but never a meaningful count
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_data(mode, data, nt):
    if data is None:
        raise ValueError(f"mode {mode!r} needs the observed data (an (nt, nrec) shot record on the "
                         f"probing time axis) through data=...; modes that need no data: "
                         f"{tuple(m for m in PROBE_MODES if m not in ('QR', 'hutchpp'))}")
    D = np.asarray(data)
    if not (np.issubdtype(D.dtype, np.floating) or np.issubdtype(D.dtype, np.integer)):
        raise TypeError(f"data must be a real numeric array, got dtype {D.dtype}")
    if D.ndim == 1:
        D = D[:, None]
    if D.ndim != 2:
        raise ValueError(f"data must be an (nt, nrec) array, got shape {D.shape}")
    if D.shape[0] != nt:
        raise ValueError(f"data has {D.shape[0]} time samples but the probing axis has nt={nt}: "
                         "resample the observed data onto the probing time axis first")
    if D.shape[1] == 0:
        raise ValueError("data has no traces (shape {})".format(D.shape))
    D = D.astype(np.float64)
    if not np.all(np.isfinite(D)):
        raise ValueError("data contains NaN or inf")
    return D


def _check_shifts(shift, nt):
    if isinstance(shift, (list, tuple, np.ndarray)):
        shifts = [_check_int("shift", s, 0) for s in np.asarray(shift, dtype=object).ravel()]
        if not shifts:
            raise ValueError("shift must be an integer or a non-empty sequence of integers")
    else:
        shifts = [_check_int("shift", shift, 0)]
    for s in shifts:
        if s >= nt:
            raise ValueError(f"shift={s} samples is not smaller than nt={nt} (nothing of the data would remain)")
    return shifts


def _check_spectrum(spectrum):
    try:
        freqs, amp = spectrum
    except (TypeError, ValueError):
        raise TypeError("spectrum must be a pair (freqs_khz, amplitude) of 1D arrays") from None
    freqs = np.asarray(freqs, dtype=np.float64).ravel()
    amp = np.asarray(amp, dtype=np.float64).ravel()
    if freqs.size != amp.size or freqs.size < 2:
        raise ValueError(f"spectrum: freqs and amplitude must have the same length >= 2, got "
                         f"{freqs.size} and {amp.size}")
    if not (np.all(np.isfinite(freqs)) and np.all(np.isfinite(amp))):
        raise ValueError("spectrum contains NaN or inf")
    if np.any(np.diff(freqs) <= 0):
        raise ValueError("spectrum: freqs must be strictly increasing")
    if np.any(amp < 0) or not np.any(amp > 0):
        raise ValueError("spectrum: amplitudes must be >= 0 and not all zero")
    return freqs, amp


def _check_band(band):
    try:
        fmin, fmax = (float(b) for b in band)
    except (TypeError, ValueError):
        raise TypeError(f"band must be a pair (fmin_khz, fmax_khz), got {band!r}") from None
    if not (np.isfinite(fmin) and np.isfinite(fmax)) or fmin < 0 or fmax <= fmin:
        raise ValueError(f"band must satisfy 0 <= fmin < fmax (kHz), got {band!r}")
    return fmin, fmax


# ----------------------------------------------------------------------------- helpers

def direct_arrival_shift(src_depth_m, rec_depth_m, dt_ms, v_water=1.5):
    r"""Time shift (integer samples) of the direct water arrival, for ocean-bottom receivers.

    .. math:: t_s = \left\lfloor \frac{|z_{src} - z_{rec}|}{v_w\,\Delta t} \right\rceil

    (m / (km/s) = ms). With the receivers on the sea floor and the source near the surface the
    recorded data start :math:`t_s` later than the wavefield around the source; shifting the
    data earlier by :math:`t_s` makes the data subspace of ``"QR"`` probes also represent the
    early (near-source) part of the wavefield.

    ``rec_depth_m`` may be an array (receivers at varying depth): the smallest vertical
    distance is used, so that no receiver's first arrival is shifted before ``t = 0``.
    """
    zs = np.asarray(src_depth_m, dtype=np.float64)
    zr = np.asarray(rec_depth_m, dtype=np.float64)
    if zs.size != 1:
        raise ValueError(f"src_depth_m must be a scalar, got shape {zs.shape}")
    if zr.size == 0 or not (np.all(np.isfinite(zr)) and np.isfinite(zs).all()):
        raise ValueError("depths must be finite (and rec_depth_m non-empty)")
    dt_ms = _check_positive_float("dt_ms", dt_ms)
    v_water = _check_positive_float("v_water", v_water)
    dz = np.min(np.abs(zr - zs.item()))
    return int(np.rint(dz / v_water / dt_ms))


def wavelet_spectrum(wavelet, dt):
    """Amplitude spectrum ``(freqs_khz, |W(f)|)`` of a source wavelet sampled every ``dt`` ms.

    Convenience for the ``spectrum=`` argument of :func:`design_probes`.
    """
    w = np.asarray(wavelet, dtype=np.float64).ravel()
    if w.size < 2 or not np.all(np.isfinite(w)):
        raise ValueError("wavelet must have at least 2 finite samples")
    dt = _check_positive_float("dt", dt)
    return np.fft.rfftfreq(w.size, dt), np.abs(np.fft.rfft(w))


def shift_earlier(D, s):
    r"""Shift the traces of ``D`` (``(nt, ntr)``) earlier by ``s`` samples, zero fill at the end:
    :math:`(\mathbf T_s\mathbf D)[t] = \mathbf D[t + s]` for :math:`t < n_t - s`, else 0."""
    D = np.asarray(D)
    s = _check_int("s", s, 0)
    out = np.zeros_like(D)
    if s < D.shape[0]:
        out[:D.shape[0] - s] = D[s:]
    return out


def _spectral_weight(D, dt, spectrum):
    """Zero-phase filter of every trace by the source amplitude spectrum (zero-padded to 2nt so
    the circular FFT convolution does not wrap energy from the end of the record to its start)."""
    freqs, amp = spectrum
    nt = D.shape[0]
    nfft = 2 * nt
    f = np.fft.rfftfreq(nfft, dt)
    w = np.interp(f, freqs, amp, left=0.0, right=0.0)
    if not np.any(w > 0):
        raise ValueError("spectrum is zero at every frequency of the probing axis "
                         f"(0 .. {f[-1]:.4g} kHz); check its units (kHz)")
    return np.fft.irfft(np.fft.rfft(D, n=nfft, axis=0) * w[:, None], n=nfft, axis=0)[:nt]


def _orth(A):
    # Householder QR: orthonormal columns even when A is (numerically) rank deficient
    return np.linalg.qr(A, mode="reduced")[0]


def _complete(Q, k, rng):
    """Append ``k`` random orthonormal columns orthogonal to the columns of ``Q``."""
    nt = Q.shape[0]
    if k == 0:
        return Q
    G = rng.standard_normal((nt, k))
    # two rounds of Gram-Schmidt against Q ("twice is enough") before orthonormalising G
    for _ in range(2):
        G -= Q @ (Q.T @ G)
    return np.hstack([Q, _orth(G)])


def _shift_later(Y, s):
    # adjoint of shift_earlier: (T_s^T Y)[t] = Y[t - s] for t >= s, else 0
    if s == 0:
        return Y
    out = np.zeros_like(Y)
    out[s:] = Y[:Y.shape[0] - s]
    return out


class _ShiftedStack:
    r"""The probing data :math:`\mathbf D_a = [\mathbf T_{s_1}\mathbf D, \dots, \mathbf T_{s_m}\mathbf D]`
    as an implicit operator (the shifted copies are never stored: for large 3D records the
    stacked matrix would cost m times the record)."""

    def __init__(self, D, shifts):
        self.D = D
        self.shifts = tuple(shifts)
        self.nt, self.nrec = D.shape

    def matmul(self, X):
        r""":math:`\mathbf D_a\mathbf X = \sum_i \mathbf T_{s_i}(\mathbf D\mathbf X_i)`."""
        n = self.nrec
        out = np.zeros((self.nt, X.shape[1]))
        for i, s in enumerate(self.shifts):
            out += shift_earlier(self.D @ X[i * n:(i + 1) * n], s)
        return out

    def rmatmul(self, Y):
        r""":math:`\mathbf D_a^\top\mathbf Y = [\mathbf D^\top\mathbf T_{s_i}^\top\mathbf Y]_i`."""
        return np.vstack([self.D.T @ _shift_later(Y, s) for s in self.shifts])


def _data_basis(Da, r, rng, power_iterations, oversample):
    r"""Orthonormal :math:`n_t\times r` basis of the dominant left singular subspace of ``Da``.

    Randomized SVD (Halko, Martinsson & Tropp 2011) on :math:`\mathbf A = \mathbf D_a\mathbf D_a^\top`:
    :math:`\mathbf Y = \mathbf D_a(\mathbf D_a^\top\mathbf S)` with :math:`\mathbf S` Rademacher
    :math:`n_t\times(r+p)`, :math:`q` power iterations
    :math:`\mathbf Y\leftarrow\mathbf D_a(\mathbf D_a^\top\mathbf Y)` (re-orthonormalised after
    every product, which keeps the small singular directions above round-off), then the top
    :math:`r` left singular vectors of :math:`\mathbf Q_Y^\top\mathbf D_a` lifted by
    :math:`\mathbf Q_Y`. With :math:`p = 0` this is the span of
    :math:`\mathrm{qr}(\mathbf A^{q+1}\mathbf S)` (the seed's algorithm for :math:`q = 0`).
    Directions with singular value below ``_RANK_RTOL`` times the largest (rank-deficient data:
    zero traces, fewer traces than probes) are replaced by a random orthonormal complement.
    """
    nt = Da.nt
    k = min(r + (r if oversample is None else oversample), nt)
    S = rng.choice(np.array([-1.0, 1.0]), size=(nt, k))
    Q = _orth(Da.matmul(Da.rmatmul(S)))
    for _ in range(power_iterations):
        Q = _orth(Da.matmul(_orth(Da.rmatmul(Q))))
    Ub, sb, _ = np.linalg.svd(Da.rmatmul(Q).T, full_matrices=False)
    rank = int(np.sum(sb > _RANK_RTOL * sb[0])) if sb.size and sb[0] > 0 else 0
    Qd = Q @ Ub[:, :min(rank, r)]
    # re-orthonormalise: the lift keeps orthonormality only up to the accuracy of Q
    Qd = _orth(Qd) if Qd.shape[1] else Qd
    return _complete(Qd, r - Qd.shape[1], rng)


def _probe_data(D, shifts, keep_unshifted, dt, spectrum):
    """The operator whose dominant time subspace the data-driven modes capture:
    ``[D, T_s1 D, T_s2 D, ...]`` (optionally weighted by the source spectrum)."""
    if spectrum is not None:
        if dt is None:
            raise ValueError("weighting the data by spectrum=... needs the time step dt (ms)")
        D = _spectral_weight(D, dt, spectrum)
    shifts = sorted(set(shifts) | ({0} if keep_unshifted else set()))
    return _ShiftedStack(D, shifts)


# ----------------------------------------------------------------------------- main entry

@serial_blas()
def design_probes(mode, nt, r, data=None, seed=None, *, power_iterations=1, shift=0,
                  dt=None, band=None, dtype=np.float32, oversample=None, keep_unshifted=True,
                  spectrum=None):
    r"""Probe matrix :math:`\mathbf Q\in\mathbb R^{n_t\times r}` for :math:`g \approx -\ddot{\mathbf u}^\top\mathbf Q\mathbf Q^\top\mathbf v`.

    Parameters
    ----------
    mode : str
        One of :data:`PROBE_MODES`:

        ``"QR"`` (data-driven projection)
            :math:`\mathbf Q^\top\mathbf Q = \mathbf I_r`; :math:`\mathbf Q` spans (an
            approximation of) the top-:math:`r` left singular subspace of the probing data
            :math:`\mathbf D_a = [\mathbf D,\ \mathbf T_{s}\mathbf D]` (``T_s``: shift earlier
            by ``shift`` samples; just ``D`` when ``shift=0``). Randomized SVD: sketch
            :math:`\mathbf Y = \mathbf D_a\mathbf D_a^\top\mathbf S` with :math:`r+p`
            Rademacher columns, ``power_iterations`` passes
            :math:`\mathbf Y\leftarrow\mathbf D_a\mathbf D_a^\top\mathbf Y`, keep the top
            :math:`r` left singular vectors of the sketched data. The seed's
            :math:`\mathbf Q = \mathrm{qr}(\mathbf D(\mathbf D^\top\mathbf S))` is
            ``power_iterations=0, oversample=0, keep_unshifted=False``.
            :math:`g\approx-\ddot{\mathbf u}^\top\mathbf Q\mathbf Q^\top\mathbf v` is then
            an orthogonal projection in time: biased, but exact when :math:`r = n_t`
            (:math:`\mathbf Q\mathbf Q^\top = \mathbf I`). Rank-deficient data (zero traces,
            fewer traces than probes) are completed by a random orthonormal complement, so
            :math:`\mathbf Q^\top\mathbf Q = \mathbf I_r` always.
        ``"hutchpp"`` (Hutch++ split of the budget, unbiased)
            :math:`\mathbf Q = [\mathbf Q_1\,|\,\mathbf G]`, :math:`\mathbf Q_1` the ``"QR"``
            basis with :math:`r_1 = \lceil r/2\rceil` columns (built from its own Rademacher
            sketch :math:`\mathbf S_2`), and
            :math:`\mathbf G = \sqrt{1/r_2}\,(\mathbf I - \mathbf Q_1\mathbf Q_1^\top)\mathbf S_1`
            with :math:`\mathbf S_1` an independent :math:`n_t\times r_2` Rademacher matrix,
            :math:`r_2 = \lfloor r/2\rfloor`. For even :math:`r` the scale
            :math:`\sqrt{1/r_2} = \sqrt{2/r} = \sqrt{3/\tilde m}` with :math:`\tilde m = 3r/2`,
            i.e. METHOD.md's factor. Because :math:`\mathbb E[\mathbf S_1\mathbf S_1^\top] =
            r_2\mathbf I` and :math:`\mathbf S_1` is independent of :math:`\mathbf Q_1`,
            :math:`\mathbb E[\mathbf G\mathbf G^\top\,|\,\mathbf Q_1] = \mathbf I -
            \mathbf Q_1\mathbf Q_1^\top`, hence

            .. math:: \mathbb E[\mathbf Q\mathbf Q^\top] = \mathbf I, \qquad
               g \approx -\ddot{\mathbf u}^\top\mathbf Q_1\mathbf Q_1^\top\mathbf v
               - (\mathbf G^\top\ddot{\mathbf u})^\top(\mathbf G^\top\mathbf v)

            is unbiased: exact on the data subspace, Hutchinson on its complement (the
            bilinear form of Meyer et al.'s Hutch++ trace estimator). Requires ``r >= 2``.
        ``"rademacher"``
            :math:`\mathbf Q = \mathbf S/\sqrt r`, :math:`S_{ij} = \pm 1`;
            :math:`\mathbb E[\mathbf Q\mathbf Q^\top] = \mathbf I`.
        ``"gaussian"``
            :math:`\mathbf Q = \mathbf G/\sqrt r`, :math:`G_{ij}\sim\mathcal N(0,1)`;
            :math:`\mathbb E[\mathbf Q\mathbf Q^\top] = \mathbf I`.
        ``"orthogonal"``
            :math:`\mathbf Q = \sqrt{n_t/r}\,\mathbf H` with :math:`\mathbf H` Haar-distributed
            with orthonormal columns (QR of a Gaussian matrix, signs fixed by
            :math:`\mathrm{diag}(\mathbf R) > 0`). Its span is uniform, so
            :math:`\mathbb E[\mathbf H\mathbf H^\top] = (r/n_t)\mathbf I` and
            :math:`\mathbb E[\mathbf Q\mathbf Q^\top] = \mathbf I` for every :math:`r\le n_t`;
            exact at :math:`r = n_t`.
        ``"dft"``
            :math:`n_f = r/2` distinct frequencies :math:`f_k = k/(n_t\Delta t)` of the Fourier
            grid (never 0 or Nyquist) drawn without replacement, uniformly in ``band`` or with
            probability :math:`\propto` the ``spectrum`` amplitude (both: spectrum restricted
            to the band; neither: uniform over the whole grid). Columns
            :math:`\sqrt{2/n_t}\cos(2\pi f_k t)`, :math:`\sqrt{2/n_t}\sin(2\pi f_k t)`
            (interleaved, frequencies ascending) on :math:`t = \Delta t\cdot(0..n_t-1)`. Distinct
            grid frequencies make the columns exactly orthonormal, so
            :math:`\mathbf Q\mathbf Q^\top` projects onto the chosen frequencies (the
            on-the-fly DFT of Witte et al. 2019, real form). Needs ``dt`` and even ``r``.
        ``"identity"``
            :math:`\mathbf Q = \mathbf I_{n_t}` (``r`` must equal ``nt``): full storage, for
            exactness tests.
    nt : int
        Number of samples of the probing time axis.
    r : int
        Number of probes, ``1 <= r <= nt``.
    data : array (nt, nrec), optional
        Observed shot record on the probing time axis. Required by ``"QR"`` and
        ``"hutchpp"``, ignored otherwise.
    seed : int, None or numpy.random.Generator
        Source of all randomness (``None``: fresh OS entropy).
    power_iterations : int, default 1
        Power iterations of the randomized range finder (``"QR"``, ``"hutchpp"``).
    shift : int or sequence of int, default 0
        Shift(s) earlier, in samples, of the data copies used to design data-driven probes,
        e.g. :func:`direct_arrival_shift` for ocean-bottom receivers.
    dt : float, optional
        Time step (ms) of the probing axis; needed by ``"dft"`` and by ``spectrum=`` weighting.
    band : (float, float), optional
        ``"dft"`` only: frequency band (kHz) the frequencies are drawn from.
    dtype : numpy floating dtype, default float32
    oversample : int, optional
        Extra sketch columns :math:`p` of the randomized SVD (default: as many as the basis
        has columns, :math:`p = r` for ``"QR"``, :math:`p = r_1` for ``"hutchpp"``).
    keep_unshifted : bool, default True
        With ``shift > 0`` also keep the unshifted record in :math:`\mathbf D_a` (the shifted
        copy represents the wavefield near the source, the unshifted one near the receivers).
    spectrum : (freqs_khz, amplitude), optional
        Source amplitude spectrum (see :func:`wavelet_spectrum`). ``"dft"``: sampling density
        of the frequencies. ``"QR"``/``"hutchpp"``: the data are first filtered by the
        zero-phase filter of this amplitude, emphasising the source band in the subspace.

    Returns
    -------
    numpy.ndarray of shape ``(nt, r)`` and dtype ``dtype``.

    Raises
    ------
    TypeError, ValueError
        Non-integer or out-of-range ``nt``/``r``/``shift``/``power_iterations``, unknown mode,
        missing or malformed data (wrong number of samples, NaN/inf), ``"dft"`` with odd ``r``
        or without ``dt``, ``"identity"`` with ``r != nt``, ``"hutchpp"`` with ``r < 2``.
    """
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, one of {PROBE_MODES}, got {type(mode).__name__}")
    if mode not in PROBE_MODES:
        raise ValueError(f"unknown probing mode {mode!r}; valid modes are {PROBE_MODES}")
    nt = _check_int("nt", nt, 1)
    r = _check_int("r", r, 1)
    if r > nt:
        raise ValueError(f"r={r} probes exceed the nt={nt} samples of the time axis (need 1 <= r <= nt)")
    power_iterations = _check_int("power_iterations", power_iterations, 0)
    if oversample is not None:
        oversample = _check_int("oversample", oversample, 0)
    shifts = _check_shifts(shift, nt)
    if not isinstance(keep_unshifted, (bool, np.bool_)):
        raise TypeError(f"keep_unshifted must be a bool, got {type(keep_unshifted).__name__}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a numpy floating dtype, got {dtype!r}") from None
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    if dt is not None:
        dt = _check_positive_float("dt", dt)
    if spectrum is not None:
        spectrum = _check_spectrum(spectrum)
    if band is not None:
        band = _check_band(band)

    if mode == "identity":
        if r != nt:
            raise ValueError(f"mode 'identity' needs r == nt, got r={r}, nt={nt}")
        return np.eye(nt, dtype=dtype)

    if mode == "dft":
        if r % 2:
            raise ValueError(f"mode 'dft' needs an even r (cosine/sine pairs), got r={r}")
        if dt is None:
            raise ValueError("mode 'dft' needs the time step dt (ms) of the probing axis")
        return _dft_probes(nt, r, dt, band, spectrum, as_generator(seed)).astype(dtype)

    rng = as_generator(seed)
    if mode == "rademacher":
        return (rng.choice(np.array([-1.0, 1.0]), size=(nt, r)) / np.sqrt(r)).astype(dtype)
    if mode == "gaussian":
        return (rng.standard_normal((nt, r)) / np.sqrt(r)).astype(dtype)
    if mode == "orthogonal":
        Qh, R = np.linalg.qr(rng.standard_normal((nt, r)), mode="reduced")
        # sign fix: makes the distribution of Qh exactly Haar (Mezzadri 2007)
        Qh *= np.where(np.diag(R) < 0, -1.0, 1.0)
        return (np.sqrt(nt / r) * Qh).astype(dtype)

    D = _check_data(mode, data, nt)
    Da = _probe_data(D, shifts, keep_unshifted, dt, spectrum)
    if mode == "QR":
        return _data_basis(Da, r, rng, power_iterations, oversample).astype(dtype)

    # hutchpp
    if r < 2:
        raise ValueError("mode 'hutchpp' needs r >= 2 (one data column and one Hutchinson column)")
    r1, r2 = r - r // 2, r // 2
    # S1 is drawn first and independently of the data sketch, so G is unbiased given Q1
    S1 = rng.choice(np.array([-1.0, 1.0]), size=(nt, r2))
    Q1 = _data_basis(Da, r1, rng, power_iterations, oversample)
    G = (S1 - Q1 @ (Q1.T @ S1)) / np.sqrt(r2)
    return np.hstack([Q1, G]).astype(dtype)


def _dft_probes(nt, r, dt, band, spectrum, rng):
    nf = r // 2
    k = np.arange(1, (nt + 1) // 2)  # grid frequencies except 0 and Nyquist
    f = k / (nt * dt)
    weight = np.ones(k.size)
    if band is not None:
        weight *= (f >= band[0]) & (f <= band[1])
    if spectrum is not None:
        weight *= np.interp(f, spectrum[0], spectrum[1], left=0.0, right=0.0)
    ok = weight > 0
    if ok.sum() < nf:
        raise ValueError(f"mode 'dft' needs r/2={nf} distinct Fourier-grid frequencies (spacing "
                         f"1/(nt*dt)={1 / (nt * dt):.4g} kHz) inside the band/spectrum, only "
                         f"{int(ok.sum())} available: widen the band, lengthen the axis or lower r")
    chosen = np.sort(rng.choice(k[ok], size=nf, replace=False, p=weight[ok] / weight[ok].sum()))
    t = dt * np.arange(nt)
    arg = 2 * np.pi * np.outer(t, chosen / (nt * dt))
    Q = np.empty((nt, r))
    Q[:, 0::2] = np.cos(arg)
    Q[:, 1::2] = np.sin(arg)
    return Q * np.sqrt(2.0 / nt)


# ----------------------------------------------------------------------------- quality measures

def projector_error(Q, D):
    r"""Relative residual of projecting ``D`` onto the span of orthonormal ``Q``:
    :math:`\|(\mathbf I - \mathbf Q\mathbf Q^\top)\mathbf D\|_F / \|\mathbf D\|_F` (0 for ``D = 0``)."""
    Q = np.asarray(Q, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    if D.ndim == 1:
        D = D[:, None]
    if Q.ndim != 2 or D.ndim != 2 or Q.shape[0] != D.shape[0]:
        raise ValueError(f"Q (nt, r) and D (nt, n) must share nt, got {Q.shape} and {D.shape}")
    nD = np.linalg.norm(D)
    if nD == 0:
        return 0.0
    return float(np.linalg.norm(D - Q @ (Q.T @ D)) / nD)


def orthonormality_error(Q):
    r""":math:`\|\mathbf Q^\top\mathbf Q - \mathbf I_r\|_2` (spectral norm)."""
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2:
        raise ValueError(f"Q must be an (nt, r) array, got shape {Q.shape}")
    return float(np.linalg.norm(Q.T @ Q - np.eye(Q.shape[1]), 2))


def probe_quality(Q, D=None):
    """Summary of a probe matrix: ``{"r", "orthonormality_error", "identity_error",
    "projector_error"}`` with ``identity_error`` = ‖QQᵀ − I‖₂ (0 iff the probed gradient is
    exact) and ``projector_error`` (only with ``D``, meaningful for orthonormal ``Q``)."""
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2:
        raise ValueError(f"Q must be an (nt, r) array, got shape {Q.shape}")
    out = {"r": Q.shape[1], "orthonormality_error": orthonormality_error(Q),
           "identity_error": float(np.linalg.norm(Q @ Q.T - np.eye(Q.shape[0]), 2))}
    if D is not None:
        out["projector_error"] = projector_error(Q, D)
    return out


def probed_trace(Q, a, b):
    r"""Probed inner products along time: :math:`\sum_p (\mathbf Q^\top\mathbf a)_p(\mathbf Q^\top\mathbf b)_p
    = \mathbf a^\top\mathbf Q\mathbf Q^\top\mathbf b` for every column of ``a``, ``b``
    (``(nt, ...)`` arrays of the same shape) — the numpy reference of what the propagators
    compute (:math:`g \approx -\Delta t\cdot` ``probed_trace(Q, ü, v)``); the exact value is
    ``(a * b).sum(0)``."""
    Q = np.asarray(Q, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape[:1] != Q.shape[:1] or Q.ndim != 2:
        raise ValueError(f"a and b must both have shape (nt, ...) with nt = Q.shape[0]; got Q {Q.shape}, "
                         f"a {a.shape}, b {b.shape}")
    shape = a.shape[1:]
    ab = (Q.T @ a.reshape(a.shape[0], -1)) * (Q.T @ b.reshape(b.shape[0], -1))
    return ab.sum(0).reshape(shape)


# ----------------------------------------------------------------------------- probing a shot

#: accumulation methods of the propagators (see :class:`Probing`)
PROBE_METHODS = ("blocked", "eq")

#: snapshots per block of the blocked method (the ring buffer holds B − 1 of them in the forward
#: pass, B in the adjoint's direct update; memory (r + B + 1)·N_r at the adjoint's peak). Each
#: flush streams ū once (2r/B floats per point and snapshot forward, r/B adjoint): in a kernel
#: benchmark on the 801×207 Overthrust region (r = 32, one core) the flushes cost 0.48 ms per
#: snapshot at B = 4 and 0.35 ms at B = 8, and no less at B = 12 or 16 (their sums of B terms
#: no longer stay in registers); B = 8 holds 4·N_r more than B = 4 (+11 % at r = 32).
DEFAULT_BLOCK = 8


def check_ps(ps):
    """Validate a number of probes: ``None`` (exact) or a positive integer."""
    if ps is None:
        return None
    if isinstance(ps, bool) or not isinstance(ps, numbers.Integral):
        raise TypeError(f"ps (number of probes) must be a positive integer or None, got {ps!r}")
    if ps <= 0:
        raise ValueError(f"ps (number of probes) must be positive, got {ps}")
    return int(ps)


@dataclass
class ProbingOptions:
    """How gradients and images are computed (shared by every objective and driver).

    ps : None or int
        None: exact (full wavefield storage). int r > 0: probed with r probes.
    mode : str
        Probe design, see :func:`design_probes` ("QR" default).
    subsample : "auto" or int
        Time-subsampling factor ``k`` of the probed accumulation; "auto": :func:`default_subsample`.
    method : "blocked" or "eq"
        Probed accumulation (see :class:`Probing`).
    block : int or None
        Snapshots per block of the blocked method (None: :data:`DEFAULT_BLOCK`).
    probe_kwargs : dict
        Extra keyword arguments of :func:`design_probes` (power_iterations, shift, …).
    sum_padding : bool
        True (default): gradients are the exact derivative w.r.t. every physical point —
        the absorbing layers copy the edge points' ``m``, so their gradient is summed onto
        those points (:meth:`timeprobe.Model.pad_adjoint`; JUDI's ``sum_padding``), and probe
        fields cover the layers. False: the padded gradient restricted to the physical domain
        (Devito's examples' convention; exact everywhere but on the outermost points), and
        probe fields skip the layers (:func:`timeprobe.probe_buffers.probe_margin`: 31 % less
        probe memory and work on the 801×207 Overthrust). Images are always restricted.
    storage : None or timeprobe.storage.StorageOptions
        With ``ps=None``: store every k-th snapshot (raw, 16 or 8 bit, RAM or disk) instead of
        every snapshot (:mod:`timeprobe.storage`; the objectives parse the names).
    """
    ps: int | None = None
    mode: str = "QR"
    subsample: object = "auto"
    method: str = "blocked"
    block: int | None = None
    probe_kwargs: dict = field(default_factory=dict)
    sum_padding: bool = True
    storage: object = None

    def __post_init__(self):
        self.ps = check_ps(self.ps)
        if self.ps is not None and self.mode not in PROBE_MODES:
            raise ValueError(f"unknown probing mode {self.mode!r}; valid modes: {', '.join(PROBE_MODES)}")
        if self.subsample != "auto" and (isinstance(self.subsample, bool)
                                         or not isinstance(self.subsample, numbers.Integral)
                                         or self.subsample < 1):
            raise ValueError(f"subsample must be 'auto' or a positive integer, got {self.subsample!r}")
        if self.method not in PROBE_METHODS:
            raise ValueError(f"unknown probing method {self.method!r}; use 'blocked' or 'eq'")
        if self.block is not None:
            self.block = _check_int("block", self.block, 1)
        self.probe_kwargs = dict(self.probe_kwargs or {})
        if not isinstance(self.sum_padding, (bool, np.bool_)):
            raise TypeError(f"sum_padding must be True or False, got {self.sum_padding!r}")
        if self.storage is not None and self.ps is not None:
            raise ValueError(f"choose probing (ps={self.ps}) or stored snapshots (storage), not both")


@dataclass
class Probing:
    """The probing of one shot, as the propagators run it.

    Parameters
    ----------
    Q : array (nsub, r)
        Probe vectors on the (sub-sampled) computational axis ``t = k·s·dt``.
    subsample : int
        Time-subsampling factor ``k`` (``nsub = (nt − 1)//k + 1``).
    method : {"blocked", "eq"}
        ``"eq"`` is the reference formulation of the design: one Devito ``Eq`` per time step,
        ``ū[x, p] += k·dt·Q[s, p]·u(x)`` (streams the r×N accumulator through memory every step).
        ``"blocked"`` (default) takes the sub-sampled snapshots in blocks of ``block``, copies
        all but one of each block into a ring buffer and, once per block, applies ``Qᵀ`` to the
        block in one register-blocked Devito loop nest: the same sum, reordered, at a fraction of
        the memory traffic (:mod:`timeprobe.probe_buffers`).
    block : int
        Snapshots per block ``B`` for ``"blocked"`` (a ring buffer of ``B − 1`` region-sized
        fields in the forward pass, ``B`` in the adjoint's direct update).
    direct : bool
        Adjoint pass accumulates the gradient ``g −= v̈·(Q ū)`` directly instead of storing
        ``v̄`` (saves r·N floats; only for the cross-correlation image).
    dtype : numpy dtype
        Floating type of the run (that of the model).
    layers : bool
        The probe fields cover the absorbing layers too (default; gradients summed onto the
        edge points need them, see :class:`ProbingOptions`), else only the physical domain
        plus ``space_order/2`` points (images).
    """
    Q: np.ndarray
    subsample: int = 1
    method: str = "blocked"
    block: int = DEFAULT_BLOCK
    direct: bool = True
    dtype: object = np.float32
    layers: bool = True
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype).type
        self.Q = np.ascontiguousarray(self.Q, dtype=self.dtype)
        if self.Q.ndim != 2:
            raise ValueError(f"probe matrix Q must be 2D (nsub, r), got shape {self.Q.shape}")
        if self.method not in PROBE_METHODS:
            raise ValueError(f"unknown probing method {self.method!r}; use 'blocked' or 'eq'")
        self.subsample = _check_int("subsample", self.subsample, 1)
        self.block = _check_int("block", self.block, 1)

    @property
    def r(self):
        return self.Q.shape[1]

    @property
    def nsub(self):
        return self.Q.shape[0]

    def check_axis(self, nt):
        """Raise ``ValueError`` unless Q has one row per sub-sampled step of ``nt`` steps."""
        expected = (nt - 1) // self.subsample + 1
        if self.nsub != expected:
            raise ValueError(f"Q has {self.nsub} rows; the computational axis (nt = {nt}, subsample = "
                             f"{self.subsample}) needs {expected}")

    def time_weights(self, nt, scale):
        """Q spread on the computational axis (nt + 1 rows, zero between sub-sampled steps),
        times ``scale``: the weights of the ``"eq"`` method."""
        Qt = np.zeros((nt + 1, self.r), dtype=self.dtype)  # nt + 1: the sparse functions' length
        Qt[:nt:self.subsample] = scale * self.Q
        return Qt

    def blocked_weights(self, nt, scale):
        """Q arranged per block of B sub-sampled steps: (nblocks, B, r), rows scaled by ``scale``;
        row c holds the weights of the snapshots at times ``c·k·B + j·k``, j = 0 … B−1 (zero
        past the last one). The propagators select row ``time / (k·B)``."""
        B, k = self.block, self.subsample
        nblk = (nt - 1) // (k * B) + 1
        W = np.zeros((nblk * B, self.r), dtype=self.dtype)
        W[:self.nsub] = scale * self.Q
        return W.reshape(nblk, B, self.r)


def max_frequency(wavelet, dt, rel=1e-3):
    """Highest frequency (kHz) at which ``|FFT(wavelet)|`` still reaches ``rel`` × its peak."""
    w = np.asarray(wavelet, dtype=np.float64).reshape(len(wavelet), -1).sum(axis=1)
    n = 1 << int(np.ceil(np.log2(max(8 * len(w), 1024))))
    spec = np.abs(np.fft.rfft(w, n))
    freqs = np.fft.rfftfreq(n, dt)
    if spec.max() == 0:
        return float(freqs[-1])
    above = np.flatnonzero(spec >= rel * spec.max())
    return float(freqs[above[-1]])


def default_subsample(wavelet, dt, nt, r, margin=2.0):
    """Time-subsampling factor for probing: ``k = ⌊1/(margin·f_max·dt)⌋``.

    Why it is safe: the gradient is the zero-lag correlation ``Σ_n u[n]v̈[n]dt`` of two fields
    band-limited to ``f_max`` (the wave equation is linear: no frequency above the source's
    appears). Their product is band-limited to ``2 f_max`` and, by the Poisson summation formula,
    its samples at interval ``Δ`` sum *exactly* to its integral when ``1/Δ > 2 f_max``: the
    aliased terms are the product's spectrum at multiples of ``1/Δ``. With ``f_max`` the −60 dB
    point of the source spectrum and ``margin = 2`` (``Δ = 1/(2 f_max)``), every aliased pair of
    frequencies has one member at or above ``f_max``, so the error is below −60 dB of the sum
    (measured in BENCHMARKS.md). ``k`` is reduced when needed so that ``nsub ≥ r``.
    """
    fmax = max_frequency(wavelet, dt)
    k = max(1, int(np.floor(1.0 / (margin * fmax * dt))))
    while k > 1 and (nt - 1) // k + 1 < r:
        k -= 1
    return k


@serial_blas()
def probes_for_shot(opts, wavelet_c, dt, nt, probe_data=None, seed=None, dtype=np.float32):
    """The :class:`Probing` of one shot on its sub-sampled computational axis.

    ``opts`` a :class:`ProbingOptions` with ``ps`` set; ``wavelet_c`` the source wavelet on the
    computational axis (``dt`` ms, ``nt`` steps), which sets the subsampling; ``probe_data`` the
    shot record (a one-shot :class:`timeprobe.Data`) that designs "QR"/"hutchpp" probes, or a
    tuple of records designing them together, each scaled to unit Frobenius norm and placed side
    by side (e.g. the observed and the current model's synthetic record, see
    :func:`timeprobe.fwi_objective`'s ``probe_data``); ``seed`` an int or Generator.
    """
    from .geometry import resample
    r = opts.ps
    if r is None:
        raise ValueError("probes_for_shot needs opts.ps (the number of probes); ps=None is exact")
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
        if isinstance(probe_data, (tuple, list)):
            blocks = [resample(p.arrays[0], p.time, t_sub) for p in probe_data]
            kwargs["data"] = np.hstack([b / max(float(np.linalg.norm(b)), np.finfo(float).tiny) for b in blocks])
        else:
            kwargs["data"] = resample(probe_data.arrays[0], probe_data.time, t_sub)
    if opts.mode == "dft":
        kwargs.setdefault("dt", k * dt)
        kwargs.setdefault("band", (0.0, max_frequency(wavelet_c, dt, rel=1e-2)))
    Q = design_probes(opts.mode, nsub, r, seed=seed, dtype=np.float64, **kwargs)
    Q = broadcast(Q)  # under MPI: rank 0's probes on every rank, whatever the ranks' round-off
    return Probing(Q, subsample=k, method=opts.method, block=opts.block or DEFAULT_BLOCK, dtype=dtype,
                   layers=opts.sum_padding)


def shot_generators(seed, nshots):
    """One independent Generator per shot, reproducible from ``seed`` (int, SeedSequence or
    None) whatever the order or place the shots run in. Under MPI, ``None`` draws rank 0's
    entropy on every rank (:func:`timeprobe.mpi.shared_entropy`)."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(shared_entropy(seed))
    return [np.random.default_rng(s) for s in ss.spawn(nshots)]
