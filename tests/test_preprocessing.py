"""Tests of timeprobe.preprocessing against analytic signals (no wave propagation)."""
import numpy as np
import pytest
from scipy.signal import fftconvolve

from timeprobe.geometry import Data, Geometry
from timeprobe.preprocessing import bandpass, delay, frequency_band, normalize_traces, offsets, reject_bad_traces, time_gain, top_mute

DT, T = 2.0, 2000.0  # ms


def survey(arrays_per_shot, src_x=(0.0, 500.0), depth=10.0, t0=0.0):
    """Shots with receivers every 100 m from x = 0 on the same depth as the source."""
    rec, src = [], []
    for s, a in zip(src_x, arrays_per_shot):
        n = a.shape[1]
        rec.append(np.stack([100.0 * np.arange(n), np.full(n, depth)], 1))
        src.append(np.array([[s, depth]]))
    g = Geometry(rec, dt=DT, t=t0 + (arrays_per_shot[0].shape[0] - 1) * DT, t0=t0)
    return Data(g, arrays_per_shot), Geometry(src, dt=g.dt, t=g.t, t0=t0)


def test_offsets():
    d, src = survey([np.ones((11, 4), np.float32), np.ones((11, 3), np.float32)])
    h = offsets(d, src)
    np.testing.assert_allclose(h[0], [0, 100, 200, 300])
    np.testing.assert_allclose(h[1], [500, 400, 300])
    with pytest.raises(ValueError, match="source position"):
        offsets(d, src[0])


def test_top_mute_zeroes_before_the_line_and_keeps_after():
    nt = 501
    d, src = survey([np.ones((nt, 6), np.float32), np.ones((nt, 6), np.float32)])
    v, t0, taper = 2.0, 50.0, 20.0                    # km/s, ms, ms
    out = top_mute(d, src, v, t0=t0, taper=taper)
    t = d.geometry.time
    for h, a in zip(offsets(d, src), out.arrays):
        for j, hj in enumerate(h):
            tm = t0 + hj / v                          # m / (km/s) = ms
            assert np.all(a[t < tm, j] == 0)
            assert np.all(a[t >= tm + taper, j] == 1)
            mid = np.argmin(np.abs(t - (tm + taper / 2)))
            assert a[mid, j] == pytest.approx(0.5, abs=0.02)
    assert np.all(d.arrays[0] == 1)                   # input untouched
    with pytest.raises(ValueError, match="km/s"):
        top_mute(d, src, 1500.0)


def test_bandpass_amplitudes_and_zero_phase():
    t = np.arange(0, T + DT, DT)
    lo, hi = np.sin(2 * np.pi * 0.005 * t), np.sin(2 * np.pi * 0.060 * t)          # 5 Hz and 60 Hz
    d, _ = survey([np.stack([lo + hi, lo], 1).astype(np.float32)] * 2)
    out = bandpass(d, fmax=0.020).arrays[0]                                          # 20 Hz low-pass
    core = slice(250, 750)                                                           # away from the ends
    np.testing.assert_allclose(out[core, 0], lo[core], atol=1e-2)                    # 5 Hz kept, 60 Hz gone
    hp = bandpass(d, fmin=0.030).arrays[0]
    np.testing.assert_allclose(hp[core, 0], hi[core], atol=2e-2)
    # zero phase: a symmetric pulse keeps its peak sample
    pulse = np.zeros((len(t), 1), np.float32)
    pulse[400] = 1
    dp, _ = survey([pulse, pulse])
    bp = bandpass(dp, 0.004, 0.030).arrays[0][:, 0]
    assert np.argmax(bp) == 400 and bp[390] == pytest.approx(bp[410], rel=1e-4)


@pytest.mark.parametrize("fmin, fmax, onset, tol", [(None, 0.015, 150, 1e-4), (0.005, 0.025, 250, 3e-3)])
def test_bandpass_is_one_linear_time_invariant_operator(fmin, fmax, onset, tol):
    """Filtering the wavelet and the data it made with the same corners keeps d = g * q, given a
    wavelet onset that leaves room for the zero-phase filter's precursor (longer for a low cut)."""
    rng = np.random.default_rng(0)
    nt = 801
    q = np.zeros(nt)
    q[onset:onset + 60] = rng.standard_normal(60) * np.hanning(60)
    g = np.zeros((nt, 3))
    for j, k in enumerate((100, 250, 420)):
        g[k, j], g[k + 30, j] = 1.0, -0.5
    d_arr = np.stack([fftconvolve(q, g[:, j])[:nt] for j in range(3)], 1)
    d, _ = survey([d_arr.astype(np.float32)] * 2)
    qd, _ = survey([q[:, None].astype(np.float32)] * 2)
    df = bandpass(d, fmin, fmax).arrays[0].astype(np.float64)
    qf = bandpass(qd, fmin, fmax).arrays[0][:, 0].astype(np.float64)
    expect = np.stack([fftconvolve(qf, g[:, j])[:nt] for j in range(3)], 1)
    assert np.linalg.norm(df - expect) < tol * np.linalg.norm(df)
    assert np.linalg.norm(df - d_arr) > 0.05 * np.linalg.norm(d_arr)      # the filter did something


