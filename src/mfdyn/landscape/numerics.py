"""Numerical type of a critical point, independent of the rules: dense Hessian plus higher-order tests.

1. ``lambda_min(H) < -tol``: strict saddle (``tol = EIG_RTOL * max(1, ||H||_2)``).
2. Otherwise restrict ``H`` to the orthogonal complement of the tangent space ``T`` of the symmetry orbit
   (hidden-layer gauge ``W_l -> O_l W_l O_{l-1}^T`` and the pairs ``(O_L, O_0)`` with ``O_L Y O_0^T = Y``:
   rotations inside tied blocks and inside the null spaces of ``Y``). ``H`` vanishes on ``T`` at a critical
   point. If the reduced Hessian is positive definite (``> tol``), ``ker H = T``: the critical set is the orbit
   (Morse-Bott) and the point is a local minimizer.
3. Otherwise (a degenerate direction beyond symmetry) a higher-order test: the loss at ``x +- t v`` for every
   degenerate direction ``v`` and random combinations of them, along the supplied curves (for census
   representatives: balanced curves ``sigma_i -> sigma_i +- t``), and BFGS from small perturbations. Any loss
   decrease beyond ``DESCENT_RTOL * max(1, |l|)`` makes it a non-strict saddle; none makes it a local minimizer.
A local minimizer whose loss is the least critical value (within ``LOSS_TIE_RTOL``) is a global minimizer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import scipy.optimize

from .. import _validate as v
from ..errors import InputError
from . import kernels
from .spectrum import Spectrum, spectrum

EIG_RTOL = 1e-9  # |eigenvalue| <= EIG_RTOL * max(1, ||H||_2) counts as zero
PROBE_RSTEP = 1e-2  # probe step along degenerate directions, relative to max(1, max |x|)
CURVE_RSTEP = 1e-3  # step along balanced curves, relative to max(sigma_i, s*)
DESCENT_RTOL = 1e-11  # a loss decrease larger than DESCENT_RTOL * max(1, |l|) is a descent
CRITICAL_RTOL = 1e-10  # census representatives: ||grad|| <= CRITICAL_RTOL * max(1, ||Y||_2)
PERTURBATIONS = 6  # random perturbations for the local-minimization test


class RuleMismatchError(RuntimeError):
    """The [derived] rule and the numerical test disagree on a class (a finding about MATH.md §2)."""


def flat(params: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(W, dtype=float).ravel() for W in params])


def loss_and_grad(spec: Spectrum, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and flat gradient (NumPy closed forms of :mod:`.kernels`, equal to ``problem.loss``/``grad``)."""
    value, grad = kernels.loss_grad(np.asarray(x, dtype=float), spec.Y, spec.widths, spec.weight_decay)
    return float(value), grad


def dense_hessian(spec: Spectrum, params) -> np.ndarray:
    return kernels.hessian(flat(params), spec.Y, spec.widths, spec.weight_decay)


def dense_hessian_eigs(problem, params) -> np.ndarray:
    """Eigenvalues (ascending) of the dense Hessian at ``params``."""
    return np.linalg.eigvalsh(dense_hessian(spectrum(problem), params))


def _skew_pairs(indices: Sequence[int], size: int) -> list[np.ndarray]:
    out = []
    for a, b in zip(*np.triu_indices(len(indices), 1)):
        A = np.zeros((size, size))
        A[indices[a], indices[b]], A[indices[b], indices[a]] = 1.0, -1.0
        out.append(A)
    return out


