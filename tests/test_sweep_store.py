"""Resumable Zarr stores: chunk-by-chunk writes, resume after SIGKILL, refusal of other configurations."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import mfdyn
from mfdyn import InputError

SCALAR = mfdyn.ScalarFactorization(1.0)
AXES = {"eta": np.linspace(0.2, 2.1, 7), "a": [0.5, 1.2, 2.0], "b": [0.8]}


def _identical(a, b):
    assert a.identical(b), [k for k in a.data_vars if not a[k].identical(b[k])]


def _tree(path: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in path.rglob("*")}


def test_store_roundtrip_resume_and_refusal(tmp_path):
    ref = mfdyn.sweep(SCALAR, AXES, 150, keep_orbit=2, chunk=4, progress=False)
    path = tmp_path / "s.zarr"
    first = mfdyn.sweep(SCALAR, AXES, 150, keep_orbit=2, chunk=4, store=path, progress=False)
    _identical(ref, first)
    _identical(ref, mfdyn.open_sweep(path))
    # damage two chunks and mark them not done: a resume recomputes exactly those
    group = zarr.open_group(path, mode="r+")
    group["chunk_done"][1] = 0
    group["chunk_done"][3] = 0
    group["final_loss"][4:8] = 123.0
    group["outcome"][12:16] = 3
    partial = mfdyn.open_sweep(path)
    assert (partial.outcome.values.ravel()[4:8] == "unfinished").all()
    assert np.isnan(partial.final_loss.values.ravel()[4:8]).all()
    resumed = mfdyn.sweep(SCALAR, AXES, 150, keep_orbit=2, chunk=8, store=path, progress=False)  # store's chunk wins
    _identical(ref, resumed)
    # another configuration is refused, and nothing in the store changes
    before = _tree(path)
    with pytest.raises(InputError, match="different sweep configuration.*steps"):
        mfdyn.sweep(SCALAR, AXES, 151, keep_orbit=2, store=path, progress=False)
    with pytest.raises(InputError, match="different sweep configuration"):
        mfdyn.sweep(mfdyn.ScalarFactorization(2.0), AXES, 150, keep_orbit=2, store=path, progress=False)
    # the platform is part of the configuration (a GPU rounds differently: its bits would mix with these)
    api = importlib.import_module("mfdyn.sweep.api")
    here = api.kernel_platform()  # (the test also runs on a GPU machine)
    elsewhere = "gpu" if here == "cpu" else "cpu"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "kernel_platform", lambda: elsewhere)
        with pytest.raises(InputError, match=f'platform: store has "{here}", this call has "{elsewhere}"'):
            mfdyn.sweep(SCALAR, AXES, 150, keep_orbit=2, store=path, progress=False)
    assert _tree(path) == before
    other = tmp_path / "not_a_store"
    other.mkdir()
    (other / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not a readable Zarr store|not an mfdyn sweep store"):
        mfdyn.sweep(SCALAR, AXES, 150, store=other, progress=False)
    assert (other / "file.txt").read_text() == "x"


KILL_AXES = {"eta": np.linspace(0.05, 2.1, 12), "a": np.linspace(0.1, 3.0, 10), "b": np.linspace(0.1, 3.0, 4)}
SCRIPT = """
import sys, numpy as np, mfdyn
mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": np.linspace(0.05, 2.1, 12), "a": np.linspace(0.1, 3.0, 10),
            "b": np.linspace(0.1, 3.0, 4)}, 3000, keep_orbit=3, chunk=8, workers=1, store=sys.argv[1],
            progress=False)
