"""Every bad input of the core raises mfdyn.InputError naming the argument and the value."""

import re

import jax
import numpy as np
import pytest

import mfdyn
from mfdyn import InputError

GOOD_SCALAR = mfdyn.ScalarFactorization()

CASES = [
    ("target nan", lambda: mfdyn.ScalarFactorization(target=float("nan")), "target"),
    ("quartic negative", lambda: mfdyn.ScalarFactorization(quartic=-1), "quartic"),
    ("X inf", lambda: mfdyn.MatrixFactorization([[1.0, np.inf]], 1), "X"),
    ("X wrong ndim", lambda: mfdyn.MatrixFactorization([1.0, 2.0], 1), "X"),
    ("rank zero", lambda: mfdyn.MatrixFactorization(np.eye(2), 0), "rank"),
    ("rank negative", lambda: mfdyn.SymmetricFactorization(np.eye(2), -1), "rank"),
    ("M non-symmetric", lambda: mfdyn.SymmetricFactorization([[1.0, 2.0], [0.0, 1.0]], 1), "symmetric"),
    ("M not square", lambda: mfdyn.SymmetricFactorization(np.ones((2, 3)), 1), "square"),
    ("depth zero", lambda: mfdyn.DeepFactorization(np.eye(2), 0), "depth"),
    ("widths length", lambda: mfdyn.DeepFactorization(np.eye(2), 2, widths=(2, 2)), "widths"),
    ("widths mismatch Y", lambda: mfdyn.DeepFactorization(np.eye(2), 2, widths=(3, 2, 2)), "widths"),
    ("weight decay negative", lambda: mfdyn.DeepFactorization(np.eye(2), 2, weight_decay=-0.1), "weight_decay"),
    ("weight decay per layer", lambda: mfdyn.DeepFactorization(np.eye(2), 2, weight_decay=[0.1, -1]), "weight_decay"),
    ("weight decay length", lambda: mfdyn.DeepFactorization(np.eye(2), 2, weight_decay=[0.1, 0.1, 0.1]), "weight_decay"),
    ("complex Y real field", lambda: mfdyn.DeepFactorization(np.eye(2) * 1j, 2), "Y"),
    ("Y nan", lambda: mfdyn.DeepFactorization(np.full((2, 2), np.nan), 2), "Y"),
    ("unknown field", lambda: mfdyn.DeepFactorization(np.eye(2), 2, field="quaternion"), "field"),
    ("unknown init kind", lambda: GOOD_SCALAR.init(0, kind="balanced"), "kind"),
    ("negative seed", lambda: GOOD_SCALAR.init(-1), "seed"),
    ("scale zero", lambda: GOOD_SCALAR.init(0, scale=0.0), "scale"),
    ("eta zero", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.0, 10), "eta"),
    ("eta negative", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), -0.1, 10), "eta"),
    ("eta nan", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), float("nan"), 10), "eta"),
    ("eta inf", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), float("inf"), 10), "eta"),
    ("steps negative", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.1, -5), "steps"),
    ("steps fractional", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.1, 2.5), "steps"),
    ("params0 nan", lambda: mfdyn.gd(GOOD_SCALAR, (np.float64(np.nan), 1.0), 0.1, 10), "params0[0] must be finite, got nan"),
    ("params0 0-d inf", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, np.array(np.inf)), 0.1, 10), "params0[1] must be finite, got inf"),
    ("params non-finite", lambda: mfdyn.gd(GOOD_SCALAR, (np.nan, 1.0), 0.1, 5), "params0"),
    ("params wrong shape", lambda: mfdyn.gd(mfdyn.MatrixFactorization(np.eye(2), 1), (np.ones((2, 2)), np.ones((2, 1))), 0.1, 5), "shape"),
    ("params wrong count", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0, 1.0), 0.1, 5), "params0"),
    ("complex params real problem", lambda: mfdyn.gd(GOOD_SCALAR, (1j, 1.0), 0.1, 5), "params0"),
    ("unknown observable", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.1, 5, record=("loss", "nope")), "nope"),
    ("flow negative t1", lambda: mfdyn.flow(GOOD_SCALAR, (1.0, 1.0), -1.0), "t1"),
    ("flow unsorted times", lambda: mfdyn.flow(GOOD_SCALAR, (1.0, 1.0), 1.0, times=[0.5, 0.1]), "times"),
    ("flow unknown solver", lambda: mfdyn.flow(GOOD_SCALAR, (1.0, 1.0), 1.0, solver="euler"), "solver"),
    ("momentum negative", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.1, 5, momentum=-0.5), "momentum"),
    ("unflatten wrong size", lambda: GOOD_SCALAR.unflatten(np.zeros(3)), "vector"),
    ("gd of no problem", lambda: mfdyn.gd(None, (1.0, 1.0), 0.1, 5), "problem must be an mfdyn problem, got NoneType"),
    ("flow of no problem", lambda: mfdyn.flow(3, (1.0, 1.0), 1.0), "problem must be an mfdyn problem, got int"),
    ("record None", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.1, 5, record=None), "record must be"),
    ("X empty", lambda: mfdyn.MatrixFactorization(np.zeros((0, 2)), 1), "X must not be empty, got shape (0, 2)"),
    ("M empty", lambda: mfdyn.SymmetricFactorization(np.zeros((0, 0)), 1), "M must not be empty"),
    ("Y empty", lambda: mfdyn.DeepFactorization(np.zeros((0, 2)), 2), "Y must not be empty"),
    ("X ragged", lambda: mfdyn.MatrixFactorization([[1.0, 0.0], [0.0]], 1),
     "X must be a numeric array with rows of equal length, got [[1.0, 0.0], [0.0]]"),
    ("weight decay strings", lambda: mfdyn.DeepFactorization(np.eye(2), 2, weight_decay=["a", "b"]),
     "weight_decay must be numeric"),
    ("steps beyond int64", lambda: mfdyn.gd(GOOD_SCALAR, (1.0, 1.0), 0.1, 2**63), "steps must be below 2**63"),
    ("seed beyond int64", lambda: GOOD_SCALAR.init(2**64), "seed must be below 2**63"),
    ("equilibria of another family", lambda: mfdyn.symmetric.equilibria(GOOD_SCALAR),
     "problem must be a SymmetricFactorization, got ScalarFactorization"),
]


