"""The batched sweep kernel: one jit-compiled function per problem structure and chunk shape.

Every per-trajectory piece (a fused block of steps, the convergence test, the step-by-step replay
of a block, the revisit of the tail, the final observables) is written for ONE trajectory and
``vmap``-ped over a *tile* of trajectories; the loops run at tile level with a scalar predicate
("some member is still unsettled").

Compaction. A chunk of ``C`` trajectories runs in *rounds* of ``blocks_per_round`` check blocks.
Its rows are kept in a *working order*: at the start of a round, when that saves the round a
quarter of its lanes at least, the unsettled rows are moved to the front (a stable partition,
carrying their inputs and their original row; only within the first full tile, in place, once they
all lie there), so the tiles are contiguous slices: full tiles of ``tile`` rows (sized for the
cache), then narrow tiles (``tile / NARROW_FACTOR``) for the last few. A round that follows one
without a compaction (too few rows settled to pay for it) is twice as long as that one, up to
``2^ROUND_DOUBLINGS`` times ``blocks_per_round``: long-lived rows pay the per-round passes over
their tiles less often (about 3% of the scalar benchmark's kernel time, 10% where no row settles).
Once the unsettled rows fit one narrow tile, the round runs on to the mark block (below) or the
end. A settled trajectory costs nothing afterwards, so the work of a chunk is about the sum of its
trajectories' own lengths, not its slowest member's length times ``C``. Within a tile a settled
row is frozen by selecting its old state. The results are put back in the chunk's order at the
end. A trajectory's arithmetic never depends on which other trajectories share its tile or chunk,
so results are bitwise identical for any chunk size, tile width and distribution of chunks over
workers.

Schedule of one trajectory (``T = steps``, ``c = check_every``, ``W = tail`` =
``min(max(max_period, keep_orbit), T)``, ``s0 = c floor((T - W) / c)``):

0. the start: a start whose state or gradient is not finite diverged at step 0 (``diverged_at = 0``,
   as in :func:`mfdyn.gd`); one that passes the convergence test converged at step 0;
1. main phase, ``c floor(T / c)`` steps: blocks of ``c`` plain ``gd_update`` steps (run in a
   loop of unrolled groups for small problems, :func:`step_unroll`; the state of two real
   coordinates packed as one complex number, so XLA fuses them into one loop over the tile), with
   one test at the block's end: is the state (and its gradient) finite, does it pass the
   convergence test (evaluated as ``||g||^2 <= sq_norm_bound(tol)``, exactly equivalent and without
   a square root; for a ``tol`` outside :data:`NORMAL_TOL`, on ``2^k g``: :func:`tol_scale`)? Non-finite values are absorbing under GD, so a finite end state means the whole
   block was finite. A row whose block ended with an event keeps the block's start state and
   stops advancing; so does a row whose block ended exactly where it started (a cycle whose length
   divides ``c``): both are recognized by an end state equal, bit for bit, to the start state. The
   state at step ``s0`` (the *mark*) is kept;
2. at the end of the round, those rows of a tile (gathered in groups; on a GPU the whole tile,
   masked: ``KernelSpec.replay_gathered``) replay their block from its start, one step at a time
   with the test after every step, and locate the first event exactly: the first step whose state
   or gradient is not finite (``diverged_at``, stopping at the same last state as
   :func:`mfdyn.dynamics.guarded_update`), or the first step passing the convergence test
   (``steps_to_converge``, stopping there). A row with no event is on a cycle: every later block
   ends in the same state, which is therefore its state at ``s0`` and at the end of the main phase;
   it is *paused* there and costs nothing more until step 3;
3. the members still live walk the last ``T mod c`` steps the same way (a test after each);
4. the members live at ``T`` (and, with ``keep_orbit = K``, those that converged after
   ``T - K``) *revisit* steps ``s0 .. T`` from the mark: the same arithmetic again, so the same
   states, compared on the fly with ``z_T`` for the period, and the last ``K`` recorded for the
   orbit. Nothing is stored per step but the orbit.

Convergence test at step ``t`` (MATH.md §0 notation): ``||grad f(z_t)|| <= tol`` and, when
``momentum > 0``, also ``||v_t|| <= tol`` (``v_t = z_t - z_{t-1}``). With a ``momentum`` axis the
steps of a block are held at the first state that passes the test, so ``steps_to_converge`` is the
first step at which it holds, whatever ``check_every``. Plain GD steps are not held (the test per step
costs a third of a step): ``steps_to_converge`` is the first step at which the test holds inside the
first check block whose end passes it. That is the first step at which it holds unless ``||grad f||``
dips below ``tol`` and back up within one block, which it does not near a minimum (there
``g' = (I - eta H) g`` and ``||grad f||`` decreases monotonically while ``eta H < 2``).
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

from .. import _llvm_options as _llvm
from .. import observables as obs
from ..dynamics import gd_update
from ..pytree import tree_all_finite, tree_sq_norm, tree_where
from .classify import classify

PERIOD_RTOL = 1e-9
CYCLE = -2  # the event code of a block with no event that ends where it started
UNROLL_MAX_COORDINATES = 16  # unroll the fused block for problems this small (elementwise work) ...
UNROLL_MAX_STEP_OPERATIONS = 32  # ... whose GD step is at most this many operations (step_unroll)
FINAL_GROUP = 16  # rows per group of the final observables of problems with matrix coordinates (in_groups)
UNROLL = 16  # steps per unrolled group
NARROW_FACTOR = 8  # narrow tiles are this many times narrower than full ones ...
NARROW_MIN = 64  # ... and at least this wide (else only full tiles are used)
ROUND_DOUBLINGS = 2  # rounds without a compaction double in length, up to 2^this times blocks_per_round
# XLA:CPU's parallel task assignment (the pass turned off here) splits the larger operations of a
# program over its thread pool. A sweep runs one chunk per core already: the split only adds
# hand-offs between the pool's threads, and their spinning while they wait for work. Without it the
# scalar benchmark's sweep on 2 threads took 8-10% less CPU time and 5-7% less wall time (best of
# 14 and 20 interleaved rounds). No result depends on it (tested); no other backend has the pass.
COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cpu-parallel-task-assigner"}


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """Everything static about a sweep: it keys the compilation cache together with the shapes.

    ``tile``, ``unroll`` and ``blocks_per_round`` only schedule the work; no result depends on them.
    """

    steps: int
    check_every: int
    tail: int
    max_period: int
    keep_orbit: int
    init: str  # "ab" (scalar coordinates), "params0" (fixed), "random" (per row: problem.init_batch, passed in)
    init_kind: str
    const_names: tuple[str, ...]
    sharpness: bool
    heavy_ball: bool = True  # False when no momentum is swept: plain GD steps (see gd_update)
    scaled_test: bool = False  # tol outside NORMAL_TOL: the convergence test scales g by 2^k first (tol_scale)
    tile: int = 4096  # trajectories advanced together (sized for the cache)
    unroll: int = UNROLL  # steps per unrolled group of a block, walk or replay (1: single steps; step_unroll)
    blocks_per_round: int = 4  # check blocks of a round, between two compactions (doubled: ROUND_DOUBLINGS)
    replay_gathered: bool = True  # replay event blocks on their rows gathered in groups (else the whole tile)

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
    shape, e.g. one ``weight_decay`` for every layer; a structure specialized on the old value is
    undone first: :meth:`mfdyn.problems.base.Problem.generalized`).
    """
    if factory is not None:
        return factory(**consts)
    problem = base = base.generalized(tuple(consts))
    for name, value in consts.items():
        leaf = getattr(base, name)
        new = jnp.broadcast_to(jnp.asarray(value, dtype=leaf.dtype), leaf.shape)
        problem = eqx.tree_at(lambda p, n=name: getattr(p, n), problem, new)
    return problem