"""


def test_long_axes_recorded_by_digest_and_kept_in_the_store(tmp_path, monkeypatch):
    """An axis longer than INLINE_AXIS_VALUES is recorded in the configuration by size and SHA-256
    (not as a list: a million zipped points made 60 MB of JSON); a store keeps its values, and
    open_sweep checks them against the digest."""
    grid = importlib.import_module("mfdyn.sweep.grid")
    monkeypatch.setattr(grid, "INLINE_AXIS_VALUES", 4)
    rng = np.random.default_rng(3)
    eta, a = rng.uniform(0.2, 2.1, 10), rng.uniform(0.5, 2.0, 10)
    axes = {"pt": mfdyn.zipped(eta=eta, a=a), "b": [0.8, 1.1, 1.4]}
    ref = mfdyn.sweep(SCALAR, axes, 150, keep_orbit=2, chunk=4, progress=False)
    recorded = dict(json.loads(ref.attrs["mfdyn_config"])["grid"])
    assert recorded["b"] == {"b": [0.8, 1.1, 1.4]}  # (short: its values)
    assert recorded["pt"]["eta"] == {"size": 10, "dtype": "float64", "first": eta[0], "last": eta[-1],
                                     "sha256": hashlib.sha256(eta.tobytes()).hexdigest()}
    path = tmp_path / "long.zarr"
    _identical(ref, mfdyn.sweep(SCALAR, axes, 150, keep_orbit=2, chunk=4, store=path, progress=False))
    _identical(ref, mfdyn.open_sweep(path))
    _identical(ref, mfdyn.sweep(SCALAR, axes, 150, keep_orbit=2, chunk=4, store=path, progress=False))  # resumed
    # other values along the long axis are refused, naming the first difference; nothing changes
    before = _tree(path)
    moved = {"pt": mfdyn.zipped(eta=eta, a=np.r_[a[:9], a[9] + 1e-12]), "b": [0.8, 1.1, 1.4]}
    with pytest.raises(InputError, match=r"grid\.0\.1\.a\.last: store has"):
        mfdyn.sweep(SCALAR, moved, 150, keep_orbit=2, chunk=4, store=path, progress=False)
    shorter = {"pt": mfdyn.zipped(eta=eta, a=a), "b": [0.8, 1.1, 1.5]}
    with pytest.raises(InputError, match=r"grid\.1\.1\.b\.2: store has 1\.4, this call has 1\.5"):
        mfdyn.sweep(SCALAR, shorter, 150, keep_orbit=2, chunk=4, store=path, progress=False)
    assert _tree(path) == before
    # stored values that no longer match their digest are reported, not used
    zarr.open_group(path, mode="r+")["axis_values_eta"][3] = 9.0
    with pytest.raises(InputError, match="axis 'eta': the stored values do not match"):
        mfdyn.open_sweep(path)


def test_sigkill_and_resume_identical(tmp_path):
    """Kill a sweep process writing to a store at random moments, resume, compare with a clean run."""
    path = tmp_path / "killed.zarr"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    rng = np.random.default_rng(12345)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and not path.exists():  # wait until the store exists (compile done)
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        partial = mfdyn.open_sweep(path)  # always readable
        assert partial.outcome.size == 12 * 10 * 4
    assert kills >= 1
    resumed = mfdyn.sweep(SCALAR, KILL_AXES, 3000, keep_orbit=3, chunk=8, store=path, progress=False)
    clean = mfdyn.sweep(SCALAR, KILL_AXES, 3000, keep_orbit=3, chunk=48, progress=False)
    _identical(clean, resumed)
    _identical(clean, mfdyn.open_sweep(path))


def test_factory_stores_resume_and_refuse_by_what_the_factory_computes(tmp_path):
    """A factory is recorded by its code (nested functions included, whose ``repr`` holds a memory
    address), its defaults and bound arguments, and by the problems it builds: the same factory
    written again resumes; one that builds other problems (through a global it reads) is refused."""
    axes = {"eta": [0.2, 0.9], "a": [0.5, 1.5], "b": [0.8], "target": [1.0, 2.0]}
    path = tmp_path / "f.zarr"
    first = mfdyn.sweep(lambda target: (lambda t: mfdyn.ScalarFactorization(t))(target), axes, 40, chunk=4,
                        store=path, progress=False)
    again = mfdyn.sweep(lambda target: (lambda t: mfdyn.ScalarFactorization(t))(target), axes, 40, chunk=4,
                        store=path, progress=False)
    _identical(first, again)
    power = {"p": 1.0}
    other = lambda target: (lambda t: mfdyn.ScalarFactorization(t ** power["p"]))(target)  # noqa: E731
    power["p"] = 2.0
    before = _tree(path)
    with pytest.raises(InputError, match="problem.factory"):
        mfdyn.sweep(other, axes, 40, chunk=4, store=path, progress=False)
    assert _tree(path) == before


def test_store_made_meanwhile_by_another_process_is_resumed(tmp_path, monkeypatch):
    """Two runs of one sweep creating the same store: the one whose rename finds the store already
    there opens it as an existing store (it used to fail: 'not writable (Directory not empty)')."""
    import shutil

    store_module = importlib.import_module("mfdyn.sweep.store")
    winner = tmp_path / "winner.zarr"
    ref = mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=winner, progress=False)

    real_replace, target = os.replace, tmp_path / "s.zarr"

    def racing(src, dst):
        if Path(dst) != target:  # (Zarr's own atomic writes)
            return real_replace(src, dst)
        shutil.copytree(winner, dst)  # the other process's rename lands first
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(store_module.os, "replace", racing)
    _identical(ref, mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=tmp_path / "s.zarr", progress=False))


def test_damaged_or_unwritable_stores_are_one_line_errors(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=path, progress=False)
    (path / "final_loss" / "c" / "1").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"store '.*s.zarr' is damaged: RuntimeError"):
        mfdyn.open_sweep(path)
    with pytest.raises(InputError, match="is damaged"):
        mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=path, progress=False)
    fresh = tmp_path / "t.zarr"
    mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=fresh, progress=False)
    import shutil
    shutil.rmtree(fresh / "chunk_done")
    with pytest.raises(InputError, match="is damaged: KeyError: 'chunk_done'"):
        mfdyn.open_sweep(fresh)
    # a store to resume is checked writable before any work
    partial = tmp_path / "p.zarr"
    mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=partial, progress=False)
    zarr.open_group(partial, mode="r+")["chunk_done"][0] = 0
    assert mfdyn.open_sweep(partial).attrs["mfdyn_points_computed"] == "17 of 21"  # (chunk 0: 4 of the 21 points)

    def read_only(self, data):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(InputError, match="cannot be resumed: it is not writable \\(Read-only file system\\)"):
        mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=partial, progress=False)


def test_temporary_folders_of_killed_creators_are_removed(tmp_path):
    """A process killed while creating a store leaves ``.NAME.PID.*.tmp``: the next creation of that
    store removes it when its process no longer exists, and keeps one of a live process."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".s.zarr.{int(dead.stdout)}.abc123.tmp"
    live = tmp_path / f".s.zarr.{os.getppid()}.def456.tmp"
    for folder in (orphan, live):
        (folder / "store.zarr").mkdir(parents=True)
    mfdyn.sweep(SCALAR, AXES, 20, chunk=4, store=tmp_path / "s.zarr", progress=False)
    assert not orphan.exists() and live.exists()


