"""Optional Weights & Biases logging (the ``wandb`` extra), keyed as in tinker-cookbook.

A run whose config has ``wandb_project=...`` (and optionally ``wandb_name=...``) mirrors every row of its
``metrics.jsonl`` to a W&B run. This module is a :data:`cookbook.runlog.LoggerFactory`
(:func:`wandb_logger_factory`), one of :mod:`cookbook.runlog`'s logger factories from the start, so
:func:`cookbook.runlog.build_loggers` builds it wherever a loop opens its run directory
(:func:`cookbook.loop.open_run`): ``wandb.init(project, name, dir=<log_path>)`` plus the run config when
the run opens, ``run.log(numeric metrics, step=step)`` for each row after it is on disk, and ``run.finish()``
when the run closes (exit code 1 if it closes while an exception propagates). ``metrics.jsonl`` stays the
source of truth; W&B is a mirror. Without ``wandb_project`` nothing is imported. ``WANDB_MODE=offline`` writes
the run under ``<log_path>/wandb/offline-run-*`` with no network (``wandb sync`` uploads it later). A resumed
run starts a new W&B run; rows W&B already saw at a step are sent again (W&B ignores steps lower than the last
one it logged).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cookbook.errors import ConfigurationError


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class WandbLogger:
    """A :class:`cookbook.runlog.MetricsLogger` writing to one W&B run."""

    def __init__(self, run: Any):
        self.run = run

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log(_numeric(metrics), step=int(step))

    def close(self) -> None:
        failed = sys.exc_info()[1] is not None and not isinstance(sys.exc_info()[1], SystemExit)
        self.run.finish(exit_code=1 if failed else 0)


def wandb_logger_factory(log_dir: Path, config: Mapping[str, Any], spec: Mapping[str, Any]) -> WandbLogger | None:
    """The W&B logger of a run with ``spec["wandb_project"]`` set (``None`` otherwise)."""
    project = spec.get("wandb_project")
    if not project:
        return None
    try:
        import wandb
    except ImportError as exc:
        raise ConfigurationError(
            f"wandb_project={project!r} is set but the 'wandb' package is not installed; install the extra "
            "(pip install 'cookbook[wandb]') or leave wandb_project unset"
        ) from exc
    log_dir = Path(log_dir).expanduser()
    log_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=str(project), name=spec.get("wandb_name"), dir=str(log_dir))
    return WandbLogger(run)
