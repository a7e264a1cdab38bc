"""Criteo click logs (Kaggle and Terabyte) preprocessed as DLRM does, streaming.

Input: tab-separated lines `label, I1..I13, C1..C26`; integers may be empty or negative, the
categorical values are 8-digit (32-bit) hex or empty. Kaggle's train.txt holds 7 days in order
(45,840,617 lines, cut into 7 near-equal days as DLRM does: the first `N mod 7` days one line
longer); Terabyte has one file per day, day_0 .. day_23, gzip or plain.

Output (DLRM, Naumov et al. 2019, arXiv:1906.00091, and its data_utils.py):
- dense.npy (N, 13) float32: log(1 + max(x, 0)), an empty field as 0.
- categorical.npy (N, 26) int32: per feature, id 0 for an empty field; with a frequency
  threshold T > 1, id 1 for every value seen fewer than T times; then the kept values in
  increasing order. With --max-ind-range R, values are first reduced modulo R (DLRM's option
  for Terabyte, R = 10M), so a feature has at most R + 2 ids. Counts cover every day, as in
  DLRM.
- labels.npy (N,) uint8, rows in file order: the training days, then the last day, whose
  first half (rounded up) is the test split and second half the validation split (DLRM's
  np.array_split order).

Two streaming passes: the first counts each feature's values (and the lines of each file),
the second maps and writes. A pass reads fixed-size byte blocks cut at a line end; worker
processes parse blocks with vectorised numpy (a line's fields are found from the positions of
its tabs), so memory is a few blocks per worker plus the per-feature counts, whatever the size
of the input. A malformed line raises DatasetError naming the file and the line.
"""

from __future__ import annotations

import contextlib
import gzip
import multiprocessing
import os
import tarfile
import zlib
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from cce_bench.errors import ConfigError, DatasetError

from . import cache
from .download import Reporter, SilentReporter

VERSION = 1
N_DENSE, N_CAT = 13, 26
N_FIELDS = 1 + N_DENSE + N_CAT
KAGGLE_DAYS = 7
CHUNK_BYTES = 16 << 20
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_HEX_SHIFTS = 4 * np.arange(7, -1, -1, dtype=np.int64)
_DENSE_COUNTS_LIMIT = 1 << 25  # below this modulo range, count in a dense array


@dataclass(frozen=True)
class CriteoOptions:
    threshold: int = 1  # values seen fewer times share one id (1: keep every value)
    max_ind_range: int | None = None  # reduce values modulo this first (None or 0: no modulo)

    def __post_init__(self):
        if self.max_ind_range == 0:
            object.__setattr__(self, "max_ind_range", None)
        if self.threshold < 1:
            raise ConfigError(f"frequency threshold {self.threshold} must be at least 1")
        if self.max_ind_range is not None and self.max_ind_range < 1:
            raise ConfigError(f"--max-ind-range {self.max_ind_range} must be positive "
                              "(or 0 for no modulo)")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LogFile:
    """One file of log lines: plain, gzip, or a member of a .tar.gz archive."""

    path: Path
    member: str | None = None

    @property
    def display(self) -> str:
        return f"{self.path.name}:{self.member}" if self.member else self.path.name

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        try:
            if self.member is not None:
                with tarfile.open(self.path, "r|gz") as archive:
                    for entry in archive:
                        if entry.name.rsplit("/", 1)[-1] == self.member and entry.isfile():
                            yield archive.extractfile(entry)
                            return
                raise DatasetError(f"{self.path} has no {self.member}; is it the right archive?")
            opener = gzip.open if _is_gzip(self.path) else open
            with opener(self.path, "rb") as f:
                yield f
        except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError) as err:
            raise DatasetError(f"{self.display} is truncated or corrupt ({err}); download it "
                               "again with --force") from None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


@dataclass
class Parsed:
    labels: np.ndarray  # (n,) uint8
    dense: np.ndarray  # (n, 13) float32, log(1 + max(x, 0))
    values: np.ndarray  # (n, 26) int64: hex value (modulo max_ind_range), -1 where empty


# --- parsing ----------------------------------------------------------------------------------

