"""Rank-1 paper (seeds 000, 001): phase diagram, bifurcations, edge of stability, diag(1, sigma), quartic
loss and certified regions. Closed forms are MATH.md §1 [derived]; certificates are derived families
(the paper's certificate formula is not available and nothing here is labelled as it).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import certificates as cz
from .. import gd, rank1
from ..plot import matplotlib  # noqa: F401  (Agg backend)
from ..problems import MatrixFactorization, ScalarFactorization
from ..rank1.gd_map import iterate_jit, trajectories
from .registry import Context, experiment

PAPER = "State-Dependent Lyapunov Analysis of Rank-1 Matrix Factorization (seeds 000, 001)"
GOLDEN = float(np.sqrt(5.0) - 1.0)  # upper end of the 2-cycle window, in units of 1/y
OUTCOME_COLOURS = {"converged": "#4c9a2a", "periodic": "#2a6fdb", "bounded": "#e0a030",
                   "unfinished": "#999999", "diverged": "#c0392b"}


def _sweep(*args, **kwargs):
    from ..certificates.region import _sweep_function

    return _sweep_function()(*args, progress=False, **kwargs)


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _outcome_image(ax, outcome: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """Outcome labels (x along columns) as a categorical image with a legend."""
    names = list(OUTCOME_COLOURS)
    codes = np.vectorize(names.index)(outcome)
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ax.imshow(codes.T, origin="lower", aspect="auto", cmap=ListedColormap(list(OUTCOME_COLOURS.values())),
              vmin=-0.5, vmax=len(names) - 0.5, extent=(x[0], x[-1], y[0], y[-1]), interpolation="nearest")
    ax.legend(handles=[Patch(color=c, label=n) for n, c in OUTCOME_COLOURS.items() if n in set(outcome.ravel())],
              loc="upper right", fontsize=7)


def _converges_long(problem, points: np.ndarray, eta: float, steps: int, loss_tol: float = 1e-12) -> np.ndarray:
    """Re-run GD for ``steps`` from each point (slow convergence near the stability edge)."""
    out = []
    for z in points:
        traj = gd(problem, problem.unflatten(jnp.asarray(z)), eta, steps, record=("loss",), every=steps)
        out.append(traj.diverged_at is None and float(traj["loss"][-1]) <= loss_tol)
    return np.array(out, dtype=bool)


def _soundness(problem, eta, region: cz.CertifiedRegion, basin: np.ndarray, recheck_steps: int) -> dict:
    """Soundness/coverage; certified points outside the basin are re-run longer before counting them."""
    basin = basin.reshape(-1).copy()
    suspects = np.flatnonzero(region.certified & ~basin)
    if suspects.size:
        basin[suspects] = _converges_long(problem, region.points[suspects], eta, recheck_steps)
    out = region.against(basin)
    out["rechecked"] = int(suspects.size)
    return out


# ---- 1. phase diagram ---------------------------------------------------------------------------
@experiment("rank1.phase_diagram", paper=PAPER, title="Scalar phase diagram over step size and initialization")
def phase_diagram(ctx: Context) -> None:
    y = 1.0
    problem = ScalarFactorization(y)
    eta_c = rank1.critical_step(problem)
    low, high = rank1.two_cycle_window(problem)
    etas = ctx.pick(quick=np.array([0.4, 0.8, 1.08, 1.18, 1.4]),
                    default=np.concatenate([np.linspace(0.1, 0.95, 18), np.linspace(1.05, 1.22, 6),
                                            np.linspace(1.27, 1.6, 8)]))
    grid = ctx.pick(quick=np.linspace(0.1, 2.0, 8), default=np.linspace(0.05, 2.5, 36))
    steps = ctx.pick(quick=1500, default=3000)
    ds = _sweep(problem, {"eta": etas, "a": grid, "b": grid}, steps, keep_orbit=2)
    outcome = np.asarray(ds["outcome"]).astype(str)
    loss = np.asarray(ds["final_loss"], float)
    sharp = np.asarray(ds["final_sharpness"], float)
    final = np.asarray(ds["final_params"], float)
    E = etas[:, None, None] * np.ones(outcome.shape)
    # a grid point exactly on the hyperbola ab = y is a fixed point of GD at every eta (the sweep reports
    # it converged at step 0 even when it is unstable); such initializations are excluded from the claims
    on_min = np.abs(grid[:, None] * grid[None, :] - y)[None] * np.ones(outcome.shape) <= 1e-12
    below, above = (E < eta_c) & ~on_min, (E > eta_c) & ~on_min
    conv = outcome == "converged"
    at_min = conv & (loss <= 1e-12)
    good = at_min & (sharp < 2.0 / E)
    n_conv_below = int((conv & below).sum())
    ctx.holds("eta < eta_c: every converged run ends at a global minimizer with sharpness < 2/eta",
              bool(n_conv_below) and int((good & below).sum()) == n_conv_below,
              source="paper", measured=f"{int((good & below).sum())}/{n_conv_below}",
              expected=f"{n_conv_below}/{n_conv_below}")
    ctx.holds("eta > eta_c: no run converges to a global minimizer", int((at_min & above).sum()) == 0,
              source="derived", measured=int((at_min & above).sum()), expected=0)
    bounded = above & (outcome != "diverged")
    gap = float(np.max(np.abs(final[..., 0] - final[..., 1])[bounded])) if bounded.any() else np.nan
    ctx.at_most(f"eta > eta_c: every bounded run ends balanced, max |a - b| over {int(bounded.sum())} runs", gap, 1e-8,
                source="paper")
    inside = (E > low) & (E < high) & (outcome != "diverged") & ~on_min
    two = inside & (outcome == "periodic") & (np.asarray(ds["period"]) == 2)
    ctx.holds("inside the 2-cycle window every bounded run is period-2", int(two.sum()) == int(inside.sum()) > 0,
              source="paper", measured=f"{int(two.sum())}/{int(inside.sum())}",
              expected=f"{int(inside.sum())}/{int(inside.sum())}")
    orbit = np.asarray(ds["orbit"], float)  # (eta, a, b, 2, 2)
    products = np.sort(orbit[..., 0] * orbit[..., 1], axis=-1)
    errs = [np.max(np.abs(products[i][two[i]] - rank1.closed_form_products(y, e)))
            for i, e in enumerate(etas) if two[i].any()]
    ctx.at_most("inside the window the terminal products equal the closed-form 2-cycle (max abs error)",
                max(errs) if errs else np.nan, 1e-10, source="derived")
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    j = int(np.argmin(np.abs(grid - 0.5)))
    _outcome_image(axes[0], outcome[:, :, j], etas, grid)
    for ax in axes:
        ax.axvline(eta_c, color="k", lw=1, label="eta_c = 1/y")
        ax.axvspan(low, high, color="k", alpha=0.08, label="2-cycle window")
    axes[0].set(xlabel="eta", ylabel=f"a (b = {grid[j]:.2f})", title="outcome")
    for name, colour in OUTCOME_COLOURS.items():
        axes[1].plot(etas, (outcome == name).mean(axis=(1, 2)), "o-", ms=3, color=colour, label=name)
    axes[1].set(xlabel="eta", ylabel="fraction of initializations", title="outcome fractions")
    axes[1].legend(fontsize=7)
    ctx.figure(fig, "phase_diagram", f"Scalar loss y=1: GD outcome over eta and a (b fixed), {steps} steps; "
               "vertical line eta_c, shaded the closed-form 2-cycle window (1, sqrt5-1).")
    ctx.note(f"{int(on_min[0].sum())} grid initializations lie exactly on ab = y (fixed points for every eta) and are "
             "excluded from the claims.")
    ctx.table("outcome counts by step size", [
        dict(eta=float(e), **{n: int((outcome[i] == n).sum()) for n in OUTCOME_COLOURS}) for i, e in enumerate(etas)])


# ---- 2. bifurcation diagram -------------------------------------------------------------------
@experiment("rank1.bifurcation", paper=PAPER, title="Bifurcation diagram of the balanced map, period doubling")
def bifurcation(ctx: Context) -> None:
    problem = ScalarFactorization(1.0)
    etas = np.linspace(0.5, 2.1, ctx.pick(quick=161, default=801))
    transient, keep = ctx.pick(quick=2000, default=6000), 64
    s = np.full(etas.shape, 0.7)
    with np.errstate(all="ignore"):
        for _ in range(transient):
            s = rank1.balanced_map(problem, etas, s)[0]
        tail = np.empty((keep, etas.size))
        for k in range(keep):
            s = rank1.balanced_map(problem, etas, s)[0]
            tail[k] = s
    finite = np.all(np.isfinite(tail) & (np.abs(tail) < 1e6), axis=0)
    period = np.zeros(etas.size, int)
    for p in (1, 2, 4, 8, 16, 32):
        hit = (period == 0) & finite & (np.abs(tail[-1] - tail[-1 - p]) <= 1e-9 * np.abs(tail[-1]))
        period[hit] = p
    first2 = etas[np.argmax(period == 2)]
    first4 = etas[np.argmax(period == 4)]
    spacing = etas[1] - etas[0]
    low, high = rank1.two_cycle_window(problem, method="numeric")
    ctx.close("first period doubling (Floquet multiplier crosses -1, numeric) at eta*y", low, 1.0,
              source="derived", atol=1e-7)
    ctx.close("second period doubling (numeric Floquet) at eta*y", high, GOLDEN, source="derived", atol=1e-7)
    ctx.close("first period-2 attractor in the simulated diagram", first2, 1.0, source="derived", atol=2 * spacing + 5e-3)
    ctx.close("first period-4 attractor in the simulated diagram", first4, GOLDEN,
              source="derived", atol=2 * spacing + 5e-3)
    beyond = etas > 2.0
    starts = np.random.default_rng(1).uniform(0.0, 3.0, 300)
    with np.errstate(all="ignore"):
        grid_s = np.broadcast_to(starts[:, None], (starts.size, beyond.sum())).copy()
        for _ in range(500):
            grid_s = rank1.balanced_map(problem, etas[beyond][None, :], grid_s)[0]
    frac_div = float(np.mean(~np.isfinite(grid_s) | (np.abs(grid_s) > 1e6)))
    ctx.close("eta*y > 2: fraction of 300 random balanced starts s in (0, 3) that diverge", frac_div, 1.0, source="derived")
    rng = np.random.default_rng(0)
    z0 = rng.uniform(-2.0, 2.0, size=(256, 2))
    path = np.asarray(trajectories(problem, jnp.asarray(z0), jnp.asarray(2.05), 400))
    div_full = float(np.mean(~np.all(np.isfinite(path[-1]) & (np.abs(path[-1]) < 1e6), axis=1)))
    ctx.close("eta*y = 2.05: fraction of 256 random (a, b) starts that diverge", div_full, 1.0, source="derived")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(np.broadcast_to(etas, tail.shape)[:, finite].ravel(), tail[:, finite].ravel(), ",k", alpha=0.5)
    for x, lab in ((1.0, "1"), (GOLDEN, "sqrt5 - 1"), (2.0, "2")):
        ax.axvline(x, color="r", lw=0.8, ls="--")
        ax.text(x, ax.get_ylim()[1] * 0.95, lab, color="r", fontsize=8)
    ax.set(xlabel="eta * y", ylabel="s = ab / y (attractor)", title="balanced map s' = s (1 - eta (s - y))^2")
    ctx.figure(fig, "bifurcation", "Attractor of the balanced product map after the transient; dashed: "
               "period doublings at 1 and sqrt5-1 (closed form), divergence beyond 2.")
    ctx.table("located period doublings", [dict(method="numeric Floquet", first=low, second=high),
                                           dict(method="simulation grid", first=first2, second=first4),
                                           dict(method="closed form", first=1.0, second=GOLDEN)])


# ---- 3. edge of stability ---------------------------------------------------------------------
@experiment("rank1.edge_of_stability", paper=PAPER, title="Sharpness along post-critical trajectories vs 2/eta")
def edge_of_stability(ctx: Context) -> None:
    steps = ctx.pick(quick=300, default=1500)
    scalar_start, matrix_start = (0.7, 1.2), (np.array([[0.7], [0.1]]), np.array([[1.2], [-0.05]]))
    cases = [(ScalarFactorization(1.0), scalar_start, e, f"scalar, eta={e}")
             for e in ctx.pick(quick=(1.1,), default=(1.05, 1.15, 1.2))]
    if ctx.scale != "quick":
        cases.append((MatrixFactorization(np.diag([1.0, 0.5]), 1), matrix_start, 1.1, "diag(1, 0.5), eta=1.1"))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = []
    for problem, p0, eta, label in cases:
        traj = rank1.sharpness_trajectory(problem, p0, eta, steps)
        eos = rank1.edge_of_stability(traj["sharpness"], eta, tail=0.2)
        cycle = rank1.two_cycle(problem, eta)
        cyc_sharp = np.sort([float(np.linalg.eigvalsh(np.asarray(problem.hessian(problem.unflatten(jnp.asarray(z)))))[-1])
                             for z in cycle.points])
        ctx.holds(f"{label}: tail sharpness straddles 2/eta", eos.straddles,
                  source="paper", measured=f"[{eos.tail_min:.6g}, {eos.tail_max:.6g}] vs {eos.threshold:.6g}",
                  expected="min < 2/eta < max")
        err = max(abs(eos.tail_min - cyc_sharp[0]), abs(eos.tail_max - cyc_sharp[1]))
        ctx.at_most(f"{label}: tail sharpness equals the 2-cycle's two sharpness values (max abs error)", err, 1e-8,
                    source="derived")
        rows.append(dict(case=label, two_over_eta=eos.threshold, tail_min=eos.tail_min, tail_max=eos.tail_max,
                         tail_mean=eos.tail_mean, cycle_sharpness=cyc_sharp.tolist()))
        even = ax.plot(traj.steps[0::2], traj["sharpness"][0::2], lw=0.9, label=f"{label} (even / odd steps)")[0]
        ax.plot(traj.steps[1::2], traj["sharpness"][1::2], lw=0.9, color=even.get_color())
        ax.axhline(2.0 / eta, lw=0.6, ls="--", color=even.get_color())
    pre = ScalarFactorization(1.0)
    traj = rank1.sharpness_trajectory(pre, scalar_start, 0.8, steps)
    ctx.at_most("pre-critical eta=0.8: final sharpness below 2/eta (minus)", float(traj["sharpness"][-1]) - 2.0 / 0.8, 0.0,
                source="derived")
    ax.plot(traj.steps, traj["sharpness"], lw=0.7, color="k", label="scalar, eta=0.8 (pre-critical)")
    ax.axhline(2.0 / 0.8, lw=0.6, ls="--", color="k")
    ax.set(xlabel="step", ylabel="sharpness", title="sharpness along GD; dashed: 2/eta", xscale="log")
    ax.legend(fontsize=7)
    ctx.figure(fig, "edge_of_stability", "Sharpness along GD trajectories, even and odd steps drawn as two lines; "
               "post-critical runs settle on the balanced 2-cycle whose two points have sharpness on both sides of "
               "2/eta (dashed).")
    ctx.table("edge of stability", rows)


# ---- 4. X = diag(1, sigma) ------------------------------------------------------------------
def _diag_problem(sigma: float) -> MatrixFactorization:
    return MatrixFactorization(np.diag([1.0, sigma]), 1)


@experiment("rank1.sigma", paper=PAPER, title="X = diag(1, sigma): critical step, 2-cycle stability, certificate branch")
def sigma_family(ctx: Context) -> None:
    sigmas = ctx.pick(quick=np.array([0.8, 0.9]), default=np.round(np.arange(0.1, 0.95, 0.1), 2))
    rows, crit_err, win_err, agree, checks = [], 0.0, 0.0, 0, 0
    for sigma in sigmas:
        problem = _diag_problem(float(sigma))
        eta_c = rank1.critical_step(problem)
        crit_err = max(crit_err, abs(eta_c - 1.0))
        closed = rank1.two_cycle_window(problem)
        numeric = rank1.two_cycle_window(problem, method="numeric", scan=ctx.pick(quick=35, default=171))
        win_err = max(win_err, abs(numeric[0] - closed[0]), abs(numeric[1] - closed[1]))
        edge = min(GOLDEN, 1.0 / sigma)
        for eta, expect_stable in ((edge - 0.02, True), (edge + 0.02, False)):
            cycle = rank1.two_cycle(problem, eta)
            z0 = cycle.points[0] + 1e-7 * np.array([1.0, -1.0, 0.5, 0.7])
            zT = np.asarray(iterate_jit(problem, jnp.asarray(z0), jnp.asarray(eta), 4000))
            dist = float(np.min(np.linalg.norm(cycle.points - zT, axis=1))) if np.all(np.isfinite(zT)) else np.inf
            agree += (dist < 1e-9) == expect_stable == cycle.stable
            checks += 1
        rows.append(dict(sigma=float(sigma), eta_c=eta_c, window_numeric=list(numeric), window_closed=list(closed)))
    ctx.at_most("critical step size = 1 for every sigma (max |eta_c - 1|)", crit_err, 1e-9, source="derived")
    ctx.at_most("2-cycle window: numeric Floquet vs closed form (1, min(sqrt5-1, 1/sigma)), max abs diff", win_err, 1e-6,
                source="derived")
    ctx.holds("2-cycle stability (Floquet) agrees with simulation 0.02 inside / outside the boundary",
              agree == checks, source="derived", measured=f"{agree}/{checks}", expected=f"{checks}/{checks}")
    ctx.table("critical step and 2-cycle window by sigma", rows)

    eta = 0.8
    template = cz.default_template(_diag_problem(0.5))
    region = cz.Region.box([(0.6, 1.4), (-0.2, 0.2), (0.6, 1.4), (-0.2, 0.2)], description="box near the minimizers")
    branch = cz.search_branch(_diag_problem, eta, template, region, parameter="sigma", values=sigmas,
                              initial=[1.0, 1.0, 0.0], samples=ctx.pick(quick=96, default=256),
                              maxiter=ctx.pick(quick=30, default=200), verify_samples=ctx.pick(quick=128, default=1024),
                              rounds=ctx.pick(quick=1, default=2),
                              verify_options=ctx.pick(quick=dict(local_starts=1, steps=10, trajectories_checked=32),
                                                      default=dict(local_starts=4)))
    admissible = [r.report.admissible for r in branch.results]
    ctx.holds(f"derived certificate branch |Q(z)| - delta admissible at every sigma (eta={eta}, box near minimizers)",
              all(admissible), source="paper", measured=f"{sum(admissible)}/{len(admissible)}; worst inward "
              f"{max(r.report.inward_worst for r in branch.results):.3g}", expected=f"{len(admissible)}/{len(admissible)}")
    if not all(admissible):
        worst = max(branch.results, key=lambda r: r.report.inward_worst)
        ctx.note(f"The searched branch is NOT admissible at {len(admissible) - sum(admissible)} of {len(admissible)} "
                 f"sigma values: verification (sampling + local maximization) finds points on the zero set "
                 f"where I(delta; G(z)) > 0, worst {worst.report.inward_worst:.3g}. The search samples the "
                 f"template's coefficients and refines them locally: it found no admissible member of the family "
                 f"|Q(z)| - delta, which does not prove that none exists. Unlike the scalar imbalance, "
                 f"||u||^2 - ||v||^2 has no exact per-step contraction identity under GD for this template to "
                 f"inherit. The paper's C^1 admissible branch (its formula is not available) is not reproduced here.")
    jumps = np.linalg.norm(np.diff(branch.coefficients, axis=0), axis=1)
    ctx.at_most("branch continuity of the searched template (admissible or not, see above): max change of the "
                "unit coefficient vector between neighbouring sigma", float(jumps.max()), 0.2, source="derived")
    ctx.table(f"certificate branch by continuation in sigma: {template.formula}", branch.as_rows())
    ctx.note(f"Branch divided first differences {np.round(branch.first_differences, 4).tolist()}, second "
             f"differences {np.round(branch.second_differences, 3).tolist() if len(sigmas) > 2 else []}. "
             "Derived template (not the paper's certificate).")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(template.base):
        ax.plot(sigmas, branch.coefficients[:, i], "o-", label=name)
    ax.set(xlabel="sigma", ylabel="coefficient", title="certificate branch |Q(z)| - delta by continuation")
    ax.legend(fontsize=7)
    ctx.figure(fig, "certificate_branch", "Coefficients of the searched derived certificate along sigma (warm-started).")


# ---- 5. quartic loss --------------------------------------------------------------------------
QUARTICS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


@experiment("rank1.quartic", paper=PAPER, title="Quartic loss: critical step, normal form, certificate threshold")
def quartic(ctx: Context) -> None:
    mus = ctx.pick(quick=(0.0, 0.1, 0.3), default=QUARTICS)
    crit_err, rows = 0.0, []
    for mu in mus:
        problem = ScalarFactorization(1.0, mu)
        crit_err = max(crit_err, abs(rank1.critical_step(problem) - 1.0))
        eps = 1e-4
        side = 1.0 if mu < 0.25 else -1.0
        cycles = rank1.balanced_two_cycles(problem, 1.0 + side * eps)
        small = cycles[0] if cycles else None
        predicted = eps / abs(1.0 - 4.0 * mu)
        amp = float(np.mean((small.products - 1.0) ** 2)) if small is not None else np.nan
        rows.append(dict(mu=mu, side="eta = 1 + eps" if side > 0 else "eta = 1 - eps", amplitude_sq=amp,
                         normal_form=predicted, stable=None if small is None else small.stable))
        ctx.close(f"mu={mu}: small 2-cycle (s-1)^2 vs normal form (eta-1)/(1-4mu) at eta = 1{'+' if side > 0 else '-'}1e-4",
                  amp, predicted, source="derived", rtol=0.05)
        ctx.holds(f"mu={mu}: the small 2-cycle is {'stable (supercritical)' if mu < 0.25 else 'unstable (subcritical)'}",
                  small is not None and small.stable == (mu < 0.25),
                  source="derived", measured=None if small is None else small.stable,
                  expected=mu < 0.25)
    ctx.at_most("critical step size = 1/y for every mu (max |eta_c - 1|)", crit_err, 1e-9, source="derived")
    scan = ctx.pick(quick=35, default=171)
    lows = {mu: rank1.two_cycle_window(ScalarFactorization(1.0, mu), method="numeric", scan=scan)[0] for mu in mus if mu > 0}
    sub = [mu for mu in lows if mu > 0.25]
    sup = [mu for mu in lows if mu < 0.25]
    ctx.at_most("mu < 1/4: a stable 2-cycle first appears at eta_c (max |eta_low - 1|)",
                max(abs(lows[m] - 1.0) for m in sup), 1e-6, source="derived")
    ctx.at_most("mu > 1/4: a stable (large) 2-cycle already exists below eta_c (max eta_low - 1)",
                max(lows[m] - 1.0 for m in sub), -1e-3, source="derived")
    ctx.table("normal form of the period doubling at eta = 1", rows)
    ctx.table("lower end of the stable 2-cycle window", [dict(mu=m, eta_low=v) for m, v in lows.items()])

    eta = 0.8
    base = ScalarFactorization(1.0, 0.0)
    cert = cz.imbalance_certificate(base)
    grid = np.linspace(0.05, 2.5, ctx.pick(quick=16, default=40))
    box = [(grid[0], grid[-1])] * 2
    ds = _sweep(ScalarFactorization(1.0, 0.0), {"eta": np.array([eta]), "quartic": np.asarray(mus, float),
                                                 "a": grid, "b": grid}, ctx.pick(quick=1500, default=4000))
    table = []
    for i, mu in enumerate(mus):
        problem = ScalarFactorization(1.0, mu)
        region = cz.contraction_region(problem, eta, box)
        certified = cert.certified_region(base, eta, {"a": grid, "b": grid}, region=region)
        in_region = region.contains(certified.points)
        sub_ds = ds.isel(eta=0, quartic=i)
        basin = (np.asarray(sub_ds["outcome"]).astype(str) == "converged") & (np.asarray(sub_ds["final_loss"]) <= 1e-12)
        res = _soundness(problem, eta, certified, basin, ctx.pick(quick=20000, default=50000))
        outside = in_region & ~basin.reshape(-1)
        emp = float(np.min(certified.state[outside])) if outside.any() else float("inf")
        table.append(dict(mu=mu, threshold=certified.threshold, empirical_threshold=emp, **res))
        if mu == 0.0:
            ctx.holds("mu=0: the imbalance certificate with threshold stable_imbalance(eta) is sound",
                      res["sound"], source="paper", measured=res["soundness"], expected=1.0)
        else:
            emp_thr = min(emp, certified.threshold)
            cov = float(np.sum(in_region & (certified.state < emp_thr) & basin.reshape(-1))) / max(1, int(basin.sum()))
            table[-1]["coverage_at_empirical_threshold"] = cov
            ctx.at_least(f"mu={mu}: the mu=0 certificate stays predictive with an empirical threshold "
                         f"(min(stable_imbalance, {emp:.4g})): coverage of the basin", cov, 0.05, source="paper")
    ctx.table(f"mu=0 imbalance certificate vs empirical basins at eta={eta} (grid {grid.size}^2)", table)
    ctx.note("The certificate is the mu=0 one: I = |a^2-b^2| - delta with threshold stable_imbalance(mu=0, eta); the "
             "region is eta|psi_mu| <= sqrt2 for each mu. Empirical threshold: the smallest state among region grid "
             "points that do not converge to a global minimizer (inf when all converge); below it the certificate is sound on the "
             "grid by construction, and the claim is that it still certifies a non-trivial part of the basin. Rows with "
             "sound = false show where the mu=0 threshold itself stops being sound. Derived certificate, not the paper's.")


# ---- 6. certified region vs basin ------------------------------------------------------------
@experiment("rank1.certified_region", paper=PAPER, title="Certified region vs empirical basin (scalar loss)")
def certified_region(ctx: Context) -> None:
    problem = ScalarFactorization(1.0)
    etas = ctx.pick(quick=(0.6,), default=(0.3, 0.6, 0.9))
    grid = np.linspace(0.02, 3.0, ctx.pick(quick=16, default=48))
    box = [(grid[0], grid[-1])] * 2
    ds = _sweep(problem, {"eta": np.asarray(etas, float), "a": grid, "b": grid}, ctx.pick(quick=1000, default=4000))
    cert = cz.imbalance_certificate(problem)
    plt = _plt()
    fig, axes = plt.subplots(1, len(etas), figsize=(4.2 * len(etas), 4), squeeze=False)
    rows = []
    for i, eta in enumerate(etas):
        region = cz.contraction_region(problem, eta, box)
        report = cert.verify(problem, eta, region, samples=ctx.pick(quick=256, default=2048),
                             local_starts=ctx.pick(quick=1, default=6), steps=ctx.pick(quick=10, default=40),
                             trajectories_checked=ctx.pick(quick=32, default=256))
        ctx.holds(f"eta={eta}: imbalance certificate admissible on the contraction region (sampling + local max)",
                  report.admissible, source="derived", measured=f"worst inward {report.inward_worst:.3g}, worst increase "
                  f"{report.monotone_worst:.3g}", expected="<= 1e-10")
        cr = cert.certified_region(problem, eta, {"a": grid, "b": grid}, region=region)
        sub = ds.isel(eta=i)
        basin = (np.asarray(sub["outcome"]).astype(str) == "converged") & (np.asarray(sub["final_loss"]) <= 1e-12)
        res = _soundness(problem, eta, cr, basin, ctx.pick(quick=20000, default=50000))
        ctx.holds(f"eta={eta}: sound (every certified initialization converges to a global minimizer)", res["sound"],
                  source="paper", measured=res["soundness"], expected=1.0)
        rows.append(dict(eta=eta, threshold=cr.threshold, **res, admissible=report.admissible))
        ax = axes[0, i]
        ax.contourf(grid, grid, basin.reshape(grid.size, grid.size).T, levels=[0.5, 1.5], colors=["#a8d5a2"])
        ax.contour(grid, grid, cr.certified.reshape(grid.size, grid.size).T.astype(float), levels=[0.5], colors="k")
        ax.set(xlabel="a", ylabel="b", title=f"eta={eta}: coverage {res['coverage']:.2f}")
    ctx.figure(fig, "certified_region", "Green: empirical basin of global minimizers (sweep); black contour: "
               "certified initializations (|a^2-b^2| < stable_imbalance(eta), eta|psi| <= sqrt2). Derived certificate.")
    ctx.table("certified region vs basin", rows)
