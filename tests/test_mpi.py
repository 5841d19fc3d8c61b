"""Devito MPI: a shot domain-decomposed over 2 ranks gives the serial results (issue 15).

Each test launches ``DEVITO_MPI=1 mpirun -n 2 python tests/mpi_case.py …`` in a subprocess (the
``mpi`` extra provides mpirun: the ``mpich`` wheel), on observed data computed here, and compares
what rank 0 wrote with the same computation run serially in this process. The worker has checked
that every rank returned the same (global) arrays. Without an MPI launcher these tests fail,
naming the extra to install: CI installs it.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import timeprobe as tp
from timeprobe import mpi

import mpi_case

HERE = Path(__file__).resolve().parent
#: relative difference allowed between the 2-rank and the serial results (float64 case)
TOL = 1e-5


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def run_mpi(part, d, tmp_path, ranks=2, timeout=420):
    """Run ``mpi_case.py part`` on ``ranks`` ranks; rank 0's results as a dict."""
    launcher = mpi.launcher()
    if launcher is None:
        pytest.fail("no mpirun/mpiexec found: the MPI tests need the mpi extra "
                    "(pip install -e '.[mpi]', which installs mpi4py and the mpich wheel's runtime)")
    inp, out = tmp_path / f"{part}-in.npz", tmp_path / f"{part}-out.npz"
    np.savez(inp, d=d.arrays[0])
    package_root = str(Path(tp.__file__).resolve().parents[1])  # the timeprobe imported here
    # the wheel's folder off PATH, as on a fresh machine with an unactivated venv: timeprobe must
    # find the wheel's mpicc itself (mpi.configure_compiler)
    wheel = mpi.wheel_bin_dir()
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (wheel and p and os.path.realpath(p) == os.path.realpath(wheel)))
    env = dict(os.environ, DEVITO_MPI="1", OMP_NUM_THREADS="1", PATH=path,
               PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    cmd = [launcher, "-n", str(ranks), sys.executable, str(HERE / "mpi_case.py"), part, str(inp), str(out)]
    try:
        proc = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s (a deadlock?):\n{e.stdout}\n{e.stderr}")
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def observed():
    model, _, q, rec = mpi_case.problem()
    return tp.forward(model, q, rec)


def _compare(serial, parallel, skip=()):
    assert int(parallel["ranks"]) == 2 and bool(parallel["distributed"]), "the worker did not run on 2 ranks"
    compared = {k: v for k, v in serial.items() if k not in skip}
    empty = [k for k, v in compared.items() if not np.any(np.asarray(v) != 0)]
    assert not empty, f"serial results all zero (nothing compared): {empty}"
    errors = {k: _rel(parallel[k], v) for k, v in compared.items()}
    print("2 ranks vs serial, relative differences:", {k: f"{e:.1e}" for k, e in errors.items()})
    bad = {k: e for k, e in errors.items() if not e <= TOL}
    assert not bad, f"2-rank results differ from the serial ones (relative, tolerance {TOL}): {bad}"
    return errors


def test_two_ranks_equal_serial(observed, tmp_path):
    """Forward and Born traces, exact and probed gradients, probed ISIC RTM and illumination,
    probes: 2 ranks = serial; ū is split, each rank holding half of it. With ``seed=None`` the
    ranks drew the same numbers and probes (the worker checked it); observed data differing
    between the ranks is refused."""
    parallel = run_mpi("core", observed, tmp_path)
    serial, ubar = mpi_case.compute(observed, "core")
    errors = _compare(serial, parallel, skip=mpi_case.RANKS_ONLY)
    assert errors["probes"] == 0.0  # designed from the same data (rank 0's, broadcast)
    assert bool(parallel["refused"]), "observed data differing between ranks was not refused"
    local, total = parallel["ubar_local_bytes"], int(parallel["ubar_global_bytes"])
    assert total == ubar.data.nbytes  # the serial ū: the whole padded grid × r
    assert local.sum() == total and local.max() <= 0.55 * total, (local, total)


@pytest.mark.slow
def test_two_ranks_equal_serial_extended(observed, tmp_path):
    """Exact and probed RTM (isic, as, kspace), offset gathers, adjoint modelling, probed adjoint
    Born, subsampling and checkpointing strategies, the "eq" method, ``sum_padding=False``:
    2 ranks = serial."""
    parallel = run_mpi("extended", observed, tmp_path)
    serial, _ = mpi_case.compute(observed, "extended")
    _compare(serial, parallel)


def test_helpers_serial():
    """Without DEVITO_MPI the helpers are no-ops and report one rank."""
    assert not mpi.devito_mpi() and not mpi.is_distributed()
    assert (mpi.rank(), mpi.size(), mpi.is_root()) == (0, 1, True)
    a = np.arange(6.0)
    assert mpi.broadcast(a) is a and mpi.allgather(3) == [3]
    assert mpi.shared_entropy(None) is None and mpi.shared_entropy(7) == 7
    mpi.check_same(a, "a")  # nothing to compare with
    assert mpi.configure_compiler() is None


def test_default_threads(monkeypatch):
    """Under DEVITO_MPI, OMP threads are shared out between the ranks of the machine; an explicit
    OMP_NUM_THREADS and runs without MPI are left alone."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("DEVITO_MPI", "1")
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert mpi.default_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"
    assert mpi.default_threads() is None  # now set: unchanged
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("DEVITO_MPI", "0")
    assert mpi.default_threads() is None and "OMP_NUM_THREADS" not in os.environ


def test_wheel_provides_compiler_wrapper():
    """The mpi extra's mpich wheel ships mpicc and mpirun: what configure_compiler puts on PATH."""
    folder = mpi.wheel_bin_dir()
    assert folder is not None, "the mpich wheel's mpicc was not found: pip install -e '.[mpi]'"
    assert os.access(os.path.join(folder, "mpicc"), os.X_OK)
    assert mpi.launcher() is not None
