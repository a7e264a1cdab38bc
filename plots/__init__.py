"""Figures and tables from results CSVs: the paper's figures, training curves, cost, the report,
and the comparison with the authors' own results (reference/, package data)."""

from .draw import KINDS, PlotOutcome, PlotRequest, draw
from .figures import chunks_figure, compression_figure, criteo_figure
from .paper import Comparison, authors_results, authors_summary, build_comparison
from .report import DEFAULT_TOLERANCE, Report, build_report, to_csv, to_latex, to_markdown
from .style import method_styles
from .summary import (best_per_run, count_failed, failed_summary, load_results, mean_over_seeds,
                      resolve_sources)
from .training import CurveSelection, cost_figure, curves_figure

__all__ = ["DEFAULT_TOLERANCE", "KINDS", "Comparison", "CurveSelection", "PlotOutcome",
           "PlotRequest", "Report", "authors_results", "authors_summary", "best_per_run",
           "build_comparison", "build_report", "chunks_figure", "compression_figure", "cost_figure",
           "count_failed", "criteo_figure", "curves_figure", "draw", "failed_summary",
           "load_results", "mean_over_seeds", "method_styles", "resolve_sources", "to_csv",
           "to_latex", "to_markdown"]
