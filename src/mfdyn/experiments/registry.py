"""Registered experiments and their computed claims.

An experiment is a function ``fn(ctx: Context) -> None`` registered with :func:`experiment`. It
computes things, saves figures with ``ctx.figure``, adds tables and notes, and states claims with
``ctx.close`` / ``ctx.at_most`` / ``ctx.at_least`` / ``ctx.holds``: each claim carries the measured
value, the expected value, the tolerance and a pass/fail that is computed, never asserted.

Every claim also carries its ``source`` (a required keyword, one of :data:`CLAIM_SOURCES`), following the
labels of the mathematical contract MATH.md:

- ``"paper"``: the claim reproduces a statement MATH.md marks [paper] (a seed abstract's result), possibly
  measured with tools derived for this project;
- ``"derived"``: the claim checks a formula, threshold, rate, identity or rule that MATH.md marks [derived]
  (worked out for this project, never to be presented as the paper's result), or is an internal
  consistency check of mfdyn's own closed forms / solvers against an independent reference.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError

SCALES = ("quick", "default", "full")
CLAIM_SOURCES = ("paper", "derived")  # MATH.md [paper] (a seed abstract's statement) / [derived] (this project's)


@dataclasses.dataclass
class Claim:
    experiment: str
    source: str  # one of CLAIM_SOURCES
    claim: str
    expected: Any
    measured: Any
    tolerance: Any
    passed: bool

    def as_dict(self) -> dict:
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}


def _jsonable(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if isinstance(x, np.ndarray):
        x = x.ravel().tolist()
    if isinstance(x, (list, tuple)):
        return [_jsonable(y) for y in x]
    return x if x is None or isinstance(x, str) else str(x)


@dataclasses.dataclass
class Figure:
    path: Path
    caption: str


@dataclasses.dataclass
class Table:
    title: str
    rows: list[dict]


@dataclasses.dataclass
class Context:
    """What an experiment receives: its scale, its output folder, and the collectors."""

    name: str
    scale: str
    out: Path
    claims: list[Claim] = dataclasses.field(default_factory=list)
    figures: list[Figure] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def pick(self, quick: Any, default: Any, full: Any = None) -> Any:
        """A size by scale: ``quick`` (tests, < 1 min in all), ``default`` (< 10 min in all), ``full`` (paper)."""
        return {"quick": quick, "default": default, "full": default if full is None else full}[self.scale]

    # ---- claims -----------------------------------------------------------------------------
    # (``source``: see the module docstring)
    def _add(self, claim: str, expected: Any, measured: Any, tolerance: Any, passed: bool, *, source: str) -> bool:
        if not isinstance(source, str) or source not in CLAIM_SOURCES:
            raise InputError(f"claim source must be one of {CLAIM_SOURCES}, got {source!r}")
        passed = bool(passed) and _all_finite(measured)
        self.claims.append(Claim(self.name, source, claim, expected, measured, tolerance, passed))
        return passed

    def close(self, claim: str, measured: float, expected: float, *, source: str, rtol: float = 0.0,
              atol: float = 0.0) -> bool:
        """Passes iff ``|measured - expected| <= atol + rtol |expected|``; ``source``: "paper" or "derived"."""
        m, e = float(measured), float(expected)
        tol = atol + rtol * abs(e)
        tol_text = " + ".join(t for t in ([f"atol {atol:g}"] if atol else []) + ([f"rtol {rtol:g}"] if rtol else [])) or "exact"
        return self._add(claim, e, m, tol_text, abs(m - e) <= tol, source=source)

    def at_most(self, claim: str, measured: float, bound: float, *, source: str, tol: float = 0.0) -> bool:
        """Passes iff ``measured <= bound + tol``; ``source``: "paper" or "derived"."""
        return self._add(claim, f"<= {bound:g}", float(measured), tol, float(measured) <= bound + tol, source=source)

    def at_least(self, claim: str, measured: float, bound: float, *, source: str, tol: float = 0.0) -> bool:
        """Passes iff ``measured >= bound - tol``; ``source``: "paper" or "derived"."""
        return self._add(claim, f">= {bound:g}", float(measured), tol, float(measured) >= bound - tol, source=source)

    def holds(self, claim: str, passed: bool, *, source: str, measured: Any, expected: Any, tolerance: Any = "-") -> bool:
        """A claim whose pass/fail is computed by the caller (e.g. a count or a set equality); ``source``:
        "paper" or "derived"."""
        return self._add(claim, expected, measured, tolerance, passed, source=source)

    # ---- outputs ----------------------------------------------------------------------------
    def figure(self, fig: Any, name: str, caption: str) -> Path:
        """Save a matplotlib figure as PNG in this experiment's folder and close it."""
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(Figure(path, caption))
        return path

    def table(self, title: str, rows: list[dict]) -> None:
        self.tables.append(Table(title, [{k: _jsonable(v) for k, v in r.items()} for r in rows]))

    def note(self, text: str) -> None:
        self.notes.append(text)


def _all_finite(x: Any) -> bool:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return True
    return bool(np.all(np.isfinite(arr)))


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    paper: str
    title: str
    fn: Callable[[Context], None]


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, *, paper: str, title: str) -> Callable:
    """Register ``fn(ctx)`` as experiment ``name`` (names are ``"<paper-module>.<short>"``)."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        EXPERIMENTS[name] = Experiment(name, paper, title, fn)
        return fn

    return register


@dataclasses.dataclass
class ExperimentResult:
    experiment: Experiment
    context: Context
    seconds: float
    error: str | None = None


def select(only: str | None = None) -> list[Experiment]:
    """All experiments, or those whose name equals ``only`` or starts with ``only + '.'``."""
    from . import load_all

    load_all()
    chosen = [e for e in EXPERIMENTS.values() if only is None or e.name == only or e.name.startswith(only + ".")]
    if only is not None and not chosen:
        raise InputError(f"unknown experiment {only!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return chosen


def run_one(exp: Experiment, scale: str, out: Path) -> ExperimentResult:
    if scale not in SCALES:
        raise InputError(f"scale must be one of {SCALES}, got {scale!r}")
    folder = out / exp.name.replace(".", "_")
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(exp.name, scale, folder)
    start = time.perf_counter()
    error = None
    try:
        exp.fn(ctx)
    except Exception as exc:  # noqa: BLE001 - an experiment's crash is reported, the others still run
        import traceback

        error = f"{type(exc).__name__}: {exc}"
        ctx.notes.append("Traceback:\n" + traceback.format_exc())
    return ExperimentResult(exp, ctx, time.perf_counter() - start, error)