def symmetry_tangent(spec: Spectrum, params: Sequence[np.ndarray]) -> np.ndarray:
    """Orthonormal basis ``(n, m)`` of the tangent space of the symmetry orbit through ``params``."""
    W = [np.asarray(p, dtype=float) for p in params]
    L = len(W)
    vectors = []

    def push(deltas: dict[int, np.ndarray]) -> None:
        vectors.append(flat([deltas.get(l, np.zeros_like(W[l])) for l in range(L)]))

    for l in range(L - 1):  # interface between W_{l+1} and W_{l+2} (0-based W[l], W[l+1]), dimension d_{l+1}
        for A in _skew_pairs(list(range(W[l].shape[0])), W[l].shape[0]):
            push({l: A @ W[l], l + 1: -W[l + 1] @ A})
    r = spec.y.size
    d_out, d_in = spec.widths[-1], spec.widths[0]
    for block in spec.blocks:
        if block.value > 0 and block.size > 1:
            for a, b in zip(*np.triu_indices(block.size, 1)):
                i, j = block.indices[a], block.indices[b]
                A_L = np.outer(spec.U[:, i], spec.U[:, j]) - np.outer(spec.U[:, j], spec.U[:, i])
                A_0 = np.outer(spec.V[:, i], spec.V[:, j]) - np.outer(spec.V[:, j], spec.V[:, i])
                push({L - 1: A_L @ W[L - 1], 0: -W[0] @ A_0})
    null_left = [i for i in range(d_out) if i >= r or spec.y[i] == 0]
    null_right = [j for j in range(d_in) if j >= r or spec.y[j] == 0]
    for a, b in zip(*np.triu_indices(len(null_left), 1)):
        i, j = null_left[a], null_left[b]
        A_L = np.outer(spec.U[:, i], spec.U[:, j]) - np.outer(spec.U[:, j], spec.U[:, i])
        push({L - 1: A_L @ W[L - 1]})
    for a, b in zip(*np.triu_indices(len(null_right), 1)):
        i, j = null_right[a], null_right[b]
        A_0 = np.outer(spec.V[:, i], spec.V[:, j]) - np.outer(spec.V[:, j], spec.V[:, i])
        push({0: -W[0] @ A_0})
    n = sum(w.size for w in W)
    if not vectors:
        return np.zeros((n, 0))
    T = np.stack(vectors, axis=1)
    U, s, _ = np.linalg.svd(T, full_matrices=False)
    rank = int(np.sum(s > 1e-10 * max(1.0, s[0]))) if s.size else 0
    return U[:, :rank]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Numerical type and the evidence: Hessian extremes, reduced Hessian, descent found by probes."""

    kind: str
    loss: float
    grad_norm: float
    min_eig: float
    max_eig: float
    reduced_min_eig: float
    symmetry_dim: int
    degenerate_dim: int
    descent: float
    evidence: str

    def summary(self) -> str:
        return (
            f"numerics={self.kind} (min eig {self.min_eig:.3e}, reduced min eig {self.reduced_min_eig:.3e} off a "
            f"{self.symmetry_dim}-dim symmetry orbit, {self.degenerate_dim} degenerate direction(s), "
            f"max loss decrease by probes {self.descent:.3e}; {self.evidence})"
        )


def _local_descent(spec: Spectrum, x: np.ndarray, l0: float, directions: np.ndarray, step: float, seed: int) -> float:
    """Largest loss decrease reached by BFGS started at ``x + step * d`` (``d``: +-directions, random)."""
    rng = np.random.default_rng(seed)
    starts = [s * d for d in directions.T for s in (1.0, -1.0)]
    for _ in range(PERTURBATIONS):
        d = rng.standard_normal(x.size)
        starts.append(d / np.linalg.norm(d))
    best = 0.0
    for d in starts:
        res = scipy.optimize.minimize(
            lambda z: loss_and_grad(spec, z), x + step * d, jac=True, method="BFGS",
            options=dict(maxiter=300, gtol=1e-12),
        )
        best = max(best, l0 - float(res.fun))
    return best


def check_critical(grad_norm: float, grad_rtol: float, scale: float) -> None:
    """Refuse a point that is not critical: ``||grad|| > grad_rtol * scale`` (``scale = max(1, ||Y||_2)``)."""
    v.finite_scalar("grad_rtol", grad_rtol, positive=True)
    if not grad_norm <= grad_rtol * scale:
        raise InputError(f"params is not a critical point: ||grad|| = {grad_norm:.3e} > {grad_rtol:g} * {scale:g}")


def numerical_kind(
    problem,
    params: Sequence[np.ndarray],
    *,
    global_loss: float | None = None,
    curves: Sequence[Callable[[float], np.ndarray]] = (),
    curve_step: float = 0.0,
    spec: Spectrum | None = None,
    seed: int = 0,
    grad_rtol: float = 1e-6,
) -> Verdict:
    """The type of the critical point ``params`` from the Hessian and higher-order tests (module docstring).

    ``curves``: maps ``t -> flat params`` through ``params`` at ``t = 0`` (probed at ``+-curve_step``,
    ``+-curve_step/2``). ``global_loss``: the least critical value, to tell global from local minimizers.
    A point with ``||grad|| > grad_rtol * max(1, ||Y||_2)`` is not critical: InputError (as :func:`classify`).
    """
    spec = spectrum(problem) if spec is None else spec
    x = flat(params)
    l0, g = loss_and_grad(spec, x)
    check_critical(float(np.linalg.norm(g)), grad_rtol, spec.scale)
    H = kernels.hessian(x, spec.Y, spec.widths, spec.weight_decay)
    eigs = np.linalg.eigvalsh(H)
    tol = EIG_RTOL * max(1.0, float(np.max(np.abs(eigs))) if eigs.size else 1.0)
    T = symmetry_tangent(spec, params)
    B = scipy.linalg.null_space(T.T) if T.shape[1] else np.eye(x.size)
    red_eigs, red_vecs = np.linalg.eigh(B.T @ H @ B) if B.shape[1] else (np.array([np.inf]), np.zeros((0, 0)))
    base = dict(loss=l0, grad_norm=float(np.linalg.norm(g)), min_eig=float(eigs[0]), max_eig=float(eigs[-1]),
                reduced_min_eig=float(red_eigs[0]), symmetry_dim=T.shape[1])
    if eigs[0] < -tol:
        return Verdict(kind="strict_saddle", degenerate_dim=0, descent=float("nan"),
                       evidence=f"negative curvature below -{tol:.1e}", **base)
    degenerate = B @ red_vecs[:, red_eigs <= tol] if B.shape[1] else np.zeros((x.size, 0))
    if degenerate.shape[1] == 0:
        kind, descent, evidence = "local_min", 0.0, "reduced Hessian positive definite (Morse-Bott)"
    else:
        step = PROBE_RSTEP * max(1.0, float(np.max(np.abs(x))))
        rng = np.random.default_rng(seed)
        directions = np.concatenate([degenerate, degenerate @ rng.standard_normal((degenerate.shape[1], 4))], axis=1)
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        probes = [x + s * step * d for d in directions.T for s in (1.0, -1.0, 0.5, -0.5)]
        probes += [c(t) for c in curves for t in (curve_step, -curve_step, curve_step / 2, -curve_step / 2)]
        descent = max(l0 - loss_and_grad(spec, z)[0] for z in probes)
        descent = max(descent, _local_descent(spec, x, l0, degenerate, step, seed))
        is_saddle = descent > DESCENT_RTOL * max(1.0, abs(l0))
        kind = "non_strict_saddle" if is_saddle else "local_min"
        evidence = f"higher-order probes {'found' if is_saddle else 'found no'} descent"
    if kind == "local_min" and global_loss is not None:
        from .census import LOSS_TIE_RTOL

        if l0 <= global_loss + LOSS_TIE_RTOL * spec.scale**2 + 1e-12 * abs(global_loss):
            kind = "global_min"
    return Verdict(kind=kind, degenerate_dim=degenerate.shape[1], descent=descent, evidence=evidence, **base)


def verify_point(problem, point, census=None, seed: int = 0) -> Verdict:
    """Check a census class numerically; raise :class:`RuleMismatchError` showing both sides if they disagree.

    Also checks the representative is critical (``||grad|| <= CRITICAL_RTOL * max(1, ||Y||_2)``).
    """
    from .census import CensusContext
    from .representatives import layers

    spec = spectrum(problem)
    census = CensusContext.of(problem) if census is None else census
    sigma = np.asarray(point.sigma, dtype=float)

    def curve(i: int) -> Callable[[float], np.ndarray]:
        def at(t: float) -> np.ndarray:
            s = sigma.copy()
            s[i] += t
            return flat(layers(spec, point.matching, s))

        return at

    step = CURVE_RSTEP * max([spec.thresholds.s_star, *sigma.tolist(), 1e-300])
    verdict = numerical_kind(problem, point.params, global_loss=census.global_loss,
                             curves=[curve(i) for i in range(sigma.size)], curve_step=step, spec=spec, seed=seed)
    if verdict.grad_norm > CRITICAL_RTOL * spec.scale:
        raise RuleMismatchError(
            f"representative of class {point.key} is not critical: ||grad|| = {verdict.grad_norm:.3e} > "
            f"{CRITICAL_RTOL:g} * {spec.scale:g}"
        )
    if verdict.kind != point.kind:
        raise RuleMismatchError(
            f"class {point.key} (matching {point.matching}, roots {point.roots}, loss {point.loss:.12g}): "
            f"rule={point.kind} ({point.reason}) but {verdict.summary()}"
        )
    return verdict

