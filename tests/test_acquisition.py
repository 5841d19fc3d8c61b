"""Acquisition layouts: lines, areal grids, per-shot patches and survey geometries (no propagation)."""
import numpy as np
import pytest

import timeprobe as tp
from timeprobe import acquisition as acq


@pytest.fixture(scope="module")
def model3d():
    # 2 km × 1.5 km × 1 km at (50, 50, 25) m
    return tp.Model(vp=np.full((41, 31, 41), 2.0, np.float32), spacing=(50.0, 50.0, 25.0), nbl=4)


@pytest.fixture(scope="module")
def model2d():
    return tp.Model(vp=np.full((101, 51), 2.0, np.float32), spacing=10.0, nbl=4)   # 1 km × 0.5 km


# --------------------------------------------------------------------------- line
def test_line_2d_counts_spacing_and_depth():
    p = acq.line(0.0, 1000.0, 25.0, depth=20.0)
    assert p.shape == (41, 2)
    np.testing.assert_allclose(p[:, 0], 25.0 * np.arange(41))
    assert np.all(p[:, 1] == 20.0)
    # the last point stops at or before `stop`; the step is exact
    p = acq.line(0.0, 1010.0, 25.0, depth=5.0)
    assert p.shape == (41, 2) and p[-1, 0] == 1000.0
    np.testing.assert_allclose(np.diff(p[:, 0]), 25.0)
    # round-off does not drop the last point (0.1 is not exact in binary)
    assert acq.line(0.0, 0.3, 0.1, depth=0.0).shape == (4, 2)


def test_line_centred_splits_the_leftover():
    p = acq.line(0.0, 1010.0, 200.0, depth=50.0, centred=True)
    # 6 points span 1000 m: 5 m left over at each end
    np.testing.assert_allclose(p[:, 0], 5.0 + 200.0 * np.arange(6))
    assert p[0, 0] - 0.0 == pytest.approx(1010.0 - p[-1, 0])


def test_line_3d_any_direction():
    along_x = acq.line((0.0, 750.0), (2000.0, 750.0), 100.0, depth=10.0)
    assert along_x.shape == (21, 3) and np.all(along_x[:, 1] == 750.0) and np.all(along_x[:, 2] == 10.0)
    along_y = acq.line((500.0, 0.0), (500.0, 1500.0), 50.0, depth=10.0)
    assert along_y.shape == (31, 3) and np.all(along_y[:, 0] == 500.0)
    np.testing.assert_allclose(np.diff(along_y[:, 1]), 50.0)
    diag = acq.line((0.0, 0.0), (300.0, 400.0), 100.0, depth=0.0)       # length 500 m
    assert diag.shape == (6, 3)
    np.testing.assert_allclose(np.linalg.norm(np.diff(diag[:, :2], axis=0), axis=1), 100.0)
    np.testing.assert_allclose(diag[-1, :2], (300.0, 400.0))
    one = acq.line((10.0, 20.0), (10.0, 20.0), 5.0, depth=3.0)
    np.testing.assert_array_equal(one, [[10.0, 20.0, 3.0]])


def test_line_bad_input():
    with pytest.raises(ValueError, match="spacing"):
        acq.line(0, 100, 0.0, depth=10)
    with pytest.raises(ValueError, match="spacing"):
        acq.line(0, 100, -5.0, depth=10)
    with pytest.raises(ValueError, match="depth"):
        acq.line(0, 100, 5.0, depth=np.nan)
    with pytest.raises(ValueError, match="start and stop"):
        acq.line((0, 0), 100, 5.0, depth=10)
    with pytest.raises(ValueError, match="start and stop"):
        acq.line((0, 0, 0), (1, 1, 1), 5.0, depth=10)


