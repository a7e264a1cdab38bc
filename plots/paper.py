"""Our results against the authors' own (Tsang & Ahle, NeurIPS 2023): `report --against paper`.

The authors' GMF numbers ship as package data, `reference/authors-gmf-results.csv` (source: their
repository github.com/thomasahle/cce, commit 5b8a93c, folder `results/`; reference/README.md
says what each column means). Read from it:

- A cell is (dataset, epochs, method, ppd); its seeds' values are each the best validation
  metric of one run. Their files were appended to when a cell was re-run, so a seed's value is
  the one of its latest block (the re-run replaced the earlier one).
- Their full table appears at every ppd with the same value per seed (one run, copied): it is
  one reference value per seed, the mean of its rows over ppd.
- Epochs: of the run lengths they used on a dataset (ml-1m: 10 and 30), the one nearest to our
  longest run (ties: the shorter), so an early-stopped run still finds its reference.

Per dataset, method and budget (ppd) the comparison holds our mean and std over seeds, theirs
with their min..max, the difference (ours - theirs) and a verdict per metric: "within" when our
mean lies inside their min..max over seeds widened by ROUNDING (their files give 3 decimals),
"above" or "below" when it lies beyond that. `method_verdict` sums a method's verdicts over the
budgets both ran into one line. What they did not run (a dataset, a method, a budget) is
"not run by the authors", and a budget of theirs that we did not run is "not run here": neither
is a miss. DLRM runs on Criteo are compared with their Criteo figures in paper_criteo.py.

Several sweeps of one dataset are compared one by one (a section each, named by the sweep), as
the report keeps them: their settings may differ, so their seeds are never pooled. Our cells
with a seed still improving at its last epoch (summary.py) count it in `still_improving`, and
the tables mark them.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

import pandas as pd

from .report import IMPROVING_NOTE
from .style import method_styles
from .summary import PANEL_KEYS, is_post_training, is_reference, mean_over_seeds, report_groups

REFERENCES = ["paper"]
SOURCE = "github.com/thomasahle/cce (commit 5b8a93c, results/)"
AUTHORS_DIM, AUTHORS_N_CHUNKS = 32, 4
ROUNDING = 0.0005  # their result files give 3 decimals: half a unit of the last one
NOT_RUN_BY_AUTHORS = "not run by the authors"
NOT_RUN_HERE = "not run here"
GROUPS = ["uncompressed", "training", "post-training"]  # row groups, in this order
CELL_KEYS = ["dataset", "epochs", "method", "ppd", "seed", "metric"]
STATS = ["mean", "std", "min", "max"]
METRICS = ("auc", "bce", "test")  # val AUC, val BCE, test BCE at the best val BCE point
# ppd and budget_asked are ours (the budget in parameters per dimension, and per table);
# paper_budget is theirs in their own unit (GMF: ppd; Criteo: their figure's x value).
COLUMNS = ["dataset", "sweep", "model", "dim", "group", "method", "n_chunks", "ppd",
           "budget_asked", "paper_budget", "seeds", "still_improving",
           "auc_mean", "auc_std", "bce_mean", "bce_std", "test_mean", "test_std",
           "paper_epochs", "paper_seeds", *[f"paper_{m}_{s}" for m in METRICS for s in STATS],
           *[f"{m}_{what}" for m in METRICS for what in ("diff", "verdict")], "note"]


@functools.lru_cache(maxsize=1)
def authors_results() -> pd.DataFrame:
    """Every row of the shipped authors-gmf-results.csv (do not modify the frame)."""
    data = resources.files("cce_bench.plots") / "reference" / "authors-gmf-results.csv"
    with resources.as_file(data) as path:
        return pd.read_csv(path)


def authors_datasets() -> list[str]:
    return sorted(authors_results()["dataset"].unique())


def authors_epochs(dataset: str, ours: int) -> int | None:
    """The run length of theirs nearest to `ours` on this dataset (ties: the shorter), or None
    where they did not run it."""
    frame = authors_results()
    ran = sorted(frame.loc[frame["dataset"] == dataset, "epochs"].unique())
    if not ran:
        return None
    return int(min(ran, key=lambda e: (abs(e - ours), e)))


def authors_summary(dataset: str, epochs: int) -> pd.DataFrame:
    """Per method and ppd (NaN for the full table): their seeds and the mean, std (ddof 1),
    min and max over seeds of val AUC and val BCE, from the latest block of each seed."""
    frame = authors_results()
    frame = frame[(frame["dataset"] == dataset) & (frame["epochs"] == epochs)]
    latest = frame[frame["block"] == frame.groupby(CELL_KEYS)["block"].transform("max")]
    latest = latest.assign(ppd=latest["ppd"].astype(float))
    full = latest["method"] == "full"
    # One value per seed for the full table: its rows at every ppd are the same run.
    per_seed = pd.concat([
        latest[~full],
        latest[full].groupby(["method", "seed", "metric"], as_index=False)["value"].mean()
        .assign(ppd=float("nan"))])
    wide = per_seed.pivot_table(index=["method", "ppd", "seed"], columns="metric",
                                values="value", dropna=False).reset_index()
    wide = wide.dropna(subset=["val_auc", "val_bce"], how="all")
    out = wide.groupby(["method", "ppd"], dropna=False).agg(
        paper_seeds=("seed", "nunique"),
        **{f"paper_{m}_{s}": (f"val_{m}", s) for m in ("auc", "bce") for s in STATS})
    return out.reset_index()


def paper_notes(best: pd.DataFrame, x: str, metrics=("bce", "auc")) -> list[str]:
    """What `plot --reference paper` cannot draw, and why: one line each."""
    from .paper_criteo import criteo_plot_note

    if x == "bytes":
        return ["no paper curves on the bytes axis: the authors' results give parameters only; "
                "use --x params or --x ppd"]
    notes = []
    for (dataset, model, _), frame in best.groupby(PANEL_KEYS, sort=True):
        if model == "dlrm":
            notes += [note for metric in metrics if (note := criteo_plot_note(dataset, metric))]
        elif authors_epochs(dataset, int(frame["epochs"].max())) is None:
            notes.append(f"no paper curves for {dataset}: {NOT_RUN_BY_AUTHORS}")
    return list(dict.fromkeys(notes))


@dataclass
class PaperSection:
    """One dataset, model and dim of ours against the authors' runs of that dataset."""

    dataset: str
    model: str
    dim: int
    epochs: int  # our longest run
    paper_epochs: int | None  # the run length of theirs compared against; None: they did not
    rows: pd.DataFrame  # COLUMNS, one row per group, method and ppd
    also_ran: list[str] = field(default_factory=list)  # their methods that ours lack
    sweep: str | None = None  # set where the results hold several sweeps: one section each

    metrics = ("auc", "bce")  # the metrics both sides give, in table order
    budget_header = "ppd"
    spread_header = "paper min..max"
    spread_name = "their seed spread"  # what a verdict is within, above or below
    widen = ROUNDING  # how far beyond their min..max a value still counts as within
    digits = 4  # decimals of the values in the tables

    @property
    def title(self) -> str:
        which = f", sweep {self.sweep}" if self.sweep else ""
        return f"{self.dataset} ({self.model.upper()}, dim {self.dim}{which}) against the paper"

    @property
    def ran(self) -> bool:
        return self.paper_epochs is not None

    def not_run_line(self) -> str:
        return (f"{self.dataset}: {NOT_RUN_BY_AUTHORS} (their GMF datasets: "
                f"{', '.join(authors_datasets())}); nothing to compare")

    def budget_cell(self, row: dict) -> str:
        return "—" if pd.isna(row["ppd"]) else f"{row['ppd']:g}"

    def spread_cell(self, row: dict, metric: str) -> str:
        return f"{row[f'paper_{metric}_min']:.3f}..{row[f'paper_{metric}_max']:.3f}"

    def budgets_text(self, values) -> str:
        """Their budgets as the verdict lines list them: '4, 8 ppd'."""
        return f"{', '.join(f'{p:g}' for p in values)} ppd"

    def notes(self) -> list[str]:
        """The lines that say what is compared and how the verdict is defined."""
        return [
            self.source_line() + ".",
            "ours: mean ± std over our seeds (one seed: the value alone); paper: mean ± std over "
            "their seeds, and their min..max; ours − paper is the difference of the means.",
            f"verdict: within = our mean inside their min..max over seeds (± {ROUNDING:g}, their "
            "3-decimal rounding); above / below = beyond it. For AUC above is better, for BCE "
            "below is better.",
            "Their BCE overstates by about 2% where the last validation batch is short (their "
            "mean of batch means), so a BCE below theirs by less than about 0.01 can be that "
            "alone.",
        ] + self.common_notes()

    def common_notes(self) -> list[str]:
        """The post-training and still-improving notes, where the rows need them."""
        post = ("The post-training reference (pq) trains the full table, then quantizes it: "
                "listed apart, it is not a training-time method.")
        return (([post] if (self.rows["group"] == "post-training").any() else [])
                + ([f"{IMPROVING_NOTE}; the mark follows our value."]
                   if self.rows["still_improving"].gt(0).any() else []))

    def source_line(self) -> str:
        dims = "" if self.dim == AUTHORS_DIM else (f"; ours dim {self.dim}, compared at the "
                                                   "same ppd")
        return (f"The authors' runs: {SOURCE}, GMF, dim {AUTHORS_DIM}, {AUTHORS_N_CHUNKS} chunks, "
                f"{self.paper_epochs} epochs, best val metric of each run, latest re-run of "
                f"each cell; ours: up to {self.epochs} epochs{dims}")

    def method_lines(self) -> list[str]:
        """One verdict line per method of ours, in row order."""
        lines = []
        for (group, method), rows in self.rows.groupby(["group", "method"], sort=False):
            label = method_label(method, group, rows["n_chunks"].iloc[0])
            if all(rows[f"{m}_verdict"].eq("").all() for m in self.metrics):
                lines.append(f"{label}: {NOT_RUN_BY_AUTHORS}" if not self.ran or
                             rows["note"].eq(NOT_RUN_BY_AUTHORS).all()
                             else f"{label}: no budget in common with the authors")
                continue
            counted = rows["ppd"].notna().any()
            line = "; ".join(
                f"{METRIC_WORDS[m]} "
                f"{method_verdict(rows[f'{m}_verdict'], counted, self.spread_name)}"
                for m in self.metrics)
            lines.append(f"{label}: {line}" + self.not_run_here(rows))
        return lines

    def not_run_here(self, rows: pd.DataFrame) -> str:
        """'; not run here: 4, 8 ppd (theirs)' for budgets only they ran."""
        missing = rows.loc[rows["note"] == NOT_RUN_HERE, "paper_budget"]
        if missing.empty:
            return ""
        return f"; {NOT_RUN_HERE}: {self.budgets_text(sorted(missing))} (theirs)"

    def also_ran_line(self) -> str:
        if not self.also_ran:
            return ""
        return f"The authors also ran {', '.join(self.also_ran)} (not in these results)"


