"""Unmodified tinker-cookbook 0.6.1 training code against the mock Tinker server, through the real tinker SDK.

tinker-cookbook is a test-time peer (never a dependency of cookbook). Everything below is tinker-cookbook's own
code: its training mains, dataset builders, renderers, ``get_tokenizer`` (Hugging Face ``AutoTokenizer`` by model
name, served from the mock's offline hub cache) and checkpoint utilities. The mock is reached through the
environment only (``TINKER_BASE_URL`` / ``TINKER_API_KEY`` / ``HF_HUB_CACHE`` set by the ``tinker_mock`` fixture).
The model is ``cookbook/tiny-chat`` (a byte-level tokenizer with the Llama 3 control tokens, vocabulary 267),
so the Llama 3 renderer of tinker-cookbook applies and a step takes well under a second.

What is checked is what the mains leave behind: metrics, checkpoints and the requests the server saw.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tinker_cookbook", reason="tinker-cookbook 0.6.1 (test-time peer) is not installed")

MODEL = "cookbook/tiny-chat"
RENDERER = "llama3"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _metrics(log_path: Path) -> list[dict[str, Any]]:
    path = log_path / "metrics.jsonl"
    assert path.exists(), f"no metrics.jsonl in {log_path}"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checkpoints(log_path: Path) -> list[dict[str, Any]]:
    path = log_path / "checkpoints.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _endpoints(mock: Any) -> list[str]:
    return [r.endpoint for r in mock.requests]


def _conversations(path: Path, n: int = 16) -> Path:
    with path.open("w") as f:
        for i in range(n):
            a, b = i % 7, (3 * i) % 5
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": f"{a + b}"},
            ]}) + "\n")
    return path


def _arithmetic(batch: int, group: int, n_batches: int) -> Any:
    from tinker_cookbook.recipes.math_rl.arithmetic_env import ArithmeticDatasetBuilder

    return ArithmeticDatasetBuilder(
        batch_size=batch, model_name_for_tokenizer=MODEL, renderer_name=RENDERER, n_batches=n_batches,
        group_size=group, include_fewshot=False,
    )


def test_supervised_main_on_a_conversation_file(tinker_mock: Any, tmp_path: Path) -> None:
    from tinker_cookbook.supervised import train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    common = ChatDatasetBuilderCommonConfig(
        model_name_for_tokenizer=MODEL, renderer_name=RENDERER, max_length=256, batch_size=4
    )
    log = tmp_path / "sl"
    config = train.Config(
        log_path=str(log), model_name=MODEL, recipe_name="peer_sl", renderer_name=RENDERER,
        dataset_builder=FromConversationFileBuilder(common_config=common, file_path=str(_conversations(tmp_path / "c.jsonl"))),
        learning_rate=5e-3, lora_rank=8, num_epochs=2, save_every=2, eval_every=0,
    )
    asyncio.run(train.main(config))
    rows = [r for r in _metrics(log) if "train_mean_nll" in r]
    assert len(rows) == 8  # 16 conversations / 4 per batch x 2 epochs
    assert rows[-1]["train_mean_nll"] < rows[0]["train_mean_nll"], "SFT on the mock learns"
    names = [c["name"] for c in _checkpoints(log)]
    assert "final" in names and len(names) >= 4
    eps = _endpoints(tinker_mock)
    assert eps.count("forward_backward") == 8 and eps.count("optim_step") == 8


def _rl_config(tmp_path: Path, name: str, **kw: Any) -> Any:
    from tinker_cookbook.rl import train

    return train.Config(
        learning_rate=1e-2, dataset_builder=_arithmetic(batch=4, group=4, n_batches=3), model_name=MODEL,
        recipe_name=f"peer_rl_{name}", renderer_name=RENDERER, lora_rank=8, max_tokens=4,
        log_path=str(tmp_path / name), eval_every=0, save_every=0, loss_fn="importance_sampling", **kw,
    )


@pytest.mark.parametrize("mode", ["sync", "async", "stream_minibatch"])
def test_rl_main_math_rl_arithmetic(tinker_mock: Any, tmp_path: Path, mode: str) -> None:
    from tinker_cookbook.rl import train

    extra: dict[str, Any] = {}
    if mode == "async":
        extra["async_config"] = train.AsyncConfig(max_steps_off_policy=2, groups_per_batch=4, loss_fn="importance_sampling")
    elif mode == "stream_minibatch":
        extra["stream_minibatch_config"] = train.StreamMinibatchConfig(groups_per_batch=4, num_minibatches=2)
    config = _rl_config(tmp_path, mode, **extra)
    asyncio.run(train.main(config))
    rows = [r for r in _metrics(tmp_path / mode) if "env/all/reward/total" in r]
    assert len(rows) == 3, f"{mode}: one metrics row per training step"
    eps = _endpoints(tinker_mock)
    assert eps.count("optim_step") == 3
    assert eps.count("forward_backward") == (6 if mode == "stream_minibatch" else 3)
    assert eps.count("asample") >= 3 * 4, "every group was sampled on the mock"
    assert "final" in [c["name"] for c in _checkpoints(tmp_path / mode)]


def test_dpo_main_on_a_local_comparisons_file(tinker_mock: Any, tmp_path: Path) -> None:
    from tinker_cookbook.preference import train_dpo
    from tinker_cookbook.preference.dpo_datasets import DPODatasetBuilderFromComparisons
    from tinker_cookbook.preference.preference_datasets import ComparisonBuilderFromJsonl
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    path = tmp_path / "comparisons.jsonl"
    with path.open("w") as f:
        for i in range(8):
            prompt = [{"role": "user", "content": f"Say {i} politely."}]
            f.write(json.dumps({
                "comparison": {
                    "prompt_conversation": prompt,
                    "completion_A": [{"role": "assistant", "content": f"Certainly: {i}."}],
                    "completion_B": [{"role": "assistant", "content": f"{i}!!"}],
                },
                "label": "A",
            }) + "\n")
    common = ChatDatasetBuilderCommonConfig(model_name_for_tokenizer=MODEL, renderer_name=RENDERER, max_length=256, batch_size=4)
    log = tmp_path / "dpo"
    config = train_dpo.Config(
        log_path=str(log), model_name=MODEL, recipe_name="peer_dpo", renderer_name=RENDERER,
        dataset_builder=DPODatasetBuilderFromComparisons(
            common_config=common, comparison_builder=ComparisonBuilderFromJsonl(train_path=str(path))
        ),
        learning_rate=5e-3, lora_rank=8, num_epochs=2, dpo_beta=0.1, save_every=0, eval_every=0,
    )
    train_dpo.main(config)
    rows = [r for r in _metrics(log) if "dpo_loss" in r]
    assert len(rows) == 4
    assert rows[-1]["dpo_loss"] < rows[0]["dpo_loss"], "DPO on the mock prefers the chosen completions over time"
    eps = _endpoints(tinker_mock)
    assert eps.count("optim_step") == 4 and eps.count("forward_backward") >= 4
    assert "asample" in eps, "the reference model's log-probabilities (compute_logprobs) come from the mock"


def test_on_policy_distillation_with_a_teacher(tinker_mock: Any, tmp_path: Path) -> None:
    from tinker_cookbook.distillation import train_on_policy
    from tinker_cookbook.distillation.datasets import DistillationDatasetConfig, TeacherConfig

    log = tmp_path / "distill"
    config = train_on_policy.Config(
        learning_rate=1e-2, model_name=MODEL, recipe_name="peer_distill", renderer_name=RENDERER, max_tokens=4,
        lora_rank=8, log_path=str(log), eval_every=0, save_every=0, kl_penalty_coef=1.0,
        dataset_configs=[DistillationDatasetConfig(
            dataset_builder=_arithmetic(batch=4, group=2, n_batches=2), teacher_config=TeacherConfig(base_model=MODEL),
            groups_per_batch=4,
        )],
    )
    asyncio.run(train_on_policy.main(config))
    rows = _metrics(log)
    assert len([r for r in rows if any("teacher" in k or "kl" in k for k in r)]) == 2
    eps = _endpoints(tinker_mock)
    assert eps.count("optim_step") == 2, sorted(set(eps))
    assert eps.count("asample") >= 2 * 4 * 2, "students sample on the mock"


def test_checkpoint_utils_save_and_resume(tinker_mock: Any, tmp_path: Path) -> None:
    """A run interrupted after its checkpoint resumes from it: tinker-cookbook reads checkpoints.jsonl and loads
    the state (weights + optimizer) from the mock."""
    from tinker_cookbook import checkpoint_utils
    from tinker_cookbook.supervised import train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    common = ChatDatasetBuilderCommonConfig(model_name_for_tokenizer=MODEL, renderer_name=RENDERER, max_length=256, batch_size=4)
    data = str(_conversations(tmp_path / "c.jsonl"))
    log = tmp_path / "resume"

    def config(num_epochs: int) -> Any:
        return train.Config(
            log_path=str(log), model_name=MODEL, recipe_name="peer_resume", renderer_name=RENDERER,
            dataset_builder=FromConversationFileBuilder(common_config=common, file_path=data),
            learning_rate=5e-3, lora_rank=8, num_epochs=num_epochs, save_every=2, eval_every=0,
        )

    asyncio.run(train.main(config(1)))  # 4 steps, checkpoints after steps 2 and 4 ("final")
    first = [r["step"] for r in _metrics(log) if "train_mean_nll" in r]
    last = checkpoint_utils.get_last_checkpoint(str(log))
    assert last is not None and last.state_path is not None and last.state_path.startswith("tinker://")
    before = _endpoints(tinker_mock).count("load_weights")
    asyncio.run(train.main(config(2)))  # the same log dir: resumes from the last checkpoint for epoch 2
    eps = _endpoints(tinker_mock)
    assert eps.count("load_weights") == before + 1, "the second run loaded the checkpoint's state"
    steps = [r["step"] for r in _metrics(log) if "train_mean_nll" in r]
    assert len(first) == 4 and len(steps) == 8
    assert min(steps[4:]) > max(first), "the second run continues after the checkpoint, no step repeated"
