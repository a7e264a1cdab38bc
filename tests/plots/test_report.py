"""The report's numbers against an independent pandas computation from the raw CSV."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from cce_bench.errors import ResultsError
from cce_bench.plots import best_per_run, build_report, load_results, to_csv, to_latex, to_markdown

from .conftest import DIM, GMF_DATASET


def independent(csv_path, tolerance: float):
    """(cells, parity) computed straight from the CSV text, sharing no code with plots/."""
    raw = pd.read_csv(csv_path)
    raw = raw[raw["status"].isin(["ok", "diverged"]) & raw["val_bce"].notna()]
    runs = raw.groupby("run_id").agg(
        dataset=("dataset", "first"), method=("method", "first"), n_chunks=("n_chunks", "first"),
        budget=("budget_asked", "first"), params=("params", "max"), bce=("val_bce", "min"),
        auc=("val_auc", "max"))
    cells = runs.groupby(["dataset", "method", "n_chunks", "budget"]).agg(
        bce_mean=("bce", "mean"), bce_std=("bce", "std"), auc_mean=("auc", "mean"),
        auc_std=("auc", "std"), params=("params", "max"), seeds=("bce", "size")).reset_index()
    cells = cells.fillna({"bce_std": 0.0, "auc_std": 0.0})
    full = cells[cells["method"] == "full"].set_index("dataset")
    compressed = cells[cells["method"] != "full"].copy()
    parity = {}
    for (dataset, method, n_chunks), group in compressed.groupby(["dataset", "method", "n_chunks"]):
        close = group[group["bce_mean"] <= full.loc[dataset, "bce_mean"] + tolerance]
        if close.empty:
            parity[(dataset, method, n_chunks)] = None
        else:
            row = close.loc[close["budget"].idxmin()]
            parity[(dataset, method, n_chunks)] = (row["budget"] / DIM, row["params"],
                                                   full.loc[dataset, "params"] / row["params"])
    return compressed, parity


@pytest.mark.parametrize("tolerance", [0.001, 0.02])
def test_report_numbers_match_an_independent_computation(results_csv, tolerance):
    report = build_report(best_per_run(load_results([str(results_csv)])), tolerance)
    cells, parity = independent(results_csv, tolerance)
    frame = report.long_frame()
    compressed = frame[frame["method"] != "full"]
    assert len(compressed) == len(cells)
    merged = compressed.merge(cells, left_on=["dataset", "method", "n_chunks", "budget_asked"],
                              right_on=["dataset", "method", "n_chunks", "budget"],
                              suffixes=("", "_expected"))
    assert len(merged) == len(cells)
    for column in ("bce_mean", "bce_std", "auc_mean", "auc_std", "params", "seeds"):
        pd.testing.assert_series_equal(merged[column], merged[f"{column}_expected"],
                                       check_names=False, check_dtype=False, rtol=1e-9)
    # The best method per budget: lowest mean BCE, highest mean AUC, among compressed methods.
    for (dataset, budget), group in cells.groupby(["dataset", "budget"]):
        marked = merged[(merged["dataset"] == dataset) & (merged["budget"] == budget)]
        best_bce = group.loc[group["bce_mean"].idxmin(), ["method", "n_chunks"]].tolist()
        best_auc = group.loc[group["auc_mean"].idxmax(), ["method", "n_chunks"]].tolist()
        assert marked[marked["best_bce"]][["method", "n_chunks"]].values.tolist() == [best_bce]
        assert marked[marked["best_auc"]][["method", "n_chunks"]].values.tolist() == [best_auc]
    # Compression at parity, reached or not, per method.
    got = {}
    for section in report.sections:
        for row in section.parity.itertuples(index=False):
            key = (section.dataset, row.method, row.n_chunks)
            got[key] = None if pd.isna(row.parity_ppd) else (row.parity_ppd, row.parity_params,
                                                             row.ratio)
    assert got.keys() == parity.keys()
    for key, expected in parity.items():
        assert (got[key] is None) == (expected is None), key
        if expected is not None:
            assert got[key] == pytest.approx(expected)
    # The data exercises both outcomes, so neither branch goes untested.
    assert any(v is None for v in parity.values()) and any(v is not None for v in parity.values())


def test_the_full_table_is_the_reference_not_a_cell(results_csv):
    report = build_report(best_per_run(load_results([str(results_csv)])))
    section = next(s for s in report.sections if s.dataset == GMF_DATASET)
    assert list(section.reference["method"]) == ["full"]
    assert "full" not in set(section.cells["method"])
    assert section.reference_line().startswith(
        "full table: 4,800 params (38,400 bytes), val BCE ")


def test_markdown_marks_the_best_cells(results_csv):
    report = build_report(best_per_run(load_results([str(results_csv)])))
    text = to_markdown(report)
    section = report.sections[0]
    assert text.startswith(f"### {section.title}\n")
    best = section.cells[section.cells["best_bce"]].iloc[0]
    assert f"**{best['bce_mean']:.4f} ± {best['bce_std']:.4f}**" in text
    assert "| method | 4 ppd | 16 ppd | 64 ppd |" in text
    assert "| ce, 2 chunks |" in text and "| hash |" in text  # chunks named only where varied
    table_rows = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    assert table_rows.count("**") // 2 == sum(int(s.cells["best_bce"].sum() + s.cells["best_auc"].sum())
                                              for s in report.sections)


def test_csv_reads_back_as_the_long_frame(results_csv):
    report = build_report(best_per_run(load_results([str(results_csv)])))
    back = pd.read_csv(io.StringIO(to_csv(report)))
    frame = report.long_frame()
    assert list(back.columns) == list(frame.columns)
    pd.testing.assert_series_equal(back["bce_mean"], frame["bce_mean"].astype(float), rtol=1e-5)


def test_latex_escapes_names_and_bolds_the_best(results_csv):
    rows = load_results([str(results_csv)])
    rows.loc[rows["method"] == "cce", "method"] = "cce_robe"
    text = to_latex(build_report(best_per_run(rows)))
    assert "cce\\_robe" in text and "cce_robe" not in text
    assert "\\toprule" in text and "\\textbf{" in text and "$\\pm$" in text
    assert text.count("\\begin{table}") == text.count("\\end{table}") == 6


def test_no_successful_run_is_a_clear_error(results_csv):
    rows = load_results([str(results_csv)])
    failed = rows[rows["status"].isin(["failed", "too_small"])]
    # Counted per run and per status, as the CSV holds them (3 too small, 1 failed).
    with pytest.raises(ResultsError, match=r"no run with a validation score to summarise "
                                           r"\(3 too_small, 1 failed\); see the status and "
                                           r"error columns"):
        best_per_run(failed)
    assert failed.drop_duplicates("run_id")["status"].value_counts().to_dict() == {
        "too_small": 3, "failed": 1}


def test_parity_in_parameters_and_in_bytes_side_by_side(results_csv):
    report = build_report(best_per_run(load_results([str(results_csv)])), tolerance=0.02)
    raw = pd.read_csv(results_csv)
    section = next(s for s in report.sections if s.dataset == GMF_DATASET)
    gmf = raw[raw["dataset"] == GMF_DATASET]
    full_bytes = gmf[gmf["method"] == "full"]["total_bytes"].max()
    reached = section.parity.dropna(subset=["parity_ppd"])
    assert not reached.empty
    for row in reached.itertuples(index=False):
        run = raw[(raw["dataset"] == GMF_DATASET) & (raw["method"] == row.method)
                  & (raw["n_chunks"] == row.n_chunks)
                  & (raw["budget_asked"] == row.parity_ppd * DIM)]
        assert row.parity_bytes == run["total_bytes"].max()
        assert row.ratio_bytes == pytest.approx(full_bytes / run["total_bytes"].max())
    # cce keeps a per-id index: in bytes it compresses less than in parameters.
    cce = reached[reached["method"] == "cce"].iloc[0]
    assert cce.ratio_bytes < cce.ratio
    text = to_markdown(report)
    assert "| method | budget | params | full / params | bytes | full / bytes |" in text
    assert f"| {int(cce.parity_bytes):,} | {cce.ratio_bytes:,.1f}× |" in text
    assert "in parameters and in bytes (parameters × 4 plus index buffers" in text


def test_a_post_training_method_is_listed_apart_with_its_peak_size(results_csv):
    rows = load_results([str(results_csv)])
    # The fixture's ce rows stand in for pq (a post-training method by the registry).
    rows.loc[rows["method"] == "ce", "method"] = "pq"
    report = build_report(best_per_run(rows))
    section = next(s for s in report.sections if s.dataset == GMF_DATASET)
    assert set(section.post["method"]) == {"pq"} and "pq" not in set(section.cells["method"])
    assert section.peak_params == 600 * DIM  # the full table: vocab x dim
    # Never marked best at a budget: it is not a competitor.
    frame = report.long_frame()
    pq = frame[(frame["method"] == "pq") & (frame["dataset"] == GMF_DATASET)]
    assert pq["post_training"].all() and not pq["best_bce"].any() and not pq["best_auc"].any()
    assert (pq["peak_train_params"] == 4800).all()
    text = to_markdown(report)
    assert ("Post-training reference, listed apart (pq): trains the full table, then quantizes "
            "it, so it is not a training-time method; scored on its epochs after compression; "
            "peak training size 4,800 params, the full table's.") in text
    main_table, post_table = text.split("Post-training reference, listed apart")[0:2]
    assert "| pq, 2 chunks |" not in main_table and "| pq, 2 chunks |" in post_table
    assert "| pq, 2 chunks (post-training) |" in text  # parity row, marked
    latex = to_latex(report)
    assert "\\emph{post-training reference}" in latex


def test_one_seed_shows_the_value_without_a_spread(results_csv):
    rows = load_results([str(results_csv)])
    report = build_report(best_per_run(rows[rows["seed"] == 0]))
    text = to_markdown(report)
    assert "± 0.0000" not in text and "±" not in text.split("Compression at parity")[0]
    assert "1 seed (no spread)" in text and "(1 seed)." in text


def test_dlrm_budgets_read_as_caps_with_test_bce_at_the_best_validation_point(results_csv):
    from .conftest import DLRM_DATASET

    rows = load_results([str(results_csv)])
    dlrm = rows[rows["dataset"] == DLRM_DATASET].copy()
    # A test split: at the best validation point (epoch 2) 0.1 above val, elsewhere far lower,
    # so reading the best test value instead would show.
    best_epoch = dlrm.groupby("run_id")["val_bce"].transform("min") == dlrm["val_bce"]
    dlrm["test_bce"] = dlrm["val_bce"].where(~best_epoch, dlrm["val_bce"] + 0.1) - 0.05
    dlrm.loc[best_epoch, "test_bce"] = dlrm.loc[best_epoch, "val_bce"] + 0.1
    report = build_report(best_per_run(dlrm))
    section = report.sections[0]
    assert section.model == "dlrm" and section.metrics == ("bce", "auc", "test")
    text = to_markdown(report)
    assert "| method | 32 params | 128 params | 512 params |" in text  # caps, not ppd
    assert "Best test BCE at the best val BCE point (lower is better)" in text
    hash16 = section.cells[(section.cells["method"] == "hash") & (section.cells["ppd"] == 16)]
    expected = dlrm[best_epoch & (dlrm["method"] == "hash") & (dlrm["budget_asked"] == 16 * DIM)]
    assert hash16["test_mean"].iloc[0] == pytest.approx(expected["test_bce"].mean())
    # GMF rows have no test split: no test table.
    gmf = build_report(best_per_run(rows[rows["dataset"] == GMF_DATASET]))
    assert gmf.sections[0].metrics == ("bce", "auc") and "test BCE" not in to_markdown(gmf)


def test_two_sweeps_of_one_dataset_are_never_pooled_as_seeds(results_csv, tmp_path):
    from cce_bench.plots import PlotRequest, draw

    rows = load_results([str(results_csv)])
    one = rows[(rows["dataset"] == GMF_DATASET) & (rows["seed"] == 0)]
    # The same grid run twice with another setting (as `sweep qs` and `sweep lr01` with
    # --lr): other run ids, one seed each.
    other = one.assign(sweep="lr01", run_id=one["run_id"] + "-lr01",
                       val_bce=one["val_bce"] + 0.05)
    both = pd.concat([one.assign(sweep="qs"), other], ignore_index=True)
    report = build_report(best_per_run(both))
    assert [s.title for s in report.sections] == [
        f"{GMF_DATASET} (GMF, dim {DIM}, sweep lr01)", f"{GMF_DATASET} (GMF, dim {DIM}, sweep qs)"]
    for section in report.sections:
        assert set(section.cells["seeds"]) == {1}  # not "2 seeds" of two configurations
    qs, lr01 = report.sections[1], report.sections[0]
    assert (lr01.cells["bce_mean"].values - qs.cells["bce_mean"].values) == pytest.approx(0.05)
    outcome = draw(both, PlotRequest(metrics=["bce"], formats=["png"], out_dir=tmp_path))
    assert sorted(p.name for p in outcome.written) == [
        f"lr01+qs_{GMF_DATASET}_lr01_bce.png", f"lr01+qs_{GMF_DATASET}_qs_bce.png"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "latex"])
def test_runs_still_improving_are_marked_in_every_format(results_csv, in_tmp, fmt):
    from typer.testing import CliRunner

    from cce_bench.cli import app

    from .conftest import still_rising

    rows = load_results([str(results_csv)])
    gmf = rows["dataset"] == GMF_DATASET
    # cce at 16 ppd, 4 chunks: one seed of three still rising; the full table: every seed.
    cce16 = gmf & (rows["method"] == "cce") & (rows["budget_asked"] == 16 * DIM) & (
        rows["n_chunks"] == 4) & (rows["seed"] == 0)
    rising = still_rising(rows, cce16 | (gmf & (rows["method"] == "full")))
    rising.to_csv(in_tmp / "rising.csv", index=False)
    result = CliRunner().invoke(app, ["report", "rising.csv", "--format", fmt])
    assert result.exit_code == 0, result.output
    out = result.stdout
    if fmt == "csv":
        back = pd.read_csv(io.StringIO(out))
        marked = back[back["still_improving"] > 0]
        assert sorted(zip(marked["method"], marked["ppd"].fillna(0), marked["still_improving"])
                      ) == [("cce", 16, 1), ("full", 0, 3)]
        assert back.loc[back["dataset"] != GMF_DATASET, "still_improving"].eq(0).all()
        return
    mark = "$^\\dagger$" if fmt == "latex" else "†"
    flat = " ".join(out.split())
    if fmt != "table":  # (rich wraps the cells of a wide table over lines)
        gmf_part = out[out.index(GMF_DATASET):]
        line = next(li for li in gmf_part.splitlines()
                    if li.startswith(("| cce, 4 chunks |", "cce, 4 chunks &")))
        cells = line.split(" | " if fmt == "markdown" else " & ")
        assert f" {mark}" in cells[2]  # the 16 ppd cell (in bold: the best there), only it
        assert line.count(mark) == 1
    assert f"{mark} still improving at the last epoch (in at least one seed)" in flat
    assert "(3 seeds; " + mark + " 3 of 3 still improving at the last epoch)" in flat
    # The DLRM dataset's section (first, in name order) carries no mark and no footnote.
    assert mark not in flat.split(GMF_DATASET)[0]
