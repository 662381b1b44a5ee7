"""A delta-parameterized certificate ``I(delta; z)`` and its state ``delta(z)`` (MATH.md §1).

Vocabulary: the family is *nested* if ``I`` is non-increasing in ``delta`` (so the sublevel sets
``{I(delta; .) <= 0}`` grow with ``delta``); the *state* of a point is
``delta(z) = inf{delta in [lo, hi] : I(delta; z) <= 0}``, found by bisection (vectorized). It is ``lo``
when ``I(lo; z) <= 0`` and ``+inf`` when ``I(hi; z) > 0`` (the point lies on no level set of the bracket).

A certificate is an ``equinox.Module``: the function is static and its coefficients are an array leaf,
so a family searched over coefficients compiles once.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate as v
from ..errors import InputError
from . import formula as fml

BISECTION_STEPS = 2200  # at most: halving a float64 interval to two adjacent floats takes < 2100 steps


class Kernel(eqx.Module):
    """What compiled code needs of a certificate: the function, its coefficients and the bracket.

    Kept apart from the descriptive fields so that certificates differing only in name or formula text
    share compiled functions.
    """

    fn: Callable = eqx.field(static=True)
    coefficients: jax.Array
    bracket: tuple[float, float] = eqx.field(static=True)
    takes_coefficients: bool = eqx.field(static=True)

    def value(self, delta: Any, z: Any) -> jax.Array:
        if self.takes_coefficients:
            return jnp.asarray(self.fn(delta, z, self.coefficients), jnp.float64)
        return jnp.asarray(self.fn(delta, z), jnp.float64)


class Certificate(eqx.Module):
    """``I(delta; z)``: ``fn(delta, z)`` (or ``fn(delta, z, coefficients)`` for a family).

    ``threshold`` (a number or ``threshold(problem, eta)``) is the state below which initializations are
    called certified; ``None`` certifies every point with a finite state.
    """

    fn: Callable = eqx.field(static=True)
    coefficients: jax.Array
    bracket: tuple[float, float] = eqx.field(static=True)
    variables: tuple[str, ...] | None = eqx.field(static=True)
    name: str = eqx.field(static=True)
    formula: str | None = eqx.field(static=True)
    threshold: Any = eqx.field(static=True)
    takes_coefficients: bool = eqx.field(static=True)

    def __init__(self, fn: Callable, *, coefficients: Any = None, bracket: Sequence[float] = (0.0, 10.0),
                 variables: Sequence[str] | None = None, name: str = "custom", formula: str | None = None,
                 threshold: Any = None):
        if not callable(fn):
            raise InputError(f"fn must be callable, got {fn!r}")
        lo, hi = _bracket(bracket)
        self.fn = fn
        self.takes_coefficients = coefficients is not None
        if coefficients is not None:
            v.finite_array("coefficients", coefficients, ndim=1, allow_complex=False)
        self.coefficients = jnp.zeros((0,)) if coefficients is None else jnp.asarray(coefficients, jnp.float64)
        self.bracket = (lo, hi)
        self.variables = None if variables is None else tuple(variables)
        self.name = name
        self.formula = formula
        if threshold is not None and not callable(threshold):
            v.finite_scalar("threshold", threshold)
        self.threshold = threshold

    @classmethod
    def from_formula(cls, text: str, variables: Sequence[str] = ("a", "b"), *, constants: dict | None = None,
                     bracket: Sequence[float] = (0.0, 10.0), name: str | None = None, threshold: Any = None
                     ) -> "Certificate":
        """Parse ``text`` (sympy) in ``delta``, ``variables`` and the named ``constants`` (values fixed here).

        Example: ``Certificate.from_formula("Abs(a^2 - b^2) - delta")``.
        """
        variables = tuple(variables)
        if len(set(variables)) != len(variables) or not all(isinstance(n, str) and n.isidentifier() for n in variables):
            raise InputError(f"variables must be distinct names, got {variables!r}")
        constants = dict(constants or {})
        for key, value in constants.items():
            v.finite_scalar(f"constants[{key!r}]", value)
        names = tuple(constants)
        expr = fml.parse(text, variables, names)
        fn = fml.compile_formula(expr, tuple(variables), names)
        return cls(fn, coefficients=np.array([float(constants[k]) for k in names]), bracket=bracket,
                   variables=variables, name=name or text, formula=text, threshold=threshold)

    def with_coefficients(self, coefficients: Any) -> "Certificate":
        """The same family with new coefficients (no recompilation)."""
        return eqx.tree_at(lambda c: c.coefficients, self, jnp.asarray(coefficients, jnp.float64))

    # ---- evaluation ---------------------------------------------------------------------------
    @property
    def kernel(self) -> Kernel:
        return Kernel(self.fn, self.coefficients, self.bracket, self.takes_coefficients)

    def value(self, delta: Any, z: Any) -> jax.Array:
        """``I(delta; z)`` for one point ``z`` (flat coordinates); traceable."""
        return self.kernel.value(delta, z)

    def __call__(self, delta: Any, z: Any) -> np.ndarray:
        """``I(delta; z)`` for one point or a batch ``(N, n)`` (``delta`` scalar or ``(N,)``)."""
        arr = self._points(z)
        zs = np.atleast_2d(arr)
        deltas = np.broadcast_to(np.asarray(delta, dtype=float), zs.shape[:1])
        out = np.asarray(_values(self.kernel, jnp.asarray(deltas), jnp.asarray(zs)))
        return float(out[0]) if arr.ndim == 1 else out

    def state(self, z: Any) -> np.ndarray:
        """``delta(z) = inf{delta : I(delta; z) <= 0}`` on the bracket, by bisection; ``(N,)`` for ``(N, n)``."""
        arr = self._points(z)
        single = arr.ndim == 1
        out = np.asarray(states(self.kernel, jnp.atleast_2d(jnp.asarray(arr))))
        return out[0] if single else out

    def _points(self, z: Any) -> np.ndarray:
        """``z`` as a float array of points, each with one coordinate per variable, finite."""
        arr = v.finite_array("z", z, allow_complex=False)
        arr = np.asarray(arr, dtype=float)
        if arr.ndim not in (1, 2):
            raise InputError(f"z must be one point (1-D) or (N, n) points, got shape {arr.shape}")
        if self.variables is not None and arr.shape[-1] != len(self.variables):
            n = len(self.variables)
            raise InputError(f"z must have {n} coordinates ({', '.join(self.variables)}) per point, got shape {arr.shape}")
        return arr

    def threshold_for(self, problem: Any, eta: float) -> float | None:
        if self.threshold is None:
            return None
        return float(self.threshold(problem, eta)) if callable(self.threshold) else float(self.threshold)

    def verify(self, problem: Any, eta: float, region: Any, **kwargs) -> Any:
        """See :func:`mfdyn.certificates.verify`."""
        from .verify import verify

        return verify(self, problem, eta, region, **kwargs)

    def certified_region(self, problem: Any, eta: float, grid: Any, **kwargs) -> Any:
        """See :func:`mfdyn.certificates.certified_region`."""
        from .region import certified_region

        return certified_region(self, problem, eta, grid, **kwargs)


def _bracket(bracket: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in bracket)
    except (TypeError, ValueError):
        raise InputError(f"bracket must be two numbers (lo, hi), got {bracket!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"bracket must be finite with lo < hi, got {bracket!r}")
    return lo, hi


def state_one(cert: Kernel, z: jax.Array) -> jax.Array:
    """Bisection for ``delta(z)`` at one point (jit/vmap-compatible), until the interval is two
    adjacent floats (its midpoint rounds to an end): full precision for any bracket width."""
    lo, hi = cert.bracket

    def unresolved(state):
        i, a, b = state
        mid = 0.5 * a + 0.5 * b
        return (i < BISECTION_STEPS) & (mid > a) & (mid < b)

    def body(state):
        i, a, b = state
        mid = 0.5 * a + 0.5 * b  # (no overflow for brackets near the float64 limit)
        inside = cert.value(mid, z) <= 0
        return i + 1, jnp.where(inside, a, mid), jnp.where(inside, mid, b)

    start = (jnp.asarray(0), jnp.asarray(lo, jnp.float64), jnp.asarray(hi, jnp.float64))
    _, a, b = jax.lax.while_loop(unresolved, body, start)
    at_lo = cert.value(lo, z) <= 0
    at_hi = cert.value(hi, z) <= 0
    return jnp.where(at_lo, lo, jnp.where(at_hi, b, jnp.inf))


@eqx.filter_jit
def states(cert: Kernel, zs: jax.Array) -> jax.Array:
    return jax.vmap(lambda z: state_one(cert, z))(zs)


@eqx.filter_jit
def _values(cert: Kernel, deltas: jax.Array, zs: jax.Array) -> jax.Array:
    return jax.vmap(cert.value)(deltas, zs)
