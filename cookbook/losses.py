"""Tinker's built-in losses and DPO in pure numpy: value, exact gradient, metrics.

Every built-in Tinker loss is **token-level and summed** over the tokens of a datum (and over datums by the
server), with no mean and no normalisation. Other aggregations are the client's job, by scaling ``weights``
or ``advantages``. The loss is minimised: objectives are negated.

Notation, per datum (the Tinker names in brackets):

* ``lp_t``  target logprob under the learner's current weights (``target_logprobs``; Tinker returns it as
  the output field ``logprobs``),
* ``q_t``   the sampler's logprob (the ``loss_fn_inputs`` key ``logprobs``; here ``sampling_logprobs``),
* ``A_t``   the advantage (``advantages``), ``w_t`` the weight (``weights``),
* ``r_t = exp(lp_t - q_t)`` the importance ratio, ``sg(.)`` stop-gradient,
* ``lo, hi`` the ratio bounds (``loss_fn_config`` keys ``clip_low_threshold``, ``clip_high_threshold``).

Each loss returns a :class:`LossOutput`: the summed loss, ``grad = dL/dlp`` (float64, the shape of
``target_logprobs``) and Tinker's metrics (``{"loss:sum": L}``; every key has exactly one ``:``).

Clip-boundary convention (PPO, GSPO, CISPO): the clip is **inactive at the boundary**. ``clip`` passes the
gradient when ``r == lo`` or ``r == hi`` (``torch.clamp``'s subgradient), and at a tie of the two ``min``
branches both carry the same derivative ``r·A``; so a ratio exactly on a bound gets the unclipped gradient.

``stable_reinforce`` (:func:`stable_reinforce`) is a named stand-in: Tinker documents its inputs, not its
formula (see its docstring and ``specs/math/stable_reinforce.yaml``).

:func:`tinker_loss` is the per-datum dispatcher used by the mock server: it validates inputs the way a
server must (unknown loss, unknown config keys, missing inputs, shapes, NaN/inf) and calls the function.

DPO (:func:`dpo_loss`) is a client-side custom loss (``forward_backward_custom``): it returns the loss and
its gradient with respect to each pair's per-token policy logprobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cookbook.errors import LossInputError

FloatArray = NDArray[np.float64]
Threshold = float | ArrayLike

DEFAULT_CLIP_LOW = 0.8  # ppo and gspo (Tinker: "PPO defaults to 0.8 and 1.2"; GSPO uses PPO's clip)
DEFAULT_CLIP_HIGH = 1.2
DEFAULT_CISPO_CLIP_LOW = 0.0  # Tinker: CISPO "defaults to a one-sided clip", {0.0, 4.0}
DEFAULT_CISPO_CLIP_HIGH = 4.0
DEFAULT_DRO_BETA = 0.05  # the docs' only value (their example); no default is documented
DEFAULT_KL_COEFF = 0.01  # stable_reinforce: "adds a small sampler KL term by default (kl_coeff=0.01 ...)"

__all__ = [
    "DPO_LOSS_TYPES",
    "LOSS_CONFIG_DEFAULTS",
    "LOSS_CONFIG_KEYS",
    "LOSS_INPUTS",
    "PER_TOKEN_INPUTS",
    "SERVER_INPUTS",
    "DPOOutput",
    "LossOutput",
    "cispo",
    "cross_entropy",
    "dpo_loss",
    "dpo_sequence_logratio",
    "dro",
    "gspo",
    "gspo_sequence_ratio",
    "importance_sampling",
    "ppo",
    "ppo_clip_active",
    "stable_reinforce",
    "tinker_loss",
]


@dataclass(frozen=True)
class LossOutput:
    """Result of one built-in loss on one datum.

    ``loss`` is summed over all tokens (Tinker semantics: no mean). ``grad`` is ``d loss / d
    target_logprobs`` (float64, the shape of ``target_logprobs``). ``metrics`` uses Tinker's metric names;
    it always includes ``"loss:sum"`` and every key has exactly one ``:``.
    """

    loss: float
    grad: FloatArray
    metrics: dict[str, float]


# --------------------------------------------------------------------------------------------------
# input validation


def _as_float_array(x: ArrayLike, name: str) -> FloatArray:
    """``x`` as a float64 array; raises :class:`LossInputError` naming ``name`` on NaN/inf or bad data."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LossInputError(f"{name}: expected an array of numbers, got {type(x).__name__} ({exc})") from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"index {idx[0]}" if len(idx) == 1 else f"index {idx}"
        raise LossInputError(
            f"{name}: non-finite value {float(arr[idx])!r} at {where}; every element must be a finite number "
            "(check the sampler's logprobs and the advantages for NaN/inf)"
        )
    return arr


