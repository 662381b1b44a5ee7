"""``mfdyn.sweep``: run GD over a grid of step sizes, initializations, problem constants and seeds.

See :func:`sweep` for the contract; ``kernel`` for the schedule and the exact convergence and
periodicity tests; ``classify`` for the outcome labels; ``store`` for the resumable Zarr layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import types
import uuid
from functools import partial
from typing import Any, Callable, Mapping

import jax
import numpy as np
import xarray as xr

from .. import _validate as v
from ..errors import InputError
from ..problems import Problem, ScalarFactorization
from . import memory
from . import store as st
from .classify import LABELS, decode
from .distribute import (ChunkJob, LANE, cluster_llvm_options, cluster_platform, dask_client, kernel_platform,
                         local_workers, padded_size, run_dask, run_local, run_processes)
from .grid import Grid, _axis_values, chunk_ranges, grid_from_config, make_grid
from .kernel import KernelSpec, kernel_llvm_options, needs_scaled_test, step_unroll, wanted_llvm_options
from .progress import SweepProgress

STEP_AXES = ("eta", "momentum")
LOCAL_SCHEDULERS = ("threads", "processes")
NONNEGATIVE_CONSTANTS = ("quartic", "weight_decay", "balance")
CACHE_BYTES = 4 << 20  # a tile's hot working set is kept under this (L2 + a share of L3)
TILES_PER_CHUNK = 8
CHUNKS_PER_WORKER = 4
ACCELERATOR_CHUNK_BYTES = 2 << 30  # a GPU chunk's state (about 12 float64 per coordinate and orbit step, twice) ...
ACCELERATOR_CHUNK_MAX = 1 << 21  # ... and its points at most (a unit of progress and resumption)


# ---- problem description (for the configuration and the store fingerprint) ----------------
def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _describe_value(x: Any) -> Any:
    if isinstance(x, (jax.Array, np.ndarray)) or np.isscalar(x) and not isinstance(x, str):
        arr = np.asarray(x)
        if arr.dtype.kind in "fciub" and arr.size <= 16:
            return arr.real.tolist() if arr.dtype.kind != "c" else [arr.real.tolist(), arr.imag.tolist()]
        return f"array{arr.shape}:{arr.dtype}:{_digest(arr.tobytes())}"
    if callable(x):
        return _describe_callable(x)
    if isinstance(x, (tuple, list)):
        return [_describe_value(y) for y in x]
    return repr(x)


def _describe_code(code: types.CodeType) -> bytes:
    """A function body as bytes: its bytecode, constants (nested functions described the same way:
    the ``repr`` of a code object holds its memory address, which differs from run to run) and names."""
    consts = [_describe_code(c) if isinstance(c, types.CodeType) else repr(c).encode() for c in code.co_consts]
    return b"|".join([code.co_code, *consts, repr(code.co_names).encode()])


def _describe_object(value: Any) -> bytes:
    try:
        return json.dumps(_describe_value(value)).encode()
    except (ValueError, TypeError):
        return type(value).__name__.encode()


def _describe_callable(fn: Callable) -> str:
    """The name of a factory and a digest of what it computes: its code (:func:`_describe_code`),
    the values of its closure cells and default arguments, and for a ``functools.partial`` the
    function and its bound arguments. (A global it reads is not seen here; the values of the
    problems it builds are recorded beside it: :func:`_describe_factory_values`.)"""
    if isinstance(fn, partial):
        inner = _describe_callable(fn.func)
        bound = _describe_object([list(fn.args), {k: fn.keywords[k] for k in sorted(fn.keywords)}])
        return f"functools.partial({inner})#{_digest(bound)}"
    code = getattr(fn, "__code__", None)
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    if code is None:
        return name
    parts = [_describe_code(code), _describe_object(list(fn.__defaults__ or ())),
             _describe_object(dict(sorted((fn.__kwdefaults__ or {}).items())))]
    parts += [_describe_object(cell.cell_contents) for cell in fn.__closure__ or ()]
    return f"{name}#{_digest(b'|'.join(parts))}"


def _describe_factory_values(problems: list) -> str:
    """A digest of the problems a factory built (their classes and array leaves): a store
    made with a factory that computes other problems, however it changed (a global it reads, a
    helper it calls), is refused on resume."""
    parts = []
    for problem in problems:  # (not the treedef's text: a static field may be a function, shown with its address)
        leaves = jax.tree_util.tree_leaves(problem)
        parts.append(f"{type(problem).__module__}.{type(problem).__qualname__}/{len(leaves)}".encode())
        parts += [np.ascontiguousarray(leaf).tobytes() + str(np.shape(leaf)).encode() for leaf in map(np.asarray, leaves)]
    return _digest(b"|".join(parts))


def describe_problem(problem: Any, factory: Callable | None) -> dict:
    fields = {f.name: _describe_value(getattr(problem, f.name)) for f in dataclasses.fields(problem)}
    out = {"class": type(problem).__name__, "fields": fields}
    if factory is not None:
        out["factory"] = _describe_callable(factory)
    return out


# ---- planning: validate everything before any work ------------------------------------------
@dataclasses.dataclass
class Plan:
    grid: Grid
    job: ChunkJob
    config: dict
    fingerprint: str
    layout: dict
    chunk: int


def _resolve_problem(problem: Any, axes: Mapping) -> tuple[Any, Callable | None]:
    if isinstance(problem, Problem):
        return problem, None
    if not callable(problem):
        raise InputError(f"problem must be an mfdyn problem or a factory `lambda **kw: Problem(...)`, got {problem!r}")
    names = [n for n in _flat_axis_names(axes) if n not in STEP_AXES + ("a", "b", "seed", "scale")]
    first = {n: _first_value(axes, n) for n in names}
    try:
        base = problem(**first)
    except InputError:
        raise
    except TypeError as exc:
        raise InputError(f"problem factory does not accept the swept constants {names}: {exc}") from None
    if not isinstance(base, Problem):
        raise InputError(f"problem factory must return an mfdyn problem, got {type(base).__name__}")
    return base, problem


def _check_traceable(factory: Callable, names: tuple[str, ...]) -> None:
    """The kernel calls ``factory`` on traced values (one per trajectory, under ``vmap``): a factory
    that needs concrete numbers (``float(s)``, ``int(r)``, ``np.diag([1, s])`` of a swept value) is
    refused here with the one line of JAX's message that names the operation."""
    if not names:
        return
    try:
        jax.eval_shape(lambda kw: factory(**kw), {n: jax.ShapeDtypeStruct((), np.float64) for n in names})
    except (jax.errors.JAXTypeError, jax.errors.JAXIndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"problem factory cannot take traced values of the swept constants {list(names)}: build the "
                         f"problem from them with jax.numpy, not float(), int() or numpy ({first})") from None


