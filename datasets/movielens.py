"""MovieLens ratings as click data, preprocessed as in Tsang & Ahle's GMF experiments.

Protocol (the paper's, after NCF): drop every rating of exactly 3; a rating >= 4 is a click
(label 1), anything lower is not (label 0); re-index the remaining users and items densely
(0..n-1 in order of their original ids); per user, the last two interactions by timestamp go
to validation, ties broken by the order of the rows in the file, and the rest to training.

The split is a stable sort on (user, timestamp, row) and a rank counted from the end of each
user's run, so it depends on no groupby-apply semantics (pandas 3 changed them). A user left
with fewer than three interactions after dropping the 3s keeps them all in validation.

Half stars: ml-10m, ml-20m and ml-25m rate from 0.5 to 5 in steps of 0.5. The rule is applied
literally to them too: only an exact 3 is dropped, and 3.5 (like 2.5) is a negative, since it
is below the paper's click threshold of 4. This keeps one rule for every release and drops no
more data than the paper's rule says; meta.json records it.

Formats: ml-100k's u.data (tab-separated, no header), ml-1m and ml-10m's ratings.dat
(`::`-separated), ml-20m and ml-25m's ratings.csv (comma-separated, with a header). Read with
pandas' C parser; when that fails, a line-by-line scan finds the first bad line and names it.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

import numpy as np

from cce_bench.errors import DatasetError

from . import cache

if TYPE_CHECKING:
    import pandas as pd

VERSION = 1
COLUMNS = ["user", "item", "rating", "timestamp"]
CSV_HEADER = "userId,movieId,rating,timestamp"
NEUTRAL_RATING = 3.0
CLICK_RATING = 4.0
PROTOCOL = ("drop rating == 3; label rating >= 4 (half stars: 3.5 and 2.5 are negatives); "
            "dense re-index; per user the last 2 by (timestamp, file row) to validation")


@dataclass
class Ratings:
    users: np.ndarray  # (N,) original user ids
    items: np.ndarray  # (N,) original item ids
    ratings: np.ndarray  # (N,) float32
    timestamps: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.users)


@contextlib.contextmanager
def open_ratings(source: Path, member: str) -> Iterator[tuple[BinaryIO, str]]:
    """The ratings file of a release as a binary stream, and a name for messages.

    source: the official zip, the folder it was extracted into (or its parent), or the
    ratings file itself. member: the file's path inside the zip, e.g. ml-1m/ratings.dat.
    """
    source = Path(source)
    basename = member.rsplit("/", 1)[-1]
    if source.is_dir():
        for candidate in (source / member, source / basename):
            if candidate.is_file():
                with open(candidate, "rb") as f:
                    yield f, str(candidate)
                return
        raise DatasetError(f"{source} holds neither {member} nor {basename}; pass the folder "
                           "the archive was extracted into, or the archive itself")
    if not source.is_file():
        raise DatasetError(f"{source} does not exist")
    if source.suffix == ".zip":
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as err:
            raise DatasetError(f"{source} is not a readable zip archive ({err}); it may be "
                               "truncated or corrupt: download it again with --force") from None
        with archive:
            if member not in archive.namelist():
                raise DatasetError(f"{source} has no {member}; is it the right archive?")
            with archive.open(member) as f:
                yield f, f"{source.name}:{member}"
        return
    if source.name != basename:
        raise DatasetError(f"{source} is neither the release's zip nor its {basename}")
    with open(source, "rb") as f:
        yield f, str(source)


def read_ratings(source: Path, member: str) -> Ratings:
    """Every rating of the release, in file order. A malformed line raises DatasetError
    naming the file and the line."""
    import pandas as pd  # here, not at the top: the catalog reads VERSION without pandas

    fmt = member.rsplit("/", 1)[-1]
    try:
        with open_ratings(source, member) as (stream, display):
            try:
                frame = _read_frame(stream, fmt)
            except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
                frame, parse_error = None, err
    except zipfile.BadZipFile as err:  # a CRC error surfaces while reading
        raise DatasetError(f"{source} is corrupt ({err}); download it again with --force") from None
    if frame is None:
        with open_ratings(source, member) as (stream, display):
            _raise_first_bad_line(stream, fmt, display)
        raise DatasetError(f"{display}: cannot read the ratings ({parse_error})")
    header_lines = 1 if fmt == "ratings.csv" else 0
    ratings = frame["rating"].to_numpy(np.float32)
    bad = np.flatnonzero(~((ratings >= 0.5) & (ratings <= 5.0)))
    if len(bad):
        raise DatasetError(f"{display} line {bad[0] + 1 + header_lines}: rating "
                           f"{ratings[bad[0]]} is outside 0.5..5")
    return Ratings(frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64), ratings,
                   frame["timestamp"].to_numpy(np.int64))


def _read_frame(stream: BinaryIO, fmt: str) -> pd.DataFrame:
    import pandas as pd

    dtypes = {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64}
    common = dict(header=None, dtype=dtypes, skip_blank_lines=False, engine="c")
    if fmt == "u.data":
        return pd.read_csv(stream, sep="\t", names=COLUMNS, **common)
    if fmt == "ratings.dat":
        # `::` as a one-character separator keeps pandas' fast C parser: the empty fields
        # between the two colons are read and must stay empty.
        names = ["user", "_1", "item", "_2", "rating", "_3", "timestamp"]
        frame = pd.read_csv(stream, sep=":", names=names, **common)
        if frame[["_1", "_2", "_3"]].notna().any(axis=None):
            raise ValueError("a field between '::' separators")
        return frame[COLUMNS]
    if fmt == "ratings.csv":
        header = stream.readline().decode("utf-8", "replace").strip()
        if header != CSV_HEADER:
            raise ValueError(f"header {header!r}")
        return pd.read_csv(stream, sep=",", names=COLUMNS, **common)
    raise DatasetError(f"unknown MovieLens ratings file {fmt}")


def _raise_first_bad_line(stream: BinaryIO, fmt: str, display: str) -> None:
    sep = {"u.data": "\t", "ratings.dat": "::", "ratings.csv": ","}[fmt]
    lines = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if fmt == "ratings.csv" and number == 1:
            if text != CSV_HEADER:
                raise DatasetError(f"{display} line 1: header {text[:60]!r}, expected {CSV_HEADER}")
            continue
        problem = _line_problem(text.split(sep))
        if problem:
            raise DatasetError(f"{display} line {number}: {problem}: {text[:80]!r}")


def _line_problem(fields: list[str]) -> str | None:
    if len(fields) != 4:
        return f"{len(fields)} fields, expected 4 (user, item, rating, timestamp)"
    for name, value, kind in zip(COLUMNS, fields, (int, int, float, int)):
        try:
            kind(value)
        except ValueError:
            return f"{name} {value!r} is not {'an integer' if kind is int else 'a number'}"
    return None


def save_splits(folder, users: np.ndarray, items: np.ndarray, labels: np.ndarray,
                val: np.ndarray) -> dict:
    """Write the train and validation arrays of interaction data (val: a row mask); returns
    their meta fields (split sizes, label rates)."""
    for split, rows in (("train", ~val), ("val", val)):
        cache.save_array(folder, f"{split}_users", users[rows].astype(np.int32))
        cache.save_array(folder, f"{split}_items", items[rows].astype(np.int32))
        cache.save_array(folder, f"{split}_labels", labels[rows])
    return {"splits": {"train": int((~val).sum()), "val": int(val.sum())},
            "label_rate": float(labels[~val].mean()) if (~val).any() else 0.0,
            "val_label_rate": float(labels[val].mean()) if val.any() else 0.0}


def split_last_two(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Boolean (N,): True for each user's last two rows by (timestamp, row order)."""
    n = len(users)
    rows = np.arange(n)
    order = np.lexsort((rows, timestamps, users))  # the last key sorts first
    sorted_users = users[order]
    group_last = np.searchsorted(sorted_users, sorted_users, side="right") - 1
    from_end = group_last - rows  # 0 for a user's last row, 1 for the one before, ...
    val = np.empty(n, dtype=bool)
    val[order] = from_end < 2
    return val


def preprocess(source: Path, member: str, folder: Path, expected_rows: int | None = None) -> dict:
    """Read, label, re-index and split the release into folder; return the meta dict."""
    ratings = read_ratings(source, member)
    if expected_rows is not None and len(ratings) != expected_rows:
        raise DatasetError(f"{member} has {len(ratings):,} ratings, the release has "
                           f"{expected_rows:,}; is it the right file, and whole?")
    keep = ratings.ratings != NEUTRAL_RATING
    labels = (ratings.ratings[keep] >= CLICK_RATING).astype(np.uint8)
    user_ids, users = np.unique(ratings.users[keep], return_inverse=True)
    item_ids, items = np.unique(ratings.items[keep], return_inverse=True)
    val = split_last_two(users, ratings.timestamps[keep])
    return {
        "kind": "movielens", "n_users": len(user_ids), "n_items": len(item_ids),
        **save_splits(folder, users, items, labels, val),
        "rows_read": len(ratings), "rows_dropped_neutral": int((~keep).sum()),
        "protocol": PROTOCOL,
    }
