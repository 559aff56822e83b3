"""The conform runner: built-in renderers pass their specs; broken renderers fail with a readable diff."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cookbook.cli import main
from cookbook.conformance.renderer_runner import RunOptions, run_spec
from cookbook.conformance.report import CheckResult, format_causes, format_summary, format_table
from cookbook.conformance.spec import load_spec, spec_path_for
from cookbook.renderers import builtin_renderer_names, get_renderer, register_renderer, unregister_renderer
from cookbook.renderers.base import Message, RenderContext, RenderedMessage
from cookbook.renderers.llama3 import Llama3Renderer
from cookbook.tokenizers import get_tokenizer

WITH_SPEC = [n for n in builtin_renderer_names() if spec_path_for(n).exists()]
NO_PROPS = RunOptions(properties=False)
WITH_PROPS = RunOptions(properties=True, examples=6, seed=0)


@pytest.fixture(scope="session")
def llama_tok() -> Any:
    return get_tokenizer("meta-llama/Llama-3.1-8B-Instruct")


@pytest.fixture(scope="session")
def llama_spec() -> Any:
    return load_spec(spec_path_for("llama3"))


def _failures(results: Sequence[CheckResult]) -> str:
    return format_table([r for r in results if r.status in ("FAIL", "ERROR")])


@pytest.mark.parametrize("name", WITH_SPEC)
def test_builtin_renderer_passes_its_spec_goldens_and_properties(name: str) -> None:
    """Every case, golden and parse check, and the property checks on a few random conversations."""
    spec = load_spec(spec_path_for(name))
    tok = get_tokenizer(spec.tokenizer)
    results = run_spec(get_renderer(name, tok), spec, tok, spec.tokenizer, WITH_PROPS)
    assert results
    assert all(r.ok for r in results), f"{name} fails its spec:\n{_failures(results)}"
    # token-exact golden checks really ran (they are not all skipped)
    assert any(r.check == "prompt.tokens" and r.status == "PASS" for r in results)


class NoBlankLineLlama(Llama3Renderer):
    """A plausible bug: the header lacks the blank line after <|end_header_id|>."""

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        r = super().render_message(msg, ctx)
        header = r.header[0]
        assert isinstance(header, list)
        return RenderedMessage(header=[header[:-1]], output=r.output)


def test_broken_llama_fails_with_token_and_text_diff(llama_tok: Any, llama_spec: Any) -> None:
    results = run_spec(NoBlankLineLlama(llama_tok), llama_spec, llama_tok, options=NO_PROPS)
    fails = {(r.case, r.check): r for r in results if r.status == "FAIL"}
    r = fails[("user_only", "prompt.tokens")]
    assert "first differing token at index 4" in r.detail
    assert "expected 271 '\\n\\n'" in r.detail, r.detail
    assert "actual   9906 'Hi'" in r.detail or "actual   " in r.detail
    assert "--- golden" in r.detail and "+++ renderer" in r.detail
    assert "-" + "<|begin_of_text|><|start_header_id|>user<|end_header_id|>⏎" in r.detail
    assert ("user_only", "prompt.spec") in fails and ("user_only", "supervised.spans") in fails
    assert all(r.renderer == "llama3" for r in results)


def test_broken_renderer_through_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    register_renderer("broken_llama3", NoBlankLineLlama)
    try:
        rc = main(["conform", "renderer", "broken_llama3", "--spec", str(spec_path_for("llama3")), "--no-properties",
                   "--no-color", "--verbose", "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    finally:
        unregister_renderer("broken_llama3")
    out = capsys.readouterr().out
    assert rc == 1
    assert "user_only" in out and "prompt.tokens" in out and "FAIL" in out
    assert "first differing token at index 4" in out
    assert "\x1b[" not in out, "no colour unless on a TTY or --color"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and report["summary"]["FAIL"] > 0
    assert {"subject", "case", "check", "status", "message", "detail", "cause"} <= set(report["results"][0])
    assert [c["key"] for c in report["causes"]] == ["missing token 271 '\\n\\n' after 128007 '<|end_header_id|>'"]
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert int(suite.get("failures", "0")) == report["summary"]["FAIL"]


def test_colour_flag(capsys: pytest.CaptureFixture[str]) -> None:
    register_renderer("broken_llama3", NoBlankLineLlama)
    try:
        main(["conform", "renderer", "broken_llama3", "--spec", str(spec_path_for("llama3")), "--no-properties", "--color", "-q"])
    finally:
        unregister_renderer("broken_llama3")
    assert "\x1b[31m" in capsys.readouterr().out


class ProtocolOnly:
    """A user's renderer that is not a cookbook Renderer: returns plain lists for tokens and weights."""

    def __init__(self, tokenizer: Any):
        self._inner = Llama3Renderer(tokenizer)

    def build_generation_prompt(self, messages: Any, role: str = "assistant", prefill: str | None = None) -> list[int]:
        return self._inner.build_generation_prompt(messages, role, prefill).to_ints()

    def build_supervised_example(self, messages: Any, train_on_what: Any = "last_assistant_message") -> Any:
        mi, w = self._inner.build_supervised_example(messages, train_on_what)
        return mi.to_ints(), [float(x) for x in w]

    def get_stop_sequences(self) -> list[int]:
        return self._inner.get_stop_sequences()

    def parse_response(self, response: Any) -> Any:
        return self._inner.parse_response(response)


