"""A local sweep worker process (``scheduler="processes"``): runs chunks sent by the parent.

The parent (:mod:`mfdyn.sweep.processes`) starts ``python -c ... main()`` with the process pinned to
one core before JAX starts, so XLA sizes its thread pool for that core and compiles single-threaded
kernels: worker processes never share a thread pool, unlike threads of one process.

Protocol on stdin/stdout, one message at a time, each a little-endian ``uint64`` length and a
pickle (:func:`send`, :func:`receive`):

- ``("job", job_id, cloudpickled (ChunkJob, values_of))``: remember a job (no reply);
- ``("chunk", job_id, token, idx, bounds, half)``: run
  :func:`~mfdyn.sweep.distribute.compute_chunk` on ``values_of(bounds)``; reply
  ``("shared", token, idx, layout)`` with the results written to half ``half`` of the shared
  results buffer (:func:`write_results`), ``("ok", token, idx, results)`` if they do not fit, or
  ``("error", token, idx, "Type: message")``.

The results buffer is a file the parent opened (and already unlinked), inherited as a file
descriptor and mapped by both: a chunk's results cross with one copy instead of a pickle through a
pipe (2 MB per chunk of the scalar benchmark: 4 ms of pickling and copying, against 0.3 ms). The
parent reads them in place, and sends successive chunks to alternate halves, so a worker writes
one chunk's results while the parent reads the last one's. End of input ends the process.
Anything the worker prints goes to stderr: stdout carries only the protocol.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

import numpy as np

HEADER = struct.Struct("<Q")
KEPT_JOBS = 4  # jobs remembered per worker (the newest)
RESULTS_BYTES = 256 << 20  # the shared results buffer (a sparse file: pages are used as written)
ALIGN = 64
Layout = list[tuple[str, str, tuple[int, ...], int]]  # (name, dtype, shape, offset) per array


def send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        part = stream.read(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def receive(stream: BinaryIO) -> Any:
    """The next message, or ``None`` at the end of the stream (the other side is gone)."""
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    data = _read_exactly(stream, HEADER.unpack(header)[0])
    return None if data is None else pickle.loads(data)


def write_results(buffer: mmap.mmap, half: int, results: dict[str, np.ndarray]) -> Layout | None:
    """Copies the arrays into half ``half`` of ``buffer`` (each at a 64-byte aligned offset);
    ``None`` if they do not fit."""
    size = len(buffer) // 2
    layout, offset = [], half * size
    arrays = {name: np.ascontiguousarray(x) for name, x in results.items()}
    for name, x in arrays.items():
        layout.append((name, x.dtype.str, x.shape, offset))
        offset += -(-x.nbytes // ALIGN) * ALIGN
    if offset > (half + 1) * size or any(x.dtype.hasobject for x in arrays.values()):
        return None
    for (name, _, _, start), x in zip(layout, arrays.values()):
        np.frombuffer(buffer, np.uint8, x.nbytes, start)[:] = x.reshape(-1).view(np.uint8)
    return layout


def view_results(buffer: mmap.mmap, layout: Layout) -> dict[str, np.ndarray]:
    """The arrays of :func:`write_results`: read-only views into ``buffer``, not copies."""
    views = {}
    for name, dtype, shape, start in layout:
        x = np.frombuffer(buffer, np.dtype(dtype), int(np.prod(shape)), start).reshape(shape)
        x.flags.writeable = False
        views[name] = x
    return views


def main(cache_dir: str | None, results_fd: int) -> None:
    """Serve chunks until the parent closes stdin."""
    buffer = mmap.mmap(results_fd, RESULTS_BYTES)
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints must not corrupt the protocol
    protocol_in = sys.stdin.buffer

    import jax

    from .distribute import compute_chunk

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
    jobs: dict[str, Any] = {}
    while (message := receive(protocol_in)) is not None:
        if message[0] == "job":
            _, job_id, payload = message
            try:
                jobs[job_id] = pickle.loads(payload)
            except Exception as exc:  # noqa: BLE001 - reported with each of the job's chunks
                jobs[job_id] = exc
            for old in list(jobs)[:-KEPT_JOBS]:
                del jobs[old]
            continue
        _, job_id, token, idx, bounds, half = message
        try:
            if isinstance(jobs[job_id], Exception):
                raise RuntimeError(f"the job could not be loaded: {jobs[job_id]!r}")
            job, values_of = jobs[job_id]
            results = compute_chunk(job, values_of(bounds))
            layout = write_results(buffer, half, results)
            send(protocol_out, ("ok", token, idx, results) if layout is None else ("shared", token, idx, layout))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            send(protocol_out, ("error", token, idx, f"{type(exc).__name__}: {exc}"))
