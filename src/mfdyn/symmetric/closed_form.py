"""Closed-form solution of the symmetric flow through the cascade (MATH.md §3, [derived]).

With ``W(t) = diag(w_j)``, ``w_j = (1 - exp(-2 mu_j t)) / mu_j`` (``2t`` where ``mu_j = 0``), the
diagonal ``mu`` of ``Lambda2`` and ``lambda`` of ``Lambda1``, and ``S0 = F F^T``:

- ``S(t)  = e^{-Lambda2 t} F (I + F^T W F)^{-1} F^T e^{-Lambda2 t}``
  (equal to ``e^{-Lambda2 t} S0 (I + W S0)^{-1} e^{-Lambda2 t}``; this form is symmetric PSD and its
  inner matrix has eigenvalues >= 1);
- ``K(t)  = e^{-Lambda2 t} (I + S0 W)^{-1} K0 e^{-Lambda1 t}``;
- ``Q(t) = P1(t)^{-1} = e^{-Lambda1 t} [Q0 + K0^T H K0] e^{-Lambda1 t} + Lambda1^{-1} (I - e^{-2 Lambda1 t})``
  with ``H = W (I + S0 W)^{-1} = D (I + D S0 D)^{-1} D``, ``D = W^{1/2}``;
- ``X X^T = V [[P1, P1 K^T], [K P1, S + K P1 K^T]] V^T``.

Why this stays accurate to ``t = 1e6``: every exponential appears in a decaying combination
(``exp(-(mu_j + lambda_i) t)`` is formed as one exponent, never as a huge factor times a tiny one;
under-parameterized, ``mu_j < 0`` but ``mu_j + lambda_i >= 0``), ``S`` and ``P1^{-1}`` are sums of
non-negative terms, and ``P1 - Lambda1 = -P1 (Q - Lambda1^{-1}) Lambda1`` is formed from
``Q - Lambda1^{-1} = e^{-Lambda1 t} [...] e^{-Lambda1 t} - Lambda1^{-1} e^{-2 Lambda1 t}`` without cancellation.
The direct formula (:func:`direct_formula`) inverts ``I + X0^T A_t X0``, whose condition number grows
like ``exp(2 lambda_1 t)``; it is kept only to show that.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _validate as v
from ..errors import InputError
from .cascade import cascade_factors, cascade_matrix, check_X
from .spectrum import spectrum


class CascadeSolution(NamedTuple):
    """Closed-form cascade state at ``times``; every array has a leading time axis ``T``."""

    times: np.ndarray  # (T,)
    S: np.ndarray  # (T, n-p, n-p)
    K: np.ndarray  # (T, n-p, p)
    P1: np.ndarray  # (T, p, p)
    P1_gap: np.ndarray  # (T, p, p), P1 - Lambda1 without cancellation


def check_times(t: Any, name: str = "t") -> tuple[np.ndarray, bool]:
    """``t`` (a number or a 1-D array) as a float array of finite times ``>= 0``; and whether it was a number."""
    v.finite_array(name, t, allow_complex=False)
    arr = np.asarray(t, dtype=float)
    if arr.ndim > 1:
        raise InputError(f"{name} must be a number or a 1-D array, got shape {arr.shape}")
    if arr.size and float(arr.min()) < 0:
        bad = float(arr.min())
        raise InputError(f"{name} must be >= 0 (the flow runs forward in time), got {bad:g}")
    return np.atleast_1d(arr), arr.ndim == 0


def decayed_weight(mu: np.ndarray, c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``exp(-c t) (1 - exp(-2 mu t)) / mu`` (``2 t exp(-c t)`` at ``mu = 0``), without overflow when ``c + 2 mu >= 0``.

    Broadcasts over its arguments. For ``mu > 0``: ``exp(-c t) * (-expm1(-2 mu t)) / mu``; for ``mu < 0``:
    ``exp(-(c + 2 mu) t) * expm1(2 mu t) / mu`` (both factors bounded).
    """
    mu, c, t = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (mu, c, t)))
    safe_mu = np.where(mu == 0, 1.0, mu)
    mu_pos, mu_neg = np.maximum(mu, 0.0), np.minimum(mu, 0.0)  # each branch sees only its own sign
    pos = np.exp(-c * t) * (-np.expm1(-2.0 * mu_pos * t)) / safe_mu
    neg = np.exp(-(c + 2.0 * mu_neg) * t) * np.expm1(2.0 * mu_neg * t) / safe_mu
    zero = 2.0 * t * np.exp(-c * t)
    return np.where(mu > 0, pos, np.where(mu < 0, neg, zero))


