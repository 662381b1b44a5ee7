"""The balanced period-2 orbit of GD on the rank-1 problems and its stability window (MATH.md §1).

On the balanced line ``a = b = x`` (``u = x u_1``, ``v = x v_1`` for matrices) GD reduces to the 1-D map
of the product ``s = x^2``: ``s' = g(s) = s (1 - eta psi(s - y))^2`` (``y = s_1`` for matrices, ``psi(r) =
r + 4 mu r^3``). Its 2-cycles are balanced 2-cycles of the full map whenever the two factors
``1 - eta psi`` multiply to ``+1`` (otherwise the sign of ``x`` flips and the orbit has period 4).

Closed forms for ``mu = 0`` (rescaled ``t = eta y``): ``s_pm = y ((t + 1) +- sqrt((t - 1)(t + 3))) / (2t)``,
two-step multipliers along the balanced line ``7 - 4t - 2t^2`` and across it ``3 - 2t``; for a 2x2 target
with singular values ``s_1 > s_2`` (``sigma = s_2/s_1``, ``t = eta s_1``) the noise block adds
``1 - t(1 - sigma)(1 + t sigma)`` and ``1 - t(1 + sigma)(1 - t sigma)``. Numeric results (any ``mu``, any
shape) take the cycle from the 1-D map and the multipliers from the autodiff Jacobian of ``G^2``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from .. import _validate as v
from .._exact_arithmetic import product_minus_one
from ..errors import InputError
from ..problems import MatrixFactorization, ScalarFactorization
from .gd_map import iterate_jacobian, iterate_jit
from .minimizers import signal

WINDOW_GRID = np.linspace(0.5, 2.2, 171)  # rescaled step sizes eta * y scanned by two_cycle_window


@dataclasses.dataclass(frozen=True)
class TwoCycle:
    """A balanced 2-cycle: ``products`` (ascending ``ab``/``u.v``), ``points`` (2, n) flat coordinates
    (``points[i]`` has product ``products[i]``), named two-step ``multipliers`` (``along``, ``across``,
    ``noise``), all Floquet multipliers ``floquet`` (eigenvalues of ``D(G^2)``), ``stable`` and ``method``."""

    eta: float
    products: np.ndarray
    points: np.ndarray
    multipliers: dict
    floquet: np.ndarray
    stable: bool
    method: str

    def as_dict(self) -> dict:
        def real(x):
            return [float(np.real(m)) for m in np.atleast_1d(x)]
        return dict(eta=self.eta, products=self.products.tolist(), points=self.points.tolist(),
                    multipliers={k: real(val) for k, val in self.multipliers.items()},
                    floquet=[[float(m.real), float(m.imag)] for m in self.floquet],
                    stable=self.stable, method=self.method)


def _quartic(problem: Any) -> float:
    return float(problem.quartic) if isinstance(problem, ScalarFactorization) else 0.0


def closed_form_products(y: float, eta: float) -> np.ndarray:
    """``(s_-, s_+)`` of the ``mu = 0`` balanced 2-cycle (MATH.md §1); needs ``eta y > 1``.

    ``s_-+ = y (t + 1 -+ R) / (2t)``, ``t = eta y``, ``R = sqrt((t - 1)(t + 3))``; ``s_-`` is evaluated
    as ``y 2 / (t (t + 1 + R))`` (the same number, as ``(t + 1)^2 - R^2 = 4``), free of the
    cancellation in ``t + 1 - R`` that loses all digits of ``s_-`` for large ``t``. ``t - 1`` and
    ``t + 3`` are taken from the exact product ``eta y`` (:func:`~mfdyn._exact_arithmetic.product_minus_one`):
    near ``t = 1`` the rounding of ``eta y`` alone cost up to 4e-9 of ``s_pm``, and refused a step
    size just above ``1 / y`` whose product rounds to 1."""
    v.finite_scalar("y", y, positive=True)
    v.finite_scalar("eta", eta, positive=True)
    t = eta * y
    above = product_minus_one(eta, y)  # t - 1 from the exact eta y (t + 3 = above + 4)
    if not above > 0.0:
        raise InputError(f"the balanced 2-cycle exists for eta y > 1 only, got eta y = {t:g}")
    root = np.sqrt(above) * np.sqrt(above + 4.0)
    with np.errstate(over="ignore", under="ignore"):  # (beyond float64's range: 0 or inf, refused by two_cycle)
        return y * np.array([2.0 / (t * (t + 1.0 + root)), (t + 1.0 + root) / (2.0 * t)])


def closed_form_multipliers(problem: Any, eta: float) -> dict | None:
    """Two-step multipliers in closed form (``mu = 0``; noise block only for 2x2 targets); else ``None``."""
    if _quartic(problem) != 0.0:
        return None
    s1 = signal(problem)[0]
    t = eta * s1
    out = {"along": np.array([7.0 - 4.0 * t - 2.0 * t * t]), "across": np.array([3.0 - 2.0 * t])}
    if isinstance(problem, MatrixFactorization):
        if problem.X.shape != (2, 2):
            return None
        sigma = float(np.linalg.svd(np.asarray(problem.X), compute_uv=False)[1]) / s1
        out["noise"] = np.sort(np.array([1.0 - t * (1.0 - sigma) * (1.0 + t * sigma),
                                         1.0 - t * (1.0 + sigma) * (1.0 - t * sigma)]))
    return out


def balanced_map(problem: Any, eta: float, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(g(s), 1 - eta psi(s - y))``: the product map on the balanced line and the factor on ``x``."""
    y = signal(problem)[0]
    r = s - y
    factor = 1.0 - eta * (r + 4.0 * _quartic(problem) * r**3)
    return s * factor**2, factor


