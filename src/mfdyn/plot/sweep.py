"""Figures of sweep results: phase diagrams, bifurcation diagrams, heatmaps.

All three take the Dataset returned by :func:`mfdyn.sweep` / :func:`mfdyn.open_sweep`; dimensions
other than the plotted ones must be reduced first (``ds.sel(...)`` / ``ds.isel(...)``; a dimension
of one value is taken at it), except in :func:`bifurcation`, which plots every remaining point. The
default titles name the axes held at one value. Where ``x`` and ``y`` vary together along one
zipped dimension (:func:`mfdyn.zipped`, e.g. random initial points), the phase diagram and the heatmap
draw one marker per point instead of grid cells.
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
OVERLAY_COLOR_ON_POINTS = "#e7298a"
NEVER = {"steps_to_converge": -1, "diverged_at": -1}  # the value that means "no such step": left blank


def _dataset(ds: Any) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset):
        raise InputError(f"ds must be the xarray.Dataset of a sweep (mfdyn.sweep / mfdyn.open_sweep), got {type(ds).__name__}")
    return ds


def _coord(ds: xr.Dataset, name: str) -> tuple[str, np.ndarray]:
    """The dimension of the axis ``name`` and its values."""
    _dataset(ds)
    if name not in ds.coords:
        raise InputError(f"{name!r} is not an axis of this sweep; axes: {', '.join(map(str, ds.coords))}")
    if not ds[name].dims:
        raise InputError(f"{name!r} was selected at one value ({name} = {ds[name].values}): it cannot be a plot axis")
    return ds[name].dims[0], np.asarray(ds[name].values)


def other_dimensions(ds: xr.Dataset, var: str, x: str, y: str) -> list[str]:
    """The dimensions of ``var`` besides those of the axes ``x`` and ``y`` that have more than one
    value: a plot of ``var`` over ``(x, y)`` needs one of their values chosen first. (A dimension of
    one value is taken at it.)"""
    if var not in _dataset(ds).data_vars:
        raise InputError(f"{var!r} is not a variable of this sweep; variables: {', '.join(map(str, ds.data_vars))}")
    if x == y:
        raise InputError(f"x and y must be two different axes, got {x!r} for both")
    shown = (_coord(ds, x)[0], _coord(ds, y)[0])
    return [str(d) for d in ds[var].dims if d not in shown and ds.sizes[d] > 1]


def _plane(ds: xr.Dataset, var: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``var`` over the ``(y, x)`` plane, as ``(xs, ys, values[ny, nx])``; or, where ``x`` and ``y``
    are axes of one zipped dimension, ``(xs, ys, values)`` all along that dimension (scattered points).
    Other dimensions must have one value (:func:`other_dimensions`)."""
    left = other_dimensions(ds, var, x, y)
    if left:
        raise InputError(f"reduce the other dimensions first, e.g. ds.isel({left[0]}=0); left: "
                         + ", ".join(f"{d} ({ds.sizes[d]} values)" for d in left))
    xdim, xs = _coord(ds, x)
    ydim, ys = _coord(ds, y)
    da = ds[var]
    da = da.isel({d: 0 for d in da.dims if d not in (xdim, ydim)})
    if xdim == ydim:
        return xs, ys, da.values
    return xs, ys, da.transpose(ydim, xdim).values


def held_values(ds: xr.Dataset, shown: tuple[str, ...]) -> str:
    """The sweep's axes held at one value in a figure of the axes ``shown`` (those selected with
    ``ds.sel`` / ``ds.isel``, and axes of one value), as ``"b = 1.2, momentum = 0"``: for its title."""
    held = []
    for name, coord in ds.coords.items():
        if name in shown or coord.size != 1 or not np.issubdtype(coord.dtype, np.number):
            continue
        value = coord.values.reshape(-1)[0]
        held.append(f"{name} = {value:.4g}" if np.issubdtype(coord.dtype, np.floating) else f"{name} = {value}")
    return ", ".join(held)


def _titled(default: str, ds: xr.Dataset, shown: tuple[str, ...]) -> str:
    """``default``, followed by the values held fixed (:func:`held_values`) in parentheses if any."""
    held = held_values(ds, shown)
    return f"{default} ({held})" if held else default


def _outcome_codes(labels: np.ndarray) -> np.ndarray:
    """Outcome labels as their indices in ``OUTCOMES``."""
    codes = np.full(labels.shape, -1, dtype=np.int8)
    for code, outcome in enumerate(OUTCOMES):
        codes[labels == outcome] = code
    return codes


def _marker_size(n: int) -> float:
    """Scatter marker area (points^2) for ``n`` points: about the default axes' area (some 60,000
    points^2) shared among them, between 0.5 and 36."""
    return float(np.clip(60000.0 / max(n, 1), 0.5, 36.0))


