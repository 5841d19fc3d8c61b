"""timeprobe.fwi: multiscale driver, run files, and resumption that ends at the uninterrupted model."""
import importlib

import numpy as np
import pytest

import timeprobe as tp
from timeprobe.io import read_snapshot

fwi_module = importlib.import_module("timeprobe.inversion")

KW = dict(bands=[0.010, 0.020], iterations=[2, 2], batch=2, ps=8, seed=3, vmin=1.4, vmax=3.0, water=5,
          progress=False, plots=False)


@pytest.fixture(scope="module")
def case():
    """60×30 grid at 10 m, a high-velocity block under 5 rows of water; 4 shots, 30 receivers, 0.6 s."""
    vp = np.full((60, 30), 2.0, np.float32)
    vp[:, :5] = 1.5
    vp[20:40, 15:22] = 2.4
    true = tp.Model(vp=vp, spacing=(10.0, 10.0), nbl=10, space_order=4)
    init = true.smooth(60.0, fix_top=5)
    T, dt = 600.0, 2.0
    src = tp.Geometry([np.array([[x, 10.0]]) for x in (100.0, 250.0, 400.0, 500.0)], dt=dt, t=T)
    q = tp.Data(src, [tp.ricker(0.015, dt, T)] * 4)
    rec = tp.Geometry([np.stack([np.linspace(0, 590, 30), np.full(30, 10.0)], 1)] * 4, dt=dt, t=T)
    return true, init, q, tp.forward(true, q, rec)


@pytest.fixture(scope="module")
def reference(case, tmp_path_factory):
    true, init, q, d = case
    out = tmp_path_factory.mktemp("ref") / "run"
    res = tp.fwi(init, q, d, out=out, true_model=true, **{**KW, "plots": True})
    return res, out


def test_run_reduces_the_model_error_and_writes_its_files(case, reference):
    true, init, q, d = case
    res, out = reference
    assert res.iterations == 4 and res.messages == ["maximum number of iterations reached"] * 2
    err = res.history["rel_error"]
    assert err[-1] < 0.85 * err[0]
    np.testing.assert_array_equal(res.history["band"], [0, 0, 1, 1])
    r = read_snapshot(out / "result.h5")
    np.testing.assert_array_equal(r["m"], res.m)
    assert r["m"].shape == init.shape and int(r["iteration"]) == 4
    np.testing.assert_array_equal(r["m0"], init.m)
    assert len(r["history"]["objective"]) == 4 and r["attrs"]["units_m"] == "s^2/km^2"
    assert sorted(p.name for p in (out / "qc").iterdir()) == [f"iteration-{k:04d}.png" for k in range(1, 5)]
    assert np.all(res.m[:, :5] == init.m[:, :5])                                   # water fixed
    assert res.model.vp[:, 5:].min() >= 1.4 - 1e-5 and res.model.vp.max() <= 3.0 + 1e-5   # bounds held
    with pytest.raises(FileExistsError, match="never overwritten"):
        tp.fwi(init, q, d, out=out, **KW)


def _interrupting(monkeypatch, after):
    """Make the driver's gradient raise KeyboardInterrupt at call number ``after`` (as Ctrl-C would)."""
    real = fwi_module.fwi_objective
    calls = {"n": 0}

    def objective(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fwi_module, "fwi_objective", objective)
    return calls


