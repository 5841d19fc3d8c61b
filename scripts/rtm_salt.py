"""OBN RTM on a salt model: exact vs probed ISIC images and their wavefield memory.

Used by ``notebooks/obn_rtm_salt.ipynb``; runnable on its own::

    python scripts/rtm_salt.py            # small (CI) size
    TIMEPROBE_NOTEBOOK_SMALL=0 python scripts/rtm_salt.py

Run as a script, it appends one record (script ``rtm_salt``: sizes, image error, array and
measured memory) to the benchmark history (``scripts/records.py``: ``benchmarks/history.jsonl``)
unless ``--no-record``; :func:`run` (the notebook's entry) records nothing.

``salt_model`` is a *built-in synthetic* (water, a compacting sediment gradient
and an elliptical 4.5 km/s salt body) — not SEAM. ``load_seam(path)`` reads a
user-supplied SEAM 2D vp (HDF5 key "vp" in km/s or m/s, (nx, nz); or a SEG-Y
with one trace per x position).
"""
from __future__ import annotations

import os

import numpy as np

import timeprobe as tp
from timeprobe.io import peak_memory_mb


def salt_model(shape=(81, 51), spacing=10.0, nbl=20, space_order=8, water_depth=None):
    """Synthetic salt model (km/s): water, v(z) sediments, an elliptical salt body."""
    nx, nz = shape
    x = np.arange(nx)[:, None] * spacing
    z = np.arange(nz)[None, :] * spacing
    wd = 0.2 * nz * spacing if water_depth is None else water_depth
    vp = 1.8 + 0.6 * (z - wd) / (nz * spacing)  # compacting sediments
    vp = np.broadcast_to(vp, shape).copy()
    vp[:, :int(round(wd / spacing))] = 1.5
    cx, cz = 0.5 * nx * spacing, 0.55 * nz * spacing
    ax, az = 0.22 * nx * spacing, 0.14 * nz * spacing
    vp[((x - cx) / ax) ** 2 + ((z - cz) / az) ** 2 <= 1.0] = 4.5
    return tp.Model(vp=vp.astype(np.float32), spacing=spacing, nbl=nbl, space_order=space_order), wd


def load_seam(path, spacing, nbl=40, space_order=8):
    """SEAM 2D vp from ``path`` (HDF5 key "vp", or SEG-Y one trace per x); m/s converted to km/s."""
    if str(path).endswith((".h5", ".hdf5")):
        import h5py
        with h5py.File(path, "r") as f:
            vp = np.asarray(f["vp"], dtype=np.float32)
    else:
        import segyio
        with segyio.open(path, ignore_geometry=True) as f:
            vp = np.stack([np.asarray(t, dtype=np.float32) for t in f.trace])
    if vp.max() > 100:
        vp = vp / 1000.0
    wd = spacing * int(np.argmax(vp.min(axis=0) > 1.51))
    return tp.Model(vp=vp, spacing=spacing, nbl=nbl, space_order=space_order), wd


def obn_acquisition(model, water_depth, nshots, nrec, t, dt=2.0, f0=0.015):
    """Ocean-bottom nodes on the sea floor, sources 10 m below the surface, long recording."""
    (xa, xb) = model.domain_bounds[0]
    sx = np.linspace(xa + 0.1 * (xb - xa), xb - 0.1 * (xb - xa), nshots)
    src = tp.Geometry([np.array([[s, 10.0]]) for s in sx], dt=dt, t=t)
    nodes = np.stack([np.linspace(xa, xb, nrec), np.full(nrec, water_depth)], axis=1)
    rec = tp.Geometry([nodes] * nshots, dt=dt, t=t)
    q = tp.Data(src, [tp.ricker(f0, dt, t)] * nshots)
    return q, rec


