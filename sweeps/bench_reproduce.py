"""`make reproduce`'s GMF specs, estimated from measured steps (`cce-bench bench --reproduce`).

A spec's sweep is too long to time whole, and its time is nearly all steps, so each group the
sweep would train (work.group_runs: stacked, groups of 64 on a GPU) is built on random data of
its dataset's shape and timed for a few steps, one evaluation and one clustering round:

    group seconds = longest run's steps x one step of the group
                    + its evaluations x one evaluation + its clustering rounds x one round
                    + a post-training method's compression (pq: once) + build and capture

A group whose runs compress (pq) is timed twice: the step before compressing (when a stack
trains one run of each seed's budgets, stacking.find_twins) for the epochs up to the
compression, and the step after it for the rest.

A step is one replay of the group's CUDA graph (on a CPU one step of each of its stacks and
runs); the evaluation is timed after one untimed call, the clustering round cold. Every epoch
is counted (early stopping makes real runs shorter), and MovieLens's training rows are its
ratings less two per user for validation (the sweep also drops some ratings), so the estimate
leans high. Groups are packed
as the sweep packs them, too_small runs included. Start-up of the process and loading the
dataset are not counted; a group that runs out of memory is listed as not timed.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from cce_bench.config import RunConfig
from cce_bench.data import InteractionData, InteractionSplit
from cce_bench.engine import (awaiting_compression, device_splits, has_clustering,
                               resolve_device, run_states, training_context)
from cce_bench.errors import ConfigError
from cce_bench.steps import capture_steps

from .bench import trainable
from .work import group_runs

# Steps timed per group (its graph replayed this often after three warm-up replays).
TIMED_STEPS = 30


@dataclass
class GroupTiming:
    methods: dict[str, int]  # method -> its runs in the group
    runs: int
    run_steps: int  # every epoch of every run counted
    step_s: float  # one step of the whole group
    eval_s: float  # one evaluation of every run
    cluster_s: float  # one clustering round of every run that clusters
    compress_s: float  # a post-training method's one compression (pq), once a run
    compressed_step_s: float  # one step of the whole group after it compressed (else step_s)
    setup_s: float  # build, data order and graph capture
    seconds: float  # the group's estimated wall time


@dataclass
class SpecTiming:
    spec: str
    dataset: str
    train_rows: int
    runs: int  # trained (too_small runs are recorded without training)
    too_small: int
    run_steps: int
    seconds: float
    measured_s: float  # wall time of the measurement itself
    groups: list[GroupTiming] = field(default_factory=list)
    untimed: list[str] = field(default_factory=list)  # groups that could not be measured, why
    precision: str = "fp32"  # the runs' matmul precision

    @property
    def us_per_run_step(self) -> float:
        return 1e6 * self.seconds / max(self.run_steps, 1)

    def by_method(self) -> dict[str, float]:
        """Estimated seconds per method (a mixed group's time split by its runs)."""
        out: dict[str, float] = {}
        for g in self.groups:
            for method, runs in g.methods.items():
                out[method] = out.get(method, 0.0) + g.seconds * runs / g.runs
        return out


def shaped_like(dataset: str, seed: int = 0) -> InteractionData:
    """Random interactions with a GMF dataset's users, items and training rows (speed does not
    depend on the values), without building the dataset."""
    from cce_bench.datasets import info

    about = info(dataset)
    if about.users is None or about.rows is None:
        raise ConfigError(f"{dataset}: its shape is not known before it is built; "
                          "--reproduce times the paper's synthetic and MovieLens specs")
    users, items = about.users, about.items
    val = 2 * users  # the last two interactions of each user (MovieLens), 2 x vocab (synthetic)
    train = about.rows if about.kind == "synthetic" else about.rows - val
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> InteractionSplit:
        return InteractionSplit(torch.randint(0, users, (n,), generator=gen),
                                torch.randint(0, items, (n,), generator=gen),
                                torch.randint(0, 2, (n,), generator=gen).float())

    return InteractionData(f"{dataset}-shaped", users, items, split(train), split(val))


def time_group(runs: list[RunConfig], data: InteractionData, device: torch.device,
               steps: int = TIMED_STEPS) -> GroupTiming:
    """One group's estimated wall time from a few measured steps (see the module doc)."""
    with training_context(runs[0].precision, device):  # as train_many trains the group
        return _time_group(runs, data, device, steps)


def _time_group(runs: list[RunConfig], data: InteractionData, device: torch.device,
                steps: int) -> GroupTiming:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    # The states the engine trains (runs renamed to the shaped data), stacked as a sweep stacks.
    runs = [RunConfig(**{**r.to_dict(), "dataset": data.name}) for r in runs]
    splits = device_splits(data, device)
    states = run_states(runs, data, splits, device,
                        "static" if device.type == "cuda" else "auto", True)
    per_epoch = states[0].epochs.steps
    timed = max(1, min(steps, per_epoch - 4))
    build_s = time.perf_counter() - start
    capture_s, step_s = _time_steps(states, device, min(3, per_epoch - timed), timed, sync)
    setup_s = build_s + capture_s
    evaluate = lambda: [state.evaluate_split(state.val_split) for state in states]  # noqa: E731
    evaluate()  # untimed: the first call compiles and allocates for the split's shapes
    for state in states:
        state.step += 1  # a stack keeps its scores per step: at a new one it evaluates again
    sync()
    t = time.perf_counter()
    evaluate()
    sync()
    eval_s = time.perf_counter() - t
    clustering = [s for s in states if has_clustering(s.model)]
    # A post-training method (pq) counts rounds and compresses at its last: timed once, apart.
    compressing = [s for s in clustering if awaiting_compression(s.model)]
    t = time.perf_counter()
    for state in clustering:
        if state not in compressing:
            state.cluster(1)
    sync()
    cluster_s = time.perf_counter() - t if len(clustering) > len(compressing) else 0.0
    epochs = max(r.epochs for r in runs)
    rounds = max((s.run.cluster_rounds(per_epoch) for s in clustering), default=0)
    t = time.perf_counter()
    for round_ in range(1, rounds + 1):
        for state in compressing:
            if awaiting_compression(state.model):
                state.cluster(round_)
    sync()
    compress_s = time.perf_counter() - t if compressing else 0.0
    total = per_epoch * epochs
    compressed_step_s, before = step_s, total
    if compressing:  # the group's step once it compressed (every run stepped again)
        capture_s, compressed_step_s = _time_steps(states, device, 1, timed, sync)
        setup_s += capture_s
        before = max(compression_step(s.run, per_epoch) for s in compressing)
        for state in states:
            state.step += 1  # a new step: the stacks evaluate again, every run now trained
        t = time.perf_counter()
        evaluate()
        sync()
        eval_s = max(eval_s, time.perf_counter() - t)  # the dearer of the two, every time
    seconds = (before * step_s + (total - before) * compressed_step_s
               + epochs * eval_s + rounds * cluster_s + compress_s + setup_s)
    methods = dict(Counter(r.method for r in runs))
    return GroupTiming(methods, len(runs), sum(per_epoch * r.epochs for r in runs), step_s,
                       eval_s, cluster_s, compress_s, compressed_step_s, setup_s, seconds)


def _time_steps(states: list, device: torch.device, warmups: int, timed: int,
                sync) -> tuple[float, float]:
    """A new epoch for every run (the cursor at its start), the group's step captured (GPU)
    and warmed up, then timed: (seconds of that set-up, seconds a step)."""
    start = time.perf_counter()
    for state in states:
        state.epochs.prepare(state.shuffle)
    steppers = list(dict.fromkeys(s.epochs.stepper for s in states))
    graph = capture_steps(steppers) if device.type == "cuda" else None
    advance = graph.replay if graph is not None else lambda: [e.step() for e in steppers]
    for _ in range(warmups):
        advance()
    sync()
    setup_s = time.perf_counter() - start
    t = time.perf_counter()
    for _ in range(timed):
        advance()
    sync()
    return setup_s, (time.perf_counter() - t) / timed


def compression_step(run: RunConfig, steps_per_epoch: int) -> int:
    """The step after which a post-training method compresses: its schedule's last
    clustering point (the end of an epoch, or a step of --cluster-every)."""
    total = steps_per_epoch * run.epochs
    if run.cluster_every:
        points = [s for s in range(run.cluster_every, total + 1, run.cluster_every)
                  if run.clusters_at_step(s, total)]
    else:
        points = [e * steps_per_epoch for e in range(1, run.epochs + 1) if run.clusters_after(e)]
    return max(points, default=total)


def time_spec(name: str, device: str | torch.device = "auto", group_size: int | None = None,
              steps: int = TIMED_STEPS, methods: list[str] | None = None,
              precision: str | None = None, progress=lambda text: None) -> SpecTiming:
    """A GMF paper spec's estimated sweep time on this device (one device, the sweep's groups);
    methods: only these methods' runs; precision: the spec's runs at this precision."""
    from .specfile import load_spec

    device = resolve_device(device) if isinstance(device, str) else device
    spec = load_spec(name, {"precision": precision} if precision else None)
    if spec.model != "gmf":
        raise ConfigError(f"{name}: --reproduce times GMF specs; for DLRM use "
                          "cce-bench bench --model dlrm")
    group_size = group_size or (64 if device.type == "cuda" else 1)
    start = time.perf_counter()
    out: SpecTiming | None = None
    for dataset in spec.datasets:
        data = shaped_like(dataset)
        every = [r for r in spec.expand()
                 if r.dataset == dataset and (methods is None or r.method in methods)]
        timing = SpecTiming(spec.name, dataset, len(data.train), 0, 0, 0, 0.0, 0.0,
                            precision=spec.precision)
        # Grouped as the sweep groups them, too_small runs included (it records them without
        # training, so its groups train fewer runs).
        for i, group in enumerate(group_runs(every, group_size, stack=True)):
            runs = trainable(group, data)
            timing.runs += len(runs)
            timing.too_small += len(group) - len(runs)
            if runs:
                _time_into(timing, f"{name}: group {i + 1}", runs, data, device, steps, progress)
        out = timing if out is None else _merged(out, timing)
    out.measured_s = time.perf_counter() - start
    return out


def _time_into(timing: SpecTiming, label: str, runs: list[RunConfig], data: InteractionData,
               device: torch.device, steps: int, progress) -> None:
    t = time.perf_counter()
    try:
        g = time_group(runs, data, device, steps)
    except torch.cuda.OutOfMemoryError:
        g = None
        kinds = ", ".join(sorted({r.method for r in runs}))
        timing.untimed.append(f"{label} ({len(runs)} runs of {kinds}): out of memory")
        progress(f"{label}: out of memory, not timed")
    finally:
        gc.collect()  # the group's stacks and graph hold reference cycles: free them now
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if g is None:
        return
    timing.groups.append(g)
    timing.run_steps += g.run_steps
    timing.seconds += g.seconds
    after = (f" ({1e6 * g.compressed_step_s / g.runs:.1f} once compressed)"
             if g.compressed_step_s != g.step_s else "")
    progress(f"{label} ({', '.join(g.methods)}, {g.runs} runs): "
             f"{1e6 * g.step_s / g.runs:.1f} us per run-step{after}, est. {g.seconds / 60:.1f} min "
             f"(measured in {time.perf_counter() - t:.0f} s: setup {g.setup_s:.1f} s, "
             f"a clustering round {g.cluster_s:.1f} s, compression {g.compress_s:.1f} s)")


def _merged(a: SpecTiming, b: SpecTiming) -> SpecTiming:
    return SpecTiming(a.spec, f"{a.dataset}, {b.dataset}", a.train_rows + b.train_rows,
                      a.runs + b.runs, a.too_small + b.too_small, a.run_steps + b.run_steps,
                      a.seconds + b.seconds, 0.0, a.groups + b.groups, a.untimed + b.untimed,
                      a.precision)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def gmf_specs() -> list[str]:
    """The shipped GMF paper specs, as `make reproduce` runs them."""
    from .specfile import load_spec, shipped_specs

    return [s for s in shipped_specs() if load_spec(s).model == "gmf"]


__all__ = ["GroupTiming", "SpecTiming", "gmf_specs", "hours", "shaped_like", "time_group",
           "time_spec"]
