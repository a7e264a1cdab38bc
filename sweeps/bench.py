"""`cce-bench bench`: how fast the engine trains on this machine, against a reference loop.

The reference loop does what the authors' experiment scripts do: one run at a time, the loss
read back with `.item()` after every step, and validation AUC computed on the host. It is given
the data already on the device, so the comparison isolates the step loop, evaluation and
clustering rather than input handling.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cce_bench.config import RunConfig
from cce_bench.data import InteractionData, InteractionSplit
from cce_bench.embeddings import get_method, make_embedding
from cce_bench.engine import build_model, device_clock, resolve_device, train, train_many
from cce_bench.errors import BudgetTooSmall
from cce_bench.results import git_revision

from .work import group_runs

# GMF on MovieLens-1M: 6,040 users, 3,706 items, ~730k training rows after dropping rating 3.
ML1M_SHAPE = {"n_users": 6040, "n_items": 3706, "n_train": 730_000, "n_val": 12_080}


SMALL_SWEEP_BUDGETS = [16, 64, 256, 1024]
PAPER_BUDGETS = [2**i for i in range(1, 13)]  # 2 .. 4096 params per dimension


def ml1m_shaped(seed: int = 0) -> InteractionData:
    """Random interactions with MovieLens-1M's shape (speed does not depend on the values)."""
    gen = torch.Generator().manual_seed(seed)
    s = ML1M_SHAPE

    def split(n: int) -> InteractionSplit:
        return InteractionSplit(torch.randint(0, s["n_users"], (n,), generator=gen),
                                torch.randint(0, s["n_items"], (n,), generator=gen),
                                torch.randint(0, 2, (n,), generator=gen).float())

    return InteractionData("ml1m-shaped", s["n_users"], s["n_items"], split(s["n_train"]),
                           split(s["n_val"]))


@dataclass
class MethodTiming:
    method: str
    ppd: int
    epoch_s: float  # median over epochs after the first (which includes graph capture)
    ref_epoch_s: float
    eval_s: float
    ref_eval_s: float
    steps_per_s: float
    samples_per_s: float
    peak_mem_bytes: int | None

    @property
    def speedup(self) -> float:
        return self.ref_epoch_s / self.epoch_s


@dataclass
class BenchReport:
    device: str
    device_name: str
    torch_version: str
    git_rev: str
    dataset: str
    train_rows: int
    methods: list[MethodTiming] = field(default_factory=list)
    cluster: list[dict] = field(default_factory=list)
    sweep: dict = field(default_factory=dict)
    paper_sweep: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # method/budget pairs below the minimum

    def to_dict(self) -> dict:
        out = asdict(self)
        for row, timing in zip(out["methods"], self.methods):
            row["speedup"] = timing.speedup
        return out


def reference_train(run: RunConfig, data: InteractionData, device: torch.device) -> tuple[list[float], list[float]]:
    """The authors' style of loop; returns (epoch seconds, eval seconds) per epoch."""
    torch.manual_seed(run.seed)
    model = build_model(run, data).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    train_split, val_split = data.train.to(device), data.val.to(device)
    epoch_times, eval_times = [], []
    for epoch in range(1, run.epochs + 1):
        start = device_clock(device)
        order = torch.randperm(len(train_split), device=device)
        losses = []
        for s in range(0, len(train_split), run.batch_size):
            rows = order[s:s + run.batch_size]
            logits = model(train_split.users[rows], train_split.items[rows])
            loss = F.binary_cross_entropy_with_logits(logits, train_split.labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())  # a host sync every step
        epoch_times.append(device_clock(device) - start)
        start = device_clock(device)
        with torch.no_grad():
            scores = model(val_split.users, val_split.items).cpu().numpy()
        host_auc(scores, val_split.labels.cpu().numpy())
        eval_times.append(device_clock(device) - start)
        if run.clusters_after(epoch):
            for module in model.modules():
                if hasattr(module, "cluster") and module is not model:
                    module.cluster()
    return epoch_times, eval_times


