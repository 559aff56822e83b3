"""cookbook never needs torch at run time: every module imports, and a renderer, a loss and the mock engine
work, in a process where importing torch fails."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys, importlib, pkgutil
sys.modules["torch"] = None  # any "import torch" now raises ImportError
import cookbook
skip = {"cookbook.__main__", "cookbook.tokenizers._tml_worker"}  # CLI entry; runs only in the torch tools venv
for m in pkgutil.walk_packages(cookbook.__path__, "cookbook."):
    if m.name not in skip:
        importlib.import_module(m.name)
import numpy as np
from cookbook.losses import ppo
out = ppo(np.array([-1.0, -2.0]), np.array([-1.1, -1.9]), np.array([1.0, -1.0]))
assert np.isfinite(out.loss)
from cookbook.mock.tiny_chat import tiny_chat_dir
from cookbook.renderers import get_renderer
r = get_renderer("llama3", str(tiny_chat_dir()))
assert r.build_generation_prompt([{"role": "user", "content": "hi"}]).length > 0
print("ok")
"""


def test_cookbook_imports_and_runs_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
