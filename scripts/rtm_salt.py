"""OBN RTM on a salt model: exact vs probed ISIC images, ISIC offset gathers at the right and a wrong
velocity, their times and memory.

Used by ``notebooks/obn_rtm_salt.ipynb``; runnable on its own::

    python scripts/rtm_salt.py            # small (CI) size
    TIMEPROBE_NOTEBOOK_SMALL=0 python scripts/rtm_salt.py

Run as a script, it appends one record (script ``rtm_salt``: sizes, image error, array and
measured memory, the gathers' times, focusing and memory) to the benchmark history
(``scripts/records.py``: ``benchmarks/history.jsonl``) unless ``--no-record``; :func:`run` (the notebook's entry) records nothing.

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
    """Model, smooth background, acquisition, reflection data d − F(m0)q of one size and the
    observed records d (they design the "QR" probes: the direct arrivals put the forward field's
    early part in the probes' span)."""
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
    return model, model0, q, rec, dd, d


def gather_offsets(model, small=True):
    """Horizontal half-offsets (m) of the gathers: ±200 m (small) or ±500 m in steps of 2 dx."""
    dx = model.spacing[0]
    hmax = 200.0 if small else 500.0
    return 2 * dx * np.arange(-int(hmax // (2 * dx)), int(hmax // (2 * dx)) + 1)


def map_large_arrays():
    """Make glibc map every allocation above 128 KiB on its own and return it to the system when
    freed (``mallopt(M_MMAP_THRESHOLD)``), so that the resident size follows the live arrays and
    :func:`measured` sees each run's own memory, not the heap left by earlier ones. False where
    unavailable (not glibc)."""
    import ctypes
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 131072))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _resident_mib():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return None


def measured(fn):
    """``(result, seconds, MiB)`` of one call of ``fn``: wall time and the increase of the peak
    resident memory over the resident size before it (None where the peak cannot be reset)."""
    import ctypes
    import gc
    import time
    from timeprobe.io import reset_peak_memory
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    ok = reset_peak_memory()
    base = _resident_mib()
    t0 = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t0
    return out, sec, (peak_memory_mb() - base if ok and base is not None else None)


def focusing(gathers, offsets, water_depth, spacing):
    """``E(h = 0) / mean E(h ≠ 0)`` of the gathers (n_offsets, nx, nz) below the sea floor: large
    when the energy focuses at zero offset (a correct velocity)."""
    iz = int(np.ceil(water_depth / spacing)) + 2
    e = np.sum(np.asarray(gathers, np.float64)[:, :, iz:] ** 2, axis=(1, 2))
    h = np.asarray(offsets)
    return float(e[h == 0][0] / e[h != 0].mean())


def water_depth_of(model):
    """Depth (m) of the first grid row below the water (vp > 1.51 km/s everywhere)."""
    return model.spacing[-1] * int(np.argmax(model.vp.min(axis=0) > 1.51))


def plain_run(model0, q, dd):
    """A plain forward + adjoint of every shot (no storage, no imaging): the time reference."""
    from timeprobe.geometry import computational_axis, from_computational_adjoint, to_computational
    from timeprobe.propagators import run_adjoint, run_forward
    dt, nt = computational_axis(model0, q.geometry, dd.geometry)
    for i in range(q.nshots):
        wc = to_computational(q.arrays[i], q.geometry[i], dt, nt)
        run_forward(model0, q.geometry.coordinates[i], wc, dd.geometry.coordinates[i], dt, nt)
        rc = from_computational_adjoint(dd.arrays[i], dd.geometry[i], dt, nt)
        run_adjoint(model0, dd.geometry.coordinates[i], rc, dt, nt)


def run(small=True, seam_path=None, r=64, seed=0, measure=True, slow=0.9):
    """Migrate reflection data with exact and probed ISIC, and compute ISIC offset gathers at the
    right velocity (exact and probed) and at a ``slow`` × too slow one (probed); returns a dict.

    Every configuration runs once (code generation, compilation), then once more for its wall
    time and (``measure``) its peak-memory increase in this process (:func:`measured`).
    """
    mapped = map_large_arrays() if measure else False
    model, model0, q, rec, dd, d = reflection_case(small, seam_path)
    from timeprobe.propagators import computational_axis
    dt, nt = computational_axis(model0, q.geometry, rec)
    r = min(r, nt)
    offsets = gather_offsets(model0, small)
    wrong = model0.with_m(model0.m / slow ** 2)

    def gathers(m, ps):
        return tp.gathers(m, q, dd, ps=ps, offsets=offsets, ic="isic", seed=seed, illumination=False,
                          probe_data=d).image[0]
    jobs = {"image, exact": lambda: tp.rtm(model0, q, dd, ps=None, ic="isic", progress=False),
            "image, probed": lambda: tp.rtm(model0, q, dd, ps=r, ic="isic", seed=seed, probe_data=d,
                                            progress=False),
            "plain forward + adjoint": lambda: plain_run(model0, q, dd),
            "exact, right velocity": lambda: gathers(model0, None),
            "probed, right velocity": lambda: gathers(model0, r),
            "probed, wrong velocity": lambda: gathers(wrong, r)}
    res, seconds, mib = {}, {}, {}
    for name, fn in jobs.items():
        if name != "probed, wrong velocity":  # (it reuses the right velocity's operators)
            fn()
        res[name], seconds[name], mib[name] = measured(fn)
    exact, lam = res["image, exact"]
    probed = res["image, probed"][0]
    N = int(np.prod(model.shape_padded))
    rel = float(np.linalg.norm(probed - exact) / np.linalg.norm(exact))
    out = dict(model=model, model0=model0, exact=exact, probed=probed, illum=lam, nt=nt, r=r, N=N,
               rel_error=rel, bytes_exact=4 * (nt + 1) * N, bytes_probed=4 * 2 * r * N,
               seam=bool(seam_path))
    names = ("exact, right velocity", "probed, right velocity", "probed, wrong velocity")
    g = {name: res[name] for name in names}
    e, p = g["exact, right velocity"], g["probed, right velocity"]
    nimg = len(offsets) * int(np.prod(model.shape))
    out["gathers"] = dict(
        offsets=offsets, images=g, slow=slow,
        seconds={name: seconds[name] for name in ("plain forward + adjoint",) + names},
        cosine=float(np.dot(e.ravel(), p.ravel()) / (np.linalg.norm(e) * np.linalg.norm(p))),
        focusing={name: focusing(a, offsets, water_depth_of(model), model.spacing[1]) for name, a in g.items()},
        bytes_exact=4 * ((nt + 1) * N + nimg), bytes_probed=4 * (2 * r * N + nimg))
    if measure and mapped:
        out["measured_exact_mib"], out["measured_probed_mib"] = mib["image, exact"], mib["image, probed"]
        out["gathers"]["measured_mib"] = {"exact": mib["exact, right velocity"],
                                          "probed": mib["probed, right velocity"]}
    return out


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import records
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seam", default=None)
    records.add_arguments(ap)
    a = ap.parse_args()
    out = run(small=os.environ.get("TIMEPROBE_NOTEBOOK_SMALL", "1") == "1", seam_path=a.seam)
    print(f"nt = {out['nt']}, r = {out['r']}, N = {out['N']}, relative image error = {out['rel_error']:.3f}")
    print(f"wavefield memory: exact {out['bytes_exact']/2**20:.1f} MiB, probed {out['bytes_probed']/2**20:.1f} MiB")
    if "measured_exact_mib" in out:
        print(f"measured peak increase: exact {out['measured_exact_mib']:.1f} MiB, "
              f"probed {out['measured_probed_mib']:.1f} MiB")
    g = out["gathers"]
    for name, sec in g["seconds"].items():
        print(f"{name:24s} {sec:7.2f} s")
    print("focusing E(h=0)/mean E(h≠0):", {k: round(v, 2) for k, v in g["focusing"].items()})
    if "measured_mib" in g:
        mm = g["measured_mib"]
        print(f"gathers memory: exact {mm['exact']:.1f} MiB, probed {mm['probed']:.1f} MiB")
    model = out["model"]
    records.record(a, "rtm_salt", dict(
        small=os.environ.get("TIMEPROBE_NOTEBOOK_SMALL", "1") == "1", seam=out["seam"], shape=model.shape,
        spacing=model.spacing, nbl=model.nbl, nt=out["nt"], r=out["r"], N=out["N"], ic="isic",
        rel_error=out["rel_error"], bytes_exact=out["bytes_exact"], bytes_probed=out["bytes_probed"],
        measured_exact_mib=out.get("measured_exact_mib"), measured_probed_mib=out.get("measured_probed_mib"),
        gathers=dict(offsets=g["offsets"], slow=g["slow"], seconds=g["seconds"], cosine=g["cosine"],
                     focusing=g["focusing"], bytes_exact=g["bytes_exact"], bytes_probed=g["bytes_probed"],
                     measured_mib=g.get("measured_mib"))))
