"""kernels.gather_rows / scatter_add_rows / take_rows against torch's own row ops."""

import pytest
import torch

from cce_bench import kernels
from cce_bench.embeddings.base import lookup
from tests.conftest import requires_cuda, run_interpreted


def test_take_rows_reads_any_shape_of_ids_on_the_cpu():
    table = torch.arange(30).view(10, 3)
    ids = torch.tensor([[0, 9], [4, 4]])
    assert torch.equal(kernels.take_rows(table, ids), table[ids])
    assert not kernels._fast(table, ids.reshape(-1))  # the CPU reads through index_select


def test_scatter_add_rows_sums_repeated_rows_on_the_cpu():
    target = torch.zeros(4, 2)
    rows = torch.tensor([1, 1, 3])
    kernels.scatter_add_rows(target, rows, torch.ones(3, 2), alpha=-0.5)
    assert torch.equal(target, torch.tensor([[0, 0], [-1, -1], [0, 0], [-0.5, -0.5]]))


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.int64])
@pytest.mark.parametrize("width", [1, 3, 8, 16, 32, 100])
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_gather_rows_equals_index_select_on_cuda(dtype, width, index):
    gen = torch.Generator().manual_seed(width)
    table = (torch.randn(5000, width, generator=gen) * 100).to(dtype).cuda()
    rows = torch.randint(0, 5000, (70_001,), generator=gen).to(index).cuda()
    assert kernels._fast(table, rows)
    assert torch.equal(kernels.gather_rows(table, rows), table.index_select(0, rows))
    assert kernels.gather_rows(table, rows[:0]).shape == (0, width)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("width", [1, 5, 32])
