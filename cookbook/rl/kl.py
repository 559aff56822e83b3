"""KL estimators, tinker-cookbook's KL diagnostics, the KL penalty and on-policy distillation advantages.

Schulman's estimators ("Approximating KL Divergence", 2020): for samples ``x ~ q`` and
``log r = log p(x) - log q(x)``, each of k1, k2, k3 has a mean that estimates ``KL(q ‖ p)``:

* ``k1 = -log r`` (unbiased, high variance, negative about half the time),
* ``k2 = ½·(log r)²`` (biased, low variance),
* ``k3 = (r - 1) - log r`` (unbiased, low variance, always >= 0).

In Tinker RL, q is the sampler (``loss_fn_inputs["logprobs"]``) and p the learner (the ``logprobs`` output
of ``forward_backward``), so ``kl_sample_train_v1 = mean(k1)`` and ``v2 = mean(k2)``.

Batch functions take one array per datum (``*_D``) and pool the masked tokens of the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cookbook.errors import ConfigurationError, DataError

FloatArray = NDArray[np.float64]

__all__ = [
    "discounted_future_sum",
    "distillation_reverse_kl_advantages",
    "entropy_over_action_tokens",
    "incorporate_kl_penalty",
    "k1",
    "k2",
    "k3",
    "kl_sample_train",
    "kl_sample_train_v1",
    "kl_sample_train_v2",
]


def _array(x: ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: expected numbers ({exc})") from exc
    if np.isnan(arr).any():
        raise DataError(f"{name}: contains NaN at index {int(np.flatnonzero(np.isnan(arr.ravel()))[0])}")
    return arr


def _log_ratio(logp: ArrayLike, logq: ArrayLike) -> FloatArray:
    lp, lq = _array(logp, "logp"), _array(logq, "logq")
    if lp.shape != lq.shape:
        raise DataError(f"logp shape {list(lp.shape)} does not match logq shape {list(lq.shape)}")
    return lp - lq


def k1(logp: ArrayLike, logq: ArrayLike) -> FloatArray:
    """``k1 = -log r = log q(x) - log p(x)`` per sample, ``x ~ q``; ``E_q[k1] = KL(q ‖ p)``."""
    return -_log_ratio(logp, logq)


def k2(logp: ArrayLike, logq: ArrayLike) -> FloatArray:
    """``k2 = ½·(log p(x) - log q(x))²`` per sample, ``x ~ q``; biased, ``E_q[k2] ≈ KL(q ‖ p)``."""
    lr = _log_ratio(logp, logq)
    return 0.5 * lr * lr


def k3(logp: ArrayLike, logq: ArrayLike) -> FloatArray:
    """``k3 = (r - 1) - log r`` with ``r = p(x)/q(x)``, ``x ~ q``; unbiased and ``>= 0``.

    Computed as ``expm1(log r) - log r`` (accurate for small ``log r``; +inf when r overflows).
    """
    lr = _log_ratio(logp, logq)
    with np.errstate(over="ignore"):
        return np.maximum(np.expm1(lr) - lr, 0.0)


def _pooled(values_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike], name: str) -> FloatArray:
    """The values at ``mask > 0`` of every datum, concatenated."""
    if len(values_D) != len(mask_D):
        raise DataError(f"{name}: {len(values_D)} datums but {len(mask_D)} masks")
    out = []
    for i, (v, m) in enumerate(zip(values_D, mask_D)):
        va, ma = _array(v, f"{name}[{i}]"), _array(m, f"mask[{i}]")
        if va.shape != ma.shape:
            raise DataError(f"{name}[{i}]: shape {list(va.shape)} does not match mask[{i}] shape {list(ma.shape)}")
        out.append(va[ma > 0])
    return np.concatenate(out) if out else np.zeros(0)


def _sample_train_diffs(
    sampling_logprobs_D: Sequence[ArrayLike], training_logprobs_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike]
) -> FloatArray:
    q = _pooled(sampling_logprobs_D, mask_D, "sampling_logprobs")
    lp = _pooled(training_logprobs_D, mask_D, "training_logprobs")
    if q.size != lp.size:
        raise DataError("sampling_logprobs and training_logprobs select different numbers of action tokens")
    if q.size == 0:
        raise DataError("mask: no action tokens (mask > 0) in the batch; the KL diagnostics need at least one")
    return q - lp


def kl_sample_train_v1(
    sampling_logprobs_D: Sequence[ArrayLike], training_logprobs_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike]
) -> float:
    """``optim/kl_sample_train_v1 = mean_t (q_t - lp_t)`` over every token with ``mask > 0`` in the batch.

    ``q`` = the sampler's logprobs (Tinker input ``logprobs``), ``lp`` = the trainer's (output ``logprobs``):
    the k1 estimate of ``KL(sampler ‖ trainer)``. Raises :class:`DataError` when no token is masked in.
    """
    return float(np.mean(_sample_train_diffs(sampling_logprobs_D, training_logprobs_D, mask_D)))


def kl_sample_train_v2(
    sampling_logprobs_D: Sequence[ArrayLike], training_logprobs_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike]
) -> float:
    """``optim/kl_sample_train_v2 = ½·mean_t (q_t - lp_t)²`` over the masked tokens of the batch (k2)."""
    d = _sample_train_diffs(sampling_logprobs_D, training_logprobs_D, mask_D)
    return float(0.5 * np.mean(d * d))


def entropy_over_action_tokens(sampling_logprobs_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike]) -> float:
    """``optim/entropy = -mean_t q_t`` over the masked (action) tokens of the batch: the sampled-token
    estimate of the sampler's entropy. Raises :class:`DataError` when no token is masked in."""
    q = _pooled(sampling_logprobs_D, mask_D, "sampling_logprobs")
    if q.size == 0:
        raise DataError("mask: no action tokens (mask > 0) in the batch; the entropy needs at least one")
    return float(-np.mean(q))


