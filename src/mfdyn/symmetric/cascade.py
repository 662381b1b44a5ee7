"""Cascade coordinates of the symmetric flow (MATH.md §3, [derived]).

With ``Y = V^T X = [Y1; Y2]`` split at ``p = min(r, r0)`` (``Y1: (p, r)``, ``Y2: (n-p, r)``) and the
pseudo-inverse ``Y1^+`` (from the SVD ``Y1 = U diag(s) B^T``, ``Y1^+ = B diag(1/s) U^T``):

- principal block ``P1 = Y1 Y1^T``;
- coupling ``K = P0^T P1^{-1} = Y2 Y1^+``;
- Schur complement ``S = P2 - P0^T P1^{-1} P0 = Y2 (I - Y1^+ Y1) Y2^T = F F^T``, ``F = Y2 C`` with ``C``
  an orthonormal basis of the complement of the row space of ``Y1``. Computed by this projection it is
  symmetric positive semidefinite by construction; the subtraction ``P2 - K P0`` would lose all
  digits once ``S`` is small compared with ``P2`` (the O(1/t) regime).

They exist on the invariant set ``{P1 > 0}`` (``Y1`` of full row rank ``p``). Along the flow
``X' = (M - X X^T) X``:

- (a) ``S' = -Lambda2 S - S Lambda2 - 2 S^2`` (autonomous),
- (b) ``K' = -(Lambda2 + 2 S) K - K Lambda1``,
- (c) ``P1' = Lambda1 P1 + P1 Lambda1 - 2 P1 (I + K^T K) P1``;

and ``X X^T = V [[P1, P1 K^T], [K P1, S + K P1 K^T]] V^T`` inverts the map.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _lapack as lapack
from .. import _validate as v
from ..errors import InputError
from .spectrum import Spectrum, spectrum

RANK_RTOL = 1e-12  # sigma_min(Y1) <= RANK_RTOL ||X||_2: Y1 is (numerically) rank deficient


class Cascade(NamedTuple):
    """Cascade coordinates: ``S: (n-p, n-p)``, ``K: (n-p, p)``, ``P1: (p, p)`` (leading time axes allowed)."""

    S: np.ndarray
    K: np.ndarray
    P1: np.ndarray


class CascadeFactors(NamedTuple):
    """The factored cascade state used by the closed forms: ``S = F F^T``, ``P1^{-1} = Q``."""

    F: np.ndarray  # (n-p, r-p)
    K: np.ndarray  # (n-p, p)
    P1: np.ndarray  # (p, p)
    Q: np.ndarray  # (p, p) = P1^{-1}, from the SVD (never by inverting P1)


def check_X(problem: Any, X: Any, name: str = "X") -> np.ndarray:
    """``X`` as a finite float64 array of shape ``(n, r)``."""
    v.finite_array(name, X, ndim=2, allow_complex=False)
    X = np.asarray(X, dtype=float)
    shape = (problem.M.shape[0], problem.rank)
    if X.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {X.shape}")
    return X


def cascade_factors(problem: Any, X: Any, *, spec: Spectrum | None = None, name: str = "X") -> CascadeFactors:
    """``(F, K, P1, P1^{-1})`` of ``X`` (see module docstring); raises outside ``{P1 > 0}``."""
    spec = spectrum(problem) if spec is None else spec
    X = check_X(problem, X, name)
    p = spec.p
    Y = spec.vectors.T @ X  # (n, r)
    Y1, Y2 = Y[:p], Y[p:]  # (p, r), (n-p, r)
    if p == 0:
        return CascadeFactors(Y2, np.zeros((Y2.shape[0], 0)), np.zeros((0, 0)), np.zeros((0, 0)))
    U, s, Bt = np.linalg.svd(Y1, full_matrices=True)  # U: (p, p), s: (p,), Bt: (r, r)
    scale = float(np.linalg.norm(X, 2))
    if s[-1] <= RANK_RTOL * scale or scale == 0.0:
        _outside_domain(spec, s, scale, name)
    K = Y2 @ (Bt[:p].T / s) @ U.T  # Y2 Y1^+, (n-p, p)
    F = Y2 @ Bt[p:].T  # Y2 C, (n-p, r-p)
    P1 = (U * s**2) @ U.T
    Q = (U / s**2) @ U.T
    return CascadeFactors(F, K, P1, Q)


def _outside_domain(spec: Spectrum, s: np.ndarray, scale: float, name: str) -> None:
    rank = int(np.sum(s > RANK_RTOL * scale)) if scale > 0 else 0
    what = "positive" if spec.p == spec.r0 else f"top-{spec.p}"
    raise InputError(
        f"{name} is outside the cascade domain {{P1 > 0}}: V1^T {name} (its ({spec.p}, {spec.rank}) block in the {what} "
        f"eigenspace of M) is rank deficient, rank {rank} < {spec.p} (smallest singular value {s[-1]:.3g}, "
        f"||{name}||_2 = {scale:.3g}); "
        f"the flow keeps rank(V1^T X) constant for all t, so from this {name} it stays on the singular set {{det P1 = 0}} "
        f"and converges to a saddle, never to the stable equilibrium"
    )


def cascade(problem: Any, X: Any) -> Cascade:
    """``(S, K, P1)`` of ``X`` on ``{P1 > 0}`` (MATH.md §3; ``S`` by projection, never by subtraction).

    Raises ``InputError`` if ``V1^T X`` is rank deficient (``X`` outside ``{P1 > 0}``).
    """
    F, K, P1, _ = cascade_factors(problem, X)
    return Cascade(F @ F.T, K, P1)


def _check_block(name: str, value: Any, shape: tuple[int, int], *, symmetric: bool) -> np.ndarray:
    v.finite_array(name, value, allow_complex=False)
    arr = np.asarray(value, dtype=float)
    if arr.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {arr.shape}")
    if symmetric and arr.size:
        asym = float(np.max(np.abs(arr - arr.T)))
        if asym > 1e-10 * max(1.0, float(np.max(np.abs(arr)))):
            raise InputError(f"{name} must be symmetric, got max |{name} - {name}^T| = {asym:.3g}")
    return arr


def cascade_matrix(S: np.ndarray, K: np.ndarray, P1: np.ndarray) -> np.ndarray:
    """``P = [[P1, P1 K^T], [K P1, S + K P1 K^T]]`` (leading batch axes allowed)."""
    KP1 = K @ P1
    top = np.concatenate([P1, np.swapaxes(KP1, -1, -2)], axis=-1)
    bottom = np.concatenate([KP1, S + KP1 @ np.swapaxes(K, -1, -2)], axis=-1)
    return np.concatenate([top, bottom], axis=-2)


def from_cascade(problem: Any, S: Any, K: Any, P1: Any) -> np.ndarray:
    """``X X^T = V P V^T`` with ``P = [[P1, P1 K^T], [K P1, S + K P1 K^T]]`` (inverse of :func:`cascade`)."""
    spec = spectrum(problem)
    n, p = spec.n, spec.p
    S = _check_block("S", S, (n - p, n - p), symmetric=True)
    K = _check_block("K", K, (n - p, p), symmetric=False)
    P1 = _check_block("P1", P1, (p, p), symmetric=True)
    V = spec.vectors
    return V @ cascade_matrix(S, K, P1) @ V.T


def _T(A: np.ndarray) -> np.ndarray:
    return np.swapaxes(A, -1, -2)


def _rhs_terms(spec: Spectrum, S: np.ndarray, K: np.ndarray, P1: np.ndarray):
    lam1, mu2 = spec.lam1, spec.mu2
    inner = np.eye(P1.shape[-1]) + _T(K) @ K
    return (
        (-mu2[:, None] * S, -S * mu2[None, :], -2.0 * S @ S),
        (-mu2[:, None] * K, -2.0 * S @ K, -K * lam1[None, :]),
        (lam1[:, None] * P1, P1 * lam1[None, :], -2.0 * P1 @ inner @ P1),
    )


def cascade_rhs(spec: Spectrum, S: np.ndarray, K: np.ndarray, P1: np.ndarray) -> Cascade:
    """Right-hand sides (a), (b), (c) of the cascade (MATH.md §3); leading batch axes allowed."""
    return Cascade(*(sum(terms) for terms in _rhs_terms(spec, S, K, P1)))


def cascade_rhs_scale(spec: Spectrum, S: np.ndarray, K: np.ndarray, P1: np.ndarray) -> Cascade:
    """Sum of the Frobenius norms of the terms of each right-hand side: the floating-point scale
    against which a right-hand side that nearly cancels (near an equilibrium) is compared."""
    return Cascade(*(sum(np.linalg.norm(t, axis=(-2, -1)) for t in terms) for terms in _rhs_terms(spec, S, K, P1)))


def _cascade_of_Y(Y1: jax.Array, Y2: jax.Array):
    """``(S, K, P1)`` from ``Y1 (p, r)``, ``Y2 (n-p, r)`` with the pseudo-inverse (``jnp.linalg.pinv``,
    differentiable at constant rank)."""
    pinv = lapack.pinv(Y1)  # (r, p); one matrix per LAPACK call under vmap (mfdyn._lapack)
    projector = jnp.eye(Y1.shape[1]) - pinv @ Y1  # (r, r), I - Y1^+ Y1
    return Y2 @ projector @ Y2.T, Y2 @ pinv, Y1 @ Y1.T


@partial(jax.jit, static_argnames="p")
def _cascade_derivatives(M: jax.Array, V: jax.Array, Xs: jax.Array, p: int):
    def one(X):  # X: (n, r)
        Y = V.T @ X
        dY = V.T @ ((M - X @ X.T) @ X)  # V^T X', the flow's velocity in the eigenbasis
        return jax.jvp(_cascade_of_Y, (Y[:p], Y[p:]), (dY[:p], dY[p:]))[1]

    return jax.vmap(one)(Xs)


def cascade_time_derivative(problem: Any, X: Any) -> Cascade:
    """``d/dt (S, K, P1)`` along the flow at ``X`` (shape ``(n, r)``, or ``(T, n, r)`` for a batch).

    The directional derivative of the cascade map in the direction of the vector field
    ``X' = (M - X X^T) X`` (forward-mode autodiff through the pseudo-inverse): independent of the
    cascade equations, so it checks them.
    """
    spec = spectrum(problem)
    batch, batched = _points_in_domain(problem, X, spec)
    out = _cascade_derivatives(jnp.asarray(problem.M), jnp.asarray(spec.vectors), jnp.asarray(batch), spec.p)
    out = [np.asarray(o) for o in out]
    return Cascade(*(o if batched else o[0] for o in out))


def _points_in_domain(problem: Any, X: Any, spec: Spectrum) -> tuple[np.ndarray, bool]:
    """``X`` (one point ``(n, r)`` or a batch ``(T, n, r)``) as a batch of points, each checked to lie in
    the cascade domain ``{P1 > 0}``, and whether it was a batch."""
    v.finite_array("X", X, allow_complex=False)
    arr = np.asarray(X, dtype=float)
    if arr.ndim not in (2, 3):
        raise InputError(f"X must be one point of shape (n, r) = {(problem.M.shape[0], problem.rank)} or a batch "
                         f"(T, n, r) of them, got shape {arr.shape}")
    batch = arr if arr.ndim == 3 else arr[None]
    for i, Xi in enumerate(batch):
        cascade_factors(problem, Xi, spec=spec, name=f"X[{i}]" if arr.ndim == 3 else "X")  # shape and domain
    return batch, arr.ndim == 3


def cascade_derivative_scale(problem: Any, X: Any) -> Cascade:
    """Sizes of the terms that :func:`cascade_time_derivative` adds up (per point; ``X: (n, r)`` or ``(T, n, r)``).

    With ``Y' = V^T X'``, ``A = Y1^+`` and ``||d(Y1^+)|| <= 2 ||A||^2 ||Y1'||`` (full row rank):
    ``S``: ``2 d2 ||Y2|| + 2 ||Y2||^2 ||A|| d1``; ``K``: ``d2 ||A|| + 2 ||Y2|| ||A||^2 d1``; ``P1``: ``2 d1 ||Y1||``
    (spectral norms), where ``d_i = ||Y_i'|| + ||M|| ||X|| + ||X||^3`` adds the sizes of the terms of the
    velocity ``M X - X X^T X`` (its rounding error does not shrink with the velocity). Rounding errors
    of the derivative scale with these, not with the (possibly tiny) derivative itself, so they are the
    denominator of a fair comparison.
    """
    spec = spectrum(problem)
    batch, batched = _points_in_domain(problem, X, spec)
    p, M, V = spec.p, np.asarray(problem.M, dtype=float), spec.vectors
    out = []
    for Xi in batch:
        Y = V.T @ Xi
        dY = V.T @ ((M - Xi @ Xi.T) @ Xi)
        n2 = lambda A: float(np.linalg.norm(A, 2)) if A.size else 0.0  # noqa: E731
        velocity_terms = n2(M) * n2(Xi) + n2(Xi) ** 3
        y1, y2, d1, d2 = n2(Y[:p]), n2(Y[p:]), n2(dY[:p]) + velocity_terms, n2(dY[p:]) + velocity_terms
        a = 1.0 / float(np.linalg.svd(Y[:p], compute_uv=False)[-1]) if p else 0.0
        out.append((2 * d2 * y2 + 2 * y2**2 * a * d1, d2 * a + 2 * y2 * a**2 * d1, 2 * d1 * y1))
    scales = np.asarray(out).T  # (3, T)
    return Cascade(*(s if batched else s[0] for s in scales))

