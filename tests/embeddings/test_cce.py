"""CCE against its definition: each step of cluster() on small cases, and its purpose."""

from __future__ import annotations

import pytest
import torch

from cce_bench import make_embedding
from cce_bench.embeddings import cce as cce_module
from cce_bench.embeddings.hashing import universal_hash


def small_cce(vocab=50, rows=6, dim=4, n_chunks=2, **opts):
    return make_embedding(vocab, rows * 2 * dim, dim, "cce", n_chunks, seed=0, **opts)


def chunk_vectors(emb) -> torch.Tensor:
    c = emb.n_chunks
    return emb(torch.arange(emb.vocab)).detach().reshape(emb.vocab, c, emb.dim // c)


def test_shapes_follow_the_budget_rule():
    emb = small_cce(vocab=50, rows=6, dim=4, n_chunks=2)
    assert emb.table0.shape == emb.table1.shape == (2, 6, 2)
    assert emb.num_parameters() == 2 * 6 * 4
    assert emb.num_buffer_bytes() == 50 * 2 * 4 + emb.hash1.coefficients.numel() * 8 + 8


def test_forward_is_index_row_plus_hashed_row():
    emb = small_cce()
    ids = torch.arange(emb.vocab)
    rows1 = universal_hash(ids, emb.hash1.coefficients, emb.rows)
    for j in range(emb.n_chunks):
        expected = emb.table0[j, emb.index[:, j].long()] + emb.table1[j, rows1[:, j]]
        assert torch.allclose(chunk_vectors(emb)[:, j], expected)


def test_cluster_steps_on_a_small_case(monkeypatch):
    # Batches of 7 ids (dim 4), as on a large vocabulary.
    monkeypatch.setattr(cce_module, "_ROUND_ELEMENTS", 7 * 4)
    seen = {}
    real_kmeans = cce_module.kmeans

    def spy(points, k, **kw):
        seen["points"], seen["k"] = points.clone(), k
        return real_kmeans(points, k, **kw)

    monkeypatch.setattr(cce_module, "kmeans", spy)
    emb = small_cce(vocab=50, rows=6, points_per_centroid=4)
    before = chunk_vectors(emb)  # (a) the vectors every step must use
    old_coefficients = emb.hash1.coefficients.clone()
    reset = emb.cluster()

    # (b) k = rows, on a sample of points_per_centroid * k ids' current vectors
    assert seen["k"] == 6 and seen["points"].shape == (2, 24, 2)
    for j in range(2):
        sampled = seen["points"][j]
        closest = torch.cdist(sampled, before[:, j]).min(dim=1)
        assert (closest.values < 1e-4).all()  # each point is some id's current vector
    # (c) table 0 holds the centroids; each id's index is its nearest centroid
    for j in range(2):
        nearest = torch.cdist(before[:, j], emb.table0[j].detach()).argmin(dim=1)
        assert torch.equal(emb.index[:, j].long(), nearest)
    # (d) one fresh hash per chunk, the same for every id (not redrawn per batch)
    assert not torch.equal(emb.hash1.coefficients[0], old_coefficients[0])
    assert not torch.equal(emb.hash1.coefficients[1], old_coefficients[1])
    assert not torch.equal(emb.hash1.coefficients[0], emb.hash1.coefficients[1])
    # (e) table 1 row r = mean residual of the ids the new hash sends to r (whole vectors)
    rows1 = emb.hash1(torch.arange(emb.vocab))
    for j in range(2):
        residual = before[:, j] - emb.table0[j, emb.index[:, j].long()].detach()
        for r in range(emb.rows):
            members = rows1[:, j] == r
            expected = residual[members].mean(0) if members.any() else torch.zeros(2)
            assert torch.allclose(emb.table1[j, r], expected, atol=1e-6)
    # (f) both tables' optimizer state is to be reset
    assert reset == [emb.table0, emb.table1]
    assert int(emb.rounds) == 1


def test_unused_rows_are_zero_not_nan():
    emb = small_cce(vocab=5, rows=16, dim=4, n_chunks=2)  # more rows than ids
    emb.cluster()
    assert torch.isfinite(emb.table0).all() and torch.isfinite(emb.table1).all()
    assert (emb.table0[:, 5:] == 0).all()  # k = 5 centroids, the other rows unused
    rows1 = emb.hash1(torch.arange(5))
    for j in range(2):
        unused = torch.ones(16, dtype=torch.bool)
        unused[rows1[:, j]] = False
        assert (emb.table1[j, unused] == 0).all()


def test_residual_init_zero_and_no_optimizer_reset():
    emb = small_cce(residual_init="zero", reset_optimizer=False)
    assert emb.cluster() == []
    assert (emb.table1 == 0).all()


def test_bad_residual_init_is_refused():
    with pytest.raises(ValueError, match="residual_init must be 'mean' or 'zero'"):
        small_cce(residual_init="median")


def test_clustering_is_seeded():
    a, b = small_cce(), small_cce()
    a.cluster(), b.cluster()
    assert torch.equal(a.index, b.index) and torch.equal(a.table0, b.table0)


def _fit(emb, target, steps):
    opt = torch.optim.Adam(emb.parameters(), lr=0.05)
    ids = torch.arange(emb.vocab)
    for _ in range(steps):
        loss = ((emb(ids) - target) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _error(emb, target)


def _error(emb, target) -> float:
    with torch.no_grad():
        return ((emb(torch.arange(emb.vocab)) - target) ** 2).sum(-1).mean().item()


def planted_target(vocab=400, clusters=8, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=gen)
    labels = torch.randint(0, clusters, (vocab,), generator=gen)
    return centers, labels, gen


def test_cluster_finds_planted_clusters_in_the_current_table():
    # Plant the current table: id i's vector = center[label(i)] + a small hashed offset.
    centers, labels, gen = planted_target()
    # 16 rows per table, 1 chunk: k-means may split a cluster over two rows but, with
    # separated clusters, never puts two clusters in one row.
    emb = make_embedding(400, 2 * 8 * 16, 8, "cce", 1, seed=0)
    with torch.no_grad():
        emb.table0.zero_()
        emb.table0[0, :8] = centers
        emb.index[:, 0] = labels.to(torch.int32)
        emb.table1[0] = 0.05 * torch.randn(16, 8, generator=gen)
    current = emb(torch.arange(400)).detach()
    emb.cluster()
    after = emb(torch.arange(400)).detach()
    assert after.shape == current.shape
    # No row of table 0 mixes planted clusters.
    index = emb.index[:, 0].long()
    for row in index.unique():
        assert labels[index == row].unique().numel() == 1
    # The centroids alone reconstruct the current table up to the offsets; the residual table
    # lowers that error further.
    centroid_only = ((emb.table0[0, index] - current) ** 2).sum(-1).mean()
    residual_added = ((after - current) ** 2).sum(-1).mean()
    assert centroid_only < 0.05**2 * 8 * 2
    assert residual_added < centroid_only


def test_rounds_of_training_and_clustering_beat_training_alone():
    # 400 ids in 8 tight clusters, 16 rows per table: the additive hashed sketch cannot fit
    # them; each clustering round groups ids by their current vectors and the error falls.
    centers, labels, gen = planted_target()
    target = centers[labels] + 0.01 * torch.randn(400, 8, generator=gen)
    plain = make_embedding(400, 2 * 8 * 16, 8, "cce", 1, seed=0)
    clustered = make_embedding(400, 2 * 8 * 16, 8, "cce", 1, seed=0)
    plain_error = _fit(plain, target, 300)
    errors = []
    for _ in range(5):
        errors.append(_fit(clustered, target, 50))
        clustered.cluster()
    errors.append(_fit(clustered, target, 50))
    assert errors[-1] < errors[0]
    assert errors[-1] < 0.9 * plain_error


@pytest.mark.parametrize("method", ["cce", "cce_robe"])
def test_rounds_finished_from_one_k_means_batch_equal_cluster(method):
    import copy

    from cce_bench.embeddings.kmeans import kmeans_many

    # Tables of different rows and points (k 8, 3, 1 on 4 points a centroid), two rounds.
    tables = [make_embedding(50, rows * 2 * 8, 8, method, 2, seed=rows, kmeans_backend="torch",
                             points_per_centroid=4) for rows in (8, 3, 1)]
    alone = copy.deepcopy(tables)
    for _ in range(2):
        before = [{k: v.clone() for k, v in t.state_dict().items()} for t in tables]
        rounds = [t.cluster_round() for t in tables]
        for table, state in zip(tables, before):  # nothing changes until finish()
            assert all(torch.equal(v, table.state_dict()[k]) for k, v in state.items())
        for round_, centroids in zip(rounds, kmeans_many([r.job for r in rounds])):
            assert round_.finish(centroids) == [round_.module.table0, round_.module.table1]
        for table, other in zip(tables, alone):
            other.cluster()
            for (name, ours), theirs in zip(table.state_dict().items(),
                                            other.state_dict().values()):
                assert torch.allclose(ours.double(), theirs.double(), atol=1e-6), name
