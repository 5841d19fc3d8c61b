"""What the gradient benchmarks share: the shots, process memory, one process per measurement.

Used by ``benchmark_gradients.py`` (timeprobe's strategies) and ``peers.py`` (Deepwave on the
same shots), so that both measure the same shots the same way.

Shots (:func:`shot`; observed data modelled once in the true model and cached on disk by
:func:`cached_record`; gradients at the initial model):

* ``overthrust2d``  one shot of ``overthrust_2D.h5`` (801×207 at 25 m, nbl 40 → 881×287, 3 s,
  source mid-model at 50 m depth, receivers every grid column at 12.5 m, 8 Hz Ricker, data
  at 2 ms; each model at its own critical dt);
* ``overthrust_small``  the shot of BENCHMARKS §3 and ``gradient_accuracy.py``:
  ``overthrust_small.h5`` (401×121 at 25 m, nbl 40), source at the middle column at 12.5 m
  depth, receivers every column at 12.5 m, 3 s, 10 Hz Ricker, data at 4 ms, both models at
  the smaller of their critical dt;
* ``layered3d``  three flat layers, 61×61×41 at 20 m, nbl 20 (101×101×81 padded), 1 s, 10 Hz,
  source at the centre, 11 receiver lines — sized for a 2-core / 24 GB machine (nt = 387, full
  storage ≈ 2 GB); ``layered3d_{nx}_{ny}_{nz}`` the same at another size with nbl 10;
* ``layered2d_{nx}_{nz}``  three flat layers at 25 m, nbl 40, 10 Hz.

A case may carry its recording time in ms: ``layered2d_61_41:300``, ``overthrust_small:8000``.

Measurements run one at a time, each in a fresh process forked from a fork server that imported
devito and timeprobe and ran nothing (:func:`in_subprocess`); glibc's mmap threshold is fixed
at 128 KiB there, so that resident memory follows the live arrays; :func:`reset_peak` frees heap
pages and resets the peak-RSS mark between a baseline and a measurement in the same process.
"""
from __future__ import annotations