def _balanced_point(problem: Any, x: float) -> np.ndarray:
    _, u1, v1 = signal(problem)
    return np.concatenate([x * u1, x * v1])


def _numeric_multipliers(problem: Any, z0: np.ndarray, eta: float) -> tuple[dict, np.ndarray]:
    """Floquet multipliers of ``G^2`` at ``z0`` split into along / across the balanced line and the rest."""
    _, u1, v1 = signal(problem)
    J = np.asarray(iterate_jacobian(problem, jnp.asarray(z0), jnp.asarray(eta, jnp.float64), 2))
    e_along = np.concatenate([u1, v1]) / np.sqrt(2.0)
    e_across = np.concatenate([u1, -v1]) / np.sqrt(2.0)
    basis = np.linalg.svd(np.stack([e_along, e_across]))[2][2:]  # orthonormal complement, (n-2, n)
    out = {"along": np.array([e_along @ J @ e_along]), "across": np.array([e_across @ J @ e_across])}
    if basis.shape[0]:
        out["noise"] = np.sort(np.real(np.linalg.eigvals(basis @ J @ basis.T)))
    mult = np.linalg.eigvals(J)
    return out, mult[np.argsort(-np.abs(mult))]


def _make_cycle(problem: Any, eta: float, s_low: float, method: str, closed: dict | None) -> TwoCycle:
    s_high, factor = balanced_map(problem, eta, np.asarray(s_low))
    x0 = float(np.sqrt(s_low))
    points = np.stack([_balanced_point(problem, x0), _balanced_point(problem, x0 * float(factor))])
    numeric, floquet = _numeric_multipliers(problem, points[0], eta)
    if closed is not None:
        mults, stable = closed, all(np.all(np.abs(m) < 1.0) for m in closed.values())
    else:
        mults, stable = numeric, bool(np.all(np.abs(floquet) < 1.0))
    return TwoCycle(float(eta), np.array([s_low, float(s_high)]), points, mults, floquet, stable, method)


CYCLE_DIGITS = 60  # working precision (decimal digits) of the cycle points' refinement
NEAR_FIXED_POINT = np.geomspace(1e-10, 1e-2, 41)  # relative offsets from y searched in CYCLE_DIGITS digits
FOLD_REFINE = 50  # golden-section steps locating the extremum of a near-tangent pair of cycle points (to 4e-11 of the grid step)


def _cycle_function(y: float, mu: float, eta: float) -> Callable:
    """``G(s) = (g(g(s)) - s) / (g(s) - s)`` of the product map ``g`` in mpmath arithmetic (call it
    inside ``mpmath.workdps(CYCLE_DIGITS)``): its roots are the points of the balanced 2-cycles, the
    fixed point divided out. ``y``, ``mu``, ``eta`` are exact binary numbers."""
    import mpmath

    Y, MU, ETA = mpmath.mpf(y), mpmath.mpf(mu), mpmath.mpf(eta)

    def g(s):
        r = s - Y
        return s * (1 - ETA * (r + 4 * MU * r**3)) ** 2

    def G(s):
        once = g(s)
        return (g(once) - s) / (once - s) if once != s else mpmath.mpf(0)

    return G


