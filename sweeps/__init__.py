"""Sweeps: the grid of runs, resumable execution against the results file, progress."""

from .runner import SweepSummary, run_sweep, train_one
from .spec import DEFAULT_BUDGETS, SweepSpec

__all__ = ["DEFAULT_BUDGETS", "SweepSpec", "SweepSummary", "run_sweep", "train_one"]
