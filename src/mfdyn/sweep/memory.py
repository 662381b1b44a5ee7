"""Memory for the result arrays of in-memory sweeps, reused from results this process dropped.

A sweep returns new arrays: for the scalar benchmark's million points, 101 MB (61 MB of numbers, 40 MB
of outcome labels). Fresh memory reaches a process as pages the operating system clears on their first
touch, on the cores that run the sweep: reusing memory took 3-4% off the scalar benchmark's sweep
(2 cores, the median of per-round ratios, the two variants in alternating order). An array made by
:func:`empty` lives in a block of its own; when the last array or view of it is gone (the caller
dropped the result), the block comes back here, and the next sweep writes its results into it without
that clearing. At most :data:`KEPT_BYTES` are held here at a time (anything beyond is handed back to
the system); :func:`release` hands back everything held.

Safe because a block returns only when nothing can read it any more (a ``weakref.finalize`` on the
buffer object that NumPy made for the block, which every array and view of it keeps alive), a sweep
writes every row of its results before it returns them, and a block is a private mapping (a process
forked from this one writes into its own copy).
"""

from __future__ import annotations

import mmap
import threading
import weakref
from typing import Any

import numpy as np

KEPT_BYTES = 512 << 20  # blocks held for reuse, at most
_PRIVATE = (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if hasattr(mmap, "MAP_ANONYMOUS") else None  # (else np.empty)
MIN_BYTES = 1 << 20  # smaller arrays come from NumPy's allocator (malloc reuses them itself)

_free: dict[int, list[mmap.mmap]] = {}  # blocks ready for reuse, by size
_lock = threading.RLock()  # (reentrant: a block may come back while this thread holds it)


def empty(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialized, writable C-contiguous array, like ``np.empty(shape, dtype)``, in a block reused
    from a dropped result where one of the same size is held (else a new anonymous mapping)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES or dtype.hasobject or _PRIVATE is None:
        return np.empty(shape, dtype)
    size = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    # (private: a forked process gets copies on write, as of any other memory; mmap's default, a
    # shared mapping, would let a child and its parent write into one block)
    block = _take(size) or mmap.mmap(-1, size, flags=_PRIVATE)
    flat = np.frombuffer(block, dtype=dtype, count=count)
    # every array made from `flat` (views, reshapes) keeps NumPy's buffer object alive: when that goes,
    # so did they. (Were it the block itself, the finalizer's own reference would keep it for ever.)
    if not isinstance(flat.base, memoryview):
        return np.empty(shape, dtype)
    weakref.finalize(flat.base, _give_back, block).atexit = False
    return flat.reshape(shape)


def _take(size: int) -> mmap.mmap | None:
    with _lock:
        blocks = _free.get(size)
        return blocks.pop() if blocks else None


def _give_back(block: mmap.mmap) -> None:
    with _lock:
        if held_bytes() + len(block) <= KEPT_BYTES:
            _free.setdefault(len(block), []).append(block)


def held_bytes() -> int:
    """Bytes held for reuse now."""
    with _lock:
        return sum(size * len(blocks) for size, blocks in _free.items())


def release() -> None:
    """Hands every block held for reuse back to the system."""
    with _lock:
        _free.clear()
