"""The built wheel holds every subpackage (the top-level folders map into cce_bench)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["cce_bench", "cce_bench.embeddings", "cce_bench.models", "cce_bench.datasets",
               "cce_bench.sweeps", "cce_bench.plots", "cce_bench.cli"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("cce_bench-*.whl")
    return path


def test_every_subpackage_imports_from_the_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = ("import importlib, sys\n"
            f"for name in {SUBPACKAGES!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(site)!r}), module.__file__\n"
            "from cce_bench.cli import app\n"
            "print('ok')\n")
    # Run outside the source tree, with the wheel's files first on the path.
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_wheel_carries_the_paper_specs_and_a_console_script(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    shipped = sorted(p.name for p in (ROOT / "sweeps" / "paper").glob("*.toml"))
    packed = sorted(Path(n).name for n in names if n.startswith("cce_bench/sweeps/paper/"))
    assert packed == shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "cce-bench = cce_bench.cli:main" in archive.read(entry_points).decode()


def test_wheel_carries_the_authors_reference_numbers(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        folder = "cce_bench/plots/reference/"
        for name in ("authors-gmf-results.csv", "authors-criteo-figures.csv", "README.md"):
            assert folder + name in names, sorted(n for n in names if "plots" in n)
        packed = archive.read(folder + "authors-gmf-results.csv")
    assert packed == (ROOT / "plots" / "reference" / "authors-gmf-results.csv").read_bytes()
    assert b"github.com/thomasahle/cce" in (ROOT / "plots" / "reference" / "README.md").read_bytes()
