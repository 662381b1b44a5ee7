"""mfdyn.certificates: formulas, states, verification, certified regions and search."""

from __future__ import annotations

import json

import re

import numpy as np
import pytest

import mfdyn
from mfdyn import InputError, MatrixFactorization, ScalarFactorization, rank1
from mfdyn import certificates as cz
from mfdyn.cli import main

RNG = np.random.default_rng(7)


def test_formula_evaluates_like_python_and_names_unknown_symbols():
    cert = cz.Certificate.from_formula("Abs(a^2 - b^2) + k*a*b - delta", constants={"k": 0.5})
    zs = RNG.normal(size=(20, 2))
    deltas = RNG.uniform(0, 3, size=20)
    ref = np.abs(zs[:, 0] ** 2 - zs[:, 1] ** 2) + 0.5 * zs[:, 0] * zs[:, 1] - deltas
    np.testing.assert_allclose(cert(deltas, zs), ref, rtol=1e-14, atol=1e-14)
    with pytest.raises(InputError, match="unknown symbol 'c'"):
        cz.Certificate.from_formula("a^2 - c*delta")
    with pytest.raises(InputError, match="syntax error"):
        cz.Certificate.from_formula("a^2 - (delta")
    with pytest.raises(InputError, match="strings"):
        cz.Certificate.from_formula("__import__('os')")
    with pytest.raises(InputError, match="reserved word '__class__'"):
        cz.Certificate.from_formula("a.__class__ - delta")
    with pytest.raises(InputError, match="non-empty"):
        cz.Certificate.from_formula("  ")
    with pytest.raises(InputError, match=re.escape("formula is not finite: 'a/0 - delta' simplifies to zoo*a - delta")):
        cz.Certificate.from_formula("a/0 - delta")
    names = cz.coordinate_names(MatrixFactorization(np.eye(2), 1))
    assert names == ("u1", "u2", "v1", "v2")
    cz.Certificate.from_formula("u1*v2 - u2*v1 - delta", names)


def test_state_matches_closed_form_and_bracket_edges():
    cert = cz.imbalance_certificate(ScalarFactorization(1.0))
    zs = RNG.uniform(-2, 2, size=(50, 2))
    np.testing.assert_allclose(cert.state(zs), np.abs(zs[:, 0] ** 2 - zs[:, 1] ** 2), atol=1e-12)
    callable_cert = cz.Certificate(lambda d, z: z[0] ** 2 + z[1] ** 2 - d, bracket=(1.0, 5.0))
    states = callable_cert.state(np.array([[0.5, 0.5], [1.0, 1.0], [3.0, 0.0]]))
    assert states[0] == 1.0 and states[1] == pytest.approx(2.0, abs=1e-12) and np.isinf(states[2])
    with pytest.raises(InputError, match="bracket"):
        cz.Certificate(lambda d, z: d, bracket=(1.0, 1.0))


def test_inward_values_equal_the_exact_imbalance_identity():
    """For I = |a^2 - b^2| - delta, I(delta(z); G z) = (|1 - eta^2 psi^2| - 1) |d| exactly (MATH.md §1)."""
    from mfdyn.certificates.verify import _inward

    problem, eta = ScalarFactorization(1.0, 0.2), 0.7
    cert = cz.imbalance_certificate(problem)
    zs = RNG.uniform(0.1, 2.0, size=(64, 2))
    d, inward, _ = (np.asarray(x) for x in _inward(cert.kernel, problem, zs, np.float64(eta)))
    r = zs[:, 0] * zs[:, 1] - 1.0
    psi = r + 0.8 * r**3
    imb = np.abs(zs[:, 0] ** 2 - zs[:, 1] ** 2)
    np.testing.assert_allclose(d, imb, atol=1e-12)
    np.testing.assert_allclose(inward, (np.abs(1 - eta**2 * psi**2) - 1) * imb, atol=1e-11)