def _initial_params(problem: Any, vals: dict, params0: Any, spec: KernelSpec) -> Any:
    if spec.init == "ab":
        return (vals["a"], vals["b"])
    return params0  # (fixed, or with "random" this row's draw of problem.init_batch)


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
        unroll = min(n, spec.unroll)
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

    scale = tol_scale(tol) if spec.scaled_test else None
    bound = sq_norm_bound(tol if scale is None else scale * tol)

    def sq_norm(x):
        """``||x||^2`` (of ``2^k x`` for a ``tol`` outside :data:`NORMAL_TOL`: :func:`tol_scale`)."""
        return tree_sq_norm(x if scale is None else jax.tree_util.tree_map(lambda leaf: scale * leaf, x))

    def passes(vals, g, v):
        """The convergence test, given the gradient and the velocity (``None`` for plain GD):
        ``||g|| <= tol`` (and ``||v|| <= tol``), evaluated exactly as ``||g||^2 <= bound``."""
        if not spec.heavy_ball:
            return sq_norm(g) <= bound
        return (sq_norm(g) <= bound) & ((vals["momentum"] == 0) | (sq_norm(v) <= bound))

    def init(problem, vals, params0):
        p0 = _initial_params(problem, vals, params0, spec)
        v0 = jax.tree_util.tree_map(jnp.zeros_like, p0) if spec.heavy_ball else None
        return p0, v0

    def plain_step(problem, vals):
        """One plain GD step on ``(z, v)`` with the trajectory's step size and momentum."""
        def plain(zv, grad=None):
            momentum = vals["momentum"] if spec.heavy_ball else 0.0  # (unused by plain GD)
            return gd_update(problem, zv[0], zv[1], vals["eta"], momentum, grad=grad, heavy_ball=spec.heavy_ball)
        return plain

    def block_end_test(problem, vals, z, v):
        """Whether ``(z, v)`` and its gradient are finite, and whether it passes the convergence
        test (one gradient serves both tests)."""
        g = problem.grad(z)
        finite = tree_all_finite(z) & tree_all_finite(v) & tree_all_finite(g)
        return finite, finite & passes(vals, g, v)

    def template(problem):
        """A state ``(z, v)`` of the trajectory's structure (its values unused)."""
        z = problem.unflatten(jnp.zeros(problem.num_coordinates))
        return z, (z if spec.heavy_ball else None)

    def pack(problem, vals, z, v):
        return _complex_pairs((z, v))[0]((z, v))

    def unpack(problem, vals, packed):
        return _complex_pairs(template(problem))[1](packed)

    def held_at_convergence(problem, vals):
        """The heavy-ball step, held at the first state that passes the convergence test. Under
        momentum ``||grad f||`` and ``||v||`` oscillate as they decay, and can pass the test and
        fail it again within a block: held there, the block ends with an event, and its replay
        locates that first step (a plain GD step needs no hold: near a minimum ``||grad f||``
        decreases monotonically, ``g' = (I - eta H) g``)."""
        plain = plain_step(problem, vals)

        def step(zv):
            g = problem.grad(zv[0])
            return tree_where(passes(vals, g, zv[1]), zv, plain(zv, grad=g))
        return step

    def block(problem, vals, z, v):
        """``c`` unguarded steps from ``(z, v)``: the end state and its :func:`block_end_test`."""
        step = held_at_convergence(problem, vals) if spec.heavy_ball else plain_step(problem, vals)
        z1, v1 = repeat(problem, spec.check_every, step, (z, v))
        return (z1, v1), block_end_test(problem, vals, z1, v1)

    def fused_block(problem, vals, packed, live):
        """``c`` unguarded steps from the packed state (see :func:`_complex_pairs`); returns the new
        packed state, or the old one if the trajectory is not ``live`` or the block ended with an
        event: a non-finite state or gradient, or a state passing the convergence test. (The steps
        run in :func:`repeat`'s loop: inlined into the test and selection, XLA:CPU runs the chain
        1.2-1.4x slower.)"""
        z, v = unpack(problem, vals, packed)
        (z1, v1), (finite, done) = block(problem, vals, z, v)
        go = live & finite & ~done
        return pack(problem, vals, tree_where(go, z1, z), tree_where(go, v1, v))

    def block_finite(problem, vals, z, v):
        """Whether the block from ``(z, v)`` ends finite (with a finite gradient)."""
        return block(problem, vals, z, v)[1][0]

    def same_bits(problem, vals, x, y):
        """Whether two (packed) states are equal bit for bit."""
        def bits(leaf):
            parts = (jnp.real(leaf), jnp.imag(leaf)) if jnp.iscomplexobj(leaf) else (leaf,)
            return [jax.lax.bitcast_convert_type(p, jnp.int64) for p in parts]

        pairs = zip(jax.tree_util.tree_leaves(jax.tree_util.tree_map(bits, x)),
                    jax.tree_util.tree_leaves(jax.tree_util.tree_map(bits, y)))
        return jnp.all(jnp.stack([jnp.all(a == b) for a, b in pairs]))

    def tested_step(problem, vals, z, v, g, r):
        """Step ``r`` from ``(z, v)`` (``g`` its gradient): the new state and its gradient, whether
        the new state is finite, and its event code: ``2 r + 1`` if the state or its gradient is not
        finite (*bad*), ``2 r`` if it passes the convergence test, ``-1`` if neither."""
        z1, v1 = plain_step(problem, vals)((z, v), grad=g)
        g1 = problem.grad(z1)
        state_ok = tree_all_finite(z1) & tree_all_finite(v1)
        code = jnp.where(state_ok & tree_all_finite(g1), jnp.where(passes(vals, g1, v1), 2 * r, -1), 2 * r + 1)
        return z1, v1, g1, state_ok, code

    def frozen_walk(problem, vals, packed, n: int):
        """``n`` plain steps from the packed state (see :func:`_complex_pairs`), one at a time with
        the test after each, stopping at the first event: returns the packed state the trajectory
        stops at and ``first = 2 r (+1 if bad)`` for the first event at step ``r`` (``1 <= r <= n``
        after the start), ``-1`` if none (:func:`decode_first`).

        Step ``r`` is *bad* when its state or its gradient is not finite (the trajectory stops at
        it if the state itself is finite, else one step earlier: :func:`mfdyn.dynamics.guarded_update`)
        and *converged* when it is good and passes the test (the trajectory stops at it). The
        start is good and failed the test. Each row is frozen at its event. For small problems the
        steps are unrolled in groups of up to ``spec.unroll`` (XLA:CPU pays per operation launched: a
        loop over one step at a time spends more time launching than computing)."""
        z, v = unpack(problem, vals, packed)
        pack_pair, unpack_pair = _complex_pairs((z, v, z))
        unroll = min(max(n, 1), spec.unroll)
        groups, rest = divmod(n, unroll)

        def steps(r0, n, carry):
            """Steps ``r0 + 1 .. r0 + n``; the carry holds the gradient of its state (computed
            once per step: the test of a state and the step from it share it)."""
            (z, v, g), first = unpack_pair(carry[0]), carry[1]
            for j in range(n):
                r = r0 + j + 1
                live = first < 0
                z1, v1, g1, state_ok, code = tested_step(problem, vals, z, v, g, r)
                first = jnp.where(live, code, first)
                keep = live & state_ok
                z, v, g = tree_where(keep, z1, z), tree_where(keep, v1, v), tree_where(keep, g1, g)
            return pack_pair((z, v, g)), first

        carry = (pack_pair((z, v, problem.grad(z))), jnp.asarray(-1, jnp.int64))
        if groups == 1:
            carry = steps(0, unroll, carry)
        elif groups:
            carry = jax.lax.fori_loop(0, groups, lambda i, cr: steps(i * unroll, unroll, cr), carry)
        packed_pair, first = steps(groups * unroll, rest, carry)
        z, v, _ = unpack_pair(packed_pair)
        return pack(problem, vals, z, v), first

    def find(problem, vals, packed, n: int):
        """``first`` of :func:`frozen_walk` (the first event), its steps unrolled and unfrozen:
        past the event the states run on (into non-finite values), as they no longer matter."""
        z, v = unpack(problem, vals, packed)
        g = problem.grad(z)
        first = jnp.asarray(-1, jnp.int64)
        for r in range(1, n + 1):
            z, v, g, _, event = tested_step(problem, vals, z, v, g, r)
            first = jnp.where(first < 0, event, first)
        return first

    def replay(problem, vals, packed, first, n: int):
        """The packed state :func:`frozen_walk` stops at, given its ``first``: the steps up to the
        event's (all ``n`` if none), unrolled, each new state taken if finite, with no other test."""
        plain = plain_step(problem, vals)
        last = jnp.where(first >= 0, first // 2, n)
        z, v = unpack(problem, vals, packed)
        for r in range(1, n + 1):
            z1, v1 = plain((z, v))
            keep = (r <= last) & tree_all_finite(z1) & tree_all_finite(v1)
            z, v = tree_where(keep, z1, z), tree_where(keep, v1, v)
        return pack(problem, vals, z, v)

    def block_finite_packed(problem, vals, packed):
        return block_finite(problem, vals, *unpack(problem, vals, packed))

    def revisit(problem, vals, z, v, z_end, stop):
        """Steps ``s0 .. T`` again from the state ``(z, v)`` at ``s0 = c floor((T - W) / c)``, the
        start of the check block holding step ``T - W``; the trajectory ended at ``z_end`` (``z_T``,
        or its converged state). Returns the period, the smallest ``k <= max_period`` with
        ``||z_T - z_{T-k}|| <= 1e-9 ||z_T||`` (flat real coordinates; 0 if none), and the orbit
        ``z_{T-K+1} .. z_T`` (``K = keep_orbit`` rows; a trajectory that converged at step
        ``stop > T - K`` stays there). No event can occur: the main phase ran these very steps.
        """
        T, W, K, P = spec.steps, spec.tail, spec.keep_orbit, spec.max_period
        # ||z_end - z_t|| <= rtol ||z_end||, evaluated exactly as a squared distance against
        # sq_norm_bound (no square root and no reduction per step)
        bound = sq_norm_bound(PERIOD_RTOL * jnp.sqrt(_sq_distance(z_end, jax.tree_util.tree_map(jnp.zeros_like, z_end))))

        plain = plain_step(problem, vals)

        def compare(t, z, best):
            k = (T - t).astype(best.dtype)
            hit = (k >= 1) & (k <= P) & (_sq_distance(z_end, z) <= bound)
            return jnp.where(hit, k, best)

        def visit(t, carry):
            """State ``z_t``: compared with ``z_end``, then advanced (frozen from step ``stop`` on)."""
            (z, v), best = carry
            best = compare(t, z, best)
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
            final_params=problem.flatten(z),
        )

    return dict(init=init, fused_block=fused_block, block_end_test=block_end_test, revisit=revisit, pack=pack,
                unpack=unpack, same_bits=same_bits, block_finite=block_finite_packed,
                frozen_walk=frozen_walk, find=find, replay=replay,
                finals=finals, orbit_loss=lambda problem, vals, orbit: jax.vmap(problem.flat_loss)(orbit))


