"""Subsurface-offset and time-lag gathers (timeprobe.imaging.gathers): the exact in-loop baseline
against an independent NumPy oracle, probed-with-identity-probes == exact, checkpointed == stored,
the lag probes, probed accuracy, and bad input."""
import numpy as np
import pytest

import timeprobe as tp
from timeprobe.imaging import lag_probes, lag_steps, shift_probes, shifted_correlation
from timeprobe.probe_buffers import region_margin
from timeprobe.probing import Probing
from timeprobe.propagators import computational_axis, run_adjoint, run_forward
from timeprobe.geometry import from_computational_adjoint, to_computational
from timeprobe.utils import finite_difference_weights

from conftest import acquisition, layered_model

T = 300.0
# (ic, axis, offsets in m, lags in units of dt): x offsets with lags (both signs, and half steps),
# vertical offsets with ISIC
CASES = [("as", "x", [-20.0, 0.0, 10.0, 70.0], [-2.0, 0.0, 1.5]),
         ("isic", "z", [-10.0, 0.0, 20.0], [0.0])]


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def tiny():
    """41×31 layered model at 10 m, smooth background, one shot, reflection data."""
    model = layered_model(shape=(41, 31))
    model0 = layered_model(shape=(41, 31), smooth=True)
    q, rg = acquisition(model, nshots=1, t=T)
    d, d0 = tp.forward(model, q, rg), tp.forward(model0, q, rg)
    dd = tp.Data(rg, [a - b for a, b in zip(d.arrays, d0.arrays)])
    return model0, q, rg, dd


@pytest.fixture(scope="module")
def exact(tiny):
    """The exact in-loop gathers of every case (stored forward field)."""
    model0, q, _, dd = tiny
    out = {}
    for ic, axis, offs, lags in CASES:
        out[ic] = tp.gathers(model0, q, dd, ps=None, offsets=offs, axis=axis,
                             lags=np.array(lags) * model0.dt, ic=ic, illumination=False)
    return out


# --------------------------------------------------------------------------- NumPy oracle
def _derivative(f, axis, order, deriv, h, lo, n):
    """Centred ``deriv``-th derivative (accuracy ``order``) of ``f`` along ``axis`` at the points
    ``lo … lo + n − 1`` of every axis (NumPy, the propagators' weights)."""
    w = finite_difference_weights(deriv, order) / h ** deriv
    half = order // 2
    out = 0.0
    for k, wk in zip(range(-half, half + 1), w):
        idx = tuple(slice(lo + (k if a == axis else 0), lo + n[a] + (k if a == axis else 0))
                    for a in range(f.ndim))
        out = out + wk * f[idx]
    return out


def _factors(f, side, ic, lo, model):
    """The imaging factors of one snapshot on the physical domain (``f``'s physical part starts at
    ``lo`` on every axis)."""
    n, so, hs = model.shape, model.space_order, model.spacing
    phys = f[tuple(slice(lo, lo + k) for k in n)].astype(np.float64)
    if ic == "as":
        return [phys]
    grads = [_derivative(f.astype(np.float64), a, so, 1, hs[a], lo, n) for a in range(f.ndim)]
    if side == "u":
        return [phys] + grads
    lap = sum(_derivative(f.astype(np.float64), a, so, 2, hs[a], lo, n) for a in range(f.ndim))
    return [lap] + grads


def _moved(a, s, axis):
    """``out[x] = a[x − s]`` along ``axis``, zero fill."""
    out = np.zeros_like(a)
    n = a.shape[axis]
    if abs(s) >= n:
        return out
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if s >= 0:
        dst[axis], src[axis] = slice(s, n), slice(0, n - s)
    else:
        dst[axis], src[axis] = slice(0, n + s), slice(-s, n)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _oracle(model, U, W, lo_w, shifts, axis, steps, ic):
    """``I(l, j, x) = −Σ_n Σ_c a_c(u[n − L_l])(x − s_j)·b_c(w[n])(x + s_j)`` from stored fields:
    ``U`` (nt + 1, padded grid) the forward field, ``W`` (nt, region) the adjoint field's v̈ ("as")
    or v ("isic") with its physical part at ``lo_w``; n over the adjoint loop 1 … nt − 1."""
    nt = W.shape[0]
    G = np.zeros((len(steps), len(shifts)) + model.shape)
    for n in range(1, nt):
        b = _factors(W[n], "v", ic, lo_w, model)
        for lag, L in enumerate(steps):
            m = n - int(L)
            if not 0 <= m <= nt - 1:
                continue
            a = _factors(U[m], "u", ic, model.nbl, model)
            for j, s in enumerate(shifts):
                G[lag, j] -= sum(_moved(ac, s, axis) * _moved(bc, -s, axis) for ac, bc in zip(a, b))
    return G


