"""``mfdyn sweep`` / ``mfdyn plot`` and the sweep figures."""

from __future__ import annotations

import importlib
import json

import matplotlib
import numpy as np
import pytest
import xarray as xr

import mfdyn
from mfdyn.cli import main
from mfdyn.cli._figures import figure_formats

OUTCOMES = importlib.import_module("mfdyn.sweep.classify").OUTCOMES

CONFIG = """
[problem]
family = "scalar"
target = 1.0
[axes]
eta = {start = 0.3, stop = 2.1, num = 5}
a = [0.5, 1.5]
[zipped.init]
b = [0.8, 1.2]
momentum = [0.0, 0.0]
[run]
steps = 200
keep_orbit = 3
chunk = 8
"""


def test_cli_sweep_store_and_plots(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "o.zarr"
    assert main(["sweep", str(cfg), "--store", str(store), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["points"] == 20 and summary["dims"] == {"eta": 5, "a": 2, "init": 2}
    ds = mfdyn.open_sweep(store)
    direct = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": np.linspace(0.3, 2.1, 5), "a": [0.5, 1.5],
                         "init": mfdyn.zipped(b=[0.8, 1.2], momentum=[0.0, 0.0])}, 200, keep_orbit=3, progress=False)
    assert ds.identical(direct)
    assert sum(summary["outcomes"].values()) == 20
    for args in (["phase", "--x", "eta", "--y", "a", "--sel", "init=#0"],
                 ["bifurcation", "--x", "eta", "--value", "0"],
                 ["heatmap", "--var", "final_loss", "--log", "--sel", "b=1.2"]):
        out = tmp_path / f"{args[0]}.png"
        assert main(["plot", *args[:1], str(store), *args[1:], "-o", str(out)]) == 0
        assert out.stat().st_size > 1000
    capsys.readouterr()
    # a dimension left with more than one value: the error says how to choose one
    assert main(["plot", "phase", str(store), "--x", "eta", "--y", "a", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err == "error: choose one value of init with --sel (nearest value, or #index), e.g. --sel init=#0\n"
    for args, message in ((["--sel", "init=#2"], "--sel init: index 2 is out of range (#0 .. #1)"),
                          (["--sel", "init=#one"], "--sel init: '#one' is not an index (#0 .. #1)"),
                          (["--sel", "eta=fast"], "--sel eta: 'fast' is not a number"),
                          (["--sel", "init"], "--sel must look like name=value, got 'init'"),
                          (["--sel", "init=#0", "--y", "eta"], "x and y must be two different axes, got 'eta' for both"),
                          (["--sel", "init=#0", "--sel", "a=0.5"], "'a' was selected at one value (a = 0.5): it cannot be a plot axis"),
                          (["--sel", "b=nan"], "--sel b: 'nan' is not a finite number"),
                          (["--sel", "init=#0", "--sel", "b=1.2"], "--sel b: already at one value (b = 0.8) after the "
                           "selections before it"),
                          (["--sel", "init=#0", "-o", str(tmp_path / "x.xyz")],
                           f"-o {str(tmp_path / 'x.xyz')!r}: matplotlib cannot write 'xyz' figures; use one of "
                           + ", ".join(sorted(figure_formats())))):
        out = [] if "-o" in args else ["-o", str(tmp_path / "x.png")]
        assert main(["plot", "phase", str(store), *args, *out]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "x.png").exists()


def test_cli_sweep_interrupted_says_what_the_store_keeps(tmp_path, capsys, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) during ``mfdyn sweep``: exit 130 and one line on what is kept."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "o.zarr"
    assert main(["sweep", str(cfg), "--store", str(store), "--json", "--no-progress"]) == 0
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mfdyn, "sweep", interrupted)
    assert main(["sweep", str(cfg), "--store", str(store), "--no-progress"]) == 130
    assert capsys.readouterr().err == (f"interrupted: 3 of 3 chunks are in {str(store)!r}; "
                                       "run the same command again to compute the rest\n")
    assert main(["sweep", str(cfg), "--store", str(tmp_path / "new.zarr"), "--no-progress"]) == 130
    assert capsys.readouterr().err == f"interrupted: {str(tmp_path / 'new.zarr')!r} has no finished chunk\n"
    assert main(["sweep", str(cfg), "--no-progress"]) == 130
    assert capsys.readouterr().err == "interrupted (no --store: nothing kept)\n"


@pytest.mark.parametrize("text, fragment", [
    ("[problem]\nfamily = 'cubic'\n[axes]\neta=[0.1]\n[run]\nsteps=5", "problem.family"),
    ("[problem]\nfamily = 'scalar'\nrho = 1\n[axes]\neta=[0.1]\n[run]\nsteps=5", "problem.rho"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta={start=0.1, stop=1}\na=[1]\nb=[1]\n[run]\nsteps=5", "axes.eta"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta=[0.1]\na=[1]\nb=[1]\n[run]\nsteps='x'", "run.steps"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta=[0.1]\na=[1]\nb=[1]\n[run]\nstep=5", "run.step"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta=[0.1]\na=[1]\nb=[1]\n[run]\nsteps=0", "steps must be >= 1"),
    ("[problem]\nfamily = 'scalar'\ntarget = 'x'\n[axes]\neta=[0.1]\n[run]\nsteps=5", "problem: target"),
    ("[problem\n", "not valid TOML"),
    ("[problem]\nfamily = 'matrix'\nX = [[1, 0], [0]]\nrank = 1\n[axes]\neta=[0.1]\n[run]\nsteps=5",
     "problem: X must be a numeric array with rows of equal length, got [[1, 0], [0]]"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta={start=0, stop=1, num=3, log=true}\n[run]\nsteps=5",
     "axes.eta: log spacing needs start > 0"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta=[0.1]\n[zipped.init]\na={uniform=[3, 1], num=4}\n[run]\nsteps=5",
     "zipped.init.a.uniform must be [low, high] with low < high"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta=[0.1]\n[zipped.init]\na={uniform=[1, 3]}\n[run]\nsteps=5",
     "zipped.init.a must be a list or {uniform = [low, high], num, seed}; missing num"),
    ("[problem]\nfamily = 'scalar'\n[axes]\neta=[0.1]\n[zipped.init]\na={uniform=[1, 3], num=4, seed=-2}\n[run]\nsteps=5",
     "zipped.init.a.seed must be a non-negative integer"),
])
def test_cli_config_errors_name_the_key(tmp_path, capsys, text, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["sweep", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err


def test_config_random_and_log_spaced_axes(tmp_path):
    """``{uniform = [low, high], num, seed}`` draws from NumPy's generator seeded with the seed and
    the CRC-32 of the axis's key (a and b independent, the same config the same values);
    ``{start, stop, num, log = true}`` is np.geomspace."""
    import zlib

    from mfdyn.cli.sweep import load_config

    cfg = tmp_path / "random.toml"
    cfg.write_text("[problem]\nfamily = 'scalar'\n[axes]\neta = {start = 0.01, stop = 1.0, num = 3, log = true}\n"
                   "[zipped.init]\na = {uniform = [0.1, 3.0], num = 50, seed = 7}\n"
                   "b = {uniform = [0.1, 3.0], num = 50, seed = 7}\n[run]\nsteps = 100\n")
    axes = load_config(cfg)["axes"]
    np.testing.assert_array_equal(axes["eta"], np.geomspace(0.01, 1.0, 3))
    a, b = axes["init"].axes["a"], axes["init"].axes["b"]
    np.testing.assert_array_equal(a, np.random.default_rng([7, zlib.crc32(b"zipped.init.a")]).uniform(0.1, 3.0, 50))
    assert a.min() >= 0.1 and a.max() < 3.0 and b.min() >= 0.1 and b.max() < 3.0
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5 and not np.array_equal(a, b)
    np.testing.assert_array_equal(load_config(cfg)["axes"]["init"].axes["b"], b)  # (reproducible)


def test_plot_functions_and_errors():
    ds = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": np.linspace(0.5, 1.3, 6), "a": [0.8, 1.0, 1.2],
                                                      "b": [1.0]}, 200, keep_orbit=2, chunk=8, progress=False)
    flat = ds.isel(b=0)
    fig = mfdyn.plot.phase_diagram(flat, "eta", "a", overlays={"eta_c": 1.0, "curve": lambda x: 1 / x})
    assert isinstance(fig, matplotlib.figure.Figure)
    mfdyn.plot.bifurcation(ds, "eta", value=lambda o: o[..., 0] * o[..., 1])
    steps = flat.steps_to_converge.transpose("a", "eta").values
    assert (steps == -1).any() and (steps >= 0).any()
    hm = mfdyn.plot.heatmap(flat, "steps_to_converge", "eta", "a")  # (-1, never converged: left blank)
    np.testing.assert_array_equal(np.ma.filled(hm.axes[0].collections[0].get_array(), np.nan).ravel(),
                                  np.where(steps == -1, np.nan, steps).ravel())
    assert hm.axes[1].get_ylabel() == "steps_to_converge (blank: never)"
    assert mfdyn.plot.heatmap(flat, "final_loss", "eta", "a").axes[1].get_ylabel() == "final_loss"
    left, right = mfdyn.plot.phase_diagram(flat.isel(eta=slice(None, None, -1)), "eta", "a").axes[0].get_xlim()
    assert (left, right) == pytest.approx((0.5 - 0.08, 1.3 + 0.08), abs=1e-12)  # (the cells' edges, ascending for a descending axis)
    # b has one value: taken at it, and named in the default titles
    whole = mfdyn.plot.phase_diagram(ds, "eta", "a").axes[0]
    np.testing.assert_array_equal(whole.collections[0].get_array(), fig.axes[0].collections[0].get_array())
    assert whole.get_title() == "GD outcome (b = 1)" and fig.axes[0].get_title() == "GD outcome (b = 1)"
    assert mfdyn.plot.heatmap(ds.isel(a=1), "final_loss", "eta", "b").axes[0].get_title() == "final_loss (a = 1)"
    with pytest.raises(mfdyn.InputError, match=r"'b' was selected at one value \(b = 1.0\): it cannot be a plot axis"):
        mfdyn.plot.heatmap(flat, "final_loss", "eta", "b")
    two = xr.concat([flat.assign_coords(b=1.0), flat.assign_coords(b=1.2)], dim="b")
    assert mfdyn.plot.other_dimensions(two, "outcome", "eta", "a") == ["b"]
    with pytest.raises(mfdyn.InputError, match=r"reduce the other dimensions first, e\.g\. ds\.isel\(b=0\); left: b \(2 values\)"):
        mfdyn.plot.phase_diagram(two, "eta", "a")
    with pytest.raises(mfdyn.InputError, match="not an axis"):
        mfdyn.plot.heatmap(flat, "final_loss", "eta", "sigma")
    with pytest.raises(mfdyn.InputError, match="numeric"):
        mfdyn.plot.heatmap(flat, "outcome", "eta", "a")
    with pytest.raises(mfdyn.InputError, match="'eta' is not a variable of this sweep"):  # (an axis, not a variable)
        mfdyn.plot.heatmap(flat, "eta", "eta", "a")
    with pytest.raises(mfdyn.InputError, match="ds must be the xarray.Dataset of a sweep"):
        mfdyn.plot.phase_diagram({"outcome": 1}, "eta", "a")
    with pytest.raises(mfdyn.InputError, match="value must be 'loss', a coordinate index or a callable, got True"):
        mfdyn.plot.bifurcation(ds, "eta", True)
    matplotlib.pyplot.close("all")


def test_plots_of_zipped_points_are_scatters():
    """x and y zipped (e.g. random initial points): one marker per point, coloured by its outcome
    (the index in OUTCOMES) or its value; the periods annotated at their points."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0.2, 2.5, 40), rng.uniform(0.2, 2.5, 40)
    ds = mfdyn.sweep(mfdyn.ScalarFactorization(1.0), {"eta": [0.4, 1.1], "init": mfdyn.zipped(a=a, b=b)}, 200,
                     chunk=8, progress=False)
    flat = ds.isel(eta=1)
    fig = mfdyn.plot.phase_diagram(flat, "a", "b", overlays={"ab = 1": lambda x: 1 / x})
    assert fig.axes[0].get_ylim()[1] < b.max() + 0.1  # (framed on the points, not on the overlay's 1/a)
    dots = fig.axes[0].collections[0]
    np.testing.assert_array_equal(dots.get_offsets(), np.column_stack([a, b]))
    labels = flat.outcome.values
    np.testing.assert_array_equal(dots.get_array(), [OUTCOMES.index(o) for o in labels])
    periodic = np.nonzero(flat.period.values)[0]
    assert periodic.size  # (eta = 1.1 has period-2 orbits)
    texts = {(t.get_position(), t.get_text()) for t in fig.axes[0].texts}
    assert texts == {((a[k], b[k]), str(flat.period.values[k])) for k in periodic}
    fig = mfdyn.plot.heatmap(flat, "final_loss", "a", "b", log=True)
    dots = fig.axes[0].collections[0]
    with np.errstate(divide="ignore"):
        expected = np.log10(np.abs(flat.final_loss.values))
    np.testing.assert_array_equal(np.asarray(dots.get_array()), np.where(np.isfinite(expected), expected, np.nan))
    with pytest.raises(mfdyn.InputError, match="reduce the other dimensions"):
        mfdyn.plot.phase_diagram(ds, "a", "b")
    matplotlib.pyplot.close("all")


def test_progress_of_a_resumed_sweep_leaves_its_chunks_out_of_the_rate():
    """Chunks found in the store count as done but not in the rate (it read 5e9 traj-steps/s after a
    resume that computed nothing)."""
    from mfdyn.sweep.progress import SweepProgress

    with SweepProgress(4, 10, True) as bar:
        bar.set_total(100, done=[25, 25])
        task = bar._bar.tasks[0]
        assert (task.total, task.completed, task.speed) == (1000, 500, None)
        assert task.fields["chunks"] == "2/4"
        bar.advance(25)
        assert task.completed == 750 and task.fields["chunks"] == "3/4"
