"""The unit of work a backend hands a worker, and what a worker sends back.

A task is a *group* of runs that one worker trains with one call, `train_group`, which returns
one list of rows per run. `group_runs` puts up to `group_size` runs of one dataset and batch
size together, and `train_group` trains them in lockstep with `engine.train_many` (on a GPU,
one CUDA graph advances every run of the group per launch), runs of one method and shapes as one
stacked model unless the task says otherwise (stacking.py). Backends and the driver see only
tasks.

Workers report through events (Started, Epoch, Finished); a backend adds Lost when a worker dies
with a task in hand. Everything here is picklable, for worker processes and Ray.
"""

from __future__ import annotations

import gc
import os
import signal
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from cce_bench.config import RunConfig
from cce_bench.data import CriteoData, InteractionData
from cce_bench.datasets import load_training_data
from cce_bench.distributed import train_distributed
from cce_bench.engine import (EpochRecord, RunResult, build_model, lockstep_key, train,
                              train_many)
from cce_bench.errors import BudgetTooSmall
from cce_bench.results import now_timestamp, run_rows
from cce_bench.stacking import plan_stacks

# Test-only: comma-separated run ids whose worker process kills itself (SIGKILL) when it starts
# them, so the tests can check that a dead worker becomes a `failed` row. Only worker processes
# (local pool, Ray) look at it; the driver never does.
CRASH_HOOK_ENV = "CCE_BENCH_TEST_CRASH_RUNS"


class RunObserver(Protocol):
    """What train_group reports, run by run."""

    def run_started(self, run: RunConfig) -> None: ...
    def epoch_done(self, run: RunConfig, record: EpochRecord) -> None: ...
    def clustering(self, run: RunConfig, epoch: int, step: int) -> None: ...


@dataclass
class Task:
    id: int
    sweep: str  # the sweep name written into the rows
    runs: list[RunConfig]  # one group: same dataset
    stack: bool = True  # train runs of one method and shapes as one stacked model

    @property
    def dataset(self) -> str:
        return self.runs[0].dataset


@dataclass
class Started:
    worker: str
    task: int
    run_id: str


@dataclass
class Epoch:
    worker: str
    task: int
    run_id: str
    record: EpochRecord


@dataclass
class Clustering:
    """A run's cluster() starts (long on a CPU with a large vocabulary)."""
    worker: str
    task: int
    run_id: str
    epoch: int  # the epoch its step falls in
    step: int


@dataclass
class Finished:
    worker: str
    task: int
    rows: list[list[dict]]  # one list per run of the task, in order


@dataclass
class Lost:
    worker: str
    task: int
    reason: str  # why the worker died, for the rows' error column


Event = Started | Epoch | Clustering | Finished | Lost


def group_runs(runs: list[RunConfig], group_size: int = 1,
               stack: bool = False) -> list[list[RunConfig]]:
    """Split runs into groups that one worker trains together with one call.

    A group shares what the engine's lockstep needs (dataset, model, batch size, precision),
    in the runs' order, at most group_size runs. stack: the runs of one stack
    (stacking.plan_stacks) are gathered into one group, whole where they fit, so that a group
    holds few large stacks; the order is then that of each stack's first run."""
    if stack:
        return _pack([[runs[i] for i in g] for g in plan_stacks(runs, group_size)], group_size)
    groups: list[list[RunConfig]] = []
    for run in runs:
        last = groups[-1] if groups else None
        if last and len(last) < group_size and lockstep_key(last[0]) == lockstep_key(run):
            last.append(run)
        else:
            groups.append([run])
    return groups


def _pack(stacks: list[list[RunConfig]], group_size: int) -> list[list[RunConfig]]:
    """Whole stacks into groups of at most group_size runs (a stack is never larger)."""
    groups: list[list[RunConfig]] = []
    for runs in stacks:
        last = groups[-1] if groups else None
        if (last and len(last) + len(runs) <= group_size
                and lockstep_key(last[0]) == lockstep_key(runs[0])):
            last.extend(runs)
        else:
            groups.append(list(runs))
    return groups


def train_group(runs: list[RunConfig], data: InteractionData | CriteoData, sweep: str, device: str,
                observer: RunObserver, ddp: int = 0, stack: bool = True) -> list[list[dict]]:
    """Train a group of runs on one device in lockstep; one list of rows per run, in order.

    Runs whose budget is too small are recorded as such before training. If the rest do not
    fit in the device's memory together, each half of them trains together instead, and so on
    down to one run (a 46-run Criteo grid that fits an H200 may not fit a smaller GPU); after
    any other error they are trained one by one, so each gets its own status."""
    if len(runs) == 1 or ddp:
        rows = []
        for run in runs:
            observer.run_started(run)
            rows.append(train_one(run, data, sweep, device, observer, ddp))
        return rows
    started = now_timestamp()
    rows: dict[int, list[dict]] = {}
    for i, run in enumerate(runs):  # too-small budgets are known before training
        observer.run_started(run)
        try:
            build_model(run, data)
        except BudgetTooSmall as err:
            rows[i] = run_rows(run, sweep, None, started, "too_small", err.in_both_units(run.dim))
    trainable = [i for i in range(len(runs)) if i not in rows]
    together = _train_together([runs[i] for i in trainable], data, sweep, device, observer,
                               stack, started)
    rows |= dict(zip(trainable, together))
    return [rows[i] for i in range(len(runs))]


