"""The results log: whole rows appended, torn lines never trusted, headers checked."""

from __future__ import annotations

import pytest

from cce_bench.config import RunConfig
from cce_bench.errors import ResultsError
from cce_bench.results import COLUMNS, ResultsLog, now_timestamp, read_rows, run_rows


def rows_for(seed: int, status: str = "too_small") -> tuple[RunConfig, list[dict]]:
    run = RunConfig(dataset="syn-60-2400", method="cce", budget=64, seed=seed)
    return run, run_rows(run, "t", None, now_timestamp(), status, "budget 64 is too small")


def test_append_then_read_back(tmp_path):
    log = ResultsLog(tmp_path / "r.csv")
    run, rows = rows_for(0)
    log.append(rows, run)
    frame = read_rows(log.path)
    assert list(frame.columns) == COLUMNS
    assert frame["run_id"].tolist() == [run.run_id]
    assert frame["status"].tolist() == ["too_small"]
    assert (tmp_path / "r" / "runs" / f"{run.run_id}.json").exists()
    assert log.completed_run_ids() == {run.run_id}


def test_a_torn_last_line_is_dropped_and_isolated(tmp_path):
    log = ResultsLog(tmp_path / "r.csv")
    run0, rows0 = rows_for(0)
    log.append(rows0, run0)
    whole = log.path.read_text()
    with open(log.path, "a") as f:  # a writer killed half-way through a line
        f.write(whole.splitlines()[1][:40])
    assert len(read_rows(log.path)) == 1
    run1, rows1 = rows_for(1)
    log.append(rows1, run1)
    frame = read_rows(log.path)
    assert sorted(frame["seed"].tolist()) == [0, 1]  # the next run's row is intact


def test_a_line_cut_inside_the_timestamp_is_not_a_row(tmp_path):
    log = ResultsLog(tmp_path / "r.csv")
    run, rows = rows_for(0)
    log.append(rows, run)
    line = log.path.read_text().splitlines()[1]
    with open(log.path, "a") as f:
        f.write(line[:-3] + "\n")
    assert len(read_rows(log.path)) == 1


def test_a_foreign_csv_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ResultsError, match="not a cce-bench results file"):
        read_rows(path)
    with pytest.raises(ResultsError, match="not a cce-bench results file"):
        ResultsLog(path).ensure()


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ResultsError, match="run `cce-bench sweep` first"):
        read_rows(tmp_path / "none.csv")


def test_unwritable_folder_is_a_results_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ResultsError, match="cannot write results"):
        ResultsLog(blocker / "sub" / "r.csv").ensure()


def test_run_id_is_stable_and_config_sensitive():
    a = RunConfig(dataset="d", method="cce", budget=64)
    assert a.run_id == RunConfig(dataset="d", method="cce", budget=64).run_id
    assert a.run_id != RunConfig(dataset="d", method="cce", budget=64, seed=1).run_id


def test_numpy_numbers_are_written_as_plain_numbers(tmp_path):
    import numpy as np

    log = ResultsLog(tmp_path / "r.csv")
    run, rows = rows_for(0)
    rows[0] |= {"val_bce": np.float64(0.25), "params": np.int64(512)}
    log.append(rows, run)
    frame = read_rows(log.path)
    assert frame["val_bce"].tolist() == [0.25] and frame["params"].tolist() == [512]


def test_still_improving_is_recorded_on_the_last_row_of_a_run(tmp_path):
    from cce_bench.engine import EpochRecord, RunResult

    run = RunConfig(dataset="syn-60-2400", method="cce", budget=64, epochs=2)
    records = [EpochRecord(e, 10 * e, 0.6, 0.6 - 0.05 * e, 0.6 + 0.05 * e, None, None, 1.0, 0.0,
                           0.1, 100.0) for e in (1, 2)]
    result = RunResult("ok", 64, 0, 256, records, still_improving=True)
    log = ResultsLog(tmp_path / "r.csv")
    log.append(run_rows(run, "t", result, now_timestamp()), run)
    frame = read_rows(log.path)
    assert frame["still_improving"].isna().tolist() == [True, False]  # the run's last row only
    assert frame["still_improving"].tolist()[1] == 1
    result.still_improving = False
    log.append(run_rows(run, "t", result, now_timestamp()), run)
    assert read_rows(log.path)["still_improving"].tolist()[3] == 0


@pytest.mark.parametrize("dropped", [("still_improving",), ("still_improving", "table_params")])
def test_older_files_without_the_column_load_and_take_new_rows(tmp_path, dropped):
    """A results file of an earlier version (header without still_improving, or without
    table_params too) is read, its missing columns empty, and appended to in its own columns."""
    columns = [c for c in COLUMNS if c not in dropped]
    path = tmp_path / "old.csv"
    run, rows = rows_for(0)
    path.write_text(",".join(columns) + "\n")
    log = ResultsLog(path)
    log.append(rows, run)
    assert path.read_text().splitlines()[0] == ",".join(columns)  # the header is kept
    frame = read_rows(path)
    assert list(frame.columns) == COLUMNS and frame["still_improving"].isna().all()
    assert frame["status"].tolist() == ["too_small"] and log.completed_run_ids() == {run.run_id}



def test_planning_a_sweep_reads_its_results_file_once(tmp_path, monkeypatch):
    from cce_bench import results
    from cce_bench.sweeps import runner
    from cce_bench.sweeps.spec import SweepSpec

    spec = SweepSpec(name="once", datasets=["syn-60-2400"], methods=["cce"], budgets=[64],
                     seeds=[0, 1], results=tmp_path)
    run = spec.expand()[0]
    ResultsLog(spec.results_path).append(
        run_rows(run, "t", None, now_timestamp(), "too_small", "too small"), run)
    reads = []
    real = results.read_rows
    monkeypatch.setattr(results, "read_rows", lambda path: reads.append(path) or real(path))
    plan = runner.plan_sweeps([spec])
    assert reads == [spec.results_path]  # for the precision guard and resume alike
    assert [r.seed for _, r in plan.todo] == [1]  # the recorded run is not planned again
