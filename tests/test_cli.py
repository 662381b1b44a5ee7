"""``mfdyn gd <family>`` / ``mfdyn flow <family>``: JSON schema, agreement with the Python API, CSV,
plots, divergence as an outcome, and bad input (exit 2, one ``error:`` line, no traceback)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mfdyn
from mfdyn.cli import main
from mfdyn.plot import plot_trajectory

RECORD = ("loss", "grad_norm", "imbalance_norm")
TOL = 1e-12

# family -> (CLI options, builder of the same (problem, params0) through the Python API)
FAMILIES = {
    "scalar": (
        ["--a0", "1.5", "--b0", "0.2", "--target", "1.0", "--quartic", "0.1"],
        lambda: (mfdyn.ScalarFactorization(1.0, 0.1), (1.5, 0.2)),
    ),
    "matrix": (
        ["--target-matrix", "1,0;0,0.5;0.2,0.1", "--rank", "2", "--seed", "1", "--scale", "0.1"],
        lambda: _seeded(mfdyn.MatrixFactorization(np.array([[1, 0], [0, 0.5], [0.2, 0.1]]), 2), 1, 0.1),
    ),
    "symmetric": (
        ["--eigs", "3,1.5,0,0", "--rank", "3", "--seed", "0", "--scale", "0.1"],
        lambda: _seeded(mfdyn.SymmetricFactorization(np.diag([3, 1.5, 0, 0]), 3), 0, 0.1),
    ),
    "deep": (
        ["--target-diag", "3,2,1", "--depth", "3", "--widths", "3,2,3,3", "--weight-decay", "0.1",
         "--seed", "0", "--scale", "0.1"],
        lambda: _seeded(mfdyn.DeepFactorization(np.diag([3.0, 2, 1]), 3, widths=(3, 2, 3, 3), weight_decay=0.1),
                        0, 0.1),
    ),
}
DEEP_COMPLEX = (
    ["--target-matrix", "1,0.5j;0,2", "--depth", "2", "--weight-decay", "0,0.2", "--balance", "0.5",
     "--field", "complex", "--init", "balanced", "--seed", "3", "--scale", "0.5"],
    lambda: _seeded(mfdyn.DeepFactorization(np.array([[1, 0.5j], [0, 2]]), 2, weight_decay=[0, 0.2], balance=0.5,
                                            field="complex"), 3, 0.5, "balanced"),
)
GD_ARGS = ["--eta", "0.05", "--steps", "200", "--every", "10"]
FLOW_ARGS = ["--t1", "20", "--solver", "tsit5", "--points", "17"]


def _seeded(problem, seed, scale, kind="gaussian"):
    return problem, problem.init(seed, scale, kind=kind)


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _run_json(capsys, argv):
    code, out, err = _run(capsys, [*argv, "--json"])
    assert code == 0, err
    return json.loads(out)


def _decode(x, complex_field: bool):
    """Inverse of the CLI's JSON encoding: ``[re, im]`` innermost pairs -> complex."""
    arr = np.asarray(x, dtype=float)
    return arr[..., 0] + 1j * arr[..., 1] if complex_field else arr


