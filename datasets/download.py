"""Downloads that resume, verify, and are never complete unless whole.

A file downloads into `<name>.part` beside its final name. A dropped connection leaves the part
where it is, and the next attempt (a retry here, or the next command) asks the server for the
rest with an HTTP Range request. Only when the whole file has the catalog's size and md5 is it
fsynced and renamed to its final name; a file with the wrong checksum is removed, so a retry
starts clean. A lock file keeps two processes from writing the same part.

Progress goes to a Reporter; RichReporter draws a bar with bytes, speed and time left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Protocol

from cce_bench.errors import DatasetError

CHUNK = 1 << 20
# Errors after which the rest of the file may still come: the next attempt resumes.
TRANSIENT = (ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError,
             urllib.error.URLError)


class Reporter(Protocol):
    def start(self, label: str, total: int | None, done: int = 0) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def start(self, label: str, total: int | None, done: int = 0) -> None: pass
    def advance(self, n: int) -> None: pass
    def finish(self) -> None: pass
    def note(self, message: str) -> None: pass


class RichReporter:
    """A rich progress bar per file (bytes, speed, time left) and notes as yellow lines."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None

    def start(self, label: str, total: int | None, done: int = 0) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self.finish()
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                  console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def note(self, message: str) -> None:
        self.finish()
        self.console.print(f"[yellow]{message}[/yellow]", highlight=False, soft_wrap=True)


def download(url: str, dest: Path, size: int | None, md5: str | None,
             reporter: Reporter | None = None, retries: int = 3, timeout: float = 60.0,
             backoff: float = 2.0) -> Path:
    """Fetch url into dest (resuming dest.part), verify size and md5, then rename into place.

    Raises DatasetError with what to do: on a checksum mismatch (the part is removed), an HTTP
    error, a full disk, or a connection that keeps dropping (the part stays for the next call).
    """
    reporter = reporter or SilentReporter()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _file_lock(dest.with_name(dest.name + ".lock")):
        if dest.exists():  # finished by another process while we waited
            return dest
        for attempt in range(retries + 1):
            try:
                _fetch(url, part, size, timeout, reporter)
                break
            except TRANSIENT as err:
                have = part.stat().st_size if part.exists() else 0
                if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                    raise DatasetError(f"{url} answered HTTP {err.code} ({err.reason}); check the "
                                       "URL or --mirror, or pass --from FILE") from None
                if _unresolved(err):  # no network (or no such host): retrying cannot help
                    host = urllib.parse.urlparse(url).hostname
                    raise DatasetError(f"cannot resolve {host} (no network, or no such host); "
                                       "use --mirror URL for a copy you can reach, or --from "
                                       "FILE for a file you already have") from None
                if attempt == retries:
                    raise DatasetError(
                        f"download of {dest.name} stopped at {have:,} of {_bytes(size)} "
                        f"({_reason(err)}); run the same command again to resume") from None
                reporter.note(f"connection lost at {have:,} bytes ({_reason(err)}); resuming")
                time.sleep(backoff * (attempt + 1))
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise DatasetError(f"disk full while writing {part}; free space and run the "
                                       "same command again to resume") from None
                raise
            finally:
                reporter.finish()
        verify(part, size, md5, reporter, label=dest.name, remove_on_mismatch=True)
        _fsync(part)
        os.replace(part, dest)
        _fsync_dir(dest.parent)
    return dest


def _fetch(url: str, part: Path, size: int | None, timeout: float, reporter: Reporter) -> None:
    """One attempt: request what part lacks and append it. Transient errors propagate."""
    _drop_link(part)  # never append through a link to a file outside the cache
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # not a prefix of this file: start over
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    headers = {"User-Agent": "cce-bench", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after `have`: whole (size unknown) or junk
            if size is None:
                return
            part.unlink()
            raise http.client.HTTPException("the server has no bytes past the part; "
                                            "restarting") from None
        raise
    with response:
        if have and response.status != 206:  # the server ignored the Range: take it all
            have = 0
        elif have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            part.unlink()
            raise http.client.HTTPException("the server resumed at another offset; restarting")
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else size
        reporter.start(part.name.removesuffix(".part"), size or expected, have)
        got = have
        with _open_for_writing(part, append=bool(have)) as out:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                got += len(block)
                reporter.advance(len(block))
        # http.client returns a short body without an error when the peer closes early.
        if expected is not None and got < expected:
            raise http.client.IncompleteRead(b"", expected - got)


def verify(path: Path, size: int | None, md5: str | None, reporter: Reporter | None = None,
           label: str | None = None, remove_on_mismatch: bool = False) -> str | None:
    """Check size and md5 of path; return its md5 (None when the catalog has none: hashing
    Terabyte's days would only cost time). A mismatch raises DatasetError (and removes the file
    when remove_on_mismatch: a downloaded file, never a user's own)."""
    reporter = reporter or SilentReporter()
    label = label or path.name
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        if remove_on_mismatch:
            path.unlink()
        raise DatasetError(f"{label} has {actual_size:,} bytes, the catalog says {size:,}"
                           + ("; removed it, run again to download it afresh"
                              if remove_on_mismatch else "; is it the official file?"))
    if md5 is None:
        return None
    digest = file_digest(path, "md5", reporter, f"verifying {label}")
    if digest != md5:
        if remove_on_mismatch:
            path.unlink()
        raise DatasetError(f"{label} has md5 {digest}, the catalog says {md5}"
                           + ("; removed it, run again to download it afresh (or use --mirror)"
                              if remove_on_mismatch else "; is it the official file?"))
    return digest


def file_digest(path: Path, algorithm: str, reporter: Reporter | None = None,
                label: str | None = None) -> str:
    reporter = reporter or SilentReporter()
    hasher = hashlib.new(algorithm)
    reporter.start(label or f"hashing {path.name}", path.stat().st_size)
    try:
        with open(path, "rb") as f:
            while block := f.read(CHUNK * 4):
                hasher.update(block)
                reporter.advance(len(block))
    finally:
        reporter.finish()
    return hasher.hexdigest()


def _unresolved(err: BaseException) -> bool:
    """Whether a failed request failed at name resolution (socket.gaierror, maybe wrapped)."""
    reason = getattr(err, "reason", err)
    return isinstance(reason, socket.gaierror) or isinstance(err, socket.gaierror)


def _drop_link(path: Path) -> None:
    """Remove path if it is a symbolic link (the link only, never what it points at)."""
    if path.is_symlink():
        path.unlink()


def _open_for_writing(path: Path, append: bool):
    """path opened for (appending or fresh) binary writing, refusing to follow a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o644), "ab" if append else "wb")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    _drop_link(path)
    with _open_for_writing(path, append=True) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return str(err.reason)
    if isinstance(err, http.client.IncompleteRead):
        return "connection closed early"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _bytes(size: int | None) -> str:
    return f"{size:,} bytes" if size is not None else "an unknown size"
