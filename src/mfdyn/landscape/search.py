"""Random-start numerical search for critical points: batched Levenberg-Marquardt on ``grad = 0``.

Independent of the census: it only uses the loss's gradient and Hessian (:mod:`.kernels`). From each start it
minimizes ``1/2 ||grad l(x)||^2`` with steps ``dx = -(H^2 + mu I)^{-1} H grad`` (``H`` symmetric is the
Jacobian of ``grad``), accepting a step iff ``||grad||`` decreases (``mu /= 3``), else ``mu *= 4``. All starts
advance together as one batch (NumPy broadcasting over a leading axis). A start has *converged* when
``||grad|| <= tol * max(1, ||Y||_2)``; it finds saddles as readily as minima.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import kernels
from .spectrum import Spectrum


@dataclasses.dataclass(frozen=True)
class SearchResult:
    points: np.ndarray  # (B, n) final flat coordinates
    grad_norm: np.ndarray  # (B,)
    converged: np.ndarray  # (B,) bool
    iterations: int


def random_starts(spec: Spectrum, count: int, seed: int, scale_range: tuple[float, float] = (0.05, 2.0)) -> np.ndarray:
    """``count`` random starts that know nothing of the census, in three equal families.

    Gaussian layers scaled by ``c / sqrt(lambda_l)``, ``c`` log-uniform in ``scale_range`` times
    ``max(1, ||Y||_2)^(1/L)``; the second family projects every hidden output onto a random subspace of
    random dimension ``< d_min`` (low-rank products); the third is the first after 200 GD steps on the loss
    (``eta = 0.05 / max(1, ||Y||_2)``, step length capped at ``0.1 max(1, ||Y||_2)^(1/L)``), which brings starts near minimizers as well as saddles.
    """
    rng = np.random.default_rng(seed)
    L = spec.depth
    c = np.exp(rng.uniform(*np.log(scale_range), size=(count, 1, 1))) * max(1.0, spec.scale) ** (1.0 / L)
    family = np.arange(count) % 3
    rank = rng.integers(1, max(2, spec.d_min), size=count)
    layers = []
    for i in range(L):
        d_out, d_in = spec.widths[i + 1], spec.widths[i]
        W = c * rng.standard_normal((count, d_out, d_in)) / np.sqrt(min(d_out, d_in) * spec.weight_decay[i])
        if i < L - 1:
            Q, _ = np.linalg.qr(rng.standard_normal((count, d_out, d_out)))
            keep = (np.arange(d_out)[None, :] < rank[:, None]) | (family != 1)[:, None]
            W = (Q * keep[:, None, :]) @ np.swapaxes(Q, -1, -2) @ W
        layers.append(W.reshape(count, -1))
    x = np.concatenate(layers, axis=1)
    descend = family == 2
    eta, cap = 0.05 / spec.scale, 0.1 * max(1.0, spec.scale) ** (1.0 / L)
    for _ in range(200):
        _, g = kernels.loss_grad(x[descend], spec.Y, spec.widths, spec.weight_decay)
        step = eta * g
        x[descend] -= step * np.minimum(1.0, cap / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-300))
    return x


def solve_gradient(spec: Spectrum, x0: np.ndarray, *, iterations: int = 200, tol: float = 1e-11) -> SearchResult:
    """Batched Levenberg-Marquardt on ``grad l = 0`` from the rows of ``x0`` (module docstring)."""
    Y, widths, wd = spec.Y, spec.widths, spec.weight_decay
    x = np.array(x0, dtype=float)
    n = x.shape[1]
    _, g = kernels.loss_grad(x, Y, widths, wd)
    gn = np.linalg.norm(g, axis=1)
    mu = np.full(x.shape[0], 1e-3)
    eye = np.eye(n)
    target = tol * spec.scale
    it = 0
    for it in range(1, iterations + 1):
        active = gn > target
        if not active.any():
            break
        xa, ga = x[active], g[active]
        H = kernels.hessian(xa, Y, widths, wd)
        scale = np.maximum(1.0, np.einsum("bii->b", H @ H) / n)
        A = H @ H + (mu[active] * scale)[:, None, None] * eye
        step = -np.linalg.solve(A, (H @ ga[:, :, None]))[:, :, 0]
        trial = xa + step
        with np.errstate(over="ignore", invalid="ignore"):  # rejected trial steps may overflow
            _, gt = kernels.loss_grad(trial, Y, widths, wd)
            gtn = np.linalg.norm(gt, axis=1)
        ok = np.isfinite(gtn) & (gtn < gn[active])
        idx = np.flatnonzero(active)
        x[idx[ok]], g[idx[ok]], gn[idx[ok]] = trial[ok], gt[ok], gtn[ok]
        mu[idx] = np.where(ok, np.maximum(mu[idx] / 3, 1e-15), np.minimum(mu[idx] * 4, 1e12))
    return SearchResult(points=x, grad_norm=gn, converged=gn <= target, iterations=it)
