"""The report: best validation AUC and BCE per method and budget, mean over seeds."""

from __future__ import annotations

import pandas as pd

from .summary import mean_over_seeds

FORMATS = ["table", "csv", "markdown"]


def report_frame(best: pd.DataFrame) -> pd.DataFrame:
    summary = mean_over_seeds(best)
    summary = summary.sort_values(["dataset", "method", "params"])
    return summary[["dataset", "method", "ppd", "params", "n_chunks", "seeds",
                    "auc_mean", "auc_std", "bce_mean", "bce_std"]].reset_index(drop=True)


def to_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 10000 else str(value)
    return str(value)
