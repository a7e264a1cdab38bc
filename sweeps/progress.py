"""Rich progress for a sweep: runs done / running / failed / left, ETA, and one line per worker
with its current run, epoch and validation AUC."""

from __future__ import annotations

import threading
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cce_bench.config import RunConfig
from cce_bench.engine import EpochRecord

PROBLEM_STATUSES = ("failed", "oom", "diverged")


def describe(run: RunConfig) -> str:
    # DLRM's budget is a cap on one table's parameters (the paper's Kaggle x axis), not ppd.
    budget = f"cap={run.budget:,}" if run.model == "dlrm" else f"ppd={run.ppd:g}"
    return f"{run.dataset} {run.method} {budget} c={run.n_chunks} seed={run.seed}"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class RichObserver:
    """A SweepObserver that draws live progress; use as a context manager."""

    LONG_RUN_S = 60  # a log gets per-evaluation and clustering lines of runs longer than this

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        # Redirected (nohup, SLURM, CI): no live display, one plain line per finished run and
        # per evaluation of a long run, so a log shows progress as it happens.
        self.plain = not self.console.is_terminal
        self._lock = threading.Lock()  # Live redraws from its own thread
        self.total = self.skipped = self.finished = self.problems = 0
        self.workers: dict[str, dict] = {}  # name -> {"run", "epoch", "auc", "since"}
        self.started = time.monotonic()
        self._live = Live(console=self.console, refresh_per_second=4, transient=False,
                          get_renderable=self._render)

    def __enter__(self) -> "RichObserver":
        return self  # the display starts with the sweep, after any dataset download's own

    def __exit__(self, *exc) -> None:
        if self._live.is_started:
            self._live.stop()

    def sweep_started(self, total: int, skipped: int, workers: list[str]) -> None:
        with self._lock:
            self.total, self.skipped = total, skipped
            self.workers = {name: {} for name in workers}
            self.started = time.monotonic()
        if self.plain:
            self._say(f"sweep: {total} runs, {skipped} already done, {total - skipped} to run "
                      f"on {', '.join(workers)}")
        else:
            self._live.start()

    def _say(self, text: str) -> None:
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", highlight=False,
                           soft_wrap=True)

    def run_started(self, run: RunConfig, worker: str) -> None:
        with self._lock:
            self.workers[worker] = {"run": run, "epoch": 0, "auc": None,
                                    "since": time.monotonic()}

    def epoch_done(self, run: RunConfig, record: EpochRecord, worker: str) -> None:
        with self._lock:
            state = self.workers.setdefault(worker, {"run": run, "since": time.monotonic()})
            state.update(epoch=record.epoch, auc=record.val_auc, clustering=False)
            long_run = time.monotonic() - state["since"] > self.LONG_RUN_S
        if self.plain and long_run:
            self._say(f"{describe(run)}: epoch {record.epoch}/{run.epochs}, step {record.step:,}, "
                      f"val BCE {record.val_bce:.4f}, AUC {record.val_auc:.4f}")

    def clustering(self, run: RunConfig, epoch: int, step: int, worker: str) -> None:
        """cluster() starts: the live table says so until the next evaluation; a log gets a
        line for a run longer than a minute (k-means over 1M ids takes minutes on a CPU)."""
        with self._lock:
            state = self.workers.setdefault(worker, {"run": run, "since": time.monotonic()})
            state["clustering"] = True
            long_run = time.monotonic() - state["since"] > self.LONG_RUN_S
        if self.plain and long_run:
            self._say(f"{describe(run)}: clustering (k-means) in epoch {epoch}/{run.epochs}, "
                      f"step {step:,}")

    def run_finished(self, run: RunConfig, status: str, worker: str) -> None:
        with self._lock:
            self.finished += 1
            self.problems += status in PROBLEM_STATUSES
            for name, state in self.workers.items():  # a lost run's event names no worker
                if state.get("run") == run:
                    self.workers[name] = {}
            done, total = self.skipped + self.finished, self.total
            eta = self.eta_seconds()
        if self.plain:
            self._say(f"run {done}/{total} {status}: {describe(run)}"
                      + (f"; ETA {format_seconds(eta)}" if eta is not None else ""))

    @property
    def running(self) -> int:
        return sum(1 for state in self.workers.values() if state.get("run") is not None)

    def eta_seconds(self) -> float | None:
        """Seconds left at this session's pace (runs finished per second, all workers)."""
        if not self.finished:
            return None
        left = self.total - self.skipped - self.finished
        return left * (time.monotonic() - self.started) / self.finished

    def _render(self):
        with self._lock:
            done = self.skipped + self.finished
            running = self.running
            left = self.total - done - running
            elapsed = time.monotonic() - self.started
            eta = self.eta_seconds()
            line = Text.assemble(
                ("runs ", "bold"), f"{done}/{self.total} done · {running} running · ",
                (f"{self.problems} failed", "red" if self.problems else ""),
                f" · {left} left · {format_seconds(elapsed)} elapsed · ETA ",
                format_seconds(eta) if eta is not None else "after the first run")
            bar = ProgressBar(total=max(self.total, 1), completed=done, width=40)
            table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            for column in ("worker", "run", "epoch", "val AUC", "on run"):
                table.add_column(column, no_wrap=True,
                                 justify="left" if column in ("worker", "run") else "right")
            now = time.monotonic()
            for name, state in sorted(self.workers.items()):
                run = state.get("run")
                if run is None:
                    table.add_row(name, Text("idle", "dim"), "", "", "")
                    continue
                auc = state.get("auc")
                epoch = f"{state.get('epoch', 0)}/{run.epochs}"
                if state.get("clustering"):
                    epoch = f"{epoch} k-means"
                table.add_row(name, describe(run), epoch,
                              f"{auc:.4f}" if auc is not None else "",
                              format_seconds(now - state["since"]))
            header = Table.grid(padding=(0, 1))
            header.add_row(bar, line)
            return Group(header, table) if self.workers else header
