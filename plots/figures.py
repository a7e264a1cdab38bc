"""The paper's compression figures: best validation metric against the size of the table.

- `compression_figure`: per dataset, one line per method (mean over seeds, min..max band), the
  full table as a horizontal reference and, on synthetic data, the Bayes-optimal score dashed.
- `chunks_figure`: per dataset, one panel per method run with several n_chunks values, one line
  per value.
- `criteo_figure`: the DLRM datasets side by side, BCE against parameters in the largest table.

A point whose runs were still improving at their last epoch (summary.py) gets a ring in its
method's colour, a full table's line a ring at its right end, and the legend one entry for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from cce_bench.errors import ResultsError

from .style import (BAYES_STYLE, IMPROVING_LABEL, MARKERS, POST_TRAINING_STYLE,
                    REFERENCE_STYLE, Style, draw_paper_curves, figure_style, legend_outside,
                    log2_axis, mark_improving, mark_improving_line, method_styles, save,
                    sweep_label)
from .summary import (PANEL_KEYS, is_post_training, is_reference, main_n_chunks, mean_over_seeds,
                      panels)

METRICS = {"bce": "best validation BCE (lower is better)",
           "auc": "best validation AUC (higher is better)"}
# The labels say which size is counted: parameters alone leave out the per-id index that cce,
# cce_robe and pq keep (vocab x n_chunks int32), which caps their real compression.
X_AXES = {"params": ("params", "parameters per embedding table (index buffers not counted)"),
          "bytes": ("total_bytes", "model bytes incl. index buffers (4 per parameter + "
                    "per-id codes, seeds)"),
          "ppd": ("ppd", "parameters per dimension (budget / dim)")}
# dataset -> {"auc": value, "bce": value}: the truth model's own validation scores.
Bayes = Mapping[str, Mapping[str, float]]


def x_label(x: str, model: str) -> str:
    if x == "params" and model == "dlrm":
        return "parameters in the largest embedding table"
    return X_AXES[x][1]


def panel_title(dataset: str, model: str, dim: int, n_chunks: int | None,
                epochs: pd.Series, sweeps: pd.Series | None = None) -> str:
    """'dataset' over 'GMF · dim 32 · n_chunks 4 · 10 epochs' (two lines never overflow)."""
    most = int(epochs.max())
    span = f"{most} epochs" if epochs.min() == most else f"up to {most} epochs"
    parts = [model.upper(), f"dim {dim}"]
    if n_chunks is not None:
        parts.append(f"n_chunks {n_chunks}")
    parts.append(span)
    # The panel's own sweep where it draws one of several; else the figure's sweep(s).
    own = sweeps.dropna().unique() if sweeps is not None else []
    label = f"sweep {own[0]}" if len(own) == 1 else sweep_label()
    return f"{dataset}{f' ({label})' if label else ''}\n{' · '.join(parts)}"


def draw_methods(ax, summary: pd.DataFrame, metric: str, x: str, styles: dict[str, Style],
                 bayes: float | None, label_suffix: str = "") -> None:
    """Mean lines with min..max bands per method, the full table and Bayes-optimal lines; a
    post-training method (pq) in the reference style, without a band, in its legend group."""
    column = X_AXES[x][0]
    reference = is_reference(summary)
    post = is_post_training(summary)
    for method, group in summary[~reference].groupby("method", sort=False):
        group = group.sort_values(column)
        style = styles[method]
        if post[group.index].all():
            ax.plot(group[column], group[f"{metric}_mean"], marker=style.marker,
                    color=style.color, label=f"{method}{label_suffix}", zorder=3,
                    gid="post-training", **POST_TRAINING_STYLE)
            continue
        ax.plot(group[column], group[f"{metric}_mean"], marker=style.marker, color=style.color,
                label=f"{method}{label_suffix}", zorder=3)
        ax.fill_between(group[column], group[f"{metric}_min"], group[f"{metric}_max"],
                        color=style.color, alpha=0.18, linewidth=0, zorder=2)
    for method, group in summary[~reference & (summary["improving"] > 0)].groupby(
            "method", sort=False):
        mark_improving(ax, group[column], group[f"{metric}_mean"], styles[method].color)
    draw_references(ax, summary[reference], metric, styles, bayes)
    log2_axis(ax, "x")
    ax.grid(True, which="major", alpha=0.3)


def draw_references(ax, reference: pd.DataFrame, metric: str, styles: dict[str, Style],
                    bayes: float | None) -> None:
    for method, group in reference.groupby("method", sort=False):
        params = int(group["params"].max())
        ax.axhline(group[f"{metric}_mean"].mean(), color=styles[method].color,
                   label=f"{method} table ({params:,} params)", **REFERENCE_STYLE)
        if group["improving"].gt(0).any():
            mark_improving_line(ax, group[f"{metric}_mean"].mean(), styles[method].color)
    if bayes is not None:
        ax.axhline(bayes, label="Bayes-optimal", **BAYES_STYLE)


def in_registry_order(summary: pd.DataFrame, styles: dict[str, Style]) -> pd.DataFrame:
    """Rows in registry order, so legends list methods the same way in every figure."""
    rank = {m: i for i, m in enumerate(styles)}
    return summary.sort_values("method", key=lambda s: s.map(rank), kind="stable")


def draw_paper(ax, dataset: str, model: str, epochs: int, methods, metric: str, x: str,
               styles: dict[str, Style]) -> bool:
    """The authors' mean curves of `methods`, dashed in each method's colour, their full table
    as a dashed horizontal line; False where they did not run the dataset (or the axis is
    bytes, which their results do not give). DLRM panels: their Criteo figures
    (paper_criteo.py)."""
    from .paper import AUTHORS_DIM, authors_epochs, authors_summary

    if model == "dlrm":
        from .paper_criteo import draw_criteo_paper

        return draw_criteo_paper(ax, dataset, methods, metric, x, styles)
    paper_epochs = authors_epochs(dataset, epochs) if model == "gmf" else None
    if paper_epochs is None or x == "bytes":
        return False
    theirs = authors_summary(dataset, paper_epochs)
    theirs = theirs[theirs["method"].isin(set(methods))]
    draw_paper_curves(ax, theirs, "ppd", lambda ppd: ppd * (AUTHORS_DIM if x == "params" else 1),
                      metric, styles)
    return True


def compression_figure(best: pd.DataFrame, metric: str, x: str, out_dir: Path,
                       formats: list[str], bayes: Bayes | None = None,
                       reference: str | None = None) -> list[Path]:
    """One figure per dataset (model, dim): <stem>_<metric>.<fmt>; returns the files. With
    reference="paper", the authors' curves are drawn dashed beside ours where they ran."""
    styles = method_styles(best["method"].unique())
    written = []
    for (dataset, model, dim), stem, frame in panels(best):
        n_chunks = main_n_chunks(frame)
        keep = is_reference(frame) | (frame["n_chunks"] == n_chunks)
        summary = in_registry_order(mean_over_seeds(frame[keep]), styles)
        with figure_style():
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
            draw_methods(ax, summary, metric, x, styles, bayes_value(bayes, dataset, metric))
            if reference == "paper":
                draw_paper(ax, dataset, model, int(frame["epochs"].max()),
                           summary["method"].unique(), metric, x, styles)
            ax.set_xlabel(x_label(x, model))
            ax.set_ylabel(METRICS[metric])
            ax.set_title(panel_title(dataset, model, dim, n_chunks, frame["epochs"],
                                     frame["sweep"]))
            legend_outside(ax)
            written += save(fig, out_dir, f"{stem}_{metric}", formats)
    return written


