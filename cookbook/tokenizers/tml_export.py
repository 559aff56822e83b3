"""Export the tokenizers that exist only inside ``tml-renderers==0.2.1`` (Kimi K2, GLM, Nemotron 3).

The wheel's Rust extension needs a real ``torch`` loaded at import, and torch must never become a runtime
dependency of ``cookbook``. So the export runs in a **provisioning-only virtual environment** under the cache::

    <cache>/tools/tml-venv/                         python -m venv + pip install torch==2.13.0 numpy
    <cache>/tools/tml-renderers-0.2.1-<sha8>/       the sha256-verified wheel, unzipped (put on PYTHONPATH)
    <cache>/tools/tml-exports-<sha8>/<Class>.json   what the worker exported (ranks + specials), reused

The worker (``_tml_worker.py``, standard library + torch + tml only) runs in a subprocess with that venv's
Python and writes, per tokenizer class, every regular id's bytes (``decode_bytes([id])``) and every special
token (``special_tokens()`` names, ``encode_special(name)`` ids, decoded text). The main process then builds
``tokenizer.json`` from that data (:func:`cookbook.tokenizers.builders.tml_tokenizer_json`). Creating the venv
takes about 1.5 minutes once (torch is about 200 MB; pip prefers a local wheel when ``PIP_FIND_LINKS`` has one);
exports are cached, so rebuilding a family folder later needs neither the venv nor torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from cookbook.errors import ProvisioningError

TML_ARTIFACT = "tml-renderers"
#: what the tools venv gets; torch is pinned to the version the research verified (a CPU wheel suffices)
TOOLS_VENV_PACKAGES = ("torch==2.13.0", "numpy")
_READY = "cookbook-tools-ready.json"
_WORKER = Path(__file__).with_name("_tml_worker.py")
#: the cache lock (``cookbook.tokenizers.provision.cache_lock``) held while the tools venv, the unpacked wheel or
#: an export is being made
_TOOLS_LOCK = "tools"


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def tools_root() -> Path:
    from cookbook.tokenizers.provision import cache_root

    return cache_root() / "tools"


def tools_venv_dir() -> Path:
    return tools_root() / "tml-venv"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: list[str], what: str, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    except FileNotFoundError as exc:
        raise ProvisioningError(f"cannot run {cmd[0]!r} to {what}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProvisioningError(f"timed out after {timeout:.0f} s trying to {what}; retry") from exc


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 6) -> str:
    return " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-lines:])


def ensure_tools_venv(quiet: bool = False) -> Path:
    """The tools venv's Python executable, creating the venv (with torch) on first use.

    Raises :class:`ProvisioningError` with pip's last lines when torch cannot be installed.
    """
    venv = tools_venv_dir()
    python = _venv_python(venv)
    marker = venv / _READY
    if marker.exists() and python.exists():
        try:
            if json.loads(marker.read_text()).get("packages") == list(TOOLS_VENV_PACKAGES):
                return python
        except (OSError, json.JSONDecodeError):
            pass
    venv.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=venv.parent, prefix=".tml-venv-"))
    try:
        _log(f"creating the provisioning-only venv {venv} (torch for the tml-renderers export; about 1.5 min)", quiet)
        proc = _run([sys.executable, "-m", "venv", str(tmp)], "create a virtual environment", 300)
        if proc.returncode != 0:
            raise ProvisioningError(
                f"could not create a virtual environment with {sys.executable} -m venv: {_tail(proc)}. "
                "Install the venv module (e.g. apt-get install python3-venv)."
            )
        cmd = [str(_venv_python(tmp)), "-m", "pip", "install", "--disable-pip-version-check", "-q",
               *TOOLS_VENV_PACKAGES]
        proc = _run(cmd, "install torch into the tools venv", 1800)
        if proc.returncode != 0:
            raise ProvisioningError(
                f"could not install {' '.join(TOOLS_VENV_PACKAGES)} into the tools venv (exit {proc.returncode}): "
                f"{_tail(proc)}. The Kimi K2, GLM and Nemotron 3 tokenizers exist only inside tml-renderers, whose "
                "extension needs torch at import. Make a torch 2.13.0 wheel reachable (PyPI, or a local wheel via "
                "PIP_FIND_LINKS), or provision those families on a machine that has one and copy "
                f"{tools_root() / 'tml-exports-*'} or the finished tokenizer folders into this cache."
            )
        (tmp / _READY).write_text(json.dumps({"packages": list(TOOLS_VENV_PACKAGES)}) + "\n")
        if venv.exists():
            shutil.rmtree(venv)
        os.replace(tmp, venv)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return python


def _tml_sha8() -> str:
    from cookbook.tokenizers.sources import ARTIFACTS

    return ARTIFACTS[TML_ARTIFACT].sha256[:8]


def ensure_tml_package(quiet: bool = False) -> Path:
    """Folder holding the unzipped, sha256-verified tml-renderers wheel (to put on ``PYTHONPATH``)."""
    from cookbook.tokenizers.provision import ensure_artifact
    from cookbook.tokenizers.sources import ARTIFACTS

    art = ARTIFACTS[TML_ARTIFACT]
    dest = tools_root() / f"{art.spec.replace('==', '-')}-{_tml_sha8()}"
    if (dest / "tml_renderers" / "__init__.py").exists():
        return dest
    wheel = ensure_artifact(art, quiet)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tml-pkg-"))
    try:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_worker(args: list[str], stdin: str | None = None, quiet: bool = True, timeout: float = 900) -> str:
    """Run ``_tml_worker.py ARGS`` with the tools venv's Python and tml on ``PYTHONPATH``; return stdout."""
    from cookbook.tokenizers.provision import cache_lock

    with cache_lock(_TOOLS_LOCK):
        python, env = _worker_setup(quiet)
    return _call_worker(python, env, args, stdin, timeout)


