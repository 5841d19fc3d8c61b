"""Small numerical helpers shared by the modules."""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["finite_difference_weights", "as_generator"]


@functools.lru_cache(maxsize=None)
def _fd_weights(deriv, order):
    from sympy import finite_diff_weights
    half = order // 2
    w = finite_diff_weights(deriv, list(range(-half, half + 1)), 0)[deriv][-1]
    return tuple(float(v) for v in w)


def finite_difference_weights(deriv, order):
    """Centred finite-difference weights (unit spacing) of derivative ``deriv`` and accuracy ``order``."""
    return np.array(_fd_weights(deriv, order))


def as_generator(seed):
    """A ``numpy.random.Generator`` from a seed, a Generator (returned as is) or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
