"""Per-component critical values of regularized deep factorization (MATH.md §2, [derived]).

One component carrying a singular value ``y`` of ``Y`` with shared layer singular value ``s``
(``sqrt(lambda_l) W_l`` all have singular value ``s``) is critical iff ``s = 0`` or ``g(s) = 0`` with

    g(s) = s^(2L-2) - sqrt(lambda) y s^(L-2) + lambda,      lambda = prod_l lambda_l,

its product singular value is ``p = s^L / sqrt(lambda)`` and it changes the project loss
``l = F / 2`` by ``cost = 1/2 [(p - y)^2 + L s^2 - y^2]`` relative to leaving ``y`` unmatched.

Roots (never a polynomial solver: brackets and ``brentq``):
- ``L = 2``: one root ``s = sqrt(sqrt(lambda) (y - sqrt(lambda)))`` iff ``y > sqrt(lambda)`` (soft threshold
  ``p = y - sqrt(lambda)``); label ``"soft"``.
- ``L >= 3``: with ``s* = ((L-2) lambda / L)^(1/(2L-2))`` (the minimizer of ``g``) and
  ``y* = c_L lambda^(1/(2L-2))``: two roots ``t1 < s* < t2`` if ``y > y*`` (labels ``"t1"``, ``"t2"``), the
  double root ``s*`` if ``y = y*`` (label ``"s*"``), none if ``y < y*``.

Threshold tolerance: ``y`` with ``|y - y*| <= THRESHOLD_RTOL * y*`` is treated as ``y = y*`` (and likewise for
``ybar`` and, at ``L = 2``, ``sqrt(lambda)``). At that distance the representative's gradient is about
``THRESHOLD_RTOL * y*``, below the ``1e-10`` criticality tolerance of the census.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.optimize import brentq

from .. import _validate as v
from ..errors import InputError

THRESHOLD_RTOL = 1e-12  # |y - threshold| <= THRESHOLD_RTOL * threshold counts as y = threshold


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """``y_star``: nonzero critical points exist for ``y >= y_star`` (``L >= 3``; ``y > y_star`` at ``L = 2``);
    ``y_bar``: a component with ``y > y_bar`` is in every global minimizer; ``s_star``: the double root
    at ``y = y_star`` (``0`` for ``L = 2``); ``lam``: ``prod lambda_l``."""

    depth: int
    lam: float
    y_star: float
    y_bar: float
    s_star: float


@dataclasses.dataclass(frozen=True)
class Root:
    """A positive root of ``g`` for one singular value: label, ``s``, ``p = s^L / sqrt(lambda)``, loss change."""

    label: str
    sigma: float
    product: float
    cost: float


def weight_decay_product(depth: int, weight_decay: Any) -> float:
    """``lambda = prod_l lambda_l`` after checking ``lambda_l > 0`` (scalar broadcasts to all layers)."""
    v.finite_array("weight_decay", weight_decay, allow_complex=False)
    wd = np.asarray(weight_decay, dtype=float)
    if wd.ndim == 0:
        wd = np.full(depth, float(wd))
    if wd.shape != (depth,):
        raise InputError(f"weight_decay must be a scalar or have depth = {depth} entries, got shape {wd.shape}")
    v.finite_array("weight_decay", wd)
    if np.any(wd <= 0):
        raise InputError(
            f"weight_decay must be > 0 for a census (lambda = 0 makes critical points non-isolated: "
            f"whole rescaling orbits), got {wd.tolist()}"
        )
    with np.errstate(over="ignore", under="ignore"):
        lam = float(np.prod(wd))
    if not np.isfinite(lam) or lam < np.finfo(float).tiny:  # (overflowed, or underflowed to 0 or a subnormal)
        raise InputError(f"weight_decay: the product lambda = prod_l lambda_l = 10^{np.sum(np.log10(wd)):.4g} is "
                         f"outside float64's range; the census needs it finite and normal")
    return lam


def thresholds(depth: int, weight_decay: Any) -> Thresholds:
    """``y*``, ``ybar``, ``s*`` of MATH.md §2 for ``depth`` layers and per-layer ``weight_decay``.

    ``L >= 3``: ``s* = ((L-2) lambda / L)^(1/(2L-2))``,
    ``y* = (2(L-1)/L) (L/(L-2))^((L-2)/(2L-2)) lambda^(1/(2L-2))``,
    ``ybar = (L-1) (L-2)^(-(L-2)/(2L-2)) lambda^(1/(2L-2))``. ``L = 2``: ``y* = ybar = sqrt(lambda)``, ``s* = 0``.
    """
    L = v.integer("depth", depth, minimum=2)
    lam = weight_decay_product(L, weight_decay)
    if L == 2:
        root = math.sqrt(lam)
        return Thresholds(L, lam, root, root, 0.0)
    e = 1.0 / (2 * L - 2)
    s_star = ((L - 2) * lam / L) ** e
    c_L = (2 * (L - 1) / L) * (L / (L - 2)) ** ((L - 2) * e)
    y_bar = (L - 1) * (L - 2) ** (-(L - 2) * e) * lam**e
    return Thresholds(L, lam, c_L * lam**e, y_bar, s_star)


def g_poly(s: float, y: float, depth: int, lam: float) -> float:
    """``g(s) = s^(2L-2) - sqrt(lambda) y s^(L-2) + lambda``."""
    return s ** (2 * depth - 2) - math.sqrt(lam) * y * s ** (depth - 2) + lam


def component_cost(sigma: float, y: float, depth: int, lam: float) -> float:
    """Loss change of matching ``y`` at layer singular value ``sigma``: ``1/2[(p - y)^2 + L s^2 - y^2]``."""
    p = sigma**depth / math.sqrt(lam)
    return 0.5 * ((p - y) ** 2 + depth * sigma**2 - y**2)


def _root(label: str, sigma: float, y: float, depth: int, lam: float) -> Root:
    return Root(label, sigma, sigma**depth / math.sqrt(lam), component_cost(sigma, y, depth, lam))


def _bracketed(f, a: float, b: float) -> float:
    return brentq(f, a, b, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def positive_roots(y: float, th: Thresholds) -> tuple[Root, ...]:
    """The positive roots of ``g`` for singular value ``y``, ascending (see module docstring for labels).

    ``L >= 3``: bracketed in the scale-free variable ``u = s / c``, ``c = lambda^(1/(2L-2))``, where
    ``g(s) = lambda (u^(2L-2) - (y / c) u^(L-2) + 1)``: no overflow or underflow of the powers of ``s``
    for any ``lambda`` (``lambda = 1e-300`` put ``t1 ~ 1e-150`` where ``s^4`` underflows). The upper
    bracket ``2 (y / c)^(1/L)`` has ``g > 0`` by a margin (at ``(y / c)^(1/L)`` exactly, ``g = lambda``
    is the difference of two terms larger by up to ``(y / c)^2``, lost in their rounding).
    """
    L, lam = th.depth, th.lam
    y = float(v.finite_scalar("y", y))
    if y <= 0:
        return ()
    try:
        if L == 2:
            if y <= th.y_star * (1 + THRESHOLD_RTOL):
                return ()
            return (_root("soft", math.sqrt(math.sqrt(lam) * (y - math.sqrt(lam))), y, L, lam),)
        if abs(y - th.y_star) <= THRESHOLD_RTOL * th.y_star:
            return (_root("s*", th.s_star, y, L, lam),)
        if y < th.y_star:
            return ()
        c = lam ** (1.0 / (2 * L - 2))
        scaled = y / c
        f = lambda u: u ** (2 * L - 2) - scaled * u ** (L - 2) + 1.0  # noqa: E731
        u_star = ((L - 2) / L) ** (1.0 / (2 * L - 2))
        if f(u_star) >= 0:  # y within rounding of y*: g's minimum not resolved below zero
            return (_root("s*", th.s_star, y, L, lam),)
        u1 = _bracketed(f, 0.0, u_star)
        u2 = _bracketed(f, u_star, 2.0 * scaled ** (1.0 / L))
        return (_root("t1", c * u1, y, L, lam), _root("t2", c * u2, y, L, lam))
    except OverflowError:
        raise InputError(f"singular value y = {y:g} is too large for a census at depth {L} with lambda = {lam:g}: "
                         f"its roots or loss changes overflow float64") from None


def is_at(y: float, threshold: float) -> bool:
    """``y`` equals ``threshold`` within ``THRESHOLD_RTOL`` (relative)."""
    return abs(y - threshold) <= THRESHOLD_RTOL * threshold
