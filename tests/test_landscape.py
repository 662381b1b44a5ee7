"""Census of regularized deep factorization: scalar oracles (MATH.md §2), counting, ordering, bad input."""

import itertools
import math
import time

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from mfdyn import DeepFactorization, InputError
from mfdyn.landscape import (
    count_critical_points,
    critical_points,
    iter_critical_points,
    no_nonstrict_saddles,
    positive_roots,
    thresholds,
)
from mfdyn.landscape.census import block_options, class_loss
from mfdyn.landscape.roots import g_poly
from mfdyn.landscape.rules import KIND_RANK
from mfdyn.landscape.spectrum import spectrum
from mfdyn.landscape import target_with_singular_values


# ---- scalar oracles ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("y,lam", [(3.0, 1.0), (1.5, 0.49), (0.9, 1.0)])
def test_depth2_soft_threshold(y, lam):
    roots = positive_roots(y, thresholds(2, [lam, 1.0]))
    if y <= math.sqrt(lam):
        assert roots == ()
    else:
        (root,) = roots
        assert root.product == pytest.approx(y - math.sqrt(lam), rel=1e-14)


@pytest.mark.parametrize("L", [3, 4, 5])
def test_thresholds_match_independent_numerics(L):
    wd = np.linspace(0.7, 1.3, L)
    th = thresholds(L, wd)
    lam = float(np.prod(wd))
    # s is a root for y(s) = (s^(2L-2) + lam) / (sqrt(lam) s^(L-2)); y* is its minimum, at s*
    res = minimize_scalar(lambda s: (s ** (2 * L - 2) + lam) / (math.sqrt(lam) * s ** (L - 2)), bounds=(1e-6, 10),
                          method="bounded", options=dict(xatol=1e-12))
    assert th.y_star == pytest.approx(res.fun, rel=1e-12)
    assert th.s_star == pytest.approx(res.x, rel=1e-5)
    assert g_poly(th.s_star, th.y_star, L, lam) == pytest.approx(0.0, abs=1e-12)
    (double,) = positive_roots(th.y_star, th)
    assert double.label == "s*"
    (t2,) = [r for r in positive_roots(th.y_bar, th) if r.label == "t2"]
    assert t2.cost == pytest.approx(0.0, abs=1e-12)  # y = ybar: matching ties with leaving unmatched
    assert positive_roots(0.999 * th.y_star, th) == ()


@pytest.mark.parametrize("L", [3, 4])
def test_roots_satisfy_both_forms(L):
    lam = 0.8
    th = thresholds(L, [lam] + [1.0] * (L - 1))
    for y in np.linspace(1.001, 4.0, 9) * th.y_star:
        t1, t2 = positive_roots(y, th)
        assert t1.sigma < th.s_star < t2.sigma
        for r in (t1, t2):
            assert abs(g_poly(r.sigma, y, L, lam)) <= 1e-12 * max(1.0, y * math.sqrt(lam) * r.sigma ** (L - 2))
            # equivalent form y = p + lam^(1/L) p^((2-L)/L)
            assert r.product + lam ** (1 / L) * r.product ** ((2 - L) / L) == pytest.approx(y, rel=1e-11)


def test_loss_formula_matches_problem_loss_and_representatives_are_critical():
    for L, widths, shape in [(2, None, (3, 2)), (3, (3, 2, 4, 3), (3, 3)), (4, None, (2, 3))]:
        problem = DeepFactorization(target_with_singular_values([3.1, 2.4, 1.2][: min(shape)], shape, L), L, widths=widths,
                                    weight_decay=np.linspace(0.8, 1.1, L))
        scale = max(1.0, float(np.linalg.norm(np.asarray(problem.Y), 2)))
        for p in critical_points(problem):
            params = tuple(np.asarray(W) for W in p.params)
            assert float(problem.loss(params)) == pytest.approx(p.loss, rel=1e-12, abs=1e-12)
            g = np.concatenate([np.ravel(x) for x in problem.grad(params)])
            assert np.linalg.norm(g) < 1e-10 * scale
            sv = np.linalg.svd(np.asarray(problem.product(params)), compute_uv=False)
            np.testing.assert_allclose(sv[: len(p.sigma)], np.sort(p.product_singular_values)[::-1], rtol=1e-12)


# ---- counting and enumeration -----------------------------------------------------------------------------------
def test_counts_quoted_in_math_md():
    Y = np.diag([3.0, 2.5, 1.9])
    assert count_critical_points(DeepFactorization(Y, 3, weight_decay=1.0)) == 27
    assert count_critical_points(DeepFactorization(Y, 3, widths=(3, 2, 3, 3), weight_decay=1.0)) == 19


