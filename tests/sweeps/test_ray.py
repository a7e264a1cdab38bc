"""The Ray backend on a local Ray instance (CPU): the rows of the local backend, and a dead Ray
worker's run as a `failed` row. One Ray instance for the module: it takes seconds to start."""

from __future__ import annotations

import pytest

from cce_bench.sweeps import Execution, run_sweep
from cce_bench.sweeps.work import CRASH_HOOK_ENV
from tests.sweeps.test_runner import assert_same_rows, metrics, tiny_spec

ray = pytest.importorskip("ray", reason="the Ray backend needs the extra: pip install '.[ray]'")

CRASH_SEED = 7  # the run with this seed kills its Ray worker (see the fixture)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    # Ray workers start from the raylet's environment, not the test's: hand them the
    # session's data cache (tests/conftest.py) and the crash hook for one run.
    doomed = tiny_spec(tmp_path_factory.getbasetemp(), "x", methods=["hash"], budgets=[4],
                       seeds=[CRASH_SEED]).expand()[0]
    env = {"CCE_BENCH_DATA": str(tmp_path_factory.getbasetemp() / "data-cache"),
           CRASH_HOOK_ENV: doomed.run_id}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield doomed
    ray.shutdown()


def test_ray_gives_the_rows_of_the_local_backend(tmp_path, local_ray):
    on_ray = run_sweep(tiny_spec(tmp_path, "ray"), execution=Execution(backend="ray"))
    local = run_sweep(tiny_spec(tmp_path, "local"), execution=Execution(workers=0))
    assert on_ray.statuses == local.statuses == {"ok": 4}
    assert_same_rows(metrics(tmp_path / "ray.csv"), metrics(tmp_path / "local.csv"))


def test_a_dead_ray_worker_is_a_failed_row(tmp_path, local_ray):
    spec = tiny_spec(tmp_path, "crash", methods=["hash"], budgets=[4], seeds=[0, CRASH_SEED])
    summary = run_sweep(spec, execution=Execution(backend="ray"))
    assert summary.statuses == {"ok": 1, "failed": 1}
    assert "Ray task failed" in summary.first_errors["failed"]
