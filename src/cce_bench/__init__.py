"""cce-bench: benchmarks for compressed embedding tables (CCE and every competing method)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .embeddings import make_embedding, methods
from .errors import BudgetTooSmall, CceBenchError, ConfigError, DatasetError, ResultsError, UnknownName

try:
    __version__ = version("cce-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["BudgetTooSmall", "CceBenchError", "ConfigError", "DatasetError", "ResultsError",
           "UnknownName", "__version__", "make_embedding", "methods"]