def two_passes(unroll: int, n: int) -> bool:
    """Whether a walk of ``n`` steps runs as :func:`find` then :func:`replay` (small problems, all
    steps unrolled: ``n <= unroll``, the kernel's :attr:`KernelSpec.unroll`) rather than as the
    one-pass :func:`frozen_walk`."""
    return unroll > 1 and n <= unroll


def walk_rows(batched: Callable, pieces: dict, unroll: int, tol: jax.Array, vals: dict, packed: Any,
              n: int) -> tuple[Any, jax.Array]:
    """The walk of ``n`` steps of every row (``batched(fn, vals, *args)`` maps a per-trajectory
    piece over the rows; ``unroll``: :attr:`KernelSpec.unroll`): the packed states the rows stop at
    and their codes ``first``.

    Small problems take two passes, :func:`find` then :func:`replay`, each one fused pass over the
    rows with one output, behind a ``cond`` whose predicate XLA cannot fold (``tol >= 0``; ``tol > 0``
    was validated), so that it is computed once: XLA:CPU computes a fused chain once per output and
    per consumer, and the one-pass walk, with two outputs (the state and ``first``), costs 15% more
    per row (5% more of the scalar sweep's kernel). The conds sit outside the ``vmap``: batching
    a cond (or a loop) traces its branch again, 0.7 s more tracing per kernel (measured).
    """
    if not two_passes(unroll, n):
        return batched(partial(pieces["frozen_walk"], n=n), vals, packed)
    always = tol >= 0
    rows = jax.tree_util.tree_leaves(packed)[0].shape[0]
    first = jax.lax.cond(always, lambda: batched(partial(pieces["find"], n=n), vals, packed),
                         lambda: jnp.full((rows,), -1, jnp.int64))
    end = jax.lax.cond(always, lambda: batched(partial(pieces["replay"], n=n), vals, packed, first), lambda: packed)
    return end, first


