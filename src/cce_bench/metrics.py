"""Binary classification metrics computed on the tensors' device.

AUC is the Mann-Whitney statistic with ties counted as one half: sort the scores, give every
group of equal scores its average rank, and compare the positives' rank sum with its minimum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ROC AUC of scores (N,) against 0/1 labels (N,); NaN when one class is absent.

    Returns a 0-dim float64 tensor on the scores' device (no host sync).
    """
    scores = scores.detach().reshape(-1)
    labels = labels.reshape(-1).to(torch.float64)
    order = torch.argsort(scores)
    sorted_scores, sorted_labels = scores[order], labels[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True,
                                                  return_counts=True)
    counts = counts.to(torch.float64)
    # Average 1-based rank of each tie group: ranks before it + (size + 1) / 2.
    group_rank = torch.cumsum(counts, 0) - counts + (counts + 1) / 2
    rank = group_rank[inverse]
    n_pos = sorted_labels.sum()
    n_neg = labels.numel() - n_pos
    pos_rank_sum = (rank * sorted_labels).sum()
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auc_rows(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """auc() of every row: scores (R, N) against labels (N,) or (R, N) -> (R,) float64.

    The same statistic with the ranks found per row without unique_consecutive: a tie group
    runs from its first to its last sorted position, and its members' average 1-based rank is
    (first + last) / 2 + 1 (auc's cumsum(counts) - counts + (counts + 1) / 2)."""
    scores = scores.detach()
    r, n = scores.shape
    sorted_scores, order = torch.sort(scores, dim=1)
    sorted_labels = labels.to(torch.float64).expand(r, n).gather(1, order)
    position = torch.arange(n, device=scores.device).expand(r, n)
    starts = torch.ones_like(sorted_scores, dtype=torch.bool)  # where a tie group starts
    starts[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(1).values
    last = torch.where(ends, position, n - 1).flip(1).cummin(1).values.flip(1)
    rank = (first + last).to(torch.float64) / 2 + 1
    n_pos = sorted_labels.sum(1)
    n_neg = n - n_pos
    pos_rank_sum = (rank * sorted_labels).sum(1)
    return (pos_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bce_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """bce_with_logits() of every row: logits (R, N), labels (N,) or (R, N) -> (R,)."""
    targets = labels.float().expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(1)


def bce_with_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of logits against 0/1 labels (0-dim tensor, no host sync)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def bce_of_probabilities(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of probabilities (used for a truth model's own score)."""
    p = probs.double().clamp(1e-12, 1 - 1e-12)
    y = labels.double()
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean()
