"""``mfdyn symmetric ...`` and the seed-003 experiments, in process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfdyn.cli import main


def run_json(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_equilibria_json(capsys):
    data = run_json(capsys, ["symmetric", "equilibria", "--eigs", "3,1.5,0,0", "--rank", "3", "--json"])
    assert data["regime"] == {"name": "over", "rank": 3, "r0": 2}
    kinds = [e["kind"] for e in data["equilibria"]]
    assert len(kinds) == 4 and kinds.count("stable") == 1
    stable = next(e for e in data["equilibria"] if e["kind"] == "stable")
    assert stable["hyperbolic"] is False and stable["loss"] == 0.0
    assert max(e["hessian_error"] for e in data["equilibria"]) < 1e-12


def test_equilibria_table(capsys):
    assert main(["symmetric", "equilibria", "--matrix", "2,0.5;0.5,1", "--rank", "1"]) == 0
    out = capsys.readouterr().out
    assert "under" in out and "stable" in out and "strict_saddle" in out.replace("strict_s…", "strict_saddle")


def test_rates_closed_form_json(capsys):
    data = run_json(capsys, ["symmetric", "rates", "--eigs", "3,1.5,0,0", "--rank", "3", "--t1", "1e6",
                             "--method", "closed-form", "--json"])
    c = data["constants"]
    assert data["k"] == 1
    assert abs(c["residual_2"]["at_end"] - 0.5) < 1e-3 and abs(c["residual_F"]["at_end"] - 0.5) < 1e-3
    assert abs(c["loss_gap"]["at_end"] - 1 / 16) < 1e-3
    assert data["exponential"]["K_F"]["rate"] >= 1.5


@pytest.mark.parametrize("argv, message", [
    (["symmetric", "equilibria", "--matrix", "1,2;2.5,1", "--rank", "1"], "M must be symmetric, got max |M - M^T| = 0.5"),
    (["symmetric", "rates", "--eigs", "3,1.5,0", "--rank", "1"], "rank 1 < r0 = 2"),
    (["symmetric", "equilibria", "--eigs", "3,x", "--rank", "1"], "--eigs must be comma-separated numbers"),
    (["symmetric", "rates", "--eigs", "3,0", "--rank", "2", "--t1", "-1"], "--t1 must be a finite time > 0"),
    (["symmetric", "equilibria", "--eigs", "3,1", "--rank", "0"], "rank must be >= 1"),
])
def test_bad_input_exits_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_phase_experiment_quick(tmp_path):
    from mfdyn.experiments import run_one, select

    (exp,) = select("symmetric.phase")
    result = run_one(exp, "quick", tmp_path)
    assert result.error is None
    assert result.context.claims and all(c.passed for c in result.context.claims)
    assert (tmp_path / "symmetric_phase" / "phase.png").exists()


@pytest.mark.slow
def test_all_symmetric_experiments_quick(tmp_path):
    from mfdyn.experiments import run_one, select

    for exp in select("symmetric"):
        result = run_one(exp, "quick", tmp_path)
        assert result.error is None, result.context.notes
        failed = [(c.claim, c.measured, c.expected) for c in result.context.claims if not c.passed]
        assert not failed, failed
        assert np.all([f.path.exists() for f in result.context.figures])
