"""DPO through Tinker without torch on the client: the custom loss computed with :mod:`cookbook.losses`.

Data. A :class:`Comparison` is a prompt conversation plus a chosen and a rejected assistant completion. Each
becomes two cross-entropy datums, ``prompt + chosen`` and ``prompt + rejected``, rendered with
``LAST_ASSISTANT_MESSAGE`` (weight 1 on the completion tokens) and ``reduction="none"`` (raw 0/1 weights),
placed ``[chosen, rejected]`` at even/odd positions of the batch (tinker-cookbook ``DPODatasetBuilderFromComparisons``).

Reference. A snapshot of the weights at the start of training, taken once, never updated:
``save_weights_for_sampler("reference")`` then ``create_sampling_client(model_path=...)`` (the same snapshot
``save_weights_and_get_sampling_client`` gives, but under a persistent, recorded path). Reference logprobs are
``compute_logprobs(model_input + [last target])[1:]`` (aligned with ``target_tokens``), computed once per
datum and cached since the reference never changes. **Deviation from tinker-cookbook**, on purpose: there the
reference is re-taken at startup, so a resumed run compares against the *resumed* weights; here the record
``{"name": "reference", "sampler_path": ...}`` in ``checkpoints.jsonl`` is reused on resume, so a resumed run
optimises the same objective as an uninterrupted one.

One step (what the SDK's ``forward_backward_custom`` does, minus torch):

1. ``forward(data, "cross_entropy")`` with the datums' ``target_tokens`` and ``weights`` (forward only): the
   policy's per-token logprobs ``lp``.
2. :func:`cookbook.losses.dpo_loss` on ``lp``, the reference logprobs and the 0/1 weights gives the loss
   ``L = mean_pairs ℓ(β·(Δc − Δr))``, its metrics and ``dL/dlp`` per token.
3. ``forward_backward(data', "cross_entropy")`` where ``data'`` has the same inputs and targets and
   ``weights = −dL/dlp`` (negative weights allowed): Tinker's CE is ``−Σ w·lp``, whose gradient w.r.t. the
   parameters is exactly ``Σ dL/dlp · dlp/dθ``. The server's CE value is logged as ``train/surrogate_loss:sum``.
4. ``optim_step(Adam(lr·schedule(step), adam_beta1, adam_beta2, adam_eps))``.

Spec: at step 0 (policy == reference) every ``Δ = 0`` so ``dpo_loss = ln 2`` for the sigmoid loss.

Loop, checkpoints and resume (same as :mod:`cookbook.supervised.train`): ``step = epoch·n_batches + batch``,
the pairs are reshuffled with seed ``seed + epoch`` each epoch; before step ``N > 0`` with
``N % save_every == 0`` the state (weights + optimizer) is saved as ``{N:06d}`` with ``batch: N`` (the next
step to run); the last checkpoint is ``final`` (``batch: total``). A rerun resumes at the last recorded
``batch`` (metrics rows ``>= batch`` dropped) with weights and optimizer, and does nothing after ``final``.
The run directory, lock, config comparison, ``load_checkpoint_path``, evaluators every ``eval_every`` steps
(training-client evaluators, e.g. :class:`cookbook.supervised.evaluators.NLLEvaluator` on held-out chosen
completions) and logging are the shared skeleton of :mod:`cookbook.loop`.
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

from cookbook.errors import ConfigurationError, DataError
from cookbook.loop import (
    RunConfig,
    adam_params,
    check_choice,
    check_finite_loss,
    check_trained_tokens,
    logging_spec_of,
    opened,
    resolve,
    rows_of,
)
from cookbook.losses import dpo_loss
from cookbook.renderers.base import Message, RendererProtocol, TrainOnWhat
from cookbook.rl.data import reference_logprobs
from cookbook.runlog import RunLog
from cookbook.samples import log_dpo_samples, sample_steps
from cookbook.schedules import compute_schedule_lr_multiplier
from cookbook.supervised.data import conversation_to_datum, load_rows, message_from_json

REFERENCE = "reference"


# ----------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Comparison:
    """A prompt conversation and two assistant completions, the first preferred."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]


