"""Local worker processes for sweeps (``scheduler="processes"``): one process per core, each pinned.

Why processes: a process pinned to one core before JAX starts compiles single-threaded kernels and
shares nothing with the others (no thread pool, no allocator, no interpreter lock). When the kernel
still split its large loops over XLA:CPU's intra-op pool (until the tenth session's
``kernel.COMPILER_OPTIONS``), two chunks on threads of one process ran 25-35% slower each than alone
(2 cores), and the worker processes were 6-24% faster than threads on large sweeps. Since the
twenty-second session, with the chunk threads putting their results in place themselves and a spare
chunk thread, both take 1.20x the fused reference's time on the scalar benchmark.

A pool starts on first use (a Python interpreter with JAX per core, in parallel) and is kept for the
session; each worker compiles a sweep's kernel once, on its first chunk and on its one core (with the
parent's persistent compilation cache, if one is configured), and keeps it. Start and compilation
took 9.6 s for the scalar benchmark on 2 cores (a first sweep with threads: 4-6 s). Chunks go to whichever
worker is free. A worker that dies loses nothing: its chunk goes to another worker, or, with none
left, the remaining chunks run in this process.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import mmap
import os
import queue
import subprocess
import sys
import tempfile
import threading
from typing import Any, Callable, Iterator

import cloudpickle
import jax

from .worker import KEPT_JOBS, RESULTS_BYTES, receive, send, view_results

MALLOC_SETTINGS = {  # glibc: reuse freed buffers instead of returning them to the system at once
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),  # (XLA allocates a chunk's buffers anew per run;
    "MALLOC_TRIM_THRESHOLD_": str(1 << 32),  # fresh pages cost a page fault each)
}
_TOKENS = itertools.count()


class WorkerDied(Exception):
    """A worker process exited, or its pipe broke."""


def _results_file() -> int:
    """A sparse file of ``RESULTS_BYTES`` (in memory where ``/dev/shm`` exists), already unlinked:
    it lives as long as a descriptor or mapping of it does."""
    where = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="mfdyn-results-", dir=where)
    os.unlink(path)
    os.ftruncate(fd, RESULTS_BYTES)
    return fd


def worker_environment() -> dict[str, str]:
    """A worker's environment: this one's, with glibc's ``MALLOC_SETTINGS`` unless set, JAX on the
    CPU (the workers are the cores': on a GPU machine each would otherwise open the GPU and take
    most of its memory; the kernels of a sweep run on the GPU with ``scheduler=None``), and
    ``XLA_FLAGS`` (and ``MFDYN_LLVM_OPTIONS``) as here: the workers compile the kernel with the LLVM
    options it gets in this process, which the sweep records (:mod:`mfdyn._llvm_options`)."""
    return {**MALLOC_SETTINGS, **os.environ, "JAX_PLATFORMS": "cpu"}


class _Worker:
    def __init__(self, cpu: int | None):
        cache = jax.config.jax_compilation_cache_dir
        fd = _results_file()
        pin = f"os.sched_setaffinity(0, {{{cpu}}}); " if cpu is not None else ""
        # the parent's import path: jobs may refer to its modules (a factory defined in a test module)
        code = (f"import os, sys; {pin}sys.path[:] = {sys.path!r}; "
                f"from mfdyn.sweep.worker import main; main({cache!r}, {fd})")
        env = worker_environment()
        try:
            self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, env=env, pass_fds=(fd,))
            self.results = mmap.mmap(fd, RESULTS_BYTES)
        finally:
            os.close(fd)
        self.jobs: list[str] = []  # the jobs this worker remembers, oldest first
        # half h of the results buffer may be written again (its last results were consumed)
        self.free = (threading.Semaphore(1), threading.Semaphore(1))

    def call(self, job_id: str, payload: bytes, token: int, idx: int, bounds: tuple[int, int], half: int) -> tuple:
        """Runs one chunk, its results written to half ``half`` of the results buffer; returns
        ``(status, token, idx, results or message)`` (results: views into that half)."""
        try:
            if job_id not in self.jobs:
                send(self.process.stdin, ("job", job_id, payload))
                self.jobs = (self.jobs + [job_id])[-KEPT_JOBS:]
            send(self.process.stdin, ("chunk", job_id, token, idx, bounds, half))
            reply = receive(self.process.stdout)
        except (OSError, ValueError) as exc:  # broken pipe, closed file
            raise WorkerDied(str(exc)) from None
        if reply is None:
            raise WorkerDied(f"worker process exited with code {self.process.wait()}")
        if reply[0] == "shared":
            return ("ok",) + reply[1:3] + (view_results(self.results, reply[3]),)
        return reply

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """Ends the worker: end of input, then a kill if it does not exit at once (mid-chunk)."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        for free in self.free:  # a feeder waiting for a half goes on, and finds the worker gone
            free.release()
        try:
            self.results.close()
        except BufferError:  # results still viewed: the mapping goes with the last view
            pass


