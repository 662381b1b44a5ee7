"""The batched sweep engine against slow references (``mfdyn.gd`` one trajectory at a time)."""

from __future__ import annotations

import gc
import importlib
import json
import re
import threading
from functools import partial

import jax
import numpy as np
import pytest

import mfdyn
from mfdyn import InputError
from mfdyn.sweep.classify import OUTCOMES
from mfdyn.sweep.kernel import run_chunk

SCALAR = mfdyn.ScalarFactorization(1.0)
STEPS = 300
CHUNK = 16


def scalar_axes():
    return {"eta": [0.3, 0.9, 1.1, 1.2, 1.6, 2.3], "a": [0.4, 1.0, 1.7], "b": [0.6, 1.3]}


@pytest.fixture(scope="module")
def scalar_ds():
    return mfdyn.sweep(SCALAR, scalar_axes(), STEPS, keep_orbit=4, chunk=CHUNK, progress=False)


def test_layout(scalar_ds):
    ds = scalar_ds
    assert ds.outcome.dims == ("eta", "a", "b")
    assert ds.final_params.dims == ("eta", "a", "b", "coord")
    assert ds.orbit.dims == ("eta", "a", "b", "orbit_step", "coord")
    assert set(np.unique(ds.outcome.values)) <= set(OUTCOMES)
    assert "mfdyn_config" in ds.attrs and ds.attrs["mfdyn_version"] == mfdyn.__version__
    np.testing.assert_array_equal(ds.eta.values, scalar_axes()["eta"])


def test_matches_one_trajectory_gd(scalar_ds):
    """Every point against an independent unbatched ``mfdyn.gd`` run (the slow reference)."""
    ds = scalar_ds
    for i, eta in enumerate(ds.eta.values):
        for j, a in enumerate(ds.a.values):
            for k, b in enumerate(ds.b.values):
                pt = ds.isel(eta=i, a=j, b=k)
                outcome = str(pt.outcome.values)
                conv = int(pt.steps_to_converge)
                n = conv if conv >= 0 else STEPS
                traj = mfdyn.gd(SCALAR, (a, b), eta, n, record=("loss", "grad_norm", "params"))
                if outcome == "diverged":
                    assert traj.diverged_at == int(pt.diverged_at)
                    continue
                assert traj.diverged_at is None and int(pt.diverged_at) == -1
                np.testing.assert_allclose(pt.final_params.values, traj["params"][-1], rtol=1e-12, atol=1e-300)
                # same params; the residual r = ab - y may round differently (with or without a fused
                # multiply-add, chosen per compiled fusion): |dr| <= 2^-52 |ab|, |d loss| <= |r| |dr|
                r = np.sqrt(2 * traj["loss"][-1])
                ab = abs(np.prod(traj["params"][-1]))
                np.testing.assert_allclose(float(pt.final_loss), traj["loss"][-1], rtol=1e-9,
                                           atol=2.0**-52 * ab * r + 1e-300)
                if outcome == "converged":
                    assert traj["grad_norm"][-1] <= 1e-12
                    assert np.all(traj["grad_norm"][:-1] > 1e-12)  # conv is the exact first step
                else:
                    assert traj["grad_norm"][-1] > 1e-12
                    np.testing.assert_allclose(pt.orbit.values, traj["params"][-4:], rtol=1e-12)


def test_orbit_of_a_trajectory_converging_inside_the_orbit_window():
    """keep_orbit rows are the real states up to the convergence step, then repeat it (the revisit
    from the kept mark state freezes there), against an unbatched ``mfdyn.gd`` run."""
    traj = mfdyn.gd(SCALAR, (0.4, 0.6), 0.3, 60, record=("grad_norm", "params"))
    conv = int(np.argmax(np.asarray(traj["grad_norm"]) <= 1e-12))
    assert conv > 3
    want = np.asarray(traj["params"])[[conv - 1, conv, conv, conv]]
    for max_period in (64, 2):  # the revisit starts at step 0, or at a later check block
        ds = mfdyn.sweep(SCALAR, {"eta": [0.3], "a": [0.4], "b": [0.6]}, conv + 2, keep_orbit=4,
                         max_period=max_period, chunk=8, progress=False)
        assert int(ds.steps_to_converge.values.ravel()[0]) == conv
        assert ds.orbit.values.reshape(4, 2).tobytes() == want.tobytes()


def test_scalar_attractors_match_math(scalar_ds):
    """MATH.md §1 [derived]: y = 1, balanced 2-cycle for 1 < eta < sqrt(5) - 1 with
    s± = ((eta + 1) ± sqrt((eta - 1)(eta + 3))) / (2 eta); convergence below eta_c = 1 from these
    starts; divergence for eta > 2."""
    out = scalar_ds.outcome
    assert (out.sel(eta=[0.3, 0.9]) == "converged").all()
    assert (out.sel(eta=2.3) == "diverged").all()
    for eta in (1.1, 1.2):
        sel = scalar_ds.sel(eta=eta)
        periodic = sel.outcome == "periodic"
        assert periodic.any()
        assert (sel.period.where(periodic, 2) == 2).all()
        s = sel.orbit.isel(coord=0) * sel.orbit.isel(coord=1)  # ab along the orbit
        root = np.sqrt((eta - 1) * (eta + 3))
        expected = sorted([((eta + 1) - root) / (2 * eta), ((eta + 1) + root) / (2 * eta)])
        for idx in zip(*np.nonzero(periodic.values)):
            got = np.sort(s.values[idx][-2:])
            np.testing.assert_allclose(got, expected, rtol=1e-8)
            # imbalance decays to 0 on the stable cycle: a = b
            np.testing.assert_allclose(float(sel.final_imbalance.values[idx]), 0.0, atol=1e-8)
    conv = scalar_ds.where(out == "converged")
    np.testing.assert_array_less(conv.final_loss.fillna(0).values, 1e-22)
    # sharpness at a minimizer = a^2 + b^2 (MATH.md §1), from the params
    p = conv.final_params
    np.testing.assert_allclose(conv.final_sharpness.values, (p.isel(coord=0) ** 2 + p.isel(coord=1) ** 2).values,
                               rtol=1e-10)


def test_chunk_and_worker_invariance(scalar_ds):
    """Bitwise identical for any chunk size and number of threads."""
    for chunk, workers in ((1, 1), (5, 2), (64, 2)):
        other = mfdyn.sweep(SCALAR, scalar_axes(), STEPS, keep_orbit=4, chunk=chunk, workers=workers, progress=False)
        xr_identical(scalar_ds, other)


