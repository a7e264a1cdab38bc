"""The report: best validation AUC and BCE per method and budget, and compression at parity.

`build_report` turns best_per_run rows into a Report: per dataset (model, dim), the mean ± std
over seeds of each method at each budget, the best method per budget marked, and, per method,
the smallest budget whose mean BCE comes within a tolerance of the full table's (the paper's
"compression at parity") with the full table's size divided by the method's, counted in
parameters and in bytes (parameters x 4 plus index buffers such as CCE's per-id codes, which cap
the real compression of cce, cce_robe and pq). A post-training method (pq) is listed apart: it
trains the full table and quantizes it afterwards, so it is a reference, not a competitor, and
its peak training size is the full table's. Renderers write it as markdown, CSV or LaTeX; the
CLI draws the terminal tables from the same Report.

A cell some of whose seeds were still improving at their last epoch (they ran every epoch, and
the last one still improved their best val BCE or AUC by more than the early-stop tolerance;
summary.py) carries IMPROVING_MARK and a footnote says so: its score measures the training
length as much as the method. The CSV gives the number of such seeds (`still_improving`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .style import method_styles
from .summary import is_post_training, is_reference, mean_over_seeds, report_groups

FORMATS = ["table", "markdown", "csv", "latex"]
DEFAULT_TOLERANCE = 0.001  # BCE; the paper's parity threshold
IMPROVING_MARK = "†"
IMPROVING_NOTE = ("† still improving at the last epoch (in at least one seed): the run ran every "
                  "epoch and its last epoch still improved its best val BCE or AUC by more than "
                  "the early-stop tolerance (1% by default), so its score may rise with more "
                  "epochs (under-trained, not a measure of capacity alone)")
METRIC_NAMES = {"bce": "val BCE (lower is better)", "auc": "val AUC (higher is better)",
                "test": "test BCE at the best val BCE point (lower is better)"}


@dataclass
class Section:
    """One dataset, model and dim: the tables a reader compares side by side."""

    dataset: str
    model: str
    dim: int
    cells: pd.DataFrame  # one row per method, n_chunks and budget (training-time methods)
    reference: pd.DataFrame  # the full table's row(s)
    parity: pd.DataFrame  # one row per method and n_chunks, post-training ones included
    post: pd.DataFrame  # like cells, for post-training methods (pq): listed apart
    sweep: str | None = None  # set where the report holds several sweeps: one section each

    @property
    def title(self) -> str:
        which = f", sweep {self.sweep}" if self.sweep else ""
        return f"{self.dataset} ({self.model.upper()}, dim {self.dim}{which})"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The tables to show: validation BCE and AUC, and test BCE where a test split exists
        (read at each run's best validation point, never its best test value)."""
        has_test = not self.cells.empty and self.cells["test_mean"].notna().any()
        return ("bce", "auc", "test") if has_test else ("bce", "auc")

    def budget_label(self, ppd: float) -> str:
        """A budget as its sweep gave it: parameters per dimension for GMF, parameters per
        table (the cap) for DLRM, the paper's axis for each."""
        return f"{ppd * self.dim:,.0f} params" if self.model == "dlrm" else f"{ppd:g} ppd"

    def row_label(self, method: str, n_chunks: int) -> str:
        both = pd.concat([self.cells, self.post])
        several = both[both["method"] == method]["n_chunks"].nunique() > 1
        return f"{method}, {n_chunks} chunks" if several else method

    def grid(self, metric: str, post: bool = False) -> tuple[list[str], list[float], dict]:
        """Row labels, budgets (ppd) and {(label, ppd): (mean, std, best, seeds, improving)}
        for one metric, of the training-time methods or (post=True) of the post-training ones;
        improving: how many of the cell's seeds were still improving at their last epoch."""
        frame = self.post if post else self.cells
        budgets = sorted(frame["ppd"].unique())
        labels, values = [], {}
        for row in frame.itertuples(index=False):
            label = self.row_label(row.method, row.n_chunks)
            if label not in labels:
                labels.append(label)
            values[(label, row.ppd)] = (getattr(row, f"{metric}_mean"),
                                        getattr(row, f"{metric}_std"),
                                        getattr(row, f"best_{metric}", False), row.seeds,
                                        row.improving)
        return labels, budgets, values

    def reference_line(self) -> str:
        if self.reference.empty:
            return "no full-table run: compression at parity cannot be computed"
        ref = self.reference.iloc[0]
        return (f"{ref['method']} table: {int(ref['params']):,} params "
                f"({int(ref['total_bytes']):,} bytes), "
                f"val BCE {cell_text(ref['bce_mean'], ref['bce_std'], ref['seeds'])}, "
                f"val AUC {cell_text(ref['auc_mean'], ref['auc_std'], ref['seeds'])}"
                + (f", test BCE {cell_text(ref['test_mean'], ref['test_std'], ref['seeds'])}"
                   if pd.notna(ref.get("test_mean")) else "")
                + f" ({int(ref['seeds'])} seed{'s' if ref['seeds'] > 1 else ''}"
                + (f"; {IMPROVING_MARK} {int(ref['improving'])} of {int(ref['seeds'])} still "
                   "improving at the last epoch" if ref["improving"] else "") + ")")

    @property
    def any_improving(self) -> bool:
        """Whether any run of the section was still improving at its last epoch."""
        return bool(pd.concat([self.cells, self.post, self.reference])["improving"].gt(0).any())

    def improving_note(self) -> str:
        """The footnote for IMPROVING_MARK, or '' where no run of the section needs it."""
        return IMPROVING_NOTE if self.any_improving else ""

    @property
    def peak_params(self) -> int | None:
        """What a post-training method holds while it trains: the full table (the CSV records
        its size after compression only), so the full run's parameter count, if there is one."""
        return None if self.reference.empty else int(self.reference["params"].max())

    def post_line(self) -> str:
        """What the post-training block is and its peak training size."""
        names = ", ".join(dict.fromkeys(self.post["method"]))
        peak = (f"{self.peak_params:,} params, the full table's" if self.peak_params is not None
                else "the full table's; no full-table run here gives its size")
        return (f"Post-training reference, listed apart ({names}): trains the full table, then "
                f"quantizes it, so it is not a training-time method; scored on its epochs after "
                f"compression; peak training size {peak}")


