"""The gradient is the derivative of the discrete objective; float64 runs end to end.

Taylor ratios ``(f(m + h·dm) − f(m − h·dm)) / (2h·⟨g, dm⟩)`` at ``h = 2⁻⁸`` for the exact
gradient and the probed one at ``Q = I`` (``subsample=1``, both accumulation methods), in
float64 and float32; dot tests of ``F``/``Fᵀ`` and ``J``/``Jᵀ`` in float64; ``J`` against a
finite difference of ``F``; ``Model.pad_adjoint`` against ``Model.pad``.

What the ratios measure (kernels.py docstring): the operators' ``−Σ_n u[n]·v̈[n]`` equals the
Lagrangian ``−Σ_n v[n]·ü[n]`` with no remainder, and ``m`` in the absorbing layers is a copy
of the edge points, so the physical gradient is ``Eᵀ`` of the padded one. Dropping ``Eᵀ``
(``Model.unpad``, the formula before issue 13) biases the ratio by 0.8 % along the depth ramp
below and makes the float32 ratio along the gradient direction miss by far more.

Why central differences: with a least-squares misfit the one-sided ratio carries a
curvature term ``c·Δ`` (``Δ = h⟨g, dm⟩/f``, and ``c ≥ 1/4`` by Cauchy–Schwarz) and float32
round-off of f (measured 1.5e-6 relative on the zero-data case, 1e-5 with observed data)
adds ``ε/Δ``: the one-sided float32 ratio cannot get below ``2√(cε) ≈ 1e-3``. The one-sided
ratio's convergence to 1 (error halving with h) is checked in float64.
"""
import numpy as np
import pytest

import timeprobe as tp
from timeprobe.propagators import computational_axis
from timeprobe.testing import dottest

from conftest import acquisition, layered_model

H = 2.0 ** -8


def _model(like, m, dtype):
    return tp.Model(m=m, spacing=like.spacing, nbl=like.nbl, space_order=like.space_order, dtype=dtype,
                    dt=like.dt)


def _inner(g, dm):
    return float(np.sum(np.asarray(g, np.float64) * dm))


@pytest.fixture(scope="module")
def layered():
    """Layered truth, smoothed initial model with a fixed dt, one shot of 500 ms."""
    true = layered_model()
    init = true.smooth(30.0)
    init.dt = init.dt  # fixed: f(m + h·dm) runs on the same time axis
    q, rec = acquisition(true, nshots=1, t=500.0)
    return true, init, q, rec


def _gradients(model, q, d):
    """Exact and identity-probed (both methods) gradients: {name: (f, g)}."""
    dt, nt = computational_axis(model, q.geometry, d.geometry)
    out = {"exact": tp.fwi_objective(model, q, d)}
    for method in ("eq", "blocked"):
        out[method] = tp.fwi_objective(model, q, d, ps=nt, mode="identity", subsample=1, method=method)
    return out


@pytest.fixture(scope="module")
def float64_case(layered):
    """FWI objective with observed data, float64; dm a full-model depth ramp (the issue's case)."""
    true, init, q, rec = layered
    q64 = tp.Data(q.geometry, q.arrays, dtype=np.float64)
    d = tp.forward(_model(init, true.m, np.float64), q64, rec)
    assert d.dtype == np.float64 and d.arrays[0].dtype == np.float64
    m0 = init.m.astype(np.float64)
    z = np.meshgrid(*init.physical_coordinates(), indexing="ij")[1]
    dm = 0.003 * z / z.max()  # s²/km²; nonzero up to the edges, so the absorbing layers move too
    fun = lambda m: tp.fwi_objective(_model(init, m, np.float64), q64, d)[0]  # noqa: E731
    grads = _gradients(_model(init, m0, np.float64), q64, d)
    f = {s: fun(m0 + s * H * dm) for s in (1.0, 0.5, -1.0)}
    return grads, f, dm


