"""Symmetric factorization ``f(X) = 1/4 ||X X^T - M||^2`` (MATH.md §3)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate as v
from ..errors import InputError
from .base import Problem, as_matrix, frob_sq

SYMMETRY_RTOL = 1e-12


class SymmetricFactorization(Problem):
    """``f(X) = 1/4 ||X X^T - M||_F^2``, ``X: (n, r)``, ``M`` symmetric (not necessarily PSD).

    Gradient ``(X X^T - M) X``; gradient flow ``X' = (M - X X^T) X``. The flow has no non-trivial
    conserved quantity, so ``imbalance`` is empty.
    """

    M: jax.Array
    rank: int = eqx.field(static=True)

    def __init__(self, M: Any, rank: int):
        M = as_matrix("M", M)
        if not v.is_traced(M):
            Mn = np.asarray(M)
            if Mn.shape[0] != Mn.shape[1]:
                raise InputError(f"M must be square, got shape {Mn.shape}")
            asym = float(np.max(np.abs(Mn - Mn.T))) if Mn.size else 0.0
            scale = max(float(np.max(np.abs(Mn))) if Mn.size else 0.0, 1.0)
            if asym > SYMMETRY_RTOL * scale:
                raise InputError(f"M must be symmetric, got max |M - M^T| = {asym:.3g}")
        self.M = 0.5 * (M + M.T)
        self.rank = v.integer("rank", rank, minimum=1)

    def param_template(self) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((self.M.shape[0], self.rank), jnp.float64)

    def residual(self, X: jax.Array) -> jax.Array:
        return X @ X.T - self.M  # (n, n)

    def loss(self, X: jax.Array) -> jax.Array:
        return 0.25 * frob_sq(self.residual(X))

    def grad(self, X: jax.Array) -> jax.Array:
        return self.residual(X) @ X  # (n, r)

    def product(self, X: jax.Array) -> jax.Array:
        return X @ X.T

    def target_matrix(self) -> jax.Array:
        return self.M

    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> jax.Array:
        return self._gaussian(key, scale)
