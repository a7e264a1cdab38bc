"""Downloads: whole and verified, resumed with Range after a dropped connection, never left
looking complete, checksum failures removed."""

from __future__ import annotations

import errno

import pytest

from cce_bench.datasets import download as dl
from cce_bench.errors import DatasetError

from . import fakes

DATA = bytes(range(256)) * 4000  # 1 MB, several read blocks


class Recorder:
    def __init__(self):
        self.started, self.advanced, self.notes = [], 0, []

    def start(self, label, total, done=0):
        self.started.append((label, total, done))

    def advance(self, n):
        self.advanced += n

    def finish(self):
        pass

    def note(self, message):
        self.notes.append(message)


def get(server, tmp_path, data=DATA, **kwargs):
    url = server.serve("/f.bin", data)
    kwargs.setdefault("backoff", 0)
    return dl.download(url, tmp_path / "f.bin", len(DATA), fakes.md5(DATA), **kwargs)


def test_full_download_is_verified_and_reports_bytes(server, tmp_path):
    seen = Recorder()
    path = get(server, tmp_path, reporter=seen)
    assert path.read_bytes() == DATA
    assert not (tmp_path / "f.bin.part").exists()
    assert ("f.bin", len(DATA), 0) in seen.started  # the bar knows the total
    assert seen.advanced >= len(DATA)  # download, then the md5 pass
    assert server.requests == [("/f.bin", None)]


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.drops = 1
    seen = Recorder()
    path = get(server, tmp_path, reporter=seen)
    assert path.read_bytes() == DATA
    first, second = server.requests
    assert first == ("/f.bin", None)
    assert second == ("/f.bin", f"bytes={len(DATA) // 2}-")
    assert any("resuming" in note for note in seen.notes)


def test_the_next_call_resumes_what_a_failed_one_left(server, tmp_path):
    server.drops = 5
    with pytest.raises(DatasetError, match=r"stopped at 512,000 of 1,024,000 bytes .*run the "
                                           r"same command again to resume"):
        get(server, tmp_path, retries=0)
    part = tmp_path / "f.bin.part"
    assert part.stat().st_size == len(DATA) // 2
    assert not (tmp_path / "f.bin").exists()  # nothing looks complete
    server.drops = 0
    assert get(server, tmp_path).read_bytes() == DATA
    assert server.requests[-1] == ("/f.bin", f"bytes={len(DATA) // 2}-")


def test_a_server_that_ignores_range_gives_the_whole_file_again(server, tmp_path):
    server.drops, server.ranges = 1, False
    assert get(server, tmp_path).read_bytes() == DATA


def test_a_wrong_checksum_removes_the_file(server, tmp_path):
    corrupt = bytearray(DATA)
    corrupt[1000] ^= 1
    with pytest.raises(DatasetError, match=r"f.bin has md5 \w+, the catalog says "
                                           rf"{fakes.md5(DATA)}; removed it"):
        get(server, tmp_path, data=bytes(corrupt))
    assert list(tmp_path.iterdir()) == [tmp_path / "f.bin.lock"]


def test_a_wrong_size_removes_the_file(server, tmp_path):
    with pytest.raises(DatasetError, match="has 1,023,999 bytes, the catalog says 1,024,000"):
        get(server, tmp_path, data=DATA[:-1])
    assert not (tmp_path / "f.bin.part").exists()


def test_http_errors_name_the_url_and_the_ways_out(server, tmp_path):
    with pytest.raises(DatasetError, match=r"/missing.bin answered HTTP 404 .*--mirror"):
        dl.download(f"{server.url}/missing.bin", tmp_path / "m.bin", None, None)


def test_an_unreachable_host_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match="stopped at 0 of 10 bytes"):
        dl.download("http://127.0.0.1:9/x", tmp_path / "x", 10, None, retries=0, timeout=2)


def test_a_full_disk_keeps_the_part_for_the_next_call(server, tmp_path):
    class FullAfterOneBlock(Recorder):
        def advance(self, n):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DatasetError, match="disk full while writing .*f.bin.part; free space "
                                           "and run the same command again to resume"):
        get(server, tmp_path, reporter=FullAfterOneBlock())
    assert (tmp_path / "f.bin.part").stat().st_size == len(DATA)  # written before it failed
    assert get(server, tmp_path).read_bytes() == DATA
    assert len(server.requests) == 1  # the part was whole: verified, not fetched again


def test_a_host_that_does_not_resolve_names_it_and_the_ways_out(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise dl.urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", no_network)
    seen = Recorder()
    with pytest.raises(DatasetError) as err:
        dl.download("https://files.grouplens.org/datasets/movielens/ml-1m.zip", tmp_path / "x",
                    10, None, backoff=0, reporter=seen)
    assert str(err.value) == ("cannot resolve files.grouplens.org (no network, or no such host); "
                              "use --mirror URL for a copy you can reach, or --from FILE for a "
                              "file you already have")
    assert seen.notes == []  # no "resuming" three times first
