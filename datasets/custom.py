"""Your own clicks as an interaction dataset: a CSV or Parquet file of (user, item, label[,
timestamp]) rows, under a name you choose, split and cached like MovieLens.

Input: `.csv`, `.tsv` (either may be gzipped, `.csv.gz`) with a header line, or `.parquet`
(read through pyarrow, which cce-bench does not install). Columns `user`, `item`, `label` and,
when present, `timestamp`; other names are mapped with Columns (`--user-column`, ...). Other
columns are ignored, and rows are kept as they are (duplicates too).

- Ids: any integers or strings, re-indexed densely (0..n-1 in sorted order of the ids as read).
  A CSV column of integers is read as integers, so `007` and `7` are one id.
- Labels: 0/1 (or true/false). Anything else is refused: how ratings become clicks is the
  protocol's choice (MovieLens drops 3s and calls >= 4 a click), so it is made before here.
- Split: MovieLens's (movielens.split_last_two): per user the last two rows by timestamp, ties
  in file order, go to validation; a user with fewer than three keeps them all in validation.
  Timestamps are numbers (e.g. unix seconds) or ISO 8601 dates. Without a timestamp column the
  same split runs on a seeded random permutation (seed 0): two random rows per user.
- Checks: a missing or empty file, a missing column, an empty id, a label that is not 0/1, a
  timestamp that does not parse, one class of labels only (AUC needs both), too few rows per
  user for the split: each one DatasetError naming the file, the line and the fix.

The entry holds the arrays MovieLens's does and a meta.json with the source file's path, size
and sha256 and the columns used. The same name from a changed file or other columns is refused
unless forced (results already logged under the name came from the old data); without a file,
a damaged or forced entry is rebuilt from the recorded one.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cce_bench.errors import DatasetError

from . import cache
from .download import Reporter, file_digest
from .movielens import save_splits, split_last_two

if TYPE_CHECKING:
    import pandas as pd

# pandas loads in the functions that read a file, not here: the catalog finds your datasets
# through this module, and `cce-bench datasets` lists them without pandas.

VERSION = 1
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
SPLIT_SEED = 0
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
PROTOCOL = ("labels as given (0/1); dense re-index in sorted id order; per user the last 2 by "
            "(timestamp, file row) to validation, or 2 at random (seed 0) without timestamps")


@dataclass(frozen=True)
class Columns:
    """Which columns of the file hold what."""

    user: str = "user"
    item: str = "item"
    label: str = "label"
    # None: "timestamp" where the file has one, else the seeded random split.
    timestamp: str | None = None

    def matches(self, recorded: dict) -> bool:
        """Whether these columns read the same file as the recorded (resolved) ones did."""
        same = (self.user, self.item, self.label) == tuple(
            recorded.get(key) for key in ("user", "item", "label"))
        return same and self.timestamp in (None, recorded.get("timestamp"))


def entry(name: str) -> Path:
    """The cache folder of own dataset name (fetch.entry_options names the same one)."""
    return cache.entry_dir(name, VERSION, {})


def find(name: str) -> dict | None:
    """The meta of own dataset name in the cache ({} where its meta.json is damaged), or None
    when the cache has none: a name is an own dataset once an entry of it was built whole."""
    if not NAME_PATTERN.fullmatch(name) or not entry(name).is_dir():
        return None
    try:
        meta = cache.read_meta(entry(name))
    except DatasetError:
        return {}
    return meta if meta.get("kind") == "custom" else None


def prepare(name: str, source: Path | None, columns: Columns | None, force: bool,
            reporter: Reporter) -> Path:
    """Build name from source into the cache (see the module's docstring for when it is
    rebuilt, refused or kept); the caller has checked the name. Returns the entry."""
    final = entry(name)
    recorded = find(name)
    if source is None:
        if cache.is_ready(final) and not force:
            return final
        if not recorded or "source_file" not in recorded:
            raise DatasetError(f"{final / cache.META_FILE} is damaged, so where {name} came "
                               f"from is unknown; add it again with `cce-bench download {name} "
                               "--from FILE --force`")
        source = Path(recorded["source_file"])
        if not source.is_file():
            raise DatasetError(f"{name} was built from {source}, which is gone; add it again "
                               f"with `cce-bench download {name} --from FILE --force`")
        columns = columns or Columns(**recorded["columns"])
    columns = columns or Columns()
    source = Path(source).expanduser()
    _check_file(source, name)
    digest = f"sha256:{file_digest(source, 'sha256', reporter, f'hashing {source.name}')}"
    if recorded and not force:
        if recorded.get("source") != digest:
            raise DatasetError(
                f"{name} was built from {recorded.get('source_file')} "
                f"({recorded.get('source_bytes', 0):,} bytes, {recorded.get('source')}); "
                f"{source} differs ({source.stat().st_size:,} bytes, {digest}); pass --force to "
                f"rebuild {name} from it (results logged under {name} came from the old data), "
                "or give it a new name")
        if not columns.matches(recorded.get("columns", {})):
            raise DatasetError(f"{name} was built with columns {_columns_text(recorded['columns'])}"
                               f"; pass --force to rebuild it with {_columns_text(asdict(columns))}"
                               ", or give it a new name")
        if cache.is_ready(final):
            return final
    return cache.build_entry(name, VERSION, {},
                             lambda folder: build(source, columns, folder, digest, reporter),
                             rebuild=True)


def _check_file(source: Path, name: str) -> None:
    if not source.exists():
        raise DatasetError(f"--from {source}: no such file")
    if not source.is_file():
        raise DatasetError(f"--from {source}: not a file; give the CSV or Parquet file of "
                           f"(user, item, label[, timestamp]) rows for {name}")
    _format(source)


def _format(source: Path) -> str:
    """The file's separator (CSV, TSV) or "parquet", by its name."""
    suffixes = [s.lower() for s in source.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in CSV_SUFFIXES:
        return CSV_SUFFIXES[suffixes[-1]]
    if suffixes and suffixes[-1] in PARQUET_SUFFIXES and not source.name.lower().endswith(".gz"):
        return "parquet"
    raise DatasetError(f"--from {source}: expected a .csv, .tsv (either may end in .gz) or "
                       ".parquet file of (user, item, label[, timestamp]) rows")


def build(source: Path, columns: Columns, folder: Path, digest: str, reporter: Reporter) -> dict:
    """Read, check, re-index and split source into folder; return the meta dict."""
    frame, used, where = read(source, columns)
    if len(frame) == 0:
        raise DatasetError(f"{source} has a header but no rows; add one row per interaction")
    user_ids, users = _ids(frame["user"], "user", where)
    item_ids, items = _ids(frame["item"], "item", where)
    labels = _labels(frame["label"], where)
    if "timestamp" in frame:
        order = _times(frame["timestamp"], where)
        split = f"by {used['timestamp']}"
    else:
        order = np.random.default_rng(SPLIT_SEED).permutation(len(frame))
        split = f"random (seed {SPLIT_SEED})"
        reporter.note(f"{source.name} has no timestamp column: each user's 2 validation rows "
                      f"are drawn at random (seed {SPLIT_SEED}); --time-column names one")
    val = split_last_two(users, order)
    counts = np.bincount(users, minlength=len(user_ids))
    _check_split(source, labels, val, counts)
    val_only = int((counts < 3).sum())
    if val_only:
        reporter.note(f"{val_only:,} of {len(user_ids):,} users have fewer than 3 rows: all of "
                      "theirs are in validation (they never train), as in the MovieLens protocol")
    return {
        "kind": "custom", "n_users": len(user_ids), "n_items": len(item_ids),
        **save_splits(folder, users, items, labels, val),
        "rows_read": len(frame), "users_val_only": val_only, "split": split,
        "protocol": PROTOCOL, "columns": used, "source": digest,
        "source_file": str(source.resolve()), "source_bytes": source.stat().st_size,
    }


def read(source: Path, columns: Columns):
    """(frame with columns user, item, label[, timestamp], the file's column for each, where):
    where(row) names a row for messages, as a file line (CSV) or row number (Parquet)."""
    fmt = _format(source)
    if fmt == "parquet":
        available, load = _parquet(source)
        where = lambda row: f"{source} row {row + 1}"  # noqa: E731
    else:
        available, load = _csv(source, fmt)
        # The header is line 1 and blank lines stay rows, so the index is the line less 2.
        where = lambda row: f"{source} line {row + 2}"  # noqa: E731
    used = _resolve(columns, available, source)
    names = [c for c in used.values() if c is not None]
    frame = load(names)[names]
    frame = frame.rename(columns={c: role for role, c in used.items() if c is not None})
    blank = frame.isna().all(axis=1).to_numpy()
    last = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
    return frame.iloc[:last].reset_index(drop=True), used, where  # trailing blank lines go


def _csv(source: Path, sep: str):
    import pandas as pd

    options = dict(sep=sep, index_col=False, skipinitialspace=True, engine="c")

    def header() -> list[str]:
        try:
            return list(pd.read_csv(source, nrows=0, **options).columns)
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{source} is empty; expected a header line such as "
                               "user,item,label,timestamp and one line per interaction") from None
        except (ValueError, UnicodeDecodeError, OSError, EOFError) as err:
            raise DatasetError(f"{source} is not a readable CSV file ({_one_line(err)})") from None

    def load(names: list[str]) -> pd.DataFrame:
        try:
            with warnings.catch_warnings():
                # More fields on a line than in the header is a warning (data lost) to pandas,
                # and goes unseen with usecols: every column is read, then the used ones kept.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                # low_memory=False: one type per column, not one per block of lines.
                return pd.read_csv(source, skip_blank_lines=False, low_memory=False, **options)
        except (ValueError, pd.errors.ParserWarning, UnicodeDecodeError, OSError,
                EOFError) as err:
            raise DatasetError(_first_bad_line(source, sep)
                               or f"{source} is not a readable CSV file ({_one_line(err)})"
                               ) from None

    return header(), load


