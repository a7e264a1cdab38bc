"""Figures and tables from a results CSV."""

from .figures import compression_figure
from .report import report_frame, to_markdown
from .summary import best_per_run, count_failed, mean_over_seeds

__all__ = ["best_per_run", "compression_figure", "count_failed", "mean_over_seeds",
           "report_frame", "to_markdown"]
