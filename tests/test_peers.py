"""scripts/peers.py: Deepwave 0.1.0 solves timeprobe's problem (same data, misfit and gradient), its
low-memory modes stay close to its exact gradient, and the harness measures every configuration."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import timeprobe as tp

pytest.importorskip("torch")
pytest.importorskip("deepwave")

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import peers  # noqa: E402

F0 = 0.010  # kHz: 6 cells per wavelength in the slowest layer (Deepwave warns below)


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def tiny():
    """Three layers and a box anomaly, 61×41 at 25 m (nbl 40, space order 8), 0.6 s; the source and
    the receivers off the grid (bilinear interpolation in both engines)."""
    vp = np.full((61, 41), 1.5, np.float32)
    vp[:, 12:] = 2.2
    vp[:, 26:] = 2.8
    vp[25:35, 18:24] = 2.6
    model = tp.Model(vp=vp, spacing=(25.0, 25.0), nbl=40, space_order=8)
    model0 = model.smooth(75.0)
    model.dt = model0.dt = min(model.critical_dt, model0.critical_dt)
    T, dtd = 600.0, 2.0
    q = tp.Data(tp.Geometry([np.array([[762.5, 37.5]])], dt=dtd, t=T), [tp.ricker(F0, dtd, T)])
    rec = tp.Geometry([np.stack([25.0 * np.arange(61), np.full(61, 12.5)], 1)], dt=dtd, t=T)
    d_tp = tp.forward(model, q, rec)
    f_tp, g_tp = tp.fwi_objective(model0, q, d_tp)
    d_dw = peers.DeepwaveShot(model, q, rec, F0).forward()
    dw0 = peers.DeepwaveShot(model0, q, rec, F0)
    f_dw, g_dw = dw0.gradient(d_dw)
    return dict(model=model, model0=model0, q=q, rec=rec, d_tp=d_tp.arrays[0], d_dw=d_dw, f_tp=f_tp, g_tp=g_tp,
                dw0=dw0, f_dw=f_dw, g_dw=g_dw, mask=peers.score_mask(model.shape, 12))


def test_corner_weights_are_linear_interpolation():
    model = tp.Model(vp=np.full((11, 9), 2.0, np.float32), spacing=(10.0, 20.0), origin=(100.0, 0.0), nbl=4)
    pts = np.array([[100.0, 0.0], [137.5, 30.0], [150.0, 45.0], [200.0, 160.0], [162.5, 75.0]])
    cells, W = peers.corner_weights(model, pts)
    assert len(set(map(tuple, cells))) == len(cells)                      # each cell once
    np.testing.assert_allclose(np.asarray(W.sum(1)).ravel(), 1.0)
    lin = lambda c: 3.0 + 2.0 * c[:, 0] - 0.5 * c[:, 1] + 0.25 * c[:, 0] * c[:, 1]  # noqa: E731  bilinear
    phys = np.asarray(model.origin) + cells * np.asarray(model.spacing)
    np.testing.assert_allclose(W @ lin(phys), lin(pts), rtol=1e-12)      # exact for bilinear functions
    assert (W[0].toarray() > 0).sum() == 1 and (W[3].toarray() > 0).sum() == 1   # on-grid: one cell
    assert (W[1].toarray() > 0).sum() == 4
    with pytest.raises(ValueError, match="outside the model"):
        peers.corner_weights(model, np.array([[205.0, 10.0]]))


def test_same_data_and_misfit(tiny):
    # measured: data cosine 0.999995, misfit ratio 0.99997 (the absorbing layers differ: C-PML / damping)
    assert cosine(tiny["d_dw"], tiny["d_tp"]) > 0.9999
    assert tiny["f_dw"] / tiny["f_tp"] == pytest.approx(1.0, abs=1e-3)
    assert tiny["dw0"].step_ratio == 1                                    # Deepwave stepped at timeprobe's dt


def test_exact_gradients_agree(tiny):
    m = tiny["mask"]
    # measured: 0.9999999972 below the water rows without the outer ring, norm ratio 1.00001
    assert cosine(tiny["g_dw"][m], tiny["g_tp"][m]) > 0.99999
    assert np.linalg.norm(tiny["g_dw"][m]) / np.linalg.norm(tiny["g_tp"][m]) == pytest.approx(1.0, abs=2e-3)


def test_deepwave_gradient_is_the_misfit_derivative(tiny):
    """Central differences of Deepwave's misfit along a bump in m against ⟨g, δm⟩, in float64 (the
    perturbed m is never rounded to float32): checks the v → m conversion, the misfit's constant and
    the adjoint source; max_vel pinned so that the PML and the time step stay fixed."""
    model0, q, rec = tiny["model0"], tiny["q"], tiny["rec"]
    x, z = np.meshgrid(np.arange(61), np.arange(41), indexing="ij")
    dm = 0.02 * np.exp(-((x - 30) ** 2 + (z - 22) ** 2) / 18.0)
    d = peers.DeepwaveShot(tiny["model"], q, rec, F0, dtype=np.float64).forward()
    shot = peers.DeepwaveShot(model0, q, rec, F0, max_vel=1.05 * float(model0.vp.max()), dtype=np.float64)
    m0 = model0.m.astype(np.float64)
    shot.v = 1e3 / np.sqrt(m0)
    gdm = float(np.vdot(shot.gradient(d)[1], dm))

    def misfit(m):
        shot.v = 1e3 / np.sqrt(m)
        return shot.gradient(d)[0]
    err = {eps: abs((misfit(m0 + eps * dm) - misfit(m0 - eps * dm)) / (2 * eps) / gdm - 1) for eps in (0.1, 0.05)}
    # measured: 4.5e-4 and 1.1e-4 (second order)
    assert err[0.05] < 1e-3
    assert 2.5 < err[0.1] / err[0.05] < 6


def test_low_memory_modes_close_to_exact(tiny):
    dw0, d, m, g = tiny["dw0"], tiny["d_dw"], tiny["mask"], tiny["g_dw"]
    k = dw0.nyquist_interval
    assert k == peers.nyquist_k(dw0.wavelet, dw0.dt) > 1
    g8, gk = dw0.gradient(d, compression=True)[1], dw0.gradient(d, interval=k)[1]
    # measured: 8-bit cosine 0.999998; interval k relative error 1e-4
    assert 0.9999 < cosine(g8[m], g[m]) < 1 - 1e-8                        # lossy, and really applied
    rel = np.linalg.norm(gk - g) / np.linalg.norm(g)
    assert 1e-7 < rel < 1e-3
    with pytest.raises(ValueError, match="multiple of the interval"):
        dw0.gradient(d, interval=k, nt_run=dw0.nt + 1 if (dw0.nt + 1) % k else dw0.nt + 2)


def test_checkpoint_segments_and_memory_model():
    s, nt_run = peers.checkpoint_segments(1402, 7)
    assert nt_run % (s * 7) == 0 and 1402 <= nt_run < 1402 + 7 * s and 6 <= s <= 15
    formula, ram, disk = peers.deepwave_memory_model(dict(), (489, 209), 1402)
    assert ram == 1402 * 489 * 209 * 4 and disk == 0
    _, ram8, _ = peers.deepwave_memory_model(dict(compression=True, interval=7), (489, 209), 1407)
    blocks = 62 * 27
    assert ram8 == 201 * (-(-(489 * 209 + 4 * blocks) // 4) * 4) + 2 * 4 * 489 * 209
    _, ram_d, disk_d = peers.deepwave_memory_model(dict(storage="disk"), (489, 209), 1402)
    assert ram_d == 4 * 489 * 209 and disk_d == ram


@pytest.mark.slow
def test_peers_harness_quick(tmp_path):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TIMEPROBE_BENCH_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "p.json"
    sys.path.insert(0, str(SCRIPTS))
    import records
    n_records = len(records.read())
    proc = subprocess.run([sys.executable, str(SCRIPTS / "peers.py"), "--quick", "--cases", "layered2d_41_31:600",
                           "--only", "dw_8bit", "dw_disk_nyq", "dw_ckpt", "tp_nyquist8", "tp_budget", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert len(records.read()) == n_records  # a --quick run is never recorded
    res = json.loads(out.read_text())["peers"]["layered2d_41_31:600"]
    rows, info = res["rows"], res["info"]
    k = info["interval"]
    names = {"dw_plain", "dw_exact", "dw_8bit", f"dw_8bit_nyq_k{k}", f"dw_disk_nyq_k{k}", "tp_plain", "tp_exact"}
    assert names <= set(rows) and any(n.startswith("dw_ckpt_s") for n in rows)
    for name, row in rows.items():
        assert "error" not in row, (name, row.get("error"))
        assert math.isfinite(row["wall_s"]) and row["wall_s"] > 0
    ex = rows["dw_exact"]
    assert ex["working_mb"] > 0.8 * ex["expected_mb"] > 0                 # the history is really measured
    assert rows[f"dw_disk_nyq_k{k}"]["working_mb"] < 0.5 * ex["working_mb"]
    assert rows[f"dw_8bit_nyq_k{k}"]["working_mb"] < 0.5 * ex["working_mb"]
    assert ex["cos_own"] == pytest.approx(1.0, abs=1e-12) and ex["cos_tp_exact"] > 0.9999
    assert rows["tp_exact"]["cos_tp_exact"] == pytest.approx(1.0, abs=1e-12)
    for name, row in rows.items():
        if name.startswith("dw_") and name != "dw_plain":
            assert row["cos_own"] > 0.999 and row["cos_tp_exact"] > 0.999, name
    assert info["cos_data"] > 0.9999 and info["misfit_ratio_dw_tp"] == pytest.approx(1.0, abs=1e-3)
    assert rows["tp_nyquist8"]["cos_own"] > 0.999
    # the autopilot at each low-memory Deepwave row's measured memory: run, or reported as not fitting
    budget = {n.split("@", 1)[1] for n in rows if n.startswith("tp_budget@")} | {
        n.split("@", 1)[1] for n in info["budget_skipped"]}
    assert {"dw_8bit", f"dw_8bit_nyq_k{k}", f"dw_disk_nyq_k{k}"} <= budget
    for name, row in rows.items():
        if name.startswith("tp_budget@"):
            assert row["cfg"]["opts"]["budget_mb"] == pytest.approx(rows[row["cfg"]["peer"]]["working_mb"])
            assert row["speedup_vs_peer"] > 0 and row["cos_own"] > 0.5
    md = out.with_suffix(".md").read_text()
    assert md.count("| dw_") >= 5 and "cos timeprobe exact" in md and "timeprobe's choice" in md