def test_accelerator_plan_is_one_tile_per_chunk_and_changes_no_bit(scalar_ds, monkeypatch):
    """On an accelerator (here this CPU, declared one) the default plan is one chunk of the whole
    (small) grid, run by one worker as a single tile spanning the chunk, its event blocks replayed
    on the whole tile; the results are the CPU plan's, bit for bit. The chunk sizes there: a
    worker's share, at most ``ACCELERATOR_CHUNK_MAX`` points and ``ACCELERATOR_CHUNK_BYTES`` of
    state."""
    api = importlib.import_module("mfdyn.sweep.api")
    distribute = importlib.import_module("mfdyn.sweep.distribute")
    assert api.default_chunk(10**6, 2, 1, "gpu") == 10**6
    assert api.default_chunk(10**7, 2, 1, "gpu") == api.ACCELERATOR_CHUNK_MAX
    per_point = 2 * 8 * 12 * 256  # deep L=4, d=8: 256 coordinates
    lane = distribute.LANE
    assert api.default_chunk(10**6, 256, 1, "gpu") == api.ACCELERATOR_CHUNK_BYTES // per_point // lane * lane
    assert api.default_chunk(1000, 2, 4, "gpu") == 256  # a worker's share (padded to the lane)
    with_orbit = api.ACCELERATOR_CHUNK_BYTES // (2 * 8 * (12 + 64) * 256) // lane * lane  # 64 kept states of 256 coordinates
    assert api.default_chunk(10**6, 256, 1, "gpu", keep_orbit=64) == with_orbit
    assert distribute.local_workers(None, "gpu") == 1 and distribute.local_workers(3, "gpu") == 3
    # chunk threads: one per core and a spare on a CPU, one on an accelerator, `workers` if given
    assert distribute.chunk_threads(None, "cpu") == distribute.local_workers(None, "cpu") + distribute.SPARE_CHUNK_THREADS
    assert distribute.chunk_threads(None, "gpu") == 1 and distribute.chunk_threads(2, "cpu") == 2
    planned = api.plan_sweep(SCALAR, scalar_axes(), STEPS, tol=1e-12, max_period=64, keep_orbit=4, chunk=None,
                             init_kind="gaussian", params0=None, check_every=16, sharpness=True, workers=None).job.spec
    assert distribute.executed_spec(planned, "cpu") is planned  # cache-sized tiles on a CPU

    seen = []

    class Spy:  # run_chunk, recording the schedule and the chunk shape each call runs with
        def __call__(self, *args, spec, factory):
            seen.append((spec.tile, spec.replay_gathered, args[1]["eta"].shape[0]))
            return run_chunk(*args, spec=spec, factory=factory)

        def lower(self, *args, spec, factory):
            seen.append((spec.tile, spec.replay_gathered, args[1]["eta"].shape[0]))
            return run_chunk.lower(*args, spec=spec, factory=factory)

    from mfdyn.sweep import kernel

    monkeypatch.setattr(kernel, "NARROW_MIN", 2)  # narrow tiles of 5 rows: the tile of 40 replays ungathered
    monkeypatch.setattr(distribute, "kernel_for", lambda wanted, platform: Spy())
    monkeypatch.setattr(distribute, "kernel_platform", lambda: "gpu")
    monkeypatch.setattr(api, "kernel_platform", lambda: "gpu")
    ds = mfdyn.sweep(SCALAR, scalar_axes(), STEPS, keep_orbit=4, progress=False)
    assert seen == [(distribute.WHOLE_CHUNK, False, 48)] * 2  # compiled, then run: one chunk (36 points, padded)
    assert json.loads(ds.attrs["mfdyn_config"])["platform"] == "gpu"  # (the only difference)
    for name in scalar_ds.data_vars:
        np.testing.assert_array_equal(scalar_ds[name].values, ds[name].values, err_msg=name)


def test_chunk_threads_run_on_the_callers_default_device(monkeypatch):
    """``with jax.default_device(d)`` holds for the calling thread only; the sweep is planned (and
    its platform recorded) for ``d``, so its chunk threads run there too (on a GPU machine they
    would otherwise run on the GPU a CPU plan labelled "cpu")."""
    import jax

    distribute = importlib.import_module("mfdyn.sweep.distribute")
    compute = distribute.compute_chunk
    seen = []

    def spy(job, values):
        seen.append(jax.config.jax_default_device)
        return compute(job, values)

    monkeypatch.setattr(distribute, "compute_chunk", spy)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        ds = mfdyn.sweep(SCALAR, scalar_axes(), 20, chunk=8, workers=2, progress=False)
    assert len(seen) == 5 and all(device == cpu for device in seen)
    assert json.loads(ds.attrs["mfdyn_config"])["platform"] == "cpu"


def test_narrow_tiles_and_compaction_are_invisible(monkeypatch):
    """The kernel's scheduling (tile width, narrow tiles for the last live members, compaction
    rounds and their doubling) changes no bit: one wide tile per chunk and rounds that double
    against tiles of 8 with narrow tiles of 2 and rounds that do not."""
    from mfdyn.sweep import kernel

    axes = {"eta": np.linspace(0.2, 1.3, 12), "a": [0.5, 1.7, 2.4], "b": [0.3, 1.1]}
    wide = mfdyn.sweep(SCALAR, axes, 211, keep_orbit=3, chunk=72, progress=False)
    monkeypatch.setattr(kernel, "NARROW_MIN", 2)
    monkeypatch.setattr(kernel, "NARROW_FACTOR", 4)
    monkeypatch.setattr(kernel, "ROUND_DOUBLINGS", 0)
    from mfdyn.sweep import api
    monkeypatch.setattr(api, "tile_size", lambda n_coords: 8)
    distribute = importlib.import_module("mfdyn.sweep.distribute")
    monkeypatch.setattr(distribute, "kernel_platform", lambda: "cpu")  # the planned tiles, also on a GPU
    scalar_kernel = kernel.kernel_for(kernel.wanted_llvm_options(SCALAR))
    before = scalar_kernel._cache_size()
    narrow = mfdyn.sweep(SCALAR, axes, 211, keep_orbit=3, chunk=72, progress=False)
    assert scalar_kernel._cache_size() == before + 1  # really compiled with tiles of 8 and 2
    assert kernel._tile_widths(8, 72) == (8, 2)
    for name in wide.data_vars:
        np.testing.assert_array_equal(wide[name].values, narrow[name].values, err_msg=name)


