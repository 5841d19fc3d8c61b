"""MPI helpers: ranks, the distributed test, global arrays on every rank (no numerics).

timeprobe runs a shot domain-decomposed when Devito runs with MPI
(``DEVITO_MPI=1 mpirun -n R python script.py``): Devito splits the grid, and with it every
wavefield, model, gradient and probe field (:mod:`timeprobe.probe_buffers`), over the R ranks;
sources and receivers are shared out by Devito. Every rank runs the same script on the same
inputs (model, geometry, observed data, seeds) and every public function returns the *global*
arrays on every rank. This module holds the plumbing that makes that so:

* :func:`devito_mpi`, :func:`comm`, :func:`rank`, :func:`size`, :func:`is_distributed` — whether
  and how the run is decomposed (``is_distributed``: Devito MPI on and more than one rank);
* :func:`global_array` — a Devito function's global data on every rank (gathered and broadcast);
* :func:`broadcast`, :func:`shared_entropy`, :func:`check_same` — inputs identical on every rank
  (probe matrices, the entropy of ``seed=None``, observed data);
* :func:`configure_compiler` — make Devito's JIT compile with the ``mpich`` wheel's ``mpicc``
  (the ``mpi`` extra) when that wheel is the MPI this process runs with, or no ``mpicc`` is on
  ``PATH``;
* :func:`default_threads` — OpenMP threads shared out between the ranks of one machine;
* :func:`launcher`, :func:`peak_memory_per_rank` — for tests and benchmarks.

Without ``DEVITO_MPI`` every helper is a no-op (``global_array`` is ``np.asarray(f.data)``), and
nothing here imports ``mpi4py`` until Devito's MPI mode is on.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig

import numpy as np

__all__ = ["devito_mpi", "comm", "rank", "size", "is_root", "is_distributed", "global_array", "broadcast",
           "allgather", "shared_entropy", "check_same", "configure_compiler", "wheel_bin_dir",
           "loaded_mpi_library", "mpi_requested", "local_ranks", "default_threads", "launcher",
           "peak_memory_per_rank"]

_COMPILER_WRAPPER = "mpicc"


# --------------------------------------------------------------------------- who am I
def devito_mpi():
    """Whether Devito runs with MPI (``DEVITO_MPI`` set, or ``configuration['mpi']`` switched on).

    False when Devito is not imported: nothing can be distributed then."""
    devito = sys.modules.get("devito")
    if devito is None:
        return False
    return bool(devito.configuration["mpi"])


def comm():
    """``MPI.COMM_WORLD`` (initialised as Devito does) under Devito MPI, else None."""
    if not devito_mpi():
        return None
    from devito.mpi import MPI, devito_mpi_init
    devito_mpi_init()  # no-op once MPI is up (Devito initialises it at the first Grid)
    return MPI.COMM_WORLD


def rank():
    """This process's rank (0 without MPI)."""
    c = comm()
    return 0 if c is None else c.Get_rank()


def size():
    """The number of ranks (1 without MPI)."""
    c = comm()
    return 1 if c is None else c.Get_size()


def is_root():
    """Rank 0 (and every serial process): the one that prints and writes files."""
    return rank() == 0


def is_distributed(grid=None):
    """Whether fields are split over several ranks: Devito MPI with more than one rank, or, given a
    Devito ``grid``, whether that grid is decomposed."""
    if grid is not None:
        distributor = getattr(grid, "distributor", None)
        return bool(distributor is not None and distributor.nprocs > 1)
    return devito_mpi() and size() > 1


# --------------------------------------------------------------------------- global arrays
def global_array(function):
    """The global data of a Devito function (grid, probe or sparse) on every rank, as a new
    numpy array when distributed; serially ``np.asarray(function.data)`` (a view, no copy).

    Distributed: gathered onto rank 0 (``data_gather``, collective) and broadcast; the whole
    array then lives on every rank, so use it for results (gradients, images, traces), never
    for the probe fields themselves."""
    if not is_distributed(getattr(function, "grid", None)):
        return np.asarray(function.data)
    out = function.data_gather(rank=0)
    c = comm()
    shape, dtype = c.bcast(None if out is None else (out.shape, out.dtype.str), root=0)
    if out is None:
        out = np.empty(shape, dtype=np.dtype(dtype))
    c.Bcast(np.ascontiguousarray(out) if c.Get_rank() == 0 else out, root=0)
    return out


def broadcast(array, root=0):
    """``array`` as ``root`` holds it, on every rank (a no-op serially)."""
    c = comm()
    if c is None or c.Get_size() == 1:
        return array
    return c.bcast(array, root=root)