def brute_force(problem):
    """All class keys by the plain product over blocks (no DP, no heap), with losses."""
    spec = spectrum(problem)
    keys = [k for k in itertools.product(*[block_options(b) for b in spec.blocks])
            if sum(map(sum, k)) <= spec.d_min]
    return spec, sorted((class_loss(spec, k), k) for k in keys)


@pytest.mark.parametrize("seed", range(6))
def test_census_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    L = int(rng.integers(2, 5))
    th = thresholds(L, 1.0)
    ys = list(np.round(rng.uniform(0.5, 2.5, 4) * th.y_star, 1))
    ys[1] = ys[0]  # a tie
    if seed % 2:
        ys[3] = 0.0
    widths = (4, int(rng.integers(1, 5))) + (4,) * (L - 1)
    problem = DeepFactorization(target_with_singular_values(sorted(ys, reverse=True), (4, 4), seed), L, widths=widths, weight_decay=1.0)
    spec, reference = brute_force(problem)
    points = critical_points(problem)
    assert len(points) == len(reference) == count_critical_points(problem)
    assert sorted(p.key for p in points) == sorted(k for _, k in reference)
    losses = [p.loss for p in points]
    np.testing.assert_allclose(losses, [l for l, _ in reference], rtol=1e-12, atol=1e-12)
    for a, b in zip(points, points[1:]):  # by loss, then kind
        assert a.loss <= b.loss + 1e-10
        if abs(a.loss - b.loss) < 1e-12:
            assert KIND_RANK[a.kind] <= KIND_RANK[b.kind]


def test_tied_block_counts_multisets():
    # y1 = y2 > y*, width 3, L = 3: a tied block of 2 with roots (t1, t2): count vectors with sum <= 2 -> 6 options
    th = thresholds(3, 1.0)
    Y = np.diag([2.0 * th.y_star, 2.0 * th.y_star, 0.0])
    assert count_critical_points(DeepFactorization(Y, 3, weight_decay=1.0)) == 6
    assert count_critical_points(DeepFactorization(Y, 3, widths=(3, 1, 3, 3), weight_decay=1.0)) == 3


def test_large_count_is_instant_and_limit_is_lazy():
    L, d = 3, 50
    th = thresholds(L, 1.0)
    Y = np.diag(np.linspace(3.0, 1.1, d) * th.y_star)
    problem = DeepFactorization(Y, L, weight_decay=1.0)
    t0 = time.perf_counter()
    assert count_critical_points(problem) == 3**d  # sum_k C(50, k) 2^k
    assert time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    first = critical_points(problem, limit=20)
    assert time.perf_counter() - t0 < 3.0
    assert len(first) == 20 and first[0].kind == "global_min"
    assert all(a.loss <= b.loss + 1e-9 for a, b in zip(first, first[1:]))
    with pytest.raises(InputError, match="limit"):
        critical_points(problem)


def test_kinds_at_thresholds():
    L = 3
    th = thresholds(L, 1.0)
    # y = ybar: matching it or not ties -> two global minima
    pts = critical_points(DeepFactorization(np.diag([1.5 * th.y_bar, th.y_bar]), L, weight_decay=1.0))
    assert sum(p.kind == "global_min" for p in pts) == 2
    # y = y*: one non-strict saddle (top component at t2, second at s*)
    problem = DeepFactorization(np.diag([1.5 * th.y_bar, th.y_star]), L, weight_decay=1.0)
    pts = critical_points(problem)
    assert [p.roots for p in pts if p.kind == "non_strict_saddle"] == [("t2", "s*")]
    assert no_nonstrict_saddles(problem) == (False, [pytest.approx(th.y_star)])
    # ... unless the bottleneck leaves no room for it
    assert no_nonstrict_saddles(DeepFactorization(np.diag([1.5 * th.y_bar, th.y_star]), L, widths=(2, 1, 2, 2),
                                                  weight_decay=1.0)) == (True, [])
    assert no_nonstrict_saddles(DeepFactorization(np.diag([3.0, 1.0]), 2, weight_decay=1.0)) == (True, [])


def test_iter_is_a_generator():
    problem = DeepFactorization(np.diag([3.0, 2.5, 1.9]), 3, weight_decay=1.0)
    it = iter_critical_points(problem)
    assert next(it).kind == "global_min"