def _first_bad_line(source: Path, sep: str) -> str | None:
    """Where a CSV stops being one: the first line whose field count is not the header's."""
    import csv
    import gzip

    opener = gzip.open if source.name.lower().endswith(".gz") else open
    try:
        with opener(source, "rt", encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter=sep)
            width = len(next(rows, []))
            for row in rows:
                if row and len(row) != width:
                    return (f"{source} line {rows.line_num}: {len(row)} fields, the header has "
                            f"{width}; fix or remove that line")
    except UnicodeDecodeError as err:
        return f"{source} is not UTF-8 text ({_one_line(err)}); save it as UTF-8"
    except (OSError, EOFError, csv.Error):
        return None
    return None


def _parquet(source: Path):
    import pandas as pd

    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"reading {source} needs pyarrow, which cce-bench does not install: "
                           "`pip install pyarrow` (or save the file as CSV)") from None
    try:
        available = list(pq.read_schema(source).names)
    except Exception as err:  # noqa: BLE001 - pyarrow raises its own ArrowInvalid, OSError, ...
        raise DatasetError(f"{source} is not a readable Parquet file ({_one_line(err)})") from None
    return available, lambda names: pd.read_parquet(source, columns=names, engine="pyarrow")


def _resolve(columns: Columns, available: list, source: Path) -> dict:
    """role -> the file's column: every asked one must exist (names compared stripped)."""
    by_name = {str(c).strip(): c for c in available}
    shown = ", ".join(map(str, available[:12])) + (", ..." if len(available) > 12 else "")
    used = {}
    for role in ("user", "item", "label", "timestamp"):
        wanted = getattr(columns, role)
        if role == "timestamp" and wanted is None:
            used[role] = by_name.get("timestamp")
            continue
        if wanted not in by_name:
            option = "time" if role == "timestamp" else role
            raise DatasetError(f"{source} has no column '{wanted}' (its columns: {shown}); name "
                               f"the {role} column with --{option}-column COLUMN")
        used[role] = by_name[wanted]
    taken = [c for c in used.values() if c is not None]
    if len(set(taken)) < len(taken):
        twice = next(c for c in taken if taken.count(c) > 1)
        raise DatasetError(f"{source}: column '{twice}' is asked for twice ({_columns_text(used)})"
                           "; give the user, item, label and timestamp columns apart")
    return used


