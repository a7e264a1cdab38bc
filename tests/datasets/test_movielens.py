"""MovieLens: download, --from, --mirror, the paper's protocol on every release format, and
malformed input."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cce_bench.datasets import cache, entry_path, load_dataset, prepare, status
from cce_bench.datasets.movielens import read_ratings, split_last_two
from cce_bench.errors import DatasetError

from . import fakes
from .fakes import Notes
from .conftest import MOVIELENS


def reference(r: fakes.FakeRatings):
    """The protocol written out plainly: (user, item, label) rows of train and val, in file
    order, with original ids."""
    kept = [(u, i, x, t, row) for row, (u, i, x, t)
            in enumerate(zip(r.users, r.items, r.ratings, r.timestamps)) if x != 3]
    by_user = defaultdict(list)
    for entry in kept:
        by_user[entry[0]].append(entry)
    val_rows = set()
    for entries in by_user.values():
        val_rows |= {e[4] for e in sorted(entries, key=lambda e: (e[3], e[4]))[-2:]}
    rows = {"train": [], "val": []}
    for u, i, x, _, row in kept:
        rows["val" if row in val_rows else "train"].append((u, i, int(x >= 4)))
    return rows


def loaded_rows(name: str, r: fakes.FakeRatings):
    """The cache entry's splits mapped back to original ids (dense ids are in id order)."""
    data = load_dataset(name)
    kept = r.ratings != 3
    users, items = np.unique(r.users[kept]), np.unique(r.items[kept])
    assert (data.n_users, data.n_items) == (len(users), len(items))
    return {split: list(zip(users[part.users.numpy()].tolist(), items[part.items.numpy()].tolist(),
                            part.labels.int().tolist()))
            for split, part in (("train", data.train), ("val", data.val))}


@pytest.mark.parametrize("name", list(MOVIELENS))
def test_download_and_protocol_on_every_format(name, movielens, server, data_cache):
    release = movielens[name]
    assert status(name) == "missing"
    prepare(name)
    assert status(name) == "ready"
    assert (data_cache / "downloads" / f"{name}.zip").read_bytes() == release.archive
    assert loaded_rows(name, release.ratings) == reference(release.ratings)
    meta = load_dataset(name).meta
    assert meta["rows_read"] == len(release.ratings.users)
    assert meta["rows_dropped_neutral"] == int((release.ratings.ratings == 3).sum()) > 0
    assert meta["source"] == f"md5:{fakes.md5(release.archive)}"


def test_half_stars_only_an_exact_3_is_dropped_and_3_5_is_a_negative(movielens):
    prepare("ml-20m")
    r = movielens["ml-20m"].ratings
    assert {2.5, 3.5, 4.5} <= set(r.ratings.tolist())
    data = load_dataset("ml-20m")
    assert len(data.train) + len(data.val) == int((r.ratings != 3).sum())
    clicks = int(data.train.labels.sum() + data.val.labels.sum())
    assert clicks == int((r.ratings >= 4).sum())


def test_a_second_prepare_downloads_nothing(movielens, server):
    prepare("ml-1m")
    requests = len(server.requests)
    prepare("ml-1m")
    assert len(server.requests) == requests


def test_mirror_takes_the_same_file_names_from_another_base(movielens, server):
    server.serve("/mirror/ml-1m.zip", movielens["ml-1m"].archive)
    prepare("ml-1m", mirror=f"{server.url}/mirror/")
    assert server.requests == [("/mirror/ml-1m.zip", None)]
    assert status("ml-1m") == "ready"


def test_from_the_official_archive_needs_no_network(movielens, server, tmp_path):
    archive = tmp_path / "ml-1m.zip"
    archive.write_bytes(movielens["ml-1m"].archive)
    prepare("ml-1m", source=archive)
    assert server.requests == [] and status("ml-1m") == "ready"
    assert archive.exists()


def test_from_an_archive_with_the_wrong_md5_keeps_the_users_file(movielens, tmp_path):
    archive = tmp_path / "ml-1m.zip"
    archive.write_bytes(movielens["ml-100k"].archive)
    with pytest.raises(DatasetError, match="ml-1m.zip has .*, the catalog says"):
        prepare("ml-1m", source=archive)
    assert archive.exists() and status("ml-1m") == "missing"


def test_from_an_extracted_folder_checks_rows_and_warns(movielens, tmp_path):
    folder = tmp_path / "ml-10M100K"
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(movielens["ml-10m"].text)
    notes = Notes()
    prepare("ml-10m", source=tmp_path, reporter=notes)  # the folder the zip unpacked into
    assert status("ml-10m") == "ready"
    assert any("no checksum is known for ratings.dat" in n and "row count" in n
               for n in notes.notes)
    assert loaded_rows("ml-10m", movielens["ml-10m"].ratings) == reference(
        movielens["ml-10m"].ratings)

    (folder / "ratings.dat").write_bytes(movielens["ml-10m"].text.split(b"\n", 1)[1])
    with pytest.raises(DatasetError, match="has 319 ratings, the release has 320"):
        prepare("ml-10m", source=folder)


