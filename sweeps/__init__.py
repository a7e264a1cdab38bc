"""Sweeps: spec files and their grids of runs, resumable dispatch to workers (local processes,
Ray), progress."""

from .runner import (Execution, SilentObserver, SweepObserver, SweepPlan, SweepSummary,
                     plan_sweeps, run_sweep, run_sweeps)
from .spec import DEFAULT_BUDGETS, SweepSpec
from .specfile import find_spec, load_spec, shipped_specs
from .work import Task, group_runs, train_group, train_one

__all__ = ["DEFAULT_BUDGETS", "Execution", "SilentObserver", "SweepObserver", "SweepPlan",
           "SweepSpec", "SweepSummary", "Task", "find_spec", "group_runs", "load_spec",
           "plan_sweeps", "run_sweep", "run_sweeps", "shipped_specs", "train_group", "train_one"]
