"""The contract every registered embedding method keeps, run over the whole registry.

A new method gets every check here, with its name in the test id, by being registered.
"""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.embeddings import get_method, method_names

ALL = method_names()
VOCAB, DIM, CHUNKS = 300, 16, 4
BUDGET = 1024  # comfortably above every method's minimum at dim 16


def build(method: str, budget: int = BUDGET, vocab: int = VOCAB, dim: int = DIM,
          n_chunks: int = CHUNKS, seed: int = 0):
    return make_embedding(vocab, budget, dim, method, n_chunks, seed=seed)


def respects_budget(method: str) -> bool:
    # The full table ignores its budget; post-training methods hold a full table until compressed.
    info = get_method(method)
    return info.family != "uncompressed" and not getattr(info.cls, "post_training", False)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("shape", [(), (7,), (3, 5)])
def test_output_shape_follows_ids(method, shape):
    emb = build(method)
    ids = torch.randint(0, VOCAB, shape)
    out = emb(ids)
    assert out.shape == (*shape, DIM)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", ALL)
def test_parameter_count_is_exact_and_within_budget(method):
    emb = build(method)
    counted = sum(p.numel() for p in emb.parameters() if p.requires_grad)
    assert emb.num_parameters() == counted
    if respects_budget(method):
        assert 0 < emb.num_parameters() <= BUDGET
    elif get_method(method).family == "uncompressed":
        assert emb.num_parameters() == VOCAB * DIM


@pytest.mark.parametrize("method", [m for m in ALL if respects_budget(m)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab=st.integers(1, 5000), ppd=st.integers(1, 300), dim_chunks=st.sampled_from(
    [(4, 1), (8, 2), (8, 4), (16, 4), (32, 4), (32, 8), (12, 3)]))
def test_never_more_parameters_than_asked(method, vocab, ppd, dim_chunks):
    dim, n_chunks = dim_chunks
    budget = ppd * dim
    try:
        emb = make_embedding(vocab, budget, dim, method, n_chunks, seed=1)
    except BudgetTooSmall as err:
        # A refusal must name a budget that really is larger than the one asked.
        assert err.minimum > budget
        return
    assert emb.num_parameters() <= budget
    ids = torch.randint(0, vocab, (5,))
    assert emb(ids).shape == (5, dim)


@pytest.mark.parametrize("method", [m for m in ALL if respects_budget(m)])
def test_budget_too_small_names_a_budget_that_works(method):
    with pytest.raises(BudgetTooSmall) as caught:
        build(method, budget=1)
    err = caught.value
    assert f"budget 1 is too small for {method}" in str(err)
    assert f"use at least {err.minimum}" in str(err)
    emb = build(method, budget=err.minimum)  # the minimum it names is enough
    assert emb.num_parameters() <= err.minimum


@pytest.mark.parametrize("method", ALL)
def test_gradients_reach_every_trainable_tensor(method):
    emb = build(method)
    ids = torch.arange(VOCAB)
    target = torch.randn(VOCAB, DIM)
    ((emb(ids) - target) ** 2).sum().backward()
    for name, param in emb.named_parameters():
        if not param.requires_grad:  # frozen, e.g. pq's empty codebooks before compression
            continue
        assert param.grad is not None, f"{method}.{name} got no gradient"
        assert param.grad.abs().sum() > 0, f"{method}.{name} got an all-zero gradient"


@pytest.mark.parametrize("method", ALL)
def test_same_seed_same_output_other_seed_other_output(method):
    ids = torch.randint(0, VOCAB, (50,))
    a, b, c = build(method, seed=3), build(method, seed=3), build(method, seed=4)
    assert torch.equal(a(ids), b(ids))
    assert not torch.equal(a(ids), c(ids))


@pytest.mark.parametrize("method", ALL)
def test_global_seed_governs_unseeded_modules(method):
    ids = torch.randint(0, VOCAB, (50,))
    torch.manual_seed(11)
    a = make_embedding(VOCAB, BUDGET, DIM, method, CHUNKS)
    torch.manual_seed(11)
    b = make_embedding(VOCAB, BUDGET, DIM, method, CHUNKS)
    assert torch.equal(a(ids), b(ids))


@pytest.mark.parametrize("method", ALL)
def test_state_dict_round_trip_keeps_output(method):
    source = build(method, seed=5)
    if hasattr(source, "cluster"):
        source.cluster()  # the index, hashes and round counter must travel too
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = build(method, seed=6)
    target.load_state_dict(torch.load(buffer))
    ids = torch.arange(VOCAB)
    assert torch.equal(source(ids), target(ids))


@pytest.mark.parametrize("method", ALL)
def test_buffer_bytes_count_every_buffer(method):
    emb = build(method)
    expected = sum(b.numel() * b.element_size() for b in emb.buffers())
    assert emb.num_buffer_bytes() == expected


@pytest.mark.parametrize("method", [m for m in ALL if hasattr(get_method(m).cls, "cluster")])
def test_cluster_keeps_shapes_and_finite_values(method):
    emb = build(method)
    ids = torch.randint(0, VOCAB, (4, 9))
    params_before = emb.num_parameters()
    emb.cluster()
    emb.cluster()
    out = emb(ids)
    assert out.shape == (4, 9, DIM)
    assert torch.isfinite(out).all()
    assert emb.num_parameters() <= max(params_before, BUDGET)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from: full, hash"):
        make_embedding(10, 100, 4, "nope")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="unknown option 'rows' for method hash"):
        make_embedding(10, 100, 4, "hash", rows=3)


