"""Certificate formulas as strings: parsed by sympy, compiled to JAX.

A formula is an expression in ``delta``, the coordinate names of the problem (``a, b`` for the scalar
loss; ``u1 .. um, v1 .. vn`` for rank-1 matrices; ``z1 .. zn`` otherwise) and optional named constants
(e.g. ``eta``, ``y``). ``^`` means power. Every identifier is checked against that list and a small set
of functions *before* sympy sees the string (sympy's parser evaluates Python), so an unknown name or a
syntax error is an ``InputError`` naming it.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from typing import Any, Callable, Sequence

import sympy
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

from .. import _validate as v
from ..errors import InputError
from ..problems import MatrixFactorization, ScalarFactorization

FUNCTIONS = {
    "Abs": sympy.Abs, "abs": sympy.Abs, "sqrt": sympy.sqrt, "exp": sympy.exp, "log": sympy.log,
    "sin": sympy.sin, "cos": sympy.cos, "tanh": sympy.tanh, "Max": sympy.Max, "Min": sympy.Min,
    "max": sympy.Max, "min": sympy.Min, "pi": sympy.pi, "E": sympy.E,
}
STATE_SYMBOL = "delta"


def coordinate_names(problem: Any) -> tuple[str, ...]:
    """Names of the flat coordinates in flattening order."""
    v.problem(problem)
    if isinstance(problem, ScalarFactorization):
        return ("a", "b")
    if isinstance(problem, MatrixFactorization) and problem.rank == 1:
        m, n = problem.X.shape
        return tuple(f"u{i + 1}" for i in range(m)) + tuple(f"v{j + 1}" for j in range(n))
    return tuple(f"z{i + 1}" for i in range(problem.num_coordinates))


def _identifiers(text: str) -> list[str]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise InputError(f"formula has a syntax error: {text!r} ({exc})") from None
    names = []
    for tok in tokens:
        if tok.type == tokenize.NAME:
            names.append(tok.string)
        elif tok.type == tokenize.OP and tok.string not in set("+-*/^()., ") | {"**"}:
            raise InputError(f"formula has an unsupported operator {tok.string!r}: {text!r}")
        elif tok.type == tokenize.STRING:
            raise InputError(f"formula must not contain strings: {text!r}")
        elif tok.type == tokenize.ERRORTOKEN and tok.string.strip():
            raise InputError(f"formula has an unsupported character {tok.string!r}: {text!r}")
    return names


def parse(text: str, variables: Sequence[str], constants: Sequence[str] = ()) -> sympy.Expr:
    """Parse ``text`` into a sympy expression over ``delta``, ``variables`` and ``constants``."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"formula must be a non-empty string, got {text!r}")
    allowed = {STATE_SYMBOL, *variables, *constants}
    for name in _identifiers(text):
        if keyword.iskeyword(name) or name.startswith("_"):
            raise InputError(f"formula uses the reserved word {name!r}: {text!r}")
        if name not in allowed and name not in FUNCTIONS:
            raise InputError(
                f"formula uses unknown symbol {name!r}; allowed: {', '.join(sorted(allowed))} and functions "
                f"{', '.join(sorted(k for k in FUNCTIONS if k[0].islower()))}"
            )
    symbols = {name: sympy.Symbol(name, real=True) for name in allowed}
    try:
        expr = parse_expr(text, local_dict={**FUNCTIONS, **symbols}, global_dict={"Integer": sympy.Integer,
                          "Float": sympy.Float, "Rational": sympy.Rational, "Symbol": sympy.Symbol},
                          transformations=standard_transformations + (convert_xor,))
    except (SyntaxError, TypeError, tokenize.TokenError, sympy.SympifyError) as exc:
        raise InputError(f"formula has a syntax error: {text!r} ({type(exc).__name__})") from None
    if not isinstance(expr, sympy.Expr):
        raise InputError(f"formula must be a scalar expression, got {text!r}")
    if expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise InputError(f"formula is not finite: {text!r} simplifies to {expr}")
    return expr


def compile_formula(expr: sympy.Expr, variables: Sequence[str], constants: Sequence[str]) -> Callable:
    """``fn(delta, z, constants_vector)`` evaluating ``expr`` with JAX (``z`` in flattening order)."""
    args = [sympy.Symbol(STATE_SYMBOL, real=True)] + [sympy.Symbol(n, real=True) for n in (*variables, *constants)]
    numeric = sympy.lambdify(args, expr, modules="jax")
    n = len(variables)

    def fn(delta, z, consts):
        return numeric(delta, *[z[i] for i in range(n)], *[consts[j] for j in range(len(constants))]) + 0.0 * delta

    return fn
