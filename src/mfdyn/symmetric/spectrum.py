"""Eigen-structure of the target ``M`` and the parameterization regime (MATH.md §3).

``M = V Lambda V^T`` with eigenvalues in descending order. Eigenvalues within ``TIE_RTOL * scale``
of zero are set to exactly zero and eigenvalues within that distance of each other form one
eigenspace (``groups``): floating-point noise must not turn a zero eigenvalue into a positive one
(that would change ``r0``) nor split a repeated eigenvalue.

The cascade splits the eigenbasis at ``p = min(r, r0)``: ``Lambda1 = diag(lambda_1..lambda_p)`` and
``Lambda2 = -diag(lambda_{p+1}..lambda_n)``. For ``r >= r0`` this is the split at the positive
eigenspace (``Lambda1 > 0``, ``Lambda2 >= 0``); for ``r < r0`` it is the split at the top-``r``
eigenspace (MATH.md §3, "under-parameterized").
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError

TIE_RTOL = 1e-10  # relative to ||M||_2: below it eigenvalues are equal / zero


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """``M = V diag(eigenvalues) V^T``, eigenvalues descending, ties and zeros snapped."""

    eigenvalues: np.ndarray  # (n,)
    vectors: np.ndarray  # (n, n), column i is v_i
    rank: int  # r, the number of columns of X
    groups: tuple[tuple[int, int], ...]  # [start, stop) index ranges of equal eigenvalues

    @property
    def n(self) -> int:
        return self.eigenvalues.shape[0]

    @property
    def r0(self) -> int:
        """Number of positive eigenvalues of ``M``."""
        return int(np.sum(self.eigenvalues > 0))

    @property
    def n0(self) -> int:
        """Dimension of the null space of ``M``."""
        return int(np.sum(self.eigenvalues == 0))

    @property
    def p(self) -> int:
        """Split index of the cascade: ``min(r, r0)``."""
        return min(self.rank, self.r0)

    @property
    def lam1(self) -> np.ndarray:
        """Diagonal of ``Lambda1`` (the ``p`` leading eigenvalues)."""
        return self.eigenvalues[: self.p]

    @property
    def mu2(self) -> np.ndarray:
        """Diagonal of ``Lambda2 = -diag(lambda_{p+1}, ..., lambda_n)``."""
        return -self.eigenvalues[self.p :]

    @property
    def limit(self) -> np.ndarray:
        """``V diag(lambda_1..lambda_p, 0..0) V^T``: ``M_+`` for ``r >= r0``, the best rank-``r`` approximation otherwise."""
        V1 = self.vectors[:, : self.p]
        return (V1 * self.lam1) @ V1.T

    @property
    def optimal_loss(self) -> float:
        """``f* = 1/4 sum_i lambda_i^2 - 1/4 sum_{i <= min(r, r0)} lambda_i^2``."""
        return 0.25 * float(np.sum(self.eigenvalues[self.p :] ** 2))


def spectrum(problem: Any) -> Spectrum:
    """Eigen-decomposition of ``problem.M`` with zeros and ties snapped (see module docstring)."""
    from ..problems import SymmetricFactorization

    if not isinstance(problem, SymmetricFactorization):
        raise InputError(f"problem must be a SymmetricFactorization, got {type(problem).__name__}")
    M = np.asarray(problem.M, dtype=float)
    evals, evecs = np.linalg.eigh(M)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    tol = TIE_RTOL * (float(np.max(np.abs(evals))) if evals.size else 0.0)  # (relative: M's scale is free)
    evals = np.where(np.abs(evals) <= tol, 0.0, evals)
    groups, start = [], 0
    for i in range(1, evals.size + 1):
        if i == evals.size or evals[start] - evals[i] > tol:
            evals[start:i] = np.mean(evals[start:i])
            groups.append((start, i))
            start = i
    return Spectrum(evals, evecs, int(problem.rank), tuple(groups))


class Regime(NamedTuple):
    """``name`` is ``"under"`` (``r < r0``), ``"exact"`` (``r = r0``) or ``"over"`` (``r > r0``)."""

    name: str
    rank: int
    r0: int


def regime(problem: Any) -> Regime:
    """The parameterization regime of ``problem``: compare the rank ``r`` with ``r0 = #{lambda_i > 0}``."""
    spec = spectrum(problem)
    r, r0 = spec.rank, spec.r0
    name = "under" if r < r0 else "exact" if r == r0 else "over"
    return Regime(name, r, r0)


def require_rank_at_least_r0(spec: Spectrum, analysis: str, why: str) -> None:
    """Raise ``InputError`` when an analysis that needs ``r >= r0`` gets an under-parameterized problem."""
    if spec.rank < spec.r0:
        raise InputError(
            f"rank {spec.rank} < r0 = {spec.r0} (positive eigenvalues of M): {analysis} needs rank >= r0 ({why})"
        )