def test_verify_admissible_on_contraction_region_and_finds_violations_elsewhere():
    problem, eta = ScalarFactorization(1.0), 0.6
    cert = cz.imbalance_certificate(problem)
    box = [(0.1, 2.5), (0.1, 2.5)]
    good = cert.verify(problem, eta, cz.contraction_region(problem, eta, box), samples=512, local_starts=2)
    assert good.admissible and good.inward_fraction_violated == 0.0 and good.on_level_sets > 0
    bad = cert.verify(problem, eta, cz.Region.box(box), samples=512, local_starts=2)
    assert not bad.admissible and bad.inward_fraction_violated > 0
    z = np.array(bad.inward_worst_point)  # the reported worst point is a genuine violation
    d = z[0] ** 2 - z[1] ** 2
    psi = z[0] * z[1] - 1.0
    assert (abs(1 - eta**2 * psi**2) - 1) * abs(d) == pytest.approx(bad.inward_worst, rel=1e-9)
    assert bad.inward_worst >= np.max(bad.inward_worst)  # local maximization never lowers the worst value


def test_verify_detects_non_nested_family():
    problem = ScalarFactorization(1.0)
    cert = cz.Certificate.from_formula("delta - a^2 - b^2", bracket=(0.0, 10.0))
    report = cert.verify(problem, 0.5, cz.Region.box([(0.1, 2), (0.1, 2)]), samples=128, local_starts=1)
    assert report.nested_worst > 0 and not report.admissible


def test_verify_bad_input():
    problem = ScalarFactorization(1.0)
    cert = cz.imbalance_certificate(problem)
    with pytest.raises(InputError, match="coordinates"):
        cert.verify(problem, 0.5, cz.Region.box([(0, 1)] * 3))
    with pytest.raises(InputError, match="region"):
        cz.Region.parse("0:1;2")


def test_certified_region_matches_closed_form_and_basin_from_sweep():
    problem, eta = ScalarFactorization(1.0), 0.6
    cert = cz.imbalance_certificate(problem)
    grid = np.linspace(0.1, 2.0, 6)
    region = cz.contraction_region(problem, eta, [(0.1, 2.0)] * 2)
    cr = cert.certified_region(problem, eta, {"a": grid, "b": grid}, region=region)
    A, B = np.meshgrid(grid, grid, indexing="ij")
    expected = (np.abs(A**2 - B**2) < rank1.stable_imbalance(problem, eta)) & (eta * np.abs(A * B - 1) <= np.sqrt(2))
    np.testing.assert_array_equal(cr.grid(cr.certified), expected)
    basin = cz.empirical_basin(problem, eta, grid, grid, 2000)
    for i, j in [(0, 0), (2, 3), (5, 5), (1, 4)]:  # independent check with mfdyn.gd
        traj = mfdyn.gd(problem, (grid[i], grid[j]), eta, 2000, record=("loss",), every=2000)
        assert basin[i, j] == (traj.diverged_at is None and traj["loss"][-1] <= 1e-12)
    result = cr.against(basin)
    assert result["sound"] and result["soundness"] == 1.0 and 0 < result["coverage"] <= 1.0
    with pytest.raises(InputError, match="basin"):
        cr.against(np.ones(3, bool))


