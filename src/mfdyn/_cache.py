"""JAX's persistent compilation cache for mfdyn's command line.

Most of the time of a short mfdyn run is XLA compilation. The CLI (and the worker processes of
``mfdyn reproduce``) store compiled executables in ``$MFDYN_CACHE_DIR`` (default
``$XDG_CACHE_HOME/mfdyn/jax`` or ``~/.cache/mfdyn/jax``), so parallel workers and later runs reuse
them. JAX keys each entry by the program's HLO, the compile options and the JAX/XLA versions, so an
entry can never be stale. ``MFDYN_CACHE_DIR=off`` disables it. The library itself does not touch
JAX's configuration beyond float64.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

MIN_COMPILE_SECONDS = 0.3


def cache_dir() -> Path | None:
    configured = os.environ.get("MFDYN_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "none") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mfdyn" / "jax"


def enable_persistent_cache() -> Path | None:
    """Point JAX's compilation cache at :func:`cache_dir` (no-op if disabled or not writable)."""
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