def parse_block(block: bytes, first_line: int, display: str,
                max_ind_range: int | None = None) -> Parsed:
    """Parse whole lines (block ends with a newline); first_line is the 1-based number of its
    first line, for messages."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)  # (n,)
    seps = np.flatnonzero((data == 9) | (data == 10))
    n = len(ends)
    fields = np.diff(np.searchsorted(seps, ends, side="right"), prepend=0)
    bad = np.flatnonzero(fields != N_FIELDS)
    if len(bad):
        _fail(block, ends, bad[0], first_line, display,
              f"{fields[bad[0]]} fields, expected {N_FIELDS} (label, 13 integers, 26 hex)")
    seps = seps.reshape(n, N_FIELDS)
    starts = np.empty_like(seps)
    starts[:, 0] = np.concatenate(([0], ends[:-1] + 1))
    starts[:, 1:] = seps[:, :-1] + 1
    lengths = seps - starts  # (n, 40)
    problems: list[tuple[int, str]] = []

    label_char = data[starts[:, 0]]
    bad = np.flatnonzero((lengths[:, 0] != 1) | ((label_char != 48) & (label_char != 49)))
    if len(bad):
        problems.append((bad[0], "label is not 0 or 1"))
    labels = (label_char == 49).astype(np.uint8)

    dense = np.empty((n, N_DENSE), dtype=np.float32)
    for j in range(N_DENSE):
        ints, bad_row = _parse_ints(data, starts[:, 1 + j], lengths[:, 1 + j])
        if bad_row is not None:
            problems.append((bad_row, f"I{j + 1} is not an integer"))
        dense[:, j] = np.log1p(np.maximum(ints, 0))

    values = np.empty((n, N_CAT), dtype=np.int64)
    for j in range(N_CAT):
        hexes, bad_row = _parse_hex(data, starts[:, 1 + N_DENSE + j],
                                    lengths[:, 1 + N_DENSE + j])
        if bad_row is not None:
            problems.append((bad_row, f"C{j + 1} is not 8-digit hex"))
        if max_ind_range is not None:
            hexes = np.where(hexes >= 0, hexes % max_ind_range, -1)
        values[:, j] = hexes
    if problems:
        row, message = min(problems)
        _fail(block, ends, row, first_line, display, message)
    return Parsed(labels, dense, values)


def _parse_ints(data: np.ndarray, starts: np.ndarray,
                lengths: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Decimal integers (optionally negative; empty as 0) of fields given by start and length."""
    width = int(lengths.max(initial=0))
    if width == 0:
        return np.zeros(len(starts), dtype=np.int64), None
    if width > 18:
        return np.zeros(len(starts), dtype=np.int64), int(np.argmax(lengths > 18))
    pos = np.arange(width)
    chars = data[np.minimum(starts[:, None] + pos, len(data) - 1)].astype(np.int64)  # (n, w)
    negative = (lengths > 0) & (chars[:, 0] == 45)  # a leading '-'
    digit_at = (pos < lengths[:, None]) & ~(negative[:, None] & (pos == 0))
    digits = chars - 48
    ok = (((digits >= 0) & (digits <= 9)) | ~digit_at).all(1) & ~(negative & (lengths == 1))
    exponent = np.clip(lengths[:, None] - 1 - pos, 0, 18)
    value = np.where(digit_at, digits * _POW10[exponent], 0).sum(1)
    value = np.where(negative, -value, value)
    bad = np.flatnonzero(~ok)
    return value, (int(bad[0]) if len(bad) else None)


def _parse_hex(data: np.ndarray, starts: np.ndarray,
               lengths: np.ndarray) -> tuple[np.ndarray, int | None]:
    """32-bit hex values of fields given by start and length; -1 for an empty field."""
    present = lengths == 8
    nibbles = _HEX[data[np.minimum(starts[:, None] + np.arange(8), len(data) - 1)]]  # (n, 8)
    bad = np.flatnonzero(((lengths != 0) & ~present) | (present & (nibbles == 255).any(1)))
    value = (nibbles.astype(np.int64) << _HEX_SHIFTS).sum(1)
    return np.where(present, value, -1), (int(bad[0]) if len(bad) else None)


