"""LAPACK calls that never get a batch of matrices: jaxlib 0.10.2 deadlocks on batched ones.

On the CPU, jaxlib 0.10.2 runs a LAPACK call on a batch of matrices (``qr``, ``svd``, ``eigvalsh``
and the others, under ``vmap``) by splitting the batch over XLA's intra-op thread pool from inside
a thread of that pool, and blocking until the parts are done. When as many such calls run at once
as the pool has threads (two on a 2-core machine: two independent calls in one program, which XLA
runs concurrently, or two programs on two threads), every pool thread waits for parts that no
thread is left to run, for ever. A test hung that way: ``DeepFactorization(np.eye(40), 4).init(0,
kind="balanced")`` draws five Haar matrices (batched QRs) and an SVD in one program; all pool
threads sat in ``BlockingCounter::Wait`` under ``ParallelBatchMap`` / ``lapack_dgeqrf_ffi``. A call
on one matrix is run inline.

:func:`one_matrix_per_call` wraps a function of matrices so that, under ``vmap``, it runs on one
matrix at a time (``lax.map`` over the batch): each LAPACK call gets one matrix. The results are the
same bits (the batched kernel runs the same LAPACK routine on each matrix). It defines its own
batching rule (``jax.custom_batching.custom_vmap``), which forward-mode differentiation goes
through but reverse mode does not: it is used where nothing is differentiated: the deep family's
random draws (``init``, ``init_batch``, which a sweep's chunk threads call at once), the signs and
``sigma_min_polar`` of :mod:`mfdyn.deep`, the pseudo-inverses of the Newton solves of
:mod:`mfdyn.rank1.orbits` and of :mod:`mfdyn.symmetric.cascade` (differentiated there in forward
mode, under ``vmap``: the same bits, tested). The observables recorded along a gradient flow are
evaluated one state at a time (``mfdyn.dynamics._flow_observables``), and the sweep kernel's
sharpness maps its own rows (:func:`mfdyn.sweep.kernel._run_chunk`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap


def one_matrix_per_call(fn: Callable) -> Callable:
    """``fn`` (positional array arguments), run one batch member at a time under ``vmap``."""

    @custom_vmap
    def wrapped(*args: Any) -> Any:
        return fn(*args)

    @wrapped.def_vmap
    def _batched(axis_size: int, in_batched: list, *args: Any) -> tuple[Any, Any]:
        args = [a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a))) for a, b in zip(args, in_batched)]
        out = jax.lax.map(lambda xs: wrapped(*xs), tuple(args))
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return wrapped


qr = one_matrix_per_call(jnp.linalg.qr)
svd = one_matrix_per_call(jnp.linalg.svd)
svdvals = one_matrix_per_call(lambda x: jnp.linalg.svd(x, compute_uv=False))
slogdet = one_matrix_per_call(jnp.linalg.slogdet)
pinv = one_matrix_per_call(jnp.linalg.pinv)
