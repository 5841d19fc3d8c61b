"""Tests of timeprobe.probing (pure numpy, no Devito)."""
import numpy as np
import pytest

from timeprobe.probing import (PROBE_MODES, design_probes, direct_arrival_shift, orthonormality_error,
                               probe_quality, probed_trace, projector_error, shift_earlier,
                               wavelet_spectrum)

DATA_MODES = ("QR", "hutchpp")
RANDOM_MODES = ("QR", "rademacher", "gaussian", "hutchpp", "dft", "orthogonal")


def _data(nt=60, nrec=12, rank=None, seed=0):
    """A smooth-ish random shot record; exact rank ``rank`` when given."""
    rng = np.random.default_rng(seed)
    if rank is None:
        return rng.standard_normal((nt, nrec))
    return rng.standard_normal((nt, rank)) @ rng.standard_normal((rank, nrec))


def _kw(mode, nt):
    return {"dt": 2.0} if mode == "dft" else {}


def _probes(mode, nt, r, seed=0, **kw):
    data = _data(nt) if mode in DATA_MODES else None
    return design_probes(mode, nt, r, data, seed, **_kw(mode, nt), **kw)


def _assert_unbiased(draw, nt, ndraw, z=5.0):
    """Check E[QQᵀ] = I entrywise: |mean − I| <= z · (sample std) / sqrt(ndraw).

    z = 5 keeps the family-wise false-alarm rate below ~1e-4 for the nt² entries (Bonferroni on
    a normal approximation); the draws are seeded, so the outcome is deterministic anyway. The
    1e-12 floor covers entries with zero variance (Rademacher diagonal = 1 exactly).
    """
    acc = np.zeros((nt, nt))
    acc2 = np.zeros((nt, nt))
    for i in range(ndraw):
        Q = draw(i)
        P = Q @ Q.T
        acc += P
        acc2 += P * P
    mean = acc / ndraw
    var = np.maximum(acc2 / ndraw - mean ** 2, 0.0) * ndraw / (ndraw - 1)
    tol = z * np.sqrt(var / ndraw) + 1e-12
    dev = np.abs(mean - np.eye(nt))
    assert np.all(dev <= tol), f"max |E[QQᵀ] − I| / tol = {np.max(dev / tol):.2f}"
    return mean, tol


# ----------------------------------------------------------------------------- shapes, seeds, RNG

