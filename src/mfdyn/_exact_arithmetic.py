"""Error-free transformations of float64 arithmetic, for closed forms evaluated near a threshold.

``two_product(a, b) = (p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker's product
with Veltkamp's splitting: each factor is cut into two 26-bit halves whose products are exact in
float64). Example: ``t - 1`` for ``t = eta y`` near 1 is ``(p - 1) + e``, one rounding of the exact
difference, where ``fl(eta y) - 1`` can be off by 100% (``fl`` loses up to half an ulp of 1, and
``t - 1`` is of that size).
"""

from __future__ import annotations

import math

SPLITTER = 134217729.0  # 2^27 + 1: Veltkamp's constant for 53-bit significands
SAFE_EXPONENT = 500  # factors of magnitude in [2^-500, 2^500]: no overflow or underflow in the splitting


def split(a: float) -> tuple[float, float]:
    """``(hi, lo)`` with ``hi + lo = a`` exactly, each with at most 26 significant bits."""
    c = SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_product(a: float, b: float) -> tuple[float, float]:
    """``(p, e)``: ``p = fl(a b)`` and its rounding error ``e = a b - p`` (exact), for finite ``a``,
    ``b`` of magnitude in ``[2^-500, 2^500]`` (or 0); outside that range ``e`` is returned as 0
    (the product is then not near any threshold this module serves)."""
    a, b = float(a), float(b)
    p = a * b
    if not all(x == 0.0 or -SAFE_EXPONENT <= math.frexp(x)[1] <= SAFE_EXPONENT for x in (a, b)) \
            or not math.isfinite(p):
        return p, 0.0
    a_hi, a_lo = split(a)
    b_hi, b_lo = split(b)
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def product_minus_one(a: float, b: float) -> float:
    """``a b - 1`` rounded once (``fl(a b) - 1`` loses all its digits when ``a b`` is within an ulp
    of 1, and can be 0 where ``a b > 1``): its sign is exact."""
    p, e = two_product(a, b)
    return (p - 1.0) + e
