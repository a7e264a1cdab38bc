"""Synthetic GMF data, generated as in Tsang & Ahle's experiments.

V users and V items get latent vectors drawn from N(0, I_8). Each user's training items and two
validation items are drawn together without replacement from softmax(u . v / sqrt(8)) over all
items (Gumbel top-k), then two of them, chosen at random, go to validation, so no pair is in both
splits. A pair's label is Bernoulli(sigmoid(u . v)). The truth model's own validation score is
the Bayes-optimal AUC and BCE, stored in meta.json.

Name: syn-<V>-<N>, N training interactions in all (N // V per user, the first N % V users one
more). Generation runs in blocks of users into memory-mapped arrays, so memory stays bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cce_bench import metrics
from cce_bench.errors import ConfigError

NAME_PATTERN = re.compile(r"^syn-(\d+)-(\d+)$")
LATENT_DIM = 8
VERSION = 1
_BLOCK_ELEMENTS = 1 << 24  # user-block x items scores held at once


@dataclass(frozen=True)
class SyntheticSpec:
    vocab: int  # users = items = vocab
    interactions: int  # training interactions
    seed: int = 0

    @classmethod
    def parse(cls, name: str, seed: int = 0) -> "SyntheticSpec":
        match = NAME_PATTERN.match(name)
        if not match:
            raise ConfigError(f"'{name}' is not a synthetic dataset name (syn-<vocab>-<interactions>)")
        spec = cls(int(match[1]), int(match[2]), seed)
        spec.check()
        return spec

    @property
    def name(self) -> str:
        return f"syn-{self.vocab}-{self.interactions}"

    def check(self) -> None:
        per_user = math.ceil(self.interactions / max(self.vocab, 1))
        if self.vocab < 2 or self.interactions < self.vocab:
            raise ConfigError(f"{self.name}: needs vocab >= 2 and at least one interaction per user")
        if per_user + 2 > self.vocab:
            raise ConfigError(f"{self.name}: {per_user} training + 2 validation items per user "
                              f"exceed the {self.vocab} items; use fewer interactions or more items")


def generate(spec: SyntheticSpec, folder: Path, device: str = "cpu") -> dict:
    """Write train_/val_ users, items, labels .npy arrays into folder; return the meta dict."""
    gen = torch.Generator(device=device)
    gen.manual_seed(spec.seed)
    users_lat = torch.randn(spec.vocab, LATENT_DIM, generator=gen, device=device)
    items_lat = torch.randn(spec.vocab, LATENT_DIM, generator=gen, device=device)
    per_user = torch.full((spec.vocab,), spec.interactions // spec.vocab, dtype=torch.int64)
    per_user[: spec.interactions % spec.vocab] += 1
    width = int(per_user.max()) + 2  # items drawn per user, the 2 validation ones included

    train = _open_split(folder, "train", spec.interactions)
    val = _open_split(folder, "val", 2 * spec.vocab)
    val_probs = np.empty(2 * spec.vocab, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // spec.vocab)
    written = 0
    for start in range(0, spec.vocab, block):
        users = torch.arange(start, min(start + block, spec.vocab), device=device)
        drawn = _draw_items(users_lat[users], items_lat, width, gen)  # (b, width)
        # Two random positions of each user's draw go to validation.
        positions = torch.rand(drawn.shape, generator=gen, device=device).argsort(dim=1)
        drawn = torch.gather(drawn, 1, positions)
        logits = (users_lat[users].unsqueeze(1) * items_lat[drawn]).sum(-1)  # (b, width)
        labels = torch.bernoulli(torch.sigmoid(logits), generator=gen).to(torch.uint8)

        rows = slice(2 * start, 2 * start + 2 * len(users))
        val["users"][rows] = users.repeat_interleave(2).cpu().numpy()
        val["items"][rows] = drawn[:, :2].reshape(-1).cpu().numpy()
        val["labels"][rows] = labels[:, :2].reshape(-1).cpu().numpy()
        val_probs[rows] = torch.sigmoid(logits[:, :2]).reshape(-1).double().cpu().numpy()

        keep = torch.arange(width - 2, device=device) < per_user[users.cpu()].to(device).unsqueeze(1)
        n = int(keep.sum())
        train["users"][written:written + n] = users.unsqueeze(1).expand(-1, width - 2)[keep].cpu().numpy()
        train["items"][written:written + n] = drawn[:, 2:][keep].cpu().numpy()
        train["labels"][written:written + n] = labels[:, 2:][keep].cpu().numpy()
        written += n
    for split in (train, val):
        for array in split.values():
            array.flush()

    probs, truth = torch.from_numpy(val_probs), torch.from_numpy(np.asarray(val["labels"]))
    return {
        "kind": "synthetic", "n_users": spec.vocab, "n_items": spec.vocab,
        "splits": {"train": spec.interactions, "val": 2 * spec.vocab},
        "label_rate": float(np.asarray(train["labels"]).mean()),
        "bayes_val_auc": float(metrics.auc(probs, truth)),
        "bayes_val_bce": float(metrics.bce_of_probabilities(probs, truth)),
        "latent_dim": LATENT_DIM, "seed": spec.seed,
    }


def _draw_items(users: torch.Tensor, items: torch.Tensor, k: int,
                gen: torch.Generator) -> torch.Tensor:
    """k items per user without replacement from softmax(u . v / sqrt(8)) (Gumbel top-k)."""
    scores = users @ items.T / math.sqrt(LATENT_DIM)  # (b, V)
    uniform = torch.rand(scores.shape, generator=gen, device=scores.device).clamp_(1e-12, 1.0)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.topk(scores + gumbel, k, dim=1).indices


def _open_split(folder: Path, split: str, n: int) -> dict[str, np.memmap]:
    dtypes = {"users": np.int32, "items": np.int32, "labels": np.uint8}
    return {key: np.lib.format.open_memmap(folder / f"{split}_{key}.npy", mode="w+", dtype=dtype,
                                           shape=(n,))
            for key, dtype in dtypes.items()}
