"""On-policy distillation: the RL loop with the teacher's per-token reverse KL as the advantage.

Semantics (tinker-cookbook ``distillation/train_on_policy.py``):

* Environments are :class:`PromptOnlyEnv`: the student answers a prompt once and gets reward 0, so the
  group-centred advantages are 0 and the only learning signal is the teacher's.
* After the rollouts of a batch, every datum (prompt + sampled completion) is scored by the teacher with
  ``compute_logprobs(full sequence)[1:]`` (aligned with the targets), then
  :func:`cookbook.rl.kl.distillation_reverse_kl_advantages` adds ``-coef·mask·(q_t - t_t)`` to the advantage of
  each sampled token (``q`` = the student's sampled logprob, ``t`` = the teacher's), **not** centred, with the
  discounted future sum when ``teacher_kl_discount > 0``. Prompt tokens have mask 0 and advantage 0.
* The datums are trained with ``loss_fn`` (``importance_sampling`` by default) by the unchanged RL trainer of
  :mod:`cookbook.rl.train` (sync, stream or async modes; sampling seeds, checkpoints, exact resume,
  ``eval_every`` and ``load_checkpoint_path`` are exactly those of RL). The metric is ``teacher_kl = Σ (q - t)·mask / Σ mask``, a
  Monte-Carlo estimate of ``KL(student ‖ teacher)`` per token on the student's own samples: it falls as the
  student imitates the teacher. ``teacher_kl/dataset_{i}`` is the same estimate restricted to the prompts of
  dataset ``i`` (tinker-cookbook's per-dataset metric; ``PromptDataset.dataset_index``).
* The teacher is any sampling client over the same tokenizer (a bigger base model, or a fine-tuned checkpoint
  given by ``create_sampling_client(model_path=...)``). In stream/async modes the teacher is queried from the
  rollout coroutine and blocks it while it waits; sync mode (the default) queries it between rollouts and training.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import chz
import numpy as np

from cookbook.errors import ConfigurationError
from cookbook.loop import logging_spec_of, opened
from cookbook.renderers.base import Message, RendererProtocol
from cookbook.rl.data import reference_logprobs, with_advantages
from cookbook.rl.kl import distillation_reverse_kl_advantages
from cookbook.rl.train import RLConfig, RLTrainer
from cookbook.rl.types import Action, Env, EnvGroupBuilder, StepResult, StopCondition, TrajectoryGroup
from cookbook.runlog import RunLog


class PromptOnlyEnv(Env):
    """One turn: the student answers ``messages``; reward 0 (the teacher supplies the signal)."""

    def __init__(self, renderer: RendererProtocol, messages: Sequence[Message]):
        self.renderer = renderer
        self.messages = list(messages)

    async def initial_observation(self) -> tuple[Any, StopCondition]:
        return self.renderer.build_generation_prompt(self.messages), self.renderer.get_stop_sequences()

    async def step(self, action: Action) -> StepResult:
        from tinker import ModelInput

        return StepResult(reward=0.0, episode_done=True, next_observation=ModelInput.empty(),
                          next_stop_condition=self.renderer.get_stop_sequences())


@dataclass
class PromptGroupBuilder(EnvGroupBuilder):
    renderer: RendererProtocol
    messages: list[Message]
    group_size: int
    dataset_index: int = 0

    async def make_envs(self) -> Sequence[Env]:
        return [PromptOnlyEnv(self.renderer, self.messages) for _ in range(self.group_size)]

    def logging_tags(self) -> list[str]:
        return ["distillation"]


@dataclass
class PromptDataset:
    """Batch ``i``: ``batch_size`` prompts drawn with ``random.Random(f"{seed}:{i}")``, ``group_size`` samples each."""

    prompts: list[list[Message]]
    renderer: RendererProtocol
    batch_size: int
    group_size: int
    n_batches: int
    seed: int = 0
    dataset_index: int = 0

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ConfigurationError("the distillation prompt set is empty")

    def __len__(self) -> int:
        return self.n_batches

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        rng = random.Random(f"{self.seed}:{index}")
        picks = rng.sample(self.prompts, min(self.batch_size, len(self.prompts)))
        return [PromptGroupBuilder(self.renderer, p, self.group_size, self.dataset_index) for p in picks]


def prompts_from_conversations(conversations: Sequence[Sequence[Message]]) -> list[list[Message]]:
    """Each conversation up to (not including) its last assistant message; conversations without one are skipped."""
    out = []
    for conv in conversations:
        idx = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
        if idx and idx[-1] > 0:
            out.append(list(conv[: idx[-1]]))
    return out


@chz.chz
class DistillationConfig(RLConfig):
    """RL's configuration plus the teacher coefficient. tinker-cookbook names it ``kl_penalty_coef``; here that
    key stays RL's KL penalty against the base model, and the teacher's coefficient is ``teacher_kl_coef``."""

    teacher_kl_coef: float = chz.field(default=1.0, doc="weight of the teacher's reverse KL in the advantages")
    teacher_kl_discount: float = chz.field(default=0.0, doc="> 0: discounted future sum of the teacher KL")


def _floats(td: Any) -> np.ndarray:
    return np.asarray(td.tolist(), dtype=np.float64)


class _DistillationTrainer(RLTrainer):
    """The RL trainer whose advantage step adds the teacher's reverse KL (see the module docstring)."""

    kind = "on_policy_distillation"

    def __init__(self, cfg: DistillationConfig, service_client: Any, dataset: Any, renderer: Any, progress: Any,
                 teacher: Any, evaluators: Sequence[Any] = ()):
        self.teacher = teacher
        self.dcfg = cfg
        super().__init__(cfg, service_client, dataset, renderer, progress, evaluators)

    def prepare(self, groups: list[TrajectoryGroup]) -> tuple[list[Any], dict[str, float]]:
        data, metrics = super().prepare(groups)
        if not data:
            return data, metrics
        sampled = [_floats(d.loss_fn_inputs["logprobs"]) for d in data]
        mask = [_floats(d.loss_fn_inputs["mask"]) for d in data]
        advs = [_floats(d.loss_fn_inputs["advantages"]) for d in data]
        teacher = reference_logprobs(self.teacher, data)
        new_advs, kl = distillation_reverse_kl_advantages(
            advs, sampled, teacher, mask, self.dcfg.teacher_kl_coef, self.dcfg.teacher_kl_discount
        )
        metrics.update(kl)
        per: dict[int, list[float]] = {}
        for g, q, t, m in zip(self.datum_groups, sampled, teacher, mask):
            acc = per.setdefault(int(getattr(g, "dataset_index", 0)), [0.0, 0.0])
            acc[0] += float(np.sum((q - t) * m))
            acc[1] += float(np.sum(m))
        for idx, (num, den) in sorted(per.items()):
            if den > 0:
                metrics[f"teacher_kl/dataset_{idx}"] = num / den
        return [with_advantages(d, a) for d, a in zip(data, new_advs)], metrics


def train_on_policy_distillation(
    config: DistillationConfig,
    service_client: Any,
    dataset: Any,
    renderer: Any,
    teacher_client: Any,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    evaluators: Sequence[Any] = (),
) -> RunLog:
    """Run (or resume) on-policy distillation of the student ``config.model_name`` towards ``teacher_client``."""
    with opened(config.log_path, _DistillationTrainer.kind, config, config.behavior_if_log_dir_exists,
                logging_spec_of(config)):
        return _DistillationTrainer(config, service_client, dataset, renderer, progress, teacher_client,
                                    evaluators).train()
