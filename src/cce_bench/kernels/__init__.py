"""Row gathers and scatter-adds for narrow 2-d tables, k-means' nearest centroid, the universal
hash and DHE's hash encoding, in Triton on CUDA.

torch 2.11 reads rows of a 2-d CUDA tensor through one kernel for index_select, advanced
indexing, torch.gather and embedding alike, and that kernel gives every index its own thread
block. For the narrow rows of compressed tables the block launches are the cost: on an H200,
147,456 rows of 32 floats took 91 us and 589,824 rows of 8 floats 358 us, a third of a stacked
GMF step. A Triton program here moves a block of rows at once: 6.9 and 8.9 us for the same reads
(BENCHMARKS.md, "Row gathers in Triton"). The scatter-add (a lookup's backward) is the same
layout with atomic adds: in the stacked hash step 29 us a call, where index_add_ took 51.

`nearest_centroids` finds each point's nearest centroid without writing the (points x
centroids) distances to memory, which k-means' torch path does block by block and reads back
for argmin. Each (point, lane) pair of a program's tile keeps its own running minimum over the
tiles of centroids, so the one reduction comes at the end. On an H200 that is 2.4-18x faster
than the baddbmm blocks: 3.6x on a stacked GMF round's 36 x 65,536 points x 256 centroids of 8
dimensions (5.0 -> 1.4 ms), 16x on a DLRM table at the 800,000 cap, 4 x 6.4M x 25,000 of 4
(4.65 -> 0.29 s) (BENCHMARKS.md, "A fused nearest centroid"). The arithmetic stays fp32: FMAs
for points of up to 4 dimensions, tl.dot in its exact "ieee" mode above; the sums are ordered
differently from cuBLAS's, so a near-tie may go to the other centroid than on the CPU, and a
NaN distance is never nearest (torch.argmin would pick it).

`dhe_encoding` computes DHE's k uniform hash features of each id in one program, where torch
runs about fifteen element-wise kernels over the (ids x k) int64 values; the values are the
same as torch's on the CPU, bit for bit: the int64 arithmetic is exact and the float64 steps
are the same operations, correctly rounded. (Torch on CUDA divides by a Python number as a
product with its reciprocal, which at the default hash range of 10^6 gives the same float32 for
every hash value; at some larger ranges a rare value differs in its last bit.)

`universal_hash` computes hashing.universal_hash (mixer, linear step, both moduli) of R members'
ids in one program, the same integers as torch's thirty-odd int64 element-wise kernels. A CCE
clustering round hashes its vocabulary three times a table; in a 36-run stack those kernels were
about a fifth of the round's 30,000 torch calls.

`read_pairs` and `read_windows` read hnet's and ROBE's flat arrays in one program each, the
positions computed in registers: hnet's pair hash (hashing.py's mixer and linear step, the same
integers as torch's) and ROBE's circular windows, where torch writes every position to memory
over a dozen int64 element-wise kernels and reads them back for index_select. Their backwards,
`add_pairs` and `add_windows`, recompute the positions and add atomically, as index_add_ does
on CUDA. `read_mixed` sums an id's c rows in registers, weighted (hemb's importance weights) or not
(bloom), where torch writes the (ids x c x dim) rows and their products to memory and reads
them back; its backward `add_mixed` adds the tables' gradients atomically.

`gather_rows` and `scatter_add_rows` fall back to torch's index_select and index_add_ on the
CPU, where triton is missing or its first launch failed, for rows of at least WIDE_ROW_BYTES (a
block per row suits them) and for layouts the kernels do not take. Unlike index_select, the
kernels do not stop at a row outside the table: they read it as 0 and add it nowhere, so a bad
id cannot touch other memory. Ids are in range by construction (hashes modulo the rows) or
checked where the data is loaded (data.InteractionData), and tests compare the two paths.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import torch

# Rows at least this wide (bytes) are read by torch's one-block-per-row kernel, which suits them.
WIDE_ROW_BYTES = 1024
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int64)
# The widest point nearest_centroids takes (its register tile) and its largest batch of problems
# (the programs' second grid axis).
FUSED_MAX_DIM = 64
FUSED_MAX_BATCH = 65_535


_failed: dict[str, str] = {}  # kernel -> why it was given up, once it was


@functools.cache
def _kernels():
    """The Triton kernels module, or None where triton cannot be imported."""
    try:
        from . import triton_rows
    except ImportError:
        return None
    return triton_rows


def _triton_takes(tensor: torch.Tensor) -> bool:
    """Whether a Triton program can run on this tensor: on CUDA, on the current device (triton
    launches there, not on its arguments' device), with triton importable."""
    return (tensor.is_cuda and tensor.device.index in (None, torch.cuda.current_device())
            and _kernels() is not None)


def _fast(table: torch.Tensor, rows: torch.Tensor) -> bool:
    return (table.dim() == 2 and table.is_contiguous()
            and table.dtype in _DTYPES and rows.dim() == 1 and rows.is_contiguous()
            and rows.dtype in (torch.int32, torch.int64) and rows.device == table.device
            and 0 < table.shape[1] * table.element_size() < WIDE_ROW_BYTES
            and _triton_takes(table))


def _launch(kernel: str, *args) -> bool:
    """Run a Triton program; False (and a warning, once) if triton cannot launch it here, e.g.
    no C compiler to build its launcher: torch's ops take over from then on, for that program."""
    if kernel in _failed:
        return False
    try:
        getattr(_kernels(), kernel)(*args)
    except Exception as err:  # noqa: BLE001 - any failure to build or launch means: use torch
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise  # a failed capture cannot fall back; the warm-up steps before it run eagerly
        _failed[kernel] = f"{type(err).__name__}: {err}"
        warnings.warn(f"Triton kernel {kernel} unavailable, using torch's ({_failed[kernel]})",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """table[rows] for a 2-d table and 1-d rows: (N, width). Not differentiable (see lookup)."""
    if _fast(table, rows):
        out = torch.empty(len(rows), table.shape[1], dtype=table.dtype, device=table.device)
        if _launch("gather", table, rows, out):
            return out
    return table.index_select(0, rows)


def scatter_add_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor,
                     alpha: float = 1.0) -> torch.Tensor:
    """target[rows[i]] += alpha * values[i] in place, repeated rows summed (atomically on
    CUDA: the order of the sums, and so the last bit, may vary between runs)."""
    values = values.to(target.dtype)
    if (_fast(target, rows) and target.dtype == torch.float32
            and values.shape == (len(rows), target.shape[1])
            and _launch("scatter_add", target, rows, values.contiguous(), alpha)):
        # As index_add_ does: autograd then refuses a backward through values saved before.
        torch.autograd.graph.increment_version(target)
        return target
    return target.index_add_(0, rows, values, alpha=alpha)


def take_rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table[ids] for a 2-d table and ids of any shape: (*ids.shape, width). Not differentiable
    (buffers: hash caches, CCE's index, pq's codes)."""
    return gather_rows(table, ids.reshape(-1)).view(*ids.shape, table.shape[1])


def nearest_centroids(points: torch.Tensor, centroids: torch.Tensor,
                      norms: torch.Tensor) -> torch.Tensor | None:
    """Index of the nearest centroid by |c|^2 + bias - 2 x.c: points (B, n, d), centroids
    (B, k, d), norms (B, k) (|c|^2 plus any bias; inf: never nearest) -> (B, n) int64; None
    where the kernel does not take the problem (the caller computes it with torch)."""
    b, n, d = points.shape
    k = centroids.shape[1]
    if not (d <= FUSED_MAX_DIM and b <= FUSED_MAX_BATCH
            and all(t.dtype == torch.float32 and t.device == points.device
                    for t in (points, centroids, norms))
            and "nearest" not in _failed and _triton_takes(points)):
        return None
    out = torch.empty(b, n, dtype=torch.int64, device=points.device)
    taken = _launch("nearest", points.contiguous(), centroids.contiguous(),
                    norms.contiguous(), out)
    return out if taken else None


def dhe_encoding(ids: torch.Tensor, coefficients: torch.Tensor, m: int,
                 width: int) -> torch.Tensor | None:
    """DHE's uniform features of G members' ids, each by its own k functions into [0, m):
    ids (G, N), coefficients (G, k, 4) int64 -> (G, N, width) float32, columns k..width zero;
    None where the kernel does not run (the caller computes it with torch)."""
    if not (ids.dim() == 2 and coefficients.dim() == 3
            and ids.shape[0] == coefficients.shape[0] <= FUSED_MAX_BATCH
            and coefficients.dtype == torch.int64 and coefficients.device == ids.device
            and width >= coefficients.shape[1] and "dhe_uniform" not in _failed
            and _triton_takes(ids)):
        return None
    # Imported here: hashing imports this module (universal_hash).
    from ..embeddings.hashing import PRIME, mixed_pieces

    out = torch.empty(*ids.shape, width, dtype=torch.float32, device=ids.device)
    taken = _launch("dhe_uniform", mixed_pieces(ids), coefficients.contiguous(), m, PRIME, out)
    return out if taken else None


def universal_hash(ids: torch.Tensor, coefficients: torch.Tensor,
                   moduli: torch.Tensor | int) -> torch.Tensor | None:
    """hashing.universal_hash of R members at once, in one program: ids (R, N) hashed by each
    member's k functions, coefficients (R, k, 4) int64, into [0, moduli[r]) (moduli (R,) int64,
    or one int for all) -> (R, N, k) int64, the same integers as torch's; None where the
    program does not run (the caller hashes with torch)."""
    per_member = isinstance(moduli, torch.Tensor)
    if not (ids.dim() == 2 and coefficients.dim() == 3
            and ids.shape[0] == coefficients.shape[0] <= FUSED_MAX_BATCH
            and ids.dtype in (torch.int32, torch.int64) and coefficients.dtype == torch.int64
            and coefficients.device == ids.device
            and (not per_member or (moduli.dtype == torch.int64 and moduli.device == ids.device))
            and "universal_hash" not in _failed and _triton_takes(ids)):
        return None
    from ..embeddings.hashing import PRIME

    out = torch.empty(*ids.shape, coefficients.shape[1], dtype=torch.int64, device=ids.device)
    taken = _launch("universal_hash", ids.contiguous(), coefficients.contiguous(),
                    moduli.contiguous() if per_member else None, 0 if per_member else moduli,
                    PRIME, out)
    return out if taken else None


def takes_flat(array: torch.Tensor, kernel: str) -> bool:
    """Whether a flat-read program runs on array: float32 and contiguous on the current CUDA
    device, outside deterministic mode (its atomic sums are unordered), and not given up."""
    return (array.dtype == torch.float32 and array.dim() == 1 and array.is_contiguous()
            and not torch.are_deterministic_algorithms_enabled() and kernel not in _failed
            and _triton_takes(array))


def read_pairs(weights: torch.Tensor, ids: torch.Tensor, coefficients: torch.Tensor,
               sign_coefficients: torch.Tensor | None, sizes: torch.Tensor, base: torch.Tensor,
               dim: int) -> torch.Tensor | None:
    """hnet's read: out[r, i, k] = weights[base[r] + h_r(ids[r, i] * dim + k) mod sizes[r]]
    (times a sign when sign_coefficients) for ids (R, N), coefficients (R, 4) int64, sizes and
    base (R,) int64 -> (R, N, dim); None where the program does not run (not differentiable:
    hnet.py's read wraps it)."""
    if not takes_flat(weights, "read_pairs"):
        return None
    from ..embeddings.hashing import PRIME

    out = torch.empty(*ids.shape, dim, dtype=weights.dtype, device=weights.device)
    taken = _launch("read_pairs", weights, ids.contiguous(), coefficients.contiguous(),
                    sign_coefficients, sizes, base, out, PRIME)
    return out if taken else None


def add_pairs(target: torch.Tensor, ids: torch.Tensor, coefficients: torch.Tensor,
              sign_coefficients: torch.Tensor | None, sizes: torch.Tensor, base: torch.Tensor,
              grad: torch.Tensor) -> bool:
    """read_pairs' backward: target[position] += sign * grad (R, N, dim) in place; False where
    the program does not run."""
    if not takes_flat(target, "add_pairs"):
        return False
    from ..embeddings.hashing import PRIME

    return _launch("add_pairs", target, ids.contiguous(), coefficients.contiguous(),
                   sign_coefficients, sizes, base, grad.contiguous(), PRIME)


def read_windows(array: torch.Tensor, slots: torch.Tensor, lengths: torch.Tensor,
                 base: torch.Tensor, width: int) -> torch.Tensor | None:
    """ROBE's read: out[r, i, j, t] = array[base[r, j] + (slots[r, i, j] + t) mod lengths[r]]
    for slots (R, N, c) in [0, lengths[r]), t < width <= lengths[r], lengths (R,) and base
    (R, c) int64 -> (R, N, c, width); None where the program does not run."""
    if not takes_flat(array, "read_windows"):
        return None
    out = torch.empty(*slots.shape, width, dtype=array.dtype, device=array.device)
    taken = _launch("read_windows", array, slots.contiguous(), lengths, base.contiguous(), out)
    return out if taken else None


def add_windows(target: torch.Tensor, slots: torch.Tensor, lengths: torch.Tensor,
                base: torch.Tensor, grad: torch.Tensor) -> bool:
    """read_windows' backward: every window's positions += grad (R, N, c, width) in place;
    False where the program does not run."""
    if not takes_flat(target, "add_windows"):
        return False
    return _launch("add_windows", target, slots.contiguous(), lengths, base.contiguous(),
                   grad.contiguous())


def _takes_tables(*tables: torch.Tensor | None, kernel: str) -> bool:
    """Whether a program that adds atomically runs on these 2-d tables (None: absent):
    float32 and contiguous on the current CUDA device, outside deterministic mode, and not
    given up."""
    return all(t.dim() == 2 and t.is_contiguous() and takes_flat(t.view(-1), kernel)
               for t in tables if t is not None)


def takes_mixed(table: torch.Tensor, weights: torch.Tensor | None = None) -> bool:
    """Whether read_mixed and add_mixed run on these tables (see _takes_tables)."""
    return _takes_tables(table, weights, kernel="read_mixed") and "add_mixed" not in _failed


def read_mixed(table: torch.Tensor, weights: torch.Tensor | None, slots: torch.Tensor,
               weight_rows: torch.Tensor | None) -> torch.Tensor | None:
    """A weighted sum of rows: out[i] = sum_j weights[weight_rows[i], j] * table[slots[i, j]]
    for table (B, dim), weights (K, c), slots (N, c) and weight_rows (N,) -> (N, dim), in one
    program; weights None: the plain sum (bloom). Torch writes the (N, c, dim) rows (and their
    products) to memory and reads them back for the sum. None where the program does not run.
    Not differentiable (embeddings.base.summed_rows wraps it)."""
    weighted = weights is not None
    if not (takes_mixed(table, weights) and slots.dim() == 2
            and (not weighted or (weight_rows is not None and weight_rows.shape == slots.shape[:1]
                                  and weights.shape[1] == slots.shape[1]))):
        return None
    out = torch.empty(len(slots), table.shape[1], dtype=table.dtype, device=table.device)
    taken = _launch("read_mixed", table, weights, slots.contiguous(),
                    weight_rows.contiguous() if weighted else None, out)
    return out if taken else None


def add_mixed(table: torch.Tensor, weights: torch.Tensor | None, slots: torch.Tensor,
              weight_rows: torch.Tensor | None, grad: torch.Tensor, grad_table: torch.Tensor,
              grad_weights: torch.Tensor | None) -> bool:
    """read_mixed's backward, added in place: grad_table[slots[i, j]] += weights[weight_rows
    [i], j] * grad[i] and grad_weights[weight_rows[i], j] += grad[i] . table[slots[i, j]]
    (weights None: grad_table[slots[i, j]] += grad[i]); False where the program does not
    run."""
    if not _takes_tables(grad_table, grad_weights, kernel="add_mixed"):
        return False
    return _launch("add_mixed", table, weights, slots.contiguous(),
                   None if weight_rows is None else weight_rows.contiguous(), grad.contiguous(),
                   grad_table, grad_weights)


# Values one AdamW program updates (4 KB of each of the four fp32 streams it reads; on an H200
# 1,024 with 4 warps ran at 4.1 TB/s, 4,096 with 8 at 3.8), and the most members one block may
# meet (each one more comparison a value).
ADAMW_BLOCK, ADAMW_MAX_SPAN = 1024, 16


@dataclasses.dataclass(frozen=True)
class AdamWLayout:
    """Where the members of a flat tensor lie, for `adamw_`: starts (R + span - 1,) int64, the
    members' first values padded with the total; first (blocks,) int32, the member of each
    block's first value; span, the most members a block meets."""

    starts: torch.Tensor
    first: torch.Tensor
    span: int


def adamw_layout(sizes: list[int], device: torch.device) -> AdamWLayout | None:
    """The layout of a flat tensor of members of these sizes, back to back in order; None
    where a block would meet more than ADAMW_MAX_SPAN members (tiny members: torch's op)."""
    total = sum(sizes)
    starts = torch.tensor([0, *sizes], dtype=torch.int64).cumsum(0)[:-1]
    blocks = torch.arange(0, max(total, 1), ADAMW_BLOCK, dtype=torch.int64)
    # right=True: of members starting at one value (empty ones), the last, which holds it
    first = torch.searchsorted(starts, blocks, right=True) - 1
    last = torch.searchsorted(starts, (blocks + ADAMW_BLOCK).clamp(max=max(total, 1)) - 1,
                              right=True) - 1
    span = int((last - first).max()) + 1 if len(sizes) else 1
    if span > ADAMW_MAX_SPAN:
        return None
    span = 1 << (span - 1).bit_length()  # a power of two: each span is a program to compile
    padded = torch.cat([starts, torch.full((span - 1,), total, dtype=torch.int64)])
    return AdamWLayout(padded.to(device), first.to(torch.int32).to(device), span)


def adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
           exp_avg_sq: torch.Tensor, steps: torch.Tensor, layout: AdamWLayout, lr: float,
           beta1: float, beta2: float, eps: float, weight_decay: float) -> bool:
    """One AdamW update in place of a flat tensor of members (optim.AdamW): member r's values
    at its step count steps[r] + 1 (the caller then adds the 1), by one Triton program; False
    where it does not run (fp32 contiguous 1-d tensors of one size on the current CUDA device,
    steps an fp32 tensor there)."""
    tensors = (param, grad, exp_avg, exp_avg_sq)
    if not (all(t.dtype == torch.float32 and t.dim() == 1 and t.is_contiguous()
                and t.device == param.device and t.shape == param.shape for t in tensors)
            and steps.dtype == torch.float32 and steps.device == param.device
            and layout.starts.device == param.device and "adamw_members" not in _failed
            and _triton_takes(param)):
        return False
    return _launch("adamw_members", *tensors, steps, layout.starts, layout.first, layout.span,
                   ADAMW_BLOCK, lr, beta1, beta2, eps, weight_decay)
