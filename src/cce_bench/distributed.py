"""One run data-parallel over several devices with torch.distributed (`cce-bench sweep --ddp`).

Every process holds the whole model (the compressed tables are small enough to replicate, which
is the point of compressing them) and the same permutation of the training rows; each global
batch of B rows is cut into `world` equal shards, one per process. A process's loss is its
shard's summed BCE over the global batch's row count, so the sum over processes is the global
batch's mean BCE and summed gradients are the one-process gradient:
- dense gradients are summed with one all-reduce over a flat buffer after the backward pass;
- tables updated inside their lookup (plain SGD, embeddings/sparse_update.py) all-gather the
  rows and gradient rows of every shard and apply them all, so every replica makes the same
  update without a dense gradient;
- after cluster() the tables are broadcast from process 0, so k-means run on several devices
  cannot leave the replicas apart; evaluation metrics are process 0's, so every process stops
  at the same point.
Process 0 returns the result; a sweep writes its rows once.
"""

from __future__ import annotations

import os
import queue as queue_module
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int

    def bounds(self, batch_size: int) -> tuple[int, int]:
        """This process's columns [lo, hi) of a global batch."""
        if batch_size % self.world:
            raise ConfigError(f"--ddp over {self.world} processes needs a batch size divisible "
                              f"by {self.world}, not {batch_size}")
        part = batch_size // self.world
        return self.rank * part, (self.rank + 1) * part


def shard() -> Shard | None:
    """This process's place in the process group, or None outside one (or in a group of 1)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return Shard(dist.get_rank(), dist.get_world_size())


def sum_gradients(model: nn.Module) -> None:
    """All-reduce (sum) every parameter's gradient in one flat buffer."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_gather_rows(rows: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's (rows, gradient rows), concatenated in rank order."""
    world = dist.get_world_size()
    all_rows = torch.empty(world * rows.numel(), dtype=rows.dtype, device=rows.device)
    all_grad = torch.empty(world * grad.shape[0], *grad.shape[1:], dtype=grad.dtype,
                           device=grad.device)
    dist.all_gather_into_tensor(all_rows, rows.contiguous())
    dist.all_gather_into_tensor(all_grad, grad.contiguous())
    return all_rows, all_grad


def broadcast_module(module: nn.Module) -> None:
    """Process 0's parameters and buffers, in place, on every process."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, 0)


def broadcast_values(values: list[float], device: torch.device) -> list[float]:
    """Process 0's numbers on every process (so every process takes the same decisions)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return tensor.tolist()


def sum_value(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over processes of a (device) tensor, in place."""
    dist.all_reduce(tensor)
    return tensor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_distributed(run, dataset: str, world: int, device_type: str = "cuda",
                      on_epoch=None):
    """Train `run` on `dataset` over `world` processes (one per GPU, or CPU processes with
    gloo); returns process 0's RunResult. Every process loads the dataset from the cache."""
    if world < 2:
        raise ConfigError(f"--ddp needs at least 2 processes, not {world}")
    if device_type == "cuda" and torch.cuda.device_count() < world:
        raise ConfigError(f"--ddp over {world} GPUs: only {torch.cuda.device_count()} visible")
    Shard(0, world).bounds(run.batch_size)  # a batch that does not split is a clear error
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=_process, args=(rank, world, port, device_type, run,
                                                         dataset, queue), daemon=True)
                 for rank in range(world)]
    for p in processes:
        p.start()
    result, error = None, None
    while result is None and error is None:
        try:
            kind, payload = queue.get(timeout=1.0)
        except queue_module.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:  # killed or crashed without a word: never wait for it forever
                error = f"process {processes.index(dead[0])} exited with code {dead[0].exitcode}"
            continue
        if kind == "epoch" and on_epoch is not None:
            on_epoch(run, payload)
        elif kind == "result":
            result = payload
        elif kind == "error":
            error = payload
    for p in processes:
        p.join(timeout=60 if error is None else 1)  # after a failure the rest wait in a
        if p.is_alive():                             # collective that never completes
            p.kill()
    if error is not None:
        raise RuntimeError(f"a --ddp process failed: {error}")
    return result


def _process(rank: int, world: int, port: int, device_type: str, run, dataset: str,
             queue) -> None:
    from .datasets import load_training_data
    from .engine import train

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    backend = "nccl" if device_type == "cuda" else "gloo"
    device = torch.device(f"cuda:{rank}" if device_type == "cuda" else "cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        data = load_training_data(dataset, run.model)
        report = (lambda r, record: queue.put(("epoch", record))) if rank == 0 else None
        result = train(run, data, device, on_epoch=report, stepper="auto" if
                       device_type == "cuda" else "static")
        if rank == 0:
            queue.put(("result", result))
    except Exception as err:  # noqa: BLE001 - the parent raises it
        queue.put(("error", f"process {rank}: {type(err).__name__}: {err}"))
    finally:
        dist.destroy_process_group()
