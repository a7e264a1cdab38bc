"""k-means for CCE's clustering step, batched over independent problems.

Two backends with one interface:
- "faiss": faiss.Kmeans, one problem at a time, on the GPU when the installed faiss has GPU
  support, else on the CPU. faiss is imported only here, only when clustering runs.
- "torch": Lloyd's algorithm on the points' own device, all problems of a batch in one set of
  kernels; used on GPUs without faiss-gpu and for many small problems.
"auto" picks faiss when it can run where the points are, otherwise torch.

`kmeans_many` runs several kmeans() calls (jobs) at once, each with the result it has alone (up
to the order of float sums): the torch backend's jobs of one device, dimension and iteration
count go through Lloyd's iterations as a few padded batches (`plan_batches`), each job's initial
centroids drawn from its own generator and its empty-cluster restarts from its own seed exactly
as alone; faiss jobs run one call each (faiss clusters one problem at a time). A stack of CCE
runs clusters this way (stacking.py): one set of Lloyd kernels for all of its runs instead of
one per run.

Both start from k distinct random points ("random") or from k-means++ seeding ("kmeans++",
computed here and handed to faiss as its initial centroids). Distances to the centroids are
computed in blocks of points, so no (n, k) matrix is ever whole: 1M points x 4096 centroids
needs a 256 MB block, not 16 GB. An empty cluster restarts at a random point of its problem
(faiss instead splits a large cluster; the test suite checks the two reach objectives within a
few percent of each other). The restart points are counter-based, a hash of (the job's seed, the
problem, the iteration, the centroid) reduced modulo the problem's points (`_restart_points`):
a batch of jobs computes every job's in one set of element-wise kernels, where drawing them from
each job's generator took one launch per job per iteration, thousands in a stacked round.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UnknownName
from ..kernels import nearest_centroids
from .hashing import mix, shift_right

BACKENDS = ["auto", "faiss", "torch"]
INITS = ["random", "kmeans++"]
# Largest distance block (elements) held at once: 1M points x 4096 centroids fits in a few GB.
_BLOCK_ELEMENTS = 1 << 26
# What one more batch of Lloyd's iterations costs, in padded distance elements an iteration
# (plan_batches): a batch launches about 20 kernels an iteration whatever its size, ~100 us on
# an H200, in which the fused nearest centroid (kernels.nearest_centroids) covers ~5e7 distance
# elements (48 x 262,144 x 1,024 of 8 dimensions took 23.8 ms); the baddbmm blocks it replaced,
# ~3e7 (~10 bytes each through baddbmm and argmin at ~4 TB/s). On the CPU an element costs ~1 ns
# against ~5 us an op.
_BATCH_ELEMENTS = {"cuda": 1 << 25, "cpu": 1 << 17}
# Restart points computed at once (iterations x problems x centroids, int64): 32 MB.
_RESTART_ELEMENTS = 1 << 22


@dataclass
class KMeansJob:
    """The arguments of one kmeans() call, to run with other calls (kmeans_many)."""

    points: torch.Tensor  # (B, n, d): B problems of n points
    k: int
    iters: int = 50
    seed: int = 0
    backend: str = "auto"
    init: str = "random"


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (run seed, round, chunk), stable across processes."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def kmeans(points: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0,
           backend: str = "auto", init: str = "random") -> torch.Tensor:
    """Cluster each of B problems: points (B, n, d) -> centroids (B, k, d), k <= n."""
    return kmeans_many([KMeansJob(points, k, iters, seed, backend, init)])[0]


def kmeans_many(jobs: list[KMeansJob]) -> list[torch.Tensor]:
    """kmeans() of every job: centroids (B, k, d) each, as the job's call alone gives them up
    to the order of float sums; the torch backend's jobs in padded batches (plan_batches)."""
    out: list[torch.Tensor | None] = [None] * len(jobs)
    batched: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        _, n, d = job.points.shape
        if not 1 <= job.k <= n:
            raise ValueError(f"k-means needs 1 <= k ({job.k}) <= number of points ({n})")
        if job.init not in INITS:
            raise UnknownName("k-means init", job.init, INITS)
        if resolve_backend(job.backend, job.points.device) == "faiss":
            out[i] = _kmeans_faiss(job.points, job.k, job.iters, job.seed, job.init)
        else:  # one batch shares its points' device, dimension and iterations
            batched.setdefault((job.points.device, d, job.iters), []).append(i)
    for (device, _, _), members in batched.items():
        shapes = [(jobs[i].points.shape[0], jobs[i].points.shape[1], jobs[i].k) for i in members]
        for batch in plan_batches(shapes, batch_cost(device)):
            chosen = [members[i] for i in batch]
            for i, centroids in zip(chosen, _kmeans_torch([jobs[i] for i in chosen])):
                out[i] = centroids
    return out


