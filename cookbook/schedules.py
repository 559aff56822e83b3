"""Learning-rate schedules (multipliers of a base LR) and tinker-cookbook's LoRA learning-rate heuristic.

tinker-cookbook's ``compute_schedule_lr_multiplier(schedule, step, total)`` with ``step`` from 0:

* ``constant``: ``1``
* ``linear``:   ``1 - step/total`` (reaches ``1/total`` at the last step ``total - 1``, never 0 in training)
* ``cosine``:   ``½·(1 + cos(π·step/total))``

Warmup (this toolkit's extension; tinker-cookbook has none): with ``W = warmup_steps > 0``, steps
``0 .. W-1`` use ``(step + 1)/W`` (the first step is not wasted on LR 0, the last warmup step reaches 1)
and later steps use the base schedule on the remaining horizon: ``f(step - W, total - W)``.
"""

from __future__ import annotations

import math
from typing import Literal

from cookbook.errors import ConfigurationError

Schedule = Literal["constant", "linear", "cosine"]
SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")

__all__ = [
    "HIDDEN_SIZES",
    "SCHEDULES",
    "compute_schedule_lr_multiplier",
    "constant_multiplier",
    "cosine_multiplier",
    "get_lora_lr_over_full_finetune_lr",
    "get_lr",
    "linear_multiplier",
    "warmup_multiplier",
]


def _check_step(step: int, total: int) -> None:
    if total <= 0:
        raise ConfigurationError(f"total: the number of steps must be > 0, got {total!r}")
    if step < 0 or step > total:
        raise ConfigurationError(f"step: must be in [0, {total}] (step counts from 0), got {step!r}")


def constant_multiplier(step: int, total: int) -> float:
    """``m = 1``."""
    _check_step(step, total)
    return 1.0


def linear_multiplier(step: int, total: int) -> float:
    """``m = 1 - step/total`` (tinker-cookbook ``linear``; the SL and DPO default)."""
    _check_step(step, total)
    return 1.0 - step / total


def cosine_multiplier(step: int, total: int) -> float:
    """``m = ½·(1 + cos(π·step/total))``."""
    _check_step(step, total)
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def warmup_multiplier(step: int, warmup_steps: int) -> float:
    """Linear warmup ``m = (step + 1)/W`` for ``0 <= step < W``, and 1 afterwards."""
    if warmup_steps <= 0:
        raise ConfigurationError(f"warmup_steps: must be > 0 for a warmup, got {warmup_steps!r}")
    if step < 0:
        raise ConfigurationError(f"step: must be >= 0, got {step!r}")
    return min(1.0, (step + 1) / warmup_steps)


_BASE = {"constant": constant_multiplier, "linear": linear_multiplier, "cosine": cosine_multiplier}


def compute_schedule_lr_multiplier(schedule: str, step: int, total: int, *, warmup_steps: int = 0) -> float:
    """The LR multiplier at ``step`` (from 0) of ``total`` steps for ``schedule`` in :data:`SCHEDULES`.

    ``warmup_steps = W > 0``: ``(step + 1)/W`` while ``step < W``, then ``f(step - W, total - W)`` where f is
    the base schedule (so ``W < total`` is required). ``total <= 0`` or a step outside ``[0, total]`` raises
    :class:`ConfigurationError`.
    """
    base = _BASE.get(schedule)
    if base is None:
        raise ConfigurationError(f"schedule: unknown LR schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    _check_step(step, total)
    if warmup_steps < 0:
        raise ConfigurationError(f"warmup_steps: must be >= 0, got {warmup_steps!r}")
    if warmup_steps == 0:
        return base(step, total)
    if warmup_steps >= total:
        raise ConfigurationError(f"warmup_steps ({warmup_steps}) must be smaller than total ({total})")
    if step < warmup_steps:
        return warmup_multiplier(step, warmup_steps)
    return base(step - warmup_steps, total - warmup_steps)


# --------------------------------------------------------------------------------------------------
# LoRA learning-rate heuristic (tinker-cookbook hyperparam_utils.get_lr)

HIDDEN_SIZES: dict[str, int] = {
    "meta-llama/Llama-3.2-1B": 2048,
    "meta-llama/Llama-3.2-3B": 3072,
    "meta-llama/Llama-3.1-8B": 4096,
    "meta-llama/Llama-3.1-8B-Instruct": 4096,
    "meta-llama/Meta-Llama-3-8B-Instruct": 4096,
    "meta-llama/Llama-3.1-70B": 8192,
    "meta-llama/Llama-3.3-70B-Instruct": 8192,
    "Qwen/Qwen3-0.6B": 1024,
    "Qwen/Qwen3-1.7B": 2048,
    "Qwen/Qwen3-4B": 2560,
    "Qwen/Qwen3-4B-Instruct-2507": 2560,
    "Qwen/Qwen3-8B": 4096,
    "Qwen/Qwen3-8B-Base": 4096,
    "Qwen/Qwen3-14B": 5120,
    "Qwen/Qwen3-32B": 5120,
    "Qwen/Qwen3-30B-A3B": 2048,
    "Qwen/Qwen3-30B-A3B-Base": 2048,
    "Qwen/Qwen3-30B-A3B-Instruct-2507": 2048,
    "Qwen/Qwen3-235B-A22B": 4096,
    "Qwen/Qwen3-235B-A22B-Instruct-2507": 4096,
}
"""Model hidden sizes (``config.json`` ``hidden_size``) for :func:`get_lr`."""

_LR_EXPONENTS = (("llama", 0.781), ("qwen", 0.0775))
_NO_HEURISTIC = ("inkling", "deepseek", "gpt-oss", "kimi", "glm", "nemotron")


def get_lora_lr_over_full_finetune_lr() -> float:
    """tinker-cookbook's rule of thumb: LoRA wants a 10x larger learning rate than full fine-tuning."""
    return 10.0


def get_lr(model_name: str, is_lora: bool = True, *, hidden_size: int | None = None) -> float:
    """tinker-cookbook's LR heuristic: ``lr = 5e-5 · (10 if LoRA) · (2000 / hidden_size)^e``.

    ``e = 0.781`` when the model name contains "llama", ``0.0775`` when it contains "qwen" (case-insensitive).
    ``hidden_size`` defaults to :data:`HIDDEN_SIZES` (no hub look-up offline). Example: Qwen3-8B with LoRA
    gives ``5e-4·(2000/4096)^0.0775 ≈ 4.73e-4``. Other families raise :class:`ConfigurationError`.
    """
    lowered = model_name.lower()
    exponent = next((e for key, e in _LR_EXPONENTS if key in lowered), None)
    if exponent is None:
        if any(key in lowered for key in _NO_HEURISTIC):
            raise ConfigurationError(f"get_lr: tinker-cookbook has no LR heuristic for {model_name!r}; pass a learning rate")
        raise ConfigurationError(f"get_lr: unknown model family for {model_name!r}; only Llama and Qwen are covered")
    if hidden_size is None:
        if model_name not in HIDDEN_SIZES:
            raise ConfigurationError(
                f"get_lr: hidden size of {model_name!r} unknown; pass hidden_size= (config.json 'hidden_size')"
            )
        hidden_size = HIDDEN_SIZES[model_name]
    if hidden_size <= 0:
        raise ConfigurationError(f"hidden_size: must be > 0, got {hidden_size!r}")
    lr = 5e-5 * (get_lora_lr_over_full_finetune_lr() if is_lora else 1.0)
    return lr * (2000 / hidden_size) ** exponent
