"""The GD map ``G(z) = z - eta grad f(z)`` on flat real coordinates, its iterates and Jacobians.

Every analysis of the rank-1 dynamics (orbits, Floquet multipliers, certificates) works with ``G`` as a
map of ``R^n``: ``z`` is ``problem.flatten(params)``. The step itself is :func:`mfdyn.dynamics.gd_update`
(momentum 0), so these functions are exactly the dynamics ``mfdyn.gd`` runs. ``eta`` is traced; the
compiled functions are shared by every problem of the same structure.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from .. import _validate as v
from ..dynamics import gd_update


def _checked(problem: Any, z: Any, eta: Any) -> tuple[jax.Array, jax.Array]:
    """``(z, eta)`` as float64 arrays, checked where they are concrete (traced values pass: these maps
    also run inside compiled analyses)."""
    v.problem(problem)
    v.finite_scalar("eta", eta, positive=True)
    return v.flat_point(problem, z), (eta if v.is_traced(eta) else jnp.asarray(eta, jnp.float64))


def gd_map(problem: Any, z: jax.Array, eta: jax.Array) -> jax.Array:
    """One GD step in flat coordinates: ``G(z) = z - eta grad f(z)``."""
    z, eta = _checked(problem, z, eta)
    params = problem.unflatten(z)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    new, _ = gd_update(problem, params, zero, eta, jnp.zeros((), z.dtype), heavy_ball=False)
    return problem.flatten(new)


def iterate(problem: Any, z: jax.Array, eta: jax.Array, k: int) -> jax.Array:
    """``G^k(z)`` (``k`` static, ``k >= 0``)."""
    z, eta = _checked(problem, z, eta)
    k = v.integer("k", k, minimum=0)
    return jax.lax.fori_loop(0, k, lambda _, x: gd_map(problem, x, eta), z)


@partial(jax.jit, static_argnames=("k",))
def iterate_jit(problem: Any, z: jax.Array, eta: jax.Array, k: int) -> jax.Array:
    return iterate(problem, z, eta, k)


@partial(jax.jit, static_argnames=("k",))
def iterate_jacobian(problem: Any, z: jax.Array, eta: jax.Array, k: int) -> jax.Array:
    """``D(G^k)(z)``, shape ``(n, n)``: its eigenvalues at a period-k point are the Floquet multipliers."""
    return jax.jacfwd(lambda x: iterate(problem, x, eta, k))(z)


@partial(jax.jit, static_argnames=("k",))
def orbit_points(problem: Any, z: jax.Array, eta: jax.Array, k: int) -> jax.Array:
    """``[z, G(z), ..., G^{k-1}(z)]``, shape ``(k, n)``."""
    def step(x, _):
        return gd_map(problem, x, eta), x

    _, pts = jax.lax.scan(step, z, None, length=k)
    return pts


@partial(jax.jit, static_argnames=("steps",))
def trajectories(problem: Any, zs: jax.Array, eta: jax.Array, steps: int) -> jax.Array:
    """States ``z_0 .. z_steps`` of GD from each row of ``zs``: shape ``(steps + 1, N, n)``."""
    step = jax.vmap(lambda x: gd_map(problem, x, eta))

    def body(x, _):
        nxt = step(x)
        return nxt, nxt

    _, path = jax.lax.scan(body, zs, None, length=steps)
    return jnp.concatenate([zs[None], path])
