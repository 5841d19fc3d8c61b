"""Shot-parallel objective on a 2-process LocalCluster: equals the serial one, survives a worker loss."""
import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import timeprobe as tp  # noqa: E402
from timeprobe.objectives import shot_objective  # noqa: E402
from timeprobe.parallel import close_client, local_client, reduce_shots  # noqa: E402
from timeprobe.probing import ProbingOptions, shot_generators  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from conftest import acquisition, layered_model  # noqa: E402


# the crash wrapper below travels to the workers by value
import cloudpickle  # noqa: E402
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def case():
    model = layered_model(shape=(61, 41), nbl=10, space_order=4)
    model0 = layered_model(shape=(61, 41), nbl=10, space_order=4, smooth=True)
    q, rec = acquisition(model, nshots=4, nrec=21, t=300.0)
    d = tp.forward(model, q, rec)
    return model0, q, d


@pytest.fixture(scope="module")
def client():
    c = local_client(2, omp_threads=1)
    yield c
    close_client(c)


def crash_first_attempt(marker_dir, model, q_i, d_i, opts, rng):
    """Task wrapper: the first attempt of each shot kills its worker process (os._exit)."""
    marker = Path(marker_dir) / f"shot-{float(q_i.geometry.coordinates[0][0, 0]):.3f}"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return shot_objective(model, q_i, d_i, opts, rng)


@pytest.mark.parametrize("ps", [None, 8])
def test_parallel_equals_serial(case, client, ps):
    model0, q, d = case
    f_s, g_s = tp.fwi_objective(model0, q, d, ps=ps, seed=3)
    f_p, g_p = tp.fwi_objective(model0, q, d, ps=ps, seed=3, client=client)
    assert f_p == f_s  # summed in shot order, same per-shot seeds
    assert g_p.dtype == np.float32 and g_p.shape == model0.shape
    np.testing.assert_allclose(g_p, g_s, rtol=0, atol=1e-5 * np.abs(g_s).max())
    assert np.abs(g_s).max() > 0


def test_scheduler_address_string(case, client):
    model0, q, d = case
    f_s, _ = tp.fwi_objective(model0, q[:2], d[:2], ps=4, seed=0)
    f_p, _ = tp.fwi_objective(model0, q[:2], d[:2], ps=4, seed=0, client=client.scheduler.address)
    assert f_p == f_s


def test_worker_loss_recovers(case, client, tmp_path):
    """Every shot's first attempt kills its worker: the shots are rerun, none dropped or doubled."""
    model0, q, d = case
    opts = ProbingOptions(ps=8)
    f_s, g_s = tp.fwi_objective(model0, q, d, ps=8, seed=5)
    task = functools.partial(crash_first_attempt, str(tmp_path))
    f_p, g_p = reduce_shots(task, model0, q, d, opts, shot_generators(5, q.nshots), client=client)
    g_p = model0.pad_adjoint(g_p).astype(np.float32)  # fwi_objective sums the padding (sum_padding=True)
    assert len(list(tmp_path.iterdir())) == q.nshots  # every shot did lose a worker once
    assert f_p == f_s
    np.testing.assert_allclose(g_p, g_s, rtol=0, atol=1e-5 * np.abs(g_s).max())
    client.wait_for_workers(2, timeout=60)


def test_bad_client(case):
    model0, q, d = case
    with pytest.raises(TypeError, match="client"):
        tp.fwi_objective(model0, q, d, client=42)
    with pytest.raises(ValueError, match="generators"):
        reduce_shots(shot_objective, model0, q, d, ProbingOptions(), shot_generators(0, 1), client="x")
    with pytest.raises(ValueError, match="n_workers"):
        local_client(0)
