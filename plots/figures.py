"""The paper's compression figures: best validation metric against parameters per table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .summary import mean_over_seeds  # noqa: E402

METRICS = {"bce": ("bce", "best validation BCE (lower is better)"),
           "auc": ("auc", "best validation AUC (higher is better)")}


def method_colors(methods: list[str]) -> dict[str, tuple]:
    """A fixed colour per registered method, the same in every figure."""
    from cce_bench.embeddings import method_names

    known = method_names()
    palette = plt.get_cmap("tab20").colors
    return {m: palette[(known.index(m) if m in known else len(known) + i) % len(palette)]
            for i, m in enumerate(methods)}


def compression_figure(best: pd.DataFrame, dataset: str, metric: str, out_dir: Path,
                       formats: list[str]) -> list[Path]:
    """One figure for one dataset; returns the files written."""
    key, ylabel = METRICS[metric]
    summary = mean_over_seeds(best[best["dataset"] == dataset])
    colors = method_colors(sorted(summary["method"].unique()))
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for method, group in summary.groupby("method"):
        group = group.sort_values("params")
        if len(group) == 1 and group["budget_asked"].iloc[0] == 0:  # the full table
            ax.axhline(group[f"{key}_mean"].iloc[0], color=colors[method], linestyle=":",
                       label=f"{method} ({int(group['params'].iloc[0]):,} params)")
            continue
        ax.plot(group["params"], group[f"{key}_mean"], marker="o", color=colors[method],
                label=method)
        ax.fill_between(group["params"], group[f"{key}_min"], group[f"{key}_max"],
                        color=colors[method], alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("parameters per embedding table")
    ax.set_ylabel(ylabel)
    first = best[best["dataset"] == dataset].iloc[0]
    ax.set_title(f"{dataset}: {first['model'].upper()}, dim {first['dim']}, "
                 f"n_chunks {first['n_chunks']}, {int(summary['epochs'].max())} epochs")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out_dir / f"{dataset}_{metric}.{fmt}"
        fig.savefig(path, dpi=300 if fmt == "png" else None, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written