def _sq_distance(x: Any, y: Any) -> jax.Array:
    """``||x - y||^2`` over the real coordinates of two pytrees (a complex entry counts as its
    real and imaginary parts), summed leaf by leaf: scalar leaves need no reduction."""
    total = jnp.asarray(0.0)
    for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y)):
        d = a - b
        parts = (jnp.real(d), jnp.imag(d)) if jnp.iscomplexobj(d) else (d,)
        for part in parts:
            total = total + (part * part if part.ndim == 0 else jnp.sum(part * part))
    return total


def decode_first(first: jax.Array, t0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(diverged_at, steps_to_converge)`` (``-1`` if none) from a walk's code ``first``
    (:func:`walk_rows`: ``2 r``, ``+1`` if bad, for an event ``r`` steps after step ``t0``;
    negative if none)."""
    row, bad = first // 2, first % 2 == 1
    return jnp.where((first >= 0) & bad, t0 + row, -1), jnp.where((first >= 0) & ~bad, t0 + row, -1)


NORMAL_TOL = (1e-100, 1e100)  # tolerances whose test needs no scaling (KernelSpec.scaled_test)


def needs_scaled_test(tol: float) -> bool:
    """Whether ``||g||^2 <= sq_norm_bound(tol)`` could be wrong for ``tol``: the squares of a gradient near
    ``tol`` under- or overflow when ``tol`` is outside :data:`NORMAL_TOL` (``||g|| = 1e-200`` squares to
    0 and passed a ``tol`` of 1e-300; ``||g|| = 1e180`` squares to inf and failed a ``tol`` of 1e200).
    Inside it, squares that underflow are below ``1e-108`` of the bound and no rounding can tell."""
    return not NORMAL_TOL[0] <= tol <= NORMAL_TOL[1]


def tol_scale(tol: jax.Array) -> jax.Array:
    """``2^k`` with ``2^k tol`` in ``[1/2, 1)`` (``k`` clipped to +-1020: normal numbers): the test of a
    ``tol`` outside :data:`NORMAL_TOL` compares ``||2^k g||^2`` with ``sq_norm_bound(2^k tol)``. Powers of
    two scale squares and sums exactly, so this is the test of ``||g||`` in float64 with an unbounded
    exponent; a scaled component that still overflows makes ``||g||`` far above ``tol`` (inf: fails),
    and one that underflows counts for nothing, as it should beside a bound near 1."""
    _, exponent = jnp.frexp(tol)
    return jnp.ldexp(jnp.asarray(1.0, jnp.float64), -jnp.clip(exponent, -1020, 1020))


def sq_norm_bound(tol: jax.Array, xp: Any = jnp) -> jax.Array:
    """The largest float64 ``x`` with ``sqrt(x) <= tol`` (in floating point), so that
    ``sqrt(s) <= tol`` if and only if ``s <= bound`` for every float64 ``s >= 0`` (a squared norm;
    ``sqrt`` is correctly rounded, hence monotone). The test then needs no square root: XLA keeps a
    square root out of a fused loop, and computes the whole block of steps again to feed it.

    Start from ``tol * tol`` (within a few units in the last place of the bound, or 0 or inf when it
    under- or overflows) and step to the bound one float at a time. ``xp``: ``jax.numpy`` (the
    kernel), or ``numpy`` (IEEE arithmetic with subnormals, as on a GPU; XLA:CPU reads subnormal
    inputs as zero).
    """
    tol = xp.asarray(tol, xp.float64)
    x = tol * tol
    for _ in range(4):
        x = xp.where(xp.sqrt(x) > tol, xp.nextafter(x, -xp.inf), x)
    for _ in range(4):
        up = xp.nextafter(x, xp.inf)
        x = xp.where(xp.sqrt(up) <= tol, up, x)
    return x


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


def _stable_order(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The row order with the ``mask`` rows first, each group in its previous order (one prefix sum
    and one scatter), and the number of ``mask`` rows."""
    n = mask.shape[0]
    inclusive = jax.lax.associative_scan(jnp.add, mask.astype(jnp.int32))
    row = jnp.arange(n, dtype=jnp.int32)
    dest = jnp.where(mask, inclusive - 1, inclusive[-1] + row - inclusive)
    return jnp.zeros(n, jnp.int32).at[dest].set(row, unique_indices=True), inclusive[-1]


def _live_first(tree: Any, live: jax.Array) -> Any:
    """Every leaf's rows reordered: the ``live`` rows first, each group in its previous order
    (a stable partition: :func:`_stable_order`, then one gather per leaf; the order is a
    permutation, so the gathers skip bounds handling: 2% of the scalar sweep's kernel)."""
    order, _ = _stable_order(live)
    return jax.tree_util.tree_map(lambda x: x.at[order].get(mode="promise_in_bounds", unique_indices=True), tree)


def _on_selected(mask: jax.Array, widths: int | tuple[int, ...], fn: Callable, const: Any, tree: Any) -> Any:
    """``tree`` with its ``mask`` rows replaced by ``fn(const_rows, tree_rows)``, the rows gathered
    in groups (the other rows are neither read by ``fn`` nor changed; ``const`` is only read).
    ``fn`` maps rows to rows of the same structure, each row independently. ``widths``: the group
    widths, widest first: as many groups of each width as the rows fill, the last width for the
    rest (:func:`_tile_counts`)."""
    widths = (widths,) if isinstance(widths, int) else tuple(widths)
    n = mask.shape[0]
    order, count = _stable_order(mask)
    selected = jnp.concatenate([order, jnp.full(widths[-1], n, jnp.int32)])  # the last group may run past n
    offset = jnp.zeros_like(count)
    for groups, group in zip(_tile_counts(count, widths), widths):
        def body(j, tree, group=group, offset=offset):
            first = offset + j * group
            lane = first + jnp.arange(group, dtype=jnp.int32)
            idx = jax.lax.dynamic_slice_in_dim(selected, first, group)
            out = fn(*jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0, mode="clip"), (const, tree)))
            dest = jnp.where(lane < count, idx, n)  # unused lanes of the last group: dropped
            return jax.tree_util.tree_map(lambda x, r: x.at[dest].set(r, mode="drop", unique_indices=True), tree, out)

        tree = jax.lax.fori_loop(0, groups, body, tree)
        offset = offset + groups * group
    return tree


