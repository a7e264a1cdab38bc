"""The data cache: one folder per dataset build, created whole or not at all.

Root: $CCE_BENCH_DATA, else the user's cache folder (platformdirs). An entry lives in
<root>/<name>/<key>/ where the key names the preprocessing version and a hash of the options,
so a changed option or version gives a new entry. A build writes into a temporary folder beside
it and renames it into place under a file lock, so two processes never see or leave half an
entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import platformdirs

from cce_bench.errors import DatasetError

META_FILE = "meta.json"


def cache_root() -> Path:
    env = os.environ.get("CCE_BENCH_DATA")
    return Path(env) if env else Path(platformdirs.user_cache_dir("cce-bench"))


def entry_key(version: int, options: dict) -> str:
    text = json.dumps(options, sort_keys=True, default=str)
    return f"v{version}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def entry_dir(name: str, version: int, options: dict) -> Path:
    return cache_root() / name / entry_key(version, options)


def is_ready(path: Path) -> bool:
    return (path / META_FILE).is_file()


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    folder = cache_root() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "w")
    except OSError as err:
        raise DatasetError(f"cannot write the data cache at {folder}: {err.strerror}; "
                           "set CCE_BENCH_DATA to a writable folder") from err
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_entry(name: str, version: int, options: dict,
                build: Callable[[Path], dict]) -> Path:
    """Return the ready entry, building it first if needed.

    `build(folder)` writes the arrays into folder and returns the meta dict; meta.json is
    written last, and the folder renamed into place only then.
    """
    final = entry_dir(name, version, options)
    if is_ready(final):
        return final
    with locked(name):
        if is_ready(final):  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-"))
        try:
            meta = build(tmp)
            meta |= {"name": name, "version": version, "options": options}
            write_json(tmp / META_FILE, meta)
            if final.exists():
                shutil.rmtree(final)  # an entry without meta.json is an abandoned build
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def read_meta(path: Path) -> dict:
    with open(path / META_FILE) as f:
        return json.load(f)


def save_array(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", array)


def load_array(folder: Path, name: str) -> np.ndarray:
    """A memory-mapped array of an entry."""
    return np.load(folder / f"{name}.npy", mmap_mode="r")