def _cycle_point(y: float, mu: float, eta: float, lo: float, hi: float) -> float | None:
    """The point of a balanced 2-cycle of the product map in ``[lo, hi]``, or ``None`` if there is none.

    :func:`_cycle_function` is evaluated in ``CYCLE_DIGITS``-digit arithmetic: near ``eta_c`` float64
    rounding makes ``g(g(s)) - s`` change sign where there is no cycle. The root is bisected there to
    float64 precision."""
    import mpmath

    with mpmath.workdps(CYCLE_DIGITS):
        G = _cycle_function(y, mu, eta)
        a, b = mpmath.mpf(lo), mpmath.mpf(hi)
        fa, fb = G(a), G(b)
        if fa == 0 or fb == 0:
            return float(a if fa == 0 else b)
        if fa * fb > 0:
            return None
        while float(b - a) > 1e-17 * float(b):
            mid = (a + b) / 2
            fm = G(mid)
            if fm == 0:
                return float(mid)
            a, fa, b = (mid, fm, b) if fm * fa > 0 else (a, fa, mid)
        return float((a + b) / 2)


def _near_fixed_point_brackets(y: float, mu: float, eta: float) -> list[tuple[float, float]]:
    """Brackets of the small cycle born at the period doubling ``eta y = 1``: its points lie at
    ``y (1 -+ delta)``, ``delta^2 ~ |eta y - 1| / |1 - 4 mu|``, where float64's ``g(g(s)) - s`` is rounding
    noise (``~ delta^3``); sign changes of :func:`_cycle_function` over ``y (1 +- NEAR_FIXED_POINT)``."""
    import mpmath

    out = []
    with mpmath.workdps(CYCLE_DIGITS):
        G = _cycle_function(y, mu, eta)
        for side in (-1.0, 1.0):
            points = [y * (1.0 + side * d) for d in NEAR_FIXED_POINT]
            signs = [mpmath.sign(G(mpmath.mpf(x))) for x in points]
            out += [tuple(sorted((points[i], points[i + 1]))) for i in range(len(points) - 1)
                    if signs[i] * signs[i + 1] < 0]
    return out


def _fold_brackets(y: float, mu: float, eta: float, lo: float, mid: float, hi: float) -> list[tuple[float, float]]:
    """Brackets of a pair of cycle points between ``lo < mid < hi`` that the float64 grid missed (no sign
    change: both lie between two grid points, as just past a fold of the cycles). :func:`_cycle_function`
    is pushed towards 0 by golden-section search from its sign at ``lo``; if it crosses, the pair is
    ``[lo, m]`` and ``[m, hi]``."""
    import mpmath

    with mpmath.workdps(CYCLE_DIGITS):
        G = _cycle_function(y, mu, eta)
        a, b = mpmath.mpf(lo), mpmath.mpf(hi)
        sign = mpmath.sign(G(a))
        if sign == 0 or sign != mpmath.sign(G(b)):
            return []
        f = lambda x: sign * G(x)  # noqa: E731  (minimized: below 0 means a pair of roots)
        ratio = (mpmath.sqrt(5) - 1) / 2
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        fc, fd = f(c), f(d)
        for _ in range(FOLD_REFINE):
            if fc < 0 or fd < 0:
                break
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - ratio * (b - a)
                fc = f(c)
            else:
                a, c, fc = c, d, fd
                d = a + ratio * (b - a)
                fd = f(d)
        m = c if fc < fd else d
        return [(float(lo), float(m)), (float(m), float(hi))] if min(fc, fd) < 0 else []


