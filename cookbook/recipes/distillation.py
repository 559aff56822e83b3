"""distillation: on-policy distillation of a student towards a teacher (reverse-KL advantages, importance sampling).

The loop is :func:`cookbook.distillation.train_on_policy.train_on_policy_distillation`: the student samples
answers to prompts (the user turns of the bundled conversations, or ``prompts=`` a ``{"messages": [...]}``
file), the teacher scores the samples with ``compute_logprobs``, each sampled token gets the advantage
``-(student logprob - teacher logprob)``, and the student is trained with ``importance_sampling``. The key
metric ``teacher_kl`` (per-token KL(student ‖ teacher) on the student's samples) falls as it learns.

The teacher, one of (first that applies):

* ``teacher_checkpoint=tinker://.../sampler_weights/...``: a sampler checkpoint;
* ``teacher_sft_steps > 0``: a teacher made here by supervised fine-tuning a copy of the student on the
  conversations (``cookbook.supervised.train`` in ``<log_path>/teacher``), saved with
  ``save_weights_for_sampler("teacher")`` and served with ``create_sampling_client(model_path=...)``. This is
  the **default on the mock** (30 steps): the mock serves one toy chat model, and a fine-tuned copy is a real,
  different policy over the same tokenizer, built through the same public API a Tinker user has;
* otherwise ``teacher_model`` (default ``Qwen/Qwen3-32B``) as a base model: the default on Tinker, with the
  student ``Qwen/Qwen3-8B-Base`` and the ``qwen3`` renderer (both share the Qwen3 tokenizer).

The teacher's sampler path is recorded as ``{"name": "teacher", "sampler_path": ...}`` in
``checkpoints.jsonl`` and reused by a rerun. Resume: a rerun skips the finished teacher SFT, then continues the
student from its last checkpoint (weights + optimizer; RL semantics of :mod:`cookbook.rl.train`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chz

from cookbook.errors import TrainingError
from cookbook.recipes.common import Progress, bundled, parse_config, print_summary, tinker_service
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/distillation"
    model_name: str | None = None  # student; default: cookbook/tiny-chat on the mock, Qwen/Qwen3-8B-Base on Tinker
    renderer_name: str | None = None  # default: llama3 on the mock, qwen3 on Tinker
    prompts: str | None = None  # {"messages": [...]} JSONL (or hub dataset); default: bundled conversations
    teacher_model: str | None = None  # base-model teacher; default: Qwen/Qwen3-32B on Tinker
    teacher_checkpoint: str | None = None  # a sampler path (tinker://...) to use as the teacher
    teacher_sft_steps: int | None = None  # SFT a teacher copy first; default: 30 on the mock, 0 on Tinker
    teacher_learning_rate: float = 2e-2
    learning_rate: float | None = None  # default: 1e-2 on the mock, 1e-4 on Tinker
    batch_size: int = 8  # prompts per step
    group_size: int = 4
    n_batches: int = 30
    max_tokens: int | None = None  # default: 16 on the mock, 1024 on Tinker
    temperature: float = 1.0
    lora_rank: int = 8
    teacher_kl_coef: float = 1.0
    teacher_kl_discount: float = 0.0
    loss_fn: str = "importance_sampling"
    mode: str = "sync"
    save_every: int = 5
    seed: int = 0
    base_url: str | None = None
    wandb_project: str | None = None  # set: mirror metrics to W&B (the 'wandb' extra)
    wandb_name: str | None = None


ONLINE_MODEL = "Qwen/Qwen3-8B-Base"
ONLINE_TEACHER = "Qwen/Qwen3-32B"
ONLINE_RENDERER = "qwen3"
KEYS = ("teacher_kl", "optim/kl_sample_train_v1", "env/all/ac_tokens_per_turn")
MOCK = {"teacher_sft_steps": 30, "learning_rate": 1e-2, "max_tokens": 16}
ONLINE = {"teacher_sft_steps": 0, "learning_rate": 1e-4, "max_tokens": 1024}
TEACHER = "teacher"


def make_teacher(cfg: Config, service: Any, model_name: str, renderer_name: str, renderer: Any,
                 conversations: list[Any], sft_steps: int) -> Any:
    """The teacher sampling client (see the module docstring); records / reuses its sampler path."""
    from cookbook.runlog import RunLog

    log = RunLog(cfg.log_path)
    if cfg.teacher_checkpoint:
        return service.client.create_sampling_client(model_path=cfg.teacher_checkpoint).result()
    if sft_steps <= 0:
        return service.client.create_sampling_client(base_model=cfg.teacher_model or ONLINE_TEACHER).result()
    record = next((r for r in log.checkpoints() if r.get("name") == TEACHER and r.get("sampler_path")), None)
    if record is None:
        from cookbook.supervised.data import ConversationDataset
        from cookbook.supervised.train import SupervisedConfig, train

        batch = min(8, len(conversations))
        dataset = ConversationDataset(conversations, batch)
        sl_cfg = SupervisedConfig(
            log_path=str(Path(cfg.log_path) / "teacher"), model_name=model_name, renderer_name=renderer_name,
            learning_rate=cfg.teacher_learning_rate, lr_schedule="constant", num_epochs=-(-sft_steps // len(dataset)),
            batch_size=batch, max_length=256, lora_rank=cfg.lora_rank, save_every=0, eval_every=0,
            max_steps=sft_steps, seed=cfg.seed + 1,
        )
        print(f"distillation: SFT teacher, {sft_steps} steps -> {sl_cfg.log_path}", file=sys.stderr)
        sl_log = train(sl_cfg, service.client, dataset, (), renderer, Progress(("train_mean_nll",)))
        final = sl_log.last_checkpoint()
        if final is None or not final.get("final"):
            raise TrainingError(f"{sl_log.dir}: the teacher SFT finished without a final checkpoint")
        tc = service.client.create_training_client_from_state(final["state_path"]).result()
        path = tc.save_weights_for_sampler(TEACHER).result().path
        record = log.record_checkpoint({"name": TEACHER, "batch": 0, "sampler_path": path})
    return service.client.create_sampling_client(model_path=record["sampler_path"]).result()


def main(cfg: Config) -> dict[str, object]:
    from cookbook.distillation.train_on_policy import (
        DistillationConfig,
        PromptDataset,
        prompts_from_conversations,
        train_on_policy_distillation,
    )
    from cookbook.recipes.common import resolve_model
    from cookbook.supervised.data import load_conversations

    conversations = load_conversations(cfg.prompts or bundled("conversations.jsonl"))
    prompts = prompts_from_conversations(conversations)
    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        mock = service.kind == "mock"
        defaults = MOCK if mock else ONLINE
        renderer_req = cfg.renderer_name or (None if mock or cfg.model_name else ONLINE_RENDERER)
        model_name, renderer_name, renderer = resolve_model(cfg.model_name, renderer_req, service, ONLINE_MODEL)
        steps = int(cfg.teacher_sft_steps if cfg.teacher_sft_steps is not None else defaults["teacher_sft_steps"])
        if cfg.teacher_checkpoint or cfg.teacher_model:
            steps = 0 if cfg.teacher_sft_steps is None else steps
        teacher = make_teacher(cfg, service, model_name, renderer_name, renderer, conversations, steps)
        d_cfg = DistillationConfig(
            log_path=cfg.log_path, model_name=model_name, renderer_name=renderer_name,
            learning_rate=float(cfg.learning_rate if cfg.learning_rate is not None else defaults["learning_rate"]),
            max_tokens=int(cfg.max_tokens if cfg.max_tokens is not None else defaults["max_tokens"]),
            temperature=cfg.temperature, lora_rank=cfg.lora_rank, loss_fn=cfg.loss_fn, save_every=cfg.save_every,
            seed=cfg.seed, mode=cfg.mode,  # type: ignore[arg-type]
            teacher_kl_coef=cfg.teacher_kl_coef, teacher_kl_discount=cfg.teacher_kl_discount,
            extra={"recipe": "distillation", "teacher_sft_steps": steps, "teacher_checkpoint": cfg.teacher_checkpoint,
                   "teacher_model": None if (cfg.teacher_checkpoint or steps > 0) else cfg.teacher_model or ONLINE_TEACHER},
        )
        dataset = PromptDataset(prompts, renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.seed)
        train_on_policy_distillation(d_cfg, service.client, dataset, renderer, teacher, Progress(KEYS))
        return print_summary("distillation", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])