def _messages(value: Any, where: str, default_role: str) -> list[Message]:
    """A string (one message of ``default_role``), one message object, or a list of message objects."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]  # type: ignore[list-item]
    if isinstance(value, dict):
        return [message_from_json(value, where)]
    if isinstance(value, list) and value:
        return [message_from_json(m, f"{where}[{j}]") for j, m in enumerate(value)]
    raise DataError(f"{where}: expected a string, a message object or a non-empty list of messages, got {value!r:.200}")


def comparison_from_row(row: Any, where: str) -> Comparison:
    """``{"prompt", "chosen", "rejected"}``; the prompt is a user string or a message list, each completion
    an assistant string or message list."""
    if not isinstance(row, dict) or not all(k in row for k in ("prompt", "chosen", "rejected")):
        raise DataError(f"{where}: a comparison needs 'prompt', 'chosen' and 'rejected'")
    return Comparison(
        prompt=_messages(row["prompt"], f"{where} prompt", "user"),
        chosen=_messages(row["chosen"], f"{where} chosen", "assistant"),
        rejected=_messages(row["rejected"], f"{where} rejected", "assistant"),
    )


def load_comparisons(source: str | Path, split: str = "train") -> list[Comparison]:
    """Comparisons from a local JSONL/JSON file or a hub dataset (when online); errors name ``file:line``."""
    out = [comparison_from_row(row, where) for where, row in load_rows(source, split)]
    if not out:
        raise DataError(f"{source}: no comparisons")
    return out


def comparison_to_datums(
    comparison: Comparison, renderer: RendererProtocol, max_length: int | None = None
) -> tuple[Any, Any]:
    """``(chosen, rejected)`` cross-entropy datums: completion tokens weighted 1, raw weights."""
    last = TrainOnWhat.LAST_ASSISTANT_MESSAGE
    chosen = conversation_to_datum([*comparison.prompt, *comparison.chosen], renderer, max_length, last, "none")
    rejected = conversation_to_datum([*comparison.prompt, *comparison.rejected], renderer, max_length, last, "none")
    return chosen, rejected


@dataclass
class ComparisonDataset:
    """Batches of comparisons with a per-epoch shuffle (``set_epoch(seed)``); the last partial batch is dropped."""

    comparisons: list[Comparison]
    batch_size: int  # pairs per batch

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigurationError(f"batch_size must be positive, got {self.batch_size}")
        self._order = list(range(len(self.comparisons)))

    def set_epoch(self, seed: int) -> None:
        self._order = [int(i) for i in np.random.default_rng(seed).permutation(len(self.comparisons))]

    def __len__(self) -> int:
        return len(self.comparisons) // self.batch_size

    def get_batch(self, index: int) -> list[Comparison]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.comparisons[i] for i in idx]


# ----------------------------------------------------------------------------------------------- one step


def _floats(td: Any) -> np.ndarray:
    return np.asarray(td.tolist(), dtype=np.float64)


def with_weights(datum: Any, weights: np.ndarray) -> Any:
    """The datum with only ``target_tokens`` and the given float32 ``weights`` (what a CE request carries)."""
    import tinker

    n = len(weights)
    return tinker.Datum(
        model_input=datum.model_input,
        loss_fn_inputs={
            "target_tokens": datum.loss_fn_inputs["target_tokens"],
            "weights": tinker.TensorData(data=[float(x) for x in weights.astype(np.float32)], dtype="float32", shape=[n]),
        },
    )


def dpo_forward_backward(
    training_client: Any,
    data: Sequence[Any],
    ref_logprobs: Sequence[np.ndarray],
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Any, dict[str, float]]:
    """Steps 1-3 of the module docstring for ``data = [c0, r0, c1, r1, ...]``; returns the backward future
    (submitted, not awaited) and the DPO metrics of the policy *before* this step's update."""
    if len(data) % 2 or not data:
        raise DataError(f"DPO needs [chosen, rejected] pairs of datums, got {len(data)} datums")
    weights = [_floats(d.loss_fn_inputs["weights"]) for d in data]
    fwd = training_client.forward([with_weights(d, w) for d, w in zip(data, weights)], "cross_entropy").result()
    policy = [_floats(o["logprobs"]) for o in fwd.loss_fn_outputs]
    out = dpo_loss(
        policy[0::2], policy[1::2], list(ref_logprobs[0::2]), list(ref_logprobs[1::2]), weights[0::2], weights[1::2],
        beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,  # type: ignore[arg-type]
    )
    grads: list[np.ndarray] = []
    for c, r in zip(out.chosen_grads, out.rejected_grads):
        grads += [c, r]
    backward = [with_weights(d, -g) for d, g in zip(data, grads)]
    return training_client.forward_backward(backward, "cross_entropy"), dict(out.metrics)


# ----------------------------------------------------------------------------------------------- the loop


@chz.chz
class DPOConfig(RunConfig):
    """The DPO loop's configuration (tinker-cookbook ``preference.train_dpo.Config`` key names)."""

    log_path: str = chz.field(default="runs/dpo", doc="run directory")
    learning_rate: float = chz.field(default=1e-5, doc="Adam learning rate at step 0")
    lr_schedule: str = chz.field(default="linear", doc="linear, cosine or constant")
    num_epochs: int = chz.field(default=1, doc="passes over the comparisons")
    batch_size: int = chz.field(default=8, doc="pairs per step")
    max_length: int | None = chz.field(default=1024, doc="truncate examples to this many tokens")
    dpo_beta: float = chz.field(default=0.1, doc="DPO beta")
    loss_type: str = chz.field(default="sigmoid", doc="DPO loss type")
    label_smoothing: float = chz.field(default=0.0, doc="DPO label smoothing")
    eval_every: int = chz.field(default=10, doc="run the evaluators every N steps (0: only at the end)")
    seed: int = chz.field(default=0, doc="seed of the LoRA init and of the epoch shuffles")
    evaluator_builders: list[Any] = chz.field(default_factory=list, doc="training-client evaluator builders")


