"""The help screens: quick to show (no torch, pandas or matplotlib behind `--help`, `methods` and
`datasets`), in one style, with fixed sets of values as choices whose errors are one line, and
one name per concept (`--results` is a results folder, `--out` a folder of figures)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cce_bench.cli import app, build_app
from tests.conftest import TINY_DATASET

runner = CliRunner()
HEAVY = ("matplotlib", "pandas", "torch")
COMMANDS = ["sweep", "plot", "report", "methods", "datasets", "download", "bench"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("args", [["--help"], ["methods"], ["datasets"],
                                  *([command, "--help"] for command in COMMANDS)])
def test_help_and_listings_import_no_heavy_module(args):
    # A fresh interpreter, as a user's shell starts one; the data cache is the test's.
    code = ("import sys\n"
            f"sys.argv = ['cce-bench', *{args!r}]\n"
            "from cce_bench.cli import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as stop:\n"
            "    assert not stop.code, stop.code\n"
            f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "heavy: []"


@pytest.mark.parametrize("args, value, choices", [
    (["sweep", "--device", "gpu"], "gpu", "auto, cpu, cuda, cuda:N"),
    (["sweep", "--device", "cuda:x"], "cuda:x", "auto, cpu, cuda, cuda:N"),
    (["sweep", "--kmeans", "sklearn"], "sklearn", "auto, faiss, torch"),
    (["sweep", "--budget-unit", "bytes"], "bytes", "ppd, params"),
    (["sweep", "--backend", "slurm"], "slurm", "local, ray"),
    (["sweep", "--model", "dcn"], "dcn", "gmf, dlrm"),
    (["sweep", "--optimizer", "adam"], "adam", "adamw, sgd"),
    (["sweep", "--precision", "fp16"], "fp16", "fp32, tf32, bf16"),
    (["sweep", "--shuffle", "random"], "random", "rows, blocks"),
    (["bench", "--device", "gpu"], "gpu", "auto, cpu, cuda, cuda:N"),
    (["bench", "--model", "dcn"], "dcn", "gmf, dlrm"),
    (["download", TINY_DATASET, "--device", "auto"], "auto", "cpu, cuda, cuda:N"),
    (["plot", "--metric", "f1"], "f1", "bce, auc, both"),
    (["plot", "--kind", "compression", "-k", "pie"], "pie",
     "compression, chunks, criteo, curves, cost, all"),
    (["report", "--format", "html"], "html", "table, markdown, csv, latex"),
])
def test_a_value_outside_the_choices_is_one_line(in_tmp, args, value, choices):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    option = "'--kind' / '-k'" if args[-2] == "-k" else f"'{args[-2]}'"
    assert result.output.splitlines() == [
        f"error: Invalid value for {option}: '{value}' is not one of {choices} "
        f"(see cce-bench {args[0]} --help)"]
    assert not list(in_tmp.iterdir())  # refused before anything was written


def test_an_unknown_option_or_command_is_one_line_too():
    assert invoke("sweep", "--bogus").output.startswith("error: No such option: --bogus")
    result = invoke("swep")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: No such command 'swep'. Did you mean 'sweep'? (see cce-bench --help)"]


def test_choice_takes_cuda_n_for_any_device_number():
    from cce_bench.cli.common import choice

    parse = choice(["auto", "cuda", "cuda:N"])["parser"]
    assert [parse(v) for v in ("auto", "cuda", "cuda:0", "cuda:12")] == [
        "auto", "cuda", "cuda:0", "cuda:12"]
    for bad in ("cuda:", "cuda:N", "cuda:1x", "AUTO"):
        with pytest.raises(Exception, match=f"'{bad}' is not one of auto, cuda, cuda:N"):
            parse(bad)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_screen_has_one_style(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output  # flags take no value
    assert "[default:" not in result.output  # defaults are said in the help text


def test_main_help_has_no_bool_metavar_and_one_line_summaries():
    assert "<bool>" not in invoke("--help").output
    # `cce-bench --help` shows each command's first paragraph with its line breaks: one line,
    # or the list breaks mid-phrase.
    for info in build_app().registered_commands:
        summary = inspect.cleandoc(info.callback.__doc__).split("\n\n")[0]
        assert "\n" not in summary and len(summary) <= 90, info.callback.__name__


def test_the_results_folder_is_results_everywhere(in_tmp):
    for command in ("sweep", "plot", "report"):
        assert "--results" in runner.invoke(app, [command, "--help"]).output
    sweep_help = invoke("sweep", "--help").output
    plot_help = invoke("plot", "--help").output
    assert "--out " not in sweep_help  # the old name works, unlisted
    assert "--out " in plot_help and "Folder for the figures" in plot_help

    new = invoke("sweep", "-d", TINY_DATASET, "--results", "mine", "--dry-run")
    assert new.exit_code == 0 and "already in mine/default.csv" in new.output
    old = invoke("sweep", "-d", TINY_DATASET, "--out", "old", "--dry-run")
    assert old.exit_code == 0 and "already in old/default.csv" in old.output
    both = invoke("sweep", "--out", "old", "--results", "mine")
    assert both.exit_code == 1 and "--out is the old name of --results; give one of them" in \
        both.output

    # A spec file written before the rename says `out`: still read as the results folder.
    (in_tmp / "old.toml").write_text(f'datasets = "{TINY_DATASET}"\nout = "earlier"\n')
    spec = invoke("sweep", "old.toml", "--dry-run")
    assert spec.exit_code == 0 and "already in earlier/old.csv" in spec.output


def test_the_choices_the_help_shows_are_the_ones_plots_draws():
    from importlib import import_module

    from cce_bench.cli import plot, report
    from cce_bench.plots import figures, paper, style, training
    from cce_bench.plots import report as tables

    draw = import_module("cce_bench.plots.draw")  # the module: cce_bench.plots.draw is a function
    assert plot.KINDS == [*draw.KINDS, "all"]
    assert plot.METRICS == [*figures.METRICS, "both"]
    assert plot.X_AXES == list(figures.X_AXES)
    assert plot.FORMATS == list(style.FORMATS)
    assert plot.REFERENCES == list(paper.REFERENCES)
    assert plot.CURVE_X == list(training.CURVE_X)
    assert [f.value for f in report.Format] == list(tables.FORMATS)
    assert report.DEFAULT_TOLERANCE == tables.DEFAULT_TOLERANCE


def test_docstring_paragraphs_reach_the_help_screen_unbroken():
    from cce_bench.cli import reflow

    doc = """Summary line.

    A paragraph written over
    two lines.

    Another one.
    """
    assert reflow(doc) == "Summary line.\n\nA paragraph written over two lines.\n\nAnother one."