def cascade_closed_form(problem: Any, X0: Any, t: Any) -> CascadeSolution:
    """``(S, K, P1)`` at the times ``t`` of the flow from ``X0`` (formulas in the module docstring)."""
    spec = spectrum(problem)
    F, K0, _, Q0 = cascade_factors(problem, X0, spec=spec, name="X0")
    ts, _ = check_times(t)
    lam1, mu = spec.lam1, spec.mu2  # (p,), (m,)
    m, p, q = mu.size, lam1.size, F.shape[1]
    tt = ts[:, None]  # (T, 1)
    decay1 = np.exp(-lam1[None, :] * tt)  # (T, p), e^{-Lambda1 t}
    decay_K = np.exp(-(mu[None, :, None] + lam1[None, None, :]) * tt[:, :, None])  # (T, m, p)
    if q == 0:  # S = 0 identically (exact or under-parameterized): H = W, weighted into one exponent
        S = np.zeros((ts.size, m, m))
        A = np.broadcast_to(K0, (ts.size, m, p))  # (I + S0 W)^{-1} K0 = K0
        h = decayed_weight(mu[None, :, None, None], lam1[None, None, :, None] + lam1[None, None, None, :],
                           ts[:, None, None, None])  # (T, m, p, p)
        E = np.einsum("ji,jl,tjil->til", K0, K0, h)  # e^{-L1 t} K0^T W K0 e^{-L1 t}
    else:  # r > r0, so Lambda2 >= 0 and W <= 2t: no overflow anywhere
        w = decayed_weight(mu[None, :], 0.0, tt)  # (T, m)
        d = np.sqrt(w)  # (T, m), D = W^{1/2}
        inner = np.eye(q) + np.einsum("jk,tj,jl->tkl", F, w, F)  # (T, q, q), I + F^T W F
        B = F @ np.linalg.solve(inner, np.broadcast_to(F.T, (ts.size, q, m)))  # (T, m, m)
        decay2 = np.exp(-mu[None, :] * tt)  # (T, m)
        S = decay2[:, :, None] * B * decay2[:, None, :]
        S0 = F @ F.T  # (m, m)
        A = np.linalg.solve(np.eye(m) + S0[None] * w[:, None, :], np.broadcast_to(K0, (ts.size, m, p)))
        DF = d[:, :, None] * F[None]  # (T, m, q)
        G = np.eye(m) + DF @ np.swapaxes(DF, -1, -2)  # (T, m, m), I + D S0 D
        H = d[:, :, None] * np.linalg.solve(G, np.eye(m)[None] * d[:, None, :])  # (T, m, m), D G^{-1} D
        E = decay1[:, :, None] * (K0.T @ H @ K0) * decay1[:, None, :]
    K = decay_K * A
    Q_gap = decay1[:, :, None] * Q0 * decay1[:, None, :] + E - np.eye(p) * (np.exp(-2 * lam1 * tt) / lam1)[:, None, :]
    Q = Q_gap + np.eye(p) / lam1  # (T, p, p)
    P1 = np.linalg.solve(Q, np.broadcast_to(np.eye(p), Q.shape))
    P1 = 0.5 * (P1 + np.swapaxes(P1, -1, -2))
    P1_gap = -P1 @ Q_gap * lam1[None, None, :]
    P1_gap = 0.5 * (P1_gap + np.swapaxes(P1_gap, -1, -2))
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    return CascadeSolution(ts, S, K, P1, P1_gap)


def closed_form(problem: Any, X0: Any, t: Any) -> np.ndarray:
    """``X X^T`` at time(s) ``t`` of the gradient flow from ``X0`` (MATH.md §3, cascade closed forms).

    ``t``: a number (returns ``(n, n)``) or a 1-D array (returns ``(T, n, n)``), all ``>= 0``.
    Accurate to about 1e-12 relative for ``t`` up to 1e6 and beyond (see module docstring).
    Requires ``X0`` in ``{P1 > 0}``.
    """
    _, scalar = check_times(t)
    sol = cascade_closed_form(problem, X0, t)
    V = spectrum(problem).vectors
    Z = V @ cascade_matrix(sol.S, sol.K, sol.P1) @ V.T
    Z = 0.5 * (Z + np.swapaxes(Z, -1, -2))
    return Z[0] if scalar else Z


def direct_formula(problem: Any, X0: Any, t: Any) -> np.ndarray:
    """``e^{Mt} X0 (I + X0^T A_t X0)^{-1} X0^T e^{Mt}``, ``A_t = 2 int_0^t e^{2Ms} ds`` (MATH.md §3).

    Exact in exact arithmetic but numerically useless beyond ``t`` of a few units: the inverted matrix
    has condition number ~ ``exp(2 lambda_1 t)`` (NaN once it overflows). Kept as the reference that shows why
    :func:`closed_form` goes through the cascade.
    """
    spec = spectrum(problem)
    X0 = check_X(problem, X0, "X0")
    ts, scalar = check_times(t)
    lam, V = spec.eigenvalues, spec.vectors
    Y0 = V.T @ X0  # (n, r)
    out = []
    for ti in ts:
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.where(lam == 0, 2 * ti, np.expm1(2 * lam * ti) / np.where(lam == 0, 1.0, lam))
            inner = np.eye(spec.rank) + Y0.T @ (a[:, None] * Y0)  # (r, r)
            G = np.exp(lam * ti)[:, None] * Y0  # e^{Lambda t} Y0
            try:
                out.append(V @ (G @ np.linalg.solve(inner, G.T)) @ V.T)
            except np.linalg.LinAlgError:  # overflowed to inf: the formula has no digits left
                out.append(np.full((spec.n, spec.n), np.nan))
    Z = np.asarray(out)
    return Z[0] if scalar else Z
