"""Draw a set of figure kinds from result rows: the one function `cce-bench plot` calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cce_bench.errors import ConfigError

from .figures import (METRICS, X_AXES, Bayes, chunks_figure, compression_figure, criteo_figure,
                      has_chunk_variation)
from .paper import REFERENCES, paper_notes
from .style import FORMATS, naming
from .summary import best_per_run, failed_summary, is_reference
from .training import CURVE_X, CurveSelection, cost_figure, curves_figure

KINDS = ["compression", "chunks", "criteo", "curves", "cost"]


@dataclass
class PlotRequest:
    kinds: list[str] = field(default_factory=lambda: ["compression"])  # or ["all"]
    metrics: list[str] = field(default_factory=lambda: ["bce", "auc"])
    x: str = "params"
    out_dir: Path = Path("results/figures")
    formats: list[str] = field(default_factory=lambda: ["png", "pdf"])
    curves: CurveSelection = field(default_factory=CurveSelection)
    methods: list[str] | None = None  # only these (the full table stays as the reference)
    reference: str | None = None  # "paper": the authors' curves dashed (compression, criteo)

    def __post_init__(self):
        _check("figure kind", self.kinds, KINDS + ["all"])
        _check("metric", self.metrics, list(METRICS))
        _check("x axis", [self.x], list(X_AXES))
        _check("format", self.formats, list(FORMATS))
        _check("curve x axis", [self.curves.x], list(CURVE_X))
        if self.reference is not None:
            _check("reference", [self.reference], REFERENCES)


@dataclass
class PlotOutcome:
    written: list[Path]
    notes: list[str]  # what was skipped, and why


def draw(rows: pd.DataFrame, request: PlotRequest, bayes: Bayes | None = None) -> PlotOutcome:
    """Every figure the request asks for. `--kind all` draws the n_chunks and Criteo figures
    only where the results have what they need, and says so; asked for by name, they fail."""
    notes = []
    failed = failed_summary(rows)
    if failed:
        notes.append(f"skipped {failed}")
    if request.methods:
        asked = rows["method"].isin(request.methods)
        if not asked.any():
            raise ConfigError(f"no rows for method(s) {', '.join(request.methods)}; the results "
                              f"hold: {', '.join(sorted(rows['method'].unique()))}")
        rows = rows[asked | is_reference(rows)]
    with naming(rows["sweep"].dropna().astype(str)):
        return _draw(rows, request, bayes, notes)


def _draw(rows: pd.DataFrame, request: PlotRequest, bayes: Bayes | None,
          notes: list[str]) -> PlotOutcome:
    best = best_per_run(rows)
    everything = "all" in request.kinds
    kinds = KINDS if everything else request.kinds
    if request.reference and ("compression" in kinds or "criteo" in kinds):
        notes += paper_notes(best, request.x, request.metrics)
    out, fmts = request.out_dir, request.formats
    written: list[Path] = []
    for kind in kinds:
        if kind == "chunks" and everything and not has_chunk_variation(best):
            notes.append("no n_chunks figure: every method ran with one n_chunks value")
            continue
        if kind == "criteo" and everything and not (best["model"] == "dlrm").any():
            notes.append("no Criteo figure: no DLRM runs in the results")
            continue
        if kind == "cost":
            written += cost_figure(best, request.x, out, fmts)
            continue
        for metric in request.metrics:
            if kind == "compression":
                written += compression_figure(best, metric, request.x, out, fmts, bayes,
                                              request.reference)
            elif kind == "chunks":
                written += chunks_figure(best, metric, request.x, out, fmts, bayes)
            elif kind == "criteo":
                written += criteo_figure(best, metric, request.x, out, fmts, bayes,
                                         request.reference)
            elif kind == "curves":
                written += curves_figure(rows, best, metric, out, fmts, request.curves, bayes)
    return PlotOutcome(written, notes)


def _check(what: str, values: list[str], known: list[str]) -> None:
    for value in values:
        if value not in known:
            raise ConfigError(f"unknown {what} '{value}'; choose from: {', '.join(known)}")