@dataclass
class Report:
    sections: list[Section]
    tolerance: float

    def long_frame(self) -> pd.DataFrame:
        """Every cell as one tidy row, with its method's parity columns (the CSV format)."""
        frames = []
        for s in self.sections:
            parity = s.parity[["method", "n_chunks", *PARITY_COLUMNS]]
            cells = s.cells.assign(post_training=False)
            post = s.post.assign(post_training=True, best_auc=False, best_bce=False,
                                 peak_train_params=s.peak_params)
            cells = pd.concat([cells, post]).merge(parity, on=["method", "n_chunks"], how="left")
            reference = s.reference.assign(best_auc=False, best_bce=False, post_training=False)
            frames.append(pd.concat([reference, cells]))
        frame = pd.concat(frames, ignore_index=True).rename(
            columns={"improving": "still_improving"})  # seeds still improving at the last epoch
        if "peak_train_params" not in frame:
            frame["peak_train_params"] = float("nan")
        return frame[["dataset", "sweep", "model", "dim", "method", "n_chunks", "ppd",
                      "budget_asked", "params", "total_bytes", "seeds", "auc_mean", "auc_std",
                      "bce_mean", "bce_std", "best_auc", "best_bce", "test_mean", "test_std",
                      "still_improving", "post_training", "peak_train_params",
                      *PARITY_COLUMNS]]


