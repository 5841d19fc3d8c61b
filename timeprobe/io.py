"""Input/output: SEG-Y shot records and HDF5 run results.

SEG-Y (via ``segyio``)
----------------------
:func:`read_segy` groups traces into shots and returns ``(Data, source Geometry)``;
:func:`write_segy` writes them back (IEEE floats, one trace per receiver). Header
conventions (SEG-Y rev 1 byte positions, segyio names):

* coordinates: ``SourceX/SourceY`` (73/77) and ``GroupX/GroupY`` (81/85) times the
  scalar ``SourceGroupScalar`` (71);
* depths: ``SourceDepth`` (49) if any trace has it non-zero, else
  ``SourceSurfaceElevation`` (45), and ``ReceiverGroupElevation`` (41), times
  ``ElevationScalar`` (69). As in JUDI/SegyIO.jl, these fields hold **depth below
  the surface, positive down** (m) — the SLIM files store source/receiver depths
  there; pass ``depth_sign=-1`` for files holding true elevations (positive up);
* a scalar ``s`` means multiply by ``s`` if ``s > 0``, divide by ``|s|`` if
  ``s < 0``, and 1 if ``s = 0``;
* sampling interval: trace header ``TRACE_SAMPLE_INTERVAL`` (117), else binary
  header ``Interval`` (3217), in μs → ms; first sample time ``DelayRecordingTime``
  (109, ms);
* shots: consecutive groups of traces sharing ``FieldRecord`` (9, FFID) *and*
  source position (``group_by="auto"``); ``"ffid"`` or ``"source"`` use one key only.

2D versus 3D: with ``dim=None`` the coordinates are 2D ``(x, z)`` when every
``SourceY``/``GroupY`` is zero, else 3D ``(x, y, z)``.

Results
-------
:class:`ResultsWriter` appends one record per iteration to an HDF5 file (datasets
growing along axis 0) and closes the file after every record, so a crash or a
reader never sees a half-written iteration; :func:`new_run_dir` makes a fresh
run folder. Existing results are never overwritten unless ``overwrite=True``.
"""
from __future__ import annotations

import datetime
import json
import numbers
import os
import re
import resource
import sys
from pathlib import Path

import numpy as np

from .geometry import Data, Geometry

__all__ = ["read_segy", "write_segy", "ResultsWriter", "read_results", "new_run_dir", "peak_memory_mb",
           "reset_peak_memory"]


# =========================================================================== SEG-Y
def _scale(values, scalars):
    """Apply SEG-Y scalars: ``s > 0`` multiply, ``s < 0`` divide by ``|s|``, ``0`` → 1."""
    s = np.asarray(scalars, dtype=np.float64)
    factor = np.where(s > 0, s, np.where(s < 0, 1.0 / np.where(s == 0, 1.0, np.abs(s)), 1.0))
    return np.asarray(values, dtype=np.float64) * factor


def _header_columns(f, fields):
    import segyio
    return {name: np.asarray(f.attributes(getattr(segyio.TraceField, name))[:], dtype=np.int64)
            for name in fields}


_FIELDS = ("FieldRecord", "SourceX", "SourceY", "GroupX", "GroupY", "SourceGroupScalar",
           "SourceDepth", "SourceSurfaceElevation", "ReceiverGroupElevation", "ElevationScalar",
           "TRACE_SAMPLE_INTERVAL", "TRACE_SAMPLE_COUNT", "DelayRecordingTime")


