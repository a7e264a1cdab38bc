"""`report --against paper` and `plot --reference paper` on DLRM runs: the authors' Criteo
figure values, matched by cap, compared on the metric their figure gives."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import cce_bench.plots
from cce_bench.cli import app
from cce_bench.plots import PlotRequest, best_per_run, draw, load_results, method_styles
from cce_bench.plots.paper import NOT_RUN_BY_AUTHORS, NOT_RUN_HERE, build_comparison
from cce_bench.plots.paper_criteo import READ_OFF, matched
from cce_bench.plots.paper_tables import to_csv, to_latex, to_markdown

from .conftest import CRITEO_RUNS, CRITEO_SYNTHETIC, KAGGLE, TERABYTE
from .test_paper import captured  # noqa: F401 - the fixture

FIGURES_CSV = Path(cce_bench.plots.__file__).parent / "reference" / "authors-criteo-figures.csv"
runner = CliRunner()


def theirs(dataset: str, method: str, x: float | None) -> float:
    """Their value straight from the shipped CSV (x None: their full table)."""
    raw = pd.read_csv(FIGURES_CSV)
    raw = raw[(raw["dataset"] == dataset) & (raw["method"] == method)]
    raw = raw[raw["largest_table_params"].isna()] if x is None else raw[
        raw["largest_table_params"] == x]
    assert len(raw) == 1
    return float(raw["value"].iloc[0])


@pytest.fixture(scope="module")
def comparison(criteo_csv):
    return build_comparison(best_per_run(load_results([str(criteo_csv)])))


def section_of(comparison, dataset):
    return next(s for s in comparison.sections if s.dataset == dataset)


def row_of(section, method, budget):
    """Our row at a budget in the section's own budget column (None: the full table)."""
    rows = section.rows
    column = rows[section.on]
    match = rows[(rows["method"] == method) & (column.isna() if budget is None
                                                 else column == budget)]
    assert len(match) == 1, (method, budget, match)
    return match.iloc[0]


@pytest.mark.parametrize("method, cap, their_cap, expected", [
    ("full", None, None, "within"), ("cce", 1600, 1600, "within"),
    ("cce", 3520, 3500, "below"), ("cce", 8000, 8000, "above"), ("hash", 1600, 1600, "within"),
    ("dhe", 1600, 1600, "within")])
def test_kaggle_best_val_bce_against_their_figure(comparison, method, cap, their_cap, expected):
    section = section_of(comparison, KAGGLE)
    assert section.ran and section.metrics == ("bce",) and section.paper_epochs == 10
    row = row_of(section, method, cap)
    ours = pd.Series([seed[0] for seed in CRITEO_RUNS[(KAGGLE, method, cap or 0)]])
    paper = theirs(KAGGLE, method, their_cap)
    assert row["bce_mean"] == pytest.approx(ours.mean())
    assert row["paper_bce_mean"] == row["paper_bce_min"] == row["paper_bce_max"] == paper
    assert row["paper_seeds"] == 1 and pd.isna(row["paper_bce_std"])
    assert row["bce_diff"] == pytest.approx(ours.mean() - paper)
    assert row["bce_verdict"] == expected
    independent = ("above" if ours.mean() > paper + READ_OFF else
                   "below" if ours.mean() < paper - READ_OFF else "within")
    assert independent == expected
    if their_cap is not None:
        assert row["paper_budget"] == their_cap  # their x value, kept beside our cap
    assert row["auc_verdict"] == "" and row["test_verdict"] == ""  # their figure gives BCE


