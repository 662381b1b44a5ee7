"""mfdyn.rank1 against the closed forms of MATH.md §1 and against simulation."""

from __future__ import annotations

import numpy as np
import pytest

import mfdyn
from mfdyn import CustomProblem, InputError, MatrixFactorization, ScalarFactorization, rank1

GOLDEN = np.sqrt(5.0) - 1.0


@pytest.mark.parametrize("y, mu", [(0.5, 0.0), (2.0, 0.0), (1.0, 0.3)])
def test_critical_step_scalar_is_one_over_y(y, mu):
    assert rank1.critical_step(ScalarFactorization(y, mu)) == pytest.approx(1.0 / y, rel=1e-9)


def test_critical_step_rank1_matrix_is_one_over_top_singular_value():
    X = np.random.default_rng(0).normal(size=(3, 2))
    s1 = np.linalg.svd(X, compute_uv=False)[0]
    assert rank1.critical_step(MatrixFactorization(X, 1)) == pytest.approx(1.0 / s1, rel=1e-8)


def test_critical_step_rejects_other_families():
    with pytest.raises(InputError, match="rank must be 1"):
        rank1.critical_step(MatrixFactorization(np.eye(2), 2))
    with pytest.raises(InputError, match="problem must be"):
        rank1.critical_step(mfdyn.SymmetricFactorization(np.eye(2), 1))


@pytest.mark.parametrize("y, eta", [(1.5, 0.4), (1.0, 0.9)])
def test_stable_imbalance_closed_form(y, eta):
    expected = 2.0 / eta * np.sqrt(1.0 - eta**2 * y**2)
    assert rank1.stable_imbalance(ScalarFactorization(y), eta) == pytest.approx(expected, rel=1e-9)


def test_stable_imbalance_matrix_and_bad_eta():
    M = MatrixFactorization(np.diag([1.0, 0.5]), 1)
    assert rank1.stable_imbalance(M, 0.7) == pytest.approx(2 / 0.7 * np.sqrt(1 - 0.49), rel=1e-8)
    with pytest.raises(InputError, match="critical step size"):
        rank1.stable_imbalance(ScalarFactorization(1.0), 1.2)


def test_stable_imbalance_against_gradient_flow_limit():
    """Flow conserves d; its limit is GD-stable iff |d| is below the threshold."""
    problem, eta = ScalarFactorization(1.0), 0.8
    d_star = rank1.stable_imbalance(problem, eta)
    for factor, stable in ((0.9, True), (1.1, False)):
        d = factor * d_star
        b0 = 0.3
        a0 = np.sqrt(d + b0**2)  # a0^2 - b0^2 = d
        traj = mfdyn.flow(problem, (a0, b0), 400.0, record=("sharpness",))
        assert (traj["sharpness"][-1] * eta < 2.0) == stable


def test_two_cycle_closed_form_matches_numeric_and_returns():
    problem, eta = ScalarFactorization(2.0), 0.55  # eta * y = 1.1
    closed = rank1.two_cycle(problem, eta)
    numeric = rank1.two_cycle(problem, eta, method="numeric")
    assert closed.method == "closed form" and numeric.method == "numeric"
    np.testing.assert_allclose(numeric.products, closed.products, atol=1e-12)
    for key in ("along", "across"):
        np.testing.assert_allclose(numeric.multipliers[key], closed.multipliers[key], atol=1e-10)
    np.testing.assert_allclose(closed.multipliers["along"], 7 - 4 * 1.1 - 2 * 1.1**2, atol=1e-14)
    assert rank1.verify_two_cycle(problem, closed) < 1e-13
    s_lo, s_hi = closed.products / 2.0  # rescaled: sum (t+1)/t, product 1/t^2
    assert s_lo + s_hi == pytest.approx(2.1 / 1.1, rel=1e-14) and s_lo * s_hi == pytest.approx(1 / 1.21, rel=1e-14)
    assert closed.stable and numeric.stable


def test_two_cycle_is_the_attractor_of_gd():
    problem, eta = ScalarFactorization(1.0), 1.1
    traj = mfdyn.gd(problem, (0.7, 1.3), eta, 2000, record=("params",), every=1)
    last = traj["params"][-2:]
    products = np.sort(last[:, 0] * last[:, 1])
    np.testing.assert_allclose(products, rank1.two_cycle(problem, eta).products, atol=1e-10)


