"""Figures of sweep results: phase diagrams, bifurcation diagrams, heatmaps.

All three take the Dataset returned by :func:`mfdyn.sweep` / :func:`mfdyn.open_sweep`; dimensions
other than the plotted ones must be reduced first (``ds.sel(...)`` / ``ds.isel(...)``), except in
:func:`bifurcation`, which plots every remaining point.
"""

from __future__ import annotations

from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..errors import InputError
from ..sweep.classify import OUTCOMES

OUTCOME_COLORS = {"unfinished": "#bdbdbd", "converged": "#2c7bb6", "periodic": "#fdae61",
                  "bounded": "#d7191c", "diverged": "#1a1a1a"}


def _coord(ds: xr.Dataset, name: str) -> tuple[str, np.ndarray]:
    if name not in ds.coords:
        raise InputError(f"{name!r} is not an axis of this sweep; axes: {', '.join(map(str, ds.coords))}")
    return ds[name].dims[0], np.asarray(ds[name].values)


def _plane(ds: xr.Dataset, var: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``var`` over the ``(y, x)`` plane, as ``(xs, ys, values[ny, nx])``."""
    if var not in ds:
        raise InputError(f"{var!r} is not a variable of this sweep; variables: {', '.join(map(str, ds.data_vars))}")
    xdim, xs = _coord(ds, x)
    ydim, ys = _coord(ds, y)
    if xdim == ydim:
        raise InputError(f"x={x!r} and y={y!r} vary together (zipped); choose axes of two dimensions")
    da = ds[var]
    extra = [d for d in da.dims if d not in (xdim, ydim)]
    if extra:
        raise InputError(f"reduce the other dimensions first, e.g. ds.isel({extra[0]}=0); left: {', '.join(extra)}")
    return xs, ys, da.transpose(ydim, xdim).values


def _edges(v: np.ndarray) -> np.ndarray:
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])


def phase_diagram(ds: xr.Dataset, x: str = "eta", y: str = "a", *, ax: Any = None, annotate_period: bool = True,
                  overlays: dict[str, Any] | None = None, title: str | None = None):
    """Outcome of every grid point as a colour over the ``(x, y)`` plane.

    Periodic cells are labelled with their period when the grid is small (<= 40 x 40) and
    ``annotate_period``. ``overlays``: ``{label: value}`` draws a vertical line at ``x = value``
    (e.g. ``{"eta_c = 1/y": 1.0}``), ``{label: callable}`` plots ``y = f(x)``.
    Returns the matplotlib figure.
    """
    xs, ys, labels = _plane(ds, "outcome", x, y)
    codes = np.vectorize(OUTCOMES.index)(labels.astype(str))
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4.5))
    cmap = ListedColormap([OUTCOME_COLORS[o] for o in OUTCOMES])
    ax.pcolormesh(_edges(xs), _edges(ys), codes, cmap=cmap, vmin=-0.5, vmax=len(OUTCOMES) - 0.5, shading="flat")
    if annotate_period and "period" in ds and xs.size <= 40 and ys.size <= 40:
        _, _, periods = _plane(ds, "period", x, y)
        for i, j in zip(*np.nonzero(periods)):
            ax.text(xs[j], ys[i], str(periods[i, j]), ha="center", va="center", fontsize=7)
    for label, value in (overlays or {}).items():
        if callable(value):
            grid = np.linspace(xs.min(), xs.max(), 400)
            ax.plot(grid, value(grid), "w--", lw=1.2, label=label)
        else:
            ax.axvline(float(value), color="w", ls="--", lw=1.2, label=label)
    present = [o for o in OUTCOMES if (labels == o).any()]
    handles = [Patch(color=OUTCOME_COLORS[o], label=o) for o in present]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="best", framealpha=0.8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or "GD outcome")
    return fig


def bifurcation(ds: xr.Dataset, x: str = "eta", value: str | int | Callable = "loss", *, ax: Any = None,
                title: str | None = None, markersize: float = 0.6):
    """Attractor values against ``x`` from the recorded orbits (``keep_orbit > 0``).

    ``value``: ``"loss"`` (``orbit_loss``), an int (that flat coordinate of the orbit states), or a
    callable ``f(orbit) -> values`` on the orbit array (``(..., orbit_step, coord)``), e.g.
    ``lambda o: o[..., 0] * o[..., 1]`` for ``ab`` in the scalar family. Diverged points are skipped.
    """
    if "orbit" not in ds:
        raise InputError("this sweep has no orbits: run it with keep_orbit > 0")
    xdim, _ = _coord(ds, x)
    if value == "loss":
        vals = ds["orbit_loss"]
    elif isinstance(value, (int, np.integer)):
        if not 0 <= value < ds.sizes["coord"]:
            raise InputError(f"value must be a coordinate index in [0, {ds.sizes['coord']}), got {value}")
        vals = ds["orbit"].isel(coord=int(value))
    elif callable(value):
        vals = xr.DataArray(np.asarray(value(ds["orbit"].values)), dims=ds["orbit_loss"].dims)
    else:
        raise InputError(f"value must be 'loss', a coordinate index or a callable, got {value!r}")
    xvals = ds[x].broadcast_like(vals)
    keep = np.isfinite(vals.values)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4.5))
    ax.plot(xvals.values[keep], vals.values[keep], color="k", markersize=markersize, alpha=0.6, marker=".",
            ls="none")
    ax.set_xlabel(x)
    ax.set_ylabel(value if isinstance(value, str) else f"coord {value}" if isinstance(value, (int, np.integer)) else "f(orbit)")
    ax.set_title(title or f"attractor values ({ds.sizes['orbit_step']} last states per point)")
    return fig


def heatmap(ds: xr.Dataset, var: str, x: str = "eta", y: str = "a", *, ax: Any = None, log: bool = False,
            cmap: str = "viridis", title: str | None = None):
    """A numeric variable (``final_loss``, ``steps_to_converge``, ``final_sharpness``, ...) over ``(x, y)``;
    ``log=True`` plots ``log10 |var|``."""
    xs, ys, vals = _plane(ds, var, x, y)
    if not np.issubdtype(np.asarray(vals).dtype, np.number):
        raise InputError(f"heatmap needs a numeric variable; {var!r} is not (use phase_diagram for outcomes)")
    vals = np.asarray(vals, dtype=float)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.log10(np.abs(vals))
        vals[~np.isfinite(vals)] = np.nan
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4.5))
    mesh = ax.pcolormesh(_edges(xs), _edges(ys), vals, cmap=cmap, shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"log10 |{var}|" if log else var)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or var)
    return fig