# ---- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: DeepFactorization(np.eye(2), 3, weight_decay=0.0), "weight_decay"),
        (lambda: DeepFactorization(np.eye(2), 3, weight_decay=[1.0, 0.0, 1.0]), "weight_decay"),
        (lambda: DeepFactorization(np.eye(2), 3, weight_decay=1.0, balance=0.5), "balance"),
        (lambda: DeepFactorization(np.eye(2), 1, weight_decay=1.0), "depth"),
    ],
)
def test_bad_problems(make, match):
    with pytest.raises(InputError, match=match):
        critical_points(make())
    with pytest.raises(InputError, match=match):
        count_critical_points(make())


def test_bad_arguments():
    with pytest.raises(InputError, match="Y"):
        DeepFactorization(np.array([[1.0, np.nan]]), 2, weight_decay=1.0)
    with pytest.raises(InputError, match="weight_decay"):
        thresholds(3, -1.0)
    with pytest.raises(InputError, match="depth"):
        thresholds(1, 1.0)
    with pytest.raises(InputError, match="limit"):
        critical_points(DeepFactorization(np.eye(2), 2, weight_decay=1.0), limit=-1)


@pytest.mark.parametrize("y, L, wd", [(1e7, 4, 1e-6), (4.09e6, 4, 1e-6), (1.0, 3, 1e-100), (3e10, 5, 1e-3)])
def test_roots_at_extreme_scales(y, L, wd):
    """Roots are bracketed in ``u = s / lambda^(1/(2L-2))``: at these scales bracketing in ``s`` failed
    (a lost sign at the upper bracket, or ``s^4`` underflowing near ``t1``). Each root satisfies
    ``g(s) = 0`` to float64 precision relative to the size of its terms (checked in 50 digits)."""
    import mpmath

    th = thresholds(L, wd)
    roots = positive_roots(y, th)
    assert [r.label for r in roots] == ["t1", "t2"]
    with mpmath.workdps(50):
        lam, Y = mpmath.mpf(th.lam), mpmath.mpf(y)
        for r in roots:
            s = mpmath.mpf(r.sigma)
            terms = [s ** (2 * L - 2), mpmath.sqrt(lam) * Y * s ** (L - 2), lam]
            assert abs(terms[0] - terms[1] + terms[2]) <= 1e-13 * max(terms)


def test_a_point_that_is_not_critical_is_refused():
    """``numerical_kind`` used to call a non-critical point a strict saddle (||grad|| = 3.6 here)."""
    from mfdyn.landscape import classify, numerical_kind

    problem = DeepFactorization(np.diag([3.0, 2, 1]), 3, weight_decay=0.1)
    eye = np.eye(3)
    with pytest.raises(InputError, match=r"not a critical point: \|\|grad\|\| = 3.646e\+00 > 1e-06 \* 3"):
        numerical_kind(problem, [eye] * 3)
    for rtol, message in ((float("nan"), "grad_rtol must be finite"), (-1.0, "grad_rtol must be > 0")):
        with pytest.raises(InputError, match=message):
            classify(problem, [eye] * 3, grad_rtol=rtol)


def test_class_losses_have_no_cancellation():
    """A class loss of 7e-4 beside 1/2 ||Y||^2 = 5e7: summed as non-negative parts, not as
    1/2 ||Y||^2 + sum cost (1e-5 relative error). Reference: the matched singular values' roots of
    g(s) = s^(2L-2) - sqrt(lambda) y s^(L-2) + lambda and the loss, in 60 digits."""
    import mpmath

    y_values, L, wd = (1e4, 2.0), 3, 1e-6
    problem = DeepFactorization(np.diag(y_values), L, weight_decay=wd)
    with mpmath.workdps(60):
        lam = mpmath.mpf(wd) ** L
        c = lam ** (mpmath.mpf(1) / (2 * L - 2))
        for point in critical_points(problem):
            total = mpmath.mpf(0)
            for i, y in enumerate(map(mpmath.mpf, y_values)):
                if i not in point.matching:
                    total += y**2 / 2
                    continue
                coeffs = [0] * (2 * L - 1)
                coeffs[0], coeffs[L], coeffs[-1] = 1, -y / c, 1  # g(c x) / c^(2L-2) in x = s / c
                roots = sorted(mpmath.re(r) * c for r in mpmath.polyroots(coeffs, maxsteps=400, extraprec=300)
                               if abs(mpmath.im(r)) < mpmath.mpf(10) ** -30 and mpmath.re(r) > 0)
                s = roots[0] if point.roots[list(point.matching).index(i)] == "t1" else roots[-1]
                total += (s**L / mpmath.sqrt(lam) - y) ** 2 / 2 + L * s**2 / 2
            assert abs(point.loss - total) <= 1e-14 * total, (point.kind, point.roots, point.loss, total)
