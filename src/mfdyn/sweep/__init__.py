"""Batched GD sweeps: grids of step sizes, initializations, constants and seeds (see :func:`sweep`)."""

from .api import open_sweep, sweep
from .classify import OUTCOMES
from .grid import zipped

__all__ = ["sweep", "zipped", "open_sweep", "OUTCOMES"]