@pytest.mark.parametrize("case", CASES, ids=[c[0] + "-" + c[1] for c in CASES])
def test_exact_gathers_match_numpy_oracle(tiny, exact, case):
    """The in-loop gathers equal the correlation of the stored u and v computed in NumPy."""
    ic, axis, offs, lags = case
    model0, q, rg, dd = tiny
    dt, nt = computational_axis(model0, q.geometry, rg)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    rc = from_computational_adjoint(dd.arrays[0], dd.geometry[0], dt, nt)
    sc, rcoord = q.geometry.coordinates[0], rg.coordinates[0]
    _, usave = run_forward(model0, sc, wc, rcoord, dt, nt, save=True)
    U = np.array(usave.data)
    # the adjoint field at every step: identity probes, reference ("eq") accumulation, k = 1
    ident = Probing(np.eye(nt), subsample=1, method="eq", direct=False, dtype=np.float32,
                     layers=False)  # the region of the images (physical domain + stencil margin)
    _, _, vbar = run_adjoint(model0, rcoord, rc, dt, nt, probing=ident, ic=ic)
    W = np.moveaxis(np.array(vbar.data), -1, 0)
    a = 0 if axis == "x" else 1
    shifts = [int(round(h / model0.spacing[a])) for h in offs]
    lo_w = model0.nbl - region_margin(model0, ident.layers)
    ref = _oracle(model0, U, W, lo_w, shifts, a, [2 * t for t in lags], ic)
    got = exact[ic].image
    assert got.shape == ref.shape
    assert np.linalg.norm(ref) > 0
    assert _rel(got, ref) < 2e-5, _rel(got, ref)
    for lag in range(len(lags)):  # every panel carries energy of its own (nothing trivially zero)
        for j in range(len(offs)):
            assert np.linalg.norm(ref[lag, j]) > 1e-3 * np.linalg.norm(ref)
            assert _rel(got[lag, j], ref[lag, j]) < 1e-4


@pytest.mark.parametrize("case", CASES, ids=[c[0] + "-" + c[1] for c in CASES])
def test_identity_probes_reproduce_exact_gathers(tiny, exact, case):
    """Q = I, k = 1 (blocked accumulation, lags through lag_probes): probed == exact to round-off."""
    ic, axis, offs, lags = case
    model0, q, rg, dd = tiny
    _, nt = computational_axis(model0, q.geometry, rg)
    g = tp.gathers(model0, q, dd, ps=nt, mode="identity", subsample=1, offsets=offs, axis=axis,
                   lags=np.array(lags) * model0.dt, ic=ic, illumination=False)
    ge = exact[ic]
    assert g.image.shape == ge.image.shape == (len(lags), len(offs)) + model0.shape
    np.testing.assert_allclose(g.offsets, offs)
    np.testing.assert_allclose(g.lags, np.array(lags) * model0.dt)
    assert _rel(g.image, ge.image) < 2e-6, _rel(g.image, ge.image)
    if len(lags) > 1:
        assert g.info["lag_columns"] == [0]  # identity: every shifted probe is in span(Q)
        # no lags: the cross-correlation's x offsets correlate ū and v̄ as they lie (one block)
        g0 = tp.gathers(model0, q, dd, ps=nt, mode="identity", subsample=1, offsets=offs, axis=axis,
                        ic=ic, illumination=False)
        assert _rel(g0.image[0], ge.image[lags.index(0.0)]) < 2e-6


def test_checkpointed_equals_stored_and_zero_offset_is_the_image(tiny, exact):
    """Revolve checkpoints (recomputed u) give the stored-field gathers; h = τ = 0 is rtm's image."""
    model0, q, _, dd = tiny
    ic, axis, offs, _ = CASES[1]
    gc = tp.gathers(model0, q, dd, ps=None, offsets=offs, axis=axis, ic=ic, illumination=False,
                    storage="checkpoint", n_checkpoints=5)
    assert _rel(gc.image, exact[ic].image) < 1e-5, _rel(gc.image, exact[ic].image)
    img, _ = tp.rtm(model0, q, dd, ps=None, ic=ic, illumination=False)
    assert _rel(exact[ic].image[0, offs.index(0.0)], img) < 1e-5
    lag0 = CASES[0][3].index(0.0)
    ia, _ = tp.rtm(model0, q, dd, ps=None, ic="as", illumination=False)
    assert _rel(exact["as"].image[lag0, CASES[0][2].index(0.0)], ia) < 1e-5


