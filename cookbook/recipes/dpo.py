"""dpo: Direct Preference Optimisation on a comparison file (prompt, chosen, rejected), LoRA.

The loop is :func:`cookbook.preference.train_dpo.train_dpo` (the custom DPO loss computed client-side with
:mod:`cookbook.losses`, sent as a cross-entropy with weights ``-dL/dlogprob``; no torch needed).

* Offline (no ``TINKER_API_KEY``): the embedded mock and the toy ``cookbook/tiny-chat`` model, learning rate
  ``2e-2`` (a tiny model with a zero-initialised LoRA needs large steps).
* On Tinker: ``meta-llama/Llama-3.2-1B`` (``model_name=`` to change), learning rate ``1e-5``.

Spec: step 0 has ``dpo_loss = ln 2`` (policy == reference); the loss falls and ``accuracy`` rises.
Resume: rerunning the same command continues from the last checkpoint (weights + optimizer) against the
same reference snapshot, recorded as ``reference`` in ``checkpoints.jsonl``; after ``final`` it does nothing.
``python -m cookbook.recipes.dpo log_path=runs/dpo dpo_beta=0.1``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import chz

from cookbook.preference.train_dpo import DPOConfig, validate_dpo_config
from cookbook.recipes.common import (
    Progress,
    bundled,
    main_guard,
    make_renderer,
    print_summary,
    run_recipe,
    with_models,
)


@chz.chz
class Config(DPOConfig):
    log_path: str = chz.field(default="runs/dpo", doc="run directory")
    dataset: str | None = chz.field(default=None, doc='{"prompt", "chosen", "rejected"} JSONL (None: bundled)')
    test_size: int = chz.field(default=0, doc="comparisons held out; their chosen completions' NLL is test/nll")
    learning_rate: float | None = chz.field(default=None, doc="Adam learning rate (None: 2e-2 on the mock, 1e-5 on Tinker)")  # type: ignore[assignment]
    num_epochs: int = chz.field(default=4, doc="passes over the comparisons")
    max_length: int | None = chz.field(default=512, doc="truncate examples to this many tokens")
    save_every: int = chz.field(default=4, doc="checkpoint every N steps (0: only the final one)")
    eval_every: int = chz.field(default=4, doc="evaluate every N steps (0: only at the end)")


KEYS = ("dpo_loss", "accuracy", "margin", "chosen_reward", "rejected_reward")
ONLINE_MODEL = "meta-llama/Llama-3.2-1B"
MOCK_LR, ONLINE_LR = 2e-2, 1e-5


def _resolve(cfg: Config, kind: str) -> Config:
    out: Config = with_models(cfg, kind, ONLINE_MODEL, learning_rate=(MOCK_LR, ONLINE_LR))
    validate_dpo_config(out)
    return out


def _prepare(cfg: Config) -> Any:
    from cookbook.errors import ConfigurationError
    from cookbook.preference.train_dpo import load_comparisons

    comparisons = load_comparisons(cfg.dataset or bundled("comparisons.jsonl"))
    if not 0 <= cfg.test_size < len(comparisons):
        raise ConfigurationError(f"test_size={cfg.test_size} must be in [0, {len(comparisons)})")
    return comparisons[: cfg.test_size], comparisons[cfg.test_size :]


def _body(cfg: Config, service: Any, data: Any) -> dict[str, object]:
    from cookbook.preference.train_dpo import ComparisonDataset, train_dpo
    from cookbook.supervised.data import conversation_to_datum
    from cookbook.supervised.evaluators import NLLEvaluator

    test, comparisons = data
    renderer = make_renderer(str(cfg.model_name), str(cfg.renderer_name))
    evaluators = []
    if test:
        held = [conversation_to_datum([*c.prompt, *c.chosen], renderer, cfg.max_length, "last_assistant_message")
                for c in test]
        evaluators.append(NLLEvaluator(held, "test"))
    train_dpo(cfg, service.client, ComparisonDataset(comparisons, cfg.batch_size), renderer, Progress(KEYS),
              evaluators)
    return print_summary("dpo", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return run_recipe("dpo", Config, argv, _body, kind="dpo", resolve=_resolve, prepare=_prepare, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main_guard(run, sys.argv[1:], "dpo"))
