"""tool_use_rl: multi-turn RL where the model answers arithmetic questions by calling a local calculator tool.

Environment: :class:`cookbook.rl.tool_env.CalculatorEnv`. The model gets the tool declaration (the renderer's
own tool format) and ``What is x op y?``; a turn with a ``calculator`` call gets the tool's result back as a
``tool`` message and the model continues; a turn without calls is the answer. Reward ``correct +
0.1·(well_formed - 1) + 0.5·(used_tool - 1)``. Each episode's turns extend one another, so the trajectory is
trained as one datum (``optim/num_datums`` equals the number of episodes). Group-centred advantages,
``importance_sampling``, the RL loop of :func:`cookbook.rl.train.train_rl` (``mode`` sync | stream | async).

Warm-up (``warmup_sft_steps``): before RL, that many supervised steps on worked episodes (one canonical
calculator call, the tool result, the answer) on problems drawn with a different seed, run by
:func:`cookbook.supervised.train.train` in ``<log_path>/warmup``; RL starts from its final weights. Default
**24 on the mock** (a random toy model never writes a parseable tool call) and **0 on Tinker**.

* Offline: the embedded mock serves ``cookbook/tiny-chat-tools`` (byte tokens + Qwen3's ChatML and tool
  tokens) with the ``qwen3_instruct`` renderer, lr 5e-2, ``max_tokens`` 80 per turn. The toy model only sees
  a decayed summary of its context, so what it learns here is the tool-call format, the turn structure and
  the answer distribution; the point is that multi-turn rollouts, tool execution, merging and the reward
  plumbing run end to end.
* On Tinker: ``Qwen/Qwen3-4B-Instruct-2507`` with ``qwen3_instruct``, lr 4e-5, ``max_tokens`` 256, no warm-up.

Resume as in :mod:`cookbook.recipes.math_rl`: a finished warm-up is skipped, RL continues from its last
checkpoint.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chz

from cookbook.errors import DataError
from cookbook.recipes.common import Progress, parse_config, print_summary, tinker_service
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/tool_use_rl"
    model_name: str | None = None  # default: cookbook/tiny-chat-tools on the mock, Qwen3-4B-Instruct-2507 on Tinker
    renderer_name: str | None = None  # default: qwen3_instruct
    warmup_sft_steps: int | None = None  # default: 12 on the mock, 0 on Tinker
    warmup_learning_rate: float = 0.1
    learning_rate: float | None = None  # default: 5e-2 on the mock, 4e-5 on Tinker
    batch_size: int = 8  # groups (problems) per step
    group_size: int = 4
    n_batches: int = 12
    max_operand: int = 9
    max_turns: int = 3  # sampled turns per episode (tool calls + the answer)
    max_tokens: int | None = None  # per turn; default: 80 on the mock, 256 on Tinker
    temperature: float = 1.0
    lora_rank: int = 8
    loss_fn: str = "importance_sampling"
    mode: str = "sync"  # sync | stream | async
    save_every: int = 4
    seed: int = 0
    base_url: str | None = None
    wandb_project: str | None = None  # set: mirror metrics to W&B (the 'wandb' extra)
    wandb_name: str | None = None


ONLINE_MODEL = "Qwen/Qwen3-4B-Instruct-2507"
KEYS = ("env/all/reward/total", "env/all/used_tool", "env/all/format", "env/all/correct")
MOCK = {"warmup_sft_steps": 24, "learning_rate": 5e-2, "max_tokens": 80}
ONLINE = {"warmup_sft_steps": 0, "learning_rate": 4e-5, "max_tokens": 256}


def run_warmup(cfg: Config, service: Any, model_name: str, renderer_name: str, renderer: Any, steps: int) -> str:
    """SFT on worked episodes in ``<log_path>/warmup``; returns its final state path."""
    from cookbook.rl.tool_env import draw_problem, worked_example
    from cookbook.runlog import RunLog
    from cookbook.supervised.data import ConversationDataset
    from cookbook.supervised.train import SupervisedConfig, train

    rng = random.Random(f"{cfg.seed}:warmup")
    convs = [worked_example(renderer, *draw_problem(rng, cfg.max_operand, ("+", "-", "*"))) for _ in range(64)]
    batch = 8
    sl_cfg = SupervisedConfig(
        log_path=str(Path(cfg.log_path) / "warmup"), model_name=model_name, renderer_name=renderer_name,
        learning_rate=cfg.warmup_learning_rate, lr_schedule="constant", num_epochs=-(-steps * batch // len(convs)),
        batch_size=batch, max_length=None, lora_rank=cfg.lora_rank, save_every=0, eval_every=0, max_steps=steps,
        seed=cfg.seed,
    )
    print(f"tool_use_rl: SFT warm-up, {steps} steps on worked tool-use episodes -> {sl_cfg.log_path}", file=sys.stderr)
    log = train(sl_cfg, service.client, ConversationDataset(convs, batch), (), renderer, Progress(("train_mean_nll",)))
    final = RunLog(log.dir).last_checkpoint()
    if final is None or not final.get("final"):
        raise DataError(f"{log.dir}: the warm-up finished without a final checkpoint")
    return str(final["state_path"])


def main(cfg: Config) -> dict[str, object]:
    from cookbook.mock.tiny_chat import TINY_CHAT_TOOLS
    from cookbook.recipes.common import resolve_model
    from cookbook.rl.tool_env import CalculatorDataset, conversation_prefix
    from cookbook.rl.train import RLConfig, train_rl

    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        model_name, renderer_name, renderer = resolve_model(
            cfg.model_name, cfg.renderer_name, service, ONLINE_MODEL, mock_default=TINY_CHAT_TOOLS
        )
        conversation_prefix(renderer)  # a renderer without a tool format fails here, before any work
        defaults = MOCK if service.kind == "mock" else ONLINE
        steps = int(cfg.warmup_sft_steps if cfg.warmup_sft_steps is not None else defaults["warmup_sft_steps"])
        init = run_warmup(cfg, service, model_name, renderer_name, renderer, steps) if steps > 0 else None
        dataset = CalculatorDataset(renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.max_operand,
                                    max_turns=cfg.max_turns, seed=cfg.seed)
        rl_cfg = RLConfig(
            log_path=cfg.log_path, model_name=model_name, renderer_name=renderer_name,
            learning_rate=float(cfg.learning_rate if cfg.learning_rate is not None else defaults["learning_rate"]),
            max_tokens=int(cfg.max_tokens if cfg.max_tokens is not None else defaults["max_tokens"]),
            temperature=cfg.temperature, lora_rank=cfg.lora_rank, loss_fn=cfg.loss_fn, save_every=cfg.save_every,
            seed=cfg.seed, mode=cfg.mode,  # type: ignore[arg-type]
            init_state_path=init, extra={"recipe": "tool_use_rl", "warmup_sft_steps": steps},
        )
        train_rl(rl_cfg, service.client, dataset, renderer, Progress(KEYS))
        return print_summary("tool_use_rl", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])