def test_from_u_data_is_checked_by_its_sha256(movielens, tmp_path):
    data = tmp_path / "u.data"
    data.write_bytes(movielens["ml-100k"].text)
    prepare("ml-100k", source=data)
    assert cache.read_meta(entry_path("ml-100k"))["source"].startswith("sha256:")
    data.write_bytes(movielens["ml-100k"].text.replace(b"\t1\t", b"\t2\t", 1))
    with pytest.raises(DatasetError, match=r"u.data has sha256 \w+, the official u.data has"):
        prepare("ml-100k", source=data)


def test_a_changed_source_preprocesses_again(movielens, tmp_path):
    prepare("ml-1m")
    first = cache.read_meta(entry_path("ml-1m"))
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(movielens["ml-1m"].text)
    prepare("ml-1m", source=folder)  # unverified by checksum: built again from it
    second = cache.read_meta(entry_path("ml-1m"))
    assert first["source"].startswith("md5:") and second["source"] is None


def test_loading_a_missing_dataset_says_the_command(movielens):
    with pytest.raises(DatasetError, match=r"dataset ml-1m is not in the data cache .*; run "
                                           r"`cce-bench download ml-1m` first, or pass --download"):
        load_dataset("ml-1m")
    assert len(load_dataset("ml-1m", download=True).val) > 0


BAD_LINES = [
    ("ml-1m", b"1::2::3\n", "line 2: 3 fields, expected 4"),
    ("ml-1m", b"1::2::x::4\n", "line 2: rating 'x' is not a number"),
    ("ml-1m", b"1::2::7::4\n", "line 2: rating 7.0 is outside 0.5..5"),
    ("ml-100k", b"1\t2\t4\n", "line 2: 3 fields, expected 4"),
    ("ml-100k", b"1\tb\t4\t5\n", "line 2: item 'b' is not an integer"),
    ("ml-20m", b"1,2,4.0,5,6\n", "line 3: 5 fields, expected 4"),
    ("ml-20m", b"\n", "line 3: 1 fields, expected 4"),
]


@pytest.mark.parametrize("name,line,message", BAD_LINES)
def test_malformed_lines_name_the_file_and_line(name, line, message, movielens, tmp_path,
                                                data_cache):
    text = movielens[name].text
    head, _, tail = text.partition(b"\n")
    if name == "ml-20m":  # after the header and one rating
        first, _, tail = tail.partition(b"\n")
        head = head + b"\n" + first
    member = MOVIELENS[name][0]
    ratings = tmp_path / member
    ratings.parent.mkdir(parents=True)
    ratings.write_bytes(head + b"\n" + line + tail)
    with pytest.raises(DatasetError, match=f"{member.rsplit('/', 1)[-1]} {message}") as err:
        prepare(name, source=tmp_path) if name != "ml-100k" else read_ratings(tmp_path, member)
    assert "\n" not in str(err.value)
    assert status(name) == "missing"
    assert not [p for p in (data_cache / name).glob("*") if p.is_dir()]  # nothing half-written


def test_a_bad_csv_header_is_named(tmp_path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_bytes(b"user,item,rating,time\n1,2,4.0,5\n")
    with pytest.raises(DatasetError, match="line 1: header 'user,item,rating,time'"):
        read_ratings(ratings, "ml-25m/ratings.csv")


def test_truncated_and_wrong_archives(movielens, tmp_path):
    truncated = tmp_path / "ml-1m.zip"
    truncated.write_bytes(movielens["ml-1m"].archive[:-200])
    with pytest.raises(DatasetError, match="not a readable zip archive .*--force"):
        read_ratings(truncated, "ml-1m/ratings.dat")
    other = tmp_path / "other.zip"
    other.write_bytes(movielens["ml-100k"].archive)
    with pytest.raises(DatasetError, match="has no ml-1m/ratings.dat; is it the right archive"):
        read_ratings(other, "ml-1m/ratings.dat")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=40))
def test_split_takes_each_users_last_two_by_time_then_row(rows):
    users = np.array([u for u, _ in rows])
    times = np.array([t for _, t in rows])
    val = split_last_two(users, times)
    expected = set()
    for user in set(users.tolist()):
        mine = sorted((t, row) for row, (u, t) in enumerate(rows) if u == user)
        expected |= {row for _, row in mine[-2:]}
    assert set(np.flatnonzero(val).tolist()) == expected


def test_each_users_validation_rows_are_its_latest(movielens):
    prepare("ml-1m")
    r = movielens["ml-1m"].ratings
    kept = r.ratings != 3
    users, times = r.users[kept], r.timestamps[kept]
    val = split_last_two(users, times)
    for user in np.unique(users):
        mine = users == user
        assert val[mine].sum() == min(2, mine.sum())
        assert times[mine & val].min() >= times[mine & ~val].max(initial=0)


def test_unused_paths_are_clean(movielens, data_cache):
    prepare("ml-100k")
    leftovers = [p.name for p in (data_cache / "ml-100k").iterdir()]
    assert sorted(leftovers) == [".lock", entry_path("ml-100k").name]
    assert sorted(p.name for p in (data_cache / "downloads").iterdir()) == [
        "ml-100k.zip", "ml-100k.zip.lock"]
    assert Path(entry_path("ml-100k"), "meta.json").is_file()
