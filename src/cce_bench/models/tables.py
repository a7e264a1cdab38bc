"""DLRM's tables of one method batched into one module: one gather (and one scatter) per stage
for all features instead of one per feature.

A Criteo step at batch 128 is a few microseconds of arithmetic per table; launching each of 26
tables' kernels one by one is what costs (BENCHMARKS.md). Two batches:

- `FullTables`: plain tables as one (sum of rows, dim) table with a row offset per table.
- `HashedTables`: tables of one hashed method (hash, ce, cce). Each reads rows of c chunk tables
  of width w and sums its terms: hash is one term with c = 1, w = dim (T[h(i)]), ce one term of
  c hashed chunks, cce two (T0[index[i, j]] + T1[h_j(i)]). All tables' chunk tables of a term are
  concatenated into one (rows, w) parameter; the hashes of all features are computed in one
  pass with per-table coefficients and ranges, and the stored indices are concatenated with an
  id offset per table. The values are those of the separate modules, bit for bit.

- `DheTables`: DHE tables of one architecture (at one cap every compressed table has the same
  widths): the k hashes of all features in one pass, then each MLP layer one batched matmul
  over the tables (T, B, in) x (T, in, out) instead of one small matmul per table.
- `PqTables`: pq tables in either of their states. Before compression their full tables are
  one (rows of all, dim) table with a row offset per table, as `FullTables`; after it their
  codebooks are one (c x rows of all, w) table read at the stored codes, as `HashedTables`
  reads CCE's index. The switch happens in cluster(), into the same two Parameter objects.

The separate modules stay the owners of their algorithms: clustering calls each one's cluster()
with its tensors re-pointed at slices of the batched ones, so CCE's k-means, index and hash
redraws write straight into the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..embeddings.base import lookup
from ..embeddings.cce import CCEmbedding
from ..embeddings.ce import CompositionalEmbedding
from ..embeddings.dhe import _ACTIVATIONS, DeepHashEmbedding, run_mlp
from ..embeddings.full import FullEmbedding
from ..embeddings.hash import HashEmbedding
from ..embeddings.hashing import hash_mod_prime
from ..embeddings.pq import ProductQuantizedEmbedding
from ..kernels import take_rows


class FullTables(nn.Module):
    """Several full tables as one (rows of all, dim) table with a row offset per table."""

    def __init__(self, tables: list[FullEmbedding]):
        super().__init__()
        self.table = nn.Parameter(torch.cat([t.table.detach() for t in tables]))
        self.vocabs = [t.vocab for t in tables]
        starts = torch.tensor([0] + self.vocabs[:-1]).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T), column t an id of table t -> (B, T, dim)."""
        rows = (ids + self.offsets).reshape(-1)
        return lookup(self.table, rows).reshape(*ids.shape, self.table.shape[1])


def _terms(table: nn.Module) -> list[tuple[str, str, str]]:
    """(parameter, row source, source attribute) per summed term of a batchable table."""
    if type(table) in (HashEmbedding, CompositionalEmbedding):
        return [("table", "hash", "hash")]
    if type(table) is CCEmbedding:
        return [("table0", "index", "index"), ("table1", "hash", "hash1")]
    raise TypeError(f"{type(table).__name__} cannot be batched")


def batchable(table: nn.Module) -> bool:
    return type(table) in (HashEmbedding, CompositionalEmbedding, CCEmbedding, DeepHashEmbedding,
                           ProductQuantizedEmbedding)


def batch_key(table: nn.Module) -> tuple:
    """Tables with equal keys can be one batch: the same method, and for DHE the same shapes."""
    if type(table) is DeepHashEmbedding:
        return (DeepHashEmbedding, table.dim, table.width, table.hidden_layers, table.n_hashes,
                table.distribution, table.activation, table.hash_range)
    if type(table) is ProductQuantizedEmbedding:
        return (ProductQuantizedEmbedding, table.dim, table.n_chunks, table.compressed)
    return (type(table),)


def batch_of(tables: list[nn.Module]) -> nn.Module:
    """The batch module for tables of one batch_key."""
    if type(tables[0]) is DeepHashEmbedding:
        return DheTables(tables)
    if type(tables[0]) is ProductQuantizedEmbedding:
        return PqTables(tables)
    return HashedTables(tables)


