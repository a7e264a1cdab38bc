"""`cce-bench bench --model dlrm`: how fast DLRM trains on Criteo Kaggle's shape, and what the
paper's Kaggle grid would cost on this machine.

The data are random rows with Kaggle's shape, drawn on the device: 13 dense features, 26
categorical features with Kaggle's cardinalities and power-law ids (as criteo-synthetic draws
them), 39.3M training rows. Speed depends on shapes and on how ids repeat, not on the labels.
Each configuration builds the model as a sweep would, trains `steps` steps after a warm-up,
and is timed on the device clock; an epoch is extrapolated from the measured step time
(steps per epoch x seconds per step), evaluation timed once on the validation and test halves.

`variants` times the full-table model four ways, each adding one change to the one before,
to say what each buys: the plain loop over 26 separate tables with a dense SGD update; the
update fused into the lookup's backward (rows touched only); the full tables concatenated into
one; the step captured in a CUDA graph (the engine's default).

Large batches time the full table and CCE in each precision of DLRM's dense part (fp32, tf32,
bf16; tables stay fp32). Lockstep groups time several runs of one method (the paper's caps in
turn) stepped from one CUDA graph, as a sweep's worker trains them, stacked (one StackedDLRM a
method) unless stack=False. When every method of the grid is asked for, the whole grid (46
runs) is also timed as one group, first, as `cce-bench sweep paper/criteo-kaggle` trains it on
one GPU, and the grid estimate takes its run-step; otherwise it divides each method's step time
by the method's lockstep speed-up.

A report written as it goes (`checkpoint`) can be resumed (`resume_from`): a timing the earlier
report holds for the same configuration is kept, not measured again, so a benchmark longer than
one session of a lent GPU finishes over several. Only a report of the same device, torch, source
revision, rows, steps and precision resumes (load_report refuses the others).

`precision` (fp32 by default, as the paper and DLRM's script train) sets the precision of every
timed method, group and so the grid estimate (tf32: every fp32 matrix product on tensor cores,
the MLPs' and DHE's tables' own; k-means stays exact); the large-batch rows keep their own.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cce_bench.config import RunConfig
from cce_bench.data import CriteoData, TabularSplit
from cce_bench.datasets.catalog import CRITEO_KAGGLE_CARDINALITIES
from cce_bench.datasets.criteo import day_sizes
from cce_bench.engine import (cluster_all, device_clock, evaluate, fuse_sparse_updates,
                              make_optimizer, make_stepper, resolve_device, training_context)
from cce_bench.errors import BudgetTooSmall, ConfigError
from cce_bench.models import build_model
from cce_bench.models.dlrm import dense_precision
from cce_bench.stacking import StackedEpoch
from cce_bench.steps import capture_steps
from cce_bench.results import git_revision

KAGGLE_ROWS = 45_840_617
KAGGLE_TRAIN = sum(day_sizes(KAGGLE_ROWS)[:-1])  # days 1-6
KAGGLE_EVAL = day_sizes(KAGGLE_ROWS)[-1]  # day 7: test and validation halves together
KAGGLE_VOCABS = list(CRITEO_KAGGLE_CARDINALITIES)
# The paper's Kaggle caps: 16 x {100, 220, ..., 50000} parameters in one table.
PAPER_CAPS = [16 * k for k in (100, 220, 500, 1000, 2200, 5000, 10000, 22000, 50000)]
PAPER_METHODS = ["full", "cce", "ce", "hash", "dhe", "pq"]
TIMED_CAPS = [PAPER_CAPS[0], PAPER_CAPS[4], PAPER_CAPS[-1]]  # others interpolated
# Large batches: the full table in each precision of DLRM's dense part, and CCE at two.
LARGE_BATCH = [("full", "fp32"), ("full", "tf32"), ("full", "bf16"), ("cce", "fp32"),
               ("cce", "bf16")]
EXPONENTS = np.linspace(1.05, 1.5, 26)  # criteo-synthetic's power laws, P(rank r) ~ (r + 1)^-s


def kaggle_shaped(rows: int, device: torch.device, vocabs: list[int] = KAGGLE_VOCABS,
                  seed: int = 0) -> TabularSplit:
    """Random rows with Kaggle's shape (or other cardinalities), drawn on the device in blocks."""
    gen = torch.Generator(device=device).manual_seed(seed)
    cards = torch.tensor(vocabs, device=device, dtype=torch.float64)
    s = torch.tensor(EXPONENTS, device=device)
    dense = torch.empty(rows, 13, device=device)
    ids = torch.empty(rows, 26, device=device, dtype=torch.int32)
    for start in range(0, rows, 1 << 22):
        n = min(1 << 22, rows - start)
        u = torch.rand(n, 26, generator=gen, device=device, dtype=torch.float64)
        # Inverse CDF of the continuous power law on [1, card + 1), floored to a rank.
        top = (cards + 1) ** (1 - s)
        rank = ((1 - u * (1 - top)) ** (1 / (1 - s))).floor() - 1
        # Scatter ranks over the id range (popular ids are not neighbours in the table).
        ids[start:start + n] = ((rank.long() * 2654435761) % cards.long()).int()
        dense[start:start + n] = torch.log1p(torch.rand(n, 13, generator=gen, device=device) * 50)
    labels = (torch.rand(rows, generator=gen, device=device) < 0.25).float()
    return TabularSplit(dense, ids, labels)


