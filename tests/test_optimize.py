"""Tests of timeprobe.optimize on analytic problems (no wave propagation)."""
import numpy as np
import pytest

from timeprobe.optimize import (ModelMask, OptimizerState, ScaledObjective, ShotBatches, detect_water_rows,
                                lbfgs, lbfgsb, project, slowness_bounds, spg, water_mask)


# --------------------------------------------------------------------------- problems
def diag_quadratic(h, c):
    """f = ½ Σ h_i (x_i − c_i)²: with bounds the minimiser is clip(c, l, u)."""
    def fun(x):
        r = x - c
        return 0.5 * float(np.sum(h * r * r)), h * r
    return fun


def rosenbrock(x):
    f = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return float(f), g


def ill_conditioned_quadratic(n=40, seed=3):
    """f = ½ xᵀHx − bᵀx with eigenvalues 1e-2…10: SPG's Barzilai–Borwein steps are non-monotone here."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = Q @ np.diag(np.logspace(-2, 1, n)) @ Q.T
    b = rng.standard_normal(n)
    return lambda x: (0.5 * float(x @ H @ x) - float(b @ x), H @ x - b)


class Recorder:
    """Wraps fun and keeps every evaluated point and value."""

    def __init__(self, fun):
        self.fun, self.xs, self.fs = fun, [], []

    def __call__(self, x):
        self.xs.append(np.array(x, copy=True))
        f, g = self.fun(x)
        self.fs.append(f)
        return f, g


@pytest.fixture
def quad():
    rng = np.random.default_rng(11)
    n = 30
    h = 10.0 ** rng.uniform(-1, 1, n)          # condition number ~1e2
    c = rng.uniform(-2, 2, n)
    lo, up = -np.ones(n), np.ones(n)            # about half of c lies outside the box
    return diag_quadratic(h, c), np.clip(c, lo, up), lo, up, c


# --------------------------------------------------------------------------- SPG / L-BFGS-B
@pytest.mark.parametrize("solver", [spg, lbfgsb])
def test_bounded_quadratic_reaches_clipped_minimiser(quad, solver):
    fun, xstar, lo, up, c = quad
    assert np.any(c < lo) and np.any(c > up) and np.any((c > lo) & (c < up))
    tol = dict(opt_tol=1e-9, prog_tol=0) if solver is spg else dict(gtol=1e-10, ftol=1e-15)
    res = solver(fun, np.zeros_like(xstar), lo, up, maxiter=500, progress=False, **tol)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, xstar, atol=1e-5)
    assert res.f == pytest.approx(fun(xstar)[0], rel=1e-8, abs=1e-10)
    assert res.fhist[0] == pytest.approx(fun(np.zeros_like(xstar))[0])


def test_coupled_quadratic_kkt():
    # non-separable quadratic: check first-order (KKT) conditions of the constrained solution
    rng = np.random.default_rng(3)
    n = 25
    A = rng.standard_normal((n, n))
    H = A @ A.T / n + 0.05 * np.eye(n)
    b = 2.0 * rng.standard_normal(n)
    lo, up = -0.3 * np.ones(n), 0.4 * np.ones(n)

    def fun(x):
        return 0.5 * x @ H @ x - b @ x, H @ x - b

    res = spg(fun, np.zeros(n), lo, up, maxiter=3000, opt_tol=1e-9, prog_tol=0, progress=False)
    assert res.success, res.message
    x, g = res.x, fun(res.x)[1]
    free = (x > lo + 1e-7) & (x < up - 1e-7)
    assert free.any() and (~free).any()
    assert np.max(np.abs(g[free])) < 1e-6
    assert np.all(g[np.isclose(x, lo)] > -1e-6)   # at a lower bound the gradient pushes outwards
    assert np.all(g[np.isclose(x, up)] < 1e-6)
    assert np.max(np.abs(project(x - g, lo, up) - x)) < 1e-8


def test_rosenbrock_unconstrained_optimum_inside_box():
    res = spg(rosenbrock, np.array([-1.2, 1.0]), -2.0, 2.0, maxiter=3000, opt_tol=1e-8, prog_tol=1e-14,
              progress=False)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-4)


@pytest.mark.parametrize("solver", [spg, lbfgsb])
def test_rosenbrock_with_active_bound(solver):
    # with x1 <= 0.5 the minimiser is (0.5, 0.25), f = 0.25: df/dx1 = -1 < 0 there, so the bound is active
    res = solver(rosenbrock, np.array([-1.2, 1.0]), [-2.0, -2.0], [0.5, 2.0], maxiter=3000, progress=False)
    np.testing.assert_allclose(res.x, [0.5, 0.25], atol=1e-5)
    assert res.f == pytest.approx(0.25, abs=1e-8)


def test_rosenbrock_4d_matches_scipy():
    from scipy.optimize import Bounds, minimize
    lo, up = -2 * np.ones(4), np.array([2, 2, 0.5, 2.0])
    ref = minimize(rosenbrock, np.zeros(4), jac=True, method="L-BFGS-B", bounds=Bounds(lo, up),
                   options=dict(gtol=1e-12, ftol=1e-15, maxiter=10000))
    res = spg(rosenbrock, np.zeros(4), lo, up, maxiter=5000, opt_tol=1e-9, prog_tol=1e-15, progress=False)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-5)


@pytest.mark.parametrize("memory", [1, 3, 5])
def test_nonmonotone_line_search_condition(memory):
    rec = Recorder(rosenbrock)
    res = spg(rec, np.array([-1.2, 1.0]), -2.0, 2.0, maxiter=300, memory=memory, progress=False)
    fh = res.fhist
    assert len(fh) > 20
    for k in range(1, len(fh)):
        # GLL: each accepted value lies strictly below the max of the previous `memory` accepted values
        ref = max(fh[max(0, k - memory):k])
        assert fh[k] < ref, (k, fh[k], ref)
    increases = int(np.sum(np.diff(fh) > 0))
    if memory == 1:
        assert increases == 0                   # monotone Armijo
    else:
        assert increases > 0                    # the non-monotone window is actually used
    # every accepted value is one that was evaluated
    assert set(np.round(fh, 12)) <= set(np.round(rec.fs, 12))


def test_all_iterates_feasible(quad):
    fun, xstar, lo, up, c = quad
    rec = Recorder(fun)
    cb_points = []
    spg(rec, np.zeros_like(xstar), lo, up, maxiter=200, progress=False,
        callback=lambda x, info: cb_points.append(x.copy()))
    assert len(rec.xs) > 5 and cb_points
    for x in rec.xs + cb_points:
        assert np.all(x >= lo) and np.all(x <= up)
    # L-BFGS-B as well
    rec2 = Recorder(fun)
    lbfgsb(rec2, np.zeros_like(xstar), lo, up, maxiter=100, progress=False)
    for x in rec2.xs:
        assert np.all(x >= lo) and np.all(x <= up)


def test_float32_shape_and_dtype_preserved():
    rng = np.random.default_rng(5)
    c = rng.uniform(0.05, 0.5, (12, 7)).astype(np.float32)
    seen = []

    def fun(x):
        seen.append((x.shape, x.dtype))
        return float(0.5 * np.sum((x - c) ** 2)), (x - c).astype(np.float32)

    for solver in (spg, lbfgsb):
        seen.clear()
        res = solver(fun, np.full((12, 7), 0.2, np.float32), 0.1, 0.4, maxiter=50, progress=False)
        assert res.x.shape == (12, 7) and res.x.dtype == np.float32
        assert set(seen) == {((12, 7), np.dtype(np.float32))}
        np.testing.assert_allclose(res.x, np.clip(c, 0.1, 0.4), atol=1e-5)


def test_x0_outside_bounds_raises_with_count():
    x0 = np.zeros(10)
    x0[:3] = 5.0
    x0[3] = -5.0
    with pytest.raises(ValueError, match=r"4 of 10 points \(1 below lower, 3 above upper\)"):
        spg(rosenbrock, x0, -1.0, 1.0, progress=False)
    with pytest.raises(ValueError, match="4 of 10"):
        lbfgsb(rosenbrock, x0, -1.0, 1.0, progress=False)


def test_bad_arguments():
    f = diag_quadratic(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="lower > upper at 1"):
        spg(f, np.zeros(3), [0, 1, 0], [1, 0.5, 1], progress=False)
    with pytest.raises(ValueError, match="broadcast"):
        spg(f, np.zeros(3), np.zeros(4), 1, progress=False)
    with pytest.raises(ValueError, match="memory"):
        spg(f, np.zeros(3), memory=0, progress=False)
    with pytest.raises(TypeError, match="maxiter"):
        spg(f, np.zeros(3), maxiter=2.5, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        spg(f, np.array([0.0, np.nan, 0.0]), progress=False)
    with pytest.raises(ValueError, match="gradient of shape"):
        spg(lambda x: (0.0, np.zeros(5)), np.zeros(3), progress=False)
    with pytest.raises(TypeError, match="tuple"):
        spg(lambda x: 1.0, np.zeros(3), progress=False)


def test_float32_roundoff_on_bound_is_accepted():
    # a float32 model exactly at 1/vmax² differs from the float64 bound by round-off only
    mmin, mmax = slowness_bounds(1.3, 6.5)
    x0 = np.full(4, np.float32(1 / 6.5**2))
    res = spg(diag_quadratic(np.ones(4), np.full(4, 0.3)), x0, float(1 / 6.5**2), float(mmax),
              maxiter=30, progress=False)
    np.testing.assert_allclose(res.x, 0.3, atol=1e-5)


def test_callback_stop_info_and_max_fev():
    f = diag_quadratic(np.array([1.0, 100.0]), np.array([3.0, -3.0]))
    infos = []

    def cb(x, info):
        infos.append(info)
        return info["iteration"] == 2

    res = spg(f, np.zeros(2), -1, 1, maxiter=50, callback=cb, progress=False)
    assert res.nit == 2 and res.message == "stopped by callback"
    assert [i["iteration"] for i in infos] == [1, 2]
    assert set(infos[0]) == {"iteration", "f", "nfev", "step", "alpha", "opt_cond"}
    assert infos[-1]["f"] == pytest.approx(res.fhist[-1])
    res = spg(rosenbrock, np.array([-1.2, 1.0]), -2, 2, maxiter=1000, max_fev=15, progress=False)
    assert res.nfev <= 15 and not res.success
    res = lbfgsb(rosenbrock, np.array([-1.2, 1.0]), -2, 2, maxiter=100, progress=False,
                 callback=lambda x, info: info["iteration"] >= 3)
    assert res.nit == 3 and res.message == "stopped by callback"
    assert res.f == pytest.approx(rosenbrock(res.x)[0])


def test_return_best_and_progress_bar(capsys):
    res = spg(rosenbrock, np.array([-1.2, 1.0]), -2, 2, maxiter=40, memory=5, progress=True, store_x=True)
    assert res.f == pytest.approx(min(res.fhist))
    assert res.f == pytest.approx(rosenbrock(res.x.astype(float))[0])
    assert len(res.xhist) == len(res.fhist)
    np.testing.assert_array_equal(res.x_last, res.xhist[-1])
    assert "spg" in capsys.readouterr().err     # tqdm writes to stderr
    res2 = spg(rosenbrock, np.array([-1.2, 1.0]), -2, 2, maxiter=40, memory=5, progress=False,
               return_best=False)
    assert res2.f == pytest.approx(res2.fhist[-1])


# --------------------------------------------------------------------------- projected L-BFGS, resume
def test_lbfgs_bounded_quadratic_and_rosenbrock(quad):
    fun, xstar, lo, up, c = quad
    rec = Recorder(fun)
    res = lbfgs(rec, np.zeros_like(xstar), lo, up, maxiter=300, opt_tol=1e-9, prog_tol=0, progress=False)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, xstar, atol=1e-6)
    assert all(np.all((x >= lo) & (x <= up)) for x in rec.xs)
    assert np.all(np.diff(res.fhist) <= 0)                       # monotone line search
    # quasi-Newton: far fewer iterations than SPG on an ill-conditioned coupled quadratic, with
    # and without active bounds (as many as scipy's L-BFGS-B needs, within 20 %)
    coupled = ill_conditioned_quadratic()
    for lim in (100.0, 5.0):
        kw = dict(maxiter=5000, opt_tol=1e-6, prog_tol=0, progress=False)
        r_l = lbfgs(coupled, np.zeros(40), -lim, lim, memory=8, **kw)
        r_s = spg(coupled, np.zeros(40), -lim, lim, **kw)
        r_b = lbfgsb(coupled, np.zeros(40), -lim, lim, maxiter=5000, memory=8, gtol=1e-6, ftol=0, progress=False)
        assert r_l.success and r_s.success
        np.testing.assert_allclose(r_l.x, r_s.x, atol=1e-4)
        assert r_l.nit < r_s.nit / 2 and r_l.nit < 1.2 * r_b.nit
    res = lbfgs(rosenbrock, np.array([-1.2, 0.4]), -2.0, [2.0, 0.5], maxiter=500, opt_tol=1e-8, prog_tol=0,
                progress=False)
    ref = lbfgsb(rosenbrock, np.array([-1.2, 0.4]), -2.0, [2.0, 0.5], maxiter=500, gtol=1e-10, ftol=0,
                 progress=False)
    assert res.success and res.x[1] == 0.5                      # the active bound is met exactly
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)         # x1 ≈ 0.7086 (not √0.5: ∂f/∂x1 = 0 there)


@pytest.mark.parametrize("solver", [spg, lbfgs])
def test_resume_from_checkpoint_equals_uninterrupted(solver):
    """Stop after 4 iterations, restore the stored state (through to_dict/from_dict), finish:
    every iterate, value and count equals the uninterrupted run's, bit for bit."""
    fun = ill_conditioned_quadratic()
    x0 = np.zeros(40)
    kw = dict(maxiter=30, progress=False) | ({"memory": 10} if solver is spg else {})
    full = solver(fun, x0, -5.0, 5.0, **kw)
    if solver is spg:
        assert np.any(np.diff(full.fhist[4:]) > 0)               # the non-monotone window matters
    states = []
    part = solver(fun, x0, -5.0, 5.0, checkpoint=states.append, callback=lambda x, info: info["iteration"] == 4,
                  **kw)
    assert part.nit == 4 and [s.iteration for s in states] == [1, 2, 3, 4]
    stored = {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in states[-1].to_dict().items()}
    rest = solver(fun, x0, -5.0, 5.0, state=stored, **kw)
    np.testing.assert_array_equal(rest.x, full.x)
    np.testing.assert_array_equal(rest.fhist, full.fhist)
    assert rest.nfev == full.nfev and rest.nit == full.nit == 30
    if solver is lbfgs:
        assert states[-1].s_pairs.shape == (4, 40)               # the memory travels with the state
    # a state from one method cannot resume the other; sizes must match
    other = lbfgs if solver is spg else spg
    with pytest.raises(ValueError, match="cannot resume"):
        other(fun, x0, -5.0, 5.0, state=states[-1], maxiter=30, progress=False)
    with pytest.raises(ValueError, match="unknowns"):
        solver(fun, np.zeros(3), -5.0, 5.0, state=states[-1], **kw)
    bad = states[-1].to_dict()
    del bad["g"]
    with pytest.raises(ValueError, match="lacks"):
        OptimizerState.from_dict(bad)