@pytest.mark.parametrize("mode", RANDOM_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_dtype(mode, dtype):
    Q = _probes(mode, 40, 6, dtype=dtype)
    assert Q.shape == (40, 6) and Q.dtype == dtype
    assert np.all(np.isfinite(Q))


def test_identity():
    Q = design_probes("identity", 7, 7)
    assert Q.dtype == np.float32 and np.array_equal(Q, np.eye(7))
    a, b = _data(7, 3, seed=1), _data(7, 3, seed=2)
    np.testing.assert_allclose(probed_trace(Q, a, b), (a * b).sum(0), rtol=1e-6)


@pytest.mark.parametrize("mode", RANDOM_MODES)
def test_deterministic_per_seed_and_different_across_seeds(mode):
    # QR with the seed's single-pass sketch (the default randomized SVD converges to the
    # seed-independent top-r subspace of the data, see test_qr_default_nearly_seed_independent)
    kw = {"power_iterations": 0, "oversample": 0} if mode == "QR" else {}
    Q1 = _probes(mode, 50, 8, seed=3, **kw)
    Q2 = _probes(mode, 50, 8, seed=3, **kw)
    Q3 = _probes(mode, 50, 8, seed=4, **kw)
    assert np.array_equal(Q1, Q2)
    assert not np.allclose(Q1, Q3)
    # a Generator is used as is (and advanced): two calls on one generator differ
    g = np.random.default_rng(3)
    Qa = _probes(mode, 50, 8, seed=g, **kw)
    Qb = _probes(mode, 50, 8, seed=g, **kw)
    assert np.array_equal(Qa, Q1) and not np.allclose(Qa, Qb)


def test_no_global_rng():
    np.random.seed(1234)
    before = np.random.get_state()
    for mode in RANDOM_MODES:
        _probes(mode, 30, 4)
    design_probes("QR", 30, 30, _data(30, 3), 1, shift=2)  # rank-deficient: random complement
    after = np.random.get_state()
    assert np.array_equal(before[1], after[1]) and before[2:] == after[2:]


# ----------------------------------------------------------------------------- unbiasedness

@pytest.mark.parametrize("mode,nt,r", [("rademacher", 6, 2), ("gaussian", 6, 2), ("orthogonal", 6, 2),
                                       ("orthogonal", 5, 5), ("rademacher", 5, 1)])
def test_unbiased_random_modes(mode, nt, r):
    _assert_unbiased(lambda i: design_probes(mode, nt, r, seed=1000 + i, dtype=np.float64), nt, 3000)


def test_unbiasedness_check_can_fail():
    # the same check rejects a biased design: an unscaled Haar frame has E[HHᵀ] = (r/nt) I
    def draw(i):
        return design_probes("orthogonal", 6, 2, seed=i, dtype=np.float64) * np.sqrt(2 / 6)
    with pytest.raises(AssertionError):
        _assert_unbiased(draw, 6, 3000)


@pytest.mark.parametrize("r", [4, 5])
def test_hutchpp_complement_unbiased(r):
    # D of exact rank r1 = ceil(r/2): Q1 spans range(D) for every draw, so the complement term
    # GGᵀ must average to the fixed projector I − Q1Q1ᵀ (and QQᵀ to I)
    nt, r1, r2 = 7, r - r // 2, r // 2
    D = _data(nt, 5, rank=r1, seed=5)
    ndraw = 3000
    Qs = [design_probes("hutchpp", nt, r, D, seed=i, dtype=np.float64) for i in range(ndraw)]
    Q1 = Qs[0][:, :r1]
    Pperp = np.eye(nt) - Q1 @ Q1.T
    for Q in Qs[:50]:
        np.testing.assert_allclose(Q[:, :r1] @ Q[:, :r1].T, Q1 @ Q1.T, atol=1e-10)
        np.testing.assert_allclose(Q1.T @ Q[:, r1:], 0, atol=1e-10)  # G ⟂ Q1
    G = np.stack([Q[:, r1:] for Q in Qs])
    GG = np.einsum("dip,djp->dij", G, G)
    mean, sd = GG.mean(0), GG.std(0, ddof=1)
    dev = np.abs(mean - Pperp)
    assert np.all(dev <= 5 * sd / np.sqrt(ndraw) + 1e-12), np.max(dev / (5 * sd / np.sqrt(ndraw) + 1e-12))
    _assert_unbiased(lambda i: Qs[i], nt, ndraw)
    # METHOD.md's scale sqrt(3/m̃), m̃ = 3r/2, equals sqrt(1/r2) only for even r: for odd r the
    # complement scaled that way is biased, and the same check rejects it
    if r % 2:
        rescale = np.sqrt(3 / (1.5 * r)) / np.sqrt(1 / r2)
        biased = [np.hstack([Q[:, :r1], rescale * Q[:, r1:]]) for Q in Qs]
        with pytest.raises(AssertionError):
            _assert_unbiased(lambda i: biased[i], nt, ndraw)


def test_hutchpp_general_data_unbiased_bilinear():
    # full-rank data: Q1 now varies with the seed; the bilinear estimate aᵀQQᵀb stays unbiased
    nt, r = 8, 4
    D = _data(nt, 20, seed=6)
    a, b = _data(nt, 1, seed=7)[:, 0], _data(nt, 1, seed=8)[:, 0]
    est = np.array([probed_trace(design_probes("hutchpp", nt, r, D, seed=i, power_iterations=0,
                                               oversample=0, dtype=np.float64), a, b)
                    for i in range(3000)])
    assert abs(est.mean() - a @ b) <= 5 * est.std(ddof=1) / np.sqrt(est.size)


# ----------------------------------------------------------------------------- QR (data-driven)

@pytest.mark.parametrize("kw", [{}, {"power_iterations": 0, "oversample": 0, "keep_unshifted": False},
                                {"shift": 5}, {"shift": (3, 9), "power_iterations": 3}])
def test_qr_orthonormal(kw):
    Q = design_probes("QR", 80, 10, _data(80, 30), 0, **kw)
    assert orthonormality_error(Q) < 1e-5


@pytest.mark.parametrize("nrec,zero_traces", [(30, 0), (3, 0), (30, 28), (4, 4)])
def test_qr_full_rank_is_exact(nrec, zero_traces):
    # r = nt gives QQᵀ = I (float32 round-off) even for rank-deficient data (r > nrec, dead traces,
    # all-zero data): the data directions are completed by a random orthonormal complement
    nt = 40
    D = _data(nt, nrec)
    D[:, :zero_traces] = 0
    Q = design_probes("QR", nt, nt, D, 0)
    q = probe_quality(Q, D)
    assert q["orthonormality_error"] < 1e-5 and q["identity_error"] < 1e-5
    a, b = _data(nt, 5, seed=1), _data(nt, 5, seed=2)
    np.testing.assert_allclose(probed_trace(Q, a, b), (a * b).sum(0), rtol=1e-4, atol=1e-4)


def test_qr_rank_deficient_small_r():
    # r > rank(D): the data part captures D exactly, the rest is an orthonormal complement
    D = _data(50, 3, seed=2)
    Q = design_probes("QR", 50, 8, D, 0, dtype=np.float64)
    assert orthonormality_error(Q) < 1e-12
    assert projector_error(Q, D) < 1e-12


@pytest.mark.parametrize("kw", [{}, {"power_iterations": 0, "oversample": 0}])
def test_qr_captures_low_rank_data(kw):
    D = _data(100, 20, rank=5)
    for r in (5, 8):
        Q = design_probes("QR", 100, r, D, 1, dtype=np.float64, **kw)
        assert projector_error(Q, D) < 1e-10
    # the float32 output is accurate to float32 round-off
    assert projector_error(design_probes("QR", 100, 5, D, 1), D) < 1e-5
    # and a random frame of the same size is not (the check can fail)
    assert projector_error(design_probes("orthogonal", 100, 5, seed=1) / np.sqrt(20), D) > 0.5


def test_qr_default_nearly_seed_independent():
    # oversampling + a power iteration: the span is (nearly) the top-r left singular subspace
    nt, r = 60, 4
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((nt, 30)))[0]
    D = (U * 0.5 ** np.arange(30)) @ np.linalg.qr(rng.standard_normal((30, 30)))[0]
    P = [(lambda Q: Q @ Q.T)(design_probes("QR", nt, r, D, s, dtype=np.float64)) for s in (1, 2)]
    # randomized-SVD error ~ (sigma_{2r+1}/sigma_r)^(2(q+1)) = 2^-20 here
    np.testing.assert_allclose(P[0], U[:, :r] @ U[:, :r].T, atol=1e-6)
    np.testing.assert_allclose(P[1], P[0], atol=1e-6)
    # while the seed's single pass is visibly seed dependent
    Q1, Q2 = (design_probes("QR", nt, r, D, s, power_iterations=0, oversample=0, dtype=np.float64)
              for s in (1, 2))
    assert np.max(np.abs(Q1 @ Q1.T - Q2 @ Q2.T)) > 1e-3


