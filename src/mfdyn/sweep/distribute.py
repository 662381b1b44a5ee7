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

import jax
import numpy as np

from ..errors import InputError
from .kernel import KernelSpec, kernel_for, structure_key

CONNECT_TIMEOUT = "20s"  # for a scheduler given by address
LANE = 16  # chunks are padded to a multiple of this (see the docstring of padded_size)
WHOLE_CHUNK = 1 << 62  # a tile this wide spans any chunk (the kernel takes min(tile, chunk))


@dataclasses.dataclass(frozen=True)
class ChunkJob:
    """What a worker needs to run any chunk of one sweep (picklable with cloudpickle)."""

    problem: Any
    factory: Callable | None
    params0: Any
    spec: KernelSpec
    tol: float
    padded: int  # every chunk is padded to this many trajectories: one compiled shape
    llvm: str = ""  # the LLVM options wanted for the kernel (kernel.wanted_llvm_options)


def padded_size(chunk: int) -> int:
    """The compiled number of rows of a chunk of ``chunk`` points: a multiple of ``LANE``. LLVM's
    vectorized loops advance 4 float64 lanes times 4 interleaved vectors per trip (the kernel of a
    problem with scalar coordinates, :mod:`mfdyn._llvm_options`); the rows of a shorter loop, or past
    its last whole trip, take the scalar remainder, whose rounding can differ: the closed-form
    sharpness (``hypot``) of a chunk padded to 8 rows differed in the last bit from the same points in
    a chunk of 16 (size-1 batches also take other XLA code paths)."""
    return -(-chunk // LANE) * LANE


def kernel_platform() -> str:
    """Where this process runs the kernels: the platform of JAX's default device (``"cpu"``,
    ``"gpu"``, ``"tpu"``; ``JAX_PLATFORMS=cpu`` or ``jax.config.update("jax_default_device", ...)``
    choose it)."""
    import jax

    return device_platform(jax.config.jax_default_device)


def device_platform(device: Any) -> str:
    """The platform of a default device as ``jax.default_device`` takes it: a device, a platform
    name, or ``None`` (JAX's default backend)."""
    import jax

    if device is None:
        return jax.default_backend()
    return device if isinstance(device, str) else device.platform


def executed_spec(spec: KernelSpec, platform: str | None = None) -> KernelSpec:
    """The kernel's schedule where the chunk runs: on a CPU the planned cache-sized tiles, with the
    event blocks replayed on their rows gathered in groups; on an accelerator one tile spanning the
    whole chunk, replaying its event blocks on the whole tile. No result depends on either (see
    ``kernel``).

    Measured on an H100 (1e6-point scalar benchmark, one chunk): every loop trip of the kernel (a
    check block of one tile, a replayed step) waits for the host to read its predicate, and
    gathering a tile's event rows costs far more than walking them all: CPU tiles of 4096 took
    15-19 s, one tile with gathered replays 7-12 s, with gathers only on narrow tiles 0.09-0.16 s."""
    platform = kernel_platform() if platform is None else platform
    if platform == "cpu":
        return spec
    return dataclasses.replace(spec, tile=WHOLE_CHUNK, replay_gathered=False)


def _kernel_args(job: ChunkJob, values: dict[str, np.ndarray], *, abstract_starts: bool = False) -> tuple[int, tuple]:
    """The number of points and the kernel's arguments for a chunk (padded by repetition to the
    compiled shape; the kernel leaves the padding rows settled). The values stay NumPy arrays: the
    compiled function's own transfer is 0.3 ms per chunk faster than converting them first (the
    scalar benchmark's chunks). With ``abstract_starts`` random starts are only described (their
    shapes and dtypes, enough to compile the kernel), not drawn."""
    n = len(next(iter(values.values())))
    pad = job.padded - n
    batch = {k: np.ascontiguousarray(np.concatenate([v, np.repeat(v[-1:], pad)]) if pad else v)
             for k, v in values.items()}
    params0 = job.params0
    if job.spec.init == "random" and abstract_starts:
        params0 = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct((job.padded, *leaf.shape), leaf.dtype),
                                         job.problem.param_template())
    elif job.spec.init == "random":  # every row's start, with the bits of problem.init(seed, scale, kind)
        params0 = job.problem.init_batch(batch["seed"], batch["scale"], job.spec.init_kind)
    return n, (job.problem, batch, params0, np.float64(job.tol), np.int64(n))


def compile_kernel(job: ChunkJob, values: dict[str, np.ndarray]) -> None:
    """Compiles the kernel for the job's chunk shape without running it (the compiled executable is
    cached by ``jax.jit``: later calls of any chunk of the job reuse it). A kernel compiled before in
    this process is not traced and lowered again (about 1 ms a sweep). Random starts are not drawn
    for it: the chunk that runs draws them."""
    _, args, kernel, platform, spec = _prepared(job, values, abstract_starts=True)
    key = structure_key((args, job.factory))
    if key is not None:
        key = (job.llvm, platform, spec, key)
        if key in _COMPILED:
            return
    kernel.lower(*args, spec=spec, factory=job.factory).compile()
    if key is not None:
        _COMPILED.add(key)


_COMPILED: set = set()  # the kernels compile_kernel compiled (a key of their compilation)


