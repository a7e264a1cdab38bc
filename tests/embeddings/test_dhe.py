"""Deep Hash Embedding: the encoding, the MLP's size rule, and nothing stored per id."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings.dhe import MAX_HASHES, mlp_params, run_mlp


@pytest.mark.parametrize("vocab,budget,dim,layers", [(300, 1024, 16, 2), (1500, 512, 32, 1),
                                                     (1500, 8192, 32, 3), (10, 64, 8, 2)])
def test_parameters_are_the_formula_at_the_largest_width_that_fits(vocab, budget, dim, layers):
    emb = make_embedding(vocab, budget, dim, "dhe", hidden_layers=layers, seed=0)
    w, k = emb.width, emb.n_hashes
    assert k == min(w, MAX_HASHES)
    assert emb.num_parameters() == mlp_params(k, w, layers, dim) <= budget
    assert mlp_params(min(w + 1, MAX_HASHES), w + 1, layers, dim) > budget
    # The formula is the MLP k -> w (-> w) x (layers - 1) -> dim, weights and biases.
    shapes = [tuple(p.shape) for p in emb.weights]
    assert shapes == [(w, k)] + [(w, w)] * (layers - 1) + [(dim, w)]
    assert [tuple(b.shape) for b in emb.biases] == [(w,)] * layers + [(dim,)]
    assert emb.config() == {"n_hashes": k, "width": w, "hidden_layers": layers,
                            "distribution": "uniform"}


def test_hash_count_caps_at_the_papers_k():
    emb = make_embedding(100, 4_000_000, 32, "dhe", hidden_layers=1, seed=0)
    assert emb.width > MAX_HASHES and emb.n_hashes == MAX_HASHES
    assert emb.num_parameters() == mlp_params(MAX_HASHES, emb.width, 1, 32) <= 4_000_000


def test_fixed_hash_count():
    emb = make_embedding(100, 5000, 16, "dhe", n_hashes=64, hidden_layers=1, seed=0)
    assert emb.n_hashes == 64
    assert emb.num_parameters() == mlp_params(64, emb.width, 1, 16) <= 5000
    assert mlp_params(64, emb.width + 1, 1, 16) > 5000


def test_too_small_budget_names_the_width_one_mlp():
    minimum = mlp_params(1, 1, 2, 32)  # = 1 + 1 + 2 + 32 + 32
    assert minimum == 68
    with pytest.raises(BudgetTooSmall, match="use at least 68"):
        make_embedding(1000, 67, 32, "dhe")
    assert make_embedding(1000, 68, 32, "dhe").width == 1


def test_nothing_is_stored_per_id():
    small = make_embedding(10, 4096, 16, "dhe", seed=0)
    large = make_embedding(10**9, 4096, 16, "dhe", seed=0)
    # 4 int64 per hash function
    assert small.num_buffer_bytes() == large.num_buffer_bytes() == small.n_hashes * 4 * 8
    assert large(torch.tensor([10**9 - 1])).shape == (1, 16)


def test_uniform_encoding_is_the_scaled_hash():
    emb = make_embedding(1000, 4096, 16, "dhe", seed=0)
    ids = torch.arange(1000)
    x = emb.encode(ids)
    h = emb.hash(ids).double()
    torch.testing.assert_close(x, (2 * h / (emb.hash_range - 1) - 1).float())
    assert x.min() >= -1 and x.max() <= 1
    assert abs(float(x.mean())) < 0.02 and abs(float(x.var()) - 1 / 3) < 0.02


@pytest.mark.parametrize("n_hashes", [64, 63])
def test_gaussian_encoding_is_box_muller(n_hashes):
    emb = make_embedding(5000, 10**5, 16, "dhe", distribution="gaussian", n_hashes=n_hashes,
                         hidden_layers=1, seed=0)
    ids = torch.arange(5000)
    z = emb.encode(ids)
    assert z.shape == (5000, n_hashes)
    u = (emb.hash(ids[:3]).double() + 1) / emb.hash_range
    half = (n_hashes + 1) // 2
    first = math.sqrt(-2 * math.log(u[0, 0])) * math.cos(2 * math.pi * u[0, half])
    assert math.isclose(float(z[0, 0]), first, rel_tol=1e-5)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.var()) - 1) < 0.03
    assert abs(float((z ** 4).mean()) - 3) < 0.15  # the fourth moment of N(0, 1)


def test_distinct_ids_get_distinct_encodings():
    emb = make_embedding(10**6, 4096, 16, "dhe", seed=0)
    ids = torch.randint(0, 2**31 - 1, (20000,)).unique()
    assert len(torch.unique(emb.encode(ids), dim=0)) == len(ids)


def test_init_gives_the_target_output_scale():
    emb = make_embedding(1500, 8192, 32, "dhe", seed=0)
    rms = float(emb(torch.arange(1500)).detach().pow(2).mean().sqrt())
    assert math.isclose(rms, emb.output_std, rel_tol=1e-3)


@pytest.mark.parametrize("option,value,message", [
    ("distribution", "cauchy", "distribution must be 'uniform' or 'gaussian'"),
    ("activation", "tanh", "activation must be one of mish, relu"),
    ("hidden_layers", 0, "hidden_layers must be at least 1"),
    ("n_hashes", 0, "n_hashes must be at least 1"),
])
def test_bad_options_are_named(option, value, message):
    with pytest.raises(ValueError, match=message):
        make_embedding(100, 4096, 16, "dhe", **{option: value})


def _unpadded(x, weights, biases, activation):
    """The MLP as written in the docstring, layer by layer at the true widths."""
    for k, (weight, bias) in enumerate(zip(weights, biases)):
        x = F.linear(x, weight, bias)
        if k < len(weights) - 1:
            x = activation(x)
    return x


@pytest.mark.parametrize("activation", ["mish", "relu"])
def test_wide_layers_padded_for_alignment_give_the_unpadded_mlp(activation):
    # Width 261 (k = 261 too) is padded to 264 inside run_mlp; values and every gradient are
    # those of the MLP at its true widths, and the parameters keep their shapes.
    emb = make_embedding(500, mlp_params(261, 261, 2, 16), 16, "dhe", activation=activation,
                         seed=3)
    assert emb.width == 261 and emb.width % 8 and [tuple(w.shape) for w in emb.weights] == [
        (261, 261), (261, 261), (16, 261)]
    ids = torch.randint(0, 500, (64,))
    out = emb(ids)
    ref = _unpadded(emb.encode(ids), list(emb.weights), list(emb.biases),
                    F.mish if activation == "mish" else F.relu)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.pow(2).sum(), list(emb.parameters()))
    refs = torch.autograd.grad(ref.pow(2).sum(), list(emb.parameters()))
    for g, r in zip(grads, refs):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_batched_mlp_pads_every_member_alike():
    z, n, k, w, d = 3, 32, 300, 300, 12
    x = torch.randn(z, n, k)
    weights = [torch.randn(z, w, k) / 20, torch.randn(z, d, w) / 20]
    biases = [torch.randn(z, 1, w), torch.randn(z, 1, d)]
    out = run_mlp(x, weights, biases, F.mish)
    assert out.shape == (z, n, d)
    for i in range(z):
        ref = _unpadded(x[i], [wt[i] for wt in weights], [b[i, 0] for b in biases], F.mish)
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)


def test_weight_splits_are_powers_of_two_that_divide_the_ids():
    from cce_bench.embeddings.dhe import weight_splits

    assert weight_splits(3, 4096, 24, 24) == 32  # 3 tiles: split until 128 ids a part
    assert weight_splits(3, 4096, 247, 247) == 8  # 192 tiles -> 1,536
    assert weight_splits(3, 4096, 2415, 2415) == 1  # 17,328 tiles already
    assert weight_splits(3, 128, 24, 24) == 1  # DLRM's batch of 128: nothing to split
    assert weight_splits(3, 4095, 24, 24) == 1  # odd: no power of two divides it


def test_split_weight_gradients_equal_one_product(monkeypatch):
    # The members' weight gradients summed over parts of the ids (on CUDA; forced here) are
    # those of torch's baddbmm up to the order of the sums; the input and bias gradients too.
    from cce_bench.embeddings import dhe

    monkeypatch.setattr(dhe, "_SPLIT_DEVICES", ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4096, 24, generator=gen, requires_grad=True)
    weight = torch.randn(3, 10, 24, generator=gen, requires_grad=True)
    bias = torch.randn(3, 1, 10, generator=gen, requires_grad=True)
    upstream = torch.randn(3, 4096, 10, generator=gen)
    assert dhe.weight_splits(3, 4096, 10, 24) > 1
    out = dhe._MemberLinear.apply(x, weight, bias)
    grads = torch.autograd.grad(out, (x, weight, bias), upstream)
    ref = torch.baddbmm(bias, x, weight.transpose(1, 2))
    refs = torch.autograd.grad(ref, (x, weight, bias), upstream)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, refs):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-4)