def shape_only(vocabs: list[int] = KAGGLE_VOCABS) -> CriteoData:
    """A CriteoData that carries Kaggle's cardinalities and sizes, for building models."""
    empty = (np.zeros((0, 13), np.float32), np.zeros((0, 26), np.int32), np.zeros(0, np.uint8))
    return CriteoData("kaggle-shaped", *empty, {"train": (0, KAGGLE_TRAIN),
                                                 "val": (0, 0), "test": (0, 0)}, vocabs)


@dataclass
class StepTiming:
    label: str
    method: str
    cap: int
    batch_size: int
    step_s: float
    epoch_s: float  # steps per epoch x step_s
    samples_per_s: float
    eval_s: float | None = None  # validation and test halves once
    cluster_s: float | None = None  # one cluster() of every table
    table_params: int | None = None
    peak_mem_bytes: int | None = None
    precision: str = "fp32"
    runs: int = 1  # runs stepped together in one CUDA graph; step_s is then per run-step


@dataclass
class DlrmBenchReport:
    device: str
    device_name: str
    torch_version: str
    git_rev: str
    train_rows: int
    precision: str = "fp32"  # of the methods, groups and grid (large batches: each row its own)
    variants: list[StepTiming] = field(default_factory=list)
    methods: list[StepTiming] = field(default_factory=list)
    large_batch: list[StepTiming] = field(default_factory=list)
    groups: list[StepTiming] = field(default_factory=list)
    whole_grid: StepTiming | None = None  # every run of the grid in one group
    grid: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    steps: int = 0  # timed steps per configuration

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> DlrmBenchReport:
        timings = {key: [StepTiming(**t) for t in raw.get(key, [])]
                   for key in ("variants", "methods", "large_batch", "groups")}
        whole = raw.get("whole_grid")
        return cls(**{**raw, **timings, "whole_grid": whole and StepTiming(**whole)})


def load_report(path: Path, like: DlrmBenchReport) -> DlrmBenchReport | None:
    """The report at `path` to resume, if there is one; a report measured under other
    conditions than `like` (device, torch, revision, rows, steps, precision) is refused."""
    if not path.exists():
        return None
    try:
        prior = DlrmBenchReport.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{path} is not a DLRM benchmark report ({err}); leave out --resume "
                          "or pass another --json") from None
    for name in ("device_name", "torch_version", "git_rev", "train_rows", "steps", "precision"):
        if getattr(prior, name) != getattr(like, name):
            raise ConfigError(f"{path} was measured with {name} {getattr(prior, name)!r}, this "
                              f"run has {getattr(like, name)!r}; leave out --resume to measure "
                              "afresh, or pass another --json")
    return prior


def dlrm_run(method: str, cap: int, batch_size: int = 128, precision: str = "fp32",
             seed: int = 0) -> RunConfig:
    # DLRM's Kaggle settings (the sweep's defaults for --model dlrm).
    return RunConfig("kaggle-shaped", method, cap, model="dlrm", dim=16, n_chunks=4, seed=seed,
                     batch_size=batch_size, lr=0.1, weight_decay=0.0, optimizer="sgd",
                     bottom_mlp="13-512-256-64-16", top_mlp="512-256-1", eval_every=50_000,
                     cluster_every=50_000, cluster_until=0.05, kmeans="torch",
                     precision=precision)


