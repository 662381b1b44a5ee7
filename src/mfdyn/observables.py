"""Named functions of ``(problem, params)``: the quantities recorded along trajectories.

Register your own with ``@mfdyn.observables.observable("name")``; ``record=`` in :func:`mfdyn.gd`
and :func:`mfdyn.flow` takes registered names. Every observable must be jit-compatible and return
an array of fixed shape for a given problem.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .errors import InputError
from .linalg import DENSE_LIMIT, lanczos_extreme_eigs
from .pytree import tree_norm

Observable = Callable[[Any, Any], jax.Array]
REGISTRY: dict[str, Observable] = {}


def observable(name: str) -> Callable[[Observable], Observable]:
    """Decorator: register ``fn(problem, params) -> array`` under ``name``."""

    def register(fn: Observable) -> Observable:
        REGISTRY[name] = fn
        return fn

    return register


def get(name: str) -> Observable:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown observable {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def check_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise InputError(f"record must be a name or a sequence of observable names, got {names!r}") from None
    for n in names:
        get(n)
    return names


def evaluate(problem: Any, params: Any, names: tuple[str, ...]) -> dict[str, jax.Array]:
    return {n: REGISTRY[n](problem, params) for n in names}


@observable("loss")
def loss(problem, params):
    return problem.loss(params)


@observable("grad_norm")
def grad_norm(problem, params):
    """``||grad f||`` (Frobenius over all layers; complex entries by modulus)."""
    return tree_norm(problem.grad(params))


@observable("imbalance_norm")
def imbalance_norm(problem, params):
    """Frobenius norm of the conserved quantities of gradient flow (0 if the family has none)."""
    return tree_norm(problem.imbalance(params))


def eig_method(n: int, method: str = "auto") -> str:
    """The method :func:`extreme_hessian_eigs` uses for ``n`` real coordinates (``"auto"``: closed
    form up to 2, dense up to ``DENSE_LIMIT``, Lanczos above)."""
    if method == "closed_form" and n > 2:
        raise InputError(f"method 'closed_form' is the 2x2 formula: at most 2 coordinates, got {n}")
    if method != "auto":
        return method
    return "closed_form" if n <= 2 else "dense" if n <= DENSE_LIMIT else "lanczos"


def extreme_hessian_eigs(problem, params, method: str = "auto"):
    """``(lambda_min, lambda_max)`` of the Hessian over real coordinates.

    ``method="dense"``: ``eigvalsh`` of the dense Hessian; ``"lanczos"``: Lanczos on Hessian-vector
    products; ``"closed_form"``: the 2x2 formula (at most 2 coordinates); ``"auto"``: closed form up
    to 2 coordinates, dense up to ``DENSE_LIMIT``, Lanczos above.
    """
    method = eig_method(problem.num_coordinates, method)
    if method == "closed_form":
        return _small_symmetric_eigs(problem.hessian(params))
    if method == "dense":
        eigs = jnp.linalg.eigvalsh(problem.hessian(params))
        return eigs[0], eigs[-1]
    if method == "lanczos":
        return lanczos_extreme_eigs(lambda vec: problem.hvp(params, vec), problem.num_coordinates)
    raise InputError(f"method must be 'auto', 'closed_form' (n <= 2), 'dense' or 'lanczos', got {method!r}")


def _small_symmetric_eigs(H: jax.Array):
    """Extreme eigenvalues of a symmetric 1x1 or 2x2 matrix in closed form (batched sweeps over the
    scalar family call this millions of times; LAPACK's per-matrix overhead would dominate):
    ``(a + c)/2 -+ hypot((a - c)/2, b)`` for ``[[a, b], [b, c]]``."""
    if H.shape[0] == 1:
        return H[0, 0], H[0, 0]
    a, b, c = H[0, 0], 0.5 * (H[0, 1] + H[1, 0]), H[1, 1]
    mid, radius = 0.5 * (a + c), jnp.hypot(0.5 * (a - c), b)
    return mid - radius, mid + radius


@observable("sharpness")
def sharpness(problem, params):
    """Largest Hessian eigenvalue (GD is linearly stable at a minimizer only if ``eta * sharpness < 2``)."""
    return extreme_hessian_eigs(problem, params)[1]


@observable("hessian_min_eig")
def hessian_min_eig(problem, params):
    return extreme_hessian_eigs(problem, params)[0]


@observable("product_singular_values")
def product_singular_values(problem, params):
    """Singular values of the end-to-end matrix (``ab``, ``U V^T``, ``X X^T``, ``W_L ... W_1``), descending."""
    return jnp.linalg.svd(problem.product(params), compute_uv=False)


@observable("layer_singular_values")
def layer_singular_values(problem, params):
    """Singular values of each parameter matrix, one row per leaf, NaN-padded to equal length."""
    mats = [jnp.atleast_2d(x) for x in jax.tree_util.tree_leaves(params)]
    svs = [jnp.linalg.svd(m, compute_uv=False) for m in mats]
    width = max(s.shape[0] for s in svs)
    return jnp.stack([jnp.pad(s, (0, width - s.shape[0]), constant_values=jnp.nan) for s in svs])


@observable("distance_to_target")
def distance_to_target(problem, params):
    """``||product - target||_F``."""
    return jnp.sqrt(jnp.sum(jnp.abs(problem.product(params) - problem.target_matrix()) ** 2))


@observable("params")
def flat_params(problem, params):
    """The parameters themselves, flattened to real coordinates (``problem.unflatten`` inverts)."""
    return problem.flatten(params)