def _check_same_shape(reference: FloatArray, ref_name: str, **others: FloatArray) -> None:
    for name, arr in others.items():
        if arr.shape != reference.shape:
            raise LossInputError(
                f"{name}: shape {list(arr.shape)} does not match {ref_name} shape {list(reference.shape)}; "
                "every per-token input must have one value per target token"
            )


def _threshold(value: Threshold, name: str, shape: tuple[int, ...]) -> FloatArray:
    """A clip threshold (scalar or per-token array) broadcast to ``shape``."""
    arr = _as_float_array(value, name)
    if arr.ndim == 0:
        return np.full(shape, float(arr), dtype=np.float64)
    if arr.shape != shape:
        raise LossInputError(
            f"{name}: per-token thresholds have shape {list(arr.shape)}, expected a scalar or {list(shape)}"
        )
    return arr


def _check_bounds(lo: FloatArray, hi: FloatArray) -> None:
    bad = lo > hi
    if bad.any():
        i = int(np.argmax(bad))
        raise LossInputError(
            f"clip_low_threshold ({float(lo.flat[i])!r}) is greater than clip_high_threshold ({float(hi.flat[i])!r})"
            + (f" at token {i}" if lo.size > 1 else "")
            + "; both are bounds on the ratio r = exp(lp - q), e.g. 0.8 and 1.2"
        )


