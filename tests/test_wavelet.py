"""Source wavelet estimation: recovery of known wavelets from synthetic shot records."""
import numpy as np
import pytest

import timeprobe as tp
from timeprobe.wavelet import bandlimited_spike, estimate_wavelet

T, DT = 1000.0, 2.0


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def case():
    vp = np.full((80, 40), 2.0, np.float32)
    vp[:, :8] = 1.5
    vp[:, 25:] = 2.6
    model = tp.Model(vp=vp, spacing=(10.0, 10.0), nbl=20, space_order=8)
    src = tp.Geometry([np.array([[x, 15.0]]) for x in (200.0, 550.0)], dt=DT, t=T)
    rec = tp.Geometry([np.stack([np.linspace(0, 790, 40), np.full(40, 10.0)], 1)] * 2, dt=DT, t=T)
    w_a = tp.ricker(0.012, DT, T)                               # 12 Hz, peak at 83 ms
    w_b = -0.5 * tp.ricker(0.009, DT, T, delay_ms=160.0)         # 9 Hz, reversed polarity, later
    d_same = tp.forward(model, tp.Data(src, [w_a, w_a]), rec)
    d_diff = tp.forward(model, tp.Data(src, [w_a, w_b]), rec)
    return model, src, w_a, w_b, d_same, d_diff


def test_recovers_a_known_wavelet_within_two_percent(case):
    model, src, w_a, _, d_same, _ = case
    q = estimate_wavelet(model, src, d_same)
    assert q.nshots == 2 and q.dt == DT and q.geometry.nt == d_same.geometry.nt
    for a in q.arrays:
        assert rel(a[:, 0], w_a) < 0.02
    np.testing.assert_array_equal(q.arrays[0], q.arrays[1])       # one wavelet for the survey
    short = estimate_wavelet(model, src, d_same, length=300.0).arrays[0][:, 0]
    t = q.geometry.time
    assert not short[t >= 300].any() and rel(short, w_a) < 0.02
    np.testing.assert_array_equal(short[t <= 240], q.arrays[0][t <= 240, 0])


def test_per_shot_wavelets(case):
    model, src, w_a, w_b, _, d_diff = case
    q = estimate_wavelet(model, src, d_diff, per_shot=True)
    assert rel(q.arrays[0][:, 0], w_a) < 0.02 and rel(q.arrays[1][:, 0], w_b) < 0.02
    # one survey wavelet cannot fit two different sources (negative control)
    q1 = estimate_wavelet(model, src, d_diff)
    assert rel(q1.arrays[0][:, 0], w_a) > 0.1 and rel(q1.arrays[1][:, 0], w_b) > 0.1


def test_spike_band_must_cover_the_wavelet(case):
    """A spike low-passed at 10 Hz cannot carry a 12 Hz Ricker's band: the estimate is low-passed."""
    model, src, w_a, _, d_same, _ = case
    q = estimate_wavelet(model, src, d_same, fmax=0.010)
    assert rel(q.arrays[0][:, 0], w_a) > 0.1
    spike = bandlimited_spike(src, 0.03)
    assert spike.arrays[0].argmax() == round(3 / 0.03 / DT)       # centred on the default delay
    with pytest.raises(ValueError, match="kHz"):
        estimate_wavelet(model, src, d_same, fmax=30.0)
    with pytest.raises(ValueError, match="source position"):
        estimate_wavelet(model, src[0], d_same)
