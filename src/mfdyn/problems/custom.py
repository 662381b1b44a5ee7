"""A user-supplied differentiable loss over any pytree of parameters."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import _validate as v
from ..errors import InputError
from ..pytree import flatten_real, unflatten_real
from .base import Problem


class CustomProblem(Problem):
    """Any real-valued differentiable ``loss_fn(params)``; gradient by autodiff.

    Complex leaves use the project convention ``grad = d/dRe + i d/dIm`` (computed in real
    coordinates). ``product``/``target_matrix`` are unavailable unless ``product_fn`` and ``target``
    are given.
    """

    loss_fn: Callable[[Any], jax.Array] = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)
    leaf_specs: tuple[tuple[tuple[int, ...], Any], ...] = eqx.field(static=True)
    product_fn: Callable[[Any], jax.Array] | None = eqx.field(static=True)
    target: jax.Array | None

    def __init__(self, loss_fn: Callable[[Any], Any], example_params: Any, product_fn=None, target=None):
        if not callable(loss_fn):
            raise InputError(f"loss_fn must be callable, got {loss_fn!r}")
        leaves = jax.tree_util.tree_leaves(example_params)
        if not leaves:
            raise InputError("example_params must contain at least one array")
        for i, leaf in enumerate(leaves):
            v.finite_array(f"example_params[{i}]", leaf)
        example = jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype=jnp.complex128 if jnp.iscomplexobj(x) else jnp.float64), example_params
        )
        self.loss_fn = loss_fn
        ex_leaves, self.treedef = jax.tree_util.tree_flatten(example)
        self.leaf_specs = tuple((tuple(x.shape), x.dtype) for x in ex_leaves)
        value = jnp.asarray(loss_fn(example))
        if value.shape != () or jnp.iscomplexobj(value):
            raise InputError(f"loss_fn must return a real scalar, got shape {value.shape} dtype {value.dtype}")
        self.product_fn = product_fn
        self.target = None if target is None else jnp.asarray(target)

    def param_template(self) -> Any:
        leaves = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in self.leaf_specs]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def loss(self, params: Any) -> jax.Array:
        return jnp.asarray(self.loss_fn(params), dtype=jnp.float64)

    def grad(self, params: Any) -> Any:
        vec = flatten_real(params)
        g = jax.grad(lambda x: self.loss(unflatten_real(self.param_template(), x)))(vec)
        return unflatten_real(self.param_template(), g)

    def product(self, params: Any) -> jax.Array:
        if self.product_fn is None:
            raise InputError("this CustomProblem has no product_fn")
        return jnp.asarray(self.product_fn(params))

    def target_matrix(self) -> jax.Array:
        if self.target is None:
            raise InputError("this CustomProblem has no target")
        return self.target

    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> Any:
        return self._gaussian(key, scale)