def balanced_two_cycles(problem: Any, eta: float) -> list[TwoCycle]:
    """All balanced 2-cycles found on the 1-D product map (any ``mu``), sorted by amplitude ``s_+ - s_-``.

    Roots of ``g(g(s)) - s`` bracketed on a float64 grid over ``(0, 6y]`` (refined near ``s = y``), and
    refined in ``CYCLE_DIGITS`` digits (:func:`_cycle_point`); near the fixed point, where float64 is
    noise, the small cycle of the period doubling is searched in those digits
    (:func:`_near_fixed_point_brackets`); and where the float64 values come close to 0 without a sign
    change, a pair of points just past a fold (:func:`_fold_brackets`)."""
    v.finite_scalar("eta", eta, positive=True)
    y = signal(problem)[0]
    mu = _quartic(problem)
    grid = np.unique(np.concatenate([np.linspace(1e-9 * y, 6.0 * y, 6001),
                                     y * (1.0 + np.geomspace(1e-9, 0.9, 600)),
                                     y * (1.0 - np.geomspace(1e-9, 0.9, 600))]))

    def h(s):
        with np.errstate(all="ignore"):
            return balanced_map(problem, eta, balanced_map(problem, eta, s)[0])[0] - s

    vals = h(grid)
    finite = np.isfinite(vals)
    brackets = [(grid[i], grid[i + 1]) for i in
                np.flatnonzero(finite[:-1] & finite[1:] & (np.sign(vals[:-1]) * np.sign(vals[1:]) < 0))]
    # (a cycle within NEAR_FIXED_POINT[-1] y of y needs the fixed point's multiplier 1 - 2 eta y near -1:
    # delta^2 ~ |eta y - 1| / |1 - 4 mu y^2| at most 1e-4)
    if abs(eta * y - 1.0) <= 10 * NEAR_FIXED_POINT[-1] ** 2 * (1.0 + 4.0 * mu * y * y):
        brackets += _near_fixed_point_brackets(y, mu, eta)
    inner = np.arange(1, grid.size - 1)
    dips = inner[finite[inner - 1] & finite[inner] & finite[inner + 1]
                 & (np.sign(vals[inner - 1]) == np.sign(vals[inner])) & (np.sign(vals[inner]) == np.sign(vals[inner + 1]))
                 & (np.abs(vals[inner]) < np.abs(vals[inner - 1])) & (np.abs(vals[inner]) < np.abs(vals[inner + 1]))
                 & (np.abs(grid[inner] - y) > NEAR_FIXED_POINT[-1] * y)]  # (near y: the search above)
    for i in dips:
        brackets += _fold_brackets(y, mu, eta, grid[i - 1], grid[i], grid[i + 1])
    lows: list[float] = []
    for lo, hi in brackets:
        s = _cycle_point(y, mu, eta, lo, hi)
        if s is None:
            continue  # a sign change of rounding noise (near the flat fixed point at eta_c), not a cycle
        image, factor = balanced_map(problem, eta, np.asarray(s))
        image_factor = balanced_map(problem, eta, image)[1]
        if abs(image - s) <= 4 * np.finfo(float).eps * y or image <= 0 or factor * image_factor <= 0:
            continue  # the fixed point itself, or a sign-flipping cycle (period 4 in (a, b))
        low = float(min(s, image))
        if all(abs(low - other) > 1e-12 * y for other in lows):
            lows.append(low)
    cycles = [_make_cycle(problem, eta, low, "numeric", None) for low in lows]
    return sorted(cycles, key=lambda c: c.products[1] - c.products[0])


def two_cycle(problem: Any, eta: float, method: str = "auto") -> TwoCycle:
    """The balanced period-2 orbit of GD at step ``eta``.

    ``method="closed"`` uses MATH.md §1 (``mu = 0``); ``"numeric"`` finds the cycle on the 1-D product map
    and takes multipliers from the Jacobian of ``G^2``; ``"auto"`` prefers the closed form. For the
    numeric method with several balanced 2-cycles the smallest one (the branch born at ``eta_c``) is returned.
    """
    v.finite_scalar("eta", eta, positive=True)
    v.choice("method", method, ("auto", "closed", "numeric"))
    y = signal(problem)[0]
    mu = _quartic(problem)
    if method == "closed" and mu != 0.0:
        raise InputError(f"method='closed' needs quartic=0, got quartic={mu:g}; use method='numeric'")
    if mu == 0.0 and method != "numeric" or isinstance(problem, MatrixFactorization):
        if not product_minus_one(eta, y) > 0.0:  # (the exact eta y: closed_form_products)
            raise InputError(
                f"eta={eta:g} has no balanced 2-cycle: it exists only above the critical step size, "
                f"eta > 1/{'s1' if isinstance(problem, MatrixFactorization) else 'y'} = {1.0 / y:.10g}"
            )
        closed = closed_form_multipliers(problem, eta) if method != "numeric" else None
        kind = "closed form" if closed is not None else "numeric"
        low, high = closed_form_products(y, eta)
        if not (low >= np.finfo(float).tiny and np.isfinite(high * eta * y)):
            raise InputError(f"eta={eta:g} is too large for the 2-cycle in float64: its products "
                             f"s_- = {low:.3g}, s_+ = {high:.3g} (and the multipliers, ~ (eta y)^2) leave float64's range")
        return _make_cycle(problem, eta, float(low), kind, closed)
    cycles = balanced_two_cycles(problem, eta)
    if not cycles:
        raise InputError(
            f"eta={eta:g} has no balanced 2-cycle for quartic={mu:g} (searched products in (0, {6 * y:g}]); "
            f"the period-doubling of the balanced minimizer happens at eta_c = 1/y = {1.0 / y:.10g}"
        )
    return cycles[0]


