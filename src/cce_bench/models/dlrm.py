"""DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", 2019, arXiv:1906.00091), with its dot interaction.

For a row with dense features x (F_d = 13 for Criteo) and categorical ids c_1 .. c_F (F = 26):
    z_0 = bottom_mlp(x)                         (B, D), every layer followed by ReLU
    z_t = E_t(c_t), t = 1 .. F                  (B, D), one embedding table per feature
    p   = (<z_a, z_b> for a < b)                (B, (F + 1) F / 2), each pair once, no diagonal
    logit = top_mlp([z_0, p])                   (B,), ReLU between layers, none after the last
with D the embedding dim. The engine applies BCE with logits, so the top MLP ends in a logit,
not in DLRM's sigmoid. Initialisation is DLRM's: layer weights N(0, sqrt(2 / (fan_in +
fan_out))), biases N(0, sqrt(1 / fan_out)); the embedding tables initialise themselves.

MLP sizes are written as DLRM's flags write them: bottom "13-512-256-64-16" names every layer
width from the dense input to the embedding dim; top "512-256-1" names the output widths, its
input width D + (F + 1) F / 2 following from the interaction.

The tables of one kind are batched into one module (tables.py): every full table (each one
under the method's cap, all of them for "full") in `FullTables`, the compressed tables of a
hashed method (hash, ce, cce) in `HashedTables`, DHE's in `DheTables`, pq's in `PqTables`
(full tables before compression, codebooks at stored codes after), so a stage is one gather
and one scatter (or one batched matmul) for all features instead of one per feature; the values
are those of separate tables. Other methods' tables stay one module each.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
from torch import nn

from ..embeddings.full import FullEmbedding
from ..errors import ConfigError
from .tables import FullTables, batch_key, batch_of, batchable

EmbeddingFactory = Callable[[int], nn.Module]  # vocab -> module mapping (*S) ids to (*S, dim)


def parse_mlp(text: str, what: str) -> list[int]:
    """"13-512-256" -> [13, 512, 256]; a bad size is a ConfigError naming the option."""
    try:
        sizes = [int(part) for part in text.split("-")]
    except ValueError:
        sizes = []
    if not sizes or any(n < 1 for n in sizes):
        raise ConfigError(f"{what} '{text}' is not a list of layer widths; write them joined "
                          "by '-', e.g. '13-512-256-64-16'")
    return sizes


def check_mlps(bottom: str, top: str, n_dense: int, dim: int) -> tuple[list[int], list[int]]:
    """The two MLPs' widths, checked to chain: dense features -> ... -> dim, ... -> 1."""
    bottom_sizes, top_sizes = parse_mlp(bottom, "bottom_mlp"), parse_mlp(top, "top_mlp")
    if len(bottom_sizes) < 2 or bottom_sizes[0] != n_dense or bottom_sizes[-1] != dim:
        raise ConfigError(f"bottom_mlp '{bottom}' must run from the {n_dense} dense features "
                          f"to the embedding dim {dim}, e.g. '{n_dense}-512-256-{dim}'")
    if top_sizes[-1] != 1:
        raise ConfigError(f"top_mlp '{top}' must end in one logit, e.g. '512-256-1'")
    return bottom_sizes, top_sizes