class HashedTables(nn.Module):
    """Tables of one hashed method (hash, ce or cce) as one module (see the module docstring)."""

    def __init__(self, tables: list[nn.Module]):
        super().__init__()
        if len({type(t) for t in tables}) != 1 or not batchable(tables[0]):
            raise TypeError("HashedTables takes tables of one method: hash, ce or cce")
        self.kind = _terms(tables[0])
        self.members = tables  # a plain list: the members' tensors are re-pointed, not owned
        self.dim = tables[0].dim
        shapes = [self._chunk_tables(t, self.kind[0][0]).shape for t in tables]
        self.chunks, self.width = shapes[0][0], shapes[0][2]
        self.rows = [s[1] for s in shapes]  # rows of each chunk table, per member
        sizes = [self.chunks * r for r in self.rows]
        self.register_buffer("row_offsets", torch.tensor([0] + sizes[:-1]).cumsum(0),
                             persistent=False)
        self.register_buffer("chunk_rows", torch.tensor(self.rows), persistent=False)
        for k, (param, source, attribute) in enumerate(self.kind):
            flat = torch.cat([self._chunk_tables(t, param).detach().reshape(-1, self.width)
                              for t in tables])
            self.register_parameter(f"table{k}", nn.Parameter(flat))
            if source == "hash":
                coefficients = torch.stack([getattr(t, attribute).coefficients for t in tables])
                self.register_buffer(f"coefficients{k}", coefficients)  # (T, c, 4)
                self.register_buffer(f"moduli{k}", torch.tensor(
                    [getattr(t, attribute).m for t in tables]), persistent=False)
            else:
                vocabs = [t.vocab for t in tables]
                self.register_buffer(f"index{k}", torch.cat([getattr(t, attribute)
                                                             for t in tables]))
                self.register_buffer(f"id_offsets{k}", torch.tensor([0] + vocabs[:-1]).cumsum(0),
                                     persistent=False)
        self.repoint()

    def _chunk_tables(self, table: nn.Module, param: str) -> torch.Tensor:
        value = getattr(table, param)
        return value.unsqueeze(0) if value.dim() == 2 else value  # hash: (rows, dim) -> (1, ...)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T), column t an id of member t -> (B, T, dim)."""
        chunk = torch.arange(self.chunks, device=ids.device)
        base = self.row_offsets + chunk.view(-1, 1) * self.chunk_rows  # (c, T)
        out = 0
        for k, (_, source, _) in enumerate(self.kind):
            if source == "hash":
                slots = self._hash(ids, k)  # (B, T, c)
            else:
                index, first = getattr(self, f"index{k}"), getattr(self, f"id_offsets{k}")
                slots = take_rows(index, ids + first).to(torch.int64)
            rows = slots + base.T  # (B, T, c)
            out = out + lookup(getattr(self, f"table{k}"), rows.reshape(-1))
        return out.reshape(*ids.shape, self.dim)

    def _hash(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        """Each member's hash functions on its column: (B, T) -> (B, T, c)."""
        h = hash_mod_prime(ids, getattr(self, f"coefficients{k}"))  # (T, c, 4) -> (B, T, c)
        return h % getattr(self, f"moduli{k}").unsqueeze(-1)

    def repoint(self) -> None:
        """Point every member's tensors at its slices of the batched ones (after a move)."""
        for t, member in enumerate(self.members):
            start, rows = int(self.row_offsets[t]), self.rows[t]
            for k, (param, source, attribute) in enumerate(self.kind):
                flat = getattr(self, f"table{k}").data
                view = flat[start:start + self.chunks * rows].view(self.chunks, rows, self.width)
                member._parameters.pop(param, None)
                # hash keeps a (rows, dim) table: its one chunk, without the chunk axis.
                object.__setattr__(member, param,
                                   view[0] if type(member) is HashEmbedding else view)
                if source == "hash":
                    getattr(member, attribute)._buffers["coefficients"] = \
                        getattr(self, f"coefficients{k}")[t]
                else:
                    first = int(getattr(self, f"id_offsets{k}")[t])
                    member._buffers[attribute] = \
                        getattr(self, f"index{k}")[first:first + member.vocab]

    @torch.no_grad()
    def cluster(self) -> list[nn.Parameter]:
        """Every member's cluster(), writing into the batch; the batched tables whose optimizer
        state a member asked to reset."""
        if not hasattr(self.members[0], "cluster"):
            return []
        self.repoint()
        reset = False
        for member in self.members:
            reset = bool(member.cluster()) or reset
        return [getattr(self, f"table{k}") for k in range(len(self.kind))] if reset else []


class DheTables(nn.Module):
    """DHE tables of one architecture as one module (see the module docstring)."""

    def __init__(self, tables: list[DeepHashEmbedding]):
        super().__init__()
        if len({batch_key(t) for t in tables}) != 1 or type(tables[0]) is not DeepHashEmbedding:
            raise TypeError("DheTables takes DHE tables of one architecture")
        self.members = tables  # a plain list: the members' tensors are re-pointed, not owned
        self.template = tables[0]  # the shared encoding (distribution, k, hash range)
        self.activation = _ACTIVATIONS[self.template.activation]
        self.register_buffer("coefficients", torch.stack([t.hash.coefficients for t in tables]))
        layers = len(self.template.weights)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([t.weights[k].detach() for t in tables]))  # (T, out, in)
            for k in range(layers))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([t.biases[k].detach() for t in tables]).unsqueeze(1))
            for k in range(layers))  # (T, 1, out)
        self.repoint()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T), column t an id of member t -> (B, T, dim)."""
        x = self.template.hash_features(ids.t(), self.coefficients)  # (T, B, k padded)
        return run_mlp(x, self.weights, self.biases, self.activation).transpose(0, 1)

    def repoint(self) -> None:
        """Point every member's weights, biases and hash at its slice of the batch."""
        for t, member in enumerate(self.members):
            member.hash._buffers["coefficients"] = self.coefficients[t]
            for k in range(len(self.weights)):
                for mine, batched in ((member.weights, self.weights[k][t]),
                                      (member.biases, self.biases[k][t, 0])):
                    mine._parameters.pop(str(k), None)
                    object.__setattr__(mine, str(k), batched)


