"""Scalar factorization ``f(a, b) = 1/2 (ab - y)^2 + mu (ab - y)^4`` (MATH.md §1)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validate import is_traced
from .base import Problem, as_float

ScalarParams = tuple[jax.Array, jax.Array]


class ScalarFactorization(Problem):
    """``f(a, b) = 1/2 r^2 + mu r^4`` with ``r = ab - y``; params ``(a, b)``.

    Gradient: ``(psi b, psi a)`` with ``psi = r + 4 mu r^3``. Conserved by gradient flow:
    ``a^2 - b^2``.

    ``pure_quadratic`` (static) is True when ``quartic`` is a concrete 0 (and ``specialize``): the
    quartic term is then left out of :meth:`psi` and :meth:`loss`. It is exactly zero for every
    finite ``r``, so every value is the same, bit for bit, with four multiplications fewer per
    gradient (half the cost of a GD step); only at an overflowed ``r = +-inf`` the general form
    gives NaN where this one gives ``+-inf``, both non-finite. A sweep over ``quartic`` uses the
    general form (:meth:`generalized`).
    """

    target: jax.Array
    quartic: jax.Array
    pure_quadratic: bool = eqx.field(static=True)

    def __init__(self, target: Any = 1.0, quartic: Any = 0.0, *, specialize: bool = True):
        self.target = as_float("target", target)
        self.quartic = as_float("quartic", quartic, nonnegative=True)
        self.pure_quadratic = bool(specialize) and not is_traced(quartic) and float(np.asarray(quartic)) == 0.0

    def generalized(self, names: tuple[str, ...]) -> "ScalarFactorization":
        """This problem ready to have ``quartic`` replaced by any value, if it is in ``names``."""
        if "quartic" in names and self.pure_quadratic:
            return ScalarFactorization(self.target, self.quartic, specialize=False)
        return self

    def param_template(self) -> ScalarParams:
        s = jax.ShapeDtypeStruct((), jnp.float64)
        return (s, s)

    def residual(self, params: ScalarParams) -> jax.Array:
        a, b = params
        return a * b - self.target

    def psi(self, params: ScalarParams) -> jax.Array:
        """Derivative of the loss in the product ``ab``: ``psi = r + 4 mu r^3``.

        Evaluated as ``r + 4 ((mu r) r) r`` so that ``mu = 0`` gives exactly ``r`` even where ``r^3``
        would overflow (``0 * inf`` is NaN): the pure quadratic loss then overflows only when ``r``
        itself does, as it should; and ``r = 0`` gives exactly 0 even for a ``mu`` whose ``4 mu``
        overflows. (The factor 4 is exact: the same bits as ``((4 mu r) r) r`` wherever neither overflows.)"""
        r = self.residual(params)
        if self.pure_quadratic:
            return r
        return r + 4.0 * (((self.quartic * r) * r) * r)

    def loss(self, params: ScalarParams) -> jax.Array:
        """``r^2 / 2 + mu r^4``, the quartic term as ``((mu r^2) r) r`` (see :meth:`psi`)."""
        r = self.residual(params)
        if self.pure_quadratic:
            return 0.5 * r**2
        return 0.5 * r**2 + self.quartic * r**2 * r * r

    def grad(self, params: ScalarParams) -> ScalarParams:
        a, b = params
        psi = self.psi(params)
        return (psi * b, psi * a)

    def descent(self, params: ScalarParams, eta: jax.Array, grad: Any = None) -> ScalarParams:
        """``eta grad f = (eta psi b, eta psi a)``, evaluated as ``((eta b) psi, (eta a) psi)``
        (``grad`` is not needed). Two roundings each, as ``eta (psi b)``, but ``eta b`` does not wait
        for ``psi``: the chain of dependent operations of one GD step is two long instead of three
        (``psi``, then the update), and a fused block of steps, bound by that chain's latency, runs
        about 20% faster (0.41 against 0.51 ns per trajectory-step on one core, 2026-11-23; the sweep
        kernel of the scalar benchmark 8-13% faster). The last bits of a trajectory differ from the
        other order; 99.998% of the scalar benchmark's convergence steps, and all its divergence
        steps, were the same."""
        a, b = params
        psi = self.psi(params)
        return ((eta * b) * psi, (eta * a) * psi)

    def imbalance(self, params: ScalarParams) -> jax.Array:
        """``a^2 - b^2``, evaluated as ``(a - b)(a + b)``: no cancellation (exactly 0 when ``a = b``)."""
        a, b = params
        return (a - b) * (a + b)

    def product(self, params: ScalarParams) -> jax.Array:
        a, b = params
        return jnp.reshape(a * b, (1, 1))

    def target_matrix(self) -> jax.Array:
        return jnp.reshape(self.target, (1, 1))

    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> ScalarParams:
        return self._gaussian(key, scale)