# --------------------------------------------------------------------------- grid
def test_grid_counts_order_and_spacing():
    g = acq.grid((0.0, 2000.0), (0.0, 1500.0), spacing=(100.0, 250.0), depth=500.0)
    nx, ny = 21, 7
    assert g.shape == (nx * ny, 3) and np.all(g[:, 2] == 500.0)
    # x slow, y fast: reshaping to (nx, ny) gives a C-ordered grid
    X = g[:, 0].reshape(nx, ny)
    Y = g[:, 1].reshape(nx, ny)
    np.testing.assert_allclose(X[:, 0], 100.0 * np.arange(nx))
    np.testing.assert_allclose(Y[0], 250.0 * np.arange(ny))
    assert np.all(X == X[:, :1]) and np.all(Y == Y[:1])
    # every point is distinct and the nearest-neighbour distances are the spacings
    assert len({tuple(p) for p in g}) == g.shape[0]
    square = acq.grid((0, 1000), (0, 1000), spacing=100.0, depth=0.0)
    assert square.shape == (121, 3)
    centred = acq.grid((0, 1050), (0, 1050), spacing=100.0, depth=0.0, centred=True)
    assert centred[:, 0].min() == pytest.approx(25.0) and centred[:, 1].max() == pytest.approx(1025.0)


def test_grid_bad_input():
    with pytest.raises(ValueError, match="x_range"):
        acq.grid((100, 0), (0, 100), 10.0, depth=0)
    with pytest.raises(ValueError, match="y_range"):
        acq.grid((0, 100), (0, 100, 200), 10.0, depth=0)
    with pytest.raises(ValueError, match="spacing"):
        acq.grid((0, 100), (0, 100), (10.0, 10.0, 10.0), depth=0)
    with pytest.raises(ValueError, match="spacing"):
        acq.grid((0, 100), (0, 100), (10.0, 0.0), depth=0)


# --------------------------------------------------------------------------- patches
def test_patches_hold_the_receivers_within_half_width():
    nodes = acq.grid((0, 2000), (0, 1500), 100.0, depth=500.0)
    shots = np.array([[0.0, 0.0, 10.0], [1000.0, 800.0, 10.0], [1950.0, 1500.0, 10.0]])
    hx, hy = 300.0, 200.0
    pat = acq.patches(shots, nodes, (hx, hy))
    assert len(pat) == 3
    for s, p in zip(shots, pat):
        inside = (np.abs(nodes[:, 0] - s[0]) <= hx) & (np.abs(nodes[:, 1] - s[1]) <= hy)
        np.testing.assert_array_equal(p, nodes[inside])      # exactly those, in the original order
    # an interior shot gets the full 7 × 5 patch; a corner shot a quarter of it
    assert pat[1].shape == (35, 3) and pat[0].shape == (4 * 3, 3)
    # 2D: receivers on a line
    rec = acq.line(0, 1000, 10.0, depth=5.0)
    p2 = acq.patches(acq.line(100, 900, 400.0, depth=5.0), rec, 150.0)
    assert [p.shape[0] for p in p2] == [26, 31, 26]


def test_patches_bad_input():
    nodes = acq.grid((0, 1000), (0, 1000), 100.0, depth=0.0)
    with pytest.raises(ValueError, match="shot 1 at .* has no receiver"):
        acq.patches([[500.0, 500.0, 0.0], [5000.0, 500.0, 0.0]], nodes, 120.0)
    with pytest.raises(ValueError, match="half_width"):
        acq.patches([[500.0, 500.0, 0.0]], nodes, 0.0)
    with pytest.raises(ValueError, match="2D points, expected 3D"):
        acq.patches([[500.0, 500.0, 0.0]], acq.line(0, 100, 10.0, depth=0.0), 100.0)