def _ratio_inputs(
    target_logprobs: ArrayLike, sampling_logprobs: ArrayLike, advantages: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    lp = _as_float_array(target_logprobs, "target_logprobs")
    q = _as_float_array(sampling_logprobs, "logprobs (sampling logprobs)")
    adv = _as_float_array(advantages, "advantages")
    _check_same_shape(lp, "target_logprobs", **{"logprobs (sampling logprobs)": q, "advantages": adv})
    return lp, q, adv


def _times(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a * b`` with ``0 * inf = 0`` (a zero advantage contributes nothing, whatever the ratio)."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = a * b
    return np.where((a == 0) | (b == 0), 0.0, out)


def _output(per_token_loss: FloatArray, grad: FloatArray) -> LossOutput:
    loss = float(np.sum(per_token_loss))
    return LossOutput(loss=loss, grad=np.asarray(grad, dtype=np.float64), metrics={"loss:sum": loss})


# --------------------------------------------------------------------------------------------------
# the built-in losses


def cross_entropy(target_logprobs: ArrayLike, weights: ArrayLike) -> LossOutput:
    """Tinker ``cross_entropy``: ``L = -Σ_t w_t · lp_t`` (and over k for top-K soft targets).

    Inputs: ``target_logprobs`` = lp (``[N]`` or ``[N, K]``), ``weights`` = Tinker ``weights`` (same shape;
    ``target_tokens`` selects lp and is not needed here).
    Gradient: ``dL/dlp_t = -w_t``. All-zero weights give ``L = 0`` and a zero gradient.
    Output: ``metrics["loss:sum"] = L``.
    """
    lp = _as_float_array(target_logprobs, "target_logprobs")
    w = _as_float_array(weights, "weights")
    if lp.ndim not in (1, 2):
        raise LossInputError(f"target_logprobs: expected shape [N] or [N, K], got {list(lp.shape)}")
    _check_same_shape(lp, "target_logprobs", weights=w)
    return _output(-_times(w, lp), -w)


def importance_sampling(
    target_logprobs: ArrayLike, sampling_logprobs: ArrayLike, advantages: ArrayLike
) -> LossOutput:
    """Tinker ``importance_sampling``: ``L = -Σ_t r_t · A_t`` with ``r_t = exp(lp_t - q_t)``.

    Inputs: ``target_logprobs`` = lp, ``sampling_logprobs`` = Tinker ``logprobs`` (q), ``advantages`` = A.
    Gradient: ``dL/dlp_t = -r_t · A_t`` (since ``dr/dlp = r``).
    Output: ``metrics["loss:sum"] = L``.
    """
    lp, q, adv = _ratio_inputs(target_logprobs, sampling_logprobs, advantages)
    with np.errstate(over="ignore"):
        r = np.exp(lp - q)
    term = _times(r, adv)
    return _output(-term, -term)


def ppo_clip_active(ratio: FloatArray, advantages: FloatArray, lo: FloatArray, hi: FloatArray) -> NDArray[np.bool_]:
    """Tokens where PPO's clipped branch is the strict minimum (gradient 0).

    ``(A > 0 and r > hi) or (A < 0 and r < lo)``; at ``r == lo`` or ``r == hi`` the clip is inactive.
    """
    return ((advantages > 0) & (ratio > hi)) | ((advantages < 0) & (ratio < lo))


def ppo(
    target_logprobs: ArrayLike,
    sampling_logprobs: ArrayLike,
    advantages: ArrayLike,
    clip_low_threshold: Threshold = DEFAULT_CLIP_LOW,
    clip_high_threshold: Threshold = DEFAULT_CLIP_HIGH,
) -> LossOutput:
    """Tinker ``ppo``: ``L = -Σ_t min(r_t·A_t, clip(r_t, lo, hi)·A_t)``, ``r_t = exp(lp_t - q_t)``.

    Inputs: ``target_logprobs`` = lp, ``sampling_logprobs`` = Tinker ``logprobs`` (q), ``advantages`` = A;
    ``loss_fn_config`` ``clip_low_threshold`` = lo, ``clip_high_threshold`` = hi are bounds on the *ratio*
    (defaults 0.8 and 1.2, i.e. ε = 0.2); scalars or per-token arrays.
    Gradient: ``dL/dlp_t = -r_t·A_t`` unless the clip is active, then 0. Active means
    ``A_t > 0 and r_t > hi`` or ``A_t < 0 and r_t < lo`` (strict: at ``r_t == lo`` / ``hi`` the gradient is
    ``-r_t·A_t``, torch.clamp's convention). Output: ``metrics["loss:sum"] = L``.
    """
    lp, q, adv = _ratio_inputs(target_logprobs, sampling_logprobs, advantages)
    lo = _threshold(clip_low_threshold, "clip_low_threshold", lp.shape)
    hi = _threshold(clip_high_threshold, "clip_high_threshold", lp.shape)
    _check_bounds(lo, hi)
    with np.errstate(over="ignore"):
        r = np.exp(lp - q)
    unclipped = _times(r, adv)
    clipped = _times(np.clip(r, lo, hi), adv)
    active = ppo_clip_active(r, adv, lo, hi)
    return _output(-np.minimum(unclipped, clipped), np.where(active, 0.0, -unclipped))


def cispo(
    target_logprobs: ArrayLike,
    sampling_logprobs: ArrayLike,
    advantages: ArrayLike,
    clip_low_threshold: Threshold = DEFAULT_CISPO_CLIP_LOW,
    clip_high_threshold: Threshold = DEFAULT_CISPO_CLIP_HIGH,
) -> LossOutput:
    """Tinker ``cispo``: ``L = -Σ_t sg(clip(r_t, lo, hi)) · lp_t · A_t``.

    Inputs as for :func:`ppo` (``target_logprobs``, Tinker ``logprobs``, ``advantages``; config
    ``clip_low_threshold`` / ``clip_high_threshold`` are absolute ratio bounds, not 1 ± ε). The defaults
    are Tinker's documented one-sided clip: ``lo = 0`` (lower bound disabled), ``hi = 4``.
    Gradient: ``dL/dlp_t = -clip(r_t, lo, hi)·A_t``: the clipped ratio is a constant (stop-gradient), so
    there is no ``r·lp·A`` term and clipped tokens still get a gradient. Note that the *value* contains lp
    itself. Output: ``metrics["loss:sum"] = L``.
    """
    lp, q, adv = _ratio_inputs(target_logprobs, sampling_logprobs, advantages)
    lo = _threshold(clip_low_threshold, "clip_low_threshold", lp.shape)
    hi = _threshold(clip_high_threshold, "clip_high_threshold", lp.shape)
    _check_bounds(lo, hi)
    with np.errstate(over="ignore"):
        r = np.exp(lp - q)
    weight = _times(np.clip(r, lo, hi), adv)
    return _output(-_times(weight, lp), -weight)


def dro(
    target_logprobs: ArrayLike,
    sampling_logprobs: ArrayLike,
    advantages: ArrayLike,
    beta: float = DEFAULT_DRO_BETA,
) -> LossOutput:
    """Tinker ``dro``: ``L = -Σ_t [lp_t·A_t - ½·β·(lp_t - q_t)²]``.

    Inputs: ``target_logprobs`` = lp, ``sampling_logprobs`` = Tinker ``logprobs`` (q), ``advantages`` = A;
    ``loss_fn_config`` ``beta`` = β (≥ 0; the docs' example is 0.05, used as the default here).
    Gradient: ``dL/dlp_t = -(A_t - β·(lp_t - q_t))``. Output: ``metrics["loss:sum"] = L``.
    """
    lp, q, adv = _ratio_inputs(target_logprobs, sampling_logprobs, advantages)
    b = _scalar(beta, "beta")
    if b < 0:
        raise LossInputError(f"beta: must be >= 0 (it weights a quadratic penalty), got {b!r}")
    d = lp - q
    return _output(-(lp * adv - 0.5 * b * d * d), -(adv - b * d))


def gspo_sequence_ratio(
    target_logprobs: ArrayLike, sampling_logprobs: ArrayLike, sequence_ratio_mask: ArrayLike
) -> float:
    """GSPO's sequence ratio ``s = exp(mean_{t: m_t != 0} (lp_t - q_t))``.

    ``sequence_ratio_mask`` (Tinker input of that name): nonzero = the token counts. A mask with no nonzero
    entry is refused (:class:`LossInputError`): the documented mean over no tokens is undefined.
    """
    lp = _as_float_array(target_logprobs, "target_logprobs")
    q = _as_float_array(sampling_logprobs, "logprobs (sampling logprobs)")
    m = _as_float_array(sequence_ratio_mask, "sequence_ratio_mask")
    _check_same_shape(lp, "target_logprobs", **{"logprobs (sampling logprobs)": q, "sequence_ratio_mask": m})
    sel = m != 0
    count = int(sel.sum())
    if count == 0:
        raise LossInputError(
            f"sequence_ratio_mask: no token is marked (all {m.size} entries are 0), so GSPO's sequence ratio "
            "exp(mean over the marked tokens of lp - q) is undefined; mark the sampled completion tokens with 1 "
            "(or drop this datum, or use another loss for it)"
        )
    mean = float(np.sum((lp - q)[sel])) / count
    return math.exp(mean) if mean < 709.0 else math.inf


def gspo(
    target_logprobs: ArrayLike,
    sampling_logprobs: ArrayLike,
    advantages: ArrayLike,
    sequence_ratio_mask: ArrayLike,
    clip_low_threshold: Threshold = DEFAULT_CLIP_LOW,
    clip_high_threshold: Threshold = DEFAULT_CLIP_HIGH,
) -> LossOutput:
    """Tinker ``gspo`` (GSPO-token): PPO's clipped objective on a sequence-level ratio.

    ``s = exp(mean_{t∈M}(lp_t - q_t))`` with ``M = {t: sequence_ratio_mask_t != 0}`` (an empty M is refused
    for a datum with tokens; a datum with no tokens has ``L = 0``),
    ``s_t = sg(s)·exp(lp_t - sg(lp_t))`` (value ``s``), ``L = -Σ_t min(s_t·A_t, clip(s_t, lo, hi)·A_t)``
    over *all* tokens t (the mask only selects the tokens of the ratio).
    Gradient: ``ds_t/dlp_u = s·[t = u]`` (the sequence ratio is detached, so no gradient flows through the
    mean), hence ``dL/dlp_t = -s·A_t`` unless the clip is active for token t (``A_t > 0 and s > hi`` or
    ``A_t < 0 and s < lo``), then 0; at ``s == lo``/``hi`` the clip is inactive.
    Inputs: ``target_logprobs``, Tinker ``logprobs`` (q), ``advantages``, ``sequence_ratio_mask``; config
    ``clip_low_threshold`` / ``clip_high_threshold``. Output: ``metrics["loss:sum"] = L``.
    """
    lp, q, adv = _ratio_inputs(target_logprobs, sampling_logprobs, advantages)
    if lp.ndim != 1:
        raise LossInputError(f"target_logprobs: gspo needs one datum's tokens, shape [N], got {list(lp.shape)}")
    lo = _threshold(clip_low_threshold, "clip_low_threshold", lp.shape)
    hi = _threshold(clip_high_threshold, "clip_high_threshold", lp.shape)
    _check_bounds(lo, hi)
    if lp.size == 0:  # no tokens: the empty sum, whatever the (undefined) ratio
        _check_same_shape(lp, "target_logprobs", sequence_ratio_mask=_as_float_array(sequence_ratio_mask, "sequence_ratio_mask"))
        return _output(lp, lp)
    s_value = gspo_sequence_ratio(lp, q, sequence_ratio_mask)
    s = np.full(lp.shape, s_value, dtype=np.float64)
    unclipped = _times(s, adv)
    clipped = _times(np.clip(s, lo, hi), adv)
    active = ppo_clip_active(s, adv, lo, hi)
    return _output(-np.minimum(unclipped, clipped), np.where(active, 0.0, -unclipped))


def stable_reinforce(
    target_logprobs: ArrayLike,
    sampling_logprobs: ArrayLike,
    advantages: ArrayLike,
    sampled_mask: ArrayLike | None = None,
    kl_coeff: float = DEFAULT_KL_COEFF,
) -> LossOutput:
    """A stand-in for Tinker ``stable_reinforce``: ``L = -Σ_t r_t·A_t + κ·Σ_t m_t·½·(lp_t - q_t)²``.

    Tinker documents the loss's inputs (samples recorded with ``record_stability_info=True``, datums naming
    them by ``sequence_id`` in provenance spans, a ``kl_coeff`` sampler-KL term defaulting to 0.01) but not
    its formula; this is the mock's named deviation (``specs/math/stable_reinforce.yaml``): importance-sampled
    REINFORCE (Tinker's ``importance_sampling``) plus ``κ = kl_coeff`` times the quadratic sampler-KL
    estimate ``½·(lp - q)²`` on the sampled tokens. On sampler-fresh data (``lp == q``) its gradient is
    REINFORCE's ``-A``; its value differs from real Tinker's.

    Inputs: ``target_logprobs`` = lp, ``sampling_logprobs`` = q (the mock server takes q of the sampled
    tokens from what it recorded at sampling time), ``advantages`` = A, ``sampled_mask`` = m (nonzero = a
    sampled token; the server derives it from the datum's provenance, a client never sends it; ``None``:
    every token counts as sampled); ``loss_fn_config`` ``kl_coeff`` = κ (≥ 0).
    Gradient: ``dL/dlp_t = -r_t·A_t + κ·m_t·(lp_t - q_t)``. Output: ``metrics["loss:sum"] = L``.
    """
    lp, q, adv = _ratio_inputs(target_logprobs, sampling_logprobs, advantages)
    if sampled_mask is None:
        m = np.ones_like(lp)
    else:
        m = (_as_float_array(sampled_mask, "sampled_mask") != 0).astype(np.float64)
        _check_same_shape(lp, "target_logprobs", sampled_mask=m)
    k = _scalar(kl_coeff, "kl_coeff")
    if k < 0:
        raise LossInputError(f"kl_coeff: must be >= 0 (it weights a sampler-KL penalty), got {k!r}")
    with np.errstate(over="ignore"):
        r = np.exp(lp - q)
    pg = _times(r, adv)
    d = (lp - q) * m
    return _output(-pg + 0.5 * k * d * d, -pg + k * d)


# --------------------------------------------------------------------------------------------------
# the per-datum dispatcher (what the mock server calls)

_RATIO_INPUTS = ("target_tokens", "logprobs", "advantages")

LOSS_INPUTS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("target_tokens", "weights"),
    "importance_sampling": _RATIO_INPUTS,
    "ppo": _RATIO_INPUTS,
    "cispo": _RATIO_INPUTS,
    "dro": _RATIO_INPUTS,
    "gspo": (*_RATIO_INPUTS, "sequence_ratio_mask"),
    "stable_reinforce": _RATIO_INPUTS,
}
"""Required ``loss_fn_inputs`` keys per built-in loss."""

_CLIP_KEYS = ("clip_low_threshold", "clip_high_threshold")

LOSS_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "cross_entropy": (),
    "importance_sampling": (),
    "ppo": _CLIP_KEYS,
    "cispo": _CLIP_KEYS,
    "dro": ("beta",),
    "gspo": _CLIP_KEYS,
    "stable_reinforce": ("kl_coeff",),
}
"""Allowed ``loss_fn_config`` keys per built-in loss (all optional; defaults in :data:`LOSS_CONFIG_DEFAULTS`)."""