def test_event_replay_matches_a_slow_loop():
    """The event replay of a check block (``walk_rows``: one step at a time, the test after each step)
    against a plain Python loop over single jitted GD steps applying the documented rules: same
    stopping state, divergence and convergence steps, bit for bit, on random states that diverge,
    converge inside the block or do neither, with and without momentum; and, bit for bit, the walk
    of a block without an event ends where the fused block ends. (All compiled: XLA contracts
    ``a * b + c`` into fused multiply-adds, which op-by-op execution does not.)"""
    import jax
    import jax.numpy as jnp

    from mfdyn.dynamics import gd_update
    from mfdyn.pytree import tree_all_finite, tree_norm
    from mfdyn.sweep import kernel

    rng = np.random.default_rng(7)
    n, c, tol, t0 = 400, 16, 1e-9, 100
    a, b = rng.uniform(-3.5, 3.5, n), rng.uniform(-3.5, 3.5, n)
    eta = rng.uniform(0.05, 1.6, n)
    a[:40], b[:40], eta[:40] = 1.0 + rng.choice([-1, 1], 40) * rng.uniform(1e-8, 1e-7, 40), 1.0, rng.uniform(0.3, 0.7, 40)
    a[40:60], b[40:60] = 1e100, 1e100  # overflow at once (the start itself is finite, with a finite gradient)
    a[60:66] = [1e-310, -1e-310, 5e-324, -0.0, 0.0, 2e-308]  # subnormal and signed-zero coordinates
    for heavy_ball in (False, True):
        spec = kernel.KernelSpec(steps=2 * c, check_every=c, tail=c, max_period=0, keep_orbit=0, init="ab",
                                 init_kind="", const_names=(), sharpness=False, heavy_ball=heavy_ball)
        pieces = kernel._per_trajectory(spec, jnp.asarray(tol))
        momentum = rng.uniform(0.0, 0.5, n) if heavy_ball else np.zeros(n)
        vals = {"eta": jnp.asarray(eta), "momentum": jnp.asarray(momentum)}
        z = (jnp.asarray(a), jnp.asarray(b))
        v = (jnp.asarray(0.01 * a), jnp.asarray(0.0 * b)) if heavy_ball else None
        def batched(fn, vals, *args):
            return jax.vmap(fn, in_axes=(None, 0) + tuple(None if a is None else 0 for a in args))(SCALAR, vals, *args)

        @jax.jit
        def walk(vals, z, v):  # the kernel's walk of rows
            packed = batched(pieces["pack"], vals, z, v)
            end, first = kernel.walk_rows(batched, pieces, spec.unroll, jnp.asarray(tol), vals, packed, c)
            return (*batched(pieces["unpack"], vals, end), *kernel.decode_first(first, t0))

        walked = walk(vals, z, v)

        @jax.jit
        def step(z, v):
            z1, v1 = gd_update(SCALAR, z, v, vals["eta"], vals["momentum"], heavy_ball=heavy_ball)
            g = jax.vmap(SCALAR.grad)(z1)
            state_ok = jax.vmap(tree_all_finite)((z1, v1))
            good = state_ok & jax.vmap(tree_all_finite)(g)
            passes = jax.vmap(tree_norm)(g) <= tol
            if heavy_ball:
                passes &= (vals["momentum"] == 0) | (jax.vmap(tree_norm)(v1) <= tol)
            return z1, v1, state_ok, good, good & passes

        want_z, want_v = [np.array(x) for x in z], [np.array(x) for x in v] if heavy_ball else None
        div, conv = np.full(n, -1), np.full(n, -1)
        zz, vv = z, v
        for r in range(1, c + 1):  # the slow reference: every lane stepped, the rules applied per lane
            zz, vv, state_ok, good, passed = step(zz, vv)
            state_ok, good, passed = np.asarray(state_ok), np.asarray(good), np.asarray(passed)
            live = (div < 0) & (conv < 0)
            stop_bad, stop_conv = live & ~good, live & good & passed
            div[stop_bad], conv[stop_conv] = t0 + r, t0 + r
            keep = live & state_ok  # a bad step with a finite state is kept; a non-finite one is not
            for i, leaf in enumerate(zz):
                want_z[i][keep] = np.asarray(leaf)[keep]
            if heavy_ball:
                for i, leaf in enumerate(vv):
                    want_v[i][keep] = np.asarray(leaf)[keep]
        *states, got_div, got_conv = walked
        np.testing.assert_array_equal(got_div, div)
        np.testing.assert_array_equal(got_conv, conv)
        for got, want in zip(jax.tree_util.tree_leaves(states), [*want_z, *(want_v or [])]):
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
        # what the kernel relies on, bit for bit: a walk without an event ends where the fused
        # block ends (its end state is then recognized as the block's), and a fused block with an
        # event keeps its start state
        def block(vals, z, v):
            packed = pieces["pack"](SCALAR, vals, z, v)
            return pieces["unpack"](SCALAR, vals, pieces["fused_block"](SCALAR, vals, packed, jnp.asarray(True)))

        blocked = jax.jit(jax.vmap(block, in_axes=(0, 0, 0 if heavy_ball else None)))(vals, z, v)
        quiet = (div < 0) & (conv < 0)
        for got, walk_end, start in zip(jax.tree_util.tree_leaves(blocked), jax.tree_util.tree_leaves(states),
                                        jax.tree_util.tree_leaves((z, v))):
            got, walk_end, start = np.asarray(got), np.asarray(walk_end), np.asarray(start)
            assert got[quiet].tobytes() == walk_end[quiet].tobytes()
            assert got[~quiet].tobytes() == start[~quiet].tobytes()
        assert (div >= 0).sum() > 20 and (conv >= 0).sum() >= 10 and ((div < 0) & (conv < 0)).sum() > 20
        # the kernel's walk of rows (two passes behind conds, for small problems) equals, bit for bit,
        # the one-pass walk that freezes each row at its event (the general case), for a whole block
        # and for a remainder of 5 steps
        for steps in (c, 5):
            assert kernel.two_passes(spec.unroll, steps)

            @jax.jit
            def both(vals, z, v, steps=steps):
                packed = batched(pieces["pack"], vals, z, v)
                return (kernel.walk_rows(batched, pieces, spec.unroll, jnp.asarray(tol), vals, packed, steps),
                        batched(partial(pieces["frozen_walk"], n=steps), vals, packed))

            two_pass, one_pass = both(vals, z, v)
            for got, want in zip(jax.tree_util.tree_leaves(two_pass), jax.tree_util.tree_leaves(one_pass)):
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


def test_squared_norm_bound_is_exactly_the_sqrt_test():
    """``s <= sq_norm_bound(tol)`` if and only if ``sqrt(s) <= tol`` for every squared norm
    ``s >= 0``, for ``s`` at the bound, its neighbours, random values around it, subnormals, zero,
    inf and NaN; evaluated by XLA on this platform (whose CPU arithmetic reads subnormals as zero)
    and by NumPy (IEEE arithmetic with subnormals, as on a GPU). Negative ``s`` (a neighbour below a
    bound of 0) is no squared norm: it passes ``s <= 0`` but its square root is NaN, except where
    subnormals read as zero (it failed on an H100 for that reason alone)."""
    import jax
    import jax.numpy as jnp

    from mfdyn.sweep.kernel import sq_norm_bound

    rng = np.random.default_rng(11)
    tols = np.concatenate([[1e-300, 5e-324, 1e-160, 1e-12, 1e-9, 1.0, 3.0, 1e154, 1e200, 1.7e308],
                           10.0 ** rng.uniform(-300, 300, 200)])
    both = jax.jit(lambda s, tol, bound: (jnp.sqrt(s) <= tol, s <= bound))
    special = np.array([0.0, 5e-324, 1e-310, 2.2e-308, np.inf, np.nan])
    for tol in tols:
        with np.errstate(over="ignore", invalid="ignore"):
            ieee_bound = float(sq_norm_bound(tol, xp=np))
        for bound in (float(sq_norm_bound(tol)), ieee_bound):
            near = [bound]
            with np.errstate(over="ignore"):  # near the largest float, steps and products reach inf: a case too
                for direction in (np.inf, -np.inf):
                    x = bound
                    for _ in range(3):
                        x = np.nextafter(x, direction)
                        near.append(x)
                around = bound * (1 + rng.uniform(-4e-16, 4e-16, 64))
            s = np.concatenate([near, around, special])
            s = s[~(s < 0)]
            by_sqrt, by_bound = both(jnp.asarray(s), tol, bound)
            np.testing.assert_array_equal(np.asarray(by_sqrt), np.asarray(by_bound), err_msg=str(tol))
            with np.errstate(invalid="ignore"):
                np.testing.assert_array_equal(np.sqrt(s) <= tol, s <= ieee_bound, err_msg=f"IEEE, {tol}")


def test_live_first_is_a_stable_partition():
    import jax.numpy as jnp

    from mfdyn.sweep import kernel

    live_first = jax.jit(kernel._live_first)  # (compiled, as in the kernel: op by op it took 10 s)
    rng = np.random.default_rng(3)
    for n in (1, 8, 1000):
        live = rng.uniform(size=n) < 0.3
        x = rng.standard_normal((n, 2))
        got = live_first({"x": jnp.asarray(x), "i": jnp.arange(n)}, jnp.asarray(live))
        order = np.concatenate([np.flatnonzero(live), np.flatnonzero(~live)])  # the slow reference
        np.testing.assert_array_equal(np.asarray(got["i"]), order)
        np.testing.assert_array_equal(np.asarray(got["x"]), x[order])


def test_rows_converging_in_the_last_steps_hide_no_period():
    """Regression: live rows behind rows that converge in the last ``T mod c`` steps (walked after
    the check blocks) still get their period. The revisit of the tail once ran on as many rows, from
    the front of the chunk, as were still live: the rows that had just converged left holes there,
    and the periodic and unfinished rows behind them came out "bounded" (chunk 624: tiles of 624
    and 78)."""
    steps = 200  # 12 check blocks of 16 steps, then 8 steps walked one at a time
    a = np.linspace(0.2, 2.5, 3000)
    scan = mfdyn.sweep(SCALAR, {"x": mfdyn.zipped(eta=np.r_[np.full(3000, 0.068), np.full(3000, 0.9)], a=np.r_[a, a]),
                                "b": [0.7]}, steps, chunk=624, progress=False)  # (the same kernel as below)
    conv, outcome = scan.steps_to_converge.values.ravel(), scan.outcome.values.ravel()
    late = np.flatnonzero((conv > 192) & (conv <= steps))[:500]  # converge in the 8 walked steps
    cycle = np.flatnonzero(np.isin(outcome, ["periodic", "unfinished"]))[:124]
    assert len(late) == 500 and len(cycle) == 124 and late.max() < 3000 <= cycle.min()
    rows = np.r_[late, cycle]
    axes = {"x": mfdyn.zipped(eta=scan.eta.values[rows], a=scan.a.values[rows]), "b": [0.7]}
    one_chunk = mfdyn.sweep(SCALAR, axes, steps, chunk=624, progress=False)
    np.testing.assert_array_equal(one_chunk.outcome.values.ravel(), outcome[rows])
    np.testing.assert_array_equal(one_chunk.period.values.ravel(), scan.period.values.ravel()[rows])
    xr_identical(one_chunk, mfdyn.sweep(SCALAR, axes, steps, chunk=40, progress=False))


