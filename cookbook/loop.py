"""The loop skeleton shared by SFT, RL, DPO and on-policy distillation.

A loop opens its run directory with :func:`open_run` and then only writes its own step logic:

* **Run directory hygiene.** :func:`open_run` takes an exclusive lock on ``<log_path>/.lock`` (a second run
  into the same directory fails at once, naming the first one's PID), applies ``behavior_if_log_dir_exists``
  (tinker-cookbook's key and values: ``ask`` prompts on a terminal, ``raise``, ``resume``, ``delete``; with no
  terminal ``ask`` resumes, where tinker-cookbook would block on ``input()``), and compares the new config with
  ``config.json``: a changed key outside :data:`MUTABLE_KEYS` (model, rank, renderer, batch, data, seed...)
  refuses to resume and prints the difference; changed mutable keys are listed and ``config.json`` is
  rewritten. Opening the same directory twice in one process returns the same run (the recipe opens it before
  the service starts, the loop opens it again).
* **Start / resume.** The start step is the ``batch`` of the last ``checkpoints.jsonl`` record that has a
  ``state_path``; a run whose last record is ``final`` does nothing. :meth:`Run.training_client` resumes with
  weights + optimizer, or starts from ``load_checkpoint_path`` (weights only, fresh optimizer: the SFT -> RL
  hand-off), or creates a fresh LoRA.
* **Checkpoints.** :meth:`Run.save` writes state and/or sampler weights and records ``state_path`` /
  ``sampler_path`` in ``checkpoints.jsonl`` (tinker-cookbook's ``CheckpointRecord`` keys).
* **Logging.** One metrics row per step (:meth:`Run.add` accumulates evaluation metrics until
  :meth:`Run.log_step` writes the step's row with ``progress/done_frac``), fanned out to every
  :class:`cookbook.runlog.MetricsLogger` (``wandb_project`` / ``wandb_name`` go to the logger hook), and a
  ``logs.log`` text log of the ``cookbook`` loggers.
* **Guards.** A step whose data trains on 0 tokens, or whose loss is NaN, stops the run with a
  :class:`~cookbook.errors.TrainingError` naming the rows (:func:`check_finite_loss`, :func:`check_trained_tokens`).
* **Interruption.** :attr:`Run.step` is the step in progress; the recipe layer prints it on Ctrl-C with "rerun
  the same command to resume", and a rerun prints "resuming from step N".
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import chz

from cookbook.errors import ConfigurationError, TrainingError
from cookbook.runlog import RunLog, jsonable

LogdirBehavior = Literal["ask", "raise", "resume", "delete"]
LOGDIR_BEHAVIORS: tuple[str, ...] = ("ask", "raise", "resume", "delete")

#: Keys that may change between an interrupted run and its resume (everything else is part of what was trained).
MUTABLE_KEYS = frozenset({
    "log_path", "behavior_if_log_dir_exists", "base_url", "save_every", "eval_every", "wandb_project",
    "wandb_name", "max_steps", "samples_to_log", "max_concurrency", "compute_post_kl", "evaluator_builders",
    "num_groups_to_log", "learning_rate", "debug",
})
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints.jsonl")

log = logging.getLogger("cookbook.loop")


# ----------------------------------------------------------------------------------------------- shared config


@chz.chz
class RunConfig:
    """The keys every loop (SFT, RL, DPO, distillation) takes with the same meaning and default; each loop's config
    subclasses it and adds (or re-declares, to change a default or doc) its own. The names are tinker-cookbook's."""

    model_name: str | None = chz.field(default=None, doc="base model")
    renderer_name: str | None = chz.field(default=None, doc="renderer (None: the model's recommended one)")
    lora_rank: int = chz.field(default=32, doc="LoRA rank")
    save_every: int = chz.field(default=20, doc="checkpoint every N steps (0: only the final one)")
    max_steps: int | None = chz.field(default=None, doc="stop after this many steps")
    load_checkpoint_path: str | None = chz.field(default=None, doc="start a fresh run from these weights")
    wandb_project: str | None = chz.field(default=None, doc="W&B project (None: no W&B logging)")
    wandb_name: str | None = chz.field(default=None, doc="W&B run name")
    behavior_if_log_dir_exists: str = chz.field(default="ask", doc="ask, raise, resume or delete")
    base_url: str | None = chz.field(default=None, doc="Tinker (or mock) server URL")
    adam_beta1: float = chz.field(default=0.9, doc="Adam beta1")
    adam_beta2: float = chz.field(default=0.95, doc="Adam beta2")
    adam_eps: float = chz.field(default=1e-8, doc="Adam epsilon")


