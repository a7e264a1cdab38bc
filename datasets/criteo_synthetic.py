"""Criteo-shaped synthetic click data: Criteo-scale runs and tests without a download.

Shape: 13 dense features (counts, stored as log(1 + x) like preprocessed Criteo, 0 when
missing) and 26 categorical features whose cardinalities are Criteo Kaggle's as DLRM counts them
(optionally capped: `criteo-synthetic-<rows>-cap<ids>`). Feature j's ids follow a truncated
power law, P(rank r) ~ (r + 1)^-s_j with s_j in [1.05, 1.5], so a few ids take most rows and
most ids are rare, as in the real logs; ranks are scattered over the id range by a
multiplication modulo the cardinality, and id 0 is the empty value (some features have none).

Labels come from a hidden model with a first-order and a pairwise (factorisation machine)
part, the structure DLRM's dot interaction can learn:
    logit = b + sum_j a_j(id_j) + sum_{j<k} <z_j(id_j), z_k(id_k)> + beta . dense,
with a_j(id) ~ N(0, 0.25^2) and z_j(id) ~ N(0, 0.15^2 I_4) drawn by hashing (feature, id), so
no table of 33M values is stored, and b set so that about 25% of the labels are 1. The truth
model's own validation AUC and BCE (the Bayes-optimal scores) go to meta.json.

Rows form 7 "days" as Kaggle's do: days 1-6 train, the last day's first half test and second
half validation. Generation runs in blocks of rows with a seed per block, writing as it goes,
so memory is bounded and the data do not depend on the block count of any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cce_bench.errors import ConfigError

from . import cache
from .catalog import CRITEO_KAGGLE_CARDINALITIES
from .criteo import N_CAT, N_DENSE, _ordered, day_sizes, default_workers

VERSION = 1
LATENT = 4
BLOCK_ROWS = 1 << 16
TARGET_RATE = 0.25
SIGMA_FIRST, SIGMA_PAIR = 0.25, 0.15
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class CriteoSyntheticSpec:
    rows: int
    cap: int | None = None  # cap on every cardinality
    seed: int = 0

    def __post_init__(self):
        if self.rows < 14:
            raise ConfigError(f"criteo-synthetic needs at least 14 rows (7 days), got {self.rows}")
        if self.cap is not None and self.cap < 2:
            raise ConfigError(f"criteo-synthetic cap {self.cap} must be at least 2")

    @property
    def cardinalities(self) -> list[int]:
        return [min(c, self.cap) if self.cap else c for c in CRITEO_KAGGLE_CARDINALITIES]


@dataclass
class _Model:
    cards: np.ndarray  # (26,)
    exponents: np.ndarray  # (26,) power-law exponents
    multipliers: np.ndarray  # (26,) coprime to card - 1: scatter ranks over ids
    missing: np.ndarray  # (26,) rate of empty categorical values
    dense_means: np.ndarray  # (13,)
    dense_missing: np.ndarray  # (13,)
    beta: np.ndarray  # (13,)
    seed: int
    bias: float = 0.0


def _model(spec: CriteoSyntheticSpec) -> _Model:
    rng = np.random.default_rng([spec.seed, 0])
    cards = np.array(spec.cardinalities, dtype=np.int64)
    multipliers = np.array([_coprime(int(c) - 1) for c in cards], dtype=np.int64)
    return _Model(cards, rng.uniform(1.05, 1.5, N_CAT), multipliers,
                  rng.choice([0.0, 0.0, 0.05, 0.3], N_CAT),
                  np.exp(rng.uniform(0.0, 5.0, N_DENSE)), rng.choice([0.0, 0.1, 0.4], N_DENSE),
                  rng.normal(0.0, 0.1, N_DENSE), spec.seed)


def _coprime(n: int) -> int:
    m = 2654435761 % max(n, 1) | 1
    while math.gcd(m, n) != 1:
        m += 2
    return m


def _block(model: _Model, rows: int, rng: np.random.Generator):
    """(dense (rows, 13) float32, ids (rows, 26) int32, logits without the bias (rows,))."""
    counts = np.floor(rng.exponential(model.dense_means, (rows, N_DENSE)))
    counts[rng.random((rows, N_DENSE)) < model.dense_missing] = 0
    dense = np.log1p(counts).astype(np.float32)
    ids = np.empty((rows, N_CAT), dtype=np.int64)
    for j in range(N_CAT):
        span = int(model.cards[j]) - 1  # ids 1..card-1; 0 is the empty value
        s = model.exponents[j]
        u = rng.random(rows)
        x = (1.0 - u * (1.0 - (span + 1.0) ** (1.0 - s))) ** (1.0 / (1.0 - s))
        rank = np.minimum(np.floor(x).astype(np.int64) - 1, span - 1)
        ids[:, j] = 1 + (rank * model.multipliers[j]) % span
        ids[rng.random(rows) < model.missing[j], j] = 0
    logits = dense.astype(np.float64) @ model.beta
    z_sum = np.zeros((rows, LATENT))
    z_square = np.zeros(rows)
    for j in range(N_CAT):
        logits += SIGMA_FIRST * _hashed_normal(model.seed, j, 0, ids[:, j])
        z = SIGMA_PAIR * np.stack([_hashed_normal(model.seed, j, 1 + k, ids[:, j])
                                   for k in range(LATENT)], axis=1)  # (rows, 4)
        z_sum += z
        z_square += (z * z).sum(1)
    # sum over pairs j < k of <z_j, z_k> = (|sum_j z_j|^2 - sum_j |z_j|^2) / 2
    logits += 0.5 * ((z_sum * z_sum).sum(1) - z_square)
    return dense, ids.astype(np.int32), logits


def _hashed_normal(seed: int, feature: int, stream: int, ids: np.ndarray) -> np.ndarray:
    """A standard normal per (seed, feature, stream, id), the same on every call: splitmix64 of
    the packed key, its two 32-bit halves through Box-Muller."""
    key = (ids.astype(np.uint64) | np.uint64(feature << 24) | np.uint64(stream << 29)
           | np.uint64(seed << 33))
    x = key + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    u1 = ((x >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0 ** 32
    u2 = ((x & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0 ** 32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _calibrate_bias(model: _Model) -> float:
    """The bias that makes the mean click probability TARGET_RATE on a calibration sample."""
    _, _, logits = _block(model, BLOCK_ROWS, np.random.default_rng([model.seed, 2]))
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        if (1.0 / (1.0 + np.exp(-(logits + mid)))).mean() < TARGET_RATE:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _draw_block(task: tuple[_Model, int, int, int]):
    """One block of rows: (dense, ids, click probabilities, labels)."""
    model, index, _, rows = task
    rng = np.random.default_rng([model.seed, 1, index])
    x, ids, logits = _block(model, rows, rng)
    probs = 1.0 / (1.0 + np.exp(-(logits + model.bias)))
    y = (rng.random(rows) < probs).astype(np.uint8)
    return x, ids, probs, y


def generate(spec: CriteoSyntheticSpec, folder: Path, workers: int | None = None) -> dict:
    """Write dense.npy, categorical.npy, labels.npy into folder; return the meta dict.

    workers: processes drawing blocks (default: up to 8 of this machine's cores); Kaggle's
    size, 45.8M rows, takes about 8 s per million rows on one core."""
    model = _model(spec)
    model.bias = _calibrate_bias(model)
    days = day_sizes(spec.rows)
    train, test = sum(days[:-1]), (days[-1] + 1) // 2
    val_start = train + test
    val_probs, val_labels = [], []
    train_clicks = 0
    tasks = [(model, index, start, min(BLOCK_ROWS, spec.rows - start))
             for index, start in enumerate(range(0, spec.rows, BLOCK_ROWS))]
    # Blocks are independent (a seed each), so workers draw them side by side and they are
    # written in order: the same files whatever the worker count.
    workers = min(workers or default_workers(), len(tasks))
    with cache.NpyWriter(folder / "labels.npy", np.uint8) as labels, \
            cache.NpyWriter(folder / "dense.npy", np.float32, (N_DENSE,)) as dense, \
            cache.NpyWriter(folder / "categorical.npy", np.int32, (N_CAT,)) as cats:
        for (_, _, start, rows), (x, ids, probs, y) in zip(tasks, _ordered(_draw_block, tasks,
                                                                            workers)):
            train_clicks += int(y[:max(0, train - start)].sum())
            in_val = slice(max(0, val_start - start), rows)
            val_probs.append(probs[in_val])
            val_labels.append(y[in_val])
            labels.append(y)
            dense.append(x)
            cats.append(ids)
    import torch  # here, not at the top: the catalog reads VERSION without torch

    from cce_bench import metrics

    probs = torch.from_numpy(np.concatenate(val_probs))
    truth = torch.from_numpy(np.concatenate(val_labels))
    return {
        "kind": "criteo-synthetic", "rows": spec.rows, "day_rows": days,
        "splits": {"train": train, "test": test, "val": spec.rows - val_start},
        "split_ranges": {"train": [0, train], "test": [train, val_start],
                         "val": [val_start, spec.rows]},
        "vocab_sizes": spec.cardinalities, "n_dense": N_DENSE, "n_categorical": N_CAT,
        "label_rate": train_clicks / train, "bias": model.bias, "seed": spec.seed,
        "bayes_val_auc": float(metrics.auc(probs, truth)),
        "bayes_val_bce": float(metrics.bce_of_probabilities(probs, truth)),
    }