def test_seed_algorithm_reproduced():
    # power_iterations=0, oversample=0, keep_unshifted=False spans qr(D (Dᵀ S)) with the same S
    nt, r = 60, 6
    D = _data(nt, 15)
    Q = design_probes("QR", nt, r, D, 9, power_iterations=0, oversample=0, keep_unshifted=False,
                      dtype=np.float64)
    S = np.random.default_rng(9).choice(np.array([-1.0, 1.0]), size=(nt, r))
    Qs = np.linalg.qr(D @ (D.T @ S))[0]
    np.testing.assert_allclose(Q @ Q.T, Qs @ Qs.T, atol=1e-10)


def test_power_iterations_and_oversampling_improve_subspace():
    # slowly decaying spectrum sigma_k = k^-0.5: the single-pass sketch is far from optimal
    nt, nrec, r = 120, 80, 8
    rng = np.random.default_rng(11)
    U = np.linalg.qr(rng.standard_normal((nt, nrec)))[0]
    V = np.linalg.qr(rng.standard_normal((nrec, nrec)))[0]
    s = np.arange(1, nrec + 1) ** -0.5
    D = (U * s) @ V.T
    optimal = np.sqrt(np.sum(s[r:] ** 2) / np.sum(s ** 2))

    def err(**kw):
        return np.mean([projector_error(design_probes("QR", nt, r, D, seed, dtype=np.float64, **kw), D)
                        for seed in range(5)])

    e0, e1, e3 = (err(power_iterations=q, oversample=0) for q in (0, 1, 3))
    e_over = err(power_iterations=0, oversample=r)
    e_default = err()
    assert e0 > e1 > e3 >= optimal * (1 - 1e-12)
    assert e_over < e0
    assert e_default < e1
    assert e_default - optimal < 0.2 * (e0 - optimal)


