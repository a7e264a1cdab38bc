"""cached_meta: a dataset's meta.json when cached, None otherwise, never building anything."""

from __future__ import annotations

import json
import os

from cce_bench.datasets.meta import cached_meta


def write_meta(folder, data) -> None:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(data))


def test_missing_dataset_gives_none_and_builds_nothing(data_cache):
    assert cached_meta("syn-30-300") is None
    assert not (data_cache / "syn-30-300").exists()


def test_newest_ready_entry_wins_and_builds_in_progress_are_ignored(data_cache):
    write_meta(data_cache / "syn-31-310" / "v1-old", {"bayes_val_auc": 0.7})
    write_meta(data_cache / "syn-31-310" / "v2-new", {"bayes_val_auc": 0.8})
    write_meta(data_cache / "syn-31-310" / ".v3-x.building-abc", {"bayes_val_auc": 0.9})
    os.utime(data_cache / "syn-31-310" / "v1-old" / "meta.json", (1, 1))
    assert cached_meta("syn-31-310") == {"bayes_val_auc": 0.8}


def test_unreadable_meta_gives_none(data_cache):
    folder = data_cache / "syn-32-320" / "v1-x"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{half")
    assert cached_meta("syn-32-320") is None
