"""`cce-bench bench`: training speed on this machine against the authors' style of loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from cce_bench.config import MODELS, PRECISIONS
from cce_bench.embeddings import get_method, method_names
from cce_bench.errors import ConfigError

from .common import choice, console, friendly_errors


@friendly_errors
def bench(
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", "-m", help="Method to time (repeatable). Default: every method.")] = None,
    budget: Annotated[Optional[list[int]], typer.Option(
        "--budget", "-b", help="Params per dimension (repeatable). Default: 16 and 256. "
        "With --model dlrm: caps in parameters per table; default 1,600, 35,200, 800,000.")]
        = None,
    device: Annotated[str, typer.Option(
        help="Where to time: auto (a GPU if there is one), cpu, cuda or cuda:N. Default: auto.",
        **choice(["auto", "cpu", "cuda", "cuda:N"]))] = "auto",
    dataset: Annotated[Optional[str], typer.Option(
        help="Dataset to time on. Default: random data shaped like MovieLens-1M.")] = None,
    sweep: Annotated[bool, typer.Option(
        "--sweep/--no-sweep", help="Also time a small sweep (4 methods x 4 budgets x 2 seeds x "
        "3 epochs). Default: --sweep.")] = True,
    paper_sweep: Annotated[bool, typer.Option(
        "--paper-sweep", help="Also time the paper's whole MovieLens sweep: every method x "
        "2..4096 ppd x 3 seeds x 10 epochs, trained in lockstep groups.")] = False,
    group_size: Annotated[Optional[int], typer.Option(
        help="Runs per lockstep group for --paper-sweep. Default: 64 (16 with --no-stack), "
        "as cce-bench sweep on a GPU.", min=1)] = None,
    cluster_vocab: Annotated[int, typer.Option(
        help="Vocabulary for timing CCE's cluster(). Default: 1000000.")] = 1_000_000,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the numbers, device, torch version and git revision here.")]
        = None,
    model: Annotated[str, typer.Option(
        help="gmf (the options above) or dlrm: DLRM on Kaggle-shaped data, what each speed-up "
        "buys, every method of the paper's Kaggle grid and that grid's estimated GPU-hours. "
        "Default: gmf.", **choice(MODELS))] = "gmf",
    steps: Annotated[int, typer.Option(
        help="dlrm: timed steps per configuration. Default: 2000.", min=1)] = 2000,
    grid_only: Annotated[bool, typer.Option(
        "--grid-only", help="dlrm: time only what the grid estimate needs (every method at the "
        "timed caps, and the whole grid as one lockstep group, or each method's groups when "
        "--method leaves some out), not the full table's variants or the large batches.")] = False,
    rows: Annotated[Optional[int], typer.Option(
        help="dlrm: training rows drawn on the device. Default: Kaggle's 39,291,958.",
        show_default=False, min=1)] = None,
    reproduce: Annotated[bool, typer.Option(
        "--reproduce", help="Estimate `make reproduce`'s GMF specs from measured steps: each "
        "group a sweep trains, built on random data of its dataset's shape and timed for a "
        "few steps, one evaluation and one clustering round.")] = False,
    precision: Annotated[Optional[str], typer.Option(
        help="--reproduce: the specs' runs at this precision instead of their own (tf32: the "
        "tables' matrix products on tensor cores). --model dlrm: the methods, lockstep groups "
        "and grid estimate at this precision (default fp32; the large-batch rows keep their "
        "own).", **choice(PRECISIONS))] = None,
    spec: Annotated[Optional[list[str]], typer.Option(
        "--spec", help="--reproduce: the spec to time (repeatable), a shipped name or a .toml "
        "path. Default: every shipped GMF spec.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="dlrm: keep the timings the --json report already holds (of the same "
        "device, torch, revision, rows, steps and precision) and measure only the rest; the "
        "report is rewritten after every timing, so a cut-short benchmark resumes.")] = False,
    stack: Annotated[bool, typer.Option(
        "--stack/--no-stack", help="--paper-sweep: train runs of one method and shapes as one "
        "stacked model (one step for all of them); --no-stack: each run its own step, as "
        "before stacking. --model dlrm: the lockstep groups stacked (a method's 9 caps) or "
        "each run its own graph branch (4 and 16 runs). Default: --stack.")] = True,
) -> None:
    """Time training on this machine against the authors' style of loop.

    Steps/s, epoch, eval and cluster() times, GPU memory and a small sweep's wall time, each
    against a reference loop that syncs the host every step (--model dlrm: DLRM's step on
    Kaggle's shape and the paper grid's cost).
    """
    if spec and not reproduce:
        raise ConfigError("--spec is for --reproduce; add --reproduce to time a spec")
    if resume and (model != "dlrm" or not json_out):
        raise ConfigError("--resume is for --model dlrm with --json (the report to resume); "
                          "add them or leave out --resume")
    if grid_only and model != "dlrm":
        raise ConfigError("--grid-only is for --model dlrm; add --model dlrm")
    if precision and not (reproduce or model == "dlrm"):
        raise ConfigError("--precision is for --reproduce or --model dlrm; add one of them")
    if reproduce:
        if model != "gmf" or budget:
            raise ConfigError("--reproduce times a GMF spec's own budgets; leave out --model "
                              "dlrm and --budget (--method picks the spec's methods)")
        _bench_reproduce(spec, method, precision, device, group_size, json_out)
        return
    if model == "dlrm":
        _bench_dlrm(method, budget, device, steps, rows, precision or "fp32", json_out,
                    grid_only, stack, resume)
        return
    from cce_bench.sweeps.bench import run_bench

    methods = method or method_names()
    for name in methods:
        get_method(name)
    data = None
    if dataset:
        from cce_bench.datasets import load_dataset
        data = load_dataset(dataset)
    with console.status("benchmarking") as status:
        report = run_bench(methods, budget or [16, 256], device, data, cluster_vocab, sweep,
                           paper_sweep, group_size or (64 if stack else 16), stack,
                           progress=_progress_printer(status))
    console.print(_methods_table(report))
    for reason in report.skipped:
        console.print(f"not timed: {reason}", highlight=False)
    for c in report.cluster:
        console.print(f"cluster(): vocab {c['vocab']:,}, dim 32, 4 chunks, {c['rows']} rows "
                      f"per table ({c['backend']} k-means): {c['seconds']:.3f} s")
    if report.sweep:
        s = report.sweep
        console.print(f"small sweep ({s['runs']} runs x {s['epochs']} epochs, one after another):"
                      f" {s['seconds']:.1f} s; all {s['runs']} in one lockstep group "
                      f"{s['grouped_seconds']:.1f} s, stacked {s['stacked_seconds']:.1f} s; "
                      f"reference loop {s['reference_seconds']:.1f} s "
                      f"({s['reference_seconds'] / s['stacked_seconds']:.1f}x)")
    if report.paper_sweep:
        p = report.paper_sweep
        console.print(f"paper sweep: {p['runs']} runs ({p['trained']} trained, {p['too_small']} "
                      f"too small), {p['epochs']} epochs, groups of {p['group_size']}, "
                      f"{'stacked' if p['stack'] else 'not stacked'}: {p['seconds']:.1f} s, "
                      f"{p['run_steps']:,} run-steps, {p['us_per_run_step']:.1f} us per run-step "
                      f"(of which clustering {p['cluster_s']:.1f} s, evaluation "
                      f"{p['eval_s']:.1f} s)", highlight=False)
    if json_out:
        from cce_bench.results import write_atomically
        write_atomically(json_out, json.dumps(report.to_dict(), indent=2))
        console.print(f"wrote {json_out}")


def _methods_table(report) -> Table:
    table = Table(box=box.SIMPLE, title=f"{report.dataset} ({report.train_rows:,} train rows, batch 4096) on "
                        f"{report.device_name}, torch {report.torch_version}")
    for column in ("method", "ppd", "epoch ms", "ref ms", "x", "steps/s", "samples/s",
                   "eval ms", "ref eval", "MiB"):
        table.add_column(column, justify="left" if column == "method" else "right", no_wrap=True)
    for t in report.methods:
        peak = f"{t.peak_mem_bytes / 2**20:.0f}" if t.peak_mem_bytes else "-"
        table.add_row(t.method, str(t.ppd), f"{1e3 * t.epoch_s:.1f}", f"{1e3 * t.ref_epoch_s:.1f}",
                      f"{t.speedup:.1f}x", f"{t.steps_per_s:,.0f}", f"{t.samples_per_s:,.0f}",
                      f"{1e3 * t.eval_s:.1f}", f"{1e3 * t.ref_eval_s:.1f}", peak)
    return table


def _progress_printer(status):
    def progress(text: str) -> None:
        # In a terminal a status line; in a log (CI, a remote GPU) one plain line per step.
        if console.is_terminal:
            status.update(f"benchmarking: {text}")
        else:
            console.print(text, highlight=False)
    return progress


def _bench_dlrm(methods: list[str] | None, caps: list[int] | None, device: str, steps: int,
                rows: int | None, precision: str, json_out: Path | None,
                grid_only: bool = False, stack: bool = True, resume: bool = False) -> None:
    from cce_bench.results import write_atomically
    from cce_bench.sweeps.bench_dlrm import KAGGLE_TRAIN, PAPER_METHODS, run_dlrm_bench

    for name in methods or []:
        get_method(name)
    with console.status("benchmarking") as status:
        # The grid's own group (all six methods timed) stands in for the methods' groups.
        whole = grid_only and (methods is None or set(methods) >= set(PAPER_METHODS))
        only_grid = (dict(variants=False, large_batch=0, group_sizes=() if whole else None)
                     if grid_only else {})

        def checkpoint(report):  # a cut-short benchmark keeps what it measured
            if json_out:
                write_atomically(json_out, json.dumps(report.to_dict(), indent=2))

        report = run_dlrm_bench(device, rows or KAGGLE_TRAIN, steps, methods, caps,
                                precision=precision, stack=stack,
                                progress=_progress_printer(status),
                                resume_from=json_out if resume else None,
                                checkpoint=checkpoint, **only_grid)
    title = (f"DLRM, Kaggle-shaped ({report.train_rows:,} train rows) on {report.device_name}, "
             f"torch {report.torch_version}")
    for heading, timings in (("full table, one change at a time", report.variants),
                             (f"every method, {report.precision}", report.methods),
                             ("large batches", report.large_batch),
                             (f"lockstep groups at batch 128, per run-step, {report.precision}",
                              report.groups + [g for g in [report.whole_grid] if g])):
        if timings:
            console.print(_dlrm_table(f"{title}: {heading}", timings))
    for reason in report.skipped:
        console.print(f"not timed: {reason}", highlight=False)
    grid = report.grid
    if grid.get("runs"):
        console.print(f"paper Kaggle grid in {report.precision} ({grid['runs']} runs x "
                      f"{grid['epochs']} epochs, "
                      f"{grid['steps_per_epoch']:,} steps each, {grid['evaluations_per_epoch']} "
                      f"evaluations per epoch): {grid['gpu_hours']:.2f} GPU-hours estimated"
                      + (f" (the whole grid in one group: {1e3 * grid['whole_grid_run_step_s']:.3f}"
                         " ms a run-step)" if grid.get("whole_grid_run_step_s") else
                         _speedups(grid.get("lockstep_speedups"))), highlight=False)
    if json_out:
        console.print(f"wrote {json_out}")


def _speedups(speedups: dict | None) -> str:
    if not speedups:
        return " (runs one at a time)"
    return " (lockstep speed-ups: " + ", ".join(f"{m} {f:.1f}x" for m, f in speedups.items()) + ")"


def _dlrm_table(title: str, timings) -> Table:
    table = Table(box=box.SIMPLE, title=title)
    for column in ("configuration", "cap", "batch", "ms/step", "epoch s", "samples/s",
                   "eval s", "cluster s", "table params", "MiB"):
        table.add_column(column, justify="left" if column == "configuration" else "right",
                         no_wrap=True)
    for t in timings:
        def seconds(value):
            return "-" if value is None else f"{value:.2f}"

        peak = f"{t.peak_mem_bytes / 2**20:,.0f}" if t.peak_mem_bytes else "-"
        table.add_row(t.label, f"{t.cap:,}" if t.cap else "-", f"{t.batch_size:,}",
                      f"{1e3 * t.step_s:.3f}", f"{t.epoch_s:,.1f}", f"{t.samples_per_s:,.0f}",
                      seconds(t.eval_s), seconds(t.cluster_s), f"{t.table_params:,}", peak)
    return table


def _bench_reproduce(specs: list[str] | None, methods: list[str] | None, precision: str | None,
                     device: str, group_size: int | None, json_out: Path | None) -> None:
    from dataclasses import asdict

    from cce_bench.sweeps.bench_reproduce import gmf_specs, hours, time_spec

    for name in methods or []:
        get_method(name)
    timings = []
    with console.status("benchmarking") as status:
        for name in specs or gmf_specs():
            timings.append(time_spec(name, device, group_size, methods=methods,
                                     precision=precision, progress=_progress_printer(status)))
    table = Table(box=box.SIMPLE, title="make reproduce, GMF specs: estimated from measured "
                  f"steps, every epoch counted{f', precision {precision}' if precision else ''}")
    for column in ("spec", "train rows", "runs", "run-steps", "us per run-step", "estimate",
                   "slowest methods"):
        table.add_column(column, justify="left" if column in ("spec", "slowest methods")
                         else "right")
    for t in timings:
        slowest = sorted(t.by_method().items(), key=lambda kv: -kv[1])[:3]
        table.add_row(t.spec, f"{t.train_rows:,}", str(t.runs), f"{t.run_steps:,}",
                      f"{t.us_per_run_step:.1f}", hours(t.seconds),
                      ", ".join(f"{m} {hours(s)}" for m, s in slowest))
    total = sum(t.seconds for t in timings)
    if len(timings) > 1:
        table.add_row("all", "", str(sum(t.runs for t in timings)),
                      f"{sum(t.run_steps for t in timings):,}", "", hours(total), "")
    console.print(table)
    for t in timings:
        for reason in t.untimed:
            console.print(f"not timed, so not in the estimate: {reason}", highlight=False)
    if json_out:
        from cce_bench.results import write_atomically
        write_atomically(json_out, json.dumps([asdict(t) | {"by_method": t.by_method()}
                                               for t in timings], indent=2))
        console.print(f"wrote {json_out}")
