"""PyLops faces of timeprobe's linear operators (needs the ``pylops`` extra).

:func:`jacobian_operator` wraps Born modelling and its adjoint as a ``pylops.LinearOperator``

.. math::
    \\mathbf J:\\ \\delta\\mathbf m \\in \\mathbb R^{N_x}\\ \\mapsto\\ \\delta\\mathbf d \\in
    \\mathbb R^{\\sum_s n_t n_{rec,s}},\\qquad
    \\mathbf J^\\top \\delta\\mathbf d = \\mathbf E^\\top\\Big(-\\sum_n u[n]\\,\\ddot v[n]\\Big)

(:func:`timeprobe.born`, :func:`timeprobe.jacobian_adjoint`): model vectors are the flattened
squared-slowness perturbation (s²/km², the model's shape, C order), data vectors the shots'
``(nt, nrec)`` records flattened and concatenated in shot order. With ``ps=None`` (default) the
adjoint is exact — it passes the dot test at float round-off (≤ 1e-10 in float64,
``Model(..., dtype=np.float64)``) — so ``pylops.optimization`` solvers (``cgls``, ``lsqr``) run
LS-RTM on it. With ``ps=r`` the adjoint is the probed one (QR probes designed from each input
record, the same ``seed`` at every call): cheaper in memory, not the exact transpose.
"""
from __future__ import annotations

import numpy as np

from .geometry import Data
from .objectives import jacobian_adjoint
from .propagators import born, check_inputs

__all__ = ["jacobian_operator"]


def _pylops():
    try:
        import pylops
    except ModuleNotFoundError as e:
        raise ImportError("jacobian_operator needs PyLops: pip install 'timeprobe[pylops]'") from e
    return pylops


def jacobian_operator(model, q, rec_geometry, ps=None, mode="QR", seed=0, *, sum_padding=True, **probe_options):
    """The Born operator ``J`` and its adjoint as a ``pylops.LinearOperator`` (module docstring).

    Parameters
    ----------
    model : Model
        Background model (float64 for tight dot tests).
    q : Data
        Source wavelets per shot.
    rec_geometry : Geometry
        Receivers per shot and the data sampling.
    ps, mode, seed, probe_options
        Adjoint: exact (``ps=None``) or probed (:func:`timeprobe.jacobian_adjoint`).
    sum_padding : bool
        True: the exact adjoint of :func:`timeprobe.born` (default).
    """
    pylops = _pylops()
    check_inputs(model, q, rec_geometry)

    class _Jacobian(pylops.LinearOperator):
        def __init__(self):
            self.model, self.q, self.rec_geometry = model, q, rec_geometry
            self.counts = [rec_geometry.nt * rec_geometry.npoints(i) for i in range(rec_geometry.nshots)]
            super().__init__(dtype=np.dtype(model.dtype), shape=(sum(self.counts), int(np.prod(model.shape))),
                             name="J")

        def to_data(self, y):
            """A flat data vector as :class:`timeprobe.Data` on ``rec_geometry``."""
            parts = np.split(np.asarray(y), np.cumsum(self.counts)[:-1])
            return Data(rec_geometry, [p.reshape(rec_geometry.nt, rec_geometry.npoints(i))
                                       for i, p in enumerate(parts)], dtype=model.dtype)

        def _matvec(self, x):
            dd = born(model, q, np.asarray(x).reshape(model.shape), rec_geometry)
            return np.concatenate([a.ravel() for a in dd.arrays])

        def _rmatvec(self, y):
            g = jacobian_adjoint(model, q, self.to_data(y), ps=ps, mode=mode, seed=seed, sum_padding=sum_padding,
                                 **probe_options)
            return np.asarray(g).ravel()

    return _Jacobian()
