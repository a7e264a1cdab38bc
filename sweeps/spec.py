"""A sweep: the grid of runs over datasets x methods x budgets x n_chunks x seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cce_bench.config import RunConfig
from cce_bench.datasets import DEFAULT_DATASET, info
from cce_bench.embeddings import get_method, method_names
from cce_bench.errors import ConfigError

# Params per dimension; small enough that the default sweep takes well under 2 minutes on a CPU.
DEFAULT_BUDGETS = [16, 64, 256]


@dataclass
class SweepSpec:
    name: str = "default"
    datasets: list[str] = field(default_factory=lambda: [DEFAULT_DATASET])
    model: str = "gmf"
    methods: list[str] = field(default_factory=lambda: ["cce"])
    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))  # ppd
    n_chunks: list[int] = field(default_factory=lambda: [4])
    seeds: list[int] = field(default_factory=lambda: [0])
    dim: int = 32
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 1e-3
    cluster_until: float = 0.75
    early_stop: float = 0.01
    kmeans: str = "auto"
    device: str = "auto"
    out: Path = Path("results")

    def __post_init__(self):
        if self.methods == ["all"]:
            self.methods = method_names()
        for field_name in ("datasets", "methods", "budgets", "n_chunks", "seeds"):
            if not getattr(self, field_name):
                raise ConfigError(f"sweep field '{field_name}' is empty")
        for method in self.methods:
            get_method(method)  # unknown names fail here, listing the known ones
        for dataset in self.datasets:
            info(dataset)
        if any(b <= 0 for b in self.budgets):
            raise ConfigError(f"budgets (params per dimension) must be positive: {self.budgets}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"sweep name '{self.name}' must be non-empty and contain no '/'")
        self.out = Path(self.out)

    @property
    def results_path(self) -> Path:
        return self.out / f"{self.name}.csv"

    def expand(self) -> list[RunConfig]:
        """Every run of the grid, in a stable order. `full` ignores budget and n_chunks, so it
        gets one run per dataset and seed (budget 0, the first n_chunks)."""
        runs: list[RunConfig] = []
        for dataset in self.datasets:
            for method in self.methods:
                uncompressed = get_method(method).family == "uncompressed"
                budgets = [0] if uncompressed else self.budgets
                chunks = self.n_chunks[:1] if uncompressed else self.n_chunks
                for ppd in budgets:
                    for n_chunks in chunks:
                        for seed in self.seeds:
                            runs.append(RunConfig(
                                dataset=dataset, method=method, budget=ppd * self.dim,
                                model=self.model, dim=self.dim, n_chunks=n_chunks, seed=seed,
                                epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                cluster_until=self.cluster_until, early_stop=self.early_stop,
                                kmeans=self.kmeans))
        return runs
