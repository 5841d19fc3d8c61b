"""The working-memory autopilot (timeprobe.budget) and the a-posteriori accuracy estimate
(timeprobe.accuracy): the plan's order and limits, fwi_objective/jacobian_adjoint/rtm(budget_mb=...),
and the estimate against the measured cosine on three small models."""
import h5py
import numpy as np
import pytest

import timeprobe as tp
from timeprobe.accuracy import cosine_estimate, edge_mask, sample_points, sampled_exact_gradient
from timeprobe.probing import DEFAULT_BLOCK
from timeprobe.budget import BASELINE_SLACK, FIXED_MARGIN, MIB, PAYLOAD_MARGIN, estimate_samples, gradient_sizes, plan, strategy_memory
from timeprobe.storage import StorageOptions

from conftest import layered_model


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _cos_interior(a, b):
    """The cosine the probing estimate targets for gradients (sum_padding=True): without the
    outermost points, which hold the absorbing layers' sums (72 % of ‖g‖² on the salt shot)."""
    inner = ~edge_mask(np.shape(a))
    return _cos(np.asarray(a)[inner], np.asarray(b)[inner])


SIZES = dict(N=300 * 200, N_h=316 * 216, N_r=228 * 128, N_p=220 * 120, N_s=220 * 120, shape=(220, 120), nt=1500, dt=1.0, k=10,
             traces=750 * 220)


# --------------------------------------------------------------------------- the plan (no propagation)
def test_memory_formulas():
    """predicted = 1.02·payload + 1 MiB + max(0, buffers + common − reused) (timeprobe.budget)."""
    s = SIZES
    common = 12 * s["N"] + 4 * s["N_p"] + 4 * s["traces"]
    reused = 8 * s["traces"] + BASELINE_SLACK

    def pred(payload, buffers, extra=0):
        return int(PAYLOAD_MARGIN * payload) + FIXED_MARGIN + max(0, buffers + common - reused) + extra
    B = DEFAULT_BLOCK
    assert strategy_memory(s, "full") == pred(4 * 1501 * s["N_h"], 4 * s["N"])
    assert strategy_memory(s, "probe", ps=32) == pred(4 * 32 * s["N_r"], 4 * (B + 1) * s["N_r"])
    assert strategy_memory(s, "probe", ps=32, samples=100) == pred(4 * 32 * s["N_r"], 4 * (B + 1) * s["N_r"],
                                                                   4 * 100 * (1501 + 150))
    nsnap, per8 = 150, s["N_p"] + 4 * 28 * 15
    buf8 = 4 * 10 * s["N_s"] + 4 * s["N_s"]  # 8 slots, scratch, gradient, the codec's work array
    assert strategy_memory(s, "stored", storage=StorageOptions(bits=8)) == pred(nsnap * per8, buf8)
    assert strategy_memory(s, "stored", storage=StorageOptions(bits=8, where="disk")) == pred(8 * per8, buf8)
    assert strategy_memory(s, "stored", storage=StorageOptions()) == pred(nsnap * 4 * s["N_p"], 4 * 10 * s["N_s"])
    # plain modelling's trace buffers absorb the buffers of a record-dominated shot, not the payload
    big = dict(s, traces=10 ** 8)
    assert strategy_memory(big, "probe", ps=32) == int(PAYLOAD_MARGIN * 4 * 32 * s["N_r"]) + FIXED_MARGIN
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_memory(s, "revolve")