def batch_cost(device: torch.device) -> int:
    """What a padded batch's launches cost on device, in distance elements (plan_batches)."""
    return _BATCH_ELEMENTS["cpu" if device.type == "cpu" else "cuda"]


def padded_centroids(centroids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sets of centroids (B_i, k_i, d) as one batch (sum B, max k, d), zero-padded, with the
    bias that keeps nearest() off the padding ((sum B, max k), inf there; None: no padding)."""
    k_max = max(c.shape[1] for c in centroids)
    padded = torch.cat([F.pad(c, (0, 0, 0, k_max - c.shape[1])) for c in centroids])
    if all(c.shape[1] == k_max for c in centroids):
        return padded, None
    device = padded.device
    bias = torch.cat([torch.where(torch.arange(k_max, device=device) < c.shape[1], 0.0,
                                  float("inf")).expand(c.shape[0], -1) for c in centroids])
    return padded, bias


def plan_batches(shapes: list[tuple[int, int, int]], batch_elements: int) -> list[list[int]]:
    """Jobs of (problems B, points n, centroids k) grouped into batches, as indices into
    shapes. A batch pads every problem to its largest n and k, so an iteration computes
    (sum of B) x max n x max k distances; grouping minimises those over all batches plus
    `batch_elements` for each batch (what its launches cost), over batches of consecutive
    jobs in order of decreasing (k, n) (dynamic programming over the split points)."""
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][2], shapes[i][1]), reverse=True)
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of the first j jobs
    split = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        problems, n_max, k_max = 0, 0, 0
        for start in range(end - 1, -1, -1):  # the last batch is order[start:end]
            b, n, k = shapes[order[start]]
            problems, n_max, k_max = problems + b, max(n_max, n), max(k_max, k)
            cost = best[start] + batch_elements + problems * n_max * k_max
            if cost < best[end]:
                best[end], split[end] = cost, start
    batches, end = [], len(order)
    while end:
        batches.append(order[split[end]:end])
        end = split[end]
    return batches[::-1]


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise UnknownName("k-means backend", backend, BACKENDS)
    if backend != "auto":
        return backend
    try:
        import faiss
    except ImportError:
        return "torch"
    if device.type == "cpu" or faiss.get_num_gpus() > 0:
        return "faiss"
    return "torch"


def nearest(points: torch.Tensor, centroids: torch.Tensor,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest centroid: points (B, n, d), centroids (B, k, d) -> (B, n) int64.

    On CUDA one Triton program keeps the distances in registers (kernels.nearest_centroids; a
    near-tie may then go to the other centroid than on the CPU); elsewhere they are computed in
    blocks of points, so the (n, k) distance matrix never exists whole. bias (B, k), if given, is
    added to every distance to a centroid (inf: that centroid is never nearest).
    """
    b, n, _ = points.shape
    k = centroids.shape[1]
    sq_norms = (centroids * centroids).sum(-1).unsqueeze(1)  # (B, 1, k)
    if bias is not None:
        sq_norms = sq_norms + bias.unsqueeze(1)
    fused = nearest_centroids(points, centroids, sq_norms.reshape(b, k))  # None off CUDA
    if fused is not None:
        return fused
    step = max(1, _BLOCK_ELEMENTS // max(1, b * k))
    out = torch.empty(b, n, dtype=torch.int64, device=points.device)
    for start in range(0, n, step):
        block = points[:, start:start + step]  # (B, s, d)
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every c.
        dist = torch.baddbmm(sq_norms, block, centroids.transpose(1, 2), alpha=-2.0)
        out[:, start:start + step] = dist.argmin(-1)
    return out


def _kmeans_faiss(points: torch.Tensor, k: int, iters: int, seed: int, init: str) -> torch.Tensor:
    import faiss

    b, n, d = points.shape
    use_gpu = points.device.type == "cuda" and faiss.get_num_gpus() > 0
    out = []
    for problem in range(b):
        x = points[problem].detach().float().cpu().contiguous()
        # The caller already sampled the points: no further subsampling, no warning for few.
        km = faiss.Kmeans(d, k, niter=iters, seed=derive_seed(seed, problem),
                          max_points_per_centroid=n, min_points_per_centroid=1,
                          verbose=False, gpu=use_gpu)
        start = None
        if init == "kmeans++":  # faiss seeds at random only; give it our k-means++ centroids
            gen = torch.Generator()
            gen.manual_seed(derive_seed(seed, problem, "kmeans++"))
            start = _kmeanspp(x.unsqueeze(0), k, gen)[0].numpy()
        km.train(x.numpy(), init_centroids=start)
        out.append(torch.from_numpy(km.centroids.copy()))
    return torch.stack(out).to(points.device, points.dtype)


def _kmeans_torch(jobs: list[KMeansJob]) -> list[torch.Tensor]:
    """Jobs of one device, dimension and iteration count: each one's centroids (B, k, d).

    Each job's generator is seeded and drawn from exactly as the job alone draws it (its
    initial centroids), and its restart points are a function of its seed (_restart_points),
    so every job sees the same numbers alone and in a batch. Padded points weigh 0 and padded
    centroids are never nearest, so each problem's iterations are its own (every op is per
    problem)."""
    starts, prepared = [], []
    for job in jobs:
        x = job.points.detach().float()
        b, n, _ = x.shape
        gen = torch.Generator(device=x.device)
        gen.manual_seed(job.seed)
        if job.init == "random":
            first = torch.rand(b, n, generator=gen, device=x.device).argsort(dim=1)[:, :job.k]
            starts.append(_take(x, first))
        else:
            starts.append(_kmeanspp(x, job.k, gen))
        prepared.append(x)
    if len(jobs) == 1 or jobs[0].iters == 0:
        return [lloyd(x, start, job.iters, job.seed).to(job.points.dtype)
                for x, start, job in zip(prepared, starts, jobs)]

    n_max = max(x.shape[1] for x in prepared)
    k_max = max(job.k for job in jobs)
    device = prepared[0].device
    points = torch.cat([F.pad(x, (0, 0, 0, n_max - x.shape[1])) for x in prepared])
    centroids, bias = padded_centroids(starts)  # bias (sum B, k_max) or None
    weight = torch.cat([(torch.arange(n_max, device=device) < x.shape[1]).float().expand(
        x.shape[0], -1) for x in prepared])  # (sum B, n_max): 0 on padded points
    # Each problem restarts among its own points, with its job's keys (padded centroids' keys
    # are never used: such a centroid is never nearest, whatever point it restarts at).
    keys = torch.cat([F.pad(_restart_keys(job.seed, x.shape[0], job.k, device),
                            (0, k_max - job.k)) for x, job in zip(prepared, jobs)])
    sizes = torch.cat([torch.full((x.shape[0], 1), x.shape[1], dtype=torch.int64,
                                  device=device) for x in prepared])
    fitted = _lloyd(points, centroids, jobs[0].iters, keys, sizes, weight, bias)
    out, row = [], 0
    for x, job in zip(prepared, jobs):
        out.append(fitted[row:row + x.shape[0], :job.k].to(job.points.dtype))
        row += x.shape[0]
    return out


def lloyd(points: torch.Tensor, centroids: torch.Tensor, iters: int, seed: int) -> torch.Tensor:
    """Lloyd's iterations from given centroids: points (B, n, d), centroids (B, k, d) -> (B, k, d).

    An empty cluster restarts at a point of its problem drawn from `seed` (_restart_points; no
    host sync to find which).
    """
    x = points.float()
    b, n, _ = x.shape
    k = centroids.shape[1]
    sizes = torch.full((b, 1), n, dtype=torch.int64, device=x.device)
    return _lloyd(x, centroids, iters, _restart_keys(seed, b, k, x.device), sizes)


def _restart_keys(seed: int, problems: int, k: int, device: torch.device) -> torch.Tensor:
    """A job's restart keys, one per (problem, centroid): (B, k) int64, distinct mixed values
    (mix is a bijection) that _restart_points advances by the iteration."""
    base = int(mix(torch.tensor(seed)))  # on the host: no copy to the device
    problem = torch.arange(problems, device=device).view(-1, 1)
    return mix((problem + base) * k + torch.arange(k, device=device))


def _restart_points(keys: torch.Tensor, sizes: torch.Tensor, first: int,
                    count: int) -> torch.Tensor:
    """The points empty centroids restart at in iterations first..first + count - 1:
    (count, B, k) int64, each in [0, its problem's size) (sizes (B, 1)); the hash of key + t."""
    steps = torch.arange(first, first + count, device=keys.device).view(-1, 1, 1)
    z = mix(keys + steps)
    return shift_right(z, 1) % sizes  # the top 63 bits: non-negative


def _lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int, keys: torch.Tensor,
           sizes: torch.Tensor, weight: torch.Tensor | None = None,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """lloyd() with restart keys (B, k) and problem sizes (B, 1) (_restart_points), and
    optionally point weights (B, n) (0: a padded point) and centroid biases (B, k) (inf:
    padded)."""
    b, _, d = x.shape
    k = centroids.shape[1]
    block = max(1, _RESTART_ELEMENTS // keys.numel())  # iterations of restarts drawn at once
    for t in range(iters):
        if t % block == 0:
            restarts = _restart_points(keys, sizes, t, min(block, iters - t))
        assign = nearest(x, centroids, bias)  # (B, n)
        sums = torch.zeros(b, k, d, device=x.device).scatter_add_(
            1, assign.unsqueeze(-1).expand(-1, -1, d), x)
        counts = torch.zeros(b, k, device=x.device).scatter_add_(
            1, assign, torch.ones_like(assign, dtype=x.dtype) if weight is None else weight)
        means = sums / counts.clamp(min=1).unsqueeze(-1)
        reseed = _take(x, restarts[t % block])
        centroids = torch.where((counts == 0).unsqueeze(-1), reseed, means)
    return centroids


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007), batched: (B, n, d) -> (B, k, d)."""
    b, n, d = x.shape
    centroids = torch.empty(b, k, d, device=x.device, dtype=x.dtype)
    pick = torch.randint(0, n, (b, 1), generator=gen, device=x.device)
    centroids[:, :1] = _take(x, pick)
    best = ((x - centroids[:, :1]) ** 2).sum(-1)  # (B, n)
    for j in range(1, k):
        # Sample proportional to squared distance; the epsilon keeps all-duplicate data valid.
        pick = torch.multinomial(best + 1e-12, 1, generator=gen)  # (B, 1)
        centroids[:, j:j + 1] = _take(x, pick)
        best = torch.minimum(best, ((x - centroids[:, j:j + 1]) ** 2).sum(-1))
    return centroids


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of each problem: x (B, n, d), idx (B, m) -> (B, m, d)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def objective(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Mean squared distance to the nearest centroid, per problem: (B,)."""
    assign = nearest(points, centroids)
    return ((points - _take(centroids, assign)) ** 2).sum(-1).mean(-1)
