"""Each method's tables of several runs as one module (see stacked.py): ids (R, N) -> (R, N, dim).

Each class mirrors its method's embed() on a leading run axis: hashes with per-member
coefficients and ranges, gathers from flat tables at per-member row offsets. The values are the
members' own up to the order of float sums (tests/models/test_stacked.py).

- Offsets (budgets may differ): full, hash, ce, cce, cce_robe, bloom, robe, hnet, hemb, qr, pq
  (before compression the full table, after it the codebooks read through the codes).
- Equal shapes only (a leading run axis; runs of one budget, i.e. seeds): ldim (its rank),
  dhe (its widths) and tt (its rank) follow from the budget, and a product per member of
  differing inner sizes has no one batched kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from ..embeddings.base import lookup, summed_rows
from ..embeddings.bloom import BloomEmbedding
from ..embeddings.cce import CCEmbedding
from ..embeddings.cce_robe import CCERobeEmbedding
from ..embeddings.ce import CompositionalEmbedding
from ..embeddings.dhe import _ACTIVATIONS, DeepHashEmbedding, run_mlp
from ..embeddings.full import FullEmbedding
from ..embeddings.hash import HashEmbedding
from ..embeddings.hemb import HashEmbeddings
from ..embeddings.hnet import HashedNetEmbedding, member_slots, read_hashed
from ..embeddings.ldim import LowDimensionalEmbedding
from ..embeddings.pq import ProductQuantizedEmbedding
from ..embeddings.qr import QREmbedding
from ..embeddings.robe import RobeEmbedding, read_flat, read_windows
from ..embeddings.tt import TensorTrainEmbedding, materialise
from .. import kernels
from ..kernels import take_rows
from .stacked import Stack, stacks


def _rows(flat: torch.Tensor, width: int, rows: torch.Tensor) -> torch.Tensor:
    """Rows of a flat table read as (-1, width): rows (*S) -> (*S, width)."""
    return lookup(flat.view(-1, width), rows.reshape(-1)).view(*rows.shape, width)


def _chunk_base(starts: torch.Tensor, width: int, rows: torch.Tensor, chunks: int) -> torch.Tensor:
    """First row of chunk j of member r in a flat table of (c, rows_r, width) members:
    (R, 1, c), to add to slots (R, N, c)."""
    chunk = torch.arange(chunks, device=starts.device)
    return (starts // width).view(-1, 1, 1) + chunk * rows.view(-1, 1, 1)


def _same(members: list[nn.Module], *attributes: str) -> None:
    for name in attributes:
        if len({repr(getattr(m, name)) for m in members}) != 1:
            raise TypeError(f"stacked members differ in {name}")


@stacks(FullEmbedding)
class FullStack(Stack):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        starts = self._flat("table", "table")
        self.register_buffer("base", (starts // self.dim).view(-1, 1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _rows(self.table, self.dim, ids + self.base)


@stacks(HashEmbedding)
class HashStack(Stack):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        starts = self._flat("table", "table")
        self.hash = self._hash("hash", "hash")
        self.register_buffer("base", (starts // self.dim).view(-1, 1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _rows(self.table, self.dim, self.hash(ids)[..., 0] + self.base)


@stacks(CompositionalEmbedding)
class ChunkStack(Stack):
    """ce: gather_chunks of (c, rows, w) tables at hashed slots."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "n_chunks")
        self.chunks, self.width = members[0].n_chunks, self.dim // members[0].n_chunks
        starts = self._flat("table", "table")
        self.hash = self._hash("hash", "hash")
        rows = self._ints([m.rows for m in members])
        self.register_buffer("base", _chunk_base(starts, self.width, rows, self.chunks),
                             persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        r, n = ids.shape
        return _rows(self.table, self.width, self.hash(ids) + self.base).reshape(r, n, self.dim)


def _stored_and_hashed(stack: Stack, members: list[nn.Module]) -> tuple[torch.Tensor, torch.Tensor]:
    """CCE's two terms (cce and cce_robe): table0 read at the stored index, table1 at hash1;
    returns the members' starts in each flat table."""
    _same(members, "n_chunks")
    stack.chunks, stack.width = members[0].n_chunks, members[0].width
    starts0, starts1 = stack._flat("table0", "table0"), stack._flat("table1", "table1")
    stack._stacked_buffer("index", "index")  # (R, vocab, c) int32
    stack.hash1 = stack._hash("hash1", "hash1")
    return starts0, starts1


@stacks(CCEmbedding)
class CCEStack(Stack):
    """cce: T0 at the stored index plus T1 at hashed slots, both (c, rows, w) per member."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        starts0, starts1 = _stored_and_hashed(self, members)
        rows = self._ints([m.rows for m in members])
        self.register_buffer("base0", _chunk_base(starts0, self.width, rows, self.chunks),
                             persistent=False)
        self.register_buffer("base1", _chunk_base(starts1, self.width, rows, self.chunks),
                             persistent=False)
        self._id_base(self.vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        r, n = ids.shape
        slots0 = take_rows(self.index.view(-1, self.chunks), ids + self.id_base)  # (R, N, c) int32
        first = _rows(self.table0, self.width, slots0 + self.base0).reshape(r, n, self.dim)
        second = _rows(self.table1, self.width, self.hash1(ids) + self.base1)
        return first + second.reshape(r, n, self.dim)


@stacks(CCERobeEmbedding)
class CCERobeStack(Stack):
    """cce_robe: windows of (c, L) circular arrays at the stored and the hashed slots."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        starts0, starts1 = _stored_and_hashed(self, members)
        lengths = self._ints([m.size for m in members])
        chunk = torch.arange(self.chunks, device=self.device).view(1, -1)
        self.register_buffer("lengths", lengths, persistent=False)
        # Where chunk j of member r starts in each flat table: (R, c).
        self.register_buffer("base0", starts0.view(-1, 1) + chunk * lengths.view(-1, 1),
                             persistent=False)
        self.register_buffer("base1", starts1.view(-1, 1) + chunk * lengths.view(-1, 1),
                             persistent=False)
        self._id_base(self.vocab)

    def _read(self, flat: torch.Tensor, base: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        r, n, _ = slots.shape
        windows = read_windows(flat, slots, self.lengths, base, self.width)  # (R, N, c, w)
        return windows.reshape(r, n, self.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        slots0 = take_rows(self.index.view(-1, self.chunks), ids + self.id_base)
        return (self._read(self.table0, self.base0, slots0)
                + self._read(self.table1, self.base1, self.hash1(ids)))


@stacks(BloomEmbedding)
class BloomStack(Stack):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "n_hashes")
        starts = self._flat("table", "table")
        self.hash = self._hash("hash", "hash")
        self.register_buffer("base", (starts // self.dim).view(-1, 1, 1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return summed_rows(self.table.view(-1, self.dim), self.hash(ids) + self.base)


@stacks(RobeEmbedding)
class RobeStack(Stack):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "n_chunks")
        self.width = members[0].width
        starts = self._flat("array", "array")
        self.hash = self._hash("hash", "hash")
        self.register_buffer("lengths", self._ints([m.size for m in members]), persistent=False)
        # Every chunk of member r reads its one array: (R, c), each row the member's start.
        self.register_buffer("base", starts.view(-1, 1).expand(-1, members[0].n_chunks)
                             .contiguous(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        r, n = ids.shape
        windows = read_windows(self.array, self.hash(ids), self.lengths, self.base, self.width)
        return windows.reshape(r, n, self.dim)


@stacks(HashedNetEmbedding)
class HashedNetStack(Stack):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "signed")
        self.signed = members[0].signed
        starts = self._flat("weights", "weights")
        self._stacked_buffer("index_coefficients", "index_coefficients")  # (R, 4)
        if self.signed:
            self._stacked_buffer("sign_coefficients", "sign_coefficients")
        self.register_buffer("sizes", self._ints([m.size for m in members]).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("base", starts.view(-1, 1, 1), persistent=False)
        # Every id's slots (and signs), as StackedHash caches its values: (R, vocab, dim),
        # where no program computes them in the step (kernels.read_pairs, on CUDA).
        self.register_buffer("slot_table", None, persistent=False)
        self.register_buffer("sign_table", None, persistent=False)
        if (self.cached(self.dim * (2 if self.signed else 1))
                and (self.signed or not kernels.takes_flat(self.weights, "read_pairs"))):
            self._id_base(self.vocab)
            self.slot_table, self.sign_table = self._slots_and_signs(self.all_ids())

    def _slots_and_signs(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Member slots (R, N, dim) in its weights, and signs (+-1) when signed: int32."""
        slots, signs = member_slots(ids, self.dim, self.index_coefficients,
                                    self.sign_coefficients if self.signed else None,
                                    self.sizes.view(-1))
        return slots.to(torch.int32), None if signs is None else signs.to(torch.int32)

    @torch.no_grad()
    def refresh(self) -> None:
        if self.slot_table is not None:
            slots, signs = self._slots_and_signs(self.all_ids())
            self.slot_table.copy_(slots)
            if signs is not None:
                self.sign_table.copy_(signs)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.slot_table is None:
            return read_hashed(self.weights, ids, self.index_coefficients,
                               self.sign_coefficients if self.signed else None,
                               self.sizes.view(-1), self.base.view(-1), self.dim)
        rows = ids + self.id_base
        slots = take_rows(self.slot_table.view(-1, self.dim), rows)
        out = read_flat(self.weights, slots + self.base)
        if self.signed:
            out = out * take_rows(self.sign_table.view(-1, self.dim), rows).to(out.dtype)
        return out


@stacks(HashEmbeddings)
class HashEmbeddingsStack(Stack):
    """hemb: c hashed component rows mixed by hashed importance weights."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "n_hashes")
        self.hashes = members[0].n_hashes
        starts_c = self._flat("components", "components")
        starts_i = self._flat("importance", "importance")
        self.component_hash = self._hash("component_hash", "component_hash")
        self.importance_hash = self._hash("importance_hash", "importance_hash")
        self.register_buffer("base_c", (starts_c // self.dim).view(-1, 1, 1), persistent=False)
        self.register_buffer("base_i", (starts_i // self.hashes).view(-1, 1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return summed_rows(self.components.view(-1, self.dim),
                           self.component_hash(ids) + self.base_c,
                           self.importance.view(-1, self.hashes),
                           self.importance_hash(ids)[..., 0] + self.base_i)  # (R, N, dim)


@stacks(QREmbedding)
class QRStack(Stack):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "combine")
        self.combine = members[0].combine
        self.width = members[0].remainder_table.shape[1]
        starts_q = self._flat("quotient_table", "quotient_table")
        starts_r = self._flat("remainder_table", "remainder_table")
        self.register_buffer("m", self._ints([m.m for m in members]).view(-1, 1),
                             persistent=False)
        self.register_buffer("base_q", (starts_q // self.width).view(-1, 1), persistent=False)
        self.register_buffer("base_r", (starts_r // self.width).view(-1, 1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        q = torch.div(ids, self.m, rounding_mode="floor") + self.base_q
        a = _rows(self.quotient_table, self.width, q)
        b = _rows(self.remainder_table, self.width, ids % self.m + self.base_r)
        if self.combine == "mult":
            return a * b
        if self.combine == "sum":
            return a + b
        return torch.cat([a, b], dim=-1)


@stacks(ProductQuantizedEmbedding)
class PQStack(Stack):
    """pq: the full table while training at full size, the codebooks at the codes after."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "compressed", "n_chunks")
        self.compressed = members[0].compressed
        self.chunks, self.width = members[0].n_chunks, members[0].width
        if not self.compressed:
            starts = self._flat("table", "table")
            self.register_buffer("base", (starts // self.dim).view(-1, 1), persistent=False)
            return
        starts = self._flat("codebook", "codebook")
        self._stacked_buffer("codes", "codes")  # (R, vocab, c) int32
        rows = self._ints([m.rows for m in members])
        self.register_buffer("base", _chunk_base(starts, self.width, rows, self.chunks),
                             persistent=False)
        self._id_base(self.vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.compressed:
            return _rows(self.table, self.dim, ids + self.base)
        r, n = ids.shape
        slots = take_rows(self.codes.view(-1, self.chunks), ids + self.id_base)
        return _rows(self.codebook, self.width, slots + self.base).reshape(r, n, self.dim)


class _EqualShapes(Stack):
    """Members whose every parameter has the same shape: a leading run axis."""

    budgets_may_differ = False

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        if len({tuple(p.shape for p in m.parameters()) for m in members}) != 1:
            raise TypeError(f"{type(members[0]).__name__} stacks members of one budget only")

    def _leading(self, key: str, name: str) -> torch.Tensor:
        """Parameter `name` of every member as one flat parameter; returns its (R, *shape)
        view."""
        self._flat(key, name)
        return getattr(self, key).view(self.size, *self.members[0].get_parameter(name).shape)


@stacks(LowDimensionalEmbedding)
class LowDimensionalStack(_EqualShapes):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        self.rank = members[0].rank
        self._flat("table", "table")
        self._flat("projection", "projection")
        self._id_base(self.vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        low = _rows(self.table, self.rank, ids + self.id_base)  # (R, N, r)
        return torch.bmm(low, self.projection.view(self.size, self.rank, self.dim))


@stacks(DeepHashEmbedding)
class DeepHashStack(_EqualShapes):
    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "distribution", "activation", "hash_range")
        for k in range(len(members[0].weights)):
            self._flat(f"weight{k}", f"weights.{k}")
            self._flat(f"bias{k}", f"biases.{k}")
        # The members' hash functions (R, k, 4); hash_features encodes with them.
        self._stacked_buffer("hash_coefficients", "hash.coefficients")
        self.act = _ACTIVATIONS[members[0].activation]
        # Every id's encoding (R, vocab, k padded), kept padded as run_mlp reads it: the hash
        # features change only with the hashes.
        self.register_buffer("encoding", None, persistent=False)
        if self.cached(members[0].n_hashes):
            self.encoding = self._encode_all()
            self._id_base(self.vocab)

    def _encode_all(self) -> torch.Tensor:
        """Every id's encoding by every member, as forward() computes it uncached."""
        return self.members[0].hash_features(self.all_ids(), self.hash_coefficients)

    @torch.no_grad()
    def refresh(self) -> None:
        super().refresh()
        if self.encoding is not None:
            self.encoding.copy_(self._encode_all())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.encoding is None:  # (R, N, k padded)
            x = self.members[0].hash_features(ids, self.hash_coefficients)
        else:
            x = take_rows(self.encoding.view(-1, self.encoding.shape[2]), ids + self.id_base)
        shapes = [p.shape for p in self.members[0].weights]
        weights = [getattr(self, f"weight{k}").view(self.size, out, inp)
                   for k, (out, inp) in enumerate(shapes)]
        biases = [getattr(self, f"bias{k}").view(self.size, 1, out) for k, (out, _) in
                  enumerate(shapes)]
        return run_mlp(x, weights, biases, self.act)


@stacks(TensorTrainEmbedding)
class TensorTrainStack(_EqualShapes):
    """tt: TensorTrainEmbedding.halves() and embed() with a leading run axis z."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        first = members[0]
        self.rank, self.split = first.rank, first.split
        self.left_rows, self.right_rows = first.left_rows, first.right_rows
        self.cores = len(first.cores)
        for k in range(self.cores):
            self._flat(f"core{k}", f"cores.{k}")
        self._id_base(1)

    def _core(self, k: int) -> torch.Tensor:
        return getattr(self, f"core{k}").view(self.size, *self.members[0].cores[k].shape)

    def halves(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cores = [self._core(k) for k in range(self.cores)]
        left = cores[0].squeeze(2)  # (Z, n_1, d_1, R)
        for core in cores[1:self.split]:
            left = torch.einsum("zapr,zbrqs->zabpqs", left, core)
            left = left.reshape(self.size, -1, left.shape[3] * left.shape[4], left.shape[5])
        if self.cores == 1:
            return left, None
        right = cores[-1].squeeze(-1)  # (Z, n_c, R, d_c)
        for core in reversed(cores[self.split:-1]):
            right = torch.einsum("zarqs,zbsp->zabrqp", core, right)
            right = right.reshape(self.size, -1, right.shape[3], right.shape[4] * right.shape[5])
        return left, right

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        z, n = ids.shape
        member = self.id_base  # (Z, 1): 0, 1, ...
        left, right = self.halves()
        row_l = (ids // self.right_rows) % self.left_rows
        if right is None:
            return _rows(left.reshape(-1), self.dim, row_l + member * self.left_rows)
        row_r = ids % self.right_rows
        per_id = (left.shape[2] + right.shape[3]) * self.rank  # as the member decides
        if materialise(self.left_rows * self.right_rows, n, self.dim, per_id, ids.is_cuda):
            table = torch.einsum("zapr,zbrq->zabpq", left, right)  # (Z, n_L, n_R, d_L, d_R)
            rows = row_l * self.right_rows + row_r + member * (self.left_rows * self.right_rows)
            return _rows(table.reshape(-1), self.dim, rows)
        a = _rows(left.reshape(-1), left.shape[2] * self.rank, row_l + member * self.left_rows)
        b = _rows(right.reshape(-1), right.shape[3] * self.rank, row_r + member * self.right_rows)
        product = torch.bmm(a.reshape(z * n, -1, self.rank), b.reshape(z * n, self.rank, -1))
        return product.reshape(z, n, self.dim)
