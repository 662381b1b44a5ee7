"""``mfdyn rank1 ...`` (critical step, balanced 2-cycle, periodic orbits) and ``mfdyn certificate verify``.

The problem is the scalar loss (``--target``, ``--quartic``) or, with ``--sigma``, the rank-1
factorization of ``X = diag(1, sigma)``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ._json import print_json, to_jsonable

rank1_app = typer.Typer(help="Rank-1 GD dynamics: critical step size, balanced 2-cycle, periodic orbits.",
                        no_args_is_help=True)
certificate_app = typer.Typer(help="State-dependent certificates I(delta; z) for GD.", no_args_is_help=True)

TARGET = typer.Option(1.0, "--target", help="y in f = 1/2 (ab - y)^2 + mu (ab - y)^4.")
QUARTIC = typer.Option(0.0, "--quartic", help="mu >= 0 (scalar loss only).")
SIGMA = typer.Option(None, "--sigma", help="Use X = diag(1, sigma) with rank 1 instead of the scalar loss.")
JSON = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")


def _problem(target: float, quartic: float, sigma: Optional[float]) -> Any:
    from ..problems import MatrixFactorization, ScalarFactorization

    if sigma is None:
        return ScalarFactorization(target, quartic)
    if quartic != 0.0 or target != 1.0:
        raise InputError("--sigma selects X = diag(1, sigma); it cannot be combined with --target or --quartic")
    if not math.isfinite(sigma) or sigma < 0:
        raise InputError(f"--sigma must be a finite number >= 0, got {sigma}")
    return MatrixFactorization(np.diag([1.0, sigma]), 1)


def _emit(data: dict, as_json: bool, title: str) -> None:
    if as_json:
        print_json(data)
        return
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value")
    for key, value in to_jsonable(data).items():
        table.add_row(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    Console().print(table)


@rank1_app.command("critical-step")
def critical_step_cmd(target: float = TARGET, quartic: float = QUARTIC, sigma: Optional[float] = SIGMA,
                      as_json: bool = JSON) -> None:
    """eta_c = 2 / (minimum sharpness over the global minimizers), computed from the Hessian."""
    from .. import rank1

    problem = _problem(target, quartic, sigma)
    _emit(dict(critical_step=rank1.critical_step(problem)), as_json, "critical step size")


@rank1_app.command("two-cycle")
def two_cycle_cmd(eta: float = typer.Option(..., "--eta", help="Step size (> eta_c)."), target: float = TARGET,
                  quartic: float = QUARTIC, sigma: Optional[float] = SIGMA,
                  method: str = typer.Option("auto", "--method", help="auto, closed or numeric."),
                  as_json: bool = JSON) -> None:
    """The balanced period-2 orbit: products, multipliers, stability, and the stability window."""
    from .. import rank1

    problem = _problem(target, quartic, sigma)
    cycle = rank1.two_cycle(problem, eta, method=method)
    data = cycle.as_dict()
    data["window"] = list(rank1.two_cycle_window(problem))
    _emit(data, as_json, f"balanced 2-cycle at eta={eta:g}")


@rank1_app.command("orbits")
def orbits_cmd(eta: float = typer.Option(..., "--eta"), period: int = typer.Option(..., "--period"),
               seeds: int = typer.Option(256, "--seeds", help="Number of random Newton starts."),
               scale: float = typer.Option(1.0, "--scale", help="Scale of the random starts."),
               target: float = TARGET, quartic: float = QUARTIC, sigma: Optional[float] = SIGMA,
               as_json: bool = JSON) -> None:
    """Period-k orbits of GD by Newton's method on G^k(z) = z from many starts."""
    from .. import rank1

    problem = _problem(target, quartic, sigma)
    orbits = rank1.periodic_orbits(problem, eta, period, seeds=seeds, scale=scale)
    if as_json:
        print_json(dict(eta=eta, period=period, orbits=[o.as_dict() for o in orbits]))
        return
    table = Table(title=f"period-{period} orbits at eta={eta:g} ({len(orbits)} found)")
    for col in ("first point", "|multipliers|", "stable"):
        table.add_column(col)
    for o in orbits:
        table.add_row(np.array2string(o.points[0], precision=6),
                      np.array2string(np.abs(o.multipliers), precision=4), str(o.stable))
    Console().print(table)


@certificate_app.command("verify")
def verify_cmd(formula: str = typer.Option(..., "--formula", help="I(delta; z) in delta and a, b (or u1, u2, v1, v2)."),
               eta: float = typer.Option(..., "--eta"),
               region: str = typer.Option(..., "--region", help="Box 'lo:hi,lo:hi,...', one pair per coordinate."),
               bracket: str = typer.Option("0:10", "--bracket", help="State bracket 'lo:hi'."),
               samples: int = typer.Option(4096, "--samples"), seed: int = typer.Option(0, "--seed"),
               target: float = TARGET, quartic: float = QUARTIC, sigma: Optional[float] = SIGMA,
               as_json: bool = JSON) -> int:
    """Search for violations of nestedness, boundary-inwardness and state monotonicity on a box.

    Exit code 0 when no violation is found (admissible on the region), 1 otherwise.
    """
    from .. import certificates as cz

    problem = _problem(target, quartic, sigma)
    try:
        lo, hi = (float(x) for x in bracket.split(":"))
    except ValueError:
        raise InputError(f"--bracket must look like 'lo:hi', got {bracket!r}") from None
    cert = cz.Certificate.from_formula(formula, cz.coordinate_names(problem), bracket=(lo, hi))
    report = cert.verify(problem, eta, cz.Region.parse(region), samples=samples, seed=seed)
    if as_json:
        print_json(report.as_dict())
    else:
        Console().print(report.summary())
    return 0 if report.admissible else 1


def register(app: typer.Typer) -> None:
    app.add_typer(rank1_app, name="rank1")
    app.add_typer(certificate_app, name="certificate")
