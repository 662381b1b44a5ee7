"""``mfdyn critical-points``: the census of critical points of regularized deep factorization (MATH.md §2)."""

from __future__ import annotations


import numpy as np
import typer

from ..errors import InputError
from ._json import print_json


def _floats(name: str, text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise InputError(f"{name} must not be empty, got {text!r}")
    return values


def _ints(name: str, text: str) -> list[int]:
    values = _floats(name, text)
    if any(not v.is_integer() for v in values):
        raise InputError(f"{name} must be comma-separated integers, got {text!r}")
    return [int(v) for v in values]


def build_problem(y: str, depth: int, weight_decay: str, widths: str | None):
    """``Y = diag(y)`` (padded with zeros to ``(d_L, d_0)`` when ``widths`` is given)."""
    from ..problems import DeepFactorization

    ys = _floats("--y", y)
    if any(v < 0 for v in ys):
        raise InputError(f"--y must be singular values (>= 0), got {ys}")
    wd = _floats("--weight-decay", weight_decay)
    ws = _ints("--widths", widths) if widths else None
    d_out, d_in = (ws[-1], ws[0]) if ws else (len(ys), len(ys))
    if len(ys) > min(d_out, d_in):
        raise InputError(f"--y has {len(ys)} values but Y is {d_out}x{d_in} (widths {ws})")
    Y = np.zeros((d_out, d_in))
    Y[np.arange(len(ys)), np.arange(len(ys))] = ys
    return DeepFactorization(Y, depth, widths=ws, weight_decay=wd[0] if len(wd) == 1 else wd)


def critical_points_command(
    y: str = typer.Option(..., "--y", help="Singular values of Y, comma-separated (Y = diag(y))."),
    depth: int = typer.Option(..., "--depth", help="Number of layers L >= 2."),
    weight_decay: str = typer.Option(..., "--weight-decay", help="lambda > 0: one value, or one per layer (comma-separated)."),
    widths: str = typer.Option(None, "--widths", help="d_0,...,d_L (default: all min(d_0, d_L))."),
    limit: int = typer.Option(None, "--limit", help="Only the N lowest-loss classes (enumerated lazily)."),
    count: bool = typer.Option(False, "--count", help="Only the closed-form number of classes."),
    verify: bool = typer.Option(False, "--verify", help="Cross-check every class's kind with Hessian / higher-order tests."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> int:
    """Every critical point class of 1/2||W_L...W_1 - Y||^2 + 1/2 sum lambda_l ||W_l||^2, by loss then kind."""
    from ..landscape import count_critical_points, critical_points, no_nonstrict_saddles, thresholds

    if limit is not None and limit < 0:
        raise InputError(f"--limit must be >= 0, got {limit}")
    problem = build_problem(y, depth, weight_decay, widths)
    th = thresholds(problem.depth, np.asarray(problem.weight_decay))
    total = count_critical_points(problem)
    ok, offending = no_nonstrict_saddles(problem)
    header = {"depth": problem.depth, "widths": list(problem.widths), "lambda": th.lam, "y_star": th.y_star,
              "y_bar": th.y_bar, "s_star": th.s_star, "count": total, "no_nonstrict_saddles": ok,
              "offending": offending}
    if count:
        if as_json:
            print_json(header)
        else:
            print(f"{total} critical point classes (y* = {th.y_star:.6g}, ybar = {th.y_bar:.6g}, "
                  f"no non-strict saddles: {ok})")
        return 0
    points = critical_points(problem, limit=limit, verify=verify)
    if as_json:
        print_json({**header, "points": [p.as_dict() for p in points]})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(points)} of {total} classes; y* = {th.y_star:.6g}, ybar = {th.y_bar:.6g}"
                        + (" (kinds verified numerically)" if verify else ""))
    for col in ("kind", "loss", "product singular values", "matching (1-based)", "roots"):
        table.add_column(col)
    for p in points:
        table.add_row(p.kind, f"{p.loss:.10g}", ", ".join(f"{v:.6g}" for v in p.product_singular_values) or "-",
                      ", ".join(str(i + 1) for i in p.matching) or "-", ", ".join(p.roots) or "-")
    Console().print(table)
    if not ok:
        Console().print(f"non-strict saddles exist: y = y* at {offending}")
    return 0


def register(app: typer.Typer) -> None:
    app.command("critical-points")(critical_points_command)
