"""Deliberately wrong implementations that ``cookbook conform math`` must reject (used by test_conform_math).

Each mimics a real-world mistake; none imports the reference maths, so each stands on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _ratio(target_logprobs: Any, sampling_logprobs: Any) -> np.ndarray:
    return np.exp(np.asarray(target_logprobs, float) - np.asarray(sampling_logprobs, float))


def ppo_mean(target_logprobs, sampling_logprobs, advantages, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """PPO averaged over tokens instead of summed (the TRL/verl habit; Tinker sums)."""
    r, a = _ratio(target_logprobs, sampling_logprobs), np.asarray(advantages, float)
    n = max(r.size, 1)
    obj = np.minimum(r * a, np.clip(r, clip_low_threshold, clip_high_threshold) * a)
    active = ((a > 0) & (r > clip_high_threshold)) | ((a < 0) & (r < clip_low_threshold))
    loss = float(-obj.sum() / n)
    return {"loss": loss, "grad": np.where(active, 0.0, -r * a) / n, "metrics": {"loss:sum": loss}}


def ppo_clip_wrong_side(target_logprobs, sampling_logprobs, advantages, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """PPO with max instead of min: the clip binds on the wrong side (optimistic instead of pessimistic)."""
    r, a = _ratio(target_logprobs, sampling_logprobs), np.asarray(advantages, float)
    obj = np.maximum(r * a, np.clip(r, clip_low_threshold, clip_high_threshold) * a)
    active = ((a > 0) & (r < clip_low_threshold)) | ((a < 0) & (r > clip_high_threshold))
    loss = float(-obj.sum())
    return loss, np.where(active, 0.0, -r * a), {"loss:sum": loss}


def ppo_bad_metric_name(target_logprobs, sampling_logprobs, advantages, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """Correct maths, but the metric key has no ':' (the SDK's key.split(':') crashes on it)."""
    r, a = _ratio(target_logprobs, sampling_logprobs), np.asarray(advantages, float)
    obj = np.minimum(r * a, np.clip(r, clip_low_threshold, clip_high_threshold) * a)
    active = ((a > 0) & (r > clip_high_threshold)) | ((a < 0) & (r < clip_low_threshold))
    loss = float(-obj.sum())
    return loss, np.where(active, 0.0, -r * a), {"loss": loss}


def ppo_value_only(target_logprobs, sampling_logprobs, advantages, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """A correct PPO that returns only the loss value (for ``--signature value``)."""
    r, a = _ratio(target_logprobs, sampling_logprobs), np.asarray(advantages, float)
    with np.errstate(invalid="ignore"):
        obj = np.where(a == 0, 0.0, np.minimum(r * a, np.clip(r, clip_low_threshold, clip_high_threshold) * a))
    return float(-obj.sum())


def ppo_positional(lp, q, adv, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """A correct PPO with its own argument names (for ``--signature positional``)."""
    r, a = _ratio(lp, q), np.asarray(adv, float)
    with np.errstate(invalid="ignore"):
        obj = np.where(a == 0, 0.0, np.minimum(r * a, np.clip(r, clip_low_threshold, clip_high_threshold) * a))
        grad = np.where(a == 0, 0.0, -r * a)
    active = ((a > 0) & (r > clip_high_threshold)) | ((a < 0) & (r < clip_low_threshold))
    return float(-obj.sum()), np.where(active, 0.0, grad)


def cispo_no_stop_gradient(target_logprobs, sampling_logprobs, advantages, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """CISPO differentiated through the ratio: same loss value, gradient -A*(clip(r) + r*lp) inside the range."""
    lp = np.asarray(target_logprobs, float)
    r, a = _ratio(lp, sampling_logprobs), np.asarray(advantages, float)
    c = np.clip(r, clip_low_threshold, clip_high_threshold)
    inside = (r >= clip_low_threshold) & (r <= clip_high_threshold)
    loss = float(-(c * lp * a).sum())
    return {"loss": loss, "grad": -a * (c + np.where(inside, r * lp, 0.0)), "metrics": {"loss:sum": loss}}


def grpo_no_bessel(rewards, epsilon=1e-6, bessel=True, singleton="zero"):
    """GRPO that ignores ``bessel`` and always uses the population std (np.std's default ddof=0)."""
    r = np.asarray(rewards, float)
    if r.size == 1:
        return np.zeros(1) if singleton == "zero" else r.copy()
    centred = r - r.mean()
    std = r.std()
    return np.zeros_like(r) if std + epsilon == 0 else centred / (std + epsilon)


def ppo_own_errors(target_logprobs, sampling_logprobs, advantages, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """A correct PPO that validates its inputs with its own exception type and wording (not ours)."""
    lp, q, a = (np.asarray(x, float) for x in (target_logprobs, sampling_logprobs, advantages))
    if np.any(np.asarray(clip_low_threshold) > np.asarray(clip_high_threshold)):
        raise RuntimeError("bad clip interval")
    if not (np.all(np.isfinite(lp)) and np.all(np.isfinite(q)) and np.all(np.isfinite(a))):
        raise AssertionError("non-finite input")
    if not (lp.shape == q.shape == a.shape):
        raise IndexError("shapes")
    r = np.exp(lp - q)
    with np.errstate(invalid="ignore"):
        obj = np.where(a == 0, 0.0, np.minimum(r * a, np.clip(r, clip_low_threshold, clip_high_threshold) * a))
        grad = np.where(a == 0, 0.0, -r * a)
    active = ((a > 0) & (r > clip_high_threshold)) | ((a < 0) & (r < clip_low_threshold))
    loss = float(-obj.sum())
    return {"loss": loss, "grad": np.where(active, 0.0, grad), "metrics": {"loss:sum": loss}}