def has_chunk_variation(best: pd.DataFrame) -> bool:
    compressed = best[~is_reference(best)]
    return bool((compressed.groupby([*PANEL_KEYS, "method"])["n_chunks"].nunique() > 1).any())


def chunks_figure(best: pd.DataFrame, metric: str, x: str, out_dir: Path, formats: list[str],
                  bayes: Bayes | None = None) -> list[Path]:
    """Per dataset: one panel per method with several n_chunks, one line per n_chunks value."""
    if not has_chunk_variation(best):
        raise ResultsError("no method was run with more than one n_chunks value; sweep with "
                           "e.g. --n-chunks 2 --n-chunks 4 --n-chunks 8 for the n_chunks figure")
    styles = method_styles(best["method"].unique())
    column = X_AXES[x][0]
    written = []
    for (dataset, model, dim), stem, frame in panels(best):
        summary = in_registry_order(mean_over_seeds(frame), styles)
        reference = summary[is_reference(summary)]
        compressed = summary[~is_reference(summary)]
        varied = [m for m, g in compressed.groupby("method", sort=False)
                  if g["n_chunks"].nunique() > 1]
        if not varied:
            continue
        chunk_values = sorted(compressed["n_chunks"].unique())
        colours = plt.get_cmap("viridis")([i / max(len(chunk_values) - 1, 1) * 0.85
                                           for i in range(len(chunk_values))])
        with figure_style():
            cols = min(3, len(varied))
            rows = -(-len(varied) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 1.6, 2.9 * rows + 0.6),
                                     sharey=True, squeeze=False, constrained_layout=True)
            for ax, method in zip(axes.flat, varied):
                group = compressed[compressed["method"] == method]
                for i, n in enumerate(chunk_values):
                    line = group[group["n_chunks"] == n].sort_values(column)
                    if line.empty:
                        continue
                    ax.plot(line[column], line[f"{metric}_mean"], color=colours[i],
                            marker=MARKERS[i % len(MARKERS)], label=f"n_chunks {n}", zorder=3)
                    ax.fill_between(line[column], line[f"{metric}_min"], line[f"{metric}_max"],
                                    color=colours[i], alpha=0.18, linewidth=0, zorder=2)
                    rising = line[line["improving"] > 0]
                    if not rising.empty:
                        mark_improving(ax, rising[column], rising[f"{metric}_mean"], colours[i])
                draw_references(ax, reference, metric, styles, bayes_value(bayes, dataset, metric))
                log2_axis(ax, "x")
                ax.grid(True, which="major", alpha=0.3)
                ax.set_title(method, color=styles[method].color, fontweight="bold")
                ax.set_xlabel(x_label(x, model))
            for ax in axes.flat[len(varied):]:
                ax.set_visible(False)
            for ax in axes[:, 0]:
                ax.set_ylabel(METRICS[metric])
            fig.suptitle(panel_title(dataset, model, dim, None, frame["epochs"], frame["sweep"]))
            figure_legend(fig, axes.flat[0])
            written += save(fig, out_dir, f"{stem}_chunks_{metric}", formats)
    return written


