"""The [derived] classification rules of MATH.md §2, applied to a class key.

A class key is a tuple over the blocks of ``Y`` (tied singular values, descending) of per-root counts:
``key[b][j]`` components of block ``b`` sit at root ``j`` of that block (roots ascending: ``t1, t2``, or
``s*``, or ``soft`` at ``L = 2``). Components not counted are unmatched.

``L >= 3``:
- strict saddle if a component sits at the small root ``t1``, or an unmatched singular value exceeds a
  matched one (a distinct value: tied values are one block);
- otherwise non-strict saddle if a component sits at ``s*`` (its ``y = y*``);
- otherwise local minimizer (top-k, ties free, every component at ``t2``; ``k = 0`` included);
  global minimizer iff no matched ``y < ybar`` and every ``y > ybar`` is matched unless the widths cap
  ``k`` at ``d_min`` (``y = ybar`` free: tied global minima).
``L = 2``: strict saddle iff an unmatched value exceeds a matched one, or ``k < d_min`` and an unmatched
``y > sqrt(lambda)``; otherwise global minimizer.
"""

from __future__ import annotations

from .roots import is_at
from .spectrum import Spectrum

KINDS = ("global_min", "local_min", "non_strict_saddle", "strict_saddle")
KIND_RANK = {k: i for i, k in enumerate(KINDS)}

ClassKey = tuple[tuple[int, ...], ...]


def matched_counts(key: ClassKey) -> list[int]:
    return [sum(counts) for counts in key]


def rule_kind(spec: Spectrum, key: ClassKey) -> tuple[str, str]:
    """``(kind, reason)`` of the class ``key`` by the rules of MATH.md §2."""
    matched = matched_counts(key)
    k = sum(matched)
    lowest_matched = max((b for b, m in enumerate(matched) if m > 0), default=None)
    for b, block in enumerate(spec.blocks):
        unmatched = block.size - matched[b]
        if unmatched > 0 and lowest_matched is not None and b < lowest_matched and block.value > 0:
            return "strict_saddle", (
                f"unmatched y={block.value:.6g} exceeds matched y={spec.blocks[lowest_matched].value:.6g}"
            )
    th = spec.thresholds
    if spec.depth == 2:
        if k < spec.d_min:
            for block, m in zip(spec.blocks, matched):
                if block.size > m and block.roots:
                    return "strict_saddle", f"k={k} < d_min={spec.d_min} and unmatched y={block.value:.6g} > sqrt(lambda)"
        return "global_min", "L=2: top singular values soft-thresholded"
    for block, counts in zip(spec.blocks, key):
        for root, n in zip(block.roots, counts):
            if n and root.label == "t1":
                return "strict_saddle", f"component at the small root t1 of y={block.value:.6g}"
    for block, counts in zip(spec.blocks, key):
        for root, n in zip(block.roots, counts):
            if n and root.label == "s*":
                return "non_strict_saddle", f"component at the double root s* (y={block.value:.6g} = y*)"
    for block, m in zip(spec.blocks, matched):
        if m and block.value < th.y_bar and not is_at(block.value, th.y_bar):
            return "local_min", f"top-k at t2; not global: matched y={block.value:.6g} < ybar={th.y_bar:.6g}"
    for block, m in zip(spec.blocks, matched):
        if block.value > th.y_bar and not is_at(block.value, th.y_bar) and m < block.size and k < spec.d_min:
            return "local_min", f"top-k at t2; not global: y={block.value:.6g} > ybar unmatched with k={k} < d_min={spec.d_min}"
    return "global_min", "top-k at t2 with every y > ybar matched (up to d_min)"
