"""Concrete parameters of a critical point class (MATH.md §2).

For components ``i = 1..k`` with layer singular values ``s_i`` carrying singular values ``y_{pi(i)}``:

    W_1 = lambda_1^{-1/2} E_{d_1} diag(s) V_pi^T,   W_l = lambda_l^{-1/2} E_{d_l} diag(s) E_{d_{l-1}}^T,
    W_L = lambda_L^{-1/2} U_pi diag(s) E_{d_{L-1}}^T,

``E_d`` the first ``k`` columns of the ``d x d`` identity, ``U_pi``, ``V_pi`` the matched singular vectors of
``Y``. Then ``sqrt(lambda_l) W_l`` share singular values ``s`` (balanced) and ``P = lambda^{-1/2} U_pi diag(s^L) V_pi^T``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .rules import ClassKey
from .spectrum import Spectrum


@dataclasses.dataclass(frozen=True)
class Components:
    """The matched components of a class: Y index, block, root label and layer singular value each."""

    matching: tuple[int, ...]
    blocks: tuple[int, ...]
    labels: tuple[str, ...]
    sigma: np.ndarray


def components(spec: Spectrum, key: ClassKey) -> Components:
    """Components in block order (descending ``y``), larger roots first inside a block.

    Inside a tied block the matched singular vectors are the block's first ones (any choice is
    equivalent by the block's rotation symmetry)."""
    matching, blocks, labels, sigma = [], [], [], []
    for b, (block, counts) in enumerate(zip(spec.blocks, key)):
        slot = 0
        for j in reversed(range(len(counts))):
            for _ in range(counts[j]):
                matching.append(block.indices[slot])
                blocks.append(b)
                labels.append(block.roots[j].label)
                sigma.append(block.roots[j].sigma)
                slot += 1
    return Components(tuple(matching), tuple(blocks), tuple(labels), np.asarray(sigma, dtype=float))


def layers(spec: Spectrum, matching: tuple[int, ...], sigma: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(W_1, ..., W_L)`` for matched singular-vector indices and layer singular values (module docstring)."""
    k = len(matching)
    widths, wd, L = spec.widths, spec.weight_decay, spec.depth
    idx = list(matching)
    out = []
    for l in range(1, L + 1):  # L >= 2: the first and last layers are distinct
        W = np.zeros((widths[l], widths[l - 1]))
        if k and l == 1:
            W[:k, :] = sigma[:, None] * spec.V[:, idx].T
        elif k and l == L:
            W[:, :k] = spec.U[:, idx] * sigma[None, :]
        elif k:
            W[np.arange(k), np.arange(k)] = sigma
        out.append(W / np.sqrt(wd[l - 1]))
    return tuple(out)

def representative(spec: Spectrum, key: ClassKey) -> tuple[np.ndarray, ...]:
    comp = components(spec, key)
    return layers(spec, comp.matching, comp.sigma)