def criteo_figure(best: pd.DataFrame, metric: str, x: str, out_dir: Path, formats: list[str],
                  bayes: Bayes | None = None, reference: str | None = None) -> list[Path]:
    """The DLRM datasets side by side (the paper's Criteo figure): criteo_<metric>.<fmt>. With
    reference="paper", the authors' curves dashed beside ours where their figures have them."""
    dlrm = best[best["model"] == "dlrm"]
    if dlrm.empty:
        raise ResultsError("no DLRM runs in the results; the Criteo figure needs rows with "
                           "model 'dlrm' (a Criteo sweep)")
    styles = method_styles(best["method"].unique())
    found = panels(dlrm)
    with figure_style():
        fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found) + 1.8, 3.8),
                                 squeeze=False, constrained_layout=True)
        for ax, ((dataset, model, dim), _, frame) in zip(axes.flat, found):
            n_chunks = main_n_chunks(frame)
            keep = is_reference(frame) | (frame["n_chunks"] == n_chunks)
            summary = in_registry_order(mean_over_seeds(frame[keep]), styles)
            draw_methods(ax, summary, metric, x, styles, bayes_value(bayes, dataset, metric))
            if reference == "paper":
                draw_paper(ax, dataset, model, int(frame["epochs"].max()),
                           summary["method"].unique(), metric, x, styles)
            ax.set_xlabel(x_label(x, model))
            ax.set_title(panel_title(dataset, model, dim, n_chunks, frame["epochs"],
                                     frame["sweep"]))
        axes.flat[0].set_ylabel(METRICS[metric])
        figure_legend(fig, *axes.flat)
        return save(fig, out_dir, f"criteo_{metric}", formats)


def figure_legend(fig, *axes) -> None:
    """One legend for a figure of panels, right of them all, each label once (the ring of
    still-improving points last)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if IMPROVING_LABEL in seen:
        seen[IMPROVING_LABEL] = seen.pop(IMPROVING_LABEL)
    fig.legend(list(seen.values()), list(seen), loc="outside right upper", frameon=False)


def bayes_value(bayes: Bayes | None, dataset: str, metric: str) -> float | None:
    if not bayes or dataset not in bayes:
        return None
    value = bayes[dataset].get(metric)
    return float(value) if value is not None else None

