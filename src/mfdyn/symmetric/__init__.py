"""Symmetric low-rank gradient flow ``X' = (M - X X^T) X`` (MATH.md §3, seed 003).

- :func:`regime` — under / exact / over-parameterized, with ``r0``;
- :func:`equilibria` — every equilibrium class, its kind and its Jacobian spectrum;
- :func:`cascade` / :func:`from_cascade` — the cascade coordinates ``(S, K, P1)`` and back;
- :func:`closed_form` — ``X X^T(t)`` from the cascade closed forms (accurate to ``t = 1e6``);
- :func:`rates` — fitted O(1/t) constants and exponential rates along a trajectory.

The analysis runs in float64 NumPy (small dense matrices); the dynamics themselves come from
:func:`mfdyn.flow` / :func:`mfdyn.gd` on :class:`mfdyn.SymmetricFactorization`.
"""

from . import asymptotics
from .asymptotics import ExpFit, PowerFit, Rates, closed_form_rates, exponential_fit, fit_rates, power_fit, rates
from .cascade import (
    Cascade,
    cascade,
    cascade_derivative_scale,
    cascade_rhs,
    cascade_rhs_scale,
    cascade_time_derivative,
    from_cascade,
)
from .closed_form import CascadeSolution, cascade_closed_form, closed_form, direct_formula
from .equilibria import Equilibrium, class_of, count_classes, equilibria, jacobian_spectrum, stable_class
from .spectrum import Regime, Spectrum, regime, spectrum

__all__ = [
    "Cascade", "CascadeSolution", "Equilibrium", "ExpFit", "PowerFit", "Rates", "Regime", "Spectrum",
    "asymptotics", "cascade", "cascade_closed_form", "cascade_derivative_scale", "cascade_rhs", "cascade_rhs_scale",
    "cascade_time_derivative", "class_of", "closed_form", "closed_form_rates", "count_classes", "direct_formula",
    "equilibria", "exponential_fit", "fit_rates", "from_cascade", "jacobian_spectrum", "power_fit", "rates",
    "regime", "spectrum", "stable_class",
]
