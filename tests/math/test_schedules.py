"""LR multipliers and the LoRA learning-rate heuristic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cookbook.errors import ConfigurationError
from cookbook.schedules import (
    HIDDEN_SIZES,
    compute_schedule_lr_multiplier,
    cosine_multiplier,
    get_lora_lr_over_full_finetune_lr,
    get_lr,
    linear_multiplier,
    warmup_multiplier,
)


@given(st.integers(1, 1000).flatmap(lambda t: st.tuples(st.integers(0, t), st.just(t))))
def test_multipliers_in_unit_interval_and_monotone(step_total) -> None:
    step, total = step_total
    for name in ("constant", "linear", "cosine"):
        m = compute_schedule_lr_multiplier(name, step, total)
        assert 0.0 <= m <= 1.0
        if step < total:
            assert compute_schedule_lr_multiplier(name, step + 1, total) <= m


def test_cookbook_formulas() -> None:
    assert linear_multiplier(9, 10) == pytest.approx(0.1)  # never 0 inside training
    assert cosine_multiplier(3, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert compute_schedule_lr_multiplier("constant", 3, 4) == 1.0


def test_warmup() -> None:
    values = [compute_schedule_lr_multiplier("cosine", s, 10, warmup_steps=3) for s in range(11)]
    assert values[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert values[3] == 1.0 and values[10] == pytest.approx(0.0, abs=1e-15)
    assert warmup_multiplier(10, 3) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"schedule": "linear", "step": 0, "total": 0}, "total"),
        ({"schedule": "linear", "step": -1, "total": 5}, "step"),
        ({"schedule": "linear", "step": 6, "total": 5}, "step"),
        ({"schedule": "step", "step": 0, "total": 5}, "schedule"),
        ({"schedule": "linear", "step": 0, "total": 5, "warmup_steps": 5}, "warmup_steps"),
        ({"schedule": "linear", "step": 0, "total": 5, "warmup_steps": -1}, "warmup_steps"),
    ],
)
def test_schedule_errors(kwargs, needle) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        compute_schedule_lr_multiplier(**kwargs)


def test_get_lr() -> None:
    assert get_lr("Qwen/Qwen3-8B") == pytest.approx(4.73e-4, rel=1e-3)  # the inventory's example
    assert get_lr("Qwen/Qwen3-8B", is_lora=False) * get_lora_lr_over_full_finetune_lr() == pytest.approx(get_lr("Qwen/Qwen3-8B"))
    assert get_lr("meta-llama/Llama-3.2-1B") == pytest.approx(5e-4 * (2000 / 2048) ** 0.781)
    assert all(size > 0 for size in HIDDEN_SIZES.values())
    with pytest.raises(ConfigurationError, match="hidden_size"):
        get_lr("Qwen/Qwen9-1T")
    with pytest.raises(ConfigurationError, match="no LR heuristic"):
        get_lr("deepseek-ai/DeepSeek-V3.1")
    with pytest.raises(ConfigurationError, match="unknown model family"):
        get_lr("mistralai/Mistral-7B")
