"""How every figure looks: one colour and marker per method, fonts, log2 axes, saving.

A method's style comes from its place in the registry's listing order, so `cce` has the same
colour and marker in every figure of every run of `cce-bench plot`; names the registry does not
know (rows from an older checkout) take the styles after the registered ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (FuncFormatter, LogFormatterSciNotation, LogLocator,  # noqa: E402
                               NullFormatter)

# tab10 first (distinct on screen and in print), then six tones far from all of them.
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#000075", "#000000", "#f032e6", "#469990",
           "#800000", "#aaaa00"]
# Filled markers only: hollow ones vanish under the min..max band.
MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "*", "h", "d", "H", "8"]
BAYES_STYLE = {"color": "#555555", "linestyle": "--", "linewidth": 1.2}
REFERENCE_STYLE = {"linestyle": ":", "linewidth": 1.6}
# A post-training method (pq) is a reference, not a competitor: thin, dash-dotted, hollow
# markers, no band, and its own legend group.
POST_TRAINING_STYLE = {"linestyle": "-.", "linewidth": 1.0, "markerfacecolor": "none"}
# The authors' curves (`--reference paper`) beside ours: the method's colour, dashed.
PAPER_STYLE = {"linestyle": "--", "linewidth": 1.2, "alpha": 0.9}


def draw_paper_curves(ax, theirs, budget: str, to_x, metric: str, styles) -> None:
    """The authors' mean curve of each method in `theirs` (one row per method and budget, the
    full table's budget NaN: drawn as a line), dashed in the method's colour; to_x maps the
    `budget` column to the panel's x axis."""
    for method, group in theirs.groupby("method", sort=False):
        style = styles[method]
        if group[budget].isna().all():  # the full table
            ax.axhline(group[f"paper_{metric}_mean"].mean(), color=style.color,
                       label=f"{method} table (paper)", gid="paper", **PAPER_STYLE)
            continue
        group = group.sort_values(budget)
        ax.plot(to_x(group[budget]), group[f"paper_{metric}_mean"], color=style.color,
                marker=style.marker, markersize=3, markerfacecolor="none",
                label=f"{method} (paper)", zorder=2.5, gid="paper", **PAPER_STYLE)
# Artists carry one of these gids; the legend lists each group under its title, after the rest.
LEGEND_GROUPS = {"post-training": "post-training reference",
                 "paper": "dashed: the authors' results (paper)"}
# A ring around a point (or at the right end of a reference line) whose runs were still
# improving at their last epoch (summary.py); one legend entry, last, explains it.
IMPROVING_STYLE = {"marker": "o", "markersize": 11, "markerfacecolor": "none",
                   "markeredgewidth": 1.1, "linestyle": "none"}
IMPROVING_GID = "improving"
IMPROVING_LABEL = "ring: still improving at the last epoch (more epochs may score better)"

RC = {
    "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.6, "lines.markersize": 5,
    "savefig.bbox": "tight", "savefig.pad_inches": 0.05, "pdf.fonttype": 42,
    "svg.fonttype": "none",
}
FORMATS = ("png", "pdf", "svg")
PNG_DPI = 300


@dataclass(frozen=True)
class Style:
    color: str
    marker: str


def method_styles(methods: Iterable[str]) -> dict[str, Style]:
    """A fixed colour and marker for each method, by its index in the registry."""
    from cce_bench.embeddings import method_names

    known = method_names()
    unknown = sorted(set(methods) - set(known))
    order = known + unknown
    return {m: Style(COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)])
            for i, m in enumerate(order)}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Our fonts and spines for the figures drawn inside, without touching global state."""
    with plt.rc_context(RC):
        yield


def log2_axis(ax, axis: str = "x") -> None:
    """A log2 axis labelled 2^k at every power of two (thinned when the range is wide)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    target.set_major_locator(LogLocator(base=2, numticks=10))
    target.set_major_formatter(LogFormatterSciNotation(base=2))
    target.set_minor_formatter(NullFormatter())


