"""Optional Weights & Biases logging (the ``wandb`` extra), keyed as in tinker-cookbook.

A recipe with ``wandb_project=...`` (and optionally ``wandb_name=...``) mirrors every row of its
``metrics.jsonl`` to a W&B run: ``wandb.init(project, name, config=<the recipe config>, dir=<log_path>)``,
then ``run.log(numeric metrics, step=step)`` for each row as the loop writes it
(:func:`cookbook.runlog.add_metric_sink`), and ``run.finish()`` when the recipe ends (exit code 1 if it
failed). ``metrics.jsonl`` stays the source of truth; W&B is a mirror. Without ``wandb_project`` nothing
is imported. ``WANDB_MODE=offline`` writes the run under ``<log_path>/wandb/offline-run-*`` with no network
(``wandb sync`` uploads it later). A resumed run starts a new W&B run; rows W&B already saw at a step are
sent again (W&B ignores steps lower than the last one it logged).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
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


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    try:
        import chz

        return dict(chz.asdict(config))
    except Exception:  # not a chz object
        return dict(getattr(config, "__dict__", {}))


@contextlib.contextmanager
def wandb_logging(
    log_path: str | Path, wandb_project: str | None, wandb_name: str | None = None, config: Any = None
) -> Iterator[Any]:
    """Mirror the metrics of the run in ``log_path`` to W&B while the block runs (no-op without a project)."""
    if not wandb_project:
        yield None
        return
    try:
        import wandb
    except ImportError as exc:
        raise ConfigurationError(
            "wandb_project is set but the 'wandb' package is not installed; install the extra "
            "(pip install 'cookbook[wandb]') or drop wandb_project"
        ) from exc
    from cookbook.runlog import add_metric_sink

    log_dir = Path(log_path).expanduser()
    log_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=wandb_project, name=wandb_name, config=_config_dict(config), dir=str(log_dir))
    remove = add_metric_sink(log_dir, lambda step, metrics: run.log(_numeric(metrics), step=step))
    ok = False
    try:
        yield run
        ok = True
    finally:
        remove()
        run.finish(exit_code=0 if ok else 1)


def from_config(config: Any) -> contextlib.AbstractContextManager[Any]:
    """:func:`wandb_logging` for a recipe config with ``log_path``, ``wandb_project`` and ``wandb_name``."""
    return wandb_logging(config.log_path, getattr(config, "wandb_project", None),
                         getattr(config, "wandb_name", None), config)
