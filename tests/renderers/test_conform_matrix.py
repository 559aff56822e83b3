"""``cookbook conform matrix`` (matrix.json + a self-contained matrix.html, screenshotted in headless chromium)
and the pytest plugin (each spec case a test item; JUnit through pytest's own --junitxml)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cookbook.cli import main
from cookbook.conformance.matrix import render_html, summary_markdown
from cookbook.conformance.spec import spec_path_for

PLANTED = """
from cookbook.renderers.base import RenderedMessage
from cookbook.renderers.llama3 import Llama3Renderer


class NoBlankLine(Llama3Renderer):
    def render_message(self, msg, ctx):
        r = super().render_message(msg, ctx)
        return RenderedMessage(header=[r.header[0][:-1]], output=r.output, stop_overlap=r.stop_overlap)


def factory(tokenizer):
    return NoBlankLine(tokenizer)
"""


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real matrix: cookbook, hf-template and a user's planted-bug factory on llama3 (no properties)."""
    out = tmp_path_factory.mktemp("matrix")
    (out / "planted_llama.py").write_text(PLANTED)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        rc = main(["conform", "matrix", "--impl", "cookbook", "--impl", "hf-template", "--impl", "planted_llama:factory",
                   "--renderer", "llama3", "--no-properties", "--out", str(out)])
    finally:
        os.chdir(cwd)
    assert rc == 0  # no adapter errors
    return out


def test_matrix_json_has_the_documented_shape(matrix_dir: Path) -> None:
    doc = json.loads((matrix_dir / "matrix.json").read_text())
    assert doc["implementations"] == ["cookbook", "hf-template", "planted_llama:factory"]
    assert doc["renderers"] == ["llama3"]
    cells = {c["implementation"]: c for c in doc["cells"]}
    for c in cells.values():
        assert {"implementation", "renderer", "passed", "failed", "skipped", "errors", "causes"} <= set(c)
        assert c["errors"] == 0
    assert cells["cookbook"]["failed"] == 0 and cells["cookbook"]["causes"] == []
    planted = cells["planted_llama:factory"]["causes"]
    assert [k["key"] for k in planted] == ["missing token 271 '\\n\\n' after 128007 '<|end_header_id|>'"]
    assert "user_only" in planted[0]["cases"]


def test_matrix_html_is_self_contained(matrix_dir: Path) -> None:
    page = (matrix_dir / "matrix.html").read_text()
    assert "<table>" in page and "planted_llama:factory" in page and 'class="cell pass"' in page
    assert "missing token 271" in page  # the causes are embedded for the click-through
    assert "http://" not in page and "https://" not in page and "<link" not in page


def _doc() -> dict[str, Any]:
    def cell(impl: str, r: str, p: int, f: int, e: int, causes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"implementation": impl, "renderer": r, "native": r, "passed": p, "failed": f, "skipped": 0,
                "errors": e, "causes": causes}

    cause = {"key": "missing token 271 '\\n\\n' after 128007 '<|end_header_id|>'", "status": "FAIL",
             "checks": ["prompt.tokens"], "cases": ["user_only"], "example": "first differing token at index 4"}
    return {"implementations": ["cookbook", "peer"], "renderers": ["llama3", "qwen3"], "unavailable": {},
            "cells": [cell("cookbook", "llama3", 80, 0, 0, []), cell("peer", "llama3", 40, 16, 0, [cause]),
                      cell("cookbook", "qwen3", 90, 0, 0, [])]}


def test_summary_markdown_marks_pairs_not_offered() -> None:
    md = summary_markdown(_doc())
    assert "| llama3 | 80✓ 0✗ (0 causes) | 40✓ 16✗ (1 causes) |" in md
    assert "| qwen3 | 90✓ 0✗ (0 causes) | — |" in md


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_matrix_html_screenshot_in_headless_chromium(tmp_path: Path) -> None:
    """The page renders as a table in a real browser (Debian chromium; skipped, with the reason, without it)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    page = tmp_path / "matrix.html"
    page.write_text(render_html(_doc()))
    shot = tmp_path / "matrix.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,500", f"--screenshot={shot}", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # the cells' colours are in the picture: decode the PNG and look for the pass-green and fail-red of the CSS
    import zlib

    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    chunks, pos = b"", 8
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            chunks += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(chunks)
    colour_type = data[25]
    bpp = 4 if colour_type == 6 else 3
    stride = width * bpp
    seen: set[tuple[int, int, int]] = set()
    prev = bytearray(stride)
    for y in range(height):  # undo the PNG row filters
        f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        seen.update((row[i], row[i + 1], row[i + 2]) for i in range(0, stride, bpp * 7))
        prev = row
    assert (0xB7, 0xE4, 0xB0) in seen, "no pass-green cell in the screenshot"
    assert (0xF4, 0xB4, 0xAD) in seen, "no fail-red cell in the screenshot"


def test_pytest_plugin_turns_cases_into_items_with_junit(tmp_path: Path) -> None:
    """``pytest --conform-renderer mod:factory --conform-spec FILE``: one item per case; the planted bug fails
    items (with the cause in the report) and pytest's --junitxml records them."""
    (tmp_path / "planted_llama.py").write_text(PLANTED)
    junit = tmp_path / "conform.xml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    # the plugin is registered by the installed package (entry point pytest11: cookbook_conform)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
           "--conform-renderer", "planted_llama:factory", "--conform-spec", str(spec_path_for("llama3")),
           "--conform-no-properties", f"--junitxml={junit}", "-q", "--rootdir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "conform_llama3::user_only" in done.stdout
    assert "missing token 271" in done.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = {tc.get("name"): tc for tc in suite.iter("testcase")}
    assert cases["user_only"].find("failure") is not None
    assert cases["stop_sequences"].find("failure") is None
    assert int(suite.get("failures", "0")) >= 10
