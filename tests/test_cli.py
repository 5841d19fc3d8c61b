"""The `timeprobe` command: info, example-config (runs as is), fwi (with --resume) and rtm."""
import configparser
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import timeprobe as tp
from timeprobe.cli import load_config, main
from timeprobe.io import read_snapshot, write_segy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def segy(tmp_path_factory):
    """Two shots over a layered model (1.5 km/s over 2.0 km/s from 295 m), 8 Hz, 0.5 s at 2 ms, as SEG-Y."""
    vp = np.full((61, 41), 1.5, np.float32)
    vp[:, 30:] = 2.0
    model = tp.Model(vp=vp, spacing=(10.0, 10.0), nbl=20, space_order=4)
    T, dt = 500.0, 2.0
    src = tp.Geometry([np.array([[x, 20.0]]) for x in (150.0, 450.0)], dt=dt, t=T)
    rec = tp.Geometry([np.stack([np.linspace(50, 550, 26), np.full(26, 30.0)], 1)] * 2, dt=dt, t=T)
    d = tp.forward(model, tp.Data(src, [tp.ricker(0.008, dt, T)] * 2), rec)
    path = tmp_path_factory.mktemp("segy") / "shots.segy"
    write_segy(path, d, src)
    return path


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_summarises_and_plots(shared_dir, tmp_path, capsys):
    files = [shared_dir / "data" / f"unit_test_shot_records_{k}.segy" for k in (1, 2)]
    rc, out, _ = run(["info", *files, "--plot", tmp_path / "survey.png"], capsys)
    assert rc == 0
    assert "shots:        3  (360 traces, 120–120 per shot)" in out
    assert "501 samples at 2 ms, t0 = 0 ms, last sample 1000 ms" in out
    assert "sources:      x 100.00…1100.00 m, z 20.00…20.00 m" in out
    assert "offsets:      3.78…1050.00 m" in out and "SourceGroupScalar [-1000]" in out
    assert "zero shots:   [0]" in out
    assert (tmp_path / "survey.png").stat().st_size > 10_000
    rc, _, err = run(["info", tmp_path / "missing.segy"], capsys)
    assert rc == 2 and "SEG-Y file not found" in err and "missing.segy" in err


def test_example_config_is_complete_and_valid(segy, tmp_path, capsys):
    rc, text, _ = run(["example-config", "fwi", "--data", segy, "--iterations", "3"], capsys)
    assert rc == 0
    cfg = tomllib.loads(text)
    assert cfg["fwi"]["iterations"] == [3, 3, 3] and len(cfg["fwi"]["bands_hz"]) == 3
    assert cfg["data"]["files"] == [str(segy)]
    assert cfg["model"]["spacing"] == 10.0 and cfg["model"]["origin"][0] <= 50.0
    nx, nz = cfg["model"]["shape"]
    assert cfg["model"]["origin"][0] + (nx - 1) * 10.0 >= 550.0                     # covers the survey
    assert (nz - 1) * 10.0 >= 0.5 * 1.5 * 500                                        # the record's reach
    assert text.count("#") > 40                                                       # commented
    (tmp_path / "c.toml").write_text(text)
    full = load_config(tmp_path / "c.toml", "fwi")
    assert full["fwi"]["ps"] == 16 and full["source"]["wavelet"] == "estimate"
    rc, _, err = run(["example-config", "rtm", "--data", segy, "--model", tmp_path / "nonexistent.h5"], capsys)
    assert rc == 2 and "nonexistent.h5" in err