@dataclass
class Comparison:
    sections: list[PaperSection]

    def long_frame(self) -> pd.DataFrame:
        """Every row of every section (the CSV format)."""
        frames = [s.rows for s in self.sections]
        return pd.concat(frames, ignore_index=True)[COLUMNS] if frames else pd.DataFrame(
            columns=COLUMNS)


def method_label(method: str, group: str, n_chunks) -> str:
    label = method
    if group == "training" and pd.notna(n_chunks) and int(n_chunks) != AUTHORS_N_CHUNKS:
        label += f", {int(n_chunks)} chunks"
    if group == "post-training":
        label += " (post-training reference)"
    return label


METRIC_WORDS = {"auc": "val AUC", "bce": "val BCE", "test": "test BCE"}


def verdict(ours: float, lowest: float, highest: float, widen: float = ROUNDING) -> str:
    """'within' their min..max over seeds (widened by `widen`: ROUNDING, their 3-decimal
    rounding), 'above' or 'below' it; '' where either side has no value."""
    if pd.isna(ours) or pd.isna(lowest) or pd.isna(highest):
        return ""
    if ours > highest + widen:
        return "above"
    if ours < lowest - widen:
        return "below"
    return "within"


def method_verdict(verdicts, counted: bool = True, spread: str = "their seed spread") -> str:
    """A method's cell verdicts as one phrase: 'within their seed spread' when every budget
    both ran is within; 'above' ('below') when some are above (below) and none the other way;
    'mixed' when both; with the counts where there are budgets to count. `spread` names what
    the verdicts are relative to."""
    counts = Counter(v for v in verdicts if v)
    n = sum(counts.values())
    if counts["within"] == n:
        word = f"within {spread}"
    elif not counts["below"]:
        word = f"above {spread}"
    elif not counts["above"]:
        word = f"below {spread}"
    else:
        word = "mixed"
    if not counted:
        return word
    detail = ", ".join(f"{v} at {counts[v]}" for v in ("above", "within", "below") if counts[v])
    return f"{word} ({detail} of {n} budget{'s' if n > 1 else ''})"


