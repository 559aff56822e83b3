"""The pipelined supervised training loop (cross-entropy through Tinker).

Loop semantics (pinned by ``specs/loops/supervised.yaml``):

* ``step = epoch * n_batches + batch``; ``total = min(num_epochs * n_batches, max_steps)``; the dataset is
  reshuffled with seed ``seed + epoch`` at the start of every epoch (epoch 0 included).
* Pipelining: step ``s+1`` is submitted (forward_backward + optim_step) before the results of step ``s`` are
  awaited, so the server always has work queued. Tinker executes one model's requests in order.
* The learning rate of step ``s`` is ``learning_rate * multiplier(schedule, s, total)``.
* Evaluation (``test/nll``) runs with ``forward`` before step ``s`` is submitted, so it sees the weights
  produced by steps ``0..s-1``.
* Evaluators (``evaluator_builders`` and the held-out ``test_data``, :class:`cookbook.supervised.evaluators.NLLEvaluator`)
  are training-client evaluators; their metrics join step ``s``'s metrics row (one row per step).
* Guards: a batch that trains on 0 tokens, or a NaN loss, stops the run with an error naming the rows.
* Run directory, lock, ``behavior_if_log_dir_exists``, config comparison, ``load_checkpoint_path`` and
  ``logs.log``: the shared skeleton, :mod:`cookbook.loop`.
* Checkpoints: before step ``N`` is submitted (``N % save_every == 0``, ``N > 0``) the pipeline is drained, the
  state (weights + optimizer) and sampler weights are saved as ``{N:06d}`` and the record says ``batch: N`` = *the next step to
  run*. On resume the loop loads that state with its optimizer and continues at step ``N``; metrics rows with
  ``step >= N`` are dropped first. (tinker-cookbook's pipelined loop records the batch it has just submitted
  and re-runs it; we record a point where nothing is in flight, so a resumed run equals an uninterrupted one.)
* The last checkpoint is ``final`` with ``batch: total`` and ``final: true``; a run whose log already has a
  final record does nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chz
import numpy as np

from cookbook.errors import ConfigurationError
from cookbook.loop import (
    RunConfig,
    adam_params,
    check_finite_loss,
    check_trained_tokens,
    logging_spec_of,
    opened,
)
from cookbook.runlog import RunLog
from cookbook.samples import log_sft_samples, sample_steps
from cookbook.schedules import compute_schedule_lr_multiplier
from cookbook.supervised.data import ConversationDataset, conversation_to_datum, where_of
from cookbook.supervised.evaluators import NLLEvaluator
from cookbook.supervised.nll import weighted_mean_nll

TrainingEvaluator = Callable[[Any], dict[str, Any]]  # training_client -> metrics


@chz.chz
class SupervisedConfig(RunConfig):
    """The supervised loop's configuration (tinker-cookbook ``supervised.train.Config`` key names)."""

    log_path: str = chz.field(default="runs/sl", doc="run directory (metrics, checkpoints, config, report)")
    learning_rate: float = chz.field(default=1e-4, doc="Adam learning rate at step 0")
    lr_schedule: str = chz.field(default="linear", doc="linear, cosine or constant")
    num_epochs: int = chz.field(default=1, doc="passes over the training set")
    batch_size: int = chz.field(default=8, doc="conversations per step")
    max_length: int | None = chz.field(default=1024, doc="truncate examples to this many tokens")
    train_on_what: str = chz.field(default="all_assistant_messages", doc="which tokens are trained")
    eval_every: int = chz.field(default=10, doc="run the evaluators every N steps (0: only at the end)")
    seed: int = chz.field(default=0, doc="seed of the LoRA init and of the epoch shuffles")
    evaluator_builders: list[Any] = chz.field(default_factory=list, doc="training-client evaluator builders")


def validate_supervised_config(cfg: SupervisedConfig) -> None:
    from cookbook.loop import check_choice
    from cookbook.renderers.base import TrainOnWhat
    from cookbook.schedules import SCHEDULES

    check_choice("train_on_what", cfg.train_on_what, [t.value for t in TrainOnWhat])
    check_choice("lr_schedule", cfg.lr_schedule, SCHEDULES)
    for key, value in (("batch_size", cfg.batch_size), ("num_epochs", cfg.num_epochs), ("lora_rank", cfg.lora_rank)):
        if value < 1:
            raise ConfigurationError(f"{key}={value} must be >= 1")
    if cfg.max_length is not None and cfg.max_length < 2:
        raise ConfigurationError(f"max_length={cfg.max_length} must be >= 2")
    if not cfg.learning_rate > 0:
        raise ConfigurationError(f"learning_rate={cfg.learning_rate} must be > 0")


