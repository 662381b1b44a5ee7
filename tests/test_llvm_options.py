"""LLVM options for one compiled program (:mod:`mfdyn._llvm_options`): the sweep kernel of a small
problem gets loop interleaving, no other program does, the results keep their bits where the
arithmetic is elementwise, and a sweep records its kernel's options."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfdyn
from mfdyn import _llvm_options as llvm

api = importlib.import_module("mfdyn.sweep.api")  # (mfdyn.sweep is the function)
kernel = importlib.import_module("mfdyn.sweep.kernel")
SCALAR = mfdyn.ScalarFactorization(1.0)
DEEP = mfdyn.DeepFactorization(jnp.diag(jnp.array([1.0, 0.5, 0.2])), depth=3)


def test_options_parse_as_xla_reads_them():
    assert llvm.parse_options("-force-vector-interleave=2") == {"-force-vector-interleave": "2"}
    assert llvm.parse_options("-a=1,-b  -c=x=y") == {"-a": "1", "-b": "", "-c": "x=y"}
    assert llvm.process_llvm_options("--xla_cpu_enable_fast_math=false --xla_backend_extra_options=-a=1,-b") == "-a=1,-b"
    assert llvm.process_llvm_options("--xla_dump_to=/tmp/x") == ""


def test_only_a_marked_compilation_gets_the_options():
    """The wrapped ``get_compile_options`` merges the marked options into that compilation's
    ``DebugOptions`` (and passes XLA no unknown option); other compilations pass through."""
    from jax._src import compiler

    assert llvm.supported()
    marked = compiler.get_compile_options(num_replicas=1, num_partitions=1,
                                          env_options_overrides={llvm.MARK: "-force-vector-interleave=2"})
    plain = compiler.get_compile_options(num_replicas=1, num_partitions=1, env_options_overrides={})
    assert b"-force-vector-interleave" in marked.SerializeAsString()
    assert b"-force-vector-interleave" not in plain.SerializeAsString()
    assert llvm.MARK not in dict(marked.env_option_overrides)
    merged = llvm.with_options(plain, "-a=1 -b")
    assert b"-a" in merged.SerializeAsString() and b"-b" in merged.SerializeAsString()


def _optimized_ir(fn, x, dump: Path, **compiler_options) -> str:
    """The LLVM IR (after LLVM's optimizations) XLA:CPU generated for ``fn`` compiled alone."""
    dump.mkdir()
    with jax.default_device(jax.devices("cpu")[0]):
        jax.jit(fn).lower(x).compile(compiler_options={"xla_dump_to": str(dump), **compiler_options})
    files = sorted(dump.glob("*ir-with-opt.ll"))
    assert files, f"XLA dumped no optimized IR in {dump}"
    # (module names and dump numbering differ between compilations; the code does not)
    return "\n".join(line for f in files for line in f.read_text().splitlines()
                     if not line.startswith(("; ModuleID", "source_filename")))


def test_the_options_reach_llvm_for_that_program_only(tmp_path):
    """Compiled with the option, the loop of GD steps is interleaved (other LLVM IR); a program
    compiled after it without the option gets the IR of one compiled before it: XLA resets LLVM's
    options between compilations that ask for different ones, nothing leaks."""
    def steps(z):
        a, b = jnp.real(z), jnp.imag(z)
        for _ in range(8):
            psi = a * b - 1.0
            a, b = a - (0.1 * b) * psi, b - (0.1 * a) * psi
        return jax.lax.complex(a, b)

    z = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.0, 1024) + 1j)
    before = _optimized_ir(steps, z, tmp_path / "before")
    interleaved = _optimized_ir(steps, z, tmp_path / "interleaved", **{llvm.MARK: llvm.INTERLEAVE})
    after = _optimized_ir(steps, z, tmp_path / "after")
    assert interleaved != before
    assert after == before