def test_plan_picks_the_most_accurate_that_fits():
    order = []
    for mb in np.geomspace(5000, 2.7, 60):
        p = plan(SIZES, mb)
        assert p.predicted_bytes <= mb * MIB
        order.append((p.strategy, p.ps))
    names = [s for s, _ in order]
    # full storage, then Nyquist 32 / 16 / 8 bit, then the same with checkpointed segments (one
    # more forward run), then probing with r decreasing as the budget shrinks
    firsts = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    plain = [n for n in firsts if "segments" not in n]
    assert plain == ["full", "nyquist", "nyquist16", "nyquist8", "probe"]
    assert all(firsts.index("nyquist8") < i < firsts.index("probe")
               for i, n in enumerate(firsts) if "segments" in n)
    # between 8-bit snapshots and probing: 8-bit snapshots with checkpointed segments
    seg = plan(SIZES, 5.0)
    assert seg.strategy == seg.storage.name and seg.storage.segments > 1 and seg.storage.bits == 8
    assert seg.predicted_bytes <= 5.0 * MIB < min(strategy_memory(SIZES, "stored", storage=StorageOptions(bits=8, chunk=B))
                                                for B in (8, 4, 2, 1))
    assert plan(SIZES, 5.0, stored=False).strategy == "probe"
    assert plan(SIZES, 5.0, segments=False).strategy == "probe"  # rtm: every snapshot stored
    rs = [r for s, r in order if s == "probe"]
    assert rs == sorted(rs, reverse=True) and rs[0] <= 150 and rs[-1] >= 1
    # the largest r that fits: one more probe would not
    p = plan(SIZES, 4.0)
    assert strategy_memory(SIZES, "probe", ps=p.ps + 1) > 4.0 * MIB >= p.predicted_bytes
    # a smaller chunk before giving up a storage mode
    # (on a grid large enough that the slots are not absorbed by plain modelling's trace buffers)
    big = dict(SIZES, N=2_400_000, N_h=2_600_000, N_r=2_000_000, N_p=2_000_000, N_s=2_000_000, shape=(2000, 1000))
    p8 = plan(big, (strategy_memory(big, "stored", storage=StorageOptions(bits=8, chunk=2)) + 10) / MIB)
    assert p8.strategy == "nyquist8" and p8.storage.chunk == 2


def test_plan_disk_only_when_allowed(tmp_path):
    mb = 4.5
    assert plan(SIZES, mb).strategy == "probe"
    p = plan(SIZES, mb, allow_disk=True)
    assert p.strategy == "disk" and p.storage.where == "disk"
    p = plan(SIZES, mb, allow_disk=str(tmp_path))
    assert p.storage.directory == str(tmp_path)
    assert plan(SIZES, mb, stored=False).strategy == "probe"


