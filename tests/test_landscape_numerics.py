"""Rules vs numerics, NumPy kernels vs the core's JAX closed forms, classification of found points, search."""

import numpy as np
import pytest

from mfdyn import DeepFactorization, InputError
from mfdyn.landscape import NotInCensusError, classify, critical_points, thresholds, verify_point
from mfdyn.landscape import kernels
from mfdyn.landscape.census import CensusContext
from mfdyn.landscape.numerics import flat, numerical_kind
from mfdyn.landscape.search import random_starts, solve_gradient
from mfdyn.landscape.spectrum import spectrum
from mfdyn.landscape import target_with_singular_values


@pytest.mark.parametrize("shape,L,widths", [
    ((3, 2), 3, (2, 4, 1, 3)),
    pytest.param((2, 3), 4, (3, 2, 3, 1, 2), marks=pytest.mark.slow),  # JAX compile of a second shape: ~10 s
])
def test_kernels_match_core_closed_forms(shape, L, widths):
    rng = np.random.default_rng(0)
    Y, wd = rng.standard_normal(shape), rng.uniform(0.5, 2.0, L)
    problem = DeepFactorization(Y, L, widths=widths, weight_decay=wd)
    params = problem.init(3)
    x = np.asarray(problem.flatten(params))
    loss, grad = kernels.loss_grad(x, Y, problem.widths, wd)
    assert loss == pytest.approx(float(problem.loss(params)), rel=1e-13)
    np.testing.assert_allclose(grad, np.asarray(problem.flatten(problem.grad(params))), atol=1e-12)
    np.testing.assert_allclose(kernels.hessian(x, Y, problem.widths, wd), np.asarray(problem.hessian(params)), atol=1e-11)
    batch = np.stack([x, 0.5 * x])  # batched == unbatched
    np.testing.assert_allclose(kernels.hessian(batch, Y, problem.widths, wd)[1],
                               kernels.hessian(0.5 * x, Y, problem.widths, wd), atol=1e-14)


def random_instances():
    rng = np.random.default_rng(7)
    out = []
    for i in range(9):
        L = (2, 3, 4)[i % 3]
        wd = rng.uniform(0.6, 1.4, L)
        th = thresholds(L, wd)
        ys = np.sort(rng.uniform(0.6, 2.2, 3))[::-1] * th.y_star
        shape, widths = [((3, 3), None), ((2, 3), None), ((3, 3), (3, 2) + (3,) * (L - 1))][i // 3]
        ys = ys[: min(shape)]
        if i == 4:
            ys[1] = ys[0]
        out.append(DeepFactorization(target_with_singular_values(ys, shape, i), L, widths=widths, weight_decay=wd))
    for L in (3, 4):  # thresholds: y = y*, y = ybar
        th = thresholds(L, 1.0)
        out.append(DeepFactorization(np.diag([1.6 * th.y_bar, th.y_star, th.y_bar]), L, weight_decay=1.0))
    th = thresholds(2, 1.0)
    out.append(DeepFactorization(np.diag([2.0, th.y_star]), 2, weight_decay=1.0))  # L = 2 degenerate minimizer
    return out


@pytest.mark.parametrize("index", range(12))
def test_rules_agree_with_numerics(index):
    problem = random_instances()[index]
    points = critical_points(problem, verify=True)  # raises RuleMismatchError on any disagreement
    assert points and points[0].kind == "global_min"


def test_numerics_detect_each_kind():
    L = 3
    th = thresholds(L, 1.0)
    problem = DeepFactorization(np.diag([3.0, th.y_star]), L, weight_decay=1.0)
    census = CensusContext.of(problem)
    seen = {}
    for p in critical_points(problem):
        seen[p.kind] = verify_point(problem, p, census=census)
    assert set(seen) == {"global_min", "local_min", "strict_saddle", "non_strict_saddle"}
    assert seen["strict_saddle"].min_eig < -1e-3
    nss = seen["non_strict_saddle"]
    assert nss.min_eig > -1e-9 and nss.degenerate_dim >= 1 and nss.descent > 1e-9
    # a wrong rule would be caught: the non-strict saddle is not a local minimum numerically
    p = next(q for q in critical_points(problem) if q.kind == "non_strict_saddle")
    assert numerical_kind(problem, p.params).kind == "non_strict_saddle"


def random_symmetry(problem, params, seed):
    """Apply a random hidden gauge O_l (orthogonal) to a critical point: still critical, same class."""
    rng = np.random.default_rng(seed)
    Ws = [np.asarray(W) for W in params]
    out = list(Ws)
    for l in range(len(Ws) - 1):
        Q, _ = np.linalg.qr(rng.standard_normal((Ws[l].shape[0],) * 2))
        out[l] = Q @ out[l]
        out[l + 1] = out[l + 1] @ Q.T
    return tuple(out)


def test_classify_maps_transformed_representatives_to_their_class():
    problem = DeepFactorization(target_with_singular_values([3.0, 3.0, 1.9], (3, 4), 1), 3, weight_decay=[0.9, 1.0, 1.1])
    for i, p in enumerate(critical_points(problem)):
        found = classify(problem, random_symmetry(problem, p.params, i))
        assert found.key == p.key and found.kind == p.kind
        assert found.loss == pytest.approx(p.loss, rel=1e-12)


def test_classify_rejects_non_critical_points():
    problem = DeepFactorization(np.diag([3.0, 2.0]), 3, weight_decay=1.0)
    with pytest.raises(InputError, match="not a critical point"):
        classify(problem, problem.init(0))


def test_classify_rejects_critical_looking_points_off_the_census():
    problem = DeepFactorization(np.diag([3.0, 2.0]), 3, weight_decay=1.0)
    spec = spectrum(problem)
    from mfdyn.landscape.classify import class_key
    from mfdyn.landscape.representatives import layers

    with pytest.raises(NotInCensusError):
        class_key(spec, layers(spec, (0,), np.array([1.0])))  # s = 1 is no root for y = 3


def test_random_start_search_finds_only_census_classes():
    problem = DeepFactorization(target_with_singular_values([3.0, 2.2], (2, 3), 4), 3, weight_decay=[1.2, 0.9, 1.0])
    spec = spectrum(problem)
    from mfdyn.landscape.classify import class_key

    res = solve_gradient(spec, random_starts(spec, 300, seed=0))
    assert res.converged.mean() > 0.9
    found = {class_key(spec, kernels.split(x, spec.widths)) for x in res.points[res.converged]}
    census = {p.key for p in critical_points(problem)}
    assert found == census
    for x in res.points[res.converged][:5]:
        assert np.linalg.norm(kernels.loss_grad(x, spec.Y, spec.widths, spec.weight_decay)[1]) <= 1e-11 * spec.scale


def test_hessian_eigs_on_request():
    problem = DeepFactorization(np.diag([3.0, 2.0]), 2, weight_decay=1.0)
    pts = critical_points(problem, hessian_eigs=True)
    for p in pts:
        ref = np.linalg.eigvalsh(np.asarray(problem.hessian(tuple(np.asarray(W) for W in p.params))))
        np.testing.assert_allclose(p.hessian_eigs, ref, atol=1e-11)
        assert (p.hessian_eigs[0] < -1e-9) == (p.kind == "strict_saddle")
    assert flat(pts[0].params).size == problem.num_coordinates