def test_probed_gathers_close_to_exact(tiny, exact):
    """QR probes (r = 32, lags with extra adjoint columns): close to the exact gathers."""
    model0, q, _, dd = tiny
    ic, axis, offs, lags = CASES[0]
    g = tp.gathers(model0, q, dd, ps=32, seed=0, subsample=2, offsets=offs, axis=axis,
                   lags=np.array(lags) * model0.dt, ic=ic, illumination=False)
    c = _cos(g.image, exact[ic].image)
    assert c > 0.98, c  # measured 0.999
    assert g.info["k"] == [2] and 0 < g.info["lag_columns"][0] <= 32


def test_illumination_divides_every_panel(tiny, exact):
    model0, q, _, dd = tiny
    ic, axis, offs, lags = CASES[1]
    g = tp.gathers(model0, q, dd, ps=None, offsets=offs, axis=axis, ic=ic, illumination=True)
    lam = g.illumination
    assert lam.shape == model0.shape and lam.max() > 0
    ref = exact[ic].image / (lam + 1e-3 * lam.max())
    assert _rel(g.image, ref) < 1e-5


@pytest.mark.parametrize("ic", ["as", "isic"])
def test_imaging_factors_multiply_to_the_imaging_condition(ic):
    """Σ_c a_c(u)·b_c(v) is the per-time-step imaging condition, stencil for stencil (2D and 3D)."""
    import sympy
    from timeprobe.operators import imaging_condition, imaging_factors
    from timeprobe.workspace import workspace
    for shape in ((21, 15), (9, 9, 9)):
        model = tp.Model(vp=np.full(shape, 2.0, np.float32), spacing=10.0, nbl=4, space_order=4)
        ws = workspace(model)
        u, v = ws.field("u"), ws.field("v")
        a = imaging_factors(ic, u, "u", ws.space_dims)
        b = imaging_factors(ic, v, "v", ws.space_dims)
        assert len(a) == len(b) == (1 if ic == "as" else 1 + model.dim)
        diff = sum(x * y for x, y in zip(a, b)).evaluate - imaging_condition(ic, u, v, ws.space_dims).evaluate
        assert sympy.expand(diff) == 0
    with pytest.raises(ValueError, match="side"):
        imaging_factors(ic, u, "w", ws.space_dims)


@pytest.mark.parametrize("shifts, lead, n, cmax", [
    ([0], (7,), 50, 1 << 19), ([-2, 0, 3], (7,), 50, 1 << 19), (list(range(-9, 10)), (7,), 50, 1 << 19),
    (list(range(-9, 10)), (7,), 51, 1 << 19), ([-8, -5, -1, 0, 2, 3, 4, 7], (7,), 51, 1 << 19),
    (list(range(-6, 7)), (3, 4), 37, 500)],
    ids=["one", "few", "band", "band-odd-n", "band-gaps", "band-3d-chunked"])
def test_shifted_correlation_matches_brute_force(shifts, lead, n, cmax):
    """The probed correlation (point-wise for few offsets, banded BLAS products over the rows of
    each parity for many, in passes over the leading axis when ``cmax`` is small) equals a loop
    over points, offsets and factors, with zero outside the axis."""
    rng = np.random.default_rng(0)
    k = 6
    A = [rng.standard_normal(lead + (n, k)).astype(np.float32) for _ in range(2)]
    B = [rng.standard_normal(lead + (n, k)).astype(np.float32) for _ in range(2)]
    G = np.zeros((len(shifts),) + lead + (n,), np.float32)
    shifted_correlation(G, A, B, shifts, tile=8, cmax=cmax)
    ref = np.zeros(G.shape)
    for j, s in enumerate(shifts):
        for x in range(n):
            if 0 <= x - s < n and 0 <= x + s < n:
                ref[j, ..., x] = -sum((a[..., x - s, :].astype(np.float64) * b[..., x + s, :]).sum(-1)
                                      for a, b in zip(A, B))
    assert np.abs(ref).max() > 1
    np.testing.assert_allclose(G, ref, atol=1e-5)


