"""Supervised metrics: weighted mean NLL and bits per byte (tinker-cookbook semantics).

``logprobs`` are the target-token logprobs Tinker returns (output ``logprobs`` of ``forward_backward`` /
``forward``, or ``compute_logprobs(...)[1:]``), ``weights`` the datum's Tinker ``weights``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cookbook.errors import DataError

FloatArray = NDArray[np.float64]

__all__ = [
    "bits_per_byte",
    "compute_bpb",
    "counted_runs",
    "mean_nll_per_example",
    "weighted_mean_nll",
]


def _pair(lp: ArrayLike, w: ArrayLike, i: int) -> tuple[FloatArray, FloatArray]:
    a, b = np.asarray(lp, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"datum {i}: logprobs shape {list(a.shape)} does not match weights shape {list(b.shape)}")
    for name, arr in (("logprobs", a), ("weights", b)):
        if not np.isfinite(arr).all():
            raise DataError(f"datum {i}: {name} contains NaN/inf")
    return a, b


def weighted_mean_nll(logprobs_list: Sequence[ArrayLike], weights_list: Sequence[ArrayLike]) -> float:
    """``NLL = -Σ_i Σ_t lp_i,t·w_i,t / Σ_i Σ_t w_i,t``, pooled over the batch (``compute_mean_nll``).

    Returns NaN when the total weight is 0 (empty batch or all-zero weights), as tinker-cookbook does.
    With per-example weights that sum to 1 (SFT ``reduction="mean"``) this is the mean over examples of
    each example's token-mean NLL.
    """
    if len(logprobs_list) != len(weights_list):
        raise DataError(f"{len(logprobs_list)} logprob arrays but {len(weights_list)} weight arrays")
    num = den = 0.0
    for i, (lp, w) in enumerate(zip(logprobs_list, weights_list)):
        a, b = _pair(lp, w, i)
        num += float(np.sum(a * b))
        den += float(np.sum(b))
    return -num / den if den != 0 else math.nan


def mean_nll_per_example(logprobs_list: Sequence[ArrayLike], weights_list: Sequence[ArrayLike]) -> float:
    """``mean_i (-Σ_t lp_i,t·w_i,t / Σ_t w_i,t)`` over examples with nonzero total weight (NaN if none)."""
    if len(logprobs_list) != len(weights_list):
        raise DataError(f"{len(logprobs_list)} logprob arrays but {len(weights_list)} weight arrays")
    per_example = []
    for i, (lp, w) in enumerate(zip(logprobs_list, weights_list)):
        a, b = _pair(lp, w, i)
        total = float(np.sum(b))
        if total != 0:
            per_example.append(-float(np.sum(a * b)) / total)
    return float(np.mean(per_example)) if per_example else math.nan


def bits_per_byte(nll_nats: float, num_bytes: int) -> float:
    """``bpb = nll_nats / (ln 2 · num_bytes)``: summed NLL in nats over the UTF-8 bytes it predicts.

    NaN when ``num_bytes == 0``.
    """
    if num_bytes < 0:
        raise DataError(f"num_bytes: must be >= 0, got {num_bytes}")
    return nll_nats / (math.log(2) * num_bytes) if num_bytes else math.nan


def counted_runs(
    weights: ArrayLike, target_tokens: Sequence[int], special_ids: Iterable[int] = ()
) -> list[tuple[int, int]]:
    """The ``[start, end)`` runs of consecutive counted tokens: ``weight > 0`` and not a special token."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(target_tokens),):
        raise DataError(f"weights shape {list(w.shape)} does not match {len(target_tokens)} target tokens")
    special = set(int(t) for t in special_ids)
    counted = [bool(w[t] > 0) and int(target_tokens[t]) not in special for t in range(len(target_tokens))]
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for t, c in enumerate([*counted, False]):
        if c and start is None:
            start = t
        elif not c and start is not None:
            runs.append((start, t))
            start = None
    return runs


class _Decoder(Protocol):
    def decode(self, token_ids: list[int]) -> str: ...


def compute_bpb(logprobs: ArrayLike, weights: ArrayLike, target_tokens: Sequence[int], tokenizer: _Decoder) -> float:
    """tinker-cookbook's ``compute_bpb``: ``-Σ lp[counted] / (ln 2 · bytes)``.

    A token is counted when ``weight > 0`` and it is not a special token (``tokenizer.all_special_ids``);
    the weights act only as a mask. ``bytes`` is the UTF-8 length of ``tokenizer.decode`` of each
    contiguous counted run (decoding runs, not tokens, keeps multi-token characters whole). NaN when
    nothing is counted.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    special = getattr(tokenizer, "all_special_ids", ()) or ()
    runs = counted_runs(weights, target_tokens, special)
    if lp.shape != (len(target_tokens),):
        raise DataError(f"logprobs shape {list(lp.shape)} does not match {len(target_tokens)} target tokens")
    nll = -sum(float(np.sum(lp[a:b])) for a, b in runs)
    num_bytes = sum(len(tokenizer.decode([int(t) for t in target_tokens[a:b]]).encode("utf-8")) for a, b in runs)
    return bits_per_byte(nll, num_bytes)
