"""The registry of embedding methods: the only plug-in point.

Adding a method = a module of this package named after it (`embeddings/<name>.py`) whose class
carries `@register(name)`, plus its entry in `METHODS` below: name, family, what it computes and
its paper. The CLI, sweeps and the contract tests read the registry.

This module does not import torch: `METHODS` is all that `cce-bench methods` and the help
screens show, and a method's module (with torch) loads only when its class is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UnknownName

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str  # "uncompressed", "hashing", "compositional", "clustering", ...
    description: str  # one line
    paper: str  # authors, venue, year (and arXiv where there is one)

    @property
    def cls(self) -> type[nn.Module]:
        """The class, importing its module (and torch) on first use."""
        if self.name not in _CLASSES:
            importlib.import_module(f"{__package__}.{self.name}")
        if self.name not in _CLASSES:
            raise RuntimeError(f"{__package__}.{self.name} has no class registered as "
                               f"'{self.name}'")
        return _CLASSES[self.name]


# In the order `cce-bench methods` lists them.
METHODS = [
    MethodInfo("full", "uncompressed",
               "plain vocab x dim table; the budget is ignored",
               "baseline (torch.nn.Embedding)"),
    MethodInfo("hash", "hashing",
               "one table of P/d rows, each id mapped to a row by one hash",
               "Weinberger et al., ICML 2009 (arXiv:0902.2206)"),
    MethodInfo("hnet", "hashing",
               "every coordinate one hashed weight of a flat array of P; signs optional",
               "Chen et al., ICML 2015 (arXiv:1504.04788)"),
    MethodInfo("hemb", "hashing",
               "n_chunks hashed vectors of a shared pool mixed by hashed importance weights",
               "Svenstrup et al., NeurIPS 2017 (arXiv:1709.03933)"),
    MethodInfo("bloom", "hashing",
               "sum of n_chunks hashed rows of one table of P/d rows",
               "Serrà & Karatzoglou, RecSys 2017 (arXiv:1706.03993)"),
    MethodInfo("ce", "compositional",
               "n_chunks hashed tables of P/d rows, concatenated",
               "Shi et al., KDD 2020 (arXiv:1909.02107)"),
    MethodInfo("qr", "compositional",
               "quotient and remainder tables combined by product (or sum, concat)",
               "Shi et al., KDD 2020 (arXiv:1909.02107)"),
    MethodInfo("robe", "hashing",
               "one circular array of P weights; each chunk a window at a hashed offset",
               "Desai et al., MLSys 2022 (arXiv:2108.02191)"),
    MethodInfo("dhe", "neural",
               "k dense hash features per id decoded by an MLP, largest MLP that fits",
               "Kang et al., KDD 2021 (arXiv:2010.10784)"),
    MethodInfo("tt", "tensor-train",
               "the table as a tensor train of n_chunks cores, largest rank that fits",
               "Yin et al., MLSys 2021 (arXiv:2101.11714)"),
    MethodInfo("ldim", "low-rank",
               "vocab x r table times a shared r x d projection, largest r that fits",
               "low-rank baseline (Tsang & Ahle, NeurIPS 2023, arXiv:2210.05974)"),
    MethodInfo("cce", "clustering",
               "two hashed tables per chunk, re-clustered with k-means while training",
               "Tsang & Ahle, NeurIPS 2023 (arXiv:2210.05974)"),
    MethodInfo("cce_robe", "clustering",
               "cce whose two tables are per-chunk ROBE circular arrays",
               "Tsang & Ahle, NeurIPS 2023 (arXiv:2210.05974); Desai et al., MLSys 2022"),
    MethodInfo("pq", "post-training",
               "full table trained, then product-quantized to P/d codewords per chunk with "
               "k-means and fine-tuned",
               "Jégou et al., TPAMI 2011; reference in Tsang & Ahle, NeurIPS 2023 "
               "(arXiv:2210.05974)"),
]

_BY_NAME: dict[str, MethodInfo] = {}
for _info in METHODS:
    if _info.name in _BY_NAME:
        raise RuntimeError(f"embedding method '{_info.name}' is listed twice in METHODS")
    _BY_NAME[_info.name] = _info
_CLASSES: dict[str, type] = {}


def register(name: str):
    """Class decorator: the class of the method listed in METHODS as `name`."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name not in _BY_NAME:
            raise RuntimeError(f"embedding method '{name}' is not listed in "
                               f"{__name__}.METHODS; add its entry there")
        if name in _CLASSES:
            raise RuntimeError(f"embedding method '{name}' is registered twice")
        _CLASSES[name] = cls
        cls.method_name = name
        return cls

    return wrap


def methods() -> list[MethodInfo]:
    """Every method, in listing order (no method module is imported)."""
    return list(METHODS)


def method_names() -> list[str]:
    return [m.name for m in METHODS]


def get_method(name: str) -> MethodInfo:
    if name not in _BY_NAME:
        raise UnknownName("method", name, method_names())
    return _BY_NAME[name]
