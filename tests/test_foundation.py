"""Model, geometry, data containers, resampling and bad-input errors."""
import numpy as np
import pytest

import timeprobe as tp

from conftest import acquisition, layered_model


def test_resampling_round_trip():
    """Ricker at 4 ms → computational 1.7 ms → back to 4 ms: windowed-sinc error ≤ 1e-3."""
    t = 2000.0
    w = tp.ricker(0.010, 4.0, t)
    t4, t17 = tp.time_axis(4.0, t), tp.time_axis(1.7, t)
    fine = tp.resample(w, t4, t17)
    back = tp.resample(fine, t17, t4)
    inner = slice(20, -20)  # away from the ends, where the kernel is truncated
    assert np.linalg.norm(back[inner] - w[inner]) / np.linalg.norm(w) <= 1e-3
    # the fine trace is the Ricker sampled at 1.7 ms
    exact = tp.ricker(0.010, 1.7, t)
    assert np.linalg.norm(fine[20:-20] - exact[20:-20]) / np.linalg.norm(exact) <= 1e-3


@pytest.mark.parametrize("dt_in, dt_out, rows", [(2.0, 2.142, 32), (4.0, 0.7, 5), (1.3, 1.3, 32)])
def test_banded_rows_equal_the_sparse_product(dt_in, dt_out, rows):
    """The resampling matrix applied by dense row blocks (BLAS) equals its sparse product, and its
    transpose's, to float64 round-off, for down- and up-sampling and the identity; float32 traces
    are computed in float64."""
    from timeprobe.geometry import BandedRows, resampling_operator
    t_in, t_out = dt_in * np.arange(173), 3.0 + dt_out * np.arange(int(220 / dt_out))
    R = resampling_operator(t_in, t_out)
    x = np.random.default_rng(1).standard_normal((len(t_in), 5))
    y = np.random.default_rng(2).standard_normal((len(t_out), 5))
    for M, v in ((R, x), (R.T, y)):
        out = BandedRows(M, rows=rows).apply(v, np.full((M.shape[0], 5), np.nan))
        np.testing.assert_allclose(out, M @ v, rtol=0, atol=1e-12 * np.abs(M @ v).max())
    out32 = BandedRows(R, rows=rows).apply(x.astype(np.float32), np.empty((R.shape[0], 5)))
    np.testing.assert_allclose(out32, R @ x.astype(np.float32).astype(np.float64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="samples per trace"):  # as the sparse product refused them
        BandedRows(R, rows=rows).apply(x[1:], np.empty((R.shape[0], 5)))
    with pytest.raises(ValueError, match="output of shape"):
        BandedRows(R, rows=rows).apply(x, np.empty((R.shape[0] + 1, 5)))


@pytest.mark.parametrize("name,shape", [("overthrust_2D.h5", (801, 207)), ("overthrust_small.h5", (401, 121))])
def test_from_h5(shared_dir, name, shape):
    model = tp.Model.from_h5(shared_dir / "models" / name, key="m")
    model0 = tp.Model.from_h5(shared_dir / "models" / name, key="m0")
    assert model.shape == model0.shape == shape
    assert model.spacing == (25.0, 25.0)
    assert 1.4 < model.vp.min() and model.vp.max() < 6.1
    assert np.allclose(model.vp[:, 0], 1.5, atol=0.01)  # water on top: depth is the last axis


def test_model_errors(tmp_path):
    vp = np.full((20, 10), 2.0)
    with pytest.raises(ValueError, match="exactly one"):
        tp.Model(vp=vp, m=1 / vp**2, spacing=10.0)
    with pytest.raises(ValueError, match="positive"):
        tp.Model(vp=-vp, spacing=10.0)
    bad = vp.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tp.Model(vp=bad, spacing=10.0)
    model = tp.Model(vp=vp, spacing=10.0)
    with pytest.raises(ValueError, match="stability"):
        model.dt = 1.01 * model.stability_limit
    model.dt = 0.99 * model.stability_limit
    assert model.with_m(model.m * 1.1).dt == model.dt  # slower: the fixed dt is kept
    with pytest.raises(ValueError, match="stability"):
        model.with_m(model.m / 1.1)  # faster velocities: the fixed dt would be unstable
    with pytest.raises(FileNotFoundError):
        tp.Model.from_h5(tmp_path / "missing.h5")
    import h5py
    with h5py.File(tmp_path / "wrong.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="lacks"):
        tp.Model.from_h5(tmp_path / "wrong.h5")


def test_stable_dt_is_stable():
    model = layered_model()
    assert model.dt <= model.stability_limit
    q, rec = acquisition(model, nshots=1, t=800.0)
    d = tp.forward(model, q, rec)
    assert np.all(np.isfinite(d.arrays[0])) and np.abs(d.arrays[0]).max() < 1e3


def test_geometry_and_data_errors():
    model = layered_model()
    q, rec = acquisition(model, nshots=2)
    outside = tp.Geometry([np.array([[5000.0, 20.0]])] * 2, dt=rec.dt, t=rec.t)
    with pytest.raises(ValueError, match="outside the model"):
        tp.forward(model, q, outside)
    with pytest.raises(ValueError, match="shape"):
        tp.Data(rec, [np.zeros((10, 3))] * 2)
    with pytest.raises(ValueError, match="NaN"):
        tp.Data(rec, [np.full((rec.nt, rec.npoints(0)), np.nan)] * 2)
    with pytest.raises(ValueError, match="mismatched numbers of shots"):
        tp.forward(model, q, rec[0])
    with pytest.raises(ValueError, match="dt"):
        tp.Geometry([np.zeros((1, 2))], dt=0.0, t=100.0)
    d = tp.Data(rec)
    assert len(d) == 2 and d[1].arrays[0].shape == (rec.nt, rec.npoints(1))


def test_spacing_must_match_the_dimension():
    vp = np.full((20, 10), 1.5)
    with pytest.raises(ValueError, match="one value per axis of the 2D model"):
        tp.Model(vp=vp, spacing=(10.0,))
    with pytest.raises(ValueError, match="one value per axis"):
        tp.Model(vp=vp, spacing=(10.0, 10.0, 10.0))
    with pytest.raises(ValueError, match="positive"):
        tp.Model(vp=vp, spacing=(10.0, 0.0))
    assert tp.Model(vp=vp, spacing=10.0).spacing == (10.0, 10.0)  # one number: every axis


def test_error_messages_print_plain_numbers():
    model = tp.Model(vp=np.full((21, 11), 1.5), spacing=10.0, nbl=4)
    q = tp.Data(tp.Geometry([np.array([[5000.0, 20.0]])], dt=1.0, t=10.0), [tp.ricker(0.01, 1.0, 10.0)])
    rec = tp.Geometry([np.array([[50.0, 20.0]])], dt=1.0, t=10.0)
    with pytest.raises(ValueError) as err:
        tp.forward(model, q, rec)
    msg = str(err.value)
    assert "np.float" not in msg and "5000" in msg and "[0, 200]" in msg, msg


def test_concurrent_runs_on_one_grid_use_their_own_model():
    """Two threads propagating different models of the same grid (one shared workspace) get the
    results of serial runs: the model is loaded under the workspace lock."""
    import threading
    from conftest import acquisition, layered_model
    slow = layered_model(shape=(41, 31), nbl=10, space_order=4)
    fast = tp.Model(vp=slow.vp * 1.2, spacing=slow.spacing, nbl=10, space_order=4)
    slow.dt = fast.dt  # one time axis (the faster model's stable step)
    q, rec = acquisition(slow, nshots=1, nrec=11, t=200.0)
    serial = {name: tp.forward(m, q, rec).arrays[0] for name, m in (("slow", slow), ("fast", fast))}
    assert np.abs(serial["slow"] - serial["fast"]).max() > 0.1 * np.abs(serial["slow"]).max()
    out, errors = {}, []

    def run(name, m):
        try:
            for i in range(4):
                out[(name, i)] = tp.forward(m, q, rec).arrays[0]
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=a) for a in (("slow", slow), ("fast", fast))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (name, i), d in out.items():
        np.testing.assert_array_equal(d, serial[name], err_msg=f"{name} run {i}")
