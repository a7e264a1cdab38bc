"""The results log: one tidy CSV row per run per evaluation point.

Rows are appended, never rewritten. All rows of a run go out in one write() on an O_APPEND
descriptor followed by fsync, so a run appears whole or not at all; a reader also drops any
line that does not parse completely (a write cut by a kill), and the next append starts on a
fresh line, so one torn line can never damage another.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import RunConfig
from .engine import RunResult
from .errors import ResultsError

COLUMNS = [
    "run_id", "sweep", "dataset", "model", "method", "budget_asked", "params", "table_params",
    "buffer_bytes", "total_bytes", "dim", "n_chunks", "seed", "epoch", "step", "train_bce", "val_bce", "val_auc",
    "test_bce", "test_auc", "train_s", "cluster_s", "eval_s", "samples_per_s", "peak_mem_bytes",
    "status", "error", "device", "torch_version", "cce_bench_version", "git_rev", "started_at",
]
STATUSES = ("ok", "diverged", "oom", "failed", "too_small")
# Headers of files written by earlier versions: read as they are, appended to in their own
# columns, so an old results folder still resumes (a column it lacks reads as empty).
OLDER_HEADERS = [[c for c in COLUMNS if c != "table_params"]]
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
        rows.append({**base, **vars(record), "status": status or row_status})
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
                _atomic_write(self.path, ",".join(COLUMNS) + "\n")
        except OSError as err:
            raise ResultsError(f"cannot write results to {self.path.parent}: {err.strerror}") from err
        self.columns = file_columns(self.path)

    def completed_run_ids(self, include_failed: bool = True) -> set[str]:
        """Runs that have finished (any status, or only the non-failed ones)."""
        if not self.path.exists():
            return set()
        frame = read_rows(self.path)
        if not include_failed:
            frame = frame[~frame["status"].isin(["failed", "oom"])]
        return set(frame["run_id"])

    def append(self, rows: list[dict], config: RunConfig | None = None) -> None:
        self.ensure()
        if config is not None:
            _atomic_write(self.runs_dir / f"{config.run_id}.json",
                          json.dumps(config.to_dict(), indent=2, sort_keys=True))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n", extrasaction="ignore")
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        data = buffer.getvalue().encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                if not _ends_with_newline(self.path):
                    data = b"\n" + data  # a torn line from a killed writer stays on its own line
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise ResultsError(f"cannot append to {self.path}: {err.strerror}") from err


def read_rows(path: str | Path) -> pd.DataFrame:
    """Every complete row of a results file (torn or malformed lines are dropped)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(f"no results file at {path}; run `cce-bench sweep` first") from None
    except OSError as err:
        raise ResultsError(f"cannot read {path}: {err.strerror}") from err
    lines = text.splitlines(keepends=True)
    columns = _known_header(lines[0] if lines else "", path)
    good = [row for row in csv.reader(line for line in lines[1:] if line.endswith("\n"))
            if _complete(row, columns)]
    frame = pd.DataFrame(good, columns=columns).reindex(columns=COLUMNS)
    for column in COLUMNS:
        if column not in TEXT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def file_columns(path: Path) -> list[str]:
    """The columns of an existing results file (the current ones or an earlier version's)."""
    with open(path, newline="") as f:
        return _known_header(f.readline(), path)


def _known_header(line: str, path: Path) -> list[str]:
    header = line.strip().split(",")
    if header == COLUMNS or header in OLDER_HEADERS:
        return header
    raise ResultsError(f"{path} is not a cce-bench results file (missing or different header); "
                       "choose another --out or --name")


def _complete(row: list[str], columns: list[str]) -> bool:
    return (len(row) == len(columns) and row[columns.index("status")] in STATUSES
            and len(row[-1]) == _TIMESTAMP_LEN)


def _cell(value: object) -> object:
    if value is None:
        return ""
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


def _atomic_write(path: Path, text: str) -> None:
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
