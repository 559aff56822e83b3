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
from typing import Any

import chz

from cookbook.errors import ConfigurationError
from cookbook.recipes.common import (
    Progress,
    bundled,
    main_guard,
    make_renderer,
    print_summary,
    run_recipe,
    with_models,
)
from cookbook.supervised.train import SupervisedConfig, validate_supervised_config


@chz.chz
class Config(SupervisedConfig):
    log_path: str = chz.field(default="runs/chat_sl", doc="run directory")
    dataset: str | None = chz.field(default=None, doc="JSON/JSONL file or hub dataset (None: bundled conversations)")
    split: str = chz.field(default="train", doc="dataset split")
    message_field: str = chz.field(default="messages", doc="the field holding the message list")
    learning_rate: float | None = chz.field(default=None, doc="Adam learning rate (None: 2e-2 on the mock, 2e-4 on Tinker)")  # type: ignore[assignment]
    num_epochs: int = chz.field(default=3, doc="passes over the training set")
    max_length: int | None = chz.field(default=2048, doc="truncate examples to this many tokens")
    save_every: int = chz.field(default=5, doc="checkpoint every N steps (0: only the final one)")
    eval_every: int = chz.field(default=5, doc="run the evaluators every N steps (0: only at the end)")
    test_size: int = chz.field(default=8, doc="conversations held out for test/nll")


KEYS = ("train_mean_nll", "test/nll", "learning_rate")
ONLINE_MODEL = "meta-llama/Llama-3.1-8B"
MOCK_LR, ONLINE_LR = 2e-2, 2e-4


def _resolve(cfg: Config, kind: str) -> Config:
    out: Config = with_models(cfg, kind, ONLINE_MODEL, learning_rate=(MOCK_LR, ONLINE_LR))
    validate_supervised_config(out)
    return out


def _prepare(cfg: Config) -> Any:
    from cookbook.supervised.data import load_conversations

    conversations = load_conversations(cfg.dataset or bundled("conversations.jsonl"), cfg.split, cfg.message_field)
    if cfg.test_size < 0 or cfg.test_size >= len(conversations):
        raise ConfigurationError(f"test_size={cfg.test_size} must be in [0, {len(conversations)}) for this dataset")
    return conversations[: cfg.test_size], conversations[cfg.test_size :]


def _body(cfg: Config, service: Any, data: Any) -> dict[str, object]:
    from cookbook.supervised.data import ConversationDataset, conversation_to_datum
    from cookbook.supervised.train import train

    test, train_convs = data
    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    test_data = [conversation_to_datum(c, renderer, cfg.max_length, cfg.train_on_what) for c in test]
    train(cfg, service.client, ConversationDataset(train_convs, cfg.batch_size), test_data, renderer, Progress(KEYS))
    return print_summary("chat_sl", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("chat_sl", Config, argv, _body, kind="supervised", resolve=_resolve, prepare=_prepare,
                      doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "chat_sl"))
