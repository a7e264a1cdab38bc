"""Issue 13's faults, each reproduced: a full disk, damaged lines, a second sweep on the same
file, a link in the cache, a figure cut short. Each failed before its fix."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from cce_bench.config import RunConfig
from cce_bench.errors import ResultsError
from cce_bench.results import ResultsLog, ResultsWarning, now_timestamp, read_rows, run_rows
from tests.conftest import TINY_DATASET


def rows_for(seed: int) -> tuple[RunConfig, list[dict]]:
    run = RunConfig(dataset=TINY_DATASET, method="cce", budget=64, seed=seed)
    rows = run_rows(run, "t", None, now_timestamp(), "too_small", "budget 64 is too small")
    return run, rows * 3  # three rows in one record, as a run of three epochs


def log_with(tmp_path, seeds) -> ResultsLog:
    log = ResultsLog(tmp_path / "r.csv")
    for seed in seeds:
        run, rows = rows_for(seed)
        log.append(rows, run)
    return log


def test_a_short_write_is_rolled_back_and_the_run_is_not_done(tmp_path, monkeypatch):
    log = log_with(tmp_path, [0])
    before = log.path.read_bytes()
    real_write = os.write
    calls = []

    def full_disk(fd, data):  # the disk takes 40 bytes, then nothing
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:40])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("cce_bench.results.os.write", full_disk)
    run, rows = rows_for(1)
    with pytest.raises(ResultsError, match=r"cannot append to .*r\.csv: No space left on device; "
                                           r"nothing of this run was kept"):
        log.append(rows, run)
    monkeypatch.undo()
    assert log.path.read_bytes() == before  # no torn row left behind
    assert log.completed_run_ids() == {rows_for(0)[0].run_id}  # so the run is redone
    log.append(rows, run)
    assert len(read_rows(log.path)) == 6


def test_a_stray_quote_line_hides_no_later_row(tmp_path):
    log = log_with(tmp_path, [0])
    with open(log.path, "ab") as f:
        f.write(b'"a stray line that opens a quoted field and never closes it\n')
    log_more = ResultsLog(log.path)
    for seed in (1, 2):
        run, rows = rows_for(seed)
        log_more.append(rows, run)
    with pytest.warns(ResultsWarning, match=r"r\.csv: skipped 1 damaged line \(line 5\)"):
        frame = read_rows(log.path)
    assert sorted(set(frame["seed"])) == [0, 1, 2] and len(frame) == 9
    with pytest.warns(ResultsWarning):
        assert len(log.completed_run_ids()) == 3  # a second sweep would train nothing again


def test_a_torn_quoted_field_at_the_end_makes_no_run_twice(tmp_path):
    log = log_with(tmp_path, [0])
    run1, rows1 = rows_for(1)
    with open(log.path, "ab") as f:  # a writer killed inside a quoted field of run 1's record
        f.write(b'x,t,syn-60-2400,gmf,cce,64,,,,,"budget 64 is')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn last line is not damage: it is skipped quietly
        assert read_rows(log.path)["seed"].tolist() == [0, 0, 0]
    log.append(rows1, run1)
    with pytest.warns(ResultsWarning):
        frame = read_rows(log.path)
    assert frame["seed"].tolist() == [0, 0, 0, 1, 1, 1]  # run 1 once, whole


def test_a_non_utf8_byte_costs_one_line(tmp_path):
    log = log_with(tmp_path, [0, 1])
    data = log.path.read_bytes().split(b"\n")
    data[2] = data[2][:10] + b"\xff\xfe" + data[2][10:]
    log.path.write_bytes(b"\n".join(data))
    with pytest.warns(ResultsWarning, match=r"skipped 1 damaged line \(line 3\)"):
        frame = read_rows(log.path)
    assert len(frame) == 5


def test_a_second_sweep_on_the_same_file_refuses(tmp_path):
    log = ResultsLog(tmp_path / "results" / "s.csv")
    log.ensure()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cce_bench.results import ResultsLog
        with ResultsLog({str(log.path)!r}).exclusive():
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from typer.testing import CliRunner

        from cce_bench.cli import app

        result = CliRunner().invoke(app, ["sweep", "-d", TINY_DATASET, "--epochs", "1",
                                          "--name", "s", "--out", str(tmp_path / "results")])
        assert result.exit_code == 1
        assert (f"another sweep (process {holder.pid}) is writing {log.path}; wait for it to "
                "finish, or give this one another --name") in " ".join(result.output.split())
        assert read_rows(log.path).empty  # nothing trained twice
    finally:
        holder.kill()
        holder.wait()
    with log.exclusive():  # free again once the holder is gone
        pass


def test_a_linked_part_file_is_replaced_not_followed(tmp_path):
    from cce_bench.datasets import download as dl

    from .datasets import fakes

    server, httpd = fakes.start_server()
    try:
        data = bytes(range(256)) * 100
        url = server.serve("/f.bin", data)
        outside = tmp_path / "outside.txt"
        outside.write_bytes(b"not the cache's")
        cache = tmp_path / "cache"
        cache.mkdir()
        (cache / "f.bin.part").symlink_to(outside)
        (cache / "f.bin.lock").symlink_to(outside)
        path = dl.download(url, cache / "f.bin", len(data), fakes.md5(data), backoff=0)
        assert path.read_bytes() == data
        assert outside.read_bytes() == b"not the cache's"  # nothing written through a link
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_figure_cut_short_leaves_the_old_one(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from cce_bench.plots.style import save

    fig = plt.figure()
    (tmp_path / "f.png").write_bytes(b"the figure of the last plot")

    def killed(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(type(fig), "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        save(fig, tmp_path, "f", ["png"])
    assert (tmp_path / "f.png").read_bytes() == b"the figure of the last plot"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left either


@pytest.mark.parametrize("damage", ["meta", "array"])
def test_a_damaged_entry_is_not_ready_says_why_and_is_rebuilt(tmp_path, monkeypatch, damage):
    from typer.testing import CliRunner

    from cce_bench.cli import app
    from cce_bench.datasets import entry_path, load_dataset, status

    monkeypatch.setenv("CCE_BENCH_DATA", str(tmp_path))  # not the session's shared cache
    load_dataset(TINY_DATASET)
    folder = entry_path(TINY_DATASET)
    if damage == "meta":
        meta = folder / "meta.json"
        meta.write_text(meta.read_text()[:25])
        why = f"{meta} is damaged (JSONDecodeError)"
    else:
        (folder / "train_users.npy").unlink()
        why = f"{folder / 'train_users.npy'} is missing"
    assert status(TINY_DATASET) == f"damaged: {why}"
    listing = CliRunner().invoke(app, ["datasets"])
    assert listing.exit_code == 0 and "damaged" in listing.output  # every other row still shows
    data = load_dataset(TINY_DATASET)  # generated data: rebuilt on the next use
    assert len(data.train) > 0 and status(TINY_DATASET) == "ready"


def cli(*args):
    from typer.testing import CliRunner

    from cce_bench.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("args, exit_code, message", [
    (["download", "ml-1m", "--mirror", "not a url"], 1,
     "--mirror 'not a url' is not a URL; give the base URL the files are under"),
    (["download", TINY_DATASET, "--device", "bogus"], 2,  # a usage error, as click counts them
     "Invalid value for '--device': 'bogus' is not one of cpu, cuda, cuda:N"),
])
def test_download_options_are_checked_first(args, exit_code, message):
    code, output = cli(*args)
    assert code == exit_code and message in output and "internal error" not in output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without GPU")
def test_cuda_without_a_gpu_is_one_line_even_in_a_dry_run(in_tmp):
    code, output = cli("sweep", "-d", TINY_DATASET, "--device", "cuda", "--dry-run")
    assert code == 1 and "device cuda: no CUDA device is visible; use --device cpu" in output
    assert not (in_tmp / "results").exists()
    code, output = cli("download", TINY_DATASET, "--device", "cuda")
    assert code == 1 and "--device cuda: no CUDA device is visible" in output


def test_a_binary_spec_file_is_one_line(in_tmp):
    (in_tmp / "spec.toml").write_bytes(b"\xff\xfe\x00\x01binary")
    code, output = cli("sweep", "spec.toml", "--dry-run")
    assert code == 1 and "spec.toml is not a text file; a spec is TOML" in output


@pytest.mark.parametrize("error, status, message", [
    (RuntimeError("boom"), "failed", "RuntimeError: boom"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 9999999999 bytes"), "oom",
     "budget 512 of hash does not fit in host memory; use a smaller budget"),
])
def test_a_sweep_whose_every_run_failed_exits_non_zero(in_tmp, monkeypatch, error, status,
                                                       message):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr("cce_bench.sweeps.work.train", broken)
    code, output = cli("sweep", "-d", TINY_DATASET, "-m", "hash", "-b", "16", "--seeds", "2",
                       "--epochs", "1")
    assert code == 1
    assert f"every run of the sweep failed (2 of 2); the first: {message}" in output
    frame = read_rows(in_tmp / "results" / "default.csv")
    assert frame["status"].tolist() == [status, status]


def test_a_report_of_diverged_runs_says_so(in_tmp):
    log = ResultsLog(in_tmp / "results" / "default.csv")
    for seed in (0, 1):
        run = RunConfig(dataset=TINY_DATASET, method="hash", budget=512, seed=seed)
        rows = run_rows(run, "default", None, now_timestamp(), "diverged", "")
        log.append(rows, run)
    code, output = cli("report")
    assert code == 1
    assert "no run with a validation score to summarise (2 diverged)" in output


def test_an_empty_results_folder_is_refused_before_anything_is_written(in_tmp):
    code, output = cli("sweep", "-d", TINY_DATASET, "--epochs", "1", "--results", "")
    assert code == 1 and "field 'results': expected a folder path, got ''" in output
    assert list(in_tmp.iterdir()) == []


def test_a_run_whose_record_lost_rows_is_redone(tmp_path):
    log = log_with(tmp_path, [0, 1])
    lines = log.path.read_bytes().split(b"\n")
    del lines[3]  # run 0's last row, as a crash that left its record short
    log.path.write_bytes(b"\n".join(lines))
    run0, run1 = rows_for(0)[0], rows_for(1)[0]
    assert log.completed_run_ids() == {run1.run_id}  # run 0 is trained again
    run, rows = rows_for(0)
    log.append(rows, run)
    assert log.completed_run_ids() == {run0.run_id, run1.run_id}


def test_a_full_disk_while_building_a_dataset_names_the_folder(tmp_path, monkeypatch):
    from cce_bench.datasets import cache, load_dataset
    from cce_bench.errors import DatasetError

    monkeypatch.setenv("CCE_BENCH_DATA", str(tmp_path))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no path, as np.save raises it

    monkeypatch.setattr(cache.np, "save", full)
    monkeypatch.setattr(cache.NpyWriter, "append", full)
    with pytest.raises(DatasetError) as err:
        load_dataset("syn-50-2000")
    assert str(err.value).startswith(f"cannot build syn-50-2000 in {tmp_path / 'syn-50-2000'}: "
                                     "No space left on device; free space there or set "
                                     "CCE_BENCH_DATA")
    leftovers = [p.name for p in (tmp_path / "syn-50-2000").iterdir() if p.name != ".lock"]
    assert leftovers == []  # nothing half-built looks like an entry


def test_a_read_only_results_folder_is_one_line(in_tmp, monkeypatch):
    # As root no folder is read-only, so the refusal is injected where a sweep first writes.
    real_mkdir = type(in_tmp).mkdir

    def read_only(self, *args, **kwargs):
        if "results" in str(self):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(in_tmp), "mkdir", read_only)
    code, output = cli("sweep", "-d", TINY_DATASET, "--epochs", "1")
    assert code == 1 and "cannot write results to results: Permission denied" in output


def test_an_exploding_loss_is_diverged_and_retried(in_tmp):
    code, output = cli("sweep", "-d", TINY_DATASET, "-m", "full", "--lr", "1e6", "--epochs", "3",
                       "--seeds", "1")
    frame = read_rows(in_tmp / "results" / "default.csv")
    assert frame["status"].iloc[-1] == "diverged"  # val BCE in the 1e20s was "ok" before
    log = ResultsLog(in_tmp / "results" / "default.csv")
    assert log.completed_run_ids() and not log.completed_run_ids(include_failed=False)
