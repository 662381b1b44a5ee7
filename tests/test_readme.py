"""The README's examples run as written and print what the README says they print.

A researcher's first contact with mfdyn is the README: its Python blocks, command lines and TOML file
are extracted from README.md itself (not copied here) and run in a fresh folder, through the installed
``mfdyn`` command for the command lines.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"
MFDYN = Path(sys.executable).with_name("mfdyn")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _env() -> dict:
    return dict(os.environ, MPLBACKEND="Agg")


def test_python_examples_print_what_the_readme_says(tmp_path):
    code = "\n".join(_blocks("python"))
    assert "mfdyn.sweep(" in code and "mfdyn.gd(" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    # "-> 1/16: f ~ k / (16 t^2)" (k = 1, t = 1e6)
    np.testing.assert_allclose(float(lines[1]), 1 / 16, rtol=1e-5)
    # "-> [0.7764 0.4342 0.]": the converged fraction of the 5000 random starts at each step size
    expected = re.search(r"-> (\[[0-9. ]+\])", code).group(1)
    np.testing.assert_array_equal(np.array(lines[-1].strip("[]").split(), float),
                                  np.array(expected.strip("[]").split(), float))
    assert (tmp_path / "phase.png").stat().st_size > 0 and (tmp_path / "scalar.zarr").is_dir()


def _commands(block: str) -> list[list[str]]:
    """The ``mfdyn ...`` command lines of a bash block (comments dropped)."""
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("mfdyn ")]


def test_command_line_examples_run(tmp_path):
    """Every ``mfdyn`` command line of the README (but ``reproduce``, which tests/test_reproduce.py runs),
    and the sweep of its TOML file with the plots of its store."""
    bash = _blocks("bash")
    commands = [c for block in bash for c in _commands(block)]
    assert {c[1] for c in commands} >= {"gd", "flow", "sweep", "plot", "reproduce"}
    (tmp_path / "phase.toml").write_text(_blocks("toml")[0])
    for command in commands:
        if command[1] == "reproduce":
            continue
        proc = subprocess.run([str(MFDYN), *command[1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env=_env())
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
    for made in ("run.png", "flow.csv", "phase.zarr", "phase.png", "steps.png"):
        assert (tmp_path / made).exists(), made