def test_any_protocol_object_can_be_checked(llama_tok: Any, llama_spec: Any) -> None:
    results = run_spec(ProtocolOnly(llama_tok), llama_spec, llama_tok, options=NO_PROPS)
    assert all(r.ok for r in results), _failures(results)
    assert not any(r.check == "claims" and r.status == "FAIL" for r in results)


def test_goldens_of_another_tokenizer_are_not_used_for_token_checks(llama_spec: Any) -> None:
    from cookbook.conformance.renderer_runner import _golden_usable

    ok, why = _golden_usable({"provenance": {"tokenizer_sha256": "0" * 64}}, llama_spec, {"tokenizer_sha256": "1" * 64})
    assert not ok and "tokenizer differs" in why
    ok, why = _golden_usable(None, llama_spec, {"tokenizer_sha256": "1" * 64})
    assert not ok and "cookbook golden llama3" in why
    assert _golden_usable({"provenance": {"tokenizer_sha256": "1" * 64}}, llama_spec, {"tokenizer_sha256": "1" * 64})[0]


def test_qwen3_keeping_thinking_in_history_fails() -> None:
    if not spec_path_for("qwen3").exists():
        pytest.skip("specs/renderers/qwen3.yaml not written yet")
    from cookbook.renderers.qwen3 import Qwen3Renderer

    spec = load_spec(spec_path_for("qwen3"))
    tok = get_tokenizer(spec.tokenizer)
    keeper = Qwen3Renderer(tok, strip_thinking_from_history=False)  # type: ignore[call-arg]
    results = run_spec(keeper, spec, tok, options=NO_PROPS)
    fails = [r for r in results if r.status == "FAIL"]
    assert any(r.case == "reasoning_in_history" for r in fails), _failures(results)
    r = next(r for r in fails if r.case == "reasoning_in_history" and r.check in ("supervised.text", "prompt.tokens"))
    assert "+++ renderer" in r.detail and "<think>" in r.detail