def allgather(obj):
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` serially)."""
    c = comm()
    return [obj] if c is None else c.allgather(obj)


def shared_entropy(seed):
    """``seed`` unchanged, except ``None`` under MPI: rank 0's fresh entropy, on every rank
    (each rank drawing its own would give each rank different probes)."""
    if seed is not None or not is_distributed():
        return seed
    entropy = np.random.SeedSequence().entropy if rank() == 0 else None
    return broadcast(entropy)


def check_same(array, name):
    """Raise ``ValueError`` unless ``array`` is bitwise the same on every rank (collective).

    Under MPI every rank must hold the full inputs (observed data, wavelets, model): a rank
    reading a different file would otherwise give silently wrong results."""
    if not is_distributed():
        return
    a = np.ascontiguousarray(array)
    digest = hashlib.sha1(a.view(np.uint8).reshape(-1) if a.size else b"").hexdigest() + str(a.shape)
    digests = allgather(digest)
    if len(set(digests)) != 1:
        bad = [i for i, d in enumerate(digests) if d != digests[0]]
        raise ValueError(f"{name} differs between MPI ranks (rank(s) {bad} differ from rank 0): every rank "
                         f"must pass the same inputs (load the same files, use the same seed)")


# --------------------------------------------------------------------------- installation
def wheel_bin_dir():
    """The folder holding the ``mpich`` wheel's ``mpicc``/``mpirun`` (the ``mpi`` extra), or None."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        dist = distribution("mpich")
    except (ImportError, PackageNotFoundError):
        dist = None
    if dist is not None:
        for f in dist.files or ():
            if f.name == _COMPILER_WRAPPER and f.parent.name == "bin":
                path = os.path.dirname(os.path.abspath(str(dist.locate_file(f))))
                if os.access(os.path.join(path, _COMPILER_WRAPPER), os.X_OK):
                    return path
    # an environment's scripts folder (a venv used without activating it)
    for path in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if path and os.access(os.path.join(path, _COMPILER_WRAPPER), os.X_OK):
            return path
    return None


def loaded_mpi_library():
    """The MPI library (``libmpi*``) this process has loaded (Linux ``/proc/self/maps``), or None."""
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 6 and os.path.basename(fields[-1]).startswith("libmpi"):
                    return fields[-1]
    except OSError:
        pass
    return None


def configure_compiler():
    """Under Devito MPI, make ``mpicc`` on ``PATH`` the ``mpich`` wheel's when that is the MPI
    this process runs with (or when no ``mpicc`` is on ``PATH``).

    Devito compiles MPI operators with ``mpicc`` looked up on ``PATH``. A virtual environment used
    without activating it (``.venv/bin/mpirun -n 2 .venv/bin/python …``) has the wheel's wrapper,
    but not on ``PATH``; and a system ``mpicc`` next to the wheel's runtime (which mpi4py loaded)
    would link a second, different MPI library into the process. An ``mpicc`` on ``PATH`` is left
    alone otherwise (a system MPI that mpi4py was built against). Returns the folder put first on
    ``PATH``, or None. Called by every new :class:`~timeprobe.workspace.Workspace`.
    """
    if not devito_mpi():
        return None
    folder = wheel_bin_dir()
    current = shutil.which(_COMPILER_WRAPPER)
    if folder is None:
        if current is None:
            raise RuntimeError("Devito runs with MPI (DEVITO_MPI is set) but no MPI compiler wrapper 'mpicc' "
                               "was found on PATH or in this Python environment: install the mpi extra "
                               "(pip install -e '.[mpi]', which brings the mpich wheel) or a system MPI")
        return None
    wheel_mpicc = os.path.join(folder, _COMPILER_WRAPPER)
    if current is not None and os.path.samefile(current, wheel_mpicc):
        return None
    library = loaded_mpi_library()
    wheel_lib = os.path.realpath(os.path.join(os.path.dirname(folder), "lib")) + os.sep
    runs_wheel = library is not None and os.path.realpath(library).startswith(wheel_lib)
    if current is not None and not runs_wheel:
        return None
    os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    return folder


def mpi_requested():
    """Whether the environment asks Devito for MPI (``DEVITO_MPI`` set and not 0), before any
    Devito import."""
    return os.environ.get("DEVITO_MPI", "0").strip().lower() not in ("", "0", "false", "off", "no")


def local_ranks():
    """Ranks of this MPI job on this machine, from the launcher's environment (MPICH/Hydra,
    Open MPI, Slurm), or None outside an MPI launch."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def default_threads():
    """Under ``DEVITO_MPI`` with ``OMP_NUM_THREADS`` unset: share this machine's cores out
    between its ranks (``OMP_NUM_THREADS = cores // local ranks``), instead of every rank
    starting one OpenMP thread per core. Returns the value set, or None (nothing changed).
    Called when :mod:`timeprobe` is imported, before Devito."""
    if not mpi_requested() or "OMP_NUM_THREADS" in os.environ:
        return None
    nlocal = local_ranks()
    if nlocal is None:
        return None
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, ncpu // nlocal)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def launcher():
    """The ``mpirun``/``mpiexec`` of this environment (the ``mpich`` wheel's first), or None."""
    for folder in (wheel_bin_dir(), None):
        for name in ("mpirun", "mpiexec"):
            path = shutil.which(name, path=folder) if folder else shutil.which(name)
            if path:
                return path
    return None


def peak_memory_per_rank():
    """Every rank's peak resident memory (MiB, :func:`timeprobe.io.peak_memory_mb`: ``VmHWM``),
    as a list on every rank (collective)."""
    from .io import peak_memory_mb
    return allgather(peak_memory_mb())
