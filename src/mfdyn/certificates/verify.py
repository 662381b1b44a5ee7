"""Searching for violations of a certificate's properties on a region of initializations.

For the GD map ``G`` at step ``eta`` (MATH.md §1 vocabulary):

- nestedness: ``I(delta2; z) <= I(delta1; z)`` for ``delta1 < delta2`` (violation: the difference);
- boundary-inward: for ``z`` in the region with state ``delta(z)`` strictly inside the bracket (so
  ``I(delta(z); z) = 0``), ``I(delta(z); G(z)) <= 0`` (violation: its value). Equality cannot be avoided at
  fixed points of ``G`` on a level set (minimizers), so the check is ``<= tol`` and the fraction of strict
  decreases is reported separately;
- monotone state along trajectories: ``delta(z_{t+1}) <= delta(z_t)`` while ``z_t``, ``z_{t+1}`` stay in
  the region (violation: the increase).

Each property is checked on random samples; the boundary-inward violation is then maximized locally
(scipy, bounded Nelder-Mead) from the worst samples. "Admissible on the region" means no violation
above ``tol`` was found, which is evidence, not a proof.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from .. import _validate as v
from ..errors import InputError
from ..rank1.gd_map import gd_map, trajectories
from .certificate import Certificate, Kernel, state_one, states


@dataclasses.dataclass(frozen=True)
class Region:
    """A box ``low <= z <= high`` (flat coordinates), optionally cut by ``constraint(zs) -> bool mask``
    (``zs``: ``(N, n)``) and by ``state <= max_state``."""

    low: np.ndarray
    high: np.ndarray
    constraint: Callable[[np.ndarray], np.ndarray] | None = None
    max_state: float | None = None
    description: str = ""

    @classmethod
    def box(cls, bounds: Sequence[Sequence[float]], **kwargs) -> "Region":
        arr = np.asarray(bounds, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)) or np.any(arr[:, 0] > arr[:, 1]):
            raise InputError(f"region bounds must be finite (lo, hi) pairs with lo <= hi, got {bounds!r}")
        return cls(arr[:, 0], arr[:, 1], **kwargs)

    @classmethod
    def parse(cls, text: str) -> "Region":
        """``"lo:hi,lo:hi,..."``, one pair per coordinate (the CLI's ``--region``)."""
        try:
            pairs = [tuple(float(x) for x in part.split(":")) for part in text.split(",")]
        except ValueError:
            raise InputError(f"region must look like 'lo:hi,lo:hi', got {text!r}") from None
        if any(len(p) != 2 for p in pairs):
            raise InputError(f"region must look like 'lo:hi,lo:hi', got {text!r}")
        return cls.box(pairs, description=text)

    def contains(self, zs: np.ndarray) -> np.ndarray:
        zs = np.atleast_2d(zs)
        inside = np.all(np.isfinite(zs), axis=1) & np.all((zs >= self.low) & (zs <= self.high), axis=1)
        if self.constraint is not None and inside.any():
            inside &= np.asarray(self.constraint(np.where(np.isfinite(zs), zs, 0.0)), dtype=bool)
        return inside

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        zs = rng.uniform(self.low, self.high, size=(n, self.low.size))
        return zs[self.contains(zs)]


@dataclasses.dataclass(frozen=True)
class VerificationReport:
    certificate: str
    eta: float
    samples: int
    on_level_sets: int
    nested_worst: float
    inward_worst: float
    inward_worst_point: list
    inward_fraction_violated: float
    inward_fraction_strict: float
    monotone_worst: float
    monotone_transitions: int
    tol: float

    @property
    def admissible(self) -> bool:
        return bool(self.on_level_sets > 0 and max(self.nested_worst, self.inward_worst, self.monotone_worst) <= self.tol)

    def summary(self) -> str:
        verdict = "admissible on the region (no violation found)" if self.admissible else "NOT admissible: violation found"
        if self.on_level_sets == 0:
            verdict = "vacuous: no sampled point lies on a level set of the bracket"
        return (f"{self.certificate} at eta={self.eta:g}: {verdict}; worst nestedness {self.nested_worst:.3g}, "
                f"worst boundary-inward {self.inward_worst:.3g} (fraction violated {self.inward_fraction_violated:.3g}, "
                f"strict {self.inward_fraction_strict:.3g}), worst state increase along trajectories "
                f"{self.monotone_worst:.3g} over {self.monotone_transitions} steps; tol {self.tol:g}")

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), admissible=self.admissible)


@eqx.filter_jit
def _inward(cert: Kernel, problem: Any, zs: jax.Array, eta: jax.Array):
    """``(delta(z), I(delta(z); G(z)), delta(G(z)))`` for each row of ``zs``."""
    def one(z):
        d = state_one(cert, z)
        gz = gd_map(problem, z, eta)
        return d, cert.value(d, gz), state_one(cert, gz)

    return jax.vmap(one)(zs)