def reflection_case(small=True, seam_path=None):
    """Model, smooth background, acquisition and reflection data d − F(m0)q of one size."""
    if seam_path:
        model, wd = load_seam(seam_path, spacing=12.5)
        nshots, nrec, t = 16, 200, 6000.0
    elif small:
        model, wd = salt_model()
        nshots, nrec, t = 2, 41, 500.0
    else:
        model, wd = salt_model(shape=(401, 201), spacing=10.0, nbl=40)
        nshots, nrec, t = 12, 201, 3000.0
    model0 = model.smooth(4 * model.spacing[0])
    q, rec = obn_acquisition(model, wd, nshots, nrec, t)
    d = tp.forward(model, q, rec)
    d0 = tp.forward(model0, q, rec)
    dd = tp.Data(rec, [a - b for a, b in zip(d.arrays, d0.arrays)])
    return model, model0, q, rec, dd


def measured_memory(small, ps, r, seam_path=None):
    """Peak-memory increase (MiB) of one RTM (exact: ``ps=None``; probed: ``ps=r``), measured
    in a fresh subprocess: VmHWM after migrating − VmHWM after modelling the data."""
    import json
    import subprocess
    import sys
    env = dict(os.environ, TIMEPROBE_NOTEBOOK_SMALL="1" if small else "0")
    cmd = [sys.executable, __file__, "--measure", "exact" if ps is None else str(r)]
    if seam_path:
        cmd += ["--seam", str(seam_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["working_mib"]


def run(small=True, seam_path=None, r=64, seed=0, measure=True):
    """Migrate reflection data with exact and probed ISIC; returns a dict of results.

    ``measure``: also measure each migration's peak-memory increase in its own subprocess.
    """
    model, model0, q, rec, dd = reflection_case(small, seam_path)
    from timeprobe.propagators import computational_axis
    dt, nt = computational_axis(model0, q.geometry, rec)
    r = min(r, nt)
    exact, lam = tp.rtm(model0, q, dd, ps=None, ic="isic", progress=False)
    probed, _ = tp.rtm(model0, q, dd, ps=r, ic="isic", seed=seed, progress=False)
    N = int(np.prod(model.shape_padded))
    rel = float(np.linalg.norm(probed - exact) / np.linalg.norm(exact))
    out = dict(model=model, model0=model0, exact=exact, probed=probed, illum=lam, nt=nt, r=r, N=N,
               rel_error=rel, bytes_exact=4 * (nt + 1) * N, bytes_probed=4 * 2 * r * N,
               seam=bool(seam_path))
    if measure:
        out["measured_exact_mib"] = measured_memory(small, None, r, seam_path)
        out["measured_probed_mib"] = measured_memory(small, r, r, seam_path)
    return out


def _measure_child(ps, seam_path):
    """Subprocess body of :func:`measured_memory`."""
    import json
    small = os.environ.get("TIMEPROBE_NOTEBOOK_SMALL", "1") == "1"
    model, model0, q, rec, dd = reflection_case(small, seam_path)
    base = peak_memory_mb()
    tp.rtm(model0, q, dd, ps=ps, ic="isic", progress=False)
    print(json.dumps(dict(working_mib=peak_memory_mb() - base)))


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import records
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seam", default=None)
    records.add_arguments(ap)
    a = ap.parse_args()
    if a.measure:
        _measure_child(None if a.measure == "exact" else int(a.measure), a.seam)
        raise SystemExit
    out = run(small=os.environ.get("TIMEPROBE_NOTEBOOK_SMALL", "1") == "1", seam_path=a.seam)
    print(f"nt = {out['nt']}, r = {out['r']}, N = {out['N']}, relative image error = {out['rel_error']:.3f}")
    print(f"wavefield memory: exact {out['bytes_exact']/2**20:.1f} MiB, probed {out['bytes_probed']/2**20:.1f} MiB")
    print(f"measured peak increase: exact {out['measured_exact_mib']:.1f} MiB, "
          f"probed {out['measured_probed_mib']:.1f} MiB")
    model = out["model"]
    records.record(a, "rtm_salt", dict(
        small=os.environ.get("TIMEPROBE_NOTEBOOK_SMALL", "1") == "1", seam=out["seam"], shape=model.shape,
        spacing=model.spacing, nbl=model.nbl, nt=out["nt"], r=out["r"], N=out["N"], ic="isic",
        rel_error=out["rel_error"], bytes_exact=out["bytes_exact"], bytes_probed=out["bytes_probed"],
        measured_exact_mib=out["measured_exact_mib"], measured_probed_mib=out["measured_probed_mib"]))
