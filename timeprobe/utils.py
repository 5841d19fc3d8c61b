"""Small numerical helpers shared by the modules."""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["finite_difference_weights", "as_generator", "fmt", "check_dtype", "working_dtype"]


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


def fmt(value):
    """Numbers, arrays and sequences of them as plain text for error messages
    (``5000``, ``(100, 20.5)``; never ``np.float64(5000.0)``)."""
    if isinstance(value, (str, bytes)):
        return str(value)
    if np.ndim(value) == 0:
        v = np.asarray(value).item()
        return f"{v:g}" if isinstance(v, float) else str(v)
    items = ", ".join(fmt(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value))
    return f"[{items}]" if isinstance(value, list) else f"({items})"
_DTYPES = (np.float32, np.float64)


def check_dtype(dtype):
    """``dtype`` as ``np.float32`` or ``np.float64`` (the two precisions timeprobe runs in)."""
    try:
        t = None if dtype is None else np.dtype(dtype).type  # np.dtype(None) would be float64
    except TypeError:
        t = None
    if t not in _DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return t


def working_dtype(a):
    """float64 for float64 arrays, float32 for anything else (timeprobe's default precision)."""
    return np.float64 if np.asarray(a).dtype == np.float64 else np.float32
