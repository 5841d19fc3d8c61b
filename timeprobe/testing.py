"""Verification utilities shared by the test-suite and by users' own checks.

* :func:`dottest` — ``|⟨A x, y⟩ − ⟨x, Aᵀ y⟩| / max(|·|)`` for a linear map and its adjoint
  (PyLops' dot test);
* :func:`taylor_test` — first- and second-order Taylor errors of an objective
  ``f(x + h δx)`` and their convergence slopes.
"""
from __future__ import annotations

import numpy as np

__all__ = ["dottest", "taylor_test", "inner"]


def inner(a, b):
    """Euclidean inner product of arrays or :class:`~timeprobe.Data` (float64)."""
    if hasattr(a, "dot") and not isinstance(a, np.ndarray):
        return a.dot(b)
    return float(np.dot(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)))


def dottest(forward, adjoint, x, y):
    """Relative mismatch of the dot test ``⟨F x, y⟩ = ⟨x, Fᵀ y⟩``.

    ``forward(x)`` and ``adjoint(y)`` return arrays or Data; returns
    ``(mismatch, lhs, rhs)``.
    """
    lhs = inner(forward(x), y)
    rhs = inner(x, adjoint(y))
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), np.finfo(float).tiny), lhs, rhs


def taylor_test(fun, x0, dx, h0, n=5, factor=2.0):
    """Taylor errors of ``fun(x) -> (f, g)`` around ``x0`` along ``dx``.

    With ``h_i = h0 / factor**i``:
    ``e1_i = |f(x0 + h_i dx) − f(x0)|`` should decay like ``h`` and
    ``e2_i = |f(x0 + h_i dx) − f(x0) − h_i ⟨g, dx⟩|`` like ``h²`` when ``g`` is
    the gradient. Returns ``dict(h, e1, e2, slope1, slope2)`` with the mean
    log-log slopes.
    """
    f0, g0 = fun(x0)
    gdx = inner(g0, dx)
    hs = h0 / factor ** np.arange(n)
    e1, e2 = [], []
    for h in hs:
        fh, _ = fun(x0 + h * dx)
        e1.append(abs(fh - f0))
        e2.append(abs(fh - f0 - h * gdx))
    e1, e2 = np.array(e1), np.array(e2)
    slope = lambda e: float(np.mean(np.log(e[:-1] / e[1:]) / np.log(factor)))
    return dict(h=hs, e1=e1, e2=e2, slope1=slope(e1), slope2=slope(e2), f0=f0, gdx=gdx)
