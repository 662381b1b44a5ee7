"""The interface every problem family implements.

A problem is an immutable pytree (an ``equinox.Module``): its numeric constants (target, quartic
coefficient, weight decay, ...) are array leaves, so they can be traced, vmapped and swept without
recompiling; its structure (rank, depth, widths, field) is static.

Subclasses implement ``loss``, ``grad`` (closed form), ``init``, ``imbalance``, ``product`` and
``param_template``; everything else (real-coordinate flattening, dense Hessian, Hessian-vector
products, parameter checks) is shared here.
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate as v
from ..errors import InputError
from ..pytree import PyTree, flatten_real, real_size, unflatten_real

INIT_KINDS: tuple[str, ...] = ("gaussian",)
INIT_ROWS_BUDGET = 8192  # real coordinates drawn per call of the compiled draw (Problem.init_batch) ...
INIT_LANES = 16  # ... in blocks of a multiple of this many rows (SIMD lanes: no scalar remainder loop)
INIT_MAX_BLOCK = 1024


class Problem(eqx.Module):
    """Base class: a differentiable loss over a pytree of parameters."""

    init_kinds = INIT_KINDS

    # ---- implemented by each family -------------------------------------------------------
    @abc.abstractmethod
    def loss(self, params: PyTree) -> jax.Array:
        """The loss ``f(params)`` (a real scalar)."""

    @abc.abstractmethod
    def grad(self, params: PyTree) -> PyTree:
        """``grad f`` in the project convention (``d/dRe + i d/dIm`` for complex leaves)."""

    def descent(self, params: PyTree, eta: jax.Array, grad: PyTree = None) -> PyTree:
        """``eta grad f(params)``, the increment a GD step subtracts, from ``grad`` if given (the
        gradient of ``params``, computed once for a test and a step) or computed here. Every GD
        step of mfdyn (``gd``, ``sweep``, the sweep kernel's replays) goes through this method, so
        all agree bit for bit; a family may evaluate the product in another order
        (:meth:`mfdyn.ScalarFactorization.descent`)."""
        g = self.grad(params) if grad is None else grad
        return jax.tree_util.tree_map(lambda gi: eta * gi, g)

    @abc.abstractmethod
    def param_template(self) -> PyTree:
        """A pytree of ``jax.ShapeDtypeStruct`` describing the parameters."""

    @abc.abstractmethod
    def product(self, params: PyTree) -> jax.Array:
        """The end-to-end matrix the parameters represent (compared with ``target_matrix``)."""

    @abc.abstractmethod
    def target_matrix(self) -> jax.Array:
        """The matrix the product is fitted to."""

    @abc.abstractmethod
    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> PyTree:
        """Family-specific random initialization (``kind`` already validated)."""

    def imbalance(self, params: PyTree) -> PyTree:
        """The quantities gradient flow conserves (a pytree; empty if none)."""
        return ()

    def generalized(self, names: tuple[str, ...]) -> "Problem":
        """This problem with no static structure specialized on the values of the constants
        ``names``, which are about to be replaced by arbitrary (traced, swept) values. A family
        that drops a term whose constant is exactly zero overrides this; by default, itself."""
        return self

    # ---- shared ---------------------------------------------------------------------------
    @property
    def dtype(self) -> Any:
        leaves = jax.tree_util.tree_leaves(self.param_template())
        return leaves[0].dtype if leaves else jnp.float64

    @property
    def num_coordinates(self) -> int:
        """Number of real coordinates (complex entries count twice)."""
        return real_size(self.param_template())

    def init(self, seed: Any, scale: Any = 1.0, kind: str = "gaussian") -> PyTree:
        """Random parameters: ``scale`` times i.i.d. standard Gaussians (complex: Re, Im ~ N(0, 1/2)).

        Computed by :meth:`init_batch` (one row of it), so ``init(seed, scale, kind)`` has the bits of
        the start of a sweep's trajectory with that ``seed`` and ``scale``. ``seed`` and ``scale`` may
        also be traced (inside ``jit`` / ``vmap``): the draw is then traced inline, and XLA may fuse it
        with the surrounding program so that its last bits differ; :meth:`init_batch` keeps them.
        """
        v.choice("kind", kind, tuple(self.init_kinds))
        if v.is_traced(seed) or v.is_traced(scale):
            v.finite_scalar("scale", scale, positive=True)
            return self._draw(jax.random.PRNGKey(seed), jnp.asarray(scale, dtype=jnp.float64), kind)
        seed = v.integer("seed", seed, minimum=0)
        v.finite_scalar("scale", scale, positive=True)
        return jax.tree_util.tree_map(lambda x: x[0], self.init_batch([seed], [scale], kind))

    def init_block(self) -> int:
        """Rows of one call of the compiled draw of :meth:`init_batch`: about ``INIT_ROWS_BUDGET`` real
        coordinates, a multiple of ``INIT_LANES`` (16 to ``INIT_MAX_BLOCK`` rows). A function of the
        structure alone, so :meth:`init` and a sweep use the same program (one draw of a 4-layer
        ``d = 40`` product took 256 times its own work in blocks of 256)."""
        lanes = INIT_ROWS_BUDGET // (INIT_LANES * max(1, self.num_coordinates))
        return INIT_LANES * min(max(1, lanes), INIT_MAX_BLOCK // INIT_LANES)

    def init_batch(self, seeds: Any, scales: Any, kind: str = "gaussian") -> PyTree:
        """:meth:`init` for many ``(seed, scale)`` pairs at once: a pytree whose leaves have a leading
        axis over the pairs (``seeds``, ``scales``: 1-D, of one length, or a scalar ``scales``).

        The draws run in one compiled program per problem structure and ``kind``, on blocks of
        :meth:`init_block` rows (the last padded): a row's bits depend only on its seed and scale, not on
        the other rows or on the program around it (a draw fused into a larger program, as a sweep's kernel,
        rounded differently in the last bits: 8 to 12 of 12 random starts of the matrix, symmetric and
        deep families differed, and a chaotic symmetric run diverged where ``gd`` from ``init`` did not).
        """
        v.choice("kind", kind, tuple(self.init_kinds))
        seeds = np.asarray(v.finite_array("seeds", seeds, ndim=1, allow_complex=False))
        if seeds.size and (np.any(np.mod(seeds, 1) != 0) or seeds.min() < 0 or seeds.max() >= 2**63):
            raise InputError(f"seeds must be integers in [0, 2**63), got {v.describe(seeds)}")
        seeds = seeds.astype(np.int64)
        scales = np.asarray(v.finite_array("scales", scales, allow_complex=False), dtype=np.float64)
        if scales.ndim > 1 or (scales.ndim == 1 and scales.shape != seeds.shape):
            raise InputError(f"scales must be a number or 1-D like seeds ({seeds.size}), got shape {scales.shape}")
        if np.any(scales <= 0):
            raise InputError(f"scales must be > 0, got {v.describe(scales)}")
        scales = np.broadcast_to(scales, seeds.shape)
        n, block = seeds.size, self.init_block()
        blocks = max(1, -(-n // block))
        pad = blocks * block - n
        seeds = np.concatenate([seeds, np.zeros(pad, np.int64)])
        scales = np.concatenate([scales, np.ones(pad)])
        parts = [_draw_block(self, seeds[i * block:(i + 1) * block], scales[i * block:(i + 1) * block], kind=kind)
                 for i in range(blocks)]
        if blocks == 1:
            return jax.tree_util.tree_map(lambda x: x[:n], parts[0])
        return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[:n], *parts)

    def _gaussian(self, key: jax.Array, scale: jax.Array) -> PyTree:
        template = self.param_template()
        leaves, treedef = jax.tree_util.tree_flatten(template)
        keys = jax.random.split(key, len(leaves))
        out = []
        for k, leaf in zip(keys, leaves):
            if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
                kr, ki = jax.random.split(k)
                z = (jax.random.normal(kr, leaf.shape) + 1j * jax.random.normal(ki, leaf.shape)) / jnp.sqrt(2.0)
                out.append((scale * z).astype(leaf.dtype))
            else:
                out.append((scale * jax.random.normal(k, leaf.shape, dtype=jnp.float64)).astype(leaf.dtype))
        return jax.tree_util.tree_unflatten(treedef, out)

    def flatten(self, params: PyTree) -> jax.Array:
        """Parameters as one real vector (complex entries as two real coordinates)."""
        return flatten_real(params)

    def unflatten(self, vector: Any) -> PyTree:
        vector = jnp.asarray(vector)
        if not v.is_traced(vector) and vector.shape != (self.num_coordinates,):
            raise InputError(f"vector must have shape ({self.num_coordinates},), got {vector.shape}")
        return unflatten_real(self.param_template(), vector)

    def flat_loss(self, vector: jax.Array) -> jax.Array:
        return self.loss(self.unflatten(vector))

    def flat_grad(self, vector: jax.Array) -> jax.Array:
        return self.flatten(self.grad(self.unflatten(vector)))

    def hessian(self, params: PyTree) -> jax.Array:
        """Dense Hessian of the loss over the flattened real coordinates, shape ``(n, n)``:
        ``jacfwd`` of the closed-form gradient, compiled once per problem structure and shape."""
        return _dense_hessian(self, _as_arrays(params))

    def hvp(self, params: PyTree, vector: jax.Array) -> jax.Array:
        """Hessian-vector product in flat real coordinates (forward-over-closed-form gradient),
        compiled once per problem structure and shape."""
        return _hessian_vector_product(self, _as_arrays(params), jnp.asarray(vector))

    def check_params(self, params: PyTree, name: str = "params") -> PyTree:
        """Validate structure, shapes and finiteness; return the params as arrays of the right dtype."""
        template = self.param_template()
        t_leaves, t_def = jax.tree_util.tree_flatten(template)
        try:
            p_leaves, p_def = jax.tree_util.tree_flatten(params)
        except Exception:  # noqa: BLE001
            raise InputError(f"{name} is not a valid parameter pytree") from None
        if len(p_leaves) != len(t_leaves):  # a list for a tuple is fine: leaves are re-packed as the template
            raise InputError(
                f"{name} must be a pytree with {len(t_leaves)} arrays of shapes "
                f"{[tuple(t.shape) for t in t_leaves]}, got {len(p_leaves)} arrays"
            )
        out = []
        for i, (p, t) in enumerate(zip(p_leaves, t_leaves)):
            label = f"{name}[{i}]" if len(t_leaves) > 1 else name
            if not v.is_traced(p):
                arr = np.asarray(p)
                if arr.shape != tuple(t.shape):
                    raise InputError(f"{label} must have shape {tuple(t.shape)}, got {arr.shape}")
                is_complex_template = jnp.issubdtype(t.dtype, jnp.complexfloating)
                v.finite_array(label, arr, allow_complex=is_complex_template)
            out.append(jnp.asarray(p, dtype=t.dtype))
        return jax.tree_util.tree_unflatten(t_def, out)


def _as_arrays(params: PyTree) -> PyTree:
    """Python numbers as arrays: ``eqx.filter_jit`` would make them static (a compilation per value)."""
    return jax.tree_util.tree_map(jnp.asarray, params)


# Run eagerly, ``jacfwd`` dispatches each operation of the gradient on its own: a deep problem's
# Hessian took 1-5 s at first and 10-65 ms after; compiled, 0.1-0.7 s and 0.3 ms (measured 2026-11-23).
@eqx.filter_jit
def _dense_hessian(problem: Problem, params: PyTree) -> jax.Array:
    return jax.jacfwd(problem.flat_grad)(problem.flatten(params))


@eqx.filter_jit
def _hessian_vector_product(problem: Problem, params: PyTree, vector: jax.Array) -> jax.Array:
    return jax.jvp(problem.flat_grad, (problem.flatten(params),), (vector,))[1]


def as_float(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> jax.Array:
    """A validated float64 scalar leaf."""
    v.finite_scalar(name, value, positive=positive, nonnegative=nonnegative)
    return jnp.asarray(value, dtype=jnp.float64)


def as_matrix(name: str, value: Any, *, allow_complex: bool = False, dtype: Any = jnp.float64) -> jax.Array:
    v.finite_array(name, value, ndim=2, allow_complex=allow_complex)
    if 0 in np.shape(value):
        raise InputError(f"{name} must not be empty, got shape {np.shape(value)}")
    return jnp.asarray(value, dtype=dtype)


def frob_sq(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.abs(x) ** 2)


@functools.partial(jax.jit, static_argnames=("kind",))
def _draw_block(problem: Problem, seeds: jax.Array, scales: jax.Array, kind: str) -> PyTree:
    """:meth:`Problem.init_block` draws (:meth:`Problem.init_batch`): one compiled program of one shape per
    problem structure and ``kind``, whatever the number of draws wanted."""
    return jax.vmap(lambda seed, scale: problem._draw(jax.random.PRNGKey(seed), scale, kind))(seeds, scales)
