"""k-means backends: torch against faiss, initialisations, empty clusters, blocked distances,
jobs run together (kmeans_many)."""

from __future__ import annotations

import pytest
import torch

from cce_bench.embeddings import kmeans as km
from cce_bench.embeddings.kmeans import (
    KMeansJob,
    derive_seed,
    kmeans,
    kmeans_many,
    lloyd,
    nearest,
    objective,
    plan_batches,
)
from cce_bench.errors import UnknownName
from tests.conftest import requires_cuda


def blobs(b: int, n: int, d: int, centres: int, seed: int) -> torch.Tensor:
    """B problems of n points around `centres` Gaussian centres each: (B, n, d)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(b, centres, d, generator=gen) * 3
    which = torch.randint(0, centres, (b, n), generator=gen)
    return torch.gather(means, 1, which.unsqueeze(-1).expand(-1, -1, d)) + torch.randn(
        b, n, d, generator=gen)


def brute_nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return torch.cdist(points.double(), centroids.double()).argmin(-1)


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_torch_backend_reaches_the_faiss_objective(init):
    # Gaussian points, like the chunks of an embedding table: local optima differ by about 1%
    # between seeds of either backend. (On well-separated blobs with fewer centroids than blobs
    # single runs of either differ by up to 20%, which says nothing about the backends.)
    points = torch.randn(4, 3000, 4, generator=torch.Generator().manual_seed(0))  # 4 problems
    ours = objective(points, kmeans(points, 32, iters=25, seed=1, backend="torch", init=init))
    theirs = objective(points, kmeans(points, 32, iters=25, seed=1, backend="faiss", init=init))
    assert ours.shape == theirs.shape == (4,)
    assert torch.all((ours - theirs).abs() < 0.05 * theirs), (ours, theirs)


def test_lloyd_improves_on_its_start_and_kmeanspp_starts_better_than_random():
    points = blobs(2, 2000, 4, 25, seed=3)
    gen = torch.Generator().manual_seed(0)
    random_start = km._take(points, torch.rand(2, 2000, generator=gen).argsort(1)[:, :20])
    pp_start = km._kmeanspp(points, 20, gen)
    assert torch.all(objective(points, pp_start) < objective(points, random_start))
    fitted = lloyd(points, random_start, 20, seed=0)
    assert torch.all(objective(points, fitted) < 0.8 * objective(points, random_start))


def test_kmeanspp_picks_distinct_points_of_the_data():
    points = blobs(2, 500, 3, 5, seed=4)
    start = km._kmeanspp(points, 30, torch.Generator().manual_seed(0))
    for b in range(2):
        matches = (start[b][:, None, :] == points[b][None]).all(-1)  # (k, n)
        assert matches.any(1).all()  # every centroid is a data point
        assert len(torch.unique(start[b], dim=0)) == 30


def test_an_empty_cluster_restarts_at_a_data_point():
    # Two tight groups and a third centroid far from both: no point picks it, so the first
    # Lloyd step must move it onto a point, and the others onto their group means.
    # (No point at the origin, where an unguarded 0 / 1 "mean" would land.)
    points = torch.tensor([[[1.0, 1.0], [1.0, 1.2], [10.0, 1.0], [10.0, 1.2]]])
    start = torch.tensor([[[1.0, 1.1], [10.0, 1.1], [1e6, 1e6]]])
    after = lloyd(points, start, 1, seed=0)
    assert torch.equal(after[0, :2], start[0, :2])
    assert (after[0, 2] == points[0]).all(-1).any()


def test_restart_points_cover_each_problem_s_points_and_follow_the_seed():
    sizes = torch.tensor([[3], [1000]])
    keys = km._restart_keys(5, 2, 64, torch.device("cpu"))
    drawn = km._restart_points(keys, sizes, 0, 40)  # (40, 2, 64)
    assert drawn.shape == (40, 2, 64) and (drawn >= 0).all() and (drawn < sizes).all()
    assert set(drawn[:, 0].unique().tolist()) == {0, 1, 2}
    assert len(drawn[:, 1].unique()) > 880  # about 920 of 1000 points in 2,560 uniform draws
    # A block of iterations is the iterations one at a time; another seed draws other points.
    assert torch.equal(km._restart_points(keys, sizes, 7, 1)[0], drawn[7])
    other = km._restart_points(km._restart_keys(6, 2, 64, torch.device("cpu")), sizes, 0, 40)
    assert (other[:, 1] != drawn[:, 1]).float().mean() > 0.99


def test_more_clusters_than_distinct_points_stays_finite():
    points = torch.tensor([[0.0], [1.0]]).repeat(50, 1).unsqueeze(0)  # 2 distinct values
    for backend in ("torch", "faiss"):
        centroids = kmeans(points, 5, iters=10, seed=0, backend=backend)
        assert torch.isfinite(centroids).all()
        assert float(objective(points, centroids)[0]) == 0.0


@pytest.mark.parametrize("b,n,k", [(1, 1000, 7), (4, 777, 33), (2, 5, 5)])
def test_nearest_is_the_brute_force_argmin(b, n, k):
    gen = torch.Generator().manual_seed(n)
    points, centroids = torch.randn(b, n, 6, generator=gen), torch.randn(b, k, 6, generator=gen)
    assert torch.equal(nearest(points, centroids), brute_nearest(points, centroids))


def test_blocks_bound_the_distance_matrix(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    points, centroids = torch.randn(3, 1000, 4, generator=gen), torch.randn(3, 16, 4, generator=gen)
    limit = 3 * 16 * 10  # ten points per block
    monkeypatch.setattr(km, "_BLOCK_ELEMENTS", limit)
    shapes = []
    baddbmm = torch.baddbmm

    def recording(*args, **kwargs):
        out = baddbmm(*args, **kwargs)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(torch, "baddbmm", recording)
    assert torch.equal(nearest(points, centroids), brute_nearest(points, centroids))
    assert len(shapes) == 100 and all(s.numel() <= limit for s in shapes)
    # Clustering with tiny blocks gives the same centroids as with the default blocks.
    tiny = kmeans(points, 16, iters=5, seed=2, backend="torch")
    monkeypatch.setattr(km, "_BLOCK_ELEMENTS", 1 << 26)
    assert torch.equal(tiny, kmeans(points, 16, iters=5, seed=2, backend="torch"))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_same_seed_same_centroids(backend, init):
    points = blobs(2, 600, 4, 10, seed=5)
    a = kmeans(points, 8, iters=10, seed=3, backend=backend, init=init)
    assert torch.equal(a, kmeans(points, 8, iters=10, seed=3, backend=backend, init=init))
    assert a.shape == (2, 8, 4) and a.dtype == points.dtype


def test_bad_arguments_are_named():
    points = torch.randn(1, 10, 2)
    with pytest.raises(UnknownName, match="unknown k-means backend 'gpu'"):
        kmeans(points, 2, backend="gpu")
    with pytest.raises(UnknownName, match="unknown k-means init 'forgy'"):
        kmeans(points, 2, init="forgy")
    with pytest.raises(ValueError, match=r"1 <= k \(11\) <= number of points \(10\)"):
        kmeans(points, 11)


def test_auto_is_faiss_on_the_cpu():
    assert km.resolve_backend("auto", torch.device("cpu")) == "faiss"


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 1, "hash") == derive_seed(0, 1, "hash")
    assert len({derive_seed(0, r, c) for r in range(10) for c in range(10)}) == 100
    assert 0 <= derive_seed("x") < 2**31


def mixed_jobs(backend: str = "torch") -> list[KMeansJob]:
    """Jobs of different problem counts, points, centroids, seeds and inits; one has more
    centroids than distinct points, so its empty clusters restart at drawn points."""
    gen = torch.Generator().manual_seed(7)
    shapes = [(4, 60, 8), (4, 60, 4), (2, 100, 16), (3, 30, 30), (4, 32, 8), (1, 5, 1)]
    jobs = []
    for i, (b, n, k) in enumerate(shapes):
        points = torch.randn(b, n, 5, generator=gen)
        if n == 30:
            points = points[:, :3].repeat(1, 10, 1)  # 3 distinct points, 30 centroids
        jobs.append(KMeansJob(points, k, iters=12, seed=100 + i, backend=backend,
                              init="kmeans++" if i == 2 else "random"))
    return jobs


def test_jobs_run_together_get_their_centroids_alone(monkeypatch):
    batches = []
    real = km._kmeans_torch
    monkeypatch.setattr(km, "_kmeans_torch", lambda jobs: batches.append(len(jobs)) or real(jobs))
    jobs = mixed_jobs()
    together = kmeans_many(jobs)
    assert batches == [len(jobs)]  # small problems: one padded batch
    for job, centroids in zip(jobs, together):
        alone = kmeans(job.points, job.k, iters=job.iters, seed=job.seed, backend="torch",
                       init=job.init)
        assert centroids.shape == alone.shape
        # Float sums in other orders (padded shapes); measured bitwise equal on the CPU.
        assert torch.allclose(centroids, alone, atol=1e-6)
    assert torch.isfinite(together[3]).all()


def test_faiss_jobs_run_one_call_each_with_their_results_alone():
    jobs = mixed_jobs("faiss")[:3]
    for job, centroids in zip(jobs, kmeans_many(jobs)):
        assert torch.equal(centroids, kmeans(job.points, job.k, iters=job.iters, seed=job.seed,
                                             backend="faiss", init=job.init))


def test_batches_pad_only_where_it_costs_less_than_a_batch_of_launches():
    # Three cce runs a budget on ML-1m's users (6,040 ids): 4 chunks, k = rows, a sample of
    # 256 k points at most. Padding the 1024-row problems to 2048 would add 74M distances an
    # iteration, more than a batch of launches (2^25 = 34M); padding every small one to 64
    # rows adds under 2M.
    shapes = [(12, min(6040, 256 * k), k) for k in (2048, 1024, 64, 32, 2, 1)]
    assert plan_batches(shapes, 1 << 25) == [[0], [1], [2, 3, 4, 5]]
    assert plan_batches(shapes, 1 << 40) == [[0, 1, 2, 3, 4, 5]]  # launches dominate
    assert plan_batches(shapes, 0) == [[0], [1], [2], [3], [4], [5]]
    assert plan_batches(shapes[:1], 1 << 25) == [[0]]
    assert plan_batches([(4, 60, 8)] * 3, 0) == [[0], [1], [2]]


@requires_cuda
def test_torch_backend_on_cuda_reaches_the_cpu_objective():
    points = torch.randn(4, 3000, 4, generator=torch.Generator().manual_seed(0))
    cpu = objective(points, kmeans(points, 32, iters=25, seed=1, backend="torch"))
    cuda = kmeans(points.cuda(), 32, iters=25, seed=1, backend="torch")
    assert cuda.device.type == "cuda"
    assert torch.all((objective(points, cuda.cpu()) - cpu).abs() < 0.05 * cpu)