# ----------------------------------------------------------------------------------------------- small helpers


def resolve(client_or_future: Any) -> Any:
    """SDK 0.38 returns futures from ``create_*``; older SDKs return the client itself."""
    result = getattr(client_or_future, "result", None)
    return result() if callable(result) else client_or_future


def expand_path(path: str | os.PathLike[str]) -> str:
    """``~`` and ``$VARS`` expanded (``log_path=~/runs/x`` must not create a folder named ``~``)."""
    return os.path.expandvars(os.path.expanduser(str(path)))


def config_dict(cfg: Any) -> dict[str, Any]:
    """A chz config or dataclass as a JSON-able dict (nested configs become dicts)."""
    if isinstance(cfg, Mapping):
        return dict(jsonable(dict(cfg)))
    if hasattr(type(cfg), "__chz_fields__"):
        import chz

        return dict(jsonable(chz.asdict(cfg)))
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dict(jsonable(dataclasses.asdict(cfg)))
    raise TypeError(f"not a config: {type(cfg).__name__}")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every flattened key whose value differs."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def adam_params(cfg: Any, learning_rate: float) -> Any:
    """``tinker.AdamParams`` from the config's ``adam_beta1`` / ``adam_beta2`` / ``adam_eps`` (tinker-cookbook
    defaults 0.9 / 0.95 / 1e-8)."""
    import tinker

    return tinker.AdamParams(
        learning_rate=float(learning_rate),
        beta1=float(getattr(cfg, "adam_beta1", 0.9)),
        beta2=float(getattr(cfg, "adam_beta2", 0.95)),
        eps=float(getattr(cfg, "adam_eps", 1e-8)),
    )


def check_finite_loss(step: int, name: str, value: float, rows: Callable[[], str]) -> None:
    if not math.isfinite(float(value)):
        raise TrainingError(
            f"step {step}: {name} is {value} (rows {rows()}); the run stopped. Check those rows, lower "
            "learning_rate, then rerun"
        )


def check_trained_tokens(step: int, n_tokens: int, rows: Callable[[], str]) -> None:
    if n_tokens <= 0:
        raise TrainingError(
            f"step {step}: the batch trains on 0 tokens (rows {rows()}); their messages have no trainable "
            "(assistant) tokens, or max_length cuts them off. Check the roles / train_on_what / max_length"
        )


def did_you_mean(key: str, value: Any, choices: Sequence[str]) -> ConfigurationError:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigurationError(f"{key}={value!r} is not one of {', '.join(choices)}{hint}")

def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise did_you_mean(key, value, choices)



# ----------------------------------------------------------------------------------------------- the lock