def test_padding_rows_of_a_short_chunk_are_never_advanced():
    """A short last chunk is padded to the compiled shape by repeating its last point; the kernel
    leaves the padding rows settled from the start (``diverged_at = 0``: no step run on them), and
    the real rows' results are the same bits as when every row is real."""
    from mfdyn.sweep.api import _chunk_values, plan_sweep
    from mfdyn.sweep.distribute import _kernel_args

    plan = plan_sweep(SCALAR, scalar_axes(), STEPS, tol=1e-12, max_period=64, keep_orbit=4, chunk=CHUNK,
                      init_kind="gaussian", params0=None, check_every=16, sharpness=True, workers=1)
    n, args = _kernel_args(plan.job, _chunk_values(plan.grid, (32, 36), spec=plan.job.spec))  # 4 of 16 rows
    assert n == 4 and args[1]["eta"].shape == (CHUNK,) and int(args[-1]) == 4
    padded = run_chunk(*args, spec=plan.job.spec)
    full = run_chunk(*args[:-1], np.int64(CHUNK), spec=plan.job.spec)  # the same rows, all real
    np.testing.assert_array_equal(np.asarray(padded["diverged_at"])[n:], 0)
    np.testing.assert_array_equal(np.asarray(padded["steps_to_converge"])[n:], -1)
    assert np.all(np.asarray(full["diverged_at"])[n:] != 0)  # (they would have run)
    for name in padded:
        np.testing.assert_array_equal(np.asarray(padded[name])[:n].view(np.uint8),
                                      np.asarray(full[name])[:n].view(np.uint8), err_msg=name)


def test_on_selected_changes_exactly_the_selected_rows():
    """``fn`` applied to the mask rows in groups, of one width or wide groups then narrower ones
    (the last group partly empty, sizes not multiples of the group), the other rows untouched;
    against NumPy."""
    import jax
    import jax.numpy as jnp

    from mfdyn.sweep import kernel

    rng = np.random.default_rng(5)
    for n, group in ((1, 4), (10, 4), (37, 8), (64, 8), (37, (8, 2)), (64, (16, 4)), (100, (32, 8, 2))):
        on_selected = jax.jit(partial(kernel._on_selected, widths=group,  # (one compilation per shape)
                                      fn=lambda c_rows, t: {"x": t["x"] * 2 + c_rows[:, None]}))
        for density in (0.0, 0.3, 1.0):
            mask = rng.uniform(size=n) < density
            x, c = rng.standard_normal((n, 2)), rng.standard_normal(n)
            got = on_selected(jnp.asarray(mask), const=jnp.asarray(c), tree={"x": jnp.asarray(x)})
            want = np.where(mask[:, None], x * 2 + c[:, None], x)
            np.testing.assert_array_equal(np.asarray(got["x"]), want)


def test_complex_pairs_round_trip_is_exact():
    import jax.numpy as jnp

    from mfdyn.sweep import kernel

    special = jnp.asarray([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308])
    for leaves in ((special[0],), (special[1], special[2]), tuple(special)):
        for x in leaves:
            state = (tuple(leaves), None)
            pack, unpack = kernel._complex_pairs(state)
            back = jax_leaves(unpack(pack(state)))
            assert len(back) == len(leaves)
            for got, want in zip(back, leaves):
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_results_do_not_depend_on_check_every(scalar_ds):
    """Every result, bit for bit, whatever the check interval: events are located exactly, and a
    row paused on a cycle (its block ended where it started: period 2 divides 16 and 32, not 5)
    has exactly the states it would have reached."""
    for every in (5, 32):
        other = mfdyn.sweep(SCALAR, scalar_axes(), STEPS, keep_orbit=4, chunk=CHUNK, check_every=every,
                            progress=False)
        for name in scalar_ds.data_vars:
            np.testing.assert_array_equal(other[name].values, scalar_ds[name].values, err_msg=name)


def test_results_do_not_depend_on_the_unroll(scalar_ds, monkeypatch):
    """Every result, bit for bit, whether the blocks, walks and replays run as unrolled groups of
    steps or as loops of single steps (``KernelSpec.unroll``: a schedule chosen per problem by
    ``kernel.step_unroll``)."""
    kernel = importlib.import_module("mfdyn.sweep.kernel")
    api = importlib.import_module("mfdyn.sweep.api")
    assert api.step_unroll(SCALAR) == kernel.UNROLL  # (the kernel of scalar_ds: unrolled)
    monkeypatch.setattr(api, "step_unroll", lambda problem: 1)
    scalar_kernel = kernel.kernel_for(kernel.wanted_llvm_options(SCALAR))
    before = scalar_kernel._cache_size()
    looped = mfdyn.sweep(SCALAR, scalar_axes(), STEPS, keep_orbit=4, chunk=CHUNK, progress=False)
    assert scalar_kernel._cache_size() == before + 1  # (really another kernel)
    for name in scalar_ds.data_vars:
        np.testing.assert_array_equal(looped[name].values, scalar_ds[name].values, err_msg=name)


def test_step_unroll_for_elementwise_steps_only():
    """Small problems whose GD step is a few elementwise operations are unrolled; a deep
    factorization's step of many small matrix products is not, however few its coordinates."""
    kernel = importlib.import_module("mfdyn.sweep.kernel")
    unrolled = [SCALAR, mfdyn.ScalarFactorization(1.0, 0.2), mfdyn.SymmetricFactorization(np.diag([1.0, 0.5, 0.2]), 2),
                mfdyn.MatrixFactorization(np.ones((3, 4)), 1)]
    looped = [mfdyn.DeepFactorization(np.eye(2), 3), mfdyn.DeepFactorization(np.array([[2.0]]), 3),
              mfdyn.MatrixFactorization(np.ones((3, 4)), 3)]  # (the last: 21 coordinates)
    for problem in unrolled:
        assert kernel.step_operations(problem) <= kernel.UNROLL_MAX_STEP_OPERATIONS
        assert kernel.step_unroll(problem) == kernel.UNROLL
    assert [kernel.step_unroll(problem) for problem in looped] == [1, 1, 1]
    assert kernel.step_operations(looped[0]) > kernel.UNROLL_MAX_STEP_OPERATIONS


def xr_identical(a, b):
    assert a.identical(b), [k for k in a.data_vars if not a[k].identical(b[k])]


