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
is a miss. Only GMF is compared: their Criteo numbers are read off figures (see the README).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources

import pandas as pd

from .style import method_styles
from .summary import PANEL_KEYS, is_post_training, is_reference, mean_over_seeds

REFERENCES = ["paper"]
SOURCE = "github.com/thomasahle/cce (commit 5b8a93c, results/)"
AUTHORS_DIM, AUTHORS_N_CHUNKS = 32, 4
ROUNDING = 0.0005  # their result files give 3 decimals: half a unit of the last one
NOT_RUN_BY_AUTHORS = "not run by the authors"
NOT_RUN_HERE = "not run here"
GROUPS = ["uncompressed", "training", "post-training"]  # row groups, in this order
CELL_KEYS = ["dataset", "epochs", "method", "ppd", "seed", "metric"]
STATS = ["mean", "std", "min", "max"]
COLUMNS = ["dataset", "model", "dim", "group", "method", "n_chunks", "ppd", "seeds",
           "auc_mean", "auc_std", "bce_mean", "bce_std", "paper_epochs", "paper_seeds",
           *[f"paper_{m}_{s}" for m in ("auc", "bce") for s in STATS],
           "auc_diff", "auc_verdict", "bce_diff", "bce_verdict", "note"]


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


def paper_notes(best: pd.DataFrame, x: str) -> list[str]:
    """What `plot --reference paper` cannot draw, and why: one line each."""
    if x == "bytes":
        return ["no paper curves on the bytes axis: the authors' results give parameters only; "
                "use --x params or --x ppd"]
    notes = []
    for (dataset, model, _), frame in best.groupby(PANEL_KEYS, sort=True):
        if model != "gmf" or authors_epochs(dataset, int(frame["epochs"].max())) is None:
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

    @property
    def title(self) -> str:
        return f"{self.dataset} ({self.model.upper()}, dim {self.dim}) against the paper"

    @property
    def ran(self) -> bool:
        return self.paper_epochs is not None

    def not_run_line(self) -> str:
        if self.model != "gmf":
            return (f"{self.dataset}: {NOT_RUN_BY_AUTHORS} as a GMF run; their Criteo numbers "
                    "are read off figures and are not compared here")
        return (f"{self.dataset}: {NOT_RUN_BY_AUTHORS} (their GMF datasets: "
                f"{', '.join(authors_datasets())}); nothing to compare")

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
            if rows["auc_verdict"].eq("").all() and rows["bce_verdict"].eq("").all():
                lines.append(f"{label}: {NOT_RUN_BY_AUTHORS}" if not self.ran or
                             rows["note"].eq(NOT_RUN_BY_AUTHORS).all()
                             else f"{label}: no budget in common with the authors")
                continue
            counted = rows["ppd"].notna().any()
            line = (f"{label}: val AUC {method_verdict(rows['auc_verdict'], counted)}; "
                    f"val BCE {method_verdict(rows['bce_verdict'], counted)}")
            lines.append(line + self.not_run_here(rows))
        return lines

    @staticmethod
    def not_run_here(rows: pd.DataFrame) -> str:
        """'; not run here: 4, 8 ppd (the authors' budgets)' for budgets only they ran."""
        missing = rows.loc[rows["note"] == NOT_RUN_HERE, "ppd"]
        if missing.empty:
            return ""
        return f"; {NOT_RUN_HERE}: {', '.join(f'{p:g}' for p in missing)} ppd (theirs)"

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


def verdict(ours: float, lowest: float, highest: float) -> str:
    """'within' their min..max over seeds (widened by ROUNDING), 'above' or 'below' it; ''
    where either side has no value."""
    if pd.isna(ours) or pd.isna(lowest) or pd.isna(highest):
        return ""
    if ours > highest + ROUNDING:
        return "above"
    if ours < lowest - ROUNDING:
        return "below"
    return "within"


