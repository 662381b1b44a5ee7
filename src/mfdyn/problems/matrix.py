"""Matrix factorization ``f(U, V) = 1/2 ||U V^T - X||^2`` (MATH.md §1 for rank 1)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import _validate as v
from .base import Problem, as_matrix, frob_sq

MatrixParams = tuple[jax.Array, jax.Array]


class MatrixFactorization(Problem):
    """``f(U, V) = 1/2 ||U V^T - X||_F^2``, ``U: (m, r)``, ``V: (n, r)``.

    Gradient: ``(R V, R^T U)`` with ``R = U V^T - X``. Conserved by gradient flow: ``U^T U - V^T V``.
    A rank above ``min(m, n)`` is allowed (over-parameterization).
    """

    X: jax.Array
    rank: int = eqx.field(static=True)

    def __init__(self, X: Any, rank: int):
        self.X = as_matrix("X", X)
        self.rank = v.integer("rank", rank, minimum=1)

    def param_template(self) -> MatrixParams:
        m, n = self.X.shape
        return (jax.ShapeDtypeStruct((m, self.rank), jnp.float64), jax.ShapeDtypeStruct((n, self.rank), jnp.float64))

    def residual(self, params: MatrixParams) -> jax.Array:
        U, V = params
        return U @ V.T - self.X  # (m, n)

    def loss(self, params: MatrixParams) -> jax.Array:
        return 0.5 * frob_sq(self.residual(params))

    def grad(self, params: MatrixParams) -> MatrixParams:
        U, V = params
        R = self.residual(params)  # (m, n)
        return (R @ V, R.T @ U)

    def imbalance(self, params: MatrixParams) -> jax.Array:
        U, V = params
        return U.T @ U - V.T @ V  # (r, r)

    def product(self, params: MatrixParams) -> jax.Array:
        U, V = params
        return U @ V.T

    def target_matrix(self) -> jax.Array:
        return self.X

    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> MatrixParams:
        return self._gaussian(key, scale)