def _check_against(payload, traj, problem, method, complex_field=False):
    assert set(payload) >= {"problem", "method", "config", "final_params", "final", "diverged_at", "status",
                            "recorded", "wall_time_s"}
    assert payload["method"] == method
    assert payload["status"] == traj.status == "ok"
    assert payload["diverged_at"] is None
    assert isinstance(payload["wall_time_s"], float) and payload["wall_time_s"] > 0
    assert isinstance(payload["problem"]["family"], str)
    # final observables are evaluated at the final parameters, which are the last recorded state
    assert list(payload["final"]) == list(RECORD)
    for name in RECORD:
        assert isinstance(payload["final"][name], float)
        np.testing.assert_allclose(payload["final"][name], traj[name][-1], rtol=TOL, atol=TOL)
    # final params: nested lists in the family's parameter structure
    final_leaves = [np.asarray(x) for x in (traj.final if isinstance(traj.final, tuple) else (traj.final,))]
    json_leaves = payload["final_params"] if isinstance(traj.final, tuple) else [payload["final_params"]]
    assert len(json_leaves) == len(final_leaves)
    for got, want in zip(json_leaves, final_leaves):
        got = _decode(got, complex_field)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    axis = "step" if method == "gd" else "time"
    assert set(payload["recorded"]) == {axis, *RECORD}
    np.testing.assert_array_equal(payload["recorded"][axis], traj.axis)
    for name in RECORD:
        np.testing.assert_allclose(payload["recorded"][name], traj[name], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gd_json_matches_python_api(capsys, family):
    options, build = FAMILIES[family]
    payload = _run_json(capsys, ["gd", family, *options, *GD_ARGS])
    problem, params0 = build()
    traj = mfdyn.gd(problem, params0, 0.05, 200, record=RECORD, every=10)
    _check_against(payload, traj, problem, "gd")
    assert payload["problem"]["family"] == family
    assert payload["config"] == {"eta": 0.05, "steps": 200, "every": 10, "momentum": 0.0}
    assert payload["recorded"]["step"] == list(range(0, 201, 10))


def test_gd_json_complex_deep_with_momentum(capsys):
    options, build = DEEP_COMPLEX
    payload = _run_json(capsys, ["gd", "deep", *options, *GD_ARGS, "--momentum", "0.5"])
    problem, params0 = build()
    traj = mfdyn.gd(problem, params0, 0.05, 200, record=RECORD, every=10, momentum=0.5)
    _check_against(payload, traj, problem, "gd", complex_field=True)
    assert payload["problem"]["field"] == "complex"
    np.testing.assert_array_equal(_decode(payload["problem"]["target"], True), [[1, 0.5j], [0, 2]])
    assert payload["problem"]["weight_decay"] == [0.0, 0.2]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_flow_json_matches_python_api(capsys, family):
    options, build = FAMILIES[family]
    payload = _run_json(capsys, ["flow", family, *options, *FLOW_ARGS])
    problem, params0 = build()
    traj = mfdyn.flow(problem, params0, 20.0, record=RECORD, times=mfdyn.dynamics.default_times(20.0, 17),
                      solver="tsit5")
    _check_against(payload, traj, problem, "flow")
    assert payload["config"]["t1"] == 20.0 and payload["config"]["solver"] == "tsit5"
    assert payload["recorded"]["time"][0] == 0.0 and payload["recorded"]["time"][-1] == pytest.approx(20.0)


def test_divergence_is_an_outcome(capsys):
    payload = _run_json(capsys, ["gd", "scalar", "--a0", "1.5", "--b0", "0.2", "--eta", "3", "--steps", "100"])
    traj = mfdyn.gd(mfdyn.ScalarFactorization(), (1.5, 0.2), 3.0, 100, record=RECORD)
    assert traj.diverged_at is not None
    assert payload["status"] == "diverged"
    assert payload["diverged_at"] == traj.diverged_at
    assert payload["recorded"]["step"] == list(range(traj.diverged_at))
    code, out, err = _run(capsys, ["gd", "scalar", "--a0", "1.5", "--b0", "0.2", "--eta", "3", "--steps", "100"])
    assert code == 0 and "diverged" in out and "Traceback" not in err


def test_table_output(capsys):
    code, out, _ = _run(capsys, ["gd", "scalar", "--a0", "1.5", "--b0", "0.2", *GD_ARGS])
    assert code == 0
    for text in ("scalar", "final loss", "final grad_norm", "status", "wall time"):
        assert text in out


def test_csv_and_plot_files(capsys, tmp_path):
    options, build = FAMILIES["matrix"]
    record = "loss,product_singular_values"
    csv_path, png_path = tmp_path / "run.csv", tmp_path / "run.png"
    code, _, err = _run(capsys, ["gd", "matrix", *options, *GD_ARGS, "--record", record,
                                 "--csv", str(csv_path), "--plot", str(png_path)])
    assert code == 0, err
    problem, params0 = build()
    traj = mfdyn.gd(problem, params0, 0.05, 200, record=record.split(","), every=10)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "loss", "product_singular_values[0]", "product_singular_values[1]"]
    assert len(rows) == len(traj.steps)
    np.testing.assert_array_equal([int(r["step"]) for r in rows], traj.steps)
    np.testing.assert_allclose([float(r["loss"]) for r in rows], traj["loss"], rtol=TOL, atol=TOL)
    for i in range(2):
        np.testing.assert_allclose([float(r[f"product_singular_values[{i}]"]) for r in rows],
                                   traj["product_singular_values"][:, i], rtol=TOL, atol=TOL)
    assert png_path.stat().st_size > 1000 and png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_trajectory_gd_and_flow():
    # same structures, sizes and records as the CLI runs above, so the compiled kernels are reused
    problem = mfdyn.ScalarFactorization()
    diverged = mfdyn.gd(problem, (1.5, 0.2), 3.0, 100, record=RECORD)
    fig = plot_trajectory(diverged, names=("loss", "imbalance_norm"))
    axes = fig.axes
    assert len(axes) == 2 and axes[0].get_yscale() == "log"
    marks = [line for line in axes[0].lines if list(line.get_xdata()) == [diverged.diverged_at] * 2]
    assert marks, "diverged_at is marked"
    flow = mfdyn.flow(problem, (1.5, 0.2), 20.0, record=("loss", "params"), solver="tsit5",
                      times=mfdyn.dynamics.default_times(20.0, 17))
    fig = plot_trajectory(flow, names=["params"])
    (ax,) = fig.axes
    assert ax.get_xscale() == "symlog" and len(ax.lines) == 2  # one line per component
    with pytest.raises(mfdyn.InputError, match="sharpness"):
        plot_trajectory(flow, names=["sharpness"])


