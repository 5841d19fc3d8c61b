"""Acquisition geometry, multi-shot data containers, wavelets and time resampling.

* :class:`Geometry` — per-shot point coordinates (sources or receivers; receivers
  may differ from shot to shot) and the time axis ``t0, t0 + dt, …, t`` (ms) on
  which the traces are sampled.
* :class:`Data` — one ``(nt, ntraces)`` array per shot on a :class:`Geometry`.
  It holds source wavelets ``q`` (one trace per source point) and shot records
  ``d`` alike.
* :func:`resample` — band-limited (windowed-sinc) interpolation between time
  axes, written as an explicit sparse linear operator so that its adjoint is
  exact (:func:`resampling_operator`).
* The computational axis (:func:`computational_axis`) and the resampling of traces onto it and
  back (:func:`to_computational`, :func:`from_computational` and their exact adjoints).

Observed data are usually sampled at 2–4 ms, coarser than the computational
``dt`` of the propagators; the propagators resample on the way in and out:
wavelets with ``R_in`` (:func:`to_computational`), receiver traces with ``R_out``
(:func:`from_computational`); adjoint propagators apply ``R_outᵀ`` and ``R_inᵀ``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp

from .utils import check_dtype, working_dtype

__all__ = ["Geometry", "Data", "ricker", "resample", "resampling_operator", "time_axis",
           "computational_axis", "to_computational", "from_computational", "to_computational_adjoint",
           "from_computational_adjoint", "grid_coordinates"]


def time_axis(dt, t, t0=0.0):
    """Sampling times ``t0, t0+dt, …`` up to ``t`` (ms) (the last sample at or just below ``t``)."""
    nt = int(np.floor((t - t0) / dt + 1e-4)) + 1  # tolerate float32 round-off in dt
    return t0 + dt * np.arange(nt)


class Geometry:
    """Per-shot point coordinates and a common time axis.

    Parameters
    ----------
    coordinates : array or list of arrays
        One ``(npoints, dim)`` array of coordinates (m) per shot. A single 2D
        array means one shot; a 1D array of length ``dim`` one point of one shot.
    dt : float
        Sampling interval of the traces (ms).
    t : float
        Recording end time (ms).
    t0 : float
        Time of the first sample (ms).
    """

    def __init__(self, coordinates, dt, t, t0=0.0):
        if isinstance(coordinates, np.ndarray) and coordinates.ndim <= 2:
            coordinates = [coordinates]
        coords = []
        for i, c in enumerate(coordinates):
            c = np.atleast_2d(np.asarray(c, dtype=np.float64))
            if c.ndim != 2 or c.shape[1] not in (2, 3) or c.shape[0] == 0:
                raise ValueError(f"shot {i}: coordinates must be a (npoints, 2 or 3) array, got shape {c.shape}")
            if not np.all(np.isfinite(c)):
                raise ValueError(f"shot {i}: coordinates contain NaN or inf")
            coords.append(c)
        if not coords:
            raise ValueError("a Geometry needs at least one shot")
        dims = {c.shape[1] for c in coords}
        if len(dims) > 1:
            raise ValueError(f"all shots must have the same dimension, got {sorted(dims)}")
        for name, v in (("dt", dt), ("t", t), ("t0", t0)):
            if not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number of ms, got {v!r}")
        if dt <= 0:
            raise ValueError(f"dt must be positive (ms), got {dt}")
        if t < t0:
            raise ValueError(f"recording time t = {t} ms is before t0 = {t0} ms")
        self.coordinates = coords
        self.dt = float(dt)
        self.t = float(t)
        self.t0 = float(t0)

    @property
    def nshots(self):
        return len(self.coordinates)

    @property
    def dim(self):
        return self.coordinates[0].shape[1]

    @property
    def time(self):
        """Sampling times (ms)."""
        return time_axis(self.dt, self.t, self.t0)

    @property
    def nt(self):
        return len(self.time)

    def npoints(self, shot):
        return self.coordinates[shot].shape[0]

    def __len__(self):
        return self.nshots

    def __getitem__(self, idx):
        """Geometry restricted to the shot(s) ``idx`` (int, slice or list of ints)."""
        sel = _select(self.coordinates, idx)
        return Geometry(sel, self.dt, self.t, self.t0)

    def with_time(self, dt=None, t=None, t0=None):
        return Geometry(self.coordinates, self.dt if dt is None else dt,
                        self.t if t is None else t, self.t0 if t0 is None else t0)

    def check_inside(self, model, what="point"):
        """Raise ``ValueError`` if a coordinate lies outside the (unpadded) model."""
        if self.dim != model.dim:
            raise ValueError(f"{what} coordinates are {self.dim}D, the model is {model.dim}D")
        bounds = np.array(model.domain_bounds)
        tol = 1e-6 * np.array(model.spacing)
        axes = ("x", "z") if self.dim == 2 else ("x", "y", "z")
        for s, c in enumerate(self.coordinates):
            out = (c < bounds[:, 0] - tol) | (c > bounds[:, 1] + tol)
            if np.any(out):
                j, a = (int(i) for i in np.argwhere(out)[0])
                point = ", ".join(f"{float(v):g}" for v in c[j])
                raise ValueError(f"shot {s}: {what} {j} at ({point}) m lies outside the model: "
                                 f"{axes[a]} = {float(c[j, a]):g} m is not in the model's {axes[a]} range "
                                 f"[{float(bounds[a, 0]):g}, {float(bounds[a, 1]):g}] m")

    def __eq__(self, other):
        return (isinstance(other, Geometry) and self.nshots == other.nshots
                and np.isclose(self.dt, other.dt) and np.isclose(self.t, other.t)
                and np.isclose(self.t0, other.t0)
                and all(a.shape == b.shape and np.allclose(a, b)
                        for a, b in zip(self.coordinates, other.coordinates)))

    def __repr__(self):
        npts = sorted({c.shape[0] for c in self.coordinates})
        return (f"Geometry(nshots={self.nshots}, npoints={npts}, dt={self.dt} ms, t0={self.t0} ms, "
                f"t={self.t} ms, nt={self.nt})")


def _select(items, idx):
    if isinstance(idx, (int, np.integer)):
        n = len(items)
        if not -n <= idx < n:
            raise IndexError(f"shot {idx} requested, only {n} shot(s) exist")
        return [items[idx]]
    if isinstance(idx, slice):
        return list(items[idx])
    idx = list(idx)
    n = len(items)
    for i in idx:
        if not -n <= int(i) < n:
            raise IndexError(f"shot {i} requested, only {n} shot(s) exist")
    return [items[int(i)] for i in idx]


class Data:
    """Multi-shot traces: one ``(nt, ntraces)`` array per shot of ``geometry``.

    ``dtype`` float32 (default) or float64; the arrays are stored in it (the
    propagators return data in the model's dtype). Supports ``len``, indexing by
    shot (returns a :class:`Data`), ``+``, ``-``, scalar ``*``, :meth:`dot`,
    :meth:`norm` and :meth:`resample`, all keeping the dtype.
    """

    def __init__(self, geometry, arrays=None, dtype=np.float32):
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a timeprobe.Geometry, got {type(geometry).__name__}")
        dtype = check_dtype(dtype)
        if arrays is None:
            arrays = [np.zeros((geometry.nt, geometry.npoints(i)), dtype=dtype)
                      for i in range(geometry.nshots)]
        if isinstance(arrays, np.ndarray):
            if arrays.ndim == 1:
                arrays = arrays[:, None]
            arrays = [arrays] if arrays.ndim == 2 else list(arrays)
        arrays = list(arrays)
        if len(arrays) != geometry.nshots:
            raise ValueError(f"{len(arrays)} data array(s) for a geometry of {geometry.nshots} shot(s)")
        out = []
        for i, a in enumerate(arrays):
            a = np.asarray(a, dtype=dtype)
            if a.ndim == 1:
                a = a[:, None]
            expected = (geometry.nt, geometry.npoints(i))
            if a.shape != expected:
                raise ValueError(f"shot {i}: data array has shape {a.shape}, its geometry expects (nt, ntraces) = "
                                 f"{expected} (dt = {geometry.dt} ms, t0 = {geometry.t0} ms, t = {geometry.t} ms)")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"shot {i}: data contain NaN or inf")
            out.append(a)
        self.geometry = geometry
        self.arrays = out
        self.dtype = dtype

    # ----------------------------------------------------------------- container protocol
    @property
    def nshots(self):
        return self.geometry.nshots

    def __len__(self):
        return self.nshots

    def __getitem__(self, idx):
        return Data(self.geometry[idx], _select(self.arrays, idx), dtype=self.dtype)

    def __iter__(self):
        for i in range(self.nshots):
            yield self[i]

    @property
    def dt(self):
        return self.geometry.dt

    @property
    def time(self):
        return self.geometry.time

    # ----------------------------------------------------------------- algebra
    def _check_same(self, other):
        if not isinstance(other, Data):
            raise TypeError(f"expected Data, got {type(other).__name__}")
        if self.nshots != other.nshots:
            raise ValueError(f"numbers of shots differ: {self.nshots} vs {other.nshots}")
        for i, (a, b) in enumerate(zip(self.arrays, other.arrays)):
            if a.shape != b.shape:
                raise ValueError(f"shot {i}: shapes differ: {a.shape} vs {b.shape}")
        if not np.isclose(self.dt, other.dt):
            raise ValueError(f"sampling intervals differ: {self.dt} vs {other.dt} ms")

    def __add__(self, other):
        self._check_same(other)
        return Data(self.geometry, [a + b for a, b in zip(self.arrays, other.arrays)], dtype=self.dtype)

    def __sub__(self, other):
        self._check_same(other)
        return Data(self.geometry, [a - b for a, b in zip(self.arrays, other.arrays)], dtype=self.dtype)

    def __mul__(self, scalar):
        if not isinstance(scalar, numbers.Real):
            return NotImplemented
        return Data(self.geometry, [scalar * a for a in self.arrays], dtype=self.dtype)

    __rmul__ = __mul__

    def __neg__(self):
        return -1.0 * self

    def dot(self, other):
        """Euclidean inner product over all shots and samples (float64)."""
        self._check_same(other)
        return float(sum(np.dot(a.ravel().astype(np.float64), b.ravel().astype(np.float64))
                         for a, b in zip(self.arrays, other.arrays)))

    def norm(self):
        return float(np.sqrt(self.dot(self)))

    def copy(self):
        return Data(self.geometry, [a.copy() for a in self.arrays], dtype=self.dtype)

    def resample(self, dt, t=None):
        """The same traces resampled to interval ``dt`` (ms) by :func:`resample`."""
        geom = self.geometry.with_time(dt=dt, t=t)
        return Data(geom, [resample(a, self.geometry.time, geom.time) for a in self.arrays], dtype=self.dtype)

    def __repr__(self):
        return f"Data({self.geometry!r})"


# --------------------------------------------------------------------------- wavelets
def ricker(f0_khz, dt_ms, t_ms, t0_ms=0.0, delay_ms=None, dtype=np.float32):
    """Ricker wavelet ``(1 − 2π²f0²τ²)·exp(−π²f0²τ²)``, ``τ = t − delay``.

    ``f0_khz`` peak frequency in kHz (0.01 = 10 Hz); samples at ``t0, t0+dt, …, t`` (ms);
    the peak sits at ``delay_ms`` (default ``1/f0``, as Devito's ``RickerSource``);
    returned in ``dtype`` (float32 or float64).
    """
    if f0_khz <= 0 or dt_ms <= 0 or t_ms < t0_ms:
        raise ValueError(f"ricker needs f0 > 0 (kHz), dt > 0 and t >= t0 (ms); got f0={f0_khz}, "
                         f"dt={dt_ms}, t0={t0_ms}, t={t_ms}")
    delay = 1.0 / f0_khz if delay_ms is None else delay_ms
    tau = time_axis(dt_ms, t_ms, t0_ms) - delay
    a = (np.pi * f0_khz * tau) ** 2
    return ((1 - 2 * a) * np.exp(-a)).astype(check_dtype(dtype))


# --------------------------------------------------------------------------- resampling
_HALF_WIDTH = 16      # kernel half-width in samples of the coarser axis
_KAISER_BETA = 8.0


def resampling_operator(t_in, t_out):
    """Sparse matrix ``R`` (len(t_out) × len(t_in)) of windowed-sinc interpolation.

    ``y(t_j) = Σ_i x_i · (dt_in/dt_c) · sinc((t_j − t_i)/dt_c) · w((t_j − t_i)/(L·dt_c))``
    with ``dt_c = max(dt_in, dt_out)`` (the kernel low-passes to the coarser
    axis' Nyquist frequency, so down-sampling does not alias), ``w`` a Kaiser
    window (β = 8) and ``L = 16`` samples. It is exact for signals band-limited
    well inside the Nyquist band (relative error ≈ 1e-4 below 60 % of Nyquist) and
    linear, so ``R.T`` is its exact adjoint — the propagators rely on that.
    """
    t_in = np.asarray(t_in, dtype=np.float64)
    t_out = np.asarray(t_out, dtype=np.float64)
    dt_in = t_in[1] - t_in[0] if len(t_in) > 1 else 1.0
    dt_out = t_out[1] - t_out[0] if len(t_out) > 1 else dt_in
    if len(t_in) == len(t_out) and np.allclose(t_in, t_out, atol=1e-9 * dt_in):
        return sp.identity(len(t_in), dtype=np.float64, format="csr")
    dt_c = max(dt_in, dt_out)
    half = _HALF_WIDTH * dt_c
    # every output sample's window of input samples at once (one vectorised Kaiser evaluation)
    i0 = np.maximum(0, np.ceil((t_out - half - t_in[0]) / dt_in)).astype(np.int64)
    i1 = np.minimum(len(t_in) - 1, np.floor((t_out + half - t_in[0]) / dt_in)).astype(np.int64)
    width = int(max(0, (i1 - i0).max(initial=-1) + 1))
    i = i0[:, None] + np.arange(width)[None, :]
    keep = i <= i1[:, None]
    rows = np.broadcast_to(np.arange(len(t_out))[:, None], i.shape)[keep]
    cols = i[keep]
    s = (t_out[rows] - t_in[cols]) / dt_c
    w = np.i0(_KAISER_BETA * np.sqrt(np.clip(1 - (s / _HALF_WIDTH) ** 2, 0, None))) / np.i0(_KAISER_BETA)
    vals = dt_in / dt_c * np.sinc(s) * w
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(t_out), len(t_in)))


class BandedRows:
    """A resampling matrix as dense blocks of rows over the input samples they reach.

    A windowed-sinc matrix has about 2·L nonzeros per row in a band that drifts along the
    diagonal. A sparse product with many traces runs at a few GFlop/s; cut into blocks of
    ``rows`` rows, each a dense ``rows × (rows·dt_out/dt_in + 2L)`` matrix, it is a few BLAS
    products: about twice the arithmetic, in less time (a 401-trace 4 s record onto the
    computational axis: 3.2 ms instead of 5.1 ms on a 2-core VM, ``scripts/overheads.py``; more
    where the sparse product's float64 temporaries are fresh memory). ``R @ X`` is computed in
    float64 whatever ``X``'s precision.
    """

    def __init__(self, R, rows=32):
        R = sp.csr_matrix(R)
        self.shape = R.shape
        spans = []
        for r0 in range(0, R.shape[0], rows):
            r1 = min(R.shape[0], r0 + rows)
            cols = R.indices[R.indptr[r0]:R.indptr[r1]]
            if cols.size:
                spans.append((r0, r1, int(cols.min()), int(cols.max()) + 1))
        # every block a view of one buffer: one allocation, not hundreds of small ones that
        # would stay scattered over the heap
        store = np.zeros(sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in spans))
        self.blocks, at = [], 0
        for r0, r1, c0, c1 in spans:
            D = store[at:at + (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            R[r0:r1, c0:c1].toarray(out=D)
            self.blocks.append((r0, r1, c0, c1, D))
            at += D.size
        # the work buffers' sizes: the widest block's columns, the tallest block's rows
        self._width = max((c1 - c0 for _, _, c0, c1 in spans), default=0)
        self._rows = max((r1 - r0 for r0, r1, _, _ in spans), default=0)

    def apply(self, x, out, columns=256):
        """``out[:] = R @ x`` (``x`` (n_in, k), ``out`` (n_out, k), any float dtypes), ``columns``
        traces at a time through two float64 work buffers reused by every block (no
        allocation per block)."""
        if x.ndim != 2 or x.shape[0] != self.shape[1]:
            raise ValueError(f"traces of shape {x.shape}: the resampling takes {self.shape[1]} samples per trace")
        if out.shape != (self.shape[0], x.shape[1]):
            raise ValueError(f"output of shape {out.shape}: the resampling of {x.shape[1]} traces gives "
                             f"{(self.shape[0], x.shape[1])}")
        k = x.shape[1]
        xw = np.empty((self._width, min(k, columns)))
        yw = np.empty((self._rows, min(k, columns)))
        for j0 in range(0, k, columns):
            j1 = min(k, j0 + columns)
            covered = 0
            for r0, r1, c0, c1, D in self.blocks:
                out[covered:r0, j0:j1] = 0
                xb = xw[:c1 - c0, :j1 - j0]
                xb[...] = x[c0:c1, j0:j1]
                out[r0:r1, j0:j1] = np.matmul(D, xb, out=yw[:r1 - r0, :j1 - j0])
                covered = r1
            out[covered:, j0:j1] = 0
        return out


_AXES_CACHE = {}


def resample(traces, t_in, t_out):
    """Resample ``traces`` (nt_in, ntraces) from times ``t_in`` to ``t_out`` (ms); see :func:`resampling_operator`
    (built once per pair of axes: every probe design of a survey resamples onto the same one).

    Computed in float64; returned in float64 for float64 traces, else float32."""
    traces = np.asarray(traces)
    squeeze = traces.ndim == 1
    x = traces[:, None] if squeeze else traces
    if x.shape[0] != len(t_in):
        raise ValueError(f"traces have {x.shape[0]} samples, the input time axis {len(t_in)}")
    key = (np.asarray(t_in, dtype=np.float64).tobytes(), np.asarray(t_out, dtype=np.float64).tobytes())
    R = _AXES_CACHE.get(key)
    if R is None:
        if len(_AXES_CACHE) > 16:
            _AXES_CACHE.clear()
        R = _AXES_CACHE[key] = BandedRows(resampling_operator(t_in, t_out))
    y = R.apply(x, np.empty((R.shape[0], x.shape[1]), dtype=working_dtype(traces)))
    return y[:, 0] if squeeze else y


# --------------------------------------------------------------------------- computational axis
def computational_axis(model, *geometries):
    """(dt, nt) of the computational axis ``t_n = n·dt``, ``n = 0 … nt−1``, covering the longest
    recording of ``geometries`` (``dt`` the model's time step, ms)."""
    t_end = max(g.t for g in geometries)
    dt = model.dt
    nt = int(math.ceil(t_end / dt - 1e-4)) + 1  # tolerate float32 round-off in dt
    return dt, nt


_R_CACHE = {}


def _resampler(t0_in, dt_in, nt_in, t0_out, dt_out, nt_out, transpose=False):
    """The (cached) resampling matrix between two uniform axes, or its transpose (:class:`BandedRows`)."""
    key = tuple(round(v, 9) for v in (t0_in, dt_in, nt_in, t0_out, dt_out, nt_out)) + (transpose,)
    R = _R_CACHE.get(key)
    if R is None:
        if len(_R_CACHE) > 64:
            _R_CACHE.clear()
        R = resampling_operator(t0_in + dt_in * np.arange(nt_in), t0_out + dt_out * np.arange(nt_out))
        R = _R_CACHE[key] = BandedRows(R.T if transpose else R)
    return R


def _apply(R, traces, out=None, dtype=np.float32):
    """``R @ traces`` in float64 arithmetic, stored as ``dtype`` (into ``out`` if given); the
    float64 temporaries are one block of rows (:class:`BandedRows`), never a whole record."""
    traces = np.asarray(traces)
    if out is None:
        out = np.empty((R.shape[0],) + traces.shape[1:], dtype=dtype)
    if traces.ndim == 1:
        R.apply(traces[:, None], out[:, None])
        return out
    return R.apply(traces, out)


def to_computational(traces, geometry, dt, nt, out=None, dtype=np.float32):
    """Traces on ``geometry``'s axis → computational axis (``R_in``)."""
    return _apply(_resampler(geometry.t0, geometry.dt, geometry.nt, 0.0, dt, nt), traces, out, dtype)


def from_computational(traces, geometry, dt, nt, out=None, dtype=np.float32):
    """Computational-axis traces → ``geometry``'s axis (``R_out``)."""
    return _apply(_resampler(0.0, dt, nt, geometry.t0, geometry.dt, geometry.nt), traces, out, dtype)


def from_computational_adjoint(traces, geometry, dt, nt, out=None, dtype=np.float32):
    """Exact adjoint ``R_outᵀ`` of :func:`from_computational`."""
    return _apply(_resampler(0.0, dt, nt, geometry.t0, geometry.dt, geometry.nt, transpose=True),
                  traces, out, dtype)


def to_computational_adjoint(traces, geometry, dt, nt, out=None, dtype=np.float32):
    """Exact adjoint ``R_inᵀ`` of :func:`to_computational`."""
    return _apply(_resampler(geometry.t0, geometry.dt, geometry.nt, 0.0, dt, nt, transpose=True),
                  traces, out, dtype)


def grid_coordinates(model, coords):
    """Physical coordinates (m) → coordinates on the padded Devito grid (origin 0)."""
    return np.asarray(coords) - np.asarray(model.origin) + model.nbl * np.asarray(model.spacing)
