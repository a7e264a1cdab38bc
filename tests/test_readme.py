"""The README's own-model snippet runs as written, and does what the engine does."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


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
