"""Fitted asymptotics of the symmetric flow: O(1/t) constants and exponential rates (MATH.md §3).

Series along a trajectory (``Z = X X^T``, ``Z_inf = V diag(Lambda1, 0) V^T``, which is ``M`` for PSD ``M``):

- ``S_2 = ||S||_2``; ``residual_2 = ||Z - Z_inf||_2``; ``residual_F = ||Z - Z_inf||_F``;
- ``loss_gap = f - f* = 1/4 ||Z - M_+||_F^2 + 1/2 tr(Z M_-)`` (``M_- = M_+ - M``; exact for ``r >= r0``, no
  cancellation, equal to ``f`` for PSD ``M``);
- ``K_F = ||K||_F`` and ``P1_gap = ||P1 - Lambda1||_F``.

[derived] predictions for ``r > r0`` with ``k = min(r - r0, n0)`` (``n0 = dim null M``; for PSD ``M``
this is MATH.md's ``k = min(r - r0, n - r0)``) and ``k >= 1``: ``t S_2 -> 1/2``, ``t residual_2 -> 1/2``,
``t residual_F -> sqrt(k)/2``, ``t^2 loss_gap -> k/16``; with ``k = 0`` all four decay exponentially
(limit 0). ``||K||_F <= exp(-lambda_min(Lambda1) t) ||K0||_F``, so its fitted rate is at least
``lambda_min(Lambda1)``. ``P1 - Lambda1 = -P1 (Q - Lambda1^{-1}) Lambda1`` with
``Q - Lambda1^{-1} = O(t e^{-2 lambda_min t})``, so its rate tends to ``2 lambda_min(Lambda1)`` (derived
here from the closed forms; reported, not a MATH.md fact).

Fits: a power-law constant ``t^a g(t)`` is reported at the last time and extrapolated by the least-squares
line ``t^a g = c0 + c1 / t`` over the last ``tail_decades`` decades (corrections are O(1/t)); the log-log
slope of ``g`` over the same interval is reported with its rms residual. An exponential rate is the
negative slope of ``log g`` against ``t`` over the window where ``g`` has fallen below 1e-2 of its peak
and is still above ``floor`` times the peak (below that, numerical noise of the data dominates).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import _validate as v
from ..errors import InputError
from ..trajectory import Trajectory
from .cascade import cascade_factors
from .closed_form import CascadeSolution, cascade_closed_form
from .spectrum import Regime, Spectrum, regime, require_rank_at_least_r0, spectrum

POWER_SERIES = {"S_2": 1, "residual_2": 1, "residual_F": 1, "loss_gap": 2}
SERIES = (*POWER_SERIES, "K_F", "P1_gap")  # what fit_rates fits
LABELS = {
    "S_2": "t ||S||_2", "residual_2": "t ||XX^T - M_+||_2", "residual_F": "t ||XX^T - M_+||_F",
    "loss_gap": "t^2 (f - f*)", "K_F": "rate of ||K||_F", "P1_gap": "rate of ||P1 - Lambda1||_F",
}


@dataclasses.dataclass(frozen=True)
class PowerFit:
    """``t^power g(t)`` for a series ``g`` that decays like ``1/t^power``."""

    name: str
    power: int
    at_end: float  # t^power g at the last time
    extrapolated: float  # c0 of t^power g = c0 + c1/t over the interval
    predicted: float
    slope: float  # log-log slope of g over the interval (expected -power when predicted > 0)
    interval: tuple[float, float]
    points: int
    residual: float  # rms residual of the log-log line


@dataclasses.dataclass(frozen=True)
class ExpFit:
    """``g(t) ~ C exp(-rate t)`` over ``interval``."""

    name: str
    rate: float
    reference: float  # lambda_min(Lambda1) for K (a lower bound), 2 lambda_min(Lambda1) for P1 (derived limit)
    interval: tuple[float, float]
    points: int
    residual: float  # rms residual of log g about the line


@dataclasses.dataclass(frozen=True)
class Rates:
    regime: Regime
    k: int
    times: np.ndarray
    series: dict[str, np.ndarray]
    constants: dict[str, PowerFit]
    exponential: dict[str, ExpFit]

    def as_dict(self) -> dict:
        return dict(
            regime=self.regime._asdict(), k=self.k,
            constants={n: _clean(dataclasses.asdict(f)) for n, f in self.constants.items()},
            exponential={n: _clean(dataclasses.asdict(f)) for n, f in self.exponential.items()},
        )


def _clean(d: dict) -> dict:
    out = {}
    for key, val in d.items():
        if isinstance(val, tuple):
            val = [None if not np.isfinite(x) else float(x) for x in val]
        elif isinstance(val, float) and not np.isfinite(val):
            val = None
        out[key] = val
    return out


def excess_rank(spec: Spectrum) -> int:
    """``k = min(r - r0, n0)``: the number of directions of ``S`` that decay like ``1/(2t)`` (0 if ``r <= r0``)."""
    return max(0, min(spec.rank - spec.r0, spec.n0))


def predicted_constants(spec: Spectrum) -> dict[str, float]:
    k = excess_rank(spec)
    half = 0.5 if k else 0.0
    return {"S_2": half, "residual_2": half, "residual_F": np.sqrt(k) / 2, "loss_gap": k / 16}


def _residual_series(spec: Spectrum, R: np.ndarray, Z: np.ndarray) -> dict[str, np.ndarray]:
    """Norms of ``R = Z - Z_inf`` (in the eigenbasis; norms are invariant) and the loss gap."""
    lam = spec.eigenvalues
    neg = np.where(lam < 0, -lam, 0.0)  # M_- in the eigenbasis
    diagZ = np.einsum("...ii->...i", Z)  # (T, n), diagonal of V^T Z V
    return {
        "residual_2": np.linalg.norm(R, 2, axis=(-2, -1)),
        "residual_F": np.linalg.norm(R, "fro", axis=(-2, -1)),
        "loss_gap": 0.25 * np.sum(R**2, axis=(-2, -1)) + 0.5 * diagZ @ neg,
    }


def series_of_params(problem: Any, Xs: np.ndarray) -> dict[str, np.ndarray]:
    """The series of the module docstring for points ``Xs: (T, n, r)``."""
    spec = spectrum(problem)
    Xs = np.asarray(Xs, dtype=float)
    Y = np.einsum("ji,tjk->tik", spec.vectors, Xs)  # (T, n, r), V^T X
    Z = Y @ np.swapaxes(Y, -1, -2)  # V^T X X^T V
    R = Z - np.diag(np.concatenate([spec.lam1, np.zeros(spec.n - spec.p)]))
    out = _residual_series(spec, R, Z)
    S2, KF, P1gap = [], [], []
    for X in Xs:
        F, K, P1, _ = cascade_factors(problem, X, spec=spec)
        S2.append(np.linalg.norm(F, 2) ** 2 if F.size else 0.0)
        KF.append(np.linalg.norm(K))
        P1gap.append(np.linalg.norm(P1 - np.diag(spec.lam1)))
    return {"S_2": np.array(S2), **out, "K_F": np.array(KF), "P1_gap": np.array(P1gap)}


def series_of_solution(problem: Any, sol: CascadeSolution) -> dict[str, np.ndarray]:
    """The series from a closed-form cascade solution (``P1 - Lambda1`` without cancellation)."""
    spec = spectrum(problem)
    KP1 = sol.K @ sol.P1
    KT = np.swapaxes(sol.K, -1, -2)
    top = np.concatenate([sol.P1_gap, np.swapaxes(KP1, -1, -2)], axis=-1)
    bottom = np.concatenate([KP1, sol.S + KP1 @ KT], axis=-1)
    R = np.concatenate([top, bottom], axis=-2)  # V^T (Z - Z_inf) V
    Z = R + np.diag(np.concatenate([spec.lam1, np.zeros(spec.n - spec.p)]))
    S2 = np.linalg.eigvalsh(sol.S)[..., -1] if sol.S.shape[-1] else np.zeros(sol.times.size)
    return {"S_2": np.maximum(S2, 0.0), **_residual_series(spec, R, Z),
            "K_F": np.linalg.norm(sol.K, axis=(-2, -1)), "P1_gap": np.linalg.norm(sol.P1_gap, axis=(-2, -1))}


def _series(times: Any, g: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(times, g)`` as float arrays after checking them: finite, 1-D, of one length, the times
    strictly increasing (``g`` may hold NaN where a series is not defined)."""
    times = np.asarray(v.finite_array("times", times, ndim=1, allow_complex=False), dtype=float)
    try:
        g = np.asarray(g, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"series {name!r} must be numeric, got {v.describe(g)}") from None
    if g.ndim != 1 or g.shape != times.shape:
        raise InputError(f"series {name!r} must be 1-D with one value per time ({times.size}), got shape {g.shape}")
    if times.size == 0 or np.any(np.diff(times) <= 0):
        raise InputError(f"times must be strictly increasing and not empty, got {v.describe(times)}")
    return times, g