def test_shift_moves_subspace():
    # one trace with a spike at t = 40: the subspace is e_40, shifted by 10 samples e_30
    nt = 100
    D = np.zeros((nt, 1))
    D[40, 0] = 1.0
    Q0 = design_probes("QR", nt, 1, D, 0, dtype=np.float64)
    Qs = design_probes("QR", nt, 1, D, 0, shift=10, keep_unshifted=False, dtype=np.float64)
    assert abs(Q0[40, 0]) == pytest.approx(1.0) and abs(Qs[30, 0]) == pytest.approx(1.0)
    # both copies (default keep_unshifted=True): span{e_30, e_40}
    Qb = design_probes("QR", nt, 2, D, 0, shift=10, dtype=np.float64)
    P = Qb @ Qb.T
    assert P[30, 30] == pytest.approx(1.0) and P[40, 40] == pytest.approx(1.0)
    assert np.trace(P) == pytest.approx(2.0)
    np.testing.assert_array_equal(shift_earlier(D, 10)[:, 0], np.eye(nt)[30])


def test_direct_arrival_shift():
    assert direct_arrival_shift(25.0, 475.0, 2.0) == 150  # 450 m / 1.5 km/s = 300 ms
    assert direct_arrival_shift(475.0, 25.0, 2.0) == 150
    assert direct_arrival_shift(10.0, [500.0, 310.0, 700.0], 1.0, v_water=1.5) == 200  # nearest receiver
    with pytest.raises(ValueError, match="dt_ms"):
        direct_arrival_shift(0.0, 100.0, 0.0)
    with pytest.raises(ValueError, match="src_depth_m"):
        direct_arrival_shift([0.0, 1.0], 100.0, 1.0)


