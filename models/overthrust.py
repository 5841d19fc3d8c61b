"""SEG/EAGE Overthrust 2D models: locate, download, verify and load.

Two files in the SLIM/JUDI HDF5 layout (datasets ``n``, ``d``, ``o``, ``m``, ``m0``;
``m`` the true and ``m0`` a smooth initial squared slowness in s²/km², float32,
stored (nz, nx) as h5py reads Julia's column-major arrays):

============  ================  =========  ==========================================
``which``     file              n (nx,nz)  notes
============  ================  =========  ==========================================
``"2D"``      overthrust_2D.h5  (801, 207) 20 km × 5.15 km at 25 m, 20 water rows
``"small"``   overthrust_small  (401, 121) window x ∈ [1250, 11250] m, z ≤ 3000 m of
              .h5                          the 2D model (grid columns 50…450, rows
                                           0…120), same 20 water rows
============  ================  =========  ==========================================

Lookup order (:func:`find_overthrust`), first hit wins:

1. ``search``: files or folders given by the caller (a folder is searched directly
   and in its ``models/`` subfolder);
2. ``$TIMEPROBE_DATA/models`` (and ``$TIMEPROBE_DATA``);
3. the ``shared/models`` folder beside the repository checkout;
4. the cache ``cache_dir`` / ``$TIMEPROBE_CACHE`` / ``~/.cache/timeprobe`` (``models/``);
5. for ``"small"`` only: the window is cut from a 2D file found by steps 1–4 and
   written to the cache;
6. download (unless ``download=False`` or ``$TIMEPROBE_OFFLINE`` is set) of the 2D
   file from ``url`` or the public SLIM server into the cache.

If all fail, ``FileNotFoundError`` lists every place tried and how to supply the
file. Every file is checked against the expected layout (``ValueError`` naming
what is wrong). Cached copies always carry the SEG/EAGE copyright notice: a
``COPYRIGHT`` file beside them and a ``copyright`` dataset inside.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

__all__ = ["load_overthrust", "overthrust_pair", "find_overthrust", "verify_overthrust_file",
           "OVERTHRUST_URLS", "OVERTHRUST_FILES", "SMALL_WINDOW", "default_cache_dir"]

# Public SLIM copies of the 2D model (n, d, o, m, m0). The JUDI and TimeProbeSeismic
# scripts fetch `overthrust_model_2D.h5`; `overthrust_2D.h5` is the name the project
# uses locally, tried second in case the server also carries it under that name.
_PUBLIC_URLS = (
    "ftp://slim.gatech.edu/data/SoftwareRelease/WaveformInversion.jl/2DFWI/overthrust_model_2D.h5",
    "ftp://slim.gatech.edu/data/SoftwareRelease/WaveformInversion.jl/2DFWI/overthrust_2D.h5",
)
OVERTHRUST_URLS = _PUBLIC_URLS  # tried in order after a user-given url

OVERTHRUST_FILES = {"2D": "overthrust_2D.h5", "small": "overthrust_small.h5"}
_SHAPES = {"2D": (801, 207), "small": (401, 121)}
_SPACING = (25.0, 25.0)
# (x slice, z slice) of the 2D grid that makes up the small model (verified equal, m and m0)
SMALL_WINDOW = (slice(50, 451), slice(0, 121))

# Attribution written with every cached copy when the original COPYRIGHT file is not at
# hand (a download). It states the owners and the reference; the full notice travels
# with the files distributed by SLIM.
_NOTICE = """SEG/EAGE 3D Overthrust velocity model (2D slice used by timeprobe)

Copyright: Society of Exploration Geophysicists (SEG) and the European Association of
Geoscientists and Engineers (EAGE).

Reference: F. Aminzadeh, N. Burkhard, T. Kunz, L. Nicoletis and F. Rocca,
3-D Modeling Project: 3rd report, The Leading Edge 14(2), 1995,
https://library.seg.org/doi/abs/10.1190/1.1437102

2D slice and smooth initial model as distributed by the SLIM group (Georgia Institute of
Technology) with JUDI: {source}

