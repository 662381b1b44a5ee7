"""Argument checks shared by every module.

Every check is tracer-safe: values that are JAX tracers (inside ``jit``/``vmap``, e.g. a swept
problem constant) are not inspected, so the same constructors serve both eager validation and
traced construction inside batched kernels.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from .errors import InputError


def is_traced(x: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def describe(value: Any) -> str:
    """A short one-line rendering of a value for error messages."""
    try:
        rank = np.ndim(value)
    except ValueError:  # (a ragged nested list: shown as it is)
        rank = -1
    if rank > 0:
        text = np.array2string(np.asarray(value), threshold=8, edgeitems=2)
    elif rank < 0:
        text = repr(value)
    else:  # (a NumPy scalar or 0-d array as its Python value: nan, not array(nan) or np.float64(nan))
        text = repr(value.item() if isinstance(value, (np.ndarray, np.generic)) else value)
    text = " ".join(str(text).split())
    return text if len(text) <= 80 else text[:77] + "..."


def finite_array(name: str, value: Any, *, ndim: int | None = None, allow_complex: bool = True) -> Any:
    """Return ``value`` as an array after checking it is numeric, finite and of rank ``ndim``."""
    if is_traced(value):
        return value
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # (ragged nesting: rows of different lengths)
        what = "a numeric array with rows of equal length" if "inhomogeneous" in str(exc) else f"numeric ({exc})"
        raise InputError(f"{name} must be {what}, got {describe(value)}") from None
    except Exception as exc:  # noqa: BLE001 - any conversion failure is bad input
        raise InputError(f"{name} must be numeric, got {describe(value)} ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must be numeric, got {describe(value)}")
    if ndim is not None and arr.ndim != ndim:
        raise InputError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if np.iscomplexobj(arr) and not allow_complex:
        raise InputError(f"{name} must be real, got complex values {describe(arr)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite, got {describe(arr)}")
    return value


def finite_scalar(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> Any:
    if is_traced(value):
        return value
    try:
        x = float(value)
    except Exception:  # noqa: BLE001
        raise InputError(f"{name} must be a real number, got {describe(value)}") from None
    if not math.isfinite(x):
        raise InputError(f"{name} must be finite, got {x}")
    if positive and x <= 0:
        raise InputError(f"{name} must be > 0, got {x}")
    if nonnegative and x < 0:
        raise InputError(f"{name} must be >= 0, got {x}")
    return value


INT64_LIMIT = 2**63


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    if not -INT64_LIMIT <= value < INT64_LIMIT:  # (steps, seeds and counts are int64 in the kernels)
        raise InputError(f"{name} must be below 2**63 in magnitude, got {value}")
    return value


def instance(name: str, value: Any, cls: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is an instance of ``cls`` (``what`` says what it must be, e.g. "an mfdyn problem")."""
    if not isinstance(value, cls):
        raise InputError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def problem(value: Any, name: str = "problem") -> Any:
    """``value`` if it is an mfdyn problem (:class:`mfdyn.problems.base.Problem`)."""
    from .problems.base import Problem

    return instance(name, value, Problem, "an mfdyn problem")


def flat_point(problem: Any, value: Any, name: str = "z") -> Any:
    """``value`` as a float64 vector of the problem's flat real coordinates (``problem.flatten``), after
    checking it is finite, real, 1-D and of that length (a traced value is returned as it is)."""
    if is_traced(value):
        return value
    z = np.asarray(finite_array(name, value, ndim=1, allow_complex=False), dtype=np.float64)
    if z.size != problem.num_coordinates:
        raise InputError(f"{name} must have the problem's {problem.num_coordinates} flat coordinates, got {z.size}")
    return jax.numpy.asarray(z)


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise InputError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value
