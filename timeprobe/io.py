"""Input/output: SEG-Y shot records, HDF5 run results and resumable run state.

SEG-Y (via ``segyio``)
----------------------
:func:`read_segy` groups traces into shots and returns ``(Data, source Geometry)``;
:func:`write_segy` writes them back (IEEE floats, one trace per receiver);
:func:`segy_summary` describes a survey (for ``timeprobe info``). Header conventions
(SEG-Y rev 1 byte positions, segyio names):

* coordinates: ``SourceX/SourceY`` (73/77) and ``GroupX/GroupY`` (81/85) times the
  scalar ``SourceGroupScalar`` (71);
* depths: ``depth_sign=1`` (default, the JUDI/SegyIO.jl convention of the SLIM files):
  ``SourceDepth`` (49) if any trace has it non-zero, else ``SourceSurfaceElevation``
  (45), and ``ReceiverGroupElevation`` (41) hold **depth below the surface, positive
  down**. ``depth_sign=-1`` (standard SEG-Y elevations, positive up): the source depth
  is ``SourceDepth − SourceSurfaceElevation`` (a charge ``SourceDepth`` below a surface
  at elevation ``SourceSurfaceElevation``) and the receiver depth
  ``−ReceiverGroupElevation``. All times ``ElevationScalar`` (69);
* a scalar ``s`` means multiply by ``s`` if ``s > 0``, divide by ``|s|`` if
  ``s < 0``, and 1 if ``s = 0``; SEG-Y allows only 0, ±1, ±10, …, ±10000 (others raise);
* units: binary header ``MeasurementSystem`` (3255) 2 means feet — coordinates and
  depths are converted to m (×0.3048); 0 (unset) or 1 mean m;
* sampling interval: trace header ``TRACE_SAMPLE_INTERVAL`` (117), else binary
  header ``Interval`` (3217), in μs → ms; first sample time ``DelayRecordingTime``
  (109, ms);
* shots: traces sharing ``FieldRecord`` (9, FFID) *and* source position
  (``group_by="auto"``); ``"ffid"`` or ``"source"`` use one key only. By default
  (``sort=True``) traces are gathered by that key wherever they sit in the file
  (shots in order of first appearance, traces in file order); ``sort=False`` keeps
  the old rule of contiguous runs (a key seen again later is another shot).

Plausibility checks raise ``ValueError`` naming the header: a sampling interval
below 10 μs or above 1 s, varying sample counts, intervals or delays, invalid
scalars, every coordinate zero (no geometry in the file), coordinates beyond
20 000 km or depths beyond 100 km (a missing scalar), non-finite samples
(``nonfinite="zero"`` zeroes the traces holding them instead, for
:func:`timeprobe.preprocessing.reject_bad_traces` to drop).

2D versus 3D: with ``dim=None`` the coordinates are 2D ``(x, z)`` when every
``SourceY``/``GroupY`` is zero, else 3D ``(x, y, z)``. With ``dim=2`` and ``y``
coordinates that vary (a line not along x, or a crooked line), sources and receivers
are projected onto the straight line that fits them best (:func:`project_line`); the
distance along it becomes ``x``.

Results
-------
:class:`ResultsWriter` appends one record per iteration to an HDF5 file (datasets
growing along axis 0) and closes the file after every record, so a crash or a
reader never sees a half-written iteration; :func:`new_run_dir` makes a fresh
run folder. Existing results are never overwritten unless ``overwrite=True``.
:func:`write_snapshot` / :func:`read_snapshot` store a nested dict of arrays (a run's
latest model, its resumable state) in one HDF5 file, replaced atomically.
"""
from __future__ import annotations

import datetime
import json
import numbers
import os
import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import Data, Geometry

__all__ = ["read_segy", "write_segy", "segy_summary", "project_line", "LineProjection", "ResultsWriter",
           "read_results", "new_run_dir", "peak_memory_mb", "reset_peak_memory", "resident_memory_mb",
           "write_snapshot", "read_snapshot", "open_hdf5"]


# =========================================================================== SEG-Y
_VALID_SCALARS = (0, 1, -1, 10, -10, 100, -100, 1000, -1000, 10000, -10000)
_FOOT = 0.3048  # m
_MAX_COORDINATE = 2.0e7  # m: beyond any projected coordinate system (UTM northings < 1e7 m)
_MAX_DEPTH = 1.0e5  # m


def _scale(values, scalars):
    """Apply SEG-Y scalars: ``s > 0`` multiply, ``s < 0`` divide by ``|s|``, ``0`` → 1."""
    s = np.asarray(scalars, dtype=np.float64)
    factor = np.where(s > 0, s, np.where(s < 0, 1.0 / np.where(s == 0, 1.0, np.abs(s)), 1.0))
    return np.asarray(values, dtype=np.float64) * factor