def build_comparison(best: pd.DataFrame) -> Comparison:
    """best_per_run rows against the authors' results, per dataset, model and dim, and per
    sweep where there are several (never pooled: their settings may differ)."""
    from .paper_criteo import criteo_section

    summary = mean_over_seeds(best)
    rank = {m: i for i, m in enumerate(method_styles(summary["method"].unique()))}
    sections = []
    for key, frame in summary.groupby(report_groups(summary), sort=True):
        dataset, model, dim = key[:3]
        sweep = key[3] if len(key) > 3 else None
        ours = _ours(frame)
        epochs = int(frame["epochs"].max())
        if model == "dlrm":
            sections.append(criteo_section(ours, dataset, int(dim), epochs, sweep, rank))
            continue
        paper_epochs = authors_epochs(dataset, epochs)
        also_ran: list[str] = []
        if paper_epochs is None:
            rows = ours.assign(note=NOT_RUN_BY_AUTHORS)
        else:
            theirs = authors_summary(dataset, paper_epochs)
            theirs = theirs.assign(paper_budget=theirs["ppd"])
            also_ran = sorted(set(theirs["method"]) - set(ours["method"]), key=rank.get)
            rows = _merge(ours, theirs[theirs["method"].isin(set(ours["method"]))])
        rows = finish_rows(rows, dataset, model, int(dim), paper_epochs, rank, ROUNDING, "ppd")
        sections.append(PaperSection(dataset, model, int(dim), epochs, paper_epochs, rows,
                                     also_ran, sweep))
    return Comparison(sections)


