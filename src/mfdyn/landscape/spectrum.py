"""The target's singular spectrum grouped into blocks of tied values, each with its roots (MATH.md §2).

A *block* is a maximal set of tied singular values of ``Y``. Critical point classes are counted up to the
orthogonal symmetries of the loss: the gauge ``W_l -> O_l W_l O_{l-1}^T`` of hidden layers and the pairs
``(O_L, O_0)`` with ``O_L Y O_0^T = Y``; the latter rotate freely inside a tied block, so a class only
records *how many* components of each block sit at each root, not which singular vectors they use.

Tolerances: singular values within ``TIE_RTOL * y_1`` of each other are tied; values below
``ZERO_RTOL * y_1`` are zero (they never carry a component: ``g(s) = s^(2L-2) + lambda > 0`` at ``y = 0``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import _validate as v
from ..errors import InputError
from .roots import Root, Thresholds, positive_roots, thresholds

TIE_RTOL = 1e-12
ZERO_RTOL = 1e-12


@dataclasses.dataclass(frozen=True)
class Block:
    """Tied singular values ``value`` at indices ``indices`` (0-based, descending order) with their roots."""

    value: float
    indices: tuple[int, ...]
    roots: tuple[Root, ...]

    @property
    def size(self) -> int:
        return len(self.indices)


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """SVD ``Y = U diag(y) V^T`` (full ``U``, ``V``), blocks, thresholds, ``d_min`` and per-layer lambdas."""

    Y: np.ndarray
    U: np.ndarray  # (d_L, d_L)
    y: np.ndarray  # (min(d_0, d_L),) descending
    V: np.ndarray  # (d_0, d_0)
    blocks: tuple[Block, ...]
    thresholds: Thresholds
    widths: tuple[int, ...]
    weight_decay: np.ndarray  # (L,)

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def d_min(self) -> int:
        return min(self.widths)

    @property
    def base_loss(self) -> float:
        """Loss with nothing matched (``W = 0``): ``1/2 ||Y||^2``."""
        return 0.5 * float(np.sum(self.y**2))

    @property
    def scale(self) -> float:
        """Scale of the problem for relative tolerances: ``max(1, ||Y||_2)``."""
        return max(1.0, float(self.y[0]) if self.y.size else 1.0)


def check_problem(problem) -> None:
    """The census needs a real ``DeepFactorization`` with ``L >= 2``, ``balance = 0`` and all ``lambda_l > 0``."""
    from ..problems import DeepFactorization

    if not isinstance(problem, DeepFactorization):
        raise InputError(f"problem must be a DeepFactorization, got {type(problem).__name__}")
    if problem.depth < 2:
        raise InputError(f"depth must be >= 2 for a census, got {problem.depth}")
    if problem.is_complex:
        raise InputError("field must be 'real' for a census, got 'complex'")
    if v.is_traced(problem.Y) or v.is_traced(problem.weight_decay):
        raise InputError("problem must hold concrete (non-traced) values for a census")
    balance = float(problem.balance)
    if balance != 0.0:
        raise InputError(f"balance must be 0 for the regularized census (MATH.md §2), got {balance}")
    v.finite_array("Y", np.asarray(problem.Y))
    wd = np.asarray(problem.weight_decay, dtype=float)
    if np.any(wd <= 0):
        raise InputError(
            f"weight_decay must be > 0 in every layer for a census (without it critical points are not isolated "
            f"classes: rescalings W_l -> c_l W_l with prod c_l = 1 connect them), got {wd.tolist()}"
        )


def spectrum(problem) -> Spectrum:
    """Group the singular values of ``problem.Y`` into tied blocks and attach their roots."""
    check_problem(problem)
    Y = np.asarray(problem.Y, dtype=float)
    U, y, Vt = np.linalg.svd(Y, full_matrices=True)
    wd = np.asarray(problem.weight_decay, dtype=float)
    th = thresholds(problem.depth, wd)
    top = float(y[0]) if y.size else 0.0
    y = np.where(y <= ZERO_RTOL * top, 0.0, y)
    blocks: list[Block] = []
    start = 0
    while start < y.size:
        stop = start + 1
        while stop < y.size and y[start] - y[stop] <= TIE_RTOL * max(top, math.ulp(1.0)):
            stop += 1
        value = float(np.mean(y[start:stop]))
        y[start:stop] = value
        blocks.append(Block(value, tuple(range(start, stop)), positive_roots(value, th)))
        start = stop
    return Spectrum(Y, U, y, Vt.T, tuple(blocks), th, tuple(problem.widths), wd)


def target_with_singular_values(values, shape: tuple[int, int], seed: int | np.random.Generator = 0) -> np.ndarray:
    """A test target ``Y = Q_L diag(values) Q_0^T`` of the given shape, ``Q``'s Haar-random orthogonal.

    ``values`` are placed on the leading diagonal (at most ``min(shape)`` of them); ``seed`` is an
    integer or a ``numpy.random.Generator``.
    """
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise InputError(f"shape must be a pair (rows, columns), got {v.describe(shape)}")
    d_out, d_in = shape = (v.integer("shape rows", shape[0], minimum=1), v.integer("shape columns", shape[1], minimum=1))
    if not isinstance(seed, np.random.Generator):
        rng = np.random.default_rng(v.integer("seed", seed, minimum=0))
    else:
        rng = seed
    values = np.asarray(v.finite_array("values", values, allow_complex=False), dtype=float)
    if values.ndim != 1 or values.size > min(shape):
        raise InputError(f"values must be a 1-D list of at most min(shape) = {min(shape)} numbers, got {values.tolist()}")
    if np.any(values < 0):
        raise InputError(f"values are singular values and must be >= 0, got {values.tolist()}")
    S = np.zeros(shape)
    S[np.arange(values.size), np.arange(values.size)] = values
    qa, _ = np.linalg.qr(rng.standard_normal((d_out, d_out)))
    qb, _ = np.linalg.qr(rng.standard_normal((d_in, d_in)))
    return qa @ S @ qb.T

