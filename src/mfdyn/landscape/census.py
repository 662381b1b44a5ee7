"""Census of critical point classes: closed-form count and lazy enumeration in loss order (MATH.md §2).

The loss of a class is additive over blocks: ``l = 1/2 ||Y||^2 + sum_b sum_j n_bj cost_bj`` with
``sum_b sum_j n_bj <= d_min``. A block of ``m`` tied values with ``r`` roots offers every count vector
``(n_1..n_r)`` with ``sum n <= m``: ``C(c + r - 1, r - 1)`` options with ``c`` components. So

    count = sum_{c <= d_min} [x^c] prod_b sum_{c_b <= m_b} C(c_b + r_b - 1, r_b - 1) x^{c_b},

a polynomial product truncated at degree ``d_min`` in exact integers (``3^3 = 27`` for three distinct
``y > y*`` and width 3; ``19`` with a width-2 bottleneck). Enumeration is a best-first search over blocks
with the exact completion cost (a DP table) as heuristic: classes come out in non-decreasing loss, each after
``O(#blocks * #options)`` heap operations, so ``limit=n`` costs ``O(n)``, not the size of the census.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import math
from math import comb
from typing import Callable, Iterator

import numpy as np

from .. import _validate as v
from ..errors import InputError
from .representatives import components, layers
from .rules import KIND_RANK, ClassKey, rule_kind
from .spectrum import Block, Spectrum, spectrum

MAX_FULL_CENSUS = 1_000_000  # above this many classes, ``critical_points`` needs ``limit``
LOSS_TIE_RTOL = 1e-12  # classes whose losses agree to this (relative to max(1, ||Y||^2)) are ordered by kind


@dataclasses.dataclass(frozen=True)
class CriticalPoint:
    """One critical point class (up to the orthogonal symmetries of MATH.md §2).

    ``loss``: project convention ``1/2 ||P - Y||^2 + 1/2 sum lambda_l ||W_l||^2``; ``sigma``: shared singular
    values of ``sqrt(lambda_l) W_l`` (one per component); ``product_singular_values``: ``sigma^L / sqrt(lambda)``;
    ``matching``: index (0-based, descending order) of the singular value of ``Y`` each component carries;
    ``roots``: which root each component sits at; ``params``: a representative ``(W_1, ..., W_L)``;
    ``key``: the class key (per block, per root counts); ``reason``: why the rules give ``kind``.
    """

    kind: str
    loss: float
    sigma: np.ndarray
    product_singular_values: np.ndarray
    matching: tuple[int, ...]
    roots: tuple[str, ...]
    key: ClassKey
    reason: str
    hessian_eigs: np.ndarray | None = None
    build: Callable[[], tuple[np.ndarray, ...]] = dataclasses.field(default=None, repr=False, compare=False)

    @functools.cached_property
    def params(self) -> tuple[np.ndarray, ...]:
        """A representative ``(W_1, ..., W_L)`` (built on first access: enumeration stays cheap)."""
        return self.build()

    def as_dict(self) -> dict:
        out = {
            "kind": self.kind,
            "loss": self.loss,
            "sigma": self.sigma.tolist(),
            "product_singular_values": self.product_singular_values.tolist(),
            "matching": list(self.matching),
            "roots": list(self.roots),
            "reason": self.reason,
        }
        if self.hessian_eigs is not None:
            out["hessian_eigs"] = self.hessian_eigs.tolist()
        return out


def block_options(block: Block) -> list[tuple[int, ...]]:
    """Every per-root count vector ``(n_1..n_r)`` with ``sum n <= block size``."""
    r = len(block.roots)
    return [c for c in itertools.product(range(block.size + 1), repeat=r) if sum(c) <= block.size]


def count_classes(spec: Spectrum) -> int:
    """Closed-form number of classes (module docstring), exact integer."""
    cap = spec.d_min
    poly = [1] + [0] * cap  # coefficients of x^0..x^cap
    for block in spec.blocks:
        r = len(block.roots)
        if r == 0:
            continue
        factor = [comb(c + r - 1, r - 1) if c <= block.size else 0 for c in range(cap + 1)]
        poly = [sum(poly[i] * factor[c - i] for i in range(c + 1)) for c in range(cap + 1)]
    return sum(poly)


def count_critical_points(problem) -> int:
    """Number of critical point classes of ``problem`` in closed form (no enumeration)."""
    return count_classes(spectrum(problem))


def class_loss(spec: Spectrum, key: ClassKey) -> float:
    """The loss of class ``key``, summed as non-negative parts: ``y^2 / 2`` for each singular value left
    unmatched and ``1/2 [(p - y)^2 + L s^2]`` for each matched one. (``1/2 ||Y||^2 + sum cost``, the
    same value, orders the classes; as a sum it cancels: 1e-5 relative error for a loss of 7e-4 with
    ``||Y|| = 1e4``.)"""
    L = spec.depth
    covered = {i for block in spec.blocks for i in block.indices}
    total = 0.5 * sum(float(y) ** 2 for i, y in enumerate(spec.y) if i not in covered)
    for block, counts in zip(spec.blocks, key):
        total += 0.5 * (block.size - sum(counts)) * block.value**2
        total += sum(n * 0.5 * ((root.product - block.value) ** 2 + L * root.sigma**2)
                     for root, n in zip(block.roots, counts))
    return total


def _option_cost(block: Block, option: tuple[int, ...]) -> float:
    return sum(n * root.cost for root, n in zip(block.roots, option))


def _completion_table(spec: Spectrum, options: list[list[tuple[float, int, tuple[int, ...]]]]) -> np.ndarray:
    """``best[b, c]``: least loss change of blocks ``b..`` using at most ``c`` components."""
    B, cap = len(spec.blocks), spec.d_min
    best = np.zeros((B + 1, cap + 1))
    for b in reversed(range(B)):
        for c in range(cap + 1):
            best[b, c] = min(cost + best[b + 1, c - card] for cost, card, _ in options[b] if card <= c)
    return best


def keys_by_loss(spec: Spectrum) -> Iterator[tuple[float, ClassKey]]:
    """Every class key with its loss, in non-decreasing loss (best-first search, exact heuristic)."""
    options = [
        sorted(((_option_cost(block, o), sum(o), o) for o in block_options(block)), key=lambda t: t[0])
        for block in spec.blocks
    ]
    best = _completion_table(spec, options)
    B, cap, base = len(spec.blocks), spec.d_min, spec.base_loss
    tick = itertools.count()
    heap = [(best[0, cap], next(tick), 0, cap, 0.0, ())]
    while heap:
        _, _, b, room, spent, chosen = heapq.heappop(heap)
        if b == B:
            yield base + spent, chosen
            continue
        for cost, card, option in options[b]:
            if card <= room:
                total = spent + cost
                heapq.heappush(heap, (total + best[b + 1, room - card], next(tick), b + 1, room - card, total, chosen + (option,)))


def make_point(spec: Spectrum, key: ClassKey) -> CriticalPoint:
    """The :class:`CriticalPoint` of class ``key`` with its representative and rule kind."""
    kind, reason = rule_kind(spec, key)
    comp = components(spec, key)
    lam = spec.thresholds.lam
    return CriticalPoint(
        kind=kind,
        loss=class_loss(spec, key),
        sigma=comp.sigma,
        product_singular_values=comp.sigma**spec.depth / math.sqrt(lam),
        matching=comp.matching,
        roots=comp.labels,
        key=key,
        reason=reason,
        build=functools.partial(layers, spec, comp.matching, comp.sigma),
    )


def iter_critical_points(problem, limit: int | None = None) -> Iterator[CriticalPoint]:
    """Lazily yield classes ordered by loss, then kind (``global_min, local_min, non_strict_saddle, strict_saddle``).

    Losses equal within ``LOSS_TIE_RTOL * max(1, ||Y||_2^2)`` count as equal and are ordered by kind.
    """
    if limit is not None:
        limit = v.integer("limit", limit, minimum=0)
    spec = spectrum(problem)
    tie = LOSS_TIE_RTOL * spec.scale**2
    stream = keys_by_loss(spec)
    produced = 0
    pending = next(stream, None)
    while pending is not None and (limit is None or produced < limit):
        group = [pending]
        pending = next(stream, None)
        while pending is not None and pending[0] - group[0][0] <= tie:
            group.append(pending)
            pending = next(stream, None)
        points = sorted((make_point(spec, key) for _, key in group), key=lambda p: KIND_RANK[p.kind])
        for point in points:
            if limit is not None and produced >= limit:
                return
            yield point
            produced += 1


def critical_points(problem, limit: int | None = None, hessian_eigs: bool = False, verify: bool = False) -> list[CriticalPoint]:
    """Every critical point class of a regularized ``DeepFactorization`` (MATH.md §2), by loss then kind.

    ``limit``: at most this many (the lowest-loss ones), enumerated lazily. ``hessian_eigs``: attach the
    dense Hessian spectrum of each representative. ``verify``: cross-check each class's rule kind against
    the Hessian and higher-order tests (:func:`mfdyn.landscape.verify_point`), raising
    :class:`RuleMismatchError` on disagreement. Without ``limit``, a census of more than
    ``MAX_FULL_CENSUS`` classes is refused (use :func:`count_critical_points`, or ``limit``).
    """
    if limit is None:
        total = count_critical_points(problem)
        if total > MAX_FULL_CENSUS:
            raise InputError(f"limit is required: the census has {total} classes (> {MAX_FULL_CENSUS}); pass limit=N")
    points = list(iter_critical_points(problem, limit))
    if hessian_eigs or verify:
        from .numerics import dense_hessian_eigs, verify_point

        if verify:
            census = CensusContext.of(problem, points)
            for p in points:
                verify_point(problem, p, census=census)
        if hessian_eigs:
            points = [dataclasses.replace(p, hessian_eigs=dense_hessian_eigs(problem, p.params)) for p in points]
    return points


@dataclasses.dataclass(frozen=True)
class CensusContext:
    """What a numerical check needs from the census: the least critical value (the global minimum)."""

    global_loss: float

    @classmethod
    def of(cls, problem, points=None) -> "CensusContext":
        spec = spectrum(problem)
        first = next(keys_by_loss(spec))
        return cls(global_loss=first[0])
