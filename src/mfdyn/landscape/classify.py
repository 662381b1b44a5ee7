"""Map a numerically found critical point to its census class (MATH.md §2).

At a critical point ``P = lambda^{-1/2} sum_i s_i^L u_pi(i) v_pi(i)^T`` with ``u``, ``v`` singular vectors of ``Y``.
So ``M = U^T P V`` is block diagonal over the tied blocks of ``Y`` and vanishes on its null spaces; the
singular values of block ``b`` of ``M`` are the product values ``p`` of the components carrying that block's
singular value, each ``0`` or ``s^L / sqrt(lambda)`` for a root ``s`` of the block. The class key counts them per
root. Tolerances: ``||grad|| <= grad_rtol * max(1, ||Y||_2)``; each ``p`` within ``ROOT_RTOL * max(1, ||Y||_2)``
of the nearest candidate (compared in ``p``, not in ``s``: ``s = (sqrt(lambda) p)^(1/L)`` magnifies the noise of a
zero ``p``); off-block mass of ``M`` at most ``ROOT_RTOL * max(1, ||Y||_2)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .census import CriticalPoint, make_point
from .numerics import check_critical, flat, loss_and_grad
from .spectrum import Spectrum, spectrum

ROOT_RTOL = 1e-4


class NotInCensusError(RuntimeError):
    """A numerically critical point that matches no enumerated class (a finding about the census)."""


def class_key(spec: Spectrum, params: Sequence[np.ndarray], root_rtol: float = ROOT_RTOL) -> tuple:
    """The class key of critical parameters ``params`` (raises :class:`NotInCensusError` if none fits)."""
    P = np.asarray(params[0], dtype=float)
    for W in params[1:]:
        P = np.asarray(W, dtype=float) @ P
    M = spec.U.T @ P @ spec.V  # (d_L, d_0)
    covered = np.zeros_like(M, dtype=bool)
    key = []
    for block in spec.blocks:
        idx = np.asarray(block.indices)
        covered[np.ix_(idx, idx)] = True
        p = np.linalg.svd(M[np.ix_(idx, idx)], compute_uv=False)
        candidates = np.array([0.0] + [r.product for r in block.roots])
        counts = [0] * len(block.roots)
        for pi in p:
            j = int(np.argmin(np.abs(candidates - pi)))
            if abs(candidates[j] - pi) > root_rtol * spec.scale:
                raise NotInCensusError(
                    f"product singular value {pi:.6g} on y={block.value:.6g} matches none of "
                    f"{[round(float(c), 6) for c in candidates]} (0 or a root's p = s^L / sqrt(lambda); "
                    f"atol {root_rtol * spec.scale:g})"
                )
            if j:
                counts[j - 1] += 1
        key.append(tuple(counts))
    off = float(np.linalg.norm(np.where(covered, 0.0, M)))
    if off > root_rtol * spec.scale:
        raise NotInCensusError(f"product has mass {off:.3e} off the singular blocks of Y (not aligned with Y)")
    return tuple(key)


def classify(problem, params, grad_rtol: float = 1e-6) -> CriticalPoint:
    """The census class (with its canonical representative and rule kind) of a critical point ``params``.

    Raises ``InputError`` if ``||grad|| > grad_rtol * max(1, ||Y||_2)`` (not a critical point) and
    :class:`NotInCensusError` if the point is critical but fits no class.
    """
    spec = spectrum(problem)
    params = problem.check_params(params)
    params = tuple(np.asarray(W, dtype=float) for W in params)
    _, g = loss_and_grad(spec, flat(params))
    gnorm = float(np.linalg.norm(g))
    check_critical(gnorm, grad_rtol, spec.scale)
    return make_point(spec, class_key(spec, params))


def no_nonstrict_saddles(problem) -> tuple[bool, list[float]]:
    """``(True, [])`` iff every critical point is a local minimizer or a strict saddle (MATH.md §2).

    ``L = 2``: always. ``L >= 3``: iff no singular value ``y_i`` with ``i <= d_min`` equals ``y*`` (within
    ``THRESHOLD_RTOL``); otherwise ``(False, offending values)``.
    """
    spec = spectrum(problem)
    if spec.depth == 2:
        return True, []
    offending = [
        float(spec.y[i]) for block in spec.blocks for i in block.indices
        if i < spec.d_min and any(r.label == "s*" for r in block.roots)
    ]
    return not offending, offending