def kl_sample_train(
    sampling_logprobs_D: Sequence[ArrayLike], training_logprobs_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike]
) -> dict[str, float]:
    """tinker-cookbook's ``compute_kl_sample_train`` metrics: ``optim/kl_sample_train_v1``,
    ``optim/kl_sample_train_v2`` and ``optim/entropy`` (see the three functions above)."""
    return {
        "optim/kl_sample_train_v1": kl_sample_train_v1(sampling_logprobs_D, training_logprobs_D, mask_D),
        "optim/kl_sample_train_v2": kl_sample_train_v2(sampling_logprobs_D, training_logprobs_D, mask_D),
        "optim/entropy": entropy_over_action_tokens(sampling_logprobs_D, mask_D),
    }


def discounted_future_sum(x: ArrayLike, gamma: float) -> FloatArray:
    """``y_t = x_t + γ·y_{t+1}`` computed backwards (``y_{T-1} = x_{T-1}``), i.e. ``y_t = Σ_{k>=t} γ^(k-t)·x_k``.

    ``γ = 0`` returns ``x`` unchanged; an empty array gives an empty array.
    """
    xs = _array(x, "x")
    if xs.ndim != 1:
        raise DataError(f"x: expected shape [T], got {list(xs.shape)}")
    if not 0.0 <= gamma <= 1.0:
        raise ConfigurationError(f"gamma: discount must be in [0, 1], got {gamma!r}")
    y = np.empty_like(xs)
    acc = 0.0
    for t in range(xs.size - 1, -1, -1):
        acc = float(xs[t]) + gamma * acc
        y[t] = acc
    return y


