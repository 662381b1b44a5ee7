"""The memory of dropped sweep results, reused by later results (:mod:`mfdyn.sweep.memory`)."""

from __future__ import annotations

import gc
import importlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

memory = importlib.import_module("mfdyn.sweep.memory")


def address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def empty_pool():
    memory.release()
    yield
    memory.release()


@pytest.mark.parametrize("shape, dtype", [((1 << 18,), np.float64), ((1 << 17, 2), np.float64),
                                          ((300, 400, 3), np.int32), ((1 << 16,), "<U10")])
def test_arrays_are_like_np_empty(shape, dtype):
    arr = memory.empty(shape, dtype)
    assert arr.shape == shape and arr.dtype == np.dtype(dtype)
    assert arr.flags.c_contiguous and arr.flags.writeable and arr.flags.aligned
    arr[...] = np.ones(shape, dtype) if np.dtype(dtype).kind != "U" else "unfinished"
    assert (arr == arr.flat[0]).all()


def test_small_and_object_arrays_are_plain_numpy():
    for arr in (memory.empty(1000, np.float64), memory.empty(1 << 18, object)):
        assert arr.base is None  # (owns its memory: np.empty)
    assert memory.held_bytes() == 0


def test_a_block_comes_back_only_when_its_last_view_is_gone():
    arr = memory.empty((1 << 18,), np.float64)
    start = address(arr)
    views = [arr[::2], arr.reshape(512, 512)[3], arr.view(np.int64), memoryview(arr)]
    del arr
    for _ in range(len(views)):
        gc.collect()
        assert memory.held_bytes() == 0
        views.pop()
    gc.collect()
    assert memory.held_bytes() == 2 << 20
    again = memory.empty((1 << 18,), np.float64)  # the same block, not a new one
    assert address(again) == start and memory.held_bytes() == 0
    other = memory.empty((1 << 18,), np.float64)  # (none held now: a new block)
    assert address(other) != start


def test_blocks_of_another_size_are_not_reused():
    arr = memory.empty((1 << 18,), np.float64)
    del arr
    other = memory.empty((1 << 19,), np.float64)
    assert memory.held_bytes() == 2 << 20 and other.nbytes == 4 << 20


def test_at_most_kept_bytes_are_held_and_release_hands_them_back(monkeypatch):
    monkeypatch.setattr(memory, "KEPT_BYTES", 5 << 20)
    arrays = [memory.empty((1 << 18,), np.float64) for _ in range(3)]  # 2 MiB each
    del arrays
    gc.collect()
    assert memory.held_bytes() == 4 << 20  # the third did not fit
    memory.release()
    assert memory.held_bytes() == 0


def test_blocks_are_private_mappings_a_forked_process_copies(tmp_path):
    """A block is a private mapping (``/proc/self/maps``: ``rw-p``), so that a process forked after a
    sweep writes into its own copy, as with any other memory, never into its parent's results."""
    arr = memory.empty((1 << 18,), np.float64)
    start = address(arr)
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= start < high:
                assert line.split()[1] == "rw-p", line
                break
        else:
            raise AssertionError("the block is not among the process's mappings")
    if not hasattr(os, "fork"):
        return
    arr[:] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (JAX warns that a fork of a threaded process may deadlock)
        pid = os.fork()
    if pid == 0:  # the child: write, then leave at once
        arr[:] = 2.0
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert np.all(arr == 1.0)
