"""Run directory: ``config.json``, ``metrics.jsonl``, ``checkpoints.jsonl`` — written so a crash loses nothing.

* ``config.json`` is replaced atomically (write a temporary file, fsync, ``os.replace``).
* JSONL files are appended one whole line per ``write`` call, flushed and fsynced. A line torn by a crash
  (no trailing newline, or invalid JSON) is dropped when the file is read back, and removed before the next
  append, so readers never see half a record.
* ``metrics.jsonl`` rows start with ``step``. On resume from step ``N`` every row with ``step >= N`` is
  removed (those steps run again), as tinker-cookbook does.
* Extra loggers (:func:`register_logger_factory`, e.g. W&B in :mod:`cookbook.wandb_log`) receive every row
  that ``log_metrics`` writes, after it is on disk.
* ``checkpoints.jsonl`` rows follow tinker-cookbook's ``CheckpointRecord`` key order: ``name``, ``batch``,
  ``epoch``, ``final``, ``state_path``, ``sampler_path``, then loop-specific keys; ``None`` values are left out.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from cookbook.errors import DataError

CHECKPOINT_KEY_ORDER = ("name", "batch", "epoch", "final", "state_path", "sampler_path")

def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(value: Any) -> Any:
    """NaN -> None, inf -> \"inf\", numpy scalars -> Python, tuples -> lists (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete records of a JSONL file; a torn final line (crash mid-write) is ignored."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    data = path.read_text(encoding="utf-8")
    lines = data.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        complete = i < len(lines) - 1  # followed by a newline
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if not complete:
                break
            raise DataError(f"{path}: line {i + 1} is not valid JSON ({exc}); the file is corrupted") from exc
        if complete and isinstance(row, dict):
            rows.append(row)
    return rows


def _repair_tail(path: Path) -> None:
    """Remove a torn last line so the next append starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(path)
    line = json.dumps(jsonable(dict(row)), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


class MetricsLogger(Protocol):
    """Where a run's config and per-step metrics rows go besides ``metrics.jsonl`` (e.g. W&B).

    A factory registered with :func:`register_logger_factory` receives ``(log_dir, config, spec)``, where
    ``spec`` holds the run's ``wandb_project`` / ``wandb_name`` (tinker-cookbook's keys), and returns a logger or
    ``None`` when it does not apply. ``log_hparams`` is called once when the run opens, ``log_metrics`` once per
    metrics row (the same dict written to ``metrics.jsonl``, ``step`` included), ``close`` when the run ends.
    """

    def log_hparams(self, config: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


LoggerFactory = Callable[[Path, Mapping[str, Any], Mapping[str, Any]], "MetricsLogger | None"]


def _wandb_factory(log_dir: Path, config: Mapping[str, Any], spec: Mapping[str, Any]) -> MetricsLogger | None:
    """The built-in W&B logger (:mod:`cookbook.wandb_log`; imports ``wandb`` only when ``wandb_project`` is set)."""
    from cookbook.wandb_log import wandb_logger_factory

    return wandb_logger_factory(log_dir, config, spec)


_LOGGER_FACTORIES: list[LoggerFactory] = [_wandb_factory]


def register_logger_factory(factory: LoggerFactory) -> LoggerFactory:
    """Add a logger factory (see :class:`MetricsLogger`); usable as a decorator."""
    if factory not in _LOGGER_FACTORIES:
        _LOGGER_FACTORIES.append(factory)
    return factory


def build_loggers(log_dir: Path, config: Mapping[str, Any], spec: Mapping[str, Any]) -> list[MetricsLogger]:
    """The extra loggers of a run: every registered factory's logger; ``wandb_project`` set with no factory
    taking it is a :class:`~cookbook.errors.ConfigurationError` (never a silently unlogged run)."""
    from cookbook.errors import ConfigurationError
    loggers = [lg for f in _LOGGER_FACTORIES if (lg := f(log_dir, config, spec)) is not None]
    if spec.get("wandb_project") and not loggers:
        raise ConfigurationError(
            f"wandb_project={spec['wandb_project']!r} is set but no W&B logger is available in this installation "
            "(install the wandb extra), or leave wandb_project unset"
        )
    for lg in loggers:
        lg.log_hparams(config)
    return loggers


class RunLog:
    """The files of one run directory."""

    def __init__(self, log_dir: str | os.PathLike[str]):
        self.dir = Path(log_dir)
        self.loggers: list[MetricsLogger] = []
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.checkpoints_path = self.dir / "checkpoints.jsonl"
        self.config_path = self.dir / "config.json"

    # -------------------------------------------------------------------------------- config
    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write_text(self.config_path, json.dumps(jsonable(dict(config)), indent=2, sort_keys=True) + "\n")

    def read_config(self) -> dict[str, Any] | None:
        if not self.config_path.exists():
            return None
        data: dict[str, Any] = json.loads(self.config_path.read_text())
        return data

    # -------------------------------------------------------------------------------- metrics
    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": int(step)}
        row.update({k: v for k, v in metrics.items() if k != "step"})
        append_jsonl(self.metrics_path, row)
        for lg in self.loggers:
            lg.log_metrics(row, int(step))

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
        self.loggers = []

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def truncate_metrics(self, from_step: int) -> None:
        """Drop ``metrics.jsonl`` and ``samples.jsonl`` rows with ``step >= from_step`` (they will be logged
        again after a resume)."""
        for path in (self.metrics_path, self.dir / "samples.jsonl"):
            if path.exists():
                rows = [r for r in read_jsonl(path) if int(r.get("step", -1)) < from_step]
                atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    # -------------------------------------------------------------------------------- checkpoints
    def record_checkpoint(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if "name" not in record:
            raise DataError("a checkpoint record needs a 'name'")
        ordered = {k: record[k] for k in CHECKPOINT_KEY_ORDER if record.get(k) is not None}
        ordered.update({k: v for k, v in record.items() if k not in CHECKPOINT_KEY_ORDER and v is not None})
        append_jsonl(self.checkpoints_path, ordered)
        return ordered

    def checkpoints(self) -> list[dict[str, Any]]:
        return read_jsonl(self.checkpoints_path)

    def last_checkpoint(self, required_key: str = "state_path") -> dict[str, Any] | None:
        """The last record that has ``required_key`` (only records with a state can be resumed from)."""
        for rec in reversed(self.checkpoints()):
            if rec.get(required_key):
                return rec
        return None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.metrics())
