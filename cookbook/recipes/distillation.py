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
from typing import Any

import chz

from cookbook.distillation.train_on_policy import DistillationConfig
from cookbook.recipes.common import (
    Progress,
    bundled,
    main_guard,
    make_renderer,
    print_summary,
    run_recipe,
    sft_phase,
    with_models,
)
from cookbook.rl.train import validate_rl_config


@chz.chz
class Config(DistillationConfig):
    log_path: str = chz.field(default="runs/distillation", doc="run directory")
    prompts: str | None = chz.field(default=None, doc='{"messages": [...]} JSONL (or hub dataset); None: bundled')
    teacher_model: str | None = chz.field(default=None, doc="base-model teacher (None: Qwen/Qwen3-32B on Tinker)")
    teacher_checkpoint: str | None = chz.field(default=None, doc="a sampler path (tinker://...) to use as the teacher")
    teacher_sft_steps: int | None = chz.field(default=None, doc="SFT a teacher copy first (None: 30 on the mock, 0 on Tinker)")
    teacher_learning_rate: float = chz.field(default=2e-2, doc="learning rate of the teacher SFT")
    learning_rate: float | None = chz.field(default=None, doc="Adam learning rate (None: 1e-2 on the mock, 1e-4 on Tinker)")  # type: ignore[assignment]
    batch_size: int = chz.field(default=8, doc="prompts per step")
    group_size: int = chz.field(default=4, doc="samples per prompt")
    n_batches: int = chz.field(default=30, doc="training steps")
    max_tokens: int | None = chz.field(default=None, doc="max sampled tokens (None: 16 on the mock, 1024 on Tinker)")  # type: ignore[assignment]
    save_every: int = chz.field(default=5, doc="checkpoint every N steps (0: only the final one)")


ONLINE_MODEL = "Qwen/Qwen3-8B-Base"
ONLINE_TEACHER = "Qwen/Qwen3-32B"
ONLINE_RENDERER = "qwen3"
KEYS = ("teacher_kl", "optim/kl_sample_train_v1", "env/all/ac_tokens_per_turn")
MOCK = {"teacher_sft_steps": 30, "learning_rate": 1e-2, "max_tokens": 16}
ONLINE = {"teacher_sft_steps": 0, "learning_rate": 1e-4, "max_tokens": 1024}
TEACHER = "teacher"


def make_teacher(cfg: Config, service: Any, renderer: Any, conversations: list[Any]) -> Any:
    """The teacher sampling client (see the module docstring); records / reuses its sampler path."""
    from cookbook.loop import open_run

    run = open_run(cfg.log_path, "on_policy_distillation", cfg, "resume")
    if cfg.teacher_checkpoint:
        return service.client.create_sampling_client(model_path=cfg.teacher_checkpoint).result()
    steps = int(cfg.teacher_sft_steps or 0)
    if steps <= 0:
        return service.client.create_sampling_client(base_model=cfg.teacher_model or ONLINE_TEACHER).result()
    record = run.named_record(TEACHER)
    if record is None or not record.get("sampler_path"):
        state_path = sft_phase(cfg, service, renderer, conversations, subdir="teacher", steps=steps,
                               learning_rate=cfg.teacher_learning_rate, seed=cfg.seed + 1, recipe="distillation",
                               what="teacher SFT")
        tc = service.client.create_training_client_from_state(state_path).result()
        record = run.save(tc, TEACHER, 0, kind="sampler")
    return service.client.create_sampling_client(model_path=record["sampler_path"]).result()


def _resolve(cfg: Config, kind: str) -> Config:
    out: Config = with_models(cfg, kind, ONLINE_MODEL, ONLINE_RENDERER, **{k: (MOCK[k], ONLINE[k]) for k in MOCK})
    if (cfg.teacher_checkpoint or cfg.teacher_model) and cfg.teacher_sft_steps is None:
        out = chz.replace(out, teacher_sft_steps=0)
    validate_rl_config(out)
    return out


def _prepare(cfg: Config) -> Any:
    from cookbook.distillation.train_on_policy import prompts_from_conversations
    from cookbook.supervised.data import load_conversations

    conversations = load_conversations(cfg.prompts or bundled("conversations.jsonl"))
    return conversations, prompts_from_conversations(conversations)


def _body(cfg: Config, service: Any, data: Any) -> dict[str, object]:
    from cookbook.distillation.train_on_policy import PromptDataset, train_on_policy_distillation

    conversations, prompts = data
    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    teacher = make_teacher(cfg, service, renderer, conversations)
    dataset = PromptDataset(prompts, renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.seed)
    train_on_policy_distillation(cfg, service.client, dataset, renderer, teacher, Progress(KEYS))
    return print_summary("distillation", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("distillation", Config, argv, _body, kind="on_policy_distillation", resolve=_resolve,
                      prepare=_prepare, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "distillation"))
