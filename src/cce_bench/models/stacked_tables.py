"""Each method's tables of several runs as one module (see stacked.py): ids (R, N) -> (R, N, dim).

Each class mirrors its method's embed() on a leading run axis: hashes with per-member
coefficients and ranges, gathers from flat tables at per-member row offsets. The values are the
members' own up to the order of float sums (tests/models/test_stacked.py).

- Offsets (budgets may differ): full, hash, ce, cce, cce_robe, bloom, robe, hnet, hemb, qr, pq
  (before compression the full table, after it the codebooks read through the codes).
- Padded (models/padded.py; a leading run axis per bucket of members): ldim (its rank), dhe
  (its widths) and tt (its rank) follow from the budget, and a product per member of differing
  inner sizes has no one batched kernel; a bucket's members are read as zero-padded blocks of
  its largest shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..embeddings.base import lookup, summed_rows
from ..embeddings.bloom import BloomEmbedding
from ..embeddings.cce import CCEmbedding
from ..embeddings.cce_robe import CCERobeEmbedding
from ..embeddings.ce import CompositionalEmbedding
from ..embeddings.dhe import _ACTIVATIONS, DeepHashEmbedding, _aligned, run_mlp
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
from .padded import PaddedBlocks, padded_shapes, plan_buckets, read_buckets
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


# Devices where a stack pads members to share a bucket (padded.py). A bucket's cost on a GPU
# is mostly its kernel launches; on a CPU padding only adds work.
PAD_DEVICES = ("cuda",)


class _Padded(Stack):
    """Members whose parameters differ in shape where their budgets differ: buckets of
    members, each read as zero-padded blocks of one shape along a leading run axis
    (padded.py). Subclasses give read(): a bucket's rows from its (Z, *shape) tensors."""

    # Padded elements that one bucket fewer is worth (plan_buckets' fixed) on PAD_DEVICES;
    # 0: only members of equal shapes share a bucket.
    bucket_elements = 0
    # A bucket's padded sizes are rounded up to a multiple of this on PAD_DEVICES.
    align = 1

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        names = [name for name, _ in members[0].named_parameters()]
        if any([name for name, _ in m.named_parameters()] != names for m in members):
            raise TypeError(f"stacked {type(members[0]).__name__} members differ in parameters")
        shapes = [[tuple(m.get_parameter(name).shape) for name in names] for m in members]
        device = members[0].get_parameter(names[0]).device
        fixed = self.bucket_elements if device.type in PAD_DEVICES else 0
        self.buckets = plan_buckets(shapes, fixed)
        order = [i for bucket in self.buckets for i in bucket]  # the flat tensors' order
        bounds = [self._bounds([shapes[i] for i in bucket], device) for bucket in self.buckets]
        self.blocks: dict[str, list[PaddedBlocks]] = {}  # key -> each bucket's blocks
        for k, name in enumerate(names):
            key = name.replace(".", "")
            starts = self._flat(key, name, order).tolist()
            self.blocks[key] = [PaddedBlocks([shapes[i][k] for i in bucket], bound[k],
                                             starts[bucket[0]], device)
                                for bucket, bound in zip(self.buckets, bounds)]
        # Member r's row of ids and of the output is its bucket's row unless order says else.
        self.rows = None if order == list(range(self.size)) else [
            torch.tensor(bucket, device=device) for bucket in self.buckets]
        self.inverse = None if self.rows is None else torch.tensor(
            sorted(range(self.size), key=order.__getitem__), device=device)
        # Each bucket's member index along its run axis: (Z, 1).
        self.member_index = [torch.arange(len(b), device=device).view(-1, 1)
                             for b in self.buckets]

    def _bounds(self, members: list[list[tuple[int, ...]]], device: torch.device):
        """A bucket's padded shapes; aligned on PAD_DEVICES where the bucket pads anyway
        (members of one shape are read without a copy)."""
        shapes = padded_shapes(members)
        align = self.align if device.type in PAD_DEVICES else 1
        if align == 1 or all(m == shapes for m in members):
            return shapes
        return [tuple(-(-n // align) * align for n in shape) for shape in shapes]

    def bucket_members(self, b: int) -> list[nn.Module]:
        return [self.members[i] for i in self.buckets[b]]

    def read(self, b: int, tensors: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """Bucket b's rows (Z, N, dim) of ids (Z, N), from its padded (Z, *shape) tensors
        (keys: the members' parameter names without dots)."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        reads = {key: read_buckets(getattr(self, key), blocks)
                 for key, blocks in self.blocks.items()}
        outs, first = [], 0
        for b, bucket in enumerate(self.buckets):
            tensors = {key: read[b] for key, read in reads.items()}
            z = len(bucket)
            mine = ids[first:first + z] if self.rows is None else ids.index_select(0,
                                                                                   self.rows[b])
            outs.append(self.read(b, tensors, mine))
            first += z
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out if self.inverse is None else out.index_select(0, self.inverse)


@stacks(LowDimensionalEmbedding)
class LowDimensionalStack(_Padded):
    """ldim: a bucket's tables and projections padded to its largest rank."""

    # A padded bucket copies its whole (Z, vocab, rank) table twice a step, where one bucket
    # fewer saved about 0.3 ms a step on an H200 (paper sweep, ML-1m's shape: 5 buckets 2.9 s,
    # one 1.3 s; BENCHMARKS.md, session 14): tens of millions of elements' copies.
    bucket_elements = 1 << 24

    def read(self, b: int, tensors: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        table, projection = tensors["table"], tensors["projection"]  # (Z, vocab, r), (Z, r, d)
        low = _rows(table.reshape(-1), table.shape[2], ids + self.member_index[b] * self.vocab)
        return torch.bmm(low, projection)


@stacks(DeepHashEmbedding)
class DeepHashStack(_Padded):
    """dhe: a bucket's MLPs padded to its widest member (padded units are zero: Mish(0) =
    ReLU(0) = 0), each member's encoding padded to the bucket's hashes (their columns meet
    zero weights)."""

    # A sweep stacks one budget's seeds: the paper sweep's 33 dhe runs on ML-1m's shape took
    # 5.6 s as 11 such stacks, whose products run side by side on the graph's branches, and
    # 6.7 s as one stack of 3 padded buckets, which run one after another (H100, session 15).
    stacks_budgets = False

    # cuBLAS's fast fp32 kernels want rows of a multiple of 16 bytes; at the paper sweep's
    # widths (55, 172, 247) it ran align1 kernels (see run_mlp's _ALIGN).
    align = 8

    # For stacks of several budgets: on an H200, the paper sweep's 33 runs in one stack
    # (BENCHMARKS.md, session 14): 11 buckets (0) 8.4 s, 5 (2^16) 6.8 s, 3 (2^18) 6.2 s, one
    # 9.4 s.
    bucket_elements = 1 << 18

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        _same(members, "distribution", "activation", "hash_range", "hidden_layers")
        self.layers = len(members[0].weights)
        self.act = _ACTIVATIONS[members[0].activation]
        # Each bucket's hash functions, padded with zero rows (k, 4) to its widest encoding.
        self.coefficients = []
        for b in range(len(self.buckets)):
            hashes = [m.hash.coefficients for m in self.bucket_members(b)]
            k = max(h.shape[0] for h in hashes)
            self.coefficients.append(torch.stack([F.pad(h, (0, 0, 0, k - h.shape[0]))
                                                  for h in hashes]))
        # Every id's encoding per bucket (Z, vocab, k padded), kept padded as run_mlp reads
        # it: the hash features change only with the hashes.
        widths = [_aligned(block.shape[2]) * block.shape[0] for block in self.blocks["weights0"]]
        self.encodings = None
        if self.fits_cache(sum(widths) * self.vocab):
            self.encodings = [self._encode(b, self.all_ids()[:len(bucket)])
                              for b, bucket in enumerate(self.buckets)]

    def _encode(self, b: int, ids: torch.Tensor) -> torch.Tensor:
        """Bucket b's members' encodings of ids (Z, N) -> (Z, N, its first layer's inputs)."""
        members, coefficients = self.bucket_members(b), self.coefficients[b]
        width = _aligned(self.blocks["weights0"][b].shape[2])
        if members[0].distribution == "uniform" or len({m.n_hashes for m in members}) == 1:
            return members[0].hash_features(ids, coefficients, width)
        # Box-Muller pairs a member's own n_hashes values: each member alone.
        return torch.cat([m.hash_features(ids[r:r + 1], coefficients[r:r + 1, :m.n_hashes],
                                          width) for r, m in enumerate(members)])

    @torch.no_grad()
    def refresh(self) -> None:
        super().refresh()
        for b, bucket in enumerate(self.buckets):
            hashes = [m.hash.coefficients for m in self.bucket_members(b)]
            for row, h in zip(self.coefficients[b], hashes):
                row[:h.shape[0]].copy_(h)
            if self.encodings is not None:
                self.encodings[b].copy_(self._encode(b, self.all_ids()[:len(bucket)]))

    def read(self, b: int, tensors: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        if self.encodings is None:  # (Z, N, k padded)
            x = self._encode(b, ids)
        else:
            encoding = self.encodings[b]
            x = take_rows(encoding.view(-1, encoding.shape[2]),
                          ids + self.member_index[b] * self.vocab)
        weights = [tensors[f"weights{k}"] for k in range(self.layers)]  # (Z, out, in)
        biases = [tensors[f"biases{k}"].unsqueeze(1) for k in range(self.layers)]  # (Z, 1, out)
        return run_mlp(x, weights, biases, self.act)[..., :self.dim]  # dim may be padded


@stacks(TensorTrainEmbedding)
class TensorTrainStack(_Padded):
    """tt: TensorTrainEmbedding.halves() and embed() on a bucket's cores, padded to its largest
    rank (a zero rank slice adds zeros to every product)."""

    # At ML-1m's budgets a TT stack's cores are small and its products cheap beside its
    # launches: one bucket (paper sweep on an H200: 11 buckets 7.2 s, one 3.1 s; session 14).
    # At ml-25m's (2..262,144 ppd) one bucket would pad the members to 8x their parameters;
    # this plans 5 buckets there with 13% padding, and still one for the paper sweep.
    bucket_elements = 1 << 22

    def __init__(self, members: list[nn.Module]):
        super().__init__(members)
        first = members[0]
        _same(members, "layout")
        self.split, self.left_rows, self.right_rows = first.split, first.left_rows, first.right_rows
        self.cores = len(first.cores)

    def halves(self, cores: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = cores[0].shape[0]
        left = cores[0].squeeze(2)  # (Z, n_1, d_1, R)
        for core in cores[1:self.split]:
            left = torch.einsum("zapr,zbrqs->zabpqs", left, core)
            left = left.reshape(z, -1, left.shape[3] * left.shape[4], left.shape[5])
        if self.cores == 1:
            return left, None
        right = cores[-1].squeeze(-1)  # (Z, n_c, R, d_c)
        for core in reversed(cores[self.split:-1]):
            right = torch.einsum("zarqs,zbsp->zabrqp", core, right)
            right = right.reshape(z, -1, right.shape[3], right.shape[4] * right.shape[5])
        return left, right

    def read(self, b: int, tensors: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        z, n = ids.shape
        member = self.member_index[b]  # (Z, 1): 0, 1, ...
        left, right = self.halves([tensors[f"cores{k}"] for k in range(self.cores)])
        row_l = (ids // self.right_rows) % self.left_rows
        if right is None:
            return _rows(left.reshape(-1), self.dim, row_l + member * self.left_rows)
        rank = left.shape[3]
        row_r = ids % self.right_rows
        per_id = (left.shape[2] + right.shape[3]) * rank  # as a member of this rank decides
        if materialise(self.left_rows * self.right_rows, n, self.dim, per_id, ids.is_cuda):
            table = torch.einsum("zapr,zbrq->zabpq", left, right)  # (Z, n_L, n_R, d_L, d_R)
            rows = row_l * self.right_rows + row_r + member * (self.left_rows * self.right_rows)
            return _rows(table.reshape(-1), self.dim, rows)
        a = _rows(left.reshape(-1), left.shape[2] * rank, row_l + member * self.left_rows)
        b_ = _rows(right.reshape(-1), right.shape[3] * rank, row_r + member * self.right_rows)
        product = torch.bmm(a.reshape(z * n, -1, rank), b_.reshape(z * n, rank, -1))
        return product.reshape(z, n, self.dim)