def test_spectrum_weighting_selects_band():
    # strong 5 Hz + weak 25 Hz events (Hann-tapered so that truncation leakage of the strong
    # component does not reach 25 Hz); a spectrum peaked at 25 Hz makes r = 2 capture the weak one
    nt, dt = 400, 2.0
    t = dt * np.arange(nt)
    ph = np.random.default_rng(0).uniform(0, 2 * np.pi, (2, 6))
    win = np.hanning(nt)[:, None]
    low = win * np.cos(2 * np.pi * 0.005 * t[:, None] + ph[0])
    high = 0.05 * win * np.cos(2 * np.pi * 0.025 * t[:, None] + ph[1])
    D = low + high
    f = np.linspace(0, 0.25, 251)
    amp = np.exp(-((f - 0.025) / 0.008) ** 2)
    Qplain = design_probes("QR", nt, 2, D, 0, dtype=np.float64)
    Qspec = design_probes("QR", nt, 2, D, 0, dt=dt, spectrum=(f, amp), dtype=np.float64)
    assert projector_error(Qplain, low) < 0.05 and projector_error(Qplain, high) > 0.9
    assert projector_error(Qspec, high) < 0.05 and projector_error(Qspec, low) > 0.9
    fw, aw = wavelet_spectrum(np.exp(-((t - 100) / 20) ** 2), dt)
    assert fw.shape == aw.shape and np.argmax(aw) == 0


# ----------------------------------------------------------------------------- DFT