def test_one_compilation_per_structure_and_chunk_shape(monkeypatch):
    """Every grid value is traced data: one compilation per structure and chunk shape. The sweep's
    pre-compilation lowers a kernel only the first time (``distribute.compile_kernel``)."""
    distribute = importlib.import_module("mfdyn.sweep.distribute")
    lowerings = []

    class CountLowerings:
        def __init__(self, kernel):
            self.kernel = kernel

        def __call__(self, *args, **kwargs):
            return self.kernel(*args, **kwargs)

        def lower(self, *args, **kwargs):
            lowerings.append(args[1]["eta"].shape)
            return self.kernel.lower(*args, **kwargs)

    kernel_for = distribute.kernel_for
    monkeypatch.setattr(distribute, "kernel_for", lambda *args: CountLowerings(kernel_for(*args)))
    axes1 = {"eta": np.linspace(0.2, 1.0, 5), "a": [1.5], "b": [0.5]}
    mfdyn.sweep(SCALAR, axes1, 40, chunk=8, progress=False)
    kernel = importlib.import_module("mfdyn.sweep.kernel")
    scalar_kernel = kernel.kernel_for(kernel.wanted_llvm_options(SCALAR))
    before, lowered = scalar_kernel._cache_size(), len(lowerings)
    axes2 = {"eta": np.linspace(0.3, 0.6, 13), "a": [0.7, 0.8], "b": [0.25]}  # other values and grid size
    mfdyn.sweep(mfdyn.ScalarFactorization(2.0), axes2, 40, chunk=8, progress=False)
    assert scalar_kernel._cache_size() == before and len(lowerings) == lowered
    mfdyn.sweep(SCALAR, axes1, 40, chunk=32, progress=False)  # a new chunk shape compiles once
    mfdyn.sweep(SCALAR, axes2, 40, chunk=32, progress=False)
    assert scalar_kernel._cache_size() == before + 1 and lowerings[lowered:] == [(32,)]
    # a quartic term is a new structure (a pure quadratic loss leaves it out), compiled once for all mu > 0
    mfdyn.sweep(mfdyn.ScalarFactorization(2.0, 0.1), axes2, 40, chunk=8, progress=False)
    mfdyn.sweep(mfdyn.ScalarFactorization(1.0, 0.3), axes1, 40, chunk=8, progress=False)
    assert scalar_kernel._cache_size() == before + 2 and lowerings[lowered:] == [(32,), (16,)]


def test_kernel_runs_without_parallel_task_assignment_which_changes_no_bit():
    """The kernel is compiled with XLA:CPU's parallel task assignment off (``COMPILER_OPTIONS``: a
    sweep runs one chunk per core, the split of an operation over the pool's threads only adds
    hand-offs). Compiled with it on, where it splits operations of a 4096-row chunk, the chunk's
    results are the same bits."""
    api = importlib.import_module("mfdyn.sweep.api")
    distribute = importlib.import_module("mfdyn.sweep.distribute")
    kernel = importlib.import_module("mfdyn.sweep.kernel")
    assert kernel.COMPILER_OPTIONS == {"xla_disable_hlo_passes": "cpu-parallel-task-assigner"}
    axes = {"eta": np.linspace(0.05, 2.4, 64), "a": np.linspace(0.1, 3.0, 8), "b": np.linspace(0.1, 3.0, 8)}
    plan = api.plan_sweep(SCALAR, axes, 200, tol=1e-12, max_period=16, keep_orbit=0, chunk=4096, init_kind="gaussian",
                          params0=None, check_every=16, sharpness=True, workers=1)
    args = distribute._kernel_args(plan.job, api._chunk_values(plan.grid, (0, 4096), spec=plan.job.spec))[1]
    with jax.default_device(jax.devices("cpu")[0]):  # (the pass is XLA:CPU's)
        lowered = run_chunk.lower(*args, spec=plan.job.spec, factory=None)
        default, split = lowered.compile(), lowered.compile(compiler_options={"xla_disable_hlo_passes": ""})
        assert "outer_dimension_partitions" not in default.as_text()
        assert "outer_dimension_partitions" in split.as_text()  # (the pass had work to do)
        ours, theirs = default(*args), split(*args)
    outcomes = np.unique(np.asarray(ours["outcome"]))
    assert len(outcomes) >= 3, outcomes  # converged, periodic, diverged rows (the replays ran)
    for name in ours:
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(theirs[name]), err_msg=name)


def test_swept_constants_equal_fixed_problems():
    axes = {"target": [0.5, 2.0], "quartic": [0.0, 0.3], "eta": [0.2, 0.45], "a": [0.9], "b": [0.4]}
    ds = mfdyn.sweep(SCALAR, axes, 120, chunk=CHUNK, progress=False)
    for y in axes["target"]:
        for mu in axes["quartic"]:
            ref = mfdyn.sweep(mfdyn.ScalarFactorization(y, mu), {k: axes[k] for k in ("eta", "a", "b")}, 120,
                              chunk=CHUNK, progress=False)
            got = ds.sel(target=y, quartic=mu)
            assert (got.outcome.values == ref.outcome.values).all()
            np.testing.assert_allclose(got.final_params.values, ref.final_params.values, rtol=1e-13)


def test_zipped_axes():
    etas, As = [0.2, 0.5, 0.8], [0.5, 1.0, 1.5]
    ds = mfdyn.sweep(SCALAR, {"diag": mfdyn.zipped(eta=etas, a=As), "b": [0.7, 0.9]}, 60, chunk=CHUNK, progress=False)
    assert ds.outcome.dims == ("diag", "b")
    np.testing.assert_array_equal(ds.a.values, As)
    for i in range(3):
        traj = mfdyn.gd(SCALAR, (As[i], 0.9), etas[i], 60, record=("params",))
        if ds.steps_to_converge.values[i, 1] < 0:
            np.testing.assert_allclose(ds.final_params.values[i, 1], traj["params"][-1], rtol=1e-12)


def test_grid_values_of_any_range_match_unravel_index():
    """A chunk's per-point values (built run by run) equal the slow reference: the multi-index of each
    point in C order, then a gather per axis; zipped axes share their dimension's index."""
    from mfdyn.sweep.grid import make_grid

    rng = np.random.default_rng(3)
    for _ in range(60):
        axes = {}
        for d in range(int(rng.integers(1, 4))):
            n = int(rng.integers(1, 6))
            axes[f"x{d}"] = mfdyn.zipped(**{f"p{d}": rng.random(n), f"s{d}": rng.integers(0, 9, n)}) if d == 1 \
                else rng.random(n)
        grid = make_grid(axes)
        for _ in range(4):
            start = int(rng.integers(0, grid.size + 1))
            stop = int(rng.integers(start, grid.size + 1))
            index = np.unravel_index(np.arange(start, stop), grid.shape)
            want = {n: vals[n][i] for (_, vals), i in zip(grid.dims, index) for n in vals}
            got = grid.values(start, stop)
            assert list(got) == list(want)
            for name in want:
                assert got[name].dtype == want[name].dtype
                np.testing.assert_array_equal(got[name], want[name])