def test_plan_errors():
    with pytest.raises(ValueError, match="below the smallest strategy"):
        plan(SIZES, 0.01)
    with pytest.raises(ValueError, match="positive"):
        plan(SIZES, -1)
    with pytest.raises(TypeError, match="budget_mb"):
        plan(SIZES, "10")
    # the sampled estimate costs memory: fewer probes fit
    assert plan(SIZES, 4.5, samples=True).ps < plan(SIZES, 4.5).ps
    per = 4 * (1501 + 150)  # bytes per sampled point
    assert estimate_samples(SIZES, 5.0 * MIB) == int(0.2 * 5.0 * MIB // per)  # a fifth of the budget
    assert estimate_samples(SIZES) == 1000 and estimate_samples(SIZES, 19 * per / 0.2) == 0


# --------------------------------------------------------------------------- the estimate (NumPy)
def test_cosine_estimate_unbiased_and_exact_with_all_points():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((60, 40)) * np.exp(-np.linspace(0, 4, 40))
    # an error partly along g (a scaled gradient) and partly not: both sums of the estimate matter
    gc = 0.6 * g + 0.3 * rng.standard_normal(g.shape) * np.exp(-np.linspace(0, 4, 40))
    truth = _cos(gc, g)
    allpts = np.arange(g.size)
    assert cosine_estimate(gc, allpts, g.ravel())[0] == pytest.approx(truth, abs=1e-12)
    errs = []
    for _ in range(50):
        flat = np.sort(rng.choice(g.size, 400, replace=False))
        est, std = cosine_estimate(gc, flat, g.ravel()[flat], n_boot=50)
        errs.append(est - truth)
        assert abs(est - truth) < 5 * std + 1e-3 and std < 0.05
    assert abs(np.mean(errs)) < 0.006  # no bias beyond the spread (ratio estimators: O(1/M))
    # the exact values must belong to the points: mismatched samples give a wrong number
    assert abs(cosine_estimate(gc, flat, g.ravel()[::-1][flat])[0] - truth) > 0.1


def test_sampled_exact_gradient_is_the_nyquist_sum():
    rng = np.random.default_rng(1)
    nt, k, dt = 41, 4, 0.5
    v = rng.standard_normal((nt + 1, 3))
    v[nt] = 0
    u = rng.standard_normal((nt, 3))
    u_sub = u[::k]
    n = np.arange(k, nt, k)
    ref = -k * dt * np.sum(u[n] * (v[n + 1] - 2 * v[n] + v[n - 1]) / dt ** 2, axis=0)
    assert np.allclose(sampled_exact_gradient(u_sub, v, k, dt), ref)


# --------------------------------------------------------------------------- three small models
SHAPE, H, NBL = (100, 50), 10.0, 20


def _layered():
    return (layered_model(shape=SHAPE, spacing=H, nbl=NBL), layered_model(shape=SHAPE, spacing=H, nbl=NBL, smooth=True),
            500.0)


def _overthrust(shared_dir):
    """A 100×50 window of overthrust_small (m, m0), on a 10 m grid (a cut-down model)."""
    with h5py.File(shared_dir / "models" / "overthrust_small.h5", "r") as f:
        m, m0 = f["m"][()].T, f["m0"][()].T
    win = (slice(150, 250), slice(0, 50))
    mk = lambda a: tp.Model(m=a[win].astype(np.float32), spacing=(H, H), nbl=NBL, space_order=8)  # noqa: E731
    return mk(m), mk(m0), 100.0


def _salt():
    """A salt body (4.5 km/s) in a 1.6 → 2.8 km/s gradient, the source at the edge."""
    x = np.arange(SHAPE[0])[:, None] * H
    z = np.arange(SHAPE[1])[None] * H
    vp = 1.6 + 1.2 * z / (SHAPE[1] * H) + 0 * x
    vp = np.where(((x - 600) / 200) ** 2 + ((z - 300) / 90) ** 2 < 1, 4.5, vp)
    true = tp.Model(vp=vp.astype(np.float32), spacing=(H, H), nbl=NBL, space_order=8)
    return true, true.smooth(40.0), 30.0


def _shot(true, init, sx, t=600.0, dtd=2.0):
    init.dt = true.dt = min(true.critical_dt, init.critical_dt)
    (xa, xb), _ = true.domain_bounds
    q = tp.Data(tp.Geometry([np.array([[sx, 20.0]])], dt=dtd, t=t), [tp.ricker(0.02, dtd, t)])
    rec = tp.Geometry([np.stack([np.linspace(xa, xb, 50), np.full(50, 10.0)], 1)], dt=dtd, t=t)
    return init, q, tp.forward(true, q, rec)


@pytest.fixture(scope="module")
def models(shared_dir):
    """(name, initial model, q, d, exact gradient) of three models on one grid (the operators compile once)."""
    out = []
    for name, mk in (("layered", _layered), ("overthrust", lambda: _overthrust(shared_dir)), ("salt", _salt)):
        init, q, d = _shot(*mk())
        out.append((name, init, q, d, tp.fwi_objective(init, q, d)[1]))
    return out


def test_estimate_tracks_measured_cosine(models):
    """Probing (r = 12, k = 3: cosines 0.88–0.95 here): the sampled estimate is within ±0.03 of the
    measured cosine, and its bootstrap spread says how far it may be."""
    for name, init, q, d, g in models:
        _, gp, info = tp.fwi_objective(init, q, d, ps=12, seed=0, subsample=3, return_info=True)
        cos = _cos_interior(gp, g)
        assert 0.8 < cos < 0.99, (name, cos)  # a case the estimate has to work for
        assert info["strategy"] == "probe" and info["ps"] == 12 and info["k"] == [3]
        assert abs(info["accuracy"] - cos) <= 0.03, (name, cos, info["accuracy"])
        assert 0 < info["accuracy_std"] < 0.02
        # the points do not change the probes: same gradient without return_info
        assert np.array_equal(gp, tp.fwi_objective(init, q, d, ps=12, seed=0, subsample=3)[1])


def test_estimate_of_stored_strategies(models):
    name, init, q, d, g = models[2]
    for storage in ("nyquist", "nyquist8"):
        _, gs, info = tp.fwi_objective(init, q, d, storage=storage, return_info=True)
        assert abs(info["accuracy"] - _cos(gs, g)) <= 0.03 and info["strategy"] == storage
    _, _, info = tp.fwi_objective(init, q, d, return_info=True)
    assert info["strategy"] == "full" and info["accuracy"] == 1.0


def test_budget_objective_chooses_and_reports(models):
    name, init, q, d, g = models[0]
    sizes = gradient_sizes(init, q, d)
    full_mb = strategy_memory(sizes, "full") / MIB
    n8_mb = strategy_memory(sizes, "stored", storage=StorageOptions(bits=8)) / MIB
    n8_min = strategy_memory(sizes, "stored", storage=StorageOptions(bits=8, chunk=1)) / MIB
    # below every stored candidate, checkpointed segments included
    seg_min = min(c[1] for c in plan(sizes, 0.95 * n8_min).candidates if "segments" in c[0]) / MIB
    low = 0.95 * min(n8_min, seg_min)
    results = {}
    for mb in (1.05 * full_mb, 1.01 * n8_mb, low):
        f, gb, info = tp.fwi_objective(init, q, d, budget_mb=mb, seed=0, subsample=3, return_info=True)
        assert info["predicted_mb"] <= mb and info["budget_mb"] == pytest.approx(mb)
        assert info["candidates"][-1][2] and not any(fit for _, _, fit in info["candidates"][:-1])
        results[info["strategy"]] = ((_cos_interior if info["strategy"] == "probe" else _cos)(gb, g), info)
    assert set(results) == {"full", "nyquist8", "probe"}
    assert results["full"][0] > 0.99999 and results["nyquist8"][0] > 0.9999
    # a tight budget leaves few points for the estimate (a fifth of it): a wider, reported spread
    cos_p, info_p = results["probe"]
    assert 20 <= info_p["samples"] < 1000 and info_p["ps"] >= 2
    assert abs(info_p["accuracy"] - cos_p) <= 3 * info_p["accuracy_std"] + 0.01
    # without the estimate the same budget holds more probes
    assert plan(sizes, low).ps > info_p["ps"]
    # the autopilot behind strategies.gradient, and the same plan without the info
    f2, g2 = tp.gradient(init, q, d, "auto", budget_mb=1.01 * n8_mb)
    _, g3 = tp.fwi_objective(init, q, d, storage="nyquist8")
    assert np.array_equal(g2, g3)
    with pytest.raises(ValueError, match="leave ps and storage unset"):
        tp.fwi_objective(init, q, d, ps=8, budget_mb=10)
    with pytest.raises(ValueError, match="only applies with budget_mb"):
        tp.fwi_objective(init, q, d, allow_disk=True)
    with pytest.raises(ValueError, match="below the smallest"):
        tp.fwi_objective(init, q, d, budget_mb=0.01)
    with pytest.raises(ValueError, match="serially"):
        tp.fwi_objective(init, q, d, ps=8, return_info=True, client="tcp://127.0.0.1:1")


def test_budget_jacobian_adjoint_and_rtm(models):
    name, init, q, d, g = models[1]
    sizes = gradient_sizes(init, q, d)
    g_ex = tp.jacobian_adjoint(init, q, d)
    gj, info = tp.jacobian_adjoint(init, q, d, ps=12, seed=1, subsample=3, return_info=True)
    assert info["strategy"] == "probe" and abs(info["accuracy"] - _cos_interior(gj, g_ex)) <= 0.03
    mb = 1.01 * strategy_memory(sizes, "stored", storage=StorageOptions(bits=8)) / MIB
    g8, info = tp.jacobian_adjoint(init, q, d, budget_mb=mb, return_info=True)
    assert info["strategy"] == "nyquist8" == plan(sizes, mb).strategy and _cos(g8, g_ex) > 0.999
    sizes = gradient_sizes(init, q, d, layers=False)  # images: the physical domain
    mb = 0.95 * strategy_memory(sizes, "stored", storage=StorageOptions(bits=8, chunk=1)) / MIB
    im, lam, info = tp.rtm(init, q, d, ic="as", budget_mb=mb, seed=1, subsample=3, return_info=True)
    im_ex, _ = tp.rtm(init, q, d, ic="as")
    assert info["strategy"] == "probe" and abs(info["accuracy"] - _cos(im, im_ex)) <= 3 * info["accuracy_std"] + 0.01
    # ISIC: the stored snapshots lack the halo, the autopilot chooses among full storage and probing
    big = 2 * strategy_memory(sizes, "stored", storage=StorageOptions(bits=32)) / MIB
    _, _, info = tp.rtm(init, q, d, ic="isic", budget_mb=big, subsample=3, return_info=True)
    assert info["strategy"] == "probe" and info["accuracy"] is None


def test_sample_points_are_grid_nodes_of_the_physical_domain():
    model = layered_model(shape=(30, 20), spacing=10.0, nbl=10)
    origin = np.array([b[0] for b in model.domain_bounds])
    for centres in (None, np.array([[origin[0] + 50.0, 20.0], [origin[0] + 200.0, 10.0]])):
        pts = sample_points(model, 50, np.random.default_rng(0), centres=centres)
        assert len(np.unique(pts.flat)) == 50
        idx = np.stack(np.unravel_index(pts.flat, model.shape), 1)
        assert np.allclose(pts.coords, origin + 10.0 * idx)
        # the weights are stratum sizes per sampled point: they add up to the model's points
        assert pts.weight.sum() == pytest.approx(600)
    # the stratum nearest the centres is taken more densely than the rest
    near = pts.stratum == pts.stratum.min()
    assert pts.weight[near].max() < pts.weight[~near].max()
    assert len(sample_points(model, 10 ** 6, np.random.default_rng(0))[0]) == 600


def test_stratified_estimate_finds_a_concentrated_gradient():
    """A gradient whose energy sits in a few points next to the source (as in 3D): uniform points
    miss them, the stratified ones do not."""
    model = layered_model(shape=(60, 40), spacing=10.0, nbl=10)
    rng = np.random.default_rng(2)
    g = 0.01 * rng.standard_normal(model.shape)
    g[20:23, 2:5] = 5.0 + rng.standard_normal((3, 3))  # the hot spot around the source (20 m, 30 m)
    gc = g + 0.01 * rng.standard_normal(model.shape)
    gc[20:23, 2:5] += 2.0 * rng.standard_normal((3, 3))
    truth = _cos(gc, g)
    origin = np.array([b[0] for b in model.domain_bounds])
    src = origin + np.array([[210.0, 30.0]])
    errs_u, errs_s = [], []
    for seed in range(20):
        pu = sample_points(model, 100, np.random.default_rng(seed))
        ps = sample_points(model, 100, np.random.default_rng(seed), centres=src)
        errs_u.append(abs(cosine_estimate(gc, pu, g.ravel()[pu.flat], n_boot=0)[0] - truth))
        errs_s.append(abs(cosine_estimate(gc, ps, g.ravel()[ps.flat], n_boot=0)[0] - truth))
    assert max(errs_s) < 0.01 < max(errs_u)


# --------------------------------------------------------------------------- probes from two records (#14 item 3)
def test_probe_data_synthetic_designs_from_both_records(models):
    """probe_data="synthetic" = the current model's record beside the observed one (unit norms): the
    same gradient as passing that record, and the probes of design_probes on the normalised stack."""
    from timeprobe.geometry import computational_axis, resample, to_computational
    from timeprobe.probing import ProbingOptions, design_probes, probes_for_shot
    name, init, q, d, g = models[2]
    syn = tp.forward(init, q, d.geometry)
    _, g_syn = tp.fwi_objective(init, q, d, ps=12, seed=3, subsample=3, probe_data="synthetic")
    _, g_rec = tp.fwi_objective(init, q, d, ps=12, seed=3, subsample=3, probe_data=syn)
    _, g_obs = tp.fwi_objective(init, q, d, ps=12, seed=3, subsample=3)
    assert np.allclose(g_syn, g_rec, rtol=1e-5, atol=1e-6 * np.abs(g_rec).max())
    assert not np.allclose(g_syn, g_obs, rtol=1e-3)
    # the design, against design_probes on [D/‖D‖, S/‖S‖] (same generator state)
    dt, nt = computational_axis(init, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    p = probes_for_shot(ProbingOptions(ps=12, subsample=3), wc, dt, nt, (d[0], syn[0]), np.random.default_rng(5),
                        dtype=np.float64)
    t_sub = 3 * dt * np.arange(p.nsub)
    D, S = (resample(x.arrays[0], x.time, t_sub) for x in (d, syn))
    Q = design_probes("QR", p.nsub, 12, data=np.hstack([D / np.linalg.norm(D), S / np.linalg.norm(S)]),
                      seed=np.random.default_rng(5), dtype=np.float64)
    assert np.allclose(p.Q, Q)
    with pytest.raises(ValueError, match="'synthetic'"):
        tp.fwi_objective(init, q, d, ps=12, probe_data="pilot")
    with pytest.raises(TypeError, match="probe_data"):
        tp.fwi_objective(init, q, d, ps=12, probe_data=np.zeros(3))
    with pytest.raises(ValueError, match="serially"):
        tp.fwi_objective(init, q, d, ps=12, probe_data=syn, client="tcp://127.0.0.1:1")


def test_probe_designs_script_quick(tmp_path):
    """scripts/probe_designs.py --quick: the emulated Nyquist gradient is the exact one, the tables exist."""
    import importlib.util
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "probe_designs.py"
    spec = importlib.util.spec_from_file_location("probe_designs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "pd"
    mod.main(["--quick", "--out", str(out)])
    res = json.loads((out / "probe_designs.json").read_text())["results"][0]
    assert res["cos_nyquist_vs_exact"] > 0.9999 and res["cos_store_vs_numpy"] > 0.999999
    assert {"QR", "QR_obs+syn", "win2_i8", "nyquist_int8_t8"} <= set(res["designs"])
    assert "## tiny" in (out / "probe_designs.md").read_text()
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--out", str(out)])  # never overwrites