@pytest.mark.parametrize("sigma, eta", [(0.5, 1.1), (0.9, 1.15), (0.2, 1.2)])
def test_matrix_two_cycle_noise_multipliers_closed_vs_autodiff(sigma, eta):
    problem = MatrixFactorization(np.diag([1.0, sigma]), 1)
    cycle = rank1.two_cycle(problem, eta)
    closed = np.concatenate([cycle.multipliers[k] for k in ("along", "across", "noise")])
    np.testing.assert_allclose(np.sort(closed), np.sort(np.real(cycle.floquet)), atol=1e-10)
    assert cycle.stable == (sigma < 1 / eta and eta < GOLDEN)


def test_quartic_two_cycle_is_an_orbit_of_the_full_map_and_newton_finds_it():
    problem, eta = ScalarFactorization(1.0, 0.1), 1.1
    cycle = rank1.two_cycle(problem, eta)
    assert cycle.method == "numeric" and rank1.verify_two_cycle(problem, cycle) < 1e-12
    orbits = rank1.periodic_orbits(problem, eta, 2, starts=cycle.points + 1e-3)
    assert len(orbits) == 1
    np.testing.assert_allclose(orbits[0].points, cycle.points, atol=1e-10)
    np.testing.assert_allclose(np.sort(np.abs(orbits[0].multipliers)), np.sort(np.abs(cycle.floquet)), atol=1e-9)


def test_two_cycle_bad_input():
    with pytest.raises(InputError, match="eta > 1/y"):
        rank1.two_cycle(ScalarFactorization(1.0), 0.9)
    with pytest.raises(InputError, match="quartic=0"):
        rank1.two_cycle(ScalarFactorization(1.0, 0.2), 1.1, method="closed")


def test_two_cycle_window_closed_and_numeric():
    scalar = ScalarFactorization(2.0)
    assert rank1.two_cycle_window(scalar) == pytest.approx((0.5, GOLDEN / 2), rel=1e-14)
    low, high = rank1.two_cycle_window(scalar, method="numeric", scan=35)
    assert low == pytest.approx(0.5, abs=1e-7) and high == pytest.approx(GOLDEN / 2, abs=1e-9)
    matrix = MatrixFactorization(np.diag([1.0, 0.9]), 1)
    low, high = rank1.two_cycle_window(matrix, method="numeric", scan=35)
    assert (low, high) == pytest.approx(rank1.two_cycle_window(matrix), abs=1e-9)
    assert high == pytest.approx(1 / 0.9, abs=1e-9)


def test_periodic_orbits_scalar_and_custom_problem_agree():
    eta = 1.1
    scalar = rank1.periodic_orbits(ScalarFactorization(1.0), eta, 2, seeds=48)
    custom_problem = CustomProblem(lambda p: 0.5 * (p[0] * p[1] - 1.0) ** 2, (1.0, 1.0))
    custom = rank1.periodic_orbits(custom_problem, eta, 2, seeds=48)
    balanced = [o for o in scalar if np.allclose(o.points[:, 0], o.points[:, 1]) and o.points[0, 0] > 0]
    assert len(balanced) == 1
    np.testing.assert_allclose(np.sort(balanced[0].points[:, 0] ** 2), rank1.closed_form_products(1.0, eta), atol=1e-10)
    assert balanced[0].stable
    assert len(scalar) == len(custom)
    for a, b in zip(scalar, custom):
        np.testing.assert_allclose(a.points, b.points, atol=1e-9)


def test_periodic_orbits_deduplicates_cyclic_shifts_and_filters_fixed_points():
    problem, eta = ScalarFactorization(1.0), 1.1
    cycle = rank1.two_cycle(problem, eta)
    starts = np.vstack([cycle.points, [[1.0, 1.0]]])  # both points of the cycle, and a fixed point
    orbits = rank1.periodic_orbits(problem, eta, 2, starts=starts)
    assert len(orbits) == 1 and orbits[0].period == 2
    fixed = rank1.periodic_orbits(problem, 0.5, 1, starts=np.array([[1.0, 1.0], [2.0, 0.5]]))
    assert len(fixed) == 2
    for o in fixed:  # a continuum of fixed points: one multiplier 1, the other 1 - eta (a^2 + b^2)
        a, b = o.points[0]
        np.testing.assert_allclose(np.sort(np.real(o.multipliers)), np.sort([1.0, 1 - 0.5 * (a * a + b * b)]), atol=1e-10)
    assert [o.stable for o in fixed] == [True, False] or [o.stable for o in fixed] == [False, True]