def test_axis_values_along_a_range_match_the_index_formula():
    """``_along`` (slices of the tiled axis, then runs) equals ``values[(i // stride) % size]`` for
    ranges that wrap around the axis several times or not at all, and returns a fresh array."""
    from mfdyn.sweep.grid import _along

    rng = np.random.default_rng(11)
    for _ in range(200):
        size = int(rng.integers(1, 40))
        values = rng.random(size) if rng.random() < 0.5 else rng.integers(-5, 5, size)
        stride = int(rng.choice([1, 2, 3, 7, 64, 1000]))
        start = int(rng.integers(0, 5000))
        stop = start + int(rng.integers(0, 3000))
        want = values[(np.arange(start, stop) // stride) % size]
        got = _along(values, stride, start, stop)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        assert not np.shares_memory(got, values)


def test_classify_precedence_same_in_numpy_and_in_the_kernel():
    """Diverged beats converged beats periodic (period >= 2) / unfinished (period 1) / bounded; a
    period is kept only for periodic rows; the kernel's jax.numpy evaluation gives the same codes."""
    import jax.numpy as jnp

    from mfdyn.sweep.classify import CODES, classify

    div = np.array([-1, -1, -1, -1, 5, 3, -1])
    conv = np.array([-1, -1, -1, 7, -1, 2, 4])
    period = np.array([0, 1, 3, 0, 0, 2, 2], np.int32)
    code, kept = classify(div, conv, period)
    want = ["bounded", "unfinished", "periodic", "converged", "diverged", "diverged", "converged"]
    np.testing.assert_array_equal(code, [CODES[w] for w in want])
    np.testing.assert_array_equal(kept, [0, 0, 3, 0, 0, 0, 0])
    assert code.dtype == np.int8 and kept.dtype == np.int32
    jcode, jkept = classify(jnp.asarray(div), jnp.asarray(conv), jnp.asarray(period), xp=jnp)
    np.testing.assert_array_equal(np.asarray(jcode), code)
    np.testing.assert_array_equal(np.asarray(jkept), kept)
    assert jcode.dtype == np.int8 and jkept.dtype == np.int32


def test_momentum_matches_gd():
    ds = mfdyn.sweep(SCALAR, {"eta": [0.1], "momentum": [0.0, 0.5], "a": [1.3], "b": [0.2]}, 50, tol=1e-30,
                     chunk=CHUNK, progress=False)
    for m in (0.0, 0.5):
        traj = mfdyn.gd(SCALAR, (1.3, 0.2), 0.1, 50, record=("params",), momentum=m)
        np.testing.assert_allclose(ds.sel(momentum=m).final_params.values.ravel(), traj["params"][-1], rtol=1e-12)


def test_factory_seeds_and_matrix_constant():
    """X = diag(1, sigma) swept through a factory; random init per seed equals problem.init(seed)."""
    factory = lambda sigma: mfdyn.MatrixFactorization(np.diag([1.0, 0.0]) + sigma * np.diag([0.0, 1.0]), 1)  # noqa: E731
    axes = {"sigma": [0.3, 0.6], "seed": [0, 1, 2], "eta": [0.1]}
    ds = mfdyn.sweep(factory, axes, 80, chunk=CHUNK, progress=False)
    for sigma in axes["sigma"]:
        prob = factory(sigma)
        for seed in axes["seed"]:
            traj = mfdyn.gd(prob, prob.init(seed), 0.1, 80, record=("params", "loss"))
            got = ds.sel(sigma=sigma, seed=seed, eta=0.1)
            np.testing.assert_allclose(got.final_params.values, traj["params"][-1], rtol=1e-11)
            np.testing.assert_allclose(float(got.final_loss), traj["loss"][-1], rtol=1e-9)


def test_deep_weight_decay_broadcast_and_params0():
    Y = np.array([[2.0, 0.3], [0.1, 1.0]])
    base = mfdyn.DeepFactorization(Y, 3)
    p0 = base.init(7, 0.5)
    ds = mfdyn.sweep(base, {"weight_decay": [0.0, 0.1], "eta": [0.05]}, 60, params0=p0, chunk=8, progress=False)
    for wd in (0.0, 0.1):
        prob = mfdyn.DeepFactorization(Y, 3, weight_decay=wd)
        traj = mfdyn.gd(prob, p0, 0.05, 60, record=("params", "imbalance_norm", "sharpness"))
        got = ds.sel(weight_decay=wd, eta=0.05)
        np.testing.assert_allclose(got.final_params.values, traj["params"][-1], rtol=1e-11)
        np.testing.assert_allclose(float(got.final_imbalance), traj["imbalance_norm"][-1], rtol=1e-9)
        np.testing.assert_allclose(float(got.final_sharpness), traj["sharpness"][-1], rtol=1e-9)


@pytest.mark.parametrize("axes, steps, kwargs, fragment", [
    ({"eta": [], "a": [1.0], "b": [1.0]}, 10, {}, "axis 'eta' must not be empty"),
    ({"eta": [0.1, np.nan], "a": [1.0], "b": [1.0]}, 10, {}, "must be finite"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0], "rho": [1.0]}, 10, {}, "unknown axis name 'rho'"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0]}, 0, {}, "steps must be >= 1"),
    ({"eta": [-0.1], "a": [1.0], "b": [1.0]}, 10, {}, "axis 'eta' must be > 0, got -0.1"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0], "momentum": [0.5, -0.5]}, 10, {}, "axis 'momentum' must be >= 0, got -0.5"),
    ({"a": [1.0], "b": [1.0]}, 10, {}, "must include the step size 'eta'"),
    ({"eta": [0.1], "a": [1.0]}, 10, {}, "'a' and 'b'"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0], "quartic": [-1.0]}, 10, {}, "axis 'quartic' must be >= 0, got -1.0"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0]}, 10, {"keep_orbit": 11}, "keep_orbit must be <= steps"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0]}, 10, {"store": "/nonexistent-dir/x.zarr"}, "not writable"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0]}, 10, {"scheduler": 3}, "scheduler must be"),
    ({"eta": [0.1], "a": [1.0], "b": [1.0]}, 10, {"store": 5}, "store must be a path (a non-empty str or os.PathLike), got 5"),
    ({"eta": [0.1], "seed": [2.0**63]}, 10, {}, "axis 'seed' must hold integers below 2**63, got 9.223372036854776e+18"),
    ({"eta": [0.5], "coord": mfdyn.zipped(a=[0.3, 0.4], b=[1.0, 1.1])}, 10, {}, "axis name 'coord' is taken by the results"),
    ({"eta": [0.5], "init": mfdyn.zipped("orbit_step", a=[1.0], b=[1.0])}, 10, {}, "axis name 'orbit_step' is taken"),
])
def test_bad_input(axes, steps, kwargs, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)):
        mfdyn.sweep(SCALAR, axes, steps, progress=False, **kwargs)


def test_bad_factory():
    with pytest.raises(InputError, match="must return an mfdyn problem"):
        mfdyn.sweep(lambda sigma: 3.0, {"sigma": [1.0], "eta": [0.1]}, 5, progress=False)
    with pytest.raises(InputError, match="X must be finite|X must"), np.errstate(divide="ignore"):  # 1/0 on purpose
        mfdyn.sweep(lambda sigma: mfdyn.MatrixFactorization(np.diag([1.0, np.divide(1.0, sigma)]), 1),
                    {"sigma": [1.0, 0.0], "eta": [0.1]}, 5, progress=False)


def test_final_observables_of_matrix_problems_do_not_depend_on_the_chunk():
    """The final loss of a matrix problem is a reduction XLA compiled differently for different
    numbers of rows: with a chunk of 1000 it differed in the last bit at 3 of 12 points. The finals
    now run in groups of a fixed size."""
    problem = mfdyn.MatrixFactorization([[2.0, 0.5], [0.0, 1.0]], 1)
    axes = {"eta": [0.1, 0.4, 0.7], "seed": [0, 1, 2, 3]}
    small = mfdyn.sweep(problem, axes, 100, keep_orbit=2, chunk=5, progress=False)
    large = mfdyn.sweep(problem, axes, 100, keep_orbit=2, chunk=1000, progress=False)
    assert small.identical(large)


def test_factory_of_the_scalar_family():
    """A factory building the scalar family (its quartic term specialized away at 0) gives the bits
    of the same sweep over the problem's own ``target`` field."""
    axes = {"eta": [0.3, 1.1], "a": [0.5, 2.0], "b": [1.5], "target": [0.5, 2.0]}
    by_factory = mfdyn.sweep(lambda target: mfdyn.ScalarFactorization(target), axes, 60, chunk=CHUNK, progress=False)
    by_field = mfdyn.sweep(SCALAR, axes, 60, chunk=CHUNK, progress=False)
    for name in ("final_params", "steps_to_converge", "diverged_at", "outcome"):
        np.testing.assert_array_equal(by_factory[name].values, by_field[name].values)


@pytest.mark.parametrize("factory, operation", [
    (lambda s: mfdyn.MatrixFactorization(np.diag([1.0, float(s)]), 1), "concrete value"),
    (lambda s: mfdyn.MatrixFactorization(np.diag([1.0, s]), 1), "__array__"),
])
def test_untraceable_factory_is_refused(factory, operation):
    """The kernel traces the factory: one that needs concrete numbers is refused before any chunk runs."""
    with pytest.raises(InputError, match=r"problem factory cannot take traced values of the swept constants \['s'\].*"
                       + re.escape(operation)):
        mfdyn.sweep(factory, {"eta": [0.1], "s": [0.5, 2.0]}, 5, progress=False)