def _tile_counts(n_live: jax.Array, widths: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """Tiles per width for ``n_live`` rows: as many tiles of each width as they fill, the last
    width covering the rest."""
    counts, done = [], jnp.zeros_like(n_live)
    for i, width in enumerate(widths):
        last = i == len(widths) - 1
        count = (n_live - done + width - 1) // width if last else (n_live - done) // width
        counts.append(count)
        done = done + count * width
    return tuple(counts)


def _run_chunk(problem: Any, values: dict, params0: Any, tol: jax.Array, filled: jax.Array | None = None, *,
              spec: KernelSpec, factory: Callable | None = None) -> dict:
    """Run a chunk: ``values[name]`` holds one entry per trajectory (all of the same length ``C``).
    Only the first ``filled`` rows (default: all) are trajectories: the others pad a short last
    chunk to the compiled shape; they count as settled from the start, cost nothing but their
    initialization, and their results are meaningless.

    ``values`` must hold ``eta``, ``momentum`` (if ``spec.heavy_ball``), the initialization axes
    of ``spec.init`` and the swept constants ``spec.const_names``. ``params0``: the fixed start, or with
    ``spec.init == "random"`` every row's start (``problem.init_batch`` of its seed and scale, computed
    outside: a draw fused into this program would round differently from ``problem.init``). Returns a dict of arrays with
    leading dimension ``C``, the outcome codes and periods already classified
    (:func:`mfdyn.sweep.classify.classify`).

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

    def member(v: dict) -> Any:
        """The problem of the trajectory with swept constants ``v``."""
        return with_constants(problem, factory, {n: v[n] for n in spec.const_names})

    def batched(name: str | Callable, vals: dict, *args, arg_axes: tuple | None = None):
        """``pieces[name]`` (or the piece ``name`` itself) vmapped over the trajectories ``vals``
        (their problems built here)."""
        problems = jax.vmap(member)(vals) if per_member else problem
        axes = (0 if per_member else None, 0) + (arg_axes if arg_axes is not None else (0,) * len(args))
        return jax.vmap(pieces[name] if isinstance(name, str) else name, in_axes=axes)(problems, vals, *args)

    def in_groups(name: str | Callable, vals: dict, *args):
        """:func:`batched` over fixed groups of ``FINAL_GROUP`` rows (``lax.map`` over the groups; the
        rows padded to a multiple of it with copies of the last). XLA compiles a reduction over a
        matrix of each row (the loss ``1/2 ||U V^T - X||^2``) differently for different numbers of
        rows, so over the whole padded chunk the results changed in the last bit with the chunk size;
        over groups of one fixed size they do not. Problems with scalar coordinates have no such
        reduction: their rows go at once."""
        if scalar_coordinates(problem):
            return batched(name, vals, *args)
        rows = jax.tree_util.tree_leaves(vals)[0].shape[0]
        groups = -(-rows // FINAL_GROUP)
        extra = groups * FINAL_GROUP - rows

        def grouped(x):
            x = jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) if extra else x
            return x.reshape((groups, FINAL_GROUP) + x.shape[1:])

        out = jax.lax.map(lambda t: batched(name, t[0], *t[1]), jax.tree_util.tree_map(grouped, (vals, args)))
        return jax.tree_util.tree_map(lambda x: x.reshape((groups * FINAL_GROUP,) + x.shape[2:])[:rows], out)

    def one_at_a_time(fn: Callable, vals: dict, *args):
        """``fn(problem, vals, *args)`` of each trajectory, the rows one after the other (``lax.map``)."""
        def one(row):
            v, a = row
            return fn(member(v) if per_member else problem, v, *a)
        return jax.lax.map(one, (vals, args))

    def final_sharpness(vals: dict, z: Any) -> jax.Array:
        """The largest Hessian eigenvalue of every row (:func:`mfdyn.observables.sharpness`, the same
        bits). A symmetric eigensolver of LAPACK gets one matrix per call: jaxlib 0.10.2 splits a
        batch of matrices over XLA's thread pool from inside a thread of that pool and blocks until
        they are done, so two chunks on two threads that reach it at once wait on each other for
        ever (a deep sweep on threads hung in 5 runs of 5; one matrix per call: 0 of 7). The
        Hessians themselves are computed for all rows at once; the closed form (2 coordinates)
        needs no LAPACK."""
        sharpness = lambda p, v, zz: obs.sharpness(p, zz)  # noqa: E731
        method = obs.eig_method(problem.num_coordinates)
        if method == "closed_form":
            return batched(sharpness, vals, z)
        if method == "dense":
            hessians = in_groups(lambda p, v, zz: p.hessian(zz), vals, z)
            return jax.lax.map(lambda h: jnp.linalg.eigvalsh(h)[-1], hessians)
        return one_at_a_time(sharpness, vals, z)

    def tiling(n_live: jax.Array) -> tuple[jax.Array, ...]:
        """Tiles per width for ``n_live`` rows at the front of the working order."""
        return _tile_counts(n_live, widths)

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

    def padded_rows(x):
        return jnp.concatenate([x, jnp.repeat(x[-1:], widths[0], axis=0)])

    vals = {k: padded_rows(x) for k, x in values.items()}
    origin = jnp.arange(padded)
    padding = origin >= (size if filled is None else jnp.minimum(filled, size))
    if spec.init == "random":  # (the rows' own draws)
        z0, v0 = batched("init", vals, jax.tree_util.tree_map(padded_rows, params0), arg_axes=(0,))
    else:
        z0, v0 = batched("init", vals, params0, arg_axes=(None,))
    finite0, converged0 = batched("block_end_test", vals, z0, v0)  # (the start's test)
    # the rows carry only what the steps read (the initialization axes are done with)
    vals = {k: x for k, x in vals.items() if k in ("eta", *spec.const_names) or (k == "momentum" and spec.heavy_ball)}
    # a start whose gradient is not finite diverged at step 0 (as in mfdyn.gd); padding rows count as settled
    work = dict(vals=vals, z=z0, v=v0, origin=origin, conv=jnp.where(converged0 & ~padding, 0, -1).astype(jnp.int64),
                div=jnp.where(padding | ~finite0, 0, -1).astype(jnp.int64))

    # 1. main phase: rounds of check blocks over tiles of the running rows. A row whose block ends
    #    with its state unchanged, bit for bit, records `event = start step of the block` and stops
    #    advancing: the block ended with an event (the row kept its start state), or the row is on
    #    a cycle whose length divides c. At the end of the round its tile replays each such block
    #    step by step (`locate`): the first event stops the row; a row with no event is on a cycle,
    #    so every later block ends in the same state: it is *paused* there, done with the main phase.
    def running(st):
        return unsettled(st) & ~st["paused"]

    def run_blocks(vals, st, first_block, n_blocks):
        """Blocks on the packed states ``st["zv"]`` of the rows ``st["active"]``."""
        def cond(bs):
            i, s = bs
            return (i < n_blocks) & jnp.any(s["active"] & (s["event"] < 0))

        def body(bs):
            i, s = bs
            live = s["active"] & (s["event"] < 0)
            # materialized once: else XLA computes the block again inside the comparison below
            zv = jax.lax.optimization_barrier(batched("fused_block", vals, s["zv"], live))
            same = live & batched("same_bits", vals, zv, s["zv"])
            return i + 1, dict(s, zv=zv, event=jnp.where(same, (first_block + i) * c, s["event"]))

        return jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int64), st))[1]

    def locate_rows(const, rows):
        """The event of rows ``(vals, start)`` whose blocks ended with their start state ``zv``:
        the block walked again step by step (:func:`walk_rows`), returning the state each row
        stops at and its event code (``first``, relative to ``start``); ``CYCLE`` when there is
        none and the walk ends where it started (the row is on a cycle whose length divides
        ``c``). A walk that does not reproduce its block (``-1``: different rounding) takes the
        block's own end test: an event at its end (``first = 2 c``, ``+1`` if not finite)."""
        vals, _ = const
        zv, _ = rows
        end, first = walk_rows(batched, pieces, spec.unroll, tol, vals, zv, c)
        cycle = (first < 0) & batched("same_bits", vals, end, zv)  # no event: a cycle whose length divides c
        first = jnp.where(cycle, CYCLE, first)
        stray = first == -1
        finite_end = jax.lax.cond(jnp.any(stray), lambda: batched("block_finite", vals, zv),
                                  lambda: jnp.ones(stray.shape, bool))
        return end, jnp.where(stray, 2 * c + (~finite_end).astype(first.dtype), first)

    def locate(vals, zv, event):
        """The rows with an event block (``event >= 0``, its start step), gathered in groups of
        ``widths[-1]`` rows (the replay costs several times a block per row; most rows of a tile
        have none), or with ``spec.replay_gathered`` off the whole tile, masked (on a GPU the
        gathers and scatters cost far more than walking every row): their new packed state and
        event code (``-1`` for the other rows)."""
        selected = event >= 0
        code = jnp.full(event.shape, -1, jnp.int64)
        group = widths[-1]
        if not spec.replay_gathered or event.shape[0] <= group:
            end, first = locate_rows((vals, event), (zv, code))
            return _where(selected, end, zv), jnp.where(selected, first, code)
        return _on_selected(selected, group, locate_rows, (vals, event), (zv, code))

    def settle(st, event, code):
        """The tile's state after :func:`locate`: an event stops its row (``diverged_at`` or
        ``steps_to_converge``); a row on a cycle is paused, every later block ending where it is
        (the mark kept if the block starts at ``s0`` or before)."""
        div, conv = decode_first(code, event)
        cycle = (event >= 0) & (code == CYCLE)
        keep_mark = cycle & (event <= spec.mark_block * c)
        mark = jax.tree_util.tree_map(lambda m, x: _where(keep_mark, x, m), st["mark"], (st["z"], st["v"]))
        return dict(st, div=jnp.where(div >= 0, div, st["div"]), conv=jnp.where(conv >= 0, conv, st["conv"]),
                    paused=st["paused"] | cycle, mark=mark)

    def round_cond(rs):
        k, w, _, _ = rs
        return (k < spec.main_blocks) & jnp.any(running(w))

    def compact(w, live, counts):
        """Moves the running rows to the front when that saves a quarter of the lanes at least (a
        smaller saving does not pay for the reorder). When every running row is in
        the first full tile, only that tile is reordered, in place (a whole-chunk reorder costs
        about as much as a few blocks of a full chunk). Returns the rows, the tiles and whether
        it compacted."""
        fewer = tiling(jnp.sum(live))
        wanted = lanes(fewer) * 4 <= lanes(counts) * 3  # saves a quarter of the lanes at least
        wide = widths[0]
        local = lanes(counts) <= wide
        w = jax.lax.cond(wanted & ~local, lambda: _live_first(w, live), lambda: w)
        # (under a cond, not a selection: the reorder costs 3.5% of the scalar benchmark's kernel)
        w = jax.lax.cond(wanted & local, lambda w: _set_rows(w, 0, _live_first(_rows(w, 0, wide), live[:wide])),
                         lambda w: w, w)
        return w, jax.tree_util.tree_map(lambda a, b: jnp.where(wanted, a, b), fewer, counts), wanted

    def round_body(rs):
        """One round over the current tiles, after a compaction. A round ends at the mark block at
        the latest; once the running rows fit one narrow tile, it runs on to there (or the end).
        The mark (the state at step ``s0``) starts as the initial state, for ``s0 = 0``."""
        k, w, counts, quiet = rs
        w, counts, compacted = compact(w, running(w), counts)
        # rounds without a compaction double in length (fewer per-round passes over the tiles)
        quiet = jnp.where(compacted, 0, jnp.minimum(quiet + 1, ROUND_DOUBLINGS))
        until = jnp.where(k < spec.mark_block, spec.mark_block, spec.main_blocks)
        per_round = spec.blocks_per_round * (1 << quiet)
        n_blocks = jnp.where(lanes(counts) <= widths[-1], until - k, jnp.minimum(per_round, until - k))

        def advance(vals, tile):
            blocks = dict(zv=batched("pack", vals, tile["z"], tile["v"]), active=running(tile),
                          event=jnp.full(tile["conv"].shape, -1, jnp.int64))
            blocks = run_blocks(vals, blocks, k, n_blocks)
            event = blocks["event"]
            zv, code = jax.lax.cond(jnp.any(event >= 0), locate,
                                    lambda _, zv, e: (zv, jnp.full(e.shape, -1, jnp.int64)), vals, blocks["zv"], event)
            z, v = batched("unpack", vals, zv)
            st = settle(dict(tile, z=z, v=v), event, code)
            # the state at the start of the mark block is kept (the tail's start; rounds end there)
            mark = jax.tree_util.tree_map(lambda m, x: jnp.where(k + n_blocks == spec.mark_block, x, m),
                                          st["mark"], (st["z"], st["v"]))
            return dict(z=st["z"], v=st["v"], conv=st["conv"], div=st["div"], paused=st["paused"], mark=mark)

        keys = ("z", "v", "conv", "div", "paused", "mark")
        state = over_tiles(counts, advance, {key: w[key] for key in keys}, w["vals"])
        return k + n_blocks, dict(w, **state), counts, quiet

    work["mark"] = (work["z"], work["v"])
    work["paused"] = jnp.zeros((padded,), bool)
    start = (jnp.asarray(0, jnp.int64), work, tiling(jnp.sum(~padding)), jnp.asarray(-1, jnp.int64))
    _, work, _, _ = jax.lax.while_loop(round_cond, round_body, start)

    # 2. the last `T mod c` steps, walked by the rows still live, then the tail revisited from the
    #    mark for period detection and the orbit (by those still live, and with keep_orbit those that
    #    converged in the orbit window): one pass over exactly these rows, gathered in groups
    #    (:func:`_on_selected`; one gather and scatter instead of one for each part: 3-5% of the
    #    scalar benchmark's kernel). (Tiles over the front of a reordered chunk missed live rows:
    #    those that converged in the walk left holes in front of them.)
    period = jnp.zeros((padded,), jnp.int32)
    orbit = jnp.zeros((padded, spec.keep_orbit, problem.num_coordinates)) if spec.keep_orbit else None
    revisits = bool(spec.max_period or spec.keep_orbit)

    def in_orbit_window(st):
        """Settled rows revisited all the same: with ``keep_orbit = K``, those that converged after ``T - K``."""
        return (st["conv"] > spec.steps - spec.keep_orbit) & (st["div"] < 0)

    def tail_rows(const, rows):
        """The last ``T mod c`` steps walked by the rows still live, then the tail revisited."""
        vals = const["vals"]
        if spec.main_remainder:
            t0 = jnp.full(rows["conv"].shape, spec.main_blocks * c, jnp.int64)
            zv, first = walk_rows(batched, pieces, spec.unroll, tol, vals, batched("pack", vals, rows["z"], rows["v"]),
                                  spec.main_remainder)
            z, v = batched("unpack", vals, zv)
            div, conv = decode_first(first, t0)
            walked = unsettled(rows)  # (a row converged in the orbit window keeps its state)
            rows = dict(rows, z=_where(walked, z, rows["z"]), v=_where(walked, v, rows["v"]),
                        div=jnp.where(walked, div, rows["div"]), conv=jnp.where(walked, conv, rows["conv"]))
        if revisits:
            stop = jnp.where(rows["conv"] >= 0, rows["conv"], spec.steps + 1)
            found, trace = batched("revisit", vals, const["mark"][0], const["mark"][1], rows["z"], stop)
            rows = dict(rows, period=jnp.where(unsettled(rows), found, rows["period"]), orbit=trace)
        return rows

    selected = unsettled(work)
    if spec.keep_orbit:
        selected = selected | in_orbit_window(work)
    if spec.main_remainder or revisits:
        tail = {key: work[key] for key in ("z", "v", "conv", "div")}
        tail.update(period=period, orbit=orbit)
        tail = _on_selected(selected, widths, tail_rows, {"vals": work["vals"], "mark": work["mark"]}, tail)
        period, orbit = tail.pop("period"), tail.pop("orbit")
        work = dict(work, **tail)
    revisited = unsettled(work)
    if spec.keep_orbit:
        revisited = revisited | in_orbit_window(work)

    # 3. period detection and the final observables, then back to the chunk's order
    out = in_groups("finals", work["vals"], work["z"])
    out["final_sharpness"] = (final_sharpness(work["vals"], work["z"]) if spec.sharpness
                              else jnp.full((padded,), jnp.nan))
    # (classify keeps a period only for rows classified periodic: settled rows get 0)
    out["outcome"], out["period"] = classify(work["div"], work["conv"], period, xp=jnp)
    out.update(diverged_at=work["div"], steps_to_converge=work["conv"])
    if spec.keep_orbit:
        frozen = jnp.broadcast_to(out["final_params"][:, None, :], orbit.shape)
        orbit = jnp.where(revisited[:, None, None], orbit, frozen)
        # the last row is the final state, bit for bit: the revisit's steps are compiled apart from the
        # main phase's, and after one or two steps XLA had fused them into different roundings
        orbit = orbit.at[:, -1, :].set(out["final_params"])
        diverged = work["div"] >= 0
        out["orbit"] = jnp.where(diverged[:, None, None], jnp.nan, orbit)
        orbit_loss = in_groups("orbit_loss", work["vals"], out["orbit"])
        # (and its loss is final_loss: near a minimum the loss cancels, and its roundings differed by 4e-4)
        out["orbit_loss"] = orbit_loss.at[:, -1].set(jnp.where(diverged, jnp.nan, out["final_loss"]))
    rows = jnp.arange(padded, dtype=jnp.int32)
    position = jnp.zeros(padded, jnp.int32).at[work["origin"]].set(rows, unique_indices=True)[:size]
    return jax.tree_util.tree_map(lambda x: x.at[position].get(mode="promise_in_bounds", unique_indices=True), out)


STATIC_ARGNAMES = ("spec", "factory")
run_chunk = jax.jit(_run_chunk, static_argnames=STATIC_ARGNAMES, compiler_options=COMPILER_OPTIONS)
_KERNELS: dict[tuple, Callable] = {(): run_chunk}  # jitted kernels by their LLVM compiler options


def scalar_coordinates(problem: Any) -> bool:
    """Whether a trajectory's state is a few scalars (every leaf 0-d, at most
    ``UNROLL_MAX_COORDINATES``): its block of steps is one unrolled chain of scalar operations per
    trajectory, packed in complex pairs (:func:`_complex_pairs`). Remembered per problem structure
    (:func:`structure_key`): tracing ``unflatten`` took 2-3 ms of every sweep's planning."""
    return _per_structure(_SCALAR_COORDINATES, _scalar_coordinates, problem)


_SCALAR_COORDINATES: dict[Any, bool] = {}


def _scalar_coordinates(problem: Any) -> bool:
    n = problem.num_coordinates
    shapes = jax.eval_shape(problem.unflatten, jax.ShapeDtypeStruct((n,), jnp.float64))
    return n <= UNROLL_MAX_COORDINATES and all(leaf.ndim == 0 for leaf in jax.tree_util.tree_leaves(shapes))


def _per_structure(cache: dict, compute: Callable[[Any], Any], problem: Any) -> Any:
    """``compute(problem)``, remembered in ``cache`` per :func:`structure_key` (computed every time
    where there is no key)."""
    key = structure_key(problem)
    if key is None:
        return compute(problem)
    if key not in cache:
        cache[key] = compute(problem)
    return cache[key]


def structure_key(tree: Any) -> Any:
    """What a jitted function's compilation depends on in ``tree``: its pytree structure (static
    fields included) and the abstract value (shape, dtype, weak type) of every array leaf (any other
    leaf, a function, as itself); ``None`` if that is not hashable (e.g. a static field holding an
    array)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    try:
        key = (treedef, tuple(_abstract(leaf) for leaf in leaves))
        hash(key)
    except TypeError:
        return None
    return key


def _abstract(leaf: Any) -> Any:
    """A leaf's abstract value; a leaf that is no array (a function: a static argument) itself."""
    try:
        return jax.typeof(leaf)
    except TypeError:
        return ("static", leaf)


def step_unroll(problem: Any) -> int:
    """Steps per unrolled group in the kernel's blocks, walks and replays (:attr:`KernelSpec.unroll`):
    ``UNROLL`` for a small problem (at most ``UNROLL_MAX_COORDINATES`` coordinates) whose plain GD
    step is a few operations (at most ``UNROLL_MAX_STEP_OPERATIONS`` in its jaxpr, nested ones
    included), else 1 (a loop of single steps). Remembered per problem structure.

    Why (measured 2026-11-23, 2 cores, same bits either way): a problem whose step is elementwise
    work on a few entries gains from the unrolled chain (rank-1 3x4, 10 operations a step, and
    symmetric n=3 r=2, 6: 23% and 14% less time where no row settles; the scalar family: 8); a step
    of many small matrix products does not (deep d=2 L=3, 69 operations: the sweep of 8192
    trajectories x 2000 steps took 1.07 s looped against 1.82 s unrolled, and its kernel compiled
    3.5x faster).
    """
    return _per_structure(_STEP_UNROLL, _step_unroll, problem)


def _step_unroll(problem: Any) -> int:
    small = problem.num_coordinates <= UNROLL_MAX_COORDINATES and step_operations(problem) <= UNROLL_MAX_STEP_OPERATIONS
    return UNROLL if small else 1


_STEP_UNROLL: dict[Any, int] = {}


def step_operations(problem: Any) -> int:
    """The number of operations of one plain GD step of ``problem`` (its jaxpr's equations, those of
    nested jaxprs included)."""
    z = problem.unflatten(jnp.zeros(problem.num_coordinates))
    jaxpr = jax.make_jaxpr(lambda z: gd_update(problem, z, None, 0.5, 0.0, heavy_ball=False))(z)
    return _count_operations(jaxpr.jaxpr)


def _count_operations(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # (a ClosedJaxpr holds its Jaxpr)
                if hasattr(inner, "eqns"):
                    total += _count_operations(inner)
    return total


def wanted_llvm_options(problem: Any) -> str:
    """The LLVM options mfdyn gives the kernel of ``problem`` on a CPU: loop interleaving where a
    trajectory's state is a few scalars (:func:`scalar_coordinates`): its block of GD steps is a
    chain bound by its latency (:mod:`mfdyn._llvm_options`); none for the others (their loops over a
    few matrix entries ran the same or 4% slower, measured)."""
    return _llvm.INTERLEAVE if scalar_coordinates(problem) else ""


def kernel_llvm_options(wanted: str, platform: str = "cpu") -> str:
    """The LLVM options that the kernel compiled for ``wanted`` (:func:`wanted_llvm_options`) runs
    with in this process on ``platform`` (mfdyn's are for a CPU only): what a sweep records
    (:func:`mfdyn._llvm_options.effective`)."""
    return _llvm.effective(wanted if platform == "cpu" else "")


def kernel_for(wanted: str, platform: str = "cpu") -> Callable:
    """:func:`run_chunk`, compiled with the LLVM options ``wanted`` (:func:`wanted_llvm_options`) on
    a CPU (one jitted function per set of options, each with its own compilation cache)."""
    extra = _llvm.compiler_options(wanted if platform == "cpu" else "")
    key = tuple(sorted(extra.items()))
    if key not in _KERNELS:
        _KERNELS.setdefault(key, jax.jit(_run_chunk, static_argnames=STATIC_ARGNAMES,
                                         compiler_options={**COMPILER_OPTIONS, **extra}))
    return _KERNELS[key]