def mlp(sizes: list[int], last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():  # DLRM's own initialisation (dlrm_s_pytorch.py create_mlp)
            linear.weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
            linear.bias.normal_(0.0, math.sqrt(1.0 / fan_out))
        layers.append(linear)
        if last_relu or k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def pair_indices(n: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with a < b over n vectors, row by row: the strict upper triangle."""
    return torch.triu_indices(n, n, offset=1, device=device).unbind(0)


class DLRM(nn.Module):
    def __init__(self, n_dense: int, table_sizes: list[int], dim: int, bottom_mlp: str,
                 top_mlp: str, embedding_factory: EmbeddingFactory, batch_tables: bool = True,
                 precision: str = "fp32"):
        """batch_tables=False keeps every table its own module (for the speed benchmark).
        precision "bf16" runs the MLPs and the interaction under autocast (see
        dense_precision for "tf32")."""
        super().__init__()
        self.precision = precision
        bottom, top = check_mlps(bottom_mlp, top_mlp, n_dense, dim)
        self.dim, self.n_features = dim, len(table_sizes)
        self.bottom = mlp(bottom, last_relu=True)
        made = [embedding_factory(vocab) for vocab in table_sizes]
        full = [t for t, table in enumerate(made)
                if batch_tables and isinstance(table, FullEmbedding)]
        hashed = [t for t, table in enumerate(made)
                  if batch_tables and t not in full and batchable(table)]
        hashed = [t for t in hashed if batch_key(made[t]) == batch_key(made[hashed[0]])]
        rest = [t for t in range(len(made)) if t not in full and t not in hashed]
        self._sizes = [table_size(t) for t in made]
        self.full = FullTables([made[t] for t in full]) if full else None
        self.hashed = batch_of([made[t] for t in hashed]) if hashed else None
        self.tables = nn.ModuleList(made[t] for t in rest)
        self.full_features, self.hashed_features, self.other_features = full, hashed, rest
        self.register_buffer("full_columns", torch.tensor(full, dtype=torch.int64),
                             persistent=False)
        self.register_buffer("hashed_columns", torch.tensor(hashed, dtype=torch.int64),
                             persistent=False)
        # Vectors are computed full, hashed, then other tables; this puts them in feature order.
        computed = full + hashed + rest
        order = [0] + [1 + computed.index(t) for t in range(len(made))]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        n_vectors = self.n_features + 1
        self.top = mlp([dim + n_vectors * (n_vectors - 1) // 2, *top], last_relu=False)
        a, b = pair_indices(n_vectors)
        # The pairs as positions in the flattened Gram matrix: index_select's backward is one
        # index_add, where gram[:, a, b]'s is an accumulating index_put (a sort per step).
        self.register_buffer("pairs", a * n_vectors + b, persistent=False)

    def forward(self, dense: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for dense features (B, F_d) and categorical ids (B, F)."""
        vectors = self._lookup(categorical)  # every table in fp32, whatever the precision
        if self.precision == "bf16":
            # The MLPs and the interaction in bf16. No weight cache: a cached cast would go
            # stale inside a replayed CUDA graph.
            with torch.autocast(dense.device.type, dtype=torch.bfloat16, cache_enabled=False):
                return self._dense(dense, vectors).float()
        return self._dense(dense, vectors)

    def _lookup(self, categorical: torch.Tensor) -> torch.Tensor:
        """The 26 tables' vectors (B, F, D), computed full, hashed, then other tables."""
        ids = categorical.long()
        parts = []
        if self.full is not None:
            parts.append(self.full(ids.index_select(1, self.full_columns)))  # (B, F_full, D)
        if self.hashed is not None:
            parts.append(self.hashed(ids.index_select(1, self.hashed_columns)))
        parts += [table(ids[:, t]).unsqueeze(1) for t, table in zip(self.other_features,
                                                                    self.tables)]
        return torch.cat(parts, dim=1)

    def _dense(self, dense: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The bottom MLP, the dot interaction and the top MLP."""
        z0 = self.bottom(dense)  # (B, D)
        # bf16 under autocast, like the bottom MLP's output; `order` puts features in order.
        parts = torch.cat([z0.unsqueeze(1), vectors.to(z0.dtype)], dim=1)
        stacked = parts.index_select(1, self.order)  # (B, F + 1, D)
        gram = torch.bmm(stacked, stacked.transpose(1, 2))  # (B, F + 1, F + 1)
        pairs = gram.flatten(1).index_select(1, self.pairs)  # (B, (F + 1) F / 2)
        return self.top(torch.cat([z0, pairs], dim=1)).squeeze(-1)

    def embeddings(self) -> list[nn.Module]:
        """The embedding modules: the batched tables and each table of its own."""
        batches = [b for b in (self.full, self.hashed) if b is not None]
        return batches + list(self.tables)

    def table_sizes(self) -> list[tuple[int, int]]:
        """(trainable parameters, buffer bytes) of each feature's table, in feature order.
        Batched tables keep their sizes, except pq's (it shrinks: its batch is asked), and a
        table of its own is asked."""
        sizes = list(self._sizes)
        if hasattr(self.hashed, "table_sizes"):
            for t, size in zip(self.hashed_features, self.hashed.table_sizes()):
                sizes[t] = size
        for t, table in zip(self.other_features, self.tables):
            sizes[t] = table_size(table)
        return sizes


@contextlib.contextmanager
def dense_precision(precision: str) -> Iterator[None]:
    """Let fp32 matmuls use TF32 tensor cores at "tf32"; keep them exact otherwise.

    TF32 is a process-wide switch of cuBLAS (the backward's matmuls run outside forward), so
    the engine holds it around a whole group of runs of one precision, and turns it off again
    around clustering (k-means distances stay exact); it is put back after. Under tf32 every
    fp32 matmul of a step uses it, a table's own (dhe, tt, ldim) included."""
    if precision == "bf16":  # autocast inside DLRM.forward; no switch
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def table_size(table: nn.Module) -> tuple[int, int]:
    """(trainable parameters, buffer bytes) of an embedding module, ours or torch's."""
    if hasattr(table, "num_buffer_bytes"):
        return table.num_parameters(), table.num_buffer_bytes()
    return (sum(p.numel() for p in table.parameters()),
            sum(b.numel() * b.element_size() for b in table.buffers()))
