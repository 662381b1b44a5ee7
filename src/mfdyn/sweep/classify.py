"""Outcome labels of swept trajectories and their int8 codes (the storage format).

- ``converged``: the convergence test held (``steps_to_converge >= 0``);
- ``diverged``: the state became non-finite (``diverged_at >= 0``);
- ``periodic``: finite, not converged, ``z_T = z_{T-k}`` to relative 1e-9 for a ``k`` in
  ``2..max_period`` (``period = k``, the smallest such);
- ``unfinished``: finite, not converged, but ``z_T = z_{T-1}`` to relative 1e-9 (still creeping
  towards a fixed point when the steps ran out), or not computed yet (a partial store);
- ``bounded``: finite, not converged, not periodic within ``max_period``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OUTCOMES: tuple[str, ...] = ("unfinished", "converged", "periodic", "bounded", "diverged")
CODES = {name: np.int8(i) for i, name in enumerate(OUTCOMES)}
UNFINISHED = CODES["unfinished"]  # also the fill value of a store: chunks not computed yet


def classify(diverged_at: Any, steps_to_converge: Any, period: Any, xp: Any = np) -> tuple[Any, Any]:
    """Outcome codes (int8) and periods (0 unless periodic, int32) from the kernel's raw results:
    NumPy arrays, or ``jax.numpy`` ones with ``xp=jax.numpy`` (the kernel classifies its rows)."""
    code = xp.where(period >= 2, CODES["periodic"], xp.where(period == 1, UNFINISHED, CODES["bounded"]))
    code = xp.where(steps_to_converge >= 0, CODES["converged"], code)
    code = xp.where(diverged_at >= 0, CODES["diverged"], code).astype(xp.int8)
    return code, xp.where(code == CODES["periodic"], period, 0).astype(xp.int32)


LABELS = np.asarray(OUTCOMES)  # code -> label


def decode(codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int8 codes to label strings (written into ``out`` if given: a sweep decodes each chunk into
    its rows of the result, with no temporary of 40 bytes a point)."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= len(OUTCOMES)):
        raise ValueError(f"invalid outcome codes in {np.unique(codes).tolist()}")
    # (int8 indices taken as they are: no conversion to intp; the range is checked above, so
    # "clip" never clips, and NumPy writes ``out`` directly: with the default "raise" it buffers it)
    return np.take(LABELS, codes, out=out, mode="clip")


def encode(labels: np.ndarray) -> np.ndarray:
    """Label strings to int8 codes."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape, dtype=np.int8)
    for name, code in CODES.items():
        out[labels == name] = code
    return out