def _fail(block: bytes, ends: np.ndarray, row: int, first_line: int, display: str,
          problem: str) -> None:
    start = 0 if row == 0 else int(ends[row - 1]) + 1
    text = block[start:int(ends[row])].decode("utf-8", "replace")
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise DatasetError(f"{display} line {first_line + row}: {problem}: {shown!r}")


def iter_blocks(stream: BinaryIO, block_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """(block of whole lines, 1-based number of its first line); a last line without a
    newline gets one."""
    carry, line = b"", 1
    while True:
        data = stream.read(block_bytes)
        if not data:
            if carry:
                yield carry if carry.endswith(b"\n") else carry + b"\n", line
            return
        data = carry + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > block_bytes:
                raise DatasetError(f"line {line} is longer than {block_bytes:,} bytes; "
                                   "is this a Criteo log file?")
            carry = data
            continue
        block, carry = data[:cut], data[cut:]
        yield block, line
        line += block.count(b"\n")


# --- the two passes ---------------------------------------------------------------------------

# Work for worker processes: module-level functions, the vocabulary in a global that forked
# workers inherit (set before the pool starts, never pickled per task).
_VOCAB: list[np.ndarray] | None = None
_OPTIONS: CriteoOptions | None = None


def _count_task(task: tuple[bytes, int, str]) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    block, line, display = task
    parsed = parse_block(block, line, display, _OPTIONS.max_ind_range)
    counted = []
    for j in range(N_CAT):
        column = parsed.values[:, j]
        counted.append(np.unique(column[column >= 0], return_counts=True))
    return len(parsed.labels), counted


def _encode_task(task: tuple[bytes, int, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    block, line, display = task
    parsed = parse_block(block, line, display, _OPTIONS.max_ind_range)
    first_kept = 2 if _OPTIONS.threshold > 1 else 1  # 0: empty; 1: rare, when a threshold
    ids = np.empty(parsed.values.shape, dtype=np.int32)
    for j, keys in enumerate(_VOCAB):
        column = parsed.values[:, j]
        pos = np.searchsorted(keys, column)
        found = keys[np.minimum(pos, len(keys) - 1)] == column if len(keys) else False
        ids[:, j] = np.where(column < 0, 0, np.where(found, pos + first_kept, 1))
    return parsed.labels, parsed.dense, ids


class _Counter:
    """Counts of one feature's values: a dense array below a modulo range, else sorted
    (keys, counts) merged as pieces arrive (merging once the pieces outgrow the total keeps
    the cost near one sort of everything)."""

    def __init__(self, max_ind_range: int | None):
        self.dense = (np.zeros(max_ind_range, dtype=np.int64)
                      if max_ind_range is not None and max_ind_range <= _DENSE_COUNTS_LIMIT
                      else None)
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self.pieces: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        if self.dense is not None:
            self.dense[keys] += counts  # keys are unique within a piece
            return
        self.pieces.append((keys, counts))
        self.pending += len(keys)
        if self.pending > max(len(self.keys), 1 << 12):
            self._merge()

    def _merge(self) -> None:
        keys = np.concatenate([self.keys] + [k for k, _ in self.pieces])
        counts = np.concatenate([self.counts] + [c for _, c in self.pieces])
        self.pieces, self.pending = [], 0
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        first = np.flatnonzero(np.diff(keys, prepend=-2) != 0)
        self.keys = keys[first]
        self.counts = np.add.reduceat(counts, first) if len(keys) else counts

    def kept(self, threshold: int) -> np.ndarray:
        """Sorted values seen at least threshold times."""
        if self.dense is not None:
            return np.flatnonzero(self.dense >= threshold).astype(np.int64)
        self._merge()
        return self.keys[self.counts >= threshold]


def _ordered(fn: Callable, tasks: Iterable, workers: int) -> Iterator:
    """fn over tasks, results in order; at most 2 tasks per worker in flight, so a fast
    reader never queues the whole file in memory (Pool.imap would)."""
    if workers <= 1:
        for task in tasks:
            yield fn(task)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _tasks(file: LogFile, block_bytes: int, reporter: Reporter, label: str):
    total = None if (file.member or _is_gzip(file.path)) else file.path.stat().st_size
    reporter.start(f"{label} {file.display}", total)
    try:
        with file.open() as stream:
            for block, line in iter_blocks(stream, block_bytes):
                yield block, line, file.display
                reporter.advance(len(block))
    finally:
        reporter.finish()


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def day_sizes(rows: int, days: int = KAGGLE_DAYS) -> list[int]:
    """Kaggle's days as DLRM cuts train.txt: near-equal, the first rows % days one longer."""
    base, extra = divmod(rows, days)
    return [base + (1 if day < extra else 0) for day in range(days)]


def preprocess(files: list[LogFile], options: CriteoOptions, folder: Path,
               workers: int | None = None, reporter: Reporter | None = None,
               expected_rows: int | None = None, block_bytes: int = CHUNK_BYTES) -> dict:
    """Count, map and write the logs into folder; return the meta dict.

    One file is Kaggle's train.txt (cut into 7 days); several files are one day each.
    """
    global _VOCAB, _OPTIONS
    reporter = reporter or SilentReporter()
    workers = default_workers() if workers is None else workers
    multiprocessing_ok = "fork" in multiprocessing.get_all_start_methods()
    workers = workers if multiprocessing_ok else 1
    _OPTIONS = options
    try:
        counters = [_Counter(options.max_ind_range) for _ in range(N_CAT)]
        file_rows = []
        for file in files:
            rows = 0
            for n, counted in _ordered(_count_task, _tasks(file, block_bytes, reporter,
                                                           "counting"), workers):
                rows += n
                for counter, (keys, counts) in zip(counters, counted):
                    counter.add(keys, counts)
            file_rows.append(rows)
        total = sum(file_rows)
        if expected_rows is not None and total != expected_rows:
            raise DatasetError(f"{files[0].display} has {total:,} lines, the release has "
                               f"{expected_rows:,}; is it the right file, and whole?")
        if total == 0:
            raise DatasetError(f"{files[0].display} has no lines")
        _VOCAB = [counter.kept(options.threshold) for counter in counters]
        del counters
        days = day_sizes(total) if len(files) == 1 else file_rows
        if len(days) < 2:
            raise DatasetError("Criteo needs at least two days: training days and a last day "
                               "to split into test and validation")

        train = sum(days[:-1])
        test = (days[-1] + 1) // 2
        train_clicks = 0
        with cache.NpyWriter(folder / "labels.npy", np.uint8) as labels, \
                cache.NpyWriter(folder / "dense.npy", np.float32, (N_DENSE,)) as dense, \
                cache.NpyWriter(folder / "categorical.npy", np.int32, (N_CAT,)) as cats:
            for file in files:
                for y, x, c in _ordered(_encode_task, _tasks(file, block_bytes, reporter,
                                                             "writing"), workers):
                    train_clicks += int(y[:max(0, train - labels.rows)].sum())
                    labels.append(y)
                    dense.append(x)
                    cats.append(c)
        vocab_sizes = [len(keys) + (2 if options.threshold > 1 else 1) for keys in _VOCAB]
    finally:
        _VOCAB = _OPTIONS = None

    return {
        "kind": "criteo", "rows": total, "day_rows": days,
        "splits": {"train": train, "test": test, "val": total - train - test},
        "split_ranges": {"train": [0, train], "test": [train, train + test],
                         "val": [train + test, total]},
        "vocab_sizes": vocab_sizes, "n_dense": N_DENSE, "n_categorical": N_CAT,
        "label_rate": train_clicks / train,
        "sources": [file.display for file in files],
        "protocol": ("DLRM: log(1+max(x,0)) dense; per-feature ids: 0 empty"
                     + (f", 1 values seen < {options.threshold} times" if options.threshold > 1
                        else "")
                     + (f", values modulo {options.max_ind_range:,}" if options.max_ind_range
                        else "")
                     + "; last day: first half test, second half validation"),
    }
