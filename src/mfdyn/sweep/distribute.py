"""Running sweep chunks: in-process on all local cores, on local worker processes, or as Dask tasks
on a cluster.

A chunk is a pure function of ``(job, per-point axis values)``: workers compile the kernel once per
process and return numpy arrays; the caller collects them in completion order. Because every
trajectory's result is independent of its chunk (see ``kernel``), a task retried on another worker
after a worker died gives the same bits.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError
from .kernel import KernelSpec, run_chunk

CONNECT_TIMEOUT = "20s"  # for a scheduler given by address
LANE = 8  # chunks are padded to a multiple of this: size-1 batches take other XLA code paths


@dataclasses.dataclass(frozen=True)
class ChunkJob:
    """What a worker needs to run any chunk of one sweep (picklable with cloudpickle)."""

    problem: Any
    factory: Callable | None
    params0: Any
    spec: KernelSpec
    tol: float
    padded: int  # every chunk is padded to this many trajectories: one compiled shape


def padded_size(chunk: int) -> int:
    return -(-chunk // LANE) * LANE


def _kernel_args(job: ChunkJob, values: dict[str, np.ndarray]) -> tuple[int, tuple]:
    """The number of points and the kernel's arguments for a chunk (padded by repetition to the
    compiled shape; the kernel leaves the padding rows settled). The values stay NumPy arrays: the
    compiled function's own transfer is 0.3 ms per chunk faster than converting them first (the
    scalar benchmark's chunks)."""
    n = len(next(iter(values.values())))
    pad = job.padded - n
    batch = {k: np.ascontiguousarray(np.concatenate([v, np.repeat(v[-1:], pad)]) if pad else v)
             for k, v in values.items()}
    return n, (job.problem, batch, job.params0, np.float64(job.tol), np.int64(n))


def compile_kernel(job: ChunkJob, values: dict[str, np.ndarray]) -> None:
    """Compiles the kernel for the job's chunk shape without running it (the compiled executable is
    cached by ``jax.jit``: later calls of any chunk of the job reuse it)."""
    run_chunk.lower(*_kernel_args(job, values)[1], spec=job.spec, factory=job.factory).compile()


def compute_chunk(job: ChunkJob, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one chunk; ``values[name]`` are the per-point axis values (padded here by repetition)."""
    n, args = _kernel_args(job, values)
    out = run_chunk(*args, spec=job.spec, factory=job.factory)
    return {k: np.asarray(v)[:n] for k, v in out.items()}  # (no copy on the CPU)


Piece = tuple[int, tuple[int, int]]  # (chunk index, its bounds in the flat grid)
ValuesOf = Callable[[tuple[int, int]], dict[str, np.ndarray]]  # a chunk's per-point axis values from its bounds


def local_workers(workers: int | None) -> int:
    return max(1, workers if workers is not None else (os.cpu_count() or 1))


def run_local(job: ChunkJob, values_of: ValuesOf, pieces: list[Piece], workers: int | None) -> Iterator[tuple[int, dict]]:
    """Chunks on a thread pool, one chunk per core at a time (XLA releases the GIL while running).

    The kernel is compiled first, once, so that the threads share it (a chunk run alone for that
    would leave the other cores idle meanwhile).
    """
    if not pieces:
        return
    compile_kernel(job, values_of(pieces[0][1]))
    with ThreadPoolExecutor(max_workers=local_workers(workers)) as pool:
        # a chunk's values are built by its thread
        futures = {pool.submit(lambda bounds: compute_chunk(job, values_of(bounds)), bounds): idx for idx, bounds in pieces}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def run_processes(job: ChunkJob, values_of: ValuesOf, pieces: list[Piece], workers: int | None) -> Iterator[tuple[int, dict]]:
    """Chunks on the session's pool of local worker processes, one per core
    (:mod:`mfdyn.sweep.processes`); what no worker can run runs in this process."""
    from .processes import worker_pool

    if not pieces:
        return
    yield from worker_pool(local_workers(workers)).run(job, values_of, pieces,
                                                       lambda left: run_local(job, values_of, left, workers))


def dask_client(scheduler: Any):
    """A ``dask.distributed.Client`` from a client or a scheduler address ``tcp://host:port``."""
    from dask.distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    if isinstance(scheduler, str):
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT), True
        except Exception as exc:  # noqa: BLE001 - any connection failure is bad input
            raise InputError(f"scheduler {scheduler!r} could not be reached ({type(exc).__name__}: {exc})") from None
    raise InputError(f"scheduler must be None, 'threads', 'processes', an address like 'tcp://host:port' or a dask "
                     f"Client, got {scheduler!r}")


def run_dask(job: ChunkJob, values_of: ValuesOf, pieces: list[Piece], scheduler: Any,
             key_prefix: str) -> Iterator[tuple[int, dict]]:
    """Chunks as Dask tasks; a task lost with its worker is rerun elsewhere by the scheduler."""
    from dask.distributed import as_completed as dask_completed

    client, owned = dask_client(scheduler)
    try:
        futures = {}
        for idx, bounds in pieces:
            fut = client.submit(compute_chunk, job, values_of(bounds), key=f"{key_prefix}-{idx}", pure=False, retries=3)
            futures[fut.key] = (idx, fut)
        for fut in dask_completed([f for _, f in futures.values()]):
            idx = futures[fut.key][0]
            yield idx, fut.result()
            fut.release()
    finally:
        if owned:
            client.close()