def _flat_axis_names(axes: Mapping) -> list[str]:
    from .grid import Zipped

    names = []
    for key, value in axes.items():
        names += list(value.axes) if isinstance(value, Zipped) else [key]
    return names


def _first_value(axes: Mapping, name: str) -> Any:
    from .grid import Zipped

    for key, value in axes.items():
        if isinstance(value, Zipped) and name in value.axes:
            return float(np.asarray(value.axes[name])[0])
        if key == name:
            return float(_axis_values(name, value)[0])
    raise KeyError(name)


def _constant_fields(base: Problem) -> tuple[str, ...]:
    """Array fields of a problem that a scalar sweep value can replace (scalars and vectors)."""
    out = []
    for f in dataclasses.fields(base):
        if f.metadata.get("static"):
            continue
        value = getattr(base, f.name)
        if isinstance(value, jax.Array) and value.ndim <= 1 and not np.iscomplexobj(value):
            out.append(f.name)
    return tuple(out)


def plan_sweep(problem, axes, steps, *, tol, max_period, keep_orbit, chunk, init_kind, params0, check_every,
               sharpness, workers, platform: str = "cpu", local: bool = True,
               llvm: Callable[[str], str] | None = None) -> Plan:
    """Validates everything and plans the chunks. ``platform``: where the kernels run, and ``llvm``:
    the LLVM options their kernel runs with, given those wanted for it (default:
    :func:`~mfdyn.sweep.kernel.kernel_llvm_options` in this process; both recorded in the
    configuration: either may change the last bits); ``local``: in this process, whose device then
    sizes the chunks (else they are sized for CPU cores)."""
    steps = v.integer("steps", steps, minimum=1)
    v.finite_scalar("tol", tol, positive=True)
    if float(tol) < np.finfo(np.float64).tiny:  # (XLA:CPU reads a subnormal as 0)
        raise InputError(f"tol must be at least {np.finfo(np.float64).tiny:.6g} (a normal float64), got {float(tol):g}")
    max_period = v.integer("max_period", max_period, minimum=0)
    keep_orbit = v.integer("keep_orbit", keep_orbit, minimum=0)
    if keep_orbit > steps:
        raise InputError(f"keep_orbit must be <= steps = {steps}, got {keep_orbit}")
    check_every = v.integer("check_every", check_every, minimum=1)
    if chunk is not None:
        chunk = v.integer("chunk", chunk, minimum=1)
    if workers is not None:
        v.integer("workers", workers, minimum=1)
    if not isinstance(axes, Mapping) or not axes:
        raise InputError(f"axes must be a non-empty dict of named 1-D arrays, got {axes!r}")

    base, factory = _resolve_problem(problem, axes)
    scalar = isinstance(base, ScalarFactorization)
    init_axes = ("a", "b", "seed", "scale") if scalar else ("seed", "scale")
    constants = ("*",) if factory is not None else _constant_fields(base)
    names = _flat_axis_names(axes)
    if factory is None:
        allowed = STEP_AXES + init_axes + constants
        for n in names:
            if n not in allowed:
                hint = " (to sweep a matrix constant pass a factory `lambda **kw: Problem(...)`)" if hasattr(base, n) else ""
                raise InputError(f"unknown axis name {n!r} for {type(base).__name__}; allowed: {', '.join(allowed)}{hint}")
        grid = make_grid(axes, allowed)
    else:
        grid = make_grid(axes)
    reserved = st.reserved_names()
    for name in (*grid.dim_names, *grid.axis_names):
        if name in reserved or name.startswith(st.AXIS_VALUES.format("")):
            raise InputError(f"axis name {name!r} is taken by the results ({', '.join(sorted(reserved))}); rename it")
    const_names = tuple(n for n in grid.axis_names if n not in STEP_AXES + init_axes)
    if "eta" not in grid.axis_names:
        raise InputError("axes must include the step size 'eta' (a 1-element axis is fine)")
    _check_axis_signs(grid, const_names)
    built = [base]
    if factory is not None:
        for name in const_names:  # every value of every constant must build a valid problem
            for value in np.unique(grid.axis(name)[1]):
                built.append(factory(**{n: (float(value) if n == name else _first_value(axes, n)) for n in const_names}))
        _check_traceable(factory, const_names)

    has_ab = [n for n in ("a", "b") if n in grid.axis_names]
    if has_ab:
        if len(has_ab) != 2:
            raise InputError(f"axes must give both initial coordinates 'a' and 'b', got only {has_ab[0]!r}")
        if params0 is not None or {"seed", "scale"} & set(grid.axis_names):
            raise InputError("axes 'a', 'b' fix the initial point: do not also pass params0 or sweep seed/scale")
        init = "ab"
    elif params0 is not None:
        if {"seed", "scale"} & set(grid.axis_names):
            raise InputError("params0 fixes the initial point: do not also sweep 'seed' or 'scale'")
        params0 = base.check_params(params0, "params0")
        init = "params0"
    else:
        if scalar and not {"seed", "scale"} & set(grid.axis_names):
            raise InputError("scalar sweeps need initial coordinates: axes 'a' and 'b' (or 'seed'/'scale', or params0)")
        v.choice("init_kind", init_kind, tuple(base.init_kinds))
        init = "random"

    n_coords = base.num_coordinates
    wanted = wanted_llvm_options(base)
    tail = min(max(max_period, keep_orbit), steps)
    spec = KernelSpec(steps=steps, check_every=check_every, tail=tail, max_period=min(max_period, tail),
                      keep_orbit=keep_orbit, init=init, init_kind=init_kind if init == "random" else "",
                      const_names=const_names, sharpness=bool(sharpness),
                      heavy_ball="momentum" in grid.axis_names, scaled_test=needs_scaled_test(float(tol)),
                      tile=tile_size(n_coords),
                      unroll=step_unroll(base.generalized(const_names) if factory is None else base))
    if chunk is None:
        sized_for = platform if local else "cpu"
        chunk = default_chunk(grid.size, n_coords, local_workers(workers, sized_for), sized_for, keep_orbit)
    config = {
        "mfdyn_version": _version(),
        "problem": describe_problem(base, factory),
        "grid": grid.as_config(),
        "steps": steps, "tol": float(tol), "max_period": max_period, "keep_orbit": keep_orbit,
        "check_every": check_every, "init": init, "init_kind": spec.init_kind, "sharpness": bool(sharpness),
        "params0": None if params0 is None else _describe_value(jax.tree_util.tree_leaves(params0)),
        "num_coordinates": n_coords, "platform": platform,
        "xla_llvm_options": kernel_llvm_options(wanted, platform) if llvm is None else llvm(wanted),
    }
    if init == "random":  # (the starts' draws: problem.init_batch; stores of the in-kernel draws are refused)
        config["init_draws"] = "init_batch"
    if factory is not None:
        config["problem"]["factory_values"] = _describe_factory_values(built)
    fingerprint = _digest(json.dumps(config, sort_keys=True).encode())
    job = ChunkJob(problem=base, factory=factory, params0=params0, spec=spec, tol=float(tol), padded=padded_size(chunk),
                   llvm=wanted)
    return Plan(grid, job, config, fingerprint, st.variable_layout(n_coords, keep_orbit), chunk)


