"""``mfdyn critical-points``: table, JSON, count, limit, bad input."""

import json

from mfdyn.cli import main


def test_table(capsys):
    assert main(["critical-points", "--y", "3,2.5,1.9", "--depth", "3", "--weight-decay", "1", "--widths", "3,2,3,3"]) == 0
    out = capsys.readouterr().out
    assert "19 of 19 classes" in out and "global_min" in out and "strict_saddle" in out


def test_json_limit_and_count(capsys):
    assert main(["critical-points", "--y", "3,2.5,1.9", "--depth", "3", "--weight-decay", "1", "--json", "--limit", "4"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 27 and len(data["points"]) == 4
    assert data["points"][0]["kind"] == "global_min" and data["points"][0]["matching"] == [0, 1]
    losses = [p["loss"] for p in data["points"]]
    assert losses == sorted(losses)
    assert main(["critical-points", "--y", "3,2.5,1.9", "--depth", "3", "--weight-decay", "1", "--count", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 27


def test_verify_flag(capsys):
    assert main(["critical-points", "--y", "2,1.5", "--depth", "4", "--weight-decay", "0.5,1,1,2", "--verify"]) == 0
    assert "verified" in capsys.readouterr().out


def test_bad_input(capsys):
    for args, word in [
        (["--y", "3,2", "--depth", "3", "--weight-decay", "0"], "weight_decay"),
        (["--y", "3,x", "--depth", "3", "--weight-decay", "1"], "--y"),
        (["--y", "3,2", "--depth", "1", "--weight-decay", "1"], "depth"),
        (["--y", "3,2,1", "--depth", "2", "--weight-decay", "1", "--widths", "2,2,2"], "--y"),
    ]:
        assert main(["critical-points", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and word in err
