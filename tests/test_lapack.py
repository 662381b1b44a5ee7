"""LAPACK calls get one matrix each (mfdyn._lapack): jaxlib 0.10.2 deadlocks on concurrent batched
calls. The compiled programs that batch over draws, parameters or recorded states are checked for
batched LAPACK custom calls, and the wrapped functions against the batched ones, bit for bit."""

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfdyn
from mfdyn import _lapack as lapack
from mfdyn import deep

LAPACK_CALL = re.compile(r'custom_call_target="lapack_\w+".*?operand_layout_constraints=\{([^}]*)\}')
SHAPE = re.compile(r"\w+\[([\d,]*)\]")


def lapack_operand_ranks(compiled_text: str) -> list[int]:
    """The largest operand rank of every LAPACK custom call of a compiled program."""
    ranks = []
    for operands in LAPACK_CALL.findall(compiled_text):
        ranks.append(max(len([d for d in dims.split(",") if d]) for dims in SHAPE.findall(operands)))
    return ranks


def assert_one_matrix_per_call(jitted, *args, **kwargs):
    ranks = lapack_operand_ranks(jitted.lower(*args, **kwargs).compile().as_text())
    assert ranks, "the program makes no LAPACK call: the check would check nothing"
    assert max(ranks) <= 2, f"batched LAPACK operands (ranks {ranks})"


@pytest.mark.parametrize("field", ["real", "complex"])
def test_balanced_draws_call_lapack_on_one_matrix_at_a_time(field):
    """The draw that hung (five Haar QRs and an SVD, batched over a block of seeds, in one program)."""
    base = importlib.import_module("mfdyn.problems.base")
    problem = mfdyn.DeepFactorization(np.eye(3), 4, field=field)
    block = problem.init_block()
    assert_one_matrix_per_call(base._draw_block, problem, np.zeros(block, np.int64), np.ones(block), kind="balanced")


def test_signs_and_recorded_observables_call_lapack_on_one_matrix_at_a_time():
    problem = mfdyn.DeepFactorization(np.diag([3.0, 2.0, 1.0]), 4)
    params = problem.init_batch(np.arange(5), 0.3, "balanced")
    assert_one_matrix_per_call(deep._polar_signs, problem, params)
    flat = jax.vmap(problem.flatten)(params)
    assert_one_matrix_per_call(deep._final_signs, problem, flat)
    dynamics = importlib.import_module("mfdyn.dynamics")
    assert_one_matrix_per_call(dynamics._flow_observables, problem, flat, names=("sharpness", "product_singular_values"))


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_one_matrix_per_call_gives_the_batched_results_bit_for_bit(dtype):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 4, 4))
    if dtype == np.complex128:
        x = x + 1j * rng.normal(size=x.shape)
    x = jnp.asarray(x)
    h = x + jnp.conj(jnp.swapaxes(x, -1, -2))
    cases = [(lapack.qr, jnp.linalg.qr, x), (lapack.svd, jnp.linalg.svd, x),
             (lapack.svdvals, lambda m: jnp.linalg.svd(m, compute_uv=False), x), (lapack.slogdet, jnp.linalg.slogdet, x),
             (lapack.one_matrix_per_call(jnp.linalg.eigvalsh), jnp.linalg.eigvalsh, h)]
    for wrapped, plain, arg in cases:
        got = jax.jit(jax.vmap(jax.vmap(wrapped)))(arg)  # (nested vmaps: loops within loops)
        want = jax.vmap(jax.vmap(plain))(arg)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        unbatched = wrapped(arg[0, 0])
        for g, w in zip(jax.tree_util.tree_leaves(unbatched), jax.tree_util.tree_leaves(plain(arg[0, 0]))):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_one_matrix_per_call_broadcasts_unbatched_arguments():
    solve = lapack.one_matrix_per_call(jnp.linalg.solve)
    a = jnp.asarray(np.random.default_rng(4).normal(size=(3, 3)) + 3 * np.eye(3))
    bs = jnp.asarray(np.random.default_rng(5).normal(size=(6, 3)))
    got = jax.vmap(solve, in_axes=(None, 0))(a, bs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.vmap(jnp.linalg.solve, in_axes=(None, 0))(a, bs)))


def test_newton_solves_and_the_cascade_call_lapack_on_one_matrix_at_a_time():
    orbits = importlib.import_module("mfdyn.rank1.orbits")
    cascade = importlib.import_module("mfdyn.symmetric.cascade")
    pair = mfdyn.MatrixFactorization(np.diag([1.0, 0.5]), 1)
    starts = jnp.asarray(np.random.default_rng(6).normal(size=(5, pair.num_coordinates)))
    assert_one_matrix_per_call(orbits._newton_batch, pair, starts, jnp.asarray(1.2), k=2, iterations=3)
    M, V = jnp.diag(jnp.asarray([3.0, 1.0, -0.5])), jnp.eye(3)
    Xs = jnp.asarray(np.random.default_rng(7).normal(size=(4, 3, 2)))
    assert_one_matrix_per_call(cascade._cascade_derivatives, M, V, Xs, p=2)
