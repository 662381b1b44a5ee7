"""``mfdyn gd <family>`` and ``mfdyn flow <family>``: one run of GD or gradient flow from the command line.

Every command is ``METHOD x FAMILY``: a family builder turns the family's options into
``(problem, params0, problem_config)``, a method runs :func:`mfdyn.gd` or :func:`mfdyn.flow` on it, and
one generic runner reports the result. The commands are generated from the two tables ``FAMILIES``
and ``METHODS``, so ``gd`` and ``flow`` share every family option.

Families (MATH.md §1-§4):

- ``scalar``: ``ScalarFactorization(target, quartic)`` from ``(a0, b0)``;
- ``matrix``: ``MatrixFactorization(X, rank)``, ``X = diag(--target-diag)`` or ``--target-matrix``;
- ``symmetric``: ``SymmetricFactorization(M, rank)``, ``M = diag(--eigs)`` or ``--target-matrix``;
- ``deep``: ``DeepFactorization(Y, depth, widths, weight_decay, balance, field)``.

The seed-based families start from ``problem.init(seed, scale, kind)``.

Output: a rich summary table (default); ``--json``: one JSON object on stdout with keys ``problem``
(family options), ``method`` (``"gd"``/``"flow"``), ``config`` (the run's settings), ``final_params``
(nested lists in the family's parameter structure), ``final`` (observables at the final parameters),
``diverged_at``, ``status``, ``wall_time_s`` and ``recorded`` (``"step"`` or ``"time"`` plus one list per
observable). JSON encoding: a complex number is a ``[re, im]`` pair (so a complex ``d x d`` matrix is
a ``d x d x 2`` nested list); a non-finite float is ``null``. ``--csv PATH``: the recorded observables,
one column per scalar observable, vector observables expanded as ``name[i]`` (``name[i][j]`` for
matrices). ``--plot PATH.png``: :func:`mfdyn.plot.plot_trajectory`. Divergence is an outcome
(``status: diverged``, exit 0); bad input raises :class:`mfdyn.InputError` (``error: ...``, exit 2).
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from .. import observables as obs
from .._validate import finite_scalar
from ..dynamics import default_times, flow, gd
from ..errors import InputError
from ..problems import DeepFactorization, MatrixFactorization, ScalarFactorization, SymmetricFactorization
from ..pytree import PyTree
from ..trajectory import Trajectory
from ._figures import check_figure_path, save_figure
from ._json import print_json

DEFAULT_RECORD = "loss,grad_norm,imbalance_norm"


# ---- parsing of list-valued options ---------------------------------------------------------
def _number(option: str, text: str, entry: str, *, allow_complex: bool) -> complex | float:
    entry = entry.strip()
    try:
        return float(entry)
    except ValueError:
        pass
    if allow_complex:
        try:
            return complex(entry.replace(" ", ""))
        except ValueError:
            pass
    kind = "numbers" if allow_complex else "real numbers"
    raise InputError(f"{option} must be comma-separated {kind}, got {text!r} (bad entry {entry!r})")


def parse_numbers(option: str, text: str, *, allow_complex: bool = False) -> np.ndarray:
    """``"1,0.5"`` -> ``array([1.0, 0.5])``; complex entries (``"1+2j"``) only when ``allow_complex``."""
    entries = str(text).split(",")
    values = [_number(option, text, e, allow_complex=allow_complex) for e in entries]
    return np.asarray(values, dtype=complex if any(isinstance(x, complex) for x in values) else float)


def parse_integers(option: str, text: str) -> tuple[int, ...]:
    """``"3,2,3"`` -> ``(3, 2, 3)``."""
    out = []
    for entry in str(text).split(","):
        try:
            out.append(int(entry.strip()))
        except ValueError:
            raise InputError(
                f"{option} must be comma-separated integers, got {text!r} (bad entry {entry.strip()!r})"
            ) from None
    return tuple(out)


def parse_matrix(option: str, text: str) -> np.ndarray:
    """``"1,0;0,0.5"`` -> a 2-D array: rows separated by ``;``, entries by ``,`` (complex allowed)."""
    rows = [parse_numbers(option, row, allow_complex=True) for row in str(text).split(";")]
    if len({r.size for r in rows}) != 1:
        lengths = [r.size for r in rows]
        raise InputError(f"{option} rows must all have the same length, got {text!r} (lengths {lengths})")
    return np.stack(rows)


def parse_names(option: str, text: str) -> tuple[str, ...]:
    """``"loss,grad_norm"`` -> registered observable names (unknown names raise)."""
    names = tuple(n.strip() for n in str(text).split(","))
    if not all(names):
        raise InputError(f"{option} must be comma-separated observable names, got {text!r}")
    return obs.check_names(names)


def target_from(target_diag: str | None, target_matrix: str | None, diag_option: str) -> np.ndarray:
    """The target matrix from exactly one of ``diag_option`` (``diag(values)``) and ``--target-matrix``."""
    if (target_diag is None) == (target_matrix is None):
        raise InputError(f"give exactly one of {diag_option} and --target-matrix, got "
                         f"{diag_option}={target_diag!r}, --target-matrix={target_matrix!r}")
    if target_matrix is not None:
        return parse_matrix("--target-matrix", target_matrix)
    return np.diag(parse_numbers(diag_option, target_diag, allow_complex=True))


# ---- option declarations ----------------------------------------------------------------------
def scalar_parser(flag: str, kind: type) -> Callable[[Any], Any]:
    """Text -> ``kind`` (``float`` or ``int``); a bad value is a usage error naming ``flag`` and the value.

    (Raised as ``typer.BadParameter`` because typer's own message for a bad number omits the value,
    and an ``InputError`` raised here would be re-wrapped by typer's validation layer.)
    """
    noun = "a real number" if kind is float else "an integer"

    def parse(text: Any) -> Any:
        try:
            return kind(text)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{text!r} is not {noun}", param_hint=flag) from None

    return parse


def option(name: str, annotation: Any, default: Any, flag: str, help: str) -> inspect.Parameter:
    """A keyword-only parameter carrying a typer option (commands are assembled from these)."""
    parser = scalar_parser(flag, annotation) if annotation in (float, int) else None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, flag, help=help, parser=parser))


TARGET_OPTIONS = (
    option("target_diag", Optional[str], None, "--target-diag", "Target diag(values), e.g. 1,0.5."),
    option("target_matrix", Optional[str], None, "--target-matrix", 'Target matrix, rows by ";", e.g. "1,0;0,0.5".'),
)
SEED_INIT_OPTIONS = (
    option("seed", int, 0, "--seed", "Random seed of the initialization."),
    option("scale", float, 0.1, "--scale", "Initialization scale (std of the Gaussian entries)."),
)
RANK_OPTION = option("rank", int, 1, "--rank", "Number of columns of the factors.")


# ---- family builders: options -> (problem, params0, problem_config) ----------------------------
def build_scalar(*, target: float, quartic: float, a0: float, b0: float):
    problem = ScalarFactorization(target=target, quartic=quartic)
    for name, value in (("--a0", a0), ("--b0", b0)):
        finite_scalar(name, value)
    params0 = problem.check_params((a0, b0), "(a0, b0)")
    return problem, params0, dict(target=target, quartic=quartic, a0=a0, b0=b0)


def build_matrix(*, target_diag, target_matrix, rank: int, seed: int, scale: float):
    problem = MatrixFactorization(target_from(target_diag, target_matrix, "--target-diag"), rank)
    return problem, problem.init(seed, scale), dict(target=problem.X, rank=problem.rank, seed=seed, scale=scale)


def build_symmetric(*, eigs, target_matrix, rank: int, seed: int, scale: float):
    problem = SymmetricFactorization(target_from(eigs, target_matrix, "--eigs"), rank)
    return problem, problem.init(seed, scale), dict(target=problem.M, rank=problem.rank, seed=seed, scale=scale)


def build_deep(*, target_diag, target_matrix, depth: int, widths, weight_decay: str, balance: float,
               field: str, init: str, seed: int, scale: float):
    Y = target_from(target_diag, target_matrix, "--target-diag")
    decay = parse_numbers("--weight-decay", weight_decay)
    problem = DeepFactorization(
        Y, depth, widths=None if widths is None else parse_integers("--widths", widths),
        weight_decay=decay[0] if decay.size == 1 else decay, balance=balance, field=field,
    )
    config = dict(target=problem.Y, depth=problem.depth, widths=list(problem.widths),
                  weight_decay=problem.weight_decay, balance=balance, field=field, init=init, seed=seed, scale=scale)
    return problem, problem.init(seed, scale, kind=init), config


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    help: str
    options: tuple[inspect.Parameter, ...]
    build: Callable[..., tuple[Any, PyTree, dict]]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("scalar", "scalar factorization f(a, b) = 1/2 (ab - y)^2 + mu (ab - y)^4 from (a0, b0)", (
        option("a0", float, ..., "--a0", "Initial a."),
        option("b0", float, ..., "--b0", "Initial b."),
        option("target", float, 1.0, "--target", "Target y."),
        option("quartic", float, 0.0, "--quartic", "Quartic coefficient mu >= 0."),
    ), build_scalar),
    Family("matrix", "matrix factorization f(U, V) = 1/2 ||U V^T - X||^2 from a seeded Gaussian init",
           (*TARGET_OPTIONS, RANK_OPTION, *SEED_INIT_OPTIONS), build_matrix),
    Family("symmetric", "symmetric factorization f(X) = 1/4 ||X X^T - M||^2 from a seeded Gaussian init", (
        option("eigs", Optional[str], None, "--eigs", "M = diag(values), e.g. 3,1.5,0,0."),
        TARGET_OPTIONS[1], RANK_OPTION, *SEED_INIT_OPTIONS,
    ), build_symmetric),
    Family("deep", "deep factorization 1/2 ||W_L...W_1 - Y||^2 + weight decay + balance regularizer", (
        *TARGET_OPTIONS,
        option("depth", int, 2, "--depth", "Number of layers L >= 1."),
        option("widths", Optional[str], None, "--widths", "Widths d_0,...,d_L (default: all min(Y.shape))."),
        option("weight_decay", str, "0", "--weight-decay", "lambda: one value, or one per layer (comma-separated)."),
        option("balance", float, 0.0, "--balance", "Balance regularizer coefficient a >= 0."),
        option("field", str, "real", "--field", "real or complex."),
        option("init", str, "gaussian", "--init", "gaussian or balanced (MATH.md §4)."),
        *SEED_INIT_OPTIONS,
    ), build_deep),
)}


# ---- methods: (problem, params0, record, options) -> Trajectory --------------------------------
def run_gd(problem, params0, record, *, eta: float, steps: int, every: int, momentum: float) -> Trajectory:
    return gd(problem, params0, eta, steps, record=record, every=every, momentum=momentum)


def run_flow(problem, params0, record, *, t1: float, rtol: float, atol: float, solver: str, points: int) -> Trajectory:
    if points < 2:
        raise InputError(f"--points must be >= 2, got {points}")
    if not (isinstance(t1, (int, float)) and math.isfinite(t1) and t1 >= 0):
        raise InputError(f"--t1 must be finite and >= 0, got {t1}")
    return flow(problem, params0, t1, record=record, times=default_times(t1, points), rtol=rtol, atol=atol,
                solver=solver)


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    title: str
    help: str
    options: tuple[inspect.Parameter, ...]
    run: Callable[..., Trajectory]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gd", "GD", "gradient descent z <- z - eta grad f(z) (heavy-ball with --momentum)", (
        option("eta", float, ..., "--eta", "Step size eta > 0."),
        option("steps", int, 1000, "--steps", "Number of GD steps."),
        option("every", int, 1, "--every", "Record every N steps (and the last step)."),
        option("momentum", float, 0.0, "--momentum", "Heavy-ball momentum (0: plain GD)."),
    ), run_gd),
    Method("flow", "Gradient flow", "gradient flow dz/dt = -grad f(z) (adaptive diffrax solver)", (
        option("t1", float, 100.0, "--t1", "Final time."),
        option("rtol", float, 1e-10, "--rtol", "Relative tolerance of the solver."),
        option("atol", float, 1e-12, "--atol", "Absolute tolerance of the solver."),
        option("solver", str, "auto", "--solver", "auto (Kvaerno5 for stiff horizons, else Tsit5), kvaerno5, tsit5 or dopri8."),
        option("points", int, 257, "--points", "Saved times: 0 and points - 1 geometric times up to t1."),
    ), run_flow),
)}

OUTPUT_OPTIONS = (
    option("record", str, DEFAULT_RECORD, "--record", "Registered observables to record, comma-separated."),
    option("as_json", bool, False, "--json", "Print one JSON object on stdout instead of the table."),
    option("csv_path", Optional[Path], None, "--csv", "Write the recorded observables to this CSV file."),
    option("plot_path", Optional[Path], None, "--plot", "Write a PNG plot of the recorded observables."),
)


# ---- results ------------------------------------------------------------------------------------
_evaluate = jax.jit(obs.evaluate, static_argnames=("names",))


def final_observables(problem: Any, params: PyTree, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The recorded observables evaluated at the final (last finite) parameters."""
    values = _evaluate(problem, params, names=names)
    return {n: np.asarray(values[n]) for n in names}


def csv_columns(traj: Trajectory) -> dict[str, np.ndarray]:
    """``{column: values}``: the step/time axis, then each observable component (``name[i]``, ``name[i][j]``)."""
    columns = {traj.axis_name: np.asarray(traj.axis)}
    for name, values in traj.observables.items():
        values = np.asarray(values)  # (records, *component_shape)
        if values.ndim == 1:
            columns[name] = values
            continue
        for idx in np.ndindex(*values.shape[1:]):
            columns[name + "".join(f"[{i}]" for i in idx)] = values[(slice(None), *idx)]
    return columns


def write_csv(traj: Trajectory, path: Path) -> None:
    columns = csv_columns(traj)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in zip(*columns.values()):
            writer.writerow([repr(v.item()) for v in row])


def write_plot(traj: Trajectory, path: Path) -> None:
    from ..plot import plot_trajectory

    save_figure(plot_trajectory(traj), path, "--plot", dpi=120)


def check_writable(option_name: str, path: Path | None) -> None:
    if path is not None and not path.parent.is_dir():
        raise InputError(f"{option_name} {path}: folder {path.parent} does not exist")


def describe(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return f"{arr.item():.6g}" if np.issubdtype(arr.dtype, np.number) else str(arr.item())
    return " ".join(np.array2string(arr, precision=4, threshold=12).split())


def print_table(result: dict, n_records: int) -> None:
    table = Table(title=f"mfdyn {result['method']} {result['problem']['family']}", show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value")
    for key, value in result["problem"].items():
        table.add_row(key, describe(value) if not isinstance(value, str) else value)
    for key, value in result["config"].items():
        table.add_row(key, describe(value))
    table.add_row("status", result["status"])
    table.add_row("diverged_at", "-" if result["diverged_at"] is None else f"{result['diverged_at']:g}")
    table.add_row("records", str(n_records))
    for name, value in result["final"].items():
        table.add_row(f"final {name}", describe(value))
    table.add_row("wall time", f"{result['wall_time_s']:.2f} s")
    Console().print(table)


# ---- the generic runner ---------------------------------------------------------------------------
def run_command(method: Method, family: Family, options: dict[str, Any]) -> int:
    """Build the family's problem, run the method, and write table / JSON / CSV / PNG."""
    record = parse_names("--record", options["record"])
    check_writable("--csv", options["csv_path"])
    check_figure_path("--plot", options["plot_path"])
    problem, params0, problem_config = family.build(**{p.name: options[p.name] for p in family.options})
    start = time.perf_counter()
    with Console(stderr=True).status(f"running {method.name} on {family.name}", spinner="dots"):
        traj = method.run(problem, params0, record, **{p.name: options[p.name] for p in method.options})
        final = final_observables(problem, traj.final, record)
    wall = time.perf_counter() - start
    for flag, path, write in (("--csv", options["csv_path"], write_csv), ("--plot", options["plot_path"], write_plot)):
        if path is not None:
            try:
                write(traj, path)
            except OSError as exc:
                raise InputError(f"{flag} {path}: cannot write ({exc.strerror})") from None
    result = dict(
        problem=dict(family=family.name, **problem_config), method=method.name, config=traj.config,
        final_params=traj.final, final=final, diverged_at=traj.diverged_at, status=traj.status,
        wall_time_s=wall,
    )
    if options["as_json"]:
        recorded = {traj.axis_name: traj.axis, **traj.observables}
        print_json(result | {"recorded": recorded})
    else:
        print_table(result, len(traj.axis))
    return 0


def make_command(method: Method, family: Family) -> Callable[..., int]:
    """A typer command taking the family's, the method's and the output options."""

    def command(**options: Any) -> int:
        return run_command(method, family, options)

    command.__signature__ = inspect.Signature([*family.options, *method.options, *OUTPUT_OPTIONS])
    command.__doc__ = f"{method.title} on the {family.help}."
    command.__name__ = f"{method.name}_{family.name}"
    return command


def register(app: typer.Typer) -> None:
    for method in METHODS.values():
        sub = typer.Typer(help=f"Run {method.help} on one problem family.", no_args_is_help=True)
        for family in FAMILIES.values():
            sub.command(family.name)(make_command(method, family))
        app.add_typer(sub, name=method.name)