@pytest.fixture(scope="module")
def float32_case(layered):
    """float32, zero observed data (f = ½ dt_d ‖F(m)q‖²: the residual is the whole record, so
    float32 round-off in f is smallest relative to its changes), dm along −g (the direction in
    which f is closest to quadratic: the central ratio's h² term is smallest there)."""
    _, init, q, rec = layered
    d = tp.Data(rec)
    m0 = init.m.astype(np.float64)
    grads = _gradients(_model(init, m0, np.float32), q, d)
    g = grads["exact"][1].astype(np.float64)
    dm = -3.0 * g / np.abs(g).max()
    fun = lambda m: tp.fwi_objective(_model(init, m, np.float32), q, d)[0]  # noqa: E731
    f = {s: fun(m0 + s * H * dm) for s in (1.0, -1.0)}
    return grads, f, dm


@pytest.mark.parametrize("path", ["exact", "eq", "blocked"])
def test_taylor_ratio_float64(float64_case, path):
    grads, f, dm = float64_case
    f0, g = grads[path]
    assert g.dtype == np.float64
    gdm = _inner(g, dm)
    central = (f[1.0] - f[-1.0]) / (2 * H * gdm)
    # measured 3e-8 (h² term and float64 round-off); the pre-fix gradient (no pad adjoint): 8e-3
    assert abs(central - 1) <= 1e-6, central
    # the one-sided ratio tends to 1: its error is the curvature term, halving with h
    e1 = (f[1.0] - f0) / (H * gdm) - 1
    e2 = (f[0.5] - f0) / (H / 2 * gdm) - 1
    assert abs(e1) <= 1e-3 and abs(e2 / e1 - 0.5) <= 0.01, (e1, e2)


@pytest.mark.parametrize("path", ["exact", "eq", "blocked"])
def test_taylor_ratio_float32(float32_case, path):
    grads, f, dm = float32_case
    _, g = grads[path]
    assert g.dtype == np.float32
    central = (f[1.0] - f[-1.0]) / (2 * H * _inner(g, dm))
    # measured within 1e-4 (the float64 h² term is 5e-5); without the pad adjoint: far off
    assert abs(central - 1) <= 1e-3, central


def test_identity_probes_equal_exact_float64(float64_case):
    """At Q = I, k = 1 the probed gradients are the exact one to float64 round-off."""
    grads, _, _ = float64_case
    f, g = grads["exact"]
    for method in ("eq", "blocked"):
        fp, gp = grads[method]
        assert np.isclose(fp, f, rtol=1e-12, atol=0)
        assert np.linalg.norm(gp - g) <= 1e-10 * np.linalg.norm(g), method


def _random_data(geometry, rng, dtype):
    return tp.Data(geometry, [rng.standard_normal((geometry.nt, geometry.npoints(i)))
                              for i in range(geometry.nshots)], dtype=dtype)


@pytest.fixture(scope="module")
def small64():
    base = layered_model(shape=(61, 41), nbl=20, smooth=True)
    model = _model(base, base.m.astype(np.float64), np.float64)
    q, rec = acquisition(base, nshots=1, nrec=15, t=300.0, dt=1.5)
    return model, tp.Data(q.geometry, q.arrays, dtype=np.float64), rec


def test_forward_adjoint_dot_float64(small64):
    model, q, rec = small64
    rng = np.random.default_rng(3)
    x, y = _random_data(q.geometry, rng, np.float64), _random_data(rec, rng, np.float64)
    err, lhs, _ = dottest(lambda a: tp.forward(model, a, rec), lambda b: tp.adjoint(model, b, q.geometry), x, y)
    assert lhs != 0 and err <= 1e-10, err  # measured 2e-15


@pytest.mark.parametrize("adjoint", ["born_adjoint", "jacobian_adjoint", "probed_identity"])
def test_born_adjoint_dot_float64(small64, adjoint):
    model, q, rec = small64
    rng = np.random.default_rng(4)
    dm, y = rng.standard_normal(model.shape), _random_data(rec, rng, np.float64)
    dt, nt = computational_axis(model, q.geometry, rec)
    adj = {"born_adjoint": lambda b: tp.born_adjoint(model, q, b),
           "jacobian_adjoint": lambda b: tp.jacobian_adjoint(model, q, b),
           "probed_identity": lambda b: tp.jacobian_adjoint(model, q, b, ps=nt, mode="identity",
                                                            subsample=1)}[adjoint]
    err, lhs, _ = dottest(lambda a: tp.born(model, q, a, rec), adj, dm, y)
    assert lhs != 0 and err <= 1e-10, err  # measured 1e-15 … 4e-15