import ctypes
import datetime
import gc
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("DEVITO_LANGUAGE", "openmp")
os.environ.setdefault("DEVITO_LOGGING", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("TIMEPROBE_DATA", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("TIMEPROBE_BENCH_CACHE", tempfile.gettempdir())) / "timeprobe_bench"

import timeprobe as tp  # noqa: E402
from timeprobe.io import peak_memory_mb, reset_peak_memory  # noqa: E402

MIB = 2.0 ** 20
FLOAT = 4  # bytes (float32 fields)
DEFAULT_T = {"overthrust2d": 3000.0, "overthrust_small": 3000.0, "layered3d": 1000.0}


# --------------------------------------------------------------------------- process memory
def _status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def vmhwm_mb():
    """Peak resident memory of this process (MiB)."""
    return peak_memory_mb()


def rss_mb():
    return _status_mb("VmRSS")


def reset_peak():
    """Free heap pages back to the OS, then reset VmHWM to the current RSS (Linux ≥ 4.0).

    Returns False (peak not reset) where ``/proc/self/clear_refs`` is not writable.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return reset_peak_memory()


# --------------------------------------------------------------------------- shots
@dataclass
class Shot:
    """One benchmark shot: true and initial model, source wavelet, receiver geometry.

    ``f0`` is the Ricker peak frequency (kHz); ``water_rows`` the number of top rows where the
    true model equals its surface value everywhere (scores are taken below them).
    """
    case: str
    T: float
    model: tp.Model
    model0: tp.Model
    q: tp.Data
    rec: tp.Geometry
    f0: float
    nbl_override: int | None = None

    @property
    def key(self):
        """``<case>_<T>`` (``_nbl<n>`` when the absorbing width was overridden): names its caches."""
        return f"{self.case}_{self.T:g}" + (f"_nbl{self.nbl_override}" if self.nbl_override is not None else "")

    @property
    def water_rows(self):
        vp = self.model.vp
        same = np.all(np.isclose(vp, vp[..., :1], rtol=0, atol=1e-4), axis=tuple(range(vp.ndim - 1)))
        return int(np.argmin(same)) if not same.all() else 0


def _overthrust_models(name="overthrust_2D.h5"):
    import h5py
    with h5py.File(SHARED / "models" / name, "r") as f:
        n = tuple(int(v) for v in f["n"][()])
        d = tuple(float(v) for v in f["d"][()])
        m, m0 = (np.asarray(f[k][()]) for k in ("m", "m0"))
    if m.shape == n[::-1]:
        m, m0 = m.T, m0.T
    mk = lambda a: tp.Model(m=a.astype(np.float32), spacing=d, nbl=40, space_order=8)  # noqa: E731
    return mk(m), mk(m0)


def _layered3d(n=(61, 61, 41), h=20.0, nbl=20):
    vp = np.full(n, 1.5, np.float32)
    vp[..., n[2] // 3:] = 2.2
    vp[..., 2 * n[2] // 3:] = 3.0
    model = tp.Model(vp=vp, spacing=(h,) * 3, nbl=nbl, space_order=8)
    return model, model.smooth(3 * h)


def _layered2d(nx, nz, h=25.0):
    vp = np.full((nx, nz), 1.5, np.float32)
    vp[:, nz // 3:] = 2.5
    vp[:, 2 * nz // 3:] = 3.5
    model = tp.Model(vp=vp, spacing=(h, h), nbl=40, space_order=8)
    return model, model.smooth(3 * h)


def parse_case(spec):
    """``"name"`` or ``"name:T_ms"`` → (name, T)."""
    name, _, t = spec.partition(":")
    return name, (float(t) if t else default_t(name))


def default_t(case):
    return DEFAULT_T.get(case, DEFAULT_T.get(case.split("_")[0], 1500.0))


def shot(case, t=None, nbl=None):
    """The :class:`Shot` of ``case`` recorded for ``t`` ms (see the module docstring); ``nbl``
    overrides the absorbing width of both models (same time step)."""
    t = t or default_t(case)
    if case == "overthrust2d":
        model, model0 = _overthrust_models()
        dtd, f0 = 2.0, 0.008
        (xa, xb), (za, zb) = model.domain_bounds
        src = np.array([[0.5 * (xa + xb), 50.0]])
        nx = model.shape[0]
        rec = np.stack([xa + model.spacing[0] * np.arange(nx), np.full(nx, 12.5)], 1)
    elif case == "overthrust_small":
        model, model0 = _overthrust_models("overthrust_small.h5")
        model.dt = model0.dt = min(model.critical_dt, model0.critical_dt)
        dtd, f0 = 4.0, 0.010
        nx, h = model.shape[0], model.spacing[0]
        src = np.array([[model.origin[0] + (nx // 2) * h, 12.5]])
        rec = np.stack([model.origin[0] + h * np.arange(nx), np.full(nx, 12.5)], 1)
    elif case.startswith("layered3d"):
        parts = case.split("_")
        model, model0 = (_layered3d() if len(parts) == 1 else
                         _layered3d(tuple(int(v) for v in parts[1:4]), nbl=10))
        dtd, f0 = 2.0, 0.010
        b = model.domain_bounds
        cx, cy = 0.5 * (b[0][0] + b[0][1]), 0.5 * (b[1][0] + b[1][1])
        src = np.array([[cx, cy, 40.0]])
        xs = np.linspace(b[0][0], b[0][1], model.shape[0])
        ys = np.linspace(b[1][0], b[1][1], 11)
        X, Y = np.meshgrid(xs, ys, indexing="ij")
        rec = np.stack([X.ravel(), Y.ravel(), np.full(X.size, 20.0)], 1)
    elif case.startswith("layered2d"):
        _, nx, nz = case.split("_")
        model, model0 = _layered2d(int(nx), int(nz))
        dtd, f0 = 2.0, 0.010
        (xa, xb), _ = model.domain_bounds
        src = np.array([[0.5 * (xa + xb), 50.0]])
        rec = np.stack([np.linspace(xa, xb, int(nx)), np.full(int(nx), 12.5)], 1)
    else:
        raise ValueError(f"unknown case {case!r}")
    if nbl is not None:
        model, model0 = (tp.Model(m=a.m, spacing=a.spacing, origin=a.origin, nbl=nbl, space_order=a.space_order,
                                  dt=a.dt) for a in (model, model0))
    qg = tp.Geometry([src], dt=dtd, t=t)
    q = tp.Data(qg, [tp.ricker(f0, dtd, t)])
    return Shot(case=case, T=t, model=model, model0=model0, q=q, rec=tp.Geometry([rec], dt=dtd, t=t), f0=f0,
                nbl_override=nbl)


def cache_path(tag, key):
    """Where :func:`cached_record` keeps the record ``<tag><key>``."""
    return CACHE / f"{tag}{key}.npy"


def cached_record(tag, key, shape, make):
    """A shot record cached on disk (``CACHE/<tag><key>.npy``, ``key`` a :attr:`Shot.key`),
    computed by ``make()`` once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    fn = cache_path(tag, key)
    arr = np.load(fn) if fn.exists() else None
    if arr is not None and arr.shape == tuple(shape):
        return arr
    arr = np.asarray(make(), dtype=np.float32)
    tmp = fn.with_suffix(f".{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, fn)
    return arr


def setup(case, t=None, nbl=None):
    """(model0, q, d) of ``case`` recorded for ``t`` ms; observed data (timeprobe, true model)
    cached on disk (modelled once)."""
    s = shot(case, t, nbl)
    shape = (s.rec.nt, s.rec.coordinates[0].shape[0])
    arr = cached_record("", s.key, shape, lambda: tp.forward(s.model, s.q, s.rec).arrays[0])
    return s.model0, s.q, tp.Data(s.rec, [arr])


def case_info(model0, q, d):
    """Sizes the memory formulas need: N (padded grid), N_h (with the space-order halo), N_r (the
    probe region of the default gradient, sum_padding=True: the padded grid, absorbing layers
    included), N_thin (the probe region with sum_padding=False: physical domain + space_order/2),
    nt, dt."""
    from timeprobe.geometry import computational_axis
    from timeprobe.probe_buffers import region_shape
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    so = model0.space_order
    return dict(shape=list(model0.shape), shape_padded=list(model0.shape_padded), dt=float(dt), nt=int(nt),
                N=int(np.prod(model0.shape_padded)),
                N_h=int(np.prod([s + 2 * so for s in model0.shape_padded])), space_order=so,
                N_r=int(np.prod(model0.shape_padded)),
                N_thin=int(np.prod(region_shape(model0))),
                nrec=int(d.geometry.coordinates[0].shape[0]))


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- one process per measurement
def _child(worker, payload, conn):
    try:
        res = dict(ok=worker(payload))
    except BaseException:  # noqa: BLE001 — reported to the parent with its traceback
        import traceback
        res = dict(error=traceback.format_exc())
    conn.send(res)
    conn.close()


_CTX = None
PRELOAD = ["numpy", "scipy.sparse", "scipy.ndimage", "sympy", "h5py", "devito", "devito.checkpointing",
           "pyrevolve", "timeprobe", "timeprobe.strategies", "timeprobe.objectives", "timeprobe.probing"]


def _context():
    """A fork server that imported devito and timeprobe but ran nothing: every worker is a fresh
    process forked from it, without the ≈ 1 s of imports of a new interpreter. (Modules, not
    ``"__main__"``: CPython ≤ 3.12 never preloads the main script, ``main_path`` is not passed.)"""
    global _CTX
    if _CTX is None:
        import multiprocessing as mp
        # A fixed glibc mmap threshold in the workers (read when the fork server starts): every
        # array above 128 KiB is its own mapping, returned to the OS when freed, so resident
        # memory follows the live arrays instead of the heap's high-water mark.
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def in_subprocess(worker, payload):
    """``worker(payload)`` in its own process (a module-level function); its result (a dict)."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(worker, payload, send), daemon=True)
    proc.start()
    send.close()
    try:
        res = recv.recv()
    except EOFError:
        res = dict(error="worker died without a result")
    proc.join()
    if "error" in res or proc.exitcode != 0:
        raise RuntimeError(f"worker {payload} failed (exit code {proc.exitcode}):\n{res.get('error', '')[-3000:]}")
    return res["ok"]


def meta(script, argv=None, **versions):
    """Date, machine, versions and the command line of ``script`` (its path)."""
    import devito
    argv = sys.argv[1:] if argv is None else argv
    return dict(date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), host=platform.node(),
                cpus=os.cpu_count(), python=platform.python_version(), devito=devito.__version__,
                omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                devito_language=os.environ.get("DEVITO_LANGUAGE"), **versions,
                command=" ".join(["python", os.path.relpath(script, Path.cwd())] + list(argv)))