def test_scatter_add_rows_equals_index_add_on_cuda(width):
    gen = torch.Generator().manual_seed(width)
    rows = torch.randint(0, 50, (20_000,), generator=gen).cuda()  # many repeats
    values = torch.randn(20_000, width, generator=gen).cuda()
    expected = torch.zeros(50, width, device="cuda").index_add_(0, rows, values, alpha=0.1)
    got = kernels.scatter_add_rows(torch.zeros(50, width, device="cuda"), rows, values, 0.1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@requires_cuda
@pytest.mark.gpu
def test_lookup_on_cuda_gives_embeddings_gradient():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(300, 8, generator=gen).cuda().requires_grad_()
    rows = torch.randint(0, 300, (4096,), generator=gen).cuda()
    weight = torch.randn(4096, 8, generator=gen).cuda()
    (lookup(table, rows) * weight).sum().backward()
    fast = table.grad.clone()
    table.grad = None
    (torch.nn.functional.embedding(rows, table) * weight).sum().backward()
    torch.testing.assert_close(fast, table.grad, rtol=1e-5, atol=1e-5)


INTERPRETED = """
# numpy 2.4 refuses int() of a one-element array, which Triton 3.5's interpreter does for a
# loop bound given as an argument; read the element instead.
from triton.runtime import interpreter
patch_tensor = interpreter._patch_lang_tensor
def patched(tensor):
    patch_tensor(tensor)
    tensor.__index__ = lambda self: int(self.handle.data.reshape(-1)[0])
interpreter._patch_lang_tensor = patched

import torch
from cce_bench.kernels import triton_rows
gen = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.bfloat16, torch.int32, torch.int64):
    for width in (1, 3, 32, 100):
        table = (torch.randn(500, width, generator=gen) * 100).to(dtype)
        for index in (torch.int32, torch.int64):
            rows = torch.randint(0, 500, (3001,), generator=gen).to(index)
            out = torch.empty(3001, width, dtype=dtype)
            triton_rows.gather(table, rows, out)
            assert torch.equal(out, table.index_select(0, rows))
# A row outside the table reads as 0 and adds nowhere (it never reaches other memory).
table = torch.ones(4, 2)
out = torch.full((3, 2), 7.0)
triton_rows.gather(table, torch.tensor([-1, 4, 3]), out)
assert out.tolist() == [[0, 0], [0, 0], [1, 1]]
triton_rows.scatter_add(table, torch.tensor([-1, 4, 0]), torch.ones(3, 2), 1.0)
assert table.tolist() == [[2, 2], [1, 1], [1, 1], [1, 1]]
rows = torch.randint(0, 50, (2000,), generator=gen)
values = torch.randn(2000, 5, generator=gen)
got = torch.zeros(50, 5)
triton_rows.scatter_add(got, rows, values, 0.1)
torch.testing.assert_close(got, torch.zeros(50, 5).index_add_(0, rows, values, alpha=0.1))
# The nearest centroid, kept in registers tile by tile, against k-means' torch path; a padded
# centroid (inf) is never nearest, and of equal centroids the first wins.
from cce_bench.embeddings.kmeans import nearest
for b, n, k, d in [(1, 300, 70, 8), (3, 257, 129, 4), (2, 100, 5, 32), (1, 50, 200, 1),
                   (1, 130, 90, 5), (2, 64, 65, 12), (1, 40, 33, 64)]:
    points, centroids = torch.randn(b, n, d, generator=gen), torch.randn(b, k, d, generator=gen)
    bias = torch.zeros(b, k)
    bias[:, -2:] = float("inf")
    out = torch.empty(b, n, dtype=torch.int64)
    triton_rows.nearest(points, centroids, ((centroids * centroids).sum(-1) + bias), out)
    assert torch.equal(out, nearest(points, centroids, bias))
# Of equal centroids the first wins, in both arithmetic paths (FMAs up to 4 dimensions on tiles
# of 32 centroids, tl.dot above on tiles of 64): a copy in another lane of the same tile, one in
# the same lane of the next tiles, and one in another lane of another tile.
for d, tile in ((2, triton_rows.NEAREST_FMA_BLOCK_K), (8, triton_rows.NEAREST_DOT_BLOCK_K)):
    centroids = torch.randn(1, 3 * tile, d, generator=gen)
    copies = [5, 3 + tile, 3 + 2 * tile, tile + 9]
    centroids[0, copies] = centroids[0, 3].clone()
    points = centroids[:, [3, *copies]] + 1e-3
    out = torch.empty(1, len(copies) + 1, dtype=torch.int64)
    triton_rows.nearest(points, centroids, (centroids * centroids).sum(-1), out)
    assert out.tolist() == [[3] * (len(copies) + 1)], out
# Every centroid padded (inf): index 0, as torch.argmin gives.
out = torch.empty(1, 3, dtype=torch.int64)
triton_rows.nearest(torch.randn(1, 3, 8, generator=gen), torch.randn(1, 4, 8, generator=gen),
                    torch.full((1, 4), float("inf")), out)
assert out.tolist() == [[0, 0, 0]]
# DHE's uniform encoding against the torch path, bit for bit, padding columns zero; ids at the
# ends of int64 exercise the mixer's wrapping products.
from cce_bench.embeddings import hashing
for g, n, k, width in [(1, 70, 5, 5), (3, 33, 130, 136), (2, 1, 1, 8)]:
    ids = torch.randint(-2**62, 2**62, (g, n), generator=gen)
    ids[0, 0], ids[-1, -1] = 2**63 - 1, -2**63
    coefficients = torch.stack([hashing.draw_coefficients(k, gen) for _ in range(g)])
    out = torch.full((g, n, width), 7.0)
    triton_rows.dhe_uniform(hashing.mixed_pieces(ids), coefficients, 1_000_000,
                            hashing.PRIME, out)
    h = hashing.hash_mod_prime(ids, coefficients.unsqueeze(1)) % 1_000_000
    assert torch.equal(out[..., :k], (2 * h.double() / 999_999 - 1).float())
    assert not out[..., k:].any()
# The universal hash against torch's, per-member ranges or one for all; ids at the ends of int64
# (the mixer's wrapping products), int32 ids, one function and more than a tile of them.
for r, n, k in [(1, 300, 4), (3, 70, 1), (2, 5, 11)]:
    ids = torch.randint(-2**62, 2**62, (r, n), generator=gen)
    ids[0, 0], ids[-1, -1] = 2**63 - 1, -2**63
    coefficients = torch.stack([hashing.draw_coefficients(k, gen) for _ in range(r)])
    moduli = torch.randint(1, 2**40, (r,), generator=gen)
    out = torch.full((r, n, k), -1)
    triton_rows.universal_hash(ids, coefficients, moduli, 0, hashing.PRIME, out)
    h = hashing.hash_mod_prime(ids, coefficients.unsqueeze(1))
    assert torch.equal(out, h % moduli.view(-1, 1, 1))
    triton_rows.universal_hash(ids.to(torch.int32), coefficients, None, 1009, hashing.PRIME, out)
    assert torch.equal(out, hashing.hash_mod_prime(ids.to(torch.int32), coefficients.unsqueeze(1)) % 1009)
# hnet's pair read and ROBE's windows against torch's hashes and positions; a key at the
# top of the range exercises the mixer's wrapping products, a window at a slot near the end wraps.
from cce_bench.embeddings.hnet import pair_keys
for r, n, dim, signed in [(1, 70, 32, False), (3, 33, 5, True), (2, 1, 1, False)]:
    ids = torch.randint(0, 2**40, (r, n), generator=gen)
    ids[0, 0] = 2**63 // dim - 1
    coef = torch.stack([hashing.draw_coefficients(1, gen)[0] for _ in range(r)])
    sc = torch.stack([hashing.draw_coefficients(1, gen)[0] for _ in range(r)]) if signed else None
    sizes = torch.randint(dim, 1000, (r,), generator=gen)
    base = torch.cumsum(sizes, 0) - sizes
    weights = torch.randn(int(sizes.sum()), generator=gen)
    keys = pair_keys(ids, dim)
    at = hashing.hash_mod_prime(keys, coef.view(-1, 1, 1, 1, 4))[..., 0] % sizes.view(-1, 1, 1) + base.view(-1, 1, 1)
    sign = (1 - 2 * (hashing.hash_mod_prime(keys, sc.view(-1, 1, 1, 1, 4))[..., 0] & 1)).float() if signed else 1.0
    out = torch.full((r, n, dim), 7.0)
    triton_rows.read_pairs(weights, ids, coef, sc, sizes, base, out, hashing.PRIME)
    assert torch.equal(out, weights[at] * sign), (r, n, dim)
    grad = torch.randn(r, n, dim, generator=gen)
    target = torch.zeros_like(weights)
    triton_rows.add_pairs(target, ids, coef, sc, sizes, base, grad, hashing.PRIME)
    torch.testing.assert_close(target, torch.zeros_like(weights).index_add_(0, at.reshape(-1), (grad * sign).reshape(-1)))
from cce_bench.embeddings.robe import circular_positions
for r, n, c, w in [(1, 50, 4, 8), (3, 17, 3, 5), (2, 1, 1, 1)]:
    lengths = torch.randint(w, 60, (r,), generator=gen)
    slots = torch.stack([torch.randint(0, int(l), (n, c), generator=gen) for l in lengths])
    slots[0, 0, 0] = lengths[0] - 1  # a window that wraps
    base = torch.randint(0, 100, (r, c), generator=gen)
    array = torch.randn(300, generator=gen)
    at = circular_positions(slots, w, lengths.view(-1, 1, 1, 1)) + base.view(r, 1, c, 1)
    out = torch.full((r, n, c, w), 7.0)
    triton_rows.read_windows(array, slots.to(torch.int32), lengths, base, out)
    assert torch.equal(out, array[at])
    grad = torch.randn(r, n, c, w, generator=gen)
    target = torch.zeros(300)
    triton_rows.add_windows(target, slots, lengths, base, grad)
    torch.testing.assert_close(target, torch.zeros(300).index_add_(0, at.reshape(-1), grad.reshape(-1)))
# hemb's weighted sum of rows and bloom's plain one against torch's, repeated rows summed.
for n, c, dim in [(70, 4, 32), (9, 3, 5), (1, 1, 1)]:
    components, importance = torch.randn(11, dim, generator=gen), torch.rand(6, c, generator=gen)
    slots = torch.randint(0, 11, (n, c), generator=gen)
    islots = torch.randint(0, 6, (n,), generator=gen)
    out = torch.full((n, dim), 7.0)
    triton_rows.read_mixed(components, importance, slots, islots, out)
    expected = (importance[islots].unsqueeze(-1) * components[slots]).sum(1)
    torch.testing.assert_close(out, expected)
    grad = torch.randn(n, dim, generator=gen)
    grad_c, grad_w = torch.zeros_like(components), torch.zeros_like(importance)
    triton_rows.add_mixed(components, importance, slots, islots, grad, grad_c, grad_w)
    c_, w_ = components.clone().requires_grad_(), importance.clone().requires_grad_()
    (w_[islots].unsqueeze(-1) * c_[slots]).sum(1).backward(grad)
    torch.testing.assert_close(grad_c, c_.grad)
    torch.testing.assert_close(grad_w, w_.grad)
    # unweighted (bloom): the plain sum, and its gradient to every row read
    triton_rows.read_mixed(components, None, slots, None, out)
    torch.testing.assert_close(out, components[slots].sum(1))
    grad_c.zero_()
    triton_rows.add_mixed(components, None, slots, None, grad, grad_c, None)
    torch.testing.assert_close(grad_c, torch.zeros_like(components).index_add_(
        0, slots.reshape(-1), grad.repeat_interleave(c, 0)))
# hnet's, ROBE's, cce_robe's, hemb's and bloom's reads through the programs (alone and
# stacked), values and gradients, against the torch path (the sums of rows in another order).
SUMS = ("hemb", "bloom")
from cce_bench.embeddings import make_embedding
from cce_bench.models.stacked import stack_tables
from cce_bench import kernels as _k
def through(program, module, ids):
    _k._triton_takes = lambda tensor: program
    module.zero_grad()
    out = module(ids)
    (out * torch.arange(out.numel()).view(out.shape).sin()).sum().backward()
    return out.detach(), [p.grad.clone() for p in module.parameters()]
for method, opts in (("hnet", {}), ("robe", {}), ("cce_robe", {}), ("hemb", {}), ("bloom", {})):
    members = [make_embedding(300, budget, 8, method, 4, seed=s, **opts)
               for s, budget in enumerate((64, 200, 96))]
    ids = torch.randint(0, 300, (3, 40), generator=gen)
    _k._triton_takes = lambda tensor: True  # a stack built for the programs keeps no hash cache
    stack = stack_tables(members)
    assert getattr(stack, "slot_table", None) is None
    for module, batch in ((members[1], ids[1]), (stack, ids)):
        fast, fast_grads = through(True, module, batch)
        slow, slow_grads = through(False, module, batch)
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6 if method in SUMS else 0)
        for a, b in zip(fast_grads, slow_grads):
            torch.testing.assert_close(a, b)
assert not _k._failed, _k._failed
# The wrappers' Triton path (taken on CUDA only), run here through the interpreter.
from cce_bench import kernels
kernels._triton_takes = lambda tensor: True
ids = torch.randint(0, 10**6, (2, 50), generator=gen)
coefficients = torch.stack([hashing.draw_coefficients(9, gen) for _ in range(2)])
h = hashing.hash_mod_prime(ids, coefficients.unsqueeze(1)) % 1000
fused = kernels.dhe_encoding(ids, coefficients, 1000, 16)
assert torch.equal(fused[..., :9], (2 * h.double() / 999 - 1).float()) and not fused[..., 9:].any()
assert kernels.dhe_encoding(ids, coefficients[:1], 1000, 16) is None  # one member's functions
assert torch.equal(kernels.universal_hash(ids, coefficients, 1000), h)
moduli = torch.tensor([1000, 7])
assert torch.equal(kernels.universal_hash(ids, coefficients, moduli),
                   hashing.hash_mod_prime(ids, coefficients.unsqueeze(1)) % moduli.view(-1, 1, 1))
assert kernels.universal_hash(ids, coefficients[:1], 1000) is None  # one member's functions
one = hashing.UniversalHash(3, 101, gen)  # a module's hash through the program, any id shape
assert torch.equal(one(ids.view(10, 10)), hashing.hash_mod_prime(ids.view(10, 10), one.coefficients) % 101)
kernels._fast = lambda table, rows: True
table = torch.randn(40, 3, generator=gen)
rows = torch.randint(0, 40, (100,), generator=gen)
assert torch.equal(kernels.take_rows(table, rows.view(10, 10)), table[rows.view(10, 10)])
target = torch.zeros(40, 3)
version = target._version
kernels.scatter_add_rows(target, rows, torch.ones(100, 3), alpha=-0.5)
assert target._version > version and not kernels._failed
torch.testing.assert_close(target, torch.zeros(40, 3).index_add_(0, rows, torch.ones(100, 3),
                                                                 alpha=-0.5))
"""


def test_the_triton_programs_in_triton_s_interpreter():
    # The kernels' own logic on the CPU, where triton is installed (it comes with CUDA builds
    # of torch): TRITON_INTERPRET runs the programs with numpy, so no GPU is needed.
    run_interpreted(INTERPRETED)


def test_a_triton_launch_that_fails_falls_back_to_torch_with_one_warning(monkeypatch):
    class Broken:
        def gather(self, *args):
            raise RuntimeError("no C compiler to build the launcher")

    monkeypatch.setattr(kernels, "_failed", {})
    monkeypatch.setattr(kernels, "_kernels", lambda: Broken())
    monkeypatch.setattr(kernels, "_fast", lambda table, rows: True)
    table, rows = torch.arange(12.0).view(6, 2), torch.tensor([5, 0])
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert torch.equal(kernels.gather_rows(table, rows), table[rows])
    assert torch.equal(kernels.gather_rows(table, rows), table[rows])  # no second try


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dim", [4, 8, 32])  # FMAs, then tl.dot
def test_nearest_centroids_on_cuda_agrees_with_the_blocked_distances(monkeypatch, dim):
    from cce_bench.embeddings import kmeans

    gen = torch.Generator().manual_seed(1)
    points = torch.randn(4, 20_000, dim, generator=gen).cuda()
    centroids = torch.randn(4, 3_000, dim, generator=gen).cuda()
    norms = (centroids * centroids).sum(-1)
    assert kernels.nearest_centroids(points, centroids, norms) is not None  # the program ran
    fused = kmeans.nearest(points, centroids)
    monkeypatch.setattr(kmeans, "nearest_centroids", lambda *args: None)
    blocked = kmeans.nearest(points, centroids)
    # Sums in another order: a near-tie may go the other way, never to a farther centroid.
    assert (fused == blocked).float().mean() > 0.999
    dist = lambda a: ((points - torch.gather(centroids, 1, a.unsqueeze(-1).expand(-1, -1, dim)))
                      ** 2).sum(-1)  # noqa: E731
    torch.testing.assert_close(dist(fused), dist(blocked), rtol=1e-5, atol=1e-5)


@requires_cuda
@pytest.mark.gpu
def test_dhe_encoding_on_cuda_is_the_torch_encoding_bit_for_bit():
    from cce_bench.embeddings import hashing

    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 10**7, (3, 5000), generator=gen).cuda()
    coefficients = torch.stack([hashing.draw_coefficients(1015, gen) for _ in range(3)]).cuda()
    fused = kernels.dhe_encoding(ids, coefficients, 10**6, 1016)
    h = hashing.hash_mod_prime(ids, coefficients.unsqueeze(1)) % 10**6
    assert fused is not None and torch.equal(fused[..., :1015], (2 * h.double() / 999_999 - 1)
                                             .float())
    assert not fused[..., 1015:].any()


