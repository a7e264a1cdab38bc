"""`cce-bench sweep`: train every run of a grid that is not in the results file yet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cce_bench.config import MODELS, OPTIMIZERS, PRECISIONS, SHUFFLES
from cce_bench.datasets import DEFAULT_DATASET
from cce_bench.errors import CceBenchError, ConfigError
from cce_bench.sweeps.execution import BACKENDS
from cce_bench.sweeps.spec import BUDGET_UNITS, DEFAULT_BUDGETS, DEVICES, KMEANS_BACKENDS

from .common import choice, console, friendly_errors

if TYPE_CHECKING:
    from cce_bench.sweeps import Execution, SweepSpec

DRY_RUN_ROWS = 20


class BudgetTooSmallForAll(ConfigError):
    """Every run of the sweep had a budget below its method's minimum."""


class EveryRunFailed(CceBenchError, RuntimeError):
    """Nothing of the sweep trained: the exit code says so to scripts and schedulers."""


@friendly_errors
def sweep(
    specs: Annotated[Optional[list[str]], typer.Argument(
        metavar="[SPEC]...",
        help="Spec files (.toml) or shipped specs such as paper/ml-1m; flags override their "
        "fields. Without one: the defaults and the flags.")] = None,
    name: Annotated[Optional[str], typer.Option(
        help="Sweep name: rows go to RESULTS/NAME.csv. Default: the spec's, else 'default'.")]
        = None,
    datasets: Annotated[Optional[list[str]], typer.Option(
        "--datasets", "--dataset", "-d",
        help=f"Datasets (repeat or comma-separate). Default: {DEFAULT_DATASET}.")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="Model: gmf (interaction data) or dlrm (Criteo data). Default: gmf.",
        **choice(MODELS))] = None,
    methods: Annotated[Optional[list[str]], typer.Option(
        "--methods", "--method", "-m",
        help="Embedding methods (repeat or comma-separate; 'all' for every one). "
        "Default: cce.")] = None,
    budgets: Annotated[Optional[list[str]], typer.Option(
        "--budgets", "--budget", "-b",
        help="Budgets, in parameters per dimension unless --budget-unit params: numbers "
        "(repeat or comma-separate) or lo:hi, every power of two from lo to hi (2:4096). "
        f"Default: {','.join(map(str, DEFAULT_BUDGETS))}.")] = None,
    budget_unit: Annotated[Optional[str], typer.Option(
        help="ppd (parameters per dimension: a table gets ppd x dim) or params (per table). "
        "Default: ppd.", **choice(BUDGET_UNITS))] = None,
    n_chunks: Annotated[Optional[list[str]], typer.Option(
        "--n-chunks",
        help="Chunks per embedding: numbers or lo:hi (1:16). Default: 4.")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="A count N (seeds 0..N-1) or a list 0,4,7. Default: 1.")] = None,
    dim: Annotated[Optional[int], typer.Option(
        help="Embedding dimension. Default: 32 (GMF), 16 (DLRM).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Training epochs. Default: 10.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Training batch size. Default: 4096 (GMF), 128 (DLRM).")] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Learning rate. Default: 0.001 (GMF), 0.1 (DLRM).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(
        help="Weight decay. Default: 0.01 (GMF), 0 (DLRM).")] = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help="Optimizer. Default: adamw (GMF), sgd (DLRM).", **choice(OPTIMIZERS))] = None,
    eval_every: Annotated[Optional[int], typer.Option(
        help="Also evaluate every N steps (0: after each epoch only). Default: 0 (GMF), 50000 "
        "(DLRM).")] = None,
    cluster_every: Annotated[Optional[int], typer.Option(
        help="Cluster every N steps (0: after each epoch). Default: 0 (GMF), 50000 (DLRM).")]
        = None,
    cluster_until: Annotated[Optional[float], typer.Option(
        help="Cluster up to this fraction of the run (of its epochs, or of its steps with "
        "--cluster-every). Default: 0.75 (GMF), 0.05 (DLRM).")] = None,
    bottom_mlp: Annotated[Optional[str], typer.Option(
        help="DLRM's bottom MLP, dense features to dim. Default: 13-512-256-64-16.")] = None,
    top_mlp: Annotated[Optional[str], typer.Option(
        help="DLRM's top MLP, ending in one logit. Default: 512-256-1.")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="Matrix products: fp32, tf32 (tensor-core matmuls: DLRM's MLPs and the tables' "
        "own products, dhe's, tt's, ldim's, also for GMF) or bf16 (DLRM's MLPs, autocast); "
        "tables are stored and updated in fp32. Default: fp32.", **choice(PRECISIONS))] = None,
    shuffle: Annotated[Optional[str], typer.Option(
        help="Order of an epoch's training rows: rows (one random permutation) or blocks "
        "(random blocks of 2^20 contiguous rows, shuffled within: sequential reads when "
        "streaming; DLRM only). Default: rows.", **choice(SHUFFLES))] = None,
    early_stop: Annotated[Optional[float], typer.Option(
        help="Stop when val BCE and AUC both worsen by this fraction (0: never). "
        "Default: 0.01.")] = None,
    kmeans: Annotated[Optional[str], typer.Option(
        help="k-means backend (auto: torch on a GPU when faiss has no GPU support, else "
        "faiss). Default: auto.", **choice(KMEANS_BACKENDS))] = None,
    device: Annotated[Optional[str], typer.Option(
        help="Where runs train: auto, cpu, cuda (every visible GPU) or cuda:N. Default: auto.",
        **choice(DEVICES))] = None,
    results: Annotated[Optional[str], typer.Option(  # text: an empty "" is refused, not "."
        metavar="<path>", help="Results folder: rows go to RESULTS/NAME.csv. Default: results.")]
        = None,
    out: Annotated[Optional[str], typer.Option(
        "--out", hidden=True, help="The old name of --results.")] = None,
    backend: Annotated[str, typer.Option(
        help="local (worker processes on this machine) or ray. Default: local.",
        **choice(BACKENDS))] = "local",
    workers: Annotated[Optional[int], typer.Option(
        help="local: worker processes in all (CPU workers without a GPU; 0: train in this "
        "process). Default: --workers-per-gpu per visible GPU, or 0 on a CPU.")] = None,
    workers_per_gpu: Annotated[int, typer.Option(
        help="local: worker processes per visible GPU. Default: 1.")] = 1,
    group_size: Annotated[Optional[int], typer.Option(
        help="Runs a worker trains together in lockstep (same dataset and batch size; same "
        "results as alone). Default on a GPU: 64 (16 with --no-stack); on a CPU: 1.")] = None,
    stack: Annotated[bool, typer.Option(
        "--stack/--no-stack", help="Train a group's runs of one method and shapes as one "
        "stacked model, one step for all of them (same results as alone); --no-stack: each "
        "run its own step. Default: --stack.")] = True,
    address: Annotated[Optional[str], typer.Option(
        help="ray: the cluster address (e.g. auto or ray://head:10001). Default: start a "
        "local Ray instance.")] = None,
    gpus_per_run: Annotated[Optional[float], typer.Option(
        help="ray: GPUs per run; fractions share a GPU (0.25: four runs on one). "
        "Default: 1 if the cluster has GPUs, else 0.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        help="Torch threads per process on the CPU. Default: 1 when training in this process "
        "(small steps run fastest so), the cores shared out among --workers; OMP_NUM_THREADS "
        "also sets it.", min=1)] = None,
    ddp: Annotated[int, typer.Option(
        help="Train each run data-parallel over N processes with torch.distributed: one per "
        "visible GPU (NCCL), or CPU processes (gloo) with --device cpu; the batch size is the "
        "global batch. Default: 0 (off).", min=0)] = 0,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Run again the runs recorded as failed, oom or diverged.")]
        = False,
    download: Annotated[bool, typer.Option(
        "--download", help="Download and preprocess missing datasets first (MovieLens); "
        "without it a missing one is an error that says the command.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the runs (count, the first ones, estimated time); train "
        "nothing.")] = False,
) -> None:
    """Train every run of a grid of datasets, methods, budgets, n_chunks and seeds.

    Each run's rows are appended to RESULTS/NAME.csv. Runs already in the results file are
    skipped, so an interrupted sweep resumes. A spec file holds the same fields as the flags
    (see `sweeps/paper/*.toml`).
    """
    import torch

    from cce_bench.datasets import RichReporter
    from cce_bench.sweeps import Execution, load_spec, run_sweeps
    from cce_bench.sweeps.progress import RichObserver

    if out is not None:
        if results is not None:
            raise ConfigError("--out is the old name of --results; give one of them")
        results = out
    overrides = {
        "name": name, "datasets": datasets, "model": model, "methods": methods,
        "budgets": budgets, "budget_unit": budget_unit, "n_chunks": n_chunks, "seeds": seeds,
        "dim": dim, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "optimizer": optimizer, "eval_every": eval_every,
        "cluster_every": cluster_every, "bottom_mlp": bottom_mlp, "top_mlp": top_mlp,
        "precision": precision, "shuffle": shuffle,
        "cluster_until": cluster_until, "early_stop": early_stop,
        "kmeans": kmeans, "device": device, "results": results}
    if specs and len(specs) > 1 and name is not None:
        raise ConfigError("--name with several specs would send them all to one file; "
                          "drop --name or give one spec")
    sweeps = [load_spec(s, overrides) for s in specs] if specs else [load_spec(None, overrides)]
    if group_size is None:
        # Stacks fill a GPU the more runs they hold (BENCHMARKS.md); 16 was the best group of
        # separate steps.
        group_size = (64 if stack else 16) if torch.cuda.is_available() and device != "cpu" else 1
    execution = Execution(backend=backend, workers=workers, workers_per_gpu=workers_per_gpu,
                          group_size=1 if ddp else group_size, stack=stack, address=address,
                          gpus_per_run=gpus_per_run, ddp=ddp, threads=threads)
    if dry_run:
        _print_plan(sweeps, execution, retry_failed)
        return
    with RichObserver(console) as observer:
        summary = run_sweeps(sweeps, observer, execution, retry_failed, download,
                             RichReporter(console))
    ran = sum(summary.statuses.values())
    if ran and summary.statuses.get("too_small") == ran:
        # Nothing trained: say why, as an error, instead of a table of too_small rows.
        raise BudgetTooSmallForAll(summary.first_errors["too_small"])
    broken = sum(summary.statuses.get(status, 0) for status in ("failed", "oom"))
    if ran and broken == ran:
        first = summary.first_errors.get("failed") or summary.first_errors.get("oom", "")
        raise EveryRunFailed(f"every run of the sweep failed ({broken} of {ran}); the first: "
                             f"{first}")
    for status in ("too_small", "failed", "oom"):
        if status in summary.first_errors:
            console.print(f"[yellow]{summary.statuses[status]} runs {status}[/yellow], "
                          f"first: {summary.first_errors[status]}", highlight=False)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    console.print(f"{ran} runs trained ({statuses}), {summary.skipped} already done; "
                  f"results in {summary.path}")


