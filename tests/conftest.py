"""Shared fixtures: small models and geometries, and the path to ../shared."""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import timeprobe as tp

# benchmark scripts run by the tests append their records here, never to benchmarks/history.jsonl
os.environ["TIMEPROBE_HISTORY"] = os.path.join(tempfile.mkdtemp(prefix="timeprobe-test-history-"),
                                               "history.jsonl")


def _shared_candidates():
    env = os.environ.get("TIMEPROBE_DATA")
    if env:
        yield Path(env)
    yield Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """The shared reference data folder (env TIMEPROBE_DATA, else ../shared beside the repo)."""
    tried = []
    for p in _shared_candidates():
        tried.append(str(p))
        if (p / "models").is_dir():
            return p
    pytest.fail("shared data not found; looked in: " + ", ".join(tried)
                + " — set TIMEPROBE_DATA to the folder holding models/ and data/")


def layered_model(shape=(81, 51), spacing=10.0, nbl=20, space_order=8, smooth=False):
    """Three flat layers (1.5 / 2.0 / 2.5 km/s); optionally Gaussian-smoothed (an initial model)."""
    nx, nz = shape[0], shape[-1]
    vp = np.full(shape, 1.5, dtype=np.float32)
    vp[..., nz * 2 // 5:] = 2.0
    vp[..., nz * 3 // 4:] = 2.5
    model = tp.Model(vp=vp, spacing=spacing, nbl=nbl, space_order=space_order)
    return model.smooth(3 * model.spacing[0]) if smooth else model


def line_geometry(model, n, depth, dt, t, x0=None, x1=None):
    """One shot of n points along x at ``depth`` (2D or 3D: y at the centre)."""
    (xa, xb) = model.domain_bounds[0]
    x = np.linspace(xa if x0 is None else x0, xb if x1 is None else x1, n)
    cols = [x]
    if model.dim == 3:
        cols.append(np.full(n, np.mean(model.domain_bounds[1])))
    cols.append(np.full(n, depth))
    return np.stack(cols, axis=1)


def acquisition(model, nshots=2, nrec=41, t=500.0, dt=2.0, f0=0.015, src_depth=20.0, rec_depth=20.0):
    """Sources spread along x, a fixed receiver line, Ricker wavelets."""
    (xa, xb) = model.domain_bounds[0]
    src_x = np.linspace(xa + 0.25 * (xb - xa), xb - 0.25 * (xb - xa), nshots)
    src_coords = []
    for sx in src_x:
        c = [sx] + ([np.mean(model.domain_bounds[1])] if model.dim == 3 else []) + [src_depth]
        src_coords.append(np.array([c]))
    rec = line_geometry(model, nrec, rec_depth, dt, t)
    src_geom = tp.Geometry(src_coords, dt=dt, t=t)
    rec_geom = tp.Geometry([rec] * nshots, dt=dt, t=t)
    q = tp.Data(src_geom, [tp.ricker(f0, dt, t)] * nshots)
    return q, rec_geom


@pytest.fixture(scope="session")
def small_case():
    """True and initial layered models, 2 shots, observed data — shared by several tests."""
    model = layered_model()
    model0 = layered_model(smooth=True)
    q, rec_geom = acquisition(model)
    d = tp.forward(model, q, rec_geom)
    return model, model0, q, rec_geom, d
