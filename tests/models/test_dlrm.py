"""DLRM: the dot interaction, shapes, the per-table budget cap, and short runs on Criteo-shaped
synthetic data through the one engine."""

from __future__ import annotations

import math

import pytest
import torch

from cce_bench.config import RunConfig
from cce_bench.data import CriteoData
from cce_bench.datasets import load_criteo
from cce_bench.datasets.catalog import CRITEO_KAGGLE_CARDINALITIES
from cce_bench.engine import train, train_many
from cce_bench.errors import ConfigError
from cce_bench.models import DLRM, build_model, model_size
from cce_bench.models.dlrm import check_mlps

from tests.conftest import requires_cuda

TINY_CRITEO = "criteo-synthetic-6000-cap300"


@pytest.fixture(scope="module")
def tiny_criteo():
    return load_criteo(TINY_CRITEO)


def dlrm_run(method: str, budget: int, **fields) -> RunConfig:
    settings = dict(model="dlrm", dim=8, n_chunks=4, epochs=2, batch_size=64, lr=0.1,
                    weight_decay=0.0, optimizer="sgd", bottom_mlp="13-32-8", top_mlp="32-1",
                    early_stop=0)
    return RunConfig(TINY_CRITEO, method, budget, **(settings | fields))


def test_interaction_is_every_pair_once_without_the_diagonal():
    torch.manual_seed(0)
    vocabs = [5, 7, 3]
    model = DLRM(13, vocabs, 4, "13-8-4", "6-1",
                 lambda vocab: torch.nn.Embedding(vocab, 4))
    dense, ids = torch.randn(6, 13), torch.stack([torch.randint(0, v, (6,)) for v in vocabs], 1)
    z0 = model.bottom(dense)
    vectors = [z0] + [table(ids[:, t]) for t, table in enumerate(model.tables)]
    pairs = torch.stack([(vectors[a] * vectors[b]).sum(-1)
                         for a in range(len(vectors)) for b in range(a + 1, len(vectors))], 1)
    assert pairs.shape == (6, 6)  # 4 vectors: 4 x 3 / 2 pairs
    expected = model.top(torch.cat([z0, pairs], 1)).squeeze(-1)
    torch.testing.assert_close(model(dense, ids.int()), expected)
    assert model(dense, ids).shape == (6,)
    assert model.top[0].in_features == 4 + 6


def test_mlps_must_chain():
    assert check_mlps("13-512-256-64-16", "512-256-1", 13, 16) == ([13, 512, 256, 64, 16],
                                                                  [512, 256, 1])
    with pytest.raises(ConfigError, match="bottom_mlp '13-64-8' must run from the 13 dense "
                                          "features to the embedding dim 16"):
        check_mlps("13-64-8", "512-1", 13, 16)
    with pytest.raises(ConfigError, match="top_mlp '512-2' must end in one logit"):
        check_mlps("13-16", "512-2", 13, 16)
    with pytest.raises(ConfigError, match="bottom_mlp '' is not a list of layer widths"):
        check_mlps("", "512-1", 13, 16)


def kaggle_shaped(vocabs: list[int]) -> CriteoData:
    """A CriteoData with Kaggle's cardinalities and no rows: enough to build the model."""
    import numpy as np

    empty = np.zeros((0, 13), np.float32), np.zeros((0, 26), np.int32), np.zeros(0, np.uint8)
    return CriteoData("criteo-kaggle", *empty, {"train": (0, 0), "val": (0, 0), "test": (0, 0)},
                      vocabs)


