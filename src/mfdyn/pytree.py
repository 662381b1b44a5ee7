"""Real coordinates of parameter pytrees.

Convention (MATH.md §0): a complex entry counts as two real coordinates, ``(Re, Im)``. The flat
vector lists each leaf's real parts, then (for complex leaves) its imaginary parts, leaves in
``jax.tree_util`` order. Differentiating a real loss with respect to this vector and unflattening
gives exactly the project's complex gradient ``d/dRe + i d/dIm``, so GD and gradient flow in flat
real coordinates are the same dynamics as on the complex parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def real_size(template: PyTree) -> int:
    """Number of real coordinates of a pytree of arrays or ``ShapeDtypeStruct``."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(template):
        n = int(np.prod(leaf.shape))
        total += 2 * n if jnp.issubdtype(leaf.dtype, jnp.complexfloating) else n
    return total


def flatten_real(params: PyTree) -> jax.Array:
    """Concatenate all leaves into one real vector (complex leaves as Re block then Im block)."""
    pieces = []
    for leaf in jax.tree_util.tree_leaves(params):
        leaf = jnp.asarray(leaf)
        if jnp.iscomplexobj(leaf):
            pieces += [jnp.real(leaf).ravel(), jnp.imag(leaf).ravel()]
        else:
            pieces.append(leaf.ravel())
    if not pieces:
        return jnp.zeros((0,))
    return jnp.concatenate(pieces)


def unflatten_real(template: PyTree, vector: jax.Array) -> PyTree:
    """Inverse of :func:`flatten_real` for the structure, shapes and dtypes of ``template``."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out, offset = [], 0
    for leaf in leaves:
        n = int(np.prod(leaf.shape))
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            re = vector[offset : offset + n]
            im = vector[offset + n : offset + 2 * n]
            out.append((re + 1j * im).reshape(leaf.shape).astype(leaf.dtype))
            offset += 2 * n
        else:
            out.append(vector[offset : offset + n].reshape(leaf.shape).astype(leaf.dtype))
            offset += n
    return jax.tree_util.tree_unflatten(treedef, out)


def tree_sq_norm(tree: PyTree) -> jax.Array:
    """Sum of ``|x|^2`` over all entries of all leaves (squared Frobenius norm)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(0.0)
    return sum(jnp.sum(jnp.abs(jnp.asarray(x)) ** 2) for x in leaves)


def tree_norm(tree: PyTree) -> jax.Array:
    return jnp.sqrt(tree_sq_norm(tree))


def tree_all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def tree_where(cond: jax.Array, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


def tree_axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """``y + alpha * x`` leafwise."""
    return jax.tree_util.tree_map(lambda xi, yi: yi + alpha * xi, x, y)
