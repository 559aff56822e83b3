"""The right formula of each spec'd quantity and its common wrong variants, written from the formulas.

Used by ``test_spec_separation.py``: the right formula must reproduce every spec case's ``expected`` (a
check on this file), and every wrong variant must give a different answer on every case it applies to
(so the case separates the right formula from the mistake). Nothing here imports ``cookbook``: each
family is an independent transcription of the formula in the spec's ``description``, with one switch
per plausible mistake (the mistakes people make when they re-implement Tinker's losses, GRPO, RLOO,
the KL estimators or DPO).

A variant is ``Variant(name, applies)``: ``applies(inputs, config)`` says whether the case has the
feature the mistake is about (a ratio other than 1, a clip bound in play, a config passed or not). A
variant that cannot apply to a case is not a weakness of that case: an on-policy datum cannot show a
ratio mistake, an empty datum cannot show a mean-versus-sum mistake on its gradient's values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Inputs = Mapping[str, Any]
Formula = Callable[..., dict[str, Any]]

PPO_DEFAULTS = (0.8, 1.2)  # Tinker docs: ppo (and gspo) clip the ratio to [0.8, 1.2] by default
DRO_DEFAULT_BETA = 0.05
DPO_DEFAULT_BETA = 0.1  # tinker-cookbook train_dpo
GRPO_DEFAULT_EPSILON = 1e-6  # verl


def _always(inputs: Inputs, config: Inputs) -> bool:
    return True


@dataclass(frozen=True)
class Variant:
    name: str
    applies: Callable[[Inputs, Inputs], bool] = _always
    description: str = ""
    outputs: tuple[str, ...] = ()  # the outputs the mistake changes (empty: all of them)


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        out = a * b
    return np.where((a == 0) | (b == 0), 0.0, out)


def _loss_out(per_token: np.ndarray, grad: np.ndarray) -> dict[str, Any]:
    loss = float(np.sum(per_token))
    return {"loss": loss, "grad": grad, "metrics": {"loss:sum": loss}}


def _mean_out(out: dict[str, Any], n: int) -> dict[str, Any]:
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.float64(out["loss"]) / n
        grad = out["grad"] / n
    return {"loss": float(loss), "grad": grad, "metrics": {"loss:sum": float(loss)}}


def _negate(out: dict[str, Any]) -> dict[str, Any]:
    return {"loss": -out["loss"], "grad": -out["grad"], "metrics": {"loss:sum": -out["loss"]}}


# ------------------------------------------------------------------------------------------------ features


def _ratios(inputs: Inputs) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(_arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"]))


def _active(inputs: Inputs) -> np.ndarray:
    """Tokens that matter: a nonzero advantage."""
    return _arr(inputs["advantages"]) != 0


def off_policy(inputs: Inputs, config: Inputs) -> bool:
    """Some token with A != 0 has a ratio other than 1 (a ratio mistake can show)."""
    return bool(np.any((_ratios(inputs) != 1) & _active(inputs)))


def has_signal(inputs: Inputs, config: Inputs) -> bool:
    """Some token with A != 0 (weights != 0 for cross_entropy)."""
    if "weights" in inputs:
        return bool(np.any(_arr(inputs["weights"]) != 0))
    return bool(np.any(_active(inputs)))


def _thresholds(inputs: Inputs, config: Inputs, defaults: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    lo = inputs.get("clip_low_threshold", config.get("clip_low_threshold", defaults[0]))
    hi = inputs.get("clip_high_threshold", config.get("clip_high_threshold", defaults[1]))
    shape = _arr(inputs["target_logprobs"]).shape
    return np.broadcast_to(_arr(lo), shape), np.broadcast_to(_arr(hi), shape)


def sets_thresholds(inputs: Inputs, config: Inputs) -> bool:
    return any(k in inputs or k in config for k in ("clip_low_threshold", "clip_high_threshold"))


def per_token_thresholds(inputs: Inputs, config: Inputs) -> bool:
    return any(k in inputs for k in ("clip_low_threshold", "clip_high_threshold"))


def default_thresholds(inputs: Inputs, config: Inputs) -> bool:
    return not sets_thresholds(inputs, config) and has_signal(inputs, config)


def _ppo_ratio(inputs: Inputs) -> np.ndarray:
    if "sequence_ratio_mask" in inputs:
        d = _arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])
        m = _arr(inputs["sequence_ratio_mask"]) != 0
        s = math.exp(float(np.sum(d[m])) / max(int(m.sum()), 1))
        return np.full(d.shape, s)
    return _ratios(inputs)


def on_a_bound(defaults: tuple[float, float]) -> Callable[[Inputs, Inputs], bool]:
    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        return bool(np.any(((r == hi) & (a > 0)) | ((r == lo) & (a < 0))))

    return applies


def clip_binds(defaults: tuple[float, float]) -> Callable[[Inputs, Inputs], bool]:
    """Some token with A != 0 has its ratio outside [lo, hi]."""

    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        return bool(np.any(((r > hi) | (r < lo)) & (a != 0)))

    return applies


def clip_active(defaults: tuple[float, float]) -> Callable[[Inputs, Inputs], bool]:
    """PPO's clipped branch is the strict minimum for some token (its gradient is 0)."""

    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        return bool(np.any(((a > 0) & (r > hi)) | ((a < 0) & (r < lo))))

    return applies


def inside_range(defaults: tuple[float, float]) -> Callable[[Inputs, Inputs], bool]:
    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        lp = _arr(inputs["target_logprobs"])
        return bool(np.any((r >= lo) & (r <= hi) & (a != 0) & (lp != 0)))

    return applies


def clip_moves(defaults: tuple[float, float], other: Callable[[np.ndarray, np.ndarray, Inputs, Inputs], tuple[Any, Any]]) -> Callable[[Inputs, Inputs], bool]:
    """The mistaken bounds ``other(lo, hi, inputs, config)`` clip some token (A != 0) to another value."""

    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        lo2, hi2 = other(lo, hi, inputs, config)
        return bool(np.any((np.clip(r, lo, hi) != np.clip(r, lo2, hi2)) & (a != 0)))

    return applies


