"""mfdyn.symmetric against independent references: dense Hessians, autodiff, the flow, mpmath, the scalar oracle."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import mfdyn
from mfdyn import InputError, SymmetricFactorization
from mfdyn import symmetric as sym


def rotated(eigs, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))
    M = (Q * np.asarray(eigs, float)) @ Q.T
    return 0.5 * (M + M.T)


def problem(eigs, rank, seed=0):
    return SymmetricFactorization(rotated(eigs, seed), rank)


def rel(A, B):
    return np.linalg.norm(A - B, axis=(-2, -1)) / np.linalg.norm(B, axis=(-2, -1))


# ---- regimes, spectrum ----------------------------------------------------------------------------
@pytest.mark.parametrize("eigs, rank, name, r0", [
    ((3, 1.5, 0, 0), 3, "over", 2), ((3, 1.5, 0, 0), 2, "exact", 2), ((3, 2, 1, -1), 2, "under", 3),
    ((-1, -2), 1, "over", 0),
])
def test_regime(eigs, rank, name, r0):
    reg = sym.regime(problem(eigs, rank))  # rotated: the zero eigenvalues come out as ~1e-16 and are snapped
    assert (reg.name, reg.rank, reg.r0) == (name, rank, r0)


# ---- cascade coordinates ------------------------------------------------------------------------
@pytest.mark.parametrize("eigs, rank", [((3, 1.5, 0, 0, -1), 4), ((3, 2, 1.5, -1), 2), ((2, 1, 0.5), 3)])
def test_cascade_matches_block_formulas_and_inverts(eigs, rank):
    prob = problem(eigs, rank, seed=3)
    X = np.asarray(prob.init(5, 0.8))
    S, K, P1 = sym.cascade(prob, X)
    spec = sym.spectrum(prob)
    P = spec.vectors.T @ X @ X.T @ spec.vectors
    p = spec.p
    P1_ref, P0, P2 = P[:p, :p], P[:p, p:], P[p:, p:]
    np.testing.assert_allclose(P1, P1_ref, atol=1e-13)
    np.testing.assert_allclose(K, P0.T @ np.linalg.inv(P1_ref), atol=1e-11)
    np.testing.assert_allclose(S, P2 - P0.T @ np.linalg.solve(P1_ref, P0), atol=1e-11)  # well conditioned here
    assert np.all(np.linalg.eigvalsh(S) >= -1e-15)
    np.testing.assert_allclose(sym.from_cascade(prob, S, K, P1), X @ X.T, atol=1e-13)


def test_schur_complement_by_projection_keeps_digits_that_subtraction_loses():
    prob = SymmetricFactorization(np.diag([3.0, 1.5, 0.0, 0.0]), 3)
    rng = np.random.default_rng(0)
    Y1 = rng.normal(size=(2, 3))
    C = np.linalg.svd(Y1)[2][2:].T  # (3, 1): complement of the row space of Y1
    eps = 1e-7
    g = rng.normal(size=(2, 1))
    Y2 = rng.normal(size=(2, 2)) @ Y1 + eps * g @ C.T
    X = np.vstack([Y1, Y2])
    S_exact = eps**2 * g @ g.T
    V2 = sym.spectrum(prob).vectors[:, 2:]  # the null space of M, in the order eigh returned it
    S = V2 @ sym.cascade(prob, X).S @ V2.T
    S = S[2:, 2:]
    P = X @ X.T
    S_subtracted = P[2:, 2:] - P[2:, :2] @ np.linalg.solve(P[:2, :2], P[:2, 2:])
    assert rel(S, S_exact) < 1e-7
    assert rel(S_subtracted, S_exact) > 1e-4


@pytest.mark.parametrize("eigs, rank", [((3, 1.5, 0, 0, 0), 4), ((3, 1.5, -0.5, -1, -2), 4), ((3, 2.5, 2, 1.5, 1), 4),
                                        ((3, 2, 1.5, 1, -1), 4)])
def test_cascade_equations_hold_along_the_vector_field(eigs, rank):
    prob = problem(eigs, rank, seed=1)
    Xs = np.stack([np.asarray(prob.init(s, 0.7)) for s in range(4)])
    S, K, P1 = (np.asarray(a) for a in zip(*(sym.cascade(prob, X) for X in Xs)))
    derivative = sym.cascade_time_derivative(prob, Xs)
    rhs = sym.cascade_rhs(sym.spectrum(prob), S, K, P1)
    for d, r in zip(derivative, rhs):
        if d.size:
            assert np.max(np.linalg.norm(d - r, axis=(-2, -1))) <= 1e-10 * max(1.0, np.max(np.linalg.norm(r, axis=(-2, -1))))


def test_cascade_outside_domain_says_rank_deficient():
    prob = SymmetricFactorization(np.diag([3.0, 1.5, 0.0]), 2)
    X = np.array([[1.0, 0.0], [0.0, 0.0], [0.3, 0.2]])  # no component along v_2
    with pytest.raises(InputError, match="rank deficient.*converges to a saddle"):
        sym.cascade(prob, X)
    with pytest.raises(InputError, match="X0 is outside"):
        sym.closed_form(prob, X, 1.0)


def test_bad_inputs():
    with pytest.raises(InputError, match=r"symmetric, got max \|M - M\^T\| = 0.5"):
        SymmetricFactorization(np.array([[1.0, 0.5], [0.0, 1.0]]), 1)
    prob = problem((3, 1.5, 0, 0), 3)
    X0 = np.asarray(prob.init(0))
    with pytest.raises(InputError, match="t must be >= 0.*got -1"):
        sym.closed_form(prob, X0, -1.0)
    with pytest.raises(InputError, match="t must be >= 0"):
        sym.closed_form(prob, X0, [0.0, -2.0])
    with pytest.raises(InputError, match="X0 must have shape"):
        sym.closed_form(prob, X0[:, :2], 1.0)
    with pytest.raises(InputError, match="S must have shape"):
        sym.from_cascade(prob, np.zeros((3, 3)), np.zeros((2, 2)), np.eye(2))
    under = problem((3, 1.5, 1, 0), 2)
    with pytest.raises(InputError, match=r"rank 2 < r0 = 3.*needs rank >= r0"):
        sym.closed_form_rates(under, np.asarray(under.init(0)), np.geomspace(1, 10, 5))


# ---- closed form ---------------------------------------------------------------------------------------
def scalar_oracle(m, x0, t):
    """``x(t)^2`` for ``x' = (m - x^2) x`` (MATH.md §3), in mpmath."""
    m, x0, t = mpmath.mpf(m), mpmath.mpf(x0), mpmath.mpf(t)
    if m == 0:
        return x0**2 / (1 + 2 * x0**2 * t)
    e = mpmath.exp(2 * m * t)
    return m * x0**2 * e / (m + x0**2 * (e - 1))