BAD_INPUTS = [
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0"], "0"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "-0.5"], "-0.5"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "nan"], "nan"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "inf"], "inf"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--steps", "-3"], "-3"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--record", "loss,no_such_obs"], "no_such_obs"),
    (["gd", "no_such_family", "--eta", "0.1"], "no_such_family"),
    (["flow", "no_such_family"], "no_such_family"),
    (["gd", "matrix", "--target-diag", "1,x", "--eta", "0.1"], "1,x"),
    (["gd", "matrix", "--target-matrix", "1,2;3", "--eta", "0.1"], "1,2;3"),
    (["gd", "deep", "--target-diag", "3,2,1", "--depth", "0", "--eta", "0.1"], "0"),
    (["gd", "deep", "--target-diag", "3,2,1", "--depth", "3", "--widths", "3,2,3", "--eta", "0.1"], "(3, 2, 3)"),
    (["gd", "deep", "--target-diag", "3,2,1", "--depth", "3", "--widths", "3,2,3,4", "--eta", "0.1"], "(3, 2, 3, 4)"),
    (["gd", "deep", "--target-diag", "3,2,1", "--widths", "3,a,3", "--eta", "0.1"], "3,a,3"),
    (["gd", "deep", "--target-matrix", "1+2j,0;0,1", "--eta", "0.1"], "1.+2.j"),
    (["gd", "deep", "--target-diag", "1,2", "--field", "quaternion", "--eta", "0.1"], "quaternion"),
    (["gd", "deep", "--target-diag", "1,2", "--init", "orthogonal", "--eta", "0.1"], "orthogonal"),
    (["gd", "deep", "--target-diag", "1,2", "--weight-decay", "-1", "--eta", "0.1"], "-1.0"),
    (["gd", "matrix", "--target-diag", "1,2j", "--eta", "0.1"], "2.j"),
    (["gd", "symmetric", "--target-matrix", "1,2;3,4", "--eta", "0.1"], "M"),
    (["flow", "scalar", "--a0", "1", "--b0", "1", "--t1", "-1"], "-1"),
    (["flow", "scalar", "--a0", "1", "--b0", "1", "--solver", "euler"], "euler"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "abc"], "abc"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--steps", "1.5"], "1.5"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--csv", "/no/such/folder/x.csv"], "/no/such/folder"),
    (["gd", "scalar", "--a0", "nan", "--b0", "1", "--eta", "0.1"], "--a0 must be finite, got nan"),
    (["flow", "scalar", "--a0", "1", "--b0", "-inf"], "--b0 must be finite, got -inf"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--plot", "x.xyz"], "cannot write 'xyz' figures"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--plot", "noext"], "'noext': no extension"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--plot", ""], "give a file name"),
    (["gd", "scalar", "--a0", "1", "--b0", "1", "--eta", "0.1", "--steps", str(2**63)], "steps must be below 2**63"),
    (["rank1", "critical-step", "--target", "abc"], "Invalid value for '--target'"),
    (["rank1", "critical-step", "--target", "abc"], "(got 'abc')"),
    (["rank1", "two-cycle", "--eta", "1e300"], "too large for the 2-cycle in float64"),
    (["critical-points", "--y", "3,2,1", "--depth", "3", "--weight-decay", "1e110"], "10^330 is outside float64's range"),
    (["critical-points", "--y", "1e300", "--depth", "3", "--weight-decay", "0.1"], "too large for a census"),
    (["critical-points", "--y", "3,2,1", "--depth", "50", "--weight-decay", "1e-7", "--count"], "10^-350 is outside"),
    (["certificate", "verify", "--formula", "a/0 - delta", "--eta", "0.1", "--region", "0:1,0:1"], "formula is not finite"),
    (["certificate", "verify", "--formula", "a - delta", "--eta", "0.1", "--region", "0:1,0:1", "--seed", "-1"],
     "seed must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv, value", BAD_INPUTS, ids=[" ".join(a[:2] + a[-2:]) for a, _ in BAD_INPUTS])