def host_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC on the host by ranks (what sklearn.metrics.roc_auc_score computes)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    n_pos = labels.sum()
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(labels) - n_pos)))


def time_method(method: str, ppd: int, data: InteractionData, device: torch.device,
                epochs: int = 4) -> MethodTiming:
    budget = 0 if get_method(method).family == "uncompressed" else ppd * 32
    run = RunConfig(data.name, method, budget, epochs=epochs, early_stop=0)
    result = train(run, data, device)
    later = result.epochs[1:] or result.epochs
    epoch_s = statistics.median(r.train_s for r in later)
    ref_epochs, ref_evals = reference_train(
        RunConfig(data.name, method, budget, epochs=2, early_stop=0), data, device)
    steps = math.ceil(len(data.train) / run.batch_size)
    return MethodTiming(method, ppd, epoch_s, statistics.median(ref_epochs),
                        statistics.median(r.eval_s for r in later), statistics.median(ref_evals),
                        steps / epoch_s, len(data.train) / epoch_s, result.peak_mem_bytes)


def time_cluster(vocab: int, ppd: int, device: torch.device, backend: str, repeats: int = 3) -> dict:
    """Seconds for one CCE cluster() on a vocab-sized table (dim 32, 4 chunks)."""
    emb = make_embedding(vocab, ppd * 32, 32, "cce", 4, seed=0, kmeans_backend=backend).to(device)
    emb.cluster()  # warm-up: kernels, allocator
    times = []
    for _ in range(repeats):
        start = device_clock(device)
        emb.cluster()
        times.append(device_clock(device) - start)
    return {"vocab": vocab, "ppd": ppd, "rows": emb.rows, "backend": backend,
            "seconds": statistics.median(times)}


def time_small_sweep(data: InteractionData, device: torch.device, methods: list[str],
                     budgets: list[int], seeds: int, epochs: int) -> dict:
    """Wall time of a small sweep, run after run in this process, fast engine vs reference."""
    runs = [RunConfig(data.name, m, 0 if get_method(m).family == "uncompressed" else b * 32,
                      seed=s, epochs=epochs, early_stop=0)
            for m in methods for b in budgets for s in range(seeds)]
    start = time.perf_counter()
    for run in runs:
        train(run, data, device)
    fast = time.perf_counter() - start
    grouped = time_groups(runs, data, device, group_size=len(runs), stack=False)
    stacked = time_groups(runs, data, device, group_size=len(runs), stack=True)
    start = time.perf_counter()
    for run in runs:
        reference_train(run, data, device)
    reference = time.perf_counter() - start
    return {"runs": len(runs), "methods": methods, "budgets": budgets, "seeds": seeds,
            "epochs": epochs, "seconds": fast, "grouped_seconds": grouped,
            "stacked_seconds": stacked,
            "reference_seconds": reference}


def time_groups(runs: list[RunConfig], data: InteractionData, device: torch.device,
                group_size: int, progress=lambda text: None, stack: bool = True) -> float:
    """Wall time to train runs in lockstep groups of group_size (see train_groups)."""
    return train_groups(runs, data, device, group_size, progress, stack)["seconds"]


def train_groups(runs: list[RunConfig], data: InteractionData, device: torch.device,
                 group_size: int, progress=lambda text: None, stack: bool = True) -> dict:
    """Train runs in lockstep groups of group_size, grouped as a sweep groups them
    (work.group_runs): consecutive runs, or with stack whole stacks of runs of one method and
    shapes, each trained as one stacked model. Returns the wall seconds, the run-steps (one
    optimizer step of one run; early stopping makes them fewer than runs x epochs x steps),
    and the seconds all runs spent clustering and evaluating (their records' cluster_s and
    eval_s, which each run spends on its own)."""
    start, done = time.perf_counter(), 0
    out = {"run_steps": 0, "cluster_s": 0.0, "eval_s": 0.0}
    for group in group_runs(runs, group_size, stack=stack):
        results = train_many(group, data, device, stack=stack)
        out["run_steps"] += sum(r.epochs[-1].step for r in results if r.epochs)
        out["cluster_s"] += sum(e.cluster_s for r in results for e in r.epochs)
        out["eval_s"] += sum(e.eval_s for r in results for e in r.epochs)
        done += len(group)
        progress(f"{done}/{len(runs)} runs, {time.perf_counter() - start:.1f} s")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"seconds": time.perf_counter() - start, **out}


