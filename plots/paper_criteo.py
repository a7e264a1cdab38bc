"""Our DLRM runs on Criteo against the authors' Criteo figures: `report --against paper` and
`plot --reference paper`.

Their Criteo numbers ship as `reference/authors-criteo-figures.csv`: the curves of two figures of
their repository (github.com/thomasahle/cce, commit 5b8a93c, results/), read off the images to
about READ_OFF (reference/README.md), one run per point and no seeds:

- criteo-kaggle (results/criteo2.png): best validation BCE of 10 epochs against the parameters
  in the largest table, per method, and their full table as one value (DLRM, dim 16). Compared
  with our best val BCE per cap (budget_asked: parameters per table, budget_unit "params").
- criteo-terabyte (results/terabyte.png): test BCE against rows per table ("mhash"), which at
  their dim 64 is our budget in ppd. Compared with our test BCE at each run's best validation
  point (never our best test value).

A budget of ours matches one of theirs within MATCH (their x values are read off a log axis:
their 3,500 is our 16 x 220 = 3,520). The verdict is GMF's with their min and max both their one
value and READ_OFF as the widening: "within" when our mean lies within READ_OFF of their value,
"above" or "below" beyond it. Their figures show no seed spread, so a verdict says whether a
difference is larger than the figure resolves, not whether it is larger than seed noise. Other
DLRM datasets (criteo-synthetic and its variants) they did not run: "not run by the authors".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from .paper import NOT_RUN_BY_AUTHORS, SOURCE, PaperSection, _merge, finish_rows

READ_OFF = 0.0002  # how precisely their figures were read (reference/README.md)
MATCH = 0.02  # a budget of ours and one of theirs within 2% of each other are the same


@dataclass(frozen=True)
class Figure:
    """One of their Criteo figures and how ours compares with it."""

    file: str  # in their results/ folder
    metric: str  # ours compared: "bce" (best val BCE) or "test" (test BCE at the best val point)
    what: str  # what their values are
    on: str  # our budget column that their x values match: budget_asked or ppd
    axis: str  # their x axis
    header: str  # the budget column's title in our tables
    unit: str  # their budgets in the verdict lines
    dim: int
    epochs: int
    digits: int  # decimals their values are given to


FIGURES = {
    "criteo-kaggle": Figure("results/criteo2.png", "bce", "best val BCE of 10 epochs",
                            "budget_asked", "parameters in the largest table", "cap (params)",
                            "params", 16, 10, 4),
    "criteo-terabyte": Figure("results/terabyte.png", "test", "test BCE", "ppd",
                              "rows per table ('mhash')", "rows per table", "rows", 64, 1, 5),
}
OURS = {"bce": "best val BCE of each run", "test": "test BCE at each run's best val BCE point"}


@functools.lru_cache(maxsize=1)
def authors_criteo() -> pd.DataFrame:
    """Every row of the shipped authors-criteo-figures.csv (do not modify the frame)."""
    data = resources.files("cce_bench.plots") / "reference" / "authors-criteo-figures.csv"
    with resources.as_file(data) as path:
        return pd.read_csv(path)


def criteo_summary(dataset: str) -> pd.DataFrame:
    """Their values of one figure as comparison columns: per method and x value (paper_budget,
    NaN for the full table), one run (paper_seeds 1) whose min and max are its value."""
    figure = FIGURES[dataset]
    frame = authors_criteo()
    frame = frame[frame["dataset"] == dataset]
    value = frame["value"].to_numpy()
    return pd.DataFrame({
        "method": frame["method"].to_numpy(),
        "paper_budget": frame["largest_table_params"].astype(float).to_numpy(),
        "paper_seeds": 1,
        **{f"paper_{figure.metric}_{stat}": value for stat in ("mean", "min", "max")},
        f"paper_{figure.metric}_std": float("nan")})


def matched(theirs: pd.Series, ours: pd.Series) -> pd.Series:
    """Each of their x values as the budget of ours within MATCH of it (the nearest), or as
    itself where we ran none so close."""
    budgets = sorted(set(ours.dropna()))

    def match(x: float) -> float:
        close = [b for b in budgets if abs(b / x - 1) <= MATCH] if x == x else []
        return min(close, key=lambda b: abs(b - x)) if close else x

    return theirs.map(match)


@dataclass
class CriteoSection(PaperSection):
    """One DLRM dataset of ours against the authors' figure of it (None: they have none)."""

    figure: Figure | None = None

    spread_header = f"paper ± {READ_OFF:g}"
    spread_name = f"the reading of their figure (± {READ_OFF:g})"
    widen = READ_OFF

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.figure.metric,) if self.figure else ("bce",)

    @property
    def budget_header(self) -> str:
        return self.figure.header if self.figure else "cap (params)"

    @property
    def digits(self) -> int:
        return self.figure.digits if self.figure else 4

    @property
    def on(self) -> str:
        return self.figure.on if self.figure else "budget_asked"

    def budget_cell(self, row: dict) -> str:
        value = row[self.on]
        if pd.isna(value):
            return "—"
        return f"{value:,.0f}" if self.on == "budget_asked" else f"{value:g}"

    def spread_cell(self, row: dict, metric: str) -> str:
        value = row[f"paper_{metric}_mean"]
        return f"{value - READ_OFF:.{self.digits}f}..{value + READ_OFF:.{self.digits}f}"

    def budgets_text(self, values) -> str:
        return f"{', '.join(f'{v:,.0f}' for v in values)} {self.figure.unit}"

    def not_run_line(self) -> str:
        return (f"{self.dataset}: {NOT_RUN_BY_AUTHORS} (their DLRM figures: "
                f"{', '.join(FIGURES)}); nothing to compare")

    def source_line(self) -> str:
        figure = self.figure
        dims = "" if self.dim == figure.dim else f", ours dim {self.dim}"
        return (f"The authors' values: {SOURCE}, {figure.file}: {figure.what} against "
                f"{figure.axis}, one run per point, read off the figure to about "
                f"± {READ_OFF:g} (DLRM, dim {figure.dim}, {figure.epochs} "
                f"epoch{'s' if figure.epochs > 1 else ''}); ours: {OURS[figure.metric]}, up to "
                f"{self.epochs} epoch{'s' if self.epochs > 1 else ''}{dims}")

    def notes(self) -> list[str]:
        return [
            self.source_line() + ".",
            "ours: mean ± std over our seeds (one seed: the value alone); paper: their one "
            "value; ours − paper is the difference.",
            f"verdict: within = our mean within ± {READ_OFF:g} of their value (the precision "
            "their figure is read to); above / below = beyond it; lower BCE is better. Their "
            "figure shows one run per point and no seed spread, so a verdict says whether the "
            "difference is larger than the figure resolves, not whether it is larger than seed "
            "noise.",
            f"Their x values are read off a log axis: a budget of ours within {MATCH:.0%} of "
            "one of theirs is compared with it.",
        ] + self.common_notes()


