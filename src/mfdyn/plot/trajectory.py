"""Recorded observables of a GD run or a gradient-flow solve, one panel per observable.

The x axis is the GD step (linear) or the flow time (symlog when the saved times span several
decades, as :func:`mfdyn.dynamics.default_times` does). The y axis is logarithmic for positive
loss-like quantities; a run that diverged is marked by a vertical line at ``traj.diverged_at``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import InputError
from ..trajectory import Trajectory

# Observables that decay towards zero over many orders of magnitude when they are positive.
LOSS_LIKE = frozenset({"loss", "grad_norm", "imbalance_norm", "distance_to_target"})
# Any other positive observable whose values span at least this ratio is also drawn on a log axis.
LOG_SPAN = 100.0
# Observables left out of the default panels (flattened parameters are rarely worth a panel each).
HIDDEN_BY_DEFAULT = frozenset({"params"})


def use_log_scale(name: str, values: np.ndarray) -> bool:
    """True when every finite value is ``> 0`` and the observable is loss-like or spans ``LOG_SPAN``."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or np.any(finite <= 0):
        return False
    return name in LOSS_LIKE or finite.max() / finite.min() >= LOG_SPAN


def _component_labels(name: str, shape: tuple[int, ...]) -> list[str]:
    """``name`` for a scalar observable; ``name[i]`` / ``name[i][j]`` for each component otherwise."""
    if not shape:
        return [name]
    return [name + "".join(f"[{i}]" for i in idx) for idx in np.ndindex(*shape)]


def _plot_observable(ax: Axes, traj: Trajectory, name: str) -> None:
    values = np.asarray(traj[name], dtype=float)  # (records, *component_shape)
    x = np.asarray(traj.axis, dtype=float)
    ax.set_ylabel(name)
    if not values.shape[0]:  # (a run that diverged at its first step records nothing)
        ax.text(0.5, 0.5, "no records", transform=ax.transAxes, ha="center", va="center", color="0.4")
        return
    columns = values.reshape(values.shape[0], -1)  # (records, components)
    labels = _component_labels(name, values.shape[1:])
    for k, label in enumerate(labels):
        ax.plot(x, columns[:, k], label=label, lw=1.2)
    if use_log_scale(name, values):
        ax.set_yscale("log")
    ax.set_ylabel(name)
    if 1 < len(labels) <= 8:
        ax.legend(fontsize="x-small", loc="best")


def _set_time_axis(ax: Axes, traj: Trajectory) -> None:
    x = np.asarray(traj.axis, dtype=float)
    positive = x[x > 0]
    if traj.method == "flow" and positive.size and positive.max() / positive.min() >= LOG_SPAN:
        ax.set_xscale("symlog", linthresh=float(positive.min()))
        ax.set_xlim(float(x.min()), float(x.max()))  # symlog margins would otherwise reach negative times


def _mark_divergence(ax: Axes, traj: Trajectory) -> None:
    if traj.diverged_at is None:
        return
    ax.axvline(float(traj.diverged_at), color="tab:red", ls="--", lw=1.0,
               label=f"diverged at {traj.axis_name} {traj.diverged_at:g}")
    ax.legend(fontsize="x-small", loc="best")


def plot_trajectory(traj: Trajectory, names: Sequence[str] | None = None, ax: Any = None) -> Figure:
    """Plot the recorded observables ``names`` (default: all recorded but ``params``) against step or time.

    ``ax``: ``None`` draws one panel per observable in a new figure; one ``Axes`` draws every
    observable on it; a sequence of ``Axes`` (one per name) draws each observable on its own.
    Vector observables are drawn one line per component (``name[i]``). Returns the figure.
    """
    if not isinstance(traj, Trajectory):
        raise InputError(f"traj must be an mfdyn Trajectory, got {type(traj).__name__}")
    if names is None:
        names = tuple(n for n in traj.observables if n not in HIDDEN_BY_DEFAULT) or tuple(traj.observables)
    elif isinstance(names, str):
        names = (names,)
    names = tuple(names)
    for n in names:
        traj[n]  # raises InputError naming the observable if it was not recorded
    if not names:
        raise InputError("names must name at least one recorded observable, got none")

    if ax is None:
        fig = Figure(figsize=(6.4, 0.6 + 2.2 * len(names)), layout="constrained")
        axes = list(fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0])
    elif isinstance(ax, Axes):
        fig, axes = ax.figure, [ax] * len(names)
    else:
        axes = list(ax)
        if len(axes) != len(names) or not all(isinstance(a, Axes) for a in axes):
            raise InputError(f"ax must be None, one Axes, or {len(names)} Axes (one per name), got {len(axes)} items")
        fig = axes[0].figure

    for name, a in zip(names, axes):
        _plot_observable(a, traj, name)
    for a in dict.fromkeys(axes):  # each distinct Axes once
        _set_time_axis(a, traj)
        _mark_divergence(a, traj)
    axes[-1].set_xlabel(traj.axis_name)
    title = "gradient descent" if traj.method == "gd" else "gradient flow"
    axes[0].set_title(f"{title} on {type(traj.problem).__name__} ({traj.status})", fontsize="medium")
    return fig
