"""chat_sl: supervised chat fine-tuning on a conversation file or a Hugging Face dataset (cross-entropy, LoRA).

A thin variant of ``sl_basic`` on the same loop (:func:`cookbook.supervised.train.train`): the data is a local
JSON/JSONL file of ``{"messages": [...]}`` rows (read through ``datasets``) or, when online, a hub dataset name
(``dataset=HuggingFaceH4/no_robots split=train``); ``train_on_what`` picks the trained tokens
(``all_assistant_messages`` by default; ``last_assistant_message``, ``all_messages``, ...); the first
``test_size`` conversations are held out and their weighted mean NLL is logged as ``test/nll`` every
``eval_every`` steps and at the end.

* Offline: the embedded mock, ``cookbook/tiny-chat``, the bundled conversations, lr ``2e-2``.
* On Tinker: ``meta-llama/Llama-3.1-8B`` (its recommended renderer), lr ``2e-4``.

Resume: rerunning the same command continues from the last checkpoint (weights + optimizer; see
:mod:`cookbook.supervised.train`), and does nothing after the ``final`` checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import chz

from cookbook.errors import ConfigurationError
from cookbook.recipes.common import Progress, bundled, parse_config, print_summary, tinker_service
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/chat_sl"
    model_name: str | None = None  # default: cookbook/tiny-chat on the mock, meta-llama/Llama-3.1-8B on Tinker
    renderer_name: str | None = None  # default: the model's recommended renderer
    dataset: str | None = None  # JSON/JSONL file or hub dataset name; default: the bundled conversations
    split: str = "train"
    message_field: str = "messages"
    train_on_what: str = "all_assistant_messages"
    learning_rate: float | None = None  # default: 2e-2 on the mock, 2e-4 on Tinker
    lr_schedule: str = "linear"
    num_epochs: int = 3
    batch_size: int = 8
    max_length: int = 2048
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
ONLINE_MODEL = "meta-llama/Llama-3.1-8B"
MOCK_LR, ONLINE_LR = 2e-2, 2e-4


def main(cfg: Config) -> dict[str, object]:
    from cookbook.recipes.common import resolve_model
    from cookbook.renderers.base import TrainOnWhat
    from cookbook.supervised.data import ConversationDataset, conversation_to_datum, load_conversations
    from cookbook.supervised.train import SupervisedConfig, train

    try:
        train_on_what = TrainOnWhat(cfg.train_on_what)
    except ValueError:
        valid = ", ".join(t.value for t in TrainOnWhat)
        raise ConfigurationError(f"train_on_what={cfg.train_on_what!r} is not one of: {valid}") from None
    conversations = load_conversations(cfg.dataset or bundled("conversations.jsonl"), cfg.split, cfg.message_field)
    if cfg.test_size < 0 or cfg.test_size >= len(conversations):
        raise ConfigurationError(f"test_size={cfg.test_size} must be in [0, {len(conversations)}) for this dataset")
    test, train_convs = conversations[: cfg.test_size], conversations[cfg.test_size :]
    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        model_name, renderer_name, renderer = resolve_model(cfg.model_name, cfg.renderer_name, service, ONLINE_MODEL)
        lr = cfg.learning_rate if cfg.learning_rate is not None else (MOCK_LR if service.kind == "mock" else ONLINE_LR)
        test_data = [conversation_to_datum(c, renderer, cfg.max_length, train_on_what) for c in test]
        sl_cfg = SupervisedConfig(
            log_path=cfg.log_path, model_name=model_name, renderer_name=renderer_name, learning_rate=lr,
            lr_schedule=cfg.lr_schedule, num_epochs=cfg.num_epochs, batch_size=cfg.batch_size,
            max_length=cfg.max_length, lora_rank=cfg.lora_rank, train_on_what=train_on_what.value,
            save_every=cfg.save_every, eval_every=cfg.eval_every, max_steps=cfg.max_steps, seed=cfg.seed,
            extra={"recipe": "chat_sl", "dataset": cfg.dataset or "bundled:conversations.jsonl", "split": cfg.split},
        )
        train(sl_cfg, service.client, ConversationDataset(train_convs, cfg.batch_size), test_data, renderer, Progress(KEYS))
        return print_summary("chat_sl", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])
