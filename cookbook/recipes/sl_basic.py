"""sl_basic: supervised fine-tuning on a small conversation file (cross-entropy, LoRA).

Offline by default (embedded mock Tinker). ``python -m cookbook.recipes.sl_basic log_path=runs/sl max_steps=20``.
The config is the supervised loop's (:class:`cookbook.supervised.train.SupervisedConfig`, tinker-cookbook key
names) plus ``dataset`` and ``test_size``; the first ``test_size`` conversations are held out and evaluated by
a training-client NLL evaluator (``test/nll``) every ``eval_every`` steps.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import chz

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
    log_path: str = chz.field(default="runs/sl_basic", doc="run directory")
    dataset: str | None = chz.field(default=None, doc='{"messages": [...]} JSONL file (None: bundled conversations)')
    test_size: int = chz.field(default=8, doc="conversations held out for test/nll")
    learning_rate: float = chz.field(default=2e-2, doc="Adam learning rate at step 0")
    num_epochs: int = chz.field(default=3, doc="passes over the training set")
    max_length: int | None = chz.field(default=256, doc="truncate examples to this many tokens")
    save_every: int = chz.field(default=5, doc="checkpoint every N steps (0: only the final one)")
    eval_every: int = chz.field(default=5, doc="run the evaluators every N steps (0: only at the end)")


KEYS = ("train_mean_nll", "test/nll", "learning_rate")
ONLINE_MODEL = "meta-llama/Llama-3.2-1B"


def _resolve(cfg: Config, kind: str) -> Config:
    out: Config = with_models(cfg, kind, ONLINE_MODEL)
    validate_supervised_config(out)
    return out


def _prepare(cfg: Config) -> Any:
    from cookbook.errors import ConfigurationError
    from cookbook.supervised.data import load_conversations

    conversations = load_conversations(cfg.dataset or bundled("conversations.jsonl"))
    if not 0 <= cfg.test_size < len(conversations):
        raise ConfigurationError(f"test_size={cfg.test_size} must be in [0, {len(conversations)}) for this dataset")
    return conversations[: cfg.test_size], conversations[cfg.test_size :]


def _body(cfg: Config, service: Any, data: Any) -> dict[str, object]:
    from cookbook.supervised.data import ConversationDataset, conversation_to_datum
    from cookbook.supervised.train import train

    test, train_convs = data
    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    test_data = [conversation_to_datum(c, renderer, cfg.max_length, cfg.train_on_what) for c in test]
    train(cfg, service.client, ConversationDataset(train_convs, cfg.batch_size), test_data, renderer, Progress(KEYS))
    return print_summary("sl_basic", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("sl_basic", Config, argv, _body, kind="supervised", resolve=_resolve, prepare=_prepare,
                      doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "sl_basic"))
