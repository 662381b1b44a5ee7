"""``mfdyn reproduce``: run every registered experiment and write the report."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError


def reproduce(
    quick: bool = typer.Option(False, "--quick", help="Small sizes (under a minute in all); used by the tests."),
    full: bool = typer.Option(False, "--full", help="Paper-scale sizes."),
    out: Path = typer.Option(Path("results"), "--out", help="Output folder for report.md, report.html, claims.json."),
    only: str = typer.Option(None, "--only", help="Run one experiment, or every experiment of one paper module."),
) -> int:
    """Run the registered experiments; write report.md, report.html and claims.json.

    Exit code 0 even when claims fail (the report says so); 1 if an experiment raised an error.
    """
    from ..experiments import run_one, select
    from ..report import summary, write_report

    if quick and full:
        raise InputError("--quick and --full are exclusive")
    scale = "quick" if quick else "full" if full else "default"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out} is not a writable folder ({exc.strerror})") from None
    chosen = select(only)
    console = Console(stderr=True)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("experiments", total=len(chosen))
        for exp in chosen:
            progress.update(task, description=f"running {exp.name}")
            result = run_one(exp, scale, out)
            results.append(result)
            status = "error" if result.error else f"{sum(c.passed for c in result.context.claims)}/{len(result.context.claims)} claims"
            progress.console.print(f"  {exp.name}: {status} ({result.seconds:.1f} s)")
            progress.advance(task)
    paths = write_report(results, out, scale)
    passed, total, errors = summary(results)
    console.print(f"[bold]{passed} of {total} claims pass[/bold]; {errors} experiment error(s). Report: {paths['html']}")
    for r in results:
        if r.error:
            print(f"experiment {r.experiment.name} raised: {r.error}", file=sys.stderr)
    return 1 if errors else 0


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
