"""k-means for CCE's clustering step, batched over independent problems.

Two backends with one interface:
- "faiss": faiss.Kmeans, one problem at a time, on the GPU when the installed faiss has GPU
  support, else on the CPU. faiss is imported only here, only when clustering runs.
- "torch": Lloyd's algorithm on the points' own device, all problems of a batch in one set of
  kernels; used on GPUs without faiss-gpu and for many small problems.
"auto" picks faiss when it can run where the points are, otherwise torch.

Both start from k distinct random points ("random") or from k-means++ seeding ("kmeans++",
computed here and handed to faiss as its initial centroids). Distances to the centroids are
computed in blocks of points, so no (n, k) matrix is ever whole: 1M points x 4096 centroids
needs a 256 MB block, not 16 GB. An empty cluster restarts at a random point of its problem
(faiss instead splits a large cluster; the test suite checks the two reach objectives within a
few percent of each other).
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import UnknownName

BACKENDS = ["auto", "faiss", "torch"]
INITS = ["random", "kmeans++"]
# Largest distance block (elements) held at once: 1M points x 4096 centroids fits in a few GB.
_BLOCK_ELEMENTS = 1 << 26


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (run seed, round, chunk), stable across processes."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def kmeans(points: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0,
           backend: str = "auto", init: str = "random") -> torch.Tensor:
    """Cluster each of B problems: points (B, n, d) -> centroids (B, k, d), k <= n."""
    b, n, d = points.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k ({k}) <= number of points ({n})")
    if init not in INITS:
        raise UnknownName("k-means init", init, INITS)
    backend = resolve_backend(backend, points.device)
    if backend == "faiss":
        return _kmeans_faiss(points, k, iters, seed, init)
    return _kmeans_torch(points, k, iters, seed, init)


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


def nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid: points (B, n, d), centroids (B, k, d) -> (B, n) int64.

    Computed in blocks of points so the (n, k) distance matrix never exists whole.
    """
    b, n, _ = points.shape
    k = centroids.shape[1]
    sq_norms = (centroids * centroids).sum(-1).unsqueeze(1)  # (B, 1, k)
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


def _kmeans_torch(points: torch.Tensor, k: int, iters: int, seed: int, init: str) -> torch.Tensor:
    b, n, d = points.shape
    gen = torch.Generator(device=points.device)
    gen.manual_seed(seed)
    x = points.detach().float()
    if init == "random":
        first = torch.rand(b, n, generator=gen, device=x.device).argsort(dim=1)[:, :k]
        centroids = _take(x, first)
    else:
        centroids = _kmeanspp(x, k, gen)
    return lloyd(x, centroids, iters, gen).to(points.dtype)


def lloyd(points: torch.Tensor, centroids: torch.Tensor, iters: int,
          generator: torch.Generator) -> torch.Tensor:
    """Lloyd's iterations from given centroids: points (B, n, d), centroids (B, k, d) -> (B, k, d).

    An empty cluster restarts at a random point of its problem (no host sync to find which).
    """
    x = points.float()
    b, n, d = x.shape
    k = centroids.shape[1]
    for _ in range(iters):
        assign = nearest(x, centroids)  # (B, n)
        sums = torch.zeros(b, k, d, device=x.device).scatter_add_(
            1, assign.unsqueeze(-1).expand(-1, -1, d), x)
        counts = torch.zeros(b, k, device=x.device).scatter_add_(
            1, assign, torch.ones_like(assign, dtype=x.dtype))
        means = sums / counts.clamp(min=1).unsqueeze(-1)
        reseed = _take(x, torch.randint(0, n, (b, k), generator=generator, device=x.device))
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
