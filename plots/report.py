"""The report: best validation AUC and BCE per method and budget, and compression at parity.

`build_report` turns best_per_run rows into a Report: per dataset (model, dim), the mean ± std
over seeds of each method at each budget, the best method per budget marked, and, per method,
the smallest budget whose mean BCE comes within a tolerance of the full table's (the paper's
"compression at parity") with the full table's size divided by the method's. Renderers write it
as markdown, CSV or LaTeX; the CLI draws the terminal tables from the same Report.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .style import method_styles
from .summary import PANEL_KEYS, is_reference, mean_over_seeds

FORMATS = ["table", "markdown", "csv", "latex"]
DEFAULT_TOLERANCE = 0.001  # BCE; the paper's parity threshold
METRIC_NAMES = {"bce": "val BCE (lower is better)", "auc": "val AUC (higher is better)"}


@dataclass
class Section:
    """One dataset, model and dim: the tables a reader compares side by side."""

    dataset: str
    model: str
    dim: int
    cells: pd.DataFrame  # one row per method, n_chunks and budget (compressed methods)
    reference: pd.DataFrame  # the full table's row(s)
    parity: pd.DataFrame  # one row per method and n_chunks

    @property
    def title(self) -> str:
        return f"{self.dataset} ({self.model.upper()}, dim {self.dim})"

    def row_label(self, method: str, n_chunks: int) -> str:
        several = self.cells[self.cells["method"] == method]["n_chunks"].nunique() > 1
        return f"{method}, {n_chunks} chunks" if several else method

    def grid(self, metric: str) -> tuple[list[str], list[float], dict]:
        """Row labels, budgets (ppd) and {(label, ppd): (mean, std, best)} for one metric."""
        budgets = sorted(self.cells["ppd"].unique())
        labels, values = [], {}
        for row in self.cells.itertuples(index=False):
            label = self.row_label(row.method, row.n_chunks)
            if label not in labels:
                labels.append(label)
            values[(label, row.ppd)] = (getattr(row, f"{metric}_mean"),
                                        getattr(row, f"{metric}_std"), getattr(row, f"best_{metric}"))
        return labels, budgets, values

    def reference_line(self) -> str:
        if self.reference.empty:
            return "no full-table run: compression at parity cannot be computed"
        ref = self.reference.iloc[0]
        return (f"{ref['method']} table: {int(ref['params']):,} params, "
                f"val BCE {ref['bce_mean']:.4f} ± {ref['bce_std']:.4f}, "
                f"val AUC {ref['auc_mean']:.4f} ± {ref['auc_std']:.4f} ({int(ref['seeds'])} seeds)")


@dataclass
class Report:
    sections: list[Section]
    tolerance: float

    def long_frame(self) -> pd.DataFrame:
        """Every cell as one tidy row, with its method's parity columns (the CSV format)."""
        frames = []
        for s in self.sections:
            parity = s.parity[["method", "n_chunks", "parity_ppd", "parity_params", "ratio"]]
            cells = s.cells.merge(parity, on=["method", "n_chunks"], how="left")
            frames.append(pd.concat([s.reference.assign(best_auc=False, best_bce=False), cells]))
        frame = pd.concat(frames, ignore_index=True)
        return frame[["dataset", "model", "dim", "method", "n_chunks", "ppd", "budget_asked",
                      "params", "total_bytes", "seeds", "auc_mean", "auc_std", "bce_mean",
                      "bce_std", "best_auc", "best_bce", "parity_ppd", "parity_params", "ratio"]]


def build_report(best: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> Report:
    summary = mean_over_seeds(best)
    rank = {m: i for i, m in enumerate(method_styles(summary["method"].unique()))}
    summary = summary.sort_values(["method", "n_chunks", "budget_asked"],
                                  key=lambda s: s.map(rank) if s.name == "method" else s)
    sections = []
    for (dataset, model, dim), frame in summary.groupby(PANEL_KEYS, sort=True):
        reference = frame[is_reference(frame)]
        cells = frame[~is_reference(frame)].copy()
        # Ties share the mark: two methods equally good at a budget are both best.
        by_budget = cells.groupby("budget_asked")
        cells["best_bce"] = cells["bce_mean"] == by_budget["bce_mean"].transform("min")
        cells["best_auc"] = cells["auc_mean"] == by_budget["auc_mean"].transform("max")
        sections.append(Section(dataset, model, int(dim), cells.reset_index(drop=True),
                                reference.reset_index(drop=True),
                                _parity(cells, reference, tolerance)))
    return Report(sections, tolerance)


def _parity(cells: pd.DataFrame, reference: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per method and n_chunks: the smallest budget with mean BCE <= full table's + tolerance."""
    rows = []
    full_bce = reference["bce_mean"].iloc[0] if not reference.empty else None
    full_params = reference["params"].iloc[0] if not reference.empty else None
    for (method, n_chunks), group in cells.groupby(["method", "n_chunks"], sort=False):
        row = {"method": method, "n_chunks": n_chunks, "parity_ppd": float("nan"),
               "parity_params": float("nan"), "ratio": float("nan")}
        if full_bce is not None:
            close = group[group["bce_mean"] <= full_bce + tolerance]
            if not close.empty:
                first = close.sort_values("budget_asked").iloc[0]
                row |= {"parity_ppd": first["ppd"], "parity_params": first["params"],
                        "ratio": full_params / first["params"]}
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "n_chunks", "parity_ppd", "parity_params",
                                       "ratio"])