def test_periodic_orbits_bad_input():
    with pytest.raises(InputError, match="period"):
        rank1.periodic_orbits(ScalarFactorization(1.0), 1.1, 0)
    with pytest.raises(InputError, match="starts"):
        rank1.periodic_orbits(ScalarFactorization(1.0), 1.1, 2, starts=np.zeros((3, 3)))


def test_edge_of_stability_on_the_two_cycle():
    problem, eta = ScalarFactorization(1.0), 1.1
    traj = rank1.sharpness_trajectory(problem, (0.7, 1.2), eta, 600)
    eos = rank1.edge_of_stability(traj["sharpness"], eta)
    assert eos.straddles
    s_lo, s_hi = rank1.two_cycle(problem, eta).products
    # Hessian of 1/2 (ab - 1)^2 at a = b = x: eigenvalues s +- (2s - 1), s = x^2
    expected = sorted([s_lo + abs(2 * s_lo - 1), 3 * s_hi - 1])
    assert (eos.tail_min, eos.tail_max) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(InputError):
        rank1.edge_of_stability([1.0], eta)


@pytest.mark.parametrize("eta", [1.5, 1e4, 1e8, 1e12, 1e150])
def test_closed_form_products_keep_their_digits_at_large_step_sizes(eta):
    """``s_-+ = y (t + 1 -+ sqrt((t - 1)(t + 3))) / (2t)`` against 400-digit decimal arithmetic (the
    direct form of ``s_-`` cancels: 8.6e-6 relative error at eta = 1e6, all digits at 1e8)."""
    from decimal import Decimal, getcontext

    getcontext().prec = 400  # (t + 1 - R cancels about 2 log10(t) digits)
    y = 0.7
    t = Decimal(eta) * Decimal(y)
    root = ((t - 1) * (t + 3)).sqrt()
    want = [float(Decimal(y) * (t + 1 - root) / (2 * t)), float(Decimal(y) * (t + 1 + root) / (2 * t))]
    np.testing.assert_allclose(rank1.closed_form_products(y, eta), want, rtol=4e-16)


def test_two_cycle_beyond_float64_is_refused():
    with pytest.raises(InputError, match="too large for the 2-cycle in float64"):
        rank1.two_cycle(ScalarFactorization(1.0), 1e300)


@pytest.mark.parametrize("mu", [0.0, 0.1])
def test_numeric_two_cycle_just_above_the_critical_step(mu):
    """At eta = (1 + 1e-9)/y float64 rounding makes g(g(s)) - s change sign near the flat fixed point
    where there is no cycle; the numeric search confirms each sign change in 60-digit arithmetic. Its
    cycle is the closed form's (mu = 0); at eta_c itself there is none."""
    problem = ScalarFactorization(1.0, mu)
    cycle = rank1.two_cycle(problem, 1.0 + 1e-9, method="numeric")
    if mu == 0.0:
        np.testing.assert_allclose(cycle.products, rank1.closed_form_products(1.0, 1.0 + 1e-9), rtol=1e-12)
    else:  # normal form of the period doubling: s_+ - s_- = 2 sqrt((eta - 1) / (1 - 4 mu)) to leading order
        np.testing.assert_allclose(np.diff(cycle.products)[0], 2 * np.sqrt(1e-9 / (1 - 4 * mu)), rtol=1e-3)
    assert rank1.balanced_two_cycles(problem, 1.0) == []


def test_closed_form_products_below_the_critical_step_are_refused():
    with pytest.raises(InputError, match="eta y > 1 only, got eta y = 0.5"):
        rank1.closed_form_products(1.0, 0.5)


def test_minimizer_parameter_is_checked():
    problem = ScalarFactorization(1.0)
    np.testing.assert_array_equal(rank1.minimizer(problem, 2.0), [2.0, 0.5])
    for c, message in ((0.0, "c must be nonzero"), (float("nan"), "c must be finite, got nan")):
        with pytest.raises(InputError, match=message):
            rank1.sharpness_on_minimizers(problem, c)