def finish_rows(rows: pd.DataFrame, dataset: str, model: str, dim: int,
                paper_epochs: int | None, rank: dict, widen: float, order: str) -> pd.DataFrame:
    """Merged rows to COLUMNS: differences and verdicts per metric (within their min..max
    widened by `widen`), no std for one seed, rows in group, method and budget (the column
    `order`, which both sides' rows have) order."""
    rows = rows.assign(dataset=dataset, model=model, dim=dim, paper_epochs=paper_epochs)
    for column in COLUMNS:
        if column not in rows:
            rows[column] = float("nan")
    for metric in METRICS:
        rows[f"{metric}_diff"] = rows[f"{metric}_mean"] - rows[f"paper_{metric}_mean"]
        rows[f"{metric}_verdict"] = [
            verdict(o, lo, hi, widen) for o, lo, hi in zip(rows[f"{metric}_mean"],
                                                            rows[f"paper_{metric}_min"],
                                                            rows[f"paper_{metric}_max"])]
        rows.loc[rows["seeds"] == 1, f"{metric}_std"] = float("nan")  # one seed: no spread
    rows["sweep"] = rows["sweep"].ffill().bfill()  # their budgets only: the section's sweep
    rows = rows.sort_values(
        ["group", "method", order], kind="stable",
        key=lambda s: s.map(GROUPS.index) if s.name == "group"
        else s.map(rank) if s.name == "method" else s)
    return rows[COLUMNS].reset_index(drop=True)


def _ours(frame: pd.DataFrame) -> pd.DataFrame:
    """Our cells to compare: per method the n_chunks the authors used where we ran it (else
    our smallest), the full table with ppd NaN, and each row's group."""
    reference, post = is_reference(frame), is_post_training(frame)
    frame = frame.assign(group=["uncompressed" if r else "post-training" if p else "training"
                                for r, p in zip(reference, post)])
    keep = []
    for _, group in frame.groupby("method", sort=False):
        chunks = set(group["n_chunks"])
        chosen = AUTHORS_N_CHUNKS if AUTHORS_N_CHUNKS in chunks else min(chunks)
        keep.append(group if group["group"].iloc[0] == "uncompressed"
                    else group[group["n_chunks"] == chosen])
    ours = pd.concat(keep)
    ours.loc[ours["group"] == "uncompressed", ["ppd", "budget_asked"]] = float("nan")
    return ours.rename(columns={"improving": "still_improving"})[
        ["sweep", "group", "method", "n_chunks", "ppd", "budget_asked", "seeds",
         "still_improving", "auc_mean", "auc_std", "bce_mean", "bce_std", "test_mean",
         "test_std"]]


def _merge(ours: pd.DataFrame, theirs: pd.DataFrame, on: str = "ppd") -> pd.DataFrame:
    """Outer join on method and the budget column `on` (the full table, NaN there, on method
    alone), with a note per row."""
    key = lambda f: f.assign(_key=f[on].fillna(-1.0))  # noqa: E731 - NaN never matches
    rows = key(ours).merge(key(theirs).drop(columns=on), on=["method", "_key"], how="outer",
                           indicator=True)
    rows[on] = rows["_key"].where(rows["_key"] >= 0)
    # A budget only they ran: our method's group and n_chunks, our values missing.
    fill = ours.drop_duplicates("method").set_index("method")
    for column in ("group", "n_chunks"):
        rows[column] = rows[column].fillna(rows["method"].map(fill[column]))
    rows["note"] = rows["_merge"].map({"both": "", "left_only": NOT_RUN_BY_AUTHORS,
                                       "right_only": NOT_RUN_HERE}).astype(str)
    return rows.drop(columns=["_key", "_merge"])
