"""Post-training product quantization: full table, then codebooks and codes."""

from __future__ import annotations

import io

import pytest
import torch

from cce_bench import BudgetTooSmall, make_embedding
from cce_bench.config import RunConfig
from cce_bench.datasets import load_dataset
from cce_bench.embeddings.kmeans import nearest
from cce_bench import engine
from cce_bench.engine import awaiting_compression, build_model, train
from tests.conftest import TINY_DATASET

VOCAB, BUDGET, DIM, CHUNKS = 500, 16 * 8, 8, 4  # 16 codewords of width 2 per chunk


def build(seed=0, **opts):
    return make_embedding(VOCAB, BUDGET, DIM, "pq", CHUNKS, seed=seed, **opts)


def test_before_compression_it_is_a_full_table():
    emb = build()
    assert emb.post_training and not emb.compressed
    assert emb.num_parameters() == VOCAB * DIM
    ids = torch.tensor([3, 499, 0])
    assert torch.equal(emb(ids), emb.table[ids])


def test_after_compression_each_vector_is_its_codewords_and_codes_are_nearest():
    emb = build()
    before = emb.table.detach().clone()
    assert emb.cluster() == [emb.table, emb.codebook]
    assert emb.compressed and emb.rows == BUDGET // DIM
    assert emb.num_parameters() == emb.rows * DIM <= BUDGET
    assert emb.num_buffer_bytes() == VOCAB * CHUNKS * 4 + 8  # int32 codes and the call counter
    ids = torch.arange(VOCAB)
    codes = emb.codes.long()  # (vocab, c)
    rebuilt = torch.cat([emb.codebook[j, codes[:, j]] for j in range(CHUNKS)], dim=1)
    assert torch.equal(emb(ids), rebuilt)
    chunks = before.reshape(VOCAB, CHUNKS, -1)
    for j in range(CHUNKS):  # brute force: distance to every codeword
        dist = ((chunks[:, j, None, :] - emb.codebook[j][None]) ** 2).sum(-1)  # (vocab, k)
        chosen = dist.gather(1, codes[:, j:j + 1]).squeeze(1)
        torch.testing.assert_close(chosen, dist.min(1).values, rtol=1e-5, atol=1e-9)


def test_codebooks_beat_table_rows_as_codewords():
    emb = build()
    before = emb.table.detach().clone()
    emb.cluster()
    error = ((emb(torch.arange(VOCAB)) - before) ** 2).sum()
    chunks = before.reshape(VOCAB, CHUNKS, -1).transpose(0, 1)  # (c, vocab, w)
    rows = chunks[:, :emb.rows]  # the first rows as a codebook
    naive = ((chunks - torch.gather(rows, 1, nearest(chunks, rows).unsqueeze(-1).expand(
        -1, -1, chunks.shape[-1]))) ** 2).sum()
    assert error < 0.8 * naive


def test_compresses_on_the_asked_call_only_once():
    emb = build(compress_round=3)
    table = emb.table.detach().clone()
    assert emb.cluster() == [] and emb.cluster() == []
    assert not emb.compressed and torch.equal(emb.table, table)
    assert emb.cluster() == [emb.table, emb.codebook] and emb.compressed
    codebook = emb.codebook.detach().clone()
    assert emb.cluster() == [] and torch.equal(emb.codebook, codebook)
    assert int(emb.rounds) == 4


def test_an_optimizer_built_before_compression_trains_the_codebooks():
    emb = build()
    opt = torch.optim.AdamW(emb.parameters(), lr=0.1)
    ids = torch.arange(VOCAB)
    emb(ids).sum().backward()
    opt.step()
    for param in emb.cluster():
        opt.state.pop(param, None)
    assert not emb.table.requires_grad and emb.table.numel() == 0
    assert emb.codebook.requires_grad
    codebook = emb.codebook.detach().clone()
    opt.zero_grad(set_to_none=True)
    emb(ids).pow(2).sum().backward()
    assert emb.codebook.grad is not None and emb.codebook.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(emb.codebook, codebook)


@pytest.mark.parametrize("compress_source", [True, False])
def test_state_dict_crosses_compression_both_ways(compress_source):
    source, target = build(seed=1), build(seed=2)
    (source if compress_source else target).cluster()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer))
    assert target.compressed == compress_source
    assert target.codebook.requires_grad == compress_source
    ids = torch.arange(VOCAB)
    assert torch.equal(source(ids), target(ids))


def test_same_seed_same_codes():
    a, b = build(seed=4), build(seed=4)
    a.cluster()
    b.cluster()
    assert torch.equal(a.codes, b.codes) and torch.equal(a.codebook, b.codebook)


def test_budget_rules():
    with pytest.raises(BudgetTooSmall, match=f"use at least {DIM}"):
        make_embedding(VOCAB, DIM - 1, DIM, "pq", CHUNKS)
    assert make_embedding(VOCAB, DIM, DIM, "pq", CHUNKS).rows == 1
    small = make_embedding(10, 10**6, DIM, "pq", CHUNKS, seed=0)  # never more codewords than ids
    small.cluster()
    assert small.rows == 10 and small.num_parameters() == 10 * DIM
    torch.testing.assert_close(small(torch.arange(10)).norm(), small.codebook.norm())


def test_no_scheduled_clustering_is_an_error():
    with pytest.raises(ValueError, match="schedules no clustering"):
        build(compress_round=0)


def test_engine_compresses_on_the_last_scheduled_epoch_and_reports_the_compressed_size():
    data = load_dataset(TINY_DATASET)
    run = RunConfig(TINY_DATASET, "pq", budget=8 * 32, epochs=4, batch_size=256, early_stop=0)
    assert build_model(run, data).user.compress_round == 3  # cluster after epochs 1, 2, 3
    result = train(run, data, "cpu")
    assert result.params == 8 * 32  # the codebooks, not the full table trained first
    assert result.buffer_bytes == 2 * (60 * 4 * 4 + 8)  # codes of users and items, counters


def test_a_run_waits_for_compression_before_stopping_early():
    model = torch.nn.ModuleDict({"a": build(compress_round=2), "b": build()})
    assert awaiting_compression(model)
    model["a"].cluster()
    model["b"].cluster()
    assert awaiting_compression(model)  # a compresses on its second call
    model["a"].cluster()
    assert not awaiting_compression(model)


def test_early_stopping_neither_precedes_compression_nor_compares_with_the_full_table(
        monkeypatch):
    # Scripted validation metrics: the full table gets worse from epoch 2 (a run would stop),
    # and the compressed model (epochs 5-8) starts below the full table's best but improves.
    script = [(0.5, 0.8), (0.6, 0.7), (0.7, 0.6), (0.8, 0.5),
              (0.9, 0.4), (0.85, 0.45), (0.8, 0.5), (0.75, 0.55)]
    calls: dict[int, int] = {}

    def scripted(model, split):
        calls[id(split)] = calls.get(id(split), 0) + 1
        return script[calls[id(split)] - 1]

    monkeypatch.setattr(engine, "evaluate", scripted)
    run = RunConfig(TINY_DATASET, "pq", budget=8 * 32, epochs=8, batch_size=256,
                    cluster_until=0.5, early_stop=0.01)  # compresses after epoch 4
    result = train(run, load_dataset(TINY_DATASET), "cpu")
    assert [r.val_bce for r in result.epochs] == [bce for bce, _ in script]
    assert result.params == 8 * 32
