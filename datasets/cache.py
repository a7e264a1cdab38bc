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


def problem(path: Path) -> str | None:
    """Why an entry cannot be used (None: it can): not built, a damaged meta.json, or one of
    the arrays its meta.json lists missing or cut short."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        return "not built"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bytes that are not UTF-8
        return f"{meta_path} is damaged ({type(err).__name__})"
    for array in meta.get("arrays", []):  # entries built before arrays were listed: unchecked
        file = path / array
        try:
            np.load(file, mmap_mode="r")
        except FileNotFoundError:
            return f"{file} is missing"
        except (OSError, ValueError):
            return f"{file} is damaged"
    return None


def is_ready(path: Path) -> bool:
    """A whole entry: a damaged one is not ready, so the next build replaces it."""
    return problem(path) is None


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    folder = cache_root() / name
    lock = folder / ".lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if lock.is_symlink():  # never truncate or create what a planted link points at
            lock.unlink()
        handle = os.fdopen(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644), "w")
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
                build: Callable[[Path], dict], rebuild: bool = False) -> Path:
    """Return the ready entry, building it first if needed (or always, with rebuild).

    `build(folder)` writes the arrays into folder and returns the meta dict; meta.json is
    written last, and the folder renamed into place only then. A rebuild replaces a ready
    entry only once the new one is complete.
    """
    final = entry_dir(name, version, options)
    if is_ready(final) and not rebuild:
        return final
    with locked(name):
        if is_ready(final) and not rebuild:  # another process built it while we waited
            return final
        _remove_abandoned_builds(final.parent)
        try:
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building-"))
        except OSError as err:
            raise _unwritable(name, final.parent, err) from None
        try:
            try:
                meta = build(tmp)
            except OSError as err:  # a full disk or a read-only cache, mid-build
                raise _unwritable(name, final.parent, err) from None
            meta |= {"name": name, "version": version, "options": options,
                     "arrays": sorted(p.name for p in tmp.glob("*.npy"))}
            write_json(tmp / META_FILE, meta)
            if final.exists():  # a rebuild, or an entry without meta.json (abandoned)
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _unwritable(name: str, folder: Path, err: OSError) -> DatasetError:
    return DatasetError(f"cannot build {name} in {folder}: {err.strerror or err}; free space "
                        "there or set CCE_BENCH_DATA to a writable folder with room")


def _remove_abandoned_builds(folder: Path) -> None:
    """Temporary folders of builds that were killed (the caller holds the name's lock, so no
    build of this name is running)."""
    for path in folder.glob(".*.building-*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in folder.glob(".*.old-*"):
        shutil.rmtree(path, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def read_meta(path: Path) -> dict:
    try:
        with open(path / META_FILE) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path / META_FILE} is damaged ({type(err).__name__}); rebuild the "
                           f"dataset with `cce-bench download {path.parent.name} --force`"
                           ) from None


def save_array(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", array)


def load_array(folder: Path, name: str) -> np.ndarray:
    """A memory-mapped array of an entry; a missing, truncated or unreadable file is a
    DatasetError that names it and the command that rebuilds the entry."""
    path = folder / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        reason = "missing" if isinstance(err, FileNotFoundError) else " ".join(str(err).split())
        raise DatasetError(f"{path} is damaged ({reason}); rebuild the dataset with "
                           f"`cce-bench download {folder.parent.name} --force`") from None


def downloads_dir() -> Path:
    """Where downloaded source files live: <root>/downloads/<file name>."""
    return cache_root() / "downloads"


class NpyWriter:
    """Appends rows to a .npy file whose row count is known only at the end.

    The header is a fixed-size placeholder, rewritten with the final shape on close(), so
    rows stream to disk with plain writes: no memory map whose dirty pages would count
    against the process, and nothing held in memory.
    """

    HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + a padded dict; 64-aligned

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._file = open(self.path, "wb")
        self._file.write(b"\0" * self.HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        assert rows.shape[1:] == self.row_shape, (rows.shape, self.row_shape)
        self._file.write(rows.data)
        self.rows += rows.shape[0]

    def close(self) -> None:
        shape = (self.rows, *self.row_shape)
        header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype),
                       "fortran_order": False, "shape": shape})
        length = self.HEADER_BYTES - 10
        text = header.ljust(length - 1).encode("latin1") + b"\n"
        assert len(text) == length, "shape too long for the fixed .npy header"
        self._file.seek(0)
        self._file.write(b"\x93NUMPY\x01\x00" + length.to_bytes(2, "little") + text)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()
