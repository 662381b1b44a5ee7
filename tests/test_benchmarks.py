"""The benchmark scripts' own pieces run (``make bench`` is not part of ``make test``: it needs numba and
minutes; a piece that the library's checks refuse must fail here, not in a benchmark run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import mfdyn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_bench.py"


def _sweep_bench():
    spec = importlib.util.spec_from_file_location("sweep_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_store_and_zipped_benchmark_runs_on_a_small_grid():
    """The scalar benchmark's store and zipped-points part (its zipped dimension was named ``point``,
    which the results reserve: ``make bench`` stopped there) on a 512-point grid."""
    bench = _sweep_bench()
    axes = bench.scalar_axes(512)
    pts = bench.points(axes)
    problem = mfdyn.ScalarFactorization(1.0)
    kw = dict(progress=False, chunk=128)
    ds = mfdyn.sweep(problem, axes, 50, **kw)
    out = bench.bench_store_and_zipped(problem, axes, pts, 50, kw, ds)
    assert out["store_identical"] and out["zipped_shuffled_identical"]
    assert np.isfinite(out["store_sweep_s"]) and out["store_megabytes"] > 0
