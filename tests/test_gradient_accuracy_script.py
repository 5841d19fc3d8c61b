"""scripts/gradient_accuracy.py runs end to end on a tiny model file and never overwrites."""
import json
import runpy
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import layered_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gradient_accuracy.py"
sys.path.insert(0, str(SCRIPT.parent))
import records  # noqa: E402


def test_gradient_accuracy_script(tmp_path, monkeypatch):
    true, init = layered_model(shape=(61, 41)), layered_model(shape=(61, 41), smooth=True)
    path = tmp_path / "tiny.h5"
    with h5py.File(path, "w") as f:  # the SLIM/JUDI layout: arrays stored (nz, nx)
        f["n"], f["d"], f["o"] = np.array(true.shape), np.array(true.spacing), np.array(true.origin)
        f["m"], f["m0"] = true.m.T, init.m.T
    out = tmp_path / "acc"
    argv = [str(SCRIPT), str(path), "--out", str(out), "--ps", "2", "8", "--modes", "QR", "rademacher",
            "--panels", "8", "--t", "300", "--f0", "0.015", "--water-rows", "5"]
    monkeypatch.setattr(sys, "argv", argv)
    n_records = len(records.read(script="gradient_accuracy"))
    runpy.run_path(str(SCRIPT), run_name="__main__")
    scores = json.loads((out / "accuracy.json").read_text())
    recs = records.read(script="gradient_accuracy")
    assert len(recs) == n_records + 1  # one run, one record of its scores
    assert recs[-1]["figures"] == scores and "--ps 2 8" in recs[-1]["command"]
    # measured on this case (seeded): QR 0.31 / 0.967 and Rademacher 0.57 / 0.586 at r = 2 / 8;
    # the floors keep a margin, and the QR jump from r = 2 to 8 is the data subspace being captured
    floors = {"QR": {2: 0.2, 8: 0.93}, "rademacher": {2: 0.45, 8: 0.45}}
    for mode in ("QR", "rademacher"):
        rows = scores["modes"][mode]
        assert [x["r"] for x in rows] == [2, 8]
        for x in rows:
            assert floors[mode][x["r"]] < x["cosine"] < 1.0, (mode, x)
    qr = {x["r"]: x["cosine"] for x in scores["modes"]["QR"]}
    assert qr[8] > qr[2] + 0.3  # more probes, far better gradient
    for png in ("cosine_vs_r.png", "gradients.png", "probes.png"):
        assert (out / png).stat().st_size > 0
    with pytest.raises(SystemExit, match="exists"):  # never overwrite silently
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert len(records.read(script="gradient_accuracy")) == n_records + 1
