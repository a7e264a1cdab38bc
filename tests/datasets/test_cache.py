"""The data cache: entries appear whole or not at all, one build at a time, rebuilds replace."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cce_bench.datasets import cache


def test_two_builders_of_one_entry_build_it_once(data_cache):
    builds = []

    def build(folder):
        builds.append(folder)
        time.sleep(0.3)  # long enough for the other thread to wait on the lock
        cache.save_array(folder, "x", np.arange(3))
        return {"n": 3}

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        cache.build_entry("demo", 1, {"a": 1}, build))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and results[0] == results[1]
    assert cache.read_meta(results[0])["n"] == 3


def test_a_failed_build_leaves_nothing_and_a_rebuild_replaces(data_cache):
    def broken(folder):
        cache.save_array(folder, "x", np.arange(3))
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        cache.build_entry("demo", 1, {}, broken)
    assert [p.name for p in (data_cache / "demo").iterdir()] == [".lock"]

    first = cache.build_entry("demo", 1, {}, lambda folder: {"n": 1})
    second = cache.build_entry("demo", 1, {}, lambda folder: {"n": 2}, rebuild=True)
    assert first == second and cache.read_meta(second)["n"] == 2
    assert sorted(p.name for p in (data_cache / "demo").iterdir()) == [".lock", first.name]
    other = cache.build_entry("demo", 2, {}, lambda folder: {"n": 3})
    assert other != first  # a new version is a new entry


def test_an_abandoned_build_folder_is_cleared_by_the_next_build(data_cache):
    stale = data_cache / "demo" / ".v1-abc.building-xyz"
    stale.mkdir(parents=True)
    cache.build_entry("demo", 1, {}, lambda folder: {})
    assert not stale.exists()


def test_npy_writer_streams_rows_of_unknown_count(tmp_path):
    with cache.NpyWriter(tmp_path / "a.npy", np.float32, (13,)) as writer:
        writer.append(np.ones((5, 13)))
        writer.append(np.zeros((0, 13)))
        writer.append(np.full((2, 13), 2.0))
    array = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert array.shape == (7, 13) and array.dtype == np.float32 and array.sum() == 5 * 13 + 52
