"""Advantage estimators over groups of trajectories (one scalar reward per trajectory).

A *group* is the G trajectories sampled for one prompt; ``rewards`` is their total rewards ``R_1..R_G``.
Each function maps one group's rewards to one advantage per trajectory (float64). The cookbook then copies
each trajectory's advantage onto every action token (Tinker input ``advantages``).

Edge cases are explicit and identical across estimators:

* an all-equal group gives exactly zero advantages (checked with ``==`` first: in floating point
  ``R - mean(R)`` can be ~1e-16 rather than 0, and GRPO with a tiny epsilon would blow that up to ±1);
* a group of one has no baseline to compare with: its advantage is 0 (``singleton="zero"``, the default
  and TRL's behaviour) or, for GRPO, the raw reward (``singleton="raw"``, verl's mean 0 / std 1 rule);
* a NaN or infinite reward raises :class:`~cookbook.errors.DataError` naming the group and trajectory.

Batch helpers: :func:`compute_advantages` (every group, one estimator) and
:func:`filter_constant_reward_groups` (drops constant groups across the whole batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cookbook.errors import ConfigurationError, DataError

FloatArray = NDArray[np.float64]
Singleton = Literal["zero", "raw"]
AdvantageMethod = Literal["centred", "grpo", "rloo", "dr_grpo"]
ADVANTAGE_METHODS: tuple[str, ...] = ("centred", "grpo", "rloo", "dr_grpo")

__all__ = [
    "ADVANTAGE_METHODS",
    "check_rewards",
    "compute_advantages",
    "constant_reward_groups",
    "dr_grpo_advantages",
    "filter_constant_reward_groups",
    "group_centred_advantages",
    "grpo_advantages",
    "rloo_advantages",
]


def check_rewards(rewards: ArrayLike, group_index: int | None = None) -> FloatArray:
    """One group's rewards as a 1-D float64 array; raises :class:`DataError` on NaN/inf, naming the group."""
    where = f"group {group_index}" if group_index is not None else "rewards"
    try:
        arr = np.asarray(rewards, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: rewards must be numbers ({exc})") from exc
    if arr.ndim != 1:
        raise DataError(f"{where}: expected one total reward per trajectory (shape [G]), got shape {list(arr.shape)}")
    if arr.size == 0:
        raise DataError(f"{where}: the group is empty; drop it before computing advantages")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}, trajectory {i}: reward is {float(arr[i])!r}; rewards must be finite "
            "(fix the environment's reward or drop the trajectory)"
        )
    return arr


def _all_equal(rewards: FloatArray) -> bool:
    return bool(np.all(rewards == rewards[0]))


def _singleton(rewards: FloatArray, singleton: Singleton) -> FloatArray:
    if singleton == "zero":
        return np.zeros(1)
    if singleton == "raw":
        return rewards.copy()
    raise ConfigurationError(f"singleton: expected 'zero' or 'raw', got {singleton!r}")


def group_centred_advantages(rewards: ArrayLike) -> FloatArray:
    """tinker-cookbook's default: ``A_i = R_i - mean(R)`` (no std, no leave-one-out).

    ``sum_i A_i = 0``; a group of one gives ``[0]``; all-equal rewards give zeros.
    """
    r = check_rewards(rewards)
    if _all_equal(r):
        return np.zeros_like(r)
    return r - r.mean()


def dr_grpo_advantages(rewards: ArrayLike) -> FloatArray:
    """Dr.GRPO (arXiv 2503.20783): ``A_i = R_i - mean(R)``, GRPO without the std division.

    Numerically the same as :func:`group_centred_advantages`; Dr.GRPO's other change (no per-sequence
    length normalisation) is an aggregation choice, which Tinker's summed losses already make.
    """
    return group_centred_advantages(rewards)