class PqTables(nn.Module):
    """pq tables of one n_chunks as one module, before and after compression (see the module
    docstring). The members keep their Parameter objects, whose data are views of the batch's
    slices, so each member's cluster() compresses its own slice and its sizes stay countable."""

    post_training = True

    def __init__(self, tables: list[ProductQuantizedEmbedding]):
        super().__init__()
        if len({batch_key(t) for t in tables}) != 1 or type(tables[0]) is not \
                ProductQuantizedEmbedding:
            raise TypeError("PqTables takes pq tables of one dim and n_chunks, all on one side "
                            "of compression")
        self.members = tables  # a plain list: the members' tensors are re-pointed, not owned
        first = tables[0]
        self.dim, self.chunks, self.width = first.dim, first.n_chunks, first.width
        vocabs, rows = [t.vocab for t in tables], [t.rows for t in tables]
        self.register_buffer("id_offsets", torch.tensor([0] + vocabs[:-1]).cumsum(0),
                             persistent=False)
        starts = torch.tensor([0] + [self.chunks * r for r in rows[:-1]]).cumsum(0)
        self.register_buffer("row_offsets", starts, persistent=False)
        # First codebook row of chunk j of member t, to add to its codes.
        chunk = torch.arange(self.chunks)
        self.register_buffer("code_base", starts.view(-1, 1) + chunk * torch.tensor(rows)
                             .view(-1, 1), persistent=False)  # (T, c)
        self.table = nn.Parameter(torch.cat([t.table.detach() for t in tables]),
                                  requires_grad=first.table.requires_grad)  # (rows of all, dim)
        self.codebook = nn.Parameter(
            torch.cat([t.codebook.detach().reshape(-1, self.width) for t in tables]),
            requires_grad=first.codebook.requires_grad)  # (c x rows of all, w)
        self.register_buffer("codes", torch.cat([t.codes for t in tables]))  # (ids of all, c)
        self.repoint()

    @property
    def compressed(self) -> bool:
        return self.codes.shape[0] > 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T), column t an id of member t -> (B, T, dim)."""
        ids = ids + self.id_offsets
        if not self.compressed:
            return lookup(self.table, ids.reshape(-1)).reshape(*ids.shape, self.dim)
        rows = take_rows(self.codes, ids).to(torch.int64) + self.code_base  # (B, T, c)
        return lookup(self.codebook, rows.reshape(-1)).reshape(*ids.shape, self.dim)

    def repoint(self) -> None:
        """Point every member's table, codebook and codes at its slices of the batched ones
        (after a move or a compression)."""
        for t, member in enumerate(self.members):
            first, start = int(self.id_offsets[t]), int(self.row_offsets[t])
            if self.compressed:
                member.table.data = self.table.data  # (0, dim)
                member.codebook.data = self.codebook.data[
                    start:start + self.chunks * member.rows].view(self.chunks, member.rows,
                                                                  self.width)
                member.codes = self.codes[first:first + member.vocab]
            else:
                member.table.data = self.table.data[first:first + member.vocab]
                member.codebook.data = self.codebook.data.view(self.chunks, 0, self.width)
                member.codes = self.codes  # (0, c)

    @torch.no_grad()
    def cluster(self) -> list[nn.Parameter]:
        """Every member's cluster(); on the round they compress (all on the same one: they were
        made with one compress_round) their codebooks and codes become the batch's. Returns the
        batched parameters whose optimizer state to reset."""
        self.repoint()
        compressed = [bool(member.cluster()) for member in self.members]
        if not any(compressed):
            return []
        assert all(compressed), "the pq tables of one batch compress on the same round"
        self.codes = torch.cat([m.codes for m in self.members])
        self.codebook.data = torch.cat([m.codebook.reshape(-1, self.width)
                                        for m in self.members])
        self.table.data = self.table.data.new_empty(0, self.dim)
        self.codebook.grad = self.table.grad = None
        self.codebook.requires_grad_(True)
        self.table.requires_grad_(False)
        self.repoint()
        return [self.table, self.codebook]

    def table_sizes(self) -> list[tuple[int, int]]:
        """(trainable parameters, buffer bytes) of each member: pq shrinks when it compresses."""
        return [(m.num_parameters(), m.num_buffer_bytes()) for m in self.members]
