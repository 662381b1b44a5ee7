"""``mfdyn sweep CONFIG.toml`` and ``mfdyn plot phase|bifurcation|heatmap STORE``.

Config (TOML)::

    [problem]
    family = "scalar"            # scalar | matrix | symmetric | deep
    target = 1.0                 # constructor fields: scalar target, quartic; matrix X, rank;
                                 # symmetric M, rank; deep Y, depth, widths, weight_decay, balance, field
    [axes]
    eta = {start = 0.1, stop = 2.0, num = 50}   # linspace, or a list of values
    a = [0.5, 1.0, 1.5]
    b = {start = 0.5, stop = 1.5, num = 3}
    # also {start, stop, num, log = true} (geometric spacing, start and stop > 0)
    [zipped.diag]                # optional: axes varying together along one dimension "diag"
    [zipped.init]                # e.g. random initial points, uniform in [low, high):
    a = {uniform = [0.1, 3.0], num = 10000, seed = 0}   # (the draws depend on the seed and the
    b = {uniform = [0.1, 3.0], num = 10000, seed = 0}   #  axis's key: a and b are independent)
    [run]
    steps = 1000                 # also: tol, max_period, keep_orbit, chunk, check_every,
                                 # init_kind, sharpness, workers
"""

from __future__ import annotations

import sys
import time
import tomllib
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import typer

from ..errors import InputError
from ._json import print_json

FAMILIES = {
    "scalar": ("ScalarFactorization", ("target", "quartic")),
    "matrix": ("MatrixFactorization", ("X", "rank")),
    "symmetric": ("SymmetricFactorization", ("M", "rank")),
    "deep": ("DeepFactorization", ("Y", "depth", "widths", "weight_decay", "balance", "field")),
}
RUN_KEYS = {"steps": int, "tol": float, "max_period": int, "keep_orbit": int, "chunk": int, "check_every": int,
            "init_kind": str, "sharpness": bool, "workers": int}


