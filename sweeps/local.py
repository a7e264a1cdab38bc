"""The local backend: worker processes on this machine, each pinned to one GPU or to the CPU.

Every visible GPU gets `workers_per_gpu` processes (CUDA_VISIBLE_DEVICES set per worker, so a
worker sees one device, `cuda`); without GPUs, `workers` CPU processes share the cores. Workers
start with the spawn method: forking a process that has touched torch (and CUDA or OpenMP
threads) is unsafe. Each worker talks to the driver over its own pipe; the driver waits on the
pipes and on the processes' sentinels together, so a worker that dies (SIGKILL, segfault, the
OOM killer) is noticed at once, its task is reported Lost and a fresh worker takes its place.
Workers never write results: they send rows back and the driver appends them.

With no worker (`workers=0`, or the default on a machine without GPUs) the runs train in the
driver process: InlineBackend.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Callable

import torch

from cce_bench.errors import CceBenchError, ConfigError

from .work import (Event, Finished, Lost, Task, crash_at_start_if_asked, crash_if_asked, execute,
                   set_threads)

_SHUTDOWN_S = 5.0  # how long a worker may take to exit before it is killed
_START_TRIES = 3  # workers killed while starting, in a row, before the sweep gives up
_READY = "ready"  # a worker's first message


class WorkerError(CceBenchError, RuntimeError):
    """Worker processes cannot start on this machine."""


@dataclass
class Slot:
    """Where one worker runs: its name in progress, its device, its environment."""

    name: str
    device: str  # as the worker sees it: "cuda" (its one visible GPU) or "cpu"
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()][:count]
    return [str(i) for i in range(count)]


def plan_slots(device: str, workers: int | None, workers_per_gpu: int) -> list[Slot]:
    """The worker slots for a device setting ("auto", "cpu", "cuda", "cuda:N"); none means
    training in the driver process (workers=0, or a machine without GPUs and workers=None)."""
    gpus = [] if device == "cpu" else visible_gpus()
    if device.startswith("cuda"):
        if not gpus:
            raise ConfigError(f"device {device}: no CUDA device is visible; use --device cpu")
        if ":" in device:
            index = int(device.split(":")[1])
            if index >= len(gpus):
                raise ConfigError(f"device {device}: only {len(gpus)} GPUs are visible "
                                  f"(cuda:0..cuda:{len(gpus) - 1})")
            gpus = [gpus[index]]
    if not gpus:  # an empty list: train in the driver process
        return [Slot(f"cpu{i}", "cpu") for i in range(workers or 0)]
    count = len(gpus) * workers_per_gpu if workers is None else workers
    if count == 0:
        return []
    return [Slot(f"gpu{gpus[i % len(gpus)]}/{i // len(gpus)}", "cuda",
                 {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}) for i in range(count)]


class InlineBackend:
    """Train in the driver process, one task after another."""

    def __init__(self, device: str, ddp: int = 0, threads: int | None = None):
        self.device, self.ddp, self.threads = device, ddp, threads
        self.workers = ["main"] if not ddp else [f"ddp x{ddp}"]
        self._datasets: dict = {}

    def execute(self, tasks: list[Task], handle: Callable[[Event], None]) -> None:
        saved = torch.get_num_threads()
        set_threads(0, self.threads)
        try:
            for task in tasks:
                handle(execute(task, self.workers[0], self.device, handle, self._datasets,
                               self.ddp))
        finally:
            torch.set_num_threads(saved)  # the driver's own work (plots, ...) as before


class LocalPool:
    """Worker processes, one per slot; replaced when they die."""

    def __init__(self, slots: list[Slot], threads: int | None = None):
        if not slots:
            raise ConfigError("no workers: use --workers 1 or more (0 trains in this process)")
        self.slots = slots
        self.workers = [s.name for s in slots]
        self._context = mp.get_context("spawn")
        self._failed_starts = 0  # workers in a row that died before they were ready
        self.threads = threads

    def execute(self, tasks: list[Task], handle: Callable[[Event], None]) -> None:
        pending = deque(tasks)
        live: dict[str, _Worker] = {}
        try:
            while pending or any(w.task is not None for w in live.values()):
                for slot in self.slots:
                    worker = live.get(slot.name)
                    idle_and_dead = (worker is not None and worker.task is None
                                     and not worker.process.is_alive())
                    if pending and (worker is None or idle_and_dead):
                        if worker is not None:  # it held no task: nothing was lost
                            worker.stop()
                        worker = live[slot.name] = self._start(slot)
                    if pending and worker.task is None:
                        worker.give(pending.popleft())
                busy = [w for w in live.values() if w.task is not None]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    if worker.conn in ready or worker.process.sentinel in ready:
                        if not self._serve(worker, handle):
                            del live[worker.slot.name]
        finally:
            for worker in live.values():
                worker.stop()

    def _start(self, slot: Slot) -> "_Worker":
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, name=f"cce-bench-{slot.name}", daemon=True,
            args=(child, slot.name, slot.device, len(self.slots), os.getpid(), self.threads))
        with _environment(slot.env):  # a spawned child copies os.environ as it starts
            process.start()
        child.close()
        return _Worker(slot, process, parent)

    def _serve(self, worker: "_Worker", handle: Callable[[Event], None]) -> bool:
        """Pass on what the worker sent; False if it died (its task is then Lost)."""
        closed = False
        try:
            while worker.conn.poll():
                event = worker.conn.recv()
                if event == _READY:
                    worker.ready = True
                    continue
                if isinstance(event, Finished):
                    worker.task = None
                handle(event)
        except (EOFError, OSError):
            closed = True  # the worker is exiting; its exit code says why below
        if not closed and worker.process.is_alive():
            return True
        worker.process.join(_SHUTDOWN_S)  # the pipe can close just before the process ends
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        if not worker.ready:
            self._failed_starts += 1
            code = worker.process.exitcode
            if code is not None and code >= 0:
                # It exited on its own before it was ready: no worker can start here (its
                # error is on stderr), which in a script is most often the spawn method.
                raise WorkerError(f"a worker process could not start: it "
                                  f"{how_it_ended(worker.process)}; see the error above. In a "
                                  "script, start the sweep under `if __name__ == \"__main__\":` "
                                  "(workers start with the spawn method), or use --workers 0")
            if self._failed_starts >= _START_TRIES:
                raise WorkerError(f"worker processes keep dying as they start ({_START_TRIES} in "
                                  f"a row; the last {how_it_ended(worker.process)}); check the "
                                  "machine's memory, or use --workers 0")
            # Killed from outside while starting: like any lost worker, its run becomes a
            # failed row and a fresh worker takes the slot.
        else:
            self._failed_starts = 0
        if worker.task is not None:
            handle(Lost(worker.slot.name, worker.task.id, death_reason(worker.process)))
        worker.conn.close()
        return False


@dataclass
class _Worker:
    slot: Slot
    process: mp.process.BaseProcess
    conn: Connection
    task: Task | None = None
    ready: bool = False  # it has started and imported everything

    def give(self, task: Task) -> None:
        self.task = task
        self.conn.send(task)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(_SHUTDOWN_S if self.task is None else 0)
        if self.process.is_alive():
            self.process.kill()  # mid-run: its run is not written, so it runs again next time
            self.process.join()
        self.conn.close()


def death_reason(process: mp.process.BaseProcess) -> str:
    return f"worker {process.pid} {how_it_ended(process)} during this run"


def how_it_ended(process: mp.process.BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        why = {"SIGKILL": " (killed; by the kernel's out-of-memory killer if no one else)",
               "SIGSEGV": " (segmentation fault)"}.get(name, "")
        return f"died from {name}{why}"
    return f"exited with code {code}"


def _worker_main(conn: Connection, name: str, device: str, workers: int, parent: int,
                 threads: int | None = None) -> None:
    # Ctrl-C reaches the whole process group: the driver stops the workers, they need not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    set_threads(workers, threads)
    crash_at_start_if_asked()
    datasets: dict = {}
    try:
        conn.send(_READY)
        while (task := conn.recv()) is not None:
            crash_if_asked(task)
            conn.send(execute(task, name, device, conn.send, datasets))
    except (EOFError, BrokenPipeError):
        pass  # the driver is gone; so are we


def _exit_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this worker when the driver dies, so a killed sweep leaves no
    orphans training on (prctl PR_SET_PDEATHSIG). Elsewhere a worker exits at its next send."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(0)


@contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