def _has_stable_cycle(problem: Any, eta: float) -> bool:
    if isinstance(problem, MatrixFactorization) or _quartic(problem) == 0.0:
        if not product_minus_one(eta, signal(problem)[0]) > 0.0:
            return False
        cycles = balanced_two_cycles(problem, eta)  # (none within float64's reach of eta_c)
        return bool(cycles) and cycles[0].stable
    return any(c.stable for c in balanced_two_cycles(problem, eta))


def two_cycle_window(problem: Any, method: str = "auto", scan: int = 171) -> tuple[float, float]:
    """``(eta_low, eta_high)``: the step sizes where a balanced 2-cycle exists and is stable.

    Closed form (``method="auto"``/``"closed"``, ``mu = 0``): ``(1/y, (sqrt 5 - 1)/y)``; for a 2x2 target
    ``(1/s_1, min(sqrt 5 - 1, s_1/s_2)/s_1)``. Numeric: scan ``eta y`` over ``[0.5, 2.2]``, take the first run
    of step sizes with a stable balanced 2-cycle (``scan`` grid points) and refine both ends by bisection
    to ~1e-12 relative (:func:`balanced_two_cycles` finds the cycles that float64 cannot resolve: one born
    with zero amplitude at ``eta_c``, a pair just past a fold; measured against 60-digit references:
    3.6e-14 at ``eta_c`` for ``mu = 0.1``, 2.8e-14 at the fold of ``mu = 0.5``).
    """
    v.choice("method", method, ("auto", "closed", "numeric"))
    y = signal(problem)[0]
    closed = closed_form_multipliers(problem, 1.0 / y) if method != "numeric" else None
    if closed is not None:
        upper = np.sqrt(5.0) - 1.0
        if "noise" in closed:
            s = np.linalg.svd(np.asarray(problem.X), compute_uv=False)
            upper = min(upper, s[0] / s[1]) if s[1] > 0 else upper
        return 1.0 / y, upper / y
    if method == "closed":
        raise InputError("no closed form for this problem (needs quartic=0, or a 2x2 target); use method='numeric'")
    scan = v.integer("scan", scan, minimum=3)
    etas = np.linspace(WINDOW_GRID[0], WINDOW_GRID[-1], scan) / y
    stable = np.array([_has_stable_cycle(problem, float(e)) for e in etas])
    if not stable.any():
        raise InputError(f"no step size eta*y in [{WINDOW_GRID[0]}, {WINDOW_GRID[-1]}] has a stable balanced 2-cycle")
    first = int(np.argmax(stable))
    last = first + int(np.argmin(stable[first:])) - 1 if not stable[first:].all() else len(etas) - 1

    def edge(inside: float, outside: float) -> float:
        for _ in range(60):
            mid = 0.5 * (inside + outside)
            if _has_stable_cycle(problem, mid):
                inside = mid
            else:
                outside = mid
            if abs(inside - outside) <= 1e-13 * abs(inside):
                break
        return 0.5 * (inside + outside)

    low = edge(float(etas[first]), float(etas[first - 1])) if first > 0 else float(etas[0])
    high = edge(float(etas[last]), float(etas[last + 1])) if last + 1 < len(etas) else float(etas[-1])
    return low, high


def verify_two_cycle(problem: Any, cycle: TwoCycle) -> float:
    """``|G^2(z0) - z0|``: how exactly ``cycle.points[0]`` returns after two GD steps."""
    z0 = jnp.asarray(cycle.points[0])
    return float(jnp.max(jnp.abs(iterate_jit(problem, z0, jnp.asarray(cycle.eta, jnp.float64), 2) - z0)))