def _header_columns(f, fields):
    import segyio
    return {name: np.asarray(f.attributes(getattr(segyio.TraceField, name))[:], dtype=np.int64)
            for name in fields}


_FIELDS = ("FieldRecord", "TraceNumber", "SourceX", "SourceY", "GroupX", "GroupY", "SourceGroupScalar",
           "SourceDepth", "SourceSurfaceElevation", "ReceiverGroupElevation", "ElevationScalar",
           "TRACE_SAMPLE_INTERVAL", "TRACE_SAMPLE_COUNT", "DelayRecordingTime")
_BYTES = {"SourceGroupScalar": 71, "ElevationScalar": 69, "TRACE_SAMPLE_INTERVAL": 117,
          "DelayRecordingTime": 109, "TRACE_SAMPLE_COUNT": 115}


def _check_scalars(path, h, name):
    bad = ~np.isin(h[name], _VALID_SCALARS)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: trace {k} (FFID {h['FieldRecord'][k]}): {name} (byte {_BYTES[name]}) = "
                         f"{h[name][k]}; SEG-Y scalars are 0, ±1, ±10, ±100, ±1000 or ±10000")


@dataclass
class _Traces:
    """One file's traces before grouping: 3D positions (m) and samples (ntraces, ns)."""
    src: np.ndarray
    rec: np.ndarray
    ffid: np.ndarray
    samples: np.ndarray
    dt: float
    ns: int
    t0: float
    headers: dict
    units: str