class _Lock:
    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise ConfigurationError(
                f"{path.parent} is in use by another run (PID {other}); wait for it to finish, stop it, or choose "
                "another log_path"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


# ----------------------------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """An open run directory (lock held, config checked) and the loop state the skeleton owns."""

    log: RunLog
    kind: str
    config: dict[str, Any]
    lock: _Lock
    last: dict[str, Any] | None = None
    total: int = 0
    step: int | None = None
    _pending: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    _handler: logging.Handler | None = None

    # ---------------------------------------------------------------------------- start / resume
    @property
    def done(self) -> bool:
        return bool(self.last and self.last.get("final"))

    @property
    def start(self) -> int:
        return int(self.last["batch"]) if self.last is not None and not self.done else 0

    def begin(self, total: int) -> int:
        """The first step to run (``total`` when finished); drops metrics rows the resumed steps rewrite."""
        self.total = total
        if self.done:
            print(f"{self.log.dir}: this run finished (final checkpoint); nothing to do. Use another log_path "
                  "or behavior_if_log_dir_exists=delete to start again", file=sys.stderr)
            return total
        self.log.truncate_metrics(self.start)  # a crash before the first checkpoint restarts at 0
        if self.last is not None:
            print(f"resuming from step {self.start} ({self.log.checkpoints_path}: {self.last['name']})",
                  file=sys.stderr)
            log.info("resuming from step %d (checkpoint %s)", self.start, self.last["name"])
        return self.start

    def training_client(self, service_client: Any, cfg: Any) -> Any:
        """Resume (weights + optimizer), or ``load_checkpoint_path`` (weights only), or a fresh LoRA."""
        if self.last is not None and not self.done:
            return resolve(service_client.create_training_client_from_state_with_optimizer(self.last["state_path"]))
        init = getattr(cfg, "load_checkpoint_path", None)
        if init:
            return resolve(service_client.create_training_client_from_state(init))
        return resolve(service_client.create_lora_training_client(
            base_model=cfg.model_name, rank=cfg.lora_rank, seed=cfg.seed,
            user_metadata={"renderer_name": str(cfg.renderer_name)},
        ))

    def named_record(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.log.checkpoints() if r.get("name") == name), None)

    # ---------------------------------------------------------------------------- checkpoints
    def save(self, tc: Any, name: str, batch: int, *, kind: Literal["state", "sampler", "both"] = "both",
             final: bool = False, **extra: Any) -> dict[str, Any]:
        state = tc.save_state(name) if kind in ("state", "both") else None
        sampler = tc.save_weights_for_sampler(name) if kind in ("sampler", "both") else None
        record = {
            "name": name, "batch": batch, "final": final or None,
            "state_path": state.result().path if state is not None else None,
            "sampler_path": sampler.result().path if sampler is not None else None,
            **extra,
        }
        return self.log.record_checkpoint(record)

    # ---------------------------------------------------------------------------- metrics
    def add(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Metrics for ``step`` logged before its training row (e.g. evaluations); merged into that row."""
        self._pending.setdefault(step, {}).update(metrics)

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        row = {**self._pending.pop(step, {}), **metrics}
        row["progress/done_frac"] = (step + 1) / max(self.total, 1) if step < self.total else 1.0
        self.log.log_metrics(step, row)
        return row

    def flush(self) -> None:
        """Rows that only have evaluation metrics (e.g. the final evaluation at ``step == total``)."""
        for step in sorted(self._pending):
            self.log_step(step, {})

    def close(self) -> None:
        self.flush()
        self.log.close()
        if self._handler is not None:
            logging.getLogger("cookbook").removeHandler(self._handler)
            self._handler.close()
        self.lock.release()
        _OPEN.pop(str(self.log.dir.resolve()), None)


_OPEN: dict[str, Run] = {}


def _has_run_files(d: Path) -> bool:
    return any((d / f).exists() for f in RUN_FILES)


def _ask(d: Path) -> str:
    while True:
        answer = input(f"{d} already holds a run. What do you want to do? [delete, resume, exit]: ").strip()
        if answer in ("delete", "resume", "exit"):
            return answer
        print("please answer delete, resume or exit", file=sys.stderr)


def _clear(d: Path) -> None:
    for child in d.iterdir():
        if child.name == ".lock":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def open_run(
    log_path: str | os.PathLike[str],
    kind: str,
    config: Any,
    behavior_if_log_dir_exists: str = "ask",
    *,
    logging_spec: Mapping[str, Any] | None = None,
) -> Run:
    """Open (or re-enter) the run directory; see the module docstring."""
    d = Path(expand_path(log_path))
    key = str(d.resolve())
    if key in _OPEN:
        return _OPEN[key]
    check_choice("behavior_if_log_dir_exists", behavior_if_log_dir_exists, LOGDIR_BEHAVIORS)
    new_cfg = {"kind": kind, **config_dict(config)}
    existed = d.exists() and _has_run_files(d)
    d.mkdir(parents=True, exist_ok=True)
    lock = _Lock(d / ".lock")
    try:
        behavior = behavior_if_log_dir_exists
        if existed and behavior == "ask":
            behavior = _ask(d) if sys.stdin.isatty() and sys.stderr.isatty() else "resume"
            if behavior == "exit":
                raise SystemExit(0)
        if existed and behavior == "raise":
            raise ConfigurationError(
                f"{d} already holds a run (behavior_if_log_dir_exists=raise); choose another log_path, or "
                "behavior_if_log_dir_exists=resume / delete"
            )
        if existed and behavior == "delete":
            print(f"{d}: deleting the previous run (behavior_if_log_dir_exists=delete)", file=sys.stderr)
            _clear(d)
        runlog = RunLog(d)
        old = runlog.read_config()
        if old is not None:
            diff = config_diff(old, new_cfg)
            frozen = [(k, a, b) for k, a, b in diff if k.split(".")[0] not in MUTABLE_KEYS]
            if frozen:
                lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, a, b in frozen)
                raise ConfigurationError(
                    f"{d} holds a run with a different configuration; these keys cannot change mid-run:\n{lines}\n"
                    "Rerun with the original values to resume, or choose another log_path (or "
                    "behavior_if_log_dir_exists=delete to start over)"
                )
            for k, a, b in diff:
                print(f"{d}: {k} changed on resume: {a!r} -> {b!r}", file=sys.stderr)
        runlog.write_config(new_cfg)
        from cookbook.runlog import build_loggers

        runlog.loggers = build_loggers(d, new_cfg, dict(logging_spec or {}))
        handler = logging.FileHandler(d / "logs.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg = logging.getLogger("cookbook")
        pkg.addHandler(handler)
        if pkg.level == logging.NOTSET or pkg.level > logging.INFO:
            pkg.setLevel(logging.INFO)
        run = Run(runlog, kind, new_cfg, lock, runlog.last_checkpoint(), _handler=handler)
        log.info("run %s (%s) opened by PID %d", d, kind, os.getpid())
    except BaseException:
        lock.release()
        raise
    _OPEN[key] = run
    return run


@contextlib.contextmanager
def opened(log_path: str, kind: str, config: Any, behavior: str = "ask",
           logging_spec: Mapping[str, Any] | None = None) -> Iterator[Run]:
    """:func:`open_run` for the duration of a block; re-entering an already open run leaves it open."""
    key = str(Path(expand_path(log_path)).resolve())
    owner = key not in _OPEN
    run = open_run(log_path, kind, config, behavior, logging_spec=logging_spec)
    try:
        yield run
    finally:
        if owner:
            run.close()


def current_steps() -> dict[str, int | None]:
    """The step in progress of every open run (for the interruption message)."""
    return {k: r.step for k, r in _OPEN.items()}


def logging_spec_of(cfg: Any) -> dict[str, Any]:
    return {"wandb_project": getattr(cfg, "wandb_project", None), "wandb_name": getattr(cfg, "wandb_name", None)}


def rows_of(items: Sequence[Any], label: Callable[[Any], str] | None = None) -> Callable[[], str]:
    """A lazy "which rows" description for the guards."""
    def describe() -> str:
        labels = [label(x) if label else str(x) for x in items]
        return ", ".join(labels[:12]) + (" ..." if len(labels) > 12 else "")
    return describe
