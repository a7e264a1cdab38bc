"""cce-bench: benchmarks for compressed embedding tables (CCE and every competing method)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import BudgetTooSmall, CceBenchError, ConfigError, DatasetError, ResultsError, UnknownName


def __getattr__(name: str):
    # The embeddings import torch: load them when first used, so `import cce_bench` (and the
    # CLI's start) stays light.
    if name in ("make_embedding", "methods"):
        from . import embeddings
        return getattr(embeddings, name)
    if name == "cluster_all":
        from .engine import cluster_all
        return cluster_all
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

try:
    __version__ = version("cce-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["BudgetTooSmall", "CceBenchError", "ConfigError", "DatasetError", "ResultsError",
           "UnknownName", "__version__", "cluster_all", "make_embedding", "methods"]