def power_fit(name: str, times: np.ndarray, g: np.ndarray, power: int, predicted: float, tail_decades: float) -> PowerFit:
    """The constant ``c`` of ``g(t) ~ c / t^power`` over the last ``tail_decades`` decades of ``times``
    (least squares of ``t^power g = c0 + c1 / t``), and the log-log slope of ``g`` there."""
    times, g = _series(times, g, name)
    power = v.integer("power", power, minimum=0)
    v.finite_scalar("tail_decades", tail_decades, positive=True)
    t_end = float(times[-1])
    sel = (times >= t_end * 10.0 ** (-tail_decades)) & (times > 0)
    at_end = float(t_end**power * g[-1])
    t, y = times[sel], g[sel]
    nan = float("nan")
    if t.size < 3:
        return PowerFit(name, power, at_end, nan, predicted, nan, (nan, nan), int(t.size), nan)
    scaled = t**power * y
    c0, _ = np.linalg.lstsq(np.stack([np.ones_like(t), 1 / t], 1), scaled, rcond=None)[0]
    pos = y > 0
    if pos.sum() >= 3:
        A = np.stack([np.ones(pos.sum()), np.log(t[pos])], 1)
        coef, *_ = np.linalg.lstsq(A, np.log(y[pos]), rcond=None)
        slope, resid = float(coef[1]), float(np.sqrt(np.mean((A @ coef - np.log(y[pos])) ** 2)))
    else:
        slope, resid = nan, nan
    return PowerFit(name, power, at_end, float(c0), predicted, slope, (float(t[0]), float(t[-1])), int(t.size), resid)