def _ids(series: pd.Series, role: str, where) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids in sorted order, each row's dense id)."""
    import pandas as pd

    empty = series.isna().to_numpy()
    if empty.any():
        raise DatasetError(f"{where(int(np.argmax(empty)))}: the {role} id is empty; every row "
                           "needs a user, an item and a label (fill in or drop that row)")
    codes, uniques = pd.factorize(series, sort=True)
    return np.asarray(uniques), codes.astype(np.int64)


def _labels(series: pd.Series, where) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series) and not series.isna().any():
        return series.to_numpy(bool).astype(np.uint8)
    values = pd.to_numeric(series, errors="coerce").to_numpy("float64", na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        row = int(np.argmax(bad))
        value = series.iloc[row]
        what = "empty" if pd.isna(value) else f"{_shown(value)}, not 0 or 1"
        raise DatasetError(f"{where(row)}: the label is {what}; labels are clicks (1) and "
                           "non-clicks (0): binarize ratings first (e.g. 1 where rating >= 4)")
    return values.astype(np.uint8)


def _times(series: pd.Series, where) -> np.ndarray:
    """Each row's time as numbers that sort like the timestamps: numbers as they are, dates
    as nanoseconds. A column of text is numbers or dates, whichever most of it parses as."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        kind, bad = "number", series.isna().to_numpy()
        integral = pd.api.types.is_integer_dtype(series)
        values = series.to_numpy("int64" if integral and not bad.any() else "float64",
                                 na_value=np.nan)
    else:
        iso = None if pd.api.types.is_datetime64_any_dtype(series) else "ISO8601"
        dates = pd.to_datetime(series, utc=True, errors="coerce", format=iso)
        numbers = pd.to_numeric(series, errors="coerce") if iso else None
        if numbers is not None and numbers.notna().sum() > dates.notna().sum():
            kind, bad = "number", numbers.isna().to_numpy()
            values = numbers.to_numpy("float64")
        else:
            kind, bad = "date", dates.isna().to_numpy()
            values = None if bad.any() else (
                dates.dt.tz_convert(None).to_numpy("datetime64[ns]").astype(np.int64))
    if bad.any():
        row = int(np.argmax(bad))
        value = series.iloc[row]
        if pd.isna(value):
            what = "empty"
        elif (~bad).any():
            what = f"{_shown(value)}, not a {kind} like the rest of the column"
        else:
            what = f"{_shown(value)}, neither a number nor a date"
        raise DatasetError(f"{where(row)}: the timestamp is {what}; give numbers (e.g. unix "
                           "seconds) or ISO 8601 dates such as 2024-01-31T12:00:00")
    return values


def _check_split(source: Path, labels: np.ndarray, val: np.ndarray, counts: np.ndarray) -> None:
    if labels.min() == labels.max():
        missing = "non-clicks (0): add the items shown but not clicked (or sampled ones) as 0" \
            if labels[0] else "clicks (1)"
        raise DatasetError(f"every label in {source} is {labels[0]}; training and AUC need "
                           f"both labels, and it has no {missing}")
    if val.all():
        raise DatasetError(f"{source}: no user has more than 2 rows ({_count(len(counts), 'user')}"
                           f", {_count(len(labels), 'row')}); the split puts each user's last 2 in "
                           "validation, so users need at least 3 rows for any to train on")
    for name, rows in (("training", ~val), ("validation", val)):
        if labels[rows].min() == labels[rows].max():
            raise DatasetError(f"{source}: the {name} split (each user's last 2 rows are "
                               f"validation) holds only label {labels[rows][0]}; AUC needs "
                               "clicks and non-clicks in both: add rows of the other label")


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def _columns_text(columns: dict) -> str:
    return ", ".join(f"{role}={columns[role]}" for role in ("user", "item", "label", "timestamp")
                     if columns.get(role) is not None)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
