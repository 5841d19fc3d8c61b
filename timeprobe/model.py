"""Physical model: squared slowness on a Devito grid with absorbing layers.

Units used throughout timeprobe (stated once, here):

* distances and coordinates in **m**, times in **ms**, frequencies in **kHz**,
* velocity ``vp`` in **km/s**, squared slowness ``m = 1 / vp**2`` in **s²/km²**.

With these units the wave equation ``m ü − Δu + η u̇ = q`` is dimensionally
consistent (m/ms = km/s), which is the convention of Devito's seismic examples
and of JUDI.

Array layout: the physical (unpadded) model has shape ``(nx, nz)`` in 2D and
``(nx, ny, nz)`` in 3D, depth last. Devito fields carry ``nbl`` absorbing points
on every side (including the top: timeprobe models no free surface).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .utils import check_dtype, finite_difference_weights

__all__ = ["Model", "smooth_model", "damping_profile"]


def damping_profile(shape_padded, nbl, spacing, dtype=np.float32):
    """Damping η(x) of the absorbing layers (0 inside, growing outwards).

    Same profile as Devito's seismic examples (``initialize_damp``):
    η = Σ_d c·(p − sin(2πp)/(2π)) / h_d with p the normalised depth into the layer
    (2/nbl at the inner edge, 1 + 1/nbl at the outer edge) and c = 1.5·ln(1000)/nbl, so
    that a wave crossing the layer twice is attenuated by about 60 dB. η is exactly 0
    inside the physical domain (the source injection relies on it, see
    :mod:`timeprobe.operators`). Returned in ``dtype`` (the model's).
    """
    damp = np.zeros(shape_padded, dtype=dtype)
    if nbl == 0:
        return damp
    coeff = 1.5 * np.log(1.0 / 0.001) / nbl
    for axis, (n, h) in enumerate(zip(shape_padded, spacing)):
        i = np.arange(n)
        pos = np.zeros(n)
        left = i < nbl
        right = i >= n - nbl
        pos[left] = np.abs((nbl - i[left] + 1) / float(nbl))
        pos[right] = np.abs((nbl - (n - 1 - i[right]) + 1) / float(nbl))
        val = np.where(left | right, coeff * (pos - np.sin(2 * np.pi * pos) / (2 * np.pi)), 0.0) / h
        shape = [1] * len(shape_padded)
        shape[axis] = n
        damp += val.reshape(shape).astype(dtype)
    return damp


def _check_finite_positive(name, a):
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf values")
    if np.any(a <= 0):
        raise ValueError(f"{name} must be strictly positive everywhere (min = {a.min():g})")


class Model:
    """Acoustic model (squared slowness) on a regular grid with absorbing layers.

    Parameters
    ----------
    vp : array, optional
        P-wave velocity in km/s, shape (nx, nz) or (nx, ny, nz).
    m : array, optional
        Squared slowness in s²/km² (``m = 1/vp²``). Exactly one of ``vp`` and ``m``.
    spacing : tuple of float
        Grid spacing in m, one per axis.
    origin : tuple of float, optional
        Physical coordinates (m) of the first grid point; zeros by default.
    nbl : int
        Number of absorbing-boundary points added on every side.
    space_order : int
        Spatial order of the finite-difference Laplacian (even, ≥ 2).
    dt : float, optional
        Computational time step in ms; defaults to :attr:`critical_dt`. A value
        above the stability limit raises ``ValueError``.
    dtype : np.float32 (default) or np.float64
        Precision of ``m``, of the Devito grid and of everything computed on it:
        wavefields, the traces the propagators return (:class:`~timeprobe.Data` of
        this dtype), probes and gradients.

    Notes
    -----
    The leapfrog scheme ``m (u⁺ − 2u + u⁻)/dt² = Δ_h u`` is stable when
    ``dt ≤ 2 / (v_max · sqrt(λ_max))`` with ``λ_max = Σ_d Σ_k |c_k| / h_d²`` the
    largest eigenvalue of the discrete ``−Δ_h`` (``c_k`` the second-derivative
    weights of order ``space_order``). :attr:`critical_dt` takes ``cfl`` (0.85
    by default) times that limit, rounded down to 1e-3 ms.
    """

    def __init__(self, vp=None, m=None, spacing=None, origin=None, nbl=40,
                 space_order=8, dt=None, cfl=0.85, dtype=np.float32):
        if (vp is None) == (m is None):
            raise ValueError("give exactly one of vp (km/s) or m (s²/km²)")
        arr = np.asarray(vp if vp is not None else m, dtype=np.float64)
        if arr.ndim not in (2, 3):
            raise ValueError(f"model arrays must be 2D (nx, nz) or 3D (nx, ny, nz), got shape {arr.shape}")
        _check_finite_positive("vp" if vp is not None else "m", arr)
        if spacing is None:
            raise ValueError("spacing (m) is required: one number (the same on every axis) or one per axis")
        if np.ndim(spacing) == 0:
            spacing = (spacing,) * arr.ndim
        spacing = tuple(float(s) for s in np.ravel(spacing))
        if len(spacing) != arr.ndim:
            raise ValueError(f"spacing must hold one value per axis of the {arr.ndim}D model (or be a "
                             f"single number), got {len(spacing)} value(s): {spacing}")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be positive and finite (m), got {spacing}")
        origin = (0.0,) * arr.ndim if origin is None else tuple(float(o) for o in origin)
        if len(origin) != arr.ndim:
            raise ValueError(f"origin must hold {arr.ndim} values, got {origin}")
        if int(nbl) != nbl or nbl < 0:
            raise ValueError(f"nbl must be a non-negative integer, got {nbl}")
        if space_order < 2 or space_order % 2:
            raise ValueError(f"space_order must be an even integer >= 2, got {space_order}")
        if not 0 < cfl <= 1:
            raise ValueError(f"cfl must lie in (0, 1], got {cfl}")
        self.dtype = check_dtype(dtype)
        self._m = (1.0 / arr**2 if vp is not None else arr).astype(self.dtype)
        self.spacing = spacing
        self.origin = origin
        self.nbl = int(nbl)
        self.space_order = int(space_order)
        self.cfl = float(cfl)
        self._dt = None
        if dt is not None:
            self.dt = dt

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_h5(cls, path, key="m", **kwargs):
        """Read a model in the SLIM/JUDI HDF5 layout.

        Datasets ``n`` (nx, nz), ``d`` (spacing, m), ``o`` (origin, m) and the
        squared-slowness arrays (``m`` true, ``m0`` initial) stored (nz, nx) as
        h5py reads them (Julia writes column-major); they are transposed to
        (nx, nz). ``key`` selects the array; other keyword arguments go to
        :class:`Model`.
        """
        import h5py
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise FileNotFoundError(f"model file not found: {path}") from None
        except OSError as e:
            raise ValueError(f"cannot read {path} as HDF5: {e}") from None
        with f:
            missing = [k for k in ("n", "d", "o", key) if k not in f]
            if missing:
                raise ValueError(f"{path} lacks the dataset(s) {missing}; expected the SLIM/JUDI "
                                 f"layout with n, d, o and {key!r} (found {sorted(f.keys())})")
            n = tuple(int(v) for v in f["n"][()])
            arr = np.asarray(f[key][()])
            d = tuple(float(v) for v in f["d"][()])
            o = tuple(float(v) for v in f["o"][()])
        if arr.shape == n[::-1]:
            arr = arr.T
        elif arr.shape != n:
            raise ValueError(f"{path}: dataset {key!r} has shape {arr.shape}, which matches neither n={n} "
                             f"nor its reverse")
        kwargs.setdefault("spacing", d)
        kwargs.setdefault("origin", o)
        return cls(m=arr, **kwargs)

    def with_m(self, m):
        """A model identical to this one (grid, nbl, order, dt) but with squared slowness ``m``.

        A fixed dt is re-checked against the new model's stability limit (``ValueError``
        if faster velocities make it unstable)."""
        m = np.asarray(m)
        if m.shape != self.shape:
            raise ValueError(f"m has shape {m.shape}, the model has shape {self.shape}")
        new = Model(m=m, spacing=self.spacing, origin=self.origin, nbl=self.nbl,
                    space_order=self.space_order, cfl=self.cfl, dtype=self.dtype)
        if self._dt is not None:
            new.dt = self._dt
        return new

    def copy(self):
        return self.with_m(self._m.copy())

    def smooth(self, sigma, fix_top=0):
        """A smoothed copy: Gaussian filter of width ``sigma`` (m) applied to the slowness.

        The top ``fix_top`` grid rows (e.g. the water layer) keep their values.
        """
        return self.with_m(smooth_model(self._m, sigma, self.spacing, fix_top=fix_top))

    # ------------------------------------------------------------------ properties
    @property
    def m(self):
        """Squared slowness (s²/km²), unpadded, shape :attr:`shape`."""
        return self._m

    @m.setter
    def m(self, value):
        value = np.asarray(value)
        if value.shape != self.shape:
            raise ValueError(f"m has shape {value.shape}, the model has shape {self.shape}")
        _check_finite_positive("m", value)
        self._m = value.astype(self.dtype)
        if self._dt is not None and self._dt > self.stability_limit:
            raise ValueError(f"the fixed dt = {self._dt} ms exceeds the stability limit "
                             f"{self.stability_limit:.4f} ms of the new model")

    @property
    def vp(self):
        """Velocity (km/s), unpadded."""
        return (1.0 / np.sqrt(self._m)).astype(self.dtype)

    @property
    def shape(self):
        return self._m.shape

    @property
    def dim(self):
        return self._m.ndim

    @property
    def shape_padded(self):
        return tuple(n + 2 * self.nbl for n in self.shape)

    @property
    def extent(self):
        """Physical size (m) of the unpadded model along each axis."""
        return tuple((n - 1) * h for n, h in zip(self.shape, self.spacing))

    @property
    def domain_bounds(self):
        """(min, max) physical coordinate (m) of the unpadded model along each axis."""
        return tuple((o, o + e) for o, e in zip(self.origin, self.extent))

    @property
    def stability_limit(self):
        """Largest stable time step (ms) of the leapfrog scheme on this model."""
        c = finite_difference_weights(2, self.space_order)
        lam = sum(np.abs(c).sum() / h**2 for h in self.spacing)
        return float(2.0 / (np.sqrt(lam) * self.vp.max()))

    @property
    def critical_dt(self):
        """Default computational time step (ms): ``cfl`` × stability limit, rounded down."""
        return float(np.floor(self.cfl * self.stability_limit * 1e3) / 1e3)

    @property
    def dt(self):
        """Computational time step (ms): the one set by the user, else :attr:`critical_dt`."""
        return self._dt if self._dt is not None else self.critical_dt

    @dt.setter
    def dt(self, value):
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"dt must be a positive number of ms, got {value}")
        if value > self.stability_limit:
            raise ValueError(f"dt = {value} ms is above the stability limit {self.stability_limit:.4f} ms "
                             f"(v_max = {self.vp.max():.3f} km/s, h = {min(self.spacing)} m, "
                             f"space_order = {self.space_order})")
        self._dt = value

    # ------------------------------------------------------------------ padding
    def pad(self, a, mode="edge"):
        """Pad an unpadded array with ``nbl`` points on every side (edge values by default)."""
        return np.pad(a, self.nbl, mode=mode) if self.nbl else np.array(a)

    def unpad(self, a):
        """Inverse of :meth:`pad`: the physical part of a padded array."""
        if self.nbl == 0:
            return a
        return a[(slice(self.nbl, -self.nbl),) * self.dim]

    def pad_adjoint(self, a):
        """Transpose of :meth:`pad` with ``mode="edge"``: padded grid → physical grid.

        The propagators see ``m_pad = E m`` (:attr:`m_padded`, each absorbing-layer
        point a copy of the nearest edge point), so the derivative of any objective
        ``f(E m)`` w.r.t. the physical ``m`` is ``Eᵀ ∂f/∂m_pad``: the physical part of
        the padded gradient plus, on the outermost rows/columns, the sum of the
        absorbing-layer values along the padding direction (corner blocks into the
        corner points). :meth:`unpad` alone drops that sum.
        """
        a = np.asarray(a)
        nbl = self.nbl
        if nbl == 0:
            return np.array(a)
        for axis in range(self.dim):
            b = np.moveaxis(a, axis, 0)
            core = b[nbl:-nbl].copy()
            core[0] += b[:nbl].sum(axis=0)
            core[-1] += b[-nbl:].sum(axis=0)
            a = np.moveaxis(core, 0, axis)
        return np.ascontiguousarray(a)

    @property
    def m_padded(self):
        return self.pad(self._m)

    @property
    def damp(self):
        """Damping of the absorbing layers on the padded grid (1/m units of Devito's examples)."""
        return damping_profile(self.shape_padded, self.nbl, self.spacing, dtype=self.dtype)

    def physical_coordinates(self):
        """Coordinates (m) of the unpadded grid points along each axis."""
        return tuple(o + h * np.arange(n) for o, h, n in zip(self.origin, self.spacing, self.shape))

    def __repr__(self):
        return (f"Model(shape={self.shape}, spacing={self.spacing}, origin={self.origin}, nbl={self.nbl}, "
                f"space_order={self.space_order}, vp=[{self.vp.min():.3f}, {self.vp.max():.3f}] km/s, "
                f"dt={self.dt} ms)")


def smooth_model(m, sigma, spacing, fix_top=0):
    """Gaussian-smoothed squared slowness, smoothing the slowness ``sqrt(m)``.

    ``sigma`` in m (scalar or per axis); the first ``fix_top`` rows along the last
    (depth) axis are restored afterwards, so a water layer stays sharp.
    """
    m = np.asarray(m)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (m.ndim,)) / np.asarray(spacing, dtype=float)
    # one float64 working array, filtered in place (a 3D model holds few copies of itself)
    s = m.astype(np.float64)
    np.sqrt(s, out=s)
    gaussian_filter(s, sigma=sig, mode="nearest", output=s)
    np.square(s, out=s)
    out = s.astype(m.dtype)
    del s
    if fix_top:
        out[..., :fix_top] = m[..., :fix_top]
    return out