@dataclass
class _InFlight:
    step: int
    rows: list[str]
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
    evaluators: Sequence[TrainingEvaluator] = (),
) -> RunLog:
    """Run (or resume) supervised training; returns the run log."""
    from cookbook.renderers import get_renderer

    validate_supervised_config(config)
    if len(train_set) == 0:
        raise ConfigurationError(
            f"the training set has fewer conversations than one batch ({config.batch_size}); lower batch_size"
        )
    if not config.model_name or not config.renderer_name:
        raise ConfigurationError("the supervised loop needs model_name and renderer_name")
    n_batches = len(train_set)
    total = n_batches * config.num_epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    if renderer is None:
        renderer = get_renderer(config.renderer_name, config.model_name)
    evals: list[TrainingEvaluator] = [*evaluators, *(b() for b in config.evaluator_builders)]
    if test_data:
        evals.insert(0, NLLEvaluator(test_data))

    with opened(config.log_path, "supervised", config, config.behavior_if_log_dir_exists,
                logging_spec_of(config)) as run:
        start = run.begin(total)
        if run.done:
            return run.log
        tc = run.training_client(service_client, config)

        def evaluate(step: int) -> None:
            for ev in evals:
                run.add(step, ev(tc))

        def finish(job: _InFlight) -> None:
            fb = job.fb.result()
            optim = job.optim.result()
            lps, ws = _logprobs_weights(job.data, fb)
            n_loss = int(sum(int((w > 0).sum()) for w in ws))
            check_trained_tokens(job.step, n_loss, lambda: ", ".join(job.rows))
            nll = weighted_mean_nll(lps, ws) if all(np.isfinite(lp).all() for lp in lps) else math.nan
            check_finite_loss(job.step, "train_mean_nll", nll, lambda: ", ".join(job.rows))
            metrics: dict[str, Any] = {
                "train_mean_nll": nll,
                "num_sequences": len(job.data),
                "num_tokens": int(sum(d.model_input.length for d in job.data)),
                "num_loss_tokens": n_loss,
                "learning_rate": job.lr,
                "epoch": job.epoch,
                "time/step": time.perf_counter() - job.t0,
            }
            metrics.update({f"optim/{k}": v for k, v in (getattr(optim, "metrics", None) or {}).items()})
            metrics.update({f"train/{k}": v for k, v in fb.metrics.items()})
            row = run.log_step(job.step, metrics)
            if job.step in sample_steps(total):
                log_sft_samples(run.log.dir, job.step, renderer, job.data)
            if progress is not None:
                progress(job.step, total, row)

        def save(step: int, name: str, final: bool = False) -> None:
            run.save(tc, name, step, epoch=config.num_epochs if final else step // n_batches, final=final)

        pending: list[_InFlight] = []
        epoch_seeded = -1
        for step in range(start, total):
            run.step = step
            epoch, b = divmod(step, n_batches)
            if step > start and config.save_every > 0 and step % config.save_every == 0:
                while pending:
                    finish(pending.pop(0))
                save(step, f"{step:06d}")
            if evals and config.eval_every > 0 and step % config.eval_every == 0:
                while pending:
                    finish(pending.pop(0))
                evaluate(step)
            if epoch != epoch_seeded:
                train_set.set_epoch(config.seed + epoch)
                epoch_seeded = epoch
            batch = train_set.get_batch(b)
            rows = [where_of(c, f"batch {b} item {k}") for k, c in enumerate(batch)]
            data = [conversation_to_datum(c, renderer, config.max_length, config.train_on_what, "mean") for c in batch]
            lr = config.learning_rate * compute_schedule_lr_multiplier(config.lr_schedule, step, total)
            t0 = time.perf_counter()
            fb = tc.forward_backward(data, "cross_entropy")
            optim = tc.optim_step(adam_params(config, lr))
            pending.append(_InFlight(step, rows, data, fb, optim, lr, epoch, t0))
            while len(pending) > 1:  # one step ahead
                finish(pending.pop(0))
        while pending:
            finish(pending.pop(0))
        run.step = total
        if evals:
            evaluate(total)
        run.flush()
        save(total, "final", final=True)
        return run.log


def final_metrics(log_path: str | Path) -> dict[str, Any]:
    """Last logged value of every metric (a run's summary)."""
    out: dict[str, Any] = {}
    for row in RunLog(log_path).metrics():
        out.update(row)
    return out