def build_report(best: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> Report:
    summary = mean_over_seeds(best)
    rank = {m: i for i, m in enumerate(method_styles(summary["method"].unique()))}
    summary = summary.sort_values(["method", "n_chunks", "budget_asked"],
                                  key=lambda s: s.map(rank) if s.name == "method" else s)
    sections = []
    keys = report_groups(summary)
    for key, frame in summary.groupby(keys, sort=True):
        dataset, model, dim = key[:3]
        sweep = key[3] if len(key) > 3 else None
        reference = frame[is_reference(frame)]
        post = frame[~is_reference(frame) & is_post_training(frame)]
        cells = frame[~is_reference(frame) & ~is_post_training(frame)].copy()
        # Ties share the mark: two methods equally good at a budget are both best.
        by_budget = cells.groupby("budget_asked")
        cells["best_bce"] = cells["bce_mean"] == by_budget["bce_mean"].transform("min")
        cells["best_auc"] = cells["auc_mean"] == by_budget["auc_mean"].transform("max")
        cells["best_test"] = cells["test_mean"] == by_budget["test_mean"].transform("min")
        sections.append(Section(dataset, model, int(dim), cells.reset_index(drop=True),
                                reference.reset_index(drop=True),
                                _parity(pd.concat([cells, post]), reference, tolerance),
                                post.reset_index(drop=True), sweep))
    return Report(sections, tolerance)


PARITY_COLUMNS = ["parity_ppd", "parity_params", "ratio", "parity_bytes", "ratio_bytes"]
PARITY_HEADER = ("method", "budget", "params", "full / params", "bytes", "full / bytes")


def _parity(cells: pd.DataFrame, reference: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per method and n_chunks: the smallest budget with mean BCE <= full table's + tolerance,
    and the full table's size over the method's there, in parameters and in total bytes."""
    rows = []
    full = reference.iloc[0] if not reference.empty else None
    for (method, n_chunks), group in cells.groupby(["method", "n_chunks"], sort=False):
        row = {"method": method, "n_chunks": n_chunks} | dict.fromkeys(PARITY_COLUMNS,
                                                                        float("nan"))
        if full is not None:
            close = group[group["bce_mean"] <= full["bce_mean"] + tolerance]
            if not close.empty:
                first = close.sort_values("budget_asked").iloc[0]
                row |= {"parity_ppd": first["ppd"], "parity_params": first["params"],
                        "ratio": full["params"] / first["params"],
                        "parity_bytes": first["total_bytes"],
                        "ratio_bytes": full["total_bytes"] / first["total_bytes"]}
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "n_chunks", *PARITY_COLUMNS])


def parity_rows(section: Section) -> list[tuple[str, ...]]:
    """(method, budget, params, full / params, bytes, full / bytes) as text, '—' where parity
    is never reached; a post-training method is marked so and comes last."""
    out, post = [], set(section.post["method"])
    parity = section.parity.assign(post=section.parity["method"].isin(post))
    for row in parity.sort_values("post", kind="stable").itertuples(index=False):
        label = section.row_label(row.method, row.n_chunks)
        if row.post:
            label += " (post-training)"
        if section.reference.empty:
            out.append((label, "no full-table run", "—", "—", "—", "—"))
        elif pd.isna(row.parity_ppd):
            out.append((label, "not reached", "—", "—", "—", "—"))
        else:
            out.append((label, section.budget_label(row.parity_ppd),
                        f"{int(row.parity_params):,}", f"{row.ratio:,.1f}×",
                        f"{int(row.parity_bytes):,}", f"{row.ratio_bytes:,.1f}×"))
    return out


def row_cells(values: dict, label: str, budgets: list[float], bold, pm: str = "±",
              dash: str = "—", mark: str = IMPROVING_MARK) -> list[str]:
    """One method's cells across budgets: "mean ± std", `bold(text)` where best, a dash where
    the method has no result at that budget, `mark` after a cell with a seed still improving
    at its last epoch."""
    cells = []
    for b in budgets:
        if (label, b) not in values:
            cells.append(dash)
            continue
        mean, std, best, seeds, improving = values[(label, b)]
        text = cell_text(mean, std, seeds, pm) + (f" {mark}" if improving else "")
        cells.append(bold(text) if best else text)
    return cells


def cell_text(mean: float, std: float, seeds: int = 2, pm: str = "±", digits: int = 4) -> str:
    """'mean ± std'; one seed has no spread, so the value alone (never '± 0.0000')."""
    if seeds == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} {pm} {std:.{digits}f}"


def seeds_note(section: Section) -> str:
    counts = pd.concat([section.cells, section.post, section.reference])["seeds"]
    if counts.empty or counts.max() > 1:
        return "mean ± std over seeds (one seed: the value alone)"
    return "1 seed (no spread)"


def _unit_note(section: Section) -> str:
    if section.model == "dlrm":
        return "params: the cap on parameters per table"
    return "ppd = parameters per dimension"


def to_csv(report: Report) -> str:
    return report.long_frame().to_csv(index=False, float_format="%.6g")


def _markdown_grid(section: Section, metric: str, post: bool) -> list[str]:
    labels, budgets, values = section.grid(metric, post)
    lines = ["| method | " + " | ".join(section.budget_label(b) for b in budgets) + " |",
             "| --- |" + " ---: |" * len(budgets)]
    for label in labels:
        cells = row_cells(values, label, budgets, lambda text: f"**{text}**")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def to_markdown(report: Report) -> str:
    lines = []
    for section in report.sections:
        lines += [f"### {section.title}", "", section.reference_line() + ".", ""]
        if section.any_improving:
            lines += [section.improving_note() + ".", ""]
        for metric in section.metrics:
            if not section.cells.empty:
                lines.append(f"Best {METRIC_NAMES[metric]}, {seeds_note(section)}; **bold**: "
                             "best method at that budget ("
                             f"{_unit_note(section)}).")
                lines.append("")
                lines += _markdown_grid(section, metric, post=False)
        if not section.post.empty:
            lines += [section.post_line() + ".", ""]
            for metric in ("bce", "auc"):
                lines += [f"Post-training reference: best {METRIC_NAMES[metric]}.", ""]
                lines += _markdown_grid(section, metric, post=True)
        lines.append(f"Compression at parity: smallest budget within {report.tolerance:g} BCE "
                     "of the full table, and the full table's size over the method's, in "
                     "parameters and in bytes (parameters × 4 plus index buffers such as "
                     "per-id codes).")
        lines.append("")
        lines.append("| " + " | ".join(PARITY_HEADER) + " |")
        lines.append("| --- |" + " ---: |" * (len(PARITY_HEADER) - 1))
        for row in parity_rows(section):
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def to_latex(report: Report) -> str:
    """booktabs tables, best cells in bold, a post-training method in its own group below a
    rule; needs \\usepackage{booktabs} in the preamble."""
    out = []
    bold = lambda text: f"\\textbf{{{text}}}"  # noqa: E731
    for section in report.sections:
        for metric in section.metrics:
            labels, budgets, values = section.grid(metric)
            post_labels, post_budgets, post_values = section.grid(metric, post=True)
            budgets = sorted(set(budgets) | set(post_budgets))
            out.append("\\begin{table}[t]\n\\centering\n\\small")
            caption = (f"{section.title}: best {METRIC_NAMES[metric]}, {seeds_note(section)}; "
                       f"bold: best at that budget. {section.reference_line()}.")
            if post_labels:
                caption += f" {section.post_line()}."
            if section.any_improving:
                caption += f" {section.improving_note()}."
            out.append(f"\\caption{{{_tex(caption)}}}")
            out.append("\\begin{tabular}{l" + "r" * len(budgets) + "}\n\\toprule")
            header = " & ".join(section.budget_label(b) for b in budgets)
            out.append("method & " + header + " \\\\\n\\midrule")
            for label in labels:
                cells = row_cells(values, label, budgets, bold, pm="$\\pm$", dash="--",
                                  mark="$^\\dagger$")
                out.append(f"{_tex(label)} & " + " & ".join(cells) + " \\\\")
            if post_labels:
                out.append(f"\\midrule\n\\multicolumn{{{len(budgets) + 1}}}{{l}}"
                           "{\\emph{post-training reference}} \\\\")
                for label in post_labels:
                    cells = row_cells(post_values, label, budgets, bold, pm="$\\pm$", dash="--",
                                      mark="$^\\dagger$")
                    out.append(f"{_tex(label)} & " + " & ".join(cells) + " \\\\")
            out.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
        out.append("\\begin{table}[t]\n\\centering\n\\small")
        out.append(f"\\caption{{{_tex(section.title)}: compression at parity (smallest budget "
                   f"within {report.tolerance:g} BCE of the full table), in parameters and in "
                   "bytes (parameters $\\times$ 4 plus index buffers).}}")
        out.append("\\begin{tabular}{lrrrrr}\n\\toprule\n"
                   + " & ".join(PARITY_HEADER) + " \\\\\n\\midrule")
        for row in parity_rows(section):
            out.append(" & ".join(_tex(v).replace("×", "$\\times$").replace("—", "--")
                                  for v in row) + " \\\\")
        out.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return "\n".join(out)


def _tex(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                          ("#", "\\#"), ("±", "$\\pm$"), ("−", "$-$"), ("†", "$^\\dagger$")):
        text = text.replace(char, escaped)
    return text
