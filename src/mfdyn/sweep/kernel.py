"""The batched sweep kernel: one jit-compiled function per problem structure and chunk shape.

Every per-trajectory piece (a fused block of steps, the convergence test, a guarded step, the final
observables) is written for ONE trajectory and ``vmap``-ped over the chunk; the loops themselves run
at chunk level with a scalar predicate ("some member is still unsettled"), and a settled member is
frozen by selecting its old state. (A ``vmap`` of a ``while_loop`` does the same logically, but its
batching rule costs 3-5x in throughput on CPU.) A trajectory's arithmetic never depends on which
other trajectories share its chunk, so results are bitwise identical for any chunk size and any
distribution of chunks over workers; the chunk stops as soon as all its members settled.

Schedule of one trajectory (``T = steps``, ``c = check_every``, ``W = tail`` =
``min(max(max_period, keep_orbit), T)``):

1. main phase, ``T - W`` steps: blocks of ``c`` fused GD steps, the convergence test after each
   block; the trajectory is frozen once it converged or diverged. A block runs *unguarded* (plain
   ``gd_update`` steps, unrolled for small problems so XLA fuses them into one loop over the chunk)
   and checks finiteness once at its end; non-finite values are absorbing under GD, so a finite end
   state means every state in the block was finite. A block that ended non-finite is replayed from
   its start with ``guarded_update``, which finds the exact ``diverged_at`` (the replay runs only
   when some member of the chunk needs it, and only that member's state is taken from it);
2. the remaining ``(T - W) mod c`` steps, then the tail: ``W`` guarded steps whose states
   ``z_{T-W}, ..., z_T`` are kept in a buffer (a member that settled keeps repeating its state);
3. a last convergence test at ``T``; period detection on the buffer.

Convergence test at step ``t`` (MATH.md §0 notation): ``||grad f(z_t)|| <= tol`` and, when
``momentum > 0``, also ``||v_t|| <= tol``; ``steps_to_converge`` is the first tested step where it
holds, so it is exact to within ``check_every`` steps. Divergence: ``mfdyn.dynamics.guarded_update``
stops at the last finite state and reports the first non-finite step ``diverged_at``.
Period: the smallest ``k <= max_period`` with ``||z_T - z_{T-k}|| <= 1e-9 ||z_T||`` (flat real
coordinates), 0 if none.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import observables as obs
from ..dynamics import gd_update, guarded_update
from ..pytree import tree_all_finite, tree_norm

PERIOD_RTOL = 1e-9
UNROLL_MAX_COORDINATES = 16  # fully unroll the fused block for problems this small (elementwise work)


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """Everything static about a sweep: it keys the compilation cache together with the shapes."""

    steps: int
    check_every: int
    tail: int
    max_period: int
    keep_orbit: int
    init: str  # "ab" (scalar coordinates), "params0" (fixed), "random" (problem.init(seed, scale, kind))
    init_kind: str
    const_names: tuple[str, ...]
    sharpness: bool
    heavy_ball: bool = True  # False when no momentum is swept: plain GD steps (see gd_update)

    @property
    def main_blocks(self) -> int:
        return (self.steps - self.tail) // self.check_every

    @property
    def main_remainder(self) -> int:
        return (self.steps - self.tail) % self.check_every


def with_constants(base: Any, factory: Callable | None, consts: dict[str, jax.Array]) -> Any:
    """The problem of one trajectory: ``factory(**consts)``, or ``base`` with leaves replaced.

    A swept constant replaces the array field of the same name (a scalar broadcast to the field's
    shape, e.g. one ``weight_decay`` for every layer).
    """
    if factory is not None:
        return factory(**consts)
    problem = base
    for name, value in consts.items():
        leaf = getattr(base, name)
        new = jnp.broadcast_to(jnp.asarray(value, dtype=leaf.dtype), leaf.shape)
        problem = eqx.tree_at(lambda p, n=name: getattr(p, n), problem, new)
    return problem


def _initial_params(problem: Any, vals: dict, params0: Any, spec: KernelSpec) -> Any:
    if spec.init == "ab":
        return (vals["a"], vals["b"])
    if spec.init == "params0":
        return params0
    return problem.init(vals["seed"], vals["scale"], kind=spec.init_kind)


def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per-trajectory select: ``mask`` has shape ``(B,)``, leaves ``(B, ...)``."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


def _per_trajectory(spec: KernelSpec, tol: jax.Array) -> dict[str, Callable]:
    """The pieces of one trajectory; each takes ``(problem, vals, ...)`` and is vmapped by the caller."""

    def init(problem, vals, params0):
        p0 = _initial_params(problem, vals, params0, spec)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, p0)
        return (p0, zeros, jnp.asarray(0, jnp.int64), jnp.asarray(-1, jnp.int64))

    def guarded(problem, vals, c):
        return guarded_update(problem, c, vals["eta"], vals["momentum"], spec.heavy_ball)

    def guarded_steps(n: int):
        def run(problem, vals, c):
            return jax.lax.fori_loop(0, n, lambda _, ci: guarded(problem, vals, ci), c)
        return run

    def fused_block(problem, vals, c):
        """``c`` unguarded steps; returns the new carry, whether its end state (and gradient) is finite,
        and whether it passes the convergence test (one gradient serves both tests)."""
        params, velocity, t, diverged_at = c
        unroll = min(spec.check_every, 16) if problem.num_coordinates <= UNROLL_MAX_COORDINATES else 1

        def plain(_, pv):
            return gd_update(problem, pv[0], pv[1], vals["eta"], vals["momentum"], heavy_ball=spec.heavy_ball)

        p, vel = jax.lax.fori_loop(0, spec.check_every, plain, (params, velocity), unroll=unroll)
        # materialize the block's end state: otherwise XLA may fuse (and recompute) the unrolled chain
        # of steps into each of its consumers below
        p, vel = jax.lax.optimization_barrier((p, vel))
        g = problem.grad(p)
        finite = tree_all_finite(p) & tree_all_finite(vel) & tree_all_finite(g)
        done = (tree_norm(g) <= tol) & ((vals["momentum"] == 0) | (tree_norm(vel) <= tol))
        return (p, vel, t + spec.check_every, diverged_at), finite, finite & done

    def converged(problem, vals, c):
        params, velocity, _, diverged_at = c
        small_grad = tree_norm(problem.grad(params)) <= tol
        still = (vals["momentum"] == 0) | (tree_norm(velocity) <= tol)
        return (diverged_at < 0) & small_grad & still

    def finals(problem, vals, c, buffer, unsettled):
        params, _, _, diverged_at = c
        period = jnp.asarray(0, jnp.int32)
        if spec.max_period:
            k = jnp.arange(1, spec.max_period + 1)
            gaps = jnp.linalg.norm(buffer[spec.tail] - buffer[spec.tail - k], axis=1)  # (max_period,)
            match = gaps <= PERIOD_RTOL * jnp.linalg.norm(buffer[spec.tail])
            period = jnp.where(jnp.any(match) & unsettled, k[jnp.argmax(match)], 0).astype(jnp.int32)
        out = dict(
            period=period,
            final_loss=problem.loss(params),
            final_imbalance=obs.imbalance_norm(problem, params),
            final_sharpness=obs.sharpness(problem, params) if spec.sharpness else jnp.asarray(jnp.nan),
            final_params=problem.flatten(params),
        )
        if spec.keep_orbit:
            orbit = buffer[spec.tail + 1 - spec.keep_orbit:]
            orbit = jnp.where(diverged_at >= 0, jnp.nan, orbit)
            out["orbit"] = orbit
            out["orbit_loss"] = jax.vmap(problem.flat_loss)(orbit)
        return out

    return dict(init=init, guarded_steps=guarded_steps, fused_block=fused_block, converged=converged,
                finals=finals, flatten=lambda problem, vals, c: problem.flatten(c[0]))


@partial(jax.jit, static_argnames=("spec", "factory"))
def run_chunk(problem: Any, values: dict, params0: Any, tol: jax.Array, *, spec: KernelSpec,
              factory: Callable | None = None) -> dict:
    """Run a chunk: ``values[name]`` holds one entry per trajectory (all of the same length ``B``).

    ``values`` must hold ``eta`` and ``momentum``, the initialization axes of ``spec.init`` and the
    swept constants ``spec.const_names``. Returns a dict of arrays with leading dimension ``B``.
    """
    if spec.const_names or factory is not None:
        def make(vals):
            return with_constants(problem, factory, {n: vals[n] for n in spec.const_names})
        problems, p_axis = jax.vmap(make)(values), 0
    else:
        problems, p_axis = problem, None
    pieces = _per_trajectory(spec, tol)

    def batched(name_or_fn, *extra_axes):
        fn = pieces[name_or_fn] if isinstance(name_or_fn, str) else name_or_fn
        return partial(jax.vmap(fn, in_axes=(p_axis, 0, *extra_axes)), problems, values)

    converged = batched("converged", 0)
    carry = batched("init", None)(params0)
    conv_step = jnp.where(converged(carry), 0, -1).astype(jnp.int64)

    def unsettled(c, conv):
        return (c[3] < 0) & (conv < 0)

    # 1. main phase: blocks of fused steps, convergence test after each
    fused_block = batched("fused_block", 0)
    replay = batched(pieces["guarded_steps"](spec.check_every), 0)

    def main_cond(state):
        k, c, conv = state
        return (k < spec.main_blocks) & jnp.any(unsettled(c, conv))

    def main_body(state):
        k, c, conv = state
        live = unsettled(c, conv)
        fast, finite, done = fused_block(c)
        new = _where(live & finite, fast, c)
        # a block that ended non-finite diverged inside it: replay it with guarded steps for the exact
        # step (a diverged trajectory never passes the convergence test, so `done` needs no update)
        need = live & ~finite
        new = jax.lax.cond(jnp.any(need), lambda: _where(need, replay(c), new), lambda: new)
        conv = jnp.where(live & done, fast[2], conv)
        return k + 1, new, conv

    _, carry, conv_step = jax.lax.while_loop(main_cond, main_body, (jnp.asarray(0, jnp.int64), carry, conv_step))

    # 2. leftover steps and the recorded tail
    if spec.main_remainder:
        live = unsettled(carry, conv_step)
        rest = batched(pieces["guarded_steps"](spec.main_remainder), 0)
        carry = jax.lax.cond(jnp.any(live), lambda: _where(live, rest(carry), carry), lambda: carry)
    flatten = batched("flatten", 0)
    z = flatten(carry)  # (B, n)
    buffer = jnp.broadcast_to(z[:, None, :], (z.shape[0], spec.tail + 1, z.shape[1]))  # rows z_{T-W} .. z_T
    one_step = batched(pieces["guarded_steps"](1), 0)

    def tail_cond(state):
        i, c, _ = state
        return (i < spec.tail) & jnp.any(unsettled(c, conv_step))

    def tail_body(state):
        i, c, buf = state
        c = _where(unsettled(c, conv_step), one_step(c), c)
        return i + 1, c, buf.at[:, i + 1].set(flatten(c))

    def fill_rest(state):
        """Rows after an early stop repeat each member's (frozen) state."""
        i, c, buf = state
        rows = jnp.arange(spec.tail + 1)[None, :, None]
        return jnp.where(rows > i, flatten(c)[:, None, :], buf)

    state = jax.lax.while_loop(tail_cond, tail_body, (jnp.asarray(0, jnp.int64), carry, buffer))
    _, carry, _ = state
    buffer = fill_rest(state)

    # 3. last convergence test and period detection
    conv_step = jnp.where((conv_step < 0) & converged(carry), carry[2], conv_step)
    live = unsettled(carry, conv_step)
    out = jax.vmap(pieces["finals"], in_axes=(p_axis, 0, 0, 0, 0))(problems, values, carry, buffer, live)
    out.update(diverged_at=carry[3], steps_to_converge=conv_step)
    return out
