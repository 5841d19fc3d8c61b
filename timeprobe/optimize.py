"""Bound-constrained optimisers and helpers for FWI.

Problem solved by every optimiser here::

    minimise  f(x)   subject to   l ≤ x ≤ u   (element-wise)

with ``fun(x) -> (f, g)`` returning the objective and its gradient ``g = ∇f(x)``
(same shape as ``x``). In FWI ``x`` is the squared slowness ``m`` (s²/km²) of
shape ``model.shape`` and ``fun`` wraps ``timeprobe.objectives.fwi_objective``.

* :func:`spg` — spectral projected gradient (Birgin, Martínez & Raydan 2000) with
  Barzilai–Borwein steps and the non-monotone (Grippo–Lampariello–Lucidi) Armijo
  line search, the solver of the seed code (JUDI/SlimOptim ``spg``).
* :func:`lbfgs` — projected L-BFGS on the same loop as :func:`spg`.
* :func:`lbfgsb` — ``scipy.optimize.minimize(method="L-BFGS-B")`` with float64
  conversion and the same result object (not resumable).
* :class:`OptimizerState` — what :func:`spg` and :func:`lbfgs` hand to ``checkpoint``
  after every iteration and accept back as ``state=``: a resumed run continues
  exactly as the uninterrupted one (iterate, gradient, SPG's previous step and
  non-monotone window, the L-BFGS memory pairs, histories).
* :func:`slowness_bounds`, :class:`ModelMask` / :func:`water_mask`,
  :class:`ScaledObjective`, :class:`ShotBatches` — the pieces an FWI loop needs
  (velocity bounds expressed in squared slowness, a fixed water layer, gradient
  normalisation, random shot batches from an explicit seed).

Typical FWI loop (``fwi_objective`` from :mod:`timeprobe.objectives`)::

    lo, up = slowness_bounds(1.3, 6.5, model0.shape)
    mask = water_mask(model0)                     # water rows detected (vp ≈ 1.5)
    lo, up = mask.pin_bounds(lo, up, model0.m)    # water layer cannot move
    batches = ShotBatches(d_obs.nshots, batch=8, seed=1)

    def fun(m):
        idx = batches.current                     # same shots for the whole line search
        f, g = fwi_objective(model0.with_m(m), q[idx], d_obs[idx], ps=16, seed=batches.iteration)
        return f, mask(g)

    obj = ScaledObjective(fun)                    # first step of a sensible size
    res = spg(obj, model0.m, lo, up, maxiter=20, memory=3,
              callback=lambda x, info: batches.advance())
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import numpy as np

from .utils import serial_blas

__all__ = ["spg", "lbfgs", "lbfgsb", "OptimizeResult", "OptimizerState", "project", "slowness_bounds", "ModelMask",
           "water_mask", "detect_water_rows", "ScaledObjective", "ShotBatches"]


# --------------------------------------------------------------------------- result
@dataclass
class OptimizeResult:
    """Outcome of :func:`spg` / :func:`lbfgsb`.

    Attributes
    ----------
    x : ndarray
        Solution, shape and dtype of ``x0`` (the best accepted iterate when
        ``return_best`` is on, else the last one).
    f : float
        Objective at ``x``.
    fhist : ndarray
        Objective at ``x0`` and at every accepted iterate (length ``nit + 1``).
    nfev : int
        Number of calls of ``fun`` (each returns value and gradient).
    nit : int
        Number of completed iterations.
    success : bool
        True when the optimality test (or the callback) stopped the run; False
        after ``maxiter``/``max_fev``, a stop for lack of progress or a failed line
        search (the result is still the best point found).
    message : str
        Why it stopped.
    opt_cond : ndarray
        First-order optimality measure ``‖P(x − g) − x‖∞`` at every accepted iterate
        (zero where ``x`` is a constrained stationary point); NaN where not computed.
    x_last : ndarray
        Last accepted iterate (equal to ``x`` unless ``return_best`` picked an earlier one).
    xhist : list of ndarray
        Accepted iterates (only with ``store_x=True``).
    time : float
        Wall-clock seconds.
    """

    x: np.ndarray
    f: float
    fhist: np.ndarray
    nfev: int
    nit: int
    success: bool
    message: str
    opt_cond: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_last: np.ndarray | None = None
    xhist: list = field(default_factory=list)
    time: float = 0.0

    def __repr__(self):
        return (f"OptimizeResult(f={self.f:.6g}, nit={self.nit}, nfev={self.nfev}, success={self.success}, "
                f"message={self.message!r})")


# --------------------------------------------------------------------------- bounds
def _as_bounds(lower, upper, shape):
    """Broadcast bounds (None = unbounded) to float64 arrays of ``shape`` and check ``l ≤ u``."""
    lo = np.full(shape, -np.inf) if lower is None else np.asarray(lower, dtype=np.float64)
    up = np.full(shape, np.inf) if upper is None else np.asarray(upper, dtype=np.float64)
    for name, b in (("lower", lo), ("upper", up)):
        try:
            np.broadcast_to(b, shape)
        except ValueError:
            raise ValueError(f"{name} bound of shape {b.shape} does not broadcast to x0's shape {shape}") from None
        if np.any(np.isnan(b)):
            raise ValueError(f"{name} bound contains NaN")
    lo = np.broadcast_to(lo, shape).copy()
    up = np.broadcast_to(up, shape).copy()
    bad = int(np.count_nonzero(lo > up))
    if bad:
        raise ValueError(f"lower > upper at {bad} of {lo.size} points: the feasible set is empty")
    return lo, up


def _check_feasible(x0, lo, up):
    """Raise if ``x0`` violates the bounds; absorb float32 round-off by clipping.

    Bounds built in float64 (``1/vmax²``) and a model stored in float32 can differ
    by a few ulps at points sitting exactly on a bound; those are clipped, real
    violations are reported.
    """
    tol = 8 * np.finfo(np.float32).eps * np.maximum(np.abs(lo), np.abs(up)).clip(0, 1e30)
    tol = np.where(np.isfinite(tol), tol, 0.0)
    below = x0 < lo - tol
    above = x0 > up + tol
    nb, na = int(np.count_nonzero(below)), int(np.count_nonzero(above))
    if nb or na:
        raise ValueError(f"the initial point violates the bounds at {nb + na} of {x0.size} points "
                         f"({nb} below lower, {na} above upper); widen the bounds or start from "
                         f"np.clip(x0, lower, upper)")
    return np.clip(x0, lo, up)


def project(x, lower, upper):
    """Euclidean projection onto the box: ``P(x) = min(max(x, l), u)`` element-wise."""
    return np.minimum(np.maximum(x, lower), upper)


def _as_x0(x0):
    x0 = np.asarray(x0)
    if not np.issubdtype(x0.dtype, np.number) or np.iscomplexobj(x0):
        raise TypeError(f"x0 must be a real numeric array, got dtype {x0.dtype}")
    if x0.size == 0:
        raise ValueError("x0 is empty")
    if not np.all(np.isfinite(x0)):
        raise ValueError("x0 contains NaN or inf")
    dtype = x0.dtype if np.issubdtype(x0.dtype, np.floating) else np.dtype(np.float64)
    return x0, dtype


def _evaluate(fun, x, shape, dtype, where):
    """Call ``fun`` on ``x`` (float64, flat) in the user's shape/dtype; return float64 (f, g)."""
    out = fun(x.reshape(shape).astype(dtype, copy=False))
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"fun must return a tuple (f, g); got {type(out).__name__} at {where}")
    f, g = out
    f = float(f)
    g = np.asarray(g, dtype=np.float64)
    if g.size != x.size:
        raise ValueError(f"fun returned a gradient of shape {g.shape} for x of shape {shape} ({where})")
    return f, g.reshape(-1)