def grpo_advantages(
    rewards: ArrayLike, *, epsilon: float = 1e-6, bessel: bool = True, singleton: Singleton = "zero"
) -> FloatArray:
    """GRPO (DeepSeekMath): ``A_i = (R_i - mean(R)) / (std(R) + ε)``.

    ``std`` is Bessel-corrected when ``bessel`` (``sqrt(Σ(R - mean)² / (G - 1))``, torch.std, verl and
    TRL), else the population std (``/ G``, numpy's default). ``epsilon`` (verl 1e-6, TRL 1e-4,
    OpenRLHF 1e-9) keeps all-equal groups finite: their advantages are 0 (also when ``ε = 0``).
    A group of one: ``[0]`` (``singleton="zero"``) or ``[R_1]`` (``"raw"``, verl: mean 0, std 1).
    """
    r = check_rewards(rewards)
    if epsilon < 0 or not math.isfinite(epsilon):
        raise ConfigurationError(f"epsilon: must be a finite number >= 0, got {epsilon!r}")
    if r.size == 1:
        return _singleton(r, singleton)
    if _all_equal(r):
        return np.zeros_like(r)
    centred = r - r.mean()
    ddof = 1 if bessel else 0
    std = math.sqrt(float(np.sum(centred * centred)) / (r.size - ddof))
    if std + epsilon == 0.0:
        return np.zeros_like(r)
    return centred / (std + epsilon)


def rloo_advantages(rewards: ArrayLike) -> FloatArray:
    """RLOO (Ahmadian et al.): ``A_i = R_i - (Σ_j R_j - R_i)/(G - 1) = G/(G-1)·(R_i - mean(R))``.

    Each trajectory's baseline is the mean of the *other* G - 1 rewards. ``sum_i A_i = 0``. A group of one
    has no leave-one-out baseline: its advantage is 0. All-equal rewards give zeros.
    """
    r = check_rewards(rewards)
    g = r.size
    if g == 1 or _all_equal(r):
        return np.zeros_like(r)
    return r - (r.sum() - r) / (g - 1)


def compute_advantages(
    rewards_per_group: Sequence[ArrayLike],
    method: AdvantageMethod = "centred",
    *,
    epsilon: float = 1e-6,
    bessel: bool = True,
    singleton: Singleton = "zero",
) -> list[FloatArray]:
    """Advantages for every group of a batch with one estimator (``centred`` is the cookbook default).

    Rewards are validated group by group, so a NaN/inf reward raises a :class:`DataError` that names the
    group index and the trajectory. ``epsilon``, ``bessel`` and ``singleton`` apply to ``grpo`` only.
    """
    if method not in ADVANTAGE_METHODS:
        raise ConfigurationError(f"method: unknown advantage estimator {method!r}; choose one of {ADVANTAGE_METHODS}")
    out: list[FloatArray] = []
    for i, rewards in enumerate(rewards_per_group):
        r = check_rewards(rewards, group_index=i)
        if method == "grpo":
            out.append(grpo_advantages(r, epsilon=epsilon, bessel=bessel, singleton=singleton))
        elif method == "rloo":
            out.append(rloo_advantages(r))
        else:
            out.append(group_centred_advantages(r))
    return out


def constant_reward_groups(rewards_per_group: Sequence[ArrayLike]) -> NDArray[np.bool_]:
    """For each group of the batch, whether all its rewards are equal (``==``; a group of one is constant).

    Such a group has all-zero centred advantages and so contributes no policy gradient.
    """
    flags = []
    for i, rewards in enumerate(rewards_per_group):
        r = check_rewards(rewards, group_index=i)
        flags.append(_all_equal(r))
    return np.asarray(flags, dtype=bool)


def filter_constant_reward_groups(
    rewards_per_group: Sequence[ArrayLike], *, keep_one_if_all_constant: bool = True
) -> list[int]:
    """Indices of the groups to keep: those whose rewards are not all equal, decided over the whole batch.

    The filter looks at every group of the batch (tinker-cookbook #155 applied it inside each group, where
    it never removed anything). If every group is constant, tinker-cookbook keeps the first one (so the
    batch is never empty): ``[0]`` when ``keep_one_if_all_constant``, else ``[]``. An empty batch gives
    ``[]``.
    """
    constant = constant_reward_groups(rewards_per_group)
    kept = [int(i) for i in np.flatnonzero(~constant)]
    if not kept and constant.size and keep_one_if_all_constant:
        return [0]
    return kept