def test_momentum_axis_at_zero_is_plain_gd():
    """Heavy-ball rows with momentum 0 compute the plain GD step bit for bit (Polyak's form adds
    ``0 v`` to ``z - eta g``), chaotic step sizes included, where any rounding difference grows."""
    rng = np.random.default_rng(5)
    axes = {"eta": np.concatenate([rng.uniform(0.05, 1.6, 6), [1.5]]), "a": rng.uniform(0.1, 3.0, 4), "b": [0.3, 0.9]}
    plain = mfdyn.sweep(SCALAR, axes, 300, chunk=CHUNK, progress=False)
    heavy = mfdyn.sweep(SCALAR, {**axes, "momentum": [0.0, 0.5]}, 300, chunk=CHUNK, progress=False).isel(momentum=0)
    for name in ("final_params", "steps_to_converge", "diverged_at", "period", "outcome"):
        np.testing.assert_array_equal(heavy[name].values, plain[name].values)


def first_converged_step(eta, a, b, momentum, steps, tol, y=1.0):
    """Slow reference: Polyak's heavy ball on the scalar family in NumPy, tested after every step."""
    z, v = np.array([a, b]), np.zeros(2)
    for t in range(steps + 1):  # (a diverging run goes on in inf and nan, never passing the test)
        psi = z[0] * z[1] - y
        g = psi * z[::-1]
        if np.linalg.norm(g) <= tol and np.linalg.norm(v) <= tol:
            return t
        new = z - eta * g + momentum * v
        z, v = new, new - z
    return -1


def test_momentum_steps_to_converge_is_the_first_step():
    """Under momentum ||grad f|| and ||v|| pass the test at step 127 and fail it again at 128 on this
    trajectory (found by an audit): the first step is found whatever ``check_every``, as by a slow loop
    that tests every step."""
    eta, a, b, m = 0.7025778612133695, 0.3284964488074384, 0.7671658350805936, 0.7
    assert first_converged_step(eta, a, b, m, 300, 1e-10) == 127
    axes = {"eta": [eta], "a": [a], "b": [b], "momentum": [m]}
    for every in (1, 5, 16):
        ds = mfdyn.sweep(SCALAR, axes, 300, tol=1e-10, check_every=every, chunk=CHUNK, progress=False)
        assert int(ds.steps_to_converge.values.ravel()[0]) == 127
    rng = np.random.default_rng(2)
    axes = {"eta": rng.uniform(0.05, 1.0, 3), "a": rng.uniform(0.1, 3.0, 12), "b": [0.7], "momentum": [0.4, 0.8]}
    ds = mfdyn.sweep(SCALAR, axes, 400, tol=1e-10, chunk=CHUNK, progress=False)
    with np.errstate(all="ignore"):
        want = np.vectorize(lambda e, a_, m_: first_converged_step(e, a_, 0.7, m_, 400, 1e-10))(
            ds.eta.values[:, None, None, None], ds.a.values[None, :, None, None], ds.momentum.values[None, None, None, :])
    np.testing.assert_array_equal(ds.steps_to_converge.values, want)


DEADLOCK_CHECK = """
import numpy as np, jax.numpy as jnp, mfdyn
problem = mfdyn.DeepFactorization(jnp.diag(jnp.array([1.0, 0.5, 0.2])), depth=3)
axes = {"eta": [0.05, 0.3, 0.9], "seed": np.arange(6), "scale": [0.3]}
two = mfdyn.sweep(problem, axes, 200, progress=False, workers=2)
one = mfdyn.sweep(problem, axes, 200, progress=False, workers=1, chunk=5)
spare = mfdyn.sweep(problem, axes, 200, progress=False, chunk=5)  # (a thread per core and a spare one)
print(two.identical(one) and spare.identical(one), bool(np.isfinite(two.final_sharpness.values).any()))
"""


def test_a_sweep_needing_lapack_on_two_threads_finishes():
    """The sharpness of a deep factorization needs LAPACK's symmetric eigensolver. jaxlib 0.10.2 split
    a batch of matrices over XLA's thread pool and blocked inside it: two chunks on two threads
    reaching it at once waited on each other for ever (this sweep hung in 5 runs of 5). The kernel
    passes one matrix per call (:func:`mfdyn.sweep.kernel.run_chunk`); a fresh process, so that a
    hang fails the test instead of stalling the suite."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", DEADLOCK_CHECK], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True True"


def test_convergence_test_of_extreme_tolerances_is_the_norm_test():
    """For a ``tol`` outside ``NORMAL_TOL`` the gradient is scaled by a power of two before it is squared:
    ``||g|| <= tol`` exactly as with an unbounded exponent (unscaled, ``||g|| = 1e-200`` squared to 0 and
    passed a ``tol`` of 1e-300, and ``||g|| = 1e180`` squared to inf and failed a ``tol`` of 1e200).
    Random gradients of 1 to 3 components over 600 decades against the norm in 40 digits; inside
    ``NORMAL_TOL`` the unscaled test is the same test."""
    import jax.numpy as jnp
    import mpmath

    from mfdyn.sweep.kernel import NORMAL_TOL, needs_scaled_test, sq_norm_bound, tol_scale

    @jax.jit
    def test(g, tol, scaled):
        scale = jnp.where(scaled, tol_scale(tol), 1.0)
        return jnp.sum((scale * g) ** 2) <= sq_norm_bound(scale * tol)

    rng = np.random.default_rng(5)
    checked = 0
    with mpmath.workdps(40):
        for _ in range(400):
            tol = 10.0 ** rng.uniform(-300, 300)
            n = int(rng.integers(1, 4))
            g = np.zeros(3)
            g[:n] = tol * 10.0 ** rng.uniform(-3, 3, n) * rng.choice([-1, 1], n)
            exact = mpmath.sqrt(mpmath.fsum(mpmath.mpf(x) ** 2 for x in g))
            if abs(exact / mpmath.mpf(tol) - 1) < 1e-12:
                continue  # (a tie within rounding: either answer is the float64 test)
            passed = bool(test(jnp.asarray(g), tol, needs_scaled_test(tol)))
            assert passed == (exact <= tol), (g, tol)
            checked += 1
    assert checked > 350
    assert not needs_scaled_test(1e-12) and needs_scaled_test(1e-300) and needs_scaled_test(1e200)
    assert needs_scaled_test(NORMAL_TOL[0] / 2) and not needs_scaled_test(NORMAL_TOL[1])
    # in a sweep: the saddle-side start (1e-200, 0) is not converged at tol 1e-300, (1e60, 1e60) is at 1e200
    scalar = mfdyn.ScalarFactorization(1.0)
    tiny = mfdyn.sweep(scalar, {"eta": [0.5], "a": [1e-200], "b": [0.0]}, 20, tol=1e-300, progress=False)
    huge = mfdyn.sweep(scalar, {"eta": [0.5], "a": [1e60], "b": [1e60]}, 20, tol=1e200, progress=False)
    assert int(tiny.steps_to_converge.values.item()) == -1 and int(huge.steps_to_converge.values.item()) == 0
    with pytest.raises(mfdyn.InputError, match="tol must be at least 2.22507e-308"):
        mfdyn.sweep(scalar, {"eta": [0.5], "a": [1.0], "b": [1.0]}, 20, tol=1e-310, progress=False)


def test_a_start_whose_gradient_overflows_diverged_at_step_0():
    """``diverged_at`` is the first step whose state or gradient is not finite: the start's own, as in
    ``mfdyn.gd`` (it was 1)."""
    scalar = mfdyn.ScalarFactorization(1.0)
    for extra in ({}, {"momentum": [0.5]}):
        ds = mfdyn.sweep(scalar, {"eta": [0.5], "a": [1e155], "b": [1e155], **extra}, 10, progress=False)
        assert (int(ds.diverged_at.values.item()), str(ds.outcome.values.item())) == (0, "diverged")
        np.testing.assert_array_equal(ds.final_params.values.reshape(-1), [1e155, 1e155])
    assert mfdyn.gd(scalar, (1e155, 1e155), 0.5, 10).diverged_at == 0
    matrix = mfdyn.MatrixFactorization(np.eye(2), 1)
    start = (np.full((2, 1), 1e155), np.full((2, 1), 1e155))
    ds = mfdyn.sweep(matrix, {"eta": [0.1]}, 10, params0=start, progress=False)
    assert int(ds.diverged_at.values.item()) == 0 == mfdyn.gd(matrix, start, 0.1, 10).diverged_at


@pytest.mark.parametrize("problem,kind", [
    (mfdyn.MatrixFactorization(np.array([[1.0, 0.3], [0.2, 0.5]]), 1), "gaussian"),
    (mfdyn.SymmetricFactorization(np.diag([2.0, 1.0, -0.5]), 2), "gaussian"),
    (mfdyn.DeepFactorization(np.diag([1.0, 0.5]), 3, field="complex"), "balanced"),
])
def test_random_starts_are_problem_init_bit_for_bit(problem, kind, monkeypatch):
    """A sweep over seeds starts from ``problem.init(seed, scale, kind)`` exactly (its draws were fused into
    the kernel and rounded differently: 8 to 12 of 12 starts differed in the last bits, and a chaotic
    symmetric run was bounded in the sweep and diverged in ``gd``). ``tol = 1e300``: every trajectory
    converges at step 0, so ``final_params`` is the start. Each chunk's starts are drawn once (the
    kernel's compilation only describes them)."""
    seeds, scales = np.arange(7), [0.3, 1.7]
    draws = []
    init_batch = type(problem).init_batch
    monkeypatch.setattr(type(problem), "init_batch", lambda self, *args: draws.append(len(args[0])) or init_batch(self, *args))
    ds = mfdyn.sweep(problem, {"eta": [0.1], "seed": seeds, "scale": scales}, 5, tol=1e300, init_kind=kind,
                     chunk=5, progress=False)
    assert len(draws) == 3  # (14 points in 3 chunks)
    monkeypatch.undo()
    for i, seed in enumerate(seeds):
        for j, scale in enumerate(scales):
            start = np.asarray(problem.flatten(problem.init(int(seed), scale, kind=kind)))
            np.testing.assert_array_equal(ds.final_params.values[0, i, j], start)
    batch = problem.init_batch(seeds, 0.3, kind)
    for i, seed in enumerate(seeds):
        for got, want in zip(jax.tree_util.tree_leaves(batch), jax.tree_util.tree_leaves(problem.init(int(seed), 0.3, kind))):
            np.testing.assert_array_equal(np.asarray(got)[i], np.asarray(want))


