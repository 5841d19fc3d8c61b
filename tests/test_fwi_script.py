"""scripts/fwi_overthrust.py on a tiny synthetic configuration: outputs, no overwrite, clear errors."""
import importlib.util
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import records  # noqa: E402


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("fwi_overthrust", ROOT / "scripts" / "fwi_overthrust.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = ["--model", "synthetic", "--synthetic-size", "41", "21", "--coarsen", "1", "--bands", "10", "0", "--iterations", "1",
        "--batch", "1", "--tmax", "400", "--src-spacing", "400", "--rec-spacing", "100", "--nbl", "8",
        "--space-order", "4", "--ps", "8", "--quiet"]


def test_tiny_run_outputs_and_no_overwrite(script, tmp_path):
    n_records = len(records.read(script="fwi_overthrust"))
    s1 = script.main(TINY + ["--results", str(tmp_path)], log=lambda *a: None)
    recs = records.read(script="fwi_overthrust")
    assert len(recs) == n_records + 1 and recs[-1] == s1["record"]  # the summary table, recorded once
    assert [(r["name"], r["time"], r["working_memory_mb"], r["rel_error"]) for r in recs[-1]["figures"]["runs"]] == \
        [(r["name"], r["time"], r["working_memory_mb"], r["rel_error"]) for r in s1["runs"]]
    assert recs[-1]["command"].startswith("python scripts/fwi_overthrust.py --model synthetic")
    out1 = Path(s1["out"])
    assert out1.parent == tmp_path
    for name in ("exact.h5", "probed-QR-r8.h5", "models.png", "profiles.png", "convergence.png", "summary.json",
                 "exact/result.h5", "exact/state.h5", "probed-QR-r8/qc/iteration-0002.png"):
        assert (out1 / name).is_file(), name
    with h5py.File(out1 / "probed-QR-r8.h5") as f:
        assert f["m"].shape == (3, 41, 21)  # initial + 1 iteration in each of the 2 bands
        for k in ("objective", "time", "peak_memory", "rel_error", "band"):
            assert f[k].shape == (3,)
        assert list(f["band"][()]) == [-1, 0, 1]
        assert f.attrs["ps"] == 8 and f.attrs["nt"] > 8
        assert np.isfinite(f["rel_error"][()]).all()
        np.testing.assert_array_equal(f["m"][-1], h5py.File(out1 / "probed-QR-r8" / "result.h5")["m"][()])
    names = {r["name"]: r for r in s1["runs"]}
    assert names["exact"]["memory_ratio_vs_exact"] == 1.0
    assert names["probed-QR-r8"]["memory_ratio_vs_exact"] > 1.0
    for r in s1["runs"]:
        assert r["nit"] == 2 and r["time"] > 0 and r["working_memory_mb"] > 0
    assert "working MiB" in s1["text"]
    mtime = (out1 / "exact.h5").stat().st_mtime_ns
    s2 = script.main(TINY + ["--results", str(tmp_path), "--no-plots", "--no-record"], log=lambda *a: None)
    assert Path(s2["out"]) != out1 and s2["record"] is None
    assert len(records.read(script="fwi_overthrust")) == n_records + 1  # --no-record appends nothing
    assert (out1 / "exact.h5").stat().st_mtime_ns == mtime
    # an explicit, non-empty --out is refused
    with pytest.raises(FileExistsError, match="never overwritten"):
        script.main(TINY + ["--out", str(out1)], log=lambda *a: None)


def test_bad_inputs(script, tmp_path):
    with pytest.raises(FileNotFoundError):
        script.main(["--model-file", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "a")])
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="missing dataset"):
        script.main(["--model-file", str(bad), "--out", str(tmp_path / "b")])
    with pytest.raises(ValueError, match="exclude the initial model"):
        script.main(TINY + ["--vmin", "2.5", "--out", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="more shots"):
        script.main(TINY + ["--batch", "50", "--out", str(tmp_path / "d")])
    with pytest.raises(SystemExit):
        script.parse_args(["--modes", "nonsense"])
    assert not any((tmp_path / x).exists() for x in "bcd")


def test_overthrust_downloaded_by_default_else_synthetic(script, shared_dir, tmp_path, monkeypatch):
    """Without a local copy the public address is the default source (a file:// mirror stands in for
    the SLIM ftp server here) and the file is verified; offline, the run falls back to the synthetic
    model with a message saying so."""
    import shutil
    import models
    from models import overthrust as ot
    monkeypatch.delenv("TIMEPROBE_DATA", raising=False)
    monkeypatch.delenv("TIMEPROBE_OFFLINE", raising=False)
    monkeypatch.setenv("TIMEPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ot, "_shared_models_dir", lambda: tmp_path / "no_shared")
    mirror = tmp_path / "mirror" / "overthrust_model_2D.h5"
    mirror.parent.mkdir()
    shutil.copyfile(shared_dir / "models" / "overthrust_2D.h5", mirror)
    assert ot.OVERTHRUST_URLS[0].startswith("ftp://slim.gatech.edu/")
    monkeypatch.setattr(ot, "OVERTHRUST_URLS", (mirror.as_uri(),))
    true, init, label = script.load_models(script.parse_args(["--model", "small", "--nbl", "4"]),
                                           log=lambda *a: None)
    assert label == "SEG/EAGE Overthrust (small)" and true.shape == (401, 121)
    assert (tmp_path / "cache" / "models" / "overthrust_2D.h5").is_file()
    assert models.verify_overthrust_file(tmp_path / "cache" / "models" / "overthrust_2D.h5", "2D") == (801, 207)
    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setenv("TIMEPROBE_OFFLINE", "1")
    lines = []
    with pytest.warns(UserWarning, match="synthetic"):
        true, init, label = script.load_models(script.parse_args(["--model", "small", "--nbl", "4"]),
                                               log=lines.append)
    assert "NOT Overthrust" in label and true.shape == (401, 121)
    assert "FALLING BACK to the SYNTHETIC thrust model 401x121" in lines[0] and "TIMEPROBE_OFFLINE" in lines[0]


def test_notebook_small(tmp_path, monkeypatch):
    """The notebook runs end to end at its small size (tiny synthetic grid, 2 iterations)."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(ROOT / "notebooks" / "fwi_overthrust.ipynb", as_version=4)
    monkeypatch.setenv("TIMEPROBE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TIMEPROBE_ROOT", str(ROOT))
    n_records = len(records.read())
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    runs = list((tmp_path / "results-notebook").iterdir())
    assert len(runs) == 1 and (runs[0] / "exact.h5").is_file() and (runs[0] / "convergence.png").is_file()
    assert len(records.read()) == n_records  # the small (smoke) run is not recorded
