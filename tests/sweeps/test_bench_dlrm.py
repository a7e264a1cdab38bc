"""`cce-bench bench --model dlrm` on a CPU with small tables: every timing is there, and the
grid estimate adds up from the timings."""

from __future__ import annotations

import math

import pytest

from cce_bench.sweeps.bench_dlrm import (KAGGLE_TRAIN, PAPER_CAPS, StepTiming, _interpolate,
                                        grid_estimate, kaggle_shaped, lockstep_speedups,
                                        run_dlrm_bench)

SMALL = [min(v, 200) for v in (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145,
                               5683, 8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4,
                               7046547, 18, 15, 286181, 105, 142572)]


def test_kaggle_shaped_rows_respect_the_cardinalities():
    import torch

    split = kaggle_shaped(3000, torch.device("cpu"), SMALL)
    assert split.dense.shape == (3000, 13) and split.categorical.shape == (3000, 26)
    assert (split.categorical >= 0).all()
    assert (split.categorical < torch.tensor(SMALL)).all()
    # Power-law ids: the most frequent id of a 200-id feature takes far more than 1/200.
    counts = torch.bincount(split.categorical[:, 2].long())
    assert counts.max() > 3000 * 5 / 200


def test_the_benchmark_times_every_configuration_on_a_cpu():
    report = run_dlrm_bench("cpu", train_rows=2000, steps=2, methods=["full", "hash"],
                            caps=[1600], large_batch=256, vocabs=SMALL)
    assert [t.label for t in report.variants] == [
        "plain loop, 26 tables, dense SGD", "+ SGD fused into the lookup",
        "+ tables of one kind as one", "+ CUDA graph (the engine)"]
    assert [(t.method, t.cap) for t in report.methods] == [("full", 0), ("hash", 1600)]
    assert all(t.step_s > 0 and t.eval_s > 0 for t in report.methods)
    steps = math.ceil(KAGGLE_TRAIN / 128)
    assert all(t.epoch_s == pytest.approx(steps * t.step_s) for t in report.methods)
    assert [(t.label, t.batch_size) for t in report.large_batch] == [
        ("full, fp32", 256), ("full, tf32", 256), ("full, bf16", 256), ("cce, fp32", 256),
        ("cce, bf16", 256)]
    assert report.groups == []  # lockstep groups need a CUDA graph
    # full once and hash at 9 caps, 10 epochs.
    assert report.grid["runs"] == 10 and report.grid["steps_per_epoch"] == steps


def test_precision_sets_the_methods_and_grid_and_large_batches_keep_their_own():
    report = run_dlrm_bench("cpu", train_rows=2000, steps=2, methods=["hash"], caps=[1600],
                            variants=False, large_batch=256, vocabs=SMALL, precision="tf32")
    assert report.precision == "tf32" and report.to_dict()["precision"] == "tf32"
    assert [t.precision for t in report.methods] == ["tf32"]
    assert [t.precision for t in report.large_batch] == ["fp32", "tf32", "bf16", "fp32", "bf16"]


def test_a_cut_short_benchmark_resumes_from_its_report(tmp_path, monkeypatch):
    import json

    from cce_bench.errors import ConfigError
    from cce_bench.results import write_atomically
    from cce_bench.sweeps import bench_dlrm

    path = tmp_path / "bench.json"

    def write(report):
        write_atomically(path, json.dumps(report.to_dict()))

    options = dict(train_rows=2000, steps=2, methods=["hash"], caps=[1600, 8000],
                   variants=False, large_batch=0, vocabs=SMALL)
    first = run_dlrm_bench("cpu", checkpoint=write, **options)
    written = json.loads(path.read_text())
    assert [t["cap"] for t in written["methods"]] == [1600, 8000] and written["steps"] == 2
    # Cut short after the first cap: the resumed run measures only the second.
    written["methods"] = written["methods"][:1]
    written["grid"] = {}
    path.write_text(json.dumps(written))
    measured = []
    real = bench_dlrm.time_steps
    monkeypatch.setattr(bench_dlrm, "time_steps",
                        lambda run, *a, **k: measured.append(run.budget) or real(run, *a, **k))
    resumed = run_dlrm_bench("cpu", checkpoint=write, resume_from=path, **options)
    assert measured == [8000]
    assert resumed.methods[0] == first.methods[0]  # kept as measured, not re-timed
    assert resumed.grid["runs"] == 9
    # A report of other conditions (here: steps) is refused, not mixed in.
    with pytest.raises(ConfigError, match="steps 2.*has 3"):
        run_dlrm_bench("cpu", resume_from=path, **{**options, "steps": 3})
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a DLRM benchmark report"):
        run_dlrm_bench("cpu", resume_from=path, **options)
    with pytest.raises(ConfigError, match="not a DLRM benchmark report"):
        run_dlrm_bench("cpu", resume_from=tmp_path, **options)  # a folder