@pytest.mark.parametrize("label,call,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_input_error_naming_the_argument(label, call, needle):
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_rank_above_min_dimension_is_allowed():
    problem = mfdyn.MatrixFactorization(np.eye(2), rank=5)
    assert problem.init(0)[0].shape == (2, 5)


def test_analysis_functions_name_a_missing_problem_and_bad_constants():
    from mfdyn import certificates as cz
    from mfdyn import landscape, rank1

    cert = cz.Certificate.from_formula("Abs(a^2 - b^2) - delta")
    calls = [
        (lambda: cz.verify(cert, None, 0.5, cz.Region.box([(-1, 1)] * 2)), "problem must be an mfdyn problem, got NoneType"),
        (lambda: cz.coordinate_names(None), "problem must be an mfdyn problem, got NoneType"),
        (lambda: rank1.periodic_orbits(None, 1.1, 2), "problem must be an mfdyn problem, got NoneType"),
        (lambda: landscape.thresholds(3, "a"), "weight_decay must be numeric, got 'a'"),
        (lambda: landscape.thresholds(3, 0.1 + 1j), "weight_decay must be real"),
        (lambda: landscape.positive_roots(float("nan"), landscape.thresholds(3, 0.1)), "y must be finite, got nan"),
        (lambda: mfdyn.deep.plateau_time([1.0, 2.0], [0.1, 0.1, 0.1], 0.5), "s, u0 and uf must broadcast together"),
        (lambda: mfdyn.deep.stages(None), "traj must be an mfdyn Trajectory, got NoneType"),
        (lambda: mfdyn.deep.relative_imbalance(None), "traj must be an mfdyn Trajectory, got NoneType"),
        (lambda: cz.Certificate.from_formula("a - delta", variables=("a", "a")), "variables must be distinct names"),
        (lambda: mfdyn.deep.conditioned_family([2]), "d must be an integer, got [2]"),
        (lambda: rank1.floquet_multipliers(mfdyn.ScalarFactorization(1.0), [np.nan, 1.0], 1.0, 1), "z must be finite"),
        (lambda: rank1.floquet_multipliers(mfdyn.ScalarFactorization(1.0), [1.0, 1.0, 1.0], 1.0, 1),
         "z must have the problem's 2 flat coordinates, got 3"),
    ]
    for call, message in calls:
        with pytest.raises(InputError) as info:
            call()
        assert message in str(info.value)
    assert mfdyn.deep.conditioned_family(3) is mfdyn.deep.conditioned_family(3, "real")  # (one kernel per family)


def test_analysis_parameters_are_checked():
    from mfdyn import rank1, symmetric

    series = np.linspace(1.0, 3.0, 20)
    for tail, message in ((0.0, "tail must be > 0"), (5.0, "tail must be a fraction in (0, 1], got 5.0"),
                          (float("nan"), "tail must be finite")):
        with pytest.raises(InputError, match=re.escape(message)):
            rank1.edge_of_stability(series, 1.0, tail=tail)
    assert rank1.edge_of_stability(series, 1.0, tail=1.0).tail_min == 1.0
    with pytest.raises(InputError, match="max_classes must be an integer, got 'a'"):
        symmetric.equilibria(mfdyn.SymmetricFactorization(np.eye(2), 1), max_classes="a")


def test_low_level_analysis_functions_check_their_arguments():
    """The building blocks that the analyses call are public too: each names its bad argument in one
    line (they used to raise AttributeError, IndexError, LinAlgError or KeyError), and accepts the
    plain Python lists a user types."""
    from mfdyn import landscape, rank1, symmetric

    pair = mfdyn.MatrixFactorization(np.diag([1.0, 0.5]), 1)
    sym = mfdyn.SymmetricFactorization(np.diag([2.0, 1.0, -0.5]), 2)
    t = np.arange(1.0, 20.0)
    calls = [
        (lambda: rank1.gd_map(pair, np.ones(3), 0.1), "z must have the problem's 4 flat coordinates, got 3"),
        (lambda: rank1.gd_map(pair, [1.0, np.nan, 0.0, 0.0], 0.1), "z must be finite"),
        (lambda: rank1.gd_map(pair, np.ones(4), "x"), "eta must be a real number, got 'x'"),
        (lambda: rank1.iterate(pair, np.ones(4), 0.1, -1), "k must be >= 0, got -1"),
        (lambda: rank1.iterate(None, np.ones(4), 0.1, 2), "problem must be an mfdyn problem, got NoneType"),
        (lambda: rank1.closed_form_products(1.0, "a"), "eta must be a real number, got 'a'"),
        (lambda: rank1.closed_form_products(np.inf, 2.0), "y must be finite, got inf"),
        (lambda: symmetric.class_of(sym, np.ones(3)), "X must have 2 dimension(s), got shape (3,)"),
        (lambda: symmetric.class_of(sym, [[1.0, 2.0], [3.0, 4.0]]), "X must have shape (3, 2), got (2, 2)"),
        (lambda: symmetric.jacobian_spectrum([1.0, 2.0], (0, 5), 2), "support must hold distinct indices below 2"),
        (lambda: symmetric.jacobian_spectrum([1.0, 2.0], (0, 1), 1), "support may hold at most rank = 1 indices, got 2"),
        (lambda: symmetric.jacobian_spectrum("x", (0,), 1), "eigenvalues must be numeric, got 'x'"),
        (lambda: symmetric.cascade_derivative_scale(sym, np.ones(3)), "X must be one point of shape (n, r) = (3, 2)"),
        (lambda: symmetric.cascade_derivative_scale(sym, "x"), "X must be numeric, got 'x'"),
        (lambda: symmetric.power_fit("g", t[:3], t, 1, 1.0, 2.0), "series 'g' must be 1-D with one value per time (3)"),
        (lambda: symmetric.power_fit("g", t, 1 / t, 1, 1.0, 0.0), "tail_decades must be > 0, got 0.0"),
        (lambda: symmetric.exponential_fit("g", t, np.exp(-t), 1.0, 2.0), "floor must be in (0, 1), got 2.0"),
        (lambda: symmetric.exponential_fit("g", t[::-1], np.exp(-t), 1.0, 1e-8), "times must be strictly increasing"),
        (lambda: symmetric.fit_rates(sym, t, [1, 2]), "series must be a dict with the series S_2, residual_2"),
        (lambda: symmetric.fit_rates(sym, t, {}, tail_decades=-1), "tail_decades must be > 0, got -1"),
        (lambda: landscape.target_with_singular_values([1.0], (2, 2), seed=-1), "seed must be >= 0, got -1"),
        (lambda: landscape.target_with_singular_values([1.0], (3,)), "shape must be a pair (rows, columns), got [3]"),
        (lambda: landscape.target_with_singular_values([np.nan], (2, 2)), "values must be finite, got [nan]"),
        (lambda: landscape.target_with_singular_values([-1.0], (2, 2)), "values are singular values and must be >= 0"),
    ]
    for call, message in calls:
        with pytest.raises(InputError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)
    # lists are what a user types; traced arguments (inside jit) pass unchecked
    z = np.array([1.0, 0.2, 0.7, 0.1])
    np.testing.assert_array_equal(rank1.gd_map(pair, z.tolist(), 0.1), rank1.gd_map(pair, z, 0.1))
    np.testing.assert_array_equal(jax.jit(lambda z, eta: rank1.iterate(pair, z, eta, 3))(z, 0.1),
                                  rank1.iterate(pair, z.tolist(), 0.1, 3))
    assert symmetric.class_of(sym, np.eye(3, 2) * np.sqrt([2.0, 1.0])) == (1, 1)
