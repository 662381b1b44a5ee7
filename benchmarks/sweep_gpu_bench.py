"""Sweep engine on a GPU: writes benchmarks/results/gpu.json and README_table_gpu.md.

The scalar and deep benchmarks of ``sweep_bench.py`` with the kernels on JAX's default device (a
GPU; the default plan there: one chunk per ``ACCELERATOR_CHUNK_MAX`` points, one tile per chunk, one
worker), against baselines on the same GPU, in the same run:

- (i-gpu) a vector loop updating the whole vector of trajectories per step on the GPU (CuPy when
  installed, else ``jax.numpy`` op by op): research code moved to a GPU; and (i) the NumPy loop of
  ``sweep_bench.py`` on one core of the host;
- (ii-gpu) a fused kernel: one CUDA thread per trajectory, all steps in registers, no tracking
  (CuPy ``ElementwiseKernel``; skipped without CuPy), and the same loop as one jitted XLA
  ``fori_loop`` (the GPU runs one kernel per step then).

Results are compared with the engine on the host's CPU (``JAX_PLATFORMS=cpu``, a subprocess):
outcome labels and final-state bits. Usage: ``python benchmarks/sweep_gpu_bench.py [--scale 1.0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp

import mfdyn
from mfdyn.sweep.api import default_chunk
from mfdyn.sweep.distribute import kernel_platform

sys.path.insert(0, str(Path(__file__).parent))
from sweep_bench import RESULTS, deep_flops_per_step, numpy_loop, points, scalar_axes, timed  # noqa: E402

COMPARED = ("final_params", "steps_to_converge", "diverged_at", "period")


def _cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # noqa: BLE001 - no CuPy, or no CUDA device for it
        return None


def fused_cuda(cp):
    """(ii-gpu): one thread per trajectory, ``steps`` GD steps in registers, nothing else."""
    return cp.ElementwiseKernel(
        "float64 eta, int32 steps, float64 y", "float64 a, float64 b",
        "double ai = a, bi = b;"
        "for (int s = 0; s < steps; ++s) { double psi = ai * bi - y;"
        " double an = ai - eta * psi * bi; bi = bi - eta * psi * ai; ai = an; }"
        "a = ai; b = bi;", "mfdyn_fused_gd")


def _sync(cp) -> None:
    cp.cuda.Device().synchronize()


def gpu_baselines(eta, a, b, steps: int, rounds: int = 5) -> dict:
    out = {}
    cp = _cupy()
    if cp is not None:
        kernel = fused_cuda(cp)
        ce, ca, cb = cp.asarray(eta), cp.asarray(a), cp.asarray(b)
        times = []
        for _ in range(rounds + 1):  # (the first call compiles)
            xa, xb = ca.copy(), cb.copy()
            _sync(cp)
            t = time.perf_counter()
            kernel(ce, steps, 1.0, xa, xb)
            _sync(cp)
            times.append(time.perf_counter() - t)
        out["cuda_fused_s"] = min(times[1:])
        fa, fb = cp.asnumpy(xa), cp.asnumpy(xb)
        times = []
        for _ in range(3):
            xa, xb = ca.copy(), cb.copy()
            _sync(cp)
            t = time.perf_counter()
            for _ in range(steps):
                psi = xa * xb - 1.0
                xa, xb = xa - ce * psi * xb, xb - ce * psi * xa
            _sync(cp)
            times.append(time.perf_counter() - t)
        out["vector_loop_s"], out["vector_loop"] = min(times[1:]), "CuPy"
        na, nb = numpy_loop(eta[:4096], a[:4096], b[:4096], steps)
        out["cuda_fused_vs_numpy_close"] = float(np.mean(np.isclose(fa[:4096], na, rtol=1e-9, atol=1e-12)
                                                          | (np.isnan(fa[:4096]) & np.isnan(na))))
    else:
        je, ja, jb = jnp.asarray(eta), jnp.asarray(a), jnp.asarray(b)
        times = []
        for _ in range(3):
            xa, xb = ja, jb
            t = time.perf_counter()
            for _ in range(steps):
                psi = xa * xb - 1.0
                xa, xb = xa - je * psi * xb, xb - je * psi * xa
            jax.block_until_ready((xa, xb))
            times.append(time.perf_counter() - t)
        out["vector_loop_s"], out["vector_loop"] = min(times[1:]), "jax.numpy, op by op"

    @jax.jit
    def xla_fused(eta, a, b):
        def step(_, z):
            psi = z[0] * z[1] - 1.0
            return z[0] - eta * psi * z[1], z[1] - eta * psi * z[0]

        return jax.lax.fori_loop(0, steps, step, (a, b))

    je, ja, jb = jnp.asarray(eta), jnp.asarray(a), jnp.asarray(b)
    jax.block_until_ready(xla_fused(je, ja, jb))
    out["xla_fused_s"] = timed(lambda: jax.block_until_ready(xla_fused(je, ja, jb)), repeat=rounds)[0]
    return out


def cpu_engine_results(axes: dict, steps: int) -> dict:
    """The same sweep with JAX on the host's CPU (a subprocess), for the bit comparison."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "axes.npz", **axes)
        code = ("import sys, numpy as np, mfdyn; ax = dict(np.load(sys.argv[1])); "
                "ds = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), ax, int(sys.argv[2]), progress=False); "
                f"np.savez(sys.argv[3], outcome=ds.outcome.values.astype(str), "
                + ", ".join(f"{v}=ds['{v}'].values" for v in COMPARED) + ")")
        subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "axes.npz"), str(steps), str(Path(tmp) / "cpu.npz")],
                       check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        return dict(np.load(Path(tmp) / "cpu.npz"))


