"""Rank-1 dynamics (MATH.md §1): critical step size, periodic orbits, the balanced 2-cycle and its
stability window, the GD-stable imbalance, and sharpness along trajectories (edge of stability).

Works on ``ScalarFactorization`` (any ``quartic``) and rank-1 ``MatrixFactorization``; ``periodic_orbits``
works on any problem family, including ``CustomProblem``.
"""

from .eos import EdgeOfStability, edge_of_stability, sharpness_trajectory
from .gd_map import gd_map, iterate
from .minimizers import critical_step, minimizer, sharpness_on_minimizers, stable_imbalance
from .orbits import PeriodicOrbit, floquet_multipliers, periodic_orbits
from .two_cycle import (
    TwoCycle,
    balanced_map,
    balanced_two_cycles,
    closed_form_products,
    two_cycle,
    two_cycle_window,
    verify_two_cycle,
)

__all__ = [
    "critical_step", "stable_imbalance", "minimizer", "sharpness_on_minimizers",
    "periodic_orbits", "PeriodicOrbit", "floquet_multipliers",
    "two_cycle", "two_cycle_window", "balanced_two_cycles", "balanced_map", "closed_form_products", "TwoCycle",
    "verify_two_cycle", "sharpness_trajectory", "edge_of_stability", "EdgeOfStability", "gd_map", "iterate",
]