@pytest.mark.parametrize("edit, message", [
    (("[fwi]", "[fwi]\niteratons = 3"), r"\[fwi\] iteratons: unknown key"),
    (("ps = 16", 'ps = "many"'), r"\[fwi\] ps must be an integer"),
    (("[output]", "[outputs]"), r"unknown section \[outputs\]"),
    (("[model]", "[model]\nshape = 3"), None),
])
def test_config_errors_name_the_key(segy, tmp_path, capsys, edit, message):
    rc, text, _ = run(["example-config", "fwi", "--data", segy], capsys)
    bad = text.replace(*edit, 1)
    (tmp_path / "bad.toml").write_text(bad)
    if message is None:  # a duplicated key is a TOML error: reported with the file name
        message = r"bad.toml: not valid TOML"
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "bad.toml", "fwi")
    rc, _, err = run(["fwi", tmp_path / "bad.toml", "--out", tmp_path / "run"], capsys)
    assert rc == 2 and "timeprobe fwi: error:" in err
    assert not (tmp_path / "run").exists()                 # nothing left behind: a fixed config may use it


@pytest.mark.parametrize("edit, message", [
    (lambda t: re.sub(r"(?m)^origin = .*$", "origin = [300.0, 0.0]", t), r"lies outside the model.*\[model\] origin"),
    (lambda t: t.replace("gain_power = 0.0", "gain_power = 1.0"), r"\[preprocessing\] gain_power and normalize"),
    (lambda t: t.replace('wavelet = "estimate"', 'wavelet = "spike"'), r"\[source\] wavelet must be"),
    (lambda t: t.replace("budget_mb = 0", "budget_mb = 50"), r"\[fwi\] budget_mb = 50 chooses the gradient itself"),
])
def test_fwi_input_errors_leave_nothing_behind(segy, tmp_path, capsys, edit, message):
    rc, text, _ = run(["example-config", "fwi", "--data", segy, "--iterations", "1"], capsys)
    (tmp_path / "c.toml").write_text(edit(text))
    rc, _, err = run(["fwi", tmp_path / "c.toml", "--out", tmp_path / "run"], capsys)
    assert rc == 2 and re.search(message, err), err
    assert not (tmp_path / "run").exists()


def test_fwi_runs_the_generated_config_and_resumes(segy, shared_dir, tmp_path, capsys, monkeypatch):
    rc, text, _ = run(["example-config", "fwi", "--data", segy, "--iterations", "1"], capsys)
    cfg = tmp_path / "fwi.toml"
    cfg.write_text(text)
    rc, out, _ = run(["fwi", cfg, "--out", tmp_path / "full", "--quiet"], capsys)
    assert rc == 0, out
    r = read_snapshot(tmp_path / "full" / "result.h5")
    assert int(r["iteration"]) == 3 and r["m"].shape == tuple(tomllib.loads(text)["model"]["shape"])
    assert len(list((tmp_path / "full" / "qc").glob("iteration-*.png"))) == 3
    assert (tmp_path / "full" / "config.toml").read_text() == text
    vp = 1 / np.sqrt(r["m"])
    assert not np.array_equal(r["m"], r["m0"]) and 1.3 < vp.min() and vp.max() < 3.5
    assert (tmp_path / "full" / "qc" / "wavelet.png").is_file()
    w = read_snapshot(tmp_path / "full" / "wavelet.h5")
    assert w["wavelet"].shape == (251, 2) and w["time"][1] == 2.0
    # the result is a model file: the next step (RTM in the FWI model) reads its latest m
    model = tp.Model.from_h5(tmp_path / "full" / "result.h5", key="m", nbl=4)
    np.testing.assert_array_equal(model.m, r["m"])
    rc, rtm_text, _ = run(["example-config", "rtm", "--data", segy, "--model", tmp_path / "full" / "result.h5"],
                          capsys)
    assert rc == 0 and 'key = "m"' in rtm_text
    # (the JUDI-written file once produced `vmax = np.float64(2.81)`: numbers must print as TOML)
    for data in (segy, shared_dir / "data" / "unit_test_shot_records_2.segy"):
        rc, quick, _ = run(["example-config", "fwi", "--data", data, "--spacing", "20", "--bands", "5", "10"],
                           capsys)
        q = tomllib.loads(quick)
        assert q["model"]["spacing"] == 20.0 and q["fwi"]["bands_hz"] == [5.0, 10.0]
        assert q["fwi"]["iterations"] == [10, 10] and isinstance(q["fwi"]["vmax"], float)
    # a non-empty folder is refused
    rc, _, err = run(["fwi", cfg, "--out", tmp_path / "full"], capsys)
    assert rc == 2 and "not empty" in err and "--resume" in err
    # Ctrl-C during the second iteration, then --resume: the uninterrupted model
    fwi_module = importlib.import_module("timeprobe.inversion")
    real, calls = fwi_module.fwi_objective, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fwi_module, "fwi_objective", interrupted)
    rc, out, _ = run(["fwi", cfg, "--out", tmp_path / "cut", "--quiet"], capsys)
    assert rc == 130 and "--resume" in out
    monkeypatch.undo()
    rc, out, _ = run(["fwi", cfg, "--out", tmp_path / "cut", "--resume", "--quiet"], capsys)
    assert rc == 0
    m = read_snapshot(tmp_path / "cut" / "result.h5")["m"]
    assert np.linalg.norm(m - r["m"]) <= 1e-5 * np.linalg.norm(r["m"])
    assert (tmp_path / "cut" / "config-2.toml").is_file()


