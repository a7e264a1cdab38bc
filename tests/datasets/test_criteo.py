"""Criteo: parsing, log transform, id mapping (threshold, modulo), the day splits of Kaggle and
Terabyte, parallel workers, malformed input, and bounded memory on a larger file."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
import sys
from collections import Counter

import numpy as np
import pytest

from cce_bench.datasets import load_criteo, load_dataset, prepare, status
from cce_bench.datasets import criteo
from cce_bench.datasets.catalog import FIXED
from cce_bench.errors import ConfigError, DatasetError

from . import fakes
from .fakes import Notes
from .conftest import KAGGLE_ROWS


def expected_ids(hexes: list[list[str]], threshold: int = 1, modulo: int | None = None):
    """The id mapping written out plainly: per feature, 0 empty, 1 rare (threshold > 1), then
    the kept values (reduced modulo first) in increasing order."""
    n_features = len(hexes[0])
    ids = np.zeros((len(hexes), n_features), dtype=np.int64)
    sizes = []
    for j in range(n_features):
        values = [None if row[j] == "" else int(row[j], 16) % (modulo or 2**40) for row in hexes]
        counts = Counter(v for v in values if v is not None)
        kept = sorted(v for v, c in counts.items() if c >= threshold)
        first = 2 if threshold > 1 else 1
        rank = {v: first + k for k, v in enumerate(kept)}
        ids[:, j] = [0 if v is None else rank.get(v, 1) for v in values]
        sizes.append(len(kept) + first)
    return ids, sizes


def expected_dense(ints: list[list[str]]) -> np.ndarray:
    raw = np.array([[int(x) if x else 0 for x in row] for row in ints], dtype=np.float64)
    return np.log1p(np.maximum(raw, 0)).astype(np.float32)


def test_parse_block_matches_a_plain_reading():
    log = fakes.fake_log(500, seed=3)
    parsed = criteo.parse_block(log.text(), 1, "train.txt")
    assert parsed.labels.tolist() == log.labels.tolist()
    np.testing.assert_allclose(parsed.dense, expected_dense(log.ints), rtol=1e-6)
    assert (parsed.dense[np.array(log.ints) == ""] == 0).all()  # empty as 0
    hexes = np.array([[int(h, 16) if h else -1 for h in row] for row in log.hexes])
    assert (parsed.values == hexes).all()


def test_negative_integers_are_clipped_before_the_log():
    line = "1\t-5\t0\t1\t" + "\t".join(["3"] * 10) + "\t" + "\t".join(["00000000"] * 26) + "\n"
    parsed = criteo.parse_block(line.encode(), 1, "x")
    assert parsed.dense[0, :3].tolist() == [0.0, 0.0, pytest.approx(np.log(2))]


def test_kaggle_days_log_transform_and_ids(criteo_logs, server):
    notes = Notes()
    prepare("criteo-kaggle", reporter=notes)
    assert any("Criteo's terms of use" in n for n in notes.notes)
    data = load_criteo("criteo-kaggle")
    # 2,105 lines = 7 days of 300, the first 5 days one longer: 6 days train, the 7th halved.
    assert data.meta["day_rows"] == [301] * 5 + [300] * 2
    assert data.split_sizes == {"train": 1805, "test": 150, "val": 150}
    assert len(data.labels) == KAGGLE_ROWS
    assert data.labels.tolist() == criteo_logs.kaggle.labels.tolist()  # file order
    np.testing.assert_allclose(data.dense, expected_dense(criteo_logs.kaggle.ints), rtol=1e-6)
    ids, sizes = expected_ids(criteo_logs.kaggle.hexes)
    assert (data.categorical == ids).all() and data.vocab_sizes == sizes
    assert data.categorical.dtype == np.int32 and data.dense.dtype == np.float32
    assert data.labels.dtype == np.uint8
    test, val = data.test, data.val
    assert (test.labels == data.labels[1805:1955]).all()
    assert (val.labels == data.labels[1955:]).all()
    assert data.meta["source"] == f"md5:{fakes.md5(criteo_logs.kaggle_archive)}"
    assert data.meta["label_rate"] == pytest.approx(criteo_logs.kaggle.labels[:1805].mean())


@pytest.mark.parametrize("options", [{"threshold": 5}, {"max_ind_range": 16},
                                     {"threshold": 30, "max_ind_range": 8}])
def test_threshold_and_modulo_mappings(options, criteo_logs):
    prepare("criteo-kaggle", **options)
    data = load_criteo("criteo-kaggle", **options)
    ids, sizes = expected_ids(criteo_logs.kaggle.hexes, options.get("threshold", 1),
                              options.get("max_ind_range"))
    assert (data.categorical == ids).all() and data.vocab_sizes == sizes
    assert data.meta["options"] == {"threshold": 1, "max_ind_range": None} | options
    if "threshold" in options:
        assert (data.categorical == 1).any()  # some values were rare
    if "max_ind_range" in options:
        assert max(sizes) <= options["max_ind_range"] + 2
    assert status("criteo-kaggle") == "downloaded"  # the default options' entry is not built


def test_terabyte_days_and_from_a_folder_of_plain_and_gzip_days(criteo_logs, server, tmp_path):
    prepare("criteo-terabyte")
    data = load_criteo("criteo-terabyte")
    rows = [len(day.labels) for day in criteo_logs.days]  # 400, 450, 500
    assert data.meta["day_rows"] == rows
    assert data.split_sizes == {"train": 850, "test": 250, "val": 250}
    hexes = [row for day in criteo_logs.days for row in day.hexes]
    ids, sizes = expected_ids(hexes, modulo=1000)
    assert (data.categorical == ids).all() and data.vocab_sizes == sizes

    (tmp_path / "day_0").write_bytes(criteo_logs.days[0].text())
    for day in (1, 2):
        (tmp_path / f"day_{day}.gz").write_bytes(fakes.gzip_bytes(criteo_logs.days[day].text()))
    requests = len(server.requests)
    notes = Notes()
    prepare("criteo-terabyte", source=tmp_path, reporter=notes)
    assert len(server.requests) == requests
    assert any("no checksums for the Terabyte days" in n for n in notes.notes)
    again = load_criteo("criteo-terabyte")
    assert (again.categorical == data.categorical).all() and (again.dense == data.dense).all()
    (tmp_path / "day_2.gz").unlink()
    with pytest.raises(DatasetError, match="missing day_2 \\(plain or .gz\\)"):
        prepare("criteo-terabyte", source=tmp_path)


def test_from_train_txt_is_checked_by_its_md5(criteo_logs, tmp_path, server):
    train = tmp_path / "train.txt"
    train.write_bytes(criteo_logs.kaggle.text())
    prepare("criteo-kaggle", source=tmp_path)
    assert server.requests == [] and status("criteo-kaggle") == "ready"
    train.write_bytes(criteo_logs.kaggle.text()[:-100])
    with pytest.raises(DatasetError, match="train.txt has md5 .* the official train.txt"):
        prepare("criteo-kaggle", source=train)


def test_workers_give_the_same_arrays(tmp_path):
    log = fakes.fake_log(3000, seed=5)
    source = tmp_path / "train.txt"
    source.write_bytes(log.text())
    outputs = []
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        meta = criteo.preprocess([criteo.LogFile(source)], criteo.CriteoOptions(threshold=3),
                                 folder, workers=workers, block_bytes=20_000)
        outputs.append((meta["vocab_sizes"], np.load(folder / "categorical.npy"),
                        np.load(folder / "dense.npy"), np.load(folder / "labels.npy")))
    (sizes_1, *arrays_1), (sizes_2, *arrays_2) = outputs
    assert sizes_1 == sizes_2
    for a, b in zip(arrays_1, arrays_2):
        assert (a == b).all()


BAD = [
    (lambda f: f[:20], "20 fields, expected 40"),
    (lambda f: ["2"] + f[1:], "label is not 0 or 1"),
    (lambda f: f[:3] + ["1.5"] + f[4:], "I3 is not an integer"),
    (lambda f: f[:3] + ["-"] + f[4:], "I3 is not an integer"),
    (lambda f: f[:20] + ["12345678z"] + f[21:], "C7 is not 8-digit hex"),
    (lambda f: f[:20] + ["zz345678"] + f[21:], "C7 is not 8-digit hex"),
]


@pytest.mark.parametrize("edit,message", BAD)
def test_malformed_lines_name_the_file_and_line(edit, message, tmp_path):
    lines = fakes.fake_log(2000, seed=6).text().split(b"\n")
    fields = lines[1733].decode().split("\t")
    lines[1733] = "\t".join(edit(fields)).encode()
    source = tmp_path / "day_0"
    source.write_bytes(b"\n".join(lines))
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(DatasetError, match=f"^day_0 line 1734: {re.escape(message)}.*: '") as err:
        criteo.preprocess([criteo.LogFile(source)] * 2, criteo.CriteoOptions(), folder,
                          workers=1, block_bytes=30_000)  # the line is in a later block
    assert "\n" not in str(err.value)


def test_truncated_gzip_is_named(criteo_logs, tmp_path):
    day = tmp_path / "day_0.gz"
    day.write_bytes(fakes.gzip_bytes(criteo_logs.days[0].text())[:-50])
    with pytest.raises(DatasetError, match="day_0.gz is truncated or corrupt"):
        criteo.preprocess([criteo.LogFile(day), criteo.LogFile(day)], criteo.CriteoOptions(),
                          tmp_path, workers=1)


def test_a_failed_build_leaves_nothing(criteo_logs, tmp_path, data_cache, monkeypatch):
    monkeypatch.setitem(FIXED, "criteo-kaggle", replace(FIXED["criteo-kaggle"], member_md5=None))
    (tmp_path / "train.txt").write_bytes(criteo_logs.kaggle.text() + b"1\t2\n")
    with pytest.raises(DatasetError, match="train.txt line 2106: 2 fields"):
        prepare("criteo-kaggle", source=tmp_path)
    assert status("criteo-kaggle") == "missing"
    assert [p.name for p in (data_cache / "criteo-kaggle").iterdir()] == [".lock"]


def test_gmf_refuses_criteo_and_dlrm_refuses_interactions():
    with pytest.raises(ConfigError, match="criteo-kaggle is a Criteo dataset .* GMF needs an "
                                          "interaction dataset"):
        load_dataset("criteo-kaggle")
    with pytest.raises(ConfigError, match="ml-1m is not a Criteo dataset"):
        load_criteo("ml-1m")
    with pytest.raises(ConfigError, match="ml-1m takes no preprocessing options"):
        prepare("ml-1m", threshold=3)


MEMORY_SCRIPT = """
import json, sys
from pathlib import Path
from cce_bench.datasets import criteo