def objective_moves(defaults: tuple[float, float], other: Callable[..., tuple[Any, Any]]) -> Callable[[Inputs, Inputs], bool]:
    """PPO's per-token objective or its gradient changes for some token under the mistaken bounds."""

    def ppo_terms(r: np.ndarray, a: np.ndarray, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
        value = np.minimum(_times(r, a), _times(np.clip(r, lo, hi), a))
        active = ((a > 0) & (r > hi)) | ((a < 0) & (r < lo))
        return value, active

    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        v1, g1 = ppo_terms(r, a, lo, hi)
        v2, g2 = ppo_terms(r, a, *other(lo, hi, inputs, config))
        return bool(np.any((v1 != v2) | (g1 != g2)))

    return applies


def unclipped_outside(defaults: tuple[float, float]) -> Callable[[Inputs, Inputs], bool]:
    """A token outside [lo, hi] where PPO's min picks the unclipped branch (A > 0, r < lo or A < 0, r > hi)."""

    def applies(inputs: Inputs, config: Inputs) -> bool:
        r, a = _ppo_ratio(inputs), _arr(inputs["advantages"])
        lo, hi = _thresholds(inputs, config, defaults)
        return bool(np.any(((a > 0) & (r < lo)) | ((a < 0) & (r > hi))))

    return applies


def several_tokens(inputs: Inputs, config: Inputs) -> bool:
    """Mean and sum differ: at least two tokens (one-token cases pin a branch, not the aggregation)."""
    return _arr(inputs["target_logprobs"]).size > 1 and has_signal(inputs, config)


def _epsilon_reading(lo: Any, hi: Any, inputs: Inputs, config: Inputs) -> tuple[Any, Any]:
    return 1 - lo, 1 + hi


def _defaults_of(defaults: tuple[float, float]) -> Callable[..., tuple[Any, Any]]:
    return lambda lo, hi, inputs, config: defaults


def _when_default(pair: tuple[float, float]) -> Callable[..., tuple[Any, Any]]:
    def other(lo: Any, hi: Any, inputs: Inputs, config: Inputs) -> tuple[Any, Any]:
        if sets_thresholds(inputs, config):
            return lo, hi
        return pair

    return other


def huge_ratio_zero_advantage(inputs: Inputs, config: Inputs) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.any(np.isinf(_ratios(inputs)) & (_arr(inputs["advantages"]) == 0)))


def _both(*preds: Callable[[Inputs, Inputs], bool]) -> Callable[[Inputs, Inputs], bool]:
    return lambda inputs, config: all(p(inputs, config) for p in preds)


# ------------------------------------------------------------------------------------------------ losses


def cross_entropy(mistake: str | None = None) -> Formula:
    def fn(target_logprobs: Any, weights: Any) -> dict[str, Any]:
        lp, w = _arr(target_logprobs), _arr(weights)
        if mistake == "unweighted":
            w = np.ones_like(lp)
        out = _loss_out(-_times(w, lp), -w)
        if mistake == "mean_tokens":
            return _mean_out(out, lp.shape[0] if lp.ndim else 1)
        if mistake == "mean_weights":
            return _mean_out(out, float(np.sum(_arr(weights))))  # type: ignore[arg-type]
        if mistake == "sign":
            return _negate(out)
        return out

    return fn


CROSS_ENTROPY_VARIANTS = (
    Variant("mean_tokens", has_signal, "mean over tokens instead of Tinker's sum"),
    Variant("mean_weights", _always, "divided by the sum of weights (SFT's per-token mean)"),
    Variant("unweighted", lambda i, c: bool(np.any(_arr(i["weights"]) != 1)), "weights ignored"),
    Variant("sign", has_signal, "the log-likelihood instead of its negative"),
)


def importance_sampling(mistake: str | None = None) -> Formula:
    def fn(target_logprobs: Any, sampling_logprobs: Any, advantages: Any) -> dict[str, Any]:
        lp, q, a = _arr(target_logprobs), _arr(sampling_logprobs), _arr(advantages)
        with np.errstate(over="ignore"):
            r = {"no_exp": lp - q, "inverted": np.exp(q - lp)}.get(mistake or "", np.exp(lp - q))
        term = _times(r, a)
        out = _loss_out(-term, -a if mistake == "grad_without_ratio" else -term)
        if mistake == "mean":
            return _mean_out(out, lp.size)
        if mistake == "sign":
            return _negate(out)
        return out

    return fn


IMPORTANCE_SAMPLING_VARIANTS = (
    Variant("no_exp", has_signal, "the log-ratio lp - q used as the ratio (not exponentiated)"),
    Variant("inverted", off_policy, "ratio q/p instead of p/q"),
    Variant("grad_without_ratio", off_policy, "REINFORCE gradient -A, forgetting dr/dlp = r"),
    Variant("mean", several_tokens, "mean over tokens instead of the sum"),
    Variant("sign", has_signal, "objective not negated"),
)


def _clip_family(
    mistake: str | None, defaults: tuple[float, float], sequence: bool
) -> Formula:
    """PPO (token ratios) and GSPO (the sequence ratio), with one mistake switched on."""

    def fn(
        target_logprobs: Any,
        sampling_logprobs: Any,
        advantages: Any,
        sequence_ratio_mask: Any = None,
        clip_low_threshold: Any = None,
        clip_high_threshold: Any = None,
    ) -> dict[str, Any]:
        lp, q, a = _arr(target_logprobs), _arr(sampling_logprobs), _arr(advantages)
        given = {k: v for k, v in (("clip_low_threshold", clip_low_threshold), ("clip_high_threshold", clip_high_threshold)) if v is not None}
        wrong_defaults = (0.9, 1.1) if mistake == "other_defaults" else defaults
        lo, hi = _thresholds({"target_logprobs": lp}, {} if mistake == "ignores_config" else given, wrong_defaults)
        if mistake == "epsilon_bounds":  # bounds read as epsilons: clip(r, 1 - lo, 1 + hi)
            lo, hi = 1 - lo, 1 + hi
        d = lp - q
        with np.errstate(over="ignore"):
            if sequence and mistake != "token_ratio":
                m = _arr(sequence_ratio_mask)
                sel = m != 0
                if mistake == "mask_weighted":
                    mean = float(np.sum(m * d)) / max(float(np.sum(m)), 1e-300) if sel.any() else 0.0
                elif mistake == "mask_ignored":
                    mean = float(np.mean(d)) if d.size else 0.0
                elif mistake == "arithmetic_mean":
                    mean = math.log(float(np.mean(np.exp(d[sel])))) if sel.any() else 0.0
                elif mistake == "sum_not_mean":
                    mean = float(np.sum(d[sel]))
                else:
                    mean = float(np.sum(d[sel])) / max(int(sel.sum()), 1)
                r = np.full(lp.shape, math.exp(mean))
            elif mistake == "no_exp":
                r = d
            else:
                r = np.exp(d)
        unclipped, clipped = _times(r, a), _times(np.clip(r, lo, hi), a)
        if mistake == "boundary_active":
            active = ((a > 0) & (r >= hi)) | ((a < 0) & (r <= lo))
        else:
            active = ((a > 0) & (r > hi)) | ((a < 0) & (r < lo))
        if mistake == "no_min":
            inside = (r >= lo) & (r <= hi)
            out = _loss_out(-clipped, np.where(inside, -unclipped, 0.0))
        elif mistake == "max":
            wrong = ((a > 0) & (r < lo)) | ((a < 0) & (r > hi))
            out = _loss_out(-np.maximum(unclipped, clipped), np.where(wrong, 0.0, -unclipped))
        elif mistake == "grad_everywhere":
            out = _loss_out(-np.minimum(unclipped, clipped), -unclipped)
        else:
            out = _loss_out(-np.minimum(unclipped, clipped), np.where(active, 0.0, -unclipped))
        if mistake == "mean":
            return _mean_out(out, lp.size)
        return out

    return fn