LOSS_CONFIG_DEFAULTS: dict[str, dict[str, float]] = {
    "cross_entropy": {},
    "importance_sampling": {},
    "ppo": {"clip_low_threshold": DEFAULT_CLIP_LOW, "clip_high_threshold": DEFAULT_CLIP_HIGH},
    "cispo": {"clip_low_threshold": DEFAULT_CISPO_CLIP_LOW, "clip_high_threshold": DEFAULT_CISPO_CLIP_HIGH},
    "dro": {"beta": DEFAULT_DRO_BETA},
    "gspo": {"clip_low_threshold": DEFAULT_CLIP_LOW, "clip_high_threshold": DEFAULT_CLIP_HIGH},
    "stable_reinforce": {"kl_coeff": DEFAULT_KL_COEFF},
}
"""The value each ``loss_fn_config`` key takes when absent, per loss (sources quoted in ``specs/math/*.yaml``)."""

PER_TOKEN_INPUTS: dict[str, tuple[str, ...]] = {"ppo": _CLIP_KEYS, "cispo": _CLIP_KEYS, "gspo": _CLIP_KEYS}
"""Optional ``loss_fn_inputs`` keys (float ``[N]``) that override the config per token."""

SERVER_INPUTS: dict[str, tuple[str, ...]] = {"stable_reinforce": ("sampled_mask",)}
"""Optional ``loss_fn_inputs`` keys (float ``[N]``) a server derives itself (``sampled_mask``: from the
datum's provenance spans); the mock refuses them from a client."""


