"""Reproduction experiments, one module per paper; each module registers its experiments on import.

Modules in this package are discovered automatically: adding ``experiments/<paper>.py`` that uses
``@experiment(...)`` is all it takes to appear in ``mfdyn reproduce``.
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import EXPERIMENTS, Claim, Context, Experiment, ExperimentResult, experiment, run_one, select

_LOADED = False


def load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "registry":
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


__all__ = ["EXPERIMENTS", "Claim", "Context", "Experiment", "ExperimentResult", "experiment", "run_one", "select", "load_all"]