def status_kb(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))

source, folder, block = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
before = status_kb("VmRSS")  # resident after the imports
meta = criteo.preprocess([criteo.LogFile(source)], criteo.CriteoOptions(threshold=2), folder,
                         workers=1, block_bytes=block)
print(json.dumps({"rows": meta["rows"], "growth_kb": status_kb("VmHWM") - before}))
"""


def peak_growth_mb(tmp_path, copies: int, block: bytes) -> float:
    source = tmp_path / f"train-{copies}.txt"
    with open(source, "wb") as f:
        for _ in range(copies):
            f.write(block)
    out = tmp_path / f"out-{copies}"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(source), str(out),
                           str(1 << 20)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["rows"] == copies * 20_000
    return result["growth_kb"] / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_stays_bounded_on_a_larger_file(tmp_path):
    """Peak RSS of a subprocess grows by the same few MB over its resident size after the
    imports whether the file is 10 or 42 MB: blocks stream, outputs go to disk. The peak is
    the process's own high-water mark (VmHWM): getrusage's ru_maxrss is no use here, as Linux
    carries the parent's (pytest's) RSS over fork and exec into the child's maximum."""
    block = fakes.fake_log(20_000, seed=7, n_values=500).text()  # ~5 MB
    small, large = peak_growth_mb(tmp_path, 2, block), peak_growth_mb(tmp_path, 8, block)
    assert large < 30, f"peak RSS grew {large:.0f} MB on a 42 MB file"
    assert large < small + 6, f"peak RSS grew {small:.0f} MB on 10 MB, {large:.0f} MB on 42 MB"