@requires_cuda
@pytest.mark.gpu
def test_a_wide_dhe_on_cuda_gives_its_cpu_values():
    # Width 1,015 and 1,015 hashes: the encoding program and the padded MLP both run.
    from cce_bench import make_embedding
    from cce_bench.embeddings.dhe import mlp_params

    emb = make_embedding(3000, mlp_params(1015, 1015, 2, 32), 32, "dhe", seed=0)
    assert emb.width == 1015
    ids = torch.randint(0, 3000, (512,))
    expected = emb(ids)
    torch.testing.assert_close(emb.cuda()(ids.cuda()).cpu(), expected, rtol=1e-4, atol=1e-5)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("method,opts", [("hnet", {}), ("robe", {}), ("cce_robe", {}),
                                         ("hemb", {}), ("bloom", {})])
def test_flat_reads_on_cuda_give_the_torch_values_and_gradients(monkeypatch, method, opts):
    # hnet's hashed pairs, ROBE's windows and hemb's and bloom's sums of rows, read and added by one
    # program each (the key's mixer in uint64 on the GPU), against torch's ops; alone and
    # stacked.
    from cce_bench import make_embedding
    from cce_bench.models.stacked import stack_tables

    members = [make_embedding(50_000, budget, 32, method, 4, seed=s, **opts).cuda()
               for s, budget in enumerate((1024, 40_000, 3200))]
    ids = torch.randint(0, 50_000, (3, 4096), generator=torch.Generator().manual_seed(3)).cuda()
    stack = stack_tables(members)  # built for the programs: no hash cache

    def through(module, batch, program):
        monkeypatch.setattr(kernels, "takes_flat", lambda array, kernel: program)
        module.zero_grad()
        out = module(batch)
        (out * torch.linspace(-1, 1, out.numel(), device="cuda").view(out.shape)).sum().backward()
        return out.detach(), [p.grad.clone() for p in module.parameters()]

    for module, batch in ((members[1], ids[1]), (stack, ids)):
        fast, fast_grads = through(module, batch, True)
        slow, slow_grads = through(module, batch, False)
        # hemb's and bloom's program sums an id's rows in registers, in another order
        exact = method not in ("hemb", "bloom")
        torch.testing.assert_close(fast, slow, rtol=0, atol=0 if exact else 1e-6)
        for a, b in zip(fast_grads, slow_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not kernels._failed