@pytest.mark.parametrize("t", [0.0, 0.3, 5.0, 50.0, 1e3, 1e6])
def test_closed_form_decoupled_scalars_match_the_scalar_oracle(t):
    mpmath.mp.dps = 40
    eigs = np.array([2.0, 0.7, 0.0, -0.5, -1.5])
    prob = SymmetricFactorization(np.diag(eigs), 4)
    x0 = np.array([0.3, 1.7, 0.9, 0.05])
    X0 = np.zeros((5, 4))
    X0[np.arange(4), np.arange(4)] = x0
    Z = sym.closed_form(prob, X0, t)
    expected = np.array([float(scalar_oracle(m, x, t)) for m, x in zip(eigs[:4], x0)])
    np.testing.assert_allclose(np.diag(Z)[:4], expected, rtol=1e-12, atol=0)
    assert np.all(np.diag(Z)[4:] == 0) and np.allclose(Z - np.diag(np.diag(Z)), 0, atol=1e-300)


def mp_direct(M, X0, t, dps=80):
    """The direct formula in 80-digit arithmetic: the reference for generic X0."""
    mpmath.mp.dps = dps
    Mm, X = mpmath.matrix(M.tolist()), mpmath.matrix(X0.tolist())
    E = mpmath.expm(Mm * t)
    n = M.shape[0]
    # A_t = 2 int_0^t e^{2Ms} ds by the eigendecomposition of the exact (float64) M
    lam, V = mpmath.eigsy(Mm)
    a = [2 * t if abs(x) < mpmath.mpf(10) ** (-60) else (mpmath.exp(2 * x * t) - 1) / x for x in lam]
    A = V * mpmath.diag(a) * V.T
    inner = mpmath.eye(X0.shape[1]) + X.T * A * X
    Z = E * X * mpmath.inverse(inner) * X.T * E
    return np.array([[float(Z[i, j]) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("eigs, rank, direct_fails", [((3, 1.5, 0, 0), 3, True), ((3, 1.5, -0.5, -1), 3, True),
                                                      ((3, 2, 1, -1), 2, False)])
def test_closed_form_matches_high_precision_and_direct_formula_does_not(eigs, rank, direct_fails):
    """Over-parameterized, ``I + X0^T A_t X0`` has condition ~ exp(2 lambda_1 t) / t: the direct formula
    loses ~8 digits by t = 5. Under-parameterized only ~exp(2 (lambda_1 - lambda_r) t) matters."""
    prob = problem(eigs, rank, seed=2)
    X0 = np.asarray(prob.init(4, 0.5))
    M = np.asarray(prob.M)
    for t in (0.5, 5.0):
        ref = mp_direct(M, X0, t)
        assert rel(sym.closed_form(prob, X0, t), ref) < 1e-12
        if t == 5.0 and direct_fails:  # the float64 direct formula has lost many digits by t ~ 5
            assert rel(sym.direct_formula(prob, X0, t), ref) > 1e-9  # measured 1e-7 and 2e-8; closed form 1e-15


def test_closed_form_semigroup_to_one_million():
    prob = problem((3, 1.5, 0, 0, -0.7), 4, seed=4)
    X0 = np.asarray(prob.init(2, 0.5))
    s, t = 4e5, 6e5
    Zs = sym.closed_form(prob, X0, s)
    w, U = np.linalg.eigh(Zs)
    Xs = U[:, -4:] * np.sqrt(np.maximum(w[-4:], 0))  # a factor of Z(s); the flow of X X^T depends only on X X^T
    Zst = sym.closed_form(prob, Xs, t)
    R1 = sym.closed_form(prob, X0, s + t) - prob.M
    assert rel(sym.closed_form(prob, X0, s + t), Zst) < 1e-12
    assert rel(R1, Zst - prob.M) < 1e-6  # the O(1/t) residual itself (~1e-6) keeps ~6+ digits


def test_closed_form_under_parameterized_large_t_has_no_overflow():
    prob = problem((3, 2, 1, 0.5), 2, seed=5)
    X0 = np.asarray(prob.init(1))
    Z = sym.closed_form(prob, X0, [0.0, 1e3, 1e6])
    assert np.all(np.isfinite(Z))
    np.testing.assert_allclose(Z[-1], sym.spectrum(prob).limit, atol=1e-13)


@pytest.fixture(scope="module")
def slow_flow():
    prob = problem((3, 1.5, 0, 0, 0), 4, seed=6)
    X0 = np.asarray(prob.init(1, 0.5))
    traj = mfdyn.flow(prob, X0, 1e6, record=("params", "loss"), solver="kvaerno5")
    assert traj.status == "ok"
    return prob, X0, traj


def test_closed_form_matches_integrated_flow_to_one_million(slow_flow):
    prob, X0, traj = slow_flow
    Xs = np.asarray(traj["params"]).reshape(-1, 5, 4)
    Z = Xs @ np.swapaxes(Xs, -1, -2)
    assert np.max(rel(sym.closed_form(prob, X0, traj.times), Z)) < 1e-10


def test_rates_of_flow_and_closed_form(slow_flow):
    prob, X0, traj = slow_flow
    k = 2  # min(r - r0, n - r0) = min(2, 3)
    for result in (sym.rates(traj), sym.closed_form_rates(prob, X0, traj.times[1:])):
        assert result.k == k
        c = result.constants
        assert abs(c["S_2"].at_end - 0.5) < 1e-3 and abs(c["residual_2"].at_end - 0.5) < 1e-3
        assert abs(c["residual_F"].at_end - np.sqrt(k) / 2) < 1e-3
        assert abs(c["loss_gap"].at_end - k / 16) < 1e-3
        assert abs(c["residual_2"].extrapolated - 0.5) < 1e-6
        assert abs(c["residual_F"].slope + 1) < 1e-3 and abs(c["loss_gap"].slope + 2) < 1e-3
        assert result.exponential["K_F"].rate >= sym.spectrum(prob).lam1.min()
    assert abs(traj.times[-1] ** 2 * traj["loss"][-1] - k / 16) < 1e-3


# ---- equilibria ----------------------------------------------------------------------------------
@pytest.mark.parametrize("eigs, rank, classes", [
    ((3, 1.5, 0, 0), 3, 4), ((3, 2, 1, -1), 2, 7), ((2, 1, 1, 1, -1), 2, 5), ((1, 1, 0, -2), 3, 3), ((-1, -2, -3), 2, 1),
])
def test_equilibria_spectra_match_dense_hessian(eigs, rank, classes):
    prob = problem(eigs, rank, seed=8)
    eqs = sym.equilibria(prob)
    spec = sym.spectrum(prob)
    assert len(eqs) == classes == sym.count_classes(spec)
    for e in eqs:
        assert e.hessian_error < 1e-12 * max(1, np.abs(eigs).max()) * 10
        np.testing.assert_allclose(np.asarray(prob.grad(e.X)), 0, atol=1e-13)  # it is an equilibrium
        assert abs(float(prob.loss(e.X)) - e.loss) < 1e-12
        assert e.kind == ("stable" if e.jacobian_spectrum[0] <= 0 else "strict_saddle")
    stable = [e for e in eqs if e.kind == "stable"]
    assert len(stable) == 1
    assert abs(stable[0].loss - spec.optimal_loss) < 1e-12
    np.testing.assert_allclose(stable[0].X @ stable[0].X.T, spec.limit, atol=1e-13)


def test_non_hyperbolic_flag_and_repeated_eigenvalue_classes():
    over = sym.equilibria(SymmetricFactorization(np.diag([3.0, 1.5, 0.0, 0.0]), 3))
    stable = next(e for e in over if e.kind == "stable")
    assert not stable.hyperbolic and "non-hyperbolic" in stable.description
    exact = sym.equilibria(SymmetricFactorization(np.diag([3.0, 1.5, 0.0, 0.0]), 2))
    assert next(e for e in exact if e.kind == "stable").hyperbolic
    rep = SymmetricFactorization(np.diag([2.0, 1.0, 1.0, 1.0]), 2)
    eqs = sym.equilibria(rep)
    assert sorted(e.dims for e in eqs) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    stable = next(e for e in eqs if e.kind == "stable")
    assert stable.dims == (1, 1) and stable.manifold_dim == 1 + 2  # O(2) orbit + Gr(1, 3)


def test_class_of_random_gd_end_points():
    prob = problem((2.5, 1.8, 1.2, 1.2, 1.2), 4, seed=9)  # the repeated eigenvalue is cut by r
    target = sym.stable_class(prob).dims
    for seed in range(3):
        traj = mfdyn.gd(prob, prob.init(seed, 0.5), 0.05, 4000)
        assert sym.class_of(prob, traj.final) == target == (1, 1, 2)


@pytest.mark.parametrize("t", [0.7, 1e6])
def test_closed_form_with_no_positive_eigenvalue(t):
    """``r0 = 0``: the split is empty (p = 0) and the whole of ``X X^T`` is the Schur complement."""
    mpmath.mp.dps = 40
    eigs = np.array([0.0, -0.5, -2.0])
    prob = SymmetricFactorization(np.diag(eigs), 2)
    X0 = np.array([[0.8, 0.0], [0.0, 1.3], [0.0, 0.0]])
    Z = sym.closed_form(prob, X0, t)
    expected = [float(scalar_oracle(m, x, t)) for m, x in zip(eigs[:2], (0.8, 1.3))]
    np.testing.assert_allclose(np.diag(Z)[:2], expected, rtol=1e-12, atol=0)


def test_spectrum_ties_and_zeros_are_relative_to_the_scale_of_M():
    """Eigenvalues are snapped to zero or merged relative to ||M|| only: a target of scale 1e-11 has
    the same regime and equilibria as the same target at scale 1 (an absolute floor of 1e-10 made
    every eigenvalue zero)."""
    for scale in (1e-11, 1.0, 1e6):
        problem = SymmetricFactorization(np.diag([3.0, 2.0, -1.0]) * scale, 1)
        assert sym.regime(problem) == sym.regime(SymmetricFactorization(np.diag([3.0, 2.0, -1.0]), 1))
        assert len(sym.equilibria(problem)) == 3
    close = sym.spectrum(SymmetricFactorization(np.diag([1e-6, 1.00001e-6]), 1)).eigenvalues
    np.testing.assert_allclose(np.sort(close), [1e-6, 1.00001e-6], rtol=1e-12)


def test_equilibrium_loss_has_no_cancellation():
    """The stable class's loss 1/4 (3e-7)^2 = 2.25e-14 beside ||M||^2 = 29: summed over the eigenvalues
    off the support, not as ||M||^2 minus the support's squares (1.3e-2 relative error)."""
    problem = SymmetricFactorization(np.diag([5.0, 2.0, -3e-7]), 2)
    losses = {e.support: e.loss for e in sym.equilibria(problem, check_hessian=False)}
    exact = {(0, 1): mpmath.mpf("3e-7") ** 2 / 4, (0,): (4 + mpmath.mpf("3e-7") ** 2) / 4,
             (): (29 + mpmath.mpf("3e-7") ** 2) / 4}
    for support, value in exact.items():
        assert abs(losses[support] - value) <= 1e-15 * value
