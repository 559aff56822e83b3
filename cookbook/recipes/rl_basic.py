"""rl_basic: RL on synthetic addition problems (``What is x + y?``), group-centred advantages.

Reward (ProblemEnv): 1 for a correct answer that ends with the stop sequence, 0.9 correct but unterminated,
0 wrong, -0.1 wrong and unterminated. Offline by default (embedded mock Tinker). The config is the RL loop's
(:class:`cookbook.rl.train.RLConfig`, tinker-cookbook key names: ``async_config.*``,
``stream_minibatch_config.*``, ``eval_every``, ``load_checkpoint_path``, ``compute_post_kl``, ``wandb_*``) plus
the problem set's shape; every ``eval_every`` steps a sampling-client evaluator measures accuracy on
``eval_size`` held-out problems (``test/correct``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import chz

from cookbook.recipes.common import main_guard, make_renderer, print_summary, run_recipe, with_models
from cookbook.rl.train import RLConfig, validate_rl_config


@chz.chz
class Config(RLConfig):
    log_path: str = chz.field(default="runs/rl_basic", doc="run directory")
    learning_rate: float = chz.field(default=5e-2, doc="Adam learning rate")
    batch_size: int = chz.field(default=16, doc="groups (problems) per step")
    group_size: int = chz.field(default=8, doc="rollouts per problem")
    n_batches: int = chz.field(default=30, doc="training steps (dataset batches)")
    max_operand: int = chz.field(default=4, doc="x, y in [0, max_operand]")
    max_tokens: int = chz.field(default=6, doc="max sampled tokens per turn")
    save_every: int = chz.field(default=4, doc="checkpoint every N steps (0: only the final one)")
    eval_every: int = chz.field(default=10, doc="evaluate every N steps (0: only at the end)")
    eval_size: int = chz.field(default=16, doc="held-out problems of the accuracy evaluator (0: none)")


ONLINE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEYS = ("env/all/reward/total", "env/all/correct", "env/all/format", "optim/kl_sample_train_v1")


def _resolve(cfg: Config, kind: str) -> Config:
    out: Config = with_models(cfg, kind, ONLINE_MODEL)
    validate_rl_config(out)
    return out


def _body(cfg: Config, service: Any, _: Any) -> dict[str, object]:
    from cookbook.recipes.common import Progress
    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.evaluators import ProblemEvaluator
    from cookbook.rl.train import train_rl

    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    dataset = ArithmeticDataset(renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.max_operand, cfg.seed)
    evaluators = []
    if cfg.eval_size > 0:
        held_out = ArithmeticDataset(renderer, cfg.eval_size, 1, 1, cfg.max_operand, cfg.seed + 10_000).get_batch(0)
        evaluators.append(ProblemEvaluator(held_out, cfg.max_tokens, "test", cfg.temperature, cfg.seed))
    train_rl(cfg, service.client, dataset, renderer, Progress(KEYS), evaluators)
    return print_summary("rl_basic", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("rl_basic", Config, argv, _body, kind="rl", resolve=_resolve, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "rl_basic"))