def test_each_name_maps_to_its_class():
    for name in ALL:
        assert get_method(name).cls.method_name == name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ALL)
def test_cpu_and_cuda_give_the_same_output_for_the_same_state(method):
    emb = build(method, seed=2)
    if hasattr(emb, "cluster"):
        emb.cluster()
    ids = torch.randint(0, VOCAB, (64,))
    on_cpu = emb(ids)
    on_cuda = emb.to("cuda")(ids.to("cuda")).cpu()
    assert torch.allclose(on_cpu, on_cuda, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ALL)
def test_bad_ids_are_one_clear_error_for_every_method(method):
    from cce_bench.errors import IdError

    emb = build(method)
    for ids, message in [(torch.tensor([-1]), f"{method}: ids must be in [0, {VOCAB}), got -1"),
                         (torch.tensor([VOCAB]), f"ids must be in [0, {VOCAB}), got {VOCAB}"),
                         (torch.tensor([1.0]), "ids must be an integer tensor, not torch.float32"),
                         (torch.tensor([True]), "ids must be an integer tensor, not torch.bool")]:
        with pytest.raises(IdError) as err:
            emb(ids)
        assert message in str(err.value)
    assert isinstance(IdError("x"), IndexError)  # caught where torch.nn.Embedding's errors are
    assert emb(torch.zeros(0, dtype=torch.int64)).shape == (0, DIM)  # empty: empty, tt too
    assert emb(torch.tensor([0, VOCAB - 1], dtype=torch.int32)).shape == (2, DIM)


@pytest.mark.parametrize("option, value, message", [
    ("vocab", 10.5, "vocab must be an integer, not 10.5"),
    ("num_params", "64", "num_params must be an integer, not '64'"),
])
def test_sizes_must_be_integers(option, value, message):
    from cce_bench.errors import ConfigError

    args = {"vocab": VOCAB, "num_params": BUDGET, "dim": DIM} | {option: value}
    with pytest.raises(ConfigError, match=message):
        make_embedding(args["vocab"], args["num_params"], args["dim"], "hash")


@pytest.mark.parametrize("method", ["cce", "pq", "cce_robe"])
def test_an_unknown_kmeans_backend_fails_at_construction(method):
    from cce_bench.errors import UnknownName

    with pytest.raises(UnknownName, match="unknown k-means backend 'nosuch'; choose from: auto"):
        make_embedding(VOCAB, BUDGET, DIM, method, CHUNKS, kmeans_backend="nosuch")