def _train_together(runs: list[RunConfig], data: InteractionData | CriteoData, sweep: str,
                    device: str, observer: RunObserver, stack: bool,
                    started: str) -> list[list[dict]]:
    """train_group's lockstep part: the runs together, else in halves (out of memory), else
    one by one (any other error)."""
    if len(runs) <= 1:
        return [train_one(run, data, sweep, device, observer) for run in runs]
    try:
        results = train_many(runs, data, device, on_epoch=observer.epoch_done, stack=stack,
                             on_cluster=observer.clustering)
        return [run_rows(run, sweep, result, started) for run, result in zip(runs, results)]
    except torch.cuda.OutOfMemoryError:
        pass  # retried below: inside this block the traceback still holds the group's memory
    except Exception:  # noqa: BLE001 - one bad run must not fail the others
        return [train_one(run, data, sweep, device, observer) for run in runs]
    gc.collect()  # the failed group's stacks and graph hold reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = (len(runs) + 1) // 2
    return (_train_together(runs[:half], data, sweep, device, observer, stack, started)
            + _train_together(runs[half:], data, sweep, device, observer, stack, started))


def train_one(run: RunConfig, data: InteractionData | CriteoData, sweep: str, device: str,
              observer: RunObserver, ddp: int = 0) -> list[dict]:
    """Train a run and return its rows; a failure becomes a row with its status and error.
    ddp: train it data-parallel over that many processes (distributed.py)."""
    started = now_timestamp()
    try:
        if ddp:
            build_model(run, data)  # a budget too small is known before any process starts
            kind = "cpu" if device == "cpu" else "cuda"
            result: RunResult = train_distributed(run, run.dataset, ddp, kind,
                                                  on_epoch=observer.epoch_done)
        else:
            result = train(run, data, device, on_epoch=observer.epoch_done,
                           on_cluster=observer.clustering)
    except BudgetTooSmall as err:
        return run_rows(run, sweep, None, started, "too_small", err.in_both_units(run.dim))
    except torch.cuda.OutOfMemoryError as err:
        return run_rows(run, sweep, None, started, "oom", one_line(err))
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            return run_rows(run, sweep, None, started, "failed",
                            f"{type(err).__name__}: {one_line(err)}")
        # The host allocator's own text is long and names no setting: say which one.
        return run_rows(run, sweep, None, started, "oom",
                        f"budget {run.budget:,} of {run.method} does not fit in host memory; "
                        f"use a smaller budget ({one_line(err)[:160]})")
    except Exception as err:  # noqa: BLE001 - any run failure is recorded, the sweep goes on
        return run_rows(run, sweep, None, started, "failed",
                        f"{type(err).__name__}: {one_line(err)}")
    return run_rows(run, sweep, result, started)


def execute(task: Task, worker: str, device: str, emit: Callable[[Event], None],
            datasets: dict[str, InteractionData | CriteoData], ddp: int = 0) -> Finished:
    """Run one task where a worker is: load its data (kept in `datasets` for the next task),
    train the group, report through emit. A data problem becomes a `failed` row per run."""
    observer = _Emitter(worker, task.id, emit)
    try:
        if task.dataset not in datasets:
            datasets.clear()  # one dataset in memory per worker
            datasets[task.dataset] = load_training_data(task.dataset, task.runs[0].model)
        data = datasets[task.dataset]
    except Exception as err:  # noqa: BLE001 - the driver records it; the worker goes on
        started = now_timestamp()
        reason = f"cannot load dataset {task.dataset}: {type(err).__name__}: {one_line(err)}"
        return Finished(worker, task.id,
                        [run_rows(run, task.sweep, None, started, "failed", reason)
                         for run in task.runs])
    return Finished(worker, task.id, train_group(task.runs, data, task.sweep, device, observer,
                                                 ddp, task.stack))


# Test-only: a file path; the first worker to start while it does not exist creates it and
# kills itself (SIGKILL) before it is ready, as a worker killed during its start-up.
CRASH_AT_START_ENV = "CCE_BENCH_TEST_CRASH_AT_START"


def crash_at_start_if_asked() -> None:
    marker = os.environ.get(CRASH_AT_START_ENV)
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def crash_if_asked(task: Task) -> None:
    """The test-only crash hook (see CRASH_HOOK_ENV); called by worker processes only."""
    doomed = set(filter(None, os.environ.get(CRASH_HOOK_ENV, "").split(",")))
    if doomed & {run.run_id for run in task.runs}:
        os.kill(os.getpid(), signal.SIGKILL)


def set_threads(workers: int, threads: int | None = None) -> None:
    """Torch threads for one of `workers` processes: `threads` when given (--threads), else an
    OMP_NUM_THREADS the user set (torch reads it itself), else the cores shared out so that
    the workers together use each core once. Training in the driver process (workers=0) gets
    one thread: GMF steps are so small that waking threads costs more than they compute (on
    2 cores the default sweep ran 6.5x faster with one thread than with two)."""
    if threads:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(workers) if workers else 1)


def cpu_threads(workers: int) -> int:
    """Torch threads per worker so that the workers together use each core once."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


class _Emitter:
    """A RunObserver that turns a worker's progress into events."""

    def __init__(self, worker: str, task: int, emit: Callable[[Event], None]):
        self.worker, self.task, self.emit = worker, task, emit

    def run_started(self, run: RunConfig) -> None:
        self.emit(Started(self.worker, self.task, run.run_id))

    def epoch_done(self, run: RunConfig, record: EpochRecord) -> None:
        self.emit(Epoch(self.worker, self.task, run.run_id, record))

    def clustering(self, run: RunConfig, epoch: int, step: int) -> None:
        self.emit(Clustering(self.worker, self.task, run.run_id, epoch, step))
