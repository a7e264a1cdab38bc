"""Where a sweep's runs train: the local backend's worker processes, in this process, or Ray.

Nothing here changes a run's result or its id. Torch-free, so `cce-bench sweep --help` lists
the backends without loading the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from cce_bench.errors import ConfigError

BACKENDS = ("local", "ray")


@dataclass
class Execution:
    """Where the runs train; none of this changes a run's result or its id."""

    backend: str = "local"  # local | ray
    # local: worker processes in all; None = workers_per_gpu per visible GPU, or none on a
    # CPU-only machine; 0 = none: train in this process (one torch already uses every core;
    # CPU workers pay off for many tiny runs, and isolate crashes).
    workers: int | None = None
    workers_per_gpu: int = 1
    # Runs a worker trains together in lockstep (same dataset and batch size); results are
    # those of training each alone. On a GPU this is what fills it with small runs.
    group_size: int = 1
    # Runs of a group that share a method and shapes train as one stacked model, one step for
    # all of them (stacking.py); False: each run its own step (what stacking is measured
    # against). Results are those of training each alone either way.
    stack: bool = True
    address: str | None = None  # ray: the cluster; None starts a local Ray instance
    gpus_per_run: float | None = None  # ray: GPUs per task (fractions share); None: 1 if any
    cpus_per_run: float = 1.0  # ray: CPUs per task
    # local: train each run data-parallel over this many processes (one per visible GPU, or
    # gloo CPU processes with --device cpu); 0: each run on one device.
    ddp: int = 0
    # Torch threads per process on the CPU; None: one in the driver, the cores shared out
    # among workers (an OMP_NUM_THREADS the user set wins over that default).
    threads: int | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{self.backend}'; choose from: {', '.join(BACKENDS)}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, not {self.workers}")
        if self.group_size < 1:
            raise ConfigError(f"--group-size must be at least 1, not {self.group_size}")
        if self.workers_per_gpu < 1:
            raise ConfigError(f"--workers-per-gpu must be at least 1, not {self.workers_per_gpu}")
        if self.backend == "ray" and self.workers is not None:
            raise ConfigError("--workers is for --backend local; Ray runs as many tasks at once "
                              "as the cluster's CPUs and GPUs allow (see --gpus-per-run)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, not {self.threads}")
        if self.ddp < 0 or self.ddp == 1:
            raise ConfigError(f"--ddp needs 2 or more processes, not {self.ddp} (0: off)")
        if self.ddp and self.backend != "local":
            raise ConfigError("--ddp is for --backend local")
        if self.backend != "ray":
            for name in ("address", "gpus_per_run"):
                if getattr(self, name) is not None:
                    flag = "--" + name.replace("_", "-")
                    raise ConfigError(f"{flag} is for --backend ray (the backend is {self.backend})")

    def make_backend(self, device: str):
        if self.backend == "ray":
            from .ray_backend import RayBackend
            return RayBackend(self.address, self.gpus_per_run, self.cpus_per_run, device)
        from .local import InlineBackend, LocalPool, plan_slots
        if self.ddp:
            return InlineBackend(device, self.ddp)  # the run's processes are spawned per run
        slots = plan_slots(device, self.workers, self.workers_per_gpu)
        return LocalPool(slots, self.threads) if slots else InlineBackend(device,
                                                                            threads=self.threads)

    def parallel_runs(self, device: str) -> int | None:
        """How many runs train at once (None where only the cluster knows)."""
        if self.backend == "ray":
            return None
        from .local import plan_slots
        return max(1, len(plan_slots(device, self.workers, self.workers_per_gpu)))