# --------------------------------------------------------------------------- FWI helpers
def test_slowness_bounds_inversion():
    mmin, mmax = slowness_bounds(1.3, 6.5)
    assert mmin == pytest.approx(1 / 6.5**2, rel=1e-6) and mmax == pytest.approx(1 / 1.3**2, rel=1e-6)
    assert mmin < mmax
    lo, up = slowness_bounds(1.5, 4.0, shape=(4, 3))
    assert lo.shape == up.shape == (4, 3) and lo.dtype == np.float32
    np.testing.assert_allclose(1 / np.sqrt(up), 1.5, rtol=1e-6)
    np.testing.assert_allclose(1 / np.sqrt(lo), 4.0, rtol=1e-6)
    vmin = np.array([[1.5, 2.0]])
    lo, up = slowness_bounds(vmin, 5.0)
    np.testing.assert_allclose(up, 1 / vmin**2, rtol=1e-6)
    with pytest.raises(ValueError, match="vmin > vmax at 1"):
        slowness_bounds(np.array([1.5, 7.0]), 6.5)
    with pytest.raises(ValueError, match="positive"):
        slowness_bounds(0.0, 6.5)


def _layered_vp(nx=9, nz=12, water=4):
    vp = np.tile(np.linspace(2.0, 4.0, nz), (nx, 1))
    vp[:, :water] = 1.5
    return vp


