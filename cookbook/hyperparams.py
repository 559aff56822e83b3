"""Learning-rate and LoRA-size helpers for every model of the catalogue (:mod:`cookbook.tokenizers.catalogue`).

The rules, and where they come from (tinker-cookbook 0.6.1 ``hyperparam_utils`` is the behaviour reference the
tests compare with; none of its code is used):

* ``get_lr``: ``lr = 5e-5 x (10 if LoRA) x (2000 / hidden_size) ** e`` with ``e = 0.781`` for Llama models and
  ``e = 0.0775`` for Qwen models (Tinker's calibrated fits; the LoRA factor 10 is from "LoRA Without Regret",
  thinkingmachines.ai/blog/lora). For the other families Tinker has published no calibration (tinker-cookbook raises
  ``NotImplementedError``); here ``get_lr`` answers with the uncalibrated base rate ``5e-5 x (10 if LoRA)`` and
  ``lr_recommendation(...).calibrated`` is ``False`` (``strict=True`` refuses instead, like tinker-cookbook).
* ``get_lora_param_count``: ``rank x (MLP + attention + unembedding)`` parameters per rank of the adapted modules;
  the MLP and attention counts per rank are Tinker's measurements (catalogue data), the unembedding adapter's is
  ``hidden_size + vocab_size`` (an ``hidden x V`` matrix gets ``rank x (hidden + V)`` LoRA parameters).
* ``get_full_finetune_lr_multiplier``: ``1 / sqrt(parameter count)``. tinker-cookbook reads the exact count from
  the safetensors headers on the Hugging Face hub (network); offline we use the nominal total size Tinker lists
  (``"30B-A3B"`` = 30e9). A named deviation: multipliers are close to, not equal to, the exact-count ones.

A Tinker model id with a variant suffix (``zai-org/GLM-5.3:peft:262144``) is looked up by its base name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cookbook.errors import ConfigurationError
from cookbook.tokenizers.catalogue import ModelEntry, model_entry

BASE_LR = 5e-5
LORA_LR_OVER_FULL = 10.0
REFERENCE_HIDDEN = 2000
LR_EXPONENTS = {"llama": 0.781, "qwen": 0.0775}


@dataclass(frozen=True)
class LrRecommendation:
    model: str
    value: float
    calibrated: bool
    source: str


def _entry(model_name: str) -> ModelEntry:
    return model_entry(model_name)


def lr_recommendation(model_name: str, is_lora: bool = True) -> LrRecommendation:
    """The recommended learning rate and whether a calibrated formula backs it."""
    entry = _entry(model_name)
    lr = BASE_LR * (LORA_LR_OVER_FULL if is_lora else 1.0)
    if entry.lr_scaling is not None and entry.hidden_size is not None:
        e = LR_EXPONENTS[entry.lr_scaling]
        value = lr * (REFERENCE_HIDDEN / entry.hidden_size) ** e
        return LrRecommendation(
            entry.name, value, True, f"{entry.lr_scaling} fit: {lr:g} x (2000 / {entry.hidden_size}) ** {e}"
        )
    why = "no calibrated formula for this family" if entry.lr_scaling is None else "hidden size unknown"
    return LrRecommendation(entry.name, lr, False, f"uncalibrated base rate {lr:g} ({why}); tune it for your task")


def get_lr(model_name: str, is_lora: bool = True, *, strict: bool = False) -> float:
    """A recommended learning rate for ``model_name`` (LoRA unless ``is_lora=False``).

    With ``strict=True`` a model without a calibrated formula raises :class:`ConfigurationError` (tinker-cookbook's
    behaviour); otherwise the uncalibrated base rate is returned (see :func:`lr_recommendation`).
    """
    rec = lr_recommendation(model_name, is_lora)
    if strict and not rec.calibrated:
        raise ConfigurationError(
            f"get_lr: the learning rate of {rec.model} is not calibrated ({rec.source}); pass a learning rate "
            "explicitly, or call get_lr without strict=True for the uncalibrated base rate"
        )
    return rec.value


def get_lora_param_count(
    model_name: str,
    lora_rank: int = 32,
    train_mlp: bool = True,
    train_attn: bool = True,
    train_unembed: bool = True,
) -> int:
    """Trainable parameters of a LoRA adapter with the flags of ``create_lora_training_client``."""
    if not (train_mlp or train_attn or train_unembed):
        raise ConfigurationError("get_lora_param_count: at least one of train_mlp, train_attn, train_unembed must be True")
    if lora_rank < 1:
        raise ConfigurationError(f"get_lora_param_count: lora_rank must be >= 1, got {lora_rank}")
    entry = _entry(model_name)
    if entry.lora_per_rank is None or entry.hidden_size is None:
        raise ConfigurationError(
            f"get_lora_param_count: no LoRA parameter counts for {entry.name} (only the models of Tinker's lineup "
            "have them; `cookbook tokenizers list` marks them)"
        )
    mlp, attn = entry.lora_per_rank
    per_rank = (mlp if train_mlp else 0) + (attn if train_attn else 0)
    per_rank += (entry.hidden_size + entry.vocab_size) if train_unembed else 0
    return per_rank * lora_rank


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([BT])(?:-A\d+(?:\.\d+)?[BT])?$")


def nominal_param_count(model_name: str) -> float:
    """The total parameter count Tinker lists for the model (``"235B-A22B"`` -> 235e9)."""
    entry = _entry(model_name)
    m = _SIZE.match(entry.size)
    if m is None:
        raise ConfigurationError(f"no parameter count known for {entry.name} (size {entry.size!r})")
    return float(m.group(1)) * (1e9 if m.group(2) == "B" else 1e12)


def get_lora_lr_over_full_finetune_lr(model_name: str, lora_alpha: int = 32) -> float:
    """LoRA's optimal LR over full fine-tuning's: 10 for every model ("LoRA Without Regret")."""
    _entry(model_name)
    return LORA_LR_OVER_FULL


def get_full_finetune_lr_multiplier(model_name: str) -> float:
    """``1 / sqrt(total parameters)`` (nominal size; see the module docstring)."""
    return 1.0 / math.sqrt(nominal_param_count(model_name))


def get_lora_lr_multiplier(model_name: str) -> float:
    """LR_B = LR_A x m(B) / m(A) transfers a known-good LoRA rate from model A to model B."""
    return get_full_finetune_lr_multiplier(model_name) * get_lora_lr_over_full_finetune_lr(model_name)


__all__ = [
    "LrRecommendation",
    "get_full_finetune_lr_multiplier",
    "get_lora_lr_multiplier",
    "get_lora_lr_over_full_finetune_lr",
    "get_lora_param_count",
    "get_lr",
    "lr_recommendation",
    "nominal_param_count",
]
