"""Run the runs of a sweep that are not in its results file yet, one row batch per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from cce_bench.config import RunConfig
from cce_bench.data import InteractionData
from cce_bench.datasets import load_dataset
from cce_bench.engine import EpochRecord, RunResult, train
from cce_bench.errors import BudgetTooSmall
from cce_bench.results import ResultsLog, now_timestamp, run_rows

from .spec import SweepSpec


class SweepObserver(Protocol):
    def sweep_started(self, total: int, skipped: int) -> None: ...
    def run_started(self, run: RunConfig) -> None: ...
    def epoch_done(self, run: RunConfig, record: EpochRecord) -> None: ...
    def run_finished(self, run: RunConfig, status: str) -> None: ...


class SilentObserver:
    def sweep_started(self, total: int, skipped: int) -> None: pass
    def run_started(self, run: RunConfig) -> None: pass
    def epoch_done(self, run: RunConfig, record: EpochRecord) -> None: pass
    def run_finished(self, run: RunConfig, status: str) -> None: pass


@dataclass
class SweepSummary:
    path: str
    total: int
    skipped: int
    statuses: dict[str, int] = field(default_factory=dict)
    first_errors: dict[str, str] = field(default_factory=dict)  # status -> its first error text

    def record(self, status: str, error: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if error:
            self.first_errors.setdefault(status, error)


def run_sweep(spec: SweepSpec, observer: SweepObserver | None = None) -> SweepSummary:
    observer = observer or SilentObserver()
    log = ResultsLog(spec.results_path)
    log.ensure()
    runs = spec.expand()
    finished = log.completed_run_ids()
    todo = [run for run in runs if run.run_id not in finished]
    summary = SweepSummary(str(spec.results_path), len(runs), len(runs) - len(todo))
    observer.sweep_started(len(runs), summary.skipped)
    loaded: dict[str, InteractionData] = {}
    for run in todo:
        if run.dataset not in loaded:
            loaded[run.dataset] = load_dataset(run.dataset)
        observer.run_started(run)
        rows = train_one(run, loaded[run.dataset], spec.name, spec.device, observer)
        log.append(rows, run)
        status = rows[-1]["status"]
        summary.record(status, rows[-1].get("error", ""))
        observer.run_finished(run, status)
    return summary


def train_one(run: RunConfig, data: InteractionData, sweep: str, device: str,
              observer: SweepObserver) -> list[dict]:
    """Train a run and return its rows; a failure becomes a row with its status and error."""
    started = now_timestamp()
    try:
        result: RunResult = train(run, data, device, on_epoch=observer.epoch_done)
    except BudgetTooSmall as err:
        return run_rows(run, sweep, None, started, "too_small", str(err))
    except torch.cuda.OutOfMemoryError as err:
        return run_rows(run, sweep, None, started, "oom", _one_line(err))
    except Exception as err:  # noqa: BLE001 - any run failure is recorded, the sweep goes on
        return run_rows(run, sweep, None, started, "failed", f"{type(err).__name__}: {_one_line(err)}")
    return run_rows(run, sweep, result, started)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]
