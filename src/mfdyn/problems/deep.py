"""Deep matrix factorization with weight decay and the balanced regularizer (MATH.md §2, §4).

``l(W) = 1/2 ||W_L ... W_1 - Y||^2 + 1/2 sum_l lambda_l ||W_l||^2
         + (a/4) sum_{j<L} ||W_j W_j^H - W_{j+1}^H W_{j+1}||^2``,
``W_l`` of shape ``(d_l, d_{l-1})``; real (float64) or complex (complex128) with the gradient
convention ``d/dRe + i d/dIm`` (MATH.md §0).
"""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _lapack as lapack
from .. import _validate as v
from ..errors import InputError
from .base import Problem, frob_sq

DeepParams = tuple[jax.Array, ...]


def _haar(key: jax.Array, n: int, complex_field: bool) -> jax.Array:
    """Haar-distributed orthogonal (or unitary) ``n x n`` matrix: QR of a Gaussian, phases fixed."""
    if complex_field:
        kr, ki = jax.random.split(key)
        G = jax.random.normal(kr, (n, n)) + 1j * jax.random.normal(ki, (n, n))
    else:
        G = jax.random.normal(key, (n, n), dtype=jnp.float64)
    Q, R = lapack.qr(G)  # (one matrix per LAPACK call under vmap: mfdyn._lapack)
    d = jnp.diagonal(R)
    phase = d / jnp.where(jnp.abs(d) == 0, 1.0, jnp.abs(d))
    return Q * phase[None, :]