def _progress_bar(total, enabled, desc):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="it")


# --------------------------------------------------------------------------- resumable state
@dataclass
class OptimizerState:
    """Everything :func:`spg` / :func:`lbfgs` need to continue a run exactly where it stopped.

    Handed to the ``checkpoint`` callable after every accepted iteration and accepted
    back through ``state=``: a resumed run then performs the same floating-point
    operations as an uninterrupted one (for a deterministic ``fun``). Arrays are
    float64 and flat (``x.size`` entries). :meth:`to_dict` / :meth:`from_dict` convert
    to and from a flat dict of NumPy arrays and scalars for storage (the format is the
    caller's choice; :func:`timeprobe.io.write_state` writes HDF5).

    Attributes
    ----------
    method : {"spg", "lbfgs"}
    iteration, nfev : int
        Completed iterations and evaluations of ``fun``.
    x, g : ndarray
        Current iterate and its gradient; ``f`` its value.
    f_scale, x_scale : float
        Scales of the relative progress tests (fixed at the start).
    fhist, opt_hist : ndarray
        Values and optimality measures of the accepted iterates.
    best_x, best_f
        Best accepted iterate (``return_best``).
    recent : ndarray
        The last ``memory`` accepted values (non-monotone reference of SPG).
    x_prev, g_prev : ndarray or None
        Previous iterate and gradient (SPG's Barzilai–Borwein step).
    s_pairs, y_pairs : ndarray
        L-BFGS memory ``(k, n)``: ``s = x_{j+1} − x_j``, ``y = g_{j+1} − g_j``, oldest first.
    """

    method: str
    iteration: int
    nfev: int
    x: np.ndarray
    f: float
    g: np.ndarray
    f_scale: float
    x_scale: float
    fhist: np.ndarray
    opt_hist: np.ndarray
    best_x: np.ndarray
    best_f: float
    recent: np.ndarray
    x_prev: np.ndarray | None = None
    g_prev: np.ndarray | None = None
    s_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    y_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    _SCALARS = ("iteration", "nfev", "f", "f_scale", "x_scale", "best_f")
    _ARRAYS = ("x", "g", "fhist", "opt_hist", "best_x", "recent", "x_prev", "g_prev", "s_pairs", "y_pairs")

    def to_dict(self):
        """Flat dict: ``method`` (str), scalars and arrays (absent ``x_prev``/``g_prev`` omitted)."""
        out = {"method": self.method}
        for k in self._SCALARS:
            out[k] = getattr(self, k)
        for k in self._ARRAYS:
            v = getattr(self, k)
            if v is not None:
                out[k] = np.array(v, dtype=np.float64)
        return out

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; ``ValueError`` naming a missing or malformed entry."""
        if isinstance(d, cls):
            return d
        if not isinstance(d, dict):
            raise TypeError(f"optimizer state must be an OptimizerState or a dict, got {type(d).__name__}")
        required = ("method",) + cls._SCALARS + ("x", "g", "fhist", "opt_hist", "best_x", "recent")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"optimizer state lacks {missing}")
        method = d["method"].decode() if isinstance(d["method"], bytes) else str(d["method"])
        kw = {"method": method}
        for k in cls._SCALARS:
            kw[k] = int(d[k]) if k in ("iteration", "nfev") else float(d[k])
        for k in cls._ARRAYS:
            if k in d and d[k] is not None:
                kw[k] = np.array(d[k], dtype=np.float64)
        n = kw["x"].size
        for k in ("g", "best_x", "x_prev", "g_prev"):
            if k in kw and kw[k].size != n:
                raise ValueError(f"optimizer state: {k} has {kw[k].size} entries, x has {n}")
        for k in ("s_pairs", "y_pairs"):
            if k in kw:
                kw[k] = kw[k].reshape(-1, n) if kw[k].size else np.zeros((0, n))
        return cls(**kw)

    def copy(self):
        return OptimizerState.from_dict({k: (v.copy() if isinstance(v, np.ndarray) else v)
                                         for k, v in self.to_dict().items()})


# --------------------------------------------------------------------------- SPG
@serial_blas()
def spg(fun, x0, lower=None, upper=None, *, maxiter=20, memory=3, suff_dec=1e-4, bb_type=1,
        alpha0=None, max_linesearch=20, opt_tol=1e-5, prog_tol=1e-9, max_fev=None,
        return_best=True, store_x=False, callback=None, progress=True, state=None, checkpoint=None):
    r"""Spectral projected gradient with box constraints and a non-monotone line search.

    Iteration ``k`` (``P`` the projection onto ``[l, u]``, :func:`project`)::

        α_k   = sᵀs / sᵀy  (bb_type=1)  or  sᵀy / yᵀy  (bb_type=2),
                s = x_k − x_{k−1},  y = g_k − g_{k−1},  safeguarded to [1e-10, 1e10]
        d_k   = P(x_k − α_k g_k) − x_k                 (feasible descent direction)
        x_k+1 = x_k + t d_k,   t = 1, then backtracked until
        f(x_k + t d_k) ≤ max_{0≤j<M} f(x_{k−j}) + γ t g_kᵀd_k       (GLL, M = memory)

    Backtracking takes the minimiser of the quadratic through ``f(x_k)``,
    ``g_kᵀd_k`` and ``f(x_k + t d_k)``, safeguarded to ``[0.1 t, 0.5 t]``. All
    iterates are feasible because ``[x_k, x_k + d_k]`` lies in the (convex) box.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, g)``; ``x`` has the shape and floating dtype of ``x0``.
    x0 : array
        Starting point; it must satisfy the bounds (``ValueError`` otherwise,
        with the number of violating points).
    lower, upper : scalar, array or None
        Bounds broadcastable to ``x0.shape`` (None: unbounded on that side).
    maxiter : int
        Maximum number of iterations (counted from the start of the run, also when
        resuming from ``state``).
    memory : int
        ``M`` of the non-monotone condition (1: monotone Armijo).
    suff_dec : float
        ``γ`` of the sufficient-decrease condition.
    bb_type : {1, 2}
        Barzilai–Borwein step formula.
    alpha0 : float, optional
        Spectral step of the first iteration. Default, as SlimOptim:
        ``0.1 ‖x0‖∞ / ‖g0‖∞`` (the first trial step changes ``x`` by at most 10 % of
        its largest entry), or ``1/‖g0‖∞`` when ``x0 = 0``.
    max_linesearch : int
        Maximum number of function evaluations in one line search; when exceeded
        the run stops at the current iterate with ``success=False``.
    opt_tol : float
        Converged when ``‖P(x − g) − x‖∞ < opt_tol`` (first-order optimality; this
        test depends on the scale of ``g``, the others below do not).
    prog_tol : float
        Stop for lack of progress when the step ``‖t d‖∞ < prog_tol ‖x0‖∞``, or the
        change ``|f_k+1 − f_k|`` or the directional derivative ``−g_kᵀd_k`` falls
        below ``prog_tol |f(x0)|``. Relative, so that rescaling ``f`` or ``x``
        (:class:`ScaledObjective`, units) does not change when the run stops
        (absolute when ``x0 = 0`` or ``f(x0) = 0``). 0 disables these tests.
    max_fev : int, optional
        Stop after this many evaluations of ``fun``.
    return_best : bool
        Return the accepted iterate of lowest ``f`` (a non-monotone method may end
        above its best value). Switch off for stochastic objectives (random shot
        batches), where values from different batches are not comparable.
    store_x : bool
        Keep every accepted iterate in ``result.xhist``.
    callback : callable, optional
        ``callback(x, info)`` after every iteration; ``info`` is a dict with
        ``iteration, f, nfev, step, alpha, opt_cond``. Returning ``True`` stops the run.
    progress : bool
        Show a tqdm progress bar.
    state : OptimizerState or dict, optional
        Resume from this state (from ``checkpoint``): no evaluation at ``x0`` (whose
        shape and dtype are still used), and the run continues at iteration
        ``state.iteration + 1`` exactly as the interrupted one would have.
    checkpoint : callable, optional
        ``checkpoint(state)`` after every accepted iteration, before ``callback``,
        with a copy of the :class:`OptimizerState` (store it to resume later).

    Returns
    -------
    OptimizeResult
    """
    if bb_type not in (1, 2):
        raise ValueError(f"bb_type must be 1 or 2, got {bb_type!r}")
    return _projected_search("spg", fun, x0, lower, upper, maxiter=maxiter, memory=memory, pairs=0,
                             suff_dec=suff_dec, bb_type=bb_type, alpha0=alpha0, max_linesearch=max_linesearch,
                             opt_tol=opt_tol, prog_tol=prog_tol, max_fev=max_fev, return_best=return_best,
                             store_x=store_x, callback=callback, progress=progress, state=state,
                             checkpoint=checkpoint)


@serial_blas()
def lbfgs(fun, x0, lower=None, upper=None, *, maxiter=20, memory=5, suff_dec=1e-4, alpha0=None,
          max_linesearch=20, opt_tol=1e-5, prog_tol=1e-9, max_fev=None, return_best=True, store_x=False,
          callback=None, progress=True, state=None, checkpoint=None):
    r"""Projected L-BFGS with box constraints; resumable (unlike :func:`lbfgsb`).

    Iteration ``k``: the points held at a bound by the gradient,
    ``A = {i : x_i = l_i, g_i > 0} ∪ {i : x_i = u_i, g_i < 0}``, are frozen; on the
    others the two-loop recursion (Nocedal & Wright, Alg. 7.4) applies the L-BFGS
    inverse-Hessian model ``H_k`` of the last ``memory`` pairs
    ``(s_j, y_j) = (x_{j+1} − x_j, g_{j+1} − g_j)`` (kept when ``sᵀy > 1e-10 ‖s‖‖y‖``),
    ``H⁰ = (sᵀy / yᵀy) I`` from the newest pair::

        d_k   = P(x_k − H_k g_k) − x_k,    x_k+1 = x_k + t d_k,
        f(x_k + t d_k) ≤ f(x_k) + γ t g_kᵀd_k      (monotone Armijo, t backtracked as in spg)

    The first iteration (no pairs) takes SPG's first step ``α0 g``; a direction
    that is not a descent direction clears the memory and falls back to it. The
    memory pairs are part of :class:`OptimizerState`, so ``state=``/``checkpoint=``
    resume a run exactly (:func:`lbfgsb`, scipy's Fortran L-BFGS-B, cannot be resumed).
    Other parameters as :func:`spg`; ``memory`` is the number of pairs.
    """
    return _projected_search("lbfgs", fun, x0, lower, upper, maxiter=maxiter, memory=1, pairs=memory,
                             suff_dec=suff_dec, bb_type=1, alpha0=alpha0, max_linesearch=max_linesearch,
                             opt_tol=opt_tol, prog_tol=prog_tol, max_fev=max_fev, return_best=return_best,
                             store_x=store_x, callback=callback, progress=progress, state=state,
                             checkpoint=checkpoint)


def _first_step(alpha0, x, g):
    """SPG's first spectral step: ``alpha0`` or ``0.1 ‖x‖∞ / ‖g‖∞`` (``1/‖g‖∞`` at x = 0)."""
    if alpha0 is not None:
        return float(alpha0)
    gmax = float(np.max(np.abs(g)))
    xmax = float(np.max(np.abs(x)))
    return (0.1 * xmax if xmax > 0 else 1.0) / gmax


def _two_loop(q, s_pairs, y_pairs):
    """``H q`` for the L-BFGS inverse-Hessian model of the pairs (oldest first)."""
    q = q.copy()
    k = len(s_pairs)
    rho = [1.0 / float(np.dot(y_pairs[j], s_pairs[j])) for j in range(k)]
    a = np.zeros(k)
    for j in range(k - 1, -1, -1):
        a[j] = rho[j] * float(np.dot(s_pairs[j], q))
        q -= a[j] * y_pairs[j]
    s, y = s_pairs[-1], y_pairs[-1]
    q *= float(np.dot(s, y)) / float(np.dot(y, y))
    for j in range(k):
        b = rho[j] * float(np.dot(y_pairs[j], q))
        q += (a[j] - b) * s_pairs[j]
    return q


def _projected_search(method, fun, x0, lower, upper, *, maxiter, memory, pairs, suff_dec, bb_type, alpha0,
                      max_linesearch, opt_tol, prog_tol, max_fev, return_best, store_x, callback, progress,
                      state, checkpoint):
    """The loop shared by :func:`spg` and :func:`lbfgs`: a feasible direction ``d = P(x − Hg) − x``
    (``H = α I`` spectral, or the L-BFGS model), a (non-)monotone Armijo search on
    ``[x, x + d]``, the stopping tests, and the resumable state."""
    t_start = time.perf_counter()
    x0, dtype = _as_x0(x0)
    shape = x0.shape
    _check_int("maxiter", maxiter, 0)
    _check_int("memory", memory, 1)
    _check_int("max_linesearch", max_linesearch, 1)
    if method == "lbfgs":
        _check_int("memory", pairs, 1)
    if not 0 < suff_dec < 1:
        raise ValueError(f"suff_dec must lie in (0, 1), got {suff_dec}")
    if max_fev is not None:
        _check_int("max_fev", max_fev, 1)
    if checkpoint is not None and not callable(checkpoint):
        raise TypeError("checkpoint must be callable")
    lo, up = _as_bounds(lower, upper, shape)
    lo, up = lo.reshape(-1), up.reshape(-1)
    n = x0.size

    nfev = 0

    def evaluate(z, where):
        nonlocal nfev
        nfev += 1
        return _evaluate(fun, z, shape, dtype, where)

    def optimality(x, g):
        return float(np.max(np.abs(project(x - g, lo, up) - x)))

    if state is None:
        x = _check_feasible(x0.astype(np.float64).reshape(shape), lo.reshape(shape), up.reshape(shape)).reshape(-1)
        f, g = evaluate(x, "x0")
        if not np.isfinite(f) or not np.all(np.isfinite(g)):
            raise ValueError(f"fun(x0) is not finite (f = {f}); cannot start")
        # scales of the relative progress tests
        f_scale = abs(f) if f != 0 else 1.0
        x_scale = float(np.max(np.abs(x))) or 1.0
        fhist = [f]
        opt_hist = [optimality(x, g)]
        best_x, best_f = x.copy(), f
        # last M accepted values for the GLL reference max; a fixed-length window
        recent = [f]
        x_prev = g_prev = None
        s_pairs, y_pairs = [], []
        start = 0
    else:
        st = OptimizerState.from_dict(state)
        if st.method != method:
            raise ValueError(f"cannot resume {method} from a {st.method!r} optimizer state")
        if st.x.size != n:
            raise ValueError(f"optimizer state holds {st.x.size} unknowns, x0 has {n}")
        x, f, g = st.x.copy(), st.f, st.g.copy()
        f_scale, x_scale = st.f_scale, st.x_scale
        fhist, opt_hist = list(st.fhist), list(st.opt_hist)
        best_x, best_f = st.best_x.copy(), st.best_f
        recent = list(st.recent)
        x_prev = None if st.x_prev is None else st.x_prev.copy()
        g_prev = None if st.g_prev is None else st.g_prev.copy()
        s_pairs, y_pairs = list(st.s_pairs), list(st.y_pairs)
        nfev = st.nfev
        start = st.iteration

    def snapshot(iteration):
        return OptimizerState(
            method=method, iteration=iteration, nfev=nfev, x=x.copy(), f=f, g=g.copy(), f_scale=f_scale,
            x_scale=x_scale, fhist=np.array(fhist), opt_hist=np.array(opt_hist), best_x=best_x.copy(),
            best_f=best_f, recent=np.array(recent), x_prev=None if x_prev is None else x_prev.copy(),
            g_prev=None if g_prev is None else g_prev.copy(),
            s_pairs=np.array(s_pairs).reshape(-1, n), y_pairs=np.array(y_pairs).reshape(-1, n))

    xhist = [x.reshape(shape).astype(dtype)] if store_x else []
    message, success = "maximum number of iterations reached", False
    bar = _progress_bar(maxiter, progress, method)
    if bar is not None and start:
        bar.update(start)
    it = start
    try:
        for it in range(start + 1, maxiter + 1):
            if opt_hist[-1] < opt_tol:
                message, success, it = "first-order optimality below opt_tol", True, it - 1
                break
            # ---- direction
            if method == "spg":
                if x_prev is None:
                    alpha = _first_step(alpha0, x, g)
                else:
                    s, y = x - x_prev, g - g_prev
                    sy = np.dot(s, y)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        alpha = float(np.dot(s, s) / sy if bb_type == 1 else sy / np.dot(y, y))
                    # non-positive curvature, 0/0 (a zero step) or overflow: fall back to a unit spectral step
                    if not np.isfinite(alpha) or alpha <= 1e-10 or alpha > 1e10:
                        alpha = 1.0
                d = project(x - alpha * g, lo, up) - x
            else:
                d = None
                if s_pairs:
                    # points held at a bound by the gradient stay out of the quasi-Newton model
                    held = ((x <= lo) & (g > 0)) | ((x >= up) & (g < 0))
                    hg = _two_loop(np.where(held, 0.0, g), s_pairs, y_pairs)
                    hg[held] = 0.0
                    d = project(x - hg, lo, up) - x
                    alpha = float(np.dot(s_pairs[-1], y_pairs[-1]) / np.dot(y_pairs[-1], y_pairs[-1]))
                    if not float(np.dot(g, d)) < 0:
                        s_pairs, y_pairs, d = [], [], None  # not a descent direction: restart the memory
                if d is None:
                    alpha = _first_step(alpha0, x, g)
                    d = project(x - alpha * g, lo, up) - x
            gtd = float(np.dot(g, d))
            if gtd > -prog_tol * f_scale or gtd >= 0:
                message, it = "no progress: directional derivative below prog_tol", it - 1
                break
            # ---- (non-)monotone Armijo backtracking
            f_ref = max(recent)
            t = 1.0
            ls_ok = False
            for _ in range(max_linesearch):
                x_new = x + t * d
                # round-off of x + t·d may step a hair outside the box
                np.clip(x_new, lo, up, out=x_new)
                f_new, g_new = evaluate(x_new, f"iteration {it}")
                finite = np.isfinite(f_new) and np.all(np.isfinite(g_new))
                if finite and f_new <= f_ref + suff_dec * t * gtd:
                    ls_ok = True
                    break
                if max_fev is not None and nfev >= max_fev:
                    break
                if not finite:
                    t_new = 0.1 * t
                else:
                    # minimiser of the quadratic matching f(0), f'(0) = gtd and f(t)
                    denom = 2.0 * (f_new - f - t * gtd)
                    t_new = -gtd * t * t / denom if denom > 0 else 0.5 * t
                    t_new = min(max(t_new, 0.1 * t), 0.5 * t)
                t = t_new
                if np.max(np.abs(t * d)) < prog_tol * x_scale:
                    break
            if not ls_ok:
                message = ("line search failed: no sufficient decrease within "
                           f"{max_linesearch} evaluations" if (max_fev is None or nfev < max_fev)
                           else "maximum number of function evaluations reached")
                it -= 1
                break
            if method == "lbfgs":
                s, y = x_new - x, g_new - g
                if float(np.dot(s, y)) > 1e-10 * float(np.linalg.norm(s) * np.linalg.norm(y)):
                    s_pairs.append(s)
                    y_pairs.append(y)
                    if len(s_pairs) > pairs:
                        s_pairs.pop(0)
                        y_pairs.pop(0)
            x_prev, g_prev, f_old = x, g, f
            x, f, g = x_new, f_new, g_new
            fhist.append(f)
            opt_hist.append(optimality(x, g))
            recent.append(f)
            if len(recent) > memory:
                recent.pop(0)
            if store_x:
                xhist.append(x.reshape(shape).astype(dtype))
            if f < best_f:
                best_x, best_f = x.copy(), f
            if bar is not None:
                bar.update(1)
                bar.set_postfix(f=f"{f:.4e}", nfev=nfev)
            if checkpoint is not None:
                checkpoint(snapshot(it))
            if callback is not None:
                info = dict(iteration=it, f=f, nfev=nfev, step=t, alpha=alpha, opt_cond=opt_hist[-1])
                if callback(x.reshape(shape).astype(dtype), info) is True:
                    message, success = "stopped by callback", True
                    break
            step = float(np.max(np.abs(t * d)))
            if opt_hist[-1] < opt_tol:
                message, success = "first-order optimality below opt_tol", True
                break
            if step < prog_tol * x_scale:
                message = "no progress: step below prog_tol"
                break
            if abs(f - f_old) < prog_tol * f_scale:
                message = "no progress: change of f below prog_tol"
                break
            if max_fev is not None and nfev >= max_fev:
                message = "maximum number of function evaluations reached"
                break
    finally:
        if bar is not None:
            bar.close()
    x_last = x.reshape(shape).astype(dtype)
    if return_best:
        x_out, f_out = best_x.reshape(shape).astype(dtype), best_f
    else:
        x_out, f_out = x_last, f
    return OptimizeResult(x=x_out, f=f_out, fhist=np.array(fhist), nfev=nfev, nit=len(fhist) - 1,
                          success=success, message=message, opt_cond=np.array(opt_hist), x_last=x_last,
                          xhist=xhist, time=time.perf_counter() - t_start)


def _check_int(name, v, vmin):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if v < vmin:
        raise ValueError(f"{name} must be >= {vmin}, got {v}")


# --------------------------------------------------------------------------- L-BFGS-B
@serial_blas()
def lbfgsb(fun, x0, lower=None, upper=None, *, maxiter=20, memory=10, max_fev=None, gtol=1e-5,
           ftol=2.2e-9, callback=None, progress=True):
    r"""Bound-constrained L-BFGS (``scipy.optimize.minimize(method="L-BFGS-B")``).

    Minimises ``f(x)`` s.t. ``l ≤ x ≤ u`` with a limited-memory (``memory`` pairs)
    quasi-Newton model and a projected search (Byrd, Lu, Nocedal & Zhu 1995).
    scipy works in float64: ``x`` is converted on the way in and ``fun`` receives
    ``x`` in the shape and dtype of ``x0``; its gradient is cast to float64.

    Parameters are those of :func:`spg` where they coincide; ``gtol``/``ftol`` are
    scipy's projected-gradient and relative-reduction tolerances. ``callback(x, info)``
    (``info``: ``iteration, f, nfev``) runs after every iteration; returning ``True``
    stops the run. Returns an :class:`OptimizeResult` (``fhist`` holds ``f(x0)`` and the
    value at each iteration).
    """
    from scipy.optimize import Bounds, minimize

    t_start = time.perf_counter()
    x0, dtype = _as_x0(x0)
    shape = x0.shape
    _check_int("maxiter", maxiter, 0)
    _check_int("memory", memory, 1)
    lo, up = _as_bounds(lower, upper, shape)
    x = _check_feasible(x0.astype(np.float64), lo, up).reshape(-1)
    nfev = 0
    cache = {}

    def wrapped(z):
        nonlocal nfev
        nfev += 1
        f, g = _evaluate(fun, z, shape, dtype, f"evaluation {nfev}")
        cache["x"], cache["f"] = z.copy(), f
        return f, g

    f0, _ = wrapped(x)
    fhist = [f0]
    bar = _progress_bar(maxiter, progress, "l-bfgs-b")

    class _Stop(Exception):
        pass

    state = {"it": 0, "stopped": False, "x": x.copy(), "f": f0}

    def cb(xk):
        state["it"] += 1
        # scipy passes the new iterate; its value is the last one evaluated there
        fk = cache["f"] if np.array_equal(cache.get("x"), xk) else wrapped(xk)[0]
        fhist.append(fk)
        state["x"], state["f"] = xk.copy(), fk
        if bar is not None:
            bar.update(1)
            bar.set_postfix(f=f"{fk:.4e}", nfev=nfev)
        if callback is not None:
            if callback(xk.reshape(shape).astype(dtype), dict(iteration=state["it"], f=fk, nfev=nfev)) is True:
                state["stopped"] = True
                raise _Stop

    options = dict(maxiter=maxiter, maxcor=memory, gtol=gtol, ftol=ftol,
                   maxfun=max_fev if max_fev is not None else max(15000, 10 * maxiter))
    try:
        if maxiter == 0:
            raise _Stop
        res = minimize(wrapped, x, jac=True, method="L-BFGS-B", bounds=Bounds(lo.ravel(), up.ravel()),
                       callback=cb, options=options)
        xr, fr, msg, ok = res.x, float(res.fun), str(res.message), bool(res.success)
    except _Stop:
        xr, fr = state["x"], state["f"]
        msg, ok = ("stopped by callback", True) if state["stopped"] else ("maximum number of iterations reached", False)
    finally:
        if bar is not None:
            bar.close()
    xr = np.clip(xr, lo.ravel(), up.ravel()).reshape(shape).astype(dtype)
    return OptimizeResult(x=xr, f=fr, fhist=np.array(fhist), nfev=nfev, nit=len(fhist) - 1, success=ok,
                          message=msg, opt_cond=np.full(len(fhist), np.nan), x_last=xr,
                          time=time.perf_counter() - t_start)


# --------------------------------------------------------------------------- FWI helpers
def slowness_bounds(vmin=1.3, vmax=6.5, shape=None, dtype=np.float32):
    r"""Velocity bounds as squared-slowness bounds.

    ``m = 1/v²`` is decreasing in ``v``, so ``vmin ≤ v ≤ vmax`` becomes
    ``m_min = 1/vmax² ≤ m ≤ m_max = 1/vmin²`` (km/s → s²/km²). ``vmin``/``vmax`` may
    be scalars or arrays; with ``shape`` the results are broadcast to full arrays.

    Returns
    -------
    (mmin, mmax)
    """
    vmin = np.asarray(vmin, dtype=np.float64)
    vmax = np.asarray(vmax, dtype=np.float64)
    if not (np.all(np.isfinite(vmin)) and np.all(np.isfinite(vmax))):
        raise ValueError("vmin and vmax must be finite (km/s)")
    if np.any(vmin <= 0):
        raise ValueError(f"vmin must be positive (km/s), got min {float(vmin.min()):g}")
    nbad = int(np.count_nonzero(vmin > vmax))
    if nbad:
        raise ValueError(f"vmin > vmax at {nbad} point(s)")
    mmin, mmax = 1.0 / vmax**2, 1.0 / vmin**2
    if shape is not None:
        shape = tuple(shape)
        mmin, mmax = np.broadcast_to(mmin, shape), np.broadcast_to(mmax, shape)
    return np.array(mmin, dtype=dtype), np.array(mmax, dtype=dtype)


def detect_water_rows(vp, vwater=1.5, atol=5e-3):
    """Number of leading depth rows (last axis) where every ``vp`` equals ``vwater`` within ``atol`` (km/s).

    Accepts a velocity array or any object with a ``vp`` attribute (a Model).
    """
    vp = np.asarray(getattr(vp, "vp", vp), dtype=np.float64)
    if vp.ndim < 1:
        raise ValueError("vp must be an array with depth as last axis")
    is_water = np.isclose(vp, vwater, rtol=0, atol=atol)
    rows = np.all(is_water.reshape(-1, vp.shape[-1]), axis=0)
    return int(np.argmin(rows)) if not rows.all() else int(vp.shape[-1])


class ModelMask:
    """Points of the model the inversion may update (True) versus fixed ones (False).

    ``mask(g)`` zeroes the gradient at fixed points, ``g ↦ g ⊙ 1_free``;
    :meth:`pin_bounds` sets ``l = u = x`` there, so a bound-constrained optimiser
    cannot move them even through the projection.
    """

    def __init__(self, free):
        free = np.asarray(free)
        if free.dtype != bool:
            raise TypeError(f"mask must be a boolean array (True = free), got dtype {free.dtype}")
        self.free = free

    @property
    def shape(self):
        return self.free.shape

    def _check(self, a, name):
        a = np.asarray(a)
        if a.shape != self.free.shape:
            raise ValueError(f"{name} has shape {a.shape}, the mask {self.free.shape}")
        return a

    def __call__(self, g):
        """The gradient with fixed points zeroed (same dtype)."""
        g = self._check(g, "gradient")
        return np.where(self.free, g, np.zeros((), dtype=g.dtype)).astype(g.dtype, copy=False)

    apply = __call__

    def pin_bounds(self, lower, upper, x):
        """Bounds with ``lower = upper = x`` at the fixed points (broadcasting scalar bounds)."""
        x = self._check(x, "x")
        lo = np.array(np.broadcast_to(lower, self.shape), dtype=np.result_type(lower, x.dtype))
        up = np.array(np.broadcast_to(upper, self.shape), dtype=np.result_type(upper, x.dtype))
        lo[~self.free] = x[~self.free]
        up[~self.free] = x[~self.free]
        return lo, up

    def wrap(self, fun):
        """``fun`` with its gradient masked: ``x ↦ (f(x), mask(g(x)))``."""
        def masked(x):
            f, g = fun(x)
            return f, self(g)
        return masked

    @property
    def nfree(self):
        return int(np.count_nonzero(self.free))

    def __repr__(self):
        return f"ModelMask(shape={self.shape}, free={self.nfree}/{self.free.size})"


def water_mask(model, rows=None, vwater=1.5):
    """:class:`ModelMask` fixing the top ``rows`` depth rows (the water layer).

    ``model`` is a :class:`timeprobe.Model` (or a velocity array, depth last). With
    ``rows=None`` the rows are detected as those where ``vp ≈ vwater`` across the
    whole model (:func:`detect_water_rows`).
    """
    shape = tuple(getattr(model, "shape", np.shape(model)))
    if rows is None:
        rows = detect_water_rows(model, vwater)
    _check_int("rows", rows, 0)
    if rows > shape[-1]:
        raise ValueError(f"rows = {rows} exceeds the model depth ({shape[-1]} rows)")
    free = np.ones(shape, dtype=bool)
    free[..., :rows] = False
    return ModelMask(free)


class ScaledObjective:
    r"""Objective rescaled so that gradient steps start at a sensible size.

    ``scale="first"`` (default): at the first call ``c = target / ‖g(x0)‖∞`` is fixed
    and every call returns ``(c f, c g)`` — a consistent rescaling of the problem
    (same minimiser, line searches stay valid), making ``‖g(x0)‖∞ = target``.
    ``scale="every"``: returns ``(f, target · g / ‖g‖∞)`` at every call, as the
    seed's FWI scripts did; the gradient is then no longer the derivative of the
    returned ``f`` (Armijo tests lose their meaning), so prefer ``"first"``.
    ``scale`` may also be a positive number: a fixed ``c``.

    Attributes: ``c`` (the constant, None before the first call), ``nfev``,
    ``fhist`` (unscaled values of every call).
    """

    def __init__(self, fun, scale="first", target=1.0):
        if not callable(fun):
            raise TypeError("fun must be callable")
        if not (scale in ("first", "every") or (isinstance(scale, numbers.Real) and scale > 0)):
            raise ValueError(f"scale must be 'first', 'every' or a positive number, got {scale!r}")
        if not (isinstance(target, numbers.Real) and target > 0):
            raise ValueError(f"target must be a positive number, got {target!r}")
        self.fun = fun
        self.mode = scale
        self.target = float(target)
        self.c = float(scale) if isinstance(scale, numbers.Real) else None
        self.nfev = 0
        self.fhist = []

    def __call__(self, x):
        f, g = self.fun(x)
        self.nfev += 1
        self.fhist.append(float(f))
        g = np.asarray(g)
        gmax = float(np.max(np.abs(g)))
        if self.mode == "every":
            if gmax == 0:
                return f, g
            return f, (g * (self.target / gmax)).astype(g.dtype, copy=False)
        if self.c is None:
            if not np.isfinite(gmax) or gmax == 0:
                raise ValueError(f"cannot normalise by the first gradient: max|g| = {gmax}")
            self.c = self.target / gmax
        return self.c * f, (g * self.c).astype(g.dtype, copy=False)


class ShotBatches:
    """Random shot batches, reproducible from an explicit seed.

    Batch ``k`` is ``batch`` distinct shot indices drawn without replacement from
    ``range(nshots)`` by ``numpy.random.default_rng([seed, k])``: any batch can be
    regenerated from ``(seed, k)`` alone, independently of how many were drawn before.

    Use :attr:`current` inside the objective (the same shots for every evaluation of
    one line search) and :meth:`advance` from the optimiser's callback to move to a
    fresh batch each iteration. Iterating (``next(batches)``) returns the current
    batch and advances.
    """

    def __init__(self, nshots, batch, seed, sort=True):
        _check_int("nshots", nshots, 1)
        _check_int("batch", batch, 1)
        if batch > nshots:
            raise ValueError(f"batch size {batch} exceeds the number of shots {nshots}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
        self.nshots, self.batch, self.seed, self.sort = int(nshots), int(batch), int(seed), bool(sort)
        self.iteration = 0

    def batch_for(self, k):
        """Shot indices of batch ``k`` (sorted unless ``sort=False``)."""
        _check_int("k", k, 0)
        rng = np.random.default_rng([self.seed, int(k)])
        idx = rng.choice(self.nshots, size=self.batch, replace=False)
        return np.sort(idx) if self.sort else idx

    @property
    def current(self):
        return self.batch_for(self.iteration)

    def advance(self):
        """Move to the next batch; returns its indices."""
        self.iteration += 1
        return self.current

    def __iter__(self):
        return self

    def __next__(self):
        idx = self.current
        self.iteration += 1
        return idx

    def __repr__(self):
        return f"ShotBatches(nshots={self.nshots}, batch={self.batch}, seed={self.seed}, iteration={self.iteration})"
