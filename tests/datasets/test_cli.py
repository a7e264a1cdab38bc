"""`cce-bench download` and `cce-bench datasets` end to end, and a sweep on missing data."""

from __future__ import annotations

import shutil

from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.datasets import entry_path

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def listed_status(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.split()[:1] == [name])
    return next(word for word in line.split() if word in ("missing", "downloaded", "ready"))


def test_download_with_a_mirror_then_listed_ready(movielens, server):
    server.serve("/mirror/ml-1m.zip", movielens["ml-1m"].archive)
    assert listed_status(invoke("datasets").output, "ml-1m") == "missing"
    result = invoke("download", "ml-1m", "--mirror", f"{server.url}/mirror")
    assert result.exit_code == 0, result.output
    assert "ml-1m ready: train" in result.output
    assert server.requests == [("/mirror/ml-1m.zip", None)]
    listing = invoke("datasets")
    assert listed_status(listing.output, "ml-1m") == "ready"
    again = invoke("download", "ml-1m")
    assert again.exit_code == 0 and "ml-1m already in the cache" in again.output
    shutil.rmtree(entry_path("ml-1m"))  # the archive stays
    assert listed_status(invoke("datasets").output, "ml-1m") == "downloaded"


def test_download_from_a_file(movielens, tmp_path, server):
    archive = tmp_path / "ml-100k.zip"
    archive.write_bytes(movielens["ml-100k"].archive)
    result = invoke("download", "ml-100k", "--from", str(archive))
    assert result.exit_code == 0, result.output
    assert server.requests == []


def test_a_wrong_checksum_is_one_line(movielens, server):
    server.serve("/bad/ml-1m.zip", movielens["ml-1m"].archive[:-1] + b"x")
    result = invoke("download", "ml-1m", "--mirror", f"{server.url}/bad")
    assert result.exit_code == 1
    assert "error: ml-1m.zip has md5" in result.output and "removed it" in result.output
    assert "Traceback" not in result.output


def test_criteo_download_states_the_terms(criteo_logs):
    result = invoke("download", "criteo-terabyte", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "Criteo's terms of use" in " ".join(result.output.split())
    assert "criteo-terabyte ready: train 850, val 250, test 250 rows" in result.output


def test_generated_data_lists_its_bayes_scores():
    result = invoke("download", "syn-60-2400")
    assert result.exit_code == 0, result.output
    line = next(line for line in invoke("datasets").output.splitlines()
                if line.startswith("syn-60-2400 "))
    auc, bce = line.split()[4], line.split()[6]
    assert 0.5 < float(auc) <= 1 and 0 < float(bce) < 1


def test_sweep_on_a_missing_dataset_says_the_download_command(movielens, in_tmp):
    result = invoke("sweep", "-d", "ml-1m", "--epochs", "1")
    assert result.exit_code == 1, result.output
    assert "run `cce-bench download ml-1m` first, or pass --download" in result.output
    assert "Traceback" not in result.output


def test_unknown_dataset():
    result = invoke("download", "ml-2m")
    assert result.exit_code == 1 and "unknown dataset 'ml-2m'; choose from:" in result.output
