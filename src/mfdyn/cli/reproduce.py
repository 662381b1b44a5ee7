"""``mfdyn reproduce``: run every registered experiment and write the report."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
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
    jobs: int = typer.Option(0, "--jobs", help="Experiments run in this many processes (0: one per core)."),
) -> int:
    """Run the registered experiments; write report.md, report.html and claims.json.

    Experiments run in parallel processes (their cost is dominated by XLA compilation, which is
    single-threaded); every experiment seeds its own random numbers, so the report does not depend on
    ``--jobs``. Exit code 0 even when claims fail (the report says so); 1 if an experiment raised an error.
    """
    from ..experiments import select
    from ..report import summary, write_report

    if quick and full:
        raise InputError("--quick and --full are exclusive")
    scale = "quick" if quick else "full" if full else "default"
    if jobs < 0:
        raise InputError(f"--jobs must be >= 0, got {jobs}")
    chosen = select(only)  # (bad options are refused before --out is created)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out} is not a writable folder ({exc.strerror})") from None
    jobs = min(jobs or os.cpu_count() or 1, len(chosen))
    console = Console(stderr=True)
    results = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(f"experiments ({jobs} process{'es' if jobs > 1 else ''})", total=len(chosen))
        for result in _run_all(chosen, scale, out, jobs):
            results[result.experiment.name] = result
            status = "error" if result.error else f"{sum(c.passed for c in result.context.claims)}/{len(result.context.claims)} claims"
            progress.console.print(f"  {result.experiment.name}: {status} ({result.seconds:.1f} s)")
            progress.advance(task)
    results = [results[exp.name] for exp in chosen]  # report in registry order, whatever finished first
    paths = write_report(results, out, scale)
    passed, total, errors = summary(results)
    console.print(f"[bold]{passed} of {total} claims pass[/bold]; {errors} experiment error(s). Report: {paths['html']}")
    for r in results:
        if r.error:
            print(f"experiment {r.experiment.name} raised: {r.error}", file=sys.stderr)
    return 1 if errors else 0


def _run_all(chosen, scale: str, out: Path, jobs: int):
    """Yield each experiment's result as it finishes (in-process when ``jobs == 1``)."""
    from ..experiments import run_one

    if jobs == 1:
        for exp in chosen:
            yield run_one(exp, scale, out)
        return
    # "spawn": a fresh interpreter per worker (forking a process that runs XLA threads is unsafe)
    from .._cache import enable_persistent_cache

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=enable_persistent_cache) as pool:
        futures = [pool.submit(run_one, exp, scale, out) for exp in chosen]
        for fut in as_completed(futures):
            yield fut.result()


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