def _axis(key: str, spec: Any) -> np.ndarray:
    """The values of the axis ``key`` (``axes.eta``, ``zipped.init.a``): a number, a list of numbers,
    ``{start, stop, num[, log]}`` or ``{uniform = [low, high], num[, seed]}``."""
    if isinstance(spec, dict):
        return _uniform_axis(key, spec) if "uniform" in spec else _spaced_axis(key, spec)
    if isinstance(spec, list) and all(_is_number(x) for x in spec):
        return np.asarray(spec, dtype=float)
    if _is_number(spec):
        return np.asarray([spec], dtype=float)
    raise InputError(f"{key} must be a list of numbers, {{start, stop, num}} or {{uniform, num}}, got {spec!r}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_table(key: str, spec: dict, required: set[str], optional: set[str], form: str) -> None:
    """The table ``key`` has the ``required`` keys, no others than ``optional``, and a positive integer ``num``."""
    unknown, missing = set(spec) - required - optional, required - set(spec)
    if unknown or missing:
        raise InputError(f"{key} must be a list or {form}; "
                         f"{'unknown keys ' + ', '.join(sorted(unknown)) if unknown else 'missing ' + ', '.join(sorted(missing))}")
    if not isinstance(spec["num"], int) or isinstance(spec["num"], bool) or spec["num"] < 1:
        raise InputError(f"{key}.num must be a positive integer, got {spec['num']!r}")


def _spaced_axis(key: str, spec: dict) -> np.ndarray:
    """``num`` values from ``start`` to ``stop``, evenly spaced (``np.linspace``) or, with
    ``log = true``, geometrically (``np.geomspace``)."""
    _check_table(key, spec, {"start", "stop", "num"}, {"log"}, "{start, stop, num}")
    if not (_is_number(spec["start"]) and _is_number(spec["stop"])):
        raise InputError(f"{key}.start and {key}.stop must be numbers, got {spec['start']!r}, {spec['stop']!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise InputError(f"{key}.log must be true or false, got {log!r}")
    start, stop = float(spec["start"]), float(spec["stop"])
    if log and not (start > 0 and stop > 0):
        raise InputError(f"{key}: log spacing needs start > 0 and stop > 0, got {start!r}, {stop!r}")
    return (np.geomspace if log else np.linspace)(start, stop, spec["num"])


def _uniform_axis(key: str, spec: dict) -> np.ndarray:
    """``num`` draws, uniform in ``[low, high)``: NumPy's ``default_rng`` seeded with ``seed``
    (default 0) and the CRC-32 of ``key``, so that axes drawn with the same seed (``a`` and ``b`` of
    random initial points) are independent, and the same config draws the same values."""
    _check_table(key, spec, {"uniform", "num"}, {"seed"}, "{uniform = [low, high], num, seed}")
    bounds = spec["uniform"]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(x) for x in bounds)
            and np.all(np.isfinite(bounds)) and bounds[0] < bounds[1]):
        raise InputError(f"{key}.uniform must be [low, high] with low < high, got {bounds!r}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"{key}.seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return rng.uniform(float(bounds[0]), float(bounds[1]), spec["num"])


def load_config(path: Path) -> dict:
    """Parse a sweep config into ``sweep`` arguments; errors name the offending key."""
    import mfdyn

    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"CONFIG {str(path)!r} cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"CONFIG {str(path)!r} is not valid TOML: {exc}") from None
    unknown = set(raw) - {"problem", "axes", "zipped", "run"}
    if unknown:
        raise InputError(f"unknown section [{sorted(unknown)[0]}] in CONFIG; sections: problem, axes, zipped, run")
    problem_cfg = dict(raw.get("problem", {}))
    family = problem_cfg.pop("family", None)
    if family not in FAMILIES:
        raise InputError(f"problem.family must be one of {', '.join(map(repr, FAMILIES))}, got {family!r}")
    cls_name, fields = FAMILIES[family]
    for key in problem_cfg:
        if key not in fields:
            raise InputError(f"problem.{key} is not a field of {family} problems; fields: {', '.join(fields)}")
    try:
        problem = getattr(mfdyn, cls_name)(**problem_cfg)
    except InputError as exc:
        raise InputError(f"problem: {exc}") from None
    except TypeError as exc:
        raise InputError(f"problem: {exc}") from None
    axes: dict[str, Any] = {}
    for key, spec in raw.get("axes", {}).items():
        axes[key] = _axis(f"axes.{key}", spec)
    for dim, group in raw.get("zipped", {}).items():
        if not isinstance(group, dict) or not group:
            raise InputError(f"zipped.{dim} must be a table of axes")
        axes[dim] = mfdyn.zipped(dim=dim, **{k: _axis(f"zipped.{dim}.{k}", s) for k, s in group.items()})
    if not axes:
        raise InputError("axes: the config has no [axes] section (at least eta is needed)")
    run: dict[str, Any] = {}
    for key, value in raw.get("run", {}).items():
        if key not in RUN_KEYS:
            raise InputError(f"run.{key} is not a run option; options: {', '.join(RUN_KEYS)}")
        typ = RUN_KEYS[key]
        ok = isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise InputError(f"run.{key} must be {typ.__name__}, got {value!r}")
        run[key] = value
    if "steps" not in run:
        raise InputError("run.steps is missing")
    return {"problem": problem, "axes": axes, **run}


def sweep_command(
    config: Path = typer.Argument(..., help="Sweep configuration (TOML)."),
    store: Path = typer.Option(None, "--store", help="Zarr store to write (resumes if it exists)."),
    scheduler: str = typer.Option(None, "--scheduler", help="'threads' (default: this process, all cores), 'processes' (one worker process per core; 10-20% faster for large sweeps after a start of seconds) or a Dask scheduler address tcp://host:port."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> int:
    """Run GD over the grid of CONFIG; print outcome counts (or JSON with --json)."""
    import mfdyn

    kwargs = load_config(config)
    t0 = time.perf_counter()
    try:
        ds = mfdyn.sweep(kwargs.pop("problem"), kwargs.pop("axes"), kwargs.pop("steps"), store=store,
                         scheduler=scheduler, progress=not no_progress, **kwargs)
    except KeyboardInterrupt:
        print(f"interrupted{_stored_chunks(store)}", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    labels, counts = np.unique(ds.outcome.values, return_counts=True)
    summary = {"points": int(ds.outcome.size), "dims": {str(k): int(v) for k, v in ds.outcome.sizes.items()},
               "outcomes": {str(k): int(c) for k, c in zip(labels, counts)}, "seconds": round(seconds, 3),
               "store": None if store is None else str(store)}
    if as_json:
        print_json(summary)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{summary['points']} trajectories in {seconds:.2f} s")
        table.add_column("outcome")
        table.add_column("count", justify="right")
        for k, c in summary["outcomes"].items():
            table.add_row(k, str(c))
        Console().print(table)
    return 0


def _stored_chunks(store: Path | None) -> str:
    """What an interrupted sweep left: the chunks finished in its store, and how to go on."""
    if store is None:
        return " (no --store: nothing kept)"
    from ..sweep.store import read_chunk_done

    try:
        done = read_chunk_done(store)
    except Exception:  # noqa: BLE001 - the store was not created yet (interrupted while planning)
        return f": {str(store)!r} has no finished chunk"
    return (f": {int(done.sum())} of {done.size} chunks are in {str(store)!r}; "
            "run the same command again to compute the rest")


plot_app = typer.Typer(help="Figures of a sweep store.", no_args_is_help=True)


def _open(store: Path):
    import mfdyn

    return mfdyn.open_sweep(store)


def _select(ds, sel: list[str]):
    """``--sel b=0.5`` picks the nearest value on another axis; ``--sel seed=#2`` picks by index."""
    for item in sel or []:
        if "=" not in item:
            raise InputError(f"--sel must look like name=value, got {item!r}")
        name, value = item.split("=", 1)
        if name not in ds.coords and name not in ds.dims:
            raise InputError(f"--sel {name!r} is not an axis; axes: {', '.join(map(str, ds.coords))}")
        if name in ds.coords and not ds[name].dims:
            raise InputError(f"--sel {name}: already at one value ({name} = {ds[name].values.item():g}) after the "
                             f"selections before it")
        dim = ds[name].dims[0] if name in ds.coords else name
        if name not in ds.coords and not value.startswith("#"):
            raise InputError(f"--sel {name}: a zipped dimension is selected by index, e.g. {name}=#0")
        if value.startswith("#"):
            size = ds.sizes[dim]
            try:
                index = int(value[1:])
            except ValueError:
                raise InputError(f"--sel {name}: {value!r} is not an index (#0 .. #{size - 1})") from None
            if not 0 <= index < size:
                raise InputError(f"--sel {name}: index {index} is out of range (#0 .. #{size - 1})")
            ds = ds.isel({dim: index})
        else:
            try:
                target = float(value)
            except ValueError:
                raise InputError(f"--sel {name}: {value!r} is not a number") from None
            if not np.isfinite(target):
                raise InputError(f"--sel {name}: {value!r} is not a finite number")
            idx = int(np.argmin(np.abs(ds[name].values - target)))
            ds = ds.isel({dim: idx})
    return ds


def _one_plane(ds, var: str, x: str, y: str):
    """``ds`` if ``var`` has one value per ``(x, y)`` point once ``--sel`` applied, else the error
    that names the dimensions left and how to choose them."""
    from ..plot.sweep import other_dimensions

    left = other_dimensions(ds, var, x, y)
    if left:
        def example(dim: str) -> str:
            return f"{dim}={float(ds[dim].values[0]):g}" if dim in ds.coords else f"{dim}=#0"
        raise InputError(f"choose one value of {', '.join(left)} with --sel (nearest value, or #index), "
                         f"e.g. {' '.join('--sel ' + example(d) for d in left)}")
    return ds


def _save(fig, out: Path) -> None:
    from ._figures import save_figure

    save_figure(fig, out, "-o", dpi=150, bbox_inches="tight")
    print(str(out))


@plot_app.command("phase")
def plot_phase(store: Path = typer.Argument(...), x: str = typer.Option("eta", "--x"), y: str = typer.Option("a", "--y"),
               sel: list[str] = typer.Option(None, "--sel", help="name=value for other axes"),
               out: Path = typer.Option(Path("phase.png"), "-o", "--out")) -> int:
    """Phase diagram: outcome over (x, y)."""
    from ..plot import phase_diagram

    _save(phase_diagram(_one_plane(_select(_open(store), sel), "outcome", x, y), x, y), out)
    return 0


@plot_app.command("bifurcation")
def plot_bifurcation(store: Path = typer.Argument(...), x: str = typer.Option("eta", "--x"),
                     value: str = typer.Option("loss", "--value", help="'loss' or a coordinate index"),
                     sel: list[str] = typer.Option(None, "--sel"),
                     out: Path = typer.Option(Path("bifurcation.png"), "-o", "--out")) -> int:
    """Bifurcation diagram from the stored orbits (keep_orbit > 0)."""
    from ..plot import bifurcation

    val: Any = int(value) if value.lstrip("-").isdigit() else value
    _save(bifurcation(_select(_open(store), sel), x, val), out)
    return 0


@plot_app.command("heatmap")
def plot_heatmap(store: Path = typer.Argument(...), var: str = typer.Option("final_loss", "--var"),
                 x: str = typer.Option("eta", "--x"), y: str = typer.Option("a", "--y"),
                 log: bool = typer.Option(False, "--log"), sel: list[str] = typer.Option(None, "--sel"),
                 out: Path = typer.Option(Path("heatmap.png"), "-o", "--out")) -> int:
    """Heatmap of a numeric variable over (x, y)."""
    from ..plot import heatmap

    _save(heatmap(_one_plane(_select(_open(store), sel), var, x, y), var, x, y, log=log), out)
    return 0


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.add_typer(plot_app, name="plot")
