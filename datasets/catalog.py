"""What datasets exist: the named entries `cce-bench datasets` lists, and how each is built."""

from __future__ import annotations

from dataclasses import dataclass

from cce_bench.errors import UnknownName

from . import cache, synthetic

DEFAULT_DATASET = "syn-1500-1000000"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "synthetic", "movielens", "criteo"
    source: str
    download_bytes: int | None
    rows: int | None  # training rows where known before building
    description: str


def _synthetic_info(name: str) -> DatasetInfo:
    spec = synthetic.SyntheticSpec.parse(name)
    return DatasetInfo(name, "synthetic", "generated (seeded, no download)", None,
                       spec.interactions,
                       f"GMF truth model: {spec.vocab} users x {spec.vocab} items, latent dim 8")


# Listed even before they are built; any other syn-<V>-<N> name works as well.
SYNTHETIC_LISTED = [DEFAULT_DATASET, "syn-10000-10000000"]


def catalog() -> list[DatasetInfo]:
    return [_synthetic_info(name) for name in SYNTHETIC_LISTED]


def info(name: str) -> DatasetInfo:
    for entry in catalog():
        if entry.name == name:
            return entry
    if synthetic.NAME_PATTERN.match(name):
        return _synthetic_info(name)
    raise UnknownName("dataset", name, [d.name for d in catalog()] + ["syn-<vocab>-<interactions>"])


def status(name: str) -> str:
    """missing | ready."""
    info(name)
    spec = synthetic.SyntheticSpec.parse(name)
    folder = cache.entry_dir(name, synthetic.VERSION, {"seed": spec.seed})
    return "ready" if cache.is_ready(folder) else "missing"
