"""Sweeps on local worker processes (``scheduler="processes"``): identical to threads, and a worker
process that dies mid-chunk loses nothing."""

from __future__ import annotations

import importlib
import os
import signal
from functools import partial

import jax.numpy as jnp
import numpy as np
import pytest

import mfdyn

api = importlib.import_module("mfdyn.sweep.api")  # (mfdyn.sweep is the function)
distribute = importlib.import_module("mfdyn.sweep.distribute")
processes = importlib.import_module("mfdyn.sweep.processes")

AXES = {"eta": np.linspace(0.05, 2.1, 9), "a": np.linspace(0.1, 3.0, 7), "b": [0.3, 1.4]}


@pytest.fixture
def threads_on_the_cpu():
    """In-process references on the CPU, where the worker processes run (on a GPU machine the
    default device is the GPU, which rounds differently)."""
    import jax

    before = jax.config.jax_default_device
    jax.config.update("jax_default_device", jax.devices("cpu")[0])
    yield
    jax.config.update("jax_default_device", before)


def test_worker_processes_give_the_same_bits_as_threads(threads_on_the_cpu):
    kw = dict(keep_orbit=3, chunk=24, progress=False)
    ref = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), AXES, 300, **kw)
    ds = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), AXES, 300, scheduler="processes", workers=2, **kw)
    assert ref.identical(ds)
    # a problem given by a factory (sent to the workers with cloudpickle), random initializations
    factory = lambda sigma: mfdyn.SymmetricFactorization(jnp.diag(jnp.stack([1.0, sigma])), rank=1)  # noqa: E731
    axes = {"sigma": [0.3, 0.7], "eta": [0.05, 0.3], "seed": np.arange(5)}
    ref = mfdyn.sweep(factory, axes, 200, chunk=8, progress=False)
    ds = mfdyn.sweep(factory, axes, 200, chunk=8, scheduler="processes", workers=2, progress=False)
    assert ref.identical(ds)
    # sums over matrix entries (losses, norms) and LAPACK's eigensolver (the sharpness)
    deep = mfdyn.DeepFactorization(jnp.diag(jnp.array([1.0, 0.5, 0.2])), depth=3)
    axes = {"eta": [0.05, 0.6], "seed": np.arange(4)}
    ref = mfdyn.sweep(deep, axes, 150, chunk=3, progress=False)
    ds = mfdyn.sweep(deep, axes, 150, chunk=3, scheduler="processes", workers=2, progress=False)
    assert ref.identical(ds)
    assert processes.worker_pool(2).healthy()  # kept for the session


def test_worker_processes_run_jax_on_the_cpu(monkeypatch):
    """The workers are the cores': on a GPU machine JAX in each would otherwise open the GPU (and
    take most of its memory). glibc's malloc settings stay the user's where set. ``XLA_FLAGS`` is
    this process's as it is: its LLVM options, which the sweep records, are the workers' too."""
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")
    mine = "--xla_backend_extra_options=-force-vector-interleave=4"  # (the user's own LLVM options)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x " + mine)
    env = processes.worker_environment()
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["MALLOC_TRIM_THRESHOLD_"] == "123" and env["MALLOC_MMAP_THRESHOLD_"] == processes.MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"]
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x " + mine
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")  # no LLVM options here: none in the workers
    assert processes.worker_environment()["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"


def _dying_values(values_of, marker: str, parent: int, die_at: tuple[int, ...]):
    """``values_of`` that kills its worker process, the first time only, on the chunks starting at
    ``die_at`` (never the parent)."""
    def values(bounds):
        flag = f"{marker}-{bounds[0]}"
        if os.getpid() != parent and bounds[0] in die_at and not os.path.exists(flag):
            open(flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return values_of(bounds)
    return values


@pytest.mark.parametrize("deaths", [1, 2])
def test_a_worker_process_killed_mid_chunk_loses_nothing(tmp_path, deaths, threads_on_the_cpu):
    """One worker dies: its chunk goes to the other. Both die: the rest runs in this process."""
    plan = api.plan_sweep(mfdyn.ScalarFactorization(1.0), AXES, 300, tol=1e-12, max_period=64, keep_orbit=0,
                          chunk=16, init_kind="normal", params0=None, check_every=16, sharpness=True, workers=2)
    values_of = partial(api._chunk_values, plan.grid, spec=plan.job.spec)
    ranges = api.chunk_ranges(plan.grid.size, plan.chunk)
    pieces = list(enumerate(ranges))
    ref = {idx: {k: np.array(v) for k, v in out.items()}
           for idx, out in distribute.run_local(plan.job, values_of, pieces, 2)}
    die_at = tuple(ranges[i][0] for i in range(1, 1 + deaths))
    dying = _dying_values(values_of, str(tmp_path / "died"), os.getpid(), die_at)
    pool = processes.worker_pool(2)
    got = {idx: {k: np.array(v) for k, v in out.items()}
           for idx, out in distribute.run_processes(plan.job, dying, pieces, 2)}
    assert sorted(got) == sorted(ref)
    for idx in ref:
        for name in ref[idx]:
            np.testing.assert_array_equal(got[idx][name], ref[idx][name], err_msg=f"chunk {idx} {name}")
    assert sum(not w.alive() for w in pool.workers) == deaths
    assert processes.worker_pool(2) is not pool and processes.worker_pool(2).healthy()  # a fresh pool


def test_an_unknown_local_scheduler_is_bad_input():
    with pytest.raises(mfdyn.InputError, match="scheduler must be one of"):
        mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": [0.1], "a": [1.0], "b": [1.0]}, 5,
                    scheduler="process", progress=False)


def _failing_values(bounds):
    raise ValueError(f"no values for {bounds}")


def test_an_error_in_a_worker_process_is_raised_and_the_pool_replaced():
    plan = api.plan_sweep(mfdyn.ScalarFactorization(1.0), AXES, 50, tol=1e-12, max_period=8, keep_orbit=0,
                          chunk=64, init_kind="normal", params0=None, check_every=16, sharpness=False, workers=2)
    pool = processes.worker_pool(2)
    pieces = list(enumerate(api.chunk_ranges(plan.grid.size, plan.chunk)))
    with pytest.raises(RuntimeError, match=r"failed on chunk \d+: ValueError: no values for"):
        list(distribute.run_processes(plan.job, _failing_values, pieces, 2))
    assert not pool.healthy() and processes.worker_pool(2) is not pool


def test_results_cross_the_shared_buffer_exactly_or_not_at_all():
    worker = importlib.import_module("mfdyn.sweep.worker")
    import mmap

    buffer = mmap.mmap(-1, 1 << 16)
    rng = np.random.default_rng(0)
    results = {"x": rng.normal(size=(100, 3)), "code": rng.integers(0, 5, 100).astype(np.int8),
               "n": np.arange(7, dtype=np.int64)}
    for half in (0, 1):
        layout = worker.write_results(buffer, half, results)
        assert all((half << 15) <= start < ((half + 1) << 15) for *_, start in layout)
        got = worker.view_results(buffer, layout)
        for name, x in results.items():
            assert got[name].dtype == x.dtype and not got[name].flags.writeable
            np.testing.assert_array_equal(got[name], x)
        del got
    assert worker.write_results(buffer, 0, {"big": np.zeros(1 << 13)}) is None  # 64 KiB > one half
