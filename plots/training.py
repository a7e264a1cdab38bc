"""How training went: learning curves of chosen runs, and what each method costs.

- `curves_figure`: validation metric against epoch (or step) for chosen runs; by default every
  method at the middle budget of a dataset, lowest seed, and the full table.
- `cost_figure`: per dataset, seconds to train a run (training + clustering) and training
  throughput (samples per second) against the table size, mean over seeds with min..max band.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from cce_bench.errors import ResultsError

from .figures import (X_AXES, Bayes, bayes_value, figure_legend, in_registry_order, panel_title,
                      x_label)
from .style import (BAYES_STYLE, REFERENCE_STYLE, figure_style, legend_outside, log2_axis,
                    log10_axis, method_styles, save)
from .summary import is_reference, main_n_chunks, mean_over_seeds, panels, result_rows

CURVE_X = {"epoch": ("epoch", "epoch"), "step": ("step", "training step (batches)")}
CURVE_METRICS = {"bce": "validation BCE", "auc": "validation AUC"}
LINESTYLES = ["-", "--", "-.", (0, (1, 1.5)), (0, (5, 1, 1, 1, 1, 1))]


@dataclass
class CurveSelection:
    """Which runs a curves figure shows. Empty fields: the defaults in `select_runs`."""

    methods: list[str] | None = None
    budgets: list[float] | None = None  # parameters per dimension
    seeds: list[int] | None = None
    run_ids: list[str] | None = None  # full ids or unique prefixes; other fields then ignored
    x: str = "epoch"


def select_runs(best: pd.DataFrame, selection: CurveSelection) -> pd.DataFrame:
    """The best_per_run rows of the runs to draw, within one panel."""
    if selection.run_ids:
        wanted = best["run_id"].map(lambda rid: any(rid.startswith(p) for p in selection.run_ids))
        return best[wanted]
    chosen = best
    if selection.methods:
        chosen = chosen[chosen["method"].isin(selection.methods)]
    reference = is_reference(chosen)
    compressed = chosen[~reference]
    budgets = selection.budgets
    if not budgets and not compressed.empty:
        values = sorted(compressed["ppd"].unique())
        budgets = [values[len(values) // 2]]  # the middle budget: neither starved nor lavish
    if budgets:
        compressed = compressed[compressed["ppd"].isin(budgets)]
    n_chunks = main_n_chunks(compressed)
    if n_chunks is not None:
        compressed = compressed[compressed["n_chunks"] == n_chunks]
    chosen = pd.concat([chosen[reference], compressed])
    seeds = selection.seeds or ([int(chosen["seed"].min())] if not chosen.empty else [])
    return chosen[chosen["seed"].isin(seeds)]


def curves_figure(rows: pd.DataFrame, best: pd.DataFrame, metric: str, out_dir: Path,
                  formats: list[str], selection: CurveSelection | None = None,
                  bayes: Bayes | None = None) -> list[Path]:
    """Per dataset: <stem>_curves_<metric>.<fmt>, one line per chosen run."""
    selection = selection or CurveSelection()
    styles = method_styles(best["method"].unique())
    ok = result_rows(rows)
    x_column, x_text = CURVE_X[selection.x]
    written, drawn = [], 0
    for (dataset, model, dim), stem, frame in panels(best):
        runs = in_registry_order(select_runs(frame, selection), styles)
        if runs.empty:
            continue
        drawn += 1
        budgets = sorted(runs.loc[~is_reference(runs), "ppd"].unique())
        several_seeds = runs["seed"].nunique() > 1
        references = set(runs.loc[is_reference(runs), "run_id"])
        with figure_style():
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
            for run in runs.itertuples(index=False):
                points = ok[ok["run_id"] == run.run_id].sort_values(["epoch", "step"])
                style = styles[run.method]
                reference = run.run_id in references
                label = f"{run.method} table" if reference else f"{run.method} · ppd {run.ppd:g}"
                if several_seeds:
                    label += f" · seed {run.seed}"
                dash = REFERENCE_STYLE["linestyle"] if reference else \
                    LINESTYLES[budgets.index(run.ppd) % len(LINESTYLES)]
                ax.plot(points[x_column], points[f"val_{metric}"], color=style.color,
                        marker=style.marker, markersize=3.5, linestyle=dash, label=label)
            value = bayes_value(bayes, dataset, metric)
            if value is not None:
                ax.axhline(value, label="Bayes-optimal", **BAYES_STYLE)
            ax.set_xlabel(x_text)
            ax.set_ylabel(CURVE_METRICS[metric])
            if selection.x == "epoch":
                ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(True, alpha=0.3)
            ax.set_title(panel_title(dataset, model, dim, main_n_chunks(runs), frame["epochs"],
                                     frame["sweep"]))
            legend_outside(ax)
            written += save(fig, out_dir, f"{stem}_curves_{metric}", formats)
    if not drawn:
        raise ResultsError("no run matches the curve selection (--method, --budget, --seed, "
                           "--run); check the values against `cce-bench report`")
    return written


def cost_figure(best: pd.DataFrame, x: str, out_dir: Path, formats: list[str]) -> list[Path]:
    """Per dataset: <stem>_cost.<fmt>, seconds per run and samples per second per method."""
    styles = method_styles(best["method"].unique())
    column = X_AXES[x][0]
    panels_spec = [("fit_s", "seconds to train a run\n(training + clustering)"),
                   ("samples_per_s", "training throughput\n(samples per second)")]
    written = []
    for (dataset, model, dim), stem, frame in panels(best):
        n_chunks = main_n_chunks(frame)
        keep = is_reference(frame) | (frame["n_chunks"] == n_chunks)
        summary = in_registry_order(mean_over_seeds(frame[keep]), styles)
        reference = is_reference(summary)
        with figure_style():
            fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.9), constrained_layout=True)
            for ax, (key, label) in zip(axes, panels_spec):
                for method, group in summary[~reference].groupby("method", sort=False):
                    group = group.sort_values(column)
                    style = styles[method]
                    ax.plot(group[column], group[f"{key}_mean"], color=style.color,
                            marker=style.marker, label=method, zorder=3)
                    ax.fill_between(group[column], group[f"{key}_min"], group[f"{key}_max"],
                                    color=style.color, alpha=0.18, linewidth=0, zorder=2)
                for method, group in summary[reference].groupby("method", sort=False):
                    ax.axhline(group[f"{key}_mean"].mean(), color=styles[method].color,
                               label=f"{method} table", **REFERENCE_STYLE)
                log2_axis(ax, "x")
                log10_axis(ax, summary[[f"{key}_min", f"{key}_max"]].to_numpy().ravel())
                ax.grid(True, which="major", alpha=0.3)
                ax.set_xlabel(x_label(x, model))
                ax.set_ylabel(label)
            fig.suptitle(panel_title(dataset, model, dim, n_chunks, frame["epochs"],
                                     frame["sweep"]))
            figure_legend(fig, *axes)
            written += save(fig, out_dir, f"{stem}_cost", formats)
    return written
