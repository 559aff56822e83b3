"""Trajectories -> Tinker datums for the RL losses.

``trajectory_to_data`` (tinker-cookbook semantics): turns are merged into one sequence while each new
observation *extends* the sequence so far (element-wise prefix); otherwise the current datum is emitted and a
new one starts. Observation tokens get logprob 0, advantage 0 and mask 0; sampled tokens get the sampler's
logprobs, the trajectory's scalar advantage and mask 1. The datum is shifted: input ``seq[:-1]``, targets
``seq[1:]``, and logprobs / advantages / mask drop their *first* element. ``mask`` is for client-side
metrics only: :func:`remove_mask` strips it before the datum is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cookbook.errors import DataError
from cookbook.renderers.base import model_input_tokens
from cookbook.rl.types import Trajectory, TrajectoryGroup

PARSE_ERROR_MASKED = "parse_error_masked"


def _make_datum(seq: list[int], logprobs: list[float], advantages: list[float], mask: list[float]) -> Any:
    import tinker

    if len(seq) < 2:
        raise DataError(f"an RL datum needs at least 2 tokens, got {len(seq)}")
    n = len(seq) - 1

    def f32(xs: list[float]) -> Any:
        return tinker.TensorData(data=[float(x) for x in xs], dtype="float32", shape=[n])

    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(seq[:-1]),
        loss_fn_inputs={
            "target_tokens": tinker.TensorData(data=seq[1:], dtype="int64", shape=[n]),
            "logprobs": f32(logprobs[1:]),
            "advantages": f32(advantages[1:]),
            "mask": f32(mask[1:]),
        },
    )


def trajectory_to_data(traj: Trajectory, advantage: float) -> list[Any]:
    data: list[Any] = []
    seq: list[int] = []
    lps: list[float] = []
    advs: list[float] = []
    mask: list[float] = []
    for tr in traj.transitions:
        ob = model_input_tokens(tr.ob) if not isinstance(tr.ob, list) else tr.ob
        if not seq:
            delta = ob
        elif len(ob) >= len(seq) and ob[: len(seq)] == seq:
            delta = ob[len(seq) :]
        else:
            data.append(_make_datum(seq, lps, advs, mask))
            seq, lps, advs, mask = [], [], [], []
            delta = ob
        n_ac = len(tr.ac.tokens)
        masked = tr.metrics.get(PARSE_ERROR_MASKED, 0.0) >= 1
        seq += delta + tr.ac.tokens
        lps += [0.0] * len(delta) + (tr.ac.logprobs if n_ac else [])
        advs += [0.0] * len(delta) + [0.0 if masked else advantage] * n_ac
        mask += [0.0] * len(delta) + [0.0 if masked else 1.0] * n_ac
    if seq:
        data.append(_make_datum(seq, lps, advs, mask))
    return data


def assemble_training_data(
    groups: Sequence[TrajectoryGroup], advantages: Sequence[Sequence[float]]
) -> tuple[list[Any], list[dict[str, int]]]:
    """Flat datums of every trajectory of every group, and ``{"group_idx", "traj_idx"}`` per datum."""
    data: list[Any] = []
    meta: list[dict[str, int]] = []
    for gi, (group, advs) in enumerate(zip(groups, advantages)):
        if len(advs) != len(group.trajectories):
            raise DataError(f"group {gi}: {len(group.trajectories)} trajectories but {len(advs)} advantages")
        for ti, (traj, adv) in enumerate(zip(group.trajectories, advs)):
            for d in trajectory_to_data(traj, float(adv)):
                data.append(d)
                meta.append({"group_idx": gi, "traj_idx": ti})
    return data, meta


def remove_mask(datum: Any) -> Any:
    """The datum without its client-side ``mask`` input (Tinker's losses do not take one)."""
    import tinker

    inputs = {k: v for k, v in datum.loss_fn_inputs.items() if k != "mask"}
    return tinker.Datum(model_input=datum.model_input, loss_fn_inputs=inputs)


def split_list(items: Sequence[Any], k: int) -> list[list[Any]]:
    """``k`` nearly equal consecutive chunks with ``linspace`` boundaries: ``[1..5], 2 -> [[1, 2], [3, 4, 5]]``."""
    k = max(1, min(k, len(items)))
    bounds = np.linspace(0, len(items), k + 1).astype(int)
    return [list(items[bounds[i] : bounds[i + 1]]) for i in range(k)]


def reference_logprobs(sampling_client: Any, data: Sequence[Any]) -> list[np.ndarray]:
    """Per datum, the reference logprob of every target token: ``compute_logprobs(input + [last target])[1:]``."""
    futures = []
    for d in data:
        targets = d.loss_fn_inputs["target_tokens"].tolist()
        futures.append(sampling_client.compute_logprobs(d.model_input.append_int(int(targets[-1]))))
    out = []
    for d, fut in zip(data, futures):
        lps = fut.result()[1:]
        if len(lps) != d.model_input.length or any(x is None for x in lps):
            raise DataError(
                f"compute_logprobs returned {len(lps)} logprobs (or a None) for a datum of {d.model_input.length} targets"
            )
        out.append(np.asarray(lps, dtype=np.float64))
    return out


def with_advantages(datum: Any, advantages: np.ndarray) -> Any:
    """The datum with its ``advantages`` replaced (float32, one per target token)."""
    import tinker

    inputs = dict(datum.loss_fn_inputs)
    inputs["advantages"] = tinker.TensorData(
        data=[float(x) for x in np.asarray(advantages, dtype=np.float32)], dtype="float32", shape=[len(advantages)]
    )
    return tinker.Datum(model_input=datum.model_input, loss_fn_inputs=inputs)
