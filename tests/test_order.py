"""An epoch's order of rows: "rows" is the permutation every run drew before `shuffle`
existed; "blocks" is a permutation of all rows made of contiguous blocks, shuffled within, whose
positions come block by block without the whole order being held."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cce_bench import order as order_module
from cce_bench.config import _ID_NEUTRAL, RunConfig
from cce_bench.errors import ConfigError
from cce_bench.order import BLOCK_ROWS, EpochOrder


def blocks(n: int, seed: int, block_rows: int) -> EpochOrder:
    return EpochOrder(n, torch.Generator().manual_seed(seed), "blocks", block_rows)


def test_rows_is_the_permutation_runs_drew_before():
    drawn = EpochOrder(1000, torch.Generator().manual_seed(3)).all()
    assert torch.equal(drawn, torch.randperm(1000, generator=torch.Generator().manual_seed(3)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), block_rows=st.integers(1, 64), seed=st.integers(0, 2**31))
def test_blocks_are_a_permutation_of_contiguous_shuffled_runs(n, block_rows, seed):
    drawn = blocks(n, seed, block_rows).all()
    assert torch.equal(drawn.sort().values, torch.arange(n))  # every row once
    # Cut at the block boundaries, each piece is one block's rows: a contiguous range.
    pieces = drawn.split([min(block_rows, n - b * block_rows)
                          for b in blocks(n, seed, block_rows).blocks.tolist()])
    assert len(pieces) == math.ceil(n / block_rows)
    for piece in pieces:
        first = int(piece.min())
        assert first % block_rows == 0
        assert torch.equal(piece.sort().values, torch.arange(first, first + len(piece)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), block_rows=st.integers(1, 64), seed=st.integers(0, 2**31),
       start=st.integers(0, 320), length=st.integers(0, 150))
def test_any_range_of_positions_is_that_range_of_the_whole_order(n, block_rows, seed, start,
                                                                 length):
    whole = blocks(n, seed, block_rows).all()
    lazy = blocks(n, seed, block_rows)  # the same seed: the same order
    assert torch.equal(lazy.rows(start, start + length), whole[start:start + length])
    segments = lazy.segments(0, n)
    assert len(segments) == math.ceil(n / block_rows) and torch.equal(torch.cat(segments), whole)


def test_a_seed_gives_one_order_and_another_seed_another():
    assert torch.equal(blocks(5000, 1, 64).all(), blocks(5000, 1, 64).all())
    assert not torch.equal(blocks(5000, 1, 64).all(), blocks(5000, 2, 64).all())
    # Within a block the rows are shuffled, not in file order.
    assert not torch.equal(blocks(5000, 1, 64).block(0).sort().values, blocks(5000, 1, 64).block(0))


def test_the_block_size_is_the_documented_one(monkeypatch):
    assert BLOCK_ROWS == 2**20 and blocks(3 * 2**20 + 5, 0, None).block_rows == 2**20
    monkeypatch.setattr(order_module, "BLOCK_ROWS", 16)  # read when an order is drawn
    assert len(blocks(100, 0, None).blocks) == 7


def test_a_window_of_a_billion_rows_costs_its_blocks_only():
    # Criteo Terabyte's window: 1,024 batches of 2,048 rows, here at a position past the
    # start; the order holds one entry per block (954), never the 10^9 rows (8 GB).
    n, window = 10**9, 1024 * 2048
    start = time.perf_counter()
    drawn = blocks(n, 7, None)
    rows = drawn.rows(400 * window + 12_345, 401 * window + 12_345)
    assert time.perf_counter() - start < 5  # about 0.1 s: three blocks of 2^20 drawn
    assert len(drawn.blocks) == len(drawn.seeds) == math.ceil(n / BLOCK_ROWS)
    assert sum(len(b) for b in drawn.cache.values()) <= 2 * BLOCK_ROWS  # at most two blocks
    assert len(rows) == window and len(rows.unique()) == window
    assert 0 <= int(rows.min()) and int(rows.max()) < n
    assert len({int(r) // BLOCK_ROWS for r in rows}) == 3  # the window spans three blocks
    assert torch.equal(rows[:100], drawn.rows(400 * window + 12_345, 400 * window + 12_445))


@pytest.mark.parametrize("fields, message", [
    ({"shuffle": "random"}, "shuffle 'random' is not one of rows, blocks"),
    ({"shuffle": "blocks", "model": "gmf", "bottom_mlp": "", "top_mlp": ""},
     "shuffle 'blocks' is for DLRM's Criteo rows streamed from the cache; GMF data fits on "
     "the device (use rows)"),
])
def test_a_bad_shuffle_is_one_line(fields, message):
    settings_ = dict(model="dlrm", dim=8, bottom_mlp="13-8", top_mlp="8-1") | fields
    with pytest.raises(ConfigError) as err:
        RunConfig("criteo-synthetic-100", "cce", 160, **settings_)
    assert str(err.value) == message


def test_shuffle_rows_keeps_run_ids_and_blocks_changes_them():
    # The default stays out of the hash (config._ID_NEUTRAL), so rows written before shuffle
    # existed still resume; test_spec checks a GMF id against the hash without the field.
    run = RunConfig("criteo-synthetic-100", "cce", 160, model="dlrm")
    assert _ID_NEUTRAL["shuffle"] == run.shuffle == "rows"
    assert replace(run, shuffle="blocks").run_id != run.run_id
