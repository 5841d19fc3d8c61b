"""PyLops face: the Born operator J as a pylops.LinearOperator — dot tests, and LS-RTM with cgls."""
import numpy as np
import pytest

pylops = pytest.importorskip("pylops")

import timeprobe as tp  # noqa: E402

from conftest import acquisition, layered_model  # noqa: E402


def _case(dtype):
    true = layered_model(shape=(41, 31), nbl=10, space_order=4)
    m0 = tp.Model(m=true.smooth(30.0).m, spacing=true.spacing, nbl=true.nbl, space_order=true.space_order,
                  dtype=dtype)
    q, rec = acquisition(true, nshots=2, nrec=15, t=250.0, dt=2.0, f0=0.02)
    return true, m0, q, rec


@pytest.fixture
def global_rng_seeded():
    """pylops.utils.dottest draws u, v from NumPy's global RNG: seed it for this test only (the
    state is restored after). Unseeded, the draw depended on the tests run before: about one draw
    in 150 makes v·(J u) nearly cancel, and float32 fails the relative test by that cancellation
    (2.5e-3 on one such draw), not by the adjoint (float64 accumulation: ≤ 3.6e-5 over 20 draws)."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_dottest(dtype, rtol, global_rng_seeded):
    _, m0, q, rec = _case(dtype)
    J = tp.jacobian_operator(m0, q, rec)
    assert J.shape == (2 * rec.nt * 15, 41 * 31) and J.dtype == np.dtype(dtype)
    assert pylops.utils.dottest(J, *J.shape, rtol=rtol, raiseerror=True)
    # the test can fail: an adjoint off by 0.1 % is caught

    class Mismatched(pylops.LinearOperator):
        def __init__(self):
            super().__init__(dtype=J.dtype, shape=J.shape)

        def _matvec(self, x):
            return J.matvec(x)

        def _rmatvec(self, y):
            return 1.001 * J.rmatvec(y)
    with pytest.raises(AssertionError, match="Dot test failed"):
        pylops.utils.dottest(Mismatched(), *J.shape, rtol=rtol, raiseerror=True)


def test_float64_dot_test_is_tight():
    _, m0, q, rec = _case(np.float64)
    J = tp.jacobian_operator(m0, q, rec)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(J.shape[1]), rng.standard_normal(J.shape[0])
    lhs, rhs = np.dot(J @ x, y), np.dot(x, J.H @ y)
    assert abs(lhs - rhs) / abs(lhs) < 1e-10, (lhs, rhs)


def test_lsrtm_with_cgls_reduces_the_residual():
    """LS-RTM: cgls on J δm = δd (linearised data of the true model) lowers the residual and
    correlates with the true reflectivity."""
    true, m0, q, rec = _case(np.float64)
    J = tp.jacobian_operator(m0, q, rec)
    dm_true = true.m.astype(np.float64) - m0.m
    dd = J @ dm_true.ravel()
    x, istop, iit, r1norm, r2norm, cost = pylops.optimization.basic.cgls(J, dd, np.zeros(J.shape[1]), niter=8)
    assert cost[-1] < 0.3 * cost[0], cost  # measured 0.20 after 8 iterations
    c = float(x @ dm_true.ravel() / np.linalg.norm(x) / np.linalg.norm(dm_true))
    assert c > 0.5, c


def test_probed_adjoint_is_an_estimate():
    _, m0, q, rec = _case(np.float32)
    J = tp.jacobian_operator(m0, q, rec)
    Jp = tp.jacobian_operator(m0, q, rec, ps=8, seed=1)
    y = J @ np.random.default_rng(2).standard_normal(J.shape[1])
    a, b = J.H @ y, Jp.H @ y
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert 0.3 < cos < 0.9999, cos
