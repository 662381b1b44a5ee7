"""``mfdyn symmetric equilibria|rates``: the symmetric low-rank flow analysis (MATH.md §3) from the shell."""

from __future__ import annotations

import math

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ._json import print_json

sub = typer.Typer(help="Symmetric low-rank gradient flow X' = (M - X X^T) X (seed 003).", no_args_is_help=True)

EIGS_HELP = "Eigenvalues of a diagonal target M, comma-separated (e.g. 3,1.5,0,0)."
MATRIX_HELP = "Target M row by row: entries comma-separated, rows separated by ';' (instead of --eigs)."


def parse_numbers(option: str, text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(x) for x in values):
        raise InputError(f"{option} must be non-empty finite numbers, got {text!r}")
    return values


def build_problem(eigs: str | None, matrix: str | None, rank: int):
    from ..problems import SymmetricFactorization

    if (eigs is None) == (matrix is None):
        raise InputError("give exactly one of --eigs and --matrix")
    if eigs is not None:
        M = np.diag(parse_numbers("--eigs", eigs))
    else:
        rows = [parse_numbers("--matrix", row) for row in matrix.split(";") if row.strip()]
        if len({len(r) for r in rows}) != 1:
            raise InputError(f"--matrix rows must have equal lengths, got {[len(r) for r in rows]}")
        M = np.array(rows)
    return SymmetricFactorization(M, rank)


def equilibria_command(
    eigs: str = typer.Option(None, "--eigs", help=EIGS_HELP),
    matrix: str = typer.Option(None, "--matrix", help=MATRIX_HELP),
    rank: int = typer.Option(..., "--rank", help="Number of columns r of X."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare each spectrum with the dense Hessian."),
) -> None:
    """Every equilibrium class: kind, loss, Jacobian spectrum (closed form, checked against the dense Hessian)."""
    from .. import symmetric as sym

    problem = build_problem(eigs, matrix, rank)
    reg = sym.regime(problem)
    eqs = sym.equilibria(problem, check_hessian=check)
    if as_json:
        out = dict(regime=reg._asdict(), eigenvalues=sym.spectrum(problem).eigenvalues.tolist(),
                   equilibria=[e.as_dict() for e in eqs])
        print_json(out)
        return
    console = Console()
    console.print(f"regime: [bold]{reg.name}[/bold] (r = {reg.rank}, r0 = {reg.r0}); {len(eqs)} equilibrium classes")
    table = Table("dims", "eigenvalues in X X^T", "kind", "hyperbolic", "loss", "Jacobian spectrum (max, min, #0)",
                  "|Hessian check|")
    for e in eqs:
        spec = e.jacobian_spectrum
        table.add_row(str(list(e.dims)), ", ".join(f"{x:g}" for x in e.eigenvalues) or "-", e.kind, str(e.hyperbolic),
                      f"{e.loss:.6g}", f"{spec[0]:.4g}, {spec[-1]:.4g}, {int(np.sum(spec == 0))}",
                      "-" if e.hessian_error is None else f"{e.hessian_error:.1e}")
    console.print(table)
    for e in eqs:
        if e.kind == "stable":
            console.print(f"stable class: {e.description}")


def rates_command(
    eigs: str = typer.Option(None, "--eigs", help=EIGS_HELP),
    matrix: str = typer.Option(None, "--matrix", help=MATRIX_HELP),
    rank: int = typer.Option(..., "--rank", help="Number of columns r of X."),
    t1: float = typer.Option(1e6, "--t1", help="Final time of the gradient flow."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Gaussian initialization."),
    scale: float = typer.Option(0.5, "--scale", help="Scale of the Gaussian initialization."),
    method: str = typer.Option("flow", "--method", help="'flow' (mfdyn.flow, Kvaerno5) or 'closed-form'."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> None:
    """Fitted O(1/t) constants and exponential rates along the flow, against the predictions of MATH.md §3."""
    from .. import symmetric as sym
    from ..dynamics import default_times, flow

    problem = build_problem(eigs, matrix, rank)
    if method not in ("flow", "closed-form"):
        raise InputError(f"--method must be 'flow' or 'closed-form', got {method!r}")
    if not (math.isfinite(t1) and t1 > 0):
        raise InputError(f"--t1 must be a finite time > 0, got {t1}")
    X0 = np.asarray(problem.init(seed, scale))
    sym.asymptotics.require_rank_at_least_r0(sym.spectrum(problem), "mfdyn symmetric rates",
                                              "the O(1/t) constants exist only for r >= r0")
    if method == "flow":
        console = Console(stderr=True)
        with console.status(f"integrating the flow to t = {t1:g} (Kvaerno5, rtol 1e-10)"):
            traj = flow(problem, X0, t1, record=("params",), solver="kvaerno5")
        if traj.status != "ok":
            raise InputError(f"the flow integration did not finish: {traj.status}")
        result = sym.rates(traj)
    else:
        result = sym.closed_form_rates(problem, X0, default_times(t1)[1:])
    if as_json:
        print_json(dict(method=method, t1=t1, seed=seed, scale=scale, **result.as_dict()))
        return
    console = Console()
    console.print(f"regime: [bold]{result.regime.name}[/bold] (r = {result.regime.rank}, r0 = {result.regime.r0}), "
                  f"k = min(r - r0, n0) = {result.k}; method: {method}")
    table = Table("quantity", "at t1", "extrapolated", "predicted", "log-log slope", "fit interval", "rms residual")
    for f in result.constants.values():
        table.add_row(f.name, f"{f.at_end:.6g}", f"{f.extrapolated:.6g}", f"{f.predicted:.6g}", f"{f.slope:.4g}",
                      f"[{f.interval[0]:.3g}, {f.interval[1]:.3g}]", f"{f.residual:.2g}")
    console.print(table)
    table = Table("rate", "fitted", "reference", "fit interval", "points", "rms residual")
    for f in result.exponential.values():
        table.add_row(f.name, f"{f.rate:.4g}", f"{f.reference:.4g}", f"[{f.interval[0]:.3g}, {f.interval[1]:.3g}]",
                      str(f.points), f"{f.residual:.2g}")
    console.print(table)
    console.print("references: K rate >= lambda_min(Lambda1) (MATH.md §3); P1 rate -> 2 lambda_min(Lambda1) (derived).")


sub.command("equilibria")(equilibria_command)
sub.command("rates")(rates_command)


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="symmetric")