def test_caps_match_within_two_percent_and_the_rest_is_said(comparison):
    assert matched(pd.Series([3500.0, 1600.0, 35000.0, float("nan")]),
                   pd.Series([3520.0, 1600.0, 35300.0])).tolist()[:3] == [3520.0, 1600.0,
                                                                          35300.0]
    assert matched(pd.Series([3500.0]), pd.Series([3600.0])).tolist() == [3500.0]  # 2.9% off
    section = section_of(comparison, KAGGLE)
    assert row_of(section, "hash", 2000)["note"] == NOT_RUN_BY_AUTHORS
    assert row_of(section, "cce", 16000)["note"] == NOT_RUN_HERE
    assert section.also_ran == ["ce", "pq"]
    lines = section.method_lines()
    spread = "the reading of their figure (± 0.0002)"
    assert lines[0] == f"full: val BCE within {spread}"
    assert lines[1].startswith(f"hash: val BCE within {spread} (within at 1 of 1 budget); "
                               f"{NOT_RUN_HERE}: 3,500, 8,000, 16,000,")
    assert lines[2] == (f"dhe: val BCE within {spread} (within at 1 of 1 budget); "
                        f"{NOT_RUN_HERE}: 3,500, 8,000, 16,000, 35,000, 80,000, 160,000, "
                        "350,000, 800,000 params (theirs)")
    assert lines[3].startswith(f"cce: val BCE mixed (above at 1, within at 1, below at 1 of 3 "
                               f"budgets); {NOT_RUN_HERE}: 16,000, 35,000")


def test_terabyte_compares_test_bce_at_the_best_validation_point(comparison):
    section = section_of(comparison, TERABYTE)
    assert section.metrics == ("test",) and section.budget_header == "rows per table"
    cce = row_of(section, "cce", 100)  # ppd: rows per table
    assert cce["test_mean"] == pytest.approx(0.12790)  # not the later, lower test BCE
    assert cce["paper_test_mean"] == theirs(TERABYTE, "cce", 100)
    assert cce["test_verdict"] == "within" and cce["bce_verdict"] == ""
    full = row_of(section, "full", None)
    assert full["test_verdict"] == "below"
    assert full["test_diff"] == pytest.approx(0.12600 - theirs(TERABYTE, "full", None))
    assert "hash" in section.also_ran
    assert section.method_lines() == [
        "full: test BCE below the reading of their figure (± 0.0002)",
        "cce: test BCE within the reading of their figure (± 0.0002) (within at 1 of 1 budget); "
        "not run here: 500, 1,000, 5,000, 10,000, 50,000 rows (theirs)"]
    text = to_markdown(comparison)  # their values have 5 decimals: ours too
    assert "| cce | 100 | 0.12790 | 0.12785 | 0.12765..0.12805 | +0.00005 | within |" in text


def test_a_dataset_of_theirs_is_compared_and_criteo_synthetic_is_not(comparison):
    synthetic = section_of(comparison, CRITEO_SYNTHETIC)
    assert not synthetic.ran and set(synthetic.rows["note"]) == {NOT_RUN_BY_AUTHORS}
    assert synthetic.not_run_line() == (
        f"{CRITEO_SYNTHETIC}: not run by the authors (their DLRM figures: criteo-kaggle, "
        "criteo-terabyte); nothing to compare")
    assert synthetic.method_lines() == [f"cce: {NOT_RUN_BY_AUTHORS}"]


def test_markdown_latex_and_csv(comparison):
    text = to_markdown(comparison)
    assert ("| method | cap (params) | ours | paper | paper ± 0.0002 | ours − paper | verdict |"
            in text)
    assert "| cce | 3,520 | 0.4520 | 0.4532 | 0.4530..0.4534 | -0.0012 | below |" in text
    assert "| cce | 1,600 | 0.4563 ± 0.0003 | 0.4562 | 0.4560..0.4564 | +0.0001 | within |" in text
    assert "| hash | 2,000 | 0.4570 | not run by the authors | — | — | — |" in text
    assert "| dhe | 1,600 | 0.4588 † |" in text  # still improving at its last epoch
    assert "† still improving at the last epoch" in text
    assert "no seed spread, so a verdict says whether the difference is larger than the figure " \
           "resolves, not whether it is larger than seed noise" in text
    assert "results/criteo2.png: best val BCE of 10 epochs against parameters in the largest " \
           "table" in text
    assert "Best test BCE at the best val BCE point" in text  # Terabyte's table
    assert "| method | rows per table | ours |" in text
    assert f"{CRITEO_SYNTHETIC}: not run by the authors" in text
    latex = to_latex(comparison)
    assert latex.count("\\begin{table}") == latex.count("\\end{table}") == 2
    assert "cap (params) & ours" in latex and "0.4588 $^\\dagger$" in latex
    back = pd.read_csv(io.StringIO(to_csv(comparison)))
    kaggle = back[(back["dataset"] == KAGGLE) & (back["method"] == "cce")]
    assert kaggle["budget_asked"].dropna().tolist()[:3] == [1600, 3520, 8000]
    assert kaggle["paper_budget"].tolist()[:3] == [1600, 3500, 8000]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "latex"])