class WorkerPool:
    """``n`` worker processes; with at least ``n`` usable cores, worker ``i`` is pinned to the
    ``i``-th of them."""

    def __init__(self, n: int):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pinned = len(cpus) >= n
        self.workers = [_Worker(cpus[i] if pinned else None) for i in range(n)]
        self.busy = threading.Lock()

    def healthy(self) -> bool:
        return all(w.alive() for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def run(self, job: Any, values_of: Callable, pieces: list,
            fallback: Callable[[list], Iterator]) -> Iterator[tuple[int, dict]]:
        """Yields ``(idx, results)`` per piece ``(idx, bounds)`` in completion order (the values
        ``values_of(bounds)`` are built by the worker). The results are read-only views, valid until
        the next item is asked for. The pieces no worker could run go to ``fallback(pieces)``.
        Left early (an error, an interruption), the pool is closed: its workers may still be
        running chunks. A pool busy with another sweep (of another thread) leaves all the pieces to
        ``fallback``."""
        if not self.busy.acquire(blocking=False):
            yield from fallback(pieces)
            return
        try:
            yield from self._run(job, values_of, pieces, fallback)
        finally:
            self.busy.release()

    def _run(self, job: Any, values_of: Callable, pieces: list,
             fallback: Callable[[list], Iterator]) -> Iterator[tuple[int, dict]]:
        payload = cloudpickle.dumps((job, values_of))
        job_id = hashlib.sha256(payload).hexdigest()
        token = next(_TOKENS)
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for piece in pieces:
            todo.put(piece)
        replies: queue.SimpleQueue = queue.SimpleQueue()

        def feed(worker: _Worker) -> None:
            """Runs pieces on one worker until none is left or the worker dies; successive
            chunks use alternate halves of its results buffer."""
            half = 0
            try:
                while True:
                    try:
                        idx, bounds = todo.get_nowait()
                    except queue.Empty:
                        return
                    worker.free[half].acquire()
                    try:
                        replies.put((worker, half, worker.call(job_id, payload, token, idx, bounds, half)))
                    except WorkerDied:
                        todo.put((idx, bounds))
                        return
                    half = 1 - half
            finally:
                replies.put(None)

        feeders = [threading.Thread(target=feed, args=(w,), daemon=True) for w in self.workers if w.alive()]
        for thread in feeders:
            thread.start()
        remaining, running, finished = len(pieces), len(feeders), False
        try:
            while remaining and running:
                item = replies.get()
                if item is None:
                    running -= 1
                    continue
                worker, half, (status, reply_token, idx, result) = item
                if reply_token != token:
                    raise RuntimeError(f"sweep worker process replied out of turn (chunk {idx})")
                if status != "ok":
                    raise RuntimeError(f"sweep worker process failed on chunk {idx}: {result}")
                remaining -= 1
                yield idx, result
                worker.free[half].release()  # (the consumer is done with the views)
            if remaining:  # every worker died
                left = []
                while not todo.empty():
                    left.append(todo.get())
                yield from fallback(left)
            finished = True
        finally:
            if not finished:
                _discard(self)


_POOLS: dict[int, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def worker_pool(n: int) -> WorkerPool:
    """The session's pool of ``n`` workers (started now if there is none, or if one died); a pool
    of another size is closed first."""
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is not None and pool.healthy():
            return pool
        for other in list(_POOLS.values()):
            _discard(other)
        pool = _POOLS[n] = WorkerPool(n)
        return pool


def _discard(pool: WorkerPool) -> None:
    for key, value in list(_POOLS.items()):
        if value is pool:
            del _POOLS[key]
    pool.close()


@atexit.register
def close_pools() -> None:
    """Ends every worker process (at exit, or to free the cores)."""
    for pool in list(_POOLS.values()):
        _discard(pool)