def exponential_fit(name: str, times: np.ndarray, g: np.ndarray, reference: float, floor: float) -> ExpFit:
    """The rate ``c`` of ``g(t) ~ e^{-c t}`` (least squares of ``log g``) from where ``g`` has fallen to
    1e-2 of its peak until it falls below ``floor`` times the peak; ``reference`` is the predicted rate."""
    times, g = _series(times, g, name)
    if not 0 < float(v.finite_scalar("floor", floor)) < 1:
        raise InputError(f"floor must be in (0, 1), got {floor}")
    nan = float("nan")
    if g.size == 0 or not np.any(g > 0):
        return ExpFit(name, nan, reference, (nan, nan), 0, nan)
    peak_i = int(np.argmax(g))
    peak = g[peak_i]
    after = np.arange(g.size) > peak_i
    below = np.nonzero(after & (g <= 1e-2 * peak))[0]
    start = int(below[0]) if below.size else g.size
    sel = np.zeros(g.size, bool)
    sel[start:] = True
    sel &= g >= floor * peak
    stop = np.nonzero(~sel[start:])[0]
    if stop.size:  # the window ends at the first point under the floor
        sel[start + int(stop[0]):] = False
    t, y = times[sel], g[sel]
    if t.size < 3:
        return ExpFit(name, nan, reference, (nan, nan), int(t.size), nan)
    A = np.stack([np.ones_like(t), t], 1)
    coef, *_ = np.linalg.lstsq(A, np.log(y), rcond=None)
    resid = float(np.sqrt(np.mean((A @ coef - np.log(y)) ** 2)))
    return ExpFit(name, float(-coef[1]), reference, (float(t[0]), float(t[-1])), int(t.size), resid)


