"""Error-free transformations (mfdyn._exact_arithmetic) against exact rational arithmetic."""

from fractions import Fraction

import numpy as np

from mfdyn._exact_arithmetic import product_minus_one, split, two_product


def test_two_product_is_exact_on_random_factors():
    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, 400) * 2.0 ** rng.integers(-480, 480, 400)
    b = rng.uniform(-1, 1, 400) * 2.0 ** rng.integers(-20, 20, 400)
    for x, y in zip(a.tolist(), b.tolist()):
        p, e = two_product(x, y)
        assert p == x * y
        assert Fraction(p) + Fraction(e) == Fraction(x) * Fraction(y)
        hi, lo = split(x)
        assert Fraction(hi) + Fraction(lo) == Fraction(x)


def test_product_minus_one_is_rounded_once_near_one():
    """Near ``a b = 1`` (where ``fl(a b) - 1`` has no correct digit) against the exact difference."""
    for y in [0.7, 0.3, 3.0, 0.9, 1.3, 1.0, 1.0 / 3.0]:
        eta = 1.0 / y
        for k in range(-4, 5):
            x = eta
            for _ in range(abs(k)):
                x = float(np.nextafter(x, np.inf if k > 0 else -np.inf))
            exact = Fraction(x) * Fraction(y) - 1
            assert product_minus_one(x, y) == float(exact)  # (exact difference, one rounding)


def test_two_product_outside_its_range_returns_no_error_term():
    assert two_product(1e300, 1e10) == (float("inf"), 0.0)
    assert two_product(2.0 ** -600, 3.0) == (3.0 * 2.0 ** -600, 0.0)
    assert two_product(0.0, 5.0) == (0.0, 0.0)
