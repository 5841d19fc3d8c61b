"""The MPI cases of tests/test_mpi.py (not collected by pytest: no ``test_`` prefix).

``DEVITO_MPI=1 mpirun -n 2 python tests/mpi_case.py PART IN.npz OUT.npz`` runs :func:`compute`
(``PART`` "core" or "extended") domain-decomposed on the observed data of ``IN.npz`` and writes,
from rank 0, its results plus what the ranks held (``ranks``, ``distributed``, and for "core"
``ubar_local_bytes`` per rank and ``ubar_global_bytes``). Every result is first checked to be
bitwise the same on every rank (:func:`timeprobe.mpi.check_same`): public functions return
global arrays on every rank. The test imports :func:`problem` and :func:`compute` for the serial
reference.

The case runs in float64, so that the comparison with the serial run measures the
decomposition, not float32 round-off (in float32 the two agree to about 3e-6 here; Devito fuses
the probe loop of ``method="eq"`` into the stencil's loop nest on a decomposed grid, where the
differently vectorised code moves the float32 traces by round-off and the gradient by ~1e-5).
"""
import sys

import numpy as np

import timeprobe as tp
from timeprobe import mpi
from timeprobe.geometry import computational_axis, to_computational
from timeprobe.probing import ProbingOptions, probes_for_shot, shot_generators
from timeprobe.propagators import run_forward

from conftest import acquisition, layered_model

PS = 8
#: results compared between ranks only (seed=None: fresh entropy, no serial counterpart)
RANKS_ONLY = ("rng_seed_none", "probes_seed_none", "refused")


def _float64(model):
    m64 = tp.Model(m=model.m.astype(np.float64), spacing=model.spacing, nbl=model.nbl,
                   space_order=model.space_order, dtype=np.float64)
    m64.dt = model.dt
    return m64


def problem():
    """A tiny 2D case in float64: true and initial models, one shot, a receiver line."""
    model = _float64(layered_model(shape=(48, 32), nbl=10, space_order=4))
    model0 = _float64(layered_model(shape=(48, 32), nbl=10, space_order=4, smooth=True))
    model0.dt = model.dt
    q, rec = acquisition(model, nshots=1, nrec=23, t=260.0, f0=0.02)
    return model, model0, q, rec


def compute(d, part="core"):
    """Results in the initial model for observed data ``d`` (:class:`timeprobe.Data`).

    "core": forward traces, Born traces, exact and probed FWI gradients, a probed ISIC RTM image
    and its illumination, one shot's probes, a draw and Gaussian probes with ``seed=None``
    (:data:`RANKS_ONLY`); and ū of one probed forward run (the Devito Function: this rank's part
    under MPI), returned second.
    "extended": exact ISIC and probed "as"/"kspace" RTM, offset gathers, adjoint modelling, the
    probed adjoint Born, the subsampling and checkpointing strategies, the "eq" method,
    and ``sum_padding=False``. Returns (results, None).
    """
    model, model0, q, rec = problem()
    out = {}
    if part == "core":
        out["traces"] = tp.forward(model0, q, rec).arrays[0]
        out["born"] = tp.born(model0, q, model.m - model0.m, rec).arrays[0]
        out["f_exact"], out["g_exact"] = tp.fwi_objective(model0, q, d)
        out["f_probed"], out["g_probed"] = tp.fwi_objective(model0, q, d, ps=PS, seed=3)
        out["image"], out["illum"] = tp.rtm(model0, q, d, ps=PS, ic="isic", seed=4)
        dt, nt = computational_axis(model0, q.geometry, rec)
        wc = to_computational(q.arrays[0], q.geometry, dt, nt, dtype=model0.dtype)
        probing = probes_for_shot(ProbingOptions(ps=PS), wc, dt, nt, d[0], shot_generators(5, 1)[0],
                                  dtype=model0.dtype)
        out["probes"] = probing.Q
        # seed=None: every rank must draw from the same (rank 0's) entropy, and use the same probes
        out["rng_seed_none"] = shot_generators(None, 2)[1].standard_normal(4)
        out["probes_seed_none"] = probes_for_shot(ProbingOptions(ps=PS, mode="gaussian"), wc, dt, nt, d[0],
                                                  shot_generators(None, 1)[0], dtype=model0.dtype).Q
        _, ubar = run_forward(model0, q.geometry.coordinates[0], wc, rec.coordinates[0], dt, nt,
                              probing=probing)
        if mpi.is_distributed():  # a rank holding other observed data is refused, on every rank
            d_rank = tp.Data(d.geometry, [d.arrays[0] * (1.0 + 1e-3 * mpi.rank())], dtype=d.dtype)
            try:
                tp.fwi_objective(model0, q, d_rank)
            except ValueError as e:
                out["refused"] = "differs between MPI ranks" in str(e)
            else:
                out["refused"] = False
        return out, ubar
    if part != "extended":
        raise ValueError(f"unknown part {part!r}")
    out["rtm_exact_isic"], _ = tp.rtm(model0, q, d, ic="isic")
    out["rtm_probed_as"], _ = tp.rtm(model0, q, d, ps=PS, ic="as", seed=1)
    out["rtm_probed_kspace"], _ = tp.rtm(model0, q, d, ps=PS, ic="kspace", seed=1)
    out["gathers"], _ = tp.rtm(model0, q, d, ps=PS, ic="as", seed=2, offsets=[-20.0, 0.0, 20.0])
    out["adjoint"] = tp.adjoint(model0, d, q.geometry).arrays[0]
    out["jacobian_adjoint"] = tp.jacobian_adjoint(model0, q, d, ps=PS, seed=3)
    out["f_subsample"], out["g_subsample"] = tp.gradient(model0, q, d, "subsample", k=2)
    out["f_checkpoint"], out["g_checkpoint"] = tp.gradient(model0, q, d, "checkpoint", n_checkpoints=5)
    out["f_eq"], out["g_eq"] = tp.fwi_objective(model0, q, d, ps=PS, seed=3, method="eq")
    out["f_layers_out"], out["g_layers_out"] = tp.fwi_objective(model0, q, d, ps=PS, seed=6,
                                                                sum_padding=False)
    return out, None


def main(part, inp, outp):
    _, _, _, rec = problem()
    with np.load(inp) as f:
        d = tp.Data(rec, [f["d"]], dtype=np.float64)
    out, ubar = compute(d, part)
    for name, value in out.items():
        mpi.check_same(np.asarray(value), name)  # public results: global, the same on every rank
    if ubar is not None:
        out["ubar_local_bytes"] = np.array(mpi.allgather(ubar.data.view(np.ndarray).nbytes))
        out["ubar_global_bytes"] = int(np.prod(ubar.shape_global)) * np.dtype(ubar.dtype).itemsize
    out["ranks"] = mpi.size()
    out["distributed"] = mpi.is_distributed()
    if mpi.is_root():
        np.savez(outp, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