def _read_one(path, group_by, depth_sign, dim):
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
            raise ValueError(f"{path}: traces have varying sample counts {sorted(counts)}; "
                             f"timeprobe needs one time axis per file")
        # the trace header interval wins (some writers leave the binary header at 0)
        dts = set(h["TRACE_SAMPLE_INTERVAL"].tolist()) - {0}
        if len(dts) > 1:
            raise ValueError(f"{path}: traces have varying sample intervals {sorted(dts)} μs")
        dt_us = dts.pop() if dts else int(f.bin[segyio.BinField.Interval])
        if dt_us <= 0:
            raise ValueError(f"{path}: no sampling interval in the trace or binary headers")
        delays = set(h["DelayRecordingTime"].tolist())
        if len(delays) > 1:
            raise ValueError(f"{path}: traces have varying DelayRecordingTime {sorted(delays)} ms")
        traces = f.trace.raw[:].astype(np.float32)  # (ntraces, ns)
    dt = dt_us / 1000.0
    t0 = float(delays.pop())

    sxy = _scale(np.stack([h["SourceX"], h["SourceY"]], 1), h["SourceGroupScalar"][:, None])
    gxy = _scale(np.stack([h["GroupX"], h["GroupY"]], 1), h["SourceGroupScalar"][:, None])
    sdepth_raw = h["SourceDepth"] if np.any(h["SourceDepth"] != 0) else h["SourceSurfaceElevation"]
    sz = depth_sign * _scale(sdepth_raw, h["ElevationScalar"])
    gz = depth_sign * _scale(h["ReceiverGroupElevation"], h["ElevationScalar"])
    if dim is None:
        dim = 2 if not (np.any(sxy[:, 1] != 0) or np.any(gxy[:, 1] != 0)) else 3
    if dim == 2:
        src = np.stack([sxy[:, 0], sz], 1)
        rec = np.stack([gxy[:, 0], gz], 1)
    else:
        src = np.stack([sxy[:, 0], sxy[:, 1], sz], 1)
        rec = np.stack([gxy[:, 0], gxy[:, 1], gz], 1)

    if group_by == "ffid":
        key = h["FieldRecord"][:, None].astype(np.float64)
    elif group_by == "source":
        key = src
    else:
        key = np.concatenate([h["FieldRecord"][:, None].astype(np.float64), src], 1)
    # a new shot starts wherever the key changes from the previous trace (SEG-Y files
    # store shot gathers contiguously); a key seen again later is a separate shot
    change = np.any(key[1:] != key[:-1], axis=1)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1, [ntr]])
    shots = []
    for a, b in zip(starts[:-1], starts[1:]):
        shot_src = np.unique(src[a:b], axis=0)
        if len(shot_src) > 1:
            raise ValueError(f"{path}: traces {a}–{b - 1} share FFID {h['FieldRecord'][a]} but have "
                             f"{len(shot_src)} different source positions; use group_by='source'")
        shots.append((shot_src[0], rec[a:b], traces[a:b].T))
    return shots, dt, ns, t0


def read_segy(path_or_paths, group_by="auto", depth_sign=1, dim=None):
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
        -1: they hold elevations positive up (depth = −elevation).
    dim : {None, 2, 3}
        Coordinate dimension; ``None`` detects it from the y coordinates.

    Returns
    -------
    data : Data
        One ``(nt, ntraces)`` float32 array per shot; its geometry holds the
        receiver coordinates (m), ``dt`` (ms), ``t0`` and ``t = t0 + (nt − 1) dt``.
    src_geometry : Geometry
        One source point per shot on the same time axis.
    """
    if group_by not in ("auto", "ffid", "source"):
        raise ValueError(f"group_by must be 'auto', 'ffid' or 'source', got {group_by!r}")
    if depth_sign not in (1, -1):
        raise ValueError(f"depth_sign must be 1 or -1, got {depth_sign!r}")
    if dim not in (None, 2, 3):
        raise ValueError(f"dim must be None, 2 or 3, got {dim!r}")
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    if not paths:
        raise ValueError("no SEG-Y file given")
    all_shots, axis = [], None
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"SEG-Y paths must be str or os.PathLike, got {type(p).__name__}")
        shots, dt, ns, t0 = _read_one(p, group_by, depth_sign, dim)
        if axis is None:
            axis = (dt, ns, t0)
        elif not (np.isclose(axis[0], dt) and axis[1] == ns and np.isclose(axis[2], t0)):
            raise ValueError(f"{p}: time axis (dt={dt} ms, ns={ns}, t0={t0} ms) differs from the first "
                             f"file's (dt={axis[0]} ms, ns={axis[1]}, t0={axis[2]} ms)")
        if dim is None:
            dim = shots[0][1].shape[1]  # the first file fixes the dimension for the others
        all_shots += shots
    dt, ns, t0 = axis
    t = t0 + (ns - 1) * dt
    rec_geom = Geometry([s[1] for s in all_shots], dt=dt, t=t, t0=t0)
    src_geom = Geometry([s[0][None, :] for s in all_shots], dt=dt, t=t, t0=t0)
    if rec_geom.nt != ns:  # guard against round-off in time_axis
        raise ValueError(f"internal: time axis of {rec_geom.nt} samples for {ns} samples in the file")
    return Data(rec_geom, [s[2] for s in all_shots]), src_geom


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


def reset_peak_memory():
    """Reset the peak-memory mark that :func:`peak_memory_mb` reads to the current
    resident size (Linux ≥ 4.0: ``/proc/self/clear_refs``). Returns False where
    unsupported; the peak then keeps counting from the process start."""
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
