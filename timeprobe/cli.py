"""The ``timeprobe`` command: from SEG-Y shot records to FWI and RTM.

::

    timeprobe info FILE.segy… [--plot survey.png]
    timeprobe example-config fwi|rtm --data FILE.segy… [--model MODEL.h5] [--iterations N] > run.toml
    timeprobe fwi run.toml --out DIR [--resume]
    timeprobe rtm run.toml --out DIR

``info`` summarises the survey (shots, traces, sampling, t0, coordinate extent and
scalars, offsets) and can draw the acquisition and one gather. ``example-config``
prints a complete, commented TOML configuration derived from the data (grid spacing
from the data's bandwidth, a 1D starting model v(z) covering the survey unless a
model file is given, frequency bands, bounds) that runs as is. ``fwi`` runs
:func:`timeprobe.fwi` (multiscale, random shot batches, exact or probed gradients)
and ``rtm`` :func:`timeprobe.rtm`; both write ``DIR/result.h5`` (dataset ``m``: the
latest model in squared slowness s²/km², and ``iteration``), QC figures under
``DIR/qc/`` at every iteration (every shot for RTM) and the configuration used, and
refuse a non-empty ``DIR`` unless ``--resume`` (FWI) continues the run stored there.

The configuration file (TOML; Python ≥ 3.11 reads it with :mod:`tomllib`) has the
sections ``[data]``, ``[model]``, ``[source]``, ``[preprocessing]``, ``[fwi]`` or
``[rtm]`` and ``[output]``; :data:`SCHEMA` lists every key with its default. In the
file, frequencies are in **Hz** (the keys say so: ``f0_hz``, ``bands_hz``); the
Python API takes kHz.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "example_config", "load_config", "SCHEMA"]

# section -> key -> (types, default); default None = optional (absent)
_NUM = (int, float)
SCHEMA = {
    "data": {"files": (list, None), "group_by": (str, "auto"), "depth_sign": (int, 1), "units": (str, "auto")},
    "model": {"file": (str, None), "key": (str, "m0"), "spacing": (_NUM, None), "origin": (list, [0.0, 0.0]),
              "shape": (list, None), "v0": (_NUM, 1.5), "gradient": (_NUM, 0.5), "smooth": (_NUM, 0.0),
              "nbl": (int, 40), "space_order": (int, 8)},
    "source": {"wavelet": (str, "estimate"), "f0_hz": (_NUM, 8.0), "delay_ms": (_NUM, None),
               "per_shot": (bool, False), "fmax_hz": (_NUM, None), "length_ms": (_NUM, None)},
    "preprocessing": {"reject_bad_traces": (bool, True), "mute_velocity": (_NUM, None), "mute_t0": (_NUM, 0.0),
                      "mute_taper": (_NUM, 20.0), "bandpass_hz": (list, None), "gain_power": (_NUM, 0.0),
                      "normalize": (bool, False)},
    "fwi": {"bands_hz": (list, None), "iterations": ((int, list), 10), "batch": (int, 0), "ps": (int, 16),
            "budget_mb": (_NUM, 0.0), "mode": (str, "QR"), "seed": (int, 1), "vmin": (_NUM, None), "vmax": (_NUM, None),
            "water_depth": (_NUM, 0.0), "optimizer": (str, "spg"), "workers": (int, 1), "scheduler": (str, "")},
    "rtm": {"ps": (int, 64), "ic": (str, "isic"), "mode": (str, "QR"), "seed": (int, 1)},
    "output": {"plots": (bool, True)},
}


# =========================================================================== config
def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list",
                        bool: "true/false"}[t] for t in types)


def load_config(path, kind):
    """Read and check a configuration file; returns ``{section: {key: value}}`` with defaults filled in.

    ``kind`` is ``"fwi"`` or ``"rtm"``. Unknown sections or keys, values of the wrong
    type and missing required keys raise ``ValueError`` naming the section and key.
    Relative paths in ``[data] files`` and ``[model] file`` are taken relative to the
    configuration file.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    allowed = {"data", "model", "source", "preprocessing", kind, "output"}
    for section in raw:
        if section not in allowed:
            raise ValueError(f"{path}: unknown section [{section}] for a {kind} run; sections: "
                             f"{', '.join(sorted(allowed))}")
        if not isinstance(raw[section], dict):
            raise ValueError(f"{path}: [{section}] must be a table of keys")
    cfg = {}
    for section in allowed:
        given = raw.get(section, {})
        schema = SCHEMA[section]
        for key in given:
            if key not in schema:
                raise ValueError(f"{path}: [{section}] {key}: unknown key; valid keys: {', '.join(schema)}")
        cfg[section] = {}
        for key, (types, default) in schema.items():
            if key in given:
                v = given[key]
                ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in (
                    types if isinstance(types, tuple) else (types,)))
                if not ok:
                    raise ValueError(f"{path}: [{section}] {key} must be {_type_name(types)}, got {v!r}")
                cfg[section][key] = v
            else:
                cfg[section][key] = default
    files = cfg["data"]["files"]
    if not files:
        raise ValueError(f"{path}: [data] files: give the SEG-Y file(s) to read, e.g. files = [\"shots.segy\"]")
    cfg["data"]["files"] = [str((path.parent / f).resolve()) if not Path(f).is_absolute() else f for f in files]
    if cfg["model"]["file"] is not None and not Path(cfg["model"]["file"]).is_absolute():
        cfg["model"]["file"] = str((path.parent / cfg["model"]["file"]).resolve())
    if cfg["model"]["file"] is None:
        for key in ("spacing", "shape"):
            if cfg["model"][key] is None:
                raise ValueError(f"{path}: [model] {key} is required for the 1D starting model (or give "
                                 f"[model] file = \"model.h5\")")
    cfg["path"] = str(path)
    return cfg


