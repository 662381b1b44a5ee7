"""Every claim carries its source (MATH.md [paper] or [derived]); the report shows it per claim and counts it."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from mfdyn.errors import InputError
from mfdyn.experiments import EXPERIMENTS, load_all
from mfdyn.experiments.registry import CLAIM_SOURCES, Context, Experiment, ExperimentResult
from mfdyn.report import SOURCES, summary_by_source, write_html, write_markdown, write_report

CLAIM_METHODS = ("close", "at_most", "at_least", "holds")


def _calls(ctx: Context, **extra):
    """One call of each claim method, with the arguments it needs apart from ``source``."""
    return [
        lambda: ctx.close("c", 1.0, 1.0, **extra),
        lambda: ctx.at_most("m", 1.0, 2.0, **extra),
        lambda: ctx.at_least("l", 2.0, 1.0, **extra),
        lambda: ctx.holds("h", True, measured=1, expected=1, **extra),
    ]


def test_claim_source_is_required(tmp_path):
    ctx = Context("t.one", "quick", tmp_path)
    for call in _calls(ctx):
        with pytest.raises(TypeError, match="source"):
            call()
    assert ctx.claims == []


@pytest.mark.parametrize("bad", ["foo", "Paper", "", None, 1])
def test_unknown_claim_source_is_an_input_error(tmp_path, bad):
    ctx = Context("t.one", "quick", tmp_path)
    for call in _calls(ctx, source=bad):
        with pytest.raises(InputError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and repr(bad) in message and str(CLAIM_SOURCES) in message
    assert ctx.claims == []


def test_claim_source_is_recorded_and_serialized(tmp_path):
    ctx = Context("t.one", "quick", tmp_path)
    for source in CLAIM_SOURCES:
        assert all(call() for call in _calls(ctx, source=source))
    assert [c.source for c in ctx.claims] == ["paper"] * 4 + ["derived"] * 4
    assert ctx.holds("h", False, source="derived", measured=0, expected=1) is False
    d = ctx.claims[0].as_dict()
    assert list(d)[:3] == ["experiment", "source", "claim"] and d["source"] == "paper"


def _results(tmp_path) -> list[ExperimentResult]:
    """Two hand-made experiments: paper 1 of 2 pass, derived 2 of 3 pass."""
    out = []
    for name, claims in (("t.one", [("paper", True), ("derived", True), ("derived", False)]),
                         ("t.two", [("paper", False), ("derived", True)])):
        exp = Experiment(name, paper="a paper", title=f"title of {name}", fn=lambda ctx: None)
        ctx = Context(name, "quick", tmp_path / name)
        for i, (source, ok) in enumerate(claims):
            ctx.at_most(f"{name} claim {i} ({source})", 0.0 if ok else 2.0, 1.0, source=source)
        out.append(ExperimentResult(exp, ctx, 0.01))
    return out


def test_summary_by_source(tmp_path):
    results = _results(tmp_path)
    assert summary_by_source(results) == {"paper": (1, 2), "derived": (2, 3)}
    assert list(summary_by_source(results)) == list(CLAIM_SOURCES)
    assert summary_by_source([]) == {"paper": (0, 0), "derived": (0, 0)}


def test_markdown_report_shows_the_source_column_and_counts(tmp_path):
    text = write_markdown(_results(tmp_path), tmp_path, "quick").read_text()
    assert "**3 of 5 claims pass** (paper: 1 of 2, derived: 2 of 3); 0 experiment(s) raised an error." in text
    assert "| experiment | claim | source | expected | measured | tolerance | result |" in text
    assert "|---|---|---|---|---|---|---|" in text
    assert "| t.one | t.one claim 0 (paper) | paper | <= 1 | 0 | 0 | pass |" in text
    assert "| t.one | t.one claim 2 (derived) | derived | <= 1 | 2 | 0 | **FAIL** |" in text
    assert "| t.two | t.two claim 0 (paper) | paper | <= 1 | 2 | 0 | **FAIL** |" in text
    assert SOURCES in text and "The column source gives, per claim, paper" in text


def test_html_report_shows_the_source_column_and_counts(tmp_path):
    text = write_html(_results(tmp_path), tmp_path, "quick").read_text()
    assert "3 of 5 claims pass (paper: 1 of 2, derived: 2 of 3)" in text
    assert "<th>claim</th><th>source</th><th>expected</th>" in text
    assert "<td>t.one claim 1 (derived)</td><td>derived</td><td>&lt;= 1</td>" in text
    assert "<td>t.two claim 0 (paper)</td><td>paper</td>" in text
    assert text.count("<td>paper</td>") == 2 and text.count("<td>derived</td>") == 3


def test_claims_json_keeps_the_source(tmp_path):
    paths = write_report(_results(tmp_path), tmp_path / "out", "quick")
    claims = json.loads(paths["claims"].read_text())
    assert [c["source"] for c in claims] == ["paper", "derived", "derived", "paper", "derived"]


def _claim_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLAIM_METHODS and isinstance(node.func.value, ast.Name) and node.func.value.id == "ctx"]


def test_every_experiment_claim_names_its_source():
    """Scan the experiment modules' source: every ``ctx.close/at_most/at_least/holds`` call passes
    ``source=`` as a string literal in CLAIM_SOURCES (no claim can be added without saying where it comes from)."""
    load_all()
    modules = {sys.modules[exp.fn.__module__] for exp in EXPERIMENTS.values()}
    files = {Path(m.__file__).resolve() for m in modules}
    package = Path(sys.modules["mfdyn.experiments"].__file__).resolve().parent
    assert files <= set(package.glob("*.py"))
    assert {f.stem for f in files} >= {"core", "rank1", "symmetric", "landscape", "deep"}
    bad, count, counts = [], 0, dict.fromkeys(CLAIM_SOURCES, 0)
    for path in sorted(package.glob("*.py")):
        for call in _claim_calls(path):
            count += 1
            where = f"{path.name}:{call.lineno} ctx.{call.func.attr}"
            sources = [k for k in call.keywords if k.arg == "source"]
            if any(k.arg is None for k in call.keywords):
                bad.append(f"{where}: **kwargs hides the source")
            elif len(sources) != 1:
                bad.append(f"{where}: no source= keyword")
            elif not (isinstance(sources[0].value, ast.Constant) and sources[0].value.value in CLAIM_SOURCES):
                bad.append(f"{where}: source={ast.unparse(sources[0].value)} is not a literal in {CLAIM_SOURCES}")
            else:
                counts[sources[0].value.value] += 1
    assert not bad, "\n".join(bad)
    assert count >= 80 and all(counts.values()), counts


def test_markdown_cells_escape_pipes(tmp_path):
    """A claim's ``|Q(z)|`` must not split its row of the markdown table."""
    exp = Experiment("t.pipe", paper="a paper", title="pipes", fn=lambda ctx: None)
    ctx = Context("t.pipe", "quick", tmp_path / "t.pipe")
    ctx.holds("branch |Q(z)| - delta admissible", True, source="derived", measured="2/2 | ok", expected="2/2")
    text = write_markdown([ExperimentResult(exp, ctx, 0.01)], tmp_path, "quick").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| t.pipe |"))
    assert row == "| t.pipe | branch \\|Q(z)\\| - delta admissible | derived | 2/2 | 2/2 \\| ok | - | pass |"
