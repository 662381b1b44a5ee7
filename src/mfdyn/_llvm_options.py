"""LLVM options for one compiled program: how the sweep kernel of a problem with scalar coordinates
gets loop interleaving without changing any other program of the process.

Why: the fused block of GD steps of such a problem (16 unrolled steps per trajectory, one chain of
dependent scalar operations) is bound by the latency of its steps. With
``-force-vector-interleave=4`` LLVM advances four vector iterations per loop trip: four independent
chains. Measured (2026-11-23): the scalar benchmark's 31 chunks on one core 0.298 s against 0.335 s
without (interleave 2: 0.312 s), the same bits; its sweep on two threads, best of 11 rounds
interleaved in one process, 0.168 / 0.182 s against 0.216 / 0.230 s (interleave 2: 0.188 / 0.200 s).
Problems whose coordinates are matrices gain nothing (a symmetric n=3, r=2 and a rank-1 3x4 sweep:
the same time within the noise) or lose (a deep d=2, L=3 sweep 4% slower; the deep L=4, d=8
benchmark 7-25% slower with interleave 4, 3-4% with 2, in earlier sessions): they get none
(:func:`mfdyn.sweep.kernel.wanted_llvm_options`).

How: XLA reads LLVM options per compilation, from the compilation's ``DebugOptions``
(``xla_backend_extra_options``; XLA resets LLVM's options whenever the next compilation asks for
others, so nothing leaks into later programs: tested). ``jax.jit(compiler_options=...)`` cannot set
that map-valued field (XLA refuses the string: "not a valid message value"), so :func:`install`
wraps JAX's ``jax._src.compiler.get_compile_options``: a compilation whose options carry the key
:data:`MARK` (``{MARK: "-opt=value ..."}``, see :func:`compiler_options`) gets those options merged
into its ``DebugOptions`` (appended to the serialized ``CompileOptions``: protobuf merges a repeated
field by concatenation); any other compilation passes through unchanged. The wrapper is
JAX-internal: where it cannot be installed, or a probe compilation with it fails, :func:`supported`
is False and mfdyn's kernels compile without options of their own (a sweep records which options
its kernel had).

Interleaving keeps the bits of elementwise loops (the interleaved iterations are independent) but may
change those of reductions that LLVM vectorizes (a rank-1 sweep's did): a sweep records its kernel's
options (``xla_llvm_options``) and resumes a store only under the same ones. The user's own LLVM
options in ``XLA_FLAGS`` (``--xla_backend_extra_options``) hold for every program of the process:
mfdyn then adds none. ``MFDYN_LLVM_OPTIONS=0`` (or ``off``) turns mfdyn's off.
"""

from __future__ import annotations

import functools
import os
import shlex
import threading
from typing import Any

INTERLEAVE = "-force-vector-interleave=4"
MARK = "mfdyn_llvm_options"  # the compiler option that carries LLVM options to the wrapper
OPT_OUT = "MFDYN_LLVM_OPTIONS"  # "0" or "off": mfdyn adds no LLVM options
DEBUG_OPTIONS_PATH = (3, 3)  # CompileOptionsProto.executable_build_options, ExecutableBuildOptionsProto.debug_options
EXTRA_OPTIONS_FIELD = 500  # DebugOptions.xla_backend_extra_options (map<string, string>)

_lock = threading.Lock()
_state: dict[str, Any] = {"installed": False, "supported": None}


def opted_out() -> bool:
    """Whether ``MFDYN_LLVM_OPTIONS`` turns mfdyn's LLVM options off."""
    return os.environ.get(OPT_OUT, "").strip().lower() in ("0", "off", "false", "no")


def process_llvm_options(flags: str | None = None) -> str:
    """The LLVM options that ``XLA_FLAGS`` (default: this process's) gives every program
    (the value of ``--xla_backend_extra_options``; ``""`` if none)."""
    return _extra_options(os.environ.get("XLA_FLAGS", "") if flags is None else flags)


