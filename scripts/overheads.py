"""The machine-level costs around a probed run, each against its alternative, in one process.

Four side-by-side timings (best of ``--repeats``, interleaved), each a cause of probing overhead
found on a 2-core VM and what timeprobe does about it:

* ``blas_spin`` — a plain 2D forward run (the small Overthrust shot of
  ``scripts/benchmark_imaging.py``, 2 s; the run alone is timed): alone; right after a 600×600
  matrix product on all cores (OpenBLAS's threads keep spinning ≈ 0.1 s after it, beside Devito's OpenMP threads);
  right after the same product under :class:`timeprobe.utils.serial_blas` (timeprobe's own BLAS
  work, e.g. the probe design, runs that way);
* ``fresh_buffer`` — mapping and first writing a fresh 14 MiB buffer (one probe field of that
  shot at r = 64): a shared anonymous ``mmap`` (Python's default), a private one with 4 KiB pages,
  and :func:`timeprobe.utils.aligned_zeros` (private, transparent huge pages);
* ``resample`` — a 4 s, 401-trace record from 2 ms to the computational axis: the sparse
  windowed-sinc product against :class:`timeprobe.geometry.BandedRows` (dense row blocks, BLAS);
* ``correlation`` — 41-offset gathers of two r = 64 probe fields of that grid
  (:func:`timeprobe.imaging.shifted_correlation`).

    python scripts/overheads.py [--repeats 7] [--note TEXT]

Each run appends one record (script ``overheads``) to the benchmark history unless
``--no-record``; the figures are printed as JSON.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import records  # noqa: E402
import timeprobe as tp  # noqa: E402,F401  (OpenMP set before Devito is imported)


def best(fns, repeats):
    """Best wall time (s) of each callable, interleaved ``repeats`` times after one warm-up."""
    for f in fns.values():
        f()
    out = {n: float("inf") for n in fns}
    for _ in range(repeats):
        for n, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[n] = min(out[n], time.perf_counter() - t0)
    return out


def blas_spin(repeats):
    from benchmark_imaging import setup
    from timeprobe.geometry import computational_axis, to_computational
    from timeprobe.propagators import run_forward
    from timeprobe.utils import serial_blas
    model0, q, d, _ = setup("overthrust2d", 2000.0)
    dt, nt = computational_axis(model0, q.geometry, d.geometry)
    wc = to_computational(q.arrays[0], q.geometry, dt, nt)
    sc, rc = q.geometry.coordinates[0], d.geometry.coordinates[0]
    A = np.random.default_rng(0).standard_normal((600, 600))

    def forward():
        run_forward(model0, sc, wc, rc, dt, nt)

    def product():
        A @ A

    def serial_product():
        with serial_blas():
            A @ A

    # the forward run alone is timed, right after its prelude; 0.3 s of sleep before each prelude
    # lets threads left spinning by the previous configuration go to sleep
    preludes = dict(forward=None, after_blas=product, after_serial_blas=serial_product)
    forward()
    t = {n: float("inf") for n in preludes}
    for _ in range(repeats):
        for n, prelude in preludes.items():
            time.sleep(0.3)
            if prelude is not None:
                prelude()
            t0 = time.perf_counter()
            forward()
            t[n] = min(t[n], time.perf_counter() - t0)
    t.update(best(dict(product=product, serial_product=serial_product), repeats))
    return dict(seconds=t, nt=nt, shape=list(model0.shape_padded))


def fresh_buffer(repeats, nbytes=55624 * 64 * 4):
    from timeprobe.utils import aligned_zeros

    def fill(flags):
        def run():
            buf = mmap.mmap(-1, nbytes, flags=flags)
            np.frombuffer(buf, dtype=np.uint8)[:] = 1
            buf.close()
        return run

    def huge():
        a = aligned_zeros((nbytes // 4,), np.float32)
        a[:] = 1
        del a

    t = best(dict(shared=fill(mmap.MAP_SHARED), private=fill(mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS),
                  aligned_zeros=huge), repeats)
    return dict(seconds=t, mib=nbytes / 2 ** 20)


def resample(repeats):
    from timeprobe.geometry import BandedRows, resampling_operator
    R = resampling_operator(2.0 * np.arange(2001), 2.142 * np.arange(1870)).tocsr()
    B = BandedRows(R)
    x = np.random.default_rng(0).standard_normal((2001, 401)).astype(np.float32)
    out = np.empty((1870, 401), np.float32)
    t = best(dict(sparse=lambda: (R @ x.astype(np.float64)).astype(np.float32),
                  banded=lambda: B.apply(x, out)), repeats)
    ref = (R @ x.astype(np.float64)).astype(np.float32)
    B.apply(x, out)
    return dict(seconds=t, max_rel_diff=float(np.abs(out - ref).max() / np.abs(ref).max()))


def correlation(repeats):
    from timeprobe.imaging import shifted_correlation
    rng = np.random.default_rng(0)
    U = rng.standard_normal((401, 121, 64)).astype(np.float32)
    V = rng.standard_normal((401, 121, 64)).astype(np.float32)
    G = np.zeros((41, 401, 121), np.float32)
    Gm = np.moveaxis(G, 1, -1)
    A, B = [np.moveaxis(U, 0, -2)], [np.moveaxis(V, 0, -2)]
    t = best(dict(shifted_correlation=lambda: shifted_correlation(Gm, A, B, list(range(-20, 21)))), repeats)
    return dict(seconds=t, offsets=41, r=64, grid=[401, 121])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    records.add_arguments(ap)
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    figures = dict(repeats=a.repeats, omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                   blas_spin=blas_spin(a.repeats), fresh_buffer=fresh_buffer(a.repeats),
                   resample=resample(a.repeats), correlation=correlation(a.repeats))
    print(json.dumps(records.plain(figures), indent=1))
    records.record(a, "overheads", figures, argv, __file__)
    return figures


if __name__ == "__main__":
    main()