def validate_dpo_config(cfg: DPOConfig) -> None:
    from cookbook.losses import DPO_LOSS_TYPES
    from cookbook.schedules import SCHEDULES

    check_choice("loss_type", cfg.loss_type, DPO_LOSS_TYPES)
    check_choice("lr_schedule", cfg.lr_schedule, SCHEDULES)
    for key, value in (("batch_size", cfg.batch_size), ("num_epochs", cfg.num_epochs), ("lora_rank", cfg.lora_rank)):
        if value < 1:
            raise ConfigurationError(f"{key}={value} must be >= 1")
    if not cfg.learning_rate > 0 or not cfg.dpo_beta > 0:
        raise ConfigurationError("learning_rate and dpo_beta must be > 0")


def train_dpo(
    config: DPOConfig,
    service_client: Any,
    dataset: ComparisonDataset,
    renderer: RendererProtocol,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    evaluators: Sequence[Callable[[Any], dict[str, Any]]] = (),
) -> RunLog:
    """Run (or resume) DPO; returns the run log. See the module docstring for the semantics."""
    validate_dpo_config(config)
    if len(dataset) == 0:
        raise ConfigurationError(
            f"the comparison set ({len(dataset.comparisons)} pairs) is smaller than one batch ({config.batch_size}); "
            "lower batch_size"
        )
    n_batches = len(dataset)
    total = n_batches * config.num_epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    evals = [*evaluators, *(b() for b in config.evaluator_builders)]
    with opened(config.log_path, "dpo", config, config.behavior_if_log_dir_exists, logging_spec_of(config)) as run:
        start = run.begin(total)
        if run.done:
            return run.log
        tc = run.training_client(service_client, config)
        ref_record = run.named_record(REFERENCE)
        if ref_record is None or not ref_record.get("sampler_path"):
            if start > 0:
                raise ConfigurationError(
                    f"{run.log.checkpoints_path}: resuming at step {start} but no '{REFERENCE}' record; the "
                    "reference model of this run is unknown. Start a fresh run in a new log_path."
                )
            ref_record = run.save(tc, REFERENCE, 0, kind="sampler")
        reference = resolve(service_client.create_sampling_client(model_path=ref_record["sampler_path"]))
        ref_cache: dict[tuple[int, ...], np.ndarray] = {}

        def ref_for(data: list[Any]) -> list[np.ndarray]:
            keys = [tuple(d.model_input.to_ints()) + tuple(d.loss_fn_inputs["target_tokens"].tolist()[-1:]) for d in data]
            missing = [(k, d) for k, d in zip(keys, data) if k not in ref_cache]
            if missing:
                for (k, _), lp in zip(missing, reference_logprobs(reference, [d for _, d in missing])):
                    ref_cache[k] = lp
            return [ref_cache[k] for k in keys]

        def save(step: int, name: str, final: bool = False) -> None:
            run.save(tc, name, step, epoch=config.num_epochs if final else step // n_batches, final=final)

        def evaluate(step: int) -> None:
            for ev in evals:
                run.add(step, ev(tc))

        epoch_seeded = -1
        for step in range(start, total):
            run.step = step
            epoch, b = divmod(step, n_batches)
            if step > start and config.save_every > 0 and step % config.save_every == 0:
                save(step, f"{step:06d}")
            if evals and config.eval_every > 0 and step % config.eval_every == 0:
                evaluate(step)
            if epoch != epoch_seeded:
                dataset.set_epoch(config.seed + epoch)
                epoch_seeded = epoch
            t0 = time.perf_counter()
            which = rows_of([f"the comparisons of batch {b}"])
            data: list[Any] = []
            for comparison in dataset.get_batch(b):
                data.extend(comparison_to_datums(comparison, renderer, config.max_length))
            check_trained_tokens(step, int(sum(sum(1 for w in d.loss_fn_inputs["weights"].tolist() if w > 0)
                                               for d in data)), which)
            lr = config.learning_rate * compute_schedule_lr_multiplier(config.lr_schedule, step, total)
            fb, metrics = dpo_forward_backward(
                tc, data, ref_for(data), beta=config.dpo_beta, loss_type=config.loss_type,
                label_smoothing=config.label_smoothing,
            )
            check_finite_loss(step, "dpo_loss", metrics.get("dpo_loss", 0.0), which)
            optim = tc.optim_step(adam_params(config, lr))
            fb_result = fb.result()
            optim_result = optim.result()
            metrics.update({
                "num_tokens": float(sum(d.model_input.length for d in data)),
                "learning_rate": lr,
                "epoch": epoch,
                "time/step": time.perf_counter() - t0,
            })
            surrogate = fb_result.metrics.get("loss:sum")
            if surrogate is not None and math.isfinite(float(surrogate)):
                metrics["train/surrogate_loss:sum"] = float(surrogate)
            metrics.update({f"optim/{k}": v for k, v in (getattr(optim_result, "metrics", None) or {}).items()})
            row = run.log_step(step, metrics)
            if step in sample_steps(total):
                log_dpo_samples(run.log.dir, step, renderer, data)
            if progress is not None:
                progress(step, total, row)
        run.step = total
        if evals:
            evaluate(total)
        run.flush()
        save(total, "final", final=True)
        return run.log
