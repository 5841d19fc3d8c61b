"""Tests of the models package: Overthrust lookup/download/verification, synthetic model, initial model."""
import inspect
import shutil

import h5py
import numpy as np
import pytest

import models
from models import overthrust as ot
from timeprobe.model import Model


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No environment or shared-folder lookups, no network: only what a test puts in place."""
    monkeypatch.delenv("TIMEPROBE_DATA", raising=False)
    monkeypatch.delenv("TIMEPROBE_OFFLINE", raising=False)
    monkeypatch.setenv("TIMEPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ot, "OVERTHRUST_URLS", ())
    monkeypatch.setattr(ot, "_shared_models_dir", lambda: tmp_path / "no_shared" / "models")
    return tmp_path


def _copy_2d(shared_dir, dest_dir, with_copyright=False):
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_dir / "models" / "overthrust_2D.h5", dest_dir / "overthrust_2D.h5")
    if with_copyright:
        shutil.copyfile(shared_dir / "models" / "COPYRIGHT", dest_dir / "COPYRIGHT")
    return dest_dir / "overthrust_2D.h5"


# --------------------------------------------------------------------------- Overthrust files
@pytest.mark.parametrize("which, shape", [("small", (401, 121)), ("2D", (801, 207))])
def test_load_overthrust_from_shared(shared_dir, which, shape):
    m = models.load_overthrust(which, search=shared_dir / "models", use_defaults=False, download=False, nbl=10)
    assert isinstance(m, Model) and m.shape == shape and m.spacing == (25.0, 25.0) and m.nbl == 10
    assert m.vp.min() == pytest.approx(1.5, abs=1e-3) and 5.4 < m.vp.max() <= 6.0 + 1e-3
    assert models.detect_water_rows(m) == 20
    m0 = models.load_overthrust(which, key="m0", search=shared_dir, use_defaults=False, download=False)
    assert m0.shape == shape and not np.allclose(m0.m, m.m)
    # m0 is smooth: its total variation below the water is far smaller than the true model's
    rough = lambda a: (np.diff(a[:, 20:], axis=1) ** 2).sum()  # noqa: E731
    assert rough(m0.m) < 0.1 * rough(m.m)


def test_small_is_window_of_2d(shared_dir):
    big = models.load_overthrust("2D", search=shared_dir, use_defaults=False, download=False)
    small = models.load_overthrust("small", search=shared_dir, use_defaults=False, download=False)
    np.testing.assert_array_equal(small.m, big.m[models.SMALL_WINDOW])


def test_overthrust_pair_shares_dt(shared_dir):
    true, init = models.overthrust_pair("small", search=shared_dir, use_defaults=False, download=False)
    assert true.dt == init.dt == min(true.critical_dt, init.critical_dt)
    assert true.shape == init.shape == (401, 121)
    t2, i2 = models.overthrust_pair("small", search=shared_dir, use_defaults=False, download=False, dt=1.0)
    assert t2.dt == i2.dt == 1.0


def test_env_lookup_before_shared(isolated, shared_dir, monkeypatch):
    data = isolated / "data"
    (data / "models").mkdir(parents=True)
    shutil.copyfile(shared_dir / "models" / "overthrust_small.h5", data / "models" / "overthrust_small.h5")
    monkeypatch.setenv("TIMEPROBE_DATA", str(data))
    assert models.find_overthrust("small", download=False) == data / "models" / "overthrust_small.h5"


def test_small_cut_from_2d_into_cache(isolated, shared_dir):
    src = _copy_2d(shared_dir, isolated / "src")          # no COPYRIGHT beside it
    path = models.find_overthrust("small", search=src.parent, download=False)
    cache = isolated / "cache" / "models"
    assert path == cache / "overthrust_small.h5"
    ref = shared_dir / "models" / "overthrust_small.h5"
    with h5py.File(path, "r") as a, h5py.File(ref, "r") as b:
        for k in ("n", "d", "o", "m", "m0"):
            np.testing.assert_array_equal(a[k][()], b[k][()])
        assert "SEG" in a["copyright"][()].decode()
    notice = (cache / "COPYRIGHT").read_text()
    assert "SEG" in notice and "EAGE" in notice and "Aminzadeh" in notice
    # a second lookup finds the cached copy without the 2D file
    (src.parent / "overthrust_2D.h5").unlink()
    assert models.find_overthrust("small", download=False) == path


def test_original_copyright_travels_with_cached_copy(isolated, shared_dir):
    src = _copy_2d(shared_dir, isolated / "src", with_copyright=True)
    models.find_overthrust("small", search=src, download=False)
    cached = isolated / "cache" / "models" / "COPYRIGHT"
    assert cached.read_text() == (shared_dir / "models" / "COPYRIGHT").read_text()


def test_download_from_user_url(isolated, shared_dir):
    src = _copy_2d(shared_dir, isolated / "mirror")
    model = models.load_overthrust("2D", url=src.as_uri())   # file:// stands in for ftp://
    assert model.shape == (801, 207)
    cache = isolated / "cache" / "models"
    assert (cache / "overthrust_2D.h5").is_file() and (cache / "COPYRIGHT").is_file()
    assert src.as_uri() in (cache / "COPYRIGHT").read_text()
    with h5py.File(cache / "overthrust_2D.h5", "r") as f:
        assert "copyright" in f
    assert not list(cache.glob("*.part"))
    # small from the same download
    small = models.load_overthrust("small", url=src.as_uri())
    assert small.shape == (401, 121)


def test_default_url_is_tried(isolated, shared_dir, monkeypatch):
    src = _copy_2d(shared_dir, isolated / "mirror")
    monkeypatch.setattr(ot, "OVERTHRUST_URLS", ("file:///nonexistent/overthrust_model_2D.h5", src.as_uri()))
    assert models.find_overthrust("2D") == isolated / "cache" / "models" / "overthrust_2D.h5"


def test_public_url_names():
    assert ot.OVERTHRUST_URLS[0].startswith("ftp://slim.gatech.edu/data/SoftwareRelease/WaveformInversion.jl/2DFWI/")


def test_not_found_message_lists_places(isolated, monkeypatch):
    monkeypatch.setenv("TIMEPROBE_DATA", str(isolated / "envdata"))
    bad_url = (isolated / "missing.h5").as_uri()
    with pytest.raises(FileNotFoundError) as e:
        models.load_overthrust("small", search=[isolated / "mine"], url=bad_url)
    msg = str(e.value)
    for place in (isolated / "mine", isolated / "envdata" / "models", isolated / "no_shared" / "models",
                  isolated / "cache" / "models"):
        assert str(place) in msg
    assert bad_url in msg and "TIMEPROBE_DATA" in msg and "url=" in msg
    with pytest.raises(FileNotFoundError, match="download=False"):
        models.find_overthrust("2D", download=False)
    monkeypatch.setenv("TIMEPROBE_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="TIMEPROBE_OFFLINE"):
        models.find_overthrust("2D", url=bad_url)


def test_explicit_missing_file_raises(isolated):
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        models.load_overthrust("2D", search=isolated / "nothere.h5")


def _write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


def test_wrong_layouts_rejected(isolated):
    nx, nz = 401, 121
    good = dict(n=np.array([nx, nz]), d=np.array([25.0, 25.0]), o=np.zeros(2),
                m=np.full((nz, nx), 0.2, np.float32), m0=np.full((nz, nx), 0.2, np.float32))
    p = _write_h5(isolated / "overthrust_small.h5", **good)
    assert models.verify_overthrust_file(p, "small") == (nx, nz)
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "m0"}, r"missing dataset\(s\) \['m0'\]"),
        "shape": (dict(good, m=np.full((nx, nz + 1), 0.2, np.float32)), "has shape"),
        "velocity": (dict(good, m=np.full((nz, nx), 3000.0, np.float32)), "squared slowness"),
        "size": (dict(good, n=np.array([nz, nx]), m=good["m"].T, m0=good["m0"].T), "has n ="),
        "negative": (dict(good, m0=-good["m0"]), "non-positive"),
    }
    for name, (data, match) in cases.items():
        p = _write_h5(isolated / f"{name}.h5", **data)
        with pytest.raises(ValueError, match=match):
            models.verify_overthrust_file(p, "small")
    (isolated / "bad").mkdir()
    (isolated / "bad" / "overthrust_small.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        models.load_overthrust("small", search=isolated / "bad", download=False)
    with pytest.raises(ValueError, match="which"):
        models.load_overthrust("3D")
    with pytest.raises(ValueError, match="key"):
        models.load_overthrust("small", key="vp")


def test_downloaded_file_with_wrong_layout_not_cached(isolated):
    bogus = _write_h5(isolated / "bogus.h5", n=np.array([3, 3]))
    with pytest.raises(FileNotFoundError, match="wrong layout"):
        models.find_overthrust("2D", url=bogus.as_uri())
    assert not (isolated / "cache" / "models" / "overthrust_2D.h5").exists()


# --------------------------------------------------------------------------- synthetic model
def test_synthetic_thrust_properties():
    m = models.synthetic_thrust(nbl=10)
    assert isinstance(m, Model) and m.shape == (401, 121) and m.spacing == (25.0, 25.0)
    vp = m.vp
    assert models.detect_water_rows(m) == 20
    assert np.all(vp[:, :20] == 1.5)
    assert vp[:, 20:].min() >= 1.8 and 4.5 < vp.max() <= 5.5
    # velocity grows with depth on average, and the structure varies laterally (dip, fault, fold)
    mean_z = vp[:, 20:].mean(axis=0)
    assert mean_z[-1] > mean_z[0] + 2.0
    assert np.corrcoef(np.arange(mean_z.size), mean_z)[0, 1] > 0.9
    assert np.std(vp[:, 60]) > 0.2
    # deterministic, and honest about what it is
    np.testing.assert_array_equal(models.synthetic_thrust(nbl=10).m, m.m)
    doc = inspect.getdoc(models.synthetic_thrust)
    assert "SYNTHETIC" in doc and "not the SEG/EAGE Overthrust" in doc
    small = models.synthetic_thrust(nx=61, nz=31, spacing=10.0, water_depth=50.0, nbl=5)
    assert small.shape == (61, 31) and models.detect_water_rows(small) == 5


def test_synthetic_thrust_fault_offsets_layers():
    # no fault (throw 0, no fold) -> layer boundaries are straight dipping lines; the fault breaks that
    plain = models.synthetic_thrust(throw=0.0, fold_amplitude=0.0, nbl=5).vp
    faulted = models.synthetic_thrust(nbl=5).vp
    left = slice(0, 100)                 # far footwall, left of the fault: unchanged
    np.testing.assert_array_equal(plain[left], faulted[left])
    assert np.mean(plain != faulted) > 0.05


def test_synthetic_thrust_bad_input():
    with pytest.raises(ValueError, match="water_depth"):
        models.synthetic_thrust(nz=10, spacing=25.0, water_depth=500.0)
    with pytest.raises(ValueError, match="nx"):
        models.synthetic_thrust(nx=1)
    with pytest.raises(ValueError, match="velocities"):
        models.synthetic_thrust(velocities=[1.0, 2.0])


# --------------------------------------------------------------------------- synthetic 3D model
# all 3D features off: every y section must be the 2D model
PLAIN_3D = dict(fault_bend=0.0, fold_plunge=0.0, cross_dip_deg=0.0, channel_velocity=None, anomaly_dv=0.0)
SMALL_3D = dict(nx=61, ny=21, nz=41, spacing=(50.0, 40.0, 25.0), water_depth=100.0, nbl=4)


def test_synthetic_thrust_3d_shape_water_and_range():
    m = models.synthetic_thrust_3d(**SMALL_3D)
    assert isinstance(m, Model) and m.shape == (61, 21, 41) and m.spacing == (50.0, 40.0, 25.0) and m.nbl == 4
    assert models.detect_water_rows(m) == 4 and np.all(m.vp[..., :4] == 1.5)
    below = m.vp[..., 4:]
    assert below.min() >= 1.3 and 4.5 < below.max() <= 5.5     # the gas pocket may be slower than water
    mean_z = below.mean(axis=(0, 1))
    assert mean_z[-1] > mean_z[0] + 2.0
    np.testing.assert_array_equal(models.synthetic_thrust_3d(**SMALL_3D).m, m.m)       # deterministic
    doc = inspect.getdoc(models.synthetic_thrust_3d)
    assert "SYNTHETIC" in doc and "not the SEG/EAGE Overthrust" in doc
    # any size and a scalar spacing; the default size is the issue's 241 × 241 × 121 at 25 m
    tiny = models.synthetic_thrust_3d(nx=7, ny=2, nz=9, spacing=10.0, water_depth=20.0, nbl=2)
    assert tiny.shape == (7, 2, 9) and tiny.spacing == (10.0, 10.0, 10.0)
    defaults = inspect.signature(models.synthetic_thrust_3d).parameters
    assert (defaults["nx"].default, defaults["ny"].default, defaults["nz"].default) == (241, 241, 121)


def test_synthetic_thrust_3d_sections_are_the_2d_model():
    kw = dict(nx=61, nz=41, water_depth=100.0, nbl=4)
    m3 = models.synthetic_thrust_3d(ny=5, spacing=(50.0, 40.0, 25.0), **PLAIN_3D, **kw)
    m2 = models.synthetic_thrust(spacing=(50.0, 25.0), **kw)
    for j in range(5):
        np.testing.assert_array_equal(m3.m[:, j], m2.m)


def test_synthetic_thrust_3d_fault_bend_and_fold_plunge():
    """The y sections at the ends and the middle are 2D models with the documented fault and fold."""
    kw = dict(nx=61, nz=41, water_depth=100.0, nbl=4)
    spacing3, spacing2 = (50.0, 40.0, 25.0), (50.0, 25.0)
    ny, mid = 21, 10
    bent = models.synthetic_thrust_3d(ny=ny, spacing=spacing3, **dict(PLAIN_3D, fault_bend=0.1), **kw)
    # x_f(y) = (fault_x − bend·sin(πy/Y))·X: fault_x at both ends, fault_x − bend in the middle
    for j, fault_x in ((0, 0.45), (ny - 1, 0.45), (mid, 0.45 - 0.1)):
        np.testing.assert_array_equal(bent.m[:, j], models.synthetic_thrust(spacing=spacing2, fault_x=fault_x,
                                                                            **kw).m)
    assert not np.array_equal(bent.m[:, 0], bent.m[:, mid])
    # a(y) = A·(1 − plunge·cos²(πy/Y)): no fold at the ends for plunge 1, the full fold in the middle
    plunging = models.synthetic_thrust_3d(ny=ny, spacing=spacing3, **dict(PLAIN_3D, fold_plunge=1.0), **kw)
    flat = models.synthetic_thrust(spacing=spacing2, fold_amplitude=0.0, **kw).m
    np.testing.assert_array_equal(plunging.m[:, 0], flat)
    np.testing.assert_array_equal(plunging.m[:, ny - 1], flat)
    np.testing.assert_array_equal(plunging.m[:, mid], models.synthetic_thrust(spacing=spacing2, **kw).m)


def test_synthetic_thrust_3d_footwall_is_undisturbed():
    """Points below the (curved) fault plane keep the undeformed layering; the hanging wall moves."""
    kw = dict(SMALL_3D, channel_velocity=None, anomaly_dv=0.0)
    faulted = models.synthetic_thrust_3d(**kw)
    plain = models.synthetic_thrust_3d(**dict(kw, throw=0.0, fold_amplitude=0.0))
    (nx, ny, nz), (dx, dy, dz) = faulted.shape, faulted.spacing
    X, Y, zw = (nx - 1) * dx, (ny - 1) * dy, 4 * dz
    x = dx * np.arange(nx)[:, None, None]
    y = dy * np.arange(ny)[None, :, None]
    z = dz * np.arange(nz)[None, None, :]
    xf = (0.45 - 0.05 * np.sin(np.pi * y / Y)) * X
    hanging = np.broadcast_to(z < zw + np.tan(np.radians(30.0)) * (x - xf), faulted.shape)
    np.testing.assert_array_equal(faulted.m[~hanging], plain.m[~hanging])
    moved = faulted.m[hanging] != plain.m[hanging]
    assert moved.mean() > 0.5
    # the cross dip tilts the layers along y: sections differ even without fault or fold
    assert not np.array_equal(plain.m[:, 0], plain.m[:, -1])


def test_synthetic_thrust_3d_channel():
    kw = dict(nx=81, ny=41, nz=41, spacing=(50.0, 50.0, 25.0), water_depth=100.0, nbl=4, anomaly_dv=0.0)
    with_channel = models.synthetic_thrust_3d(**kw)
    without = models.synthetic_thrust_3d(**dict(kw, channel_velocity=None))
    changed = with_channel.m != without.m
    np.testing.assert_allclose(with_channel.vp[changed], 2.6, rtol=1e-6)     # filled with channel_velocity
    # documented geometry: top 10% of the sediment below the sea floor, thickness ≥ 3 dz, width ≥ 4 dx
    X, Y, Zs, zw = 4000.0, 2000.0, 900.0, 100.0
    width, thick = max(X / 15, 200.0), max(Zs / 20, 75.0)
    ix, iy, iz = np.nonzero(changed)
    z = 25.0 * iz
    assert z.min() >= zw + 0.1 * Zs - 1e-9 and z.max() <= zw + 0.1 * Zs + thick + 1e-9
    # continuous along y, and its centre meanders around x_c(y) = 0.2 X + w sin(3πy/Y)
    assert set(iy) == set(range(41))
    y = 50.0 * np.arange(41)
    centre = np.array([50.0 * ix[iy == j].mean() for j in range(41)])
    np.testing.assert_allclose(centre, 0.2 * X + width * np.sin(3 * np.pi * y / Y), atol=50.0)
    assert np.all(np.abs(50.0 * ix - (0.2 * X + width * np.sin(3 * np.pi * 50.0 * iy / Y))) <= width / 2 * 1.7)


def test_synthetic_thrust_3d_gas_pocket():
    kw = dict(nx=81, ny=41, nz=41, spacing=(50.0, 50.0, 25.0), water_depth=100.0, nbl=4, channel_velocity=None)
    pocket = models.synthetic_thrust_3d(**kw)
    none = models.synthetic_thrust_3d(**dict(kw, anomaly_dv=0.0))
    changed = pocket.m != none.m
    np.testing.assert_allclose(pocket.vp[changed] - none.vp[changed], -0.5, atol=1e-5)
    # an ellipsoid at (x_f(Y/2) + X/8, Y/2, z_w + 0.4 Z_s) with semi-axes (X/16, Y/8, max(Z_s/25, 2 dz))
    X, Y, Zs, zw = 4000.0, 2000.0, 900.0, 100.0
    centre = np.array([(0.45 - 0.05) * X + X / 8, Y / 2, zw + 0.4 * Zs])
    radii = np.array([X / 16, Y / 8, max(Zs / 25, 50.0)])
    pts = np.argwhere(changed) * np.array([50.0, 50.0, 25.0])
    np.testing.assert_allclose(pts.mean(axis=0), centre, atol=12.5)
    assert np.all((((pts - centre) / radii) ** 2).sum(axis=1) <= 1 + 1e-9)
    volume = 4 / 3 * np.pi * radii.prod() / (50.0 * 50.0 * 25.0)
    assert abs(changed.sum() / volume - 1) < 0.15


def test_synthetic_thrust_3d_bad_input():
    base = dict(nx=11, ny=11, nz=21, spacing=25.0, water_depth=50.0)
    with pytest.raises(ValueError, match="ny"):
        models.synthetic_thrust_3d(**dict(base, ny=1))
    with pytest.raises(ValueError, match="nz"):
        models.synthetic_thrust_3d(**dict(base, nz=2.5))
    with pytest.raises(ValueError, match="spacing"):
        models.synthetic_thrust_3d(**dict(base, spacing=(25.0, 25.0)))
    with pytest.raises(ValueError, match="spacing"):
        models.synthetic_thrust_3d(**dict(base, spacing=(25.0, 0.0, 25.0)))
    with pytest.raises(ValueError, match="water_depth"):
        models.synthetic_thrust_3d(**dict(base, water_depth=600.0))
    with pytest.raises(ValueError, match="fold_plunge"):
        models.synthetic_thrust_3d(**dict(base, fold_plunge=1.5))
    with pytest.raises(ValueError, match="channel_velocity"):
        models.synthetic_thrust_3d(**dict(base, channel_velocity=0.5))
    with pytest.raises(ValueError, match="channel .* does not fit"):
        models.synthetic_thrust_3d(**dict(base, channel_depth=400.0))
    with pytest.raises(ValueError, match="anomaly_dv"):
        models.synthetic_thrust_3d(**dict(base, anomaly_dv=-3.0))
    with pytest.raises(ValueError, match="anomaly_depth"):
        models.synthetic_thrust_3d(**dict(base, anomaly_depth=-10.0))
    with pytest.raises(ValueError, match="velocities"):
        models.synthetic_thrust_3d(**dict(base, velocities=[2.0, 9.0]))


def test_synthetic_thrust_3d_memory_at_issue_size():
    """241 × 241 × 121 builds from slabs: the peak is a few model-sized arrays, not dozens."""
    import tracemalloc
    tracemalloc.start()
    try:
        m = models.synthetic_thrust_3d(241, 241, 121, nbl=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.shape == (241, 241, 121)
    # the float32 result plus Model's float64 conversion copy (4 units) and the slab temporaries
    assert peak < 5 * m.m.nbytes, f"peak {peak / 2**20:.0f} MiB for a {m.m.nbytes / 2**20:.0f} MiB model"


# --------------------------------------------------------------------------- initial model
def test_initial_model_smooths_below_water_only():
    true = models.synthetic_thrust(nbl=10)
    init = models.initial_model(true, sigma_m=200.0)
    assert isinstance(init, Model) and init.shape == true.shape and init.nbl == 10
    np.testing.assert_array_equal(init.m[:, :20], true.m[:, :20])
    # roughness (energy of the first differences) below the water drops sharply
    rough = lambda a: (np.diff(a[:, 20:], axis=1) ** 2).sum() + (np.diff(a[:, 20:], axis=0) ** 2).sum()  # noqa
    assert rough(init.m) < 0.1 * rough(true.m)
    # no water bleeding into the sediments: smoothing the extended slowness is a convex
    # combination of sediment values, so velocities stay within the sediments' range
    assert init.vp[:, 20:].min() >= true.vp[:, 20:].min() - 1e-4
    assert init.vp[:, 20:].max() <= true.vp[:, 20:].max() + 1e-4
    # the naive smoothing (water included) would drag the sea floor below that range
    naive = true.smooth(200.0, fix_top=20)
    assert naive.vp[:, 20].min() < true.vp[:, 20:].min() - 0.05
    # explicit water rows give the same result as detection
    np.testing.assert_array_equal(models.initial_model(true, 200.0, water_rows=20).m, init.m)


def test_initial_model_overthrust(shared_dir):
    true = models.load_overthrust("small", search=shared_dir, use_defaults=False, download=False)
    init = models.initial_model(true, sigma_m=(300.0, 150.0))
    np.testing.assert_array_equal(init.m[:, :20], true.m[:, :20])
    assert np.abs(init.m - true.m).max() > 0


def test_initial_model_bad_input():
    true = models.synthetic_thrust(nx=31, nz=21, spacing=10.0, water_depth=40.0, nbl=4)
    with pytest.raises(ValueError, match="sigma_m"):
        models.initial_model(true, 0.0)
    with pytest.raises(ValueError, match="water_rows"):
        models.initial_model(true, 50.0, water_rows=21)
    with pytest.raises(TypeError, match="Model"):
        models.initial_model(true.m, 50.0)


def test_initial_model_3d():
    true = models.synthetic_thrust_3d(**SMALL_3D)
    init = models.initial_model(true, sigma_m=150.0)
    assert isinstance(init, Model) and init.shape == true.shape and init.spacing == true.spacing
    np.testing.assert_array_equal(init.m[..., :4], true.m[..., :4])
    # smooth: the energy of the first differences below the water drops along every axis
    for axis in range(3):
        rough = lambda a: (np.diff(a[..., 4:].astype(np.float64), axis=axis) ** 2).sum()  # noqa: E731
        assert rough(init.m) < 0.1 * rough(true.m), axis
    # no water bleeding: a convex combination of sediment slownesses stays in their range
    assert init.vp[..., 4:].min() >= true.vp[..., 4:].min() - 1e-4
    assert init.vp[..., 4:].max() <= true.vp[..., 4:].max() + 1e-4
    # the detected water rows are the explicit ones; one length per axis works too
    np.testing.assert_array_equal(models.initial_model(true, 150.0, water_rows=4).m, init.m)
    aniso = models.initial_model(true, (300.0, 300.0, 50.0))
    assert np.abs(aniso.m - init.m).max() > 0
    # smoothing in y only leaves every (x, z) point of a y-invariant model unchanged
    flat = models.synthetic_thrust_3d(**dict(SMALL_3D, **PLAIN_3D))
    np.testing.assert_allclose(models.initial_model(flat, (1e-3, 500.0, 1e-3)).m, flat.m, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_m"):
        models.initial_model(true, (100.0, 100.0))


def test_initial_model_3d_memory():
    import tracemalloc
    true = models.synthetic_thrust_3d(161, 121, 81, nbl=0)
    tracemalloc.start()
    try:
        models.initial_model(true, 200.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a copy, one float64 working array, the result and Model's float64 conversion copy
    assert peak < 6 * true.m.nbytes, f"peak {peak / 2**20:.0f} MiB for a {true.m.nbytes / 2**20:.0f} MiB model"


# --------------------------------------------------------------------------- example pairs
def test_example_models_real_then_synthetic_fallback(isolated, shared_dir):
    true, init, label = models.example_models("small", search=shared_dir, nbl=8)
    assert "Overthrust" in label and "synthetic" not in label and true.shape == (401, 121) and true.nbl == 8
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        true, init, label = models.example_models("small", nbl=8)
    assert "synthetic" in label and "not Overthrust" in label
    assert true.shape == init.shape == (401, 121) and true.dt == init.dt and true.nbl == 8
    np.testing.assert_array_equal(init.m[:, :20], true.m[:, :20])
    with pytest.raises(FileNotFoundError):
        models.example_models("2D", allow_synthetic=False)