# --------------------------------------------------------------------------- lag probes
def test_lag_probes_identity_is_exact_and_qr_needs_few_columns():
    nt = 40
    Qa, C, info = lag_probes(np.eye(nt), [-3, 0, 2])
    assert info["extra"] == 0 and Qa.shape == (nt, nt)
    for Ct, s in zip(C, [-3, 0, 2]):
        np.testing.assert_allclose(Qa @ Ct, shift_probes(np.eye(nt), s), atol=1e-12)
    # band-limited probes that vanish at the ends of the axis (like data-derived ones): the
    # shifted probes need extra columns, zero lag never does, more columns leave less out
    t = np.arange(200.0)
    window = lambda s: np.exp(-((t - s - 100) / 35) ** 2)  # noqa: E731
    B = lambda s: np.stack([window(s) * np.sin(2 * np.pi * f * (t - s) / 200 + f)  # noqa: E731
                            for f in range(3, 11)], 1)
    Q = np.linalg.qr(B(0.0))[0]
    Qa, C, info = lag_probes(Q, [0.0, 2.5, -4.0], extra="auto", tol=1e-2)
    np.testing.assert_allclose(Qa @ C[0], Q, atol=1e-12)
    np.testing.assert_allclose(Qa.T @ Qa, np.eye(Qa.shape[1]), atol=1e-12)
    assert 0 < info["extra"] < Q.shape[1] and info["residual"] <= 1e-2  # measured: 6 columns, 0.0065
    res = [lag_probes(Q, [2.5, -4.0], extra=e)[2]["residual"] for e in (0, 2, 4, 8)]
    assert all(a > b for a, b in zip(res, res[1:])) and res[0] > 0.1 and res[-1] < 5e-3
    # fractional shifts: band-limited interpolation of the columns
    assert np.abs(shift_probes(B(0.0), 2.5) - B(2.5)).max() < 1e-3  # measured 2.6e-4


def test_lag_steps_rules():
    np.testing.assert_allclose(lag_steps([-1.0, 0.0, 0.5], 1.0, 100, exact=True), [-2, 0, 1])
    assert lag_steps([0.3], 1.0, 100, exact=False)[0] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="multiples of dt/2"):
        lag_steps([0.3], 1.0, 100, exact=True)
    with pytest.raises(ValueError, match="record"):
        lag_steps([60.0], 1.0, 100, exact=False)
    with pytest.raises(ValueError, match="distinct"):
        lag_steps([1.0, 1.0], 1.0, 100, exact=False)


# --------------------------------------------------------------------------- bad input
def test_bad_input(tiny):
    model0, q, _, dd = tiny
    bad = [(dict(offsets=[0.0, 15.0]), ValueError, "multiples"),
           (dict(offsets=[0.0, 300.0]), ValueError, "exceed the model"),
           (dict(offsets=[10.0, 10.0]), ValueError, "distinct"),
           (dict(offsets=[np.nan]), ValueError, "NaN"),
           (dict(axis="y"), ValueError, "axis must be one of"),
           (dict(axis=0), TypeError, "axis must be one of"),
           (dict(lags=[0.3 * model0.dt]), ValueError, "multiples of dt/2"),
           (dict(lags=[400.0]), ValueError, "record length"),
           (dict(lags=[model0.dt], storage="checkpoint"), ValueError, "storage='full'"),
           (dict(storage="disk"), ValueError, "storage must be one of"),
           (dict(ic="foo"), ValueError, "imaging condition"),
           (dict(ps=4, lags=[model0.dt], lag_columns=-1), ValueError, "lag_columns"),
           (dict(ps=4, probe_data=np.zeros((10, 3))), TypeError, "probe_data")]
    for kwargs, err, msg in bad:
        with pytest.raises(err, match=msg):
            tp.gathers(model0, q, dd, illumination=False, **kwargs)


def test_3d_identity_probes_reproduce_exact_gathers():
    """3D: y offsets with time lags (lag mixing, probe blocks) and x offsets (ū, v̄ as they lie)."""
    vp = np.full((13, 11, 9), 1.8, np.float32)
    vp[..., 5:] = 2.4
    model = tp.Model(vp=vp, spacing=20.0, nbl=6, space_order=4, dt=1.0)
    T = 119.0
    src = tp.Geometry([np.array([[120.0, 100.0, 20.0]])], dt=1.0, t=T)
    rg = tp.Geometry([np.stack([np.linspace(0, 240, 13), np.full(13, 100.0), np.full(13, 20.0)], 1)],
                     dt=1.0, t=T)
    q = tp.Data(src, [tp.ricker(0.025, 1.0, T)])
    d = tp.forward(model, q, rg)
    d = tp.Data(rg, [d.arrays[0] * (np.arange(d.arrays[0].shape[0]) > 40)[:, None]])
    _, nt = computational_axis(model, q.geometry, rg)
    for axis, offs, lags in (("y", [-20.0, 0.0, 60.0], [0.0, model.dt]), ("x", [-40.0, 0.0, 80.0], None)):
        kw = dict(offsets=offs, axis=axis, lags=lags, ic="as", illumination=False)
        ge = tp.gathers(model, q, d, ps=None, **kw)
        gp = tp.gathers(model, q, d, ps=nt, mode="identity", subsample=1, **kw)
        assert gp.image.shape == ge.image.shape == (1 if lags is None else 2, 3) + model.shape
        assert np.linalg.norm(ge.image) > 0
        assert _rel(gp.image, ge.image) < 2e-6, (axis, _rel(gp.image, ge.image))
