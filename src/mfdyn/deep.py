"""Four-layer matrix factorization: the tracked quantities, the stages and the plateau law (MATH.md §4).

The problem family itself is :class:`mfdyn.DeepFactorization` (``mfdyn.problems.deep``); this module
holds the analysis of seed 004. Notation: ``W = W_4 W_3 W_2 W_1`` (the end-to-end product), all layers
square ``d x d``, ``X^H`` the conjugate transpose (the transpose for real layers).

- skew(-Hermitian) error ``||W_1 - W_2^{-1} W_3^H W_4^H||_F`` and Hermitian main term
  ``lambda_min(M^H M)``, ``M = W_1 + W_2^{-1} W_3^H W_4^H`` [paper; formulas as in MATH.md §4];
- balanced regularizer ``(a/4) sum_j ||W_j W_j^H - W_{j+1}^H W_{j+1}||^2`` [paper];
- real obstruction: ``sign det W`` and ``sigma_min(W + (W W^H)^{1/2})``, which vanishes iff the polar
  factor of ``W`` has eigenvalue -1 (for real ``W``: iff ``det W < 0``, generically) [derived];
- :func:`stages`: alignment end, saddle-avoidance end and local linear rate of a recorded run;
- :func:`plateau_time`: balanced aligned per-mode gradient-flow time for ``N = 4`` [derived].

Every quantity is registered as an observable, so ``mfdyn.gd(..., record=("skew_error", ...))``
records it along a run. Outside ``jit`` a singular ``W_2`` raises :class:`mfdyn.InputError`; inside
``jit`` (recorded along a run) the value is NaN there instead.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _lapack as lapack
from . import _validate as v
from .dynamics import gd
from .errors import InputError
from .observables import observable
from .problems.deep import DeepFactorization
from .trajectory import Trajectory

#: ``W_2`` counts as singular when ``sigma_min(W_2) <= SINGULAR_RTOL * sigma_max(W_2)``.
SINGULAR_RTOL = 1e-13


# ---- argument checks (static: they hold inside jit too) ---------------------------------------
def _deep(problem: Any, quantity: str) -> DeepFactorization:
    if not isinstance(problem, DeepFactorization):
        raise InputError(f"problem must be a DeepFactorization for {quantity}, got {type(problem).__name__}")
    return problem


def _four_square(problem: Any, quantity: str) -> DeepFactorization:
    """``quantity`` is defined for four square layers only."""
    problem = _deep(problem, quantity)
    if problem.depth != 4:
        raise InputError(f"depth must be 4 for {quantity} (a four-layer quantity), got depth={problem.depth}")
    if len(set(problem.widths)) != 1:
        raise InputError(f"widths must all be equal (square layers) for {quantity}, got widths={problem.widths}")
    return problem


def _square_product(problem: Any, quantity: str) -> DeepFactorization:
    problem = _deep(problem, quantity)
    if problem.widths[0] != problem.widths[-1]:
        raise InputError(
            f"widths must start and end with the same size (square product W) for {quantity}, got widths={problem.widths}"
        )
    return problem


# ---- skew error and Hermitian main term ---------------------------------------------------------
def _power_of_two_scale(x: jax.Array) -> jax.Array:
    """A power of two within a factor 2 of ``max |x|`` (1 if ``x`` is zero or not finite): dividing by
    it is exact, so the rounding of everything computed from the scaled matrix is unchanged."""
    m = jnp.max(jnp.abs(x))
    exponent = jnp.where(jnp.isfinite(m) & (m > 0), jnp.frexp(m)[1], 0)
    return jnp.ldexp(jnp.asarray(1.0, jnp.float64), exponent)


def _w2_inv_w3h_w4h(params: Any) -> tuple[jax.Array, jax.Array]:
    """``(W_2^{-1} W_3^H W_4^H, singular)`` by a linear solve; ``singular`` flags a singular ``W_2``.

    Computed on the layers scaled by powers of two (:func:`_power_of_two_scale`), then scaled back:
    the same bits wherever nothing overflows, and no overflow in ``W_3^H W_4^H`` for layers whose
    result is representable (layers of 1e200: the product is 1e400, ``W_2^{-1}`` brings it back)."""
    W1, W2, W3, W4 = params
    c2, c3, c4 = (_power_of_two_scale(W) for W in (W2, W3, W4))
    sv = jnp.linalg.svd(W2 / c2, compute_uv=False)  # (d,), descending
    singular = sv[-1] <= SINGULAR_RTOL * sv[0]
    rhs = (W3 / c3).conj().T @ (W4 / c4).conj().T  # (d, d)
    return jnp.linalg.solve(W2 / c2, rhs) * ((c3 / c2) * c4), singular


def _frobenius(x: jax.Array) -> jax.Array:
    """``||x||_F`` without overflow or underflow of the squares (scaled by a power of two: exact)."""
    c = _power_of_two_scale(x)
    return c * jnp.sqrt(jnp.sum(jnp.abs(x / c) ** 2))


def _guard_singular(params: Any, singular: jax.Array, quantity: str) -> None:
    if not v.is_traced(params) and bool(singular):
        raise InputError(
            f"params[1] (W_2) is singular (sigma_min <= {SINGULAR_RTOL:g} sigma_max), so {quantity} "
            "(which uses W_2^{-1}) is undefined"
        )


@observable("skew_error")
def skew_error(problem: Any, params: Any) -> jax.Array:
    """Skew(-Hermitian) error ``||W_1 - W_2^{-1} W_3^H W_4^H||_F`` (MATH.md §4).

    Zero iff ``W_2 W_1 = (W_4 W_3)^H``; then the product ``W = (W_4 W_3)(W_4 W_3)^H`` is Hermitian PSD
    (not conversely: ``W_1 = 2I`` and the other layers ``I`` give ``W = 2I`` and an error of ``sqrt 3``).
    ``W_2^{-1}`` enters through a linear solve.
    """
    problem = _four_square(problem, "skew_error")
    params = problem.check_params(params)
    B, singular = _w2_inv_w3h_w4h(params)
    _guard_singular(params, singular, "skew_error")
    value = _frobenius(params[0] - B)
    return jnp.where(singular, jnp.nan, value)


@observable("hermitian_main_term")
def hermitian_main_term(problem: Any, params: Any) -> jax.Array:
    """Hermitian main term ``lambda_min(M^H M) = sigma_min(M)^2``, ``M = W_1 + W_2^{-1} W_3^H W_4^H`` (MATH.md §4).

    At a global minimizer with ``Sigma = sigma_1 I`` and balanced layers it equals ``4 sqrt(sigma_1)``.
    """
    problem = _four_square(problem, "hermitian_main_term")
    params = problem.check_params(params)
    B, singular = _w2_inv_w3h_w4h(params)
    _guard_singular(params, singular, "hermitian_main_term")
    sigma_min = jnp.linalg.svd(params[0] + B, compute_uv=False)[-1]
    return jnp.where(singular, jnp.nan, sigma_min**2)


# ---- regularizer ---------------------------------------------------------------------------------
@observable("regularizer")
def regularizer(problem: Any, params: Any) -> jax.Array:
    """Balanced regularizer ``(a/4) sum_{j<L} ||W_j W_j^H - W_{j+1}^H W_{j+1}||_F^2`` (MATH.md §4; any depth).

    It is the part of the loss weighted by ``balance = a`` (zero when ``a = 0``; the unweighted layer
    imbalance is the ``imbalance_norm`` observable).
    """
    problem = _deep(problem, "regularizer")
    params = problem.check_params(params)
    gaps = problem.layer_gaps(params)
    total = sum((jnp.sum(jnp.abs(D) ** 2) for D in gaps), jnp.asarray(0.0))
    return 0.25 * problem.balance * total


# ---- real obstruction ------------------------------------------------------------------------------
@observable("polar_sign")
def polar_sign(problem: Any, params: Any) -> jax.Array:
    """``sign det W`` for the real product ``W = W_L ... W_1`` (+1, -1, or 0 when singular) (MATH.md §4).

    Equals ``det Q`` for the polar factor ``W = Q (W^T W)^{1/2}`` when ``W`` is nonsingular.
    """
    problem = _square_product(problem, "polar_sign")
    if problem.is_complex:
        raise InputError("field must be 'real' for polar_sign (det of a complex product is not a sign), got field='complex'")
    params = problem.check_params(params)
    sign, _ = lapack.slogdet(problem.product(params))  # (one matrix per LAPACK call under vmap: mfdyn._lapack)
    return sign


@observable("sigma_min_polar")
def sigma_min_polar(problem: Any, params: Any) -> jax.Array:
    """``sigma_min(W + (W W^H)^{1/2})`` for the product ``W`` [derived, MATH.md §4].

    With ``W = U S V^H``: ``W + (W W^H)^{1/2} = U S U^H (I + Q)``, ``Q = U V^H`` the polar factor; so it
    vanishes iff ``W`` is singular or ``Q`` has eigenvalue -1. For real ``W``: zero iff ``det W < 0``
    (``det W > 0`` with a -1 eigenvalue pair of ``Q`` is a measure-zero exception).
    """
    problem = _square_product(problem, "sigma_min_polar")
    params = problem.check_params(params)
    W = problem.product(params)
    U, S, _ = lapack.svd(W)  # (one matrix per LAPACK call under vmap: mfdyn._lapack)
    sqrt_WWH = (U * S[None, :]) @ U.conj().T  # (W W^H)^{1/2}, Hermitian PSD
    return lapack.svdvals(W + sqrt_WWH)[-1]


# ---- stages ---------------------------------------------------------------------------------------------
STAGE_OBSERVABLES = ("loss", "imbalance_norm", "layer_singular_values", "product_singular_values")


@dataclasses.dataclass(frozen=True)
class Stages:
    """Stage boundaries of one run, on its own axis (GD steps or flow time); ``None`` = not reached.

    ``alignment_end`` (``T1``): first record with relative imbalance
    ``rho = sqrt(sum_j ||D_j||^2) / sum_j ||W_j||_F^2 <= align_tol``.
    ``saddle_end`` (``T1 + T2``): first record at or after ``T1`` with
    ``sigma_min(W) >= learned_fraction * sigma_min(Y)`` (every mode at least that far learned).
    ``linear_rate``: ``-slope`` of a least-squares fit of ``log loss`` against the axis over the records
    after ``saddle_end`` with ``loss >= loss_floor`` (``loss ~ C exp(-rate t)``); ``rate_r2`` its R^2.
    """

    axis: str
    alignment_end: float | None
    saddle_end: float | None
    linear_rate: float | None
    rate_r2: float | None
    rate_points: int
    thresholds: dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_recorded(traj: Any, names: tuple[str, ...], quantity: str) -> None:
    """``traj`` is an mfdyn Trajectory that recorded ``names``."""
    v.instance("traj", traj, Trajectory, "an mfdyn Trajectory")
    missing = [n for n in names if n not in traj]
    if missing:
        raise InputError(f"traj must record {', '.join(names)} for {quantity}; missing: {', '.join(missing)}")


def relative_imbalance(traj: Trajectory) -> np.ndarray:
    """``rho(t) = imbalance_norm / sum_j ||W_j||_F^2`` along a run (dimensionless; 0 = balanced)."""
    _check_recorded(traj, ("layer_singular_values", "imbalance_norm"), "relative_imbalance")
    layer_sq = np.nansum(np.asarray(traj["layer_singular_values"]) ** 2, axis=(-2, -1))
    return np.asarray(traj["imbalance_norm"]) / np.where(layer_sq > 0, layer_sq, np.inf)


def stages(
    traj: Trajectory,
    align_tol: float = 0.05,
    learned_fraction: float = 0.5,
    loss_floor: float = 1e-20,
) -> Stages:
    """The three stages of [paper] seed 004 (alignment, saddle avoidance, local convergence) of a run.

    The run must record :data:`STAGE_OBSERVABLES`. Thresholds are stated in the result (see :class:`Stages`).
    """
    _check_recorded(traj, STAGE_OBSERVABLES, "stages")
    v.finite_scalar("align_tol", align_tol, positive=True)
    v.finite_scalar("learned_fraction", learned_fraction, positive=True)
    v.finite_scalar("loss_floor", loss_floor, positive=True)
    axis = np.asarray(traj.axis, dtype=float)
    loss = np.asarray(traj["loss"], dtype=float)
    target_min = float(np.linalg.svd(np.asarray(traj.problem.target_matrix()), compute_uv=False)[-1])
    learned = np.asarray(traj["product_singular_values"])[:, -1] >= learned_fraction * target_min

    aligned_idx = np.flatnonzero(relative_imbalance(traj) <= align_tol)
    i1 = int(aligned_idx[0]) if aligned_idx.size else None
    i2 = None
    if i1 is not None:
        after = np.flatnonzero(learned[i1:])
        i2 = i1 + int(after[0]) if after.size else None

    rate = r2 = None
    n_fit = 0
    if i2 is not None:
        sel = np.arange(loss.size) >= i2
        sel &= np.isfinite(loss) & (loss >= loss_floor)
        n_fit = int(sel.sum())
        if n_fit >= 3 and np.ptp(axis[sel]) > 0:
            x, y = axis[sel], np.log(loss[sel])
            slope, intercept = np.polyfit(x, y, 1)
            resid = y - (slope * x + intercept)
            ss_tot = float(np.sum((y - y.mean()) ** 2))
            rate = float(-slope)
            r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return Stages(
        axis=traj.axis_name,
        alignment_end=None if i1 is None else float(axis[i1]),
        saddle_end=None if i2 is None else float(axis[i2]),
        linear_rate=rate,
        rate_r2=r2,
        rate_points=n_fit,
        thresholds=dict(align_tol=float(align_tol), learned_fraction=float(learned_fraction),
                        loss_floor=float(loss_floor), target_sigma_min=target_min),
    )


# ---- plateau law ------------------------------------------------------------------------------------------
def _plateau_interval(s: np.ndarray, u0: np.ndarray, uf: np.ndarray) -> np.ndarray:
    """``F(wf) - F(w0)`` for ``F(w) = (1/2s) [-1/w + s^{-1/2} artanh(w / sqrt s)]`` (``arcoth`` above
    ``sqrt s``; ``w = sqrt u``), written without differences of nearby numbers: with ``r = sqrt s``,
    ``1/w0 - 1/wf = (uf - u0) / (w0 wf (w0 + wf))`` and the artanh difference
    ``1/2 log1p(2 r (wf - w0) / ((r - wf)(r + w0)))``, ``wf - w0 = (uf - u0) / (wf + w0)``,
    ``r - wf = (s - uf) / (r + wf)``. (As ``F(wf) - F(w0)`` the time lost up to 3e-3 of its value
    for ``uf`` within 1e-15 of ``s``, and 1.6e-6 for ``uf`` within 1e-10 of ``u0``.)"""
    r, w0, wf = np.sqrt(s), np.sqrt(u0), np.sqrt(uf)
    du = uf - u0
    algebraic = du / (w0 * wf * (w0 + wf))
    logarithmic = 0.5 / r * np.log1p(2.0 * r * du * (r + wf) / ((wf + w0) * (s - uf) * (r + w0)))
    return (algebraic + logarithmic) / (2.0 * s)


def plateau_time(s: Any, u0: Any, uf: Any) -> np.ndarray:
    """Gradient-flow time for one balanced, aligned mode of a 4-layer product to go from ``u0`` to ``uf``.

    [derived, MATH.md §4] The product singular value obeys ``u' = 4 u^{3/2} (s - u)``; with ``w = sqrt(u)``
    ``t = (1/2s) [1/w0 - 1/wf + s^{-1/2} (artanh(wf/sqrt s) - artanh(w0/sqrt s))]``, so a plateau from
    ``u0 ~ eps^4`` lasts ``~ 1/(2 s eps^2)``. GD with step ``eta`` takes about ``t / eta`` steps.
    Arrays broadcast. Needs ``s > 0``, ``u0, uf > 0`` and ``uf`` between ``u0`` and ``s`` (the flow
    moves ``u`` monotonically towards ``s``; ``u0 > s`` is allowed, then ``arcoth`` replaces ``artanh``).
    """
    arrays = {}
    for name, val in (("s", s), ("u0", u0), ("uf", uf)):
        v.finite_array(name, val, allow_complex=False)
        arrays[name] = np.asarray(val, dtype=float)
        if np.any(arrays[name] <= 0):
            raise InputError(f"{name} must be > 0, got {v.describe(arrays[name])}")
    try:
        s_, u0_, uf_ = np.broadcast_arrays(arrays["s"], arrays["u0"], arrays["uf"])
    except ValueError:
        raise InputError(f"s, u0 and uf must broadcast together, got shapes {arrays['s'].shape}, {arrays['u0'].shape}, "
                         f"{arrays['uf'].shape}") from None
    between = ((u0_ <= uf_) & (uf_ < s_)) | ((s_ < uf_) & (uf_ <= u0_))
    if not np.all(between):
        raise InputError(
            f"uf must lie between u0 and s (excluding s), got u0={v.describe(u0_)}, uf={v.describe(uf_)}, s={v.describe(s_)}"
        )
    t = _plateau_interval(s_, u0_, uf_)
    return t if t.ndim else np.float64(t)


# ---- tracked runs ----------------------------------------------------------------------------------------
def tracked_names(problem: Any) -> tuple[str, ...]:
    """The observables :func:`track` records for ``problem``: :data:`STAGE_OBSERVABLES`, the regularizer, and
    whichever of the skew error / main term (four square layers), ``sigma_min_polar`` (square product) and
    ``polar_sign`` (real, square product) are defined for it."""
    problem = _deep(problem, "tracked_names")
    names = list(STAGE_OBSERVABLES) + ["regularizer"]
    if problem.depth == 4 and len(set(problem.widths)) == 1:
        names += ["skew_error", "hermitian_main_term"]
    if problem.widths[0] == problem.widths[-1]:
        names += ["sigma_min_polar"] + ([] if problem.is_complex else ["polar_sign"])
    return tuple(names)


def track(problem: Any, params0: Any, eta: float, steps: int, every: int = 10, **stage_options: Any) -> tuple[Trajectory, Stages]:
    """GD (``mfdyn.gd``) recording :func:`tracked_names` every ``every`` steps, and its :func:`stages`."""
    traj = gd(problem, params0, eta, steps, record=tracked_names(problem), every=every)
    return traj, stages(traj, **stage_options)


def plot_tracked(traj: Trajectory, st: Stages, title: str = "", axes: Any = None) -> Any:
    """Three panels of a :func:`track` run: loss and regularizer; product singular values and layer
    singular values^L; main term and skew error (when recorded). Stage boundaries as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = traj.axis

    def mark(ax):
        for value, label, style in ((st.alignment_end, "$T_1$ (aligned)", ":"),
                                    (st.saddle_end, "$T_1+T_2$ (saddle escaped)", "--")):
            if value is not None:
                ax.axvline(value, color="k", ls=style, lw=0.9, label=label)

    ax = axes[0]
    ax.semilogy(x, np.maximum(traj["loss"], 1e-32), label="loss")
    if "regularizer" in traj:
        ax.semilogy(x, np.maximum(traj["regularizer"], 1e-32), label="regularizer", alpha=0.7)
    mark(ax)
    ax.set(title=f"{title} loss".strip(), xlabel=traj.axis_name, ylim=(1e-30, None))
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(x, traj["product_singular_values"], color="C0", lw=1.2)
    lsv = np.asarray(traj["layer_singular_values"])  # (records, L, width)
    for j in range(lsv.shape[1]):
        ax.plot(x, lsv[:, j, :] ** lsv.shape[1], color=f"C{j + 1}", lw=0.6, alpha=0.6)
    for value in np.linalg.svd(np.asarray(traj.problem.target_matrix()), compute_uv=False):
        ax.axhline(value, color="gray", lw=0.5, ls=":")
    mark(ax)
    ax.set(title="product singular values (blue), layer singular values^L (thin)", xlabel=traj.axis_name)
    ax = axes[2]
    for name, label in (("hermitian_main_term", r"main term $\lambda_{min}(M^H M)$"), ("skew_error", "skew error"),
                        ("sigma_min_polar", r"$\sigma_{min}(W + (WW^H)^{1/2})$")):
        if name in traj:
            ax.semilogy(x, np.maximum(traj[name], 1e-32), label=label)
    mark(ax)
    ax.set(title="tracked quantities", xlabel=traj.axis_name)
    ax.legend(fontsize=8)
    return fig


