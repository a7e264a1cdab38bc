"""`cce-bench download`: fetch, verify and preprocess a dataset into the data cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cce_bench.datasets import RichReporter, info, prepare, status
from cce_bench.datasets.cache import read_meta

from cce_bench.errors import ConfigError

from .common import choice, console, err_console, friendly_errors


@friendly_errors
def download(
    name: Annotated[str, typer.Argument(
        help="Dataset: ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, criteo-kaggle, criteo-terabyte "
        "(or a generated one: syn-<vocab>-<interactions>, criteo-synthetic[-<rows>]); or a "
        "name of your own for your clicks, with --from FILE.csv.")],
    mirror: Annotated[Optional[str], typer.Option(
        help="Base URL that serves the same file names (a mirror inside your network).")] = None,
    from_: Annotated[Optional[Path], typer.Option(
        "--from", help="Use a file you already have: the official archive, the folder it was "
        "extracted into, or the ratings / log file itself. With a name of your own: your "
        "clicks, a .csv, .tsv or .parquet of user, item, label (0/1) and optional timestamp "
        "columns.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Download and preprocess again, even if the cache has it (your own data: "
        "rebuild it, also from a changed file).")] = False,
    max_ind_range: Annotated[Optional[int], typer.Option(
        help="Criteo: reduce categorical values modulo N first (DLRM's --max-ind-range; 0: "
        "none). Default: none, Terabyte's 10000000.", min=0)] = None,
    threshold: Annotated[Optional[int], typer.Option(
        help="Criteo: values seen fewer than N times share one id. Default: 1 (keep all).",
        min=1)] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Criteo: processes that parse in parallel. Default: the CPU cores, at most 8.",
        min=1)] = None,
    device: Annotated[str, typer.Option(
        help="Synthetic data: generate on cpu (every machine gets the same data) or cuda (fast "
        "for 100M interactions). Default: cpu.", **choice(["cpu", "cuda", "cuda:N"]))] = "cpu",
    user_column: Annotated[Optional[str], typer.Option(
        help="Your own data: the column of user ids (any strings or integers). Default: user.",
        show_default=False)] = None,
    item_column: Annotated[Optional[str], typer.Option(
        help="Your own data: the column of item ids. Default: item.", show_default=False)] = None,
    label_column: Annotated[Optional[str], typer.Option(
        help="Your own data: the column of 0/1 labels (1: a click). Default: label.",
        show_default=False)] = None,
    time_column: Annotated[Optional[str], typer.Option(
        help="Your own data: the column of timestamps (numbers or ISO dates); each user's last "
        "2 rows go to validation. Default: timestamp if the file has it, else 2 rows per user "
        "at random (seed 0).", show_default=False)] = None,
) -> None:
    """Fetch NAME into the data cache, or add your own clicks as NAME with --from FILE.csv.

    A download is verified by its size and checksum, then preprocessed. An interrupted
    download resumes on the next call; nothing incomplete is ever left looking complete. Your
    own data is split like MovieLens (each user's last 2 rows for validation) and found by NAME
    afterwards: cce-bench sweep -d NAME.
    """
    _check_mirror(mirror)
    _check_device(device)
    options = {"max_ind_range": max_ind_range, "threshold": threshold}
    options = {key: value for key, value in options.items() if value is not None}
    columns = None
    if any(c is not None for c in (user_column, item_column, label_column, time_column)):
        from cce_bench.datasets.custom import Columns

        columns = Columns(**{role: given for role, given in (
            ("user", user_column), ("item", item_column), ("label", label_column),
            ("timestamp", time_column)) if given is not None})
    was = status(name, **options) if from_ is None else None  # own data is new before --from
    reporter = RichReporter(err_console)
    folder = prepare(name, mirror=mirror, source=from_, force=force, reporter=reporter,
                     workers=workers, device=device, columns=columns, **options)
    reporter.finish()
    meta = read_meta(folder)
    sizes = meta.get("splits", {})
    splits = ", ".join(f"{split} {sizes[split]:,}" for split in ("train", "val", "test")
                       if split in sizes)
    verb = "already in the cache" if was == "ready" and not force and from_ is None else "ready"
    console.print(f"{name} {verb}: {splits} rows ({info(name).kind}); {folder}", highlight=False,
                  soft_wrap=True)
    if meta.get("kind") == "custom":
        console.print(f"train on it: cce-bench sweep -d {name} --method cce", highlight=False)


def _check_mirror(mirror: str | None) -> None:
    from urllib.parse import urlparse

    if mirror is not None and (urlparse(mirror).scheme not in ("http", "https", "file")
                               or not (urlparse(mirror).netloc or urlparse(mirror).path)):
        raise ConfigError(f"--mirror '{mirror}' is not a URL; give the base URL the files are "
                          "under, e.g. https://mirror.example/movielens")


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is visible; use --device cpu")
