"""Sweep specs: TOML and flags into one checked SweepSpec; expansion into runs with stable ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cce_bench.embeddings import get_method, method_names
from cce_bench.errors import ConfigError
from cce_bench.sweeps import SweepSpec, find_spec, load_spec, shipped_specs
from cce_bench.sweeps.spec import power_range
from tests.conftest import TINY_DATASET


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_power_of_two_range_includes_both_ends():
    assert power_range("2:4096", "budgets") == [2 ** k for k in range(1, 13)]
    assert power_range("16:16", "budgets") == [16]
    assert SweepSpec(datasets=TINY_DATASET, budgets="4:16,100").budgets == [4, 8, 16, 100]


@pytest.mark.parametrize("bad, why", [
    ("3:64", "3 is not a power of two"),
    ("64:2", "64 > 2"),
    ("2:x", "write lo:hi"),
    ("0:8", "0 is not a power of two"),
])
def test_a_bad_range_names_the_field_and_the_fix(tmp_path, bad, why):
    path = write(tmp_path, f'datasets = "{TINY_DATASET}"\nbudgets = "{bad}"\n')
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: field 'budgets': bad range '{bad}'")
    assert why in message


def test_an_unknown_field_is_named_with_the_likely_one(tmp_path):
    path = write(tmp_path, f'datasets = "{TINY_DATASET}"\nbatch-size = 512\n')
    with pytest.raises(ConfigError, match=r"unknown field 'batch-size'; did you mean "
                                          r"'batch_size'\? spec fields are: name, datasets"):
        load_spec(path)
    with pytest.raises(ConfigError, match="unknown field 'bogus'"):
        load_spec(None, {"bogus": 1})


def test_an_empty_method_list_is_refused(tmp_path):
    path = write(tmp_path, f'datasets = "{TINY_DATASET}"\nmethods = []\n')
    with pytest.raises(ConfigError, match=r"field 'methods' is empty"):
        load_spec(path)


@pytest.mark.parametrize("fields, message", [
    ({"methods": ["cce", "nope"]}, "field 'methods': unknown method 'nope'; choose from: full"),
    ({"datasets": "imagenet"}, "field 'datasets': unknown dataset 'imagenet'"),
    ({"n_chunks": [3]}, "field 'n_chunks': 3 does not divide dim 32"),
    ({"seeds": [1, 1]}, "field 'seeds': [1, 1] repeats a seed"),
    ({"seeds": 0}, "field 'seeds': must be at least 1, not 0"),
    ({"epochs": "ten"}, "field 'epochs': expected an integer, got 'ten'"),
    ({"epochs": True}, "field 'epochs': expected an integer, got True"),
    ({"lr": 0}, "field 'lr': must be a positive number, not 0.0"),
    ({"lr": float("inf")}, "field 'lr': must be a positive number, not inf"),
    ({"weight_decay": float("nan")}, "field 'weight_decay': must be a number >= 0, not nan"),
    ({"model": "dlrm"}, "field 'datasets': syn-60-2400 is an interaction dataset; DLRM needs a "
                        "Criteo dataset"),
    ({"optimizer": "adam"}, "field 'optimizer': 'adam' is not one of adamw, sgd"),
    ({"eval_every": -1}, "field 'eval_every': must be at least 0, not -1"),
    ({"bottom_mlp": "13-64"}, "fields 'bottom_mlp' and 'top_mlp' are DLRM's; GMF has no MLP"),
    ({"cluster_until": 1.5}, "field 'cluster_until': must be in [0, 1]"),
    ({"budget_unit": "bytes"}, "field 'budget_unit': 'bytes' is not one of ppd, params"),
    ({"kmeans": "sklearn"}, "field 'kmeans': 'sklearn' is not one of auto, faiss, torch"),
    ({"shuffle": "random"}, "field 'shuffle': 'random' is not one of rows, blocks"),
    ({"shuffle": "blocks"}, "field 'shuffle': 'blocks' is for DLRM's Criteo rows streamed from "
                            "the cache; GMF data fits on the device (use rows)"),
    ({"device": "gpu"}, "field 'device': 'gpu' is not auto, cpu, cuda or cuda:N"),
    ({"name": "a/b"}, "field 'name': 'a/b' must be a file name"),
])
def test_bad_values_name_their_field(fields, message):
    with pytest.raises(ConfigError) as err:
        SweepSpec(**({"datasets": TINY_DATASET} | fields))
    assert message in str(err.value)


@pytest.mark.parametrize("fields, message", [
    ({"model": "gmf"}, "field 'datasets': criteo-synthetic-100 is a Criteo dataset (dense and "
                       "categorical features); GMF needs an interaction dataset"),
    ({"bottom_mlp": "13-64-8"}, "field 'bottom_mlp': bottom_mlp '13-64-8' must run from the 13 "
                                "dense features to the embedding dim 16, e.g. '13-512-256-16'"),
    ({"bottom_mlp": "13-x-16"}, "field 'bottom_mlp': bottom_mlp '13-x-16' is not a list of layer "
                                "widths"),
    ({"top_mlp": "512-256"}, "field 'top_mlp': top_mlp '512-256' must end in one logit"),
])
def test_bad_dlrm_settings_name_their_field(fields, message):
    with pytest.raises(ConfigError) as err:
        SweepSpec(**({"datasets": "criteo-synthetic-100", "model": "dlrm"} | fields))
    assert message in str(err.value)


def test_dlrm_defaults_are_dlrm_kaggle_settings():
    spec = SweepSpec(datasets="criteo-synthetic-100", model="dlrm", methods="cce,full",
                     budgets=[100])
    assert (spec.dim, spec.batch_size, spec.lr, spec.weight_decay, spec.optimizer) == \
        (16, 128, 0.1, 0.0, "sgd")
    assert (spec.bottom_mlp, spec.top_mlp) == ("13-512-256-64-16", "512-256-1")
    assert (spec.eval_every, spec.cluster_every, spec.cluster_until) == (50_000, 50_000, 0.05)
    cce = [r for r in spec.expand() if r.method == "cce"]
    assert [r.budget for r in cce] == [1600] and cce[0].model == "dlrm"
    assert cce[0].bottom_mlp == "13-512-256-64-16" and cce[0].optimizer == "sgd"
    # GMF's run ids are those of the version before DLRM existed: its new fields, at their
    # GMF values, stay out of the hash, so earlier results files still resume.
    gmf = SweepSpec(datasets=TINY_DATASET, methods="cce", budgets=[16]).expand()[0]
    before = {k: v for k, v in gmf.to_dict().items() if k not in
              ("optimizer", "eval_every", "cluster_every", "bottom_mlp", "top_mlp",
                   "precision", "shuffle")}
    text = json.dumps(before, sort_keys=True, default=str)
    assert gmf.run_id == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_not_toml_is_one_clear_error(tmp_path):
    path = write(tmp_path, "methods = [cce\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        load_spec(path)


def test_flags_override_the_file_field_by_field(tmp_path):
    path = write(tmp_path, f'datasets = ["{TINY_DATASET}"]\nmethods = ["cce", "ce"]\n'
                           'budgets = "4:16"\nseeds = 2\nepochs = 3\n')
    spec = load_spec(path, {"methods": ["hash"], "epochs": None, "seeds": "0,5"})
    assert spec.name == "exp"  # named after the file
    assert spec.methods == ["hash"] and spec.seeds == [0, 5]  # from the flags
    assert spec.budgets == [4, 8, 16] and spec.epochs == 3  # from the file (epochs flag unset)
    assert spec.dim == 32 and spec.batch_size == 4096  # defaults


def test_a_bad_flag_is_not_blamed_on_the_file(tmp_path):
    path = write(tmp_path, f'datasets = ["{TINY_DATASET}"]\nbudgets = [4]\n')
    with pytest.raises(ConfigError) as err:
        load_spec(path, {"budgets": ["5:9"]})
    assert str(err.value).startswith("field 'budgets': bad range '5:9'")


def test_list_fields_take_repeats_and_commas_like_flags():
    spec = SweepSpec(datasets=[TINY_DATASET], methods=["cce,ce", "hash"], budgets=["4", "16,64"],
                     n_chunks="1:4", seeds="3")
    assert spec.methods == ["cce", "ce", "hash"]
    assert spec.budgets == [4, 16, 64] and spec.n_chunks == [1, 2, 4] and spec.seeds == [0, 1, 2]


def test_expansion_counts_and_budget_units():
    spec = SweepSpec(datasets=TINY_DATASET, methods="all", budgets="4:16", n_chunks=[2, 4],
                     seeds=2)
    assert spec.methods == method_names()
    runs = spec.expand()
    compressed = [m for m in spec.methods if get_method(m).family != "uncompressed"]
    chunked = [m for m in compressed if get_method(m).cls.uses_chunks]
    # 3 budgets x 2 n_chunks for methods that use chunks, 3 budgets for the others, one full
    # table; x 2 seeds.
    assert len(runs) == (len(chunked) * 3 * 2 + (len(compressed) - len(chunked)) * 3
                         + len(spec.methods) - len(compressed)) * 2
    assert {r.budget for r in runs if r.method == "cce"} == {4 * 32, 8 * 32, 16 * 32}
    absolute = SweepSpec(datasets=TINY_DATASET, budgets=[1000, 4096], budget_unit="params")
    assert [r.budget for r in absolute.expand()] == [1000, 4096]


def test_run_ids_are_stable_and_depend_only_on_the_runs():
    spec = dict(datasets=TINY_DATASET, methods=["cce", "hash"], budgets="4:16", seeds=2)
    ids = [r.run_id for r in SweepSpec(**spec).expand()]
    assert len(set(ids)) == len(ids)
    assert ids == [r.run_id for r in SweepSpec(**spec).expand()]
    # Where results go and where runs train do not change what a run is.
    elsewhere = SweepSpec(**spec, name="other", results=Path("x"), device="cpu")
    assert ids == [r.run_id for r in elsewhere.expand()]
    # The same run written in ppd or in params is the same run.
    absolute = SweepSpec(**(spec | {"budgets": [128, 256, 512]}), budget_unit="params")
    assert ids == [r.run_id for r in absolute.expand()]
    # Any setting that changes training changes every id.
    changed = SweepSpec(**spec, lr=2e-3)
    assert not set(ids) & {r.run_id for r in changed.expand()}


# Each paper spec's dataset and ppd range, as the authors' results folders hold them
# (github.com/thomasahle/cce, results/); ml-10m, which they did not run, follows ml-1m.
AUTHORS_GRID = {
    "ml-1m": ("ml-1m", (4, 8192)), "ml-10m": ("ml-10m", (4, 8192)),
    "n-chunks": ("ml-1m", (4, 8192)), "ml-20m": ("ml-20m", (4, 131072)),
    "ml-25m": ("ml-25m", (2, 262144)), "syn-1m": ("syn-6000-1000000", (4, 8192)),
    "syn-10m": ("syn-10000-10000000", (4, 16384)), "syn-20m": ("syn-60000-20000000", (4, 65536)),
    "syn-25m": ("syn-95456-25000000", (4, 131072)),
    "syn-100m": ("syn-100000-100000000", (4, 65536)),
}


def test_every_shipped_spec_loads_and_expands():
    names = shipped_specs()
    assert {"paper/ml-1m", "paper/ml-10m", "paper/ml-20m", "paper/ml-25m", "paper/syn-1m",
            "paper/syn-10m", "paper/syn-20m", "paper/syn-25m", "paper/syn-100m",
            "paper/n-chunks"} <= set(names)
    for name in names:
        spec = load_spec(name)
        runs = spec.expand()
        assert runs and spec.name == Path(name).name, name
        if spec.model == "dlrm":
            continue  # below
        assert spec.seeds == [0, 1, 2] and spec.dim == 32 and spec.model == "gmf", name
        lo, hi = AUTHORS_GRID[spec.name][1]
        assert spec.budgets == power_range(f"{lo}:{hi}", "budgets"), name
        assert spec.datasets == [AUTHORS_GRID[spec.name][0]], name
    movielens = load_spec("paper/ml-1m")
    assert movielens.methods == method_names() and movielens.n_chunks == [4]
    chunks = load_spec("paper/n-chunks.toml")
    assert chunks.methods == ["ce", "cce"] and chunks.n_chunks == [1, 2, 4, 8, 16]
    # The Criteo specs: the caps and methods of the authors' two Criteo figures.
    kaggle = load_spec("paper/criteo-kaggle")
    assert kaggle.model == "dlrm" and kaggle.datasets == ["criteo-kaggle"]
    assert kaggle.budgets == [16 * k for k in (100, 220, 500, 1000, 2200, 5000, 10000, 22000,
                                               50000)] and kaggle.budget_unit == "params"
    assert kaggle.methods == ["full", "cce", "ce", "hash", "dhe", "pq"] and kaggle.seeds == [0]
    assert (kaggle.dim, kaggle.batch_size, kaggle.epochs, kaggle.eval_every) == (16, 128, 10,
                                                                                50_000)
    terabyte = load_spec("paper/criteo-terabyte")
    assert terabyte.budgets == [100, 500, 1000, 5000, 10000, 50000] and terabyte.dim == 64
    assert (terabyte.batch_size, terabyte.bottom_mlp, terabyte.top_mlp) == (
        2048, "13-512-256-64", "512-512-256-1")
    # Terabyte streams in shuffled blocks (sequential reads of the cache); Kaggle, resident,
    # keeps one permutation of all rows.
    assert terabyte.shuffle == "blocks" and {r.shuffle for r in terabyte.expand()} == {"blocks"}
    assert kaggle.shuffle == "rows"


def test_a_spec_is_found_by_path_or_shipped_name(tmp_path):
    path = write(tmp_path, f'datasets = "{TINY_DATASET}"\n')
    assert find_spec(path) == path
    assert find_spec("paper/ml-1m") == find_spec("paper/ml-1m.toml")
    with pytest.raises(ConfigError, match=r"no spec file 'paper/ml-1n'; did you mean "
                                          r"'paper/ml-1m'\? give a path"):
        find_spec("paper/ml-1n")


def test_the_n_chunks_grid_expands_only_methods_that_use_it():
    spec = SweepSpec(datasets=TINY_DATASET, methods="hash,ce,full,qr", budgets=[16, 64],
                     n_chunks="1:8")
    runs = spec.expand()
    counts = {m: sum(r.method == m for r in runs) for m in spec.methods}
    assert counts == {"hash": 2, "ce": 8, "full": 1, "qr": 2}  # ce: 2 budgets x 4 values
    assert {r.n_chunks for r in runs if r.method == "hash"} == {1}
    assert {name for name in method_names() if not get_method(name).cls.uses_chunks} == {
        "full", "hash", "hnet", "qr", "ldim", "dhe"}
