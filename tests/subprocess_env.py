"""The environment of the recipe, CLI and server subprocesses the tests start.

Offline (``HF_HUB_OFFLINE=1``), no telemetry, no Tinker credentials or URL from the developer's shell (the recipes
start their embedded mock), and without torch: ``tests/_no_torch`` on ``PYTHONPATH`` makes ``import torch`` fail,
as it does for a user who installed only cookbook's runtime dependencies (cookbook never needs torch;
tests/test_no_torch_at_runtime.py). The pytest workers themselves keep torch, for the tml-renderers oracle.
"""

from __future__ import annotations

import os
from pathlib import Path

NO_TORCH = Path(__file__).resolve().parent / "_no_torch"


def subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` made offline and torch-free, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TINKER_API_KEY", "TINKER_BASE_URL")}
    env.update(HF_HUB_OFFLINE="1", TINKER_TELEMETRY="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(NO_TORCH), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


ENV = subprocess_env()