@functools.lru_cache(maxsize=16)
def _extra_options(flags: str) -> str:
    """:func:`process_llvm_options` of the string ``flags`` (parsed once per string: a sweep asks
    for every chunk, and ``shlex`` took 40-70 us a call)."""
    found = ""
    for token in shlex.split(flags):
        if token.startswith("--xla_backend_extra_options="):
            found = token.split("=", 1)[1]
    return found


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def parse_options(options: str) -> dict[str, str]:
    """``"-a=1 -b"`` (or comma-separated, as in ``XLA_FLAGS``) as XLA's map: ``{"-a": "1", "-b": ""}``."""
    pairs = [item.partition("=") for item in options.replace(",", " ").split()]
    return {key: value for key, _, value in pairs}


def options_fragment(options: str) -> bytes:
    """A serialized ``CompileOptionsProto`` holding only ``options`` in its ``DebugOptions``'s
    ``xla_backend_extra_options``: appended to a serialized ``CompileOptions``, protobuf merges it in."""
    entries = b"".join(_length_delimited(EXTRA_OPTIONS_FIELD, _length_delimited(1, key.encode())
                                         + _length_delimited(2, value.encode()))
                       for key, value in parse_options(options).items())
    outer, inner = DEBUG_OPTIONS_PATH
    return _length_delimited(outer, _length_delimited(inner, entries))


def with_options(compile_options: Any, options: str) -> Any:
    """A copy of an XLA ``CompileOptions`` with ``options`` merged into its LLVM options."""
    from jax._src.lib import xla_client

    return xla_client.CompileOptions.ParseFromString(compile_options.SerializeAsString() + options_fragment(options))


def install() -> None:
    """Wraps ``jax._src.compiler.get_compile_options`` (once per process; see the module docstring)."""
    with _lock:
        if _state["installed"]:
            return
        from jax._src import compiler

        original = compiler.get_compile_options

        def get_compile_options(*args: Any, **kwargs: Any) -> Any:
            overrides = kwargs.get("env_options_overrides")
            if not overrides or MARK not in overrides:
                return original(*args, **kwargs)
            overrides = dict(overrides)
            options = overrides.pop(MARK)
            return with_options(original(*args, **dict(kwargs, env_options_overrides=overrides)), options)

        get_compile_options.__wrapped__ = original  # type: ignore[attr-defined]
        compiler.get_compile_options = get_compile_options
        _state["installed"] = True


def supported() -> bool:
    """Whether this process's JAX compiles a program with options of its own (:func:`install`, then a
    probe compilation that carries :data:`INTERLEAVE`; once per process)."""
    if _state["supported"] is None:
        try:
            import jax
            import numpy as np

            install()
            with jax.default_device(jax.devices("cpu")[0]):
                jax.jit(lambda x: x + 1.0, compiler_options={MARK: INTERLEAVE}).lower(np.float64(1.0)).compile()
            _state["supported"] = True
        except Exception:  # noqa: BLE001 - any failure: the kernels compile as JAX does by default
            _state["supported"] = False
    return bool(_state["supported"])


def effective(wanted: str) -> str:
    """The LLVM options a program compiled with :func:`compiler_options` ``(wanted)`` runs with in
    this process: the user's own from ``XLA_FLAGS`` if any (they hold for every program); else
    ``wanted``, unless the user opted out (:func:`opted_out`) or the process cannot (:func:`supported`)."""
    mine = process_llvm_options()
    if mine:
        return mine
    if not wanted or opted_out() or not supported():
        return ""
    return wanted


def compiler_options(wanted: str) -> dict[str, str]:
    """The ``jax.jit`` compiler options that give a program the LLVM options ``wanted`` (nothing
    where :func:`effective` says that it runs with other ones)."""
    mine = process_llvm_options()
    return {MARK: wanted} if wanted and not mine and effective(wanted) == wanted else {}
