"""The README's own-model snippet and own-data commands run as written."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"
ASSETS = Path(__file__).resolve().parent / "assets"


def snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Using the embeddings in your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_own_model_snippet_runs_and_resets_the_optimizer_state():
    names: dict = {}
    exec(compile(snippet(), "README.md", "exec"), names)  # noqa: S102 - our own README
    emb, optimizer = names["emb"], names["optimizer"]
    assert names["vectors"].shape == (2, 2, 32)
    assert int(emb.rounds) == 1  # cluster_all clustered the table
    # After a step the moments are non-zero; cluster_all puts the rewritten tables' back to 0.
    emb(torch.tensor([5, 6])).sum().backward()
    optimizer.step()
    assert optimizer.state[emb.table0]["exp_avg"].abs().sum() > 0
    names["cluster_all"](names["model"], optimizer)
    assert optimizer.state[emb.table0]["exp_avg"].abs().sum() == 0
    assert optimizer.state[emb.table1]["exp_avg_sq"].abs().sum() == 0


def own_data_commands() -> list[list[str]]:
    """The commands of the README's "Your own data" section, as argument lists."""
    text = README.read_text()
    start = text.index("## Your own data")
    section = text[start:text.index("\n## ", start + 1)]
    commands = []
    for block in re.findall(r"```\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("cce-bench "):
                commands.append(shlex.split(line.split(" # ")[0])[1:])
    return commands


def test_the_own_data_commands_run_as_written(in_tmp, monkeypatch):
    from typer.testing import CliRunner

    from cce_bench.cli import app

    monkeypatch.setenv("CCE_BENCH_DATA", str(in_tmp / "data-cache"))
    clicks = ASSETS / "clicks.csv"
    shutil.copy(clicks, in_tmp / "clicks.csv")
    header, rest = clicks.read_text().split("\n", 1)
    (in_tmp / "views.csv").write_text("uid,video,clicked,ts\n" + rest)
    if importlib.util.find_spec("pyarrow") is not None:
        import pandas as pd

        pd.read_csv(clicks).to_parquet(in_tmp / "events.parquet")
    commands = own_data_commands()
    assert commands[0] == ["download", "my-clicks", "--from", "clicks.csv"]
    assert ["sweep", "-d", "my-clicks", "--method", "cce", "--method", "hash"] in commands
    for args in commands:
        if "--from" in args and not (in_tmp / args[args.index("--from") + 1]).exists():
            assert args[args.index("--from") + 1] == "events.parquet"  # no pyarrow here
            continue
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert (in_tmp / "results" / "figures" / "default_my-clicks_auc.png").is_file()