def test_grid_estimate_adds_step_evaluation_and_clustering_time():
    timings = [StepTiming("cce", "cce", PAPER_CAPS[0], 128, 1e-4, 0.0, 0.0, 2.0, 5.0),
               StepTiming("cce", "cce", PAPER_CAPS[-1], 128, 3e-4, 0.0, 0.0, 4.0, 7.0)]
    grid = grid_estimate(timings, epochs=10)
    steps, evals, clusters = (grid["steps_per_epoch"], grid["evaluations_per_epoch"],
                              grid["cluster_rounds"])
    assert (evals, clusters) == (steps // 50_000 + 1, 3)
    first, last = grid["per_run"][0], grid["per_run"][-1]
    assert first["seconds"] == pytest.approx(10 * (steps * 1e-4 + evals * 2.0) + 3 * 5.0)
    assert last["seconds"] == pytest.approx(10 * (steps * 3e-4 + evals * 4.0) + 3 * 7.0)
    assert grid["runs"] == 9
    assert _interpolate(PAPER_CAPS[4], [(1600, 1.0), (800_000, 2.0)]) == pytest.approx(
        1 + math.log(35_200 / 1600) / math.log(500))


def test_a_cap_whose_clustering_was_not_timed_takes_the_timed_caps_not_zero():
    timings = [StepTiming("cce", "cce", PAPER_CAPS[0], 128, 1e-4, 0.0, 0.0, 2.0, 5.0),
               StepTiming("cce", "cce", PAPER_CAPS[-1], 128, 1e-4, 0.0, 0.0, 2.0, None)]
    grid = grid_estimate(timings, epochs=1)
    steps, evals = grid["steps_per_epoch"], grid["evaluations_per_epoch"]
    last = grid["per_run"][-1]
    assert last["seconds"] == pytest.approx(steps * 1e-4 + evals * 2.0 + 3 * 5.0)


def test_lockstep_groups_shrink_step_time_by_their_measured_speed_up():
    alone = [StepTiming("cce", "cce", PAPER_CAPS[0], 128, 1e-4, 0.0, 0.0, 2.0, 5.0),
             StepTiming("cce", "cce", PAPER_CAPS[-1], 128, 3e-4, 0.0, 0.0, 4.0, 7.0),
             StepTiming("hash", "hash", PAPER_CAPS[0], 128, 2e-4, 0.0, 0.0, 1.0)]
    # 9 cce runs, one per cap, at 0.5e-4 s a run-step; alone they average over the caps.
    group = StepTiming("cce, 9 runs", "cce", PAPER_CAPS[0], 128, 0.5e-4, 0.0, 0.0, runs=9)
    mean_alone = sum(_interpolate(c, [(PAPER_CAPS[0], 1e-4), (PAPER_CAPS[-1], 3e-4)])
                     for c in PAPER_CAPS) / 9
    assert lockstep_speedups(alone, [group]) == {"cce": pytest.approx(mean_alone / 0.5e-4)}
    plain, grouped = grid_estimate(alone, 10), grid_estimate(alone, 10, groups=[group])
    speedup = mean_alone / 0.5e-4
    steps, evals = plain["steps_per_epoch"], plain["evaluations_per_epoch"]
    first = grouped["per_run"][0]
    assert first["seconds"] == pytest.approx(10 * (steps * 1e-4 / speedup + evals * 2.0) + 3 * 5.0)
    # hash has no group timing of its own: it takes the smallest speed-up measured (cce's).
    hash_first = next(r for r in grouped["per_run"] if r["method"] == "hash")
    assert hash_first["seconds"] == pytest.approx(10 * (steps * 2e-4 / speedup + evals * 1.0)
                                                  + 3 * 0.0)
    assert grouped["seconds"] < plain["seconds"]


def test_the_whole_grids_group_sets_every_runs_step_time():
    alone = [StepTiming("cce", "cce", PAPER_CAPS[0], 128, 1e-4, 0.0, 0.0, 2.0, 5.0),
             StepTiming("hash", "hash", PAPER_CAPS[0], 128, 2e-4, 0.0, 0.0, 1.0)]
    group = StepTiming("cce, 9 runs", "cce", PAPER_CAPS[0], 128, 0.5e-4, 0.0, 0.0, runs=9)
    whole = StepTiming("the whole grid", "grid", 0, 128, 0.4e-4, 0.0, 0.0, runs=46)
    grid = grid_estimate(alone, 10, groups=[group], whole=whole)
    steps, evals = grid["steps_per_epoch"], grid["evaluations_per_epoch"]
    by_method = {r["method"]: r["seconds"] for r in grid["per_run"]}
    # Every run-step at the grid's measured run-step; evaluation and clustering as alone.
    assert by_method["cce"] == pytest.approx(10 * (steps * 0.4e-4 + evals * 2.0) + 3 * 5.0)
    assert by_method["hash"] == pytest.approx(10 * (steps * 0.4e-4 + evals * 1.0))
    assert grid["whole_grid_run_step_s"] == 0.4e-4


def test_the_cli_passes_precision_to_the_dlrm_bench(monkeypatch):
    from typer.testing import CliRunner

    from cce_bench.cli import app
    from cce_bench.sweeps import bench_dlrm

    seen = {}

    def fake(*args, precision="fp32", variants=True, large_batch=16384, group_sizes=None,
             stack=True, **kwargs):
        seen.update(precision=precision, variants=variants, large_batch=large_batch,
                    group_sizes=group_sizes, stack=stack)
        return bench_dlrm.DlrmBenchReport("cpu", "cpu", "torch", "rev", 10, precision)

    monkeypatch.setattr(bench_dlrm, "run_dlrm_bench", fake)
    result = CliRunner().invoke(app, ["bench", "--model", "dlrm", "--precision", "tf32",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen == {"precision": "tf32", "variants": True, "large_batch": 16384,
                    "group_sizes": None, "stack": True}
    # --grid-only: what the grid estimate needs, without the variants and large batches, and
    # with every method timed the whole grid's group instead of each method's groups.
    result = CliRunner().invoke(app, ["bench", "--model", "dlrm", "--grid-only", "--device",
                                      "cpu", "--no-stack"])
    assert result.exit_code == 0, result.output
    assert seen == {"precision": "fp32", "variants": False, "large_batch": 0,
                    "group_sizes": (), "stack": False}
    result = CliRunner().invoke(app, ["bench", "--model", "dlrm", "--grid-only", "-m", "cce",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen["group_sizes"] is None  # cce's own groups
    result = CliRunner().invoke(app, ["bench", "--model", "dlrm", "--resume", "--device", "cpu"])
    assert result.exit_code != 0 and "--resume is for --model dlrm with --json" in result.output


def test_a_pq_run_of_a_lockstep_group_steps_compressed():
    import torch

    from cce_bench.sweeps.bench_dlrm import _group_member, dlrm_run

    train = kaggle_shaped(600, torch.device("cpu"), SMALL)
    epoch = _group_member(dlrm_run("pq", 1600), train, torch.device("cpu"), SMALL)
    assert epoch.model.hashed.compressed  # codebooks at stored codes, not full tables
    before = [p.detach().clone() for p in epoch.model.parameters()]
    epoch.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, epoch.model.parameters()))


def test_a_stacked_group_steps_every_run_compressed_where_pq():
    import torch

    from cce_bench.models.stacked_dlrm import StackedDLRM
    from cce_bench.sweeps.bench_dlrm import _stacked_group, dlrm_run

    train = kaggle_shaped(600, torch.device("cpu"), SMALL)
    runs = [dlrm_run("pq", cap, seed=k) for k, cap in enumerate([1600, 1600, 1000])]
    stack = _stacked_group(runs, train, torch.device("cpu"), SMALL)
    assert all(model.hashed.compressed for model in stack.models)
    assert isinstance(stack.model, StackedDLRM) and stack.model.size == 3
    stack.step()
    assert (stack.loss_sum > 0).all()  # every run took its step
