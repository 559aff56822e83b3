"""Weighted mean NLL and bits per byte."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cookbook.errors import DataError
from cookbook.supervised.nll import (
    bits_per_byte,
    compute_bpb,
    counted_runs,
    mean_nll_per_example,
    weighted_mean_nll,
)


def test_weighted_mean_nll_pooled() -> None:
    assert weighted_mean_nll([[-1.0, -2.0], [-3.0]], [[1, 1], [2]]) == 2.25
    assert math.isnan(weighted_mean_nll([[-1.0]], [[0.0]]))
    assert math.isnan(weighted_mean_nll([], []))
    with pytest.raises(DataError, match="datum 0"):
        weighted_mean_nll([[-1.0, -2.0]], [[1.0]])
    with pytest.raises(DataError, match="NaN"):
        weighted_mean_nll([[np.nan]], [[1.0]])


def test_mean_normalised_weights_give_mean_of_example_means() -> None:
    lps = [np.array([-1.0, -2.0]), np.array([-3.0, -3.0, -6.0])]
    ws = [np.full(2, 1 / 2), np.full(3, 1 / 3)]
    assert weighted_mean_nll(lps, ws) == pytest.approx((1.5 + 4.0) / 2)
    assert mean_nll_per_example(lps, [np.ones(2), np.ones(3)]) == pytest.approx(2.75)


def test_bits_per_byte() -> None:
    assert bits_per_byte(2 * math.log(2), 4) == pytest.approx(0.5, rel=1e-15)
    assert math.isnan(bits_per_byte(1.0, 0))


class FakeTokenizer:
    """Token t decodes to chr(ord('a') + t); 'é' for 9 (two UTF-8 bytes); 0 is special."""

    all_special_ids = [0]

    def decode(self, ids: list[int]) -> str:
        return "".join("é" if t == 9 else chr(ord("a") + t) for t in ids)


def test_compute_bpb_counts_runs_skips_specials_and_zero_weights() -> None:
    tokens = [0, 1, 9, 2, 3]
    weights = [1.0, 1.0, 1.0, 0.0, 0.5]
    logprobs = [-9.0, -1.0, -2.0, -7.0, -3.0]
    assert counted_runs(weights, tokens, [0]) == [(1, 3), (4, 5)]
    # counted: tokens 1, 9, 3 -> nll 6 nats over bytes len("bé") + len("d") = 3 + 1
    assert compute_bpb(logprobs, weights, tokens, FakeTokenizer()) == pytest.approx(6 / (math.log(2) * 4))
    assert math.isnan(compute_bpb([-1.0], [0.0], [1], FakeTokenizer()))