# ---- convergence over seeds (batched by the sweep engine) ------------------------------------------------------
def _init_signs(problem: DeepFactorization, seeds: Any, eps: float, kind: str) -> jax.Array:
    """``sign det W(0)`` for every seed, from the starts the sweep takes (``problem.init_batch``)."""
    return _polar_signs(problem, problem.init_batch(np.asarray(seeds), eps, kind))


@jax.jit
def _polar_signs(problem: DeepFactorization, params: Any) -> jax.Array:
    """:func:`polar_sign` of a batch of parameters (one vmapped evaluation per problem structure)."""
    return jax.vmap(lambda p: polar_sign(problem, p))(params)


@jax.jit
def _final_signs(problem: DeepFactorization, final_params: jax.Array) -> jax.Array:
    return jax.vmap(lambda z: polar_sign(problem, problem.unflatten(z)))(final_params)


def conditioned_family(d: int, field: str = "real") -> Callable[..., DeepFactorization]:
    """Factory ``(kappa, balance) -> DeepFactorization(diag(kappa^{-k/(d-1)}), 4, balance, field)`` for sweeps.

    Traceable in ``kappa`` and ``balance`` (they become swept axes); the same object is returned for the
    same ``(d, field)``, so every sweep over this family shares one compiled kernel per chunk shape.
    """
    if not isinstance(field, str):
        raise InputError(f"field must be 'real' or 'complex', got {field!r}")
    return _conditioned_family(v.integer("d", d, minimum=1), v.choice("field", field, ("real", "complex")))


