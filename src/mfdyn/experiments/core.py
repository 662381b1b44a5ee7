"""Core experiment: the imbalance under gradient flow and gradient descent (MATH.md §1, §4).

[derived] Scalar loss (any quartic ``mu``): one GD step maps ``d = a^2 - b^2`` to
``(1 - eta^2 psi^2) d`` exactly, ``psi = r + 4 mu r^3``; gradient flow conserves ``d``.
[derived] Deep factorization with ``a = 0`` and no weight decay: gradient flow conserves the layer
differences ``W_{j+1}^H W_{j+1} - W_j W_j^H`` (all depths, real and complex).
"""

from __future__ import annotations

import jax
import numpy as np

from .. import flow, gd
from .. import plot  # noqa: F401  (selects the Agg backend before pyplot is imported)
from ..problems import DeepFactorization, ScalarFactorization
from ..pytree import tree_norm
from .registry import Context, experiment


def _gd_contraction_error(problem: ScalarFactorization, a0: float, b0: float, eta: float, steps: int):
    """Max over steps of ``|d_{t+1} - (1 - eta^2 psi_t^2) d_t| / max(|d_t|, tiny)`` and the d series."""
    traj = gd(problem, (a0, b0), eta, steps, record=("params",))
    ab = traj["params"]  # (T, 2)
    d = ab[:, 0] ** 2 - ab[:, 1] ** 2
    r = ab[:, 0] * ab[:, 1] - float(problem.target)
    psi = r + 4 * float(problem.quartic) * r**3
    predicted = (1 - eta**2 * psi[:-1] ** 2) * d[:-1]
    err = np.abs(d[1:] - predicted) / np.maximum(np.abs(d[:-1]), 1e-300)
    return float(err.max()), d, traj


@jax.jit
def _drift_norms(problem, flat_params: jax.Array) -> jax.Array:
    """``||c(t_k) - c(t_0)|| / max(1, ||c(t_0)||)`` for saved flat parameters ``(K, n)``."""
    c = jax.vmap(lambda vec: problem.imbalance(problem.unflatten(vec)))(flat_params)
    c0 = jax.tree_util.tree_map(lambda x: x[0], c)
    gaps = jax.vmap(lambda ck: tree_norm(jax.tree_util.tree_map(lambda x, y: x - y, ck, c0)))(c)
    return gaps / jax.numpy.maximum(1.0, tree_norm(c0))


def _flow_drift(problem, params0, t1: float):
    """Max over saved times of ``||c(t) - c(0)|| / max(1, ||c(0)||)`` for the conserved quantities ``c``."""
    traj = flow(problem, params0, t1, record=("params", "loss"))
    return np.asarray(_drift_norms(problem, traj["params"])), traj


@experiment("core.imbalance", paper="core (MATH.md §1, §4, derived)",
            title="Imbalance: conserved by gradient flow, contracted by exactly 1 - eta^2 psi^2 per GD step")
def imbalance(ctx: Context) -> None:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    steps = ctx.pick(quick=200, default=2000)
    t1 = ctx.pick(quick=20.0, default=100.0)
    n_starts = ctx.pick(quick=2, default=6)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rows = []
    for mu in (0.0, 0.1):
        problem = ScalarFactorization(1.0, mu)
        worst, worst_flow = 0.0, 0.0
        for i in range(n_starts):
            a0, b0 = rng.uniform(0.2, 2.0, size=2)
            eta = float(rng.uniform(0.05, 0.6))
            err, d, _ = _gd_contraction_error(problem, a0, b0, eta, steps)
            worst = max(worst, err)
            if i == 0:
                axes[0].semilogy(np.abs(d) + 1e-300, label=f"mu={mu}, eta={eta:.2f}")
            drift, traj = _flow_drift(problem, (a0, b0), t1)
            worst_flow = max(worst_flow, float(drift.max()))
            if i == 0:
                axes[1].loglog(traj.times[1:], np.maximum(drift[1:], 1e-18), label=f"scalar mu={mu}")
        rows.append({"family": f"scalar mu={mu}", "gd max rel. error of d' = (1 - eta^2 psi^2) d": worst,
                     "flow max rel. drift of d": worst_flow})
        ctx.at_most(f"scalar mu={mu}: GD imbalance d' = (1 - eta^2 psi^2) d (max rel. error, {n_starts} runs x {steps} steps)",
                    worst, 1e-12, source="derived")
        ctx.at_most(f"scalar mu={mu}: gradient flow conserves a^2 - b^2 (max rel. drift to t={t1:g})", worst_flow, 1e-9,
                    source="derived")

    for field in ("real", "complex"):
        Y = rng.normal(size=(3, 3)) + (1j * rng.normal(size=(3, 3)) if field == "complex" else 0)
        problem = DeepFactorization(Y, 3, field=field)
        drift, traj = _flow_drift(problem, problem.init(1, 0.7), t1)
        axes[1].loglog(traj.times[1:], np.maximum(drift[1:], 1e-18), label=f"deep L=3 {field}")
        axes[2].loglog(traj.times[1:], traj["loss"][1:], label=f"deep L=3 {field}")
        rows.append({"family": f"deep L=3 {field}, a=0", "gd max rel. error of d' = (1 - eta^2 psi^2) d": "-",
                     "flow max rel. drift of d": float(drift.max())})
        ctx.at_most(f"deep L=3 {field}, a=0, lambda=0: gradient flow conserves W_(j+1)^H W_(j+1) - W_j W_j^H "
                    f"(max rel. drift to t={t1:g})", float(drift.max()), 1e-9, source="derived")

    axes[0].set(xlabel="GD step", ylabel="|a^2 - b^2|", title="GD contracts the imbalance")
    axes[1].set(xlabel="time", ylabel="relative drift of conserved quantity", title="gradient flow conserves it")
    axes[2].set(xlabel="time", ylabel="loss", title="deep flow loss (a = 0)")
    for ax in axes:
        ax.legend(fontsize=8)
    ctx.figure(fig, "imbalance", "Left: |a^2 - b^2| along GD (monotone where eta|psi| <= sqrt 2). Middle: drift of the "
               "conserved quantities along gradient flow (Kvaerno5, rtol 1e-10). Right: loss of the deep flows.")
    ctx.table("Imbalance identities", rows)
