"""The pipelined supervised training loop (cross-entropy through Tinker).

Loop semantics (pinned by ``specs/loops/supervised.yaml``):

* ``step = epoch * n_batches + batch``; ``total = min(num_epochs * n_batches, max_steps)``; the dataset is
  reshuffled with seed ``seed + epoch`` at the start of every epoch (epoch 0 included).
* Pipelining: step ``s+1`` is submitted (forward_backward + optim_step) before the results of step ``s`` are
  awaited, so the server always has work queued. Tinker executes one model's requests in order.
* The learning rate of step ``s`` is ``learning_rate * multiplier(schedule, s, total)``.
* Evaluation (``test/nll``) runs with ``forward`` before step ``s`` is submitted, so it sees the weights
  produced by steps ``0..s-1``.
* Checkpoints: before step ``N`` is submitted (``N % save_every == 0``, ``N > 0``) the pipeline is drained, the
  state (weights + optimizer) is saved as ``{N:06d}`` and the record says ``batch: N`` = *the next step to
  run*. On resume the loop loads that state with its optimizer and continues at step ``N``; metrics rows with
  ``step >= N`` are dropped first. (tinker-cookbook's pipelined loop records the batch it has just submitted
  and re-runs it; we record a point where nothing is in flight, so a resumed run equals an uninterrupted one.)
* The last checkpoint is ``final`` with ``batch: total`` and ``final: true``; a run whose log already has a
  final record does nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cookbook.errors import ConfigurationError
from cookbook.runlog import RunLog
from cookbook.samples import log_sft_samples, sample_steps
from cookbook.schedules import compute_schedule_lr_multiplier
from cookbook.supervised.data import ConversationDataset, conversation_to_datum
from cookbook.supervised.nll import weighted_mean_nll


@dataclass
class SupervisedConfig:
    log_path: str
    model_name: str
    renderer_name: str
    learning_rate: float = 1e-4
    lr_schedule: str = "linear"
    num_epochs: int = 1
    batch_size: int = 8
    max_length: int | None = 1024
    lora_rank: int = 32
    train_on_what: str = "all_assistant_messages"
    save_every: int = 20
    eval_every: int = 10
    max_steps: int | None = None
    seed: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _InFlight:
    step: int
    data: list[Any]
    fb: Any
    optim: Any
    lr: float
    epoch: int
    t0: float


def _logprobs_weights(data: Sequence[Any], fb_result: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    lps = [np.asarray(out["logprobs"].tolist(), dtype=np.float64) for out in fb_result.loss_fn_outputs]
    ws = [np.asarray(d.loss_fn_inputs["weights"].tolist(), dtype=np.float64) for d in data]
    return lps, ws


def train(
    config: SupervisedConfig,
    service_client: Any,
    train_set: ConversationDataset,
    test_data: Sequence[Any] = (),
    renderer: Any = None,
    progress: Any = None,
) -> RunLog:
    """Run (or resume) supervised training; returns the run log."""
    import tinker

    from cookbook.renderers import get_renderer

    if len(train_set) == 0:
        raise ConfigurationError(
            f"the training set has fewer conversations than one batch ({config.batch_size}); lower batch_size"
        )
    log = RunLog(config.log_path)
    n_batches = len(train_set)
    total = n_batches * config.num_epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    if renderer is None:
        renderer = get_renderer(config.renderer_name, config.model_name)

    last = log.last_checkpoint()
    if last is not None and last.get("final"):
        return log
    if last is not None:
        start = int(last["batch"])
        log.truncate_metrics(start)
        tc = _resolve(service_client.create_training_client_from_state_with_optimizer(last["state_path"]))
    else:
        start = 0
        log.write_config({"kind": "supervised", **config.__dict__})
        tc = _resolve(
            service_client.create_lora_training_client(
                base_model=config.model_name,
                rank=config.lora_rank,
                seed=config.seed,
                user_metadata={"renderer_name": config.renderer_name},
            )
        )

    def adam(lr: float) -> Any:
        return tinker.AdamParams(
            learning_rate=lr, beta1=config.adam_beta1, beta2=config.adam_beta2, eps=config.adam_eps
        )

    def datums(batch: list[Any]) -> list[Any]:
        return [
            conversation_to_datum(c, renderer, config.max_length, config.train_on_what, "mean") for c in batch
        ]

    def finish(job: _InFlight) -> None:
        fb = job.fb.result()
        optim = job.optim.result()
        lps, ws = _logprobs_weights(job.data, fb)
        metrics: dict[str, Any] = {
            "train_mean_nll": weighted_mean_nll(lps, ws),
            "num_sequences": len(job.data),
            "num_tokens": int(sum(d.model_input.length for d in job.data)),
            "num_loss_tokens": int(sum(int((w > 0).sum()) for w in ws)),
            "learning_rate": job.lr,
            "epoch": job.epoch,
            "progress": (job.step + 1) / total,
            "time/step": time.perf_counter() - job.t0,
        }
        metrics.update({f"optim/{k}": v for k, v in (getattr(optim, "metrics", None) or {}).items()})
        metrics.update({f"train/{k}": v for k, v in fb.metrics.items()})
        log.log_metrics(job.step, metrics)
        if job.step in sample_steps(total):
            log_sft_samples(log.dir, job.step, renderer, job.data)
        if progress is not None:
            progress(job.step, total, metrics)

    def save(step: int, name: str, final: bool = False) -> None:
        path = tc.save_state(name).result().path
        epoch = config.num_epochs if final else step // n_batches
        log.record_checkpoint({"name": name, "batch": step, "epoch": epoch, "final": final or None,
                               "state_path": path})

    pending: list[_InFlight] = []
    epoch_seeded = -1
    for step in range(start, total):
        epoch, b = divmod(step, n_batches)
        if step > start and config.save_every > 0 and step % config.save_every == 0:
            while pending:
                finish(pending.pop(0))
            save(step, f"{step:06d}")
        if test_data and config.eval_every > 0 and step % config.eval_every == 0:
            while pending:
                finish(pending.pop(0))
            _evaluate(tc, test_data, log, step)
        if epoch != epoch_seeded:
            train_set.set_epoch(config.seed + epoch)
            epoch_seeded = epoch
        data = datums(train_set.get_batch(b))
        lr = config.learning_rate * compute_schedule_lr_multiplier(config.lr_schedule, step, total)
        t0 = time.perf_counter()
        fb = tc.forward_backward(data, "cross_entropy")
        optim = tc.optim_step(adam(lr))
        pending.append(_InFlight(step, data, fb, optim, lr, epoch, t0))
        while len(pending) > 1:  # one step ahead
            finish(pending.pop(0))
    while pending:
        finish(pending.pop(0))
    if test_data:
        _evaluate(tc, test_data, log, total)
    save(total, "final", final=True)
    return log


def _resolve(client_or_future: Any) -> Any:
    """SDK 0.38 returns client futures from create_*; older SDKs return the client itself."""
    result = getattr(client_or_future, "result", None)
    return result() if callable(result) else client_or_future


def _evaluate(tc: Any, test_data: Sequence[Any], log: RunLog, step: int) -> None:
    out = tc.forward(list(test_data), "cross_entropy").result()
    lps, ws = _logprobs_weights(test_data, out)
    nll = weighted_mean_nll(lps, ws)
    log.log_metrics(step, {"test/nll": nll if math.isfinite(nll) else None})


def final_metrics(log_path: str | Path) -> dict[str, Any]:
    """Last logged value of every metric (a run's summary)."""
    out: dict[str, Any] = {}
    for row in RunLog(log_path).metrics():
        out.update(row)
    return out
