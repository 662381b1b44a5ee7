"""GD and gradient flow: exact identities, conservation laws, closed forms, divergence, compilation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mfdyn
from mfdyn.dynamics import _gd_scan, gd_update


@settings(max_examples=40)
@given(
    a=st.floats(-3, 3), b=st.floats(-3, 3), y=st.floats(0.1, 3), mu=st.floats(0, 1), eta=st.floats(0.01, 1.5)
)
def test_exact_scalar_gd_identities(a, b, y, mu, eta):
    """MATH.md §1 [derived]: p' = (1 - eta psi) p, q' = (1 + eta psi) q, d' = (1 - eta^2 psi^2) d, ..."""
    problem = mfdyn.ScalarFactorization(y, mu)
    params = (jnp.asarray(a), jnp.asarray(b))
    (a1, b1), _ = gd_update(problem, params, (0.0, 0.0), eta, 0.0)
    a1, b1 = float(a1), float(b1)
    psi = float(problem.psi(params))
    e = eta * psi

    def close(x, ref, scale):
        assert abs(x - ref) <= 1e-12 * max(scale, 1e-300) + 1e-300

    scale = (abs(a) + abs(b)) * (1 + abs(e))
    close(a1 + b1, (1 - e) * (a + b), scale)
    close(a1 - b1, (1 + e) * (a - b), scale)
    close(a1**2 - b1**2, (1 - e**2) * (a**2 - b**2), scale**2)
    close(a1 * b1, a * b * (1 + e**2) - e * (a**2 + b**2), scale**2)
    close(a1**2 + b1**2, (1 + e**2) * (a**2 + b**2) - 4 * e * a * b, scale**2)


def test_gd_matches_slow_loop_with_momentum():
    rng = np.random.default_rng(0)
    problem = mfdyn.MatrixFactorization(rng.normal(size=(3, 4)), rank=2)
    U, V = (np.asarray(x) for x in problem.init(4, 0.5))
    eta, beta, steps = 0.05, 0.6, 37
    traj = mfdyn.gd(problem, (U, V), eta, steps, record=("loss",), every=5, momentum=beta)
    vU, vV = np.zeros_like(U), np.zeros_like(V)
    losses = [0.5 * np.sum((U @ V.T - problem.X) ** 2)]
    for t in range(1, steps + 1):
        R = U @ V.T - np.asarray(problem.X)
        gU, gV = R @ V, R.T @ U
        vU, vV = beta * vU - eta * gU, beta * vV - eta * gV
        U, V = U + vU, V + vV
        if t % 5 == 0 or t == steps:
            losses.append(0.5 * np.sum((U @ V.T - problem.X) ** 2))
    np.testing.assert_array_equal(traj.steps, [0, 5, 10, 15, 20, 25, 30, 35, 37])
    np.testing.assert_allclose(traj["loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(traj.final[0], U, rtol=1e-12)


def test_gd_divergence_is_recorded_not_raised():
    problem = mfdyn.ScalarFactorization(1.0, quartic=1.0)
    traj = mfdyn.gd(problem, (3.0, 3.0), 1.0, 200, record=("loss", "grad_norm"))
    assert traj.diverged_at is not None and 0 < traj.diverged_at < 200
    assert traj.status == "diverged"
    assert np.all(traj.steps < traj.diverged_at) and np.all(np.isfinite(traj["loss"]))
    assert all(np.isfinite(np.asarray(x)) for x in traj.final)


def test_eta_and_constants_do_not_recompile():
    """eta, momentum and problem constants are traced: one compilation for plain GD and one for heavy
    ball, per structure (a scalar loss with quartic exactly 0 is its own structure: the pure quadratic
    leaves the quartic term out)."""
    problem = mfdyn.ScalarFactorization(1.0)
    for structure in (problem, mfdyn.ScalarFactorization(1.0, 0.2)):
        mfdyn.gd(structure, (1.0, 0.5), 0.1, 50, record=("loss",))
        mfdyn.gd(structure, (1.0, 0.5), 0.1, 50, record=("loss",), momentum=0.5)
    before = _gd_scan._cache_size()
    for eta in (0.2, 0.3, 0.77):
        mfdyn.gd(problem, (1.0, 0.5), eta, 50, record=("loss",))
    mfdyn.gd(mfdyn.ScalarFactorization(2.5, 0.3), (0.1, 0.5), 0.01, 50, record=("loss",), momentum=0.9)
    mfdyn.gd(mfdyn.ScalarFactorization(0.5, 0.1), (0.1, 0.5), 0.4, 50, record=("loss",))
    mfdyn.gd(mfdyn.ScalarFactorization(3.0), (0.1, 0.5), 0.4, 50, record=("loss",), momentum=0.2)
    assert _gd_scan._cache_size() == before


def test_flow_conserves_imbalances():
    """Gradient flow conserves a^2 - b^2, U^T U - V^T V and the layer differences (a = 0, lambda = 0) to 1e-9."""
    rng = np.random.default_rng(1)
    cases = [
        (mfdyn.ScalarFactorization(1.0, 0.2), (1.7, 0.3)),
        (mfdyn.MatrixFactorization(np.diag([1.0, 0.4]), 1), None),
        (mfdyn.DeepFactorization(rng.normal(size=(3, 2)), 3, widths=(2, 3, 3, 3)), None),
        (mfdyn.DeepFactorization(rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2)), 3, field="complex"), None),
    ]
    for problem, params in cases:
        params = problem.init(2, 0.8) if params is None else params
        traj = mfdyn.flow(problem, params, 100.0, record=("params", "loss"), times=np.linspace(0, 100, 11))
        assert traj.status == "ok"
        assert traj["loss"][-1] < traj["loss"][0]
        d0 = problem.imbalance(problem.check_params(params))
        scale = max(1.0, float(mfdyn.pytree.tree_norm(d0)))
        for vec in traj["params"]:
            d = problem.imbalance(problem.unflatten(vec))
            drift = float(mfdyn.pytree.tree_norm(jax.tree_util.tree_map(lambda x, y: x - y, d, d0)))
            assert drift <= 1e-9 * scale, (type(problem).__name__, drift)


