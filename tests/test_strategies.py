"""Gradient strategies (timeprobe.strategies): exact ones agree to round-off, probed ones to float32 spread."""
import numpy as np
import pytest

import timeprobe as tp
from timeprobe.propagators import computational_axis
from timeprobe.strategies import STRATEGIES, gradient

from conftest import acquisition, layered_model


def _rel(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.fixture(scope="module")
def tiny():
    """41×31 grid, one shot, 300 ms: small enough that every operator compiles and runs fast."""
    model = layered_model(shape=(41, 31), nbl=10)
    model0 = layered_model(shape=(41, 31), nbl=10, smooth=True)
    q, rec = acquisition(model, nshots=1, nrec=21, t=300.0, dt=2.0, f0=0.02)
    d = tp.forward(model, q, rec)
    f, g = gradient(model0, q, d, "full")
    assert np.linalg.norm(g) > 0 and f > 0
    return model0, q, d, f, g


def test_checkpoint_matches_full(tiny):
    model0, q, d, f, g = tiny
    for ncp in (3, None):
        fc, gc = gradient(model0, q, d, "checkpoint", n_checkpoints=ncp)
        assert fc == pytest.approx(f, rel=1e-6)
        assert _rel(gc, g) < 1e-5, ncp


def test_subsample_one_is_full(tiny):
    model0, q, d, f, g = tiny
    fs, gs = gradient(model0, q, d, "subsample", k=1)
    assert fs == pytest.approx(f, rel=1e-6)
    assert _rel(gs, g) < 1e-5


def test_subsample_k_close(tiny):
    """k·dt well inside the Nyquist bound of u·v̈ (20 Hz Ricker, f_max ≈ 60 Hz): small error."""
    model0, q, d, f, g = tiny
    _, gs = gradient(model0, q, d, "subsample", k=2)
    assert 1e-6 < _rel(gs, g) < 0.05


@pytest.mark.parametrize("method", ["eq", "blocked"])
def test_probe_identity_within_float32_spread(tiny, method):
    """Q = I (r = nt, k = 1): the probed gradient is the exact one, reordered — float32 round-off only."""
    model0, q, d, f, g = tiny
    m64 = tp.Model(m=model0.m.astype(np.float64), spacing=model0.spacing, nbl=model0.nbl,
                   space_order=model0.space_order, dt=model0.dt, dtype=np.float64)
    _, g64 = gradient(m64, q, d, "full")
    spread = _rel(g, g64)
    assert 0 < spread < 1e-3
    _, nt = computational_axis(model0, q.geometry, d.geometry)
    _, gp = gradient(model0, q, d, "probe", ps=nt, mode="identity", subsample=1, seed=0,
                     method=method)
    assert _rel(gp, g64) < 2 * spread + 1e-7, (_rel(gp, g64), spread)


def test_dft_is_probing_with_dft_mode(tiny):
    model0, q, d, f, g = tiny
    f1, g1 = gradient(model0, q, d, "dft", nf=8, seed=3, subsample=1)
    f2, g2 = tp.fwi_objective(model0, q, d, ps=16, mode="dft", seed=3, subsample=1)
    assert f1 == f2 and np.array_equal(g1, g2)


def test_bad_input(tiny):
    model0, q, d, _, _ = tiny
    with pytest.raises(ValueError, match="unknown gradient strategy") as err:
        gradient(model0, q, d, "revolve")
    assert all(s in str(err.value) for s in STRATEGIES)  # the message lists every valid one
    with pytest.raises(TypeError, match="unexpected"):
        gradient(model0, q, d, "full", k=2)
    with pytest.raises(ValueError, match="k must be"):
        gradient(model0, q, d, "subsample", k=0)
    with pytest.raises(ValueError, match="n_checkpoints"):
        gradient(model0, q, d, "checkpoint", n_checkpoints=-1)


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_dft_accuracy_against_exact(tiny):
    """The on-the-fly DFT gradient converges to the exact one as its frequencies fill the source
    band: every band frequency (k = 1) gives the exact gradient to a fraction of a percent; a
    quarter of them much less."""
    from timeprobe.probing import max_frequency
    model0, q, d, f, g = tiny
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = tp.geometry.to_computational(q.arrays[0], q.geometry, dt, nt)
    nband = int(np.floor(max_frequency(wc, dt, rel=1e-2) * nt * dt))  # grid frequencies in the band
    _, g_all = gradient(model0, q, d, "dft", nf=nband, seed=3, subsample=1)
    _, g_few = gradient(model0, q, d, "dft", nf=max(1, nband // 4), seed=3, subsample=1)
    c_all, c_few = _cos(g_all, g), _cos(g_few, g)
    assert c_all > 0.995, c_all
    assert c_few < c_all - 0.05, (c_few, c_all)