def test_delay_keeps_the_filtered_wavelet_whole():
    """A zero-phase low-pass at 5 Hz puts 37 % of a 10 Hz Ricker's energy before t = 0 (lost when the
    record starts there); delayed by 2/f first, 0.2 % (the docstring's figures)."""
    import timeprobe as tp
    f0, f = 0.010, 0.005
    two_sided = Geometry([np.array([[0.0, 0.0]])], dt=DT, t=2000.0, t0=-2000.0)
    t = two_sided.time

    def lost(delay_ms):
        w = tp.ricker(f0, DT, 2000.0, t0_ms=-2000.0, delay_ms=1 / f0 + delay_ms)
        wf = bandpass(Data(two_sided, [w]), fmax=f).arrays[0][:, 0]
        return np.linalg.norm(wf[t < 0]) / np.linalg.norm(wf)

    assert 0.3 < lost(0.0) < 0.45
    assert lost(2 / f) < 3e-3
    g = Geometry([np.array([[0.0, 0.0]])], dt=DT, t=1000.0)
    q = Data(g, [tp.ricker(f0, DT, 1000.0)])
    n = int(2 / f / DT)
    shifted = delay(q, 2 / f)
    assert shifted.geometry.nt == g.nt + n and shifted.geometry.t == 1000.0 + 2 / f
    np.testing.assert_array_equal(shifted.arrays[0][n:], q.arrays[0])
    assert not shifted.arrays[0][:n].any()
    with pytest.raises(ValueError, match="multiple of dt"):
        delay(q, 3.0)


def test_frequency_band_of_a_ricker():
    """A Ricker's amplitude spectrum f² exp(−f²/f0²) peaks at f0; it falls to 1 % of the peak where
    (f/f0)² exp(1 − (f/f0)²) = 0.01."""
    import timeprobe as tp
    from scipy.optimize import brentq
    f0 = 0.010
    d, _ = survey([np.tile(tp.ricker(f0, DT, 2000.0)[:, None], (1, 3))] * 2)
    peak, high = frequency_band(d)
    x = brentq(lambda x: x * np.exp(1 - x) - 0.01, 1.5, 20.0)              # x = (f/f0)²
    bin_khz = 1.0 / (2 * d.geometry.nt * DT)                                # zero-padded to twice the record
    assert peak == pytest.approx(f0, abs=bin_khz)
    assert f0 * np.sqrt(x) - bin_khz <= high <= f0 * np.sqrt(x)            # the last bin still above 1 %
    with pytest.raises(ValueError, match="all zero"):
        frequency_band(survey([np.zeros((11, 2), np.float32)] * 2)[0])


def test_bandpass_errors_name_the_unit():
    d, _ = survey([np.ones((101, 2), np.float32)] * 2)
    with pytest.raises(ValueError, match="kHz"):
        bandpass(d, fmax=8.0)                        # 8 Hz written as 8 (kHz): above Nyquist 0.25 kHz
    with pytest.raises(ValueError, match="below fmax"):
        bandpass(d, 0.02, 0.01)
    with pytest.raises(ValueError, match="fmin and/or fmax"):
        bandpass(d)
    with pytest.raises(TypeError, match="Data"):
        bandpass(d.arrays, fmax=0.01)


def test_time_gain_and_normalisation():
    nt = 11
    d, _ = survey([np.ones((nt, 2), np.float32), np.ones((nt, 2), np.float32)], t0=-4.0)
    g = time_gain(d, power=2.0, t_ref=10.0).arrays[0][:, 0]
    t = d.geometry.time
    np.testing.assert_allclose(g, np.where(t > 0, (t / 10.0) ** 2, 0.0), rtol=1e-6)
    a = np.random.default_rng(1).standard_normal((nt, 3)).astype(np.float32)
    a[:, 1] = 0
    dn, _ = survey([a, 2 * a])
    for norm, fn in (("l2", lambda x: np.linalg.norm(x, axis=0)), ("max", lambda x: np.abs(x).max(axis=0))):
        out = normalize_traces(dn, norm)
        for arr in out.arrays:
            np.testing.assert_allclose(fn(arr), [1, 0, 1], rtol=1e-6)
        np.testing.assert_allclose(out.arrays[0], out.arrays[1], rtol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        normalize_traces(dn, "l1")


def test_reject_bad_traces():
    rng = np.random.default_rng(2)
    a0 = rng.standard_normal((201, 6)).astype(np.float32)
    a1 = rng.standard_normal((201, 5)).astype(np.float32)
    a0[:, 2] = 0                                     # dead channel
    a1[:, 4] *= 50                                   # noise burst
    d, _ = survey([a0, a1])
    clean, kept = reject_bad_traces(d)
    assert [k.tolist() for k in kept] == [[True, True, False, True, True, True], [True, True, True, True, False]]
    np.testing.assert_array_equal(clean.arrays[0], a0[:, kept[0]])
    np.testing.assert_allclose(clean.geometry.coordinates[0][:, 0], [0, 100, 300, 400, 500])
    assert clean.geometry.npoints(1) == 4
    assert reject_bad_traces(d, strong=None)[1][1].all()
    a1[:] = 0
    with pytest.raises(ValueError, match="shot 1"):
        reject_bad_traces(survey([a0, a1])[0])
