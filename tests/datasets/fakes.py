"""Small files in the exact formats of the official releases, and a local HTTP server.

MovieLens: ml-100k.zip with ml-100k/u.data (tabs), a 1m-like ml-1m.zip with ml-1m/ratings.dat
(`::`), a 20m-like ml-20m.zip with ml-20m/ratings.csv (header, half stars), a 10m-like
ml-10M100K/ratings.dat (half stars). Criteo: tab-separated lines of a label, 13 integers (some
empty or negative) and 26 8-digit hex values (some empty).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field

import numpy as np

# --- MovieLens --------------------------------------------------------------------------------


@dataclass
class FakeRatings:
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray


def fake_ratings(n_users: int = 40, n_items: int = 30, per_user: int = 8, seed: int = 0,
                 half_stars: bool = False) -> FakeRatings:
    """Ratings in a shuffled order, sparse original ids, timestamps with ties, every rating
    value (3 included)."""
    rng = np.random.default_rng(seed)
    users, items, ratings, stamps = [], [], [], []
    values = np.arange(1, 11) / 2 if half_stars else np.arange(1, 6)
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        times = 1_000_000 + rng.integers(0, 4, size=per_user) * 100  # many ties
        for item, time in zip(chosen, times):
            users.append(7 * u + 3)  # sparse ids: dense re-indexing must happen
            items.append(11 * item + 5)
            ratings.append(rng.choice(values))
            stamps.append(time)
    order = rng.permutation(len(users))
    return FakeRatings(np.array(users)[order], np.array(items)[order],
                       np.array(ratings, dtype=float)[order], np.array(stamps)[order])


def ratings_text(r: FakeRatings, fmt: str) -> bytes:
    def rating(x: float) -> str:
        return f"{x:.1f}" if fmt == "ratings.csv" else (f"{x:g}")

    rows = zip(r.users, r.items, r.ratings, r.timestamps)
    if fmt == "u.data":
        lines = [f"{u}\t{i}\t{int(x)}\t{t}" for u, i, x, t in rows]
    elif fmt == "ratings.dat":
        lines = [f"{u}::{i}::{rating(x)}::{t}" for u, i, x, t in rows]
    else:
        lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{rating(x)},{t}"
                                                       for u, i, x, t in rows]
    return ("\n".join(lines) + "\n").encode()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Criteo -----------------------------------------------------------------------------------


@dataclass
class FakeLog:
    labels: np.ndarray  # (n,)
    ints: list[list[str]]  # (n, 13) raw fields
    hexes: list[list[str]]  # (n, 26) raw fields

    def text(self) -> bytes:
        lines = ["\t".join([str(y)] + i + h) for y, i, h in zip(self.labels, self.ints, self.hexes)]
        return ("\n".join(lines) + "\n").encode()


def fake_log(n: int, seed: int = 0, n_values: int = 40) -> FakeLog:
    """n Criteo lines: about 10% empty fields, negative integers, per-feature pools of
    n_values hex values drawn with skewed frequencies (so a threshold cuts some)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    ints = rng.integers(-3, 5000, (n, 13)).astype(str)
    ints[rng.random((n, 13)) < 0.1] = ""
    pool = rng.integers(0, 2**32, (26, n_values))
    weights = 1.0 / np.arange(1, n_values + 1)
    picks = rng.choice(n_values, size=(n, 26), p=weights / weights.sum())
    hexes = np.array([[f"{pool[j, k]:08x}" for j, k in enumerate(row)] for row in picks])
    hexes[rng.random((n, 26)) < 0.1] = ""
    return FakeLog(labels, ints.tolist(), hexes.tolist())


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class FakeServer:
    """A threading HTTP server on 127.0.0.1 serving `files` by path, with Range support.

    drops: the next this many responses send half their body, then close the connection.
    ranges: honour Range requests (False: always answer 200 with the whole file).
    requests: (path, Range header) of every request, in order.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    drops: int = 0
    ranges: bool = True
    requests: list = field(default_factory=list)
    url: str = ""

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return f"{self.url}{path}"


def start_server() -> tuple[FakeServer, http.server.ThreadingHTTPServer]:
    state = FakeServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - the http.server interface
            body = state.files.get(self.path)
            asked = self.headers.get("Range")
            state.requests.append((self.path, asked))
            if body is None:
                self.send_error(404)
                return
            start = 0
            if asked and state.ranges:
                start = int(asked.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.drops > 0:
                state.drops -= 1
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    return state, server


class Notes:
    """A download/preprocess reporter that keeps the notes (warnings) it is given."""

    def __init__(self):
        self.notes = []

    def start(self, *args): pass
    def advance(self, n): pass
    def finish(self): pass

    def note(self, message):
        self.notes.append(message)
