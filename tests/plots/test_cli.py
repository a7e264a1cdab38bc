"""`cce-bench plot` and `cce-bench report` through the Typer app: files, formats, errors."""

from __future__ import annotations

import io
import shutil

import pandas as pd
from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.cli.plot import bayes_scores
from cce_bench.results import COLUMNS

from .conftest import BAYES, DLRM_DATASET, GMF_DATASET

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int, text: str) -> None:
    output = result.output.strip()
    assert result.exit_code == code, result.output
    assert text in output, output
    assert "Traceback" not in output
    if code == 1:
        assert len(output.splitlines()) == 1, output


def test_plot_a_sweep_by_name_into_its_figures_folder(results_csv, in_tmp):
    (in_tmp / "results").mkdir()
    shutil.copy(results_csv, in_tmp / "results" / "paper.csv")
    result = invoke("plot", "paper", "--metric", "bce", "--format", "png")
    assert result.exit_code == 0, result.output
    assert "skipped 4 runs without a result (3 too_small, 1 failed)" in result.output
    for dataset in (GMF_DATASET, DLRM_DATASET):
        path = in_tmp / "results" / "figures" / f"test_{dataset}_bce.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {path.relative_to(in_tmp)}" in result.output
    assert not list((in_tmp / "results" / "figures").glob("*_auc.png"))


def test_plot_kinds_formats_and_options(results_csv, in_tmp):
    result = invoke("plot", results_csv, "--kind", "cost", "--kind", "curves", "--metric", "auc",
                    "--x", "ppd", "--format", "pdf", "--format", "svg", "--out", "figs",
                    "--method", "cce", "--budget", "16", "--seed", "1", "--curve-x", "step")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (in_tmp / "figs").iterdir())
    assert names == sorted(f"test_{d}_{k}.{f}" for d in (GMF_DATASET, DLRM_DATASET)
                           for k in ("cost", "curves_auc") for f in ("pdf", "svg"))
    assert (in_tmp / "figs" / f"test_{GMF_DATASET}_cost.pdf").read_bytes()[:5] == b"%PDF-"


def test_plot_usage_errors_list_the_choices(results_csv, in_tmp):
    result = invoke("plot", results_csv, "--kind", "pie")
    assert result.exit_code == 2 and "compression" in result.output and "criteo" in result.output
    assert invoke("plot", results_csv, "--format", "jpg").exit_code == 2
    assert invoke("plot", results_csv, "--x", "rows").exit_code == 2
    assert invoke("report", results_csv, "--format", "html").exit_code == 2
    assert invoke("report", results_csv, "--tolerance", "-1").exit_code == 2


def test_empty_and_wrong_schema_csvs_give_one_line(in_tmp):
    (in_tmp / "empty.csv").write_text("")
    (in_tmp / "header.csv").write_text(",".join(COLUMNS) + "\n")
    (in_tmp / "other.csv").write_text("run_id,val_auc\nx,0.5\n")
    for command in ("plot", "report"):
        one_line_error(invoke(command, "empty.csv"), 1,
                       "empty.csv is not a cce-bench results file")
        one_line_error(invoke(command, "header.csv"), 1, "header.csv holds no rows yet")
        one_line_error(invoke(command, "other.csv"), 1, "other.csv is not a cce-bench results file")
        one_line_error(invoke(command, "nosuch"), 1, "no results file at results/nosuch.csv")


def test_plot_kind_that_the_results_cannot_draw(results_csv, in_tmp):
    rows = pd.read_csv(results_csv)
    rows[rows["model"] == "gmf"].to_csv(in_tmp / "gmf.csv", index=False)
    one_line_error(invoke("plot", "gmf.csv", "--kind", "criteo"), 1, "model 'dlrm'")
    result = invoke("plot", "gmf.csv", "--kind", "all", "--metric", "bce", "--format", "png")
    assert result.exit_code == 0 and "no Criteo figure" in result.output


def test_report_formats(results_csv, in_tmp):
    table = invoke("report", results_csv)
    assert table.exit_code == 0, table.output
    assert "compression at parity" in table.output and "±" in table.output
    csv = invoke("report", results_csv, "--format", "csv")
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert {"bce_mean", "best_bce", "parity_ppd", "ratio"} <= set(frame.columns)
    markdown = invoke("report", results_csv, "--format", "markdown")
    assert markdown.stdout.startswith("### ") and "| method |" in markdown.stdout
    latex = invoke("report", results_csv, "--format", "latex")
    assert "\\begin{tabular}" in latex.stdout
    # The note about failed runs goes to stderr, so redirected output stays clean.
    assert "skipped 4 runs" in markdown.stderr and "skipped" not in markdown.stdout


def test_report_tolerance_changes_parity(results_csv, in_tmp):
    def reached(tolerance):
        out = invoke("report", results_csv, "--format", "csv", "--tolerance", tolerance).stdout
        frame = pd.read_csv(io.StringIO(out))
        return frame["parity_ppd"].notna().sum()

    assert reached("0") <= reached("0.001") < reached("1")


def test_bayes_scores_come_from_the_cached_meta(bayes_meta):
    scores = bayes_scores([GMF_DATASET, DLRM_DATASET, "syn-7-70"])
    assert scores == {GMF_DATASET: {"auc": BAYES["bayes_val_auc"],
                                    "bce": BAYES["bayes_val_bce"]}}
