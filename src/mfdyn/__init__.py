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
from .sweep import open_sweep, sweep, zipped  # noqa: E402
from . import deep  # noqa: E402,F401  (registers the four-layer observables)

__version__ = "0.1.0"

# analysis modules, imported on first use (``mfdyn.symmetric.equilibria(...)`` after ``import mfdyn``)
_LAZY_MODULES = ("symmetric", "landscape", "rank1", "certificates", "plot", "experiments", "report")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mfdyn' has no attribute {name!r}")

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
    "sweep",
    "zipped",
    "open_sweep",
    "deep",
    *_LAZY_MODULES,
    "__version__",
]
