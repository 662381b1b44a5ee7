"""The ``mfdyn`` console script gives XLA its LLVM option (loop interleaving) while JAX's backend is not
started, respects the user's own options and the opt-out; sweeps record the options (:mod:`mfdyn._xla_flags`)."""

from __future__ import annotations

import os
import subprocess
import sys

from mfdyn._xla_flags import LLVM_XLA_FLAGS, with_llvm_options

CLI = ("import sys; from mfdyn.cli import main; sys.argv = ['mfdyn', '--help']\n"
       "try: main()\nexcept SystemExit: pass\n")
REPORT = ("import os, jax, jax.numpy as jnp; from jax._src import xla_bridge; "
          "started = xla_bridge.backends_are_initialized(); "
          "ok = float(jax.jit(lambda x: 2 * x)(jnp.ones(3))[0]) == 2.0; "
          "print(started, ok, repr(os.environ.get('XLA_FLAGS')))")


def _environment(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MFDYN_XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def _run_all(cases: dict[str, tuple[str, dict]], timeout: int = 300) -> dict[str, str]:
    """Runs the Python snippets at once, each in a fresh process; returns their last output lines."""
    procs = {name: subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, (code, env) in cases.items()}
    out = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"{name}: {stderr[-2000:]}"
            out[name] = stdout.strip().splitlines()[-1]
    finally:  # (a process that timed out, or the others after a failure, must not outlive the test)
        for proc in procs.values():
            proc.kill()
            proc.wait()
    return out


def test_console_script_adds_the_llvm_option_while_jax_has_not_started():
    """Added to the user's flags (and XLA accepts it); the user's own LLVM options, the opt-out
    ``MFDYN_XLA_FLAGS=0`` and a backend JAX started before leave ``XLA_FLAGS`` as it was; the library
    (``import mfdyn``) leaves it alone."""
    mine = "--xla_backend_extra_options=-force-vector-interleave=4"
    cases = {
        "fresh": (CLI + REPORT, _environment()),
        "user flags": (CLI + REPORT, _environment(XLA_FLAGS="--xla_cpu_enable_fast_math=false")),
        "user LLVM options": (CLI + REPORT, _environment(XLA_FLAGS=mine)),
        "opted out": (CLI + REPORT, _environment(MFDYN_XLA_FLAGS="0")),
        "jax first": ("import jax.numpy as jnp; jnp.ones(1).block_until_ready()\n" + CLI + REPORT, _environment()),
        "library": ("import mfdyn; " + REPORT, _environment()),
    }
    out = _run_all(cases)
    assert out["fresh"] == f"False True {LLVM_XLA_FLAGS!r}"
    assert out["user flags"] == f"False True {'--xla_cpu_enable_fast_math=false ' + LLVM_XLA_FLAGS!r}"
    assert out["user LLVM options"] == f"False True {mine!r}"
    assert out["opted out"] == "False True None"
    assert out["jax first"] == "True True None"
    assert out["library"] == "False True None"


def test_with_llvm_options_keeps_the_users_own_and_the_opt_out(monkeypatch):
    monkeypatch.delenv("MFDYN_XLA_FLAGS", raising=False)
    assert with_llvm_options("") == LLVM_XLA_FLAGS
    assert with_llvm_options("--a=1") == "--a=1 " + LLVM_XLA_FLAGS
    assert with_llvm_options("--xla_backend_extra_options=-x") == "--xla_backend_extra_options=-x"
    for off in ("0", "off", "OFF", " false "):
        monkeypatch.setenv("MFDYN_XLA_FLAGS", off)
        assert with_llvm_options("--a=1") == "--a=1"
    monkeypatch.setenv("MFDYN_XLA_FLAGS", "1")
    assert with_llvm_options("") == LLVM_XLA_FLAGS


DIGEST = """
import hashlib, json, numpy as np, jax.numpy as jnp, mfdyn
def digest(ds, names):
    return hashlib.sha256(b"".join(np.ascontiguousarray(ds[n].values).astype(str if n == "outcome" else None).tobytes()
                                   for n in names)).hexdigest()[:16]
scalar = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": np.linspace(0.05, 2.2, 23), "a": np.linspace(0.1, 3.0, 9),
                     "b": [0.3, 1.7]}, 400, keep_orbit=4, chunk=64, progress=False)
deep = mfdyn.sweep(mfdyn.DeepFactorization(jnp.diag(jnp.array([1.0, 0.5, 0.2])), depth=3), {"eta": [0.05, 0.3, 0.9],
                   "seed": np.arange(6), "scale": [0.3]}, 200, chunk=16, progress=False)
print(digest(scalar, sorted(scalar.data_vars)),
      digest(deep, ["outcome", "steps_to_converge", "diverged_at", "final_params"]),
      json.loads(deep.attrs["mfdyn_config"])["xla_llvm_options"])
"""


def test_the_llvm_option_keeps_elementwise_bits_and_is_recorded():
    """With and without the option: the scalar family's sweep (elementwise arithmetic only) the same
    bits; a deep factorization's the same outcomes, steps and final states (its losses and norms, sums
    over matrix entries, may differ in the last bits); each sweep records the options it ran with."""
    out = _run_all({"with": (DIGEST, _environment(XLA_FLAGS=LLVM_XLA_FLAGS)), "without": (DIGEST, _environment())})
    with_, without = out["with"].split(), out["without"].split()
    assert with_[:2] == without[:2]
    assert with_[2:] == [LLVM_XLA_FLAGS.split("=", 1)[1]] and without[2:] == []


def test_a_store_made_under_other_llvm_options_is_refused(tmp_path, monkeypatch):
    import importlib

    import numpy as np
    import pytest

    import mfdyn

    api = importlib.import_module("mfdyn.sweep.api")
    axes = {"eta": [0.1, 0.5], "a": [1.0], "b": [0.5]}
    store = tmp_path / "s.zarr"
    ds = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), axes, 20, store=store, progress=False)
    monkeypatch.setattr(api, "llvm_options", lambda: "-some-other-option")
    with pytest.raises(mfdyn.InputError, match="different sweep configuration .xla_llvm_options"):
        mfdyn.sweep(mfdyn.ScalarFactorization(1.0), axes, 20, store=store, progress=False)
    monkeypatch.undo()
    assert mfdyn.open_sweep(store).identical(ds)
    np.testing.assert_array_equal(mfdyn.sweep(mfdyn.ScalarFactorization(1.0), axes, 20, store=store,
                                              progress=False).final_loss, ds.final_loss)