def _worker_setup(quiet: bool) -> tuple[Path, dict[str, str]]:
    """The tools venv's Python and the worker's environment, creating both on first use (the caller holds the
    tools lock, so two processes never build the venv or unpack the wheel at once)."""
    python = ensure_tools_venv(quiet)
    pkg = ensure_tml_package(quiet)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(pkg)
    env["PYTHONNOUSERSITE"] = "1"
    return python, env


def _call_worker(python: Path, env: dict[str, str], args: list[str], stdin: str | None, timeout: float) -> str:
    proc = _run([str(python), str(_WORKER), *args], "run the tml-renderers worker", timeout, input=stdin, env=env)
    if proc.returncode != 0:
        raise ProvisioningError(
            f"the tml-renderers worker failed (exit {proc.returncode}) for {' '.join(args[:1] + args[2:])}: "
            f"{_tail(proc)}. Delete {tools_venv_dir()} to recreate the tools venv."
        )
    return proc.stdout


def exports_dir() -> Path:
    return tools_root() / f"tml-exports-{_tml_sha8()}"


def export_tml_tokenizers(classes: list[str], quiet: bool = False) -> dict[str, dict[str, Any]]:
    """The exported data of each tml tokenizer class (cached; missing ones are exported in one subprocess)."""
    from cookbook.tokenizers.provision import cache_lock

    out_dir = exports_dir()
    if any(not (out_dir / f"{c}.json").exists() for c in classes):
        with cache_lock(_TOOLS_LOCK):  # one export at a time per cache; a waiting process reuses the files
            missing = [c for c in classes if not (out_dir / f"{c}.json").exists()]
            if missing:
                out_dir.mkdir(parents=True, exist_ok=True)
                _log(f"exporting {', '.join(missing)} from tml-renderers", quiet)
                python, env = _worker_setup(quiet)
                _call_worker(python, env, ["export", str(out_dir), *missing], None, 900)
    result: dict[str, dict[str, Any]] = {}
    for c in classes:
        path = out_dir / f"{c}.json"
        try:
            result[c] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProvisioningError(f"cannot read the tml export {path}: {exc}; delete it and retry") from exc
    return result


def tml_encode_ordinary(classes: list[str], texts: list[str]) -> dict[str, list[list[int]]]:
    """tml's own ``encode_ordinary`` of every text, per tokenizer class (one subprocess in the tools venv).

    An independent reference for the exported ``tokenizer.json`` files (special-token text stays ordinary)."""
    out: dict[str, list[list[int]]] = json.loads(run_worker(["encode", *classes], stdin=json.dumps(texts)))
    return out


__all__ = [
    "TOOLS_VENV_PACKAGES",
    "ensure_tml_package",
    "ensure_tools_venv",
    "export_tml_tokenizers",
    "exports_dir",
    "run_worker",
    "tml_encode_ordinary",
    "tools_root",
    "tools_venv_dir",
]
