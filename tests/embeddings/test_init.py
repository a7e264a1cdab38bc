"""Initialisation: the common output scale and the init option (issue 11; docs/init.md)."""

from __future__ import annotations

import math

import pytest
import torch

from cce_bench import ConfigError, make_embedding
from cce_bench.embeddings import method_names

VOCAB, DIM, CHUNKS, BUDGET = 2000, 16, 4, 256 * 16

@pytest.mark.parametrize("method", method_names())
def test_every_method_starts_at_the_common_output_scale_under_both_inits(method):
    rms = {}
    for init in ("small", "authors"):
        emb = make_embedding(VOCAB, BUDGET, DIM, method, CHUNKS, seed=0, init=init)
        assert emb.output_std == pytest.approx({"small": 0.1, "authors": 1 / math.sqrt(3)}[init]
                                               / math.sqrt(DIM))
        with torch.no_grad():
            rms[init] = float(emb(torch.arange(VOCAB)).pow(2).mean().sqrt())
        # Sample noise of tables with few rows, and bloom's coinciding hashes, stay inside this.
        assert 0.8 < rms[init] / emb.output_std < 1.25, (init, rms[init] / emb.output_std)
    # The authors' U(+-1/sqrt(dim)) has std 1/sqrt(3 dim): 5.77x the default.
    assert rms["authors"] / rms["small"] == pytest.approx(10 / math.sqrt(3), rel=0.05)

def test_init_takes_a_number_and_names_its_choices():
    emb = make_embedding(100, 64 * 8, 8, "hash", seed=0, init=0.5)
    assert emb.output_std == pytest.approx(0.5 / math.sqrt(8))
    with pytest.raises(ConfigError, match="unknown init 'big'; choose from: small, authors"):
        make_embedding(100, 64 * 8, 8, "hash", init="big")
    with pytest.raises(ConfigError, match="init must be one of small, authors or a positive"):
        make_embedding(100, 64 * 8, 8, "hash", init=-1.0)

