"""The LLVM option mfdyn passes to XLA: loop interleaving, for the latency-bound fused GD steps.

LLVM interleaves two vector iterations of each loop XLA emits: two independent dependency chains
per trip where the fused block of GD steps has one (it is bound by the latency of its dependent
steps). Elementwise loops keep their bits (the interleaved iterations are independent); reductions
do not always: XLA:CPU's sums over a matrix's entries (a loss, a norm) then round in another order.
Measured, 2026-11-23, in two processes with and without the option: the scalar family's sweep the
same bits (its steps and observables have no reductions); a deep factorization's sweep the same
final states, steps and outcomes but ``final_loss`` and ``final_imbalance`` different in the last
bits, and ``gd``'s recorded loss too (``tests/test_xla_flags.py``). So a sweep records the options in
its configuration (``xla_llvm_options``: a store is resumed only under the same ones, as on the same
platform), and mfdyn's worker processes take their parent's ``XLA_FLAGS`` as they are.

Speed, measured on one core, 2026-11-22 (A/B in alternate processes, 3 pairs each): the scalar
benchmark's kernel 3-14% faster, 6-17% where no row settles; the deep L=4, d=8 benchmark unchanged
(within the noise). Four interleaved iterations made the scalar kernel 15-33% faster but the deep one
7-25% slower: its loops over 8 entries then skip the vector body. Measured on two threads,
2026-11-23: the scalar benchmark's sweep 13% faster (0.199 s against 0.229 s, best of 10
interleaved rounds in one process, the kernel compiled with and without the option); the deep sweep
3-4% slower (6.9 and 6.2 GFLOP/s against 7.2 and 6.5 in two pairs of processes; runs of the same
code differ by up to 10%).

LLVM's options hold for a whole process and XLA reads ``XLA_FLAGS`` once, when JAX starts its
backend; ``jax.jit(compiler_options=...)`` cannot carry them for one compilation (XLA refuses a
map-valued option). So the library never sets them in its caller's process; where mfdyn owns the
process (the ``mfdyn`` console script) it adds the option to ``XLA_FLAGS`` (:func:`configure_process`)
while JAX's backend is not started and ``XLA_FLAGS`` passes no LLVM options of the user's own.
``MFDYN_XLA_FLAGS=0`` (or ``off``) leaves ``XLA_FLAGS`` alone. Worker processes take their parent's.
"""

from __future__ import annotations

import os
import shlex

LLVM_XLA_FLAGS = "--xla_backend_extra_options=-force-vector-interleave=2"
OPT_OUT = "MFDYN_XLA_FLAGS"  # "0" or "off": mfdyn leaves XLA_FLAGS as it is


def opted_out() -> bool:
    """Whether ``MFDYN_XLA_FLAGS`` turns the option off."""
    return os.environ.get(OPT_OUT, "").strip().lower() in ("0", "off", "false", "no")


def with_llvm_options(flags: str) -> str:
    """An ``XLA_FLAGS`` value with :data:`LLVM_XLA_FLAGS` added, unless it passes LLVM options
    (``xla_backend_extra_options``) already (those are the user's, kept as they are) or the user
    opted out (:func:`opted_out`)."""
    if "xla_backend_extra_options" in flags or opted_out():
        return flags
    return f"{flags} {LLVM_XLA_FLAGS}".strip()


def backend_started() -> bool:
    """Whether JAX has started a backend in this process (it has read ``XLA_FLAGS`` then); True
    when that cannot be told (the check is JAX-internal), so that nothing is changed in vain."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True


def configure_process() -> None:
    """Adds :data:`LLVM_XLA_FLAGS` to this process's ``XLA_FLAGS`` (:func:`with_llvm_options`) if JAX
    has not started its backend yet (after that XLA would not read them). Called by the ``mfdyn``
    console script for its own process."""
    flags = os.environ.get("XLA_FLAGS", "")
    if not backend_started() and with_llvm_options(flags) != flags:
        os.environ["XLA_FLAGS"] = with_llvm_options(flags)


def llvm_options(flags: str | None = None) -> str:
    """The LLVM options that ``XLA_FLAGS`` (default: this process's) passes to XLA (the value of
    ``--xla_backend_extra_options``; ``""`` if none): what a sweep records in its configuration."""
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    found = ""
    for token in shlex.split(flags):
        if token.startswith("--xla_backend_extra_options="):
            found = token.split("=", 1)[1]
    return found