def log10_axis(ax, values, axis: str = "y") -> None:
    """For seconds and rates: a log axis labelled 1, 2, 5, 10, ... 200k, 1M when the values
    span a decade or more; else a linear one (a log axis would show one label)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    values = [v for v in values if v == v]  # drop NaN
    if values and min(values) > 0 and max(values) / min(values) >= 10:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(lambda value, _: compact_number(value)))


def mark_improving(ax, xs, ys, color: str, transform=None) -> None:
    """Rings around the points (xs, ys) whose runs were still improving at their last epoch,
    and the one legend entry that says what a ring means (legend_outside lists it last)."""
    ring = Line2D(list(xs), list(ys), color=color, zorder=4, label="_improving",
                  clip_on=transform is None, transform=transform or ax.transData,
                  **IMPROVING_STYLE)
    ax.add_line(ring)  # a ring in axes coordinates along x leaves the x limits alone
    ax.autoscale_view()
    if not any(line.get_gid() == IMPROVING_GID for line in ax.get_lines()):
        ax.plot([], [], color="#555555", label=IMPROVING_LABEL, gid=IMPROVING_GID,
                **IMPROVING_STYLE)


def mark_improving_line(ax, y: float, color: str) -> None:
    """A ring at the right end of a horizontal reference line (the full table) whose runs were
    still improving at their last epoch."""
    from matplotlib.transforms import blended_transform_factory

    mark_improving(ax, [1.0], [y], color, blended_transform_factory(ax.transAxes, ax.transData))


def compact_number(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def legend_outside(ax) -> None:
    """The legend to the right of the axes, so it never covers data; artists whose gid names a
    LEGEND_GROUPS entry come after the rest, under the group's title in italics."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    grouped: dict = {gid: [] for gid in (None, *LEGEND_GROUPS, IMPROVING_GID)}
    for handle, label in zip(handles, labels):
        gid = handle.get_gid()
        grouped[gid if gid in LEGEND_GROUPS or gid == IMPROVING_GID else None].append(
            (handle, label))
    entries = grouped[None]
    for gid, title in LEGEND_GROUPS.items():
        if grouped[gid]:
            entries += [(Line2D([], [], linestyle="none"), title)] + grouped[gid]
    entries += grouped[IMPROVING_GID][:1]
    legend = ax.legend(*zip(*entries), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       frameon=False, borderaxespad=0.0)
    for text in legend.get_texts():
        if text.get_text() in LEGEND_GROUPS.values():
            text.set_fontstyle("italic")


# The sweep(s) a figure draws, named in its file and its title, so figures of two sweeps of one
# dataset never replace each other. Set for one `draw` call with `naming(...)`.
_SWEEPS: contextvars.ContextVar[str] = contextvars.ContextVar("sweeps", default="")


@contextlib.contextmanager
def naming(sweeps: Iterable[str]) -> Iterator[None]:
    token = _SWEEPS.set("+".join(sorted(set(sweeps))))
    try:
        yield
    finally:
        _SWEEPS.reset(token)


def sweep_label() -> str:
    """'sweep NAME' (or 'sweeps A+B') for a title, '' outside `naming`."""
    value = _SWEEPS.get()
    return f"{'sweeps' if '+' in value else 'sweep'} {value}" if value else ""


def save(fig, out_dir: Path, stem: str, formats: Iterable[str]) -> list[Path]:
    """Write the figure once per format (PNG at 300 dpi) as <sweeps>_<stem>; return the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if _SWEEPS.get():
        stem = f"{_SWEEPS.get()}_{stem}"
    written = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        # A temporary name, then a rename: a killed plot never leaves a truncated figure
        # under the final name, and a link there is replaced, not written through.
        tmp = out_dir / f".{stem}.{fmt}.{os.getpid()}.tmp"
        try:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI if fmt == "png" else None)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
    plt.close(fig)
    return written