def test_detect_water_rows_and_mask():
    vp = _layered_vp()
    assert detect_water_rows(vp) == 4
    assert detect_water_rows(np.full((3, 5), 1.5)) == 5
    assert detect_water_rows(np.full((3, 5), 2.0)) == 0
    mask = water_mask(vp)
    assert mask.nfree == 9 * 8
    g = np.ones((9, 12), np.float32)
    gm = mask(g)
    assert gm.dtype == np.float32 and np.all(gm[:, :4] == 0) and np.all(gm[:, 4:] == 1)
    m = 1 / vp**2
    lo, up = mask.pin_bounds(*slowness_bounds(1.3, 6.5, vp.shape), m)
    np.testing.assert_array_equal(lo[:, :4], m[:, :4])
    np.testing.assert_array_equal(up[:, :4], m[:, :4])
    assert np.all(lo[:, 4:] < up[:, 4:])
    with pytest.raises(TypeError, match="boolean"):
        ModelMask(np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        mask(np.ones((3, 3)))
    with pytest.raises(ValueError, match="exceeds"):
        water_mask(vp, rows=13)


def test_water_layer_fixed_during_inversion():
    vp = _layered_vp()
    m0 = (1 / vp**2).astype(np.float32)
    target = (1 / (vp + 0.7) ** 2).astype(np.float32)    # "true" model: faster everywhere, water too
    mask = water_mask(vp)
    lo, up = mask.pin_bounds(*slowness_bounds(1.3, 6.5, vp.shape), m0)

    def fun(m):
        r = m.astype(np.float64) - target
        return 0.5 * float(np.sum(r * r)), r        # gradient NOT masked: the pinned bounds must hold

    res = spg(fun, m0, lo, up, maxiter=100, progress=False)
    np.testing.assert_array_equal(res.x[:, :4], m0[:, :4])
    np.testing.assert_allclose(res.x[:, 4:], target[:, 4:], atol=1e-5)
    res2 = spg(mask.wrap(fun), m0, *slowness_bounds(1.3, 6.5), maxiter=100, progress=False)
    np.testing.assert_array_equal(res2.x[:, :4], m0[:, :4])


def test_scaled_objective_first_and_every():
    h, c = np.array([1.0, 50.0]), np.array([0.5, -0.2])
    fun = diag_quadratic(h, c)
    obj = ScaledObjective(fun, target=0.05)
    f0, g0 = obj(np.zeros(2))
    assert np.max(np.abs(g0)) == pytest.approx(0.05)
    assert obj.c == pytest.approx(0.05 / 10.0)
    f1, g1 = obj(np.ones(2))
    assert f1 == pytest.approx(obj.c * fun(np.ones(2))[0])
    np.testing.assert_allclose(g1, obj.c * fun(np.ones(2))[1])
    assert obj.nfev == 2 and obj.fhist[0] == pytest.approx(fun(np.zeros(2))[0])
    res = spg(ScaledObjective(fun, target=1e-3), np.zeros(2), -1, 1, maxiter=200, opt_tol=0, progress=False)
    ref = spg(fun, np.zeros(2), -1, 1, maxiter=200, opt_tol=0, progress=False)
    np.testing.assert_allclose(res.x, c, atol=1e-6)      # same minimiser
    # BB steps, Armijo and the relative progress tests are invariant to rescaling f
    assert res.nit == ref.nit and res.message == ref.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-9)
    every = ScaledObjective(fun, scale="every", target=2.0)
    for x in (np.zeros(2), np.ones(2)):
        f, g = every(x)
        assert np.max(np.abs(g)) == pytest.approx(2.0) and f == pytest.approx(fun(x)[0])
    with pytest.raises(ValueError, match="scale"):
        ScaledObjective(fun, scale="sometimes")
    with pytest.raises(ValueError, match="max"):
        ScaledObjective(lambda x: (0.0, np.zeros(2)))(np.zeros(2))


