"""The result of a GD run or a gradient-flow solve."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import xarray as xr

from .errors import InputError


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Recorded observables along a run.

    ``traj["loss"]`` is a numpy array over the recorded steps (``traj.steps``, GD) or times
    (``traj.times``, flow). ``traj.final`` is the last finite parameter pytree; ``traj.diverged_at``
    is ``None`` or the first step (GD) at which the state stopped being finite, or the first saved time
    (flow) the solve did not reach because the state blew up (loss not finite or norm above
    ``mfdyn.dynamics.DIVERGENCE_NORM``); records from that point on are dropped. A flow that ran out of
    solver steps is ``status = "unfinished: ..."``, not diverged.
    """

    problem: Any
    observables: dict[str, np.ndarray]
    final: Any
    diverged_at: int | float | None
    method: str  # "gd" or "flow"
    steps: np.ndarray | None = None
    times: np.ndarray | None = None
    status: str = "ok"  # "ok", "diverged", or the solver's failure reason for flow
    config: dict = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.observables[name]
        except KeyError:
            raise InputError(f"observable {name!r} was not recorded; recorded: {', '.join(self.observables)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.observables

    @property
    def axis(self) -> np.ndarray:
        return self.steps if self.method == "gd" else self.times

    @property
    def axis_name(self) -> str:
        return "step" if self.method == "gd" else "time"

    def to_xarray(self) -> xr.Dataset:
        """A Dataset with one variable per observable over ``step`` or ``time``; config in attrs."""
        dim = self.axis_name
        data_vars = {}
        for name, arr in self.observables.items():
            extra = [f"{name}_dim{k}" for k in range(arr.ndim - 1)]
            data_vars[name] = ((dim, *extra), arr)
        attrs = {k: (v if isinstance(v, (int, float, str)) else repr(v)) for k, v in self.config.items()}
        attrs.update(method=self.method, status=self.status,
                     diverged_at=-1 if self.diverged_at is None else self.diverged_at,
                     problem=type(self.problem).__name__)
        return xr.Dataset(data_vars, coords={dim: self.axis}, attrs=attrs)
