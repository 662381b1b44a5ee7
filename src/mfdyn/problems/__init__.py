"""Problem families: one module each (loss, closed-form gradient, init, conserved quantities)."""

from .base import Problem
from .custom import CustomProblem
from .deep import DeepFactorization
from .matrix import MatrixFactorization
from .scalar import ScalarFactorization
from .symmetric import SymmetricFactorization

__all__ = [
    "Problem",
    "ScalarFactorization",
    "MatrixFactorization",
    "SymmetricFactorization",
    "DeepFactorization",
    "CustomProblem",
]