def engine_breakdown(problem, axes: dict, steps: int, rounds: int = 5) -> dict:
    """Where a sweep's time goes on the GPU, chunk by chunk as ``mfdyn.sweep`` plans it: building the
    per-point axis values on the host, the kernel alone (inputs already on the device, results left
    there), and the kernel with its results copied to the host (``compute_chunk``). The rest of a
    sweep is the assembly of the Dataset on the host."""
    import inspect
    from functools import partial

    from mfdyn.sweep import api, distribute
    from mfdyn.sweep.kernel import run_chunk

    planned = ("tol", "max_period", "keep_orbit", "chunk", "init_kind", "params0", "check_every", "sharpness",
               "workers")
    defaults = {name: inspect.signature(api.sweep).parameters[name].default for name in planned}  # mfdyn.sweep's
    plan = api.plan_sweep(problem, axes, steps, **defaults, platform=kernel_platform())
    values_of = partial(api._chunk_values, plan.grid, spec=plan.job.spec)
    bounds = api.chunk_ranges(plan.grid.size, plan.chunk)
    spec = distribute.executed_spec(plan.job.spec)
    values = [values_of(b) for b in bounds]
    on_device = [jax.device_put(distribute._kernel_args(plan.job, v)[1]) for v in values]

    def kernels():
        return jax.block_until_ready([run_chunk(*args, spec=spec, factory=plan.job.factory) for args in on_device])

    kernels()
    return {"chunks": len(bounds),
            "values_s": timed(lambda: [values_of(b) for b in bounds], repeat=rounds)[0],
            "kernel_s": timed(kernels, repeat=rounds)[0],
            "kernel_and_transfer_s": timed(lambda: [distribute.compute_chunk(plan.job, v) for v in values],
                                           repeat=rounds)[0]}