def ppo(mistake: str | None = None) -> Formula:
    inner = _clip_family(mistake, PPO_DEFAULTS, sequence=False)

    def fn(target_logprobs: Any, sampling_logprobs: Any, advantages: Any, clip_low_threshold: Any = None,
           clip_high_threshold: Any = None) -> dict[str, Any]:
        return inner(target_logprobs, sampling_logprobs, advantages, None, clip_low_threshold, clip_high_threshold)

    return fn


def gspo(mistake: str | None = None) -> Formula:
    return _clip_family(mistake, PPO_DEFAULTS, sequence=True)


_CLIP_COMMON = (
    Variant("no_min", unclipped_outside(PPO_DEFAULTS), "clip(r)·A without the pessimistic min"),
    Variant("max", clip_binds(PPO_DEFAULTS), "max instead of min (the clip binds on the wrong side)"),
    Variant("grad_everywhere", clip_active(PPO_DEFAULTS), "the clipped branch still passes -r·A"),
    Variant("boundary_active", on_a_bound(PPO_DEFAULTS), "the clip is active on the bound itself"),
    Variant("epsilon_bounds", objective_moves(PPO_DEFAULTS, _epsilon_reading),
            "thresholds read as epsilons: clip(r, 1 - lo, 1 + hi)"),
    Variant("mean", several_tokens, "mean over tokens instead of the sum"),
    Variant("ignores_config", objective_moves(PPO_DEFAULTS, _defaults_of(PPO_DEFAULTS)),
            "thresholds from config / inputs dropped (e.g. by the dispatcher)"),
    Variant("other_defaults", objective_moves(PPO_DEFAULTS, _when_default((0.9, 1.1))),
            "defaults 0.9 / 1.1 instead of Tinker's 0.8 / 1.2"),
)


def _no_exp_moves(inputs: Inputs, config: Inputs) -> bool:
    d = _arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])
    lo, hi = _thresholds(inputs, config, PPO_DEFAULTS)
    with np.errstate(over="ignore"):
        return bool(np.any((np.clip(d, lo, hi) != np.clip(np.exp(d), lo, hi)) & _active(inputs)))


PPO_VARIANTS = (*_CLIP_COMMON, Variant("no_exp", _no_exp_moves, "the log-ratio used as the ratio"))


def _gspo_masked(inputs: Inputs, config: Inputs) -> bool:
    return bool(np.any(_arr(inputs["sequence_ratio_mask"]) != 0)) and has_signal(inputs, config)


def _gspo_differs(kind: str) -> Callable[[Inputs, Inputs], bool]:
    """The sequence-ratio mistake changes s (it cannot show where it computes the same mean)."""

    def applies(inputs: Inputs, config: Inputs) -> bool:
        if not _gspo_masked(inputs, config):
            return False
        d = _arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])
        m = _arr(inputs["sequence_ratio_mask"])
        sel = m != 0
        right = float(np.mean(d[sel]))
        other = {
            "mask_weighted": float(np.sum(m * d) / np.sum(m)),
            "mask_ignored": float(np.mean(d)),
            "arithmetic_mean": math.log(float(np.mean(np.exp(d[sel])))),
            "sum_not_mean": float(np.sum(d[sel])),
            "token_ratio": None,
        }[kind]
        if other is None:  # token ratios differ from s somewhere
            return bool(np.any((d != right) & (_arr(inputs["advantages"]) != 0)))
        return abs(math.exp(other) - math.exp(right)) > 1e-9

    return applies


GSPO_VARIANTS = (
    *_CLIP_COMMON,
    Variant("token_ratio", _gspo_differs("token_ratio"), "token-level PPO ratios instead of the sequence ratio"),
    Variant("mask_weighted", _gspo_differs("mask_weighted"), "a mask-weighted mean (mask values as weights)"),
    Variant("mask_ignored", _gspo_differs("mask_ignored"), "the mean over every token, prompt included"),
    Variant("arithmetic_mean", _gspo_differs("arithmetic_mean"), "mean of token ratios, not exp of mean log-ratio"),
    Variant("sum_not_mean", _gspo_differs("sum_not_mean"), "exp of the summed log-ratio (sequence-level IS)"),
)


_OTHER_CLIP_DEFAULTS = {(0.8, 1.2): (0.0, 4.0), (0.0, 4.0): (0.8, 1.2)}  # PPO's pair vs Tinker's CISPO pair


def cispo(mistake: str | None = None, defaults: tuple[float, float] = PPO_DEFAULTS) -> Formula:
    def fn(target_logprobs: Any, sampling_logprobs: Any, advantages: Any, clip_low_threshold: Any = None,
           clip_high_threshold: Any = None) -> dict[str, Any]:
        lp, q, a = _arr(target_logprobs), _arr(sampling_logprobs), _arr(advantages)
        given = {k: v for k, v in (("clip_low_threshold", clip_low_threshold), ("clip_high_threshold", clip_high_threshold)) if v is not None}
        if mistake == "ignores_config":
            given = {}
        used = _OTHER_CLIP_DEFAULTS.get(defaults, (0.9, 1.1)) if mistake == "other_defaults" else defaults
        lo, hi = _thresholds({"target_logprobs": lp}, given, used)
        with np.errstate(over="ignore"):
            r = lp - q if mistake == "no_exp" else np.exp(lp - q)
        c = np.clip(r, lo, hi)
        inside = (r >= lo) & (r <= hi)
        weight = _times(c, a)
        if mistake == "ppo":
            unclipped = _times(r, a)
            active = ((a > 0) & (r > hi)) | ((a < 0) & (r < lo))
            out = _loss_out(-np.minimum(unclipped, weight), np.where(active, 0.0, -unclipped))
        elif mistake == "no_stop_gradient":  # d/dlp of clip(r)·lp·A through r where the clip is inactive
            out = _loss_out(-_times(weight, lp), -weight - np.where(inside, _times(_times(r, a), lp), 0.0))
        elif mistake == "drops_clipped_tokens":  # clips like PPO: no gradient outside the range
            out = _loss_out(-_times(weight, lp), np.where(inside, -weight, 0.0))
        elif mistake == "unclipped_weight":
            w = _times(r, a)
            out = _loss_out(-_times(w, lp), -w)
        elif mistake == "value_without_lp":
            out = _loss_out(-weight, -weight)
        else:
            out = _loss_out(-_times(weight, lp), -weight)
        if mistake == "mean":
            return _mean_out(out, lp.size)
        return out

    return fn