def time_steps(run: RunConfig, train: TabularSplit, device: torch.device, steps: int,
               label: str = "", stepper: str = "auto", sparse: bool = True,
               batch_tables: bool = True, evaluate_on: TabularSplit | None = None,
               cluster: bool = False, vocabs: list[int] = KAGGLE_VOCABS) -> StepTiming:
    """Seconds per training step of one run (cluster: also time its cluster() first; pq is
    always clustered until it has compressed, as it would be for most of its run)."""
    with training_context(run.precision, device):  # as train_many trains a run
        model, optimizer = _built(run, device, vocabs, 0, batch_tables, sparse)
        cluster_s = (_time_cluster(model, optimizer, device, run)
                     if cluster or run.method == "pq" else None)
        epoch = make_stepper(stepper, model, optimizer, train, run.batch_size, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        epoch.prepare(torch.Generator(device=device).manual_seed(0))
        step_s = _seconds_per_step(epoch.step, steps, device)
        eval_s = None
        if evaluate_on is not None:
            start = device_clock(device)
            evaluate(model, evaluate_on)
            evaluate(model, evaluate_on)  # validation and test halves
            eval_s = device_clock(device) - start
    per_epoch = math.ceil(KAGGLE_TRAIN / run.batch_size)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return StepTiming(label or run.method, run.method, run.budget, run.batch_size, step_s,
                      per_epoch * step_s, run.batch_size / step_s, eval_s, cluster_s,
                      sum(p for p, _ in model.table_sizes()), peak, run.precision)


def _built(run: RunConfig, device: torch.device, vocabs: list[int], seed: int,
           batch_tables: bool = True, sparse: bool = True):
    """(model, optimizer) of a run as a sweep builds them, its init drawn from `seed`."""
    torch.manual_seed(seed)
    model = build_model(run, shape_only(vocabs), batch_tables).to(device)
    if sparse:
        fuse_sparse_updates(model, run)
    return model, make_optimizer(model, run, device)


def _seconds_per_step(step, steps: int, device: torch.device) -> float:
    for _ in range(min(20, steps)):  # warm-up: graph capture, allocator, cuBLAS
        step()
    start = device_clock(device)
    for _ in range(steps):
        step()
    return (device_clock(device) - start) / steps


def time_group(method: str, caps: list[int], runs: int, train: TabularSplit,
               device: torch.device, steps: int, vocabs: list[int] = KAGGLE_VOCABS,
               precision: str = "fp32", stack: bool = True) -> StepTiming:
    """Seconds per run-step of `runs` runs of one method stepped in lockstep from one CUDA
    graph, as a sweep's group trains them (caps cycled over the runs, seeds 0..runs-1):
    stacked (one StackedDLRM, as a sweep stacks them) or each run its own graph branch."""
    if device.type != "cuda":
        raise ConfigError("lockstep groups share a CUDA graph; time them on a GPU")
    configs = [dlrm_run(method, caps[k % len(caps)], precision=precision, seed=k)
               for k in range(runs)]
    with training_context(precision, device):
        epochs = ([_stacked_group(configs, train, device, vocabs)] if stack else
                  [_group_member(run, train, device, vocabs) for run in configs])
        graph = capture_steps(epochs)
        group_s = _seconds_per_step(graph.replay, steps, device)
    step_s = group_s / runs
    first = epochs[0].models[0] if stack else epochs[0].model
    params = sum(p for p, _ in first.table_sizes())
    del epochs, graph
    return StepTiming(group_label(method, runs, stack), method, configs[0].budget, 128,
                      step_s, math.ceil(KAGGLE_TRAIN / 128) * step_s, 128 / step_s,
                      table_params=params, precision=precision, runs=runs)


def time_grid_group(train: TabularSplit, device: torch.device, steps: int,
                    vocabs: list[int] = KAGGLE_VOCABS, precision: str = "fp32",
                    stack: bool = True, progress=lambda text: None) -> StepTiming:
    """Seconds per run-step of the paper's whole Kaggle grid (PAPER_METHODS at every cap, the
    full table once: 46 runs) stepped from one CUDA graph, as `cce-bench sweep
    paper/criteo-kaggle` groups it on a GPU (stacked: one stack per method, all in one group
    of at most 64). pq is compressed first, its state for most of its steps."""
    if device.type != "cuda":
        raise ConfigError("lockstep groups share a CUDA graph; time them on a GPU")
    by_method = [[dlrm_run(m, cap, precision=precision, seed=k)
                  for k, cap in enumerate([0] if m == "full" else PAPER_CAPS)]
                 for m in PAPER_METHODS]
    with training_context(precision, device):
        epochs = []
        for configs in by_method:
            start = time.perf_counter()
            if stack and len(configs) > 1:
                epochs.append(_stacked_group(configs, train, device, vocabs))
            else:
                epochs += [_group_member(run, train, device, vocabs) for run in configs]
            progress(f"the whole grid: {configs[0].method}'s {len(configs)} runs built in "
                     f"{time.perf_counter() - start:.0f} s")
        graph = capture_steps(epochs)
        group_s = _seconds_per_step(graph.replay, steps, device)
    runs = sum(len(c) for c in by_method)
    peak = torch.cuda.max_memory_allocated(device)
    del epochs, graph
    step_s = group_s / runs
    return StepTiming(grid_label(runs, stack), "grid", 0, 128, step_s,
                      math.ceil(KAGGLE_TRAIN / 128) * step_s, 128 / step_s,
                      peak_mem_bytes=peak, precision=precision, runs=runs)


def group_label(method: str, runs: int, stack: bool) -> str:
    return f"{method}, {runs} runs {'stacked' if stack else 'in one graph'}"


def grid_label(runs: int, stack: bool) -> str:
    how = "stacked by method" if stack else "each its own branch"
    return f"the whole grid, {runs} runs {how}"


def _stacked_group(configs: list[RunConfig], train: TabularSplit, device: torch.device,
                   vocabs: list[int]) -> StackedEpoch:
    """The runs as one stack (stacking.py), each built by _group_model."""
    models = [_group_model(run, device, vocabs)[0] for run in configs]
    optimizer = make_optimizer(nn.ModuleList(models), configs[0], device)
    stack = StackedEpoch(models, optimizer, train, configs[0].batch_size, configs[0].shuffle)
    for run, member in zip(configs, stack.members):
        member.prepare(torch.Generator(device=device).manual_seed(run.seed))
    return stack


def _group_member(run: RunConfig, train: TabularSplit, device: torch.device,
                  vocabs: list[int]):
    """One run of a lockstep group, built (_group_model) and prepared to step."""
    model, optimizer = _group_model(run, device, vocabs)
    epoch = make_stepper("static", model, optimizer, train, run.batch_size, device)
    epoch.prepare(torch.Generator(device=device).manual_seed(run.seed))
    return epoch


def _group_model(run: RunConfig, device: torch.device, vocabs: list[int]):
    """(model, optimizer) of a group's run, its init from its seed; pq compressed first, the
    state of most of its steps (as time_steps times it)."""
    model, optimizer = _built(run, device, vocabs, run.seed)
    if run.method == "pq":
        _time_cluster(model, optimizer, device, run)
    return model, optimizer


def _time_cluster(model, optimizer, device, run) -> float:
    """One round of cluster() over every table (pq: every round, so it is compressed after)."""
    rounds = max(1, run.cluster_rounds(math.ceil(KAGGLE_TRAIN / run.batch_size)))
    post = any(getattr(m, "post_training", False) for m in model.modules())
    start = device_clock(device)
    with dense_precision("fp32"):  # k-means stays exact, as the engine clusters
        for _ in range(rounds if post else 1):
            cluster_all(model, optimizer)
    return (device_clock(device) - start) / (rounds if post else 1)


def describe(t: StepTiming) -> str:
    """One line per timing, printed as it completes (a long benchmark stopped early keeps
    what it measured)."""
    extra = "".join(f", {name} {value:.2f} s" for name, value in
                    (("eval", t.eval_s), ("cluster", t.cluster_s)) if value is not None)
    unit = "run-step" if t.runs > 1 else "step"
    return (f"{t.label} cap {t.cap:,} batch {t.batch_size:,}: {1e3 * t.step_s:.3f} ms/{unit}, "
            f"epoch {t.epoch_s:,.1f} s, {t.samples_per_s:,.0f} samples/s{extra}")


def grid_estimate(timings: list[StepTiming], epochs: int = 10,
                  groups: list[StepTiming] = (), whole: StepTiming | None = None) -> dict:
    """GPU-hours of the paper's Kaggle grid (PAPER_METHODS x PAPER_CAPS x epochs, one seed),
    from measured step, evaluation and clustering times; caps not timed are interpolated in
    log(cap) between the timed ones. With `groups` (a method's runs stepped in lockstep, as a
    sweep trains them), a method's step times shrink by its measured lockstep speed-up; with
    `whole` (time_grid_group: every run of the grid in one group, as the sweep trains it),
    every run-step costs its measured run-step instead. Evaluation and clustering stay one run
    at a time."""
    run = dlrm_run("cce", PAPER_CAPS[0])
    steps = math.ceil(KAGGLE_TRAIN / run.batch_size)
    evals_per_epoch = steps // run.eval_every + 1
    clusters = run.cluster_rounds(steps)
    speedups = lockstep_speedups(timings, list(groups))
    runs, seconds = [], 0.0
    for method in PAPER_METHODS:
        mine = sorted((t for t in timings if t.method == method), key=lambda t: t.cap)
        if not mine:
            continue
        caps = [0] if method == "full" else PAPER_CAPS
        # A method without its own group timing gets the smallest speed-up measured.
        speedup = speedups.get(method, min(speedups.values(), default=1.0))
        for cap in caps:
            step_s = (whole.step_s if whole is not None else
                      _interpolate(cap, [(t.cap, t.step_s) for t in mine]) / speedup)
            eval_s = _timed(cap, [(t.cap, t.eval_s) for t in mine])
            cluster_s = _timed(cap, [(t.cap, t.cluster_s) for t in mine])
            run_s = epochs * (steps * step_s + evals_per_epoch * eval_s) + clusters * cluster_s
            runs.append({"method": method, "cap": cap, "seconds": run_s})
            seconds += run_s
    return {"runs": len(runs), "epochs": epochs, "steps_per_epoch": steps,
            "evaluations_per_epoch": evals_per_epoch, "cluster_rounds": clusters,
            "lockstep_speedups": speedups, "whole_grid_run_step_s": whole and whole.step_s,
            "seconds": seconds, "gpu_hours": seconds / 3600,
            "per_run": runs}


def lockstep_speedups(timings: list[StepTiming], groups: list[StepTiming]) -> dict[str, float]:
    """Per method, how much faster a run-step is in its largest timed lockstep group than
    alone (alone: the mean over the caps the group's runs had, as time_group cycles them)."""
    factors = {}
    for group in sorted(groups, key=lambda g: g.runs):
        alone = sorted((t.cap, t.step_s) for t in timings if t.method == group.method)
        if not alone:
            continue
        caps = [0] if group.method == "full" else PAPER_CAPS
        base = sum(_interpolate(caps[k % len(caps)], alone) for k in range(group.runs))
        factors[group.method] = max(base / group.runs / group.step_s, 1.0)
    return factors


def _timed(cap: int, points: list[tuple[int, float | None]]) -> float:
    """_interpolate over the caps where it was timed (an untimed cap is not a cost of 0); 0
    where it was timed at none (the method does not evaluate or cluster that way)."""
    timed = [(c, v) for c, v in points if v is not None]
    return _interpolate(cap, timed) if timed else 0.0


def _interpolate(cap: int, points: list[tuple[int, float]]) -> float:
    if len(points) == 1 or cap <= points[0][0]:
        return points[0][1]
    for (c0, v0), (c1, v1) in zip(points, points[1:]):
        if cap <= c1:
            w = (math.log(cap) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return v0 + w * (v1 - v0)
    return points[-1][1]


def run_dlrm_bench(device: str = "auto", train_rows: int = KAGGLE_TRAIN, steps: int = 2000,
                   methods: list[str] | None = None, caps: list[int] | None = None,
                   variants: bool = True, large_batch: int = 16384,
                   group_sizes: tuple[int, ...] | None = None, stack: bool = True,
                   vocabs: list[int] = KAGGLE_VOCABS, precision: str = "fp32",
                   group_methods: tuple[str, ...] = ("hash", "ce", "cce", "dhe", "pq"),
                   progress=lambda text: None, resume_from: Path | None = None,
                   checkpoint=lambda report: None) -> DlrmBenchReport:
    """Every timing of the module docstring; vocabs other than Kaggle's only for tests.
    `resume_from`: an earlier report of this benchmark (load_report), whose timings are kept;
    `checkpoint(report)` is called after each timing."""
    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    report = DlrmBenchReport(str(dev), name, torch.__version__, git_revision(), train_rows,
                             precision, steps=steps)
    kept = ((resume_from and load_report(resume_from, report))
            or DlrmBenchReport("", "", "", "", 0))

    def once(into: list[StepTiming], earlier: list[StepTiming], label: str, cap: int,
             batch: int, own: str, measure) -> None:
        """Append the earlier report's timing of this configuration, or measure it."""
        done = _kept_timing(earlier, label, cap, batch, own)
        progress(f"{label} cap={cap:,}" + (" (kept from the resumed report)" if done else ""))
        into.append(done or measure())
        progress(describe(into[-1]))
        checkpoint(report)

    progress(f"drawing {train_rows:,} Kaggle-shaped rows")
    train = kaggle_shaped(train_rows, dev, vocabs)
    held_out = kaggle_shaped(min(KAGGLE_EVAL // 2, train_rows), dev, vocabs, seed=1)
    wanted = list(methods or PAPER_METHODS)
    if dev.type == "cuda" and set(wanted) >= set(PAPER_METHODS):
        # First, as the number the grid estimate rests on (a cut-short run keeps it).
        _time_whole_grid(report, kept, train, dev, steps, vocabs, precision, stack, progress)
        checkpoint(report)
    full = dlrm_run("full", 0)
    if variants:
        few = max(10, steps // 10)  # the slow variants need fewer steps for a stable mean
        for label, kwargs, n in [
                ("plain loop, 26 tables, dense SGD", dict(stepper="plain", sparse=False,
                                                          batch_tables=False), few),
                ("+ SGD fused into the lookup", dict(stepper="plain", batch_tables=False), few),
                ("+ tables of one kind as one", dict(stepper="plain"), steps),
                ("+ CUDA graph (the engine)", dict(stepper="auto"), steps)]:
            once(report.variants, kept.variants, label, 0, 128, "fp32",
                 lambda: time_steps(full, train, dev, n, label, vocabs=vocabs, **kwargs))
    for method in wanted:
        for cap in [0] if method == "full" else (caps or TIMED_CAPS):
            try:
                run = dlrm_run(method, cap, precision=precision)
                once(report.methods, kept.methods, method, run.budget, 128, precision,
                     lambda: time_steps(run, train, dev, steps, evaluate_on=held_out,
                                        cluster=method == "cce", vocabs=vocabs))
            except BudgetTooSmall as err:
                report.skipped.append(str(err))
    if large_batch:
        for method, own in LARGE_BATCH:  # each row its own precision
            run = dlrm_run(method, 0 if method == "full" else 16_000, large_batch, own)
            once(report.large_batch, kept.large_batch, f"{method}, {own}", run.budget,
                 large_batch, own, lambda: time_steps(run, train, dev, max(20, steps // 20),
                                                      f"{method}, {own}", vocabs=vocabs))
    if dev.type == "cuda":  # lockstep groups share a CUDA graph
        timed = {t.method for t in report.methods}
        # Stacked, a method's group is its 9 caps at one seed (the paper grid's runs of it).
        sizes = (((4, len(PAPER_CAPS)) if stack else (4, 16)) if group_sizes is None
                 else group_sizes)
        for method in [m for m in group_methods if m in timed]:
            for runs in sizes:
                once(report.groups, kept.groups, group_label(method, runs, stack),
                     dlrm_run(method, PAPER_CAPS[0]).budget, 128, precision,
                     lambda: time_group(method, PAPER_CAPS, runs, train, dev,
                                        max(20, steps // 4), vocabs, precision, stack))
    report.grid = grid_estimate(report.methods, groups=report.groups, whole=report.whole_grid)
    checkpoint(report)
    return report


def _kept_timing(earlier: list[StepTiming], label: str, cap: int, batch: int,
                 precision: str) -> StepTiming | None:
    """The resumed report's timing of this configuration, if it holds one."""
    return next((t for t in earlier if (t.label, t.cap, t.batch_size, t.precision)
                 == (label, cap, batch, precision)), None)


def _time_whole_grid(report: DlrmBenchReport, kept: DlrmBenchReport, train: TabularSplit,
                     dev: torch.device, steps: int, vocabs: list[int], precision: str,
                     stack: bool, progress) -> None:
    """report.whole_grid: kept from the resumed report, else measured (an out-of-memory
    leaves it None and says so: the estimate then uses the methods' own groups)."""
    runs = 1 + (len(PAPER_METHODS) - 1) * len(PAPER_CAPS)
    done = _kept_timing([kept.whole_grid] if kept.whole_grid else [], grid_label(runs, stack),
                        0, 128, precision)
    if done:
        report.whole_grid = done
        progress(describe(done) + " (kept from the resumed report)")
        return
    progress("the whole grid in one group")
    torch.cuda.reset_peak_memory_stats(dev)
    try:
        report.whole_grid = time_grid_group(train, dev, max(20, steps // 4), vocabs,
                                            precision, stack, progress)
        progress(describe(report.whole_grid))
    except torch.cuda.OutOfMemoryError:  # keep every later timing
        report.skipped.append("the whole grid in one group: out of GPU memory; the estimate "
                              "uses the methods' own groups where they were timed, else runs "
                              "one at a time")
        torch.cuda.empty_cache()