def fit_rates(problem: Any, times: Any, series: dict[str, np.ndarray], *, tail_decades: float = 2.0,
              floor: float = 1e-8) -> Rates:
    """Fit the constants and rates of the module docstring to ``series`` over ``times``."""
    spec = spectrum(problem)
    require_rank_at_least_r0(spec, "the O(1/t) rate analysis",
                             f"under-parameterized, X X^T converges to the best rank-{spec.rank} approximation and "
                             f"X X^T - M does not vanish")
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size < 2 or np.any(np.diff(times) <= 0):
        raise InputError(f"times must be a strictly increasing 1-D array with at least 2 entries, got shape {times.shape}")
    if not 0 < float(v.finite_scalar("floor", floor)) < 1:
        raise InputError(f"floor must be in (0, 1), got {floor}")
    v.finite_scalar("tail_decades", tail_decades, positive=True)
    if not isinstance(series, dict) or not set(SERIES) <= set(series):
        have = sorted(series) if isinstance(series, dict) else type(series).__name__
        raise InputError(f"series must be a dict with the series {', '.join(SERIES)}, got {have}")
    predicted = predicted_constants(spec)
    constants = {n: power_fit(LABELS[n], times, series[n], a, predicted[n], tail_decades) for n, a in POWER_SERIES.items()}
    lam_min = float(spec.lam1.min()) if spec.p else float("nan")
    exponential = {
        "K_F": exponential_fit(LABELS["K_F"], times, series["K_F"], lam_min, floor),
        "P1_gap": exponential_fit(LABELS["P1_gap"], times, series["P1_gap"], 2 * lam_min, floor),
    }
    return Rates(regime(problem), excess_rank(spec), times, series, constants, exponential)


def rates(traj: Trajectory, *, tail_decades: float = 2.0, floor: float = 1e-8) -> Rates:
    """Fitted asymptotics along a flow (time axis) or GD (time = step * eta) trajectory that recorded ``"params"``."""
    if not isinstance(traj, Trajectory):
        raise InputError(f"traj must be an mfdyn.Trajectory, got {type(traj).__name__}")
    problem = traj.problem
    if type(problem).__name__ != "SymmetricFactorization":
        raise InputError(f"traj must come from a SymmetricFactorization problem, got {type(problem).__name__}")
    flat = traj["params"]
    times = traj.times if traj.method == "flow" else traj.steps * traj.config["eta"]
    n, r = problem.M.shape[0], problem.rank
    Xs = np.asarray(flat).reshape(-1, n, r)
    keep = times > 0
    return fit_rates(problem, times[keep], series_of_params(problem, Xs[keep]), tail_decades=tail_decades, floor=floor)


def closed_form_rates(problem: Any, X0: Any, times: Any, *, tail_decades: float = 2.0, floor: float = 1e-200) -> Rates:
    """:func:`fit_rates` on the closed-form solution at ``times`` (no integration error, so a low floor)."""
    sol = cascade_closed_form(problem, X0, times)
    keep = sol.times > 0
    series = {name: vals[keep] for name, vals in series_of_solution(problem, sol).items()}
    return fit_rates(problem, sol.times[keep], series, tail_decades=tail_decades, floor=floor)