@pytest.mark.parametrize("m,x0,t1", [(1.0, 0.3, 1e4), (0.0, 0.8, 1e4), (-0.5, 1.2, 20.0)])
def test_flow_matches_scalar_symmetric_closed_form(m, x0, t1):
    """x' = (m - x^2) x: x^2(t) = m x0^2 e^{2mt} / (m + x0^2 (e^{2mt} - 1)); m = 0: x0^2 / (1 + 2 x0^2 t).

    For m < 0 the solution decays like e^{mt}; relative accuracy is only meaningful while x^2 is
    well above atol, hence the shorter horizon and an absolute tolerance far below x(t1) ~ 3e-5.
    """
    problem = mfdyn.SymmetricFactorization([[m]], rank=1)
    times = np.array([0.0, 0.5, 3.0, t1 / 2, t1])
    tol = dict(rtol=1e-10, atol=1e-12) if m >= 0 else dict(rtol=1e-12, atol=1e-18)  # exponential decay accumulates rtol
    traj = mfdyn.flow(problem, np.array([[x0]]), t1, record=("params",), times=times, **tol)
    x2 = traj["params"][:, 0] ** 2
    if m == 0:
        ref = x0**2 / (1 + 2 * x0**2 * times)
    else:
        # stable rewrite: m x0^2 / (m e^{-2mt} + x0^2 (1 - e^{-2mt}))
        e = np.exp(-2 * m * times)
        ref = m * x0**2 / (m * e + x0**2 * (1 - e))
    np.testing.assert_allclose(x2, ref, rtol=1e-9)


