"""The Ray backend: each task a Ray task, scheduled on a Ray cluster by its GPU and CPU needs.

`address` names an existing cluster ("auto", "ray://head:10001", "head:6379"); without one a
local Ray instance starts (and stops at the end). `gpus_per_run` may be a fraction: 0.25 lets
four small runs share a GPU (Ray sets CUDA_VISIBLE_DEVICES for each task). Tasks send their
progress through a Ray queue and return their rows; the driver alone writes the results file.
A task whose worker dies is not retried (max_retries=0): the driver records it as `failed`, and
Ray starts new workers by itself. Every node needs cce-bench installed and its data cache
(CCE_BENCH_DATA) filled or reachable: tasks load datasets from their node's cache.

Ray is an optional extra: pip install "cce-bench[ray]".
"""

from __future__ import annotations

import os
from typing import Callable

from cce_bench.errors import ConfigError

from .work import Event, Finished, Lost, Task, crash_if_asked, execute, one_line

_POLL_S = 0.2
_datasets: dict = {}  # per Ray worker process: reused by the tasks it runs next


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install \"cce-bench[ray]\"") from None
    return ray


class RayBackend:
    def __init__(self, address: str | None, gpus_per_run: float | None, cpus_per_run: float,
                 device: str):
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run must be >= 0, not {gpus_per_run}")
        if cpus_per_run <= 0:
            raise ConfigError(f"--cpus-per-run must be positive, not {cpus_per_run}")
        if device == "cpu" and gpus_per_run:
            raise ConfigError("--device cpu with --gpus-per-run > 0; drop one of them")
        self.address, self.gpus_per_run, self.cpus_per_run = address, gpus_per_run, cpus_per_run
        self.device = device
        self.workers: list[str] = []  # Ray workers come and go; progress learns them from events

    def execute(self, tasks: list[Task], handle: Callable[[Event], None]) -> None:
        ray = import_ray()
        from ray.util.queue import Queue

        started_here = not ray.is_initialized()
        if started_here and self.address:
            ray.init(address=self.address)
        elif started_here:  # a local instance for this sweep alone
            ray.init(include_dashboard=False)
        try:
            gpus = self._gpus(ray)
            device = "cuda" if gpus > 0 else "cpu"
            queue = Queue()
            remote = ray.remote(_ray_task).options(num_gpus=gpus, num_cpus=self.cpus_per_run,
                                                   max_retries=0)
            threads = max(1, int(self.cpus_per_run))
            refs = {remote.remote(task, device, threads, queue): task for task in tasks}
            try:
                while refs:
                    done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=_POLL_S)
                    _drain(queue, handle)  # a task's events are queued before it returns
                    for ref in done:
                        task = refs.pop(ref)
                        try:
                            handle(ray.get(ref))
                        except ray.exceptions.RayError as err:
                            handle(Lost("ray", task.id, f"Ray task failed: {type(err).__name__}: "
                                                        f"{one_line(err)[:300]}"))
            finally:
                for ref in refs:
                    ray.cancel(ref, force=True)
        finally:
            if started_here:
                ray.shutdown()

    def _gpus(self, ray) -> float:
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        if self.device == "cpu":
            return 0
        # One GPU per run where the cluster has GPUs, else CPU runs.
        return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0


def _drain(queue, handle: Callable[[Event], None]) -> None:
    size = queue.qsize()
    if size:
        for event in queue.get_nowait_batch(size):
            handle(event)


def _ray_task(task: Task, device: str, threads: int, queue) -> Finished:
    """Runs on a Ray worker."""
    import ray
    import torch

    crash_if_asked(task)
    if "OMP_NUM_THREADS" not in os.environ:  # Ray sets it from num_cpus
        torch.set_num_threads(threads)
    worker = f"{ray.util.get_node_ip_address()}:{os.getpid()}"
    return execute(task, worker, device, queue.put, _datasets)
