"""Shot-parallel FWI objective on Dask.

The FWI misfit and gradient are sums over shots (:mod:`timeprobe.objectives`)::

    f = Σ_i f_i(m),      g = Σ_i g_i(m),      (f_i, g_i) = shot_objective(m, q_i, d_i, opts, rng_i)

so every shot is one independent Dask task. Shot ``i`` gets the generator
``rng_i = _shot_seeds(seed, nshots)[i]`` — the same one the serial loop uses —
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
per process (:mod:`timeprobe.kernels`), and compiled code is cached on disk.
"""
from __future__ import annotations

import logging
import os
import uuid

import numpy as np

from .objectives import GradientOptions, _shot_seeds, shot_objective

__all__ = ["parallel_objective", "local_client", "close_client", "shot_task", "get_client"]

_CLIENTS = {}


def shot_task(model, q_i, d_i, opts, rng):
    """One shot's ``(f_i, g_i)`` (gradient on the padded grid, float32); the Dask task."""
    return shot_objective(model, q_i, d_i, opts, rng)


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


def parallel_objective(model, q, d, opts, seed=None, client=None, *, retries=3, task=None, progress=False):
    """``(f, g)`` of :func:`timeprobe.fwi_objective`, one Dask task per shot.

    Parameters
    ----------
    model : Model
    q, d : Data
        Sources and observed data (same number of shots).
    opts : GradientOptions
        Exact (``ps=None``) or probed gradient options.
    seed : int, SeedSequence or None
        Spawns the per-shot generators exactly as the serial path does.
    client : distributed.Client or str
        The client, or the address of a running scheduler.
    retries : int
        Re-runs of a task that raised (worker loss is handled by the scheduler's
        rescheduling independently of this).
    task : callable, optional
        Replaces :func:`shot_task` (same signature); for instrumentation and tests.
    progress : bool
        tqdm bar over completed shots.

    Returns
    -------
    f : float
        ``Σ_i f_i``, summed in shot order.
    g : ndarray (float32, model shape)
        ``Σ_i g_i``, accumulated in float64 as shots complete.
    """
    from distributed import as_completed

    if not isinstance(opts, GradientOptions):
        raise TypeError(f"opts must be a GradientOptions, got {type(opts).__name__}")
    if q.nshots != d.nshots:
        raise ValueError(f"q has {q.nshots} shots, d has {d.nshots}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    client = get_client(client)
    fn = shot_task if task is None else task
    nshots = q.nshots
    rngs = _shot_seeds(seed, nshots)
    tag = uuid.uuid4().hex[:12]
    futures, index = [], {}
    for i in range(nshots):
        fut = client.submit(fn, model, q[i], d[i], opts, rngs[i], key=f"timeprobe-shot-{tag}-{i}",
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
    return f, model.unpad(g).astype(np.float32)


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
