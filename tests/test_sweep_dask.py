"""Sweeps as Dask tasks on a real two-process LocalCluster, with a worker killed mid-sweep."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import zarr

import mfdyn

distributed = pytest.importorskip("dask.distributed")

AXES = {"eta": np.linspace(0.05, 2.1, 12), "a": np.linspace(0.1, 3.0, 10), "b": [0.3, 1.4]}
STEPS = 2000


def test_dask_cluster_with_killed_worker_is_identical(tmp_path, monkeypatch):
    ref = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), AXES, STEPS, keep_orbit=2, chunk=8, progress=False)
    path = tmp_path / "dask.zarr"
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        result = {}

        def run():
            result["ds"] = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), AXES, STEPS, keep_orbit=2, chunk=8,
                                       store=path, scheduler=client, progress=False)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + 120
        killed = False
        while time.time() < deadline and thread.is_alive():
            if path.exists() and np.asarray(zarr.open_group(path, mode="r")["chunk_done"][:]).sum() >= 1:
                os.kill(pids[0], signal.SIGKILL)  # the nanny restarts it; its tasks are rerun
                killed = True
                break
            time.sleep(0.02)
        thread.join(240)
        assert killed, "the sweep finished before a worker could be killed"
        assert "ds" in result
    assert ref.identical(result["ds"])
    # an unreachable scheduler address is an InputError
    monkeypatch.setattr(sys.modules["mfdyn.sweep.distribute"], "CONNECT_TIMEOUT", "1s")  # mfdyn.sweep is the function
    with pytest.raises(mfdyn.InputError, match="could not be reached"):
        mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": [0.1], "a": [1.0], "b": [1.0]}, 5,
                    scheduler="tcp://127.0.0.1:9", progress=False)
