"""Every figure kind from a generated results CSV: files, image validity, and what is drawn."""

from __future__ import annotations

import itertools

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cce_bench.errors import ConfigError, ResultsError
from cce_bench.plots import CurveSelection, PlotRequest, draw, load_results, method_styles
from cce_bench.plots import figures as figures_module
from cce_bench.plots import training as training_module
from cce_bench.plots.training import select_runs

from .conftest import BUDGETS, DIM, DLRM_DATASET, GMF_DATASET, SEEDS

BAYES = {GMF_DATASET: {"auc": 0.81, "bce": 0.45}}


def check_image(path) -> None:
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        # 300 dpi: a figure at least 5 inches wide is over 1500 pixels.
        assert pixels.ndim == 3 and pixels.shape[1] > 1500 and pixels.shape[0] > 900
    elif path.suffix == ".pdf":
        assert data[:5] == b"%PDF-" and b"%%EOF" in data[-64:]
    else:
        assert b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>")


def test_every_kind_writes_valid_images(results_csv, tmp_path):
    rows = load_results([str(results_csv)])
    request = PlotRequest(kinds=["all"], formats=["png"], out_dir=tmp_path)
    outcome = draw(rows, request, BAYES)
    stems = {p.stem for p in outcome.written}
    expected = {"criteo_bce", "criteo_auc"}
    for dataset in (GMF_DATASET, DLRM_DATASET):
        expected |= {f"{dataset}_{m}" for m in ("bce", "auc")}
        expected |= {f"{dataset}_chunks_{m}" for m in ("bce", "auc")}
        expected |= {f"{dataset}_curves_{m}" for m in ("bce", "auc")}
        expected.add(f"{dataset}_cost")
    # Files are named after the sweep too (the fixture's rows are sweep "test"): figures of
    # two sweeps of one dataset never replace each other.
    assert stems == {f"test_{stem}" for stem in expected}
    assert len(outcome.written) == len(expected)
    for path in outcome.written:
        check_image(path)
    assert outcome.notes == ["skipped 4 runs without a result (3 too_small, 1 failed)"]


def test_pdf_svg_and_a_single_metric(results_csv, tmp_path):
    rows = load_results([str(results_csv)])
    outcome = draw(rows, PlotRequest(metrics=["auc"], formats=["pdf", "svg"], out_dir=tmp_path,
                                     x="bytes"))
    assert sorted(p.name for p in outcome.written) == [
        f"test_{DLRM_DATASET}_auc.pdf", f"test_{DLRM_DATASET}_auc.svg",
        f"test_{GMF_DATASET}_auc.pdf", f"test_{GMF_DATASET}_auc.svg"]
    for path in outcome.written:
        check_image(path)


@pytest.fixture
def captured(monkeypatch):
    """Keep the figures instead of saving them, to inspect what was drawn."""
    figures = {}

    def keep(fig, out_dir, stem, formats):
        fig.canvas.draw()  # lay out, so extents are final
        figures[stem] = fig
        return []

    monkeypatch.setattr(figures_module, "save", keep)
    monkeypatch.setattr(training_module, "save", keep)
    yield figures
    for fig in figures.values():
        plt.close(fig)


def independent_means(csv_path, metric: str) -> pd.DataFrame:
    """Mean over seeds of each run's best val metric, from the raw CSV."""
    raw = pd.read_csv(csv_path)
    raw = raw[raw["status"].isin(["ok", "diverged"]) & raw["val_bce"].notna()]
    best = raw.groupby("run_id").agg(
        dataset=("dataset", "first"), method=("method", "first"), n_chunks=("n_chunks", "first"),
        params=("params", "first"), value=(f"val_{metric}", "min" if metric == "bce" else "max"))
    return best.groupby(["dataset", "method", "n_chunks", "params"])["value"].agg(
        ["mean", "min", "max"]).reset_index()


