"""Scalar factorization ``f(a, b) = 1/2 (ab - y)^2 + mu (ab - y)^4`` (MATH.md §1)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .base import Problem, as_float

ScalarParams = tuple[jax.Array, jax.Array]


class ScalarFactorization(Problem):
    """``f(a, b) = 1/2 r^2 + mu r^4`` with ``r = ab - y``; params ``(a, b)``.

    Gradient: ``(psi b, psi a)`` with ``psi = r + 4 mu r^3``. Conserved by gradient flow:
    ``a^2 - b^2``.
    """

    target: jax.Array
    quartic: jax.Array

    def __init__(self, target: Any = 1.0, quartic: Any = 0.0):
        self.target = as_float("target", target)
        self.quartic = as_float("quartic", quartic, nonnegative=True)

    def param_template(self) -> ScalarParams:
        s = jax.ShapeDtypeStruct((), jnp.float64)
        return (s, s)

    def residual(self, params: ScalarParams) -> jax.Array:
        a, b = params
        return a * b - self.target

    def psi(self, params: ScalarParams) -> jax.Array:
        """Derivative of the loss in the product ``ab``: ``psi = r + 4 mu r^3``.

        Evaluated as ``r + ((4 mu r) r) r`` so that ``mu = 0`` gives exactly ``r`` even where ``r^3``
        would overflow (``0 * inf`` is NaN): the pure quadratic loss then overflows only when ``r``
        itself does, as it should."""
        r = self.residual(params)
        return r + 4.0 * self.quartic * r * r * r

    def loss(self, params: ScalarParams) -> jax.Array:
        """``r^2 / 2 + mu r^4``, the quartic term as ``((mu r^2) r) r`` (see :meth:`psi`)."""
        r = self.residual(params)
        return 0.5 * r**2 + self.quartic * r**2 * r * r

    def grad(self, params: ScalarParams) -> ScalarParams:
        a, b = params
        psi = self.psi(params)
        return (psi * b, psi * a)

    def imbalance(self, params: ScalarParams) -> jax.Array:
        a, b = params
        return a**2 - b**2

    def product(self, params: ScalarParams) -> jax.Array:
        a, b = params
        return jnp.reshape(a * b, (1, 1))

    def target_matrix(self) -> jax.Array:
        return jnp.reshape(self.target, (1, 1))

    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> ScalarParams:
        return self._gaussian(key, scale)
