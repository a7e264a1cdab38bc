"""A run's model from its RunConfig: GMF or DLRM, every table made by the run's method.

DLRM's budget is a cap on the parameters of one table (the paper's x axis for Criteo): a table
whose full size, vocab x dim, fits under the cap stays a full table, and every larger one gets
the method at the cap. GMF gives both its tables the budget.
"""

from __future__ import annotations

import math

from torch import nn

from ..config import RunConfig
from ..data import CriteoData, InteractionData
from ..embeddings import make_embedding
from ..embeddings.registry import get_method
from ..errors import ConfigError
from .dlrm import DLRM
from .gmf import GMF

N_DENSE = 13  # Criteo's dense (integer) features


def steps_per_epoch(run: RunConfig, data: InteractionData | CriteoData) -> int:
    rows = len(data.train) if isinstance(data, InteractionData) else data.split_sizes["train"]
    return math.ceil(rows / run.batch_size)


def method_options(run: RunConfig, data: InteractionData | CriteoData) -> dict:
    """Keyword options for the run's method, with the engine's schedule filled in."""
    opts = dict(run.method_opts)
    cls = get_method(run.method).cls
    if hasattr(cls, "cluster"):
        opts.setdefault("kmeans_backend", run.kmeans)
    if getattr(cls, "post_training", False):
        # A post-training method (pq) compresses on the schedule's last cluster() call: it trains
        # at full size while CCE clusters and fine-tunes compressed while CCE does.
        opts.setdefault("compress_round", run.cluster_rounds(steps_per_epoch(run, data)))
    return opts


def build_model(run: RunConfig, data: InteractionData | CriteoData,
                batch_tables: bool = True) -> nn.Module:
    """The run's model with its embedding method (raises BudgetTooSmall for a tiny budget).
    batch_tables: DLRM's tables of one kind as one module (False only to measure what that
    buys)."""
    opts = method_options(run, data)
    if run.model == "gmf":
        if not isinstance(data, InteractionData):
            raise ConfigError(f"{data.name} is a Criteo dataset; GMF needs an interaction "
                              "dataset (use --model dlrm for Criteo)")

        def factory(vocab: int) -> nn.Module:
            return make_embedding(vocab, run.budget, run.dim, run.method, run.n_chunks, **opts)

        return GMF(data.n_users, data.n_items, run.dim, factory)
    if not isinstance(data, CriteoData):
        raise ConfigError(f"{data.name} is an interaction dataset; DLRM needs a Criteo dataset "
                          "(criteo-kaggle, criteo-terabyte, criteo-synthetic)")
    full_opts = {k: v for k, v in opts.items() if k in _full_table_options()}

    def capped(vocab: int) -> nn.Module:
        if vocab * run.dim <= run.budget or get_method(run.method).family == "uncompressed":
            return make_embedding(vocab, vocab * run.dim, run.dim, "full", 1, **full_opts)
        return make_embedding(vocab, run.budget, run.dim, run.method, run.n_chunks, **opts)

    return DLRM(N_DENSE, data.vocab_sizes, run.dim, run.bottom_mlp, run.top_mlp, capped,
                batch_tables, run.precision)


def _full_table_options() -> set[str]:
    from ..embeddings import _keyword_options

    return _keyword_options(get_method("full").cls)


def model_size(model: nn.Module) -> tuple[int, int, int, int]:
    """(params of the largest table, params of all tables, buffer bytes of all tables, total
    bytes: every trainable parameter at 4 bytes plus the buffers)."""
    sizes = model.table_sizes()
    buffers = sum(b for _, b in sizes)
    total = 4 * sum(p.numel() for p in model.parameters()) + buffers
    return max(p for p, _ in sizes), sum(p for p, _ in sizes), buffers, total