@pytest.mark.parametrize("metric", ["bce", "auc"])
def test_compression_figure_draws_the_means_references_and_bayes(results_csv, captured, metric):
    rows = load_results([str(results_csv)])
    draw(rows, PlotRequest(metrics=[metric]), BAYES)
    ax = captured[f"{GMF_DATASET}_{metric}"].axes[0]
    means = independent_means(results_csv, metric)
    means = means[(means["dataset"] == GMF_DATASET) & (means["n_chunks"] == 4)]
    lines = {line.get_label(): line for line in ax.get_lines()}
    styles = method_styles([])
    for method in ("hash", "ce", "cce"):
        expected = means[means["method"] == method].sort_values("params")
        line = lines[method]
        assert list(line.get_xdata()) == [b * DIM for b in BUDGETS]
        np.testing.assert_allclose(line.get_ydata(), expected["mean"], rtol=1e-9)
        assert line.get_color() == styles[method].color
        assert line.get_marker() == styles[method].marker
    full = means[means["method"] == "full"]
    ref = lines[f"full table ({int(full['params'].iloc[0]):,} params)"]
    assert ref.get_ydata()[0] == pytest.approx(full["mean"].iloc[0])
    assert lines["Bayes-optimal"].get_ydata()[0] == BAYES[GMF_DATASET][metric]
    assert lines["Bayes-optimal"].get_linestyle() == "--"
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    title = ax.get_title()
    for part in (GMF_DATASET, "GMF", f"dim {DIM}", "n_chunks 4", "3 epochs"):
        assert part in title
    # No Bayes line where the dataset has no Bayes-optimal score.
    dlrm = captured[f"{DLRM_DATASET}_{metric}"].axes[0]
    assert "Bayes-optimal" not in [line.get_label() for line in dlrm.get_lines()]


def test_legend_outside_the_data_and_tick_labels_apart(results_csv, captured):
    draw(load_results([str(results_csv)]), PlotRequest(kinds=["all"], metrics=["bce"]), BAYES)
    for stem, fig in captured.items():
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert box.x0 >= ax.get_window_extent(renderer).x1 - 1, stem
            labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels()
                      if t.get_text() and t.get_visible()]
            for a, b in itertools.combinations(labels, 2):
                assert not a.overlaps(b), (stem, a, b)


def test_a_method_keeps_its_style_whatever_else_is_plotted():
    alone = method_styles(["cce"])["cce"]
    assert method_styles(["hash", "full", "cce", "zz-old"])["cce"] == alone
    styles = method_styles(["zz-old"])
    registered = list(styles)[:-1]
    assert len({(styles[m].color, styles[m].marker) for m in registered}) == len(registered)
    assert list(styles)[-1] == "zz-old"  # names the registry lacks come after, still styled


