"""The built wheel is the toolkit: installed into a clean venv, from a folder outside the checkout, its commands
find the specs and goldens it carries (package data read through importlib.resources).

The clean venv installs the runtime lock offline from ``$COOKBOOK_WHEELHOUSE``, which ``nox -s tests``
downloads (hash-checked) before running pytest.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import cookbook
from cookbook.data import golden_dir, specs_dir

REPO = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO / "requirements" / "runtime.lock"
NOT_SOURCES = (".git", ".nox", ".venv", ".ci-venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
               ".mypy_cache", ".ruff_cache", ".pytest_cache", "runs", "reports", ".cache", "bench-results")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the source tree (no stale build/ folder can leak into it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                 str(src)], tmp, dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    (whl,) = (tmp / "dist").glob("*.whl")
    return whl


def test_wheel_carries_specs_goldens_and_metadata(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped_specs = {n.split("cookbook/_data/specs/", 1)[1] for n in names if n.startswith("cookbook/_data/specs/")}
    shipped_golden = {n.split("cookbook/_data/golden/", 1)[1] for n in names if n.startswith("cookbook/_data/golden/")}
    repo_specs = {str(p.relative_to(specs_dir())) for p in specs_dir().rglob("*") if p.suffix in (".yaml", ".md")}
    repo_golden = {str(p.relative_to(golden_dir())) for p in golden_dir().rglob("*.json")}
    assert repo_specs and shipped_specs == repo_specs
    assert repo_golden and shipped_golden == repo_golden
    (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    assert meta["Name"] == "cookbook-verify"
    assert meta["Version"] == cookbook.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("Project-URL") and meta.get_all("Classifier")
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_wheel_runs_the_toolkit_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    house = os.environ.get("COOKBOOK_WHEELHOUSE")
    if not house or not Path(house).is_dir():
        pytest.skip("COOKBOOK_WHEELHOUSE is not set: `nox -s tests` downloads the runtime lock's wheels into the "
                    "cache and sets it (an offline, hash-checked install needs them)")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    py = str(bin_dir / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PIP_NO_INDEX="1", PIP_FIND_LINKS=house)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    steps = [
        # --no-compile: byte-compiling all of transformers up front costs more CPU than the few modules the
        # commands below import (they compile on first import)
        [py, "-m", "pip", "install", "--quiet", "--no-compile", "--require-hashes", "-r", str(RUNTIME_LOCK)],
        [py, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps", str(wheel)],
    ]
    for cmd in steps:
        done = _run(cmd, outside, env)
        assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"
    where = _run([py, "-c", "import cookbook, cookbook.data as d; print(cookbook.__file__); print(d.specs_dir())"],
                 outside, env)
    assert where.returncode == 0, where.stderr
    assert str(REPO) not in where.stdout and str(tmp_path / "venv") in where.stdout, where.stdout
    version = _run(["cookbook", "--version"], outside, env)
    assert version.returncode == 0 and version.stdout.split() == ["cookbook", cookbook.__version__]
    commands = [
        ["cookbook", "conform", "renderer", "llama3", "--tokenizer", "meta-llama/Llama-3.1-8B-Instruct"],
        ["cookbook", "conform", "math", "--reference"],
        ["cookbook", "golden", "--check"],
        ["cookbook", "parity", "--examples", "5"],
    ]
    for cmd in commands:
        done = _run(cmd, outside, env)
        assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