def parity_rows(section: Section) -> list[tuple[str, str, str, str]]:
    """(method, budget, params, full / params) as text, '—' where parity is never reached."""
    out = []
    for row in section.parity.itertuples(index=False):
        label = section.row_label(row.method, row.n_chunks)
        if section.reference.empty:
            out.append((label, "no full-table run", "—", "—"))
        elif pd.isna(row.parity_ppd):
            out.append((label, "not reached", "—", "—"))
        else:
            out.append((label, f"{row.parity_ppd:g} ppd", f"{int(row.parity_params):,}",
                        f"{row.ratio:,.1f}×"))
    return out


def row_cells(values: dict, label: str, budgets: list[float], bold) -> list[str]:
    """One method's cells across budgets: "mean ± std", `bold(text)` where best, a dash where
    the method has no result at that budget."""
    cells = []
    for b in budgets:
        if (label, b) not in values:
            cells.append("—")
            continue
        mean, std, best = values[(label, b)]
        text = cell_text(mean, std)
        cells.append(bold(text) if best else text)
    return cells


def cell_text(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def to_csv(report: Report) -> str:
    return report.long_frame().to_csv(index=False, float_format="%.6g")


def to_markdown(report: Report) -> str:
    lines = []
    for section in report.sections:
        lines += [f"### {section.title}", "", section.reference_line() + ".", ""]
        for metric in ("bce", "auc"):
            labels, budgets, values = section.grid(metric)
            lines.append(f"Best {METRIC_NAMES[metric]}, mean ± std over seeds; "
                         "**bold**: best method at that budget (ppd = parameters per dimension).")
            lines.append("")
            lines.append("| method | " + " | ".join(f"{b:g} ppd" for b in budgets) + " |")
            lines.append("| --- |" + " ---: |" * len(budgets))
            for label in labels:
                cells = row_cells(values, label, budgets, lambda text: f"**{text}**")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
        lines.append(f"Compression at parity: smallest budget within {report.tolerance:g} BCE "
                     "of the full table, and the full table's size over the method's.")
        lines.append("")
        lines.append("| method | budget | params | full / params |")
        lines.append("| --- | ---: | ---: | ---: |")
        for row in parity_rows(section):
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def to_latex(report: Report) -> str:
    """booktabs tables, best cells in bold; needs \\usepackage{booktabs} in the preamble."""
    out = []
    for section in report.sections:
        for metric in ("bce", "auc"):
            labels, budgets, values = section.grid(metric)
            out.append("\\begin{table}[t]\n\\centering\n\\small")
            out.append(f"\\caption{{{_tex(section.title)}: best {_tex(METRIC_NAMES[metric])}, "
                       f"mean $\\pm$ std over seeds; bold: best at that budget. "
                       f"{_tex(section.reference_line())}.}}")
            out.append("\\begin{tabular}{l" + "r" * len(budgets) + "}\n\\toprule")
            out.append("method & " + " & ".join(f"{b:g} ppd" for b in budgets) + " \\\\\n\\midrule")
            for label in labels:
                cells = []
                for b in budgets:
                    if (label, b) not in values:
                        cells.append("--")
                        continue
                    mean, std, best = values[(label, b)]
                    text = f"{mean:.4f} $\\pm$ {std:.4f}"
                    cells.append(f"\\textbf{{{text}}}" if best else text)
                out.append(f"{_tex(label)} & " + " & ".join(cells) + " \\\\")
            out.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
        out.append("\\begin{table}[t]\n\\centering\n\\small")
        out.append(f"\\caption{{{_tex(section.title)}: compression at parity (smallest budget "
                   f"within {report.tolerance:g} BCE of the full table).}}")
        out.append("\\begin{tabular}{lrrr}\n\\toprule\nmethod & budget & params & full / params "
                   "\\\\\n\\midrule")
        for row in parity_rows(section):
            out.append(" & ".join(_tex(v).replace("×", "$\\times$").replace("—", "--")
                                  for v in row) + " \\\\")
        out.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return "\n".join(out)


def _tex(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                          ("#", "\\#"), ("±", "$\\pm$")):
        text = text.replace(char, escaped)
    return text