@pytest.mark.parametrize("method", ["hash", "cce", "pq"])
def test_the_cap_over_kaggles_cardinalities(method):
    vocabs, dim, cap = list(CRITEO_KAGGLE_CARDINALITIES), 16, 16 * 1000
    run = RunConfig("criteo-kaggle", method, cap, model="dlrm", dim=dim,
                    bottom_mlp="13-16", top_mlp="16-1", optimizer="sgd", lr=0.1)
    model = build_model(run, kaggle_shaped(vocabs))
    full = [v for v in vocabs if v * dim <= cap]
    assert sorted(full) == [3, 4, 10, 15, 18, 24, 27, 105, 305, 583, 633]
    # The tables that fit stay full, concatenated into one; the rest get the method at the cap.
    assert model.full.vocabs == [v for v in vocabs if v * dim <= cap]
    assert model.full.table.shape == (sum(full), dim)
    # The rest, one method, batched into one module.
    members = model.hashed.members
    assert [type(t).method_name for t in members] == [method] * (26 - len(full))
    assert [t.vocab for t in members] == [v for v in vocabs if v * dim > cap]
    # Each compressed table at the cap, as the method's budget rule says; pq holds the full
    # table until it compresses (and then cap // dim codewords per chunk), batched as one.
    def member_size(vocab):  # hash: one function (4 int64); cce: index, 4 functions, rounds
        return {"hash": (cap // dim * dim, 32),
                "cce": (2 * (cap // (2 * dim)) * dim, vocab * 4 * 4 + 4 * 32 + 8),
                "pq": (vocab * dim, 8)}[method]  # pq: its empty codes and its round counter
    expected = [(v * dim, 0) if v * dim <= cap else member_size(v) for v in vocabs]
    assert model.table_sizes() == expected
    largest, tables, buffers, total = model_size(model)
    assert largest == max(p for p, _ in expected)
    assert largest <= cap or method == "pq"
    assert tables == sum(p for p, _ in expected)
    assert buffers == sum(b for _, b in expected)
    mlp = sum(p.numel() for name, p in model.named_parameters()
              if not name.startswith(("tables.", "full.", "hashed.")))
    assert total == 4 * (tables + mlp) + buffers
    if method == "pq":
        assert model.hashed.table.shape == (sum(t.vocab for t in members), dim)
        assert model.hashed.codebook.numel() == 0 and not model.hashed.compressed
    if method != "hash":
        return  # the rest does not depend on the method: once is enough (10 s, 4.4 GB)
    del model, members  # before the 2.2 GB of full tables below
    # The full method ignores the cap: every table whole.
    whole = build_model(RunConfig("criteo-kaggle", "full", 0, model="dlrm", dim=dim,
                                  bottom_mlp="13-16", top_mlp="16-1"), kaggle_shaped(vocabs))
    assert model_size(whole)[1] == sum(vocabs) * dim == 33_762_577 * 16


def test_concatenated_full_tables_equal_separate_tables():
    torch.manual_seed(3)
    vocabs = [5, 9, 4]
    from cce_bench.embeddings import make_embedding

    model = DLRM(13, vocabs, 4, "13-8-4", "6-1",
                 lambda vocab: make_embedding(vocab, vocab * 4, 4, "full", 1))
    assert model.full is not None and len(model.tables) == 0
    separate = [model.full.table[o:o + v] for o, v in zip([0, 5, 14], vocabs)]
    ids = torch.stack([torch.randint(0, v, (7,)) for v in vocabs], 1)
    got = model.full(ids)
    for t in range(3):
        torch.testing.assert_close(got[:, t], separate[t][ids[:, t]])


@pytest.mark.parametrize("method", ["hash", "ce", "cce", "dhe", "pq"])
def test_batched_tables_train_as_separate_tables(tiny_criteo, method):
    """The same run with its compressed tables batched into one module and as 26 modules:
    the same numbers at every evaluation point, clustering included (pq: before and after it
    compresses, at the second of two cluster() calls of its 81 steps)."""
    from cce_bench.engine import (awaiting_compression, cluster_all, evaluate,
                                  fuse_sparse_updates, make_optimizer, make_stepper)
    from cce_bench.models.build import build_model

    run = dlrm_run(method, 8 * 20, epochs=1, eval_every=30, cluster_every=30,
                   cluster_until=0.8 if method == "pq" else 0.5)
    results, counts = [], []

    def sizes(model):
        return sum(p.numel() for p in model.parameters()), model.table_sizes()

    for batch in (True, False):
        torch.manual_seed(0)
        model = build_model(run, tiny_criteo, batch_tables=batch)
        assert (model.hashed is not None) == batch
        counts.append([sizes(model)])
        fuse_sparse_updates(model, run)
        optimizer = make_optimizer(model, run, torch.device("cpu"))
        train_split = tiny_criteo.tensors("train")
        epoch = make_stepper("static", model, optimizer, train_split, 64, torch.device("cpu"))
        epoch.prepare(torch.Generator().manual_seed(1))
        trace = []
        for step in range(1, epoch.steps + 1):
            epoch.step()
            if step % 30 == 0 or step == epoch.steps:
                if step % 30 == 0:
                    cluster_all(model, optimizer)
                trace.append((*evaluate(model, tiny_criteo.tensors("val")),
                              awaiting_compression(model)))
                counts[-1].append(sizes(model))
        results.append(trace)
    batched, separate = results
    assert counts[0] == counts[1]  # the same parameters, only laid out differently
    assert len(batched) >= 3
    if method == "pq":  # one point before compression, two after; the tables shrank
        assert [awaiting for *_, awaiting in batched] == [True, False, False]
        assert counts[0][-1][0] < counts[0][0][0]
    for (b_bce, b_auc, b_wait), (s_bce, s_auc, s_wait) in zip(batched, separate):
        assert b_bce == pytest.approx(s_bce, abs=1e-6) and b_auc == pytest.approx(s_auc, abs=1e-6)
        assert b_wait == s_wait


def test_gmf_and_dlrm_refuse_each_others_data(tiny_criteo):
    with pytest.raises(ConfigError, match="is a Criteo dataset; GMF needs an interaction"):
        build_model(RunConfig(TINY_CRITEO, "hash", 256), tiny_criteo)


def test_a_short_run_learns_and_records_every_evaluation_point(tiny_criteo):
    steps = math.ceil(tiny_criteo.split_sizes["train"] / 64)
    run = dlrm_run("cce", 8 * 20, eval_every=30, cluster_every=30, cluster_until=0.3)
    told = []
    result = train(run, tiny_criteo, "cpu", on_cluster=lambda run, epoch, step: told.append(step))
    assert result.status == "ok"
    points = [30 * k for k in range(1, 2 * steps // 30 + 1) if 30 * k not in (steps, 2 * steps)]
    assert sorted([r.step for r in result.epochs]) == sorted(points + [steps, 2 * steps])
    assert [r.step for r in result.epochs] == sorted(r.step for r in result.epochs)
    # The epoch column is the epoch each point falls in; epoch ends close their epoch.
    assert all(r.epoch == (1 if r.step <= steps else 2) for r in result.epochs)
    # Clustering every 30 steps while step <= 0.3 of all steps, never at the very end.
    clustered = [r.step for r in result.epochs if r.cluster_s > 0]
    assert clustered == [s for s in (30, 60, 90) if s <= 0.3 * 2 * steps]
    assert told == clustered  # the sweep's progress is told before each round
    told.clear()
    train(dlrm_run("hash", 8 * 20, epochs=1, eval_every=30, cluster_every=30), tiny_criteo, "cpu",
          on_cluster=lambda *args: told.append(args))
    assert told == []  # batched hash tables have nothing to cluster
    assert all(r.test_bce is not None and r.test_auc is not None for r in result.epochs)
    assert max(r.val_auc for r in result.epochs) > 0.6
    assert result.epochs[-1].train_bce < result.epochs[0].train_bce


def test_cluster_rounds_count_the_step_schedule():
    run = dlrm_run("pq", 160, cluster_every=50, cluster_until=0.5, epochs=2)
    # 2 epochs of 120 steps: clusters at 50, 100 (<= 120), never after the last step.
    assert run.cluster_rounds(120) == 2
    assert dlrm_run("pq", 160, cluster_every=0, epochs=3).cluster_rounds(10) == 2


def test_bf16_runs_the_dense_part_in_bf16_and_keeps_tables_fp32(tiny_criteo):
    torch.manual_seed(0)
    exact = build_model(dlrm_run("hash", 160), tiny_criteo)
    torch.manual_seed(0)
    bf16 = build_model(dlrm_run("hash", 160, precision="bf16"), tiny_criteo)
    dense = torch.randn(32, 13)
    ids = torch.stack([torch.randint(0, v, (32,)) for v in tiny_criteo.vocab_sizes], 1)
    out = bf16(dense, ids)
    assert out.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: close to the fp32 logits, not equal to them.
    torch.testing.assert_close(out, exact(dense, ids), atol=0.05, rtol=0.05)
    assert not torch.equal(out, exact(dense, ids))
    out.sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in bf16.parameters())


def test_tf32_is_off_while_a_run_clusters(tiny_criteo, monkeypatch):
    from cce_bench.embeddings.cce import CCEmbedding

    seen = []
    original = CCEmbedding.cluster

    def spy(self):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return original(self)

    monkeypatch.setattr(CCEmbedding, "cluster", spy)
    train(dlrm_run("cce", 160, epochs=1, cluster_every=30, cluster_until=0.5, precision="tf32"),
          tiny_criteo, "cpu")
    assert seen and not any(seen)  # k-means distances exact
    assert not torch.backends.cuda.matmul.allow_tf32


def test_bf16_leaves_the_tables_outside_autocast(tiny_criteo):
    torch.manual_seed(0)
    model = build_model(dlrm_run("dhe", 160, precision="bf16"), tiny_criteo)
    dtypes = []
    model.hashed.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    ids = torch.stack([torch.randint(0, v, (8,)) for v in tiny_criteo.vocab_sizes], 1)
    model(torch.randn(8, 13), ids)
    assert dtypes == [torch.float32]  # dhe's MLP in fp32; only DLRM's own MLPs go bf16


def test_tf32_is_switched_on_for_the_run_and_back_off_after(monkeypatch):
    from cce_bench.models.dlrm import dense_precision

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with dense_precision("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32
    with dense_precision("fp32"):
        assert not torch.backends.cuda.matmul.allow_tf32


def test_precision_is_checked_and_kept_out_of_old_run_ids():
    with pytest.raises(ConfigError, match="precision 'fp16' is not one of fp32, tf32, bf16"):
        dlrm_run("hash", 160, precision="fp16")
    with pytest.raises(ConfigError, match="precision 'bf16' is for DLRM's MLPs; GMF trains in "
                       "fp32, or tf32"):
        RunConfig("syn-60-2400", "hash", 256, precision="bf16")
    gmf = RunConfig("syn-60-2400", "dhe", 256, precision="tf32")  # its tables' products
    assert gmf.run_id != RunConfig("syn-60-2400", "dhe", 256).run_id
    assert dlrm_run("hash", 160).run_id == dlrm_run("hash", 160, precision="fp32").run_id
    assert dlrm_run("hash", 160).run_id != dlrm_run("hash", 160, precision="tf32").run_id


def test_runs_of_different_precision_never_share_a_lockstep_group():
    from cce_bench.sweeps.work import group_runs

    runs = [dlrm_run("hash", 160, seed=0), dlrm_run("hash", 160, seed=1),
            dlrm_run("hash", 160, seed=0, precision="bf16")]
    assert [len(g) for g in group_runs(runs, group_size=8)] == [2, 1]
    with pytest.raises(ConfigError, match="same dataset, model, batch size and precision"):
        train_many(runs, None, "cpu")


@requires_cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_lower_precision_trains_in_a_cuda_graph_close_to_fp32(tiny_criteo, precision):
    exact = train(dlrm_run("cce", 160, epochs=1), tiny_criteo, "cuda")
    low = train(dlrm_run("cce", 160, epochs=1, precision=precision), tiny_criteo, "cuda")
    assert low.status == exact.status == "ok"
    assert low.epochs[-1].val_bce == pytest.approx(exact.epochs[-1].val_bce, abs=0.02)
    assert not torch.backends.cuda.matmul.allow_tf32  # put back after the run


def test_wide_dhe_tables_batched_give_each_tables_values_and_gradients():
    # Width 261 (padded to 264 inside run_mlp) over three vocabularies of one architecture.
    from cce_bench import make_embedding
    from cce_bench.embeddings.dhe import mlp_params
    from cce_bench.models.tables import DheTables

    tables = [make_embedding(v, mlp_params(261, 261, 2, 16), 16, "dhe", seed=s)
              for s, v in enumerate((50, 80, 120))]
    ids = torch.stack([torch.randint(0, v, (30,)) for v in (50, 80, 120)], 1)  # (B, T)
    weights = torch.randn(30, 3, 16)
    expected = torch.stack([t(ids[:, i]) for i, t in enumerate(tables)], 1)
    grads = [torch.autograd.grad((expected[:, i] * weights[:, i]).sum(), list(t.parameters()),
                                 retain_graph=True) for i, t in enumerate(tables)]
    batch = DheTables(tables)
    got = batch(ids)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-6)
    (got * weights).sum().backward()
    layers = len(batch.weights)  # a member's parameters: its weights, then its biases
    for k in range(layers):
        for i in range(3):
            torch.testing.assert_close(batch.weights[k].grad[i], grads[i][k], rtol=1e-4,
                                       atol=1e-6)
            torch.testing.assert_close(batch.biases[k].grad[i, 0], grads[i][layers + k],
                                       rtol=1e-4, atol=1e-6)
