"""scripts/benchmark_speed.py: the lower bound it reports (--floor) and the r sweep (--ps-sweep)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import timeprobe as tp
from timeprobe.probe_buffers import region_shape

from conftest import layered_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import benchmark_speed  # noqa: E402


@pytest.mark.parametrize("layers", [True, False])
def test_probe_arithmetic_is_one_pass_of_the_probes(layers):
    """Each BLAS pass adds exactly Σ_n Q[n, :]·s_n over the nsub snapshots (blocks of 32, the
    last one shorter, or one product), on the probe region the gradient would use."""
    model = layered_model((41, 31), nbl=10)
    nsub, r = 75, 6  # 75 = 2·32 + 11: two whole blocks and a short one
    Q = np.random.default_rng(1).standard_normal((nsub, r))
    passes = benchmark_speed.probe_arithmetic(model, tp.probing.Probing(Q, layers=layers), layers)
    assert len(passes) == 2
    npts = int(np.prod(region_shape(model, layers)))
    for run in passes.values():
        run.ubar[:] = 0
        run()
        S = run.snapshots.astype(np.float64)
        blk = S.shape[1]
        expected = sum(S[:, :min(blk, nsub - n0)] @ Q[n0:n0 + blk] for n0 in range(0, nsub, blk))
        assert run.ubar.shape == (npts, r)
        assert run.flops == 2.0 * npts * nsub * r
        np.testing.assert_allclose(run.ubar, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_floor_and_ps_sweep_are_reported(tmp_path):
    """A small 3D run: the sweep's configurations are timed and the bound is design + 2 passes."""
    out = tmp_path / "speed.json"
    benchmark_speed.main(["--case", "thrust3d", "--shape", "31", "31", "21", "--t", "300", "--ps", "8",
                          "--repeat", "2", "--no-k1", "--floor", "--ps-sweep", "4", "--no-record",
                          "--out", str(out)])
    res = json.loads(out.read_text())
    rows, floor = res["rows"], res["floor"]
    assert "probed blocked (k auto, r=4)" in rows and 0 < rows["probed blocked (k auto, r=4)"]["cosine"] <= 1
    passes = [k for k in rows if k.startswith("probe arithmetic by BLAS")]
    assert len(passes) == 2 and floor["best_pass"] in passes
    assert floor["pass_ratio"] == min(rows[k]["ratio"] for k in passes) > 0
    assert floor["ratio"] == pytest.approx(1 + rows["probe design alone"]["ratio"] + 2 * floor["pass_ratio"])
    assert floor["gflops"] > 0
    # no kernel does arithmetic faster than the register-only FMA loop: the bound at peak is lower
    assert floor["peak_gflops"] > 0
    assert 1 + rows["probe design alone"]["ratio"] < floor["ratio_at_peak"] <= floor["ratio"] + 1e-9
    plain = np.array(rows["plain fwd+adj"]["all_seconds"])
    for row in rows.values():
        assert row["paired_ratio"] == pytest.approx(float(np.median(np.array(row["all_seconds"]) / plain)))


def test_fma_peak_is_a_rate_of_this_machine():
    """The peak microbenchmark runs and measures a positive rate no higher than 64 float32 flops per
    cycle per core at 6 GHz (an upper limit for any CPU this runs on)."""
    import os
    peak = benchmark_speed.fma_peak(repeat=1, n=200_000)
    assert 0 < peak < 64 * 6e9 * os.cpu_count()


def test_ps_sweep_refuses_a_nonpositive_number_of_probes():
    """``--ps-sweep 0`` is refused by name (it once fell back to ``--ps`` silently)."""
    with pytest.raises(ValueError, match="ps .*must be positive, got 0"):
        benchmark_speed.main(["--case", "thrust3d", "--shape", "31", "31", "21", "--t", "300", "--ps", "8",
                              "--repeat", "1", "--no-k1", "--no-full", "--ps-sweep", "0", "--no-record"])