def _grid_line(spec: SweepSpec) -> str:
    """One line naming the whole grid, so a dry run shows every budget, not only the first runs."""
    def values(numbers: list[int]) -> str:
        return ", ".join(f"{n:,}" for n in numbers)

    return (f"{spec.name}: {', '.join(spec.datasets)} x {len(spec.methods)} methods x budgets "
            f"{values(spec.budgets)} {spec.budget_unit} x n_chunks {values(spec.n_chunks)} x "
            f"seeds {values(spec.seeds)}")


def _print_plan(sweeps: list[SweepSpec], execution: Execution, retry_failed: bool) -> None:
    from rich.table import Table

    from cce_bench.embeddings import get_method
    from cce_bench.sweeps import plan_sweeps
    from cce_bench.sweeps.estimate import estimate_lines
    from cce_bench.sweeps.progress import describe
    from cce_bench.sweeps.runner import missing_datasets

    plan = plan_sweeps(sweeps, retry_failed)
    files = ", ".join(str(s.results_path) for s in sweeps)
    console.print(f"{len(plan.runs)} runs, {plan.skipped} already in {files}, "
                  f"{len(plan.todo)} to run", highlight=False)
    for spec in sweeps:
        console.print(_grid_line(spec), highlight=False)
    for name in missing_datasets(plan):
        console.print(f"[yellow]dataset {name} is not in the data cache[/yellow]: run "
                      f"`cce-bench download {name}` first, or pass --download", highlight=False)
    if plan.todo:
        table = Table(box=None, pad_edge=False, header_style="dim")
        for column in ("run_id", "sweep", "run", "params", "epochs"):
            table.add_column(column, no_wrap=True, justify="right" if column in
                             ("params", "epochs") else "left")
        for spec, run in plan.todo[:DRY_RUN_ROWS]:
            size = f"{run.budget:,}" if get_method(run.method).family != "uncompressed" \
                else "vocab x dim"  # the full table ignores the budget: its true size
            table.add_row(run.run_id, spec.name, describe(run), size, str(run.epochs))
        console.print(table)
        if len(plan.todo) > DRY_RUN_ROWS:
            console.print(f"... and {len(plan.todo) - DRY_RUN_ROWS} more", highlight=False)
    todo = [run for _, run in plan.todo]
    if not todo:
        return
    folders = sorted({s.results for s in sweeps})
    # One line per spec (and the total): from earlier results, else the device's cost model.
    for line in estimate_lines([(spec.name, run) for spec, run in plan.todo], folders,
                               sweeps[0].device, execution.parallel_runs(sweeps[0].device)):
        console.print(line, highlight=False)