def method_verdict(verdicts, counted: bool = True) -> str:
    """A method's cell verdicts as one phrase: 'within their seed spread' when every budget
    both ran is within; 'above' ('below') when some are above (below) and none the other way;
    'mixed' when both; with the counts where there are budgets to count."""
    counts = Counter(v for v in verdicts if v)
    n = sum(counts.values())
    if counts["within"] == n:
        word = "within their seed spread"
    elif not counts["below"]:
        word = "above their seed spread"
    elif not counts["above"]:
        word = "below their seed spread"
    else:
        word = "mixed"
    if not counted:
        return word
    detail = ", ".join(f"{v} at {counts[v]}" for v in ("above", "within", "below") if counts[v])
    return f"{word} ({detail} of {n} budget{'s' if n > 1 else ''})"


def build_comparison(best: pd.DataFrame) -> Comparison:
    """best_per_run rows against the authors' results, per dataset, model and dim."""
    summary = mean_over_seeds(best)
    rank = {m: i for i, m in enumerate(method_styles(summary["method"].unique()))}
    sections = []
    for (dataset, model, dim), frame in summary.groupby(PANEL_KEYS, sort=True):
        ours = _ours(frame)
        epochs = int(frame["epochs"].max())
        paper_epochs = authors_epochs(dataset, epochs) if model == "gmf" else None
        also_ran: list[str] = []
        if paper_epochs is None:
            rows = ours.assign(note=NOT_RUN_BY_AUTHORS)
        else:
            theirs = authors_summary(dataset, paper_epochs)
            also_ran = sorted(set(theirs["method"]) - set(ours["method"]), key=rank.get)
            rows = _merge(ours, theirs[theirs["method"].isin(set(ours["method"]))])
        rows = rows.assign(dataset=dataset, model=model, dim=int(dim), paper_epochs=paper_epochs)
        for column in COLUMNS:
            if column not in rows:
                rows[column] = float("nan")
        for metric in ("auc", "bce"):
            rows[f"{metric}_diff"] = rows[f"{metric}_mean"] - rows[f"paper_{metric}_mean"]
            rows[f"{metric}_verdict"] = [
                verdict(o, lo, hi) for o, lo, hi in zip(rows[f"{metric}_mean"],
                                                         rows[f"paper_{metric}_min"],
                                                         rows[f"paper_{metric}_max"])]
        for metric in ("auc", "bce"):  # one seed has no spread: no std, not 0
            rows.loc[rows["seeds"] == 1, f"{metric}_std"] = float("nan")
        rows = rows.sort_values(
            ["group", "method", "ppd"], kind="stable",
            key=lambda s: s.map(GROUPS.index) if s.name == "group"
            else s.map(rank) if s.name == "method" else s)
        sections.append(PaperSection(dataset, model, int(dim), epochs, paper_epochs,
                                     rows[COLUMNS].reset_index(drop=True), also_ran))
    return Comparison(sections)


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
    ours.loc[ours["group"] == "uncompressed", "ppd"] = float("nan")
    return ours[["group", "method", "n_chunks", "ppd", "seeds", "auc_mean", "auc_std",
                 "bce_mean", "bce_std"]]


def _merge(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Outer join on method and ppd (the full table on method alone), with a note per row."""
    key = lambda f: f.assign(_ppd=f["ppd"].fillna(-1.0))  # noqa: E731 - NaN never matches
    rows = key(ours).merge(key(theirs).drop(columns="ppd"), on=["method", "_ppd"], how="outer",
                           indicator=True)
    rows["ppd"] = rows["_ppd"].where(rows["_ppd"] >= 0)
    # A budget only they ran: our method's group and n_chunks, our values missing.
    fill = ours.drop_duplicates("method").set_index("method")
    for column in ("group", "n_chunks"):
        rows[column] = rows[column].fillna(rows["method"].map(fill[column]))
    rows["note"] = rows["_merge"].map({"both": "", "left_only": NOT_RUN_BY_AUTHORS,
                                       "right_only": NOT_RUN_HERE}).astype(str)
    return rows.drop(columns=["_ppd", "_merge"])
