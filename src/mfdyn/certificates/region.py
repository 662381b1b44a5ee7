"""Certified initializations against the empirical basin of global minimizers.

A point is *certified* when it lies in the region (if given) and its state is below the certificate's
threshold. Soundness = fraction of certified points whose GD run converges to a global minimizer
(must be 1 for an admissible certificate; otherwise the certificate is not sound there); coverage =
certified points in the basin / points in the basin.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from .. import _validate as v
from ..errors import InputError
from .certificate import Certificate
from .verify import Region


@dataclasses.dataclass(frozen=True)
class CertifiedRegion:
    points: np.ndarray      # (N, n) flat coordinates
    shape: tuple[int, ...]  # grid shape (N = prod(shape)); (N,) for a point list
    state: np.ndarray       # (N,)
    certified: np.ndarray   # (N,) bool
    threshold: float | None

    def grid(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values).reshape(self.shape)

    def against(self, basin: Any) -> dict:
        """Soundness and coverage against a boolean basin mask of the same grid."""
        basin = np.asarray(basin, dtype=bool).reshape(-1)
        if basin.size != self.certified.size:
            raise InputError(f"basin has {basin.size} points, the certified grid {self.certified.size}")
        n_cert, n_basin = int(self.certified.sum()), int(basin.sum())
        hit = int((self.certified & basin).sum())
        return dict(certified=n_cert, basin=n_basin, certified_in_basin=hit,
                    soundness=hit / n_cert if n_cert else float("nan"),
                    coverage=hit / n_basin if n_basin else float("nan"),
                    sound=bool(n_cert and hit == n_cert))


def grid_points(grid: Any, n: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """A dict of 1-D axes (Cartesian, in coordinate order) or an ``(N, n)`` array -> points and shape."""
    if isinstance(grid, dict):
        axes = [np.asarray(a, dtype=float).reshape(-1) for a in grid.values()]
        if len(axes) != n or any(a.size == 0 for a in axes):
            raise InputError(f"grid must have {n} non-empty axes (one per coordinate), got {list(grid)}")
        pts = np.array(list(itertools.product(*axes)))
        return pts, tuple(a.size for a in axes)
    pts = np.asarray(grid, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != n:
        raise InputError(f"grid must be a dict of axes or an (N, {n}) array, got shape {pts.shape}")
    return pts, (pts.shape[0],)


def certified_region(cert: Certificate, problem: Any, eta: float, grid: Any, *, region: Region | None = None,
                     threshold: float | None = None) -> CertifiedRegion:
    """State of every grid point and whether it is certified (``state < threshold``, inside ``region``)."""
    v.problem(problem)
    pts, shape = grid_points(grid, problem.num_coordinates)
    state = np.asarray(cert.state(pts))
    thr = cert.threshold_for(problem, eta) if threshold is None else float(threshold)
    certified = np.isfinite(state) & (state < thr if thr is not None else True)
    if region is not None:
        certified &= region.contains(pts)
    return CertifiedRegion(pts, shape, state, np.asarray(certified, dtype=bool), thr)


def _sweep_function():
    try:
        from .. import sweep as sweep_module
    except ImportError as exc:
        raise InputError(f"the empirical basin needs mfdyn.sweep, which is not available ({exc})") from None
    return sweep_module if callable(sweep_module) else sweep_module.sweep


def empirical_basin(problem: Any, eta: float, a: Any, b: Any, steps: int, *, loss_tol: float = 1e-12) -> np.ndarray:
    """Boolean ``(len(a), len(b))``: GD from ``(a_i, b_j)`` converges to a global minimizer (scalar loss).

    Runs ``mfdyn.sweep`` over ``eta=[eta] x a x b``; a run is in the basin when its outcome is
    ``converged`` and its final loss is below ``loss_tol`` (so saddles such as ``(0, 0)`` are excluded).
    """
    ds = _sweep_function()(problem, {"eta": np.array([float(eta)]), "a": np.asarray(a, float),
                                     "b": np.asarray(b, float)}, steps, progress=False)
    outcome = np.asarray(ds["outcome"].isel(eta=0)).astype(str)
    final_loss = np.asarray(ds["final_loss"].isel(eta=0), dtype=float)
    return (outcome == "converged") & (final_loss <= loss_tol)