def _cispo_inside_nonzero_lp(inputs: Inputs, config: Inputs) -> bool:
    return has_signal(inputs, config) and bool(np.any(_arr(inputs["target_logprobs"])[_active(inputs)] != 0))


CISPO_VARIANTS = (
    Variant("ppo", has_signal, "PPO's clipped surrogate instead of CISPO's"),
    Variant("value_without_lp", has_signal, "the value is the surrogate Σ clip(r)·A (no lp factor)"),
    Variant("mean", several_tokens, "mean over tokens instead of the sum"),
)
# applies() of the clip-dependent CISPO variants depends on the defaults, which the test passes in
CISPO_DEFAULT_DEPENDENT = ("drops_clipped_tokens", "other_defaults")


def dro(mistake: str | None = None) -> Formula:
    def fn(target_logprobs: Any, sampling_logprobs: Any, advantages: Any, beta: Any = None) -> dict[str, Any]:
        lp, q, a = _arr(target_logprobs), _arr(sampling_logprobs), _arr(advantages)
        b = DRO_DEFAULT_BETA if beta is None or mistake == "ignores_config" else float(beta)
        if beta is None and mistake == "other_defaults":
            b = 0.1
        d = lp - q
        half = 1.0 if mistake == "no_half" else 0.5
        sign = -1.0 if mistake == "penalty_sign" else 1.0
        if mistake == "ratio_term":
            with np.errstate(over="ignore"):
                r = np.exp(d)
            out = _loss_out(-(_times(r, a) - sign * half * b * d * d), -(_times(r, a) - sign * 2 * half * b * d))
        else:
            out = _loss_out(-(lp * a - sign * half * b * d * d), -(a - sign * 2 * half * b * d))
        if mistake == "mean":
            return _mean_out(out, lp.size)
        return out

    return fn


def _dro_penalty(inputs: Inputs, config: Inputs) -> bool:
    b = config.get("beta", DRO_DEFAULT_BETA)
    d = _arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])
    return b != 0 and bool(np.any(d != 0))


def _dro_default(inputs: Inputs, config: Inputs) -> bool:
    return "beta" not in config and _dro_penalty(inputs, config)


DRO_VARIANTS = (
    Variant("no_half", _dro_penalty, "β·(lp - q)² without the ½"),
    Variant("penalty_sign", _dro_penalty, "the penalty added instead of subtracted"),
    Variant("ratio_term", lambda i, c: has_signal(i, c) and off_policy(i, c), "r·A instead of lp·A"),
    Variant("mean", lambda i, c: _arr(i["target_logprobs"]).size > 1 and (has_signal(i, c) or _dro_penalty(i, c)),
            "mean over tokens instead of the sum"),
    Variant("ignores_config", lambda i, c: "beta" in c and c["beta"] != DRO_DEFAULT_BETA and _dro_penalty(i, {"beta": 1}),
            "beta from the config dropped"),
    Variant("other_defaults", _dro_default, "default beta 0.1 instead of 0.05"),
)


SR_DEFAULT_KL = 0.01  # stable_reinforce kl_coeff (tinker-cookbook's changelog)


def stable_reinforce(mistake: str | None = None) -> Formula:
    """The stand-in of specs/math/stable_reinforce.yaml: -Σ r·A + κ·Σ m·½(lp - q)²."""

    def fn(target_logprobs: Any, sampling_logprobs: Any, advantages: Any, sampled_mask: Any = None,
           kl_coeff: Any = None) -> dict[str, Any]:
        lp, q, a = _arr(target_logprobs), _arr(sampling_logprobs), _arr(advantages)
        if sampled_mask is None or mistake == "no_mask":
            m = np.ones_like(lp)
        else:
            m = (_arr(sampled_mask) != 0).astype(np.float64)
            if m.shape != lp.shape:
                raise ValueError("sampled_mask shape")
        k = SR_DEFAULT_KL if kl_coeff is None or mistake == "ignores_config" else float(kl_coeff)
        if kl_coeff is None and mistake == "other_defaults":
            k = 0.05
        if k < 0:
            raise ValueError("kl_coeff")
        if mistake == "no_kl":
            k = 0.0
        half = 1.0 if mistake == "no_half" else 0.5
        sign = -1.0 if mistake == "penalty_sign" else 1.0
        with np.errstate(over="ignore"):
            r = np.exp(lp - q)
        pg = lp * a if mistake == "plain_reinforce" else _times(r, a)
        dpg = a if mistake == "plain_reinforce" else _times(r, a)
        d = (lp - q) * m
        out = _loss_out(-pg + sign * half * k * d * d, -dpg + sign * 2 * half * k * d)
        if mistake == "mean":
            return _mean_out(out, lp.size)
        return out

    return fn


def _sr_kappa(config: Inputs) -> float:
    return float(config.get("kl_coeff", SR_DEFAULT_KL))


def _sr_mask(inputs: Inputs) -> np.ndarray:
    lp = _arr(inputs["target_logprobs"])
    return np.ones_like(lp) if inputs.get("sampled_mask") is None else (_arr(inputs["sampled_mask"]) != 0) * 1.0


def _sr_penalty(inputs: Inputs, config: Inputs) -> bool:
    d = (_arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])) * _sr_mask(inputs)
    return _sr_kappa(config) != 0 and bool(np.any(d != 0))


def _sr_unmasked_drift(inputs: Inputs, config: Inputs) -> bool:
    d = _arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])
    return _sr_kappa(config) != 0 and bool(np.any((d != 0) & (_sr_mask(inputs) == 0)))