def _check_axis_signs(grid: Grid, const_names: tuple[str, ...]) -> None:
    for name, rule in (("eta", "positive"), ("scale", "positive"), ("momentum", "nonnegative")):
        if name in grid.axis_names:
            vals = grid.axis(name)[1]
            bad = vals[vals <= 0] if rule == "positive" else vals[vals < 0]
            if bad.size:
                raise InputError(f"axis {name!r} must be {'> 0' if rule == 'positive' else '>= 0'}, got {bad[0].item()!r}")
    for name in const_names:
        if name in NONNEGATIVE_CONSTANTS:
            vals = grid.axis(name)[1]
            if np.any(vals < 0):
                raise InputError(f"axis {name!r} must be >= 0, got {vals[vals < 0][0].item()!r}")


def tile_size(n_coords: int) -> int:
    """Trajectories advanced together in the kernel: the hot state (about 12 float64 per coordinate)
    within ``CACHE_BYTES``, a power of two between ``LANE`` and 4096."""
    per_point = 8 * 12 * max(n_coords, 1)
    return 2 ** int(math.log2(max(LANE, min(4096, CACHE_BYTES // per_point))))


def default_chunk(n_points: int, n_coords: int, workers: int, platform: str = "cpu", keep_orbit: int = 0) -> int:
    """Points per chunk (the unit of storage, resumption and distribution).

    On a CPU: ``TILES_PER_CHUNK`` tiles, so that the kernel's compaction of settled trajectories
    has room to work, but small enough that every worker gets about ``CHUNKS_PER_WORKER`` chunks.
    On an accelerator (one tile per chunk, :func:`~mfdyn.sweep.distribute.executed_spec`): a
    worker's share of the grid, at most ``ACCELERATOR_CHUNK_MAX`` points and
    ``ACCELERATOR_CHUNK_BYTES`` of state, the ``keep_orbit`` last states included (each chunk pays
    the kernel's fixed loop trips once; the kernel pads a chunk to twice its size)."""
    if platform != "cpu":
        fits = ACCELERATOR_CHUNK_BYTES // (2 * 8 * (12 + keep_orbit) * max(n_coords, 1))
        share = padded_size(-(-n_points // workers))
        return max(LANE, min(share, ACCELERATOR_CHUNK_MAX, fits // LANE * LANE))
    share = padded_size(-(-n_points // (workers * CHUNKS_PER_WORKER)))
    return max(1, min(TILES_PER_CHUNK * tile_size(n_coords), share))


def _version() -> str:
    from .. import __version__

    return __version__


# ---- running ------------------------------------------------------------------------------
def sweep(
    problem: Any,
    axes: Mapping[str, Any],
    steps: int,
    *,
    tol: float = 1e-12,
    max_period: int = 64,
    keep_orbit: int = 0,
    chunk: int | None = None,
    store: Any = None,
    scheduler: Any = None,
    progress: bool = True,
    init_kind: str = "gaussian",
    params0: Any = None,
    check_every: int = 16,
    sharpness: bool = True,
    workers: int | None = None,
) -> xr.Dataset:
    """Run GD from every point of a grid and classify each trajectory.

    ``problem``: an mfdyn problem, or a factory ``lambda **kw: Problem(...)`` called (inside the
    compiled kernel, with traced values) with the swept constants as keywords. ``axes``: a dict of
    named 1-D arrays forming a Cartesian grid (:func:`mfdyn.zipped` groups axes that vary together);
    names: ``eta`` (required), ``momentum`` (heavy ball, default 0; any value >= 0 is run, also >= 1, where heavy
    ball does not converge on a quadratic), any scalar or vector array field
    of the problem (``target``, ``quartic``, ``weight_decay`` (one value for all layers), ``balance``;
    anything with a factory), the scalar family's initial coordinates ``a``, ``b``, and ``seed``,
    ``scale`` (random init ``problem.init(seed, scale, kind=init_kind)``; defaults 0 and 1).
    ``params0`` fixes one initial point for all non-scalar trajectories instead.

    Returns a Dataset with dims = the grid dimensions in the order given and variables ``outcome``
    (``converged``/``periodic``/``bounded``/``diverged``/``unfinished``, see
    :mod:`mfdyn.sweep.classify`), ``period``, ``steps_to_converge``
    (the first step with ``||grad f|| <= tol``, and ``||v|| <= tol`` under momentum, located exactly
    within its check block; -1 if not converged: see :mod:`mfdyn.sweep.kernel` for the one case of
    plain GD where a block can hide an earlier such step),
    ``diverged_at`` (first non-finite step; -1 if finite), ``final_loss``, ``final_sharpness`` (largest Hessian eigenvalue;
    NaN with ``sharpness=False``), ``final_imbalance`` (norm of ``problem.imbalance``),
    ``final_params`` (flat real coordinates, over ``coord``), and with ``keep_orbit=K`` the last K
    states ``orbit`` (over ``orbit_step``, ``coord``; oldest first, the last is the final state; NaN for a diverged point) and their losses ``orbit_loss``. "final" is the
    state where the trajectory stopped: at convergence, at the last finite state, or after ``steps``.
    Convergence and periodicity tests: see :mod:`mfdyn.sweep.kernel` (``check_every``: steps fused
    between two tests, a speed knob; events inside a block are located exactly). Attributes: the
    configuration (``mfdyn_config``, JSON: an axis of more than 1024 values is recorded by its size,
    first and last values and SHA-256, its values being the coordinates) and version. The arrays of a
    result in memory may reuse the memory of results this process dropped (:mod:`mfdyn.sweep.memory`:
    at most 512 MiB are held for that; ``mfdyn.sweep.memory.release()`` hands them back).

    ``chunk``: trajectories per chunk, the unit of storage, resumption and distribution (default:
    8 cache-sized tiles, at most a quarter of a worker's share; on a GPU the whole grid, up to
    2^21 points); ``workers``: local threads or processes (default: a process per core; a thread
    per core and one more, which keeps the cores busy while a thread builds a chunk's inputs or
    stores its results; one on a GPU);
    ``store="out.zarr"``: write chunk by chunk, resume on a second call with the same arguments,
    refuse a store of another configuration; ``scheduler``: ``None`` (or ``"threads"``) runs the
    chunks in this process, on JAX's default device: all local cores of a CPU, or a GPU (one tile
    per chunk there, :func:`~mfdyn.sweep.distribute.executed_spec`; ``JAX_PLATFORMS=cpu`` or
    ``with jax.default_device(jax.devices("cpu")[0])`` keeps a sweep on the CPU); ``"processes"``
    on a pool of local worker processes, one per core, on the CPU, started on first use and kept
    for the session (:mod:`mfdyn.sweep.processes`: as fast as the threads on the scalar
    benchmark, 1.20x the fused reference's time for both; the start and each worker's compilation
    on one core cost seconds once, 9.2-15.5 s for that benchmark on 2 cores); a Dask ``Client`` or
    ``"tcp://host:port"`` runs them on a cluster. The result is bitwise identical for any
    ``chunk``, ``workers``, ``scheduler`` and interruption on one platform with the same LLVM options;
    a GPU rounds differently from a CPU, and XLA's sums over matrix entries may round differently
    under other LLVM options (the kernel of a small problem is compiled with loop interleaving:
    :mod:`mfdyn._llvm_options`): the configuration records the ``platform`` and the kernel's
    ``xla_llvm_options``, so a store is resumed only where both are those that began it.
    """
    if store is not None and (not isinstance(store, (str, os.PathLike)) or not os.fspath(store)):
        raise InputError(f"store must be a path (a non-empty str or os.PathLike), got {v.describe(store)}")
    if isinstance(scheduler, str) and scheduler not in LOCAL_SCHEDULERS and "://" not in scheduler:
        raise InputError(f"scheduler must be one of {LOCAL_SCHEDULERS}, an address like 'tcp://host:port' or a "
                         f"dask Client, got {scheduler!r}")
    # where the kernels run (part of the configuration: a GPU rounds differently from a CPU)
    local = _in_process(scheduler)
    client, owned = (None, False) if local or scheduler == "processes" else dask_client(scheduler)
    platform = kernel_platform() if local else "cpu" if client is None else cluster_platform(client)
    # the LLVM options of the kernel where it runs (the worker processes of "processes" take this
    # process's environment, and run on the CPU)
    llvm = partial(kernel_llvm_options, platform=platform) if client is None else partial(cluster_llvm_options, client)
    try:
        plan = plan_sweep(problem, axes, steps, tol=tol, max_period=max_period, keep_orbit=keep_orbit, chunk=chunk,
                          init_kind=init_kind, params0=params0, check_every=check_every, sharpness=sharpness,
                          workers=workers, platform=platform, local=local, llvm=llvm)
        return _run(plan, store, scheduler if client is None else client, workers, progress)
    finally:
        if owned:
            client.close()


def _in_process(scheduler: Any) -> bool:
    """Whether ``scheduler`` runs the chunks on threads of this process."""
    return scheduler is None or scheduler == "threads"


def _run(plan: Plan, store: Any, scheduler: Any, workers: int | None, progress: bool) -> xr.Dataset:
    """Runs the chunks of a plan not yet in ``store`` and returns the gridded Dataset."""
    grid, chunk_size = plan.grid, plan.chunk
    path = None
    if store is not None:
        path, chunk_size, done = st.open_or_create(store, plan.config, plan.fingerprint, grid.size, chunk_size,
                                                   plan.layout, grid.long_axes())
        plan.job = dataclasses.replace(plan.job, padded=padded_size(chunk_size))
    ranges = chunk_ranges(grid.size, chunk_size)
    if store is None:
        done = np.zeros(len(ranges), dtype=np.int8)
    todo = [i for i in range(len(ranges)) if not done[i]]
    pieces = [(i, ranges[i]) for i in todo]
    values_of = partial(_chunk_values, grid, spec=plan.job.spec)  # (called where the chunk runs)
    # in memory every chunk is run and overwrites its rows: no fill needed (and the arrays may reuse
    # the memory of results dropped since: :mod:`mfdyn.sweep.memory`)
    flat = st.empty_results(grid.size, plan.layout, fill=False, empty=memory.empty) if path is None else None
    if flat is not None:
        flat["outcome"] = memory.empty(grid.size, LABELS.dtype)
    if _in_process(scheduler):
        # in memory, each chunk thread puts its own results in place (5-6% faster than the caller's
        # thread waking for every chunk to do it: the scalar benchmark, per-round medians 0.94, 0.94)
        sink = partial(_put_rows, flat, ranges, plan.layout) if flat is not None else None
        runner = run_local(plan.job, values_of, pieces, workers, sink=sink)
    elif scheduler == "processes":
        runner = run_processes(plan.job, values_of, pieces, workers)
    else:
        runner = run_dask(plan.job, values_of, pieces, scheduler, key_prefix=f"mfdyn-sweep-{plan.fingerprint}-{uuid.uuid4().hex[:8]}")
    writer = st.ChunkWriter(path, plan.layout) if path is not None else contextlib.nullcontext()
    with SweepProgress(len(ranges), plan.config["steps"], progress) as bar, writer:
        bar.set_total(grid.size, done=[stop - start for i, (start, stop) in enumerate(ranges) if done[i]])
        for idx, result in runner:
            start, stop = ranges[idx]
            if path is not None:
                writer.write(idx, start, stop, result)
            elif result is not None:  # (a chunk from another process, put in place while the others run)
                _put_rows(flat, ranges, plan.layout, idx, result)
            bar.advance(stop - start)
    if path is not None:
        flat, _ = st.read_flat(path, plan.layout, chunk_size)
    return st.gridded(flat, grid, plan.layout, _attrs(plan.config, grid.size, grid.size))


def _put_rows(flat: dict[str, np.ndarray], ranges: list[tuple[int, int]], layout: dict, idx: int, result: dict) -> None:
    """A chunk's results into its rows of the in-memory result (its outcome labels decoded)."""
    start, stop = ranges[idx]
    for name in layout:
        if name == "outcome":
            decode(result[name], out=flat[name][start:stop])
        else:
            flat[name][start:stop] = result[name]


def _chunk_values(grid: Grid, bounds: tuple[int, int], *, spec: KernelSpec) -> dict[str, np.ndarray]:
    """The per-point axis values of the chunk ``bounds`` (built where the chunk runs)."""
    return _with_defaults(grid.values(*bounds), spec)


def _with_defaults(values: dict[str, np.ndarray], spec: KernelSpec) -> dict[str, np.ndarray]:
    """Fill the axes the kernel reads: ``momentum = 0`` (heavy-ball steps); random init ``seed = 0``, ``scale = 1``."""
    n = len(next(iter(values.values())))
    defaults = {"momentum": np.zeros(n)} if spec.heavy_ball else {}  # (plain GD steps read no momentum)
    if spec.init == "random":
        defaults.update(seed=np.zeros(n, np.int64), scale=np.ones(n))
    return {**defaults, **values}


def _attrs(config: dict, computed: int, size: int) -> dict:
    """The result's attributes; ``computed`` of the ``size`` points have results (all but in a partial store)."""
    return {"mfdyn_config": json.dumps(config), "mfdyn_version": config["mfdyn_version"],
            "problem": config["problem"]["class"], "steps": config["steps"], "tol": config["tol"],
            "max_period": config["max_period"], "keep_orbit": config["keep_orbit"],
            "check_every": config["check_every"], "mfdyn_points_computed": f"{computed} of {size}"}


def open_sweep(path: Any) -> xr.Dataset:
    """Open a sweep store as the gridded Dataset with decoded outcomes (points of chunks not
    computed yet read ``unfinished`` with NaN / -1 values; the attribute ``mfdyn_points_computed``,
    e.g. ``"3000 of 8000"``, says how much of the grid the store holds)."""
    from pathlib import Path

    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(f"store {str(path)!r} does not exist")
    attrs = st.read_attrs(path)
    config = json.loads(attrs["mfdyn_config"])
    grid = grid_from_config(config["grid"], lambda name: st.read_axis(path, name))
    layout = st.variable_layout(config["num_coordinates"], config["keep_orbit"])
    flat, computed = st.read_flat(path, layout, int(attrs["mfdyn_chunk"]))
    return st.gridded(flat, grid, layout, _attrs(config, computed, grid.size))