def test_all_prints_one_summary(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``--all`` resolves every registered name with a spec, loads each spec and prints one summary with a row per
    name. Each name's checks are stubbed here: its full run (tokenizer, renderer, every check) is
    test_builtin_renderer_passes_its_spec_goldens_and_properties; running all of them a second time would cost
    minutes of the suite's budget."""
    import cookbook.conformance.renderer_cli as cli

    seen: list[str] = []

    def one_pass(impl: str, label: str, ref: str, spec: Any, *a: Any, **k: Any) -> list[CheckResult]:
        assert spec.renderer == ref
        seen.append(label)
        return [CheckResult(label, "stub", "prompt.tokens", "PASS", "ok", implementation=impl)]

    monkeypatch.setattr(cli, "run_one", one_pass)
    main(["conform", "renderer", "--all", "--no-properties", "--no-color", "-q"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("subject ")]
    assert len(lines) == 1, out
    for name in WITH_SPEC:
        assert any(ln.startswith(name + " ") for ln in out.splitlines())
    assert sorted(seen) == sorted(WITH_SPEC)


def test_report_formatting() -> None:
    rs = [
        CheckResult("r", "c1", "prompt.tokens", "PASS", "ok"),
        CheckResult("r", "c2", "prompt.tokens", "FAIL", "bad", "--- a\n+++ b\n-x\n+y", cause="missing token 1"),
        CheckResult("r", "c3", "prompt.spec", "FAIL", "bad", cause="missing token 1"),
        CheckResult("r", "*", "property.weights", "SKIP", "why"),
        CheckResult("r", "*", "property.roundtrip", "ERROR", "adapter error: boom"),
    ]
    table = format_table(rs)
    assert "c2    prompt.tokens       FAIL    bad" in table and "    -x" in table
    coloured = format_table(rs, colour=True)
    assert "\x1b[31m-x" in coloured and "\x1b[32m+y" in coloured
    summary = format_summary(rs)
    assert "1/3 2F" in summary and "0/2 1E 1S" in summary and "ERROR" in summary
    assert summary.splitlines()[-1] == "1 passed, 2 failed, 1 skipped, 1 errors"
    causes = format_causes(rs)
    assert causes.count("missing token 1") == 1 and "cases:  c2, c3" in causes and "ERROR" in causes


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


def test_a_users_renderer_in_the_current_folder_with_one_planted_bug_gives_one_cause(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--impl module:factory`` imports from the current folder (no PYTHONPATH); 48 failing checks in 16 cases
    are one grouped cause line that names the first differing token with its id and decoding."""
    import sys

    (tmp_path / "planted_llama.py").write_text(PLANTED)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    rc = main(["conform", "renderer", "llama3", "--impl", "planted_llama:factory", "--no-properties", "--no-color"])
    out = capsys.readouterr().out
    assert rc == 1
    cause_lines = [ln for ln in out.splitlines() if ln.lstrip()[:3] in ("1. ", "2. ")]
    assert cause_lines == ["  1. FAIL missing token 271 '\\n\\n' after 128007 '<|end_header_id|>'"], out
    assert "1 distinct cause(s) explain" in out and "user_only" in out
    assert "0 errors" in out


def test_a_named_peer_that_is_not_installed_is_an_error_not_a_pass(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--impl tinker-cookbook`` where it cannot be imported: exit 2 naming the package and how to install it,
    before anything runs (it used to skip the one construct check and report PASS with exit 0)."""
    import dataclasses

    from cookbook.conformance import impls

    missing = dataclasses.replace(impls.IMPLEMENTATIONS["tinker-cookbook"], package="cookbook_test_no_such_module")
    monkeypatch.setitem(impls.IMPLEMENTATIONS, "tinker-cookbook", missing)
    rc = main(["conform", "renderer", "qwen3", "--impl", "tinker-cookbook", "--no-properties", "--no-color"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cookbook_test_no_such_module" in err and f"pip install {impls.TINKER_COOKBOOK_PIP}" in err


OFFERS_NOTHING = """
def factory(tokenizer):
    raise NotImplementedError("this package has no llama3 renderer yet")
"""


def test_a_run_in_which_every_check_is_skipped_does_not_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory that offers nothing skips every check: the run checked nothing, so it exits 1 (JSON ``ok`` false)
    and says why each check was skipped."""
    (tmp_path / "offers_nothing.py").write_text(OFFERS_NOTHING)
    monkeypatch.chdir(tmp_path)
    rc = main(["conform", "renderer", "llama3", "--impl", "offers_nothing:factory", "--no-properties", "--no-color",
               "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and report["summary"]["PASS"] == 0 and report["summary"]["SKIP"] >= 1
    assert "this package has no llama3 renderer yet" in out