def test_shot_batches_reproducible():
    a, b = ShotBatches(97, 10, seed=42), ShotBatches(97, 10, seed=42)
    seq_a = [next(a) for _ in range(20)]
    seq_b = [b.batch_for(k) for k in range(20)]
    for x, y in zip(seq_a, seq_b):
        np.testing.assert_array_equal(x, y)
        assert len(np.unique(x)) == 10 and x.min() >= 0 and x.max() < 97
        assert np.all(np.diff(x) > 0)
    # fresh batches from one iteration to the next, and different seeds differ
    assert sum(np.array_equal(seq_a[k], seq_a[k + 1]) for k in range(19)) == 0
    c = ShotBatches(97, 10, seed=43)
    assert not all(np.array_equal(x, c.batch_for(k)) for k, x in enumerate(seq_a))
    # current/advance: stable within an iteration (line search), fresh after advance()
    d = ShotBatches(97, 10, seed=42)
    np.testing.assert_array_equal(d.current, d.current)
    np.testing.assert_array_equal(d.advance(), seq_a[1])
    assert d.iteration == 1


def test_shot_batches_cover_shots_uniformly():
    s = ShotBatches(20, 5, seed=7)
    counts = np.bincount(np.concatenate([s.batch_for(k) for k in range(2000)]), minlength=20)
    expected = 2000 * 5 / 20
    # binomial sd = sqrt(2000·0.25·0.75) ≈ 19.4: 6 sd allows for 20 draws of the max
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(2000 * 0.25 * 0.75))


def test_shot_batches_errors():
    with pytest.raises(ValueError, match="batch size 11 exceeds the number of shots 10"):
        ShotBatches(10, 11, seed=0)
    with pytest.raises(TypeError, match="seed"):
        ShotBatches(10, 2, seed=None)
    with pytest.raises(ValueError, match="batch"):
        ShotBatches(10, 0, seed=0)
    assert len(ShotBatches(10, 10, seed=1).current) == 10