def _read_traces(path, depth_sign, units, nonfinite):
    import segyio
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SEG-Y file not found: {path}")
    try:
        f = segyio.open(str(path), "r", ignore_geometry=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise ValueError(f"cannot read {path} as SEG-Y: {e}") from None
    with f:
        ntr = f.tracecount
        if ntr == 0:
            raise ValueError(f"{path} holds no traces")
        h = _header_columns(f, _FIELDS)
        ns = len(f.samples)
        counts = set(h["TRACE_SAMPLE_COUNT"].tolist()) - {0}
        if counts and counts != {ns}:
            raise ValueError(f"{path}: TRACE_SAMPLE_COUNT (byte 115) varies over the traces {sorted(counts)[:5]} "
                             f"or differs from the binary header's {ns}; timeprobe needs one time axis per file")
        # the trace header interval wins (some writers leave the binary header at 0)
        dts = set(h["TRACE_SAMPLE_INTERVAL"].tolist()) - {0}
        if len(dts) > 1:
            raise ValueError(f"{path}: TRACE_SAMPLE_INTERVAL (byte 117) varies over the traces: "
                             f"{sorted(dts)[:5]} μs")
        bin_dt = int(f.bin[segyio.BinField.Interval])
        dt_us = dts.pop() if dts else bin_dt
        if dt_us <= 0:
            raise ValueError(f"{path}: no sampling interval: TRACE_SAMPLE_INTERVAL (byte 117) and the binary "
                             f"header's Interval (byte 3217) are both 0")
        if not 10 <= dt_us <= 1_000_000:
            raise ValueError(f"{path}: sampling interval {dt_us} μs = {dt_us / 1000} ms (TRACE_SAMPLE_INTERVAL, "
                             f"byte 117, or Interval, byte 3217) is implausible; SEG-Y stores it in μs "
                             f"(2 ms = 2000)")
        delays = set(h["DelayRecordingTime"].tolist())
        if len(delays) > 1:
            raise ValueError(f"{path}: DelayRecordingTime (byte 109) varies over the traces: {sorted(delays)[:5]} ms")
        system = int(f.bin[segyio.BinField.MeasurementSystem])
        samples = f.trace.raw[:].astype(np.float32)  # (ntraces, ns)
    bad = ~np.isfinite(samples)
    if bad.any():
        k = int(np.flatnonzero(bad.any(axis=1))[0])
        if nonfinite != "zero":
            raise ValueError(f"{path}: trace {k} (FFID {h['FieldRecord'][k]}, TraceNumber {h['TraceNumber'][k]}) "
                             f"and {int(bad.any(axis=1).sum()) - 1} other(s) hold NaN or inf samples; pass "
                             f"nonfinite='zero' to zero them (then drop them with reject_bad_traces)")
        samples[bad.any(axis=1)] = 0.0  # a trace with a non-finite sample is corrupt as a whole
    if units == "auto":
        units = "ft" if system == 2 else "m"
    factor = _FOOT if units == "ft" else 1.0
    for name in ("SourceGroupScalar", "ElevationScalar"):
        _check_scalars(path, h, name)
    coord = lambda name: factor * _scale(h[name], h["SourceGroupScalar"])  # noqa: E731
    elev = lambda name: factor * _scale(h[name], h["ElevationScalar"])  # noqa: E731
    sx, sy, gx, gy = coord("SourceX"), coord("SourceY"), coord("GroupX"), coord("GroupY")
    if not (np.any(sx) or np.any(sy) or np.any(gx) or np.any(gy)):
        raise ValueError(f"{path}: no acquisition geometry: SourceX/SourceY (bytes 73/77) and GroupX/GroupY "
                         f"(bytes 81/85) are 0 in every trace")
    big = max(np.abs(v).max() for v in (sx, sy, gx, gy))
    if big > _MAX_COORDINATE:
        raise ValueError(f"{path}: coordinates up to {big:.4g} m after SourceGroupScalar (byte 71); a scalar of "
                         f"0 or 1 where −100 or −1000 was meant?")
    if depth_sign == 1:
        sdepth = elev("SourceDepth") if np.any(h["SourceDepth"] != 0) else elev("SourceSurfaceElevation")
        gdepth = elev("ReceiverGroupElevation")
    else:
        sdepth = elev("SourceDepth") - elev("SourceSurfaceElevation")
        gdepth = -elev("ReceiverGroupElevation")
    deep = max(np.abs(sdepth).max(), np.abs(gdepth).max())
    if deep > _MAX_DEPTH:
        raise ValueError(f"{path}: source/receiver depths up to {deep:.4g} m after ElevationScalar (byte 69); "
                         f"a scalar of 0 or 1 where −100 or −1000 was meant?")
    return _Traces(src=np.stack([sx, sy, sdepth], 1), rec=np.stack([gx, gy, gdepth], 1),
                   ffid=h["FieldRecord"], samples=samples, dt=dt_us / 1000.0, ns=ns,
                   t0=float(delays.pop()), headers=h, units=units)


def _group_shots(path, tr, group_by, sort):
    """Trace index arrays, one per shot (module docstring: ``group_by``, ``sort``)."""
    ffid = tr.ffid[:, None].astype(np.float64)
    key = {"ffid": ffid, "source": tr.src, "auto": np.concatenate([ffid, tr.src], 1)}[group_by]
    if sort:
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(first, kind="stable")  # shots in order of first appearance
        groups = [np.flatnonzero(inverse == u) for u in order]
    else:
        change = np.any(key[1:] != key[:-1], axis=1)
        starts = np.concatenate([[0], np.flatnonzero(change) + 1, [len(key)]])
        groups = [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]
    for idx in groups:
        shot_src = np.unique(tr.src[idx], axis=0)
        if len(shot_src) > 1:
            raise ValueError(f"{path}: the {len(idx)} traces of FFID {tr.ffid[idx[0]]} (traces {idx[0]}…{idx[-1]}) "
                             f"have {len(shot_src)} different source positions (SourceX/SourceY, bytes 73/77); "
                             f"use group_by='source' or 'auto'")
    return groups


@dataclass
class LineProjection:
    """The straight line onto which a (crooked) 2D line was projected.

    ``x_new = (p − origin) · direction`` for a map position ``p = (x, y)`` (m);
    ``azimuth`` is the direction's angle clockwise from +y (north), in degrees;
    ``max_distance`` / ``rms_distance`` are the largest and RMS distances (m) of the
    sources and receivers from the line.
    """
    origin: np.ndarray
    direction: np.ndarray
    azimuth: float
    max_distance: float
    rms_distance: float

    def __call__(self, xy):
        """Along-line coordinate (m) of map positions ``xy`` (…, 2)."""
        return (np.asarray(xy, dtype=np.float64) - self.origin) @ self.direction


def project_line(points_xy, direction=None):
    """Fit the straight line through map positions and return its :class:`LineProjection`.

    The line passes through the centroid of ``points_xy`` (n, 2) along their principal
    direction (largest singular vector; ``direction`` overrides it), oriented so that
    the along-line coordinate grows with x (with y for a line along y); its origin is
    the projection of the point with the smallest coordinate, so every point gets
    ``x_new ≥ 0`` (to round-off).
    """
    p = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    c = p.mean(axis=0)
    if direction is None:
        _, sv, vt = np.linalg.svd(p - c, full_matrices=False)
        if sv[0] == 0:
            raise ValueError("all positions coincide: no line to project onto")
        u = vt[0]
    else:
        u = np.asarray(direction, dtype=np.float64).reshape(2)
        if not np.linalg.norm(u) > 0:
            raise ValueError("direction must be a non-zero 2-vector")
        u = u / np.linalg.norm(u)
    if u[0] < -1e-12 or (abs(u[0]) <= 1e-12 and u[1] < 0):
        u = -u
    s = (p - c) @ u
    origin = c + s.min() * u
    perp = (p - c) - np.outer(s, u)
    dist = np.linalg.norm(perp, axis=1)
    az = float(np.degrees(np.arctan2(u[0], u[1])) % 360.0)
    return LineProjection(origin=origin, direction=u, azimuth=az, max_distance=float(dist.max()),
                          rms_distance=float(np.sqrt(np.mean(dist ** 2))))


def read_segy(path_or_paths, group_by="auto", depth_sign=1, dim=None, *, sort=True, units="auto",
              nonfinite="raise", return_projection=False):
    """Read shot records from one or several SEG-Y files.

    Parameters
    ----------
    path_or_paths : str, Path or list of them
        Files read in the given order; shots are concatenated. All must share the
        sampling interval, number of samples and first-sample time.
    group_by : {"auto", "ffid", "source"}
        Trace-to-shot grouping (see the module docstring).
    depth_sign : {1, -1}
        1: depth/elevation fields hold depth positive down (JUDI/SLIM convention);
        -1: standard SEG-Y elevations, positive up (module docstring).
    dim : {None, 2, 3}
        Coordinate dimension; ``None`` detects it from the y coordinates. ``2`` with
        varying y projects onto the best-fitting straight line (crooked lines).
    sort : bool
        Gather each shot's traces wherever they are in the file (True) or only
        contiguous runs (False).
    units : {"auto", "m", "ft"}
        Unit of coordinates and depths; "auto" follows the binary header's
        ``MeasurementSystem`` (2 = feet). Feet are converted to m.
    nonfinite : {"raise", "zero"}
        Traces holding NaN/inf samples raise, or are zeroed (dead traces).
    return_projection : bool
        Also return the :class:`LineProjection` (None when no projection was needed).

    Returns
    -------
    data : Data
        One ``(nt, ntraces)`` float32 array per shot; its geometry holds the
        receiver coordinates (m), ``dt`` (ms), ``t0`` and ``t = t0 + (nt − 1) dt``.
    src_geometry : Geometry
        One source point per shot on the same time axis.
    """
    data, src, projection, _ = _read_survey(path_or_paths, group_by, depth_sign, dim, sort, units, nonfinite)
    return (data, src, projection) if return_projection else (data, src)


def _read_survey(path_or_paths, group_by, depth_sign, dim, sort, units, nonfinite):
    """:func:`read_segy`'s work: ``(data, src, projection, headers)``, ``headers`` the distinct scalars
    and units met in the files (for :func:`segy_summary`)."""
    if group_by not in ("auto", "ffid", "source"):
        raise ValueError(f"group_by must be 'auto', 'ffid' or 'source', got {group_by!r}")
    if depth_sign not in (1, -1):
        raise ValueError(f"depth_sign must be 1 or -1, got {depth_sign!r}")
    if dim not in (None, 2, 3):
        raise ValueError(f"dim must be None, 2 or 3, got {dim!r}")
    if units not in ("auto", "m", "ft"):
        raise ValueError(f"units must be 'auto', 'm' or 'ft', got {units!r}")
    if nonfinite not in ("raise", "zero"):
        raise ValueError(f"nonfinite must be 'raise' or 'zero', got {nonfinite!r}")
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    if not paths:
        raise ValueError("no SEG-Y file given")
    srcs, recs, arrays, axis = [], [], [], None
    headers = {"SourceGroupScalar": set(), "ElevationScalar": set(), "units": set()}
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"SEG-Y paths must be str or os.PathLike, got {type(p).__name__}")
        tr = _read_traces(p, depth_sign, units, nonfinite)
        for k in ("SourceGroupScalar", "ElevationScalar"):
            headers[k] |= set(tr.headers[k].tolist())
        headers["units"].add(tr.units)
        if axis is None:
            axis = (tr.dt, tr.ns, tr.t0)
        elif not (np.isclose(axis[0], tr.dt) and axis[1] == tr.ns and np.isclose(axis[2], tr.t0)):
            raise ValueError(f"{p}: time axis (dt={tr.dt} ms, ns={tr.ns}, t0={tr.t0} ms) differs from the first "
                             f"file's (dt={axis[0]} ms, ns={axis[1]}, t0={axis[2]} ms)")
        for idx in _group_shots(p, tr, group_by, sort):
            srcs.append(tr.src[idx[0]])
            recs.append(tr.rec[idx])
            arrays.append(tr.samples[idx].T)
    dt, ns, t0 = axis
    all_xy = np.concatenate([np.array(srcs)[:, :2]] + [r[:, :2] for r in recs])
    y_used = bool(np.any(all_xy[:, 1] != 0))
    if dim is None:
        dim = 3 if y_used else 2
    projection = None
    if dim == 3:
        src_c = [s[None, :] for s in srcs]
        rec_c = recs
    else:
        if np.ptp(all_xy[:, 1]) > 0:  # not a line along x: project onto the best-fitting line
            projection = project_line(all_xy)
            along = projection
        else:
            along = lambda xy: xy[..., 0]  # noqa: E731  (a line along x keeps its x)
        src_c = [np.array([[along(s[:2]), s[2]]]) for s in srcs]
        rec_c = [np.stack([along(r[:, :2]), r[:, 2]], 1) for r in recs]
    t = t0 + (ns - 1) * dt
    rec_geom = Geometry(rec_c, dt=dt, t=t, t0=t0)
    src_geom = Geometry(src_c, dt=dt, t=t, t0=t0)
    if rec_geom.nt != ns:  # guard against round-off in time_axis
        raise ValueError(f"internal: time axis of {rec_geom.nt} samples for {ns} samples in the file")
    return Data(rec_geom, arrays), src_geom, projection, headers