def test_rtm_runs_the_generated_config_with_a_model_file(segy, tmp_path, capsys):
    """Migration in the water velocity (an HDF5 model file in the SLIM layout): the reflector at 295 m
    is imaged there, with little energy below it; the direct wave is muted by the generated config."""
    import h5py
    with h5py.File(tmp_path / "water.h5", "w") as f:
        f["n"], f["d"], f["o"] = np.array([61, 41]), np.array([10.0, 10.0]), np.zeros(2)
        f["m"] = np.full((41, 61), 1 / 1.5**2, np.float32)              # stored (nz, nx) like Julia's files
    rc, text, _ = run(["example-config", "rtm", "--data", segy, "--model", tmp_path / "water.h5"], capsys)
    assert rc == 0 and f'file = "{tmp_path / "water.h5"}"' in text and "\nmute_velocity = 1.5" in text
    cfg = tmp_path / "rtm.toml"
    cfg.write_text(text.replace("ps = 64", "ps = 16"))
    rc, out, err = run(["rtm", cfg, "--out", tmp_path / "img", "--quiet"], capsys)
    assert rc == 0, err
    r = read_snapshot(tmp_path / "img" / "result.h5")
    assert int(r["iteration"]) == 2 and r["image"].shape == r["m"].shape == (61, 41)
    z = 10.0 * np.arange(41)
    rms = lambda a, b: np.sqrt(np.mean(r["image"][:, (z >= a) & (z < b)] ** 2))   # noqa: E731
    assert rms(250, 320) > 4 * rms(340, 400)
    assert len(list((tmp_path / "img" / "qc").glob("shot-*.png"))) == 2
    rc, _, err = run(["rtm", cfg, "--out", tmp_path / "img"], capsys)
    assert rc == 2 and "not empty" in err


def test_console_script_entry_point():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "timeprobe = timeprobe.cli:main" in cfg["options.entry_points"]["console_scripts"]
    p = subprocess.run([sys.executable, "-m", "timeprobe.cli", "--help"], capture_output=True, text=True,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "example-config" in p.stdout


def test_segy_to_fwi_notebook_small(shared_dir, tmp_path, monkeypatch):
    """notebooks/segy_to_fwi.ipynb end to end on ../shared/data at its small size (20 m grid, two bands)."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(ROOT / "notebooks" / "segy_to_fwi.ipynb", as_version=4)
    monkeypatch.setenv("TIMEPROBE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TIMEPROBE_ROOT", str(ROOT))
    monkeypatch.setenv("TIMEPROBE_DATA", str(shared_dir))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    (run,) = list((tmp_path / "results-notebook").iterdir())
    assert int(read_snapshot(run / "fwi" / "result.h5")["iteration"]) == 3        # 2 bands x 1, resumed +1
    assert read_snapshot(run / "rtm" / "result.h5")["image"].shape == read_snapshot(run / "fwi" / "result.h5")["m"].shape
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5                        # survey, wavelet, QC, data fit, RTM image
