"""Observables: Lanczos vs dense Hessian spectra, registry, and named quantities."""

import jax.numpy as jnp
import numpy as np
import pytest

import mfdyn
from mfdyn import observables as obs


def test_lanczos_extremes_equal_dense_on_random_deep_problem():
    rng = np.random.default_rng(0)
    problem = mfdyn.DeepFactorization(rng.normal(size=(6, 5)), 3, widths=(5, 7, 6, 6), weight_decay=0.05, balance=0.3)
    params = problem.init(1, 0.8)
    assert problem.num_coordinates == 35 + 42 + 36
    lo_d, hi_d = obs.extreme_hessian_eigs(problem, params, method="dense")
    lo_l, hi_l = obs.extreme_hessian_eigs(problem, params, method="lanczos")
    np.testing.assert_allclose(hi_l, hi_d, rtol=1e-9)
    np.testing.assert_allclose(lo_l, lo_d, rtol=1e-7, atol=1e-9 * abs(float(hi_d)))


def test_lanczos_on_a_large_problem_matches_dense_top_eigenvalue():
    """Above the dense limit (2000 coordinates) `sharpness` switches to Lanczos; check it against eigh."""
    rng = np.random.default_rng(1)
    problem = mfdyn.MatrixFactorization(rng.normal(size=(45, 45)), rank=23)  # 2070 coordinates
    params = problem.init(0, 0.3)
    assert problem.num_coordinates > 2000
    dense = float(np.linalg.eigvalsh(np.asarray(problem.hessian(params)))[-1])
    np.testing.assert_allclose(float(obs.sharpness(problem, params)), dense, rtol=1e-8)


def test_sharpness_at_scalar_minimizer_is_a2_plus_b2():
    """MATH.md §1: Hessian at ab = y is [[b^2, y], [y, a^2]], eigenvalues 0 and a^2 + b^2."""
    problem = mfdyn.ScalarFactorization(2.0, quartic=0.3)
    a = 1.7
    params = (jnp.asarray(a), jnp.asarray(2.0 / a))
    np.testing.assert_allclose(obs.sharpness(problem, params), a**2 + (2 / a) ** 2, rtol=1e-13)
    np.testing.assert_allclose(obs.hessian_min_eig(problem, params), 0.0, atol=1e-13)


def test_named_observables():
    Y = np.diag([3.0, 1.0])
    problem = mfdyn.DeepFactorization(Y, 2, widths=(2, 3, 2))
    params = problem.init(0, 0.5)
    P = np.asarray(params[1] @ params[0])
    np.testing.assert_allclose(obs.product_singular_values(problem, params), np.linalg.svd(P, compute_uv=False))
    np.testing.assert_allclose(obs.distance_to_target(problem, params), np.linalg.norm(P - Y))
    layer = np.asarray(obs.layer_singular_values(problem, params))
    assert layer.shape == (2, 2)
    np.testing.assert_allclose(layer[0], np.linalg.svd(np.asarray(params[0]), compute_uv=False))
    g = problem.grad(params)
    np.testing.assert_allclose(obs.grad_norm(problem, params), np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in g)))
    np.testing.assert_allclose(obs.imbalance_norm(problem, params), np.linalg.norm(np.asarray(problem.imbalance(params)[0])))


def test_user_registered_observable_is_recordable():
    @obs.observable("test_product_trace")
    def product_trace(problem, params):
        return jnp.trace(problem.product(params))

    problem = mfdyn.MatrixFactorization(np.eye(2), 2)
    traj = mfdyn.gd(problem, problem.init(0, 0.1), 0.1, 30, record=("test_product_trace",), every=10)
    assert traj["test_product_trace"].shape == (4,)
    assert traj["test_product_trace"][-1] > traj["test_product_trace"][0]
    with pytest.raises(mfdyn.InputError, match="not recorded"):
        traj["loss"]


def test_closed_form_small_hessian_eigs_equal_dense():
    rng = np.random.default_rng(5)
    for _ in range(20):
        problem = mfdyn.ScalarFactorization(rng.uniform(0.1, 3), rng.uniform(0, 1))
        params = tuple(jnp.asarray(x) for x in rng.normal(size=2) * 2)
        dense = obs.extreme_hessian_eigs(problem, params, method="dense")
        closed = obs.extreme_hessian_eigs(problem, params, method="closed_form")
        scale = max(1.0, float(jnp.max(jnp.abs(problem.hessian(params)))))
        np.testing.assert_allclose(closed, dense, rtol=1e-13, atol=1e-14 * scale)
    one = mfdyn.CustomProblem(lambda p: 3.0 * p[0][0] ** 2, (jnp.zeros(1),))
    np.testing.assert_allclose(obs.extreme_hessian_eigs(one, (jnp.ones(1),)), (6.0, 6.0))


def test_closed_form_eigs_refuse_more_than_two_coordinates():
    problem = mfdyn.MatrixFactorization(np.array([[1.0, 2, 0], [0, 1, 3]]), 2)
    with pytest.raises(mfdyn.InputError, match="at most 2 coordinates, got 10"):
        obs.extreme_hessian_eigs(problem, problem.init(0), method="closed_form")
