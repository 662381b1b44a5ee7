"""The batched sweep kernel: one jit-compiled function per problem structure and chunk shape.

Every per-trajectory piece (a fused block of steps, the convergence test, the step-by-step replay
of a block, the revisit of the tail, the final observables) is written for ONE trajectory and
``vmap``-ped over a *tile* of trajectories; the loops run at tile level with a scalar predicate
("some member is still unsettled").

Compaction. A chunk of ``C`` trajectories runs in *rounds* of ``blocks_per_round`` check blocks.
Its rows are kept in a *working order*: at the start of a round, when that lets the round run fewer
tiles, the unsettled rows are moved to the front (a stable partition, carrying their inputs and
their original row; only within the first full tile, in place, once they all lie there), so the
tiles are contiguous slices: full tiles of ``tile`` rows (sized for the cache), then narrow tiles
(``tile / NARROW_FACTOR``) for the last few. Once the unsettled rows fit one narrow tile, the
round runs on to the mark block (below) or the end. A settled trajectory costs nothing afterwards,
so the work of a chunk is about the sum of its trajectories' own lengths, not its slowest member's
length times ``C``. Within a tile a settled row is frozen by selecting its old state. The results
are put back in the chunk's order at the end. A trajectory's arithmetic never depends on which
other trajectories share its tile or chunk, so results are bitwise identical for any chunk size,
tile width and distribution of chunks over workers.

Schedule of one trajectory (``T = steps``, ``c = check_every``, ``W = tail`` =
``min(max(max_period, keep_orbit), T)``, ``s0 = c floor((T - W) / c)``):

1. main phase, ``c floor(T / c)`` steps: blocks of ``c`` plain ``gd_update`` steps (unrolled in
   groups for small problems, so XLA fuses them into one loop over the tile), with one test at the
   block's end: is the state (and its gradient) finite, does it pass the convergence test?
   Non-finite values are absorbing under GD, so a finite end state means the whole block was
   finite. A block that ended non-finite or converged is an *event block*: the trajectory keeps
   the block's start state and stops advancing. The state at step ``s0`` (the *mark*) is kept;
2. at the end of the round, the event rows of a tile (gathered in groups) replay their event
   block from its start, one step at a time with the test after every step, and locate the first
   event exactly: the first step whose state or gradient is not finite (``diverged_at``, stopping
   at the same last state as :func:`mfdyn.dynamics.guarded_update`), or the first step passing
   the convergence test (``steps_to_converge``, stopping there);
3. the members still live walk the last ``T mod c`` steps the same way (a test after each);
4. the members live at ``T`` (and, with ``keep_orbit = K``, those that converged after
   ``T - K``) *revisit* steps ``s0 .. T`` from the mark: the same arithmetic again, so the same
   states, compared on the fly with ``z_T`` for the period, and the last ``K`` recorded for the
   orbit. Nothing is stored per step but the orbit.

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
from ..pytree import tree_all_finite, tree_norm, tree_where

PERIOD_RTOL = 1e-9
UNROLL_MAX_COORDINATES = 16  # unroll the fused block for problems this small (elementwise work)
UNROLL = 16  # steps per unrolled group
WALK_UNROLL = 2  # steps per group of the event replay (more outputs per group: XLA recomputes more)
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
        """Check blocks of the main phase (it runs all ``steps``)."""
        return self.steps // self.check_every

    @property
    def main_remainder(self) -> int:
        """Steps after the last check block (walked with a test after each)."""
        return self.steps % self.check_every

    @property
    def mark_block(self) -> int:
        """The check block ``s0 / c`` whose start state is kept for the revisit of the tail."""
        return (self.steps - self.tail) // self.check_every

    @property
    def main_remainder_before_tail(self) -> int:
        """Steps from the mark ``s0`` to ``T - W``."""
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


def _complex_pairs(state: Any) -> tuple[Callable, Callable]:
    """``(pack, unpack)`` storing a state of real scalar leaves ``x0, x1, x2, ...`` as complex
    scalars ``x0 + i x1, x2 + i x3, ...`` (an odd last leaf stays real); identity for any other state.

    Why: XLA:CPU emits one loop fusion per output array. An unrolled chain of steps whose state is
    ``k`` arrays becomes ``k`` fusions that each recompute the whole chain; packed in pairs the chain
    runs about half as often (the scalar family: one fusion instead of two, 1.45x faster per step).
    Splitting and joining complex numbers is exact, so the arithmetic, and every result, is unchanged.
    """
    leaves, treedef = jax.tree_util.tree_flatten(state)
    if not leaves or any(x.ndim or not jnp.issubdtype(x.dtype, jnp.floating) for x in leaves):
        return (lambda s: s), (lambda s: s)

    def pack(st):
        xs = jax.tree_util.tree_leaves(st)
        pairs = [jax.lax.complex(xs[i], xs[i + 1]) for i in range(0, len(xs) - 1, 2)]
        return pairs + xs[len(xs) - len(xs) % 2:]

    def unpack(packed):
        xs = [part for c in packed[:len(leaves) // 2] for part in (jnp.real(c), jnp.imag(c))]
        return jax.tree_util.tree_unflatten(treedef, xs + list(packed[len(leaves) // 2:]))

    return pack, unpack


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
        pack, unpack = _complex_pairs(state) if unroll > 1 else (lambda s: s, lambda s: s)

        def group(_, packed):
            st = unpack(packed)
            for _ in range(unroll):
                st = step(st)
            return pack(st)

        state = unpack(jax.lax.fori_loop(0, groups, group, pack(state)))
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

    def walk(problem, vals, z, v, t0, n: int):
        """``n`` plain steps from step ``t0``, one at a time with the test after each, stopping at
        the first event: returns the state the trajectory stops at, ``diverged_at`` and
        ``steps_to_converge`` (``-1`` if none).

        Step ``r`` is *bad* when its state or its gradient is not finite (the trajectory stops at
        it if the state itself is finite, else one step earlier: :func:`mfdyn.dynamics.guarded_update`)
        and *converged* when it is good and passes the test (the trajectory stops at it). The
        start is good and failed the test.
        """
        pack, unpack = _complex_pairs((z, v))
        unroll = WALK_UNROLL if problem.num_coordinates <= UNROLL_MAX_COORDINATES else 1
        groups, rest = divmod(n, unroll)

        def steps(r0, n, carry):
            """Steps ``r0 + 1 .. r0 + n``; ``first = 2 r (+1 if bad)`` of the first event, -1 if none."""
            (z, v), first = unpack(carry[0]), carry[1]
            for j in range(n):
                r = r0 + j + 1
                live = first < 0
                z1, v1 = gd_update(problem, z, v, vals["eta"], vals["momentum"], heavy_ball=spec.heavy_ball)
                g = problem.grad(z1)
                state_ok = tree_all_finite(z1) & tree_all_finite(v1)
                good = state_ok & tree_all_finite(g)
                first = jnp.where(live & ~good, 2 * r + 1, jnp.where(live & good & passes(vals, g, v1), 2 * r, first))
                keep = live & state_ok
                z, v = tree_where(keep, z1, z), tree_where(keep, v1, v)
            return pack((z, v)), first

        carry = jax.lax.fori_loop(0, groups, lambda i, cr: steps(i * unroll, unroll, cr),
                                  (pack((z, v)), jnp.asarray(-1, jnp.int64)))
        packed, first = steps(groups * unroll, rest, carry)
        z, v = unpack(packed)
        row, bad = first // 2, first % 2 == 1
        div = jnp.where((first >= 0) & bad, t0 + row, -1)
        conv = jnp.where((first >= 0) & ~bad, t0 + row, -1)
        return z, v, div, conv

    def revisit(problem, vals, z, v, z_end, stop):
        """Steps ``s0 .. T`` again from the state ``(z, v)`` at ``s0 = c floor((T - W) / c)``, the
        start of the check block holding step ``T - W``; the trajectory ended at ``z_end`` (``z_T``,
        or its converged state). Returns the period, the smallest ``k <= max_period`` with
        ``||z_T - z_{T-k}|| <= 1e-9 ||z_T||`` (flat real coordinates; 0 if none), and the orbit
        ``z_{T-K+1} .. z_T`` (``K = keep_orbit`` rows; a trajectory that converged at step
        ``stop > T - K`` stays there). No event can occur: the main phase ran these very steps.
        """
        T, W, K, P = spec.steps, spec.tail, spec.keep_orbit, spec.max_period
        ref = problem.flatten(z_end)
        bound = PERIOD_RTOL * jnp.linalg.norm(ref)

        def plain(zv):
            return gd_update(problem, zv[0], zv[1], vals["eta"], vals["momentum"], heavy_ball=spec.heavy_ball)

        def compare(t, flat, best):
            k = (T - t).astype(best.dtype)
            hit = (k >= 1) & (k <= P) & (jnp.linalg.norm(ref - flat) <= bound)
            return jnp.where(hit, k, best)

        def visit(t, carry):
            """State ``z_t``: compared with ``z_end``, then advanced (frozen from step ``stop`` on)."""
            (z, v), best = carry
            best = compare(t, problem.flatten(z), best)
            z1, v1 = plain((z, v))
            go = t < stop
            return (tree_where(go, z1, z), tree_where(go, v1, v)), best

        zv = repeat(problem, spec.main_remainder_before_tail, plain, (z, v))  # s0 .. T - W
        first_orbit = T - K + 1 if K else T
        carry = jax.lax.fori_loop(T - W, first_orbit, visit, (zv, jnp.asarray(0, jnp.int32)))
        if not K:
            return carry[1], None

        def orbit_step(carry, t):
            return visit(t, carry), problem.flatten(carry[0][0])

        carry, rows = jax.lax.scan(orbit_step, carry, jnp.arange(first_orbit, T + 1))
        return carry[1], rows

    def finals(problem, vals, z):
        return dict(
            final_loss=problem.loss(z),
            final_imbalance=obs.imbalance_norm(problem, z),
            final_sharpness=obs.sharpness(problem, z) if spec.sharpness else jnp.asarray(jnp.nan),
            final_params=problem.flatten(z),
        )

    return dict(init=init, fused_block=fused_block, converged=converged, revisit=revisit,
                locate=partial(walk, n=spec.check_every), remainder=partial(walk, n=spec.main_remainder),
                finals=finals, orbit_loss=lambda problem, vals, orbit: jax.vmap(problem.flat_loss)(orbit))


def _tile_widths(tile: int, size: int) -> tuple[int, ...]:
    """The tile widths of a chunk: full tiles, and narrow ones for the last few live members."""
    wide = min(tile, size)
    narrow = wide // NARROW_FACTOR
    return (wide, narrow) if narrow >= NARROW_MIN else (wide,)


def _rows(tree: Any, start: jax.Array, width: int) -> Any:
    """Rows ``start .. start + width`` of every leaf (a contiguous tile)."""
    return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, width, axis=0), tree)


def _set_rows(tree: Any, start: jax.Array, rows: Any) -> Any:
    return jax.tree_util.tree_map(lambda x, r: jax.lax.dynamic_update_slice_in_dim(x, r, start, axis=0), tree, rows)


def _live_first(tree: Any, live: jax.Array) -> Any:
    """Every leaf's rows reordered: the ``live`` rows first, each group in its previous order
    (a stable partition: one prefix sum, one scatter of the permutation, one gather per leaf)."""
    n = live.shape[0]
    inclusive = jax.lax.associative_scan(jnp.add, live.astype(jnp.int32))
    row = jnp.arange(n, dtype=jnp.int32)
    dest = jnp.where(live, inclusive - 1, inclusive[-1] + row - inclusive)
    order = jnp.zeros(n, jnp.int32).at[dest].set(row, unique_indices=True)
    return jax.tree_util.tree_map(lambda x: jnp.take(x, order, axis=0, unique_indices=True), tree)


def _on_selected(mask: jax.Array, group: int, fn: Callable, const: Any, tree: Any) -> Any:
    """``tree`` with its ``mask`` rows replaced by ``fn(const_rows, tree_rows)``, gathered
    ``group`` rows at a time (the other rows are neither read by ``fn`` nor changed; ``const`` is
    only read). ``fn`` maps rows to rows of the same structure, each row independently."""
    n = mask.shape[0]
    inclusive = jax.lax.associative_scan(jnp.add, mask.astype(jnp.int32))
    row = jnp.arange(n, dtype=jnp.int32)
    count = inclusive[-1]
    selected = jnp.zeros(n + group, jnp.int32).at[jnp.where(mask, inclusive - 1, n + group)].set(row, mode="drop")

    def body(j, tree):
        lane = j * group + jnp.arange(group, dtype=jnp.int32)
        idx = jax.lax.dynamic_slice_in_dim(selected, j * group, group)
        out = fn(*jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), (const, tree)))
        dest = jnp.where(lane < count, idx, n)  # unused lanes of the last group: dropped
        return jax.tree_util.tree_map(lambda x, r: x.at[dest].set(r, mode="drop", unique_indices=True), tree, out)

    return jax.lax.fori_loop(0, (count + group - 1) // group, body, tree)


@partial(jax.jit, static_argnames=("spec", "factory"))
def run_chunk(problem: Any, values: dict, params0: Any, tol: jax.Array, *, spec: KernelSpec,
              factory: Callable | None = None) -> dict:
    """Run a chunk: ``values[name]`` holds one entry per trajectory (all of the same length ``C``).

    ``values`` must hold ``eta`` and ``momentum``, the initialization axes of ``spec.init`` and the
    swept constants ``spec.const_names``. Returns a dict of arrays with leading dimension ``C``.

    The rows are kept in a *working order*: a compaction moves the unsettled rows to the front
    (:func:`_live_first`, with their inputs and their original row ``origin``), so every tile is a
    contiguous slice. ``wide`` padding rows, settled from the start, keep the last tile in bounds.
    The results are put back in the chunk's order at the end.
    """
    size = values["eta"].shape[0]
    widths = _tile_widths(spec.tile, size)
    padded = size + widths[0]
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
        """Tiles per width for ``n_live`` rows: as many full tiles as they fill, then narrow tiles
        for the rest."""
        counts, done = [], jnp.zeros_like(n_live)
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            count = (n_live - done + width - 1) // width if last else (n_live - done) // width
            counts.append(count)
            done = done + count * width
        return tuple(counts)

    def lanes(counts) -> jax.Array:
        return sum(n * w for n, w in zip(counts, widths))

    def over_tiles(counts, work: Callable, acc: Any, const: Any) -> Any:
        """``work(const_rows, acc_rows)`` on the tiles ``[0, lanes(counts))``: the rows of ``acc``
        are updated in place, those of ``const`` only read. (Writing read-only rows back would
        make XLA copy those whole arrays once per tile.)"""
        offset = jnp.zeros_like(counts[0])
        for count, width in zip(counts, widths):
            def body(j, acc, width=width, offset=offset):
                start = offset + j * width
                return _set_rows(acc, start, work(_rows(const, start, width), _rows(acc, start, width)))

            acc = jax.lax.fori_loop(0, count, body, acc)
            offset = offset + count * width
        return acc

    def unsettled(st):
        return (st["conv"] < 0) & (st["div"] < 0)

    vals = {k: jnp.concatenate([x, jnp.repeat(x[-1:], widths[0], axis=0)]) for k, x in values.items()}
    origin = jnp.arange(padded)
    padding = origin >= size
    z0, v0 = batched("init", vals, params0, arg_axes=(None,))
    converged0 = batched("converged", vals, z0, v0) & ~padding
    work = dict(vals=vals, z=z0, v=v0, origin=origin, conv=jnp.where(converged0, 0, -1).astype(jnp.int64),
                div=jnp.where(padding, 0, -1).astype(jnp.int64))  # padding rows count as settled

    # 1. main phase: rounds of check blocks over tiles of the unsettled rows. A row whose block
    #    ended non-finite or passing the convergence test keeps the block's start state and records
    #    `event = 2 * (start step) + (1 if non-finite)`; at the end of the round its tile replays
    #    each event block step by step and stops the row at the first event (`locate`).
    def run_blocks(vals, st, first_block, n_blocks):
        def cond(bs):
            i, s = bs
            return (i < n_blocks) & jnp.any(unsettled(s) & (s["event"] < 0))

        def body(bs):
            i, s = bs
            live = unsettled(s) & (s["event"] < 0)
            z, v, finite, done = batched("fused_block", vals, s["z"], s["v"])
            event = live & (done | ~finite)
            go = live & ~event
            kind = jnp.where(finite, 0, 1)
            return i + 1, dict(s, z=_where(go, z, s["z"]), v=_where(go, v, s["v"]),
                               event=jnp.where(event, 2 * (first_block + i) * c + kind, s["event"]))

        return jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int64), st))[1]

    def locate_rows(vals, st):
        """Rows with an event: replayed from their event block's start, stopped at the first event.
        The replay repeats the block's arithmetic, so it finds the event; should rounding differ at
        the very end of the block, the block end is used."""
        event = st["event"] >= 0
        start, nonfinite = st["event"] // 2, st["event"] % 2 == 1
        z, v, div, conv = batched("locate", vals, st["z"], st["v"], start)
        missing = (div < 0) & (conv < 0)
        div = jnp.where(missing & nonfinite, start + c, div)
        conv = jnp.where(missing & ~nonfinite, start + c, conv)
        return dict(st, z=_where(event, z, st["z"]), v=_where(event, v, st["v"]),
                    div=jnp.where(event, div, st["div"]), conv=jnp.where(event, conv, st["conv"]))

    def locate(vals, st):
        """:func:`locate_rows` on the event rows only: gathered in groups of ``widths[-1]`` rows
        (the replay costs several times a block per row, most rows of a tile have no event)."""
        group = widths[-1]
        if st["event"].shape[0] <= group:
            return locate_rows(vals, st)
        return _on_selected(st["event"] >= 0, group, locate_rows, vals, st)

    def round_cond(rs):
        k, w, _ = rs
        return (k < spec.main_blocks) & jnp.any(unsettled(w))

    def compact(w, live, counts):
        """Moves the unsettled rows to the front when that saves lanes. When every unsettled row is
        in the first full tile, only that tile is reordered, in place (a whole-chunk reorder costs
        about as much as a few blocks of a full chunk)."""
        fewer = tiling(jnp.sum(live))
        wanted = lanes(fewer) < lanes(counts)
        wide = widths[0]
        local = lanes(counts) <= wide
        w = jax.lax.cond(wanted & ~local, lambda: _live_first(w, live), lambda: w)
        head = _rows(w, 0, wide)
        head = tree_where(wanted & local, _live_first(head, live[:wide]), head)
        return _set_rows(w, 0, head), jax.tree_util.tree_map(lambda a, b: jnp.where(wanted, a, b), fewer, counts)

    def round_body(rs):
        """One round over the current tiles, after a compaction. A round ends at the mark block at
        the latest; once the unsettled rows fit one narrow tile, it runs on to there (or the end).
        The mark (the state at step ``s0``) starts as the initial state, for ``s0 = 0``."""
        k, w, counts = rs
        w, counts = compact(w, unsettled(w), counts)
        until = jnp.where(k < spec.mark_block, spec.mark_block, spec.main_blocks)
        n_blocks = jnp.where(lanes(counts) <= widths[-1], until - k, jnp.minimum(spec.blocks_per_round, until - k))

        def advance(vals, tile):
            st = dict(tile, event=jnp.full(tile["conv"].shape, -1, jnp.int64))
            st = run_blocks(vals, st, k, n_blocks)
            st = jax.lax.cond(jnp.any(st["event"] >= 0), locate, lambda _, s: s, vals, st)
            # the state at the start of the mark block is kept (the tail's start; rounds end there)
            mark = jax.tree_util.tree_map(lambda m, x: jnp.where(k + n_blocks == spec.mark_block, x, m),
                                          st["mark"], (st["z"], st["v"]))
            return dict(z=st["z"], v=st["v"], conv=st["conv"], div=st["div"], mark=mark)

        state = over_tiles(counts, advance, {key: w[key] for key in ("z", "v", "conv", "div", "mark")}, w["vals"])
        return k + n_blocks, dict(w, **state), counts

    work["mark"] = (work["z"], work["v"])
    start = (jnp.asarray(0, jnp.int64), work, tiling(jnp.asarray(size, jnp.int64)))
    _, work, _ = jax.lax.while_loop(round_cond, round_body, start)

    # 2. the last `T mod c` steps, walked, then the tail revisited from the mark for period detection
    #    and the orbit: for the rows still live, and with keep_orbit those that converged in the
    #    orbit window (moved to the front)
    period = jnp.zeros((padded,), jnp.int32)
    orbit = jnp.zeros((padded, spec.keep_orbit, problem.num_coordinates)) if spec.keep_orbit else None
    live_at_end = unsettled(work)
    work, live_at_end = _live_first((work, live_at_end), live_at_end)
    if spec.main_remainder:
        def remainder(const, tile):
            vals, live = const  # (a mask read from the tile itself would make XLA copy whole arrays)
            t0 = jnp.full(live.shape, spec.main_blocks * c, jnp.int64)
            z, v, div, conv = batched("remainder", vals, tile["z"], tile["v"], t0)
            return dict(z=_where(live, z, tile["z"]), v=_where(live, v, tile["v"]),
                        div=jnp.where(live, div, tile["div"]), conv=jnp.where(live, conv, tile["conv"]))

        state = over_tiles(tiling(jnp.sum(live_at_end)), remainder,
                           {key: work[key] for key in ("z", "v", "conv", "div")}, (work["vals"], live_at_end))
        work = dict(work, **state)
    live = unsettled(work)
    revisited = live
    if spec.keep_orbit:
        revisited = live | ((work["conv"] > spec.steps - spec.keep_orbit) & (work["div"] < 0))
        work, revisited, live = _live_first((work, revisited, live), revisited)
    if spec.max_period or spec.keep_orbit:
        def revisit(const, acc):
            vals, tile, rows = const
            period, orbit = acc
            stop = jnp.where(tile["conv"] >= 0, tile["conv"], spec.steps + 1)
            found, trace = batched("revisit", vals, tile["mark"][0], tile["mark"][1], tile["z"], stop)
            period = jnp.where(rows & unsettled(tile), found, period)
            if spec.keep_orbit:
                orbit = _where(rows, trace, orbit)
            return period, orbit

        period, orbit = over_tiles(tiling(jnp.sum(revisited)), revisit, (period, orbit),
                                   (work["vals"], work, revisited))

    # 3. period detection and the final observables, then back to the chunk's order
    live = (work["conv"] < 0) & (work["div"] < 0)
    out = batched("finals", work["vals"], work["z"])
    out.update(period=jnp.where(live, period, 0), diverged_at=work["div"], steps_to_converge=work["conv"])
    if spec.keep_orbit:
        frozen = jnp.broadcast_to(out["final_params"][:, None, :], orbit.shape)
        orbit = jnp.where(revisited[:, None, None], orbit, frozen)
        out["orbit"] = jnp.where((work["div"] >= 0)[:, None, None], jnp.nan, orbit)
        out["orbit_loss"] = batched("orbit_loss", work["vals"], out["orbit"])
    rows = jnp.arange(padded, dtype=jnp.int32)
    position = jnp.zeros(padded, jnp.int32).at[work["origin"]].set(rows, unique_indices=True)[:size]
    return jax.tree_util.tree_map(lambda x: jnp.take(x, position, axis=0, unique_indices=True), out)
