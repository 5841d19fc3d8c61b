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
