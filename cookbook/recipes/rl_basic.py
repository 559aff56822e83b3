"""rl_basic: RL on synthetic addition problems (``What is x + y?``), group-centred advantages.

Reward (ProblemEnv): 1 for a correct answer that ends with the stop sequence, 0.9 correct but unterminated,
0 wrong, -0.1 wrong and unterminated. Offline by default (embedded mock Tinker).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import chz

from cookbook.recipes.common import Progress, parse_config, print_summary, tinker_service
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/rl_basic"
    model_name: str | None = None  # default: cookbook/tiny-chat on the mock, Llama-3.1-8B-Instruct on Tinker
    renderer_name: str | None = None
    learning_rate: float = 5e-2
    batch_size: int = 16  # groups per step
    group_size: int = 8
    n_batches: int = 30
    max_operand: int = 4
    max_tokens: int = 6
    temperature: float = 1.0
    lora_rank: int = 8
    loss_fn: str = "importance_sampling"
    mode: str = "sync"  # sync | stream | async
    max_steps_off_policy: int = 1
    num_minibatches: int = 2
    save_every: int = 4
    kl_penalty_coef: float = 0.0  # > 0: KL penalty against the base model (centred on the batch mean)
    seed: int = 0
    base_url: str | None = None
    wandb_project: str | None = None  # set: mirror metrics to W&B (the 'wandb' extra)
    wandb_name: str | None = None


ONLINE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEYS = ("env/all/reward/total", "env/all/correct", "env/all/format", "optim/kl_sample_train_v1")


def main(cfg: Config) -> dict[str, object]:
    from cookbook.recipes.common import resolve_model
    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.train import RLConfig, train_rl

    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        model_name, renderer_name, renderer = resolve_model(cfg.model_name, cfg.renderer_name, service, ONLINE_MODEL)
        dataset = ArithmeticDataset(renderer, cfg.batch_size, cfg.group_size, cfg.n_batches, cfg.max_operand, cfg.seed)
        rl_cfg = RLConfig(
            log_path=cfg.log_path, model_name=model_name, renderer_name=renderer_name,
            learning_rate=cfg.learning_rate, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
            lora_rank=cfg.lora_rank, loss_fn=cfg.loss_fn, save_every=cfg.save_every, seed=cfg.seed,
            mode=cfg.mode,  # type: ignore[arg-type]
            max_steps_off_policy=cfg.max_steps_off_policy, num_minibatches=cfg.num_minibatches,
            kl_penalty_coef=cfg.kl_penalty_coef,
        )
        train_rl(rl_cfg, service.client, dataset, renderer, Progress(KEYS))
        return print_summary("rl_basic", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])
