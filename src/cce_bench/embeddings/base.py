"""What every embedding method shares: the id -> vector contract, budgets and seeding."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError, IdError
from .. import kernels
from ..kernels import gather_rows, scatter_add_rows
from .sparse_update import SparseSGDLookup, sparse_sgd_target


def make_generator(seed: int | None) -> tuple[int, torch.Generator]:
    """A CPU generator for initialisation and hash draws.

    Without a seed the seed is drawn from torch's global RNG, so `torch.manual_seed` governs it
    as it governs `nn.Embedding`. Drawing on the CPU makes a module's state identical whatever
    device it later moves to.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return seed, generator


# Output scales, as the standard deviation of an output coordinate times sqrt(dim).
# "small": 0.1, this suite's default since its first version, applied to every method alike.
# "authors": 1 / sqrt(3), the standard deviation of U(-1/sqrt(dim), 1/sqrt(dim)), which
# Tsang & Ahle's code (thomasahle/cce) draws its tables from: 5.8x the default. docs/init.md
# has a sensitivity table; the full table on syn-1000-300000 reaches val BCE 0.508 with
# "small" and 0.548 with "authors" in 10 epochs.
INIT_SCALES = {"small": 0.1, "authors": 1 / math.sqrt(3)}


def init_scale(init: str | float) -> float:
    """The output scale of an init option: a name of INIT_SCALES or a positive number."""
    if isinstance(init, str):
        if init not in INIT_SCALES:
            raise ConfigError(f"unknown init '{init}'; choose from: {', '.join(INIT_SCALES)}, "
                              f"or a positive number (the output std times sqrt(dim))")
        return INIT_SCALES[init]
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not init > 0:
        raise ConfigError(f"init must be one of {', '.join(INIT_SCALES)} or a positive number, "
                          f"not {init!r}")
    return float(init)


def normal_init(shape: tuple[int, ...], std: float, generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape, generator=generator) * std)


class CompressedEmbedding(nn.Module):
    """Maps integer ids of any shape (*S) to vectors (*S, dim), like `torch.nn.Embedding`.

    Subclasses implement `embed(ids (N,)) -> (N, dim)`. Every method initialises so that an
    output coordinate has standard deviation `output_std = scale / sqrt(dim)` (a sum of k terms
    gives each term std / sqrt(k)), so methods start from the same scale and differ only in what
    they store. Factorised methods (qr, tt, ldim) put the scale on one factor and start the
    others near one (or the identity), so that every factor learns at a plain table's pace.

    init: the scale. "small" (the default) is 0.1, an output std of 0.1 / sqrt(dim). This is a
    departure: the authors' tables are U(-1/sqrt(dim), 1/sqrt(dim)), std 1 / sqrt(3 dim), 5.8x
    larger; init="authors" gives that scale (still Gaussian draws), and a number gives its own
    (docs/init.md measures the difference). Every method accepts it, so a run's method_opts
    can set it.
    """

    method_name = "?"
    # Whether n_chunks changes what the method builds; a sweep's n_chunks grid expands only the
    # methods that use it (the others would train the same run once per value).
    uses_chunks = True

    def __init__(self, vocab: int, num_params: int, dim: int, seed: int | None = None,
                 init: str | float = "small"):
        super().__init__()
        for name, value in (("vocab", vocab), ("num_params", num_params), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{self.method_name}: {name} must be an integer, not "
                                  f"{value!r}")
        if vocab < 1 or dim < 1 or num_params < 0:
            raise ConfigError(
                f"{self.method_name}: vocab ({vocab}) and dim ({dim}) must be positive and "
                f"num_params ({num_params}) non-negative"
            )
        self.vocab, self.dim, self.num_params_asked = vocab, dim, num_params
        self.seed, self.generator = make_generator(seed)
        self.init = init
        self.output_std = init_scale(init) / math.sqrt(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """One rule for every method, as torch.nn.Embedding's: integer ids in [0, vocab). The
        range is checked on CPU tensors (a GPU check would cost a host sync every step)."""
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise IdError(f"{self.method_name}: ids must be an integer tensor, not {ids.dtype}")
        flat = ids.reshape(-1)
        if flat.numel() == 0:
            return flat.new_zeros((*ids.shape, self.dim), dtype=torch.float32)
        if not flat.is_cuda:
            low, high = int(flat.min()), int(flat.max())
            if low < 0 or high >= self.vocab:
                raise IdError(f"{self.method_name}: ids must be in [0, {self.vocab}), got "
                              f"{low if low < 0 else high}")
        return self.embed(flat).reshape(*ids.shape, self.dim)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, dim)
        raise NotImplementedError

    def num_parameters(self) -> int:
        """Trainable values as stored."""
        return sum(p.numel() for p in self.parameters())

    def num_buffer_bytes(self) -> int:
        """Bytes kept besides parameters: per-id indices, hash coefficients."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def config(self) -> dict:
        """The configuration chosen for the budget (rows, ranks, ...), for the run record."""
        return {}

    def extra_repr(self) -> str:
        return (f"vocab={self.vocab}, dim={self.dim}, params={self.num_parameters()}, "
                f"asked={self.num_params_asked}")


def chunk_dim(method: str, dim: int, n_chunks: int) -> int:
    """Width of one chunk; methods that split the vector need dim divisible by n_chunks."""
    if n_chunks < 1 or dim % n_chunks:
        raise ConfigError(
            f"{method}: dim {dim} must be a positive multiple of n_chunks {n_chunks}"
        )
    return dim // n_chunks


def gather_chunks(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-chunk row lookup in a (c, r, w) table: rows (N, c) -> (N, c * w)."""
    c, r, w = table.shape
    offsets = torch.arange(c, device=rows.device) * r
    flat = lookup(table.reshape(c * r, w), (rows + offsets).reshape(-1))  # (N * c, w)
    return flat.reshape(rows.shape[0], c * w)


