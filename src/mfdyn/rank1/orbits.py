"""Periodic orbits of the GD map by Newton's method on ``G^k(z) - z`` (any problem family).

From many starts (vmapped), Newton steps ``z <- z - (DG^k(z) - I)^+ (G^k(z) - z)`` with autodiff
Jacobians (``jax.jacfwd``); the pseudo-inverse handles continua of orbits (e.g. the minimizer hyperbola,
a continuum of fixed points), and each step is capped in length so far starts do not jump to infinity.
Converged points are de-duplicated up to the orbit's cyclic shift. Each orbit carries its Floquet
multipliers, the eigenvalues of ``D(G^k)`` at its first point.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import _lapack as lapack
from .. import _validate as v
from ..errors import InputError
from .gd_map import iterate, iterate_jacobian, orbit_points

NEUTRAL_TOL = 1e-7  # a multiplier this close to 1 is tangent to a continuum of orbits


@dataclasses.dataclass(frozen=True)
class PeriodicOrbit:
    """A period-``k`` orbit: ``points`` (k, n) flat coordinates, ``multipliers`` (eigenvalues of D(G^k)).

    ``stable``: every multiplier has modulus < 1, except multipliers equal to 1 (tangent to a continuum
    of orbits, such as the minimizer hyperbola), which are ignored (attracting in the normal directions).
    """

    points: np.ndarray
    multipliers: np.ndarray
    residual: float

    @property
    def period(self) -> int:
        return self.points.shape[0]

    @property
    def spectral_radius(self) -> float:
        return float(np.max(np.abs(self.multipliers)))

    @property
    def stable(self) -> bool:
        transverse = self.multipliers[np.abs(self.multipliers - 1.0) > NEUTRAL_TOL]
        return bool(np.all(np.abs(transverse) < 1.0))

    def params(self, problem: Any) -> list:
        return [problem.unflatten(jnp.asarray(p)) for p in self.points]

    def as_dict(self) -> dict:
        return dict(period=self.period, points=self.points.tolist(),
                    multipliers=[[float(m.real), float(m.imag)] for m in self.multipliers],
                    spectral_radius=self.spectral_radius, stable=self.stable, residual=self.residual)


_newton_pinv = lapack.one_matrix_per_call(lambda J: jnp.linalg.pinv(J, rtol=1e-12))  # (one matrix per LAPACK call)


@partial(jax.jit, static_argnames=("k", "iterations"))
def _newton_batch(problem: Any, starts: jax.Array, eta: jax.Array, k: int, iterations: int):
    def residual(z):
        return iterate(problem, z, eta, k) - z

    def newton_step(_, z):
        f = residual(z)
        J = jax.jacfwd(residual)(z)
        dz = -_newton_pinv(J) @ f
        cap = 0.5 * (1.0 + jnp.linalg.norm(z))
        dz = dz * jnp.minimum(1.0, cap / (jnp.linalg.norm(dz) + 1e-300))
        z_new = z + dz
        return jnp.where(jnp.all(jnp.isfinite(z_new)), z_new, z)

    def solve(z0):
        z = jax.lax.fori_loop(0, iterations, newton_step, z0)
        return z, jnp.linalg.norm(residual(z)) / (1.0 + jnp.linalg.norm(z))

    return jax.vmap(solve)(starts)


def _starts(problem: Any, seeds: Any, scale: float) -> np.ndarray:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = np.arange(v.integer("seeds", seeds, minimum=1))
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer) or np.any(seeds < 0):
        raise InputError(f"seeds must be a count >= 1 or a 1-D sequence of non-negative integers, got {seeds!r}")
    return np.asarray(jax.vmap(problem.flatten)(problem.init_batch(seeds, scale)))


def _same_orbit(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return any(np.max(np.abs(np.roll(b, shift, axis=0) - a)) <= tol for shift in range(a.shape[0]))


def _minimal_period(points: np.ndarray, tol: float) -> int:
    for d in range(1, points.shape[0]):
        if points.shape[0] % d == 0 and np.max(np.abs(points[d] - points[0])) <= tol:
            return d
    return points.shape[0]


def periodic_orbits(
    problem: Any,
    eta: float,
    period: int,
    seeds: int | Sequence[int] = 256,
    *,
    starts: Any = None,
    scale: float = 1.0,
    iterations: int = 80,
    tol: float = 1e-10,
    minimal: bool = True,
) -> list[PeriodicOrbit]:
    """Period-``k`` orbits of GD with step ``eta``, found by Newton from many starts.

    Starts: ``starts`` (an ``(N, n)`` array of flat coordinates) if given, else ``problem.init(seed,
    scale)`` for each of ``seeds`` (a count or a sequence of seeds). A start converges when
    ``|G^k(z) - z| <= tol (1 + |z|)``. With ``minimal=True`` orbits whose minimal period is a proper
    divisor of ``k`` (e.g. fixed points when ``k = 2``) are dropped. Orbits equal up to a cyclic shift
    (to ``1e3 tol`` in each coordinate) are reported once, sorted by their first point.
    """
    v.problem(problem)
    v.finite_scalar("eta", eta, positive=True)
    k = v.integer("period", period, minimum=1)
    iterations = v.integer("iterations", iterations, minimum=1)
    v.finite_scalar("tol", tol, positive=True)
    if starts is None:
        z0 = _starts(problem, seeds, scale)
    else:
        v.finite_array("starts", starts, ndim=2, allow_complex=False)
        z0 = np.asarray(starts, dtype=float)
        if z0.shape[1] != problem.num_coordinates:
            raise InputError(f"starts must have shape (N, {problem.num_coordinates}), got {z0.shape}")
    eta_arr = jnp.asarray(eta, jnp.float64)
    zs, res = _newton_batch(problem, jnp.asarray(z0), eta_arr, k, iterations)
    zs, res = np.asarray(zs), np.asarray(res)
    ok = np.isfinite(res) & (res <= tol) & np.all(np.isfinite(zs), axis=1)
    same_tol = 1e3 * tol * (1.0 + np.max(np.abs(zs[ok]))) if ok.any() else 0.0
    orbits: list[PeriodicOrbit] = []
    for z, r in zip(zs[ok], res[ok]):
        pts = np.asarray(orbit_points(problem, jnp.asarray(z), eta_arr, k))
        pts = np.roll(pts, -int(np.lexsort(pts.T[::-1])[0]), axis=0)  # canonical cyclic shift
        if minimal and _minimal_period(pts, same_tol) != k:
            continue
        if any(_same_orbit(o.points, pts, same_tol) for o in orbits):
            continue
        orbits.append(PeriodicOrbit(pts, floquet_multipliers(problem, pts[0], eta, k), float(r)))
    orbits.sort(key=lambda o: tuple(np.round(o.points[0], 9)))
    return orbits


def floquet_multipliers(problem: Any, z: Any, eta: float, period: int) -> np.ndarray:
    """Eigenvalues of ``D(G^k)(z)`` (the Floquet multipliers when ``z`` lies on a period-k orbit)."""
    v.problem(problem)
    v.finite_scalar("eta", eta, positive=True)
    k = v.integer("period", period, minimum=1)
    J = iterate_jacobian(problem, v.flat_point(problem, z), jnp.asarray(eta, jnp.float64), k)
    mult = np.linalg.eigvals(np.asarray(J))
    return mult[np.argsort(-np.abs(mult))]
