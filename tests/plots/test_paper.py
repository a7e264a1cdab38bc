"""`report --against paper`: the authors' numbers, the comparison, its verdicts and its formats,
checked against a pandas computation straight from the shipped CSV."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import cce_bench.plots
from cce_bench.cli import app
from cce_bench.plots import best_per_run, load_results
from cce_bench.plots.paper import (NOT_RUN_BY_AUTHORS, NOT_RUN_HERE, authors_epochs,
                                   authors_summary, build_comparison, method_verdict, verdict)
from cce_bench.plots.paper_tables import to_csv, to_latex, to_markdown

from .conftest import GMF_DATASET, PAPER_DATASET, PAPER_RUNS

AUTHORS_CSV = Path(cce_bench.plots.__file__).parent / "reference" / "authors-gmf-results.csv"
runner = CliRunner()


def theirs(dataset: str, method: str, ppd: int | None, metric: str, epochs: int = 10):
    """Their values per seed, from the raw CSV: the latest block of each seed; the full table
    (ppd None) is the mean of its rows over ppd per seed."""
    raw = pd.read_csv(AUTHORS_CSV)
    raw = raw[(raw["dataset"] == dataset) & (raw["method"] == method)
              & (raw["metric"] == f"val_{metric}") & (raw["epochs"] == epochs)]
    if ppd is not None:
        raw = raw[raw["ppd"] == ppd]
    latest = raw.sort_values("block").groupby(["ppd", "seed"]).tail(1)
    return latest.groupby("seed")["value"].mean()


@pytest.fixture(scope="module")
def comparison(paper_csv):
    return build_comparison(best_per_run(load_results([str(paper_csv)])))


def section_of(comparison, dataset):
    return next(s for s in comparison.sections if s.dataset == dataset)


def cell(section, method, ppd):
    rows = section.rows
    match = rows[(rows["method"] == method)
                 & (rows["ppd"].isna() if ppd is None else rows["ppd"] == ppd)]
    assert len(match) == 1, (method, ppd, match)
    return match.iloc[0]


def test_re_runs_count_once_the_latest_block_wins():
    raw = pd.read_csv(AUTHORS_CSV)
    blocks = raw.groupby(["dataset", "epochs", "method", "ppd", "seed", "metric"])["block"]
    assert (blocks.nunique() > 1).any()  # the data has re-runs, so the rule is exercised
    re_run = blocks.nunique().idxmax()
    dataset, epochs, method, ppd, seed, metric = re_run
    summary = authors_summary(dataset, epochs)
    row = summary[(summary["method"] == method) & (summary["ppd"] == ppd)].iloc[0]
    values = theirs(dataset, method, ppd, metric.removeprefix("val_"), epochs)
    assert row[f"paper_{metric.removeprefix('val_')}_mean"] == pytest.approx(values.mean())


@pytest.mark.parametrize("method, ppd", [("cce", 16), ("cce", 64), ("hash", 16), ("hash", 64),
                                         ("full", None)])
def test_comparison_numbers_match_an_independent_computation(comparison, method, ppd):
    row = cell(section_of(comparison, PAPER_DATASET), method, ppd)
    ours = PAPER_RUNS[(PAPER_DATASET, method, ppd or 0)]
    for i, metric in enumerate(("auc", "bce")):
        mine = pd.Series([seed[i] for seed in ours])
        paper = theirs(PAPER_DATASET, method, ppd, metric)
        assert row["seeds"] == len(ours) and row["paper_seeds"] == len(paper) == 3
        assert row[f"{metric}_mean"] == pytest.approx(mine.mean())
        if len(ours) == 1:
            assert pd.isna(row[f"{metric}_std"])  # one seed: no spread, not 0
        else:
            assert row[f"{metric}_std"] == pytest.approx(mine.std())
        assert row[f"paper_{metric}_mean"] == pytest.approx(paper.mean())
        assert row[f"paper_{metric}_std"] == pytest.approx(paper.std())
        assert row[f"paper_{metric}_min"] == paper.min()
        assert row[f"paper_{metric}_max"] == paper.max()
        assert row[f"{metric}_diff"] == pytest.approx(mine.mean() - paper.mean())
        expected = ("above" if mine.mean() > paper.max() + 0.0005 else
                    "below" if mine.mean() < paper.min() - 0.0005 else "within")
        assert row[f"{metric}_verdict"] == expected


def test_each_verdict_occurs_in_the_fixture(comparison):
    section = section_of(comparison, PAPER_DATASET)
    assert cell(section, "cce", 16)[["auc_verdict", "bce_verdict"]].tolist() == ["within"] * 2
    assert cell(section, "cce", 64)[["auc_verdict", "bce_verdict"]].tolist() == ["above", "below"]
    assert cell(section, "hash", 16)[["auc_verdict", "bce_verdict"]].tolist() == ["below", "above"]


def test_verdict_bounds_are_their_min_max_widened_by_their_rounding():
    assert verdict(0.5305, 0.521, 0.530) == "within"
    assert verdict(0.5306, 0.521, 0.530) == "above"
    assert verdict(0.5204, 0.521, 0.530) == "below"
    assert verdict(float("nan"), 0.521, 0.530) == ""


def test_method_verdict_is_one_phrase_over_the_budgets():
    assert method_verdict(["within", "within"]) == ("within their seed spread (within at 2 of 2 "
                                                    "budgets)")
    assert method_verdict(["above", "within", ""]) == ("above their seed spread (above at 1, "
                                                       "within at 1 of 2 budgets)")
    assert method_verdict(["below"]) == "below their seed spread (below at 1 of 1 budget)"
    assert method_verdict(["above", "below"]) == "mixed (above at 1, below at 1 of 2 budgets)"
    assert method_verdict(["below"], counted=False) == "below their seed spread"


def test_what_they_did_not_run_is_said_so_not_a_miss(comparison):
    section = section_of(comparison, PAPER_DATASET)
    assert cell(section, "cce", 2)["note"] == NOT_RUN_BY_AUTHORS  # their grid starts at 4
    assert cell(section, "cce", 2)["auc_verdict"] == ""
    assert cell(section, "pq", 16)["note"] == NOT_RUN_BY_AUTHORS
    assert cell(section, "pq", 16)["group"] == "post-training"
    # Their budgets we did not run: rows of the comparison, no verdict.
    assert cell(section, "cce", 8192)["note"] == NOT_RUN_HERE
    assert pd.isna(cell(section, "cce", 8192)["auc_mean"])
    assert "bloom" in section.also_ran and "cce" not in section.also_ran
    lines = section.method_lines()
    assert lines[0] == "full: val AUC within their seed spread; val BCE within their seed spread"
    assert lines[2] == ("cce: val AUC above their seed spread (above at 1, within at 1 of 2 "
                        "budgets); val BCE below their seed spread (within at 1, below at 1 of 2 "
                        "budgets); not run here: 4, 8, 32, 128, 256, 512, 1024, 2048, 4096, 8192 "
                        "ppd (theirs)")
    assert lines[-1] == "pq (post-training reference): not run by the authors"
    other = section_of(comparison, GMF_DATASET)
    assert not other.ran and set(other.rows["note"]) == {NOT_RUN_BY_AUTHORS}
    assert other.not_run_line().startswith(f"{GMF_DATASET}: not run by the authors (their GMF "
                                           "datasets: ml-1m, ml-20m,")


def test_epochs_follow_ours_to_the_nearest_of_theirs():
    assert authors_epochs("ml-1m", 30) == 30 and authors_epochs("ml-1m", 26) == 30
    assert authors_epochs("ml-1m", 20) == 10  # a tie goes to the shorter
    assert authors_epochs(PAPER_DATASET, 2) == 10
    assert authors_epochs(GMF_DATASET, 2) is None


def test_markdown_tables_groups_and_notes(comparison):
    text = to_markdown(comparison)
    assert f"### {GMF_DATASET} (GMF, dim 32) against the paper\n\n{GMF_DATASET}: not run by the " \
           "authors" in text
    assert "| method | ppd | ours | paper | paper min..max | ours − paper | verdict |" in text
    row = cell(section_of(comparison, PAPER_DATASET), "cce", 64)
    assert (f"| cce | 64 | 0.6050 ± 0.0071 | {row['paper_auc_mean']:.4f} ± "
            f"{row['paper_auc_std']:.4f} | {row['paper_auc_min']:.3f}..{row['paper_auc_max']:.3f} "
            f"| {row['auc_diff']:+.4f} | above |") in text
    assert "| hash | 16 | 0.4000 | " in text and "0.4000 ± 0.0000" not in text  # one seed
    assert "| cce | 2 | 0.5050 | not run by the authors | — | — | — |" in text
    assert "| cce | 8192 |" not in text  # listed in the verdict line instead
    auc_table = text.split("Best val AUC")[1].split("Best val BCE")[0]
    assert auc_table.index("| *post-training reference* |") < auc_table.index("| pq | 16 |")
    assert "BCE overstates by about 2%" in text
    assert "within = our mean inside their min..max" in text
    assert "- pq (post-training reference): not run by the authors" in text


def test_csv_and_latex(comparison):
    back = pd.read_csv(io.StringIO(to_csv(comparison)))
    assert list(back.columns) == list(comparison.long_frame().columns)
    assert set(back["note"].dropna()) == {NOT_RUN_BY_AUTHORS, NOT_RUN_HERE}
    latex = to_latex(comparison)
    assert latex.count("\\begin{table}") == latex.count("\\end{table}") == 2
    assert "ours $-$ paper" in latex and "\\emph{post-training reference}" in latex
    assert f"% {GMF_DATASET}: not run by the authors" in latex


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "latex"])
def test_cli_report_against_paper(paper_csv, fmt):
    result = runner.invoke(app, ["report", str(paper_csv), "--against", "paper", "--format", fmt])
    assert result.exit_code == 0, result.output
    assert NOT_RUN_BY_AUTHORS in result.stdout
    if fmt in ("table", "markdown"):
        assert "cce: val AUC above their seed spread (above at 1, within at 1 of 2" in \
            " ".join(result.stdout.split())


def test_cli_against_a_dataset_they_never_ran(paper_csv, in_tmp):
    rows = pd.read_csv(paper_csv)
    rows[rows["dataset"] == GMF_DATASET].to_csv(in_tmp / "quick.csv", index=False)
    result = runner.invoke(app, ["report", "quick.csv", "--against", "paper", "--format",
                                 "markdown"])
    assert result.exit_code == 0, result.output
    assert f"{GMF_DATASET}: not run by the authors" in result.stdout
    assert runner.invoke(app, ["report", "quick.csv", "--against", "thesis"]).exit_code == 2


@pytest.fixture
def captured(monkeypatch):
    """The figures as drawn, instead of files."""
    import matplotlib.pyplot as plt

    from cce_bench.plots import figures as figures_module

    kept = {}

    def keep(fig, out_dir, stem, formats):
        fig.canvas.draw()
        kept[stem] = fig
        return []

    monkeypatch.setattr(figures_module, "save", keep)
    yield kept
    for fig in kept.values():
        plt.close(fig)


def test_plot_reference_paper_draws_their_curves_dashed_in_our_colours(paper_csv, captured):
    from cce_bench.plots import PlotRequest, draw, method_styles

    outcome = draw(load_results([str(paper_csv)]), PlotRequest(metrics=["auc"],
                                                                reference="paper"))
    assert outcome.notes == [f"no paper curves for {GMF_DATASET}: not run by the authors"]
    ax = captured[f"{PAPER_DATASET}_auc"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    styles = method_styles([])
    for method in ("cce", "hash"):
        ours, paper = lines[method], lines[f"{method} (paper)"]
        assert paper.get_linestyle() == "--" and ours.get_linestyle() == "-"
        assert paper.get_color() == ours.get_color() == styles[method].color
        summary = authors_summary(PAPER_DATASET, 10)
        expected = summary[summary["method"] == method].sort_values("ppd")
        assert list(paper.get_xdata()) == list(expected["ppd"] * 32)  # their params: ppd x dim
        for ppd, y in zip(expected["ppd"], paper.get_ydata()):
            assert y == pytest.approx(theirs(PAPER_DATASET, method, int(ppd), "auc").mean())
    full = lines["full table (paper)"]
    assert full.get_linestyle() == "--"
    assert full.get_ydata()[0] == pytest.approx(theirs(PAPER_DATASET, "full", None, "auc").mean())
    assert "pq (paper)" not in lines  # they never ran it
    # pq: the post-training reference style, in its own legend group after the methods.
    assert lines["pq"].get_linestyle() == "-." and lines["pq"].get_markerfacecolor() == "none"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend.index("post-training reference") == legend.index("pq") - 1
    assert legend.index("dashed: the authors' results (paper)") < legend.index("cce (paper)")
    assert legend.index("cce") < legend.index("post-training reference")
    assert ax.get_xlabel() == "parameters per embedding table (index buffers not counted)"
    # Not their dataset: no paper lines; without --reference: none either.
    other = captured[f"{GMF_DATASET}_auc"].axes[0]
    assert not any("(paper)" in line.get_label() for line in other.get_lines())
    draw(load_results([str(paper_csv)]), PlotRequest(metrics=["auc"]))
    plain = captured[f"{PAPER_DATASET}_auc"].axes[0]
    assert not any("(paper)" in line.get_label() for line in plain.get_lines())


def test_plot_reference_on_the_bytes_axis_says_why_not(paper_csv, captured):
    from cce_bench.plots import PlotRequest, draw

    outcome = draw(load_results([str(paper_csv)]), PlotRequest(metrics=["bce"], x="bytes",
                                                                reference="paper"))
    assert outcome.notes == ["no paper curves on the bytes axis: the authors' results give "
                             "parameters only; use --x params or --x ppd"]
    ax = captured[f"{PAPER_DATASET}_bce"].axes[0]
    assert ax.get_xlabel().startswith("model bytes incl. index buffers")
    assert not any("(paper)" in line.get_label() for line in ax.get_lines())


def test_cli_plot_reference_paper(paper_csv, in_tmp):
    result = runner.invoke(app, ["plot", str(paper_csv), "--reference", "paper", "--metric",
                                 "bce", "--format", "png", "--out", "figs"])
    assert result.exit_code == 0, result.output
    assert f"no paper curves for {GMF_DATASET}: not run by the authors" in result.output
    assert (in_tmp / "figs" / f"paper_{PAPER_DATASET}_bce.png").read_bytes()[:4] == b"\x89PNG"
    assert runner.invoke(app, ["plot", str(paper_csv), "--reference", "thesis"]).exit_code == 2


def test_two_sweeps_of_one_dataset_are_compared_one_by_one(paper_csv, in_tmp):
    """Two sweeps of their dataset that differ (another lr, say) get a section each, named by
    the sweep, with their own means and verdicts; they are never pooled as seeds."""
    rows = load_results([str(paper_csv)])
    ours = rows[rows["dataset"] == PAPER_DATASET]
    worse = ours.assign(sweep="lr01", run_id=ours["run_id"] + "-lr01",
                        val_auc=ours["val_auc"] - 0.1)
    both = pd.concat([ours.assign(sweep="paper"), worse], ignore_index=True)
    comparison = build_comparison(best_per_run(both))
    assert [s.title for s in comparison.sections] == [
        f"{PAPER_DATASET} (GMF, dim 32, sweep lr01) against the paper",
        f"{PAPER_DATASET} (GMF, dim 32, sweep paper) against the paper"]
    lr01, paper = comparison.sections
    for section, shift in ((paper, 0.0), (lr01, 0.1)):
        row = cell(section, "cce", 16)
        assert row["seeds"] == 2  # the sweep's own two seeds, not four
        assert row["auc_mean"] == pytest.approx(0.526 - shift)
        assert set(section.rows["sweep"]) == {section.sweep}
    assert cell(paper, "cce", 16)["auc_verdict"] == "within"
    assert cell(lr01, "cce", 16)["auc_verdict"] == "below"
    assert set(to_csv_frame(comparison)["sweep"]) == {"lr01", "paper"}
    both.to_csv(in_tmp / "both.csv", index=False)
    result = runner.invoke(app, ["report", "both.csv", "--against", "paper", "--format",
                                 "markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count(f"### {PAPER_DATASET} (GMF, dim 32, sweep ") == 2


def to_csv_frame(comparison):
    return pd.read_csv(io.StringIO(to_csv(comparison)))


def test_our_cells_still_improving_are_marked_against_the_paper(paper_csv):
    from .conftest import still_rising

    rows = load_results([str(paper_csv)])
    cce16 = ((rows["dataset"] == PAPER_DATASET) & (rows["method"] == "cce")
             & (rows["budget_asked"] == 16 * 32) & (rows["seed"] == 0))
    comparison = build_comparison(best_per_run(still_rising(rows, cce16)))
    section = section_of(comparison, PAPER_DATASET)
    assert cell(section, "cce", 16)["still_improving"] == 1
    assert cell(section, "cce", 64)["still_improving"] == 0
    text = to_markdown(comparison)
    bce = text.split("Best val BCE")[1]
    line = next(li for li in bce.splitlines() if li.startswith("| cce | 16 |"))
    assert line.split(" | ")[2].endswith(" †")
    assert "† still improving at the last epoch" in text
    assert "†" not in to_markdown(build_comparison(best_per_run(rows)))