def segy_summary(path_or_paths, **read_kwargs):
    """What ``timeprobe info`` prints: a dict describing the survey in the SEG-Y file(s).

    Keys: ``files``, ``shots``, ``traces`` (total), ``traces_per_shot`` (min, max),
    ``samples``, ``dt`` (ms), ``t0`` (ms), ``tmax`` (ms), ``dim``, ``source_extent`` and
    ``receiver_extent`` (per axis (min, max), m), ``offset_range`` ((min, max) m, source
    to receiver), ``scalars`` (distinct ``SourceGroupScalar``/``ElevationScalar``
    values), ``units``, ``projection`` (a :class:`LineProjection` or None), and the
    ``data``/``src`` read (``read_kwargs`` go to :func:`read_segy`).
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    kw = dict(group_by="auto", depth_sign=1, dim=None, sort=True, units="auto", nonfinite="raise")
    unknown = set(read_kwargs) - set(kw)
    if unknown:
        raise TypeError(f"segy_summary got unexpected keyword(s) {sorted(unknown)}; it takes those of read_segy")
    kw.update(read_kwargs)
    d, src, projection, headers = _read_survey(paths, **kw)
    scalars = {k: headers[k] for k in ("SourceGroupScalar", "ElevationScalar")}
    units = headers["units"]
    rec_all = np.concatenate(d.geometry.coordinates)
    src_all = np.concatenate(src.coordinates)
    off = np.concatenate([np.linalg.norm(d.geometry.coordinates[i][:, :-1] - src.coordinates[i][0, :-1], axis=1)
                          for i in range(d.nshots)])
    npts = [d.geometry.npoints(i) for i in range(d.nshots)]
    return dict(files=[str(p) for p in paths], shots=d.nshots, traces=int(sum(npts)),
                traces_per_shot=(min(npts), max(npts)), samples=d.geometry.nt, dt=d.dt, t0=d.geometry.t0,
                tmax=d.geometry.time[-1], dim=d.geometry.dim,
                source_extent=[(float(a), float(b)) for a, b in zip(src_all.min(0), src_all.max(0))],
                receiver_extent=[(float(a), float(b)) for a, b in zip(rec_all.min(0), rec_all.max(0))],
                offset_range=(float(off.min()), float(off.max())),
                scalars={k: sorted(v) for k, v in scalars.items()}, units=sorted(units), projection=projection,
                zero_shots=[i for i, a in enumerate(d.arrays) if not a.any()], data=d, src=src)


def _pick_scalar(values, maxabs=2**31 - 1):
    """Finest SEG-Y scalar (−1000, −100, −10, 1, 10, …) representing ``values`` in int32.

    Returns (scalar, integer values). Values are rounded to that precision.
    """
    v = np.asarray(values, dtype=np.float64)
    vmax = float(np.max(np.abs(v))) if v.size else 0.0
    for s in (-1000, -100, -10, 1, 10, 100, 1000, 10000):
        factor = -s if s < 0 else 1.0 / s
        if vmax * factor <= maxabs:
            return s, np.round(v * factor).astype(np.int64)
    raise ValueError(f"coordinates up to {vmax:g} m cannot be stored in SEG-Y int32 headers")


def write_segy(path, data, src_geometry, overwrite=False):
    """Write shot records to a SEG-Y file (rev 1, 4-byte IEEE floats, big endian).

    One trace per receiver, shots in order; headers written: ``FieldRecord`` (shot
    number from 1), ``TraceNumber``, ``TRACE_SEQUENCE_LINE/FILE``, source and
    receiver coordinates with ``SourceGroupScalar``, source depth in ``SourceDepth``
    and ``SourceSurfaceElevation`` and receiver depth in ``ReceiverGroupElevation``
    (depth positive down, with ``ElevationScalar``; the finest of −1000/−100/… that
    fits int32), ``TRACE_SAMPLE_COUNT``, ``TRACE_SAMPLE_INTERVAL`` (μs),
    ``DelayRecordingTime`` (ms) and the binary ``Interval``/``Samples``.
    :func:`read_segy` reads the file back to equal data and geometry (coordinates
    to the scalar's precision, 1 mm for coordinates below 2147 km).

    Parameters
    ----------
    path : str or Path
    data : Data
        Shot records; ``data.geometry`` gives receiver coordinates and the time axis.
    src_geometry : Geometry
        One source point per shot (same number of shots as ``data``).
    overwrite : bool
        Replace an existing file (refused by default: ``FileExistsError``).
    """
    import segyio
    if not isinstance(data, Data):
        raise TypeError(f"data must be a timeprobe.Data, got {type(data).__name__}")
    if not isinstance(src_geometry, Geometry):
        raise TypeError(f"src_geometry must be a timeprobe.Geometry, got {type(src_geometry).__name__}")
    if src_geometry.nshots != data.nshots:
        raise ValueError(f"{src_geometry.nshots} source position(s) for {data.nshots} shot(s)")
    for i in range(src_geometry.nshots):
        if src_geometry.npoints(i) != 1:
            raise ValueError(f"shot {i}: SEG-Y stores one source point per shot, got {src_geometry.npoints(i)} "
                             f"(simultaneous sources cannot be written)")
    if src_geometry.dim != data.geometry.dim:
        raise ValueError(f"source coordinates are {src_geometry.dim}D, receivers {data.geometry.dim}D")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    geom = data.geometry
    dt_us = geom.dt * 1000.0
    if abs(dt_us - round(dt_us)) > 1e-6 * max(1.0, dt_us) or not 0 < round(dt_us) <= 32767:
        raise ValueError(f"dt = {geom.dt} ms is not a whole number of μs in 1…32767; resample the data "
                         f"(Data.resample) before writing SEG-Y")
    if abs(geom.t0 - round(geom.t0)) > 1e-9 or not -32768 <= round(geom.t0) <= 32767:
        raise ValueError(f"t0 = {geom.t0} ms must be a whole number of ms for SEG-Y (DelayRecordingTime)")
    ns = geom.nt
    dim = geom.dim
    ntr = sum(geom.npoints(i) for i in range(data.nshots))

    rec = np.concatenate(geom.coordinates, 0)
    src = np.concatenate([np.repeat(src_geometry.coordinates[i], geom.npoints(i), 0)
                          for i in range(data.nshots)], 0)
    xy_cols = [0, 1] if dim == 3 else [0]
    s_xy, ixy = _pick_scalar(np.concatenate([src[:, xy_cols], rec[:, xy_cols]]))
    s_z, iz = _pick_scalar(np.concatenate([src[:, -1], rec[:, -1]]))
    ixy_src, ixy_rec = ixy[:ntr], ixy[ntr:]
    iz_src, iz_rec = iz[:ntr], iz[ntr:]
    ffid = np.concatenate([np.full(geom.npoints(i), i + 1) for i in range(data.nshots)])

    spec = segyio.spec()
    spec.format = 5  # 4-byte IEEE float
    spec.samples = np.arange(ns) * geom.dt + geom.t0
    spec.tracecount = ntr
    spec.ilines = spec.xlines = None
    tmp = path.with_name(path.name + ".part")
    F = segyio.TraceField
    with segyio.create(str(tmp), spec) as f:
        f.bin.update({segyio.BinField.Interval: int(round(dt_us)), segyio.BinField.Samples: ns,
                      segyio.BinField.Format: 5, segyio.BinField.SEGYRevision: 0x0100})
        k = 0
        for i in range(data.nshots):
            arr = data.arrays[i]
            for j in range(geom.npoints(i)):
                hdr = {F.TRACE_SEQUENCE_LINE: k + 1, F.TRACE_SEQUENCE_FILE: k + 1,
                       F.FieldRecord: int(ffid[k]), F.TraceNumber: j + 1,
                       F.SourceGroupScalar: s_xy, F.ElevationScalar: s_z,
                       F.SourceX: int(ixy_src[k, 0]), F.GroupX: int(ixy_rec[k, 0]),
                       F.SourceDepth: int(iz_src[k]), F.SourceSurfaceElevation: int(iz_src[k]),
                       F.ReceiverGroupElevation: int(iz_rec[k]),
                       F.TRACE_SAMPLE_COUNT: ns, F.TRACE_SAMPLE_INTERVAL: int(round(dt_us)),
                       F.DelayRecordingTime: int(round(geom.t0))}
                if dim == 3:
                    hdr[F.SourceY] = int(ixy_src[k, 1])
                    hdr[F.GroupY] = int(ixy_rec[k, 1])
                f.header[k] = hdr
                f.trace[k] = np.ascontiguousarray(arr[:, j], dtype=np.float32)
                k += 1
    os.replace(tmp, path)
    return path


# =========================================================================== results
def peak_memory_mb():
    """Peak resident memory of this process so far (MiB).

    On Linux from ``VmHWM`` in ``/proc/self/status``: unlike ``getrusage``'s
    ``ru_maxrss``, which Linux carries over ``execve`` from the parent, it starts
    afresh in a subprocess — so per-configuration subprocess measurements are right.
    Elsewhere from ``getrusage``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / 1024.0**2 if sys.platform == "darwin" else peak / 1024.0


def resident_memory_mb():
    """Current resident memory of this process (MiB; ``VmRSS``, Linux), NaN where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def reset_peak_memory(trim=True):
    """Reset the peak-memory mark that :func:`peak_memory_mb` reads to the current
    resident size (Linux ≥ 4.0: ``/proc/self/clear_refs``). Returns False where
    unsupported; the peak then keeps counting from the process start.

    With ``trim`` (default) garbage is collected and freed heap pages are returned to the
    OS first (glibc ``malloc_trim``), so the new mark is not inflated by memory a previous
    computation released but the allocator kept. A working-memory measurement is then
    ``peak_memory_mb()`` after the work minus :func:`resident_memory_mb` before it.
    """
    if trim:
        import ctypes
        import gc
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def new_run_dir(base, name="run", timestamp=True):
    """Create and return a fresh folder ``base/name-YYYYmmdd-HHMMSS[-k]``.

    Never reuses an existing folder: ``os.mkdir`` fails if it exists, and the
    counter ``k`` (2, 3, …) is bumped until a new one is made, so concurrent runs
    started in the same second get distinct folders. ``timestamp=False`` gives
    ``name-001``, ``name-002``, ….
    """
    if not isinstance(name, str) or not name or re.search(r"[/\\\0]", name):
        raise ValueError(f"name must be a non-empty string without path separators, got {name!r}")
    base = Path(base).expanduser()
    base.mkdir(parents=True, exist_ok=True)
    if timestamp:
        stem = f"{name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        candidates = (stem if k == 1 else f"{stem}-{k}" for k in range(1, 100000))
    else:
        candidates = (f"{name}-{k:03d}" for k in range(1, 100000))
    for c in candidates:
        p = base / c
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder in {base}")


class ResultsWriter:
    """Per-iteration records of a long run in one HDF5 file.

    ``append(**values)`` adds one record: each keyword becomes (on first use) a
    dataset ``values.shape`` per record, growing along axis 0 (``chunks`` of one
    record, ``maxshape=(None, …)``); scalars become 1D datasets. ``iteration`` and
    ``time`` (s since the writer was made) are added automatically, ``peak_memory``
    (MiB, :func:`peak_memory_mb`) too unless given. A key missing from a later record
    is filled with NaN (floating) or 0 for that row, so all datasets share the row
    index. The file is opened, written and closed at every call: what is on disk is
    always a complete set of iterations, readable while the run goes on.

    Parameters
    ----------
    path_or_dir : str or Path
        An ``.h5`` file, or a folder (``results.h5`` inside it).
    overwrite : bool
        Replace an existing file; by default an existing file raises ``FileExistsError``
        (results are never overwritten silently; see :func:`new_run_dir`).
    attrs : dict, optional
        Run metadata stored as file attributes (JSON for non-scalar values).
    """

    def __init__(self, path_or_dir, overwrite=False, attrs=None):
        import h5py
        p = Path(path_or_dir).expanduser()
        if p.is_dir() or (not p.suffix and not p.exists()):
            p.mkdir(parents=True, exist_ok=True)
            p = p / "results.h5"
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists; pass overwrite=True to replace it, or write into a fresh "
                                  f"folder from new_run_dir()")
        if not p.parent.is_dir():
            raise FileNotFoundError(f"folder {p.parent} does not exist")
        self.path = p
        self.nrecords = 0
        self._t0 = datetime.datetime.now().timestamp()
        with h5py.File(p, "w") as f:
            f.attrs["created"] = datetime.datetime.now().isoformat(timespec="seconds")
        if attrs:
            self.set_attrs(**attrs)

    def set_attrs(self, **attrs):
        """Store run metadata as file attributes (numbers/strings as is, others as JSON)."""
        import h5py
        with h5py.File(self.path, "a") as f:
            for k, v in attrs.items():
                if isinstance(v, (numbers.Number, str, np.number)) and not isinstance(v, bool):
                    f.attrs[k] = v
                elif isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
                    f.attrs[k] = v
                else:
                    f.attrs[k] = json.dumps(v, default=str)

    def append(self, **values):
        """Append one record; returns its row index."""
        import h5py
        if not values:
            raise ValueError("append() needs at least one value")
        values = dict(values)
        values.setdefault("iteration", self.nrecords)
        values["time"] = values.get("time", datetime.datetime.now().timestamp() - self._t0)
        values.setdefault("peak_memory", peak_memory_mb())
        arrays = {}
        for k, v in values.items():
            if not isinstance(k, str) or "/" in k:
                raise ValueError(f"record key {k!r} must be a name without '/'")
            a = np.asarray(v)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"record {k!r}: only numeric values (scalars or arrays) are stored, got {a.dtype}")
            arrays[k] = a
        row = self.nrecords
        with h5py.File(self.path, "a") as f:
            for k, a in arrays.items():
                if k not in f:
                    ds = f.create_dataset(k, shape=(row,) + a.shape, maxshape=(None,) + a.shape,
                                          dtype=a.dtype, chunks=(1,) + a.shape if a.shape else (256,),
                                          fillvalue=np.nan if a.dtype.kind == "f" else 0)
                ds = f[k]
                if ds.shape[1:] != a.shape:
                    raise ValueError(f"record {k!r} has shape {a.shape}, earlier records {ds.shape[1:]}")
            for k in f.keys():
                ds = f[k]
                ds.resize(row + 1, axis=0)
                if k in arrays:
                    ds[row] = arrays[k]
                elif ds.dtype.kind == "f":
                    ds[row] = np.nan
        self.nrecords = row + 1
        return row

    def __repr__(self):
        return f"ResultsWriter({str(self.path)!r}, nrecords={self.nrecords})"


def read_results(path):
    """All datasets of a :class:`ResultsWriter` file as a dict of arrays (attributes under ``"attrs"``)."""
    import h5py
    p = Path(path)
    if p.is_dir():
        p = p / "results.h5"
    if not p.is_file():
        raise FileNotFoundError(f"results file not found: {p}")
    with h5py.File(p, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out


# =========================================================================== snapshots
def _h5_write_items(group, values):
    for k, v in values.items():
        if not isinstance(k, str) or not k or "/" in k:
            raise ValueError(f"snapshot key {k!r} must be a non-empty name without '/'")
        if isinstance(v, dict):
            _h5_write_items(group.create_group(k), v)
        elif isinstance(v, str):
            group.create_dataset(k, data=np.bytes_(v.encode("utf-8")))
        elif v is None:
            continue
        else:
            a = np.asarray(v)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"snapshot value {k!r}: only numbers, arrays, strings and dicts are stored, "
                                f"got {a.dtype}")
            group.create_dataset(k, data=a)


def _h5_read_items(group):
    import h5py
    out = {}
    for k, v in group.items():
        if isinstance(v, h5py.Group):
            out[k] = _h5_read_items(v)
        else:
            a = v[()]
            out[k] = a.decode("utf-8") if isinstance(a, bytes) else a
    return out


def write_snapshot(path, values, attrs=None):
    """Write a (nested) dict of arrays, numbers and strings to the HDF5 file ``path``, atomically.

    The file is written beside the target (``.part``) and moved over it with
    ``os.replace``: a reader or a crash sees the previous complete snapshot or the new
    one, never a mixture. Nested dicts become groups; ``None`` values are skipped;
    ``attrs`` become file attributes (numbers/strings as is, others as JSON). Meant
    for state that is *replaced* as a run progresses (the latest model, an optimizer
    state); per-iteration records that accumulate belong in :class:`ResultsWriter`.
    """
    import h5py
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as f:
        _h5_write_items(f, values)
        for k, v in (attrs or {}).items():
            if isinstance(v, (numbers.Number, str, np.number)) and not isinstance(v, bool):
                f.attrs[k] = v
            else:
                f.attrs[k] = json.dumps(v, default=str)
    os.replace(tmp, path)
    return path


def open_hdf5(path, what="HDF5"):
    """``h5py.File(path, "r")``, with errors that name the problem: ``FileNotFoundError``
    ("``what`` file not found") or ``ValueError`` (not a readable HDF5 file)."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e})") from None


def read_snapshot(path):
    """The dict :func:`write_snapshot` wrote (attributes under ``"attrs"``)."""
    with open_hdf5(path, "snapshot") as f:
        out = _h5_read_items(f)
        out["attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out
