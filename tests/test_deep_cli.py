"""``mfdyn deep run`` / ``mfdyn deep probability``: in-process, JSON output, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfdyn import deep
from mfdyn.cli import main


def test_deep_run_json_reports_tracked_quantities_and_stages(capsys, tmp_path):
    plot = tmp_path / "run.png"
    code = main(["deep", "run", "--d", "2", "--field", "complex", "--balance", "5", "--eps", "0.4", "--eta", "0.04",
                 "--steps", "3000", "--seed", "0", "--json", "--plot", str(plot)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and plot.stat().st_size > 0
    assert set(out["final"]) >= {"loss", "skew_error", "hermitian_main_term", "regularizer", "sigma_min_polar"}
    assert out["final"]["loss"] < 1e-10
    # at the PSD minimizer with Sigma = I: main term 4 sqrt(sigma_1), skew error 0
    assert abs(out["final"]["hermitian_main_term"] - 4.0) < 1e-6 and out["final"]["skew_error"] < 1e-6
    assert out["stages"]["alignment_end"] is not None and out["stages"]["thresholds"]["align_tol"] == 0.05
    assert len(out["recorded"]["step"]) == len(out["recorded"]["loss"])


def test_deep_probability_matches_the_library(capsys):
    args = ["deep", "probability", "--field", "real", "--init", "balanced", "--seeds", "8", "--d", "2", "--steps", "600",
            "--eps", "0.5", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    ds = deep.convergence_sweep(deep.conditioned_family(2, "real"), np.arange(8), eps=0.5, eta=0.04, steps=600,
                                kind="balanced", constants={"kappa": [1.0], "balance": [5.0]})
    assert out["converged"] == int(np.asarray(ds["converged"]).sum()) and out["n"] == 8
    assert out["wilson_low"] <= out["p"] <= out["wilson_high"]
    assert out["det"]["converged_with_negative_initial_det"] == 0


@pytest.mark.parametrize("args,match", [
    (["deep", "run", "--eps", "0"], "--eps must be > 0"),
    (["deep", "run", "--eps", "-1"], "--eps must be > 0"),
    (["deep", "run", "--field", "quaternion"], "field must be one of"),
    (["deep", "run", "--init", "orthogonal"], "--init must be one of"),
    (["deep", "probability", "--seeds", "0"], "--seeds must be >= 1"),
    (["deep", "probability", "--kappa", "0.5"], "kappa must be >= 1"),
])
def test_deep_cli_bad_input(capsys, args, match):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and match in err
