"""The comparison against the paper as text: markdown, CSV and LaTeX; the CLI draws its rich
tables from the same `metric_rows`. One table per metric and dataset (and sweep), rows grouped
as the full table, the training-time methods and the post-training reference (pq), then one
verdict line per method. The section says which metrics, budget column and spread it has (GMF:
their result files; Criteo: their figures, paper_criteo.py)."""

from __future__ import annotations

import pandas as pd

from .paper import NOT_RUN_BY_AUTHORS, NOT_RUN_HERE, Comparison, PaperSection, method_label
from .report import IMPROVING_MARK, METRIC_NAMES, _tex, cell_text

HEADER = ("method", "ppd", "ours", "paper", "paper min..max", "ours − paper", "verdict")
GROUP_TITLES = {"uncompressed": "", "training": "",
                "post-training": "post-training reference"}


def notes(section: PaperSection) -> list[str]:
    """The lines that say what is compared and how the verdict is defined."""
    return section.notes()


def header(section: PaperSection) -> tuple[str, ...]:
    """HEADER with the section's budget and spread columns."""
    return ("method", section.budget_header, *HEADER[2:4], section.spread_header, *HEADER[5:])


def metric_rows(section: PaperSection, metric: str) -> list[tuple[str, list[tuple[str, ...]]]]:
    """[(group, [row cells as text, HEADER order])] for one metric, groups in order. Budgets
    only the authors ran stay out of the tables (the verdict lines list them; the CSV has them)."""
    out = []
    for group, rows in section.rows.groupby("group", sort=False):
        cells = []
        for row in rows[rows["note"] != NOT_RUN_HERE].itertuples(index=False):
            row = row._asdict()
            label = method_label(row["method"], "training" if group == "training" else "",
                                 row["n_chunks"])
            digits = section.digits
            ours = (NOT_RUN_HERE if pd.isna(row[f"{metric}_mean"]) else
                    cell_text(row[f"{metric}_mean"], row[f"{metric}_std"], row["seeds"],
                              digits=digits)
                    + (f" {IMPROVING_MARK}" if row["still_improving"] > 0 else ""))
            if pd.isna(row[f"paper_{metric}_mean"]):
                paper, spread = NOT_RUN_BY_AUTHORS, "—"
            else:
                paper = cell_text(row[f"paper_{metric}_mean"], row[f"paper_{metric}_std"],
                                  row["paper_seeds"], digits=digits)
                spread = section.spread_cell(row, metric)
            diff = ("—" if pd.isna(row[f"{metric}_diff"])
                    else f"{row[f'{metric}_diff']:+.{digits}f}")
            cells.append((label, section.budget_cell(row), ours, paper, spread, diff,
                          row[f"{metric}_verdict"] or "—"))
        out.append((group, cells))
    return out


def to_csv(comparison: Comparison) -> str:
    return comparison.long_frame().to_csv(index=False, float_format="%.6g")


def to_markdown(comparison: Comparison) -> str:
    lines = []
    for section in comparison.sections:
        lines += [f"### {section.title}", ""]
        if not section.ran:
            lines += [section.not_run_line() + ".", ""]
            continue
        lines += [" ".join(notes(section)), ""]
        for metric in section.metrics:
            lines += [f"Best {METRIC_NAMES[metric]}.", ""]
            lines.append("| " + " | ".join(header(section)) + " |")
            lines.append("| --- |" + " ---: |" * (len(HEADER) - 2) + " --- |")
            for group, cells in metric_rows(section, metric):
                if GROUP_TITLES[group]:
                    lines.append(f"| *{GROUP_TITLES[group]}* |" + " |" * (len(HEADER) - 1))
                lines += ["| " + " | ".join(row) + " |" for row in cells]
            lines.append("")
        lines += ["Verdict per method:", ""]
        lines += [f"- {line}" for line in section.method_lines()]
        if section.also_ran:
            lines += ["", section.also_ran_line() + "."]
        lines.append("")
    return "\n".join(lines)


def to_latex(comparison: Comparison) -> str:
    """booktabs tables, one per dataset and metric; needs \\usepackage{booktabs}."""
    out = []
    for section in comparison.sections:
        if not section.ran:
            out.append(f"% {_tex(section.not_run_line())}.\n")
            continue
        for metric in section.metrics:
            out.append("\\begin{table}[t]\n\\centering\n\\small")
            caption = (f"{section.title}: best {METRIC_NAMES[metric]}. " + " ".join(notes(section))
                       + " Verdicts: " + "; ".join(section.method_lines()) + ".")
            out.append(f"\\caption{{{_tex(caption)}}}")
            out.append("\\begin{tabular}{lrrrrrl}\n\\toprule")
            out.append(" & ".join(_tex(h) for h in header(section))
                       + " \\\\\n\\midrule")
            for group, cells in metric_rows(section, metric):
                if GROUP_TITLES[group]:
                    out.append(f"\\midrule\n\\multicolumn{{{len(HEADER)}}}{{l}}"
                               f"{{\\emph{{{_tex(GROUP_TITLES[group])}}}}} \\\\")
                for row in cells:
                    out.append(" & ".join(_tex(v).replace("—", "--") for v in row) + " \\\\")
            out.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return "\n".join(out)
