"""Sweeps: spec files and their grids of runs, resumable dispatch to workers (local processes,
Ray), progress.

The names load with their modules on first use, so reading a spec's defaults (the help of
`cce-bench sweep`) does not import the engine and torch.
"""

from __future__ import annotations

import importlib

_MODULE_OF = {
    "DEFAULT_BUDGETS": "spec", "SweepSpec": "spec",
    "find_spec": "specfile", "load_spec": "specfile", "shipped_specs": "specfile",
    "Execution": "execution", "SilentObserver": "runner", "SweepObserver": "runner",
    "SweepPlan": "runner", "SweepSummary": "runner", "plan_sweeps": "runner",
    "run_sweep": "runner", "run_sweeps": "runner",
    "Task": "work", "group_runs": "work", "train_group": "work", "train_one": "work",
}


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_BUDGETS", "Execution", "SilentObserver", "SweepObserver", "SweepPlan",
           "SweepSpec", "SweepSummary", "Task", "find_spec", "group_runs", "load_spec",
           "plan_sweeps", "run_sweep", "run_sweeps", "shipped_specs", "train_group", "train_one"]
