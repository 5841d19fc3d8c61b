"""scripts/gradient_3d.py --quick runs end to end, records every figure it promises, resumes
after the last finished stage and refuses to mix configurations in one folder."""
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_gradient_3d_quick(tmp_path):
    import gradient_3d
    out = tmp_path / "g3d"
    record = gradient_3d.main(["--quick", "--out", str(out)])
    stages = record["stages"]
    assert set(stages) == set(gradient_3d.STAGES)
    t = stages["timing"]
    assert t["ratio"] > 0 and t["ratio"] == min(t["probed_s"]) / min(t["plain_s"])
    assert t["probed_peak_mb"] > 0
    m = stages["memory"]
    # full storage holds every snapshot, probing r + B + 1 region fields: formulas, not guesses
    assert m["bytes"]["full"] == 4.0 * (t["nt"] + 1) * m["N_h"]
    assert m["bytes"]["probing"] == 4.0 * (t["r"] + t["B"] + 1) * m["N_r"]
    assert m["bytes"]["checkpointing"] <= m["bytes"]["probing"] + 4.0 * 5 * m["N_h"]
    small = stages["small"]
    rows = small["rows"]
    assert rows["full storage"]["cosine"] == pytest.approx(1.0)
    assert -1.0 <= small["cosine"] < 1.0
    for name, row in rows.items():  # every strategy measured, its cosine vs the exact gradient recorded
        assert row["seconds"] > 0 and np.isfinite(row["working_mb"]), name
    assert rows[[n for n in rows if n.startswith("checkpointing")][0]]["cosine"] > 0.999  # exact
    with h5py.File(out / "gradient_3d.h5", "r") as f:
        g = f["main/gradient"][()]
        assert g.shape == tuple(stages["data"]["shape"]) and np.isfinite(g).all() and np.abs(g).max() > 0
        assert f["small/exact"].shape == f["small/probed"].shape
    for png in ("model_true.png", "gradient_probed.png", "small_exact.png", "small_probed.png"):
        assert (out / png).stat().st_size > 0
    saved = json.loads((out / "record.json").read_text())
    assert saved["stages"]["small"]["cosine"] == small["cosine"]

    # resume: nothing left to do, nothing recomputed
    again = gradient_3d.main(["--quick", "--out", str(out)])
    assert again["stages"]["timing"]["finished"] == t["finished"]
    # an unfinished stage is redone on the next run, the finished ones are kept
    del saved["stages"]["memory"]
    (out / "record.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="another configuration"):  # never mixes two runs
        gradient_3d.main(["--quick", "--out", str(out), "--seed", "3"])
    resumed = gradient_3d.main(["--quick", "--out", str(out)])
    assert resumed["stages"]["timing"]["finished"] == t["finished"]
    assert resumed["stages"]["small"]["finished"] == small["finished"]
    assert resumed["stages"]["memory"]["bytes"] == m["bytes"]
    with pytest.raises(SystemExit, match="not a gradient_3d run folder"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "x.txt").write_text("someone else's")
        gradient_3d.main(["--quick", "--out", str(tmp_path / "other")])