@functools.lru_cache(maxsize=None)
def _conditioned_family(d: int, field: str) -> Callable[..., DeepFactorization]:
    exps = np.arange(d) / max(d - 1, 1)

    def make(kappa: Any = 1.0, balance: Any = 0.0) -> DeepFactorization:
        Y = jnp.diag(jnp.asarray(kappa, jnp.float64) ** -jnp.asarray(exps))
        return DeepFactorization(Y, 4, balance=balance, field=field)

    return make


def convergence_sweep(
    family: Callable[..., DeepFactorization],
    seeds: Any,
    *,
    eps: float,
    eta: float,
    steps: int,
    kind: str = "gaussian",
    constants: dict | None = None,
    loss_tol: float = 1e-10,
    grad_tol: float = 1e-10,
    chunk: int | None = 32,
    store: Any = None,
    progress: bool = False,
) -> Any:
    """GD from ``problem.init(seed, scale=eps, kind=kind)`` for every seed, batched by :func:`mfdyn.sweep`.

    ``family``: a factory ``lambda **constants: DeepFactorization(...)`` (e.g. :func:`conditioned_family`),
    swept over ``constants`` (a dict of 1-D arrays, e.g. ``{"kappa": [1, 10], "balance": [5.0]}``).
    Returns the sweep's Dataset (dims ``seed`` then the constants; ``eta``/``scale`` squeezed) with
    ``converged = final_loss < loss_tol`` added and, for a real square product, ``det_sign_initial`` /
    ``det_sign_final`` (``sign det W`` at the start and where the run stopped). A trajectory stops early
    at the first step with ``||grad|| <= grad_tol`` (the sweep's convergence test; ``steps_to_converge``).
    """
    from .sweep import sweep as run_sweep

    v.finite_scalar("eps", eps, positive=True)
    v.finite_scalar("eta", eta, positive=True)
    v.finite_scalar("loss_tol", loss_tol, positive=True)
    v.choice("kind", kind, DeepFactorization.init_kinds)
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer) or np.any(seeds < 0):
        raise InputError(f"seeds must be a non-empty 1-D array of non-negative integers, got {v.describe(seeds)}")
    constants = {k: np.atleast_1d(np.asarray(val, dtype=float)) for k, val in (constants or {}).items()}
    base = family(**{k: float(val[0]) for k, val in constants.items()})
    _deep(base, "convergence_sweep")
    axes = {"seed": seeds, **constants, "eta": [float(eta)], "scale": [float(eps)]}
    ds = run_sweep(family, axes, steps, tol=grad_tol, max_period=0, init_kind=kind, chunk=chunk, store=store,
                   progress=progress, sharpness=False)
    ds = ds.squeeze(("eta", "scale"), drop=False)
    ds["converged"] = ds["final_loss"] < loss_tol
    if not base.is_complex and base.widths[0] == base.widths[-1]:
        dims, shape = ds["final_loss"].dims, ds["final_loss"].shape
        signs0 = np.asarray(_init_signs(base, seeds, float(eps), kind))
        ds["det_sign_initial"] = (dims, np.broadcast_to(signs0.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy())
        flat = np.asarray(ds["final_params"]).reshape(-1, base.num_coordinates)
        ds["det_sign_final"] = (dims, np.asarray(_final_signs(base, jnp.asarray(flat))).reshape(shape))
    return ds


def probability(converged: Any) -> dict:
    """``{n, converged, p, wilson_low, wilson_high}`` for a boolean array (95% Wilson interval)."""
    raw = np.asarray(converged)
    if raw.dtype != bool and not (np.issubdtype(raw.dtype, np.number) and np.all(np.isin(raw, (0, 1)))):
        raise InputError(f"converged must be booleans (or 0/1), got {v.describe(raw)}")
    flags = raw.astype(bool).ravel()
    if not flags.size:
        raise InputError("converged must not be empty")
    k, n = int(flags.sum()), int(flags.size)
    lo, hi = wilson_interval(k, n)
    return dict(n=n, converged=k, p=k / n, wilson_low=lo, wilson_high=hi)


def median_stop_step(ds: Any) -> float:
    """Median ``steps_to_converge`` over the runs of a :func:`convergence_sweep` Dataset that are
    ``converged`` and stopped on the gradient test (``steps_to_converge >= 0``; a run can reach the
    loss tolerance without it); NaN if there are none."""
    steps = np.asarray(ds["steps_to_converge"]).ravel()
    steps = steps[np.asarray(ds["converged"]).ravel() & (steps >= 0)]
    return float(np.median(steps)) if steps.size else float("nan")


# ---- statistics ---------------------------------------------------------------------------------------
def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%)."""
    successes = v.integer("successes", successes, minimum=0)
    trials = v.integer("trials", trials, minimum=1)
    if successes > trials:
        raise InputError(f"successes must be <= trials = {trials}, got {successes}")
    v.finite_scalar("z", z, positive=True)
    p = successes / trials
    denom = 1.0 + z**2 / trials
    center = (p + z**2 / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def target(d: int, sigma1: float = 1.0, kappa: float = 1.0) -> np.ndarray:
    """``Sigma = diag(sigma1 * kappa^{-k/(d-1)})``, ``k = 0..d-1``: condition number ``kappa`` (``sigma1 I`` at 1)."""
    d = v.integer("d", d, minimum=1)
    v.finite_scalar("sigma1", sigma1, positive=True)
    v.finite_scalar("kappa", kappa)
    if kappa < 1:
        raise InputError(f"kappa must be >= 1 (condition number), got {kappa}")
    exps = np.arange(d) / max(d - 1, 1)
    return np.diag(float(sigma1) * float(kappa) ** (-exps))


__all__ = [
    "skew_error",
    "hermitian_main_term",
    "regularizer",
    "polar_sign",
    "sigma_min_polar",
    "Stages",
    "stages",
    "relative_imbalance",
    "plateau_time",
    "tracked_names",
    "plot_tracked",
    "track",
    "wilson_interval",
    "convergence_sweep",
    "conditioned_family",
    "probability",
    "target",
    "STAGE_OBSERVABLES",
]
