"""Gradient descent and gradient flow on any problem family.

GD (heavy-ball when ``momentum > 0``, Polyak's form): ``z' = (z - eta grad f(z)) + momentum v``
with ``v = z - z_prev`` the last displacement, then ``v' = z' - z``; with ``momentum = 0`` this is
``z <- z - eta grad f(z)``, bit for bit the plain step. Gradient flow: ``dz/dt = -grad f(z)``
in real coordinates (MATH.md §0), integrated by diffrax.

Compiled functions are module-level and keyed by the problem's static structure, the recorded
names and the record layout; ``eta``, ``momentum`` and every problem constant are traced, so new
values never recompile.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from . import observables as obs
from .errors import InputError
from .pytree import PyTree, tree_all_finite, tree_where
from .trajectory import Trajectory


def gd_update(problem: Any, params: PyTree, velocity: PyTree, eta: jax.Array, momentum: jax.Array,
              grad: PyTree = None, heavy_ball: bool = True):
    """One step; returns ``(params', velocity')``. Pure; shared by ``gd`` and ``sweep``.

    ``heavy_ball`` (static): Polyak's heavy ball ``z' = (z - eta g) + momentum v``, ``v' = z' - z``
    (``v``: the last displacement, 0 at the start); otherwise plain GD ``z' = z - eta g`` with ``v``
    left unchanged. ``eta g`` is :meth:`~mfdyn.problems.base.Problem.descent` (``grad``: the
    gradient of ``params``, if the caller has it). ``z - eta g`` is evaluated as in the plain step
    and ``momentum v`` added to it, so a heavy-ball step with ``momentum = 0`` gives the plain
    step's bits (adding ``0 v`` changes nothing, fused into a multiply-add or not): a sweep with a
    ``momentum`` axis agrees at its 0 with one without. Every caller picks the same formula for the
    same run, so ``gd`` and ``sweep`` agree bit for bit.
    """
    step = problem.descent(params, eta, grad=grad)
    plain = jax.tree_util.tree_map(lambda p, s: p - s, params, step)
    if not heavy_ball:
        return plain, velocity
    new = jax.tree_util.tree_map(lambda z, vel: z + momentum * vel, plain, velocity)
    return new, jax.tree_util.tree_map(lambda z1, z: z1 - z, new, params)


def guarded_update(problem, carry, eta, momentum, heavy_ball: bool = True):
    """A GD step that freezes at the last finite state and records the step it diverged at.

    ``carry = (params, velocity, step, diverged_at)`` with ``diverged_at = -1`` while finite. The run
    diverges at step ``t`` when ``grad f(z_t)`` is not finite (the loss overflowed at ``z_t``) or the
    new iterate ``z_t`` is not finite; the state then stays at the last iterate before ``t``.
    """
    params, velocity, step, diverged_at = carry
    g = problem.grad(params)
    grad_ok = tree_all_finite(g)
    new_p, new_v = gd_update(problem, params, velocity, eta, momentum, grad=g, heavy_ball=heavy_ball)
    new_ok = tree_all_finite(new_p) & tree_all_finite(new_v)
    alive = diverged_at < 0
    diverged_at = jnp.where(alive & ~grad_ok, step, jnp.where(alive & ~new_ok, step + 1, diverged_at))
    keep = alive & grad_ok & new_ok
    return (tree_where(keep, new_p, params), tree_where(keep, new_v, velocity), step + 1, diverged_at)


@partial(jax.jit, static_argnames=("n_blocks", "every", "remainder", "names", "heavy_ball"))
def _gd_scan(problem, params0, eta, momentum, *, n_blocks: int, every: int, remainder: int, names: tuple[str, ...],
             heavy_ball: bool):
    zero_v = jax.tree_util.tree_map(jnp.zeros_like, params0)
    carry = (params0, zero_v, jnp.asarray(0, jnp.int64), jnp.asarray(-1, jnp.int64))
    step = lambda _, c: guarded_update(problem, c, eta, momentum, heavy_ball)  # noqa: E731
    record = lambda p: obs.evaluate(problem, p, names)  # noqa: E731

    def block(c, _):
        c = jax.lax.fori_loop(0, every, step, c)
        return c, record(c[0])

    carry, recs = jax.lax.scan(block, carry, None, length=n_blocks)
    first = jax.tree_util.tree_map(lambda x: x[None], record(params0))
    recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first, recs)
    if remainder:
        carry = jax.lax.fori_loop(0, remainder, step, carry)
        last = jax.tree_util.tree_map(lambda x: x[None], record(carry[0]))
        recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), recs, last)
    # the last state's own test: a finite z_T whose gradient is not finite (the loss overflowed
    # there) diverged at T, as in a longer run and in the sweep kernel
    params, _, steps, diverged_at = carry
    diverged_at = jnp.where((diverged_at < 0) & ~tree_all_finite(problem.grad(params)), steps, diverged_at)
    return params, diverged_at, recs


def _check_eta(eta: Any) -> jax.Array:
    v.finite_scalar("eta", eta, positive=True)
    return jnp.asarray(eta, dtype=jnp.float64)


def gd(
    problem: Any,
    params0: PyTree,
    eta: float,
    steps: int,
    record: Sequence[str] = ("loss",),
    every: int = 1,
    momentum: float = 0.0,
) -> Trajectory:
    """Run ``steps`` GD steps from ``params0`` and record ``record`` every ``every`` steps.

    Recorded steps are ``0, every, 2 every, ...`` and ``steps`` itself. At the first non-finite state
    the run stops cleanly: ``diverged_at`` is that step, ``final`` the last finite state, and records
    at or after it are dropped. A state whose gradient is not finite (its loss overflowed) diverged
    there too, the last one included (as in :func:`mfdyn.sweep`).
    """
    v.problem(problem)
    params0 = problem.check_params(params0, "params0")
    eta_arr = _check_eta(eta)
    steps = v.integer("steps", steps, minimum=0)
    every = v.integer("every", every, minimum=1)
    v.finite_scalar("momentum", momentum, nonnegative=True)
    names = obs.check_names(record)
    n_blocks, remainder = divmod(steps, every)
    final, diverged_at, recs = _gd_scan(
        problem, params0, eta_arr, jnp.asarray(momentum, jnp.float64),
        n_blocks=n_blocks, every=every, remainder=remainder, names=names, heavy_ball=float(momentum) != 0.0,
    )
    record_steps = np.arange(n_blocks + 1) * every
    if remainder:
        record_steps = np.append(record_steps, steps)
    div = int(diverged_at)
    keep = record_steps < div if div >= 0 else np.ones(record_steps.shape, bool)
    observables = {n: np.asarray(recs[n])[keep] for n in names}
    return Trajectory(
        problem=problem, observables=observables, final=final, diverged_at=None if div < 0 else div,
        method="gd", steps=record_steps[keep], status="diverged" if div >= 0 else "ok",
        config=dict(eta=float(eta), steps=steps, every=every, momentum=float(momentum)),
    )


SOLVERS = {"kvaerno5": "Kvaerno5", "tsit5": "Tsit5", "dopri8": "Dopri8"}  # name -> diffrax solver class


def _diffrax():
    """diffrax, imported on first use (it takes a third of a second or more to import, and only
    gradient flow needs it: ``import mfdyn`` and the command line start faster without it)."""
    import diffrax

    return diffrax


DIVERGENCE_NORM = 1e100  # gradient flow "diverges" once the state's norm passes this (or its loss overflows)


@eqx.filter_jit
def _flow_solve(problem, y0, ts, t1, rtol, atol, solver_name: str, max_steps: int):
    """Returns the states at ``ts`` (``inf`` where not reached), whether the solve ended by blowing up,
    whether it succeeded, and the number of steps."""
    diffrax = _diffrax()
    solver = getattr(diffrax, SOLVERS[solver_name])
    term = diffrax.ODETerm(lambda t, y, args: -problem.flat_grad(y))
    blow_up = diffrax.Event(
        lambda t, y, args, **kw: ~jnp.isfinite(problem.flat_loss(y)) | (jnp.linalg.norm(y) > DIVERGENCE_NORM))
    sol = diffrax.diffeqsolve(
        term, solver(), t0=0.0, t1=t1, dt0=None, y0=y0,
        saveat=diffrax.SaveAt(ts=ts),
        # step onto every saved time: the solvers' dense interpolants are lower order than the steps
        stepsize_controller=diffrax.ClipStepSizeController(diffrax.PIDController(rtol=rtol, atol=atol), step_ts=ts),
        event=blow_up, max_steps=max_steps, throw=False,
    )
    blew_up = sol.event_mask if sol.event_mask is not None else jnp.asarray(False)
    return sol.ys, blew_up, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]


@partial(jax.jit, static_argnames=("names",))
def _flow_observables(problem, ys, names):
    """The observables at every recorded state, one state at a time (``lax.map``): the sharpness and
    singular values are LAPACK calls, and batched ones can deadlock (:mod:`mfdyn._lapack`)."""
    return jax.lax.map(lambda y: obs.evaluate(problem, problem.unflatten(y), names), ys)


STIFF_HORIZON = 1e4
_sharpness = jax.jit(obs.sharpness)


def choose_solver(problem: Any, params0: PyTree, t1: float) -> str:
    """``"kvaerno5"`` if ``t1 * lambda > STIFF_HORIZON`` else ``"tsit5"``.

    ``lambda`` estimates the fastest rate of the flow: the larger of the sharpness at ``params0`` and
    ``2 ||target||_2`` (the sharpness scale near a minimizer, e.g. ``2 y`` for the scalar loss). An
    explicit solver needs at least ~``t1 lambda / 3`` steps for stability, so beyond the threshold
    the implicit solver is cheaper.
    """
    rate = float(_sharpness(problem, params0))
    try:
        rate = max(rate, 2.0 * float(jnp.linalg.norm(problem.target_matrix(), ord=2)))
    except InputError:  # a CustomProblem without a target
        pass
    return "kvaerno5" if t1 * rate > STIFF_HORIZON else "tsit5"


def default_times(t1: float, n: int = 257) -> np.ndarray:
    """``n`` times: ``0`` followed by geometrically spaced times up to ``t1`` (flows of this field
    are log-time), the last exactly ``t1`` (``n = 2``: ``[0, t1]``; ``n = 1``: ``[t1]``)."""
    if t1 == 0:
        return np.zeros(1)
    if n <= 2:
        return np.array([0.0, float(t1)][2 - max(n, 1):])
    start = min(1e-3, t1 / 1e3)
    return np.concatenate([[0.0], np.geomspace(start, t1, n - 1)])


def flow(
    problem: Any,
    params0: PyTree,
    t1: float,
    record: Sequence[str] = ("loss",),
    times: Any = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    solver: str = "auto",
    max_steps: int = 200_000,
) -> Trajectory:
    """Integrate ``dz/dt = -grad f(z)`` from ``params0`` to ``t1`` with an adaptive solver.

    ``solver="auto"`` (default) picks by :func:`choose_solver`: Kvaerno5 (L-stable implicit) when the
    horizon is stiff, so step sizes grow with the time scale of the slowest mode and reaching
    ``t1 = 1e6`` on slow (O(1/t)) problems costs ~ ``log t1`` steps; Tsit5 (explicit, cheaper to
    compile and to step) otherwise. ``"kvaerno5"``, ``"tsit5"``, ``"dopri8"`` force a solver.
    ``times``: the saved times (default :func:`default_times`), sorted, in ``[0, t1]``; the solver
    steps onto each of them, so saved values carry the solver's full accuracy.
    """
    v.problem(problem)
    params0 = problem.check_params(params0, "params0")
    v.finite_scalar("t1", t1, nonnegative=True)
    v.finite_scalar("rtol", rtol, positive=True)
    v.finite_scalar("atol", atol, positive=True)
    v.choice("solver", solver, ("auto", *SOLVERS))
    max_steps = v.integer("max_steps", max_steps, minimum=1)
    names = obs.check_names(record)
    t1 = float(t1)
    if times is None:
        ts = default_times(t1)
    else:
        v.finite_array("times", times, ndim=1, allow_complex=False)
        ts = np.asarray(times, dtype=float)
        if ts.size == 0:
            raise InputError("times must not be empty")
        if np.any(np.diff(ts) < 0) or ts[0] < 0 or ts[-1] > t1:
            raise InputError(f"times must be sorted and lie in [0, t1={t1}], got range [{ts.min()}, {ts.max()}]")
    if solver == "auto":
        solver = choose_solver(problem, params0, t1)
    y0 = problem.flatten(params0)
    if t1 == 0:
        ys, blew_up, ok, nsteps = jnp.broadcast_to(y0, (ts.size, y0.size)), False, True, 0
    else:
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731  (arrays are traced: no recompilation per value)
        ys, blew_up, ok, nsteps = _flow_solve(problem, y0, f64(ts), f64(t1), f64(rtol), f64(atol), solver, max_steps)
    ys = np.asarray(ys)
    finite = np.all(np.isfinite(ys), axis=1)
    n_good = int(np.argmin(finite)) if not finite.all() else ys.shape[0]  # saved times the solve reached
    blew_up, ok = bool(blew_up), bool(ok)
    diverged_at = float(ts[min(n_good, ts.size - 1)]) if blew_up else None  # first saved time not reached
    reached = float(ts[n_good - 1]) if n_good else 0.0
    status = "diverged" if blew_up else "ok" if ok else f"unfinished: max_steps={max_steps} reached after t={reached:.6g}"
    recs = _flow_observables(problem, jnp.asarray(ys[:n_good]), names) if n_good else {n: np.zeros((0,)) for n in names}
    final = problem.unflatten(jnp.asarray(ys[n_good - 1])) if n_good else params0
    return Trajectory(
        problem=problem, observables={n: np.asarray(recs[n]) for n in names}, final=final,
        diverged_at=diverged_at, method="flow", times=ts[:n_good], status=status,
        config=dict(t1=t1, rtol=float(rtol), atol=float(atol), solver=solver, solver_steps=int(nsteps)),
    )