def compute_chunk(job: ChunkJob, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one chunk; ``values[name]`` are the per-point axis values (padded here by repetition).
    The kernel is compiled with the job's LLVM options on a CPU (:func:`~mfdyn.sweep.kernel.kernel_for`)."""
    n, args, kernel, _, spec = _prepared(job, values)
    out = kernel(*args, spec=spec, factory=job.factory)
    return {k: np.asarray(v)[:n] for k, v in out.items()}  # (no copy on the CPU)


def _prepared(job: ChunkJob, values: dict[str, np.ndarray], *, abstract_starts: bool = False
              ) -> tuple[int, tuple, Callable, str, KernelSpec]:
    """A chunk's number of points and kernel arguments (:func:`_kernel_args`), and the kernel,
    platform and executed spec of this process (:func:`kernel_platform`, :func:`executed_spec`)."""
    n, args = _kernel_args(job, values, abstract_starts=abstract_starts)
    platform = kernel_platform()
    return n, args, kernel_for(job.llvm, platform), platform, executed_spec(job.spec, platform)


Piece = tuple[int, tuple[int, int]]  # (chunk index, its bounds in the flat grid)
ValuesOf = Callable[[tuple[int, int]], dict[str, np.ndarray]]  # a chunk's per-point axis values from its bounds


def local_workers(workers: int | None, platform: str = "cpu") -> int:
    """Chunks run at once in this process: ``workers``, else one per core on a CPU and one on an
    accelerator (its default device: the whole chunk is one tile there)."""
    if workers is not None:
        return max(1, workers)
    return max(1, os.cpu_count() or 1) if platform == "cpu" else 1


SPARE_CHUNK_THREADS = 1  # chunk threads beyond one per core, on a CPU (chunk_threads)


def chunk_threads(workers: int | None, platform: str = "cpu") -> int:
    """Threads that run chunks in this process: ``workers``, else on a CPU one per core and
    ``SPARE_CHUNK_THREADS`` more, and one on an accelerator. A chunk's thread also builds its axis
    values and puts its results in place, outside XLA: with a spare thread no core waits meanwhile.
    Measured on the scalar benchmark (2 cores, alternating order, per-round medians): 3 threads took
    0.959x, 0.929x and 0.932x the time of 2, and 4 threads 0.949x (4 against 3: 1.024x, 0.994x)."""
    if workers is not None or platform != "cpu":
        return local_workers(workers, platform)
    return local_workers(None, platform) + SPARE_CHUNK_THREADS


def run_local(job: ChunkJob, values_of: ValuesOf, pieces: list[Piece], workers: int | None,
              device: Any = None, sink: Callable[[int, dict], None] | None = None) -> Iterator[tuple[int, dict | None]]:
    """Chunks on a thread pool (:func:`chunk_threads`; XLA releases the GIL while running).
    With ``sink``, each chunk's thread hands its results to ``sink(index, results)`` and yields
    ``(index, None)``.

    The kernel is compiled first, once, so that the threads share it (a chunk run alone for that
    would leave the other cores idle meanwhile). Everything runs on ``device``, by default the
    caller's default device: ``with jax.default_device(...)`` sets that for the calling thread
    only, and the sweep was planned (and its platform recorded) for it.
    """
    if not pieces:
        return
    import jax

    if device is None:
        device = jax.config.jax_default_device  # (this thread's: a `with jax.default_device` context included)

    def run(idx, bounds):  # a chunk's values are built by its thread (and its results taken by `sink` there)
        with jax.default_device(device):
            result = compute_chunk(job, values_of(bounds))
        if sink is None:
            return result
        sink(idx, result)
        return None

    with jax.default_device(device):
        compile_kernel(job, values_of(pieces[0][1]))
    with ThreadPoolExecutor(max_workers=chunk_threads(workers, device_platform(device))) as pool:
        futures = {pool.submit(run, idx, bounds): idx for idx, bounds in pieces}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def run_processes(job: ChunkJob, values_of: ValuesOf, pieces: list[Piece], workers: int | None) -> Iterator[tuple[int, dict]]:
    """Chunks on the session's pool of local worker processes, one per core
    (:mod:`mfdyn.sweep.processes`); what no worker can run runs in this process, on its CPU like
    the workers (the sweep's platform)."""
    import jax

    from .processes import worker_pool

    if not pieces:
        return
    cpu = jax.devices("cpu")[0]
    yield from worker_pool(local_workers(workers)).run(job, values_of, pieces,
                                                       lambda left: run_local(job, values_of, left, workers, cpu))


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


def cluster_platform(client: Any) -> str:
    """Where a Dask cluster's workers run the kernels (:func:`kernel_platform` of each; several
    joined by ``+``)."""
    return "+".join(sorted(set(client.run(kernel_platform).values()))) or "cpu"


def cluster_llvm_options(client: Any, wanted: str) -> str:
    """The LLVM options that the kernel compiled for ``wanted`` runs with on a Dask cluster's
    workers (:func:`~mfdyn.sweep.kernel.kernel_llvm_options` of each, on its platform; several
    joined by ``+``)."""
    return "+".join(sorted(set(client.run(_worker_llvm_options, wanted).values())))


def _worker_llvm_options(wanted: str) -> str:
    from .kernel import kernel_llvm_options

    return kernel_llvm_options(wanted, kernel_platform())


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