Keep this notice with any copy of the model files.
"""


def default_cache_dir(cache_dir=None):
    """Cache folder: ``cache_dir``, else ``$TIMEPROBE_CACHE``, else ``~/.cache/timeprobe``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TIMEPROBE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "timeprobe"


def _shared_models_dir():
    # repo/models/overthrust.py -> repo/.. /shared/models (the folder beside the checkout)
    return Path(__file__).resolve().parents[2] / "shared" / "models"


def _check_which(which):
    if which not in OVERTHRUST_FILES:
        raise ValueError(f"which must be one of {sorted(OVERTHRUST_FILES)}, got {which!r}")


def _is_file_arg(p):
    return p.is_file() or p.suffix.lower() in (".h5", ".hdf5", ".hdf")


def _grid_size(path):
    """``n`` of an HDF5 file in the SLIM layout, or None if unreadable."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return tuple(int(v) for v in np.ravel(f["n"][()]))
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _candidates(which, search, use_defaults, cache_dir):
    """Ordered (path, description) candidates for the file of ``which``.

    Explicit files given in ``search`` must exist (``FileNotFoundError`` otherwise: a
    typo should not silently fall back to another copy); they are candidates for
    ``which`` when their name is the standard one, or when their grid size ``n`` is
    that of ``which`` (so a file saved under another name, e.g. SLIM's
    ``overthrust_model_2D.h5``, is recognised), or when their size is unknown (the
    layout check then reports what is wrong).
    """
    name = OVERTHRUST_FILES[which]
    out = []
    if search is not None:
        items = [search] if isinstance(search, (str, os.PathLike)) else list(search)
        for item in items:
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"search entries must be paths (str or os.PathLike), got {type(item).__name__}")
            p = Path(item).expanduser()
            if _is_file_arg(p):
                if not p.is_file():
                    raise FileNotFoundError(f"model file not found: {p}")
                n = _grid_size(p)
                known = {v: k for k, v in _SHAPES.items()}
                if p.name == name or known.get(n) == which or n not in known:
                    out.append((p, "explicit path"))
            else:
                out += [(p / name, "search folder"), (p / "models" / name, "search folder")]
    if use_defaults:
        env = os.environ.get("TIMEPROBE_DATA")
        if env:
            out += [(Path(env).expanduser() / "models" / name, "$TIMEPROBE_DATA/models"),
                    (Path(env).expanduser() / name, "$TIMEPROBE_DATA")]
        out.append((_shared_models_dir() / name, "shared/models beside the repository"))
    out.append((default_cache_dir(cache_dir) / "models" / name, "cache"))
    return out


def verify_overthrust_file(path, which=None):
    """Check that ``path`` is an HDF5 file in the SLIM layout (and, with ``which``, of the right size).

    Checks: datasets ``n``, ``d``, ``o``, ``m``, ``m0`` present; ``n`` two positive
    integers (and equal to the known size of ``which``); ``m``/``m0`` of shape
    ``n`` reversed (or ``n``), finite, positive, and plausible squared slowness
    (velocity ``1/√m`` between 0.3 and 10 km/s — values in m/s or km/s fail).
    Returns ``n`` as a tuple. Raises ``ValueError`` naming the problem.
    """
    from timeprobe.io import open_hdf5
    path = Path(path)
    with open_hdf5(path, "model") as f:
        missing = [k for k in ("n", "d", "o", "m", "m0") if k not in f]
        if missing:
            raise ValueError(f"{path}: missing dataset(s) {missing}; the SLIM/JUDI Overthrust layout has "
                             f"n, d, o, m, m0 (found {sorted(f.keys())})")
        n = tuple(int(v) for v in np.ravel(f["n"][()]))
        d = tuple(float(v) for v in np.ravel(f["d"][()]))
        if len(n) != 2 or min(n) <= 0:
            raise ValueError(f"{path}: n = {n} is not a 2D grid size")
        if len(d) != 2 or min(d) <= 0:
            raise ValueError(f"{path}: d = {d} is not a 2D grid spacing in m")
        if which is not None and n != _SHAPES[which]:
            raise ValueError(f"{path}: n = {n}, but the Overthrust {which!r} model has n = {_SHAPES[which]}")
        for key in ("m", "m0"):
            a = f[key]
            if a.shape not in (n[::-1], n):
                raise ValueError(f"{path}: dataset {key!r} has shape {a.shape}, expected (nz, nx) = {n[::-1]}")
            v = np.asarray(a[()], dtype=np.float64)
            if not np.all(np.isfinite(v)) or np.any(v <= 0):
                raise ValueError(f"{path}: dataset {key!r} has non-finite or non-positive values")
            vp = 1.0 / np.sqrt(v)
            if vp.min() < 0.3 or vp.max() > 10:
                raise ValueError(f"{path}: dataset {key!r} gives velocities {vp.min():.3g}–{vp.max():.3g} km/s; "
                                 f"expected squared slowness in s²/km² (vp ≈ 1.5–6 km/s)")
    return n


def _write_notice(folder, source_file=None, url=None):
    """Put a COPYRIGHT file in ``folder``: the original beside ``source_file`` if any, else the attribution."""
    target = Path(folder) / "COPYRIGHT"
    if target.exists():
        return target
    if source_file is not None:
        original = Path(source_file).parent / "COPYRIGHT"
        if original.is_file():
            shutil.copyfile(original, target)
            return target
    target.write_text(_NOTICE.format(source=url or "unknown source"))
    return target


def _notice_text(folder):
    p = Path(folder) / "COPYRIGHT"
    return p.read_text() if p.is_file() else _NOTICE.format(source="unknown source")


def _ensure_copyright_dataset(path, text):
    import h5py
    with h5py.File(path, "a") as f:
        if "copyright" not in f:
            f.create_dataset("copyright", data=np.bytes_(text.encode("utf-8")))


def _cut_small(src_2d, dest):
    """Write the small model (the 2D model's window :data:`SMALL_WINDOW`) to ``dest``."""
    import h5py
    sx, sz = SMALL_WINDOW
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(src_2d, "r") as f:
        n = tuple(int(v) for v in f["n"][()])
        arrays = {}
        for key in ("m", "m0"):
            a = np.asarray(f[key][()])
            if a.shape == n[::-1]:
                a = a.T  # (nx, nz)
            arrays[key] = a[sx, sz]
        d = np.asarray(f["d"][()])
    tmp = dest.with_name(dest.name + ".part")
    with h5py.File(tmp, "w") as g:
        nx, nz = arrays["m"].shape
        g["n"] = np.array([nx, nz], dtype=np.int64)
        g["d"] = d
        g["o"] = np.zeros(2)
        for key, a in arrays.items():
            g[key] = np.ascontiguousarray(a.T).astype(np.float32)  # stored (nz, nx) like the SLIM files
    os.replace(tmp, dest)
    return dest


def _download(urls, dest, timeout):
    """Fetch the first URL that works into ``dest`` (atomically). Returns (url, errors)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out)
            try:
                verify_overthrust_file(tmp, "2D")
            except ValueError as e:
                raise ValueError(f"downloaded file has the wrong layout: {e}") from None
            os.replace(tmp, dest)
            return url, errors
        except (OSError, ValueError, urllib.error.URLError) as e:
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return None, errors


def find_overthrust(which="small", search=None, cache_dir=None, download=True, url=None,
                    use_defaults=True, timeout=60):
    """Path of the Overthrust file ``which`` ("small" or "2D"), found, derived or downloaded.

    See the module docstring for the lookup order. ``search``: a file or folder or a
    list of them, tried first. ``url``: a URL (``ftp://``, ``http(s)://``, ``file://``)
    of the **2D** file, tried before the public SLIM addresses. ``use_defaults=False``
    skips ``$TIMEPROBE_DATA`` and the ``shared`` folder (only ``search`` and the
    cache are searched). Downloads and derived
    files go to ``<cache>/models`` together with a ``COPYRIGHT`` notice.
    """
    _check_which(which)
    tried = []

    def first_existing(w):
        for p, why in _candidates(w, search, use_defaults, cache_dir):
            tried.append(f"{p} ({why})")
            if p.is_file():
                return p
        return None

    found = first_existing(which)
    if found is not None:
        verify_overthrust_file(found, which)
        return found

    cache = default_cache_dir(cache_dir) / "models"
    if which == "small":
        src = first_existing("2D")
        if src is not None:
            verify_overthrust_file(src, "2D")
            return _make_small(src, cache)

    offline = os.environ.get("TIMEPROBE_OFFLINE", "").strip() not in ("", "0")
    errors = []
    if download and not offline:
        urls = ([url] if url else []) + list(OVERTHRUST_URLS)
        dest2d = cache / OVERTHRUST_FILES["2D"]
        got, errors = _download(urls, dest2d, timeout)
        if got is not None:
            _write_notice(cache, url=got)
            _ensure_copyright_dataset(dest2d, _notice_text(cache))
            return dest2d if which == "2D" else _make_small(dest2d, cache)
    elif download:
        errors = ["download skipped: $TIMEPROBE_OFFLINE is set"]
    else:
        errors = ["download skipped: download=False"]

    name = OVERTHRUST_FILES[which]
    looked = "\n  ".join(tried)
    failed = "\n  ".join(errors)
    raise FileNotFoundError(
        f"Overthrust model {which!r} ({name}) not found. Looked in:\n  {looked}\n"
        f"Download:\n  {failed}\n"
        f"Supply it by one of: load_overthrust({which!r}, search='/path/to/{name}' or a folder holding it); "
        f"setting TIMEPROBE_DATA to a folder with models/{name}; copying it to {cache}; or passing "
        f"url='file:///path/to/overthrust_2D.h5' (or another mirror of {_PUBLIC_URLS[0]})."
        + (" The small model is cut from the 2D file, so the 2D file alone is enough." if which == "small" else ""))


def _make_small(src_2d, cache):
    cache = Path(cache)
    dest = cache / OVERTHRUST_FILES["small"]
    _cut_small(src_2d, dest)
    _write_notice(cache, source_file=src_2d)
    _ensure_copyright_dataset(dest, _notice_text(cache))
    verify_overthrust_file(dest, "small")
    return dest


def load_overthrust(which="small", key="m", search=None, cache_dir=None, download=True, url=None,
                    use_defaults=True, **model_kwargs):
    """The Overthrust model ``which`` as a :class:`timeprobe.Model`.

    Parameters
    ----------
    which : {"small", "2D"}
        401×121 window (10 km × 3 km) or the full 801×207 slice, both at 25 m.
    key : {"m", "m0"}
        True model or the smooth initial model of the file.
    search, cache_dir, download, url, use_defaults
        See :func:`find_overthrust`.
    **model_kwargs
        Passed to :class:`timeprobe.Model` (``nbl``, ``space_order``, ``dt``...).

    Returns
    -------
    timeprobe.Model
        Squared slowness (s²/km²) of shape (nx, nz), spacing (25, 25) m, origin (0, 0).
    """
    if key not in ("m", "m0"):
        raise ValueError(f"key must be 'm' (true model) or 'm0' (initial model), got {key!r}")
    from timeprobe.model import Model
    path = find_overthrust(which, search=search, cache_dir=cache_dir, download=download, url=url,
                           use_defaults=use_defaults)
    return Model.from_h5(path, key=key, **model_kwargs)


def overthrust_pair(which="small", search=None, cache_dir=None, download=True, url=None,
                    use_defaults=True, **model_kwargs):
    """``(model_true, model_initial)`` from datasets ``m`` and ``m0`` of one file.

    Arguments as :func:`load_overthrust`. Unless ``dt`` is given, both models get
    the same time step, the smaller of their critical steps, so that data modelled
    in either live on the same computational time axis.
    """
    from timeprobe.model import Model
    path = find_overthrust(which, search=search, cache_dir=cache_dir, download=download, url=url,
                           use_defaults=use_defaults)
    fixed_dt = model_kwargs.pop("dt", None)
    true = Model.from_h5(path, key="m", **model_kwargs)
    init = Model.from_h5(path, key="m0", **model_kwargs)
    dt = fixed_dt if fixed_dt is not None else min(true.critical_dt, init.critical_dt)
    true.dt = dt
    init.dt = dt
    return true, init