def test_a_lost_chunk_file_counts_as_not_computed_and_is_recomputed(tmp_path):
    """Every chunk of every variable is a file, even one holding only the fill value (``period`` of a
    grid with no periodic point): a file lost after the sweep (deleted by hand) makes its chunk read as
    not computed, instead of silently as the fill value, and a resume computes it again."""
    ref = mfdyn.sweep(SCALAR, AXES, 60, chunk=4, progress=False)
    assert (ref.period.values == 0).all()  # (the period chunks hold only the fill value 0)
    path = tmp_path / "s.zarr"
    mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=path, progress=False)
    n_chunks = 6  # (21 points in chunks of 4)
    for name in ("period", "outcome", "final_params"):
        written = sorted(p.relative_to(path / name / "c").parts[0] for p in (path / name / "c").rglob("*") if p.is_file())
        assert written == [str(i) for i in range(n_chunks)], name
    (path / "period" / "c" / "2").unlink()
    (path / "final_params" / "c" / "4" / "0").unlink()
    opened = mfdyn.open_sweep(path)
    assert opened.attrs["mfdyn_points_computed"] == "13 of 21"  # (chunks 2 and 4: 8 points)
    lost = np.zeros(21, bool)
    lost[8:12] = lost[16:20] = True
    assert (opened.outcome.values.ravel()[lost] == "unfinished").all()
    assert (opened.outcome.values.ravel()[~lost] == ref.outcome.values.ravel()[~lost]).all()
    _identical(ref, mfdyn.sweep(SCALAR, AXES, 60, chunk=4, store=path, progress=False))
    assert (path / "period" / "c" / "2").is_file() and (path / "final_params" / "c" / "4" / "0").is_file()
    _identical(ref, mfdyn.open_sweep(path))
