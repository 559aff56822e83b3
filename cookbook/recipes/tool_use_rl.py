"""tool_use_rl: multi-turn RL where the model answers arithmetic questions by calling a local calculator tool.

Environment: :class:`cookbook.rl.tool_env.CalculatorEnv`. The model gets the tool declaration (the renderer's
own tool format) and ``What is x op y?``; a turn with a ``calculator`` call gets the tool's result back as a
``tool`` message and the model continues; a turn without calls is the answer. Reward ``correct +
0.1·(well_formed - 1) + tool_coef·(used_tool - 1)``, ``tool_coef = 1`` by default: a correct answer without
a working calculator call before it earns nothing, only call-then-correct-answer earns 1 (at 0.5, a direct
correct answer earned 0.5 and the toy policy stopped calling once it knew the answer). Each episode's turns extend
one another, so the trajectory is trained as one datum (``optim/num_datums`` equals the number of episodes).
Group-centred advantages, ``importance_sampling``, the RL loop of :func:`cookbook.rl.train.train_rl`; the
config is the RL loop's (:class:`cookbook.rl.train.RLConfig`, tinker-cookbook key names: ``mode`` /
``async_config.*`` / ``stream_minibatch_config.*``, ``load_checkpoint_path``, ``wandb_*``...) plus the
problem set's shape (``max_operand``, ``ops``, ``n_problems``).

Warm-up (``warmup_sft_steps``): before RL, that many supervised steps on worked episodes (one canonical
calculator call, the tool result, the answer) on problems drawn with a different seed, run by
:func:`cookbook.supervised.train.train` in ``<log_path>/warmup``; RL starts from its final weights
(``load_checkpoint_path``, fresh optimizer; an explicit ``load_checkpoint_path=`` skips the warm-up). Default
**48 on the mock** (a random toy model never writes a parseable tool call; after 24 steps a third of its
episodes still had a malformed call, which RL then learned to avoid by never calling) and **0 on Tinker**.

* Offline: the embedded mock serves ``cookbook/tiny-chat-tools`` (byte tokens + Qwen3's ChatML and tool
  tokens) with the ``qwen3_instruct`` renderer, lr 2e-2 (at 5e-2 the policy drifts to non-canonical calls,
  ``}}</tool_call>`` without the newline, which no longer merge into one datum), ``max_tokens`` 80 per turn,
  and a task sized for the toy: **one problem** (``n_problems=1``) of ``x + y`` with ``x, y ≤ 4`` (a one-digit
  answer). Why so small: the toy model's context is a decayed sum (a token ``k`` positions back weighs
  ``2^-(k+1)``), and the question and the tool result sit 5 or more tokens behind the same
  ``<|im_end|>\n<|im_start|>assistant\n``; the toy can read neither, and barely tells the first turn from
  the turn after a tool result (``?`` or ``</tool_response>`` 5 tokens back, weight ``2^-6``). What RL learns there, from the reward alone (the warm-up's worked examples are other
  problems), is the call format, how often to call before answering (only a call followed by an answer earns
  the full reward), and the answer to its problem: ``env/all/correct`` and the reward rise within 12 steps
  (``tests/loops/test_tool_use_rl.py`` asserts the margins). With ``n_problems=0`` every group draws a new
  problem, and the toy can do no better than one fixed answer distribution.
* On Tinker: ``Qwen/Qwen3-4B-Instruct-2507`` with ``qwen3_instruct``, lr 4e-5, ``max_tokens`` 256, no warm-up,
  a new problem per group (``n_problems=0``), ``x op y`` with ``x, y ≤ 9`` and ``+ - *``.

Resume as in :mod:`cookbook.recipes.math_rl`: a finished warm-up is skipped, RL continues from its last
checkpoint.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any

import chz

from cookbook.errors import ConfigurationError
from cookbook.recipes.common import (
    Progress,
    main_guard,
    make_renderer,
    print_summary,
    resolve_model_names,
    run_recipe,
    sft_phase,
    with_models,
)
from cookbook.rl.train import RLConfig, validate_rl_config


@chz.chz
class Config(RLConfig):
    log_path: str = chz.field(default="runs/tool_use_rl", doc="run directory")
    warmup_sft_steps: int | None = chz.field(default=None, doc="SFT warm-up steps (None: 48 on the mock, 0 on Tinker)")
    warmup_learning_rate: float = chz.field(default=0.1, doc="learning rate of the warm-up")
    learning_rate: float | None = chz.field(default=None, doc="Adam learning rate (None: 2e-2 on the mock, 4e-5 on Tinker)")  # type: ignore[assignment]
    batch_size: int = chz.field(default=8, doc="groups (problems) per step")
    group_size: int = chz.field(default=4, doc="rollouts per problem")
    n_batches: int = chz.field(default=12, doc="training steps (dataset batches)")
    max_operand: int | None = chz.field(default=None, doc="x, y in [0, max_operand] (None: 4 on the mock, 9 on Tinker)")  # type: ignore[assignment]
    ops: str | None = chz.field(default=None, doc="operators drawn from, a subset of '+-*' (None: '+' on the mock, '+-*' on Tinker)")
    n_problems: int | None = chz.field(default=None, doc="distinct problems trained on (0: a new draw per group; "
                                       "None: 1 on the mock, 0 on Tinker)")
    tool_coef: float = chz.field(default=1.0, doc="reward weight of using the calculator: reward = correct + "
                                 "0.1·(well_formed - 1) + tool_coef·(used_tool - 1)")
    max_turns: int = chz.field(default=3, doc="sampled turns per episode (tool calls + the answer)")
    max_tokens: int | None = chz.field(default=None, doc="max sampled tokens per turn (None: 80 on the mock, 256 on Tinker)")  # type: ignore[assignment]
    lora_rank: int = chz.field(default=8, doc="LoRA rank")
    save_every: int = chz.field(default=4, doc="checkpoint every N steps (0: only the final one)")


ONLINE_MODEL = "Qwen/Qwen3-4B-Instruct-2507"
ONLINE_RENDERER = "qwen3_instruct"
KEYS = ("env/all/reward/total", "env/all/used_tool", "env/all/format", "env/all/correct")
MOCK = {"warmup_sft_steps": 48, "learning_rate": 2e-2, "max_tokens": 80, "n_problems": 1, "max_operand": 4, "ops": "+"}
ONLINE = {"warmup_sft_steps": 0, "learning_rate": 4e-5, "max_tokens": 256, "n_problems": 0, "max_operand": 9,
          "ops": "+-*"}


def run_warmup(cfg: Config, service: Any, renderer: Any, steps: int) -> str:
    """SFT on worked episodes in ``<log_path>/warmup``; returns its final state path (resumes / skips like any
    SL run)."""
    from cookbook.rl.tool_env import draw_problem, worked_example

    rng = random.Random(f"{cfg.seed}:warmup")
    ops = tuple(str(cfg.ops))
    convs = [worked_example(renderer, *draw_problem(rng, int(cfg.max_operand or 0), ops)) for _ in range(64)]
    return sft_phase(cfg, service, renderer, convs, subdir="warmup", steps=steps,
                     learning_rate=cfg.warmup_learning_rate, seed=cfg.seed, recipe="tool_use_rl",
                     what="SFT warm-up on worked tool-use episodes", max_length=None)


def _resolve(cfg: Config, kind: str) -> Config:
    from cookbook.mock.tiny_chat import TINY_CHAT_TOOLS

    # the mock's default model is the toy with tool tokens (cookbook/tiny-chat-tools), not cookbook/tiny-chat
    model, renderer = resolve_model_names(cfg.model_name, cfg.renderer_name, kind, ONLINE_MODEL, ONLINE_RENDERER,
                                          mock_default=TINY_CHAT_TOOLS)
    named = chz.replace(cfg, model_name=model, renderer_name=renderer)
    out: Config = with_models(named, kind, ONLINE_MODEL, ONLINE_RENDERER, **{k: (MOCK[k], ONLINE[k]) for k in MOCK})
    validate_rl_config(out)
    if out.max_turns < 1:
        raise ConfigurationError(f"max_turns={out.max_turns} must be >= 1")
    if not out.ops or set(out.ops) - set("+-*"):
        raise ConfigurationError(f"ops={out.ops!r} must be a non-empty subset of '+-*'")
    if int(out.max_operand or 0) < 0:
        raise ConfigurationError(f"max_operand={out.max_operand} must be >= 0")
    if int(out.n_problems or 0) < 0:
        raise ConfigurationError(f"n_problems={out.n_problems} must be >= 0 (0: a new problem per group)")
    from cookbook.rl.tool_env import conversation_prefix

    conversation_prefix(make_renderer(str(out.model_name), str(out.renderer_name)))  # no tool format: fail here
    return out


def _body(cfg: Config, service: Any, _: Any) -> dict[str, object]:
    from cookbook.rl.tool_env import CalculatorDataset
    from cookbook.rl.train import train_rl

    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    steps = int(cfg.warmup_sft_steps or 0)
    loop_cfg = cfg
    if steps > 0 and not cfg.load_checkpoint_path:
        loop_cfg = chz.replace(cfg, load_checkpoint_path=run_warmup(cfg, service, renderer, steps))
    dataset = CalculatorDataset(renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, int(cfg.max_operand or 0),
                                ops=tuple(str(cfg.ops)),
                                max_turns=cfg.max_turns, seed=cfg.seed, n_problems=int(cfg.n_problems or 0),
                                tool_coef=cfg.tool_coef)
    train_rl(loop_cfg, service.client, dataset, renderer, Progress(KEYS))
    return print_summary("tool_use_rl", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("tool_use_rl", Config, argv, _body, kind="rl", resolve=_resolve, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "tool_use_rl"))