# --------------------------------------------------------------------------- survey
def test_survey_3d_with_patches_and_wavelets(model3d):
    nodes = acq.grid((0, 2000), (0, 1500), 250.0, depth=500.0)
    shots = acq.line((250.0, 750.0), (1750.0, 750.0), 500.0, depth=25.0)
    pat = acq.patches(shots, nodes, 600.0)
    src, rec, q = acq.survey(model3d, shots, pat, dt=4.0, t=1000.0, f0=0.012)
    assert isinstance(src, tp.Geometry) and src.nshots == rec.nshots == q.nshots == 4 and src.dim == 3
    assert all(src.npoints(s) == 1 for s in range(4))
    np.testing.assert_array_equal(np.concatenate(src.coordinates), shots)
    assert [rec.npoints(s) for s in range(4)] == [len(p) for p in pat]
    assert src.dt == rec.dt == 4.0 and src.t == rec.t == 1000.0 and src.nt == 251
    np.testing.assert_array_equal(q.arrays[2][:, 0], tp.ricker(0.012, 4.0, 1000.0))
    # no f0: no wavelets
    assert acq.survey(model3d, shots, nodes, dt=4.0, t=1000.0).q is None


def test_survey_2d_shared_receivers(model2d):
    sources = acq.line(0, 1000, 300.0, depth=20.0, centred=True)
    receivers = acq.line(0, 1000, 10.0, depth=10.0)
    s = acq.survey(model2d, sources, receivers, dt=2.0, t=500.0, f0=0.02, t0=0.0)
    assert s.src.nshots == 4 and all(s.rec.npoints(i) == 101 for i in range(4))
    assert s.q.arrays[0].shape == (251, 1)
    # several source points for one shot (a source array), as a list of arrays
    s2 = acq.survey(model2d, [sources[:2], sources[2:]], receivers, dt=2.0, t=500.0, f0=0.02)
    assert s2.src.nshots == 2 and s2.src.npoints(0) == 2 and s2.q.arrays[0].shape == (251, 2)


def test_survey_names_the_coordinate_outside_the_model(model3d, model2d):
    nodes = acq.grid((0, 2000), (0, 1600), 400.0, depth=500.0)       # y = 1600 m > 1500 m
    shots = acq.line((500.0, 750.0), (1500.0, 750.0), 500.0, depth=25.0)
    with pytest.raises(ValueError, match=r"receiver 4 at \(0, 1600, 500\) m .* y = 1600 m is not in the "
                                         r"model's y range \[0, 1500\] m"):
        acq.survey(model3d, shots, nodes, dt=4.0, t=500.0)
    deep = acq.line((500.0, 750.0), (1500.0, 750.0), 500.0, depth=1200.0)
    with pytest.raises(ValueError, match=r"source 0 .* z = 1200 m is not in the model's z range \[0, 1000\] m"):
        acq.survey(model3d, deep, acq.grid((0, 2000), (0, 1500), 500.0, depth=0.0), dt=4.0, t=500.0)
    with pytest.raises(ValueError, match=r"shot 2: source 0 .* x = -50 m is not in the model's x range"):
        acq.survey(model2d, np.array([[100.0, 5.0], [200.0, 5.0], [-50.0, 5.0]]),
                   acq.line(0, 1000, 10.0, depth=10.0), dt=2.0, t=100.0)
    with pytest.raises(ValueError, match=r"shot 0: receiver 0 .* z = 600 m is not in the model's z range \[0, 500\] m"):
        acq.survey(model2d, np.array([[100.0, 5.0]]), acq.line(0, 1000, 10.0, depth=600.0), dt=2.0, t=100.0)
    # the model's dimension must match
    with pytest.raises(ValueError, match="2D points, expected 3D"):
        acq.survey(model3d, np.array([[100.0, 5.0]]), np.array([[100.0, 5.0]]), dt=2.0, t=100.0)
    with pytest.raises(ValueError, match="3 receiver arrays for 2 shots"):
        acq.survey(model2d, np.array([[100.0, 5.0], [200.0, 5.0]]),
                   [np.array([[1.0, 1.0]])] * 3, dt=2.0, t=100.0)
    with pytest.raises(ValueError, match="dt"):
        acq.survey(model2d, np.array([[100.0, 5.0]]), np.array([[100.0, 5.0]]), dt=0.0, t=100.0)
    with pytest.raises(TypeError, match="Model"):
        acq.survey(model2d.m, np.array([[100.0, 5.0]]), np.array([[100.0, 5.0]]), dt=2.0, t=100.0)
