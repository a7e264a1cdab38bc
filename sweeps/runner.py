"""The driver: run every run of one or more sweeps that is not in its results file yet.

The driver expands the specs, skips runs whose id is already in the results CSV (so a stopped
sweep resumes), cuts the rest into tasks (groups of runs, see work.py), hands them to a backend
(local worker processes, in-process, or Ray) and appends each run's rows as they come back. It
is the only writer of the results file: one write per run, so a kill at any moment loses at
most the runs in flight, never a line. A worker that dies makes its runs `failed` rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

from cce_bench.config import RunConfig
from cce_bench.datasets import Reporter, require_training_data
from cce_bench.engine import EpochRecord
from cce_bench.errors import ConfigError
from cce_bench.results import ResultsLog, now_timestamp, run_rows

from .execution import Execution
from .spec import SweepSpec
from .work import (Clustering, Epoch, Event, Finished, Lost, Started, Task, group_runs,
                   train_group, train_one)

RETRIED_STATUSES = ("failed", "oom")  # what --retry-failed runs again (the rest is a result)


class SweepObserver(Protocol):
    def sweep_started(self, total: int, skipped: int, workers: list[str]) -> None: ...
    def run_started(self, run: RunConfig, worker: str) -> None: ...
    def epoch_done(self, run: RunConfig, record: EpochRecord, worker: str) -> None: ...
    def clustering(self, run: RunConfig, epoch: int, step: int, worker: str) -> None: ...
    def run_finished(self, run: RunConfig, status: str, worker: str) -> None: ...


class SilentObserver:
    def sweep_started(self, total: int, skipped: int, workers: list[str]) -> None: pass
    def run_started(self, run: RunConfig, worker: str) -> None: pass
    def epoch_done(self, run: RunConfig, record: EpochRecord, worker: str) -> None: pass
    def clustering(self, run: RunConfig, epoch: int, step: int, worker: str) -> None: pass
    def run_finished(self, run: RunConfig, status: str, worker: str) -> None: pass


@dataclass
class SweepPlan:
    """The runs of some sweeps, split into done and to do."""

    specs: list[SweepSpec]
    runs: list[tuple[SweepSpec, RunConfig]]  # every run of every spec, in order
    todo: list[tuple[SweepSpec, RunConfig]]

    @property
    def skipped(self) -> int:
        return len(self.runs) - len(self.todo)


def check_device(device: str) -> None:
    """A CUDA device asked for where none is visible: one line, before anything is written
    (a dry run included)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: no CUDA device is visible; use --device cpu or auto")