def lookup(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[rows] for a 2-d table and 1-d rows, with a cheap backward on CUDA.

    On CUDA the rows are read and their gradients summed by Triton programs that move a block of
    rows at once (kernels/): torch's row gather spends a thread block on each row, and its
    embedding backward sorts the indices (about ten kernels), where one atomic scatter-add is a
    single kernel. Atomic float sums are not bitwise reproducible, so with
    torch.use_deterministic_algorithms(True) torch's sorted path is used. Where the engine
    trains with plain SGD, the backward updates the rows read in place instead
    (sparse_update.py).
    """
    target = sparse_sgd_target(table)
    if target is not None:
        return SparseSGDLookup.apply(table, rows, *target)
    if rows.is_cuda and not torch.are_deterministic_algorithms_enabled():
        return _ScatterAddLookup.apply(table, rows)
    return nn.functional.embedding(rows, table)


class _ScatterAddLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.table_shape = table.shape
        return gather_rows(table, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        grad_table = torch.zeros(ctx.table_shape, dtype=grad.dtype, device=grad.device)
        return scatter_add_rows(grad_table, rows, grad), None


def summed_rows(table: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None = None,
                weight_rows: torch.Tensor | None = None) -> torch.Tensor:
    """An id's c rows summed: e = sum_j weights[weight_rows, j] * table[slots[..., j]] for
    table (B, dim), slots (*S, c), weights (K, c) and weight_rows (*S) -> (*S, dim); weights
    None: the plain sum (bloom). On CUDA one program sums each id's rows in registers and its
    backward adds the gradients atomically (kernels.read_mixed); torch's ops on the CPU, in
    deterministic mode and for plain SGD's sparse updates (lookup)."""
    tables = [t for t in (table, weights) if t is not None]
    if all(sparse_sgd_target(t) is None for t in tables) and kernels.takes_mixed(*tables):
        flat_rows = None if weight_rows is None else weight_rows.reshape(-1)
        out = _SummedRows.apply(table, weights, slots.reshape(-1, slots.shape[-1]), flat_rows)
        return out.view(*slots.shape[:-1], table.shape[1])
    return _torch_sum(table, slots, weights, weight_rows)


def _torch_sum(table: torch.Tensor, slots: torch.Tensor, weights: torch.Tensor | None,
               weight_rows: torch.Tensor | None) -> torch.Tensor:
    rows = lookup(table, slots.reshape(-1)).view(*slots.shape, table.shape[1])  # (*S, c, d)
    if weights is None:
        return rows.sum(-2)
    # A weighted sum of c rows, written out. As an einsum it was a tiny matrix product per
    # id: in the stacked paper grid's hemb step on the H200 those cuBLAS kernels took 1.35
    # of 2.05 ms (BENCHMARKS.md); a product and a sum over c read the same bytes once.
    w = lookup(weights, weight_rows.reshape(-1)).view(slots.shape)
    return (w.unsqueeze(-1) * rows).sum(-2)


class _SummedRows(torch.autograd.Function):
    """kernels.read_mixed with its backward kernels.add_mixed; torch's ops where a program
    fails to launch."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, weights: torch.Tensor | None, slots: torch.Tensor,
                weight_rows: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(table, weights, slots, weight_rows)
        out = kernels.read_mixed(table, weights, slots, weight_rows)
        return out if out is not None else _torch_sum(table, slots, weights, weight_rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, weights, slots, weight_rows = ctx.saved_tensors
        grad_table = torch.zeros_like(table)
        grad_weights = None if weights is None else torch.zeros_like(weights)
        if not kernels.add_mixed(table, weights, slots, weight_rows, grad, grad_table,
                                 grad_weights):
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in (table, weights) if t is not None]
                out = _torch_sum(leaves[0], slots, leaves[1] if len(leaves) > 1 else None,
                                 weight_rows)
                grads = torch.autograd.grad(out, leaves, grad)
            grad_table, grad_weights = grads[0], grads[1] if len(grads) > 1 else None
        return grad_table, grad_weights, None, None