def test_born_is_derivative_of_forward_float64(small64):
    """J δm = lim (F(m + hδm) − F(m − hδm))/2h, absorbing layers included (δm padded like m)."""
    model, q, rec = small64
    dm = np.random.default_rng(5).standard_normal(model.shape)
    m0 = model.m.astype(np.float64)
    jdm = tp.born(model, q, dm, rec).arrays[0]
    h = 2.0 ** -14
    fd = (tp.forward(model.with_m(m0 + h * dm), q, rec).arrays[0]
          - tp.forward(model.with_m(m0 - h * dm), q, rec).arrays[0]) / (2 * h)
    # measured 5e-8 (h² term); zero-padding δm, as before issue 13, misses the layers: 3e-2
    assert np.linalg.norm(fd - jdm) <= 1e-6 * np.linalg.norm(jdm)


@pytest.mark.parametrize("shape,nbl", [((7, 5), 3), ((4, 6, 5), 2), ((6, 4), 0)])
def test_pad_adjoint_is_transpose_of_edge_padding(shape, nbl):
    rng = np.random.default_rng(6)
    model = tp.Model(vp=np.full(shape, 2.0), spacing=10.0, nbl=nbl, space_order=2, dtype=np.float64)
    a = rng.standard_normal(shape)
    b = rng.standard_normal(model.shape_padded)
    lhs = float(np.sum(model.pad(a) * b))
    rhs = float(np.sum(a * model.pad_adjoint(b)))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    assert model.pad_adjoint(b).shape == shape
    if nbl:  # differs from unpad on the edges only
        diff = model.pad_adjoint(b) - model.unpad(b)
        inner = (slice(1, -1),) * len(shape)
        assert np.all(diff[inner] == 0) and np.abs(diff).max() > 0


def test_float64_data_and_dtype_errors():
    geom = tp.Geometry([np.zeros((2, 2))], dt=1.0, t=4.0)
    d64 = tp.Data(geom, [np.arange(10.0).reshape(5, 2) / 3], dtype=np.float64)
    assert d64.arrays[0].dtype == np.float64 and d64.arrays[0][1, 0] == 2.0 / 3
    for e in (d64 + d64, d64 - d64, 2.0 * d64, d64[0], d64.copy(), d64.resample(0.5)):
        assert e.dtype == np.float64 and e.arrays[0].dtype == np.float64
    assert tp.Data(geom, [np.zeros((5, 2))]).arrays[0].dtype == np.float32  # default unchanged
    assert tp.ricker(0.01, 1.0, 10.0, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        tp.Data(geom, dtype=np.int32)
    with pytest.raises(ValueError, match="float32 or float64"):
        tp.Model(vp=np.full((5, 5), 2.0), spacing=10.0, dtype=np.float16)


def test_sum_padding_changes_only_the_outermost_points(layered):
    """sum_padding=False keeps the padded gradient's physical part: equal to the exact derivative
    everywhere but on the outermost points (where the absorbing layers fold in), so a run that
    fixes those points (timeprobe.fwi) loses nothing; the probed path then skips the layers."""
    true, init, q, rec = layered
    d = tp.forward(true, q, rec)
    _, g = tp.fwi_objective(init, q, d)
    _, g0 = tp.fwi_objective(init, q, d, sum_padding=False)
    inner = (slice(1, -1),) * init.dim
    np.testing.assert_array_equal(g0[inner], g[inner])
    assert np.abs(g0 - g).max() > 1e-3 * np.abs(g).max()  # the edges do differ
    dt, nt = computational_axis(init, q.geometry, rec)
    _, gp = tp.fwi_objective(init, q, d, ps=nt, mode="identity", subsample=1, sum_padding=False)
    rel = np.linalg.norm(gp[inner] - g[inner]) / np.linalg.norm(g[inner])
    assert rel < 1e-5, rel