def _nice_spacing(h):
    """The largest of 1, 2, 2.5, 5 × 10^k (m) not above ``h``."""
    k = 10.0 ** math.floor(math.log10(h))
    for f in (5.0, 2.5, 2.0, 1.0):
        if f * k <= h:
            return f * k
    return k


def _survey_band(d):
    """(peak, highest) frequency of the data in Hz (:func:`timeprobe.preprocessing.frequency_band`)."""
    from .preprocessing import frequency_band
    f_peak, f_high = frequency_band(d)
    return 1e3 * f_peak, 1e3 * f_high


def _toml_value(v):
    """TOML literal of a Python value (floats always with a decimal point)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return repr(float(round(float(v), 6)))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def _line(key, value, comment="", commented=False):
    text = f"{'# ' if commented else ''}{key} = {_toml_value(value)}"
    return f"{text:<29} # {comment}" if comment else text


def example_config(kind, data_files, model_file=None, iterations=None, group_by="auto", depth_sign=1,
                   spacing=None, bands_hz=None):
    """A complete, commented TOML configuration for ``kind`` ("fwi" or "rtm") derived from the data.

    The grid spacing gives 5 points per shortest wavelength (1.5 km/s at the highest
    frequency above 1 % of the data's spectral peak, at most 25 m); without
    ``model_file`` the starting model is ``v(z) = 1.5 + 0.5 z`` km/s (z in km) on a grid
    covering the sources and receivers plus 10 % (≥ 5 cells) on each side, as deep as
    half the largest offset or the depth a zero-offset reflection at the last sample
    comes from. FWI bands: low-pass corners at ¼, ½ and 1 × that highest frequency.
    ``spacing`` (m) and ``bands_hz`` (Hz) override those choices (a coarser grid and
    fewer, lower bands for a quick look). A ``model_file`` written by ``timeprobe fwi``
    (``result.h5``) gives its latest model ``m``; a SLIM/JUDI file its initial model
    ``m0`` (else ``m``).
    """
    from .io import read_segy
    if kind not in ("fwi", "rtm"):
        raise ValueError(f"kind must be 'fwi' or 'rtm', got {kind!r}")
    if isinstance(data_files, (str, Path)):
        data_files = [data_files]
    files = [str(Path(f).resolve()) for f in data_files]
    d, src = read_segy(files, group_by=group_by, depth_sign=depth_sign, dim=2)
    live = [i for i, a in enumerate(d.arrays) if a.any()]
    if not live:
        raise ValueError(f"every sample of {', '.join(files)} is zero: no configuration can be derived")
    f_peak, f_high = _survey_band(d[live])
    rec = np.concatenate(d.geometry.coordinates)
    pts = np.concatenate([rec, np.concatenate(src.coordinates)])
    offsets = np.concatenate([np.abs(d.geometry.coordinates[i][:, 0] - src.coordinates[i][0, 0])
                              for i in range(d.nshots)])
    v0, grad = 1.5, 0.5
    h = _nice_spacing(min(25.0, v0 * 1e3 / max(f_high, 1.0) / 5.0)) if spacing is None else float(spacing)
    if not h > 0:
        raise ValueError(f"--spacing must be positive (m), got {spacing}")
    width = pts[:, 0].max() - pts[:, 0].min()
    margin = max(5 * h, 0.1 * width)
    x0 = h * math.floor((pts[:, 0].min() - margin) / h)
    x1 = h * math.ceil((pts[:, 0].max() + margin) / h)
    z0 = min(0.0, h * math.floor(pts[:, 1].min() / h))
    zmax = max(pts[:, 1].max() + 10 * h, 0.5 * offsets.max(), 0.5 * v0 * d.geometry.time[-1], z0 + 20 * h)
    nx, nz = int(round((x1 - x0) / h)) + 1, int(math.ceil((zmax - z0) / h)) + 1
    vbottom = v0 + grad * (zmax / 1e3)
    f_max = min(f_high, 0.4e3 / d.dt)
    bands = [round(f_max / 4, 1), round(f_max / 2, 1), round(f_max, 1)] if bands_hz is None else \
        [float(b) for b in bands_hz]
    its = 10 if iterations is None else int(iterations)
    if its < 1:
        raise ValueError(f"--iterations must be positive, got {its}")
    model_key = None
    if model_file is not None:
        import h5py
        from .model import Model
        model_file = str(Path(model_file).resolve())
        try:
            with h5py.File(model_file, "r") as f:
                made_here = str(f.attrs.get("description", "")).startswith("timeprobe FWI")
                model_key = "m" if made_here or "m0" not in f else "m0"
        except OSError as e:
            raise ValueError(f"--model {model_file}: not a readable HDF5 file ({e})") from None
        vbottom = float(Model.from_h5(model_file, key=model_key, nbl=0, space_order=2).vp.max())
    out = [
        f"# timeprobe {kind} configuration, generated by `timeprobe example-config {kind}` from",
        f"# {d.nshots} shot(s), {len(rec)} traces, {d.geometry.nt} samples at {d.dt:g} ms "
        f"(data spectrum: peak {f_peak:.1f} Hz, above 1 % of the peak up to {f_high:.1f} Hz).",
        "# Units: m, ms, km/s; frequencies in Hz in this file. Run it as is:",
        f"#     timeprobe {kind} THIS.toml --out RUN_DIR"
        + ("      (continue a stopped run: add --resume)" if kind == "fwi" else ""),
        "",
        "[data]",
        _line("files", files, "SEG-Y shot records, read in this order"),
        _line("group_by", group_by, 'traces -> shots: "auto" (FFID + source position), "ffid", "source"'),
        _line("depth_sign", depth_sign, "1: elevation fields hold depth below the surface (JUDI/SLIM); "
                                        "-1: SEG-Y elevations (up)"),
        _line("units", "auto", 'coordinates: "auto" (binary header MeasurementSystem), "m" or "ft"'),
        "",
        "[model]" + ("                       # migration model" if kind == "rtm" else
                     "                       # starting model"),
    ]
    if model_key is not None:
        out += [_line("file", model_file, "SLIM/JUDI HDF5 (datasets n, d, o and squared slowness s²/km²)"),
                _line("key", model_key, "dataset of the model"),
                "# without `file`: a 1D model v(z) = v0 + gradient * z on the grid below"]
    else:
        out += [_line("file", "model.h5", "SLIM/JUDI HDF5 (n, d, o, m[, m0]) instead of the 1D model below",
                      commented=True),
                _line("key", "m0", "dataset of the model", commented=True)]
    one_d = model_key is not None  # the 1D model's keys, commented out when a file gives the model
    out += [
        _line("spacing", float(h), (f"m: 5 points per shortest wavelength ({v0} km/s, {f_high:.0f} Hz)"
                                    if spacing is None else
                                    f"m (chosen): 5 points per wavelength up to {v0 * 1e3 / (5 * h):.0f} Hz "
                                    f"at {v0} km/s"), one_d),
        _line("origin", [float(x0), float(z0)], "m: (x, z) of the first grid point", one_d),
        _line("shape", [nx, nz], "grid points (nx, nz): the survey + margins, depth of the record's reach", one_d),
        _line("v0", v0, "km/s at z = 0", one_d),
        _line("gradient", grad, "km/s per km of depth", one_d),
        _line("smooth", 0.0, "m: Gaussian smoothing of the model (0: none)"),
        _line("nbl", 40, "absorbing-layer points on every side"),
        _line("space_order", 8, "finite-difference order in space"),
        "",
        "[source]",
        _line("wavelet", "estimate", '"estimate" (least squares in the model above) or "ricker"'),
        _line("per_shot", False, "estimate one wavelet per shot instead of one for the survey"),
        _line("f0_hz", round(f_peak, 1), 'Hz: Ricker peak frequency (wavelet = "ricker")'),
        _line("delay_ms", 125.0, "ms: Ricker peak time (default 1/f0)", commented=True),
        _line("fmax_hz", 40.0, "Hz: band of the impulse responses (default from the data)", commented=True),
        _line("length_ms", float(round(4e3 / f_peak, -1)), "ms: keep the first length_ms of the estimate",
              commented=True),
        "",
        "[preprocessing]",
        _line("reject_bad_traces", True, "drop dead traces and traces 10x stronger than the median"),
    ]
    if kind == "rtm":  # the direct wave only images the acquisition surface: mute it
        mute_t0 = float(round(1.5e3 / f_peak))
        out += [_line("mute_velocity", v0, "km/s: zero what arrives before mute_t0 + offset / mute_velocity"),
                _line("mute_t0", mute_t0, "ms: 1.5 periods of the peak frequency after the direct wave"),
                _line("mute_taper", 20.0, "ms")]
    else:
        out += [_line("mute_velocity", v0, "km/s: zero what arrives before mute_t0 + offset / mute_velocity",
                      commented=True),
                _line("mute_t0", -50.0, "ms; FWI: keep the line ahead of the first arrivals (modelled data "
                                        "are not muted)", commented=True),
                _line("mute_taper", 20.0, "ms", commented=True)]
    out += [
        _line("bandpass_hz", [2.0, float(round(f_high))], "Hz: zero-phase Butterworth band-pass", commented=True),
        _line("gain_power", 0.0, "RTM only: multiply by (t / 1 s)^power (0: off)"),
        _line("normalize", False, "RTM only: divide every trace by its L2 norm"),
        "",
    ]
    if kind == "fwi":
        out += [
            "[fwi]",
            _line("bands_hz", bands, "Hz: low-pass corners, low first; pairs [fmin, fmax]; 0: unfiltered"),
            _line("iterations", [its] * len(bands), "per band (one number: the same for every band)"),
            _line("batch", 0, "shots per iteration, drawn afresh every iteration (0: all shots)"),
            _line("ps", 16, "probes per gradient (time probing); 0: exact (stores the wavefield)"),
            _line("budget_mb", 0, "MiB per shot: > 0 lets the gradient choose storage or probing within it (set ps = 0)"),
            _line("mode", "QR", "probe design"),
            _line("seed", 1, "seed of the shot batches and the probes"),
            _line("vmin", round(0.9 * v0, 2), "km/s: bounds of the inversion"),
            _line("vmax", round(max(1.5 * vbottom, v0 + 1.0), 2), "km/s"),
            _line("water_depth", 0.0, "m: top layer kept fixed (water)"),
            _line("optimizer", "spg", '"spg" (spectral projected gradient) or "lbfgs"'),
            _line("workers", 1, "Dask workers on this machine (>1: shots in parallel)"),
            _line("scheduler", "", "address of a running Dask scheduler (instead of workers)"),
        ]
    else:
        out += [
            "[rtm]",
            _line("ps", 64, "probes per shot (time probing); 0: exact (stores the wavefield)"),
            _line("ic", "isic", 'imaging condition: "as", "isic" or "kspace"'),
            _line("mode", "QR", "probe design"),
            _line("seed", 1, "seed of the probes"),
        ]
    out += ["", "[output]", _line("plots", True, "QC figures under RUN_DIR/qc"), ""]
    return "\n".join(out)


# =========================================================================== inputs
def _starting_model(cfg):
    from .model import Model, smooth_model
    mc = cfg["model"]
    kw = dict(nbl=mc["nbl"], space_order=mc["space_order"])
    if mc["file"] is not None:
        model = Model.from_h5(mc["file"], key=mc["key"], **kw)
    else:
        shape = mc["shape"]
        if len(shape) != 2 or not all(isinstance(n, int) and n >= 3 for n in shape):
            raise ValueError(f"[model] shape must be two integers >= 3 (nx, nz), got {shape}")
        if len(mc["origin"]) != 2:
            raise ValueError(f"[model] origin must be two numbers (x, z) in m, got {mc['origin']}")
        if not mc["spacing"] > 0:
            raise ValueError(f"[model] spacing must be positive (m), got {mc['spacing']}")
        z = mc["origin"][1] + mc["spacing"] * np.arange(shape[1])
        vz = mc["v0"] + mc["gradient"] * np.clip(z, 0.0, None) / 1e3
        if vz.min() <= 0:
            raise ValueError(f"[model] v0 = {mc['v0']} km/s and gradient = {mc['gradient']} give non-positive "
                             f"velocities")
        vp = np.broadcast_to(vz, tuple(shape)).astype(np.float32)
        model = Model(vp=vp, spacing=(float(mc["spacing"]),) * 2, origin=tuple(float(o) for o in mc["origin"]), **kw)
    if mc["smooth"]:
        model = model.with_m(smooth_model(model.m, mc["smooth"], model.spacing))
    return model


def _read_inputs(cfg, log):
    """Observed data, sources and starting model from a configuration.

    The data returned have gone through bad-trace rejection and the band-pass, the
    convolutional steps the wavelet estimate must see too; :func:`_condition` applies the
    rest (mute, gain, normalisation) after the wavelet is known.
    """
    from . import preprocessing as pp
    from .io import read_segy
    dc, pc = cfg["data"], cfg["preprocessing"]
    d, src, projection = read_segy(dc["files"], group_by=dc["group_by"], depth_sign=dc["depth_sign"], dim=2,
                                   units=dc["units"], nonfinite="zero", return_projection=True)
    if projection is not None:
        log(f"crooked line projected onto azimuth {projection.azimuth:.1f}°: sources/receivers up to "
            f"{projection.max_distance:.1f} m off the line (RMS {projection.rms_distance:.1f} m)")
    log(f"data: {d.nshots} shot(s), {sum(d.geometry.npoints(i) for i in range(d.nshots))} traces, "
        f"{d.geometry.nt} samples at {d.dt:g} ms")
    live = [i for i, a in enumerate(d.arrays) if a.any()]
    if not live:
        raise ValueError(f"every sample of {', '.join(dc['files'])} is zero: nothing to invert")
    if len(live) < d.nshots:
        log(f"skipping shot(s) {[i for i in range(d.nshots) if i not in live]}: every sample is zero")
        d, src = d[live], src[live]
    if pc["reject_bad_traces"]:
        d, kept = pp.reject_bad_traces(d)
        dropped = sum(int((~k).sum()) for k in kept)
        if dropped:
            log(f"rejected {dropped} bad trace(s)")
    if pc["bandpass_hz"] is not None:
        corners = list(pc["bandpass_hz"])
        if len(corners) != 2:
            raise ValueError(f"[preprocessing] bandpass_hz must be [fmin, fmax] in Hz (0 for an open side), "
                             f"got {corners}")
        d = pp.bandpass(d, corners[0] / 1e3 if corners[0] else None, corners[1] / 1e3 if corners[1] else None)
    model = _starting_model(cfg)
    where = f"(grid x {model.domain_bounds[0]} m, z {model.domain_bounds[1]} m; set [model] origin/shape)"
    try:
        src.check_inside(model, "source")
        d.geometry.check_inside(model, "receiver")
    except ValueError as e:
        raise ValueError(f"{e} {where}") from None
    return d, src, model


def _condition(cfg, d, src):
    """Mute, gain and trace normalisation of ``[preprocessing]`` (after the wavelet estimate)."""
    from . import preprocessing as pp
    pc = cfg["preprocessing"]
    if pc["mute_velocity"] is not None:
        d = pp.top_mute(d, src, pc["mute_velocity"], t0=pc["mute_t0"], taper=pc["mute_taper"])
    if pc["gain_power"]:
        d = pp.time_gain(d, pc["gain_power"])
    if pc["normalize"]:
        d = pp.normalize_traces(d)
    return d


def _wavelet(cfg, model, src, d, log):
    from .geometry import Data, ricker
    sc = cfg["source"]
    if sc["wavelet"] == "ricker":
        f0 = sc["f0_hz"] / 1e3
        w = ricker(f0, d.dt, d.geometry.t, t0_ms=d.geometry.t0, delay_ms=sc["delay_ms"])
        return Data(src.with_time(dt=d.dt, t=d.geometry.t, t0=d.geometry.t0), [w] * d.nshots)
    if sc["wavelet"] != "estimate":
        raise ValueError(f"[source] wavelet must be \"estimate\" or \"ricker\", got {sc['wavelet']!r}")
    from .wavelet import estimate_wavelet
    log("estimating the source wavelet in the starting model…")
    fmax = None if sc["fmax_hz"] is None else sc["fmax_hz"] / 1e3
    return estimate_wavelet(model, src, d, per_shot=sc["per_shot"], fmax=fmax, length=sc["length_ms"])


def _save_wavelet(q, out, plots):
    """``DIR/wavelet.h5`` (time axis in ms and one wavelet per shot) and ``DIR/qc/wavelet.png``; kept if
    present (a resumed run re-derives the same wavelet: the run's fingerprint includes it)."""
    from .io import write_snapshot
    if (out / "wavelet.h5").exists():
        return
    w = np.stack([a[:, 0] for a in q.arrays], 1)
    write_snapshot(out / "wavelet.h5", dict(time=q.geometry.time, wavelet=w),
                   attrs=dict(dt=q.dt, t0=q.geometry.t0, description="source wavelet(s) (nt, nshots), time in ms"))
    if not plots:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (out / "qc").mkdir(exist_ok=True)
    fig, axs = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
    t = q.geometry.time
    n = 4 * len(t)
    f = np.fft.rfftfreq(n, q.dt) * 1e3
    for j in range(w.shape[1] if w.shape[1] <= 8 and not np.all(w == w[:, :1]) else 1):
        axs[0].plot(t, w[:, j], lw=1)
        spec = np.abs(np.fft.rfft(w[:, j], n))
        axs[1].plot(f, spec / (spec.max() or 1.0), lw=1)
    axs[0].set_xlabel("time (ms)")
    axs[0].set_title("source wavelet")
    axs[1].set_xlabel("frequency (Hz)")
    axs[1].set_xlim(0, min(f[-1], 4 * f[np.argmax(np.abs(np.fft.rfft(w[:, 0], n)))] + 10))
    axs[1].set_title("amplitude spectrum (normalised)")
    fig.savefig(out / "qc" / "wavelet.png", dpi=80)
    plt.close(fig)


def _client(section):
    if section.get("scheduler"):
        from .parallel import get_client
        return get_client(section["scheduler"]), False
    if section.get("workers", 1) > 1:
        from .parallel import local_client
        return local_client(section["workers"]), True
    return None, False


def _check_out(out, resume):
    """The run folder, checked before any work (created by :func:`_save_config` once the inputs are read,
    so a configuration error leaves nothing behind)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise FileExistsError(f"--out {out} is not empty; results are never overwritten: choose a new folder"
                              + (", or add --resume to continue the run stored there" if resume is not None else ""))
    return out


def _save_config(cfg, out):
    """Create the run folder and keep the configuration in it (config.toml; config-2.toml… on resumption)."""
    out.mkdir(parents=True, exist_ok=True)
    src = Path(cfg["path"])
    target = out / "config.toml"
    k = 2
    while target.exists():
        target = out / f"config-{k}.toml"
        k += 1
    shutil.copyfile(src, target)


# =========================================================================== commands
def _cmd_info(args, log):
    from .io import segy_summary
    s = segy_summary(args.files, group_by=args.group_by, depth_sign=args.depth_sign)
    ax = ["x", "z"] if s["dim"] == 2 else ["x", "y", "z"]
    log(f"files:        {', '.join(s['files'])}")
    log(f"shots:        {s['shots']}  ({s['traces']} traces, {s['traces_per_shot'][0]}–{s['traces_per_shot'][1]} "
        f"per shot)")
    log(f"sampling:     {s['samples']} samples at {s['dt']:g} ms, t0 = {s['t0']:g} ms, last sample {s['tmax']:g} ms")
    for name, ext in (("sources", s["source_extent"]), ("receivers", s["receiver_extent"])):
        log(f"{name + ':':<13} " + ", ".join(f"{a} {lo:.2f}…{hi:.2f} m" for a, (lo, hi) in zip(ax, ext)))
    log(f"offsets:      {s['offset_range'][0]:.2f}…{s['offset_range'][1]:.2f} m (horizontal, source to receiver)")
    log(f"scalars:      SourceGroupScalar {s['scalars']['SourceGroupScalar']}, ElevationScalar "
        f"{s['scalars']['ElevationScalar']}; units {', '.join(s['units'])}"
        f" ({'depth below surface' if args.depth_sign == 1 else 'elevation, positive up'} in the elevation fields)")
    if s["projection"] is not None:
        p = s["projection"]
        log(f"line:         not along x; projected onto azimuth {p.azimuth:.1f}° (max {p.max_distance:.1f} m, "
            f"RMS {p.rms_distance:.1f} m off the line)")
    if s["zero_shots"]:
        log(f"zero shots:   {s['zero_shots']} hold only zeros (fwi/rtm skip them)")
    f_peak, f_high = _survey_band(s["data"])
    log(f"spectrum:     peak {f_peak:.1f} Hz, above 1 % of the peak up to {f_high:.1f} Hz")
    if args.plot:
        _plot_survey(s, args.plot, shot=args.shot)
        log(f"figure:       {args.plot}")
    return 0


def _cmd_example(args, log):
    text = example_config(args.kind, args.data, model_file=args.model, iterations=args.iterations,
                          spacing=args.spacing, bands_hz=args.bands,
                          group_by=args.group_by, depth_sign=args.depth_sign)
    print(text)
    return 0


def _cmd_fwi(args, log):
    from .inversion import fwi as run_fwi
    cfg = load_config(args.config, "fwi")
    fc = cfg["fwi"]
    if fc["budget_mb"] and fc["ps"]:
        raise ValueError(f"[fwi] budget_mb = {fc['budget_mb']:g} chooses the gradient itself: set ps = 0")
    if fc["budget_mb"] < 0:
        raise ValueError(f"[fwi] budget_mb must be >= 0 MiB, got {fc['budget_mb']:g}")
    out = _check_out(args.out, args.resume)
    pc = cfg["preprocessing"]
    if pc["gain_power"] or pc["normalize"]:
        raise ValueError("[preprocessing] gain_power and normalize change amplitudes the wave equation does not "
                         "model: FWI would fit them with a wrong model. Use them for RTM only (set gain_power = 0.0 "
                         "and normalize = false)")
    d, src, model0 = _read_inputs(cfg, log)
    q = _wavelet(cfg, model0, src, d, log)
    _save_config(cfg, out)
    _save_wavelet(q, out, cfg["output"]["plots"])
    d = _condition(cfg, d, src)
    # Hz -> kHz; a corner 0 means "none": 0 alone is the unfiltered data, [0, f] a low-pass
    bands = None if fc["bands_hz"] is None else [
        (b / 1e3 if b else None) if isinstance(b, (int, float)) else [v / 1e3 if v else None for v in b]
        for b in fc["bands_hz"]]
    water_rows = int(round(fc["water_depth"] / model0.spacing[-1])) if fc["water_depth"] else 0
    client, own = _client(fc)
    gradient = ("exact gradient" if fc["ps"] == 0 else f"{fc['ps']} probes per gradient") if not fc["budget_mb"] \
        else f"gradients within {fc['budget_mb']:g} MiB per shot"
    log(f"FWI on a {model0.shape[0]}×{model0.shape[1]} grid at {model0.spacing[0]:g} m, {gradient}, results in {out}")
    t0 = time.perf_counter()
    try:
        res = run_fwi(model0, q, d, bands=bands, iterations=fc["iterations"], batch=fc["batch"] or None,
                      ps=fc["ps"] or None, budget_mb=fc["budget_mb"] or None, mode=fc["mode"], seed=fc["seed"],
                      vmin=fc["vmin"], vmax=fc["vmax"],
                      water=water_rows, optimizer=fc["optimizer"], client=client, out=out, resume=args.resume,
                      progress=not args.quiet, plots=cfg["output"]["plots"])
    except KeyboardInterrupt:
        log(f"\ninterrupted. The state after the last completed iteration is in {out}; continue with:\n"
            f"    timeprobe fwi {args.config} --out {out} --resume")
        return 130
    finally:
        if own:
            from .parallel import close_client
            close_client(client)
    log(f"done: {res.iterations} iterations ({', '.join(res.messages)}), {time.perf_counter() - t0:.1f} s; "
        f"model in {out / 'result.h5'} (dataset m, squared slowness s²/km²)")
    return 0


def _cmd_rtm(args, log):
    from .imaging import rtm
    from .io import write_snapshot
    cfg = load_config(args.config, "rtm")
    rc = cfg["rtm"]
    out = _check_out(args.out, None)
    d, src, model = _read_inputs(cfg, log)
    q = _wavelet(cfg, model, src, d, log)
    _save_config(cfg, out)
    (out / "qc").mkdir(exist_ok=True)
    _save_wavelet(q, out, cfg["output"]["plots"])
    d = _condition(cfg, d, src)
    ps = rc["ps"] or None
    raw = np.zeros(model.shape, dtype=np.float64)
    illum = np.zeros(model.shape, dtype=np.float64)
    eps = 1e-3
    shots = range(d.nshots)
    if not args.quiet:
        from tqdm.auto import tqdm
        shots = tqdm(shots, desc="rtm", unit="shot")
    seeds = np.random.SeedSequence(rc["seed"]).spawn(d.nshots)
    for i in shots:
        img, lam = rtm(model, q[i], d[i], ps=ps, ic=rc["ic"], mode=rc["mode"], seed=seeds[i], progress=False, eps=eps)
        # rtm returns I_i / (Λ_i + eps max Λ_i): undo it to sum raw images and illuminations over shots
        raw += img.astype(np.float64) * (lam + eps * lam.max())
        illum += lam
        image = (raw / (illum + eps * illum.max())).astype(np.float32)
        write_snapshot(out / "result.h5", dict(m=model.m, image=image, illumination=illum.astype(np.float32),
                                               raw_image=raw.astype(np.float32), iteration=i + 1,
                                               n=np.array(model.shape), d=np.array(model.spacing),
                                               o=np.array(model.origin)),
                       attrs=dict(spacing=list(model.spacing), origin=list(model.origin), shots=d.nshots,
                                  description="timeprobe RTM: image after `iteration` shots; m = migration model"))
        if cfg["output"]["plots"]:
            _plot_image(out / "qc" / f"shot-{i + 1:04d}.png", model, image, i + 1, d.nshots)
    log(f"done: {d.nshots} shot(s) migrated; image in {out / 'result.h5'} (dataset image)")
    return 0


# =========================================================================== figures
def _plot_survey(s, path, shot=0):
    """Acquisition (source and receiver positions per shot) and one gather, in physical units."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d, src = s["data"], s["src"]
    if shot is None:  # the first shot holding data
        shot = next((i for i, a in enumerate(d.arrays) if a.any()), 0)
    if not 0 <= shot < d.nshots:
        raise ValueError(f"--shot {shot}: the survey has shots 0…{d.nshots - 1}")
    fig, axs = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for i in range(d.nshots):
        r = d.geometry.coordinates[i]
        axs[0].plot(r[:, 0] / 1e3, np.full(len(r), i), ".", ms=2, color="tab:blue",
                    label="receivers" if i == 0 else None)
        axs[0].plot(src.coordinates[i][0, 0] / 1e3, i, "*", ms=9, color="tab:red", label="source" if i == 0 else None)
    axs[0].set_xlabel("x (km)")
    axs[0].set_ylabel("shot")
    axs[0].yaxis.get_major_locator().set_params(integer=True)
    axs[0].set_title(f"acquisition: {d.nshots} shot(s), {s['traces']} traces")
    axs[0].legend(loc="upper right", fontsize=8)
    axs[0].invert_yaxis()
    a = d.arrays[shot]
    x = d.geometry.coordinates[shot][:, 0] / 1e3
    clip = float(np.percentile(np.abs(a), 98)) or 1.0
    t = d.geometry.time / 1e3
    axs[1].imshow(a, aspect="auto", cmap="gray", vmin=-clip, vmax=clip,
                  extent=[x.min(), x.max() if x.max() > x.min() else x.min() + 1e-3, t[-1], t[0]])
    axs[1].axvline(src.coordinates[shot][0, 0] / 1e3, color="tab:red", lw=0.8)
    axs[1].set_xlabel("receiver x (km)")
    axs[1].set_ylabel("time (s)")
    axs[1].set_title(f"shot {shot} (source at x = {src.coordinates[shot][0, 0]:.0f} m), clip 98 %")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_image(path, model, image, done, total):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (x0, x1), (z0, z1) = model.domain_bounds
    fig, axs = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
    im = axs[0].imshow(model.vp.T, extent=[x0 / 1e3, x1 / 1e3, z1 / 1e3, z0 / 1e3], cmap="jet", aspect="auto")
    fig.colorbar(im, ax=axs[0], label="vp (km/s)")
    axs[0].set_title("migration model")
    clip = float(np.percentile(np.abs(image), 98)) or 1.0
    axs[1].imshow(image.T, extent=[x0 / 1e3, x1 / 1e3, z1 / 1e3, z0 / 1e3], cmap="gray", vmin=-clip, vmax=clip,
                  aspect="auto")
    axs[1].set_title(f"RTM image, {done} of {total} shot(s)")
    for ax in axs:
        ax.set_xlabel("x (km)")
        ax.set_ylabel("z (km)")
    fig.savefig(path, dpi=80)
    plt.close(fig)


# =========================================================================== entry point
def build_parser():
    p = argparse.ArgumentParser(prog="timeprobe", description="SEG-Y to FWI and RTM with time probing.")
    sub = p.add_subparsers(dest="command", required=True)
    seg = argparse.ArgumentParser(add_help=False)
    seg.add_argument("--group-by", default="auto", choices=["auto", "ffid", "source"],
                     help="traces -> shots (default: FFID and source position)")
    seg.add_argument("--depth-sign", type=int, default=1, choices=[1, -1],
                     help="1: elevation fields hold depth below the surface (JUDI/SLIM); -1: SEG-Y elevations")
    i = sub.add_parser("info", parents=[seg], help="summarise SEG-Y shot records")
    i.add_argument("files", nargs="+", help="SEG-Y file(s)")
    i.add_argument("--plot", default=None, help="draw the acquisition and one gather into this PNG")
    i.add_argument("--shot", type=int, default=None, help="shot drawn by --plot (from 0; default: the first "
                                                             "one holding data)")
    e = sub.add_parser("example-config", parents=[seg], help="print a commented configuration that runs as is")
    e.add_argument("kind", choices=["fwi", "rtm"])
    e.add_argument("--data", nargs="+", required=True, help="SEG-Y file(s)")
    e.add_argument("--model", default=None, help="starting model (SLIM/JUDI HDF5) instead of a 1D v(z)")
    e.add_argument("--iterations", type=int, default=None, help="iterations per frequency band (default 10)")
    e.add_argument("--spacing", type=float, default=None, help="grid spacing (m) instead of the one derived from "
                                                               "the data's band")
    e.add_argument("--bands", type=float, nargs="+", default=None, help="FWI low-pass corners (Hz) instead of "
                                                                       "1/4, 1/2 and 1 x the data's band")
    f = sub.add_parser("fwi", help="run FWI from a configuration")
    f.add_argument("config")
    f.add_argument("--out", required=True, help="run folder (new or empty, unless --resume)")
    f.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    r = sub.add_parser("rtm", help="run RTM from a configuration")
    r.add_argument("config")
    r.add_argument("--out", required=True, help="run folder (new or empty)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None, log=None):
    """Entry point of the ``timeprobe`` console script; returns the exit status."""
    log = log or print
    args = build_parser().parse_args(argv)
    commands = {"info": _cmd_info, "example-config": _cmd_example, "fwi": _cmd_fwi, "rtm": _cmd_rtm}
    try:
        return commands[args.command](args, log)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"timeprobe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `timeprobe info … | head`: the reader left; not an error of ours
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
