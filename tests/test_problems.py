"""Problem families: closed-form gradients vs autodiff, Hessians vs finite differences, inits, flattening."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mfdyn
from mfdyn.pytree import flatten_real


def autodiff_grad(problem, params):
    """Reference gradient in the project convention d/dRe + i d/dIm (JAX returns its conjugate)."""
    g = jax.grad(problem.loss)(params)
    return jax.tree_util.tree_map(lambda x: jnp.conj(x) if jnp.iscomplexobj(x) else x, g)


# compiled once per problem structure and shape (run eagerly, the deep cases took 10-35 s)
closed_form_grad = eqx.filter_jit(lambda problem, params: problem.grad(params))
jit_autodiff_grad = eqx.filter_jit(autodiff_grad)
batched_flat_grad = eqx.filter_jit(lambda problem, xs: jax.vmap(problem.flat_grad)(xs))


def assert_tree_close(a, b, rtol, atol=0.0):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def random_problem(family, rng, field="real"):
    if family == "scalar":
        return mfdyn.ScalarFactorization(target=rng.uniform(0.2, 3), quartic=rng.uniform(0, 0.5))
    if family == "matrix":
        m, n, r = rng.integers(1, 5, size=3)
        return mfdyn.MatrixFactorization(rng.normal(size=(m, n)), rank=int(r))
    if family == "symmetric":
        n, r = rng.integers(1, 5, size=2)
        A = rng.normal(size=(n, n))
        return mfdyn.SymmetricFactorization(A + A.T, rank=int(r))
    if family == "deep":
        depth = int(rng.integers(1, 5))
        widths = tuple(int(w) for w in rng.integers(1, 5, size=depth + 1))
        Y = rng.normal(size=(widths[-1], widths[0]))
        if field == "complex":
            Y = Y + 1j * rng.normal(size=Y.shape)
        lam = rng.uniform(0, 0.5, size=depth)
        return mfdyn.DeepFactorization(Y, depth, widths=widths, weight_decay=lam, balance=rng.uniform(0, 2), field=field)
    raise ValueError(family)


CASES = [("scalar", "real"), ("matrix", "real"), ("symmetric", "real"), ("deep", "real"), ("deep", "complex")]


def random_params(problem, rng):
    """Gaussian parameters of random scale (drawn by NumPy: ``problem.init`` compiles one program per
    structure, and these tests draw many structures)."""
    return problem.unflatten(rng.uniform(0.3, 1.5) * rng.standard_normal(problem.num_coordinates))


@pytest.mark.parametrize("family,field", CASES)
@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1))
def test_closed_form_gradient_equals_autodiff(family, field, seed):
    rng = np.random.default_rng(seed)
    problem = random_problem(family, rng, field)
    params = random_params(problem, rng)
    assert_tree_close(closed_form_grad(problem, params), jit_autodiff_grad(problem, params), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family,field", CASES)
@settings(max_examples=6)
@given(seed=st.integers(0, 2**31 - 1))
def test_descent_is_eta_times_the_gradient(family, field, seed):
    """``descent`` (the increment GD subtracts) equals ``eta grad f``: exactly for the default,
    to rounding for the scalar family's ``(eta b) psi`` (two roundings either way: within 4 ulp of
    ``eta (psi b)``); ``grad`` passed in gives the same bits as computed inside."""
    rng = np.random.default_rng(seed)
    problem = random_problem(family, rng, field)
    params = random_params(problem, rng)
    eta = jnp.asarray(rng.uniform(0.01, 1.5))
    step = problem.descent(params, eta)
    reference = jax.tree_util.tree_map(lambda g: eta * g, problem.grad(params))
    for x, y, z in zip(jax.tree_util.tree_leaves(step), jax.tree_util.tree_leaves(reference),
                       jax.tree_util.tree_leaves(problem.descent(params, eta, grad=problem.grad(params)))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
        if family == "scalar":
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=4 * np.finfo(np.float64).eps, atol=0)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    if family == "scalar":  # and over many points at once, far from and near the minimizers
        a, b = (jnp.asarray(rng.uniform(-3, 3, 10_000)) for _ in range(2))
        step = problem.descent((a, b), eta)
        reference = jax.tree_util.tree_map(lambda g: eta * g, problem.grad((a, b)))
        for x, y in zip(step, reference):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=4 * np.finfo(np.float64).eps, atol=0)


def test_custom_problem_gradient_uses_project_convention():
    Y = jnp.array([[1.0 + 2.0j, 0.5], [0.0, -1.0j]])
    deep = mfdyn.DeepFactorization(Y, 2, balance=0.7, weight_decay=0.1, field="complex")
    params = deep.init(3, 0.8)
    custom = mfdyn.CustomProblem(lambda p: deep.loss(p), params)
    assert_tree_close(custom.grad(params), deep.grad(params), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("family,field", CASES)
def test_hessian_symmetric_and_matches_finite_differences(family, field):
    rng = np.random.default_rng(7)
    problem = random_problem(family, rng, field)
    params = problem.init(1, 0.9)
    H = np.asarray(problem.hessian(params))
    n = problem.num_coordinates
    assert H.shape == (n, n)
    np.testing.assert_allclose(H, H.T, atol=1e-10 * max(1.0, np.abs(H).max()))
    x = np.asarray(problem.flatten(params))
    h = 1e-6
    steps = h * np.eye(n)  # central differences along each coordinate: column i of the Hessian
    fd = (np.asarray(batched_flat_grad(problem, x + steps)) - np.asarray(batched_flat_grad(problem, x - steps))).T / (2 * h)
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(H).max()))


def test_hvp_equals_dense_hessian_product():
    rng = np.random.default_rng(3)
    problem = random_problem("deep", rng, "complex")
    params = problem.init(2, 0.7)
    vec = rng.normal(size=problem.num_coordinates)
    np.testing.assert_allclose(problem.hvp(params, vec), problem.hessian(params) @ vec, rtol=1e-10, atol=1e-12)


def test_hessian_and_hvp_compile_once_for_new_values():
    """``hessian`` and ``hvp`` are compiled once per problem structure and shape: new parameter
    values, Python numbers included, and new constants reuse the compilation; the results equal
    autodiff's Hessian of the loss."""
    compiled = []

    def on_event(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    mfdyn.ScalarFactorization(1.0, 0.1).hessian((1.0, 0.5))
    mfdyn.ScalarFactorization(1.0, 0.1).hvp((1.0, 0.5), [1.0, 0.0])
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        for a, target in ((0.3, 2.0), (1.7, 0.5)):
            problem = mfdyn.ScalarFactorization(target, 0.1)
            before = len(compiled)
            got_hessian, got_hvp = problem.hessian((a, 0.5)), problem.hvp((a, 0.5), [0.0, 1.0])
            counted = len(compiled) - before
            reference = np.asarray(jax.hessian(problem.flat_loss)(jnp.array([a, 0.5])))
            np.testing.assert_allclose(got_hessian, reference, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(got_hvp, reference[:, 1], rtol=1e-12, atol=1e-14)
            assert counted == 0, f"hessian/hvp compiled {counted} time(s) for new values"
        before = len(compiled)
        mfdyn.ScalarFactorization(1.0).hessian((1.0, 0.5))  # a new structure (no quartic term) compiles
        assert len(compiled) > before
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)


def test_flatten_round_trip_complex_counts_two_real_coordinates():
    problem = mfdyn.DeepFactorization(np.eye(2), 3, widths=(2, 3, 1, 2), field="complex")
    params = problem.init(0)
    vec = problem.flatten(params)
    assert vec.dtype == jnp.float64 and vec.shape == (2 * (6 + 3 + 2),) == (problem.num_coordinates,)
    assert_tree_close(problem.unflatten(vec), params, rtol=0, atol=0)
    np.testing.assert_array_equal(flatten_real(params[:1])[:6], np.real(params[0]).ravel())


def test_init_dtypes_scale_and_determinism():
    real = mfdyn.DeepFactorization(np.eye(3), 4)
    cplx = mfdyn.DeepFactorization(np.eye(3), 4, field="complex")
    assert all(W.dtype == jnp.float64 for W in real.init(0))
    ws = cplx.init(5, scale=2.0)
    assert all(W.dtype == jnp.complex128 for W in ws)
    assert_tree_close(ws, cplx.init(5, scale=2.0), rtol=0)
    # complex Gaussian: Re, Im ~ N(0, 1/2) times scale, so E|w|^2 = scale^2
    big = mfdyn.DeepFactorization(np.eye(60), 1, field="complex").init(1, scale=2.0)[0]
    assert abs(float(jnp.mean(jnp.abs(big) ** 2)) - 4.0) < 0.2
    a, b = mfdyn.ScalarFactorization().init(0, scale=0.5)
    assert a.shape == () and b.dtype == jnp.float64


@pytest.mark.parametrize("field", ["real", "complex"])
def test_balanced_init_is_exactly_balanced(field):
    for widths in [(4, 4, 4, 4, 4), (3, 5, 2, 4, 3)]:
        problem = mfdyn.DeepFactorization(np.ones((widths[-1], widths[0])), 4, widths=widths, field=field)
        params = problem.init(11, scale=0.4, kind="balanced")
        scale = max(float(jnp.max(jnp.abs(W @ W.conj().T))) for W in params)
        for gap in problem.imbalance(params):
            assert float(jnp.max(jnp.abs(gap))) < 1e-12 * scale


def test_imbalance_definitions():
    a, b = 1.3, -0.4
    assert float(mfdyn.ScalarFactorization().imbalance((a, b))) == pytest.approx(a**2 - b**2)
    U, V = np.arange(6.0).reshape(3, 2), np.ones((4, 2))
    np.testing.assert_allclose(mfdyn.MatrixFactorization(np.ones((3, 4)), 2).imbalance((U, V)), U.T @ U - V.T @ V)
    W1, W2 = np.arange(6.0).reshape(2, 3), np.arange(4.0).reshape(2, 2)
    (gap,) = mfdyn.DeepFactorization(np.ones((2, 3)), 2, widths=(3, 2, 2)).imbalance((W1, W2))
    np.testing.assert_allclose(gap, W2.T @ W2 - W1 @ W1.T)


def test_pure_quadratic_scalar_equals_the_general_form_bit_for_bit():
    """quartic = 0 leaves the quartic term out (a static specialization): loss and gradient equal
    the general form ``r + 4 mu r^3`` evaluated with mu = 0, bit for bit, on random finite inputs
    (residuals from 1e-300 to 1e150, both signs, zeros); a traced or swept quartic uses the general form."""
    rng = np.random.default_rng(11)
    a = rng.choice([-1.0, 1.0], 4000) * 10.0 ** rng.uniform(-150, 75, 4000)
    b = rng.choice([-1.0, 1.0], 4000) * 10.0 ** rng.uniform(-150, 75, 4000)
    a[:3], b[:3] = [0.0, -0.0, 1.0], [1.0, 5.0, 1.0]
    special = mfdyn.ScalarFactorization(1.5)
    general = mfdyn.ScalarFactorization(1.5, specialize=False)
    assert special.pure_quadratic and not general.pure_quadratic
    assert not mfdyn.ScalarFactorization(1.5, 0.2).pure_quadratic
    assert not special.generalized(("quartic",)).pure_quadratic and special.generalized(("target",)) is special
    params = (jnp.asarray(a), jnp.asarray(b))
    for fn in ("loss", "grad"):
        got = jax.jit(jax.vmap(getattr(special, fn)))(params)
        want = jax.jit(jax.vmap(getattr(general, fn)))(params)
        for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            finite = np.isfinite(np.asarray(y))
            assert finite.sum() > 3000
            assert np.asarray(x)[finite].tobytes() == np.asarray(y)[finite].tobytes()
            assert not np.isfinite(np.asarray(x)[~finite]).any()  # overflowed: non-finite in both forms
    traced = []
    jax.jit(lambda mu: traced.append(mfdyn.ScalarFactorization(1.0, mu).pure_quadratic) or mu)(0.0)
    assert traced == [False]


def test_scalar_quadratic_loss_overflows_only_with_the_residual():
    """mu = 0: psi = r exactly, even where r^3 (but not r) overflows (0 * inf would be NaN);
    mu > 0: the quartic term overflows as it should."""
    big = (jnp.asarray(1e52), jnp.asarray(3e52))
    ga, gb = mfdyn.ScalarFactorization(1.0).grad(big)
    r = 1e52 * 3e52 - 1.0
    assert float(ga) == r * 3e52 and float(gb) == r * 1e52
    assert np.isfinite(float(mfdyn.ScalarFactorization(1.0).loss((jnp.asarray(1e30), jnp.asarray(1e30)))))
    assert np.isinf(float(mfdyn.ScalarFactorization(1.0, 0.1).grad(big)[0]))
    # GD reports divergence at the first step whose gradient really overflows
    traj = mfdyn.gd(mfdyn.ScalarFactorization(1.0), (3.0, 3.0), 1.0, 50)
    a, b = 3.0, 3.0
    for t in range(50):
        r = a * b - 1.0
        ga, gb = r * b, r * a
        if not (np.isfinite(ga) and np.isfinite(gb)):
            break
        a, b = a - ga, b - gb
        if not (np.isfinite(a) and np.isfinite(b)):
            t += 1
            break
    assert traj.diverged_at == t


def test_scalar_psi_order_of_products():
    """``psi = r + 4 ((mu r) r) r``: the bits of ``r + ((4 mu r) r) r`` (the factor 4 is exact), and
    exactly 0 at ``r = 0`` even where ``4 mu`` overflows (it was NaN there)."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=200) * 3, rng.normal(size=200) * 3
    for mu in (0.1, 2.5, 1e-3):
        problem = mfdyn.ScalarFactorization(1.0, mu)
        r = a * b - 1.0
        old = jnp.asarray(r) + 4.0 * mu * jnp.asarray(r) * r * r
        np.testing.assert_array_equal(np.asarray(jax.vmap(problem.psi)((jnp.asarray(a), jnp.asarray(b)))), old)
    huge = mfdyn.ScalarFactorization(1.0, 1e308)
    assert float(huge.psi((jnp.asarray(1.0), jnp.asarray(1.0)))) == 0.0
    assert np.all(np.isfinite(np.asarray(huge.grad((jnp.asarray(1.0), jnp.asarray(1.0))))))
