"""Rich progress for a sweep: runs done of total, the current run and epoch, val AUC, ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from cce_bench.config import RunConfig
from cce_bench.engine import EpochRecord


def describe(run: RunConfig) -> str:
    return f"{run.method} ppd={run.ppd:g} c={run.n_chunks} seed={run.seed}"


class RichObserver:
    """A SweepObserver that draws one progress bar; use as a context manager."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self) -> "RichObserver":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def sweep_started(self, total: int, skipped: int) -> None:
        self.task = self.progress.add_task("runs", total=total, completed=skipped,
                                           status=f"{skipped} already done")

    def run_started(self, run: RunConfig) -> None:
        self.progress.update(self.task, status=f"{describe(run)} starting")

    def epoch_done(self, run: RunConfig, record: EpochRecord) -> None:
        self.progress.update(self.task, status=(f"{describe(run)} epoch {record.epoch}/{run.epochs} "
                                                f"val AUC {record.val_auc:.4f}"))

    def run_finished(self, run: RunConfig, status: str) -> None:
        self.progress.update(self.task, advance=1, status=f"{describe(run)} {status}")