def _per_datum(
    advantages_D: Sequence[ArrayLike], a_D: Sequence[ArrayLike], b_D: Sequence[ArrayLike], mask_D: Sequence[ArrayLike], names: tuple[str, str]
) -> list[tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
    n = len(advantages_D)
    for name, seq in ((names[0], a_D), (names[1], b_D), ("mask", mask_D)):
        if len(seq) != n:
            raise DataError(f"{name}: {len(seq)} datums but advantages has {n}")
    out = []
    for i in range(n):
        arrs = (
            _array(advantages_D[i], f"advantages[{i}]"),
            _array(a_D[i], f"{names[0]}[{i}]"),
            _array(b_D[i], f"{names[1]}[{i}]"),
            _array(mask_D[i], f"mask[{i}]"),
        )
        for name, arr in zip((names[0], names[1], "mask"), arrs[1:]):
            if arr.shape != arrs[0].shape:
                raise DataError(f"{name}[{i}]: shape {list(arr.shape)} does not match advantages[{i}] {list(arrs[0].shape)}")
        out.append(arrs)
    return out


def incorporate_kl_penalty(
    advantages_D: Sequence[ArrayLike],
    sampling_logprobs_D: Sequence[ArrayLike],
    base_logprobs_D: Sequence[ArrayLike],
    mask_D: Sequence[ArrayLike],
    kl_penalty_coef: float,
    kl_discount_factor: float = 0.0,
) -> tuple[list[FloatArray], dict[str, float]]:
    """tinker-cookbook's KL penalty against a reference (base) policy, centred on the batch mean.

    ``diff_t = (q_t - b_t)·m_t`` (q = sampled logprobs, b = the base model's logprobs of the same tokens),
    ``avg = Σ diff / Σ m`` over the **whole batch**, ``kl_adv_t = coef·m_t·(avg - diff_t)``; if
    ``γ = kl_discount_factor > 0``, ``kl_adv = discounted_future_sum(kl_adv, γ)`` over the whole datum
    (prompt positions included). Returns new arrays ``A + kl_adv`` (the inputs are not modified) and
    ``{"kl_policy_base": avg}``. Centring makes the penalty add nothing to the advantages on average.
    """
    rows = _per_datum(advantages_D, sampling_logprobs_D, base_logprobs_D, mask_D, ("sampling_logprobs", "base_logprobs"))
    diffs = [(q - b) * m for _, q, b, m in rows]
    total_mask = float(sum(np.sum(m) for *_, m in rows))
    if total_mask <= 0:
        raise DataError("mask: no action tokens in the batch; the KL penalty's batch mean is undefined")
    avg = float(sum(np.sum(d) for d in diffs)) / total_mask
    out = []
    for (adv, _, _, m), d in zip(rows, diffs):
        kl_adv = kl_penalty_coef * m * (avg - d)
        if kl_discount_factor > 0:
            kl_adv = discounted_future_sum(kl_adv, kl_discount_factor)
        out.append(adv + kl_adv)
    return out, {"kl_policy_base": avg}


def distillation_reverse_kl_advantages(
    advantages_D: Sequence[ArrayLike],
    sampling_logprobs_D: Sequence[ArrayLike],
    teacher_logprobs_D: Sequence[ArrayLike],
    mask_D: Sequence[ArrayLike],
    kl_penalty_coef: float = 1.0,
    kl_discount_factor: float = 0.0,
) -> tuple[list[FloatArray], dict[str, float]]:
    """On-policy distillation: ``A_t += -coef·m_t·(q_t - t_t)``, the per-token reverse KL (student q,
    teacher t), **not** centred; then the discounted future sum when ``kl_discount_factor > 0``.

    Returns the new advantages and ``{"teacher_kl": Σ (q - t)·m / Σ m}`` (NaN when no token is masked in).
    """
    rows = _per_datum(advantages_D, sampling_logprobs_D, teacher_logprobs_D, mask_D, ("sampling_logprobs", "teacher_logprobs"))
    out = []
    num = den = 0.0
    for adv, q, t, m in rows:
        reverse_kl = (q - t) * m
        num += float(np.sum(reverse_kl))
        den += float(np.sum(m))
        kl_adv = -kl_penalty_coef * m * reverse_kl
        if kl_discount_factor > 0:
            kl_adv = discounted_future_sum(kl_adv, kl_discount_factor)
        out.append(adv + kl_adv)
    return out, {"teacher_kl": num / den if den > 0 else float("nan")}
