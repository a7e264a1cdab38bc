"""The CLI end to end: sweep, resume, plot, report, listings, and one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.results import read_rows
from tests.conftest import TINY_DATASET

runner = CliRunner()
SWEEP = ["sweep", "-d", TINY_DATASET, "-b", "4", "-b", "16", "--epochs", "2",
         "--batch-size", "512"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert text in result.output
    assert "Traceback" not in result.output


def test_sweep_writes_rows_and_a_second_identical_sweep_adds_none(in_tmp):
    first = invoke(*SWEEP, "-m", "cce", "-m", "full", "-m", "hash", "-m", "ce")
    assert first.exit_code == 0, first.output
    rows = read_rows(in_tmp / "results" / "default.csv")
    # cce, hash, ce at 2 budgets + full once, 2 epochs each
    assert rows["run_id"].nunique() == 7 and len(rows) == 14
    assert set(rows["status"]) == {"ok"}
    assert (rows.groupby("run_id")["epoch"].apply(sorted).map(tuple) == (1, 2)).all()
    assert len(list((in_tmp / "results" / "default" / "runs").glob("*.json"))) == 7

    second = invoke(*SWEEP, "-m", "cce", "-m", "full", "-m", "hash", "-m", "ce")
    assert second.exit_code == 0, second.output
    assert "0 runs trained" in second.output and "7 already done" in second.output
    assert len(read_rows(in_tmp / "results" / "default.csv")) == 14


def test_plot_and_report_from_the_sweep(in_tmp):
    assert invoke(*SWEEP, "-m", "cce", "-m", "hash", "--seeds", "2").exit_code == 0
    plotted = invoke("plot")
    assert plotted.exit_code == 0, plotted.output
    for metric in ("bce", "auc"):
        for fmt, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            path = in_tmp / "results" / "figures" / f"default_{TINY_DATASET}_{metric}.{fmt}"
            assert path.read_bytes()[:4] == magic

    csv = invoke("report", "--format", "csv")
    assert csv.exit_code == 0, csv.output
    table = pd.read_csv(pd.io.common.StringIO(csv.output))
    rows = read_rows(in_tmp / "results" / "default.csv")
    best = rows.groupby(["method", "budget_asked", "seed"])["val_auc"].max()
    expected = best.groupby(["method", "budget_asked"]).mean()
    for row in table.itertuples():
        assert row.auc_mean == pytest.approx(expected[(row.method, row.ppd * 32)], rel=1e-5)
    markdown = invoke("report", "--format", "markdown")
    assert markdown.exit_code == 0 and markdown.output.startswith(f"### {TINY_DATASET} (GMF")
    assert invoke("report").exit_code == 0


def test_methods_and_datasets_list_one_line_each():
    from cce_bench.embeddings import method_names

    listed = invoke("methods")
    assert listed.exit_code == 0
    lines = [line for line in listed.output.splitlines()[1:] if line.strip()]
    assert [line.split()[0] for line in lines] == method_names()
    datasets = invoke("datasets")
    assert datasets.exit_code == 0 and "syn-1500-1000000" in datasets.output


def test_unknown_method(in_tmp):
    assert_one_line_error(invoke("sweep", "-m", "nope"), 1,
                          "unknown method 'nope'; choose from: full, hash")


def test_unknown_dataset(in_tmp):
    assert_one_line_error(invoke("sweep", "-d", "imagenet"), 1, "unknown dataset 'imagenet'")


def test_unknown_option(in_tmp):
    result = invoke("sweep", "--bogus")
    assert result.exit_code == 2 and "No such option" in result.output


def test_budget_too_small_for_every_run(in_tmp):
    result = invoke("sweep", "-d", TINY_DATASET, "-m", "cce", "-b", "1", "--epochs", "1")
    # Asked as 1 ppd: the message gives both units, so it speaks the user's.
    assert_one_line_error(result, 1, "budget 32 params (1 ppd at dim 32) is too small for cce")
    assert "use at least 64 params (2 ppd)" in result.output
    rows = read_rows(in_tmp / "results" / "default.csv")
    assert rows["status"].tolist() == ["too_small"]  # recorded, so a resume skips it


def test_unwritable_results_folder(in_tmp):
    (in_tmp / "blocker").write_text("")
    result = invoke("sweep", "-d", TINY_DATASET, "--results", str(in_tmp / "blocker" / "results"))
    assert_one_line_error(result, 1, "cannot write results")


def test_plot_without_results(in_tmp):
    assert_one_line_error(invoke("plot"), 1, "no results file at results/default.csv")


def test_report_of_a_foreign_csv(in_tmp):
    (in_tmp / "x.csv").write_text("a,b\n1,2\n")
    assert_one_line_error(invoke("report", "x.csv"), 1, "is not a cce-bench results file")


def test_a_criteo_dataset_in_a_gmf_sweep_is_refused(in_tmp):
    assert_one_line_error(invoke("sweep", "-d", "criteo-kaggle"), 1,
                          "GMF needs an interaction dataset")


def test_shuffle_blocks_reaches_the_runs(in_tmp):
    import json

    result = invoke("sweep", "-d", "criteo-synthetic-2000-cap100", "--model", "dlrm", "-m",
                    "hash", "-b", "160", "--budget-unit", "params", "--dim", "8",
                    "--bottom-mlp", "13-16-8", "--top-mlp", "16-1", "--batch-size", "64",
                    "--epochs", "1", "--eval-every", "0", "--shuffle", "blocks",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    [config] = (in_tmp / "results" / "default" / "runs").glob("*.json")
    assert json.loads(config.read_text())["shuffle"] == "blocks"
    assert set(read_rows(in_tmp / "results" / "default.csv")["status"]) == {"ok"}


def test_ctrl_c_while_the_commands_load_is_one_line(monkeypatch, capsys):
    import pytest

    import cce_bench.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_app", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_the_cli_module_loads_without_torch():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, cce_bench.cli; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_version():
    from cce_bench import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"cce-bench {__version__}\n"
