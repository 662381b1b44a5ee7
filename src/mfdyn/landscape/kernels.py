"""Loss, gradient and dense Hessian of regularized deep factorization in NumPy, batched over a leading axis.

The census checks many small problems of different shapes; compiling the core's JAX ``loss``/``grad``/
``hessian`` for each shape costs seconds, these closed forms cost nothing to start. They are the same
formulas as ``DeepFactorization`` with ``balance = 0`` (tests compare them with ``problem.loss``,
``problem.grad`` and ``problem.hessian`` on random inputs).

Layers ``W_i`` (0-based) have shape ``(..., d_{i+1}, d_i)``; ``pre_i = W_{i-1} ... W_0``, ``suf_i = W_{L-1} ... W_{i+1}``,
``P = W_{L-1} ... W_0``, ``R = P - Y``; flat coordinates are the row-major entries of ``W_0, ..., W_{L-1}``.

- loss ``1/2 ||R||^2 + 1/2 sum_i lambda_i ||W_i||^2``;
- gradient ``suf_i^T R pre_i^T + lambda_i W_i``;
- Hessian = ``J^T J + S + diag(lambda)``: ``J_i = suf_i (x) pre_i^T`` (``vec P`` per layer, row-major), and
  for ``i < k`` the block ``S_{k,i}[(p,q),(r,s)] = G_{ps} C_{qr}`` with ``G = suf_k^T R pre_i^T``,
  ``C = W_{k-1} ... W_{i+1}`` (from ``<R, suf_k V_k C V_i pre_i>``), ``S_{i,k} = S_{k,i}^T``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _eye(d: int, batch: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.eye(d), batch + (d, d))


def split(x: np.ndarray, widths: Sequence[int]) -> list[np.ndarray]:
    """Flat coordinates ``(..., n)`` to layers ``(..., d_{i+1}, d_i)``."""
    out, offset = [], 0
    for i in range(len(widths) - 1):
        size = widths[i + 1] * widths[i]
        out.append(x[..., offset : offset + size].reshape(x.shape[:-1] + (widths[i + 1], widths[i])))
        offset += size
    return out


def _chains(Ws: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    batch = Ws[0].shape[:-2]
    pre = [_eye(Ws[0].shape[-1], batch)]
    for W in Ws:
        pre.append(W @ pre[-1])
    suf = [_eye(Ws[-1].shape[-2], batch)]
    for W in reversed(Ws[1:]):
        suf.append(suf[-1] @ W)
    return pre, suf[::-1]  # pre[i] = W_{i-1}..W_0 (pre[L] = P); suf[i] = W_{L-1}..W_{i+1}


def loss_grad(x: np.ndarray, Y: np.ndarray, widths: Sequence[int], wd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss ``(...)`` and flat gradient ``(..., n)`` at flat coordinates ``x``."""
    Ws = split(x, widths)
    pre, suf = _chains(Ws)
    R = pre[-1] - Y
    loss = 0.5 * np.sum(R**2, axis=(-2, -1))
    grads = []
    for i, W in enumerate(Ws):
        loss = loss + 0.5 * wd[i] * np.sum(W**2, axis=(-2, -1))
        g = np.swapaxes(suf[i], -1, -2) @ R @ np.swapaxes(pre[i], -1, -2) + wd[i] * W
        grads.append(g.reshape(g.shape[:-2] + (-1,)))
    return loss, np.concatenate(grads, axis=-1)


def hessian(x: np.ndarray, Y: np.ndarray, widths: Sequence[int], wd: np.ndarray) -> np.ndarray:
    """Dense Hessian ``(..., n, n)`` at flat coordinates ``x`` (module docstring)."""
    Ws = split(x, widths)
    L = len(Ws)
    pre, suf = _chains(Ws)
    R = pre[-1] - Y
    batch = x.shape[:-1]
    sizes = [W.shape[-2] * W.shape[-1] for W in Ws]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    # J_i[(a,b),(p,q)] = suf_i[a,p] pre_i[q,b]
    J = np.concatenate(
        [np.einsum("...ap,...qb->...abpq", suf[i], pre[i]).reshape(batch + (Y.shape[-2] * Y.shape[-1], sizes[i]))
         for i in range(L)],
        axis=-1,
    )
    H = np.swapaxes(J, -1, -2) @ J
    for i in range(L):
        sl = slice(offsets[i], offsets[i + 1])
        H[..., sl, sl] += wd[i] * np.eye(sizes[i])
        for k in range(i + 1, L):
            C = _eye(Ws[i].shape[-2], batch)
            for W in Ws[i + 1 : k]:
                C = W @ C  # (d_k, d_{i+1})
            G = np.swapaxes(suf[k], -1, -2) @ R @ np.swapaxes(pre[i], -1, -2)  # (d_{k+1}, d_i)
            S = np.einsum("...ps,...qr->...pqrs", G, C).reshape(batch + (sizes[k], sizes[i]))
            sk = slice(offsets[k], offsets[k + 1])
            H[..., sk, sl] += S
            H[..., sl, sk] += np.swapaxes(S, -1, -2)
    return H
