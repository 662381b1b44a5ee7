"""Sharpness along GD trajectories and the edge-of-stability picture (sharpness against ``2/eta``).

Above the critical step size no minimizer is GD-stable (``eta * sharpness < 2`` fails everywhere on the
minimizer set), and bounded trajectories settle where the sharpness hovers around ``2/eta``: on the
balanced 2-cycle the two points have sharpness on both sides of ``2/eta``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import _validate as v
from ..dynamics import gd
from ..trajectory import Trajectory


@dataclasses.dataclass(frozen=True)
class EdgeOfStability:
    """Tail statistics of a sharpness series against the stability threshold ``2/eta``."""

    eta: float
    threshold: float
    tail_min: float
    tail_max: float
    tail_mean: float
    fraction_above: float  # fraction of tail steps with sharpness > 2/eta

    @property
    def straddles(self) -> bool:
        """Sharpness oscillates around ``2/eta``: the tail has values on both sides."""
        return self.tail_min < self.threshold < self.tail_max

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), straddles=self.straddles)


def sharpness_trajectory(problem: Any, params0: Any, eta: float, steps: int, every: int = 1) -> Trajectory:
    """GD from ``params0`` recording ``sharpness``, ``loss`` and ``params`` every ``every`` steps."""
    return gd(problem, params0, eta, steps, record=("sharpness", "loss", "params"), every=every)


def edge_of_stability(sharpness: Any, eta: float, tail: float = 0.25) -> EdgeOfStability:
    """Summarize the last ``tail`` fraction of a sharpness series against ``2/eta``."""
    from ..errors import InputError

    v.finite_scalar("eta", eta, positive=True)
    v.finite_scalar("tail", tail, positive=True)
    if tail > 1:
        raise InputError(f"tail must be a fraction in (0, 1], got {tail}")
    series = np.asarray(v.finite_array("sharpness", sharpness, allow_complex=False), dtype=float)
    if series.ndim != 1 or series.size < 2:
        raise InputError(f"sharpness must be a 1-D series of length >= 2, got shape {series.shape}")
    last = series[-max(2, int(round(tail * series.size))):]
    threshold = 2.0 / eta
    return EdgeOfStability(float(eta), threshold, float(last.min()), float(last.max()), float(last.mean()),
                           float(np.mean(last > threshold)))
