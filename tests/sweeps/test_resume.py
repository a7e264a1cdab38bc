"""A sweep killed with SIGKILL mid-run resumes: every run ends up exactly once, `ok`, and no line
of the results file is torn. The killed driver's worker dies with it."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cce_bench.results import COLUMNS, read_rows
from cce_bench.sweeps import load_spec
from tests.conftest import TINY_DATASET

ARGS = ["sweep", "-d", TINY_DATASET, "-m", "cce,hash,ce", "-b", "4:32", "--epochs", "3",
        "--batch-size", "256", "--device", "cpu", "--workers", "1", "--name", "resume"]


def start_sweep(folder: Path) -> subprocess.Popen:
    code = "import sys; from cce_bench.cli import app; app(sys.argv[1:])"
    # One thread: tiny runs only lose time to thread wake-ups, a lot on a busy machine.
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *ARGS], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def finished_runs(path: Path) -> int:
    return read_rows(path)["run_id"].nunique() if path.exists() else 0


def test_a_killed_sweep_resumes_without_duplicates_or_torn_lines(in_tmp):
    results = in_tmp / "results" / "resume.csv"
    total = len(load_spec(None, {"datasets": TINY_DATASET, "methods": "cce,hash,ce",
                                 "budgets": "4:32"}).expand())
    sweep = start_sweep(in_tmp)
    deadline = time.monotonic() + 60
    while finished_runs(results) < 2:  # some runs written, others still to train
        assert sweep.poll() is None, sweep.stderr.read().decode()
        assert time.monotonic() < deadline, "the sweep wrote no run in 60 s"
        time.sleep(0.02)
    workers = children(sweep.pid)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    done_before = finished_runs(results)
    assert done_before < total, "the sweep finished before it could be killed; make it longer"

    # The worker was told (PR_SET_PDEATHSIG) to die with its driver.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, f"worker(s) {workers} outlived the killed driver"
        time.sleep(0.05)

    again = start_sweep(in_tmp)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err.decode()

    lines = results.read_text().splitlines(keepends=True)
    assert lines[0].strip().split(",") == COLUMNS
    for line in lines[1:]:  # every line whole: one write per run, by the driver alone
        assert line.endswith("\n")
        (row,) = csv.reader([line])
        assert len(row) == len(COLUMNS), line
    rows = read_rows(results)
    assert len(rows) == len(lines) - 1
    assert rows["run_id"].nunique() == total
    epochs = rows.groupby("run_id")["epoch"].apply(list)
    assert (epochs.map(sorted) == epochs).all() and (epochs.map(len) == epochs.map(set).map(len)).all()
    last = rows.groupby("run_id").tail(1)
    assert set(last["status"]) == {"ok"}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
