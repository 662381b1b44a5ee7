"""Sweep engine benchmarks (issue 3): writes benchmarks/results/*.json and README_table.md.

1. Scalar family, y = 1: N trajectories (eta in [0.01, 1.5] x a, b grid in [0.1, 3]) x S GD steps,
   float64, outcome tracking on; against (i) a NumPy loop updating the whole vector per step and
   (ii) a numba ``prange`` cache-blocked fused loop (blocks of 512, steps inside, no tracking).
2. DeepFactorization depth 4, d = 8: seeds x steps; GFLOP/s against a measured batched-matmul peak.
3. Compile time of a new family/chunk shape; time to first result of a 1-trajectory CLI call.

Usage: ``python benchmarks/sweep_bench.py [--scale 1.0]`` (scale < 1 shrinks N and the seed count).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mfdyn
from mfdyn.sweep.api import default_chunk
from mfdyn.sweep.distribute import kernel_platform, local_workers
from mfdyn.sweep.kernel import run_chunk

RESULTS = Path(__file__).parent / "results"
FUSED_RATIO_TARGET = 1.5  # the target: the engine within 1.5x of the fused reference's time


def scalar_axes(n_total: int):
    side = int(round(n_total ** (1 / 3)))
    return {"eta": np.linspace(0.01, 1.5, side), "a": np.linspace(0.1, 3.0, side), "b": np.linspace(0.1, 3.0, side)}


def points(axes):
    E, A, B = np.meshgrid(axes["eta"], axes["a"], axes["b"], indexing="ij")
    return E.ravel(), A.ravel(), B.ravel()


def numpy_loop(eta, a, b, steps, y=1.0):
    """Baseline (i): the whole vector of trajectories updated per step, nothing else."""
    a, b = a.copy(), b.copy()
    with np.errstate(all="ignore"):
        for _ in range(steps):
            psi = a * b - y
            a, b = a - (eta * b) * psi, b - (eta * a) * psi  # (the engine's order: ScalarFactorization.descent)
    return a, b


def numpy_tracked_loop(eta, a, b, steps, tol=1e-12, window=64, y=1.0):
    """Baseline (i'): the same vectorized loop producing the engine's outcomes, as research code
    that draws a phase diagram must: per step the first non-finite step, the first step with
    gradient norm <= tol (then the trajectory is frozen), and the last ``window`` states for period
    detection."""
    a, b = a.copy(), b.copy()
    n = a.size
    diverged_at = np.full(n, -1)
    converged_at = np.full(n, -1)
    ring = np.empty((window + 1, 2, n))
    with np.errstate(all="ignore"):
        for t in range(steps + 1):
            psi = a * b - y
            ga, gb = psi * b, psi * a
            active = (diverged_at < 0) & (converged_at < 0)
            bad = active & ~(np.isfinite(ga) & np.isfinite(gb))
            diverged_at[bad] = t
            done = active & ~bad & (np.hypot(ga, gb) <= tol)
            converged_at[done] = t
            if t >= steps - window:
                ring[t - (steps - window), 0], ring[t - (steps - window), 1] = a, b
            if t == steps:
                break
            move = active & ~bad & ~done
            a, b = np.where(move, a - (eta * b) * psi, a), np.where(move, b - (eta * a) * psi, b)
        last = ring[-1]
        gaps = np.linalg.norm(last[None] - ring[:-1][::-1], axis=1)  # k = 1..window
        match = gaps <= 1e-9 * np.linalg.norm(last, axis=0)
        period = np.where(match.any(axis=0), match.argmax(axis=0) + 1, 0)
    return diverged_at, converged_at, period


def numba_reference():
    """Baseline (ii): blocks of trajectories in parallel (``prange``); inside a block all steps, with
    the trajectories innermost. The block is passed to a separate function as array slices so that
    LLVM sees contiguous, independent lanes and vectorizes the step (written inline in the
    ``prange`` body, the loop over ``lo..hi`` of the output arrays was not vectorized and ran 3x
    slower)."""
    import numba

    @numba.njit(fastmath=False)
    def block_steps(a, b, eta, steps, y):
        for _ in range(steps):
            for i in range(a.size):
                ai = a[i]
                bi = b[i]
                psi = ai * bi - y
                a[i] = ai - (eta[i] * bi) * psi
                b[i] = bi - (eta[i] * ai) * psi

    @numba.njit(parallel=True, fastmath=False)
    def fused(eta, a, b, steps, y, block):
        out_a = a.copy()
        out_b = b.copy()
        n_blocks = (a.size + block - 1) // block
        for blk in numba.prange(n_blocks):
            lo = blk * block
            hi = min(lo + block, a.size)
            block_steps(out_a[lo:hi], out_b[lo:hi], eta[lo:hi], steps, y)
        return out_a, out_b

    return fused


def same_bits(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise: the same float64 bits, or both NaN."""
    return (x.view(np.int64) == y.view(np.int64)) | (np.isnan(x) & np.isnan(y))


# Timed rounds of the scalar benchmark's contenders. A contender's time is the best of its rounds.
# On this 2-core VM single rounds ran up to 60% slower than the best (2026-11-23: the fused loop
# 0.13-0.21 s within one run), and the shorter fused loop found a fast window in 5 rounds more
# often than the engine (rounds where the engine ran at its best while the fused loop did not, and
# the reverse, were both seen). 11 rounds give both more chances alike.
ROUNDS = 11


def cpu_ticks() -> tuple[int, int] | None:
    """(all, stolen) CPU ticks of the machine so far (``/proc/stat``; steal: time the host ran
    something else while this VM's CPUs were ready), or None where there is no such file."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    return sum(fields), fields[7]


def stolen_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the CPU time between two :func:`cpu_ticks` that the host stole."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def interleaved(fns: dict, rounds: int) -> tuple[dict, dict]:
    """The times of each function over ``rounds`` rounds that run each once, in turn (the
    machine's drift then weighs on all alike), after one untimed warm-up round, and the last output
    of each. The warm-up round's times are returned under ``"warmup"``: a process's first full-size
    calls run slower while its heap grows (first-touch page faults; the scalar sweep's first two
    took 0.24-0.28 s against 0.19-0.21 s after, the fused loop's first 0.15-0.17 s against 0.13-0.14 s)."""
    times, out = {name: [] for name in fns}, {}
    times["warmup"] = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        times["warmup"][name] = time.perf_counter() - t
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - t)
    return times, out


def dataset_digest(ds) -> str:
    """A SHA-256 digest of every variable's values (outcome labels included), in name order."""
    h = hashlib.sha256()
    for name in sorted(ds.data_vars):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds[name].values).tobytes())
    return h.hexdigest()


