"""The reproduction report: ``report.md``, ``report.html`` (figures embedded) and ``claims.json``."""

from __future__ import annotations

import base64
import datetime
import html
import json
import platform
from pathlib import Path

from .experiments.registry import CLAIM_SOURCES, ExperimentResult


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _cell(x) -> str:
    """A markdown table cell: :func:`_fmt`, its pipes escaped (a claim's ``|Q(z)|`` split its row)."""
    return _fmt(x).replace("|", "\\|")


def claims_json(results: list[ExperimentResult]) -> list[dict]:
    return [c.as_dict() for r in results for c in r.context.claims]


def summary(results: list[ExperimentResult]) -> tuple[int, int, int]:
    """``(claims passed, claims total, experiments that raised)``."""
    claims = [c for r in results for c in r.context.claims]
    return sum(c.passed for c in claims), len(claims), sum(r.error is not None for r in results)


def summary_by_source(results: list[ExperimentResult]) -> dict[str, tuple[int, int]]:
    """``{source: (claims passed, claims total)}`` for every source in ``CLAIM_SOURCES``, in that order."""
    claims = [c for r in results for c in r.context.claims]
    return {s: (sum(c.passed for c in claims if c.source == s), sum(c.source == s for c in claims)) for s in CLAIM_SOURCES}


SOURCES = ("Where the claims come from: the papers' full texts were not available. A claim states the paper's "
           "result only where MATH.md marks that statement [paper]; closed forms, "
           "thresholds, rates and rules marked [derived] there were worked out for this project and are checked "
           "here as formulas of mfdyn, not as the papers' results. MATH.md names the source of every formula. "
           "The column source gives, per claim, paper (a seed abstract's statement, MATH.md [paper]) or derived "
           "(a formula or check worked out for this project, MATH.md [derived]).")


def _columns(rows: list[dict]) -> list[str]:
    """The columns of a table: every key of every row, in order of first appearance (rows may differ)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _header(results, scale) -> list[str]:
    import jax

    from . import __version__

    passed, total, errors = summary(results)
    by_source = ", ".join(f"{s}: {p} of {n}" for s, (p, n) in summary_by_source(results).items())
    return [
        f"mfdyn {__version__}, scale `{scale}`, {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{platform.machine()} / {platform.system()}, JAX backend `{jax.default_backend()}`.",
        f"**{passed} of {total} claims pass** ({by_source}); {errors} experiment(s) raised an error.",
        "",
        SOURCES,
    ]


def write_markdown(results: list[ExperimentResult], out: Path, scale: str) -> Path:
    lines = ["# mfdyn reproduction report", "", *_header(results, scale), "", "## Claims", "",
             "| experiment | claim | source | expected | measured | tolerance | result |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for c in r.context.claims:
            lines.append(f"| {c.experiment} | {_cell(c.claim)} | {c.source} | {_cell(c.expected)} | {_cell(c.measured)} | "
                         f"{_cell(c.tolerance)} | {'pass' if c.passed else '**FAIL**'} |")
    for r in results:
        ctx = r.context
        lines += ["", f"## {r.experiment.name}: {r.experiment.title}", "", f"Experiments on: {r.experiment.paper}. Time: {r.seconds:.1f} s."]
        if r.error:
            lines += ["", f"**ERROR**: `{r.error}`"]
        for note in ctx.notes:
            lines += ["", note if not note.startswith("Traceback") else f"```\n{note}\n```"]
        for t in ctx.tables:
            if not t.rows:
                continue
            keys = _columns(t.rows)
            lines += ["", f"**{t.title}**", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in t.rows]
        for f in ctx.figures:
            lines += ["", f"![{f.caption}]({f.path.relative_to(out).as_posix()})", "", f"*{f.caption}*"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_html(results: list[ExperimentResult], out: Path, scale: str) -> Path:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mfdyn reproduction report</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             ".pass{color:#060}.fail{color:#b00;font-weight:bold}img{max-width:100%}pre{background:#f4f4f4;padding:8px;overflow:auto}",
             "</style></head><body><h1>mfdyn reproduction report</h1>"]
    parts += [f"<p>{esc(line).replace('**', '')}</p>" for line in _header(results, scale)]
    parts.append("<h2>Claims</h2><table><tr><th>experiment</th><th>claim</th><th>source</th><th>expected</th>"
                 "<th>measured</th><th>tolerance</th><th>result</th></tr>")
    for r in results:
        for c in r.context.claims:
            cls, word = ("pass", "pass") if c.passed else ("fail", "FAIL")
            parts.append(f"<tr><td>{esc(c.experiment)}</td><td>{esc(c.claim)}</td><td>{esc(c.source)}</td>"
                         f"<td>{esc(_fmt(c.expected))}</td><td>{esc(_fmt(c.measured))}</td><td>{esc(_fmt(c.tolerance))}</td>"
                         f"<td class='{cls}'>{word}</td></tr>")
    parts.append("</table>")
    for r in results:
        ctx = r.context
        parts.append(f"<h2>{esc(r.experiment.name)}: {esc(r.experiment.title)}</h2>"
                     f"<p>Experiments on: {esc(r.experiment.paper)}. Time: {r.seconds:.1f} s.</p>")
        if r.error:
            parts.append(f"<p class='fail'>ERROR: {esc(r.error)}</p>")
        for note in ctx.notes:
            parts.append(f"<pre>{esc(note)}</pre>" if note.startswith("Traceback") else f"<p>{esc(note)}</p>")
        for t in ctx.tables:
            if not t.rows:
                continue
            keys = _columns(t.rows)
            parts.append(f"<p><b>{esc(t.title)}</b></p><table><tr>" + "".join(f"<th>{esc(k)}</th>" for k in keys) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(_fmt(row.get(k, '')))}</td>" for k in keys) + "</tr>" for row in t.rows]
            parts.append("</table>")
        for f in ctx.figures:
            data = base64.b64encode(f.path.read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(f.caption)}'>"
                         f"<figcaption>{esc(f.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


def write_report(results: list[ExperimentResult], out: Path, scale: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    claims_path = out / "claims.json"
    claims_path.write_text(json.dumps(claims_json(results), indent=2))
    return {"markdown": write_markdown(results, out, scale), "html": write_html(results, out, scale), "claims": claims_path}