def _product_map_cycle_function(mu, eta):
    """``G(s) = (g(g(s)) - s) / (g(s) - s)`` of the scalar product map (y = 1) in mpmath: the test's own."""
    def g(s):
        r = s - 1
        return s * (1 - eta * (r + 4 * mu * r**3)) ** 2

    return lambda s: (g(g(s)) - s) / (g(s) - s)


@pytest.mark.parametrize("mu", [0.0, 0.05, 0.1])
def test_small_two_cycle_just_above_the_period_doubling_is_found(mu):
    """At eta = 1 + 1e-12 the cycle's points are 1 -+ ~1e-6, where float64's g(g(s)) - s is rounding noise
    (~1e-18): found all the same (it was missed: no cycle, and two_cycle raised), and equal to the root of
    G in 60 digits."""
    import mpmath

    eta = 1.0 + 1e-12
    problem = mfdyn.ScalarFactorization(1.0, mu)
    cycles = rank1.balanced_two_cycles(problem, eta)
    assert len(cycles) == 1 and cycles[0].stable
    with mpmath.workdps(60):
        G = _product_map_cycle_function(mpmath.mpf(mu), mpmath.mpf(eta))
        low = mpmath.findroot(G, 1 - mpmath.sqrt(mpmath.mpf(1e-12) / (1 - 4 * mpmath.mpf(mu))))
        assert abs(cycles[0].products[0] - low) <= 2e-16
    np.testing.assert_array_equal(rank1.two_cycle(problem, eta, method="numeric").products, cycles[0].products)


def test_window_edge_at_a_fold_of_cycles_is_the_fold():
    """For mu = 0.5 the stable 2-cycle is born with a partner at a fold (nonzero amplitude) below eta_c;
    just past the fold both points lie between two grid points of the float64 search. The window's lower
    edge equals the fold solved in 60 digits (G = 0 = dG/ds) to 1e-12 (it was 1.8e-7 too high)."""
    import mpmath

    problem = mfdyn.ScalarFactorization(1.0, 0.5)
    low, _ = rank1.two_cycle_window(problem, method="numeric")
    s0 = rank1.balanced_two_cycles(problem, low * (1 + 1e-6))[0].products[0]
    with mpmath.workdps(60):
        def equations(s, eta):
            G = _product_map_cycle_function(mpmath.mpf("0.5"), eta)
            return [G(s), mpmath.diff(G, s)]

        _, eta_fold = mpmath.findroot(equations, (mpmath.mpf(s0), mpmath.mpf(low)))
    assert abs(low - eta_fold) <= 1e-12 * eta_fold
    assert any(c.stable for c in rank1.balanced_two_cycles(problem, float(eta_fold) * (1 + 1e-10)))


@pytest.mark.parametrize("y", [0.7, 0.3, 3.0, 1.3])
def test_closed_form_products_keep_their_digits_just_above_the_critical_step(y):
    """At the first few float64 step sizes above ``1 / y`` ``eta y - 1`` is about 1e-16, where
    ``fl(eta y) - 1`` has no correct digit: ``s_pm`` lost up to 4e-9 through ``R``, and a step size
    whose product rounds to 1 was refused. Against 100-digit decimal arithmetic."""
    from decimal import Decimal, getcontext

    getcontext().prec = 100
    eta = 1.0 / y
    while Decimal(eta) * Decimal(y) <= 1:
        eta = float(np.nextafter(eta, np.inf))
    for _ in range(4):
        t = Decimal(eta) * Decimal(y)
        root = ((t - 1) * (t + 3)).sqrt()
        want = [float(Decimal(y) * (t + 1 - root) / (2 * t)), float(Decimal(y) * (t + 1 + root) / (2 * t))]
        np.testing.assert_allclose(rank1.closed_form_products(y, eta), want, rtol=1e-15)
        np.testing.assert_allclose(rank1.two_cycle(ScalarFactorization(y), eta).products, want, rtol=1e-15)
        eta = float(np.nextafter(eta, np.inf))
    below = float(np.nextafter(1.0 / y, -np.inf))
    while Decimal(below) * Decimal(y) > 1:
        below = float(np.nextafter(below, -np.inf))
    with pytest.raises(InputError, match="eta y > 1 only"):
        rank1.closed_form_products(y, below)
