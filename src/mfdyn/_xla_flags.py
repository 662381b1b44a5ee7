"""XLA options for the processes mfdyn starts itself: its command line and its worker processes.

LLVM interleaves two vector iterations of each loop XLA emits: two independent dependency chains
per trip where the fused block of GD steps has one (it is bound by the latency of its dependent
steps). Same bits: the interleaved iterations are independent and none reorders its arithmetic
(LLVM vectorizes no floating-point reduction unless reassociation is allowed, and XLA:CPU does not
allow it by default); tested, worker processes against threads. Measured on one core,
2026-11-22 (A/B in alternate processes, 3 pairs each): the scalar benchmark's kernel 3-14% faster,
6-17% where no row settles; the deep L=4, d=8 benchmark unchanged (within the noise). Four
interleaved iterations made the scalar kernel 15-33% faster but the deep one 7-25% slower: its
loops over 8 entries then skip the vector body. Measured on two threads, 2026-11-23: the scalar
benchmark's sweep 13% faster (0.199 s against 0.229 s, best of 10 interleaved rounds in one
process, the kernel compiled with and without the option; same bits); the deep sweep 3-4% slower
(6.9 and 6.2 GFLOP/s against 7.2 and 6.5 in two pairs of processes; runs of the same code differ
by up to 10%).

LLVM's options hold for a whole process and are read once, when JAX starts its CPU backend: the
library never sets them in its caller's process. Where mfdyn owns the process (the ``mfdyn``
console script, the worker processes of ``scheduler="processes"``), it adds them to ``XLA_FLAGS``
unless these pass LLVM options of the user's own already.
"""

from __future__ import annotations

import os

LLVM_XLA_FLAGS = "--xla_backend_extra_options=-force-vector-interleave=2"


def with_llvm_options(flags: str) -> str:
    """An ``XLA_FLAGS`` value with :data:`LLVM_XLA_FLAGS` added, unless it passes LLVM options
    (``xla_backend_extra_options``) already: those are the user's, kept as they are."""
    if "xla_backend_extra_options" in flags:
        return flags
    return f"{flags} {LLVM_XLA_FLAGS}".strip()


def configure_own_process() -> None:
    """Adds the options to this process's ``XLA_FLAGS``: for a process mfdyn owns, before JAX starts
    its backend (after that, XLA has read its flags and the change has no effect here; processes
    started later inherit it)."""
    os.environ["XLA_FLAGS"] = with_llvm_options(os.environ.get("XLA_FLAGS", ""))
