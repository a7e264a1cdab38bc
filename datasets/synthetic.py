"""Synthetic GMF data, generated as in Tsang & Ahle's experiments.

V users and V items get latent vectors drawn from N(0, I_8). Each user's training items and two
validation items are drawn together without replacement from softmax(u . v / sqrt(8)) over all
items (Gumbel top-k: the first k of a row are a draw of k without replacement), then two of
them, chosen at random, go to validation, so no pair is in both splits. A pair's label is
Bernoulli(sigmoid(u . v)). The truth model's own validation score is the Bayes-optimal AUC and
BCE, stored in meta.json.

Name: syn-<V>-<N>, N training interactions in all (N // V per user, the first N % V users one
more). Generation runs in blocks of users, streaming rows to disk, so memory is one block
whatever N is. syn-20000-100000000 took 2.6 s on an H100 (device="cuda") and 10.8 s on 16 CPU
cores, at a peak RSS of 1.1 GB (issue 5's measurements).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cce_bench.errors import ConfigError

from . import cache

if TYPE_CHECKING:
    import torch

# torch loads in the functions that draw, not here: the catalog and `cce-bench datasets` read
# NAME_PATTERN, VERSION and SyntheticSpec without it.

NAME_PATTERN = re.compile(r"^syn-(\d+)-(\d+)$")
LATENT_DIM = 8
VERSION = 2  # 2: a user's items are the first of its own draw (1 shuffled the whole width)
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


def generate(spec: SyntheticSpec, folder: Path, device: str | torch.device = "cpu") -> dict:
    """Write train_/val_ users, items, labels .npy arrays into folder; return the meta dict.

    device: where to draw ("cpu", "cuda", "auto"). The draws depend on the device type, as
    torch's CPU and CUDA generators differ: same name, seed and device type, same data;
    meta.json records the device type. The default is the CPU, so every machine agrees.
    """
    import torch

    from cce_bench import metrics

    device = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available()
                          else "cpu" if str(device) == "auto" else device)
    gen = torch.Generator(device=device)
    gen.manual_seed(spec.seed)
    users_lat = torch.randn(spec.vocab, LATENT_DIM, generator=gen, device=device)
    items_lat = torch.randn(spec.vocab, LATENT_DIM, generator=gen, device=device)
    per_user = torch.full((spec.vocab,), spec.interactions // spec.vocab, dtype=torch.int64,
                          device=device)
    per_user[: spec.interactions % spec.vocab] += 1
    width = int(per_user.max()) + 2  # items drawn per user, the 2 validation ones included

    val_probs = np.empty(2 * spec.vocab, dtype=np.float64)
    block = max(1, (_BLOCK_ELEMENTS * (4 if device.type == "cuda" else 1)) // spec.vocab)
    train_clicks = 0
    names = ("users", "items", "labels")
    dtypes = (np.int32, np.int32, np.uint8)
    # Rows stream to disk with plain writes (cache.NpyWriter): memory is one block of users.
    with contextlib.ExitStack() as files:
        train = [files.enter_context(cache.NpyWriter(folder / f"train_{key}.npy", dtype))
                 for key, dtype in zip(names, dtypes)]
        val = [files.enter_context(cache.NpyWriter(folder / f"val_{key}.npy", dtype))
               for key, dtype in zip(names, dtypes)]
        for start in range(0, spec.vocab, block):
            users = torch.arange(start, min(start + block, spec.vocab), device=device)
            drawn = _draw_items(users_lat[users], items_lat, width, gen)  # (b, width)
            drawn, keep = _assign(drawn, per_user[users], gen)
            logits = (users_lat[users].unsqueeze(1) * items_lat[drawn]).sum(-1)  # (b, width)
            labels = torch.bernoulli(torch.sigmoid(logits), generator=gen).to(torch.uint8)

            val_columns = (users.repeat_interleave(2), drawn[:, :2], labels[:, :2])
            for writer, column in zip(val, val_columns):
                writer.append(column.reshape(-1).cpu().numpy())
            rows = slice(2 * start, 2 * start + 2 * len(users))
            val_probs[rows] = torch.sigmoid(logits[:, :2]).reshape(-1).double().cpu().numpy()
            train_users = users.unsqueeze(1).expand(-1, width - 2)[keep]
            train_labels = labels[:, 2:][keep]
            for writer, column in zip(train, (train_users, drawn[:, 2:][keep], train_labels)):
                writer.append(column.cpu().numpy())
            train_clicks += int(train_labels.sum())

    probs = torch.from_numpy(val_probs)
    truth = torch.from_numpy(np.load(folder / "val_labels.npy"))
    return {
        "kind": "synthetic", "n_users": spec.vocab, "n_items": spec.vocab,
        "splits": {"train": spec.interactions, "val": 2 * spec.vocab},
        "label_rate": train_clicks / spec.interactions,
        "bayes_val_auc": float(metrics.auc(probs, truth)),
        "bayes_val_bce": float(metrics.bce_of_probabilities(probs, truth)),
        "latent_dim": LATENT_DIM, "seed": spec.seed, "generated_on": device.type,
    }


def _assign(drawn: torch.Tensor, per_user: torch.Tensor,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's own draw is the first per_user + 2 columns of drawn (a draw without
    replacement, in draw order). Shuffle those columns so that the first two, the validation
    items, are two of them at random; the rest of the row is not the user's. Returns the
    shuffled draws and the mask of training columns (b, width - 2)."""
    import torch

    b, width = drawn.shape
    column = torch.arange(width, device=drawn.device)
    keys = torch.rand(drawn.shape, generator=gen, device=drawn.device)
    keys[column >= (per_user + 2).unsqueeze(1)] = 2.0  # past the user's draw: sorts last
    drawn = torch.gather(drawn, 1, keys.argsort(dim=1))
    keep = column[: width - 2] < per_user.unsqueeze(1)
    return drawn, keep


def _draw_items(users: torch.Tensor, items: torch.Tensor, k: int,
                gen: torch.Generator) -> torch.Tensor:
    """k items per user without replacement from softmax(u . v / sqrt(8)) (Gumbel top-k)."""
    import torch

    scores = users @ items.T / math.sqrt(LATENT_DIM)  # (b, V)
    uniform = torch.rand(scores.shape, generator=gen, device=scores.device).clamp_(1e-12, 1.0)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.topk(scores + gumbel, k, dim=1).indices