class DeepFactorization(Problem):
    """``L``-layer factorization of ``Y`` (shape ``(d_L, d_0)``); params ``(W_1, ..., W_L)``.

    Gradient of layer ``j`` (MATH.md §4, generalized to any widths and weight decay):
    ``W_{>j}^H (P - Y) W_{<j}^H + lambda_j W_j - a W_j D_{j-1,j} + a D_{j,j+1} W_j`` with
    ``D_{j,j+1} = W_j W_j^H - W_{j+1}^H W_{j+1}`` (``D_{0,1} = D_{L,L+1} = 0``).
    Conserved by gradient flow when ``lambda = 0`` and ``a = 0``: ``W_{j+1}^H W_{j+1} - W_j W_j^H``.
    """

    Y: jax.Array
    weight_decay: jax.Array  # (L,) one lambda per layer
    balance: jax.Array  # scalar a
    depth: int = eqx.field(static=True)
    widths: tuple[int, ...] = eqx.field(static=True)
    field: str = eqx.field(static=True)

    init_kinds = ("gaussian", "balanced")

    def __init__(
        self,
        Y: Any,
        depth: int,
        widths: Sequence[int] | None = None,
        weight_decay: Any = 0.0,
        balance: Any = 0.0,
        field: str = "real",
    ):
        self.field = v.choice("field", field, ("real", "complex"))
        self.depth = v.integer("depth", depth, minimum=1)
        v.finite_array("Y", Y, ndim=2, allow_complex=(field == "complex"))
        if 0 in np.shape(Y):
            raise InputError(f"Y must not be empty, got shape {np.shape(Y)}")
        dtype = jnp.complex128 if field == "complex" else jnp.float64
        self.Y = jnp.asarray(Y, dtype=dtype)
        d_out, d_in = self.Y.shape
        if widths is None:
            hidden = min(d_in, d_out)
            widths = (d_in,) + (hidden,) * (self.depth - 1) + (d_out,)
        else:
            widths = tuple(v.integer(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths))
            if len(widths) != self.depth + 1:
                raise InputError(f"widths must have depth + 1 = {self.depth + 1} entries, got {len(widths)}: {widths}")
            if widths[0] != d_in or widths[-1] != d_out:
                raise InputError(
                    f"widths must start with d_0 = {d_in} and end with d_L = {d_out} (Y has shape {tuple(self.Y.shape)}), "
                    f"got {widths}"
                )
        self.widths = tuple(int(w) for w in widths)
        wd = weight_decay
        if not v.is_traced(wd):
            if np.ndim(wd):
                v.finite_array("weight_decay", wd, allow_complex=False)
            wd_arr = np.asarray(wd, dtype=float) if np.ndim(wd) else np.full(self.depth, float(v.finite_scalar("weight_decay", wd)))
            if wd_arr.shape != (self.depth,):
                raise InputError(f"weight_decay must be a scalar or have {self.depth} entries, got shape {wd_arr.shape}")
            v.finite_array("weight_decay", wd_arr)
            if np.any(wd_arr < 0):
                raise InputError(f"weight_decay must be >= 0, got {wd_arr.tolist()}")
            wd = wd_arr
        self.weight_decay = jnp.broadcast_to(jnp.asarray(wd, dtype=jnp.float64), (self.depth,))
        v.finite_scalar("balance", balance, nonnegative=True)
        self.balance = jnp.asarray(balance, dtype=jnp.float64)

    @property
    def is_complex(self) -> bool:
        return self.field == "complex"

    def param_template(self) -> DeepParams:
        dtype = jnp.complex128 if self.is_complex else jnp.float64
        return tuple(jax.ShapeDtypeStruct((self.widths[l + 1], self.widths[l]), dtype) for l in range(self.depth))

    def product(self, params: DeepParams) -> jax.Array:
        """``P = W_L ... W_1``, shape ``(d_L, d_0)``."""
        P = params[0]
        for W in params[1:]:
            P = W @ P
        return P

    def layer_gaps(self, params: DeepParams) -> tuple[jax.Array, ...]:
        """``D_{j,j+1} = W_j W_j^H - W_{j+1}^H W_{j+1}`` for ``j = 1..L-1`` (each ``d_j x d_j``)."""
        return tuple(
            params[j] @ params[j].conj().T - params[j + 1].conj().T @ params[j + 1] for j in range(self.depth - 1)
        )

    def loss(self, params: DeepParams) -> jax.Array:
        fit = 0.5 * frob_sq(self.product(params) - self.Y)
        decay = 0.5 * sum(self.weight_decay[l] * frob_sq(W) for l, W in enumerate(params))
        reg = 0.25 * self.balance * sum(frob_sq(D) for D in self.layer_gaps(params))
        return fit + decay + reg

    def grad(self, params: DeepParams) -> DeepParams:
        L = self.depth
        # prefix[j] = W_j ... W_1 (W_{<j+1}); suffix[j] = W_L ... W_{j+1} (W_{>j})
        prefix = [jnp.eye(self.widths[0], dtype=params[0].dtype)]
        for W in params:
            prefix.append(W @ prefix[-1])
        suffix = [jnp.eye(self.widths[L], dtype=params[0].dtype)]
        for W in reversed(params):
            suffix.append(suffix[-1] @ W)
        suffix = suffix[::-1]  # suffix[j] = W_L ... W_{j+1}, j = 0..L
        R = prefix[L] - self.Y  # (d_L, d_0)
        gaps = self.layer_gaps(params)
        out = []
        for j in range(L):  # layer W_{j+1} in 1-based notation
            W = params[j]
            g = suffix[j + 1].conj().T @ R @ prefix[j].conj().T + self.weight_decay[j] * W
            if j > 0:
                g = g - self.balance * (W @ gaps[j - 1])
            if j < L - 1:
                g = g + self.balance * (gaps[j] @ W)
            out.append(g)
        return tuple(out)

    def imbalance(self, params: DeepParams) -> tuple[jax.Array, ...]:
        """``W_{j+1}^H W_{j+1} - W_j W_j^H`` for ``j = 1..L-1``."""
        return tuple(-D for D in self.layer_gaps(params))

    def target_matrix(self) -> jax.Array:
        return self.Y

    def _draw(self, key: jax.Array, scale: jax.Array, kind: str) -> DeepParams:
        if kind == "gaussian":
            return self._gaussian(key, scale)
        return self._balanced(key, scale)

    def _balanced(self, key: jax.Array, scale: jax.Array) -> DeepParams:
        """Exactly balanced init (MATH.md §4): ``W_j = eps s_j Q_j diag(sv(G)) Q_{j-1}^H``.

        ``G`` is an ``r x r`` Gaussian with ``r = min(widths)``, ``Q_k`` Haar of size ``d_k`` (only
        its first ``r`` columns are used), ``|s_j| = 1`` (random signs, or phases for complex).
        Then ``W_j W_j^H = W_{j+1}^H W_{j+1}`` exactly in exact arithmetic.
        """
        cplx = self.is_complex
        r = min(self.widths)
        kg, kq, ks = jax.random.split(key, 3)
        if cplx:
            kr, ki = jax.random.split(kg)
            G = (jax.random.normal(kr, (r, r)) + 1j * jax.random.normal(ki, (r, r))) / jnp.sqrt(2.0)
        else:
            G = jax.random.normal(kg, (r, r), dtype=jnp.float64)
        sv = lapack.svdvals(G)  # (r,)
        Qs = [_haar(k, d, cplx)[:, :r] for k, d in zip(jax.random.split(kq, self.depth + 1), self.widths)]
        if cplx:
            s = jnp.exp(2j * jnp.pi * jax.random.uniform(ks, (self.depth,)))
        else:
            s = jnp.where(jax.random.bernoulli(ks, 0.5, (self.depth,)), 1.0, -1.0)
        dtype = jnp.complex128 if cplx else jnp.float64
        return tuple(
            (scale * s[j] * (Qs[j + 1] * sv[None, :]) @ Qs[j].conj().T).astype(dtype) for j in range(self.depth)
        )
