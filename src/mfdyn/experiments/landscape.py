"""Regularized deep matrix factorization (seed 002): census and classification of all critical points.

The classification rules and formulas are [derived] (MATH.md §2): every experiment checks them numerically
rather than assuming them. Experiments:
1. ``landscape.census``: random-start Levenberg-Marquardt on ``grad = 0`` finds exactly the enumerated classes;
2. ``landscape.rules``: rule kinds agree with Hessian / higher-order tests on every class (threshold cases too);
3. ``landscape.bifurcation``: critical values of the scalar problem against ``y / lambda^(1/(2L-2))``;
4. ``landscape.slices``: loss on 2-D slices through the four kinds of critical points;
5. ``landscape.gd_ends``: where GD from random initializations ends (sweep engine), classified.
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np

from ..landscape import target_with_singular_values
from ..problems import DeepFactorization
from .registry import Context, experiment

PAPER = "A Complete Loss Landscape Analysis of Regularized Deep Matrix Factorization (seed 002, arXiv 2506.20344)"


def census_instances(count: int, seed: int = 0) -> list[tuple[str, DeepFactorization]]:
    """``count`` small random instances cycling over L = 2, 3, 4 and the structural cases of MATH.md §2:
    square distinct, rectangular (both ways), hidden bottleneck, tied values, a zero singular value.
    Per-layer ``lambda_l`` uniform in [0.6, 1.4]; singular values in units of ``lambda^(1/(2L-2))``."""
    from ..landscape import thresholds

    rng = np.random.default_rng(seed)
    kinds = ("square", "wide", "tall", "bottleneck", "tied", "zero")
    out = []
    for i in range(count):
        L = (2, 3, 4)[i % 3]
        kind = kinds[(i // 3) % len(kinds)]
        wd = rng.uniform(0.6, 1.4, size=L)
        unit = thresholds(L, wd).y_star
        ys = np.sort(rng.uniform(0.6, 2.2, size=3))[::-1] * unit
        shape, widths = (3, 3), None
        if kind == "wide":
            shape, ys = (2, 3), ys[:2]
        elif kind == "tall":
            shape, ys = (3, 2), ys[:2]
        elif kind == "bottleneck":
                widths = (3, 2) + (3,) * (L - 1)
        elif kind == "tied":
            ys[1] = ys[0]
        elif kind == "zero":
            ys[2] = 0.0
        Y = target_with_singular_values(ys, shape, rng)
        out.append((f"{i}:L={L},{kind}", DeepFactorization(Y, L, widths=widths, weight_decay=wd)))
    return out


def threshold_instances() -> list[tuple[str, DeepFactorization]]:
    """Instances exactly at the thresholds: ``y = y*`` (double roots, non-strict saddles), ``y = ybar``
    (tied global minima), and ``L = 2`` with ``y = sqrt(lambda)`` (degenerate minimizers)."""
    from ..landscape import thresholds

    out = []
    for L in (3, 4):
        wd = np.linspace(0.8, 1.2, L)
        th = thresholds(L, wd)
        out.append((f"L={L},y=y*", DeepFactorization(np.diag([1.6 * th.y_bar, th.y_star, 0.5 * th.y_star]), L, weight_decay=wd)))
        out.append((f"L={L},tied y*", DeepFactorization(np.diag([th.y_star, th.y_star]), L, weight_decay=wd)))
        out.append((f"L={L},y=ybar", DeepFactorization(np.diag([1.5 * th.y_bar, th.y_bar, 0.9 * th.y_bar]), L, weight_decay=wd)))
    th2 = thresholds(2, [0.9, 1.1])
    out.append(("L=2,y=sqrt(lam)", DeepFactorization(np.diag([2.0 * th2.y_star, th2.y_star]), 2, weight_decay=[0.9, 1.1])))
    return out


# ---------------------------------------------------------------------------------------------------------------
@experiment("landscape.census", paper=PAPER, title="Census completeness: random-start search finds exactly the enumerated classes")
def census_completeness(ctx: Context) -> None:
    from ..landscape import critical_points
    from ..landscape.classify import NotInCensusError, class_key
    from ..landscape.kernels import split
    from ..landscape.search import random_starts, solve_gradient
    from ..landscape.spectrum import spectrum

    n_instances = ctx.pick(quick=3, default=20)
    n_starts = ctx.pick(quick=1000, default=1000)
    rows, missing_total, extra_total, classes_total, found_total = [], 0, 0, 0, 0
    converged_total = starts_total = 0
    for label, problem in census_instances(n_instances):
        spec = spectrum(problem)
        t0 = time.perf_counter()
        census = {p.key: p for p in critical_points(problem)}
        t_census = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = solve_gradient(spec, random_starts(spec, n_starts, seed=len(rows)))
        t_search = time.perf_counter() - t0
        found, outside = collections.Counter(), 0
        for x in res.points[res.converged]:
            try:
                found[class_key(spec, split(x, spec.widths))] += 1
            except NotInCensusError:
                outside += 1
        outside += sum(n for key, n in found.items() if key not in census)
        hit = sum(1 for key in census if key in found)
        missing = [census[k] for k in census if k not in found]
        missing_total += len(missing)
        extra_total += outside
        classes_total += len(census)
        found_total += hit
        converged_total += int(res.converged.sum())
        starts_total += n_starts
        rows.append({
            "instance": label, "shape": "x".join(map(str, problem.Y.shape)), "widths": ",".join(map(str, problem.widths)),
            "classes": len(census), "found": hit, "not in census": outside,
            "converged": f"{res.converged.mean():.3f}", "census ms": round(1e3 * t_census, 2),
            "search s": round(t_search, 2),
            "missed": "; ".join(f"{m.kind} {m.matching}{m.roots}" for m in missing)[:120],
        })
    ctx.table(f"Random-start search ({n_starts} starts per instance) against the census", rows)
    ctx.holds("every numerically critical point (||grad|| <= 1e-11 max(1,||Y||)) belongs to an enumerated class",
              extra_total == 0, source="paper", measured=f"{extra_total} outside of {converged_total} converged",
              expected="0 outside")
    ctx.holds("every enumerated class is found by the random-start search", missing_total == 0,
              source="paper", measured=f"{found_total} of {classes_total} classes found",
              expected=f"{classes_total} of {classes_total}")
    ctx.at_least("fraction of random starts converging to a critical point", converged_total / starts_total, 0.9,
                 source="derived")
    ctx.note(f"{len(rows)} instances (L = 2, 3, 4; square, rectangular, bottleneck, tied, zero singular value), "
             f"{n_starts} starts each: Gaussian, random low-rank, and Gaussian pre-descended by GD (search.py).")


@experiment("landscape.rules", paper=PAPER, title="Classification rules vs dense Hessian and higher-order tests")
def rules_agreement(ctx: Context) -> None:
    from ..landscape import RuleMismatchError, count_critical_points, critical_points, no_nonstrict_saddles
    from ..landscape.census import CensusContext
    from ..landscape.numerics import CRITICAL_RTOL, verify_point
    from ..landscape.spectrum import spectrum

    instances = census_instances(ctx.pick(quick=3, default=20)) + threshold_instances()[: ctx.pick(quick=3, default=None)]
    kinds, mismatches, rows = collections.Counter(), [], []
    worst_grad, count_ok, nonstrict_ok, degenerate = 0.0, 0, 0, 0
    for label, problem in instances:
        spec = spectrum(problem)
        points = critical_points(problem)
        census = CensusContext.of(problem)
        for p in points:
            try:
                verdict = verify_point(problem, p, census=census)
                worst_grad = max(worst_grad, verdict.grad_norm / spec.scale)
                degenerate += verdict.degenerate_dim > 0
            except RuleMismatchError as exc:
                mismatches.append(f"{label}: {exc}")
            kinds[p.kind] += 1
        count_ok += count_critical_points(problem) == len(points)
        has_nonstrict = any(p.kind == "non_strict_saddle" for p in points)
        nonstrict_ok += no_nonstrict_saddles(problem)[0] == (not has_nonstrict)
        rows.append({"instance": label, "classes": len(points),
                     **{k: sum(q.kind == k for q in points) for k in ("global_min", "local_min", "non_strict_saddle", "strict_saddle")}})
    total = sum(kinds.values())
    ctx.table("Classes by rule kind (each cross-checked numerically)", rows)
    ctx.holds("rule kind == numerical kind (Hessian, reduced Hessian off the symmetry orbit, higher-order probes) "
              "on every class", not mismatches,
              source="derived", measured=f"{len(mismatches)} disagreements in {total} classes",
              expected="0 disagreements")
    for m in mismatches[:10]:
        ctx.note("DISAGREEMENT: " + m)
    ctx.at_most("max ||grad|| / max(1, ||Y||_2) at the representatives", worst_grad, CRITICAL_RTOL, source="derived")
    ctx.holds("closed-form count == number of enumerated classes", count_ok == len(instances),
              source="derived", measured=f"{count_ok} of {len(instances)} instances",
              expected=f"{len(instances)} of {len(instances)}")
    ctx.holds("no_nonstrict_saddles(problem) == (no enumerated class is a non-strict saddle)", nonstrict_ok == len(instances),
              source="derived", measured=f"{nonstrict_ok} of {len(instances)} instances",
              expected=f"{len(instances)} of {len(instances)}")
    ctx.note(f"{total} classes: {dict(kinds)}; {degenerate} needed the higher-order test (Hessian PSD, degenerate "
             "beyond the symmetry orbit).")


@experiment("landscape.bifurcation", paper=PAPER, title="Census of the scalar problem against y / lambda^(1/(2L-2)): fold at y*, exchange at ybar")
def bifurcation(ctx: Context) -> None:
    import matplotlib.pyplot as plt
    from scipy.optimize import brentq, minimize_scalar

    from .. import plot  # noqa: F401  (selects the Agg backend)
    from ..landscape import positive_roots, thresholds
    from ..landscape.roots import g_poly

    lam = 1.0
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    fold_err, bar_err, root_err = 0.0, 0.0, 0.0
    rows = []
    for ax, L in zip(axes, (2, 3, 4)):
        th = thresholds(L, [lam] * L)
        unit = lam ** (1.0 / (2 * L - 2))
        xs = np.linspace(0.02, 3.2, ctx.pick(quick=120, default=400))
        zero, low, high = [], [], []
        for x in xs:
            y = x * unit
            roots = positive_roots(y, th)
            zero.append(0.5 * y**2)
            costs = {r.label: 0.5 * y**2 + r.cost for r in roots}
            low.append(costs.get("t1", costs.get("s*", np.nan)) if L > 2 else np.nan)
            high.append(costs.get("t2", costs.get("soft", np.nan)))
            poly = np.zeros(2 * L - 1)  # coefficients of g, highest degree first
            poly[0] = 1.0
            poly[L] -= math.sqrt(lam) * y
            poly[-1] += lam
            ref = sorted(r.real for r in np.roots(poly) if abs(r.imag) < 1e-7 and r.real > 0)
            if len(ref) == len(roots):
                root_err = max([root_err] + [abs(a - b.sigma) / b.sigma for a, b in zip(ref, roots)])
            elif abs(y - th.y_star) > 1e-3 * th.y_star:  # np.roots blurs (near-)double roots
                root_err = np.inf
        ax.plot(xs, zero, color="0.3", label="unmatched (s = 0)")
        if L > 2:
            ax.plot(xs, low, color="C3", label="t1 (strict saddle)")
        ax.plot(xs, high, color="C0", label="t2 (minimizer)" if L > 2 else "soft threshold")
        ax.axvline(th.y_star / unit, color="C2", ls="--", lw=1, label="y*")
        if L > 2:
            ax.axvline(th.y_bar / unit, color="C1", ls=":", lw=1, label="ybar")
        ax.set_title(f"L = {L}")
        ax.set_xlabel("y / lambda^(1/(2L-2))")
        ax.set_ylabel("critical value of the loss")
        ax.legend(fontsize=7)
        if L > 2:  # independent numerics: fold = least y with min_s g(s) <= 0; exchange = cost(t2) = 0
            gmin = lambda y: minimize_scalar(lambda s: g_poly(s, y, L, lam), bounds=(1e-9, 10.0), method="bounded",  # noqa: E731
                                             options=dict(xatol=1e-12)).fun
            fold = brentq(gmin, 0.5 * th.y_star, 2 * th.y_star, xtol=1e-14)
            exchange = brentq(lambda y: [r for r in positive_roots(y, th) if r.label == "t2"][0].cost,
                              th.y_star * (1 + 1e-9), 4 * th.y_bar, xtol=1e-14)
            fold_err = max(fold_err, abs(fold - th.y_star) / th.y_star)
            bar_err = max(bar_err, abs(exchange - th.y_bar) / th.y_bar)
            rows.append({"L": L, "y* formula": th.y_star, "fold (numerical)": fold, "ybar formula": th.y_bar,
                         "exchange (numerical)": exchange, "s*": th.s_star})
    ctx.figure(fig, "bifurcation", "Critical values of the scalar problem against y: the t1/t2 branches are born "
               "in a fold at y* (L >= 3) and t2 takes over the global minimum from s = 0 at ybar.")
    ctx.table("Thresholds: formula vs independent numerics (lambda = 1)", rows)
    ctx.at_most("fold location: max relative error of y* formula vs numerical fold (L = 3, 4)", fold_err, 1e-7,
                source="derived")
    ctx.at_most("global exchange: max relative error of ybar formula vs cost(t2) = 0 (L = 3, 4)", bar_err, 1e-9,
                source="derived")
    ctx.at_most("bracketed roots vs numpy polynomial roots: max relative error", root_err, 1e-6, source="derived")


@experiment("landscape.slices", paper=PAPER, title="Loss on 2-D slices through the origin, a minimizer, a strict and a non-strict saddle")
def slices(ctx: Context) -> None:
    import matplotlib.pyplot as plt

    from .. import plot  # noqa: F401
    from ..landscape import critical_points, thresholds
    from ..landscape.kernels import loss_grad
    from ..landscape.numerics import dense_hessian, flat, loss_and_grad
    from ..landscape.representatives import layers
    from ..landscape.spectrum import spectrum

    L, lam = 3, 1.0
    th = thresholds(L, lam)
    problem = DeepFactorization(np.diag([3.0, th.y_star]), L, weight_decay=lam)
    spec = spectrum(problem)
    points = critical_points(problem, hessian_eigs=True)
    pick = {
        "origin (local min)": next(p for p in points if not p.matching),
        "global minimizer": next(p for p in points if p.kind == "global_min"),
        "strict saddle": next(p for p in points if p.kind == "strict_saddle"),
        "non-strict saddle": next(p for p in points if p.kind == "non_strict_saddle"),
    }
    n = ctx.pick(quick=31, default=61)
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8))
    claims = {}
    for ax, (name, p) in zip(axes, pick.items()):
        x0 = flat(p.params)
        l0 = loss_and_grad(spec, x0)[0]
        eigs, vecs = np.linalg.eigh(dense_hessian(spec, p.params))
        if name == "strict saddle":
            d1 = vecs[:, 0]
        elif name == "non-strict saddle":  # tangent of the balanced curve sigma_i -> sigma_i + t of the s* component
            i = p.roots.index("s*")
            s = p.sigma.copy()
            s[i] += 1e-6
            d1 = (flat(layers(spec, p.matching, s)) - x0) / 1e-6
        else:
            d1 = rng.standard_normal(x0.size)
        d1 /= np.linalg.norm(d1)
        d2 = rng.standard_normal(x0.size)
        d2 -= d2 @ d1 * d1
        d2 /= np.linalg.norm(d2)
        r = 0.6 if name != "non-strict saddle" else 0.3
        ts = np.linspace(-r, r, n)
        grid = x0[None, None, :] + ts[:, None, None] * d1 + ts[None, :, None] * d2  # (n, n, coords)
        Z = loss_grad(grid.reshape(-1, x0.size), spec.Y, spec.widths, spec.weight_decay)[0].reshape(n, n)
        cs = ax.contourf(ts, ts, Z.T - l0, levels=30, cmap="viridis")
        fig.colorbar(cs, ax=ax)
        ax.plot(0, 0, "r*")
        ax.set_title(f"{name}\n({p.kind}, loss {l0:.3f})", fontsize=9)
        ax.set_xlabel("negative-curvature dir." if name == "strict saddle" else
                      "balanced-curve dir." if name == "non-strict saddle" else "random dir.")
        line = loss_grad(x0[None, :] + ts[:, None] * d1, spec.Y, spec.widths, spec.weight_decay)[0] - l0
        claims[name] = (Z.min() - l0, line, ts, eigs)
    # L = 2 scalar landscape in (w1, w2)
    y2 = 2.0
    w = np.linspace(-2.2, 2.2, 201)
    W1, W2 = np.meshgrid(w, w, indexing="ij")
    F = 0.5 * (W1 * W2 - y2) ** 2 + 0.5 * (W1**2 + W2**2)
    cs = axes[4].contourf(w, w, F.T, levels=40, cmap="viridis")
    fig.colorbar(cs, ax=axes[4])
    m = math.sqrt(y2 - 1.0)
    axes[4].plot([m, -m], [m, -m], "r*", [0], [0], "wx")
    axes[4].set_title("L = 2 scalar landscape, y = 2, lambda_l = 1\n(minima at w1 = w2 = +-sqrt(y - 1), saddle at 0)", fontsize=9)
    axes[4].set_xlabel("w1")
    axes[4].set_ylabel("w2")
    ctx.figure(fig, "slices", f"Loss minus its critical value on 2-D slices (L = 3, Y = diag(3, y*), lambda = 1): "
               "through the origin, the global minimizer, a strict saddle along its negative-curvature direction and a "
               "non-strict saddle along its balanced curve; right: the L = 2 scalar landscape.")
    for name in ("origin (local min)", "global minimizer"):
        ctx.at_least(f"{name}: least loss on the slice minus the critical value", claims[name][0], 0.0,
                     source="derived", tol=1e-12)
    zmin, line, ts, eigs = claims["strict saddle"]
    h = ts[1] - ts[0]
    c = n // 2
    curvature = (line[c + 1] - 2 * line[c] + line[c - 1]) / h**2
    ctx.close("strict saddle: curvature of the slice along the eigenvector vs the smallest Hessian eigenvalue",
              curvature, eigs[0], source="derived", rtol=2e-2)
    _, line, ts, eigs = claims["non-strict saddle"]
    ctx.holds("non-strict saddle: loss decreases on one side along the balanced curve direction, increases on the other "
              "(cubic, Hessian PSD)", bool(line[c - 1] < -1e-12 < 1e-12 < line[c + 1] and eigs[0] > -1e-9),
              source="derived",
              measured=f"l(-h) - l0 = {line[c - 1]:.2e}, l(+h) - l0 = {line[c + 1]:.2e}, min eig {eigs[0]:.1e}",
              expected="l(-h) < l0 < l(+h), min eig >= -1e-9")
    i_min = np.unravel_index(np.argmin(F), F.shape)
    ctx.close("L = 2 scalar landscape: |w1 w2| at the grid minimum vs y - sqrt(lambda)", abs(W1[i_min] * W2[i_min]), y2 - 1.0,
              source="derived", atol=2 * (w[1] - w[0]) * 2.2)


@experiment("landscape.gd_ends", paper=PAPER, title="Where GD from random initializations ends: every end point classified")
def gd_ends(ctx: Context) -> None:
    import matplotlib.pyplot as plt

    from .. import plot  # noqa: F401
    from ..landscape import NotInCensusError, classify, critical_points
    from ..sweep import sweep

    problem = DeepFactorization(np.diag([3.0, 2.5, 1.9]), 3, weight_decay=1.0)
    census = critical_points(problem)
    labels = {p.key: f"{p.kind}: {list(p.matching)}" for p in census}
    scales = np.array(ctx.pick(quick=[0.1, 1.0], default=[0.01, 0.1, 0.3, 0.6, 1.0]))
    seeds = np.arange(ctx.pick(quick=8, default=64))
    steps = ctx.pick(quick=6000, default=20000)
    eta = 0.02
    ds = sweep(problem, {"scale": scales, "seed": seeds, "eta": np.array([eta])}, steps, tol=1e-13,
               progress=False, sharpness=False)
    finals = ds["final_params"].values.reshape(len(scales), len(seeds), -1)
    outcomes = ds["outcome"].values.reshape(len(scales), len(seeds))
    per_scale, ends = [], collections.Counter()
    strict, unclassified, unconverged, diverged = 0, 0, 0, 0
    for i, scale in enumerate(scales):
        counts = collections.Counter()
        per_scale.append(counts)
        for j in range(len(seeds)):
            if outcomes[i, j] == "diverged":
                diverged += 1
                counts["diverged"] += 1
                continue
            params = problem.unflatten(finals[i, j])
            try:
                p = classify(problem, params, grad_rtol=1e-6)
            except (NotInCensusError, ValueError):
                unclassified += 1
                counts["unclassified"] += 1
                continue
            unconverged += outcomes[i, j] != "converged"
            strict += p.kind == "strict_saddle"
            counts[labels[p.key]] += 1
            ends[labels[p.key]] += 1
    columns = sorted(set().union(*per_scale))
    table = [{"init scale": float(scale), **{k: counts.get(k, 0) for k in columns}} for scale, counts in zip(scales, per_scale)]
    ctx.table(f"End points of GD (eta = {eta}, {steps} steps, {len(seeds)} seeds per scale), Y = diag(3, 2.5, 1.9), L = 3, "
              "lambda = 1", table)
    finite = finals.shape[0] * finals.shape[1] - diverged
    ctx.holds("no GD run ends at a strict saddle", strict == 0,
              source="derived", measured=f"{strict} of {finite} finite runs", expected="0")
    ctx.holds("every finite GD end point is critical (||grad|| <= 1e-6 max(1,||Y||)) and in an enumerated class",
              unclassified == 0, source="paper", measured=f"{unclassified} of {finite} unclassified", expected="0")
    ctx.note(f"{diverged} runs diverged (excluded from the classification).")
    ctx.note(f"sweep outcomes not 'converged' (to tol 1e-13) among classified runs: {unconverged}")
    names = sorted(ends)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bottom = np.zeros(len(scales))
    for name in names + (["diverged"] if diverged else []):
        vals = np.array([row.get(name, 0) for row in table], dtype=float) / len(seeds)
        ax.bar([str(s) for s in scales], vals, bottom=bottom, label=name)
        bottom += vals
    ax.set_xlabel("initialization scale")
    ax.set_ylabel("fraction of runs")
    ax.legend(fontsize=7)
    ctx.figure(fig, "gd_ends", "Distribution of GD end points over the local minima, by initialization scale "
               "(mfdyn.sweep over seeds; each end point mapped to its census class).")
