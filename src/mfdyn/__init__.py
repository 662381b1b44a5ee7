"""mfdyn: training dynamics of matrix factorization (GD and gradient flow), float64 by default."""

import jax

jax.config.update("jax_enable_x64", True)

from . import observables  # noqa: E402
from .dynamics import flow, gd  # noqa: E402
from .errors import InputError  # noqa: E402
from .problems import (  # noqa: E402
    CustomProblem,
    DeepFactorization,
    MatrixFactorization,
    Problem,
    ScalarFactorization,
    SymmetricFactorization,
)
from .trajectory import Trajectory  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "Problem",
    "ScalarFactorization",
    "MatrixFactorization",
    "SymmetricFactorization",
    "DeepFactorization",
    "CustomProblem",
    "gd",
    "flow",
    "Trajectory",
    "observables",
    "__version__",
]
