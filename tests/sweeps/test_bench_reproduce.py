"""`cce-bench bench --reproduce`: a spec's sweep estimated from measured steps."""

import math

import pytest
from typer.testing import CliRunner

from cce_bench.cli import app
from cce_bench.config import RunConfig
from cce_bench.errors import ConfigError
from cce_bench.sweeps.bench import trainable
from cce_bench.sweeps.bench_reproduce import gmf_specs, shaped_like, time_spec
from cce_bench.sweeps.specfile import load_spec

SPEC = """
name = "tiny-grid"
datasets = ["syn-60-2400"]
model = "gmf"
methods = ["full", "hash", "cce", "pq"]
budgets = "1:16"
budget_unit = "ppd"
seeds = 2
dim = 32
epochs = 2
batch_size = 500
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC)
    return path


def test_shaped_like_has_the_datasets_users_items_and_rows():
    ml = shaped_like("ml-1m")
    assert (ml.n_users, ml.n_items) == (6040, 3706)
    assert len(ml.train) == 1_000_209 - 2 * 6040 and len(ml.val) == 2 * 6040
    syn = shaped_like("syn-60-2400")
    assert (syn.n_users, syn.n_items, len(syn.train), len(syn.val)) == (60, 60, 2400, 120)
    assert int(syn.train.users.max()) < 60


def test_a_criteo_dataset_has_no_gmf_shape():
    with pytest.raises(ConfigError, match="criteo-kaggle"):
        shaped_like("criteo-kaggle")


def test_time_spec_covers_every_trained_run_once_and_counts_every_epoch(spec_file):
    spec = load_spec(spec_file)
    runs = trainable(spec.expand(), shaped_like("syn-60-2400"))
    too_small = len(spec.expand()) - len(runs)
    assert too_small > 0  # cce's one-ppd budget cannot hold its tables
    timing = time_spec(str(spec_file), "cpu", group_size=8, steps=2)  # stacks, as on a GPU
    assert (timing.runs, timing.too_small) == (len(runs), too_small)
    assert sum(g.runs for g in timing.groups) == len(runs)
    steps_per_epoch = math.ceil(2400 / 500)
    assert timing.run_steps == len(runs) * steps_per_epoch * 2
    assert timing.seconds >= sum(min(g.step_s, g.compressed_step_s) * steps_per_epoch * 2
                                 for g in timing.groups) > 0
    assert all(g.cluster_s > 0 for g in timing.groups if list(g.methods) == ["cce"])
    # pq compresses once, at its last round: that is timed, its other rounds cost nothing.
    pq = [g for g in timing.groups if list(g.methods) == ["pq"]]
    assert pq and all(g.compress_s > 0 and g.cluster_s == 0 for g in pq)
    # ... and its step is timed again once compressed (before, a stack trains one budget of
    # each seed: stacking.find_twins).
    assert all(g.compressed_step_s > 0 and g.compressed_step_s != g.step_s for g in pq)
    assert all(g.compressed_step_s == g.step_s for g in timing.groups if "pq" not in g.methods)
    assert set(timing.by_method()) == {"full", "hash", "cce", "pq"}
    assert sum(timing.by_method().values()) == pytest.approx(timing.seconds)
    assert not timing.untimed
    # Each stack's evaluation is timed for real, not read from the warm-up's cached scores.
    assert all(g.eval_s > 1e-4 for g in timing.groups)


def test_a_mixed_group_is_split_between_its_methods_by_their_runs():
    from cce_bench.sweeps.bench_reproduce import GroupTiming, SpecTiming

    group = GroupTiming({"cce": 3, "pq": 1}, 4, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 40.0)
    timing = SpecTiming("s", "d", 0, 4, 0, 0, 40.0, 0.0, [group])
    assert timing.by_method() == {"cce": 30.0, "pq": 10.0}


def test_methods_pick_the_specs_runs(spec_file):
    timing = time_spec(str(spec_file), "cpu", steps=2, methods=["hash"])
    assert {m for g in timing.groups for m in g.methods} == {"hash"}


def test_the_cli_prints_each_specs_estimate(spec_file, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["bench", "--reproduce", "--spec", str(spec_file),
                                      "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "tiny-grid" in result.output and "us per" in result.output
    assert '"spec": "tiny-grid"' in out.read_text()


@pytest.mark.parametrize("args, text", [
    (["--reproduce", "--model", "dlrm"], "GMF spec"),
    (["--reproduce", "--budget", "16"], "--budget"),
    (["--spec", "paper/ml-1m"], "--spec is for --reproduce"),
    (["--precision", "tf32"], "--precision is for --reproduce or --model dlrm"),
    (["--grid-only"], "--grid-only is for --model dlrm"),
])
def test_options_that_reproduce_would_ignore_are_one_line_errors(args, text):
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 1 and text in result.output
    assert "Traceback" not in result.output


def test_the_shipped_gmf_specs_are_what_make_reproduce_runs():
    assert "paper/ml-1m" in gmf_specs() and "paper/syn-100m" in gmf_specs()
    assert not any("criteo" in s for s in gmf_specs())


def test_precision_sets_every_timed_run(spec_file, monkeypatch):
    from cce_bench.sweeps import bench_reproduce

    seen = []
    real = bench_reproduce._time_group

    def spy(runs, *args):
        seen.extend({r.precision for r in runs})
        return real(runs, *args)

    monkeypatch.setattr(bench_reproduce, "_time_group", spy)
    timing = time_spec(str(spec_file), "cpu", steps=2, methods=["hash"], precision="tf32")
    assert set(seen) == {"tf32"} and timing.precision == "tf32"


def test_pq_compresses_after_its_schedules_last_clustering_point():
    from cce_bench.sweeps.bench_reproduce import compression_step

    # Epoch schedule: clustering after epochs 1..7 of 10 (cluster_until 0.75), 100 steps each.
    by_epoch = RunConfig("syn-60-2400", "pq", 256, epochs=10, cluster_until=0.75)
    assert compression_step(by_epoch, 100) == 700
    # Step schedule: every 30 steps through the first half of 2 x 47 steps.
    by_step = RunConfig("syn-60-2400", "pq", 256, epochs=2, cluster_every=30,
                        cluster_until=0.5)
    assert compression_step(by_step, 47) == 30