def test_chunks_figure_one_line_per_n_chunks(results_csv, captured):
    draw(load_results([str(results_csv)]), PlotRequest(kinds=["chunks"], metrics=["bce"]))
    fig = captured[f"{GMF_DATASET}_chunks_bce"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["ce", "cce"]  # hash ran with one n_chunks value only
    for ax in fig.axes[:2]:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels[:2] == ["n_chunks 2", "n_chunks 4"]


def test_chunks_and_criteo_asked_by_name_need_their_runs(results_csv, tmp_path):
    rows = load_results([str(results_csv)])
    one_chunk = rows[(rows["n_chunks"] == 4) & (rows["model"] == "gmf")]
    with pytest.raises(ResultsError, match="more than one n_chunks value; sweep with"):
        draw(one_chunk, PlotRequest(kinds=["chunks"], out_dir=tmp_path))
    with pytest.raises(ResultsError, match="model 'dlrm'"):
        draw(one_chunk, PlotRequest(kinds=["criteo"], out_dir=tmp_path))
    outcome = draw(one_chunk, PlotRequest(kinds=["all"], metrics=["bce"], formats=["png"],
                                          out_dir=tmp_path))
    assert "no n_chunks figure: every method ran with one n_chunks value" in outcome.notes
    assert "no Criteo figure: no DLRM runs in the results" in outcome.notes


def test_criteo_figure_puts_dlrm_datasets_side_by_side(results_csv, captured):
    rows = load_results([str(results_csv)])
    other = rows[rows["dataset"] == DLRM_DATASET].assign(dataset="criteo-other")
    draw(pd.concat([rows, other]), PlotRequest(kinds=["criteo"], metrics=["bce"]))
    fig = captured["criteo_bce"]
    assert [ax.get_title().splitlines()[0] for ax in fig.axes] == [
        "criteo-other (sweep test)", f"{DLRM_DATASET} (sweep test)"]
    assert all(ax.get_xlabel() == "parameters in the largest embedding table" for ax in fig.axes)


def test_default_curves_are_every_method_at_the_middle_budget_lowest_seed(results_csv):
    from cce_bench.plots import best_per_run

    best = best_per_run(load_results([str(results_csv)]))
    gmf = best[best["dataset"] == GMF_DATASET]
    chosen = select_runs(gmf, CurveSelection())
    assert set(chosen["seed"]) == {min(SEEDS)}
    compressed = chosen[chosen["method"] != "full"]
    assert set(compressed["ppd"]) == {BUDGETS[1]} and set(compressed["n_chunks"]) == {4}
    assert sorted(chosen["method"]) == ["cce", "ce", "full", "hash"]
    # --run takes ids or prefixes (the test's ids name their config, so a prefix is 3 seeds).
    by_id = select_runs(gmf, CurveSelection(run_ids=["syngmfcce16c2", "syngmfhash4c4s1"]))
    assert sorted(by_id["run_id"]) == ["syngmfcce16c2s0", "syngmfcce16c2s1", "syngmfcce16c2s2",
                                       "syngmfhash4c4s1"]


def test_curves_follow_the_epochs_of_each_run(results_csv, captured):
    rows = load_results([str(results_csv)])
    request = PlotRequest(kinds=["curves"], metrics=["bce"],
                          curves=CurveSelection(methods=["cce"], budgets=[4, 64], x="step"))
    draw(rows, request)
    ax = captured[f"{GMF_DATASET}_curves_bce"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"cce · ppd 4", "cce · ppd 64"}
    # cce ran with 2 and 4 chunks equally often: the tie goes to the smaller value.
    assert "n_chunks 2" in ax.get_title()
    run = rows[(rows["method"] == "cce") & (rows["budget_asked"] == 4 * DIM)
               & (rows["seed"] == 0) & (rows["n_chunks"] == 2)
               & (rows["dataset"] == GMF_DATASET)].sort_values("epoch")
    np.testing.assert_allclose(lines["cce · ppd 4"].get_ydata(), run["val_bce"])
    np.testing.assert_allclose(lines["cce · ppd 4"].get_xdata(), run["step"])
    with pytest.raises(ResultsError, match="no run matches the curve selection"):
        draw(rows, PlotRequest(kinds=["curves"], curves=CurveSelection(run_ids=["nothing"])))


def test_cost_figure_shows_seconds_and_throughput(results_csv, captured):
    rows = load_results([str(results_csv)])
    draw(rows, PlotRequest(kinds=["cost"]))
    left, right = captured[f"{GMF_DATASET}_cost"].axes[:2]
    raw = pd.read_csv(results_csv)
    run = raw[(raw["dataset"] == GMF_DATASET) & (raw["method"] == "hash")
              & (raw["n_chunks"] == 4) & raw["status"].isin(["ok", "diverged"])]
    per_run = run.groupby(["run_id", "budget_asked"]).agg(
        s=("train_s", "sum"), c=("cluster_s", "sum"), rate=("samples_per_s", "mean"))
    per_run["fit"] = per_run["s"] + per_run["c"]
    expected = per_run.groupby("budget_asked")[["fit", "rate"]].mean()
    hash_left = next(line for line in left.get_lines() if line.get_label() == "hash")
    hash_right = next(line for line in right.get_lines() if line.get_label() == "hash")
    np.testing.assert_allclose(hash_left.get_ydata(), expected["fit"])
    np.testing.assert_allclose(hash_right.get_ydata(), expected["rate"])


def test_method_filter_keeps_the_full_table(results_csv, captured):
    draw(load_results([str(results_csv)]), PlotRequest(metrics=["bce"], methods=["cce"]))
    labels = [line.get_label() for line in captured[f"{GMF_DATASET}_bce"].axes[0].get_lines()]
    assert labels[0] == "cce" and any(label.startswith("full table") for label in labels)
    assert "hash" not in labels
    with pytest.raises(ConfigError, match="no rows for method"):
        draw(load_results([str(results_csv)]), PlotRequest(methods=["robe"]))


def test_bad_request_values_name_the_choices():
    with pytest.raises(ConfigError, match="unknown figure kind 'pie'; choose from: compression"):
        PlotRequest(kinds=["pie"])
    with pytest.raises(ConfigError, match="unknown format 'jpg'"):
        PlotRequest(formats=["jpg"])


def test_cost_axis_is_logarithmic_only_when_the_values_span_a_decade(results_csv, captured):
    rows = load_results([str(results_csv)])
    draw(rows, PlotRequest(kinds=["cost"]))
    left, _ = captured[f"{GMF_DATASET}_cost"].axes[:2]
    assert left.get_yscale() == "linear"  # 2 to 5 seconds: a log axis would show one label
    slow = rows.copy()
    slow.loc[slow["method"] == "ce", "train_s"] *= 100
    draw(slow, PlotRequest(kinds=["cost"]))
    left, _ = captured[f"{GMF_DATASET}_cost"].axes[:2]
    assert left.get_yscale() == "log"


def test_two_sweeps_of_one_dataset_get_their_own_files_and_titles(results_csv, tmp_path):
    rows = load_results([str(results_csv)])
    gmf = rows[rows["dataset"] == GMF_DATASET]
    for name in ("qs", "lr01"):
        draw(gmf.assign(sweep=name), PlotRequest(metrics=["auc"], formats=["png"],
                                                 out_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"lr01_{GMF_DATASET}_auc.png", f"qs_{GMF_DATASET}_auc.png"]
    from cce_bench.plots.figures import panel_title
    from cce_bench.plots.style import naming

    with naming(["qs"]):
        assert panel_title(GMF_DATASET, "gmf", 8, 4, gmf["epoch"]).startswith(
            f"{GMF_DATASET} (sweep qs)\n")


def test_points_still_improving_get_a_ring_and_the_legend_says_so(results_csv, captured):
    from cce_bench.plots.style import IMPROVING_LABEL

    from .conftest import still_rising

    rows = load_results([str(results_csv)])
    cce16 = (rows["method"] == "cce") & (rows["budget_asked"] == 16 * DIM) & (
        rows["n_chunks"] == 4) & (rows["seed"] == 0)
    full = (rows["dataset"] == GMF_DATASET) & (rows["method"] == "full")
    rising = still_rising(rows, cce16 | full)
    draw(rising, PlotRequest(kinds=["compression", "criteo", "chunks"], metrics=["bce"]), BAYES)
    ax = captured[f"{GMF_DATASET}_bce"].axes[0]
    rings = [line for line in ax.get_lines() if line.get_label() == "_improving"]
    cce = next(line for line in ax.get_lines() if line.get_label() == "cce")
    # One ring on cce's 16 ppd point, in its colour; one at the right end of the full table.
    assert [list(r.get_xdata()) for r in rings] == [[16 * DIM], [1.0]]
    assert rings[0].get_ydata()[0] == pytest.approx(cce.get_ydata()[1])
    assert rings[0].get_color() == cce.get_color()
    assert rings[0].get_markerfacecolor() == "none"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-1] == IMPROVING_LABEL and legend.count(IMPROVING_LABEL) == 1
    # The DLRM panel's cce 16 ppd run rose too; the full table there did not.
    dlrm = captured[f"{DLRM_DATASET}_bce"].axes[0]
    assert [list(r.get_xdata()) for r in dlrm.get_lines() if r.get_label() == "_improving"] == [
        [16 * DIM]]
    for stem in ("criteo_bce", f"{GMF_DATASET}_chunks_bce"):
        texts = [t.get_text() for t in captured[stem].legends[0].get_texts()]
        assert texts[-1] == IMPROVING_LABEL, stem
    # Without such runs: no ring and no legend entry.
    draw(rows, PlotRequest(metrics=["bce"]), BAYES)
    ax = captured[f"{GMF_DATASET}_bce"].axes[0]
    assert IMPROVING_LABEL not in [t.get_text() for t in ax.get_legend().get_texts()]
    assert not [line for line in ax.get_lines() if line.get_label() == "_improving"]
