"""`cce-bench datasets`: the dataset catalog and what is in the local cache."""

from __future__ import annotations

from rich.table import Table

from cce_bench.datasets import catalog, entry_path, info, status
from cce_bench.datasets.cache import cache_root, is_ready, read_meta
from cce_bench.errors import CceBenchError

from .common import console, friendly_errors


@friendly_errors
def datasets() -> None:
    """List every dataset with its download size, rows and status in the data cache.

    Also the Bayes-optimal validation AUC / BCE of generated data in the cache, the source and
    a description.
    """
    rows = []
    for entry in catalog() + _generated_in_cache():
        state = status(entry.name)
        rows.append((entry.name, _size(entry.download_bytes),
                     f"{entry.rows:,}" if entry.rows else "?", state,
                     _bayes(entry.name) if state == "ready" else "", entry.source,
                     entry.description))
    headers = ("dataset", "download", "rows", "status", "bayes AUC/BCE", "source", "description")
    table = Table(box=None, show_header=True, pad_edge=False)
    # One line per entry, whatever the terminal's width: the first five columns keep their
    # width, source and description share what is left (cut with an ellipsis), or go.
    natural = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    left = console.width - sum(natural[:5]) - 2 * 5
    shown = 5 if left < 24 else 7
    widths = natural[:5]
    if shown == 7:
        source = min(natural[5], max(10, left * 2 // 5))
        widths += [source, max(8, min(natural[6], left - source - 2))]
    for header, width in zip(headers[:shown], widths):
        table.add_column(header, no_wrap=True, overflow="ellipsis", width=width)
    for row in rows:
        table.add_row(*row[:shown])
    console.print(table)
    console.print(f"cache: {cache_root()}", highlight=False, soft_wrap=True)


def _generated_in_cache() -> list:
    """Generated datasets built under names the catalog does not list."""
    listed = {entry.name for entry in catalog()}
    found = []
    root = cache_root()
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            name = folder.name
            if name in listed or not name.startswith(("syn-", "criteo-synthetic")):
                continue
            try:
                found.append(info(name))
            except CceBenchError:  # a stray folder is not a dataset
                continue
    return found


def _bayes(name: str) -> str:
    folder = entry_path(name)
    if not is_ready(folder):
        return ""
    meta = read_meta(folder)
    if "bayes_val_auc" not in meta:
        return ""
    return f"{meta['bayes_val_auc']:.4f} / {meta['bayes_val_bce']:.4f}"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""
