"""Shot-parallel objectives on Dask (one machine or a cluster).

The FWI misfit and gradient are sums over shots (:mod:`timeprobe.objectives`)::

    f = Σ_i f_i(m),      g = Σ_i g_i(m),      (f_i, g_i) = task(m, q_i, d_i, opts, rng_i)

so every shot is one independent Dask task (:func:`reduce_shots`; ``fwi_objective(client=...)``
uses it with :func:`timeprobe.objectives.shot_objective`). Shot ``i`` gets the generator
``rng_i = shot_generators(seed, nshots)[i]`` — the same one the serial loop uses —
so the probes, hence ``f`` and ``g``, do not depend on where or in which order
the shots ran: ``f`` is summed in shot order (bit-identical to the serial
value), ``g`` in completion order (equal to round-off).

Memory of the reduction: gradients are added into one float64 running sum as
tasks complete (:func:`distributed.as_completed`) and each task's result is
released right after, so at most the results of finished-but-not-yet-reduced
tasks are held, never all ``nshots`` gradients.

Fault tolerance: shot tasks are pure (the output depends on the arguments only;
the generator travels pickled with the task, so a re-run starts from the same
state). When a worker dies mid-task, the scheduler reschedules its tasks on the
surviving or restarted workers; ``retries`` also re-runs tasks that raised.
A lost shot is therefore recomputed, never dropped or counted twice (each
shot's result is consumed exactly once, keyed by its index).

Operators are compiled once per worker process: Devito operators are memoised
per process (:mod:`timeprobe.workspace`), and compiled code is cached on disk.

Clusters: any ``distributed.Client`` works — :func:`local_client` on one machine, a
``dask_jobqueue`` cluster (SLURM, PBS, …) or a scheduler address on many. Dask distributes
shots to single-process workers; a shot too large for one machine is domain-decomposed
with Devito MPI instead (``DEVITO_MPI=1 mpirun -n R``, :mod:`timeprobe.mpi`), in MPI jobs
of their own, one per group of shots: a Dask task cannot run an MPI job's ranks, and
``client=`` is refused inside one (the README's "Scaling out" section).
"""
from __future__ import annotations

import logging
import os
import uuid

import numpy as np

from .mpi import is_distributed

__all__ = ["reduce_shots", "local_client", "close_client", "get_client"]

_CLIENTS = {}


def get_client(client):
    """A ``distributed.Client`` from a Client or a scheduler address (clients by address are reused)."""
    from distributed import Client
    if isinstance(client, Client):
        return client
    if isinstance(client, str):
        if not client:
            raise ValueError("empty scheduler address")
        c = _CLIENTS.get(client)
        if c is None or c.status not in ("running", "connecting"):
            try:
                c = Client(client, set_as_default=False, timeout="20s")
            except OSError as e:
                raise ValueError(f"cannot connect to the Dask scheduler at {client!r}: {e}") from None
            _CLIENTS[client] = c
        return c
    raise TypeError(f"client must be a dask.distributed.Client or a scheduler address string, "
                    f"got {type(client).__name__}")


def reduce_shots(task, model, q, d, opts, rngs, client, *, retries=3, progress=False):
    """``(Σ_i f_i, Σ_i g_i)`` of ``task(model, q[i], d[i], opts, rngs[i])``, one Dask task per shot.

    Parameters
    ----------
    task : callable
        ``task(model, q_i, d_i, opts, rng) -> (f_i, g_i)`` (``g_i`` on the padded grid), e.g.
        :func:`timeprobe.objectives.shot_objective`; it must be importable (or picklable) on the
        workers.
    model : Model
    q, d : Data
        Sources and observed data (same number of shots).
    opts : object
        Passed to every task (e.g. :class:`timeprobe.probing.ProbingOptions`).
    rngs : list of Generator
        One per shot (:func:`timeprobe.probing.shot_generators`), travelling with the task.
    client : distributed.Client or str
        The client, or the address of a running scheduler.
    retries : int
        Re-runs of a task that raised (worker loss is handled by the scheduler's
        rescheduling independently of this).
    progress : bool
        tqdm bar over completed shots.

    Returns
    -------
    f : float
        ``Σ_i f_i``, summed in shot order.
    g : ndarray (float64, padded grid)
        ``Σ_i g_i``, accumulated as shots complete.
    """
    from distributed import as_completed

    if is_distributed():
        raise ValueError("client= (Dask over shots) cannot be used inside a Devito MPI job: every rank "
                         "would submit the same shots. Under MPI the shots run one after another, each "
                         "domain-decomposed over the ranks; for shot parallelism start separate MPI jobs "
                         "per group of shots (README, 'Scaling out')")
    if q.nshots != d.nshots:
        raise ValueError(f"q has {q.nshots} shots, d has {d.nshots}")
    if len(rngs) != q.nshots:
        raise ValueError(f"{len(rngs)} generators for {q.nshots} shots")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    client = get_client(client)
    nshots = q.nshots
    tag = uuid.uuid4().hex[:12]
    futures, index = [], {}
    for i in range(nshots):
        fut = client.submit(task, model, q[i], d[i], opts, rngs[i], key=f"timeprobe-shot-{tag}-{i}",
                            pure=True, retries=retries)
        futures.append(fut)
        index[fut.key] = i
    f_shots = np.full(nshots, np.nan)
    done = np.zeros(nshots, dtype=bool)
    g = np.zeros(model.shape_padded, dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=nshots, desc="shots", leave=False)
    ac = as_completed(futures, loop=client.loop)
    futures = None  # as_completed holds them; each is dropped once reduced
    try:
        for fut in ac:
            i = index[fut.key]
            fi, gi = fut.result()
            fut.release()
            del fut
            if done[i]:  # cannot happen with distinct keys; guards the exactly-once sum
                raise RuntimeError(f"shot {i} returned twice")
            if gi.shape != g.shape:
                raise ValueError(f"shot {i}: gradient of shape {gi.shape}, expected {g.shape}")
            g += gi
            f_shots[i] = fi
            done[i] = True
            del gi
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not done.all():
        raise RuntimeError(f"shots {np.flatnonzero(~done).tolist()} did not complete")
    f = 0.0
    for fi in f_shots:  # shot order: the serial value, bit for bit
        f += fi
    return f, g


def local_client(n_workers=2, threads_per_worker=1, omp_threads=None, **kwargs):
    """A ``Client`` on a new ``LocalCluster`` of ``n_workers`` processes.

    Each worker runs one shot at a time (``threads_per_worker=1``) with
    ``omp_threads`` OpenMP threads for Devito (default ``max(1, cpus // n_workers)``,
    so the machine is not oversubscribed). Close with :func:`close_client`
    (client and its cluster).
    """
    from distributed import Client, LocalCluster
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    omp = omp_threads or max(1, ncpu // n_workers)
    env = {"OMP_NUM_THREADS": str(omp), "DEVITO_LANGUAGE": os.environ.get("DEVITO_LANGUAGE", "openmp"),
           "DEVITO_LOGGING": os.environ.get("DEVITO_LOGGING", "WARNING")}
    kwargs.setdefault("dashboard_address", None)
    kwargs.setdefault("silence_logs", logging.ERROR)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                           env=env, **kwargs)
    return Client(cluster, set_as_default=False)


def close_client(client):
    """Close ``client`` and, if it has one, its (local) cluster."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()
