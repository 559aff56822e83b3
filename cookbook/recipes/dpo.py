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

import chz

from cookbook.recipes.common import Progress, bundled, parse_config, print_summary, tinker_service
from cookbook.wandb_log import from_config as wandb_from_config


@chz.chz
class Config:
    log_path: str = "runs/dpo"
    model_name: str | None = None  # default: cookbook/tiny-chat on the mock, meta-llama/Llama-3.2-1B on Tinker
    renderer_name: str | None = None  # default: the model's recommended renderer
    dataset: str | None = None  # a {"prompt", "chosen", "rejected"} JSONL file (or hub dataset); default: bundled
    learning_rate: float | None = None  # default: 2e-2 on the mock, 1e-5 on Tinker
    lr_schedule: str = "linear"
    num_epochs: int = 4
    batch_size: int = 8  # pairs per step
    max_length: int = 512
    lora_rank: int = 8
    dpo_beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge | robust
    label_smoothing: float = 0.0
    save_every: int = 4
    max_steps: int | None = None
    seed: int = 0
    base_url: str | None = None
    wandb_project: str | None = None  # set: mirror metrics to W&B (the 'wandb' extra)
    wandb_name: str | None = None


KEYS = ("dpo_loss", "accuracy", "margin", "chosen_reward", "rejected_reward")
ONLINE_MODEL = "meta-llama/Llama-3.2-1B"
MOCK_LR, ONLINE_LR = 2e-2, 1e-5


def main(cfg: Config) -> dict[str, object]:
    from cookbook.preference.train_dpo import ComparisonDataset, DPOConfig, load_comparisons, train_dpo
    from cookbook.recipes.common import resolve_model

    comparisons = load_comparisons(cfg.dataset or bundled("comparisons.jsonl"))
    with tinker_service(cfg.log_path, cfg.base_url) as service, wandb_from_config(cfg):
        model_name, renderer_name, renderer = resolve_model(cfg.model_name, cfg.renderer_name, service, ONLINE_MODEL)
        lr = cfg.learning_rate if cfg.learning_rate is not None else (MOCK_LR if service.kind == "mock" else ONLINE_LR)
        dpo_cfg = DPOConfig(
            log_path=cfg.log_path, model_name=model_name, renderer_name=renderer_name, learning_rate=lr,
            lr_schedule=cfg.lr_schedule, num_epochs=cfg.num_epochs, batch_size=cfg.batch_size,
            max_length=cfg.max_length, lora_rank=cfg.lora_rank, dpo_beta=cfg.dpo_beta, loss_type=cfg.loss_type,
            label_smoothing=cfg.label_smoothing, save_every=cfg.save_every, max_steps=cfg.max_steps, seed=cfg.seed,
        )
        train_dpo(dpo_cfg, service.client, ComparisonDataset(comparisons, cfg.batch_size), renderer, Progress(KEYS))
        return print_summary("dpo", cfg.log_path, service, KEYS)


def run(argv: Sequence[str]) -> dict[str, object]:
    return main(parse_config(Config, argv))


if __name__ == "__main__":
    run(sys.argv[1:])