def test_search_improves_the_objective_and_reports_verification():
    from mfdyn.certificates.search import objective

    problem, eta = ScalarFactorization(1.0), 0.6
    template = cz.default_template(problem)
    region = cz.contraction_region(problem, eta, [(0.2, 2.0)] * 2)
    options = dict(local_starts=1, steps=10, trajectories_checked=16)
    start = np.array([0.9, 0.3, 0.2, 0.1])
    res = cz.search(problem, eta, template, region, initial=start, samples=128, maxiter=60, verify_samples=256,
                    verify_options=options, rounds=1, seed=3)
    zs = region.sample(128, np.random.default_rng(3))
    kernel0 = template.family().with_coefficients(start / np.linalg.norm(start)).kernel
    assert res.objective <= objective(kernel0, problem, zs, np.float64(eta))
    assert res.objective == pytest.approx(objective(res.certificate.kernel, problem, zs, np.float64(eta)), abs=1e-12)
    again = res.certificate.verify(problem, eta, region, samples=256, seed=4, **options)
    assert again == res.report
    # the exact imbalance (coefficients (1, 0, 0, 0)) is admissible on this region and scores no violation
    exact = template.certificate([1.0, 0.0, 0.0, 0.0])
    assert exact.verify(problem, eta, region, samples=256, **options).admissible
    assert objective(exact.kernel, problem, zs, np.float64(eta)) <= 0.0
    branch = cz.search_branch(lambda sigma: MatrixFactorization(np.diag([1.0, sigma]), 1), 0.8,
                              cz.default_template(MatrixFactorization(np.eye(2), 1)),
                              cz.Region.box([(0.7, 1.3), (-0.1, 0.1), (0.7, 1.3), (-0.1, 0.1)]),
                              values=[0.3, 0.4, 0.6], initial=[1.0, 1.0, 0.0], samples=64, maxiter=20,
                              verify_samples=64, verify_options=dict(local_starts=1, steps=5, trajectories_checked=8),
                              rounds=1)
    c = branch.coefficients
    assert c.shape == (3, 3) and np.allclose(np.linalg.norm(c, axis=1), 1.0)
    np.testing.assert_allclose(branch.first_differences, np.linalg.norm(np.diff(c, axis=0), axis=1) / [0.1, 0.2])
    slopes = np.diff(c, axis=0) / np.array([[0.1], [0.2]])
    np.testing.assert_allclose(branch.second_differences, np.linalg.norm(slopes[1] - slopes[0]) / 0.15)


def test_cli_rank1_and_certificate(capsys):
    assert main(["rank1", "critical-step", "--target", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["critical_step"] == pytest.approx(0.5, rel=1e-9)
    assert main(["rank1", "two-cycle", "--eta", "1.1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(data["products"], rank1.closed_form_products(1.0, 1.1), atol=1e-14)
    assert data["window"] == pytest.approx([1.0, np.sqrt(5) - 1])
    assert main(["rank1", "two-cycle", "--eta", "0.9"]) == 2
    assert "exists only above the critical step size" in capsys.readouterr().err
    assert main(["rank1", "two-cycle", "--eta", "1.1", "--sigma", "0.5", "--quartic", "0.1"]) == 2
    assert main(["rank1", "orbits", "--eta", "1.1", "--period", "2", "--seeds", "16", "--json"]) == 0
    orbits = json.loads(capsys.readouterr().out)["orbits"]
    assert orbits and all(len(o["points"]) == 2 for o in orbits)
    args = ["certificate", "verify", "--eta", "0.6", "--region", "0.5:1.5,0.5:1.5", "--samples", "128", "--json"]
    assert main(args + ["--formula", "Abs(a^2 - b^2) - delta"]) == 0
    assert json.loads(capsys.readouterr().out)["admissible"] is True
    assert main(args + ["--formula", "a^2 - zz - delta"]) == 2
    assert "unknown symbol 'zz'" in capsys.readouterr().err


def test_state_bisection_resolves_any_bracket_and_checks_the_points():
    """The bisection runs until the interval is two adjacent floats: a bracket of width 1e300 gives
    the state to full precision (80 fixed halvings left an error of 1e275). A point must have one
    coordinate per variable."""
    wide = cz.Certificate.from_formula("Abs(a^2 - b^2) - delta", bracket=(0.0, 1e300))
    np.testing.assert_allclose(wide.state([2.0, 1.0]), 3.0, rtol=1e-15)
    np.testing.assert_allclose(wide.state([[2.0, 1.0], [0.5, 3.0]]), [3.0, 8.75], rtol=1e-15)
    cert = cz.Certificate.from_formula("Abs(a^2 - b^2) - delta")
    for z, message in (([2.0], "z must have 2 coordinates (a, b) per point, got shape (1,)"),
                       ([2.0, 1.0, 5.0], "z must have 2 coordinates (a, b) per point, got shape (3,)"),
                       ([np.nan, 1.0], "z must be finite")):
        with pytest.raises(InputError, match=re.escape(message)):
            cert.state(z)
    with pytest.raises(InputError, match=re.escape("the certificate has 2 variables (a, b) but the problem has 4")):
        cz.verify(cert, MatrixFactorization(np.diag([1.0, 0.5]), 1), 0.5, cz.Region.box([(-1, 1)] * 4), samples=64)
