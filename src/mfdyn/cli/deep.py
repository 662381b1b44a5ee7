"""``mfdyn deep run`` and ``mfdyn deep probability``: the four-layer analyses of MATH.md §4 from the shell.

- ``run``: one GD run of ``DeepFactorization(Sigma, depth, balance=a, field)`` from
  ``init(seed, scale=eps, kind)``, ``Sigma = diag(sigma1 kappa^{-k/(d-1)})``, recording the tracked
  quantities of :func:`mfdyn.deep.tracked_names`; prints their initial/final values and the stages.
- ``probability``: the fraction of seeds reaching ``loss < tol`` within the step budget (95% Wilson
  interval), batched over seeds by :func:`mfdyn.sweep` (``--store out.zarr`` writes it chunk by chunk
  and resumes); for a real field also how often ``det W(0) > 0`` agrees with convergence.

``--json`` prints one JSON object on stdout (non-finite floats as ``null``); progress goes to stderr.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .. import _validate as v
from .. import deep
from ..problems import DeepFactorization
from ._figures import check_figure_path, save_figure
from ._json import print_json

deep_app = typer.Typer(help="Four-layer matrix factorization (MATH.md §4): tracked runs and convergence probabilities.",
                       no_args_is_help=True)


def _check_common(eps: float, eta: float, steps: int) -> None:
    v.finite_scalar("--eps", eps, positive=True)
    v.finite_scalar("--eta", eta, positive=True)
    v.integer("--steps", steps, minimum=1)


@deep_app.command("run")
def run_command(
    depth: int = typer.Option(4, "--depth", help="Number of layers L (skew error / main term need L = 4)."),
    d: int = typer.Option(4, "--d", help="Layer width (all layers d x d)."),
    field: str = typer.Option("real", "--field", help="real or complex."),
    balance: float = typer.Option(5.0, "--balance", help="Balanced-regularizer weight a."),
    eps: float = typer.Option(0.3, "--eps", help="Initialization scale."),
    init: str = typer.Option("gaussian", "--init", help="gaussian or balanced (MATH.md §4)."),
    eta: float = typer.Option(0.02, "--eta", help="GD step size."),
    steps: int = typer.Option(30_000, "--steps", help="GD steps."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the initialization."),
    sigma1: float = typer.Option(1.0, "--sigma1", help="Largest target singular value."),
    kappa: float = typer.Option(1.0, "--kappa", help="Target condition number (1: Sigma = sigma1 I)."),
    every: int = typer.Option(0, "--every", help="Record every this many steps (0: about 1000 records)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the tracked quantities."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> int:
    """One tracked GD run: loss, regularizer, skew error, Hermitian main term, det sign, stages."""
    _check_common(eps, eta, steps)
    v.integer("--seed", seed, minimum=0)
    v.integer("--every", every, minimum=0)
    v.choice("--init", init, DeepFactorization.init_kinds)
    check_figure_path("--plot", plot)
    problem = DeepFactorization(deep.target(d, sigma1=sigma1, kappa=kappa), depth, balance=balance, field=field)
    params0 = problem.init(seed, scale=eps, kind=init)
    every = every or max(1, steps // 1000)
    start = time.perf_counter()
    traj, st = deep.track(problem, params0, eta, steps, every=every)
    wall = time.perf_counter() - start
    scalars = [n for n in traj.observables if np.ndim(traj[n]) == 1]
    result = dict(
        config=dict(depth=depth, d=d, field=field, balance=balance, eps=eps, init=init, eta=eta, steps=steps, seed=seed,
                    sigma1=sigma1, kappa=kappa, every=every),
        status=traj.status, diverged_at=traj.diverged_at, wall_time_s=wall,
        initial={n: traj[n][0] for n in scalars}, final={n: traj[n][-1] for n in scalars},
        final_product_singular_values=traj["product_singular_values"][-1],
        stages=st.as_dict(),
        recorded={"step": traj.steps, **{n: traj[n] for n in scalars}},
    )
    if plot is not None:
        fig = deep.plot_tracked(traj, st, title=f"{field}, d={d}, a={balance}, eps={eps}:")
        save_figure(fig, plot, "--plot", dpi=110, bbox_inches="tight")
    table = _json_or_table(result, as_json, f"deep run ({field}, depth {depth}, d={d}, a={balance}, eps={eps}, "
                           f"{init} init, eta={eta}, {steps} steps, seed {seed})", ("initial", "final"))
    if table is None:
        return 0
    console = Console()
    for n in scalars:
        table.add_row(n, f"{result['initial'][n]:.6g}", f"{result['final'][n]:.6g}")
    console.print(table)
    console.print(f"stages ({st.axis}): alignment end T1 = {st.alignment_end}, saddle-avoidance end T1+T2 = "
                  f"{st.saddle_end}, local linear rate = {st.linear_rate} per {st.axis} (R^2 {st.rate_r2}); "
                  f"thresholds {st.thresholds}")
    console.print(f"status {traj.status}; {wall:.2f} s")
    return 0


@deep_app.command("probability")
def probability_command(
    field: str = typer.Option("real", "--field", help="real or complex."),
    init: str = typer.Option("gaussian", "--init", help="gaussian or balanced."),
    seeds: int = typer.Option(256, "--seeds", help="Number of seeds (0 .. seeds-1)."),
    d: int = typer.Option(3, "--d", help="Layer width."),
    balance: float = typer.Option(5.0, "--balance", help="Balanced-regularizer weight a."),
    eps: float = typer.Option(0.4, "--eps", help="Initialization scale."),
    eta: float = typer.Option(0.04, "--eta", help="GD step size."),
    steps: int = typer.Option(12_000, "--steps", help="Step budget per seed."),
    kappa: float = typer.Option(1.0, "--kappa", help="Target condition number (1: Sigma = I)."),
    tol: float = typer.Option(1e-10, "--tol", help="Converged means final loss < tol."),
    store: Optional[Path] = typer.Option(None, "--store", help="Zarr store: written chunk by chunk, resumable."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout."),
) -> int:
    """Convergence probability over seeds (batched sweep), with a 95% Wilson interval."""
    _check_common(eps, eta, steps)
    v.integer("--seeds", seeds, minimum=1)
    v.finite_scalar("--tol", tol, positive=True)
    v.choice("--init", init, DeepFactorization.init_kinds)
    v.choice("--field", field, ("real", "complex"))
    deep.target(d, kappa=kappa)  # validates d and kappa
    v.finite_scalar("--balance", balance, nonnegative=True)
    start = time.perf_counter()
    ds = deep.convergence_sweep(deep.conditioned_family(d, field), np.arange(seeds), eps=eps, eta=eta, steps=steps,
                                kind=init, constants={"kappa": [kappa], "balance": [balance]}, loss_tol=tol,
                                store=None if store is None else str(store), progress=True)
    wall = time.perf_counter() - start
    conv = np.asarray(ds["converged"]).ravel()
    result = dict(
        config=dict(field=field, init=init, seeds=seeds, d=d, balance=balance, eps=eps, eta=eta, steps=steps,
                    kappa=kappa, tol=tol, store=None if store is None else str(store)),
        **deep.probability(conv),
        median_steps_converged=deep.median_stop_step(ds),
        diverged=int((np.asarray(ds["diverged_at"]) >= 0).sum()),
        wall_time_s=wall,
    )
    if "det_sign_initial" in ds:
        s0 = np.asarray(ds["det_sign_initial"]).ravel()
        s1 = np.asarray(ds["det_sign_final"]).ravel()
        result["det"] = dict(
            positive_initial=int((s0 > 0).sum()),
            agreement_converged_vs_positive_det=float(np.mean(conv == (s0 > 0))),
            converged_with_negative_initial_det=int((conv & (s0 < 0)).sum()),
            sign_kept_fraction=float(np.mean(s0 == s1)),
        )
    table = _json_or_table(result, as_json, f"deep probability ({field} field, {init} init, d={d}, a={balance}, "
                           f"eps={eps}, eta={eta}, {steps} steps, kappa={kappa})", ("value",))
    if table is None:
        return 0
    console = Console()
    for key in ("n", "converged", "p", "wilson_low", "wilson_high", "median_steps_converged", "diverged"):
        table.add_row(key, f"{result[key]}")
    for key, val in result.get("det", {}).items():
        table.add_row(f"det: {key}", f"{val}")
    console.print(table)
    console.print(f"{wall:.2f} s")
    return 0


def _json_or_table(result: dict, as_json: bool, title: str, value_columns: tuple[str, ...]) -> Table | None:
    """Print ``result`` as JSON (returns ``None``), or start the rich table of its quantities."""
    if as_json:
        print_json(result)
        return None
    table = Table(title=title)
    table.add_column("quantity")
    for name in value_columns:
        table.add_column(name, justify="right")
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(deep_app, name="deep")