def test_flow_reaches_1e6_on_slow_overparameterized_case_in_log_time():
    problem = mfdyn.SymmetricFactorization(np.diag([1.0, 0.0]), rank=2)
    X0 = np.array([[1.0, 0.2], [0.3, 0.5]])
    long = mfdyn.flow(problem, X0, 1e6, record=("loss",))
    assert long.status == "ok" and long.config["solver"] == "kvaerno5"  # the auto choice for a stiff horizon
    short = mfdyn.flow(problem, X0, 1e2, record=("loss",), solver="kvaerno5")
    # cost ~ log t: a 10^4 times longer horizon costs far less than 10^4 times the steps
    assert long.config["solver_steps"] < 4 * short.config["solver_steps"]
    # f ~ k / (16 t^2) with k = 1 (MATH.md §3)
    assert long["loss"][-1] * 1e12 == pytest.approx(1 / 16, rel=1e-3)


def test_trajectory_to_xarray():
    problem = mfdyn.DeepFactorization(np.diag([2.0, 1.0]), 2)
    traj = mfdyn.gd(problem, problem.init(0, 0.3), 0.1, 20, record=("loss", "product_singular_values"), every=4)
    ds = traj.to_xarray()
    assert list(ds["loss"].dims) == ["step"] and ds["product_singular_values"].shape == (6, 2)
    np.testing.assert_array_equal(ds["step"].values, traj.steps)
    assert ds.attrs["method"] == "gd" and ds.attrs["diverged_at"] == -1


def test_flow_blow_up_is_diverged_but_running_out_of_steps_is_unfinished():
    """z' = z (loss -z^2/2) passes the divergence norm 1e100 at t = ln(1e100) ~ 230.3; a benign flow that
    merely exhausts max_steps must not be reported as diverged."""
    grow = mfdyn.CustomProblem(lambda p: -0.5 * p[0][0] ** 2, (jnp.ones(1),))
    times = np.linspace(0.0, 300.0, 31)
    traj = mfdyn.flow(grow, (jnp.ones(1),), 300.0, times=times, solver="tsit5")
    assert traj.status == "diverged" and traj.diverged_at == 240.0
    assert traj.times[-1] == 230.0 and np.all(np.isfinite(traj["loss"]))
    slow = mfdyn.flow(mfdyn.ScalarFactorization(), (1.0, 0.5), 1e3, solver="tsit5", max_steps=20)
    assert slow.diverged_at is None and slow.status.startswith("unfinished: max_steps=20")
    assert 0 < slow.times.size < 257 and np.all(np.isfinite(slow["loss"]))


def test_default_times_end_at_t1():
    from mfdyn.dynamics import default_times

    np.testing.assert_array_equal(default_times(100.0, 1), [100.0])
    np.testing.assert_array_equal(default_times(100.0, 2), [0.0, 100.0])
    for n in (3, 257):
        times = default_times(100.0, n)
        assert times.size == n and times[0] == 0.0 and times[-1] == 100.0 and np.all(np.diff(times) > 0)


def test_a_last_state_whose_loss_overflowed_is_diverged_as_in_the_sweep():
    """A run that ends at a finite state whose gradient overflows (|a b| ~ 1e197: the loss is inf)
    diverged at that last step, as a longer run does at the same step and as the sweep says."""
    problem = mfdyn.ScalarFactorization(1.0)
    eta, start = 12 / 19, (2.5, 0.5)
    longer = mfdyn.gd(problem, start, eta, 60)
    d = longer.diverged_at
    assert d is not None
    run = mfdyn.gd(problem, start, eta, d, record=("loss",))
    assert np.all(np.isfinite(np.asarray(run.final))) and not np.isfinite(float(problem.loss(run.final)))
    assert (run.status, run.diverged_at) == ("diverged", d)
    assert run.steps.max() < d and np.all(np.isfinite(run["loss"]))  # (the record at d is dropped)
    np.testing.assert_array_equal(np.asarray(run.final), np.asarray(longer.final))
    ds = mfdyn.sweep(problem, {"eta": [eta], "a": [start[0]], "b": [start[1]]}, d, progress=False)
    assert int(ds.diverged_at.values.ravel()[0]) == d and str(ds.outcome.values.ravel()[0]) == "diverged"
    np.testing.assert_array_equal(ds.final_params.values.reshape(-1), np.asarray(run.final).reshape(-1))
