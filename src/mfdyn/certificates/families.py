"""Derived certificate families (never the paper's formula, which is not available).

- Imbalance state (MATH.md §1): ``I(delta; z) = |a^2 - b^2| - delta`` (``| ||u||^2 - ||v||^2 | - delta`` for
  rank-1 matrices). For the scalar loss GD multiplies the imbalance by ``1 - eta^2 psi^2``, so the state is
  non-increasing wherever ``eta |psi| <= sqrt(2)`` (:func:`contraction_region`). Its threshold is
  :func:`mfdyn.rank1.stable_imbalance`: below it the gradient-flow limit is a GD-stable minimizer.
- Quadratic templates ``I(delta; z) = sum_i c_i Q0_i(z) + delta sum_j c'_j Q1_j(z)`` over quadratic forms
  respecting the problem's symmetries (swap ``a <-> b`` / ``u <-> v`` for symmetric targets, and sign
  flips); coefficients are found by :func:`mfdyn.certificates.search`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..problems import MatrixFactorization, ScalarFactorization
from ..rank1 import stable_imbalance
from .certificate import Certificate
from .formula import coordinate_names
from .verify import Region


def imbalance_certificate(problem: Any, bracket: Sequence[float] = (0.0, 100.0)) -> Certificate:
    """``I(delta; z) = |imbalance(z)| - delta`` with threshold ``stable_imbalance(problem, eta)``."""
    names = coordinate_names(problem)
    if isinstance(problem, ScalarFactorization):
        text = "Abs(a^2 - b^2) - delta"
    elif isinstance(problem, MatrixFactorization) and problem.rank == 1:
        us = " + ".join(f"{n}^2" for n in names if n.startswith("u"))
        vs = " - ".join(f"{n}^2" for n in names if n.startswith("v"))
        text = f"Abs({us} - {vs}) - delta"
    else:
        raise InputError(f"the imbalance certificate needs a scalar or rank-1 problem, got {type(problem).__name__}")
    return Certificate.from_formula(text, names, bracket=bracket, name="imbalance |a^2-b^2| (derived)",
                                    threshold=stable_imbalance)


@jax.jit
def _psi(problem: ScalarFactorization, zs: jax.Array) -> jax.Array:
    return jax.vmap(lambda z: problem.psi(problem.unflatten(z)))(zs)


def contraction_region(problem: ScalarFactorization, eta: float, bounds: Sequence[Sequence[float]],
                       limit: float = float(np.sqrt(2.0))) -> Region:
    """The box ``bounds`` cut to ``eta |psi(z)| <= limit`` (default ``sqrt 2``: where ``|d|`` cannot grow)."""
    if not isinstance(problem, ScalarFactorization):
        raise InputError(f"contraction_region needs a ScalarFactorization, got {type(problem).__name__}")

    def constraint(zs):
        return eta * np.abs(np.asarray(_psi(problem, jnp.asarray(zs)))) <= limit

    return Region.box(bounds, constraint=constraint, description=f"box with eta|psi| <= {limit:.4g}")


@dataclasses.dataclass(frozen=True)
class QuadraticTemplate:
    """``I(delta; z) = B(z) + delta S(z)`` with ``B = sum_i c_i base_i`` (or ``|sum_i c_i base_i|`` when
    ``absolute``) and ``S = sum_j c_{nb+j} slope_j`` (``S = -1`` when ``slope`` is empty); ``base`` and
    ``slope`` are formula strings in the problem's coordinate names."""

    variables: tuple[str, ...]
    base: tuple[str, ...]
    slope: tuple[str, ...] = ()
    absolute: bool = False
    bracket: tuple[float, float] = (-100.0, 100.0)

    @property
    def size(self) -> int:
        return len(self.base) + len(self.slope)

    def _text(self, coeff: Any) -> str:
        b = " + ".join(f"{coeff(i)}*({t})" for i, t in enumerate(self.base))
        b = f"Abs({b})" if self.absolute else b
        s = " + ".join(f"{coeff(len(self.base) + j)}*({t})" for j, t in enumerate(self.slope)) or "-1"
        return f"{b} + delta*({s})"

    @property
    def formula(self) -> str:
        return self._text(lambda i: f"c{i}")

    def describe(self, coefficients: Any) -> str:
        c = np.asarray(coefficients, dtype=float)
        return self._text(lambda i: f"{c[i]:.6g}")

    def family(self) -> Certificate:
        """The family with all coefficients zero (set them with ``with_coefficients``); compiled once."""
        return _family(self)

    def certificate(self, coefficients: Any, name: str = "quadratic template (derived)") -> Certificate:
        coefficients = np.asarray(coefficients, dtype=float)
        if coefficients.shape != (self.size,):
            raise InputError(f"coefficients must have shape ({self.size},), got {coefficients.shape}")
        fam = self.family()
        return Certificate(fam.fn, coefficients=coefficients, bracket=self.bracket, variables=self.variables,
                           name=name, formula=self.describe(coefficients))


_FAMILIES: dict[QuadraticTemplate, Certificate] = {}


def _family(template: QuadraticTemplate) -> Certificate:
    if template not in _FAMILIES:
        constants = {f"c{i}": 0.0 for i in range(template.size)}
        cert = Certificate.from_formula(template.formula, template.variables, constants=constants,
                                        bracket=template.bracket, name="quadratic template (derived)")
        _FAMILIES[template] = cert
    return _FAMILIES[template]


def default_template(problem: Any) -> QuadraticTemplate:
    """``I(delta; z) = |Q(z)| - delta`` with ``Q`` a combination of quadratic forms that change sign under the
    swap ``a <-> b`` (``u <-> v``), so ``|Q|`` respects it: scalar ``{a^2 - b^2, a^2 + b^2, ab, 1}`` (the
    swap-even forms let a search test whether the imbalance is the only admissible choice); 2x2 rank-1:
    signal, noise and cross blocks ``{u1^2 - v1^2, u2^2 - v2^2, u1 u2 - v1 v2}``."""
    if isinstance(problem, ScalarFactorization):
        return QuadraticTemplate(("a", "b"), ("a^2 - b^2", "a^2 + b^2", "a*b", "1"), absolute=True, bracket=(0.0, 100.0))
    if isinstance(problem, MatrixFactorization) and problem.rank == 1 and problem.X.shape == (2, 2):
        return QuadraticTemplate(coordinate_names(problem), ("u1^2 - v1^2", "u2^2 - v2^2", "u1*u2 - v1*v2"),
                                 absolute=True, bracket=(0.0, 100.0))
    raise InputError(f"no default template for {type(problem).__name__}; pass a QuadraticTemplate")
