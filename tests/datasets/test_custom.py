"""Your own data: a CSV or Parquet of (user, item, label[, timestamp]) split like MovieLens,
cached like the other datasets, and refused with one line when it cannot be used."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import sys
from collections import defaultdict

import numpy as np
import pytest

from cce_bench.datasets import (cache, catalog, entry_path, info, load_dataset, prepare,
                                require, status)
from cce_bench.datasets import custom
from cce_bench.datasets.custom import Columns
from cce_bench.errors import ConfigError, DatasetError, UnknownName

from .fakes import Notes

NAME = "my-clicks"


def clicks(n_users: int = 12, seed: int = 0, ids: str = "str"):
    """Rows (user, item, label, timestamp) in shuffled order: sparse ids, tied timestamps,
    both labels, a user with 2 rows (validation only)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for item in rng.choice(20, size=2 if u == 0 else int(rng.integers(3, 7)), replace=False):
            user_id = f"u{7 * u + 3}" if ids == "str" else 1000 - 7 * u
            item_id = f"i{11 * item + 5}" if ids == "str" else 11 * int(item) + 5
            rows.append((user_id, item_id, int(u + item) % 2, 100 + 10 * int(rng.integers(0, 3))))
    return [rows[i] for i in rng.permutation(len(rows))]


def write_csv(path, rows, header=("user", "item", "label", "timestamp"), sep=","):
    text = sep.join(header) + "\n" + "".join(sep.join(map(str, row)) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def reference(rows, by_time: bool = True):
    """The MovieLens split written out plainly: each user's last two rows by (timestamp,
    file row) are validation."""
    by_user = defaultdict(list)
    for row, (user, _, _, time) in enumerate(rows):
        by_user[user].append((time, row))
    val = set()
    for entries in by_user.values():
        val |= {row for _, row in sorted(entries)[-2:]}
    split = {"train": [], "val": []}
    for row, (user, item, label, _) in enumerate(rows):
        split["val" if row in val else "train"].append((user, item, label))
    return split


def loaded(name: str, rows):
    """The entry's splits mapped back to the original ids (dense ids are in sorted id order)."""
    data = load_dataset(name)
    users, items = sorted({r[0] for r in rows}), sorted({r[1] for r in rows})
    assert (data.n_users, data.n_items) == (len(users), len(items))
    return {split: [(users[u], items[i], int(y)) for u, i, y in zip(
        part.users.tolist(), part.items.tolist(), part.labels.tolist())]
        for split, part in (("train", data.train), ("val", data.val))}


def test_a_csv_is_split_like_movielens_and_cached_with_its_source(tmp_path):
    rows = clicks()
    path = write_csv(tmp_path / "clicks.csv", rows)
    assert prepare(NAME, source=path) == entry_path(NAME) == custom.entry(NAME)
    assert loaded(NAME, rows) == reference(rows)
    meta = load_dataset(NAME).meta
    assert meta["kind"] == "custom" and meta["split"] == "by timestamp"
    assert meta["source"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["source_file"] == str(path.resolve())
    assert meta["source_bytes"] == path.stat().st_size
    assert meta["columns"] == {"user": "user", "item": "item", "label": "label",
                               "timestamp": "timestamp"}
    assert meta["users_val_only"] == 1 and meta["rows_read"] == len(rows)
    assert status(NAME) == "ready" and info(NAME).kind == "custom"
    assert NAME in [entry.name for entry in catalog()]
    assert require(NAME) == entry_path(NAME)


def test_integer_ids_become_dense_in_numeric_order(tmp_path):
    rows = clicks(ids="int")
    prepare(NAME, source=write_csv(tmp_path / "clicks.csv", rows))
    assert loaded(NAME, rows) == reference(rows)  # sorted() of ints: numeric order
    data = load_dataset(NAME)
    assert data.train.users.max() < data.n_users and data.val.items.max() < data.n_items


def test_without_timestamps_each_user_gets_two_seeded_random_validation_rows(tmp_path):
    rows = clicks(n_users=30)
    path = write_csv(tmp_path / "clicks.csv", [r[:3] for r in rows], header=("user", "item",
                                                                              "label"))
    notes = Notes()
    prepare(NAME, source=path, reporter=notes)
    assert any("no timestamp column" in n and "at random (seed 0)" in n for n in notes.notes)
    data = load_dataset(NAME)
    assert data.meta["split"] == "random (seed 0)" and data.meta["columns"]["timestamp"] is None
    counts = np.bincount(np.concatenate([data.train.users, data.val.users]))
    assert (np.bincount(data.val.users, minlength=len(counts)) == np.minimum(2, counts)).all()
    first = data.val.items.tolist()
    prepare(NAME, source=path, force=True)
    assert load_dataset(NAME).val.items.tolist() == first  # seeded: the same split again
    # Not simply the last two rows in file order.
    by_order = reference([(u, i, y, row) for row, (u, i, y, _) in enumerate(rows)])
    assert loaded(NAME, rows)["val"] != by_order["val"]


@pytest.mark.parametrize("file_name,sep", [("views.csv", ","), ("views.tsv", "\t"),
                                           ("views.csv.gz", ",")])
def test_other_column_names_formats_and_iso_dates(tmp_path, file_name, sep):
    rows = clicks()
    days = {100: "2024-01-01", 110: "2024-01-01T10:00:00", 120: "2024-01-02T00:00:00+00:00"}
    table = [(y, "extra", u, days[t], i) for u, i, y, t in rows]
    path = write_csv(tmp_path / file_name, table, ("clicked", "other", "uid", "when", "video"),
                     sep=sep)
    prepare(NAME, source=path,
            columns=Columns(user="uid", item="video", label="clicked", timestamp="when"))
    assert loaded(NAME, rows) == reference(rows)


def test_true_false_labels_and_trailing_blank_lines(tmp_path):
    rows = clicks()
    path = write_csv(tmp_path / "clicks.csv", [(u, i, bool(y), t) for u, i, y, t in rows])
    path.write_text(path.read_text() + "\n\n")
    prepare(NAME, source=path)
    assert loaded(NAME, rows) == reference(rows)


GOOD = "user,item,label,timestamp\na,x,1,1\na,y,0,2\na,z,1,3\nb,x,0,1\nb,y,1,2\nb,z,0,3\n"
BAD_FILES = [
    ("", "clicks.csv is empty; expected a header line"),
    ("user,item,label\n", "clicks.csv has a header but no rows"),
    ("uid,item,label\n1,2,1\n", r"clicks.csv has no column 'user' \(its columns: uid, item, "
                                r"label\); name the user column with --user-column COLUMN"),
    (GOOD + "a,w,4,4\n", r"clicks.csv line 8: the label is 4, not 0 or 1; .*binarize ratings"),
    (GOOD + "a,w,3.5,4\n", "clicks.csv line 8: the label is 3.5, not 0 or 1"),
    (GOOD + "a,w,yes,4\n", "clicks.csv line 8: the label is 'yes', not 0 or 1"),
    (GOOD + "a,w,,4\n", "clicks.csv line 8: the label is empty"),
    (GOOD.replace("b,x,0,1", ",x,0,1"), "clicks.csv line 5: the user id is empty"),
    (GOOD.replace("b,y,1,2", "b,NaN,1,2"), "clicks.csv line 6: the item id is empty"),
    (GOOD.replace("b,y,1,2", "\n"), "clicks.csv line 6: the user id is empty"),
    (GOOD + "a,w,1,yesterday\n", "clicks.csv line 8: the timestamp is 'yesterday', not a "
                                  "number like the rest"),
    (GOOD.replace(",1\n", ",2024-01-01\n").replace(",2\n", ",2024-01-02\n"),
     "clicks.csv line 4: the timestamp is '3', not a date like the rest of the column"),
    (GOOD.replace(",1\n", ",soon\n").replace(",2\n", ",x\n").replace(",3\n", ",later\n"),
     "clicks.csv line 2: the timestamp is 'soon', neither a number nor a date; give numbers"),
    (GOOD + "a,w,1,\n", "clicks.csv line 8: the timestamp is empty"),
    (GOOD + "a,w,1,4,9\n", "clicks.csv line 8: 5 fields, the header has 4; fix or remove"),
    (GOOD.replace(",0,", ",1,"), "every label in .*clicks.csv is 1; .*no non-clicks"),
    ("user,item,label\na,x,1\na,y,0\nb,x,0\n", "clicks.csv: no user has more than 2 rows "
                                              r"\(2 users, 3 rows\); .*at least 3"),
    ("user,item,label,timestamp\na,x,0,1\na,w,1,1\na,y,1,2\na,z,1,3\n",
     "clicks.csv: the validation split .* holds only label 1; AUC needs"),
    (b"user,item,label\n\xff,x,1\n", "clicks.csv is not UTF-8 text"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_a_file_that_cannot_be_used_is_one_line_and_leaves_nothing(text, message, tmp_path,
                                                                     data_cache):
    path = tmp_path / "clicks.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DatasetError, match=message) as err:
        prepare(NAME, source=path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert custom.find(NAME) is None and NAME not in [d.name for d in catalog()]
    assert not [p for p in (data_cache / NAME).iterdir() if p.is_dir()]
    with pytest.raises(UnknownName, match=f"your own data: cce-bench download {NAME} --from"):
        info(NAME)


def test_the_good_file_of_those_cases_is_accepted(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text(GOOD)
    prepare(NAME, source=path)
    assert status(NAME) == "ready"


def test_the_same_column_twice_is_refused(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text(GOOD)
    with pytest.raises(DatasetError, match="column 'item' is asked for twice"):
        prepare(NAME, source=path, columns=Columns(user="item"))


@pytest.mark.parametrize("file_name,message", [
    ("nope.csv", "--from .*nope.csv: no such file"),
    ("folder", "--from .*folder: not a file; give the CSV or Parquet file"),
    ("clicks.txt", r"--from .*clicks.txt: expected a .csv, .tsv \(either may end in .gz\) or "
                   ".parquet file"),
])
def test_missing_or_unreadable_paths(file_name, message, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "clicks.txt").write_text(GOOD)
    with pytest.raises(DatasetError, match=message):
        prepare(NAME, source=tmp_path / file_name)


@pytest.mark.parametrize("name,message", [
    ("ml-1m", "ml-1m is a built-in dataset and clicks.csv is not its release; .*give it a name "
              "of its own: `cce-bench download my-clicks --from"),
    ("syn-60-2400", "syn-60-2400 is a built-in dataset and clicks.csv is not its release"),
    ("criteo-synthetic", "criteo-synthetic is a built-in dataset"),
    ("ml-2m", "dataset name 'ml-2m' is kept for cce-bench's own datasets .*e.g. my-ml-2m"),
    ("syn-mine", "'syn-mine' is kept for cce-bench's own datasets"),
    ("criteo-mine", "'criteo-mine' is kept"),
    ("downloads", "'downloads' is kept"),
    ("My-Clicks", "dataset name 'My-Clicks' has characters a name may not; use up to 64 "
                  "lowercase letters, digits, - and _"),
    ("my clicks", "'my clicks' has characters"),
    ("../outside", "'../outside' has characters"),
    ("a/b", "'a/b' has characters"),
    (".hidden", "'.hidden' has characters"),
    ("", "'' has characters"),
    ("x" * 65, "has characters"),
])
def test_names_that_are_built_in_reserved_or_malformed_are_refused(name, message, tmp_path,
                                                                   data_cache):
    path = tmp_path / "clicks.csv"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match=message) as err:
        prepare(name, source=path)
    assert "\n" not in str(err.value)
    assert not data_cache.exists() or not any(data_cache.iterdir())  # nothing created


def test_column_and_criteo_options_do_not_mix_with_the_other_kind(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match="ml-1m is a built-in dataset; the column options"):
        prepare("ml-1m", columns=Columns(user="uid"))
    with pytest.raises(ConfigError, match=r"--threshold do not apply to your own data"):
        prepare(NAME, source=path, threshold=2)
    with pytest.raises(ConfigError, match=r"--mirror do not apply"):
        prepare(NAME, source=path, mirror="https://example.org")


def test_an_unchanged_source_is_kept_a_changed_one_refused_and_force_rebuilds(tmp_path):
    path = write_csv(tmp_path / "clicks.csv", clicks())
    meta_file = prepare(NAME, source=path) / cache.META_FILE
    built = os.stat(meta_file).st_ino
    prepare(NAME, source=path)
    prepare(NAME)
    assert os.stat(meta_file).st_ino == built  # not rebuilt

    rows = clicks(n_users=15, seed=1)
    write_csv(path, rows)
    with pytest.raises(DatasetError, match=rf"{NAME} was built from .*clicks.csv \(.* bytes, "
                                           r"sha256:\w+\); .*clicks.csv differs .*; pass --force "
                                           rf"to rebuild {NAME} from it \(results logged"):
        prepare(NAME, source=path)
    assert os.stat(meta_file).st_ino == built and load_dataset(NAME).n_users == 12
    prepare(NAME, source=path, force=True)
    assert loaded(NAME, rows) == reference(rows)

    with pytest.raises(DatasetError, match=r"was built with columns user=user, item=item, "
                                           r"label=label, timestamp=timestamp; pass --force"):
        prepare(NAME, source=path, columns=Columns(user="item", item="user"))
    prepare(NAME, source=path, columns=Columns(user="item", item="user"), force=True)
    assert load_dataset(NAME).meta["columns"]["user"] == "item"


def test_without_from_a_damaged_entry_is_rebuilt_from_the_recorded_source(tmp_path):
    rows = clicks()
    path = write_csv(tmp_path / "clicks.csv", rows)
    folder = prepare(NAME, source=path)
    (folder / "val_labels.npy").unlink()
    assert status(NAME).startswith("damaged: ") and "val_labels.npy is missing" in status(NAME)
    with pytest.raises(DatasetError, match=f"run `cce-bench download {NAME}` to rebuild it"):
        require(NAME)
    prepare(NAME)  # what `cce-bench download my-clicks` runs
    assert status(NAME) == "ready" and loaded(NAME, rows) == reference(rows)

    prepare(NAME, force=True)  # --force without --from: from the recorded file
    assert status(NAME) == "ready"
    (folder / "val_labels.npy").unlink()
    write_csv(path, clicks(seed=3))
    with pytest.raises(DatasetError, match="differs .*pass --force"):
        prepare(NAME)  # a damaged entry is not silently rebuilt from other data
    path.unlink()
    with pytest.raises(DatasetError, match=f"{NAME} was built from .*clicks.csv, which is "
                                           f"gone; add it again with `cce-bench download {NAME} "
                                           "--from FILE --force`"):
        prepare(NAME)


def test_a_damaged_meta_is_listed_damaged_and_rebuilt_from_the_file(tmp_path):
    rows = clicks()
    path = write_csv(tmp_path / "clicks.csv", rows)
    folder = prepare(NAME, source=path)
    (folder / cache.META_FILE).write_text("{half")
    assert info(NAME).kind == "custom" and status(NAME).startswith("damaged")
    with pytest.raises(DatasetError, match=r"meta.json is damaged, so where my-clicks came from "
                                           r"is unknown; add it again with `cce-bench download "
                                           r"my-clicks --from FILE --force`"):
        prepare(NAME)
    prepare(NAME, source=path)
    assert loaded(NAME, rows) == reference(rows)


def test_a_build_cut_short_never_looks_ready_and_a_failed_rebuild_keeps_the_old(
        tmp_path, monkeypatch, data_cache):
    path = write_csv(tmp_path / "clicks.csv", clicks())
    saved = cache.save_array

    def full_disk(folder, name, array):
        if name == "val_users":
            raise OSError(28, "No space left on device")
        saved(folder, name, array)

    monkeypatch.setattr(cache, "save_array", full_disk)
    with pytest.raises(DatasetError, match="cannot build my-clicks in .*No space left"):
        prepare(NAME, source=path)
    assert custom.find(NAME) is None and [p.name for p in (data_cache / NAME).iterdir()] == [
        ".lock"]
    monkeypatch.setattr(cache, "save_array", saved)
    prepare(NAME, source=path)
    monkeypatch.setattr(cache, "save_array", full_disk)
    with pytest.raises(DatasetError, match="cannot build"):
        prepare(NAME, source=path, force=True)
    assert status(NAME) == "ready" and load_dataset(NAME).n_users == 12


def test_nothing_is_written_through_a_link_in_the_cache(tmp_path, data_cache):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (data_cache / NAME).mkdir(parents=True)
    (data_cache / NAME / ".lock").symlink_to(precious)
    prepare(NAME, source=write_csv(tmp_path / "clicks.csv", clicks()))
    assert precious.read_text() == "keep me"
    assert not (data_cache / NAME / ".lock").is_symlink()


def test_reading_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "clicks.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match=r"reading .*clicks.parquet needs pyarrow, which "
                                           r"cce-bench does not install: `pip install pyarrow`"):
        prepare(NAME, source=path)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_parquet_with_integer_ids_and_datetimes(tmp_path):
    import pandas as pd

    rows = clicks(ids="int")
    frame = pd.DataFrame(rows, columns=["user", "item", "label", "t"])
    frame["timestamp"] = pd.to_datetime(frame.pop("t"), unit="s")
    frame.to_parquet(tmp_path / "clicks.parquet")
    prepare(NAME, source=tmp_path / "clicks.parquet")
    assert loaded(NAME, rows) == reference(rows)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="bad.parquet is not a readable Parquet file"):
        prepare("other", source=tmp_path / "bad.parquet")