def criteo_section(ours: pd.DataFrame, dataset: str, dim: int, epochs: int, sweep: str | None,
                   rank: dict) -> CriteoSection:
    """Our cells of one DLRM dataset (paper._ours) against their figure of it, if any."""
    figure = FIGURES.get(dataset)
    if figure is None:
        rows = finish_rows(ours.assign(note=NOT_RUN_BY_AUTHORS), dataset, "dlrm", dim, None,
                           rank, READ_OFF, "budget_asked")
        return CriteoSection(dataset, "dlrm", dim, epochs, None, rows, [], sweep, None)
    theirs = criteo_summary(dataset)
    theirs = theirs.assign(**{figure.on: matched(theirs["paper_budget"], ours[figure.on])})
    also_ran = sorted(set(theirs["method"]) - set(ours["method"]), key=rank.get)
    rows = _merge(ours, theirs[theirs["method"].isin(set(ours["method"]))], on=figure.on)
    rows = finish_rows(rows, dataset, "dlrm", dim, figure.epochs, rank, READ_OFF, figure.on)
    return CriteoSection(dataset, "dlrm", dim, epochs, figure.epochs, rows, also_ran, sweep,
                         figure)


def criteo_plot_note(dataset: str, metric: str) -> str | None:
    """Why `plot --reference paper` draws no curve of theirs on a DLRM panel, or None."""
    figure = FIGURES.get(dataset)
    if figure is None:
        return f"no paper curves for {dataset}: {NOT_RUN_BY_AUTHORS}"
    if figure.metric == "test":
        return (f"no paper curves for {dataset}: their figure gives {figure.what}, these figures "
                "draw validation scores (report --against paper compares test BCE)")
    if metric != figure.metric:
        return (f"no paper curves for {dataset} on val {metric.upper()}: their figure gives "
                f"{figure.what} only")
    return None


def draw_criteo_paper(ax, dataset: str, methods, metric: str, x: str, styles) -> bool:
    """Their curve of each of `methods` on a DLRM panel, dashed in the method's colour, their
    full table as a dashed line; False where they have no figure of this dataset and metric."""
    from .style import draw_paper_curves

    figure = FIGURES.get(dataset)
    if figure is None or figure.metric != metric or x == "bytes":
        return False
    theirs = criteo_summary(dataset)
    theirs = theirs[theirs["method"].isin(set(methods))]

    def to_x(budget: pd.Series) -> pd.Series:
        params = budget * (1 if figure.on == "budget_asked" else figure.dim)
        return params / figure.dim if x == "ppd" else params

    draw_paper_curves(ax, theirs, "paper_budget", to_x, metric, styles)
    return True