def _on_level_set(cert: Certificate, region: Region, d: np.ndarray) -> np.ndarray:
    lo, hi = cert.bracket
    ok = np.isfinite(d) & (d > lo) & (d < hi)
    if region.max_state is not None:
        ok &= d <= region.max_state
    return ok


def verify(cert: Certificate, problem: Any, eta: float, region: Region, *, samples: int = 4096, seed: int = 0,
           local_starts: int = 8, steps: int = 40, trajectories_checked: int = 256, tol: float = 1e-10
           ) -> VerificationReport:
    """Search for violations of nestedness, boundary-inwardness and state monotonicity on ``region``."""
    v.problem(problem)
    v.finite_scalar("eta", eta, positive=True)
    samples = v.integer("samples", samples, minimum=8)
    seed = v.integer("seed", seed, minimum=0)
    steps = v.integer("steps", steps, minimum=1)
    local_starts = v.integer("local_starts", local_starts, minimum=0)
    trajectories_checked = v.integer("trajectories_checked", trajectories_checked, minimum=0)
    v.finite_scalar("tol", tol, nonnegative=True)
    if not isinstance(region, Region):
        raise InputError(f"region must be a mfdyn.certificates.Region, got {type(region).__name__}")
    n = problem.num_coordinates
    if cert.variables is not None and len(cert.variables) != n:
        raise InputError(f"the certificate has {len(cert.variables)} variables ({', '.join(cert.variables)}) but the "
                         f"problem has {n} coordinates")
    if region.low.size != n:
        raise InputError(f"region has {region.low.size} coordinates but the problem has {n}")
    rng = np.random.default_rng(seed)
    eta_arr = jnp.asarray(eta, jnp.float64)
    zs = region.sample(samples, rng)
    if zs.shape[0] == 0:
        raise InputError("region is empty: no sampled point satisfies its constraint")

    lo, hi = cert.bracket
    d1, d2 = np.sort(rng.uniform(lo, hi, size=(2, zs.shape[0])), axis=0)
    nested_worst = float(np.max(cert(d2, zs) - cert(d1, zs)))

    d, inward, _ = (np.asarray(x) for x in _inward(cert.kernel, problem, jnp.asarray(zs), eta_arr))
    valid = _on_level_set(cert, region, d)
    count = int(valid.sum())
    worst, worst_point, frac_viol, frac_strict = -np.inf, [], 0.0, 0.0
    if count:
        vals = inward[valid]
        frac_viol, frac_strict = float(np.mean(vals > tol)), float(np.mean(vals < -tol))
        pts = zs[valid]
        order = np.argsort(-vals)[:local_starts]
        worst, worst_point = float(vals[order[0]]), pts[order[0]].tolist()

        def negative_violation(z):
            z = np.asarray(z)
            if not region.contains(z[None])[0]:
                return 1e300
            dz, val, _ = (np.asarray(x)[0] for x in _inward(cert.kernel, problem, jnp.asarray(z[None]), eta_arr))
            return -float(val) if _on_level_set(cert, region, np.array([dz]))[0] else 1e300

        for i in order:
            res = optimize.minimize(negative_violation, pts[i], method="Nelder-Mead",
                                    bounds=list(zip(region.low, region.high)),
                                    options=dict(maxfev=300, xatol=1e-12, fatol=1e-16))
            if np.isfinite(res.fun) and -res.fun > worst:
                worst, worst_point = float(-res.fun), np.asarray(res.x).tolist()

    starts = zs[valid][:trajectories_checked] if count else zs[:trajectories_checked]
    path = np.asarray(trajectories(problem, jnp.asarray(starts), eta_arr, steps))  # (steps+1, N, n)
    flat = path.reshape(-1, n)
    st = np.asarray(states(cert.kernel, jnp.asarray(np.where(np.isfinite(flat), flat, 0.0)))).reshape(path.shape[:2])
    ok = (region.contains(flat).reshape(path.shape[:2]) & _on_level_set(cert, region, st)) | \
         (region.contains(flat).reshape(path.shape[:2]) & (st == lo))
    pair = ok[:-1] & ok[1:]
    with np.errstate(invalid="ignore"):
        increases = (st[1:] - st[:-1])[pair]
    monotone_worst = float(increases.max()) if increases.size else -np.inf

    return VerificationReport(
        certificate=cert.name, eta=float(eta), samples=int(zs.shape[0]), on_level_sets=count,
        nested_worst=nested_worst, inward_worst=float(worst), inward_worst_point=worst_point,
        inward_fraction_violated=frac_viol, inward_fraction_strict=frac_strict,
        monotone_worst=monotone_worst, monotone_transitions=int(pair.sum()), tol=float(tol),
    )