def test_kernels_get_the_option_where_the_coordinates_are_scalars(monkeypatch):
    monkeypatch.delenv(llvm.OPT_OUT, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    mine = kernel.wanted_llvm_options(SCALAR)
    assert mine == llvm.INTERLEAVE
    assert kernel.wanted_llvm_options(mfdyn.ScalarFactorization(1.0, 0.1)) == llvm.INTERLEAVE
    assert kernel.wanted_llvm_options(DEEP) == ""  # (matrix entries: their loops got slower)
    assert kernel.wanted_llvm_options(mfdyn.DeepFactorization(jnp.diag(jnp.array([1.0, 0.5])), depth=2)) == ""
    assert kernel.kernel_for("") is kernel.run_chunk
    assert kernel.kernel_for(mine) is not kernel.run_chunk and kernel.kernel_for(mine) is kernel.kernel_for(mine)
    assert kernel.kernel_for(mine, "gpu") is kernel.run_chunk and kernel.kernel_llvm_options(mine, "gpu") == ""
    assert kernel.kernel_llvm_options(mine) == llvm.INTERLEAVE
    for off in ("0", "off", " OFF ", "false"):  # the opt-out
        monkeypatch.setenv(llvm.OPT_OUT, off)
        assert kernel.kernel_llvm_options(mine) == ""
        assert kernel.kernel_for(mine) is kernel.run_chunk
    monkeypatch.setenv(llvm.OPT_OUT, "1")
    # the user's own options hold for every program of the process: mfdyn adds none
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_extra_options=-force-vector-interleave=8")
    assert kernel.kernel_llvm_options(mine) == "-force-vector-interleave=8"
    assert kernel.kernel_llvm_options("") == "-force-vector-interleave=8"
    assert kernel.kernel_for(mine) is kernel.run_chunk
    # where the wrapper cannot work, the kernels compile as JAX does by default
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setitem(llvm._state, "supported", False)
    assert kernel.kernel_llvm_options(mine) == ""
    assert kernel.kernel_for(mine) is kernel.run_chunk


def test_the_option_keeps_the_scalar_bits_and_sweeps_record_it(monkeypatch):
    """The scalar family's sweep (elementwise arithmetic only) is the same bits with and without
    the option; each sweep records the options its kernel ran with (a deep problem's: none)."""
    monkeypatch.delenv(llvm.OPT_OUT, raising=False)
    axes = {"eta": np.linspace(0.05, 2.2, 23), "a": np.linspace(0.1, 3.0, 9), "b": [0.3, 1.7]}
    interleaved = mfdyn.sweep(SCALAR, axes, 400, keep_orbit=4, chunk=64, progress=False)
    deep = mfdyn.sweep(DEEP, {"eta": [0.05, 0.3], "seed": np.arange(4), "scale": [0.3]}, 50, chunk=8, progress=False)
    monkeypatch.setenv(llvm.OPT_OUT, "0")
    plain = mfdyn.sweep(SCALAR, axes, 400, keep_orbit=4, chunk=64, progress=False)
    recorded = lambda ds: json.loads(ds.attrs["mfdyn_config"])["xla_llvm_options"]  # noqa: E731
    assert recorded(interleaved) == llvm.INTERLEAVE and recorded(plain) == "" and recorded(deep) == ""
    for name in interleaved.data_vars:
        np.testing.assert_array_equal(interleaved[name].values, plain[name].values, err_msg=name)


def test_a_store_made_under_other_llvm_options_is_refused(tmp_path, monkeypatch):
    axes = {"eta": [0.1, 0.5], "a": [1.0], "b": [0.5]}
    store = tmp_path / "s.zarr"
    ds = mfdyn.sweep(SCALAR, axes, 20, store=store, progress=False)
    monkeypatch.setattr(api, "kernel_llvm_options", lambda wanted, platform="cpu": "-some-other-option")
    with pytest.raises(mfdyn.InputError, match="different sweep configuration .xla_llvm_options"):
        mfdyn.sweep(SCALAR, axes, 20, store=store, progress=False)
    monkeypatch.undo()
    assert mfdyn.open_sweep(store).identical(ds)
    np.testing.assert_array_equal(mfdyn.sweep(SCALAR, axes, 20, store=store, progress=False).final_loss, ds.final_loss)