@pytest.mark.parametrize("nt", [200, 201])
def test_dft_orthonormal_and_in_band(nt):
    dt, band = 2.0, (0.01, 0.04)
    Q = design_probes("dft", nt, 20, seed=3, dt=dt, band=band, dtype=np.float64)
    assert orthonormality_error(Q) < 1e-12
    spec = np.abs(np.fft.rfft(Q, axis=0))
    fpk = np.fft.rfftfreq(nt, dt)[np.argmax(spec, axis=0)]
    assert np.all((fpk >= band[0]) & (fpk <= band[1]))
    assert np.unique(fpk).size == 10  # 10 distinct frequencies, a cos and a sin each
    # whole grid (no band, no spectrum), up to all available frequencies
    Qall = design_probes("dft", nt, 2 * ((nt + 1) // 2 - 1), seed=0, dt=dt, dtype=np.float64)
    assert orthonormality_error(Qall) < 1e-10


def test_dft_spectrum_sampling():
    nt, dt = 500, 1.0
    f = np.array([0.0, 0.019, 0.02, 0.03, 0.031, 0.5])
    amp = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # support [0.02, 0.03] kHz
    Q = design_probes("dft", nt, 8, seed=1, dt=dt, spectrum=(f, amp), dtype=np.float64)
    fpk = np.fft.rfftfreq(nt, dt)[np.argmax(np.abs(np.fft.rfft(Q, axis=0)), axis=0)]
    assert np.all((fpk >= 0.02) & (fpk <= 0.03))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("r,exc", [(0, ValueError), (-3, ValueError), (11, ValueError),
                                   (2.5, TypeError), (4.0, TypeError), ("4", TypeError),
                                   (True, TypeError)])
def test_bad_r(r, exc):
    with pytest.raises(exc, match="r"):
        design_probes("rademacher", 10, r, seed=0)


def test_bad_inputs():
    D = _data(20, 4)
    with pytest.raises(ValueError, match="unknown probing mode 'qr'.*'QR'.*'identity'"):
        design_probes("qr", 20, 4, D)
    with pytest.raises(TypeError, match="mode"):
        design_probes(None, 20, 4, D)
    for mode in DATA_MODES:
        with pytest.raises(ValueError, match=f"mode '{mode}' needs the observed data"):
            design_probes(mode, 20, 4)
    with pytest.raises(ValueError, match="21 time samples.*nt=20"):
        design_probes("QR", 20, 4, _data(21, 4))
    bad = D.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        design_probes("QR", 20, 4, bad)
    with pytest.raises(ValueError, match="shape"):
        design_probes("QR", 20, 4, np.zeros((20, 2, 2)))
    with pytest.raises(ValueError, match="nt"):
        design_probes("rademacher", 0, 1)
    with pytest.raises(TypeError, match="nt"):
        design_probes("rademacher", 10.0, 1)
    with pytest.raises(ValueError, match="even"):
        design_probes("dft", 20, 3, dt=1.0)
    with pytest.raises(ValueError, match="dt"):
        design_probes("dft", 20, 4)
    with pytest.raises(ValueError, match="dt"):
        design_probes("dft", 20, 4, dt=-1.0)
    with pytest.raises(ValueError, match="distinct Fourier-grid frequencies"):
        design_probes("dft", 20, 6, dt=1.0, band=(0.1, 0.15))
    with pytest.raises(ValueError, match="band"):
        design_probes("dft", 20, 4, dt=1.0, band=(0.2, 0.1))
    with pytest.raises(ValueError, match="r == nt"):
        design_probes("identity", 20, 4)
    with pytest.raises(ValueError, match="r >= 2"):
        design_probes("hutchpp", 20, 1, D)
    with pytest.raises(ValueError, match="shift"):
        design_probes("QR", 20, 4, D, shift=-1)
    with pytest.raises(ValueError, match="shift"):
        design_probes("QR", 20, 4, D, shift=20)
    with pytest.raises(TypeError, match="shift"):
        design_probes("QR", 20, 4, D, shift=1.5)
    with pytest.raises(ValueError, match="power_iterations"):
        design_probes("QR", 20, 4, D, power_iterations=-1)
    with pytest.raises(ValueError, match="oversample"):
        design_probes("QR", 20, 4, D, oversample=-2)
    with pytest.raises(ValueError, match="needs the time step dt"):
        design_probes("QR", 20, 4, D, spectrum=([0.0, 0.1], [1.0, 1.0]))
    with pytest.raises(ValueError, match="spectrum"):
        design_probes("QR", 20, 4, D, dt=1.0, spectrum=([0.0, 0.1], [1.0, -1.0]))
    with pytest.raises(TypeError, match="spectrum"):
        design_probes("QR", 20, 4, D, dt=1.0, spectrum=np.ones(5))
    with pytest.raises(ValueError, match="zero at every frequency"):
        design_probes("QR", 20, 4, D, dt=1.0, spectrum=([2.0, 3.0], [1.0, 1.0]))
    with pytest.raises(TypeError, match="dtype"):
        design_probes("gaussian", 20, 4, dtype=np.int32)
    with pytest.raises(ValueError, match="share nt"):
        projector_error(np.eye(3), np.ones((4, 2)))
    with pytest.raises(ValueError, match="nt"):
        probed_trace(np.eye(3), np.ones((3, 2)), np.ones((4, 2)))


def test_every_listed_mode_designs_probes():
    """Each name in PROBE_MODES is accepted by design_probes and gives an (nt, r) matrix with its
    defining property; a name outside it is refused."""
    nt, r = 24, 6
    D = _data(nt, 10, seed=1)
    props = {
        "QR": lambda Q: np.allclose(Q.T @ Q, np.eye(r), atol=1e-10),
        "orthogonal": lambda Q: np.allclose(Q.T @ Q, nt / r * np.eye(r), atol=1e-9),
        "identity": lambda Q: np.array_equal(Q, np.eye(nt)),
        "rademacher": lambda Q: np.allclose(np.abs(Q), 1 / np.sqrt(r)),
        "gaussian": lambda Q: np.all(np.isfinite(Q)) and len(np.unique(np.abs(Q))) == Q.size,
        "hutchpp": lambda Q: np.allclose(Q[:, :r - r // 2].T @ Q[:, :r - r // 2], np.eye(r - r // 2), atol=1e-10),
        "dft": lambda Q: np.allclose(Q.T @ Q, np.eye(r), atol=1e-10),
    }
    assert set(props) == set(PROBE_MODES)
    for mode in PROBE_MODES:
        Q = design_probes(mode, nt, nt if mode == "identity" else r, data=D, seed=0, dt=1.0, dtype=np.float64)
        assert Q.shape == (nt, nt if mode == "identity" else r), mode
        assert props[mode](Q), mode
    with pytest.raises(ValueError, match="valid modes"):
        design_probes("sobol", nt, r)
