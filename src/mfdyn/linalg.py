"""Extreme Hessian eigenvalues from Hessian-vector products (Lanczos)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

DENSE_LIMIT = 2000  # up to this many real coordinates, use a dense symmetric eigensolver


def lanczos_extreme_eigs(matvec: Callable[[jax.Array], jax.Array], n: int, iters: int = 96, seed: int = 0):
    """Smallest and largest eigenvalue of a symmetric operator by Lanczos with full reorthogonalization.

    Runs ``k = min(n, iters)`` steps from a fixed pseudo-random start and returns the extreme
    eigenvalues of the tridiagonal matrix ``T_k = Q_k^T A Q_k`` (the Ritz values). For ``k = n`` these
    are exact; otherwise the extremes converge first. Jit-compatible (``n``, ``iters`` static).
    """
    k = min(n, iters)
    q0 = jax.random.normal(jax.random.PRNGKey(seed), (n,), dtype=jnp.float64)
    q0 = q0 / jnp.linalg.norm(q0)
    Q = jnp.zeros((k + 1, n)).at[0].set(q0)
    alphas = jnp.zeros((k,))
    betas = jnp.zeros((k,))

    def body(i, carry):
        Q, alphas, betas = carry
        q = Q[i]
        w = matvec(q)
        alpha = jnp.dot(q, w)
        # full reorthogonalization against all previous vectors, twice for stability
        mask = (jnp.arange(k + 1) <= i)[:, None]
        for _ in range(2):
            w = w - (Q * mask).T @ ((Q * mask) @ w)
        beta = jnp.linalg.norm(w)
        safe = beta > 1e-300
        Q = Q.at[i + 1].set(jnp.where(safe, w / jnp.where(safe, beta, 1.0), 0.0))
        return Q, alphas.at[i].set(alpha), betas.at[i].set(jnp.where(safe, beta, 0.0))

    Q, alphas, betas = jax.lax.fori_loop(0, k, body, (Q, alphas, betas))
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    ritz = jnp.linalg.eigvalsh(T)
    return ritz[0], ritz[-1]