def timed(fn, *args, repeat=1):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def scalar_case(n_total: int, steps: int):
    """The scalar benchmark's grid, its per-point values, the problem, the sweep keywords, and the
    fused reference (ii), with the engine's kernel compiled for the chunk shape and the reference
    warmed up."""
    axes = scalar_axes(n_total)
    eta, a, b = points(axes)
    problem = mfdyn.ScalarFactorization(1.0)
    kw = dict(progress=False, chunk=default_chunk(eta.size, 2, local_workers(None)))
    mfdyn.sweep(problem, {k: v[:4] for k, v in axes.items()}, steps, **kw)  # compile the same chunk shape
    fused = numba_reference()
    fused(eta[:64], a[:64], b[:64], 2, 1.0, 512)
    return axes, (eta, a, b), problem, kw, fused


def bench_scalar(n_total: int, steps: int) -> dict:
    axes, (eta, a, b), problem, kw, fused = scalar_case(n_total, steps)
    n, chunk = eta.size, kw["chunk"]
    # the same sweep on worker processes: the first call starts the pool and each worker compiles
    # (on its first chunk: the warm-up has a chunk per worker at least)
    kw_proc = dict(kw, scheduler="processes")
    workers = local_workers(None)
    warm = dict(axes, eta=axes["eta"][:-(-workers * chunk // (axes["a"].size * axes["b"].size))])
    t_proc_start, _ = timed(lambda: mfdyn.sweep(problem, warm, steps, **kw_proc))
    # the engine (threads, processes) and the fused reference (ii) in interleaved rounds, the best
    # of ROUNDS after a warm-up round
    ticks = cpu_ticks()
    rounds, outs = interleaved({"threads": lambda: mfdyn.sweep(problem, axes, steps, **kw),
                                "processes": lambda: mfdyn.sweep(problem, axes, steps, **kw_proc),
                                "fused": lambda: fused(eta, a, b, steps, 1.0, 512)}, rounds=ROUNDS)
    stolen = stolen_share(ticks, cpu_ticks())
    (t_sweep, ds), (t_proc, ds_proc), (t_nb, (nb_a, nb_b)) = ((min(rounds[k]), outs[k]) for k in ("threads", "processes", "fused"))
    per_round = {k: np.divide(rounds[k], rounds["fused"]) for k in ("threads", "processes")}  # same-round ratios
    proc_identical = bool(ds.identical(ds_proc))
    digest = dataset_digest(ds)
    settled = np.where(ds.steps_to_converge.values >= 0, ds.steps_to_converge.values,
                       np.where(ds.diverged_at.values >= 0, ds.diverged_at.values, steps))
    executed = float(np.minimum(settled, steps).sum())  # steps each trajectory needed (the rest is skipped)
    t_np, (np_a, np_b) = timed(numpy_loop, eta, a, b, steps, repeat=3)  # (best of 3: seconds each)
    t_np_tracked, (np_div, np_conv, _) = timed(numpy_tracked_loop, eta, a, b, steps)
    # the tracked baseline must really do the engine's job: same divergence and convergence steps
    agree = float(np.mean((np_div == ds.diverged_at.values.ravel()) & (np_conv == ds.steps_to_converge.values.ravel())))
    # the fused reference computes the same trajectories as the NumPy loop (same bits, NaN = NaN)
    fused_agree = float(np.mean(same_bits(nb_a, np_a) & same_bits(nb_b, np_b)))
    # the same engine on a grid where no trajectory settles (no early stop to gain from)
    slow = {"eta": np.linspace(1e-4, 2e-4, len(axes["eta"])), "a": axes["a"], "b": axes["b"]}
    kw_slow = dict(kw, tol=1e-300)
    mfdyn.sweep(problem, {k: v[:4] for k, v in slow.items()}, steps, **kw_slow)
    t_slow, ds_slow = timed(lambda: mfdyn.sweep(problem, slow, steps, **kw_slow), repeat=2)
    t_slow_proc, _ = timed(lambda: mfdyn.sweep(problem, slow, steps, **dict(kw_slow, scheduler="processes")), repeat=2)
    store = bench_store_and_zipped(problem, axes, (eta, a, b), steps, kw, ds)
    counts = {str(k): int(c) for k, c in zip(*np.unique(ds.outcome.values, return_counts=True))}
    counts_slow = {str(k): int(c) for k, c in zip(*np.unique(ds_slow.outcome.values, return_counts=True))}
    ts = n * steps
    return {"trajectories": n, "steps": steps, "threads": os.cpu_count(), "chunk": chunk,
            "sweep_s": t_sweep, "numpy_s": t_np, "numpy_tracked_s": t_np_tracked, "numba_fused_s": t_nb,
            "sweep_traj_steps_per_s": ts / t_sweep, "numpy_traj_steps_per_s": ts / t_np,
            "numpy_tracked_traj_steps_per_s": ts / t_np_tracked, "numba_traj_steps_per_s": ts / t_nb,
            "speedup_vs_numpy": t_np / t_sweep, "speedup_vs_numpy_tracked": t_np_tracked / t_sweep,
            "time_ratio_vs_fused": t_sweep / t_nb, "outcomes": counts, "round_times_s": rounds,
            "round_ratio_vs_fused_range": {k: [float(r.min()), float(r.max())] for k, r in per_round.items()},
            "round_ratio_vs_fused_median": {k: float(np.median(r)) for k, r in per_round.items()},
            "cpu_time_stolen_during_rounds": stolen,
            "sweep_processes_s": t_proc, "processes_start_and_compile_s": t_proc_start,
            "processes_identical_to_threads": proc_identical, "threads_result_digest": digest,
            "xla_llvm_options": json.loads(ds.attrs["mfdyn_config"])["xla_llvm_options"],
            "sweep_processes_traj_steps_per_s": ts / t_proc, "speedup_vs_numpy_processes": t_np / t_proc,
            "time_ratio_vs_fused_processes": t_proc / t_nb, "no_settling_processes_s": t_slow_proc, "numpy_tracked_step_agreement": agree,
            "fused_vs_numpy_bitwise_agreement": fused_agree,
            "executed_fraction": executed / ts, "executed_traj_steps_per_s": executed / t_sweep,
            "no_settling_sweep_s": t_slow, "no_settling_time_ratio_vs_fused": t_slow / t_nb,
            "no_settling_outcomes": counts_slow, **store,
            "note": "sweep = full engine incl. exact convergence/divergence steps, periodicity, sharpness and "
                    "result assembly; traj-steps/s are nominal (trajectories x steps): the engine stops a "
                    "trajectory once it settled, which the baselines do not. NumPy loops run single-threaded "
                    "on the whole vector; numba uses all cores. No-settling: eta in [1e-4, 2e-4] and "
                    "tol = 1e-300, so every trajectory runs all steps (pure kernel speed). 'processes': "
                    "scheduler='processes', one pinned worker process per core, started once per session "
                    "(processes_start_and_compile_s: the first, 4-point sweep, incl. the workers' compilation)."}


def bench_store_and_zipped(problem, axes, pts, steps, kw, ds) -> dict:
    """The same sweep written into a new Zarr store (``store=``; best of 2, each into a new
    store), and the same points in a random order as one zipped dimension (``mfdyn.zipped``: no
    structure for the tiles to exploit; best of 2); both checked against ``ds``, the grid sweep."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = iter(Path(tmp) / f"s{i}.zarr" for i in range(2))
        t_store, ds_store = timed(lambda: mfdyn.sweep(problem, axes, steps, store=next(paths), **kw), repeat=2)
        t_open, ds_opened = timed(lambda: mfdyn.open_sweep(Path(tmp) / "s0.zarr"), repeat=2)
        store_mb = sum(f.stat().st_size for f in (Path(tmp) / "s0.zarr").rglob("*") if f.is_file()) / 1e6
    order = np.random.default_rng(0).permutation(pts[0].size)
    shuffled = {"pts": mfdyn.zipped(eta=pts[0][order], a=pts[1][order], b=pts[2][order])}
    mfdyn.sweep(problem, {"pts": mfdyn.zipped(eta=pts[0][:4], a=pts[1][:4], b=pts[2][:4])}, steps, **kw)
    t_zip, ds_zip = timed(lambda: mfdyn.sweep(problem, shuffled, steps, **kw), repeat=2)
    flat = {name: ds[name].values.reshape(pts[0].size, *ds[name].shape[3:])[order] for name in ds.data_vars}
    zip_identical = all(np.array_equal(flat[name], ds_zip[name].values, equal_nan=ds_zip[name].dtype.kind == "f")
                        for name in ds.data_vars)
    return {"store_sweep_s": t_store, "store_identical": bool(ds.identical(ds_store) and ds.identical(ds_opened)),
            "store_open_s": t_open, "store_megabytes": store_mb,
            "zipped_shuffled_sweep_s": t_zip, "zipped_shuffled_identical": bool(zip_identical)}


def engine_rounds(n_total: int, steps: int, rounds: int = ROUNDS) -> dict:
    """The scalar sweep on threads (the default) and the fused reference (ii) in ``rounds``
    interleaved rounds, in this process as it is configured (run by :func:`bench_without_llvm_options`)."""
    axes, (eta, a, b), problem, kw, fused = scalar_case(n_total, steps)
    times, outs = interleaved({"threads": lambda: mfdyn.sweep(problem, axes, steps, **kw),
                               "fused": lambda: fused(eta, a, b, steps, 1.0, 512)}, rounds=rounds)
    ratios = np.divide(times["threads"], times["fused"])
    config = json.loads(outs["threads"].attrs["mfdyn_config"])
    return {"xla_llvm_options": config["xla_llvm_options"], "sweep_s": min(times["threads"]),
            "numba_fused_s": min(times["fused"]), "time_ratio_vs_fused": min(times["threads"]) / min(times["fused"]),
            "round_ratio_vs_fused_range": [float(ratios.min()), float(ratios.max())],
            "round_ratio_vs_fused_median": float(np.median(ratios)),
            "sweep_traj_steps_per_s": eta.size * steps / min(times["threads"]), "round_times_s": times,
            "threads_result_digest": dataset_digest(outs["threads"])}


def bench_without_llvm_options(scale: float, steps_scale: float) -> dict:
    """:func:`engine_rounds` in a fresh process where the kernel gets no LLVM options of mfdyn's
    (``MFDYN_LLVM_OPTIONS=0``, :mod:`mfdyn._llvm_options`): what the loop interleaving gives."""
    env = dict(os.environ, MFDYN_LLVM_OPTIONS="0")
    proc = subprocess.run([sys.executable, __file__, "--engine-rounds", "--scale", str(scale),
                           "--steps-scale", str(steps_scale)], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def deep_flops_per_step(d: int, L: int) -> float:
    """Matmul flops of one closed-form gradient step (2 d^3 per d x d product): prefix (L-1),
    suffix (L-1), per layer two products for the gradient (2L)."""
    return 2.0 * d**3 * ((L - 1) + (L - 1) + 2 * L)


def _best_time(fn, repeat: int = 5) -> float:
    """Best of ``repeat`` timed calls after one warm-up call."""
    fn()
    return timed(fn, repeat=repeat)[0]


def matmul_peak(d: int, batch: int = 65536) -> dict:
    """Measured rates (flop/s) of a large batched d x d matmul, by XLA and by NumPy (the faster of one
    ``np.matmul`` call and the batch split over one thread per core; ``np.matmul`` releases the
    GIL), and of a 2048^2 GEMM."""
    import jax
    import jax.numpy as jnp
    from concurrent.futures import ThreadPoolExecutor

    flops = 2.0 * d**3 * batch
    x = np.random.default_rng(0).standard_normal((batch, d, d))
    xj = jnp.asarray(x)
    f = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x))
    xla = flops / _best_time(lambda: f(xj).block_until_ready())
    cores = os.cpu_count() or 1
    parts = np.array_split(x, cores)
    numpy_rate = flops / _best_time(lambda: np.matmul(x, x))
    with ThreadPoolExecutor(cores) as pool:
        numpy_rate = max(numpy_rate, flops / _best_time(lambda: list(pool.map(lambda p: np.matmul(p, p), parts))))
    big = 2048
    X = jnp.asarray(np.random.default_rng(1).standard_normal((big, big)))
    g = jax.jit(lambda x: x @ x)
    large = 2.0 * big**3 / _best_time(lambda: g(X).block_until_ready(), repeat=2)
    return {"xla": xla, "numpy": numpy_rate, "large": large}


def bench_deep(seeds: int, steps: int, d: int = 8, L: int = 4) -> dict:
    Y = np.diag(np.linspace(1.0, 2.0, d))
    problem = mfdyn.DeepFactorization(Y, L)
    axes = {"seed": np.arange(seeds), "eta": [0.01], "scale": [0.3]}
    kw = dict(progress=False, tol=1e-300, max_period=0, sharpness=False,
              chunk=default_chunk(seeds, problem.num_coordinates, local_workers(None)))
    mfdyn.sweep(problem, {"seed": np.arange(8), "eta": [0.01], "scale": [0.3]}, steps, **kw)  # compile the same chunk shape
    t, ds = timed(lambda: mfdyn.sweep(problem, axes, steps, **kw), repeat=2)
    outcomes = {str(k): int(c) for k, c in zip(*np.unique(ds.outcome.values, return_counts=True))}
    steps_run = np.where(ds.diverged_at.values >= 0, ds.diverged_at.values, steps).sum()
    flops = deep_flops_per_step(d, L) * steps_run
    peak = matmul_peak(d)
    batched = max(peak["xla"], peak["numpy"])
    return {"seeds": seeds, "steps": steps, "d": d, "depth": L, "chunk": kw["chunk"], "sweep_s": t,
            "traj_steps_per_s": seeds * steps / t, "gflops": flops / t / 1e9,
            "batched_matmul_xla_gflops": peak["xla"] / 1e9, "batched_matmul_numpy_gflops": peak["numpy"] / 1e9,
            "batched_matmul_peak_gflops": batched / 1e9, "large_matmul_peak_gflops": peak["large"] / 1e9,
            "fraction_of_batched_peak": flops / t / batched, "outcomes": outcomes,
            "note": "flops counted: matmuls of the closed-form gradient only (tol=1e-300: no early stop; "
                    "sharpness off). Batched peak: the fastest of XLA's batched einsum, one np.matmul "
                    "call, and np.matmul with the batch split over all cores; 65536 x (d x d @ d x d)."}


def bench_compile_and_cli() -> dict:
    problem = mfdyn.SymmetricFactorization(np.diag([2.0, 1.0, -0.5]), 2)
    before = run_chunk._cache_size()
    t0 = time.perf_counter()
    mfdyn.sweep(problem, {"seed": np.arange(24), "eta": [0.05]}, 100, chunk=24, progress=False)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    mfdyn.sweep(problem, {"seed": np.arange(24, 48), "eta": [0.07]}, 100, chunk=24, progress=False)
    t_second = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "one.toml"
        cfg.write_text("[problem]\nfamily='scalar'\n[axes]\neta=[0.5]\na=[1.5]\nb=[0.5]\n[run]\nsteps=1000\n")
        exe = Path(sys.executable).parent / "mfdyn"
        env = {**os.environ, "MFDYN_CACHE_DIR": str(Path(tmp) / "jax-cache")}  # starts empty: first call is cold
        times, codes = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            proc = subprocess.run([str(exe), "sweep", str(cfg), "--json", "--no-progress"], capture_output=True,
                                  text=True, env=env)
            times.append(time.perf_counter() - t0)
            codes.append(proc.returncode)
    return {"compile_new_family_s": t_first - t_second, "first_sweep_s": t_first, "warm_sweep_s": t_second,
            "new_compilations": run_chunk._cache_size() - before, "cli_one_trajectory_s": times[0],
            "cli_one_trajectory_warm_cache_s": times[1], "cli_ok": codes == [0, 0]}


def _span(lo_hi: list) -> str:
    return f"{lo_hi[0]:.2f}-{lo_hi[1]:.2f}x"


def _against(ratio: float, limit: float) -> str:
    """A time ratio against its upper limit and whether it is within it: to three decimals, more where
    those would read as the limit itself (1.5003x is 1.50x to two decimals and 1.500x to three)."""
    digits = 3
    while digits < 6 and round(ratio, digits) == limit != ratio:
        digits += 1
    return f"{ratio:.{digits}f}x, {'met' if ratio <= limit else 'missed'}"


def table(s: dict, plain: dict, dp: dict, c: dict, scale: float) -> str:
    n, T = f"{s['trajectories']:,}", s["steps"]
    rows = [
        "| benchmark | size | result | target |",
        "|---|---|---|---|",
        f"| scalar sweep: engine, all tracking, threads (default) | {n} traj x {T} steps, {s['threads']} cores, "
        f"chunk {s['chunk']} | {s['sweep_traj_steps_per_s']:.3g} traj-steps/s ({s['sweep_s']:.2f} s; the process's first "
        f"full-size sweep, the untimed warm-up round: {s['round_times_s']['warmup']['threads']:.2f} s) | |",
        f"| the same on worker processes (`scheduler=\"processes\"`) | same | "
        f"{s['sweep_processes_traj_steps_per_s']:.3g} traj-steps/s ({s['sweep_processes_s']:.2f} s; the pool's start "
        f"and compilation, once per session: {s['processes_start_and_compile_s']:.1f} s; results identical to "
        f"threads: {'yes' if s['processes_identical_to_threads'] else 'NO'}) | |",
        f"| (i) NumPy loop over the whole vector, update only | same, 1 core | "
        f"{s['numpy_traj_steps_per_s']:.3g} traj-steps/s ({s['numpy_s']:.2f} s) | |",
        f"| (i') NumPy loop with the engine's outcomes | same, 1 core | "
        f"{s['numpy_tracked_traj_steps_per_s']:.3g} traj-steps/s ({s['numpy_tracked_s']:.2f} s) | |",
        f"| (ii) numba prange fused, blocks of 512, no tracking | same, {s['threads']} cores | "
        f"{s['numba_traj_steps_per_s']:.3g} traj-steps/s ({s['numba_fused_s']:.2f} s; warm-up round "
        f"{s['round_times_s']['warmup']['fused']:.2f} s; final states equal the "
        f"NumPy loop's bit for bit for {100 * s['fused_vs_numpy_bitwise_agreement']:.2f}% of points) | |",
        f"| **speedup vs NumPy (i)**, threads / processes | | **{s['speedup_vs_numpy']:.1f}x / "
        f"{s['speedup_vs_numpy_processes']:.1f}x** | >= 20x |",
        f"| speedup vs NumPy with outcomes (i') | | {s['speedup_vs_numpy_tracked']:.1f}x (its divergence and "
        f"convergence steps equal the engine's for {100 * s['numpy_tracked_step_agreement']:.2f}% of points) | |",
        f"| **time vs fused reference (ii)**, threads / processes | | **{_against(s['time_ratio_vs_fused'], FUSED_RATIO_TARGET)} / "
        f"{_against(s['time_ratio_vs_fused_processes'], FUSED_RATIO_TARGET)}** (the ratio within each of the {len(s['round_times_s']['fused'])} "
        f"rounds: threads {_span(s['round_ratio_vs_fused_range']['threads'])}, median "
        f"{s['round_ratio_vs_fused_median']['threads']:.2f}x; processes "
        f"{_span(s['round_ratio_vs_fused_range']['processes'])}, median "
        f"{s['round_ratio_vs_fused_median']['processes']:.2f}x) | <= {FUSED_RATIO_TARGET}x |",
        f"| the engine on threads without mfdyn's LLVM option for its kernel (`MFDYN_LLVM_OPTIONS=0`; "
        f"with it: `{s['xla_llvm_options'] or 'none'}`, `mfdyn._llvm_options`), in a process of its own | same | "
        f"{plain['sweep_traj_steps_per_s']:.3g} traj-steps/s ({plain['sweep_s']:.2f} s); time vs the fused "
        f"reference in that process ({plain['numba_fused_s']:.2f} s): {plain['time_ratio_vs_fused']:.2f}x (rounds "
        f"{_span(plain['round_ratio_vs_fused_range'])}, median {plain['round_ratio_vs_fused_median']:.2f}x); results "
        f"identical to this process's: {'yes' if plain['threads_result_digest'] == s['threads_result_digest'] else 'NO'} "
        f"| |",
        f"| steps up to settling (all steps if never; the engine skips the rest, and the rest of a "
        f"cycle that repeats within a check block) | | {100 * s['executed_fraction']:.1f}% of nominal "
        f"({s['executed_traj_steps_per_s']:.3g} such traj-steps/s) | |",
        f"| no trajectory settles (eta in [1e-4, 2e-4], tol 1e-300) | {n} traj x {T} steps | "
        f"{s['no_settling_sweep_s']:.2f} s = {s['no_settling_time_ratio_vs_fused']:.2f}x the fused reference "
        f"(processes: {s['no_settling_processes_s']:.2f} s) | |",
        f"| the same sweep into a new Zarr store (`store=`) | same | {s['store_sweep_s']:.2f} s "
        f"({s['store_megabytes']:.0f} MB; `open_sweep` {s['store_open_s']:.2f} s; results identical: "
        f"{'yes' if s['store_identical'] else 'NO'}) | |",
        f"| the same points in a random order, one `zipped` dimension | {n} traj x {T} steps | "
        f"{s['zipped_shuffled_sweep_s']:.2f} s (results identical, point by point: "
        f"{'yes' if s['zipped_shuffled_identical'] else 'NO'}) | |",
        f"| deep L=4, d=8 | {dp['seeds']} seeds x {dp['steps']} steps | {dp['traj_steps_per_s']:.3g} traj-steps/s, "
        f"{dp['gflops']:.2f} GFLOP/s | |",
        f"| batched 8x8 matmul, measured (XLA / NumPy) | 65536 x (8x8 @ 8x8) | "
        f"{dp['batched_matmul_xla_gflops']:.2f} / {dp['batched_matmul_numpy_gflops']:.2f} GFLOP/s | |",
        f"| **deep fraction of the batched-matmul peak** | | **{100 * dp['fraction_of_batched_peak']:.0f}%** | >= 30% |",
        f"| large 2048^2 matmul (for reference) | | {dp['large_matmul_peak_gflops']:.1f} GFLOP/s | |",
        f"| deep fraction of the 2048^2 matmul rate | | {100 * dp['gflops'] / dp['large_matmul_peak_gflops']:.0f}% | "
        f"(stricter baseline) |",
        f"| compile, new family + chunk shape | symmetric n=3 r=2 | {c['compile_new_family_s']:.2f} s | |",
        f"| CLI 1-trajectory time to first result | `mfdyn sweep one.toml --json`, cold / warm compilation cache | "
        f"{c['cli_one_trajectory_s']:.2f} s / {c['cli_one_trajectory_warm_cache_s']:.2f} s | |",
    ]
    load = os.getloadavg()[0]
    stolen = "n/a" if s["cpu_time_stolen_during_rounds"] is None else f"{100 * s['cpu_time_stolen_during_rounds']:.1f}%"
    head = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, JAX on the {kernel_platform().upper()}, float64; "
            f"1-min load average {load:.2f} when the table was written; CPU time stolen by the host during the "
            f"scalar benchmark's timed rounds: {stolen}. Scale {scale} of the issue's sizes. Times: the best of "
            f"{ROUNDS} interleaved rounds (engine on threads, engine on processes, fused reference) after one "
            f"untimed full-size warm-up round of each, of 3 runs for the NumPy loops.\n\n")
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes (trajectories, seeds)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="fraction of the issue's step counts")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON files and the table")
    parser.add_argument("--engine-rounds", action="store_true", help=argparse.SUPPRESS)  # (bench_without_llvm_options's child)
    args = parser.parse_args()
    if args.engine_rounds:
        print(json.dumps(engine_rounds(int(1e6 * args.scale), int(1000 * args.steps_scale))))
        return
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    s = bench_scalar(int(1e6 * args.scale), int(1000 * args.steps_scale))
    (out / "scalar.json").write_text(json.dumps(s, indent=2))
    print(json.dumps(s, indent=2))
    plain = bench_without_llvm_options(args.scale, args.steps_scale)
    (out / "scalar_no_llvm_options.json").write_text(json.dumps(plain, indent=2))
    print(json.dumps(plain, indent=2))
    dp = bench_deep(max(8, int(4096 * args.scale)), int(2000 * args.steps_scale))
    (out / "deep.json").write_text(json.dumps(dp, indent=2))
    print(json.dumps(dp, indent=2))
    c = bench_compile_and_cli()
    (out / "compile_cli.json").write_text(json.dumps(c, indent=2))
    print(json.dumps(c, indent=2))
    (out / "README_table.md").write_text(table(s, plain, dp, c, args.scale))
    print(table(s, plain, dp, c, args.scale))


if __name__ == "__main__":
    main()