def _scalar(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise LossInputError(f"{name}: expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise LossInputError(f"{name}: must be finite, got {out!r}")
    return out


def tinker_loss(
    loss_fn: str,
    target_logprobs: ArrayLike,
    loss_fn_inputs: Mapping[str, ArrayLike],
    loss_fn_config: Mapping[str, float] | None = None,
) -> LossOutput:
    """One datum's built-in Tinker loss, validated the way a server must.

    ``loss_fn`` is Tinker's loss name (a key of :data:`LOSS_INPUTS`); ``target_logprobs`` are the learner's
    logprobs of ``loss_fn_inputs["target_tokens"]``; ``loss_fn_inputs`` carries the datum's Tinker inputs
    (``logprobs`` = the sampler's logprobs; ``target_tokens`` is checked for shape only); ``loss_fn_config``
    the loss's config keys (:data:`LOSS_CONFIG_KEYS`). Per-token ``clip_low_threshold`` /
    ``clip_high_threshold`` arrays in ``loss_fn_inputs`` override the config for ppo, cispo and gspo;
    ``sampled_mask`` (:data:`SERVER_INPUTS`) is stable_reinforce's server-derived mask of sampled tokens.

    Raises :class:`~cookbook.errors.LossInputError` naming the field for an unknown loss, unknown config or
    input keys, a missing input, mismatched shapes, or a NaN/inf value.
    """
    if loss_fn not in LOSS_INPUTS:
        hint = (
            " (a loss traced on the client and run by the server; no reference implementation)"
            if loss_fn == "custom"
            else ""
        )
        raise LossInputError(
            f"loss_fn: unknown built-in loss {loss_fn!r}{hint}; choose one of {', '.join(LOSS_INPUTS)}"
        )
    config = dict(loss_fn_config or {})
    allowed_config = LOSS_CONFIG_KEYS[loss_fn]
    unknown_config = sorted(set(config) - set(allowed_config))
    if unknown_config:
        raise LossInputError(
            f"loss_fn_config: unknown key(s) {unknown_config} for {loss_fn!r}; allowed: {list(allowed_config) or 'none'}"
        )
    required = LOSS_INPUTS[loss_fn]
    optional = (*PER_TOKEN_INPUTS.get(loss_fn, ()), *SERVER_INPUTS.get(loss_fn, ()))
    missing = [k for k in required if k not in loss_fn_inputs]
    if missing:
        raise LossInputError(f"loss_fn_inputs: {loss_fn!r} needs {list(required)}; missing {missing}")
    unknown_inputs = sorted(set(loss_fn_inputs) - set(required) - set(optional))
    if unknown_inputs:
        raise LossInputError(
            f"loss_fn_inputs: unexpected key(s) {unknown_inputs} for {loss_fn!r}; it takes {list(required)}"
            + (f" and optionally {list(optional)}" if optional else "")
            + " (remove client-side fields such as 'mask' before sending)"
        )

    lp = _as_float_array(target_logprobs, "target_logprobs")
    tokens_shape = np.shape(loss_fn_inputs["target_tokens"])
    if tuple(tokens_shape) != lp.shape:
        raise LossInputError(
            f"loss_fn_inputs['target_tokens']: shape {list(tokens_shape)} does not match target_logprobs "
            f"shape {list(lp.shape)}"
        )
    if loss_fn != "cross_entropy" and lp.ndim != 1:
        raise LossInputError(f"target_tokens: {loss_fn!r} takes shape [N]; 2-D targets are only for cross_entropy")
    arrays = {k: _as_float_array(loss_fn_inputs[k], f"loss_fn_inputs[{k!r}]") for k in (*required[1:], *optional) if k in loss_fn_inputs}
    for k, arr in arrays.items():
        _check_same_shape(lp, "target_logprobs", **{f"loss_fn_inputs[{k!r}]": arr})
    params: dict[str, Threshold] = {}
    for key in allowed_config:
        params[key] = (
            _scalar(config[key], f"loss_fn_config[{key!r}]") if key in config else LOSS_CONFIG_DEFAULTS[loss_fn][key]
        )
        if key in arrays:
            params[key] = arrays[key]

    if loss_fn == "cross_entropy":
        return cross_entropy(lp, arrays["weights"])
    q, adv = arrays["logprobs"], arrays["advantages"]
    if loss_fn == "importance_sampling":
        return importance_sampling(lp, q, adv)
    if loss_fn == "ppo":
        return ppo(lp, q, adv, params["clip_low_threshold"], params["clip_high_threshold"])
    if loss_fn == "cispo":
        return cispo(lp, q, adv, params["clip_low_threshold"], params["clip_high_threshold"])
    if loss_fn == "dro":
        return dro(lp, q, adv, float(params["beta"]))  # type: ignore[arg-type]
    if loss_fn == "stable_reinforce":
        return stable_reinforce(lp, q, adv, arrays.get("sampled_mask"), float(params["kl_coeff"]))  # type: ignore[arg-type]
    return gspo(lp, q, adv, arrays["sequence_ratio_mask"], params["clip_low_threshold"], params["clip_high_threshold"])


# --------------------------------------------------------------------------------------------------
# DPO (a client-side custom loss)

DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust"]
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust")


@dataclass(frozen=True)
class DPOOutput:
    """DPO over a batch of pairs.

    ``loss`` is the mean over pairs; ``chosen_grads[i]`` / ``rejected_grads[i]`` are ``dL/dlp`` for pair i's
    per-token policy logprobs (what ``forward_backward_custom`` needs, as CE weights ``-grad``);
    ``metrics`` has ``dpo_loss``, ``accuracy``, ``margin``, ``chosen_reward``, ``rejected_reward``,
    ``num_pairs``.
    """

    loss: float
    chosen_grads: list[FloatArray]
    rejected_grads: list[FloatArray]
    metrics: dict[str, float]


def dpo_sequence_logratio(policy_logprobs: ArrayLike, reference_logprobs: ArrayLike, weights: ArrayLike | None = None) -> float:
    """``Δ = Σ_t w_t·(lp_t - lp_ref_t)``: a completion's weighted log-ratio (policy over reference).

    ``policy_logprobs`` come from ``forward_backward_custom`` (Tinker output ``logprobs``),
    ``reference_logprobs`` from ``compute_logprobs`` on the reference sampler, ``weights`` are the datum's
    Tinker ``weights`` (0/1; default all ones). ``dΔ/dlp_t = w_t``.
    """
    lp = _as_float_array(policy_logprobs, "policy_logprobs")
    ref = _as_float_array(reference_logprobs, "reference_logprobs")
    w = np.ones_like(lp) if weights is None else _as_float_array(weights, "weights")
    _check_same_shape(lp, "policy_logprobs", reference_logprobs=ref, weights=w)
    return float(np.sum(w * (lp - ref)))


def _log_sigmoid(x: float) -> float:
    """``log σ(x)`` without overflow."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _dpo_pair_loss(h: float, beta: float, loss_type: str, eps: float) -> tuple[float, float]:
    """``(ℓ(h), dℓ/dh)`` for one pair; h is Δ_c - Δ_r (IPO: the length-normalised difference)."""
    z = beta * h
    if loss_type == "sigmoid":  # cDPO when eps > 0
        value = -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
        return value, beta * (-(1 - eps) * _sigmoid(-z) + eps * _sigmoid(z))
    if loss_type == "robust":
        value = (-(1 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1 - 2 * eps)
        return value, beta * (-(1 - eps) * _sigmoid(-z) - eps * _sigmoid(z)) / (1 - 2 * eps)
    if loss_type == "hinge":
        slack = 1.0 - z
        return max(slack, 0.0), (-beta if slack > 0 else 0.0)
    # ipo
    gap = h - 1.0 / (2.0 * beta)
    return gap * gap, 2.0 * gap


def dpo_loss(
    chosen_logprobs: Sequence[ArrayLike],
    rejected_logprobs: Sequence[ArrayLike],
    chosen_ref_logprobs: Sequence[ArrayLike],
    rejected_ref_logprobs: Sequence[ArrayLike],
    chosen_weights: Sequence[ArrayLike] | None = None,
    rejected_weights: Sequence[ArrayLike] | None = None,
    *,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO over P pairs, the mean of a per-pair loss of the log-ratio margin.

    Per pair: ``Δc = Σ w_c·(lp_c - ref_c)``, ``Δr = Σ w_r·(lp_r - ref_r)`` (:func:`dpo_sequence_logratio`),
    ``h = Δc - Δr`` and ``L = (1/P)·Σ_pairs ℓ(h)`` with, for ``z = β·h`` and ``ε = label_smoothing``:

    * ``sigmoid`` (tinker-cookbook, default; ε > 0 is cDPO): ``ℓ = -(1-ε)·log σ(z) - ε·log σ(-z)``,
    * ``robust`` (Chowdhury et al.): ``ℓ = [-(1-ε)·log σ(z) + ε·log σ(-z)] / (1 - 2ε)``, ``0 <= ε < ½``,
    * ``hinge`` (SLiC): ``ℓ = max(0, 1 - z)`` (subgradient 0 at the kink),
    * ``ipo``: ``ℓ = (h' - 1/(2β))²`` with the length-normalised ``h' = Δc/n_c - Δr/n_r``, ``n = Σ w``.

    Gradient: ``dL/dlp_c,t = ℓ'(h)·w_c,t / P`` and ``dL/dlp_r,t = -ℓ'(h)·w_r,t / P`` (IPO divides by
    ``n_c`` / ``n_r``). Metrics (tinker-cookbook names): ``dpo_loss = L``, ``accuracy = mean[Δc > Δr]``
    (strict), ``margin = mean(β·Δc - β·Δr)``, ``chosen_reward = mean(β·Δc)``,
    ``rejected_reward = mean(β·Δr)``, ``num_pairs = P``. Policy == reference gives ``L = ln 2`` (sigmoid).

    Inputs are per-pair lists of per-token arrays: policy logprobs (Tinker ``logprobs`` output of
    ``forward_backward_custom``), reference logprobs (``compute_logprobs``) and the datums' ``weights``.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise LossInputError(f"loss_type: unknown DPO variant {loss_type!r}; choose one of {', '.join(DPO_LOSS_TYPES)}")
    b = _scalar(beta, "beta")
    if b <= 0:
        raise LossInputError(f"beta: must be > 0, got {b!r}")
    eps = _scalar(label_smoothing, "label_smoothing")
    if not 0.0 <= eps < 0.5:
        raise LossInputError(f"label_smoothing: must be in [0, 0.5), got {eps!r}")
    if eps and loss_type in ("hinge", "ipo"):
        raise LossInputError(f"label_smoothing: only the sigmoid and robust variants use it, not {loss_type!r}")
    n_pairs = len(chosen_logprobs)
    lists = {
        "rejected_logprobs": rejected_logprobs,
        "chosen_ref_logprobs": chosen_ref_logprobs,
        "rejected_ref_logprobs": rejected_ref_logprobs,
    }
    if chosen_weights is not None:
        lists["chosen_weights"] = chosen_weights
    if rejected_weights is not None:
        lists["rejected_weights"] = rejected_weights
    for name, seq in lists.items():
        if len(seq) != n_pairs:
            raise LossInputError(f"{name}: {len(seq)} entries but chosen_logprobs has {n_pairs}; one per pair")
    if n_pairs == 0:
        raise LossInputError("chosen_logprobs: DPO needs at least one (chosen, rejected) pair")

    losses, c_grads, r_grads = [], [], []
    chosen_deltas, rejected_deltas = [], []
    for i in range(n_pairs):
        lp_c = _as_float_array(chosen_logprobs[i], f"chosen_logprobs[{i}]")
        lp_r = _as_float_array(rejected_logprobs[i], f"rejected_logprobs[{i}]")
        w_c = np.ones_like(lp_c) if chosen_weights is None else _as_float_array(chosen_weights[i], f"chosen_weights[{i}]")
        w_r = np.ones_like(lp_r) if rejected_weights is None else _as_float_array(rejected_weights[i], f"rejected_weights[{i}]")
        ref_c = _as_float_array(chosen_ref_logprobs[i], f"chosen_ref_logprobs[{i}]")
        ref_r = _as_float_array(rejected_ref_logprobs[i], f"rejected_ref_logprobs[{i}]")
        _check_same_shape(lp_c, f"chosen_logprobs[{i}]", **{f"chosen_ref_logprobs[{i}]": ref_c, f"chosen_weights[{i}]": w_c})
        _check_same_shape(lp_r, f"rejected_logprobs[{i}]", **{f"rejected_ref_logprobs[{i}]": ref_r, f"rejected_weights[{i}]": w_r})
        d_c = float(np.sum(w_c * (lp_c - ref_c)))
        d_r = float(np.sum(w_r * (lp_r - ref_r)))
        chosen_deltas.append(d_c)
        rejected_deltas.append(d_r)
        scale_c = scale_r = 1.0
        if loss_type == "ipo":
            n_c, n_r = float(np.sum(w_c)), float(np.sum(w_r))
            if n_c <= 0 or n_r <= 0:
                raise LossInputError(
                    f"{'chosen' if n_c <= 0 else 'rejected'}_weights[{i}]: IPO normalises by the number of "
                    "weighted tokens, which is 0 here; drop the pair or give it completion tokens"
                )
            scale_c, scale_r = 1.0 / n_c, 1.0 / n_r
        value, slope = _dpo_pair_loss(d_c * scale_c - d_r * scale_r, b, loss_type, eps)
        losses.append(value)
        c_grads.append(slope * scale_c * w_c / n_pairs)
        r_grads.append(-slope * scale_r * w_r / n_pairs)

    dc, dr = np.asarray(chosen_deltas), np.asarray(rejected_deltas)
    loss = float(np.mean(losses))
    metrics = {
        "dpo_loss": loss,
        "accuracy": float(np.mean(dc > dr)),
        "margin": float(np.mean(b * dc - b * dr)),
        "chosen_reward": float(np.mean(b * dc)),
        "rejected_reward": float(np.mean(b * dr)),
        "num_pairs": float(n_pairs),
    }
    return DPOOutput(loss=loss, chosen_grads=c_grads, rejected_grads=r_grads, metrics=metrics)
