"""A rich progress bar for sweeps: chunks done, trajectory-steps per second, ETA (on stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- traj-steps/s" if not speed else f"{speed:.3g} traj-steps/s")


class SweepProgress:
    """Counts nominal trajectory-steps (points x steps; settled trajectories stop early, so the real
    work is at most this)."""

    def __init__(self, n_chunks: int, steps: int, enabled: bool, description: str = "sweep"):
        self.steps = steps
        self.enabled = enabled
        self._chunks, self._n_chunks = 0, n_chunks
        self._bar = None
        if enabled:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[chunks]} chunks"), _RateColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
            self._description = description

    def __enter__(self) -> "SweepProgress":
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(self._description, total=None, chunks=f"0/{self._n_chunks}")
        return self

    def set_total(self, points: int, done: list[int] = ()) -> None:
        """``points`` in all, of which the chunks ``done`` (their sizes) were computed before (a
        resumed store): they count as done, but not in the rate (the task is reset with them)."""
        self._chunks = len(done)
        if self._bar is not None:
            self._bar.reset(self._task, total=points * self.steps, completed=sum(done) * self.steps,
                            chunks=f"{self._chunks}/{self._n_chunks}")

    def advance(self, points: int) -> None:
        self._chunks += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=points * self.steps, chunks=f"{self._chunks}/{self._n_chunks}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
