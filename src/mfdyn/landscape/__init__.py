"""Critical points of regularized deep matrix factorization: census, classification, thresholds (MATH.md §2).

``l(W) = 1/2 ||W_L ... W_1 - Y||^2 + 1/2 sum_l lambda_l ||W_l||^2`` (``lambda_l > 0``, ``L >= 2``). Every critical
point is balanced and aligned with the SVD of ``Y``; classes (up to orthogonal symmetries) are indexed by which
singular values are matched and at which root of ``g(s) = s^(2L-2) - sqrt(lambda) y s^(L-2) + lambda``.
The classification rules are [derived] (MATH.md §2) and cross-checked numerically by ``verify_point``.
"""

from .census import CriticalPoint, count_critical_points, critical_points, iter_critical_points
from .classify import NotInCensusError, classify, no_nonstrict_saddles
from .numerics import RuleMismatchError, numerical_kind, verify_point
from .roots import THRESHOLD_RTOL, Thresholds, positive_roots, thresholds
from .rules import KINDS
from .spectrum import target_with_singular_values

__all__ = [
    "CriticalPoint",
    "critical_points",
    "iter_critical_points",
    "count_critical_points",
    "thresholds",
    "Thresholds",
    "positive_roots",
    "THRESHOLD_RTOL",
    "no_nonstrict_saddles",
    "classify",
    "verify_point",
    "numerical_kind",
    "RuleMismatchError",
    "NotInCensusError",
    "KINDS",
    "target_with_singular_values",
]
