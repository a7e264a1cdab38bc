"""`cce-bench download NAME --from clicks.csv` end to end: listed, swept, plotted and reported
by NAME; and each way it can go wrong is one red line with exit code 1."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.results import read_rows

ASSET = Path(__file__).resolve().parents[1] / "assets" / "clicks.csv"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A data cache of the test's own: the session's is shared, and these tests add to it."""
    monkeypatch.setenv("CCE_BENCH_DATA", str(tmp_path / "data-cache"))


@pytest.fixture
def clicks(in_tmp) -> Path:
    return Path(shutil.copy(ASSET, in_tmp / "clicks.csv"))


def error_line(result, code: int = 1) -> str:
    """The one error line of a failed command (no traceback, nothing after it)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    return errors[0]


def test_download_list_sweep_plot_and_report_your_own_clicks(clicks, in_tmp):
    added = invoke("download", "my-clicks", "--from", "clicks.csv")
    assert added.exit_code == 0, added.output
    assert "my-clicks ready: train " in added.output and "rows (custom)" in added.output
    assert "train on it: cce-bench sweep -d my-clicks --method cce" in added.output
    assert "users have fewer than 3 rows: all of theirs are in validation" in " ".join(
        added.output.split())
    again = invoke("download", "my-clicks")
    assert again.exit_code == 0 and "my-clicks already in the cache" in again.output

    listing = invoke("datasets")
    line = next(line for line in listing.output.splitlines() if line.startswith("my-clicks "))
    assert "ready" in line.split()

    swept = invoke("sweep", "-d", "my-clicks", "-m", "cce", "-m", "hash", "-b", "4", "-b", "16",
                   "--epochs", "2", "--batch-size", "64")
    assert swept.exit_code == 0, swept.output
    rows = read_rows(in_tmp / "results" / "default.csv")
    assert set(rows["dataset"]) == {"my-clicks"} and set(rows["status"]) == {"ok"}
    assert rows["val_auc"].notna().all()

    plotted = invoke("plot")
    assert plotted.exit_code == 0, plotted.output
    figure = in_tmp / "results" / "figures" / "default_my-clicks_auc.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    report = invoke("report", "--format", "markdown")
    assert report.exit_code == 0 and report.output.startswith("### my-clicks (GMF"), report.output


def test_a_changed_file_is_refused_until_forced(clicks):
    assert invoke("download", "my-clicks", "--from", "clicks.csv").exit_code == 0
    clicks.write_text(clicks.read_text() + "user-0,item-0,1,1700000000\n")
    line = error_line(invoke("download", "my-clicks", "--from", "clicks.csv"))
    assert "clicks.csv differs" in line and "pass --force to rebuild my-clicks" in line
    forced = invoke("download", "my-clicks", "--from", "clicks.csv", "--force")
    assert forced.exit_code == 0, forced.output


def test_columns_of_other_names_are_mapped_with_options(clicks):
    text = clicks.read_text().replace("user,item,label,timestamp", "uid,video,clicked,ts", 1)
    Path("views.csv").write_text(text)
    line = error_line(invoke("download", "my-views", "--from", "views.csv"))
    assert line == ("error: views.csv has no column 'user' (its columns: uid, video, clicked, "
                    "ts); name the user column with --user-column COLUMN")
    mapped = invoke("download", "my-views", "--from", "views.csv", "--user-column", "uid",
                    "--item-column", "video", "--label-column", "clicked", "--time-column", "ts")
    assert mapped.exit_code == 0, mapped.output


@pytest.mark.parametrize("args,text,message", [
    (["my-clicks", "--from", "nope.csv"], None, "error: --from nope.csv: no such file"),
    (["my-clicks", "--from", "bad.csv"], "user,item,label\na,b,1\na,c,5\n",
     "error: bad.csv line 3: the label is 5, not 0 or 1; labels are clicks (1) and non-clicks "
     "(0): binarize ratings first (e.g. 1 where rating >= 4)"),
    (["my-clicks", "--from", "bad.csv"], "user,item,label\na,b,1\n,c,0\n",
     "error: bad.csv line 3: the user id is empty"),
    (["my-clicks", "--from", "bad.csv"], "", "error: bad.csv is empty"),
    (["my-clicks", "--from", "bad.csv"], "user,item,label\na,b,1\na,c,0\n",
     "error: bad.csv: no user has more than 2 rows (1 user, 2 rows)"),
    (["ml-1m", "--from", "clicks.csv"], None,
     "error: ml-1m is a built-in dataset and clicks.csv is not its release; to add your own "
     "data, give it a name of its own: `cce-bench download my-clicks --from clicks.csv`"),
    (["My Clicks", "--from", "clicks.csv"], None,
     "error: dataset name 'My Clicks' has characters a name may not"),
    (["ml-clicks", "--from", "clicks.csv"], None,
     "error: dataset name 'ml-clicks' is kept for cce-bench's own datasets"),
    (["ml-1m", "--user-column", "uid"], None,
     "error: ml-1m is a built-in dataset; the column options (--user-column, ...) apply to "
     "your own data only"),
    (["my-clicks", "--from", "clicks.csv", "--threshold", "2"], None,
     "error: --threshold do not apply to your own data (my-clicks)"),
])
def test_each_problem_is_one_line_and_exit_1(args, text, message, clicks):
    if text is not None:
        Path("bad.csv").write_text(text)
    assert error_line(invoke("download", *args)).startswith(message)


def test_parquet_without_pyarrow_names_the_install(clicks, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    Path("clicks.parquet").write_bytes(b"PAR1")
    line = error_line(invoke("download", "my-clicks", "--from", "clicks.parquet"))
    assert line == ("error: reading clicks.parquet needs pyarrow, which cce-bench does not "
                    "install: `pip install pyarrow` (or save the file as CSV)")


def test_a_sweep_on_data_not_added_yet_says_how_to_add_it(in_tmp):
    line = error_line(invoke("sweep", "-d", "my-clicks", "--epochs", "1"))
    assert "unknown dataset 'my-clicks'" in line
    assert line.endswith("or your own data: cce-bench download my-clicks --from FILE.csv")


def test_dlrm_refuses_your_clicks(clicks):
    assert invoke("download", "my-clicks", "--from", "clicks.csv").exit_code == 0
    line = error_line(invoke("sweep", "-d", "my-clicks", "--model", "dlrm", "--dry-run"))
    assert "my-clicks is an interaction dataset; DLRM needs a Criteo dataset" in line


def test_help_shows_how_to_add_your_own_data():
    top = " ".join(invoke("--help").output.replace("│", " ").split())  # rich's box, unwrapped
    assert "or add your own clicks" in top
    download = invoke("download", "--help").output
    for option in ("--user-column", "--item-column", "--label-column", "--time-column"):
        assert option in download