def plan_sweeps(specs: list[SweepSpec], retry_failed: bool = False) -> SweepPlan:
    """Expand the specs and leave out runs their results files already hold."""
    for spec in specs:
        check_device(spec.device)
    runs, todo = [], []
    names = [spec.results_path.resolve() for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError("two of the sweeps write the same results file; give each its own name")
    for spec in specs:
        log = ResultsLog(spec.results_path)
        held, expanded = log.held_rows(), spec.expand()  # each read once
        _check_one_precision(spec, log.precisions(held), {run.precision for run in expanded})
        finished = log.completed_run_ids(include_failed=not retry_failed, rows=held)
        for run in expanded:
            runs.append((spec, run))
            if run.run_id not in finished:
                todo.append((spec, run))
    return SweepPlan(list(specs), runs, todo)


def _check_one_precision(spec: SweepSpec, held: set[str], asked: set[str]) -> None:
    """Reports and figures group runs by method and budget, not by precision: a results file
    holds runs of one precision (held: those in it; asked: the sweep's), or a tf32 run would be
    averaged with an fp32 one."""
    if len(held | asked) > 1:
        raise ConfigError(f"{spec.results_path} holds {', '.join(sorted(held))} runs and this "
                          f"sweep trains {', '.join(sorted(asked))}; reports would average them "
                          "together: give it its own name (--name) or folder (--results)")


@dataclass
class SweepSummary:
    path: str  # the results file(s), comma-separated
    total: int
    skipped: int
    statuses: dict[str, int] = field(default_factory=dict)
    first_errors: dict[str, str] = field(default_factory=dict)  # status -> its first error text

    def record(self, status: str, error: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if error:
            self.first_errors.setdefault(status, error)


def run_sweep(spec: SweepSpec, observer: SweepObserver | None = None,
              execution: Execution | None = None, retry_failed: bool = False,
              download: bool = False, reporter: Reporter | None = None) -> SweepSummary:
    """Train every run of the spec that is not in its results file yet.

    retry_failed: run again the runs recorded as failed or oom. download: fetch a missing
    downloadable dataset first (else a missing one is an error that says the command);
    reporter shows that download."""
    return run_sweeps([spec], observer, execution, retry_failed, download, reporter)


def run_sweeps(specs: list[SweepSpec], observer: SweepObserver | None = None,
               execution: Execution | None = None, retry_failed: bool = False,
               download: bool = False, reporter: Reporter | None = None) -> SweepSummary:
    """Train the runs of several sweeps with one set of workers; each keeps its own file."""
    observer = observer or SilentObserver()
    execution = execution or Execution()
    devices = {spec.device for spec in specs}
    if len(devices) > 1:
        raise ConfigError(f"the sweeps ask for different devices ({', '.join(sorted(devices))}); "
                          "run them separately or set --device")
    # Every dataset the runs to do need, before anything is written: a missing one is one
    # line, and leaves no empty results file or runs/ folder behind.
    _prepare_datasets(plan_sweeps(specs, retry_failed).todo, download, reporter)
    logs = {spec.results_path: ResultsLog(spec.results_path) for spec in specs}
    for log in logs.values():
        log.ensure()
    with contextlib.ExitStack() as held:
        for log in logs.values():
            held.enter_context(log.exclusive())
        return _run_locked(specs, logs, observer, execution, devices.pop(), retry_failed,
                           download, reporter)


def _run_locked(specs: list[SweepSpec], logs: dict, observer: SweepObserver,
                execution: Execution, device: str, retry_failed: bool, download: bool,
                reporter: Reporter | None) -> SweepSummary:
    """run_sweeps once every results file is held: plan (what is done is read under the
    lock), then train."""
    plan = plan_sweeps(specs, retry_failed)
    summary = SweepSummary(", ".join(str(spec.results_path) for spec in specs),
                           len(plan.runs), plan.skipped)
    backend = execution.make_backend(device)
    tasks, by_id = [], {}
    for spec in specs:
        mine = [run for owner, run in plan.todo if owner is spec]
        for group in group_runs(mine, execution.group_size, stack=execution.stack):
            task = Task(len(tasks), spec.name, group, stack=execution.stack)
            tasks.append(task)
            by_id[task.id] = (task, logs[spec.results_path])
    observer.sweep_started(len(plan.runs), plan.skipped, list(backend.workers))
    if tasks:
        backend.execute(tasks, _Driver(by_id, observer, summary).handle)
    return summary


def _prepare_datasets(todo: list, download: bool, reporter: Reporter | None) -> None:
    """Build (or fetch) every dataset once, here, before the workers load them from the cache:
    a missing dataset is one clear error, not a failed row per run."""
    for name, model in dict.fromkeys((run.dataset, run.model) for _, run in todo):
        require_training_data(name, model, download=download, reporter=reporter)


def missing_datasets(plan: SweepPlan) -> list[str]:
    """Downloadable datasets the runs to do need that are not in the cache (for a dry run)."""
    from cce_bench.datasets import info, status
    from cce_bench.datasets.fetch import GENERATED

    names = dict.fromkeys(run.dataset for _, run in plan.todo)
    return [n for n in names if info(n).kind not in GENERATED and status(n) != "ready"]


class _Driver:
    """Turns the backend's events into progress and result rows."""

    def __init__(self, tasks: dict[int, tuple[Task, ResultsLog]], observer: SweepObserver,
                 summary: SweepSummary):
        self.tasks, self.observer, self.summary = tasks, observer, summary
        self.started: dict[str, str] = {}  # run id -> when it started (for a lost run's row)

    def handle(self, event: Event) -> None:
        task, log = self.tasks[event.task]
        if isinstance(event, Started):
            self.started[event.run_id] = now_timestamp()
            self.observer.run_started(self._run(task, event.run_id), event.worker)
        elif isinstance(event, Epoch):
            self.observer.epoch_done(self._run(task, event.run_id), event.record, event.worker)
        elif isinstance(event, Clustering):
            self.observer.clustering(self._run(task, event.run_id), event.epoch, event.step,
                                     event.worker)
        elif isinstance(event, Finished):
            for run, rows in zip(task.runs, event.rows, strict=True):
                self._record(run, rows, log, event.worker)
        elif isinstance(event, Lost):
            for run in task.runs:
                started = self.started.get(run.run_id, now_timestamp())
                rows = run_rows(run, task.sweep, None, started, "failed", event.reason)
                self._record(run, rows, log, event.worker)

    def _record(self, run: RunConfig, rows: list[dict], log: ResultsLog, worker: str) -> None:
        log.append(rows, run)
        status = rows[-1]["status"]
        self.summary.record(status, rows[-1].get("error", ""))
        self.observer.run_finished(run, status, worker)

    @staticmethod
    def _run(task: Task, run_id: str) -> RunConfig:
        return next(run for run in task.runs if run.run_id == run_id)


__all__ = ["Execution", "SilentObserver", "SweepObserver", "SweepPlan", "SweepSummary",
           "plan_sweeps", "run_sweep", "run_sweeps", "train_group", "train_one"]
