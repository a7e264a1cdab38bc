"""The registry of embedding methods: the only plug-in point.

Adding a method = a module in this package whose class carries `@register(...)`, plus its
module name in `METHOD_MODULES` below. The CLI, sweeps and the contract tests read the registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from torch import nn

from ..errors import UnknownName

# Modules imported to fill the registry, in the order `cce-bench methods` lists them.
METHOD_MODULES = ["full", "hash", "hnet", "hemb", "bloom", "ce", "qr", "robe", "dhe", "tt", "ldim",
                  "cce", "cce_robe", "pq"]


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str  # "uncompressed", "hashing", "compositional", "clustering", ...
    description: str  # one line
    paper: str  # authors, venue, year (and arXiv where there is one)
    cls: type[nn.Module]


_REGISTRY: dict[str, MethodInfo] = {}
_loaded = False


def register(name: str, family: str, description: str, paper: str):
    """Class decorator: make an embedding class available under `name`."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"embedding method '{name}' is registered twice")
        _REGISTRY[name] = MethodInfo(name, family, description, paper, cls)
        cls.method_name = name
        return cls

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in METHOD_MODULES:
            importlib.import_module(f"{__package__}.{module}")
        _loaded = True


def methods() -> list[MethodInfo]:
    """Every registered method, in listing order."""
    _load()
    # Order by METHOD_MODULES, not by registration: importing a method module directly (as a
    # test does) registers it before _load() runs.
    order = {module: n for n, module in enumerate(METHOD_MODULES)}
    return sorted(_REGISTRY.values(),
                  key=lambda info: order.get(info.cls.__module__.rsplit(".", 1)[-1], len(order)))


def method_names() -> list[str]:
    return [m.name for m in methods()]


def get_method(name: str) -> MethodInfo:
    _load()
    if name not in _REGISTRY:
        raise UnknownName("method", name, method_names())
    return _REGISTRY[name]
