"""Shared fixtures: every test gets its own data cache and results folder."""

from __future__ import annotations

import os
import tempfile

import pytest

# cuBLAS is bitwise reproducible only with a fixed workspace, which must be set before the
# first CUDA matrix product; tests that compare CUDA runs exactly rely on it.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# Triton (the CUDA row kernels, kernels/) caches compiled programs under the home folder by
# default; tests keep theirs in a temporary folder.
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="cce-bench-triton-"))

import torch  # noqa: E402

# A dataset small enough for end-to-end tests to train in a second: 60 users x 60 items,
# 40 training interactions each.
TINY_DATASET = "syn-60-2400"


@pytest.fixture(scope="session", autouse=True)
def session_data_cache(tmp_path_factory):
    """The session's data cache, set before any fixture of a wider scope than a function loads
    data: no test ever reads or writes the user's real cache."""
    root = tmp_path_factory.getbasetemp() / "data-cache"
    saved = os.environ.get("CCE_BENCH_DATA")
    os.environ["CCE_BENCH_DATA"] = str(root)
    yield root
    if saved is None:
        os.environ.pop("CCE_BENCH_DATA", None)
    else:
        os.environ["CCE_BENCH_DATA"] = saved


@pytest.fixture(autouse=True)
def data_cache(session_data_cache, monkeypatch):
    """Point the data cache at a folder shared by the session (generation is cached)."""
    monkeypatch.setenv("CCE_BENCH_DATA", str(session_data_cache))
    return session_data_cache


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so results/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class _RequiresCuda:
    """Skipped without a CUDA device, and marked gpu so that `pytest -m gpu` selects it: a
    decorator, or a list of marks for pytest.param(..., marks=requires_cuda)."""

    marks = [pytest.mark.gpu,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

    def __call__(self, test):
        for mark in self.marks:
            test = mark(test)
        return test

    def __iter__(self):
        return iter(self.marks)

    def __len__(self):
        return len(self.marks)

    def __contains__(self, mark):
        return mark in self.marks


requires_cuda = _RequiresCuda()


@pytest.fixture
def deterministic():
    """Sorted (bitwise reproducible) gradient sums instead of atomic ones, for exact checks on
    CUDA: a reordered last bit can move a run's stopping epoch or a k-means assignment."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def run_interpreted(script: str, *args: str, timeout: int = 300) -> None:
    """Run a Python script in a subprocess with TRITON_INTERPRET=1 (Triton's programs run with
    numpy: no GPU needed), from the project root; skip where triton is missing, fail with the
    end of its stderr where it fails."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
