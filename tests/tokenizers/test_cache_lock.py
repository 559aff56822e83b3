"""Two provisioning runs on one cache never build the same entry at once (``provision.cache_lock``).

Seen on a development machine: a CI run and a developer's ``cookbook tokenizers fetch --all`` shared
``~/.cache/cookbook``; both tml-renderers workers wrote the same partial export file and one of them failed.
Each entry (a download, a tokenizer folder, the tools venv and its exports) is now built under an inter-process
lock, and a process that waited reuses what the other one built. Threads stand in for processes here: ``flock``
locks belong to open file descriptions, so two opens in one process exclude each other as two processes do.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cookbook.tokenizers import provision
from cookbook.tokenizers import tml_export as tml
from cookbook.tokenizers.sources import Artifact


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path))
    return tmp_path


def _together(fn: Any, n: int = 3) -> list[Any]:
    """Run ``fn`` in ``n`` threads started at once; their results (an exception re-raised)."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = fn()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a provisioning thread is still waiting after 30 s"
    if errors:
        raise errors[0]
    return results


def test_the_lock_excludes_a_second_holder(cache: Path) -> None:
    inside: list[str] = []
    overlap: list[bool] = []

    def hold() -> None:
        with provision.cache_lock("entry"):
            overlap.append(bool(inside))
            inside.append("x")
            time.sleep(0.05)
            inside.pop()

    _together(hold, 4)
    assert overlap == [False] * 4
    assert (cache / "locks" / "entry.lock").exists()


def test_concurrent_exports_run_the_worker_once_and_all_read_it(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_setup(quiet: bool) -> tuple[Path, dict[str, str]]:
        return Path("python"), {}

    def fake_worker(python: Path, env: dict[str, str], args: list[str], stdin: str | None, timeout: float) -> str:
        calls.append(args)
        time.sleep(0.1)  # a slow export: the others arrive while it runs
        out = Path(args[1])
        for cls in args[2:]:
            (out / f"{cls}.json").write_text(json.dumps({"class": cls, "ranks": []}), encoding="utf-8")
        return ""

    monkeypatch.setattr(tml, "_worker_setup", fake_setup)
    monkeypatch.setattr(tml, "_call_worker", fake_worker)
    got = _together(lambda: tml.export_tml_tokenizers(["GlmTokenizer"], quiet=True))
    assert len(calls) == 1
    assert all(g == {"GlmTokenizer": {"class": "GlmTokenizer", "ranks": []}} for g in got)


def test_concurrent_downloads_fetch_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"pinned bytes"
    art = Artifact("demo", "pypi", "demo==1", "demo-1.tar.gz", hashlib.sha256(data).hexdigest(), len(data))
    calls: list[str] = []

    def fake_download(a: Artifact, dest: Path, quiet: bool) -> Path:
        calls.append(a.key)
        time.sleep(0.1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest

    monkeypatch.setattr(provision, "_download", fake_download)
    got = _together(lambda: provision.ensure_artifact(art, quiet=True))
    assert calls == ["demo"]
    assert {Path(g).read_bytes() for g in got} == {data}


def test_concurrent_family_builds_build_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    done = {"flag": False}

    def fake_build(name: str, dest: Path, quiet: bool) -> Path:
        built.append(name)
        time.sleep(0.1)
        done["flag"] = True
        return dest

    monkeypatch.setattr(provision, "_build_family", fake_build)
    monkeypatch.setattr(provision, "is_built", lambda name: done["flag"])
    got = _together(lambda: provision.build_family("llama3", quiet=True))
    assert built == ["llama3"]
    assert set(got) == {provision.family_dir("llama3")}