def trainable(runs: list[RunConfig], data: InteractionData) -> list[RunConfig]:
    """The runs a sweep trains: those whose budget holds the method's smallest table (a sweep
    records the others as too_small without training). One build per table shape."""
    fits: dict[tuple, bool] = {}
    for run in runs:
        key = (run.method, run.budget, run.dim, run.n_chunks)
        if key not in fits:
            try:
                make_embedding(max(data.n_users, data.n_items), run.budget, run.dim, run.method,
                               run.n_chunks, seed=0)
                fits[key] = True
            except BudgetTooSmall:
                fits[key] = False
    return [run for run in runs if fits[(run.method, run.budget, run.dim, run.n_chunks)]]


def time_paper_sweep(data: InteractionData, device: torch.device, methods: list[str],
                     seeds: int = 3, epochs: int = 10, group_size: int = 16, stack: bool = True,
                     progress=lambda text: None) -> dict:
    """The paper's MovieLens sweep: every method x 2..4096 ppd x seeds x epochs, early stop on.

    Runs whose budget is below the method's minimum are counted, not trained (a sweep records
    them as too_small without training).
    """
    every = []
    for method in methods:
        uncompressed = get_method(method).family == "uncompressed"
        for ppd in PAPER_BUDGETS[:1] if uncompressed else PAPER_BUDGETS:
            every += [RunConfig(data.name, method, 0 if uncompressed else ppd * 32, seed=s,
                                epochs=epochs) for s in range(seeds)]
    runs = trainable(every, data)
    too_small = len(every) - len(runs)
    timing = train_groups(runs, data, device, group_size, progress, stack)
    return {"runs": len(runs) + too_small, "trained": len(runs), "too_small": too_small,
            "methods": len(methods), "budgets": len(PAPER_BUDGETS), "seeds": seeds,
            "epochs": epochs, "group_size": group_size, "stack": stack, **timing,
            "us_per_run_step": 1e6 * timing["seconds"] / max(timing["run_steps"], 1)}


def run_bench(methods: list[str], budgets: list[int], device: str = "auto",
              data: InteractionData | None = None, cluster_vocab: int = 1_000_000,
              sweep: bool = True, paper_sweep: bool = False, group_size: int = 16,
              stack: bool = True,
              progress=lambda text: None) -> BenchReport:
    dev = resolve_device(device)
    data = data or ml1m_shaped()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    report = BenchReport(str(dev), name, torch.__version__, git_revision(), data.name,
                         len(data.train))
    for method in methods:
        for ppd in budgets[:1] if get_method(method).family == "uncompressed" else budgets:
            progress(f"{method} ppd={ppd}")
            try:
                t = time_method(method, ppd, data, dev)
            except BudgetTooSmall as err:
                report.skipped.append(str(err))
                continue
            report.methods.append(t)
            progress(f"{method} ppd={ppd}: epoch {1e3 * t.epoch_s:.1f} ms, reference "
                     f"{1e3 * t.ref_epoch_s:.1f} ms ({t.speedup:.1f}x)")
    if "cce" in methods:
        for ppd in (64, 1024):
            progress(f"cluster() vocab={cluster_vocab} ppd={ppd}")
            backend = "torch" if dev.type == "cuda" else "auto"
            report.cluster.append(time_cluster(cluster_vocab, ppd, dev, backend))
    if sweep:
        progress("small sweep")
        report.sweep = time_small_sweep(data, dev, methods[:4], SMALL_SWEEP_BUDGETS, seeds=2,
                                        epochs=3)
    if paper_sweep:
        progress(f"paper sweep, groups of {group_size}, {'' if stack else 'not '}stacked")
        report.paper_sweep = time_paper_sweep(data, dev, methods, group_size=group_size,
                                              stack=stack,
                                              progress=progress)
    return report