@pytest.mark.parametrize("optimizer, stop_at", [("spg", 6), ("lbfgs", 3)])
def test_interrupted_run_resumes_to_the_uninterrupted_model(case, tmp_path, monkeypatch, optimizer, stop_at):
    """Ctrl-C in the middle of a line search (SPG: in the second band; L-BFGS: in the first), then
    --resume: the final model equals the uninterrupted run's (≤ 1e-5 relative; bit for bit here)."""
    true, init, q, d = case
    kw = {**KW, "optimizer": optimizer}
    full = tp.fwi(init, q, d, out=tmp_path / "full", **kw)
    calls = _interrupting(monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        tp.fwi(init, q, d, out=tmp_path / "cut", **kw)
    assert calls["n"] == stop_at
    monkeypatch.undo()
    state = read_snapshot(tmp_path / "cut" / "state.h5")
    assert 0 < int(state["iteration"]) < 4 and int(state["batch_counter"]) == int(state["iteration"])
    assert int(state["band"]) == (1 if optimizer == "spg" else 0)
    if optimizer == "lbfgs" and "optimizer" in state:
        assert state["optimizer"]["s_pairs"].shape[1] == init.m.size                # the L-BFGS memory is stored
    res = tp.fwi(init, q, d, out=tmp_path / "cut", resume=True, **kw)
    assert res.resumed_from == int(state["iteration"]) and res.iterations == 4
    assert np.linalg.norm(res.m - full.m) <= 1e-5 * np.linalg.norm(full.m)
    np.testing.assert_allclose(res.history["objective"], full.history["objective"], rtol=1e-6)


def test_resume_a_run_configured_with_fewer_iterations(case, reference, tmp_path):
    true, init, q, d = case
    full, _ = reference
    tp.fwi(init, q, d, out=tmp_path / "short", **{**KW, "iterations": [2, 1]})
    res = tp.fwi(init, q, d, out=tmp_path / "short", resume=True, **KW)
    assert res.resumed_from == 3 and res.iterations == 4
    assert np.linalg.norm(res.m - full.m) <= 1e-5 * np.linalg.norm(full.m)
    again = tp.fwi(init, q, d, out=tmp_path / "short", resume=True, **KW)           # nothing left to do
    assert again.iterations == 4 and np.array_equal(again.m, res.m)
    # band 0 is closed after 2 iterations: asking for 3 there cannot end at the uninterrupted model
    with pytest.raises(ValueError, match=r"band 0 .* has already run 2 iteration\(s\), the settings ask for 3"):
        tp.fwi(init, q, d, out=tmp_path / "short", resume=True, **{**KW, "iterations": [3, 2]})


def test_resume_refuses_other_settings(case, tmp_path):
    true, init, q, d = case
    tp.fwi(init, q, d, out=tmp_path / "r", **{**KW, "iterations": [1, 0]})
    with pytest.raises(ValueError, match=r"ps: stored 8, now 16"):
        tp.fwi(init, q, d, out=tmp_path / "r", resume=True, **{**KW, "ps": 16})
    with pytest.raises(ValueError, match=r"\bd: stored"):
        tp.fwi(init, q, 2.0 * d, out=tmp_path / "r", resume=True, **KW)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "result.h5").write_bytes(b"not a run")
    with pytest.raises(FileNotFoundError, match="state.h5"):
        tp.fwi(init, q, d, out=tmp_path / "other", resume=True, **KW)


def test_gradient_options_reach_fwi_objective(case, monkeypatch):
    """ps, mode, the per-iteration probe seed, the client and budget_mb are passed through."""
    true, init, q, d = case
    seen = []

    def fake(model, qb, db, ps=None, mode="QR", seed=None, *, client=None, budget_mb=None, sum_padding=True):
        seen.append(dict(ps=ps, mode=mode, seed=seed, client=client, budget_mb=budget_mb, shots=qb.nshots,
                         sum_padding=sum_padding))
        return 1.0, np.full(model.shape, 1e-3, np.float32)

    monkeypatch.setattr(fwi_module, "fwi_objective", fake)
    tp.fwi(init, q, d, bands=None, iterations=1, batch=3, ps=4, mode="rademacher", seed=9, vmin=1.4, vmax=3.0,
           water=5, client="tcp://nowhere:1", progress=False)
    assert {s["ps"] for s in seen} == {4} and {s["mode"] for s in seen} == {"rademacher"}
    assert {s["client"] for s in seen} == {"tcp://nowhere:1"} and {s["budget_mb"] for s in seen} == {None}
    assert seen[0]["seed"] == [9, 0] and seen[-1]["shots"] == 3
    # the edges are fixed, so the physical part of the gradient is exact for every free point
    assert {s["sum_padding"] for s in seen} == {False}
    seen.clear()
    tp.fwi(init, q, d, bands=None, iterations=1, batch=3, seed=9, vmin=1.4, vmax=3.0, budget_mb=64, progress=False)
    assert {s["budget_mb"] for s in seen} == {64.0} and {s["ps"] for s in seen} == {None}
    with pytest.raises(ValueError, match="leave ps unset"):
        tp.fwi(init, q, d, iterations=1, vmin=1.4, vmax=3.0, ps=8, budget_mb=64, progress=False)


def test_bad_arguments(case):
    true, init, q, d = case
    with pytest.raises(ValueError, match="must not decrease"):
        tp.fwi(init, q, d, bands=[0.02, 0.01], progress=False)
    with pytest.raises(ValueError, match="iteration count"):
        tp.fwi(init, q, d, bands=[0.01, 0.02], iterations=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="exclude the starting model"):
        tp.fwi(init, q, d, vmin=1.9, vmax=3.0, water=5, progress=False)
    with pytest.raises(ValueError, match="Nyquist"):
        tp.fwi(init, q, d, bands=[8.0], vmin=1.4, vmax=3.0, progress=False)        # 8 Hz written in kHz
    with pytest.raises(ValueError, match="shot"):
        tp.fwi(init, q[:2], d, progress=False)
