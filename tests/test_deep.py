"""mfdyn.deep (MATH.md §4): the tracked quantities against dense/explicit references, the core's
four-layer constructions (balanced init, complex gradients), stages and the plateau law."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import mfdyn
from mfdyn import deep
from mfdyn.trajectory import Trajectory

FIELDS = ("real", "complex")


def random_layers(rng, d, field, depth=4, scale=1.0):
    shape = (depth, d, d)
    W = rng.standard_normal(shape)
    if field == "complex":
        W = (W + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return tuple(jnp.asarray(scale * w) for w in W)


def problem_for(d, field, balance=0.0, rng=None):
    Y = np.diag(np.linspace(1.0, 0.5, d))
    if rng is not None:
        Y = rng.standard_normal((d, d))
        if field == "complex":
            Y = Y + 1j * rng.standard_normal((d, d))
    return mfdyn.DeepFactorization(Y, 4, balance=balance, field=field)


# ---- the core's four-layer constructions ------------------------------------------------------------
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("widths", [(3, 3, 3, 3, 3), (5, 5, 5, 5, 5), (3, 4, 2, 5, 3)])
def test_balanced_init_is_exactly_balanced(field, widths):
    problem = mfdyn.DeepFactorization(np.ones((widths[-1], widths[0])), 4, widths=widths, field=field)
    for seed in range(4):
        params = problem.init(seed, scale=0.4, kind="balanced")
        for j, gap in enumerate(problem.layer_gaps(params)):
            ref = np.linalg.norm(np.asarray(params[j])) ** 2
            assert np.linalg.norm(np.asarray(gap)) <= 1e-12 * ref, (seed, j)
        # every layer carries the same singular values eps * sv(G) (r = min width of them nonzero)
        r = min(widths)
        svs = [np.linalg.svd(np.asarray(W), compute_uv=False)[:r] for W in params]
        for s in svs[1:]:
            np.testing.assert_allclose(s, svs[0], rtol=1e-12)
        assert all(np.asarray(W).dtype == (np.complex128 if field == "complex" else np.float64) for W in params)


def test_balanced_init_scale_and_field_statistics():
    """Balanced: singular values are eps * sv(G); Gaussian complex: Re, Im ~ N(0, eps^2 / 2)."""
    d = 40
    cplx = mfdyn.DeepFactorization(np.eye(d), 4, field="complex")
    W = np.asarray(cplx.init(0, scale=0.5, kind="gaussian")[0])
    assert abs(np.var(W.real) - 0.125) < 0.02 and abs(np.var(W.imag) - 0.125) < 0.02
    real = mfdyn.DeepFactorization(np.eye(d), 4)
    Wb = real.init(0, scale=0.5, kind="balanced")
    # G is d x d standard Gaussian: ||G||_F^2 / d^2 ~ 1
    assert abs(np.linalg.norm(np.asarray(Wb[0])) ** 2 / (0.25 * d * d) - 1.0) < 0.1


@pytest.mark.parametrize("field", FIELDS)
def test_closed_form_gradient_matches_autodiff(field):
    rng = np.random.default_rng(1)
    problem = problem_for(3, field, balance=2.5, rng=rng)
    params = random_layers(rng, 3, field, scale=0.7)
    auto = problem.unflatten(jax.grad(problem.flat_loss)(problem.flatten(params)))
    for g, a in zip(problem.grad(params), auto):
        np.testing.assert_allclose(np.asarray(g), np.asarray(a), rtol=1e-11, atol=1e-12)


def test_complex_gradient_convention_is_d_dre_plus_i_d_dim():
    """Independent of the flattening: finite-difference the loss along Re and Im of one entry."""
    rng = np.random.default_rng(2)
    problem = problem_for(2, "complex", balance=1.0, rng=rng)
    params = random_layers(rng, 2, "complex", scale=0.8)
    g = np.asarray(problem.grad(params)[2])[1, 0]
    h = 1e-6

    def shifted(delta):
        W = params[2].at[1, 0].add(delta)
        return float(problem.loss(params[:2] + (W,) + params[3:]))

    d_re = (shifted(h) - shifted(-h)) / (2 * h)
    d_im = (shifted(1j * h) - shifted(-1j * h)) / (2 * h)
    assert abs(g - (d_re + 1j * d_im)) < 1e-7 * max(1.0, abs(g))


# ---- skew error and Hermitian main term ---------------------------------------------------------------
@pytest.mark.parametrize("field", FIELDS)
def test_skew_error_and_main_term_match_explicit_inverse(field):
    rng = np.random.default_rng(3)
    problem = problem_for(4, field)
    for _ in range(3):
        params = random_layers(rng, 4, field)
        W1, W2, W3, W4 = (np.asarray(W) for W in params)
        B = np.linalg.inv(W2) @ W3.conj().T @ W4.conj().T
        M = W1 + B
        np.testing.assert_allclose(float(deep.skew_error(problem, params)), np.linalg.norm(W1 - B), rtol=1e-10)
        np.testing.assert_allclose(float(deep.hermitian_main_term(problem, params)),
                                   np.linalg.eigvalsh(M.conj().T @ M)[0], rtol=1e-9, atol=1e-13)


def test_skew_error_vanishes_when_product_is_hermitian_psd():
    """``W_2 W_1 = (W_4 W_3)^H`` makes the skew error zero and ``W = B B^H``."""
    rng = np.random.default_rng(4)
    problem = problem_for(3, "complex")
    W2, W3, W4 = random_layers(rng, 3, "complex", depth=3)
    W1 = jnp.linalg.solve(W2, (W4 @ W3).conj().T)
    params = (W1, W2, W3, W4)
    assert float(deep.skew_error(problem, params)) < 1e-12
    assert float(deep.hermitian_main_term(problem, params)) > 0


def test_singular_w2_is_reported():
    problem = problem_for(3, "real")
    params = list(random_layers(np.random.default_rng(5), 3, "real"))
    params[1] = params[1].at[:, 0].set(0.0)
    with pytest.raises(mfdyn.InputError, match=r"W_2.*singular"):
        deep.skew_error(problem, tuple(params))
    with pytest.raises(mfdyn.InputError, match=r"W_2.*singular"):
        deep.hermitian_main_term(problem, tuple(params))
    # inside jit (recorded along a run) the value is NaN instead of an exception
    assert np.isnan(float(jax.jit(deep.skew_error, static_argnums=())(problem, tuple(params))))
    # a singular W_3 is harmless: only W_2 is inverted
    params = list(random_layers(np.random.default_rng(5), 3, "real"))
    params[2] = params[2].at[:, 0].set(0.0)
    assert np.isfinite(float(deep.skew_error(problem, tuple(params))))


def test_four_layer_quantities_reject_other_shapes():
    p3 = mfdyn.DeepFactorization(np.eye(2), 3)
    with pytest.raises(mfdyn.InputError, match="depth must be 4"):
        deep.skew_error(p3, p3.init(0))
    with pytest.raises(mfdyn.InputError, match="depth must be 4"):
        deep.hermitian_main_term(p3, p3.init(0))
    rect = mfdyn.DeepFactorization(np.ones((2, 2)), 4, widths=(2, 3, 3, 3, 2))
    with pytest.raises(mfdyn.InputError, match="widths"):
        deep.skew_error(rect, rect.init(0))
    with pytest.raises(mfdyn.InputError, match="problem must be a DeepFactorization"):
        deep.regularizer(mfdyn.ScalarFactorization(), (1.0, 1.0))
    cplx = mfdyn.DeepFactorization(np.eye(2), 4, field="complex")
    with pytest.raises(mfdyn.InputError, match="field must be 'real'"):
        deep.polar_sign(cplx, cplx.init(0))
    nonsq = mfdyn.DeepFactorization(np.ones((2, 3)), 4)
    with pytest.raises(mfdyn.InputError, match="square product"):
        deep.sigma_min_polar(nonsq, nonsq.init(0))


def test_bad_problem_inputs():
    with pytest.raises(mfdyn.InputError, match="Y must be real"):
        mfdyn.DeepFactorization(np.eye(2) * (1 + 1j), 4, field="real")
    problem = mfdyn.DeepFactorization(np.eye(2), 4)
    for eps in (0.0, -0.3):
        with pytest.raises(mfdyn.InputError, match="scale must be > 0"):
            problem.init(0, scale=eps, kind="balanced")


# ---- regularizer --------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", FIELDS)
def test_regularizer_is_the_balance_part_of_the_loss(field):
    rng = np.random.default_rng(6)
    Y = np.diag([1.0, 0.3, 0.2])
    params = random_layers(rng, 3, field, scale=0.6)
    with_reg = mfdyn.DeepFactorization(Y, 4, balance=3.5, field=field)
    without = mfdyn.DeepFactorization(Y, 4, balance=0.0, field=field)
    np.testing.assert_allclose(float(deep.regularizer(with_reg, params)),
                               float(with_reg.loss(params) - without.loss(params)), rtol=1e-12)
    assert float(deep.regularizer(without, params)) == 0.0


# ---- real obstruction -------------------------------------------------------------------------------------
def test_obstruction_identity_on_random_real_matrices():
    """``det W < 0`` iff ``sigma_min(W + (W W^T)^{1/2}) = 0``; compared with a scipy ``sqrtm`` reference."""
    rng = np.random.default_rng(7)
    problem = mfdyn.DeepFactorization(np.eye(4), 4)
    signs = []
    for _ in range(40):
        params = random_layers(rng, 4, "real")
        W = np.asarray(problem.product(params))
        ref_sqrt = scipy.linalg.sqrtm(W @ W.T).real
        ref = np.linalg.svd(W + ref_sqrt, compute_uv=False)[-1]
        value = float(deep.sigma_min_polar(problem, params))
        scale = np.linalg.norm(W, 2)
        det = np.linalg.det(W)
        sign = float(deep.polar_sign(problem, params))
        assert sign == np.sign(det)
        if det < 0:
            assert value <= 1e-12 * scale and ref <= 1e-7 * scale
        else:
            assert value > 1e-6 * scale
            np.testing.assert_allclose(value, ref, rtol=1e-6)
        signs.append(sign)
    assert -1.0 in signs and 1.0 in signs  # both branches exercised


def test_sigma_min_polar_complex_is_generically_positive():
    rng = np.random.default_rng(8)
    problem = mfdyn.DeepFactorization(np.eye(3), 4, field="complex")
    values = [float(deep.sigma_min_polar(problem, random_layers(rng, 3, "complex"))) for _ in range(20)]
    assert min(values) > 1e-8


# ---- plateau law -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s,u0,uf", [(1.0, 1e-4, 0.5), (2.0, 1e-6, 1.99), (0.5, 0.3, 0.31), (1.0, 3.0, 1.2)])
def test_plateau_time_matches_ode_integration(s, u0, uf):
    t = float(deep.plateau_time(s, u0, uf))
    assert t > 0
    sol = scipy.integrate.solve_ivp(lambda _, u: 4 * u**1.5 * (s - u), (0.0, t), [u0], method="DOP853",
                                    rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(sol.y[0, -1], uf, rtol=1e-8)


def test_plateau_time_broadcasts_and_scales_like_eps_minus_two():
    eps = np.array([0.01, 0.02, 0.04])
    t = deep.plateau_time(1.0, eps**4, 0.5)
    assert t.shape == (3,)
    np.testing.assert_allclose(t * eps**2, 0.5, rtol=0.1)  # leading term 1 / (2 s w0), w0 = eps^2


@pytest.mark.parametrize("args,match", [((0.0, 0.1, 0.5), "s must be > 0"), ((1.0, -1.0, 0.5), "u0 must be > 0"),
                                        ((1.0, 0.5, 0.1), "uf must lie between"), ((1.0, 0.5, 1.0), "uf must lie between"),
                                        ((1.0, np.nan, 0.5), "u0 must be finite")])
def test_plateau_time_bad_input(args, match):
    with pytest.raises(mfdyn.InputError, match=match):
        deep.plateau_time(*args)


# ---- stages --------------------------------------------------------------------------------------------------
def synthetic_trajectory():
    problem = mfdyn.DeepFactorization(np.diag([2.0, 1.0]), 4)
    steps = np.arange(0, 1000, 10)
    loss = np.where(steps < 400, 1.0, np.exp(-0.05 * (steps - 400)))
    imbalance = np.where(steps < 100, 1.0, 1e-3)
    layer_sv = np.ones((steps.size, 4, 2))  # sum ||W_j||^2 = 8
    prod_sv = np.stack([np.full(steps.size, 2.0), np.where(steps < 300, 0.1, 0.9)], axis=1)
    obs = dict(loss=loss, imbalance_norm=imbalance, layer_singular_values=layer_sv, product_singular_values=prod_sv)
    return Trajectory(problem=problem, observables=obs, final=None, diverged_at=None, method="gd", steps=steps)


def test_stages_on_a_synthetic_run():
    st = deep.stages(synthetic_trajectory(), align_tol=0.05, learned_fraction=0.5, loss_floor=1e-20)
    assert st.alignment_end == 100.0  # rho = 1/8 before, 1.25e-4 after
    assert st.saddle_end == 300.0  # sigma_min(W) = 0.9 >= 0.5 * 1
    # fit over steps >= 300 mixes the plateau at 1 (300..390) and the decay: rate below 0.05
    assert 0 < st.linear_rate < 0.05 and st.rate_points == 70
    st = deep.stages(synthetic_trajectory(), learned_fraction=0.95)
    assert st.saddle_end is None and st.linear_rate is None
    assert st.thresholds["learned_fraction"] == 0.95


def test_stages_recovers_an_exact_exponential_rate():
    traj = synthetic_trajectory()
    obs = dict(traj.observables)
    obs["product_singular_values"] = np.stack([np.full(traj.steps.size, 2.0),
                                               np.where(traj.steps < 400, 0.1, 0.9)], axis=1)
    traj = Trajectory(problem=traj.problem, observables=obs, final=None, diverged_at=None, method="gd", steps=traj.steps)
    st = deep.stages(traj)
    np.testing.assert_allclose(st.linear_rate, 0.05, rtol=1e-12)
    np.testing.assert_allclose(st.rate_r2, 1.0, atol=1e-12)


def test_stages_requires_the_observables():
    traj = synthetic_trajectory()
    obs = {k: v for k, v in traj.observables.items() if k != "imbalance_norm"}
    bad = Trajectory(problem=traj.problem, observables=obs, final=None, diverged_at=None, method="gd", steps=traj.steps)
    with pytest.raises(mfdyn.InputError, match="missing: imbalance_norm"):
        deep.stages(bad)


# ---- observables along a run -----------------------------------------------------------------------------------
def test_recorded_observables_equal_direct_evaluation():
    problem = mfdyn.DeepFactorization(np.eye(3), 4, balance=5.0)
    params0 = problem.init(0, scale=0.4, kind="gaussian")
    names = ("loss", "skew_error", "hermitian_main_term", "regularizer", "polar_sign", "sigma_min_polar")
    traj = mfdyn.gd(problem, params0, 0.02, 400, record=names, every=200)
    for n in names[1:]:
        np.testing.assert_allclose(traj[n][-1], float(getattr(deep, n)(problem, traj.final)), rtol=1e-9, atol=1e-14)
    assert {"skew_error", "hermitian_main_term", "regularizer", "polar_sign", "sigma_min_polar"} <= set(
        mfdyn.observables.REGISTRY)


# ---- statistics --------------------------------------------------------------------------------------------------
def test_wilson_interval_known_values():
    lo, hi = deep.wilson_interval(5, 10)
    np.testing.assert_allclose([lo, hi], [0.236593, 0.763407], atol=1e-6)
    lo, hi = deep.wilson_interval(0, 10)
    assert lo == 0.0 and abs(hi - 0.277533) < 1e-6
    lo, hi = deep.wilson_interval(256, 256)
    z2 = 1.959963984540054**2
    assert abs(hi - 1.0) < 1e-15 and abs(lo - 256 / (256 + z2)) < 1e-12  # k = n: lower end n / (n + z^2)
    with pytest.raises(mfdyn.InputError, match="successes"):
        deep.wilson_interval(11, 10)
    for z in (-1.96, float("nan")):
        with pytest.raises(mfdyn.InputError, match="z must"):
            deep.wilson_interval(1, 3, z=z)
    assert deep.probability([True, False, 1, 0])["converged"] == 2
    for flags, message in ((["a", np.nan, 0.0], "converged must be booleans"), ([np.nan, 1.0], "converged must be booleans"),
                           ([], "converged must not be empty")):
        with pytest.raises(mfdyn.InputError, match=message):
            deep.probability(flags)


def test_target_condition_number():
    S = deep.target(4, sigma1=2.0, kappa=10.0)
    sv = np.diag(S)
    np.testing.assert_allclose([sv[0], sv[-1]], [2.0, 0.2])
    np.testing.assert_allclose(deep.target(3), np.eye(3))
    with pytest.raises(mfdyn.InputError, match="kappa"):
        deep.target(3, kappa=0.5)


def test_median_stop_step_ignores_runs_that_did_not_stop_on_the_gradient_test():
    ds = {"steps_to_converge": np.array([10, -1, 30, 50, -1]), "converged": np.array([True, True, True, False, False])}
    assert deep.median_stop_step(ds) == 20.0  # runs 0 and 2: converged and stopped
    assert np.isnan(deep.median_stop_step({"steps_to_converge": np.array([-1]), "converged": np.array([True])}))


def test_skew_error_scaled_by_powers_of_two():
    """The skew error is computed on layers scaled by powers of two: the unscaled formula's bits where
    nothing overflows, and representable results for layers near the ends of float64's range (the
    intermediate ``W_3^H W_4^H`` or the squares of the norm used to overflow to inf or NaN)."""
    problem = mfdyn.DeepFactorization(np.eye(3), 4)
    rng = np.random.default_rng(7)
    for _ in range(5):
        W = [jnp.asarray(rng.normal(size=(3, 3))) for _ in range(4)]
        plain = jnp.sqrt(jnp.sum(jnp.abs(W[0] - jnp.linalg.solve(W[1], W[2].T @ W[3].T)) ** 2))
        assert float(deep.skew_error(problem, W)) == float(plain)
    eye = np.eye(3)
    np.testing.assert_allclose(float(deep.skew_error(problem, [eye, 1e-200 * eye, eye, eye])), np.sqrt(3) * 1e200, rtol=1e-14)
    assert float(deep.skew_error(problem, [1e200 * eye] * 4)) == 0.0
    assert float(deep.skew_error(problem, [1e-200 * eye] * 4)) <= 1e-214  # (1e-200 times rounding)


def test_plateau_time_keeps_its_digits_near_s_and_over_short_intervals():
    """``uf`` within 1e-15 of ``s`` (the artanh term's argument near 1) and ``uf`` within 1e-10 of ``u0``:
    the time against MATH.md's closed form evaluated in 60 digits, itself checked against the integral
    of ``du / (4 u^{3/2} (s - u))`` (as F(wf) - F(w0) in float64 it lost up to 3e-3 and 1.6e-6 of its value)."""
    import mpmath

    cases = [(1.0, 0.3, 0.999999999999999), (1e3, 300.0, 999.999999999999), (1.0, 0.3, 0.30000000003),
             (1.0, 3.0, 1.5), (1.0, 2.0, 1.0000001), (2.0, 0.01, 1.9), (1.0, 1e-300, 0.5)]
    with mpmath.workdps(60):
        def closed_form(S, U0, UF):
            r = mpmath.sqrt(S)
            arc = lambda w: mpmath.atanh(w / r) if w < r else mpmath.acoth(w / r)  # noqa: E731
            w0, wf = mpmath.sqrt(U0), mpmath.sqrt(UF)
            return (1 / w0 - 1 / wf + (arc(wf) - arc(w0)) / r) / (2 * S)

        for s, u0, uf in cases:
            S, U0, UF = map(mpmath.mpf, (s, u0, uf))
            exact = closed_form(S, U0, UF)
            if u0 > 1e-3:  # (the integrand's scale near u = 0 defeats quadrature)
                integral = mpmath.quad(lambda u: 1 / (4 * u ** mpmath.mpf(1.5) * (S - u)), [U0, (U0 + UF) / 2, UF])
                assert abs(integral - exact) <= mpmath.mpf(10) ** -30 * abs(exact)
            assert abs(deep.plateau_time(s, u0, uf) - exact) <= 1e-14 * abs(exact), (s, u0, uf)