def bench_scalar_gpu(n_total: int, steps: int, rounds: int = 5) -> dict:
    axes = scalar_axes(n_total)
    eta, a, b = points(axes)
    n = eta.size
    problem = mfdyn.ScalarFactorization(1.0)
    t0 = time.perf_counter()
    mfdyn.sweep(problem, axes, steps, progress=False)
    first = time.perf_counter() - t0
    t_sweep, ds = timed(lambda: mfdyn.sweep(problem, axes, steps, progress=False), repeat=rounds)
    base = gpu_baselines(eta, a, b, steps, rounds)
    parts = engine_breakdown(problem, axes, steps, rounds)
    t_np, _ = timed(numpy_loop, eta, a, b, steps)
    cpu = cpu_engine_results(axes, steps)
    same_outcome = float(np.mean(ds.outcome.values.astype(str) == cpu["outcome"]))
    same_bits = {v: float(np.mean((ds[v].values == cpu[v]) | (np.isnan(ds[v].values) & np.isnan(cpu[v]))
                                  if ds[v].dtype.kind == "f" else ds[v].values == cpu[v]))
                 for v in COMPARED}
    ts = n * steps
    out = {"trajectories": n, "steps": steps, "chunk": default_chunk(n, 2, 1, kernel_platform()),
           "first_sweep_s": first, "sweep_s": t_sweep, "sweep_traj_steps_per_s": ts / t_sweep,
           "numpy_s": t_np, "speedup_vs_numpy": t_np / t_sweep, **base,
           "speedup_vs_vector_loop": base["vector_loop_s"] / t_sweep,
           "time_ratio_vs_xla_fused": t_sweep / base["xla_fused_s"],
           "outcome_agreement_with_cpu": same_outcome, "bitwise_agreement_with_cpu": same_bits,
           "breakdown": parts, "kernel_time_ratio_vs_xla_fused": parts["kernel_s"] / base["xla_fused_s"]}
    if "cuda_fused_s" in base:
        out["time_ratio_vs_cuda_fused"] = t_sweep / base["cuda_fused_s"]
        out["kernel_time_ratio_vs_cuda_fused"] = parts["kernel_s"] / base["cuda_fused_s"]
    return out


def gpu_matmul_rates(d: int, batch: int = 65536) -> dict:
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, d, d)))
    f = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x))
    f(x).block_until_ready()
    batched = 2.0 * d**3 * batch / timed(lambda: f(x).block_until_ready(), repeat=5)[0]
    big = 8192
    X = jnp.asarray(np.random.default_rng(1).standard_normal((big, big)))
    g = jax.jit(lambda x: x @ x)
    g(X).block_until_ready()
    large = 2.0 * big**3 / timed(lambda: g(X).block_until_ready(), repeat=3)[0]
    return {"batched_matmul_gflops": batched / 1e9, "large_matmul_gflops": large / 1e9}


def bench_deep_gpu(seeds: int, steps: int, d: int = 8, L: int = 4) -> dict:
    problem = mfdyn.DeepFactorization(np.diag(np.linspace(1.0, 2.0, d)), L)
    axes = {"seed": np.arange(seeds), "eta": [0.01], "scale": [0.3]}
    kw = dict(progress=False, tol=1e-300, max_period=0, sharpness=False)
    mfdyn.sweep(problem, axes, steps, **kw)  # compiles this plan's chunk shape
    t, ds = timed(lambda: mfdyn.sweep(problem, axes, steps, **kw), repeat=2)
    steps_run = np.where(ds.diverged_at.values >= 0, ds.diverged_at.values, steps).sum()
    gflops = deep_flops_per_step(d, L) * steps_run / t / 1e9
    rates = gpu_matmul_rates(d)
    return {"seeds": seeds, "steps": steps, "d": d, "depth": L, "sweep_s": t, "traj_steps_per_s": seeds * steps / t,
            "gflops": gflops, **rates, "fraction_of_batched_peak": gflops / rates["batched_matmul_gflops"]}


def _versus(ratio: float) -> str:
    """``ratio`` = baseline time / engine time, in words."""
    return f"engine {ratio:.1f}x faster" if ratio >= 1 else f"engine takes {1 / ratio:.2f}x its time"


def _breakdown_rows(s: dict) -> list[str]:
    """The sweep's time split (absent from results written before the split was measured)."""
    if "breakdown" not in s:
        return []
    p = s["breakdown"]
    cuda = (f"; {s['kernel_time_ratio_vs_cuda_fused']:.0f}x the fused CUDA kernel's time"
            if "kernel_time_ratio_vs_cuda_fused" in s else "")
    return [f"| ... of which: the kernel alone (inputs on the GPU, results left there) | {p['chunks']} chunk(s) | "
            f"{p['kernel_s'] * 1e3:.1f} ms ({s['kernel_time_ratio_vs_xla_fused']:.2f}x the XLA `fori_loop`'s time{cuda}) |",
            f"| ... the kernel with its results copied to the host | | {p['kernel_and_transfer_s'] * 1e3:.1f} ms |",
            f"| ... the per-point axis values, built on the host | | {p['values_s'] * 1e3:.1f} ms |",
            f"| ... the rest: the Dataset assembled on the host (outcome labels decoded) | | "
            f"{(s['sweep_s'] - p['kernel_and_transfer_s'] - p['values_s']) * 1e3:.1f} ms |"]


