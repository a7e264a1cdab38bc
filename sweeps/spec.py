"""A sweep: the grid of runs over datasets x methods x budgets x n_chunks x seeds.

`SweepSpec` is the one typed form of a sweep, whether it came from a TOML file, from flags, or
from both (see specfile.py). Every field takes the typed value or the forms a file or a flag
writes, normalised here once:

- list fields (datasets, methods, budgets, n_chunks) take a list, one value, or a string of
  comma-separated items; a number field's item may be a range "lo:hi", every power of two from
  lo to hi (both powers of two): "2:4096" is 2, 4, 8, ..., 4096.
- budgets are parameters per dimension (ppd; a table gets ppd x dim parameters) unless
  budget_unit = "params", where they are parameters per table.
- methods = "all" is every registered method; seeds = N is seeds 0..N-1, a list names them.
- training settings left unset take the model's defaults (MODEL_DEFAULTS): the authors' GMF
  settings, or DLRM's own Criteo Kaggle settings.

A bad value raises ConfigError naming the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from cce_bench.config import CHOICES, MODELS, RunConfig, choice_problem
from cce_bench.datasets import CRITEO_KINDS, DEFAULT_DATASET, info
from cce_bench.embeddings import get_method, method_names
from cce_bench.errors import CceBenchError, ConfigError

# Params per dimension; small enough that the default sweep takes well under 2 minutes on a CPU.
DEFAULT_BUDGETS = [16, 64, 256]
BUDGET_UNITS = ("ppd", "params")
KMEANS_BACKENDS = ("auto", "faiss", "torch")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # cuda: every visible GPU; cuda:N: that one
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

# Training settings a spec may leave unset, per model.
MODEL_DEFAULTS = {
    # The authors' GMF scripts: AdamW at torch's defaults but lr 1e-3, batch 4096.
    "gmf": {"dim": 32, "batch_size": 4096, "lr": 1e-3, "weight_decay": 0.01,
            "optimizer": "adamw", "eval_every": 0, "cluster_every": 0, "cluster_until": 0.75,
            "bottom_mlp": "", "top_mlp": "", "precision": "fp32", "shuffle": "rows"},
    # DLRM's bench/dlrm_s_criteo_kaggle.sh: --arch-sparse-feature-size=16
    # --arch-mlp-bot="13-512-256-64-16" --arch-mlp-top="512-256-1" --mini-batch-size=128
    # --learning-rate=0.1 (plain SGD, no schedule, no weight decay). The paper evaluates every
    # 50,000 batches ("about one sixth of an epoch" of Kaggle's 39.3M training rows at 128).
    # CCE clusters on the same cadence through the first half epoch of ten (cluster_until is a
    # fraction of all steps): DLRM on Kaggle reaches its best validation BCE within the first
    # epochs, so clustering must be done early to leave steps to fine-tune (paper/criteo-kaggle).
    # Each epoch draws one permutation of all rows, as every run did before `shuffle` existed;
    # "blocks" (order.py) shuffles blocks of 2^20 rows and the rows within each, so Terabyte
    # streams from the cache with sequential reads (paper/criteo-terabyte sets it).
    "dlrm": {"dim": 16, "batch_size": 128, "lr": 0.1, "weight_decay": 0.0, "optimizer": "sgd",
             "eval_every": 50_000, "cluster_every": 50_000, "cluster_until": 0.05,
             "bottom_mlp": "13-512-256-64-16", "top_mlp": "512-256-1", "precision": "fp32",
             "shuffle": "rows"},
}


@dataclass
class SweepSpec:
    name: str = "default"  # rows go to RESULTS/NAME.csv
    datasets: list[str] = field(default_factory=lambda: [DEFAULT_DATASET])
    model: str = "gmf"
    methods: list[str] = field(default_factory=lambda: ["cce"])
    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))
    budget_unit: str = "ppd"  # "ppd": params per dimension (the paper's unit); "params": per table
    n_chunks: list[int] = field(default_factory=lambda: [4])
    seeds: list[int] = field(default_factory=lambda: [0])
    # None: the model's default (MODEL_DEFAULTS).
    dim: int | None = None
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    eval_every: int | None = None  # steps; 0: after each epoch only
    cluster_every: int | None = None  # steps; 0: cluster after epochs
    bottom_mlp: str | None = None  # DLRM only
    top_mlp: str | None = None  # DLRM only
    precision: str | None = None  # matrix products: fp32, tf32 (GMF and DLRM) or bf16 (DLRM)
    shuffle: str | None = None  # the training rows' order: rows, or blocks (DLRM only)
    cluster_until: float | None = None
    early_stop: float = 0.01
    kmeans: str = "auto"
    device: str = "auto"
    results: Path = Path("results")  # the results folder

    def __post_init__(self):
        self.name = _text(self, "name")
        if not _NAME.match(self.name):
            raise ConfigError(f"field 'name': '{self.name}' must be a file name (letters, digits, "
                              ". _ + -), as rows go to RESULTS/NAME.csv")
        self.datasets = _strings(self, "datasets")
        for dataset in self.datasets:
            _check_name(dataset, "datasets", info)
        self.model = _text(self, "model")
        if self.model not in MODELS:
            raise ConfigError(f"field 'model': unknown model '{self.model}'; choose from: "
                              f"{', '.join(MODELS)}")
        for dataset in self.datasets:
            _check_model_data(self.model, dataset)
        for name, default in MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        self.methods = _strings(self, "methods")
        if "all" in self.methods:
            self.methods = _unique([m for name in self.methods
                                    for m in (method_names() if name == "all" else [name])])
        for method in self.methods:
            _check_name(method, "methods", get_method)
        self.budget_unit = _text(self, "budget_unit")
        if self.budget_unit not in BUDGET_UNITS:
            raise ConfigError(f"field 'budget_unit': '{self.budget_unit}' is not one of "
                              f"{', '.join(BUDGET_UNITS)}")
        self.budgets = _numbers(self, "budgets")
        self.n_chunks = _numbers(self, "n_chunks")
        self.seeds = _seeds(self.seeds)
        for name in ("dim", "epochs", "batch_size"):
            setattr(self, name, _integer(self, name, minimum=1))
        for name in ("eval_every", "cluster_every"):
            setattr(self, name, _integer(self, name, minimum=0))
        for name in CHOICES:
            setattr(self, name, _text(self, name))
            problem = choice_problem(name, getattr(self, name), self.model)
            if problem:
                raise ConfigError(f"field '{name}': {problem}")
        self._check_mlps()
        for n in self.n_chunks:
            if self.dim % n:
                raise ConfigError(f"field 'n_chunks': {n} does not divide dim {self.dim}; "
                                  "use divisors of dim, e.g. '1:16' for dim 32")
        for name in ("lr", "weight_decay", "cluster_until", "early_stop"):
            setattr(self, name, _real(self, name))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"field 'lr': must be a positive number, not {self.lr}")
        if not math.isfinite(self.weight_decay):
            raise ConfigError(f"field 'weight_decay': must be a number >= 0, not "
                              f"{self.weight_decay}")
        if self.weight_decay < 0 or self.early_stop < 0:
            bad = "weight_decay" if self.weight_decay < 0 else "early_stop"
            raise ConfigError(f"field '{bad}': must be >= 0, not {getattr(self, bad)}")
        if not 0 <= self.cluster_until <= 1:
            raise ConfigError(f"field 'cluster_until': must be in [0, 1], not {self.cluster_until}")
        self.kmeans = _text(self, "kmeans")
        if self.kmeans not in KMEANS_BACKENDS:
            raise ConfigError(f"field 'kmeans': '{self.kmeans}' is not one of "
                              f"{', '.join(KMEANS_BACKENDS)}")
        self.device = _text(self, "device")
        if not _DEVICE.match(self.device):
            raise ConfigError(f"field 'device': '{self.device}' is not auto, cpu, cuda or cuda:N")
        if not isinstance(self.results, (str, Path)) or not str(self.results):
            raise ConfigError(f"field 'results': expected a folder path, got {self.results!r} "
                              "(the current folder is '.')")
        self.results = Path(self.results)

    def _check_mlps(self) -> None:
        for name in ("bottom_mlp", "top_mlp"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"field '{name}': expected layer widths such as "
                                  f"'13-512-256-64-16', got {value!r}")
        if self.model == "dlrm":
            from cce_bench.models.build import N_DENSE
            from cce_bench.models.dlrm import check_mlps

            try:
                check_mlps(self.bottom_mlp, self.top_mlp, N_DENSE, self.dim)
            except ConfigError as err:
                raise ConfigError(f"field '{str(err).split()[0]}': {err}") from None
        elif self.bottom_mlp or self.top_mlp:
            raise ConfigError("fields 'bottom_mlp' and 'top_mlp' are DLRM's; GMF has no MLP")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def results_path(self) -> Path:
        return self.results / f"{self.name}.csv"

    def params_per_table(self, budget: int) -> int:
        return budget * self.dim if self.budget_unit == "ppd" else budget

    def expand(self) -> list[RunConfig]:
        """Every run of the grid, in a stable order. `full` ignores budget and n_chunks, so it
        gets one run per dataset and seed (budget 0, the first n_chunks); a method that ignores
        n_chunks (hash, hnet, qr, ldim, dhe) one run per budget and seed."""
        runs: list[RunConfig] = []
        for dataset in self.datasets:
            for method in self.methods:
                info = get_method(method)
                uncompressed = info.family == "uncompressed"
                budgets = [0] if uncompressed else self.budgets
                # A method that ignores n_chunks runs once, at the first value.
                chunks = self.n_chunks if info.cls.uses_chunks else self.n_chunks[:1]
                for budget in budgets:
                    for n_chunks in chunks:
                        for seed in self.seeds:
                            runs.append(RunConfig(
                                dataset=dataset, method=method,
                                budget=self.params_per_table(budget), model=self.model,
                                dim=self.dim, n_chunks=n_chunks, seed=seed, epochs=self.epochs,
                                batch_size=self.batch_size, lr=self.lr,
                                weight_decay=self.weight_decay,
                                cluster_until=self.cluster_until, early_stop=self.early_stop,
                                kmeans=self.kmeans, optimizer=self.optimizer,
                                eval_every=self.eval_every, cluster_every=self.cluster_every,
                                bottom_mlp=self.bottom_mlp, top_mlp=self.top_mlp,
                                precision=self.precision, shuffle=self.shuffle))
        return runs


def parse_numbers(value: object, field_name: str) -> list[int]:
    """A list of positive integers from an int, a list, or text like "2:4096" or "16,64,256"."""
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers: list[int] = []
    for item in items:
        if isinstance(item, str):
            for part in item.split(","):
                part = part.strip()
                if ":" in part:
                    numbers += power_range(part, field_name)
                elif part:
                    numbers.append(_positive(part, field_name))
        else:
            numbers.append(_positive(item, field_name))
    if not numbers:
        raise ConfigError(f"field '{field_name}' is empty; give at least one value")
    return _unique(numbers)


def power_range(text: str, field_name: str) -> list[int]:
    """"lo:hi" -> every power of two from lo to hi, both included."""
    lo_text, _, hi_text = text.partition(":")
    try:
        lo, hi = int(lo_text), int(hi_text)
    except ValueError:
        raise ConfigError(f"field '{field_name}': bad range '{text}'; write lo:hi with two "
                          "powers of two, e.g. '2:4096'") from None
    for end in (lo, hi):
        if end < 1 or end & (end - 1):
            raise ConfigError(f"field '{field_name}': bad range '{text}': {end} is not a power "
                              "of two; a range lo:hi steps by powers of two (e.g. '2:4096'), "
                              "other values go in a list")
    if lo > hi:
        raise ConfigError(f"field '{field_name}': bad range '{text}': {lo} > {hi}; write the "
                          f"smaller end first ('{hi}:{lo}')")
    return [1 << k for k in range(lo.bit_length() - 1, hi.bit_length())]


def _seeds(value: object) -> list[int]:
    """seeds = N (seeds 0..N-1) or a list of seeds; text "3" or "0,4,7" from a flag."""
    if isinstance(value, str):
        text = value.strip()
        value = [p for p in text.split(",") if p.strip()] if "," in text else text
    if isinstance(value, (list, tuple)):
        seeds = [_integer_value(s, "seeds", minimum=0) for s in value]
        if not seeds:
            raise ConfigError("field 'seeds' is empty; give a count (3) or a list ([0, 1, 2])")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"field 'seeds': {seeds} repeats a seed")
        return seeds
    count = _integer_value(value, "seeds", minimum=1)
    return list(range(count))


def _strings(spec: SweepSpec, name: str) -> list[str]:
    value = getattr(spec, name)
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"field '{name}': expected names, got {item!r}")
        out += [part.strip() for part in item.split(",") if part.strip()]
    if not out:
        raise ConfigError(f"field '{name}' is empty; give at least one name")
    return _unique(out)


def _numbers(spec: SweepSpec, name: str) -> list[int]:
    return parse_numbers(getattr(spec, name), name)


def _text(spec: SweepSpec, name: str) -> str:
    value = getattr(spec, name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"field '{name}': expected a non-empty string, got {value!r}")
    return value


def _integer(spec: SweepSpec, name: str, minimum: int) -> int:
    return _integer_value(getattr(spec, name), name, minimum)


def _integer_value(value: object, name: str, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"field '{name}': expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"field '{name}': must be at least {minimum}, not {value}")
    return value


def _positive(value: object, name: str) -> int:
    return _integer_value(value, name, minimum=1)


def _real(spec: SweepSpec, name: str) -> float:
    value = getattr(spec, name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"field '{name}': expected a number, got {value!r}")
    return float(value)


def _check_model_data(model: str, dataset: str) -> None:
    criteo = info(dataset).kind in CRITEO_KINDS
    if model == "gmf" and criteo:
        raise ConfigError(f"field 'datasets': {dataset} is a Criteo dataset (dense and "
                          "categorical features); GMF needs an interaction dataset (MovieLens, "
                          "syn-<vocab>-<interactions>); use --model dlrm for Criteo")
    if model == "dlrm" and not criteo:
        raise ConfigError(f"field 'datasets': {dataset} is an interaction dataset; DLRM needs a "
                          "Criteo dataset: criteo-kaggle, criteo-terabyte or "
                          "criteo-synthetic[-<rows>][-cap<ids>]")


def _check_name(name: str, field_name: str, lookup) -> None:
    try:
        lookup(name)
    except CceBenchError as err:
        raise ConfigError(f"field '{field_name}': {err}") from None


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))
