"""sl_basic: supervised fine-tuning on a small conversation file (cross-entropy, LoRA).

Offline by default (embedded mock Tinker). ``python -m cookbook.recipes.sl_basic log_path=runs/sl max_steps=20``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import chz

from cookbook.recipes.common import Progress, bundled, parse_config, print_summary, tinker_service
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/sl_basic"
    model_name: str | None = None  # default: cookbook/tiny-chat on the mock, meta-llama/Llama-3.2-1B on Tinker
    renderer_name: str | None = None  # default: the model's recommended renderer
    dataset: str | None = None  # a {"messages": [...]} JSONL file; default: the bundled conversations
    learning_rate: float = 2e-2
    lr_schedule: str = "linear"
    num_epochs: int = 3
    batch_size: int = 8
    max_length: int = 256
    lora_rank: int = 8
    save_every: int = 5
    eval_every: int = 5
    test_size: int = 8
    max_steps: int | None = None
    seed: int = 0
    base_url: str | None = None
    wandb_project: str | None = None  # set: mirror metrics to W&B (the 'wandb' extra)
    wandb_name: str | None = None


KEYS = ("train_mean_nll", "test/nll", "learning_rate")
ONLINE_MODEL = "meta-llama/Llama-3.2-1B"


def main(cfg: Config) -> dict[str, object]:
    from cookbook.recipes.common import resolve_model
    from cookbook.supervised.data import ConversationDataset, conversation_to_datum, load_conversations
    from cookbook.supervised.train import SupervisedConfig, train

    conversations = load_conversations(cfg.dataset or bundled("conversations.jsonl"))
    test, train_convs = conversations[: cfg.test_size], conversations[cfg.test_size :]
    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        model_name, renderer_name, renderer = resolve_model(cfg.model_name, cfg.renderer_name, service, ONLINE_MODEL)
        test_data = [conversation_to_datum(c, renderer, cfg.max_length) for c in test]
        sl_cfg = SupervisedConfig(
            log_path=cfg.log_path,
            model_name=model_name,
            renderer_name=renderer_name,
            learning_rate=cfg.learning_rate,
            lr_schedule=cfg.lr_schedule,
            num_epochs=cfg.num_epochs,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            lora_rank=cfg.lora_rank,
            save_every=cfg.save_every,
            eval_every=cfg.eval_every,
            max_steps=cfg.max_steps,
            seed=cfg.seed,
        )
        train(sl_cfg, service.client, ConversationDataset(train_convs, cfg.batch_size), test_data, renderer, Progress(KEYS))
        return print_summary("sl_basic", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])
