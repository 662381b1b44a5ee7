"""Finding certificate coefficients: ``search`` at one problem, ``search_branch`` along a parameter.

For a :class:`QuadraticTemplate` with coefficients ``c`` (normalized to ``|c| = 1``), on samples ``z`` of
the region that lie on a level set, the normalized boundary-inward value is

    w(z) = I(delta(z); G(z)) / (|z| |G(z) - z| + 1e-12)       (<= 0 wanted; MATH.md §1)

and the search minimizes ``1e3 max(0, max_z w) + 1e-2 mean_z w + 1e3 (fraction not nested) + (fraction on
no level set)``: first no violation, then (weakly) the largest average inward margin. Nelder-Mead from
``initial`` (or the previous solution, in a branch), then :func:`verify`; counterexample-guided rounds
add the worst violating point found by verification (and jittered copies) to the samples and solve
again, up to ``rounds`` times. The reported margin is verification's worst boundary-inward value.
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
from ..rank1.gd_map import gd_map
from .certificate import Certificate, Kernel, state_one
from .families import QuadraticTemplate
from .verify import Region, VerificationReport, verify


@eqx.filter_jit
def _objective_terms(kernel: Kernel, problem: Any, zs: jax.Array, eta: jax.Array):
    """Per sample: normalized inward value ``w``, whether ``z`` is on a level set, and ``dI/d delta``."""
    lo, hi = kernel.bracket

    def one(z):
        gz = gd_map(problem, z, eta)
        d = state_one(kernel, z)
        ok = jnp.isfinite(d) & (d > lo) & (d < hi)
        d_safe = jnp.where(ok, d, 0.5 * (lo + hi))
        w = kernel.value(d_safe, gz) / (jnp.linalg.norm(z) * jnp.linalg.norm(gz - z) + 1e-12)
        slope = jax.grad(kernel.value)(d_safe, z)
        return jnp.where(ok, w, 0.0), ok, slope

    return jax.vmap(one)(zs)


def objective(kernel: Kernel, problem: Any, zs: jax.Array, eta: jax.Array) -> float:
    """The quantity :func:`search` minimizes (see the module docstring)."""
    w, ok, slope = (np.asarray(x) for x in _objective_terms(kernel, problem, zs, eta))
    if not ok.any():
        return 1e6
    wv = w[ok]
    return float(1e3 * max(0.0, wv.max()) + 1e-2 * wv.mean() + 1e3 * np.mean(slope[ok] >= 0) + np.mean(~ok))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    certificate: Certificate
    coefficients: np.ndarray
    objective: float
    report: VerificationReport

    @property
    def margin(self) -> float:
        """``-max I(delta(z); G(z))`` over the verification's samples and local maximization."""
        return -self.report.inward_worst


def search(problem: Any, eta: float, template: QuadraticTemplate, region: Region, *, initial: Any = None,
           samples: int = 512, seed: int = 0, maxiter: int = 600, verify_samples: int = 2048,
           verify_options: dict | None = None, rounds: int = 3) -> SearchResult:
    """Coefficients of ``template`` minimizing the search objective on ``region`` (module docstring), and the
    :func:`verify` report of the result (``verify_options`` are passed to it)."""
    v.finite_scalar("eta", eta, positive=True)
    if not isinstance(template, QuadraticTemplate):
        raise InputError(f"template must be a QuadraticTemplate, got {type(template).__name__}")
    c0 = np.eye(template.size)[0] if initial is None else np.asarray(initial, dtype=float)
    if c0.shape != (template.size,) or not np.all(np.isfinite(c0)) or not np.any(c0):
        raise InputError(f"initial must be {template.size} finite coefficients, not all zero; got {initial!r}")
    seed = v.integer("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    zs = region.sample(samples, rng)
    if zs.shape[0] == 0:
        raise InputError("region is empty: no sampled point satisfies its constraint")
    rounds = v.integer("rounds", rounds, minimum=1)
    family = template.family()
    eta_arr = jnp.asarray(eta, jnp.float64)
    c = c0 / np.linalg.norm(c0)
    for round_ in range(rounds):
        sample_set = jnp.asarray(zs)

        def loss(coeff):
            coeff = np.asarray(coeff) / (np.linalg.norm(coeff) + 1e-300)
            return objective(family.with_coefficients(coeff).kernel, problem, sample_set, eta_arr)

        res = optimize.minimize(loss, c, method="Nelder-Mead",
                                options=dict(maxiter=maxiter, xatol=1e-9, fatol=1e-12, adaptive=True))
        c = np.asarray(res.x) / np.linalg.norm(res.x)
        cert = template.certificate(c)
        report = verify(cert, problem, eta, region, samples=verify_samples, seed=seed + 1 + round_,
                        **(verify_options or {}))
        if report.admissible or not report.inward_worst_point or report.inward_worst <= report.tol:
            break
        worst = np.asarray(report.inward_worst_point)
        jitter = worst + 1e-2 * (region.high - region.low) * rng.standard_normal((16, worst.size))
        extra = np.vstack([worst[None], jitter])
        zs = np.vstack([zs, extra[region.contains(extra)]])
    return SearchResult(cert, c, float(res.fun), report)


@dataclasses.dataclass(frozen=True)
class BranchResult:
    parameter: str
    values: np.ndarray
    coefficients: np.ndarray  # (K, m)
    results: list

    @property
    def first_differences(self) -> np.ndarray:
        """``|c_{k+1} - c_k| / |p_{k+1} - p_k|`` (K-1,)."""
        return np.linalg.norm(np.diff(self.coefficients, axis=0), axis=1) / np.abs(np.diff(self.values))

    @property
    def second_differences(self) -> np.ndarray:
        """Norm of the divided second difference of the coefficients (K-2,)."""
        slopes = np.diff(self.coefficients, axis=0) / np.diff(self.values)[:, None]
        mids = 0.5 * (self.values[1:] + self.values[:-1])
        return np.linalg.norm(np.diff(slopes, axis=0), axis=1) / np.abs(np.diff(mids))

    def as_rows(self) -> list[dict]:
        return [dict({self.parameter: float(p)}, **{f"c{i}": float(x) for i, x in enumerate(c)},
                     objective=r.objective, admissible=r.report.admissible, inward_worst=r.report.inward_worst)
                for p, c, r in zip(self.values, self.coefficients, self.results)]


def search_branch(make_problem: Callable[..., Any], eta: float, template: QuadraticTemplate,
                  region: Region | Callable[[Any], Region], *, parameter: str = "sigma",
                  values: Sequence[float], initial: Any = None, **kwargs) -> BranchResult:
    """Continuation in ``parameter``: solve at each value in order, warm-started from the previous one.

    ``make_problem(**{parameter: value})`` builds the problem; ``region`` is fixed or ``region(problem)``.
    """
    vals = np.asarray(values, dtype=float)
    if vals.ndim != 1 or vals.size < 1 or not np.all(np.isfinite(vals)):
        raise InputError(f"values must be a non-empty 1-D sequence of finite numbers, got {values!r}")
    results, coeffs, guess = [], [], initial
    for value in vals:
        problem = make_problem(**{parameter: float(value)})
        reg = region(problem) if callable(region) else region
        res = search(problem, eta, template, reg, initial=guess, **kwargs)
        results.append(res)
        coeffs.append(res.coefficients)
        guess = res.coefficients
    return BranchResult(parameter, vals, np.array(coeffs), results)
