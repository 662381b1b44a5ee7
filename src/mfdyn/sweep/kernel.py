"""The batched sweep kernel: one jit-compiled function per problem structure and chunk shape.

Every per-trajectory piece (a fused block of steps, the convergence test, a recorded replay, the
final observables) is written for ONE trajectory and ``vmap``-ped over a *tile* of trajectories; the
loops run at tile level with a scalar predicate ("some member is still unsettled").

Compaction. A chunk of ``C`` trajectories runs in *rounds* of ``blocks_per_round`` check blocks.
At the start of a round the indices of the unsettled members are gathered again (``jnp.nonzero``)
when that lets the round run fewer tiles, and only they are advanced: in full tiles of ``tile``
members (sized for the cache), then in narrow tiles (``tile / NARROW_FACTOR``) for the last few.
A settled trajectory costs nothing afterwards, so the work of a chunk is about the sum of its
trajectories' own lengths, not its slowest member's length times ``C``. Within a tile a settled
member is frozen by selecting its old state. A trajectory's arithmetic never depends on which other
trajectories share its tile or chunk, so results are bitwise identical for any chunk size, tile
width and distribution of chunks over workers.

Schedule of one trajectory (``T = steps``, ``c = check_every``, ``W = tail`` =
``min(max(max_period, keep_orbit), T)``):

1. main phase, ``T - W`` steps: blocks of ``c`` plain ``gd_update`` steps (unrolled in groups for
   small problems, so XLA fuses them into one loop over the tile), with one test at the block's
   end: is the state (and its gradient) finite, does it pass the convergence test? Non-finite
   values are absorbing under GD, so a finite end state means the whole block was finite. A block
   that ended non-finite or converged is an *event block*: the trajectory keeps the block's start
   state and leaves the main phase;
2. every event block is replayed from its start with recorded steps, and the first event located
   exactly: the first step whose state or gradient is not finite (``diverged_at``, stopping at the
   same last state as :func:`mfdyn.dynamics.guarded_update`), or the first step passing the
   convergence test (``steps_to_converge``, stopping there);
3. the members still live run the remaining ``(T - W) mod c`` steps and the tail, ``W`` steps, as
   one recorded replay: the same event location, and the states ``z_{T-W}, ..., z_T`` for period
   detection and ``keep_orbit``.

Convergence test at step ``t`` (MATH.md §0 notation): ``||grad f(z_t)|| <= tol`` and, when
``momentum > 0``, also ``||v_t|| <= tol``. ``steps_to_converge`` is the first step at which it holds
inside the first check block whose end passes it (exact for any trajectory whose gradient does not
dip below ``tol`` and back up within one block; ``check_every`` does not change it otherwise).
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
from ..dynamics import gd_update
from ..pytree import tree_all_finite, tree_norm

PERIOD_RTOL = 1e-9
UNROLL_MAX_COORDINATES = 16  # unroll the fused block for problems this small (elementwise work)
UNROLL = 16  # steps per unrolled group
NARROW_FACTOR = 8  # narrow tiles are this many times narrower than full ones ...
NARROW_MIN = 64  # ... and at least this wide (else only full tiles are used)


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """Everything static about a sweep: it keys the compilation cache together with the shapes.

    ``tile`` and ``blocks_per_round`` only schedule the work; no result depends on them.
    """

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
    tile: int = 4096  # trajectories advanced together (sized for the cache)
    blocks_per_round: int = 4  # check blocks between two compactions of the unsettled members

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


def _take(tree: Any, ids: jax.Array) -> Any:
    """Rows ``ids`` of every leaf (an index past the end reads the last row; see ``_put``)."""
    return jax.tree_util.tree_map(lambda x: jnp.take(x, ids, axis=0, mode="clip"), tree)


def _put(tree: Any, ids: jax.Array, rows: Any) -> Any:
    """Write ``rows`` back at ``ids``; an index past the end (tile padding) is dropped."""
    return jax.tree_util.tree_map(lambda x, r: x.at[ids].set(r, mode="drop"), tree, rows)


def _per_trajectory(spec: KernelSpec, tol: jax.Array) -> dict[str, Callable]:
    """The pieces of one trajectory; each takes ``(problem, vals, ...)`` and is vmapped by the caller."""

    def repeat(problem, n: int, step: Callable, state: Any) -> Any:
        """``n`` applications of ``step``: a loop over groups of unrolled steps for small problems.

        The number of groups is traced (XLA cannot fold ``tol >= 0``; the caller validated
        ``tol > 0``), so XLA keeps the loop and materializes its result once instead of fusing (and
        recomputing) a whole unrolled chain of steps into every consumer.
        """
        unroll = min(n, UNROLL) if problem.num_coordinates <= UNROLL_MAX_COORDINATES else 1
        if n == 0:
            return state
        groups = jnp.where(tol >= 0, n // unroll, 0)

        def group(_, st):
            for _ in range(unroll):
                st = step(st)
            return st

        state = jax.lax.fori_loop(0, groups, group, state)
        for _ in range(n % unroll):
            state = step(state)
        return state

    def passes(vals, g, v):
        """The convergence test, given the gradient and the velocity (``None`` for plain GD)."""
        return (tree_norm(g) <= tol) & ((vals["momentum"] == 0) | (tree_norm(v) <= tol))

    def init(problem, vals, params0):
        p0 = _initial_params(problem, vals, params0, spec)
        v0 = jax.tree_util.tree_map(jnp.zeros_like, p0) if spec.heavy_ball else None
        return p0, v0

    def fused_block(problem, vals, z, v):
        """``c`` unguarded steps; returns the new state, whether it (and its gradient) is finite, and
        whether it passes the convergence test (one gradient serves both tests)."""
        def plain(zv):
            return gd_update(problem, zv[0], zv[1], vals["eta"], vals["momentum"], heavy_ball=spec.heavy_ball)

        z, v = repeat(problem, spec.check_every, plain, (z, v))
        g = problem.grad(z)
        finite = tree_all_finite(z) & tree_all_finite(v) & tree_all_finite(g)
        return z, v, finite, finite & passes(vals, g, v)

    def converged(problem, vals, z, v):
        return passes(vals, problem.grad(z), v)

    def record(problem, vals, z, v, n: int):
        """``n`` plain steps from ``(z, v)``; returns the flat states ``z_0 .. z_n`` as rows
        ``(n+1, coords)`` and, with heavy ball, the velocities likewise (else ``None``)."""
        def flat(zv):
            return problem.flatten(zv[0]), (problem.flatten(zv[1]) if spec.heavy_ball else None)

        def step(zv, _):
            zv = gd_update(problem, zv[0], zv[1], vals["eta"], vals["momentum"], heavy_ball=spec.heavy_ball)
            return zv, flat(zv)

        _, rows = jax.lax.scan(step, (z, v), None, length=n)  # unrolling would recompute chains per row
        first = flat((z, v))
        return jax.tree_util.tree_map(lambda f, r: jnp.concatenate([f[None], r]), first, rows)

    def settle(problem, vals, zs, vs):
        """The first event in recorded rows (row 0 is finite and failed the convergence test).

        Row ``r`` is *bad* when its state or its gradient is not finite, and *converged* when it is
        good and passes the test. Returns ``(final, div, conv)``: ``div``/``conv`` the row of the
        first event (``-1`` if none) and ``final`` the row the trajectory stops at: the converged
        row; for a bad row ``b``, ``b - 1`` if the state itself is not finite, else ``b`` (the last
        state and the step of :func:`mfdyn.dynamics.guarded_update`); the last row if no event.
        """
        def per_row(z_flat, v_flat):
            g = problem.grad(problem.unflatten(z_flat))
            state_ok = tree_all_finite((z_flat, v_flat))
            good = state_ok & tree_all_finite(g)
            return state_ok, good, good & passes(vals, g, v_flat)

        state_ok, good, test = jax.vmap(per_row)(zs, vs)
        n = zs.shape[0]
        rows = jnp.arange(n)
        bad_row = jnp.min(jnp.where(good, n, rows))
        conv_row = jnp.min(jnp.where(test, rows, n))
        converged = conv_row < bad_row
        diverged = ~converged & (bad_row < n)
        back = jnp.where(state_ok[jnp.minimum(bad_row, n - 1)], 0, 1)
        final = jnp.where(converged, conv_row, jnp.where(diverged, bad_row - back, n - 1))
        return final, jnp.where(diverged, bad_row, -1), jnp.where(converged, conv_row, -1)

    def replay(problem, vals, z, v, t0, n: int):
        """``n`` recorded steps from step ``t0`` and their first event: returns the state the
        trajectory stops at, ``diverged_at``, ``steps_to_converge`` (``-1`` if none) and the rows,
        frozen at the stopping row (later rows repeat it)."""
        zs, vs = record(problem, vals, z, v, n)
        final, div, conv = settle(problem, vals, zs, vs)
        z_end = problem.unflatten(zs[final])
        v_end = problem.unflatten(vs[final]) if spec.heavy_ball else None
        frozen = jnp.where((jnp.arange(n + 1) > final)[:, None], zs[final], zs)
        return z_end, v_end, jnp.where(div >= 0, t0 + div, -1), jnp.where(conv >= 0, t0 + conv, -1), frozen

    def period(buffer):
        if not spec.max_period:
            return jnp.asarray(0, jnp.int32)
        k = jnp.arange(1, spec.max_period + 1)
        gaps = jnp.linalg.norm(buffer[spec.tail] - buffer[spec.tail - k], axis=1)  # (max_period,)
        match = gaps <= PERIOD_RTOL * jnp.linalg.norm(buffer[spec.tail])
        return jnp.where(jnp.any(match), k[jnp.argmax(match)], 0).astype(jnp.int32)

    def finals(problem, vals, z):
        return dict(
            final_loss=problem.loss(z),
            final_imbalance=obs.imbalance_norm(problem, z),
            final_sharpness=obs.sharpness(problem, z) if spec.sharpness else jnp.asarray(jnp.nan),
            final_params=problem.flatten(z),
        )

    return dict(init=init, fused_block=fused_block, converged=converged, period=period,
                locate=lambda problem, vals, z, v, t0: replay(problem, vals, z, v, t0, spec.check_every)[:4],
                finish=lambda problem, vals, z, v, t0: replay(problem, vals, z, v, t0, spec.main_remainder + spec.tail),
                finals=finals, orbit_loss=lambda problem, vals, orbit: jax.vmap(problem.flat_loss)(orbit))


def _tile_widths(tile: int, size: int) -> tuple[int, ...]:
    """The tile widths of a chunk: full tiles, and narrow ones for the last few live members."""
    wide = min(tile, size)
    narrow = wide // NARROW_FACTOR
    return (wide, narrow) if narrow >= NARROW_MIN else (wide,)


@partial(jax.jit, static_argnames=("spec", "factory"))
def run_chunk(problem: Any, values: dict, params0: Any, tol: jax.Array, *, spec: KernelSpec,
              factory: Callable | None = None) -> dict:
    """Run a chunk: ``values[name]`` holds one entry per trajectory (all of the same length ``C``).

    ``values`` must hold ``eta`` and ``momentum``, the initialization axes of ``spec.init`` and the
    swept constants ``spec.const_names``. Returns a dict of arrays with leading dimension ``C``.
    """
    size = values["eta"].shape[0]
    widths = _tile_widths(spec.tile, size)
    c = spec.check_every
    pieces = _per_trajectory(spec, tol)
    per_member = bool(spec.const_names) or factory is not None

    def batched(name: str, vals: dict, *args, arg_axes: tuple | None = None):
        """``pieces[name]`` vmapped over the trajectories ``vals`` (their problems built here)."""
        if per_member:
            problems = jax.vmap(lambda v: with_constants(problem, factory, {n: v[n] for n in spec.const_names}))(vals)
        else:
            problems = problem
        axes = (0 if per_member else None, 0) + (arg_axes if arg_axes is not None else (0,) * len(args))
        return jax.vmap(pieces[name], in_axes=axes)(problems, vals, *args)

    def tiling(n_live: jax.Array) -> tuple[jax.Array, ...]:
        """Tiles per width for ``n_live`` members: as many full tiles as they fill, then narrow
        tiles for the rest."""
        counts, done = [], jnp.zeros_like(n_live)
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            count = (n_live - done + width - 1) // width if last else (n_live - done) // width
            counts.append(count)
            done = done + count * width
        return tuple(counts)

    def lanes(counts) -> jax.Array:
        return sum(n * w for n, w in zip(counts, widths))

    def compact(live: jax.Array):
        """Row indices of the live members, padded past the end, and their tiling."""
        ids = jnp.nonzero(live, size=size, fill_value=size)[0]
        return jnp.concatenate([ids, jnp.full((widths[0],), size, ids.dtype)]), tiling(jnp.sum(live))

    def over_tiles(ids: jax.Array, counts, work: Callable, acc: Any) -> Any:
        """``acc = work(rows, acc)`` for the tiles of ``ids`` (padding rows index past the end)."""
        offset = jnp.zeros_like(counts[0])
        for count, width in zip(counts, widths):
            def body(j, acc, width=width, offset=offset):
                return work(jax.lax.dynamic_slice(ids, (offset + j * width,), (width,)), acc)

            acc = jax.lax.fori_loop(0, count, body, acc)
            offset = offset + count * width
        return acc

    def over_live(live: jax.Array, work: Callable, acc: Any) -> Any:
        ids, counts = compact(live)
        return over_tiles(ids, counts, work, acc)

    z0, v0 = batched("init", values, params0, arg_axes=(None,))
    minus_one = jnp.full((size,), -1, jnp.int64)
    state = dict(z=z0, v=v0, conv=jnp.where(batched("converged", values, z0, v0), 0, -1).astype(jnp.int64),
                 div=minus_one, event=minus_one)

    def unsettled(st):
        return (st["conv"] < 0) & (st["div"] < 0) & (st["event"] < 0)

    # 1. main phase: rounds of check blocks over the compacted live members. A member whose block
    #    ended non-finite or passing the convergence test keeps the block's start state and records
    #    `event = 2 * (start step) + (1 if non-finite)`; the event is located exactly in step 2.
    def run_blocks(vals, st, first_block, n_blocks):
        def cond(bs):
            i, s = bs
            return (i < n_blocks) & jnp.any(unsettled(s))

        def body(bs):
            i, s = bs
            live = unsettled(s)
            z, v, finite, done = batched("fused_block", vals, s["z"], s["v"])
            event = live & (done | ~finite)
            go = live & ~event
            kind = jnp.where(finite, 0, 1)
            return i + 1, dict(s, z=_where(go, z, s["z"]), v=_where(go, v, s["v"]),
                               event=jnp.where(event, 2 * (first_block + i) * c + kind, s["event"]))

        return jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int64), st))[1]

    def round_cond(rs):
        k, st, _, _ = rs
        return (k < spec.main_blocks) & jnp.any(unsettled(st))

    def round_body(rs):
        """One round over the current tiles; re-compacted first only when that saves lanes (the
        index computation costs about as much as a few blocks of a full chunk)."""
        k, st, ids, counts = rs
        live = unsettled(st)
        ids, counts = jax.lax.cond(lanes(tiling(jnp.sum(live))) < lanes(counts), lambda: compact(live),
                                   lambda: (ids, counts))
        n_blocks = jnp.minimum(spec.blocks_per_round, spec.main_blocks - k)

        def advance(rows, st):
            return _put(st, rows, run_blocks(_take(values, rows), _take(st, rows), k, n_blocks))

        return k + n_blocks, over_tiles(ids, counts, advance, st), ids, counts

    all_rows = jnp.concatenate([jnp.arange(size), jnp.full((widths[0],), size)]).astype(jnp.int64)
    start = (jnp.asarray(0, jnp.int64), state, all_rows, tiling(jnp.asarray(size, jnp.int64)))
    _, state, _, _ = jax.lax.while_loop(round_cond, round_body, start)

    # 2. exact events: replay each event block with recorded plain steps and take its first event
    #    (first non-finite step or first step passing the convergence test). The replay repeats the
    #    block's arithmetic, so it finds the event; should rounding differ at the very end of the
    #    block, the block end is used.
    def locate(rows, st):
        vals, sub = _take(values, rows), _take(st, rows)
        start, nonfinite = sub["event"] // 2, sub["event"] % 2 == 1
        z, v, div, conv = batched("locate", vals, sub["z"], sub["v"], start)
        missing = (div < 0) & (conv < 0)
        div = jnp.where(missing & nonfinite, start + c, div)
        conv = jnp.where(missing & ~nonfinite, start + c, conv)
        return _put(st, rows, dict(z=z, v=v, div=div, conv=conv, event=sub["event"]))

    state = over_live(state["event"] >= 0, locate, state)

    # 3. leftover steps and the recorded tail, for the members still live
    period = jnp.zeros((size,), jnp.int32)
    orbit = jnp.zeros((size, spec.keep_orbit, problem.num_coordinates)) if spec.keep_orbit else None
    ran_tail = unsettled(state)
    if spec.main_remainder or spec.tail:
        def finish(rows, acc):
            st, period, orbit = acc
            vals, sub = _take(values, rows), _take(st, rows)
            t0 = jnp.full(rows.shape, spec.main_blocks * c, jnp.int64)
            z, v, div, conv, frozen = batched("finish", vals, sub["z"], sub["v"], t0)
            buffer = frozen[:, frozen.shape[1] - spec.tail - 1:]  # z_{T-W} .. z_T
            period = period.at[rows].set(jax.vmap(pieces["period"])(buffer), mode="drop")
            if spec.keep_orbit:
                orbit = orbit.at[rows].set(buffer[:, spec.tail + 1 - spec.keep_orbit:], mode="drop")
            return _put(st, rows, dict(sub, z=z, v=v, div=div, conv=conv)), period, orbit

        state, period, orbit = over_live(ran_tail, finish, (state, period, orbit))

    # 4. period detection and the final observables
    live = (state["conv"] < 0) & (state["div"] < 0)
    out = batched("finals", values, state["z"])
    out.update(period=jnp.where(live, period, 0), diverged_at=state["div"], steps_to_converge=state["conv"])
    if spec.keep_orbit:
        frozen = jnp.broadcast_to(out["final_params"][:, None, :], orbit.shape)
        orbit = jnp.where(ran_tail[:, None, None], orbit, frozen)
        out["orbit"] = jnp.where((state["div"] >= 0)[:, None, None], jnp.nan, orbit)
        out["orbit_loss"] = batched("orbit_loss", values, out["orbit"])
    return out
