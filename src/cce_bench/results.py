"""The results log: one tidy CSV row per run per evaluation point.

Rows are appended, never rewritten. All rows of a run go out as one record on an O_APPEND
descriptor followed by fsync; a short write (a full disk) is cut back off, so a run appears whole
or not at all. A row is always one line (no field holds a newline), and the reader parses each
line on its own: a torn, non-UTF-8 or malformed line is skipped with a warning naming it and can
never swallow the next one. A sweep holds the file's lock while it runs, so two sweeps never
train and record the same runs twice.

`still_improving` describes the run, like `status` on its last row: on a run's last row 1 when
it ran every epoch (not stopped early, not diverged) and its last epoch still improved its best
val BCE or AUC by more than the early-stop tolerance (engine.improved_in_last_epoch), else 0;
empty on its other rows and on a run without a result. Files of earlier versions lack it; the
summary (plots/summary.py) judges their runs from their rows by the same rule.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import subprocess
import tempfile
import warnings
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from .config import RunConfig
from .engine import RunResult
from .errors import ResultsError

COLUMNS = [
    "run_id", "sweep", "dataset", "model", "method", "budget_asked", "params", "table_params",
    "buffer_bytes", "total_bytes", "dim", "n_chunks", "seed", "epoch", "step", "train_bce",
    "val_bce", "val_auc", "test_bce", "test_auc", "train_s", "cluster_s", "eval_s",
    "samples_per_s", "peak_mem_bytes", "status", "still_improving", "error", "device",
    "torch_version", "cce_bench_version", "git_rev", "started_at",
]
STATUSES = ("ok", "diverged", "oom", "failed", "too_small")
# Headers of files written by earlier versions: read as they are, appended to in their own
# columns, so an old results folder still resumes (a column it lacks reads as empty).
# still_improving came last, after table_params.
OLDER_HEADERS = [[c for c in COLUMNS if c != "still_improving"],
                 [c for c in COLUMNS if c not in ("table_params", "still_improving")]]
TEXT_COLUMNS = ("run_id", "sweep", "dataset", "model", "method", "status", "error", "device",
                "torch_version", "cce_bench_version", "git_rev", "started_at")
_TIMESTAMP_LEN = len("2026-01-01T00:00:00+00:00")


def now_timestamp() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def run_rows(run: RunConfig, sweep: str, result: RunResult | None, started_at: str,
             status: str | None = None, error: str = "") -> list[dict]:
    """The CSV rows of one run: one per evaluated epoch, or one row for a run that failed."""
    base = {
        "run_id": run.run_id, "sweep": sweep, "dataset": run.dataset, "model": run.model,
        "method": run.method, "budget_asked": run.budget, "dim": run.dim,
        "n_chunks": run.n_chunks, "seed": run.seed, "torch_version": torch.__version__,
        "cce_bench_version": _version(), "git_rev": git_revision(), "started_at": started_at,
        "error": error,
    }
    if result is None:
        return [{**base, "status": status or "failed", "epoch": 0, "step": 0}]
    base |= {"params": result.params, "table_params": result.table_params,
             "buffer_bytes": result.buffer_bytes,
             "total_bytes": result.total_bytes, "peak_mem_bytes": result.peak_mem_bytes,
             "device": result.device}
    rows = []
    for i, record in enumerate(result.epochs):
        last = i == len(result.epochs) - 1
        row_status = result.status if last else "ok"
        improving = int(result.still_improving) if last else None
        rows.append({**base, **vars(record), "status": status or row_status,
                     "still_improving": improving})
    return rows


class ResultsLog:
    """Appends rows to results/<sweep>.csv and each run's config to results/<sweep>/runs/."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.runs_dir = self.path.with_suffix("") / "runs"

    def ensure(self) -> None:
        """Create the folder and the file with its header, or check an existing header."""
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                write_atomically(self.path, ",".join(COLUMNS) + "\n")
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path.parent}: {err.strerror}") from err
        self.columns = file_columns(self.path)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the file for one sweep: a second sweep on the same file refuses at once
        instead of training the same runs again (the lock file beside it names the holder)."""
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise ResultsError(f"cannot lock {self.path}: {err.strerror} ({lock})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ResultsError(f"another sweep (process {holder}) is writing {self.path}; wait "
                               "for it to finish, or give this one another --name") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held_rows(self) -> pd.DataFrame | None:
        """Every complete row of the file (read_rows), None where there is no file yet: read
        once by a caller that asks several questions of it."""
        return read_rows(self.path) if self.path.exists() else None

    def completed_run_ids(self, include_failed: bool = True,
                          rows: pd.DataFrame | None = None) -> set[str]:
        """Runs that have finished (any status, or only the non-failed ones) and whose last
        record is whole: as many rows as its config file says were written (a record cut by a
        crash is redone). Runs written before records were counted count when present. rows:
        the file's rows if the caller has read them (held_rows)."""
        frame = rows if rows is not None else self.held_rows()
        if frame is None:
            return set()
        if not include_failed:  # --retry-failed trains these again: a run's last row says
            final = frame.groupby("run_id")["status"].last()
            retry = set(final[final.isin(["failed", "oom", "diverged"])].index)
            frame = frame[~frame["run_id"].isin(retry)]
        done = set()
        for run_id, rows in frame.groupby("run_id"):
            recorded = self._recorded(run_id)
            if recorded is None or (rows["started_at"] == recorded[0]).sum() >= recorded[1]:
                done.add(run_id)
        return done

    def precisions(self, rows: pd.DataFrame | None = None) -> set[str]:
        """The precisions of the runs the file holds, from their config files (fp32 where a
        config does not say: it was written before the field existed); rows as above."""
        frame = rows if rows is not None else self.held_rows()
        if frame is None:
            return set()
        return {self._saved(run_id).get("precision", "fp32")
                for run_id in frame["run_id"].unique()}

    def _saved(self, run_id: str) -> dict:
        """A run's config file as written ({} where there is none or it cannot be read)."""
        try:
            return json.loads((self.runs_dir / f"{run_id}.json").read_text())
        except (OSError, ValueError):
            return {}

    def _recorded(self, run_id: str) -> tuple[str, int] | None:
        """(started_at, rows) of the run's last record, from its config file, if it says."""
        saved = self._saved(run_id)
        if "recorded_rows" not in saved:
            return None
        return saved["recorded_started_at"], saved["recorded_rows"]

    def append(self, rows: list[dict], config: RunConfig | None = None) -> None:
        """Append one run's rows as one record: all of them or none. A short write (a full
        disk) is rolled back to the file's size before it and raised, so a torn run never
        looks done."""
        self.ensure()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n", extrasaction="ignore")
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        data = buffer.getvalue().encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        except OSError as err:
            raise ResultsError(f"cannot append to {self.path}: {err.strerror}") from err
        try:
            size = os.fstat(fd).st_size
            if not _ends_with_newline(self.path):
                data = b"\n" + data  # a torn line from a killed writer stays on its own line
            if _write_all(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as err:
            _roll_back(fd, size)
            raise ResultsError(f"cannot append to {self.path}: {err.strerror or err}; nothing of "
                               "this run was kept (free space, then run the same command again)"
                               ) from err
        finally:
            os.close(fd)
        if config is not None:
            # After the rows: the config file says how many rows the record holds, so a record
            # cut short (a crash between the two) is known and its run trained again.
            saved = config.to_dict() | {"recorded_started_at": rows[0].get("started_at"),
                                        "recorded_rows": len(rows)}
            try:
                write_atomically(self.runs_dir / f"{config.run_id}.json",
                                 json.dumps(saved, indent=2, sort_keys=True, default=str))
            except OSError as err:  # the rows are whole; only the run's config file is missing
                raise ResultsError(f"cannot write {self.runs_dir}: {err.strerror or err} (the "
                                   f"run's rows are in {self.path})") from err


def _write_all(fd: int, data: bytes) -> int:
    """os.write until everything is written or the disk takes no more; the bytes written."""
    done = 0
    while done < len(data):
        count = os.write(fd, data[done:])
        if count <= 0:
            break
        done += count
    return done


def _roll_back(fd: int, size: int) -> None:
    """Cut the file back to `size`, so a partial record never stays behind."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


class ResultsWarning(UserWarning):
    """A line of a results file that was skipped (the CLI prints it as one line)."""


def read_rows(path: str | Path) -> pd.DataFrame:
    """Every complete row of a results file. The file is read line by line: a line that is not
    UTF-8, does not parse on its own, has the wrong number of fields or is torn is skipped
    with one warning naming the file and its line numbers, and never affects another line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"no results file at {path}; run `cce-bench sweep` first") from None
    except OSError as err:
        raise ResultsError(f"cannot read {path}: {err.strerror}") from err
    lines = raw.split(b"\n")
    columns = _known_header(lines[0].decode("utf-8", "replace") if raw else "", path)
    good, bad = [], []
    # The last line when the file does not end in a newline: a killed writer's, not a row yet.
    last = len(lines) if not raw.endswith(b"\n") else None
    for number, line in enumerate(lines[1:], start=2):
        if not line or number == last:
            continue
        row = _parse_line(line, columns)
        if row is None:
            bad.append(number)
        else:
            good.append(row)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5
                                                else "")
        warnings.warn(ResultsWarning(f"{path}: skipped {len(bad)} damaged line"
                                     f"{'s' if len(bad) > 1 else ''} (line {shown})"))
    frame = pd.DataFrame(good, columns=columns).reindex(columns=COLUMNS)
    for column in COLUMNS:
        if column not in TEXT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _parse_line(line: bytes, columns: list[str]) -> list[str] | None:
    """One row from one line, or None when the line is damaged."""
    try:
        rows = list(csv.reader([line.decode("utf-8")], strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    if len(rows) != 1 or not _complete(rows[0], columns):
        return None
    return rows[0]


def file_columns(path: Path) -> list[str]:
    """The columns of an existing results file (the current ones or an earlier version's)."""
    with open(path, "rb") as f:
        return _known_header(f.readline().decode("utf-8", "replace"), path)


def _known_header(line: str, path: Path) -> list[str]:
    header = line.strip().split(",")
    if header == COLUMNS or header in OLDER_HEADERS:
        return header
    raise ResultsError(f"{path} is not a cce-bench results file (missing or different header); "
                       "choose another --results or --name")


def _complete(row: list[str], columns: list[str]) -> bool:
    return (len(row) == len(columns) and row[columns.index("status")] in STATUSES
            and len(row[-1]) == _TIMESTAMP_LEN)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.splitlines())  # a row is one line, whatever an error said
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # numpy's repr would write "np.float64(...)"
    if isinstance(value, np.integer):
        return int(value)
    return value


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside path, fsync, rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The source tree's git revision (with +dirty), or '' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        if rev.returncode:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _version() -> str:
    from . import __version__
    return __version__
