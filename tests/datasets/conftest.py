"""Fixtures: a local HTTP server, and the catalog pointed at fake files it serves."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from cce_bench.datasets.catalog import FIXED, SourceFile

from . import fakes

# Fake releases: (catalog name, ratings member in the zip, half stars).
MOVIELENS = {
    "ml-100k": ("ml-100k/u.data", False),
    "ml-1m": ("ml-1m/ratings.dat", False),
    "ml-10m": ("ml-10M100K/ratings.dat", True),
    "ml-20m": ("ml-20m/ratings.csv", True),
}
KAGGLE_ROWS = 7 * 300 + 5  # 7 days, the first 5 one line longer
TERABYTE_DAYS = 3


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    """A data cache of the test's own: downloads and entries never leak between tests."""
    root = tmp_path / "data-cache"
    monkeypatch.setenv("CCE_BENCH_DATA", str(root))
    return root


@dataclass
class FakeRelease:
    ratings: fakes.FakeRatings
    text: bytes  # the ratings file
    archive: bytes  # the zip


@pytest.fixture
def server():
    state, http_server = fakes.start_server()
    yield state
    http_server.shutdown()
    http_server.server_close()


@pytest.fixture
def movielens(server, monkeypatch) -> dict[str, FakeRelease]:
    """Every fake MovieLens release served under <server>/movielens/, its catalog entry's URL,
    size, md5 and row count swapped for the fake's."""
    releases = {}
    for seed, (name, (member, half)) in enumerate(MOVIELENS.items()):
        ratings = fakes.fake_ratings(seed=seed, half_stars=half)
        text = fakes.ratings_text(ratings, member.rsplit("/", 1)[-1])
        archive = fakes.zip_bytes({member: text, f"{member.split('/')[0]}/README": b"fake\n"})
        server.serve(f"/movielens/{name}.zip", archive)
        entry = FIXED[name]
        monkeypatch.setitem(FIXED, name, replace(
            entry, base_url=f"{server.url}/movielens", download_bytes=len(archive),
            files=(SourceFile(f"{name}.zip", len(archive), fakes.md5(archive)),),
            rows=len(ratings.users),
            member_sha256=fakes.sha256(text) if entry.member_sha256 else None))
        releases[name] = FakeRelease(ratings, text, archive)
    return releases


@dataclass
class FakeCriteo:
    kaggle: fakes.FakeLog  # train.txt
    kaggle_archive: bytes
    days: list[fakes.FakeLog]  # Terabyte-like day_0 .. day_2


@pytest.fixture
def criteo_logs(server, monkeypatch) -> FakeCriteo:
    """A Kaggle-like archive (readme.txt, test.txt, train.txt) and Terabyte-like gzip days,
    served under <server>/criteo/, with the catalog's entries swapped for them."""
    kaggle = fakes.fake_log(KAGGLE_ROWS, seed=1)
    archive = fakes.tar_gz_bytes({"readme.txt": b"fake\n", "test.txt": b"1\t2\n",
                                  "train.txt": kaggle.text()})
    entry = FIXED["criteo-kaggle"]
    name = entry.files[0].name
    server.serve(f"/criteo/{name}", archive)
    monkeypatch.setitem(FIXED, "criteo-kaggle", replace(
        entry, base_url=f"{server.url}/criteo", download_bytes=len(archive), rows=KAGGLE_ROWS,
        files=(SourceFile(name, len(archive), fakes.md5(archive)),),
        member_md5=fakes.md5(kaggle.text())))
    days = [fakes.fake_log(400 + 50 * day, seed=10 + day) for day in range(TERABYTE_DAYS)]
    for day, log in enumerate(days):
        server.serve(f"/criteo/day_{day}.gz", fakes.gzip_bytes(log.text()))
    entry = FIXED["criteo-terabyte"]
    monkeypatch.setitem(FIXED, "criteo-terabyte", replace(
        entry, base_url=f"{server.url}/criteo", rows=sum(len(d.labels) for d in days),
        files=tuple(SourceFile(f"day_{day}.gz", None, None) for day in range(TERABYTE_DAYS)),
        defaults={"threshold": 1, "max_ind_range": 1000}))
    return FakeCriteo(kaggle, archive, days)