def table(s: dict, dp: dict, meta: dict) -> str:
    n, T = f"{s['trajectories']:,}", s["steps"]
    agree = ", ".join(f"{k} {100 * v:.2f}%" for k, v in s["bitwise_agreement_with_cpu"].items())
    rows = ["| benchmark (GPU) | size | result |", "|---|---|---|",
            f"| scalar sweep: engine, all tracking | {n} traj x {T} steps, chunk {s['chunk']} | "
            f"{s['sweep_traj_steps_per_s']:.3g} traj-steps/s ({s['sweep_s']:.3f} s; first call with compilation "
            f"{s['first_sweep_s']:.1f} s) |",
            *_breakdown_rows(s),
            f"| (i-gpu) vector loop on the GPU ({s['vector_loop']}), update only | same | {s['vector_loop_s']:.3f} s: "
            f"{_versus(s['speedup_vs_vector_loop'])} |",
            f"| (i) NumPy loop on one host core, update only | same | {s['numpy_s']:.2f} s: "
            f"{_versus(s['speedup_vs_numpy'])} |"]
    if "cuda_fused_s" in s:
        rows.append(f"| (ii-gpu) fused CUDA kernel, one thread per trajectory, no tracking | same | "
                    f"{s['cuda_fused_s'] * 1e3:.2f} ms: engine takes {s['time_ratio_vs_cuda_fused']:.0f}x its time |")
    rows += [f"| fused XLA `fori_loop`, no tracking (one GPU kernel per step) | same | {s['xla_fused_s'] * 1e3:.1f} ms: "
             f"engine takes {s['time_ratio_vs_xla_fused']:.1f}x its time |",
             f"| the same sweep on the host CPU: same outcome label | | {100 * s['outcome_agreement_with_cpu']:.3f}% of points |",
             f"| ... same bits | | {agree} |",
             f"| deep L=4, d=8 | {dp['seeds']} seeds x {dp['steps']} steps | {dp['traj_steps_per_s']:.3g} traj-steps/s, "
             f"{dp['gflops']:.2f} GFLOP/s ({dp['sweep_s']:.2f} s) |",
             f"| batched 8x8 matmul (XLA, float64) / 8192^2 GEMM | 65536 x (8x8 @ 8x8) | "
             f"{dp['batched_matmul_gflops']:.0f} / {dp['large_matmul_gflops']:.0f} GFLOP/s |",
             f"| deep fraction of the batched-matmul rate | | {100 * dp['fraction_of_batched_peak']:.1f}% |"]
    head = (f"GPU: {meta['device']} (JAX {meta['jax']}, float64), host {meta['host_cores']} cores. "
            f"Times: best of 5 (deep: 2).\n\n")
    return head + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes (trajectories, seeds)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.json and README_table_gpu.md")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the folder's gpu.json")
    args = parser.parse_args()
    if args.table_only:
        res = json.loads((args.out / "gpu.json").read_text())
        (args.out / "README_table_gpu.md").write_text(table(res["scalar"], res["deep"], res["meta"]))
        return
    if kernel_platform() == "cpu":
        sys.exit("error: JAX has no GPU here (jax.default_backend() is 'cpu'); run benchmarks/sweep_bench.py")
    args.out.mkdir(parents=True, exist_ok=True)
    s = bench_scalar_gpu(int(1e6 * args.scale), 1000)
    print(json.dumps(s, indent=2), flush=True)
    dp = bench_deep_gpu(max(8, int(4096 * args.scale)), 2000)
    print(json.dumps(dp, indent=2), flush=True)
    meta = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "host_cores": os.cpu_count()}
    (args.out / "gpu.json").write_text(json.dumps({"scalar": s, "deep": dp, "meta": meta}, indent=2))
    (args.out / "README_table_gpu.md").write_text(table(s, dp, meta))
    print(table(s, dp, meta))


if __name__ == "__main__":
    main()