def test_orbit_ends_at_the_final_state_and_its_loss():
    """The last orbit row is ``final_params`` and its loss ``final_loss``, bit for bit, also after one or
    two steps (the revisit's steps, compiled apart, had rounded differently: 23 of 64 points) and near a
    minimum (where the loss cancels: ``orbit_loss`` was 4e-4 off)."""
    rng = np.random.default_rng(3)
    points = dict(a=rng.uniform(0.2, 1.8, 64), b=rng.uniform(0.2, 1.8, 64), eta=rng.uniform(0.3, 1.3, 64))
    scalar = mfdyn.ScalarFactorization(1.0)
    for steps, keep in ((1, 1), (2, 1), (2, 2), (40, 2)):
        ds = mfdyn.sweep(scalar, {"pts": mfdyn.zipped(**points)}, steps, keep_orbit=keep, max_period=0, progress=False)
        ok = ds.outcome.values != "diverged"
        np.testing.assert_array_equal(ds.orbit.values[ok, -1], ds.final_params.values[ok])
        np.testing.assert_array_equal(ds.orbit_loss.values[ok, -1], ds.final_loss.values[ok])
        for i in np.flatnonzero(ok)[:8]:
            run = mfdyn.gd(scalar, (float(points["a"][i]), float(points["b"][i])), float(points["eta"][i]), steps)
            if int(ds.steps_to_converge.values[i]) < 0:
                np.testing.assert_array_equal(ds.final_params.values[i], np.asarray(run.final))
    near = mfdyn.sweep(scalar, {"eta": [0.5], "a": [1.5], "b": [0.2]}, 40, keep_orbit=1, progress=False)
    assert near.orbit_loss.values.item() == near.final_loss.values.item()


def test_scalar_imbalance_of_a_balanced_state_is_zero():
    """``a^2 - b^2`` as ``(a - b)(a + b)``: exactly 0 for ``a = b`` (it was 2.6e-17 in compiled code)."""
    scalar = mfdyn.ScalarFactorization(1.0)
    ds = mfdyn.sweep(scalar, {"eta": [0.1, 0.3], "a": [1.3, 0.7], "b": [1.3, 0.7]}, 5, progress=False)
    diagonal = ds.final_imbalance.values[:, [0, 1], [0, 1]]
    assert np.all(diagonal == 0.0)
    assert mfdyn.gd(scalar, (1.3, 1.3), 0.1, 5, record=("imbalance_norm",))["imbalance_norm"][-1] == 0.0


def test_results_written_into_reused_memory_are_the_same(scalar_ds, monkeypatch):
    """A dropped result's memory, left full of other values, holds the next sweep's results: the
    same bits as a sweep into fresh memory (every row is written)."""
    memory = importlib.import_module("mfdyn.sweep.memory")
    monkeypatch.setattr(memory, "MIN_BYTES", 0)  # (this sweep's arrays are small)
    memory.release()
    run = partial(mfdyn.sweep, SCALAR, scalar_axes(), STEPS, keep_orbit=4, chunk=CHUNK, progress=False)
    first = run()
    xr_identical(scalar_ds, first)
    used = set()
    for name, var in first.data_vars.items():
        values = var.values
        used.add(values.__array_interface__["data"][0])
        values[...] = "garbage" if values.dtype.kind == "U" else np.nan if values.dtype.kind == "f" else -7
    del first, var, values
    gc.collect()
    assert memory.held_bytes() > 0
    second = run()
    reused = {var.values.__array_interface__["data"][0] for var in second.data_vars.values()}
    assert used & reused  # (written into the dropped result's memory)
    xr_identical(scalar_ds, second)
    memory.release()


def test_chunk_threads_put_their_results_in_place(scalar_ds):
    """``run_local`` with a sink: each chunk's results go to the sink once, from the chunk's own
    thread (not the caller's), and are those of a run without one; the iterator yields no results."""
    api = importlib.import_module("mfdyn.sweep.api")
    distribute = importlib.import_module("mfdyn.sweep.distribute")
    plan = api.plan_sweep(SCALAR, scalar_axes(), STEPS, tol=1e-12, max_period=64, keep_orbit=4, chunk=CHUNK,
                          init_kind="gaussian", params0=None, check_every=16, sharpness=True, workers=2)
    values_of = partial(api._chunk_values, plan.grid, spec=plan.job.spec)
    pieces = list(enumerate(api.chunk_ranges(plan.grid.size, plan.chunk)))
    ref = dict(distribute.run_local(plan.job, values_of, pieces, 2))
    got, threads = {}, set()

    def sink(idx, result):
        assert idx not in got
        got[idx] = result
        threads.add(threading.get_ident())

    yielded = list(distribute.run_local(plan.job, values_of, pieces, 2, sink=sink))
    assert sorted(yielded) == [(idx, None) for idx, _ in pieces]
    assert threading.get_ident() not in threads
    assert sorted(got) == sorted(ref)
    for idx in ref:
        for name in ref[idx]:
            np.testing.assert_array_equal(got[idx][name], ref[idx][name], err_msg=f"chunk {idx} {name}")