def test_bad_input_exit_2(capsys, argv, value):
    code, out, err = _run(capsys, argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert value in lines[0]
    assert "Traceback" not in err


def test_console_script_json():
    script = Path(sys.executable).with_name("mfdyn")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([str(script), "gd", "scalar", "--eta", "0.5", "--a0", "1.5", "--b0", "0.2",
                           "--steps", "100", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    traj = mfdyn.gd(mfdyn.ScalarFactorization(), (1.5, 0.2), 0.5, 100, record=RECORD)
    np.testing.assert_allclose(payload["final"]["loss"], traj["loss"][-1], rtol=TOL, atol=TOL)
    assert payload["status"] == "ok" and payload["method"] == "gd"


def test_import_and_cli_start_leave_heavy_optional_modules_unloaded():
    """``import mfdyn`` and building the command line load neither diffrax (gradient flow only) nor
    dask.array (empty stores only): each takes a third of a second or more to import."""
    code = ("import sys, mfdyn; from mfdyn.cli import build_app; build_app(); "
            "print(sorted(m for m in ('diffrax', 'dask.array') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_csv_columns_and_json_encoding_of_arrays():
    from mfdyn.cli._json import to_jsonable
    from mfdyn.cli.run import csv_columns

    matrix_obs = np.arange(12.0).reshape(2, 2, 3)  # (records, 2, 3)
    traj = mfdyn.Trajectory(problem=None, observables={"loss": np.array([1.0, 0.5]), "m": matrix_obs}, final=None,
                            diverged_at=None, method="gd", steps=np.array([0, 7]))
    columns = csv_columns(traj)
    assert list(columns) == ["step", "loss", *[f"m[{i}][{j}]" for i in range(2) for j in range(3)]]
    np.testing.assert_array_equal(columns["m[1][2]"], matrix_obs[:, 1, 2])
    encoded = to_jsonable((np.array([1 + 2j, 3j]), np.array([1.5, np.nan]), np.float64(np.inf), np.int64(3)))
    assert encoded == [[[1.0, 2.0], [0.0, 3.0]], [1.5, None], None, 3]


def test_flow_with_two_saved_times_ends_at_t1(capsys):
    """``--points 2`` saves ``t = 0`` and ``t = t1`` (it used to save 0 and 0.001, and report that state as final)."""
    payload = _run_json(capsys, ["flow", "scalar", "--a0", "1", "--b0", "0.5", "--t1", "100", "--points", "2"])
    assert payload["recorded"]["time"] == [0.0, 100.0]
    traj = mfdyn.flow(mfdyn.ScalarFactorization(1.0), (1.0, 0.5), 100.0, record=("params",))
    np.testing.assert_allclose(payload["final_params"], np.ravel(traj.final), rtol=1e-7)  # (other saved times: other solver steps)


def test_out_of_memory_is_one_error_line(capsys, monkeypatch):
    """A request too large for the machine's memory ends with one ``error:`` line and exit 2."""
    import mfdyn.cli.run as run

    def too_large(*args, **kwargs):
        raise MemoryError("Unable to allocate 745. GiB for an array with shape (99999999999,) and data type float64")

    monkeypatch.setattr(run, "default_times", too_large)
    code, out, err = _run(capsys, ["flow", "scalar", "--a0", "1", "--b0", "0.5", "--points", "99999999999"])
    assert code == 2 and out == ""
    assert err.startswith("error: not enough memory for this request") and "745. GiB" in err
    assert len(err.strip().splitlines()) == 1


def test_plot_of_a_run_diverged_at_its_first_step(capsys, tmp_path):
    """A run that diverges at step 0 records nothing: its figure says so (it used to crash)."""
    out = tmp_path / "x.png"
    code, _, err = _run(capsys, ["gd", "scalar", "--eta", "0.5", "--a0", "1e200", "--b0", "1e200", "--steps", "10",
                                 "--plot", str(out)])
    assert code == 0, err
    assert out.stat().st_size > 1000