def test_cli_report_against_paper_on_criteo(criteo_csv, fmt):
    result = runner.invoke(app, ["report", str(criteo_csv), "--against", "paper", "--format",
                                 fmt])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert NOT_RUN_BY_AUTHORS in flat
    if fmt in ("table", "markdown"):
        assert "cce: val BCE mixed (above at 1, within at 1, below at 1 of 3 budgets)" in flat
        assert "criteo-terabyte (DLRM, dim 64) against the paper" in flat


def test_plot_criteo_reference_paper_draws_their_kaggle_curves(criteo_csv, captured):  # noqa: F811
    rows = load_results([str(criteo_csv)])
    outcome = draw(rows, PlotRequest(kinds=["criteo"], metrics=["bce", "auc"],
                                     reference="paper"))
    assert outcome.notes == [
        f"no paper curves for {KAGGLE} on val AUC: their figure gives best val BCE of 10 "
        "epochs only",
        f"no paper curves for {CRITEO_SYNTHETIC}: not run by the authors",
        f"no paper curves for {TERABYTE}: their figure gives test BCE, these figures draw "
        "validation scores (report --against paper compares test BCE)"]
    fig = captured["criteo_bce"]
    kaggle = next(ax for ax in fig.axes if ax.get_title().startswith(KAGGLE))
    lines = {line.get_label(): line for line in kaggle.get_lines()}
    styles = method_styles([])
    raw = pd.read_csv(FIGURES_CSV)
    for method in ("cce", "hash", "dhe"):
        paper = lines[f"{method} (paper)"]
        expected = raw[(raw["dataset"] == KAGGLE) & (raw["method"] == method)]
        assert list(paper.get_xdata()) == list(expected["largest_table_params"])
        assert list(paper.get_ydata()) == list(expected["value"])
        assert paper.get_linestyle() == "--" and paper.get_color() == styles[method].color
    assert lines["full table (paper)"].get_ydata()[0] == theirs(KAGGLE, "full", None)
    assert "ce (paper)" not in lines  # they ran it; we did not
    for ax in fig.axes:
        if not ax.get_title().startswith(KAGGLE):
            assert not any("(paper)" in line.get_label() for line in ax.get_lines())
    auc = next(ax for ax in captured["criteo_auc"].axes if ax.get_title().startswith(KAGGLE))
    assert not any("(paper)" in line.get_label() for line in auc.get_lines())
    # --x ppd: their parameters over their dim 16.
    draw(rows, PlotRequest(kinds=["compression"], metrics=["bce"], x="ppd", reference="paper"))
    ax = captured[f"{KAGGLE}_bce"].axes[0]
    cce = next(line for line in ax.get_lines() if line.get_label() == "cce (paper)")
    assert cce.get_xdata()[0] == 1600 / 16


def test_cli_plot_criteo_reference_paper(criteo_csv, in_tmp):
    result = runner.invoke(app, ["plot", str(criteo_csv), "--kind", "criteo", "--reference",
                                 "paper", "--metric", "bce", "--format", "png", "--out", "figs"])
    assert result.exit_code == 0, result.output
    assert f"no paper curves for {TERABYTE}: their figure gives test BCE" in result.output
    assert (in_tmp / "figs" / "criteo_criteo_bce.png").read_bytes()[:4] == b"\x89PNG"
