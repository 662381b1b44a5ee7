"""Global minimizers, the critical step size and the GD-stable imbalance (MATH.md §1).

The global minimizers of the scalar loss are the hyperbola ``ab = y``; those of the rank-1 matrix loss
are ``u = c u_1``, ``v = (s_1 / c) v_1`` (top singular pair of ``X``). Both are one-parameter curves
``c -> z(c)``. Everything here is computed from the problem's own Hessian along that curve (no closed
form is looked up); MATH.md §1 gives the values the tests compare with:

- ``critical_step = 2 / min_c sharpness(z(c))`` (``= 1/y``, resp. ``1/s_1``);
- ``stable_imbalance(eta)``: the largest ``|a^2 - b^2|`` (resp. ``|||u||^2 - ||v||^2|``) of a minimizer
  with ``eta * sharpness < 2``; gradient flow conserves the imbalance, so it is the largest initial
  imbalance whose gradient-flow limit is GD-stable (``(2/eta) sqrt(1 - eta^2 y^2)`` for the scalar loss).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from .. import _validate as v
from ..errors import InputError
from ..problems import MatrixFactorization, ScalarFactorization


def signal(problem: Any) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s_1, u_1, v_1)``: the target's top singular value and vectors (``(y, [1], [1])`` for scalars)."""
    if isinstance(problem, ScalarFactorization):
        y = float(problem.target)
        if y <= 0:
            raise InputError(f"target must be > 0 for the rank-1 analysis, got {y}")
        return y, np.ones(1), np.ones(1)
    if isinstance(problem, MatrixFactorization):
        if problem.rank != 1:
            raise InputError(f"rank must be 1 for the rank-1 analysis, got {problem.rank}")
        U, s, Vt = np.linalg.svd(np.asarray(problem.X))
        if s[0] <= 0:
            raise InputError("X must be nonzero for the rank-1 analysis")
        return float(s[0]), U[:, 0], Vt[0]
    raise InputError(
        f"problem must be a ScalarFactorization or a rank-1 MatrixFactorization, got {type(problem).__name__}"
    )


def minimizer(problem: Any, c: float) -> np.ndarray:
    """The global minimizer ``z(c)`` in flat coordinates: ``(c, y/c)`` or ``(c u_1, (s_1/c) v_1)``."""
    s1, u1, v1 = signal(problem)
    c = float(v.finite_scalar("c", c))
    if c == 0.0:
        raise InputError("c must be nonzero (the minimizers are (c, y/c)), got 0.0")
    return np.concatenate([c * u1, (s1 / c) * v1])


@jax.jit
def _sharpness_flat(problem: Any, z: jax.Array) -> jax.Array:
    return jnp.linalg.eigvalsh(problem.hessian(problem.unflatten(z)))[-1]


@jax.jit
def _imbalance_flat(problem: Any, z: jax.Array) -> jax.Array:
    return jnp.sum(jnp.asarray(problem.imbalance(problem.unflatten(z))))


def sharpness_on_minimizers(problem: Any, c: float) -> float:
    """Largest Hessian eigenvalue at the minimizer ``z(c)``."""
    return float(_sharpness_flat(problem, jnp.asarray(minimizer(problem, c))))


def _flattest(problem: Any) -> tuple[float, float]:
    """``(log c*, sharpness)`` of the flattest global minimizer (1-D minimization over ``log c``)."""
    s1, _, _ = signal(problem)
    centre = 0.5 * np.log(s1)
    res = optimize.minimize_scalar(
        lambda t: sharpness_on_minimizers(problem, float(np.exp(t))),
        bounds=(centre - 8.0, centre + 8.0), method="bounded", options={"xatol": 1e-12},
    )
    return float(res.x), float(res.fun)


def critical_step(problem: Any) -> float:
    """``eta_c = 2 / min(sharpness over global minimizers)``: above it no global minimizer is GD-stable.

    Computed from the dense Hessian along the minimizer curve (MATH.md §1: equals ``1/y`` for the scalar
    loss with any quartic coefficient and ``1/s_1`` for rank-1 matrices).
    """
    _, smin = _flattest(problem)
    return 2.0 / smin


def stable_imbalance(problem: Any, eta: float) -> float:
    """Largest imbalance ``|a^2 - b^2|`` (resp. ``|||u||^2 - ||v||^2|``) of a GD-stable global minimizer.

    Solves ``eta * sharpness(z(c)) = 2`` on both sides of the flattest minimizer and returns the smaller
    of the two imbalances (MATH.md §1: ``(2/eta) sqrt(1 - eta^2 y^2)``). Needs ``eta < critical_step``.

    Accuracy: near ``eta_c`` the imbalance is a square root of ``eta_c - eta`` found where the sharpness
    crosses ``2 / eta`` just above its minimum, so its relative error grows like
    ``1e-16 eta_c / (eta_c - eta)``: 7e-11 or better for ``eta <= (1 - 1e-6) eta_c``, 2e-7 at
    ``(1 - 1e-9) eta_c``, 4e-5 at ``(1 - 1e-12) eta_c`` (against 50-digit references; the closed form
    of MATH.md §1 keeps its digits there).
    """
    v.finite_scalar("eta", eta, positive=True)
    t_star, smin = _flattest(problem)
    eta_c = 2.0 / smin
    if eta >= eta_c:
        raise InputError(
            f"eta={eta:g} is not below the critical step size eta_c={eta_c:.10g}: no global minimizer is "
            f"GD-stable there; stable_imbalance needs 0 < eta < eta_c"
        )
    excess = lambda t: eta * sharpness_on_minimizers(problem, float(np.exp(t))) - 2.0  # noqa: E731
    ends = []
    for direction in (1.0, -1.0):
        far = t_star + direction * 1.0
        while excess(far) < 0:
            far += direction * 1.0
        t_edge = optimize.brentq(excess, t_star, far, xtol=1e-14, rtol=1e-15) if direction > 0 else \
            optimize.brentq(excess, far, t_star, xtol=1e-14, rtol=1e-15)
        ends.append(abs(float(_imbalance_flat(problem, jnp.asarray(minimizer(problem, float(np.exp(t_edge))))))))
    return min(ends)
