"""Compressed embedding tables: one module per method, a registry, hashing and k-means.

The registry is torch-free (listing the methods loads none of them); the methods and their base
class load, with torch, when first used.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .registry import MethodInfo, get_method, method_names, methods, register

if TYPE_CHECKING:
    from torch import nn

    from .base import CompressedEmbedding


def __getattr__(name: str):
    if name == "CompressedEmbedding":
        from .base import CompressedEmbedding
        return CompressedEmbedding
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_embedding(vocab: int, num_params: int, dim: int, method: str = "cce",
                   n_chunks: int = 4, **opts) -> nn.Module:
    """An embedding of `vocab` ids to `dim` floats using at most `num_params` parameters.

    The argument order follows the authors' library (thomasahle/cce), so its README example
    works after changing the import. Raises BudgetTooSmall when the budget cannot hold the
    method's smallest configuration, UnknownName for an unknown method.
    """
    cls = get_method(method).cls
    known = _keyword_options(cls)
    for name in opts:
        if name not in known:
            raise ConfigError(f"unknown option '{name}' for method {method}; "
                              f"it takes: {', '.join(sorted(known)) or 'none'}")
    return cls(vocab, num_params, dim, n_chunks=n_chunks, **opts)


def _keyword_options(cls: type) -> set[str]:
    """Keyword options a method accepts: its own and those of CompressedEmbedding."""
    from .base import CompressedEmbedding

    names: set[str] = set()
    for klass in (cls, CompressedEmbedding):
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY
                  or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)}
    return names - {"n_chunks"}


__all__ = ["CompressedEmbedding", "MethodInfo", "get_method", "make_embedding", "method_names",
           "methods", "register"]