STABLE_REINFORCE_VARIANTS = (
    Variant("plain_reinforce", has_signal, "lp·A (plain REINFORCE) instead of the importance-sampled r·A"),
    Variant("no_kl", _sr_penalty, "the kl_coeff sampler-KL term dropped"),
    Variant("no_half", _sr_penalty, "κ·(lp - q)² without the ½"),
    Variant("penalty_sign", _sr_penalty, "the KL term subtracted instead of added"),
    Variant("no_mask", _sr_unmasked_drift, "the KL term over every token, prompt tokens included"),
    Variant("mean", lambda i, c: _arr(i["target_logprobs"]).size > 1 and (has_signal(i, c) or _sr_penalty(i, c)),
            "mean over tokens instead of the sum"),
    Variant("ignores_config", lambda i, c: "kl_coeff" in c and c["kl_coeff"] != SR_DEFAULT_KL
            and _sr_penalty(i, {"kl_coeff": 1}), "kl_coeff from the config dropped"),
    Variant("other_defaults", lambda i, c: "kl_coeff" not in c and _sr_penalty(i, c), "default kl_coeff 0.05"),
)


# ------------------------------------------------------------------------------------------------ DPO


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def dpo(mistake: str | None = None) -> Formula:
    def fn(chosen_logprobs: Any, rejected_logprobs: Any, chosen_ref_logprobs: Any, rejected_ref_logprobs: Any,
           chosen_weights: Any = None, rejected_weights: Any = None, *, beta: float | None = None,
           loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> dict[str, Any]:
        b = DPO_DEFAULT_BETA if beta is None else float(beta)
        if beta is None and mistake == "other_defaults":
            b = 0.5
        eps = float(label_smoothing)
        if mistake == "smoothing_swapped":
            eps = 1 - eps
        n = len(chosen_logprobs)
        losses, c_grads, r_grads, dcs, drs = [], [], [], [], []
        for i in range(n):
            lp_c, lp_r = _arr(chosen_logprobs[i]), _arr(rejected_logprobs[i])
            ref_c = _arr(chosen_ref_logprobs[i])
            ref_r = _arr(rejected_ref_logprobs[i])
            w_c = np.ones_like(lp_c) if chosen_weights is None or mistake == "ignores_weights" else _arr(chosen_weights[i])
            w_r = np.ones_like(lp_r) if rejected_weights is None or mistake == "ignores_weights" else _arr(rejected_weights[i])
            if mistake == "no_reference":
                ref_c, ref_r = np.zeros_like(lp_c), np.zeros_like(lp_r)
            dc, dr = float(np.sum(w_c * (lp_c - ref_c))), float(np.sum(w_r * (lp_r - ref_r)))
            if mistake == "sign":
                dc, dr = dr, dc
            dcs.append(dc)
            drs.append(dr)
            sc = sr = 1.0
            if loss_type == "ipo" and mistake != "ipo_no_length_norm":
                sc, sr = 1.0 / float(np.sum(w_c)), 1.0 / float(np.sum(w_r))
            if mistake == "length_normalised" and loss_type != "ipo":
                sc, sr = 1.0 / float(np.sum(w_c)), 1.0 / float(np.sum(w_r))
            if mistake == "sign":
                sc, sr = sr, sc
            h = dc * sc - dr * sr
            z = b * h
            if mistake == "beta_outside":  # β scales the loss, not the margin
                z = h
            if loss_type == "sigmoid":
                value = -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
                slope = -(1 - eps) * _sigmoid(-z) + eps * _sigmoid(z)
            elif loss_type == "robust":
                value = (-(1 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1 - 2 * eps)
                slope = (-(1 - eps) * _sigmoid(-z) - eps * _sigmoid(z)) / (1 - 2 * eps)
            elif loss_type == "hinge" and mistake == "hinge_margin_over_beta":
                value = max(1.0 / b - h, 0.0)
                slope = -1.0 / b if 1.0 / b - h > 0 else 0.0
            elif loss_type == "hinge":
                value = max(1.0 - z, 0.0)
                slope = -1.0 if 1.0 - z > 0 else 0.0
            else:
                target = 1.0 / b if mistake == "ipo_target" else 1.0 / (2 * b)
                gap = h - target
                value, slope = gap * gap, 2.0 * gap / b  # so that slope·b below is 2·gap
            if mistake == "beta_outside":  # ℓ = β·ℓ0(h): same slope factor β as dℓ0(βh)/dh, value scaled
                value = b * value
            dldh = slope * b
            if mistake == "sign":  # the gradient flows to the swapped completions
                c_grads.append(-dldh * sr * w_c / n)
                r_grads.append(dldh * sc * w_r / n)
            else:
                c_grads.append(dldh * sc * w_c / n)
                r_grads.append(-dldh * sr * w_r / n)
            losses.append(value)
        dc_a, dr_a = np.asarray(dcs), np.asarray(drs)
        divisor = 1 if mistake == "sum_pairs" else n
        loss = float(np.sum(losses) / divisor)
        if mistake == "sum_pairs":
            c_grads = [g * n for g in c_grads]
            r_grads = [g * n for g in r_grads]
        accuracy = float(np.mean(dc_a >= dr_a)) if mistake == "accuracy_ties" else float(np.mean(dc_a > dr_a))
        rb = 1.0 if mistake == "rewards_without_beta" else b
        metrics = {
            "dpo_loss": loss, "accuracy": accuracy, "margin": float(np.mean(rb * dc_a - rb * dr_a)),
            "chosen_reward": float(np.mean(rb * dc_a)), "rejected_reward": float(np.mean(rb * dr_a)),
            "num_pairs": float(n),
        }
        return {"loss": loss, "chosen_grads": c_grads, "rejected_grads": r_grads, "metrics": metrics}

    return fn


def _loss_type(*types: str) -> Callable[[Inputs, Inputs], bool]:
    return lambda inputs, config: config.get("loss_type", "sigmoid") in types


def _dpo_margin(inputs: Inputs) -> list[tuple[float, float]]:
    out = []
    for i in range(len(inputs["chosen_logprobs"])):
        wc = inputs.get("chosen_weights")
        wr = inputs.get("rejected_weights")
        w_c = 1.0 if wc is None else _arr(wc[i])
        w_r = 1.0 if wr is None else _arr(wr[i])
        dc = float(np.sum(w_c * (_arr(inputs["chosen_logprobs"][i]) - _arr(inputs["chosen_ref_logprobs"][i]))))
        dr = float(np.sum(w_r * (_arr(inputs["rejected_logprobs"][i]) - _arr(inputs["rejected_ref_logprobs"][i]))))
        out.append((dc, dr))
    return out


def _dpo_unequal_lengths(inputs: Inputs, config: Inputs) -> bool:
    """Some pair whose chosen and rejected completions have different weighted lengths."""
    for i, (c, r) in enumerate(zip(inputs["chosen_logprobs"], inputs["rejected_logprobs"])):
        wc = inputs.get("chosen_weights")
        wr = inputs.get("rejected_weights")
        n_c = float(np.sum(_arr(wc[i]))) if wc is not None else len(c)
        n_r = float(np.sum(_arr(wr[i]))) if wr is not None else len(r)
        if n_c != n_r:
            return True
    return False


def _dpo_weights_matter(inputs: Inputs, config: Inputs) -> bool:
    for key in ("chosen_weights", "rejected_weights"):
        if any(np.any(_arr(w) != 1) for w in inputs.get(key) or []):
            return True
    return False


def _dpo_ref_matters(inputs: Inputs, config: Inputs) -> bool:
    return any(np.any(_arr(r) != 0) for key in ("chosen_ref_logprobs", "rejected_ref_logprobs") for r in inputs[key])


def _dpo_ties(inputs: Inputs, config: Inputs) -> bool:
    return any(dc == dr for dc, dr in _dpo_margin(inputs))


DPO_VARIANTS = (
    Variant("sign", _always, "chosen and rejected swapped in the margin"),
    Variant("beta_outside", _loss_type("sigmoid", "robust"), "β multiplies the loss instead of the margin"),
    Variant("no_reference", _dpo_ref_matters, "the reference log-probs left out"),
    Variant("sum_pairs", lambda i, c: len(i["chosen_logprobs"]) > 1, "summed over pairs instead of the mean"),
    Variant("length_normalised", lambda i, c: _loss_type("sigmoid", "robust")(i, c) and _dpo_unequal_lengths(i, c),
            "per-token mean log-ratio (IPO's normalisation applied to DPO)"),
    Variant("ignores_weights", _dpo_weights_matter, "the datums' weights ignored"),
    Variant("accuracy_ties", _dpo_ties, "accuracy counts ties Δc == Δr as right", ("metrics",)),
    Variant("rewards_without_beta", lambda i, c: float(c.get("beta", DPO_DEFAULT_BETA)) != 1
            and any(dc != 0 or dr != 0 for dc, dr in _dpo_margin(i)), "reward metrics without the β factor", ("metrics",)),
    Variant("smoothing_swapped", lambda i, c: float(c.get("label_smoothing", 0)) > 0, "ε and 1 - ε swapped"),
    Variant("ipo_no_length_norm", lambda i, c: _loss_type("ipo")(i, c) and _dpo_unequal_lengths(i, c),
            "IPO without the per-token normalisation"),
    Variant("ipo_target", _loss_type("ipo"), "IPO target 1/β instead of 1/(2β)"),
    Variant("hinge_margin_over_beta", lambda i, c: _loss_type("hinge")(i, c) and float(c.get("beta", 0.1)) != 1,
            "hinge max(0, 1/β - h) instead of max(0, 1 - β·h) (same kink, other scale)"),
    Variant("other_defaults", lambda i, c: "beta" not in c, "default β 0.5 instead of 0.1"),
)


# ------------------------------------------------------------------------------------------------ advantages


def _group(rewards: Any) -> np.ndarray:
    return _arr(rewards)


def advantages(kind: str, mistake: str | None = None) -> Formula:
    """``kind`` is centred / grpo / rloo / dr_grpo; ``mistake`` one of the variants below."""

    def fn(rewards: Any, *, epsilon: float | None = None, bessel: bool = True, singleton: str = "zero") -> dict[str, Any]:
        r = _group(rewards)
        g = r.size
        eps = GRPO_DEFAULT_EPSILON if epsilon is None else float(epsilon)
        if epsilon is None and mistake == "other_defaults":
            eps = 1e-4  # TRL's
        if mistake == "bessel_swapped":
            bessel = not bessel
        if mistake == "singleton_swapped":
            singleton = "raw" if singleton == "zero" else "zero"
        equal = bool(np.all(r == r[0]))
        if mistake == "naive_equal_check":
            equal = False
        estimator = mistake[2:] if mistake in ("x_grpo", "x_rloo", "x_centred") else kind
        if estimator == "dr_grpo":
            estimator = "centred"
        if g == 1:
            if estimator == "grpo" and singleton == "raw":
                return {"value": r.copy()}
            return {"value": np.zeros(1)}
        if equal:
            return {"value": np.zeros_like(r)}
        centred = r - r.mean()
        if estimator == "centred":
            return {"value": centred}
        if estimator == "rloo":
            if mistake == "rloo_divide_by_g":
                return {"value": r - (r.sum() - r) / g}
            return {"value": r - (r.sum() - r) / (g - 1)}
        var = float(np.sum(centred * centred)) / (g - 1 if bessel else g)
        if mistake == "eps_inside_sqrt":
            return {"value": centred / math.sqrt(var + eps)}
        std = math.sqrt(var)
        if std + eps == 0:
            return {"value": np.zeros_like(r)}
        return {"value": centred / (std + eps)}

    return fn


def _spread(inputs: Inputs, config: Inputs) -> bool:
    r = _arr(inputs["rewards"])
    return r.size > 1 and not bool(np.all(r == r[0]))


def _inexact_equal(inputs: Inputs, config: Inputs) -> bool:
    """All-equal rewards whose floating-point mean (or leave-one-out mean) is not the reward."""
    r = _arr(inputs["rewards"])
    loo = r - (r.sum() - r) / max(r.size - 1, 1)
    return r.size > 1 and bool(np.all(r == r[0])) and bool(np.any(r - r.mean() != 0) or np.any(loo != 0))


def _grpo_spread(*, need_eps: bool = False, default_eps: bool = False, std_not_one: bool = False) -> Callable[[Inputs, Inputs], bool]:
    def applies(inputs: Inputs, config: Inputs) -> bool:
        if not _spread(inputs, config):
            return False
        if need_eps and float(config.get("epsilon", GRPO_DEFAULT_EPSILON)) == 0:
            return False
        if default_eps and "epsilon" in config:
            return False
        if std_not_one:
            r = _arr(inputs["rewards"])
            c = r - r.mean()
            std = math.sqrt(float(np.sum(c * c)) / (r.size - (1 if config.get("bessel", True) else 0)))
            return std + float(config.get("epsilon", GRPO_DEFAULT_EPSILON)) != 1
        return True

    return applies


def _singleton_case(inputs: Inputs, config: Inputs) -> bool:
    r = _arr(inputs["rewards"])
    return r.size == 1 and r[0] != 0


CENTRED_VARIANTS = (
    Variant("as_grpo", _grpo_spread(std_not_one=True), "divided by the std (GRPO)"),
    Variant("as_rloo", _spread, "leave-one-out baseline (RLOO)"),
    Variant("naive_equal_check", _inexact_equal, "all-equal rewards not detected before centring"),
)
DR_GRPO_VARIANTS = CENTRED_VARIANTS
GRPO_VARIANTS = (
    Variant("bessel_swapped", _spread, "population std where Bessel's is asked for, and vice versa"),
    Variant("as_centred", _grpo_spread(std_not_one=True), "no std division (Dr.GRPO)"),
    Variant("as_rloo", _spread, "leave-one-out baseline"),
    Variant("eps_inside_sqrt", _grpo_spread(need_eps=True), "sqrt(var + ε) instead of std + ε"),
    Variant("other_defaults", _grpo_spread(default_eps=True), "default ε 1e-4 (TRL) instead of 1e-6"),
    Variant("singleton_swapped", _singleton_case, "the other group-of-one convention"),
    Variant("naive_equal_check", _inexact_equal, "all-equal rewards not detected before dividing"),
)
RLOO_VARIANTS = (
    Variant("as_centred", _spread, "the baseline includes the trajectory itself"),
    Variant("rloo_divide_by_g", _spread, "leave-one-out sum divided by G instead of G - 1"),
    Variant("as_grpo", _grpo_spread(std_not_one=True), "GRPO's std normalisation"),
    Variant("naive_equal_check", _inexact_equal, "all-equal rewards not detected before the baseline"),
)


def _variant_advantages(kind: str, name: str) -> Formula:
    mapping = {"as_grpo": "x_grpo", "as_rloo": "x_rloo", "as_centred": "x_centred"}
    return advantages(kind, mapping.get(name, name))


# ------------------------------------------------------------------------------------------------ KL


def kl(kind: str) -> Formula:
    def fn(logp: Any, logq: Any) -> dict[str, Any]:
        lr = _arr(logp) - _arr(logq)
        with np.errstate(over="ignore"):
            values = {
                "k1": -lr,
                "k1_sign": lr,
                "k2": 0.5 * lr * lr,
                "k2_no_half": lr * lr,
                "k3": np.expm1(lr) - lr,
                "k3_reversed": np.expm1(-lr) + lr,
            }
        return {"value": values[kind]}

    return fn


def _kl_off(inputs: Inputs, config: Inputs) -> bool:
    return bool(np.any(_arr(inputs["logp"]) != _arr(inputs["logq"])))


KL_VARIANTS = {
    "kl_k1": ("k1", (Variant("k1_sign", _kl_off, "log r instead of -log r"), Variant("k2", _kl_off), Variant("k3", _kl_off))),
    "kl_k2": ("k2", (Variant("k2_no_half", _kl_off, "(log r)² without ½"), Variant("k1", _kl_off), Variant("k3", _kl_off))),
    "kl_k3": ("k3", (Variant("k3_reversed", _kl_off, "r = q/p"), Variant("k1", _kl_off), Variant("k2", _kl_off))),
}


def kl_sample_train(mistake: str | None = None) -> Formula:
    def fn(sampling_logprobs_D: Any, training_logprobs_D: Any, mask_D: Any) -> dict[str, Any]:
        ds, qs, per_datum = [], [], []
        for q, lp, m in zip(sampling_logprobs_D, training_logprobs_D, mask_D):
            q, lp, m = _arr(q), _arr(lp), _arr(m)
            sel = np.ones_like(m, dtype=bool) if mistake == "unmasked" else m > 0
            d = (lp - q if mistake == "sign" else q - lp)[sel]
            ds.append(d)
            qs.append(q[sel])
            per_datum.append(d)
        d_all, q_all = np.concatenate(ds), np.concatenate(qs)
        if mistake == "mean_of_datum_means":
            v1 = float(np.mean([np.mean(d) for d in per_datum]))
            v2 = float(np.mean([0.5 * np.mean(d * d) for d in per_datum]))
        else:
            v1, v2 = float(np.mean(d_all)), float(0.5 * np.mean(d_all * d_all))
        if mistake == "v2_no_half":
            v2 *= 2
        return {"metrics": {"optim/kl_sample_train_v1": v1, "optim/kl_sample_train_v2": v2,
                            "optim/entropy": float(-np.mean(q_all))}}

    return fn


KL_SAMPLE_TRAIN_VARIANTS = (
    Variant("unmasked", lambda i, c: any(np.any(_arr(m) <= 0) for m in i["mask_D"]), "the mask ignored"),
    Variant("sign", _always, "lp - q instead of q - lp"),
    Variant("mean_of_datum_means", lambda i, c: len({int(np.sum(_arr(m) > 0)) for m in i["mask_D"]}) > 1,
            "the mean of per-datum means"),
    Variant("v2_no_half", _always, "v2 without the ½"),
)


def kl_penalty(mistake: str | None = None) -> Formula:
    def fn(advantages_D: Any, sampling_logprobs_D: Any, base_logprobs_D: Any, mask_D: Any, *, kl_penalty_coef: float,
           kl_discount_factor: float = 0.0) -> dict[str, Any]:
        rows = [(_arr(a), _arr(q), _arr(b), _arr(m)) for a, q, b, m in zip(advantages_D, sampling_logprobs_D, base_logprobs_D, mask_D)]
        diffs = [((b - q) if mistake == "sign" else (q - b)) * m for _, q, b, m in rows]
        total = float(sum(np.sum(m) for *_, m in rows))
        if mistake == "mean_over_all_tokens":
            total = float(sum(m.size for *_, m in rows))
        avg = float(sum(np.sum(d) for d in diffs)) / total
        out = []
        for (a, _, _, m), d in zip(rows, diffs):
            centre = 0.0 if mistake == "not_centred" else avg
            if mistake == "per_datum_mean":
                centre = float(np.sum(d) / np.sum(m))
            kl_adv = kl_penalty_coef * m * (centre - d)
            if kl_discount_factor > 0:
                y, acc = np.empty_like(kl_adv), 0.0
                for t in range(kl_adv.size - 1, -1, -1):
                    acc = float(kl_adv[t]) + kl_discount_factor * acc
                    y[t] = acc if mistake != "discount_masked_only" or m[t] > 0 else kl_adv[t]
                kl_adv = y
            out.append(a + kl_adv)
        return {"value": out, "metrics": {"kl_policy_base": avg}}

    return fn


KL_PENALTY_VARIANTS = (
    Variant("not_centred", _always, "the penalty without the batch-mean centring"),
    Variant("sign", _always, "b - q instead of q - b"),
    Variant("per_datum_mean", lambda i, c: len(i["mask_D"]) > 1, "centred on each datum's own mean"),
    Variant("mean_over_all_tokens", lambda i, c: any(np.any(_arr(m) == 0) for m in i["mask_D"]),
            "the batch mean divides by every token, not the masked ones"),
    Variant("discount_masked_only", lambda i, c: float(c.get("kl_discount_factor", 0)) > 0,
            "the discounted sum skips prompt positions"),
)


def distillation(mistake: str | None = None) -> Formula:
    def fn(advantages_D: Any, sampling_logprobs_D: Any, teacher_logprobs_D: Any, mask_D: Any, *,
           kl_penalty_coef: float = 1.0, kl_discount_factor: float = 0.0) -> dict[str, Any]:
        out, num, den = [], 0.0, 0.0
        for a, q, t, m in zip(advantages_D, sampling_logprobs_D, teacher_logprobs_D, mask_D):
            a, q, t, m = _arr(a), _arr(q), _arr(t), _arr(m)
            rk = ((t - q) if mistake == "sign" else (q - t)) * m
            num += float(np.sum(rk))
            den += float(np.sum(m)) if mistake != "teacher_kl_all_tokens" else float(m.size)
            kl_adv = -kl_penalty_coef * m * rk
            if mistake == "centred":
                kl_adv = kl_adv - m * float(np.sum(kl_adv) / np.sum(m))
            if kl_discount_factor > 0:
                y, acc = np.empty_like(kl_adv), 0.0
                for i in range(kl_adv.size - 1, -1, -1):
                    acc = float(kl_adv[i]) + kl_discount_factor * acc
                    y[i] = acc
                kl_adv = y
            out.append(a + kl_adv)
        return {"value": out, "metrics": {"teacher_kl": num / den}}

    return fn


DISTILLATION_VARIANTS = (
    Variant("sign", _always, "teacher - student instead of student - teacher"),
    Variant("centred", _always, "centred like the KL penalty"),
    Variant("teacher_kl_all_tokens", lambda i, c: any(np.any(_arr(m) == 0) for m in i["mask_D"]),
            "teacher_kl averaged over every token"),
)


def discounted_future_sum(mistake: str | None = None) -> Formula:
    def fn(x: Any, *, gamma: float) -> dict[str, Any]:
        xs = _arr(x)
        y, acc = np.empty_like(xs), 0.0
        order = range(xs.size) if mistake == "forward" else range(xs.size - 1, -1, -1)
        for t in order:
            acc = float(xs[t]) + gamma * acc
            y[t] = acc
        if mistake == "exclusive":  # y_t = Σ_{k>t} γ^(k-t) x_k
            y = y - xs
        return {"value": y}

    return fn


DFS_VARIANTS = (
    Variant("forward", lambda i, c: float(c["gamma"]) > 0 and _arr(i["x"]).size > 1, "discounting the past"),
    Variant("exclusive", lambda i, c: bool(np.any(_arr(i["x"]) != 0)), "the current reward left out"),
)


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Family:
    right: Formula
    variants: dict[str, tuple[Variant, Formula]]


def _family(make: Callable[[str | None], Formula], variants: tuple[Variant, ...]) -> Family:
    return Family(make(None), {v.name: (v, make(v.name)) for v in variants})


def families(cispo_defaults: tuple[float, float]) -> dict[str, Family]:
    """Every quantity with a transcription here. CISPO's defaults are a parameter (see the test)."""
    def no_exp_moves(inputs: Inputs, config: Inputs) -> bool:
        d = _arr(inputs["target_logprobs"]) - _arr(inputs["sampling_logprobs"])
        lo, hi = _thresholds(inputs, config, cispo_defaults)
        with np.errstate(over="ignore"):
            return bool(np.any((np.clip(d, lo, hi) != np.clip(np.exp(d), lo, hi)) & _active(inputs)))

    other = _OTHER_CLIP_DEFAULTS.get(cispo_defaults, (0.9, 1.1))
    cispo_variants = (
        *CISPO_VARIANTS,
        Variant("no_stop_gradient", inside_range(cispo_defaults), "gradient through the ratio (no stop-gradient)"),
        Variant("unclipped_weight", clip_binds(cispo_defaults), "the IS weight r is not clipped"),
        Variant("no_exp", no_exp_moves, "the log-ratio used as the ratio"),
        Variant("drops_clipped_tokens", clip_binds(cispo_defaults), "clipped tokens get no gradient (clipped like PPO)"),
        Variant("ignores_config", clip_moves(cispo_defaults, _defaults_of(cispo_defaults)),
                "thresholds from config / inputs dropped"),
        Variant("other_defaults", clip_moves(cispo_defaults, _when_default(other)), "the other documented default pair"),
    )
    out = {
        "cross_entropy": _family(cross_entropy, CROSS_ENTROPY_VARIANTS),
        "importance_sampling": _family(importance_sampling, IMPORTANCE_SAMPLING_VARIANTS),
        "ppo": _family(ppo, PPO_VARIANTS),
        "gspo": _family(gspo, GSPO_VARIANTS),
        "cispo": Family(cispo(None, cispo_defaults),
                        {v.name: (v, cispo(v.name, cispo_defaults)) for v in cispo_variants}),
        "dro": _family(dro, DRO_VARIANTS),
        "stable_reinforce": _family(stable_reinforce, STABLE_REINFORCE_VARIANTS),
        "dpo": _family(dpo, DPO_VARIANTS),
        "kl_sample_train": _family(kl_sample_train, KL_SAMPLE_TRAIN_VARIANTS),
        "kl_penalty": _family(kl_penalty, KL_PENALTY_VARIANTS),
        "distillation_advantages": _family(distillation, DISTILLATION_VARIANTS),
        "discounted_future_sum": _family(discounted_future_sum, DFS_VARIANTS),
    }
    for quantity, kind, variants in (
        ("centred_advantages", "centred", CENTRED_VARIANTS),
        ("dr_grpo_advantages", "dr_grpo", DR_GRPO_VARIANTS),
        ("grpo_advantages", "grpo", GRPO_VARIANTS),
        ("rloo_advantages", "rloo", RLOO_VARIANTS),
    ):
        out[quantity] = Family(advantages(kind), {v.name: (v, _variant_advantages(kind, v.name)) for v in variants})
    for quantity, (right, variants) in KL_VARIANTS.items():
        out[quantity] = Family(kl(right), {v.name: (v, kl(v.name)) for v in variants})
    return out
