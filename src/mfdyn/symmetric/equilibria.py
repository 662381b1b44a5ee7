"""Equilibria of the symmetric flow and their stability (MATH.md §3, [derived]).

Equilibria are the ``X`` with ``X X^T = sum_g lambda_g Pi_g``, ``Pi_g`` an orthogonal projection of
rank ``d_g`` inside the eigenspace of a *positive* eigenvalue ``lambda_g`` (multiplicity ``m_g``),
``sum_g d_g = k <= r``. A class is the vector ``dims = (d_g)``; with distinct eigenvalues it is a
subset ``S`` of the positive eigenvalues. Each class is a manifold (O(r) orbit times Grassmannians)
of dimension ``k (r - k) + k (k - 1)/2 + sum_g d_g (m_g - d_g)``.

Jacobian of the flow (= -Hessian of ``f`` in flat coordinates) at a class with chosen eigen-indices
``S``, ``|S| = k``: ``lambda_j - lambda_i`` (``i in S``, ``j not in S``); ``lambda_j`` (``j not in S``)
each ``r - k`` times; ``0`` with multiplicity ``k (r - k) + k (k - 1)/2``; ``-(lambda_i + lambda_l)``
(``i <= l`` in ``S``). Stable (Hessian PSD) exactly for ``M_+`` when ``r >= r0`` and the best rank-``r``
approximation when ``r < r0``; every other class is a strict saddle. Loss ``f = 1/4 (||M||^2 - sum_{i in S} lambda_i^2)``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate as v
from ..errors import InputError
from .spectrum import Spectrum, spectrum

MAX_CLASSES = 4096


@dataclasses.dataclass(frozen=True)
class Equilibrium:
    """One equilibrium class with a representative point and its closed-form Jacobian spectrum."""

    dims: tuple[int, ...]  # d_g for each positive eigenspace, in descending eigenvalue order
    support: tuple[int, ...]  # indices (into the descending eigenvalues) used by the representative X
    eigenvalues: tuple[float, ...]  # lambda_i for i in support
    kind: str  # "stable" or "strict_saddle"
    hyperbolic: bool  # False: zero Jacobian eigenvalues beyond the tangent space of the class
    description: str
    loss: float
    X: np.ndarray  # (n, r) representative: columns sqrt(lambda_i) v_i, then zeros
    jacobian_spectrum: np.ndarray  # (n r,) descending, closed form
    manifold_dim: int  # dimension of the class through X
    hessian_error: float | None = None  # max |closed form - eig(-dense Hessian)|, if checked

    def as_dict(self) -> dict:
        return dict(
            dims=list(self.dims), support=list(self.support), eigenvalues=list(self.eigenvalues), kind=self.kind,
            hyperbolic=self.hyperbolic, description=self.description, loss=self.loss,
            X=self.X.tolist(), jacobian_spectrum=self.jacobian_spectrum.tolist(),
            manifold_dim=self.manifold_dim, hessian_error=self.hessian_error,
        )


def positive_groups(spec: Spectrum) -> list[tuple[int, int]]:
    """Index ranges ``[start, stop)`` of the positive eigenspaces, in descending eigenvalue order."""
    return [g for g in spec.groups if spec.eigenvalues[g[0]] > 0]


def count_classes(spec: Spectrum) -> int:
    """Number of equilibrium classes: vectors ``0 <= d_g <= m_g`` with ``sum d_g <= r`` (dynamic programming)."""
    ways = np.zeros(spec.rank + 1, dtype=object)
    ways[0] = 1
    for start, stop in positive_groups(spec):
        new = np.zeros_like(ways)
        for d in range(stop - start + 1):
            new[d:] += ways[: spec.rank + 1 - d]
        ways = new
    return int(sum(ways))


def jacobian_spectrum(eigenvalues: np.ndarray, support: tuple[int, ...], rank: int) -> np.ndarray:
    """The closed-form Jacobian spectrum at ``X X^T = sum_{i in support} lambda_i v_i v_i^T`` (descending).

    ``eigenvalues``: those of ``M`` (any order); ``support``: distinct indices into them, at most ``rank``."""
    lam = np.asarray(v.finite_array("eigenvalues", eigenvalues, ndim=1, allow_complex=False), dtype=float)
    rank = v.integer("rank", rank, minimum=1)
    if isinstance(support, (str, bytes)) or not hasattr(support, "__iter__"):
        raise InputError(f"support must be a tuple of indices into the eigenvalues, got {v.describe(support)}")
    support = tuple(v.integer("support entry", i, minimum=0) for i in support)
    if any(i >= lam.size for i in support) or len(set(support)) != len(support):
        raise InputError(f"support must hold distinct indices below {lam.size} (the number of eigenvalues), "
                         f"got {support}")
    if len(support) > rank:
        raise InputError(f"support may hold at most rank = {rank} indices, got {len(support)}")
    chosen = np.zeros(lam.size, bool)
    chosen[list(support)] = True
    k = len(support)
    ins, outs = lam[chosen], lam[~chosen]
    parts = [
        (outs[None, :] - ins[:, None]).ravel(),  # lambda_j - lambda_i
        np.repeat(outs, rank - k),  # lambda_j, r - k times each
        np.zeros(k * (rank - k) + k * (k - 1) // 2),
        -(ins[:, None] + ins[None, :])[np.triu_indices(k)],  # -(lambda_i + lambda_l), i <= l
    ]
    return np.sort(np.concatenate(parts))[::-1]


@jax.jit
def _minus_hessian_eigenvalues(problem: Any, X: jax.Array) -> jax.Array:
    return -jnp.linalg.eigvalsh(problem.hessian(X))  # descending


def _describe(kind: str, hyperbolic: bool, k: int, spec: Spectrum, dims: tuple[int, ...]) -> str:
    if kind == "stable":
        target = "M_+" if spec.rank >= spec.r0 else f"the best rank-{spec.rank} approximation of M"
        text = f"global minimizer X X^T = {target}"
        if not hyperbolic:
            text += (f"; stable but non-hyperbolic: M has {spec.n0} zero eigenvalue(s) and r - k = {spec.rank - k} "
                     f"free column(s), so {(spec.rank - k) * spec.n0} zero Jacobian eigenvalue(s) are not tangent "
                     f"to the equilibrium set (slow O(1/t) convergence)")
        return text
    text = f"strict saddle (rank {k}, dims {list(dims)}): the Hessian has a negative eigenvalue"
    if k == 0:
        text = "X = 0: " + text
    if not hyperbolic:
        text += "; non-hyperbolic (zero eigenvalues of M)"
    return text


def equilibria(problem: Any, *, check_hessian: bool = True, max_classes: int = MAX_CLASSES) -> list[Equilibrium]:
    """Every equilibrium class of the flow on ``problem`` (a ``SymmetricFactorization``), unstable first by loss.

    Repeated eigenvalues: a class chooses a dimension ``d_g`` inside each positive eigenspace (the
    equilibria are projections inside it). ``check_hessian`` compares each closed-form spectrum with
    the eigenvalues of ``-problem.hessian(X)`` at the representative ``X`` (``hessian_error``).
    """
    spec = spectrum(problem)
    max_classes = v.integer("max_classes", max_classes, minimum=1)
    total = count_classes(spec)
    if total > max_classes:
        raise InputError(f"M has {total} equilibrium classes at rank {spec.rank}, more than max_classes={max_classes}")
    groups = positive_groups(spec)
    lam, V, r = spec.eigenvalues, spec.vectors, spec.rank
    out = []
    for dims in itertools.product(*(range(stop - start + 1) for start, stop in groups)):
        k = sum(dims)
        if k > r:
            continue
        support = tuple(i for (start, _), d in zip(groups, dims) for i in range(start, start + d))
        spectrum_cf = jacobian_spectrum(lam, support, r)
        kind = "strict_saddle" if spectrum_cf[0] > 0 else "stable"
        manifold_dim = k * (r - k) + k * (k - 1) // 2 + sum(d * (stop - start - d) for (start, stop), d in zip(groups, dims))
        hyperbolic = int(np.sum(spectrum_cf == 0)) == manifold_dim
        X = np.zeros((spec.n, r))
        X[:, :k] = V[:, list(support)] * np.sqrt(lam[list(support)])
        error = None
        if check_hessian:
            numeric = np.asarray(_minus_hessian_eigenvalues(problem, jnp.asarray(X)))
            error = float(np.max(np.abs(numeric - spectrum_cf)))
        out.append(Equilibrium(
            dims=tuple(int(d) for d in dims), support=support, eigenvalues=tuple(float(x) for x in lam[list(support)]),
            kind=kind, hyperbolic=hyperbolic, description=_describe(kind, hyperbolic, k, spec, dims),
            # f = 1/4 ||M - X X^T||^2 = 1/4 sum of the eigenvalues off the support squared (summed as such:
            # ||M||^2 minus the support's squares cancelled, 1e-2 relative error for f ~ 1e-14)
            loss=0.25 * float(np.sum(np.delete(lam, list(support)) ** 2)), X=X,
            jacobian_spectrum=spectrum_cf, manifold_dim=manifold_dim, hessian_error=error,
        ))
    return sorted(out, key=lambda e: (-e.loss, e.dims))


def stable_class(problem: Any) -> Equilibrium:
    """The unique stable class (``M_+`` if ``r >= r0``, else the best rank-``r`` approximation)."""
    return next(e for e in equilibria(problem, check_hessian=False) if e.kind == "stable")


def class_of(problem: Any, X: Any) -> tuple[int, ...]:
    """The class ``dims`` a point ``X`` is closest to: ``d_g = round(tr(V_g^T X X^T V_g) / lambda_g)``."""
    from .cascade import check_X

    spec = spectrum(problem)
    X = check_X(problem, X)
    Y = spec.vectors.T @ X  # (n, r)
    return tuple(
        int(np.rint(np.sum(Y[start:stop] ** 2) / spec.eigenvalues[start])) for start, stop in positive_groups(spec)
    )