def _frame(ax: Any, xs: np.ndarray, ys: np.ndarray, scattered: bool) -> None:
    """Axis limits on the data (the cells' edges, or the points with a 2% margin), whatever the overlays."""
    for setter, v in ((ax.set_xlim, xs), (ax.set_ylim, ys)):
        if not scattered:
            edges = _edges(v)
            setter(float(np.min(edges)), float(np.max(edges)))  # (ascending, whatever the axis order)
            continue
        lo, hi = float(np.min(v)), float(np.max(v))
        pad = 0.02 * (hi - lo) or 0.5
        setter(lo - pad, hi + pad)


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
    codes = _outcome_codes(labels)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4.5))
    cmap = ListedColormap([OUTCOME_COLORS[o] for o in OUTCOMES])
    scattered = codes.ndim == 1
    if scattered:  # (x and y zipped: one marker per point)
        ax.scatter(xs, ys, c=codes, cmap=cmap, vmin=-0.5, vmax=len(OUTCOMES) - 0.5, s=_marker_size(codes.size),
                   linewidths=0)
    else:
        ax.pcolormesh(_edges(xs), _edges(ys), codes, cmap=cmap, vmin=-0.5, vmax=len(OUTCOMES) - 0.5, shading="flat")
    if annotate_period and "period" in ds and (codes.size <= 400 if scattered else xs.size <= 40 and ys.size <= 40):
        _, _, periods = _plane(ds, "period", x, y)
        for index in zip(*np.nonzero(periods)):
            i, j = (index[0], index[0]) if scattered else index
            ax.text(xs[j], ys[i], str(periods[index]), ha="center", va="center", fontsize=7)
    line = OVERLAY_COLOR_ON_POINTS if scattered else "w"  # (white shows on cells, not between points)
    for label, value in (overlays or {}).items():
        if callable(value):
            grid = np.linspace(xs.min(), xs.max(), 400)
            ax.plot(grid, value(grid), color=line, ls="--", lw=1.2, label=label)
        else:
            ax.axvline(float(value), color=line, ls="--", lw=1.2, label=label)
    _frame(ax, xs, ys, scattered)
    present = [o for o in OUTCOMES if (labels == o).any()]
    handles = [Patch(color=OUTCOME_COLORS[o], label=o) for o in present]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="best", framealpha=0.8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or _titled("GD outcome", ds, (x, y)))
    return fig


def bifurcation(ds: xr.Dataset, x: str = "eta", value: str | int | Callable = "loss", *, ax: Any = None,
                title: str | None = None, markersize: float = 0.6):
    """Attractor values against ``x`` from the recorded orbits (``keep_orbit > 0``).

    ``value``: ``"loss"`` (``orbit_loss``), an int (that flat coordinate of the orbit states), or a
    callable ``f(orbit) -> values`` on the orbit array (``(..., orbit_step, coord)``), e.g.
    ``lambda o: o[..., 0] * o[..., 1]`` for ``ab`` in the scalar family. Diverged points are skipped.
    """
    if "orbit" not in _dataset(ds):
        raise InputError("this sweep has no orbits: run it with keep_orbit > 0")
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"value must be 'loss', a coordinate index or a callable, got {value!r}")
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
    ax.set_title(title or _titled(f"attractor values ({ds.sizes['orbit_step']} last states per point)", ds, (x,)))
    return fig


def heatmap(ds: xr.Dataset, var: str, x: str = "eta", y: str = "a", *, ax: Any = None, log: bool = False,
            cmap: str = "viridis", title: str | None = None):
    """A numeric variable (``final_loss``, ``steps_to_converge``, ``final_sharpness``, ...) over ``(x, y)``;
    ``log=True`` plots ``log10 |var|``. Points where ``steps_to_converge`` or ``diverged_at`` is -1
    (never converged, never diverged) are left blank, and the colour bar says so."""
    xs, ys, vals = _plane(ds, var, x, y)
    if not np.issubdtype(np.asarray(vals).dtype, np.number):
        raise InputError(f"heatmap needs a numeric variable; {var!r} is not (use phase_diagram for outcomes)")
    vals = np.asarray(vals, dtype=float)
    never = var in NEVER and bool((vals == NEVER[var]).any())
    if never:
        vals[vals == NEVER[var]] = np.nan
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.log10(np.abs(vals))
        vals[~np.isfinite(vals)] = np.nan
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4.5))
    if vals.ndim == 1:  # (x and y zipped: one marker per point)
        mesh = ax.scatter(xs, ys, c=vals, cmap=cmap, s=_marker_size(vals.size), linewidths=0, plotnonfinite=True)
    else:
        mesh = ax.pcolormesh(_edges(xs), _edges(ys), vals, cmap=cmap, shading="flat")
    _frame(ax, xs, ys, vals.ndim == 1)
    label = f"log10 |{var}|" if log else var
    fig.colorbar(mesh, ax=ax, label=f"{label} (blank: never)" if never else label)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or _titled(var, ds, (x, y)))
    return fig
