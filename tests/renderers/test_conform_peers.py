"""Implementation adapters: message translation, SKIP for what an implementation does not offer, ERROR for an
adapter that breaks (apart from failures), and the real peers (tinker-cookbook, tml-renderers, PrimeIntellect
renderers) checked through them with 0 errors and named causes only."""

from __future__ import annotations

from typing import Any

import pytest

from cookbook.conformance.impls import (
    IMPLEMENTATIONS,
    AdapterError,
    Unsupported,
    from_openai_message,
    get_implementation,
    openai_message,
    trained_messages,
)
from cookbook.conformance.renderer_cli import run_one
from cookbook.conformance.renderer_runner import RunOptions, run_spec
from cookbook.conformance.spec import load_spec, spec_path_for
from cookbook.errors import ConfigurationError
from cookbook.renderers.base import ToolCall, TrainOnWhat
from cookbook.renderers.llama3 import Llama3Renderer
from cookbook.tokenizers import get_tokenizer

NO_PROPS = RunOptions(properties=False)


@pytest.fixture(scope="module")
def llama() -> tuple[Any, Any]:
    return load_spec(spec_path_for("llama3")), get_tokenizer("meta-llama/Llama-3.1-8B-Instruct")


def test_trained_messages_follows_train_on_what() -> None:
    msgs = [{"role": "system"}, {"role": "user"}, {"role": "assistant"}, {"role": "user"}, {"role": "assistant"},
            {"role": "tool"}, {"role": "assistant", "trainable": True}]
    assert trained_messages(msgs, TrainOnWhat.LAST_ASSISTANT_MESSAGE) == [False] * 6 + [True]
    assert trained_messages(msgs, "last_assistant_turn") == [False, False, False, False, True, False, True]
    assert trained_messages(msgs, "all_assistant_messages") == [False, False, True, False, True, False, True]
    assert trained_messages(msgs, "all_user_and_system_messages") == [True, True, False, True, False, False, False]
    assert trained_messages(msgs, "customized") == [False] * 6 + [True]
    with pytest.raises(Unsupported, match="all_tokens"):
        trained_messages(msgs, "all_tokens")


def test_openai_translation_round_trips_thinking_and_tool_calls() -> None:
    ours = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "ok"}],
            "tool_calls": [ToolCall("f", '{"a": 1}', "c1")]}
    d = openai_message(ours)
    assert d == {"role": "assistant", "content": "ok", "reasoning_content": "hm",
                 "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}, "id": "c1"}]}
    assert openai_message(ours, "object")["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    back = from_openai_message(d)
    assert back["content"] == ours["content"] and back["tool_calls"] == ours["tool_calls"]
    with pytest.raises(Unsupported):
        openai_message({"role": "user", "content": [{"type": "image", "image": "x"}]})


class _Broken(Llama3Renderer):
    """Its adapter breaks while translating supervised examples; it does not offer parsing."""

    def build_supervised_example(self, messages: Any, train_on_what: Any = "last_assistant_message") -> Any:
        raise AdapterError("translating messages: KeyError: 'x'")

    def parse_response(self, response: Any) -> Any:
        raise Unsupported("no parser")


def test_adapter_errors_are_errors_and_missing_features_are_skips(llama: tuple[Any, Any]) -> None:
    spec, tok = llama
    results = run_spec(_Broken(tok), spec, tok, options=NO_PROPS, implementation="broken")
    by = {(r.case, r.check): r for r in results}
    assert by[("user_only", "supervised.spec")].status == "ERROR"
    assert by[("user_only", "prompt.tokens")].status == "PASS"
    assert {r.status for r in results if r.check == "parse"} == {"SKIP"}
    assert not any(r.status == "FAIL" for r in results if r.case.startswith("parse:"))
    assert all(r.implementation == "broken" for r in results)


def test_unknown_implementation_is_a_usage_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown implementation"):
        get_implementation("no-such-impl")
    assert set(IMPLEMENTATIONS) == {"cookbook", "tinker-cookbook", "tml-renderers", "pi-renderers", "hf-template"}
    with pytest.raises(Unsupported, match="has no renderer for 'gemma3'"):
        IMPLEMENTATIONS["tml-renderers"].native_name("gemma3")


def test_hf_template_is_a_baseline_with_skips_not_crashes() -> None:
    spec = load_spec(spec_path_for("qwen3"))
    results = run_one("hf-template", "qwen3", "qwen3", spec, properties=False)
    assert not any(r.status == "ERROR" for r in results)
    assert {r.status for r in results if r.check in ("parse", "stop_sequences")} == {"SKIP"}
    # the template is qwen3's oracle: its generation prompts equal the goldens where the spec names no deviation
    assert sum(r.check == "prompt.tokens" and r.status == "PASS" for r in results) >= 10
    # weights from prefix renders: the single-turn supervised example trains the reply and its <|im_end|>
    assert [r.status for r in results if (r.case, r.check) == ("user_only", "supervised.spans")] == ["PASS"]


# ----------------------------------------------------------------------------------------------- real peers

PEERS = [
    ("tinker-cookbook", "tinker_cookbook.renderers"),
    ("tml-renderers", "tml_renderers.renderers"),
    ("pi-renderers", "renderers.base"),
]


@pytest.mark.parametrize(("impl", "module"), PEERS, ids=[p[0] for p in PEERS])
def test_peer_qwen3_has_no_errors_and_every_failure_has_a_named_cause(impl: str, module: str) -> None:
    pytest.importorskip(module, reason=f"{impl} is a test-time peer (pip install the [peers] extra)")
    spec = load_spec(spec_path_for("qwen3"))
    results = run_one(impl, "qwen3", "qwen3", spec, "Qwen/Qwen3-8B", properties=False)
    assert not [r for r in results if r.status == "ERROR"], [r.message for r in results if r.status == "ERROR"]
    fails = [r for r in results if r.status == "FAIL"]
    assert all(r.cause_key() for r in fails)
    assert all(r.implementation == impl for r in results)
    assert sum(r.status == "PASS" for r in results) > len(results) // 3


def test_tinker_cookbook_qwen3_fails_only_on_split_tool_results_and_parsing() -> None:
    """The issue's own example: 65 failures (60 AttributeErrors from our message types) became a handful of
    causes a reader can check against the template: consecutive tool results in separate user blocks."""
    pytest.importorskip("tinker_cookbook.renderers")
    spec = load_spec(spec_path_for("qwen3"))
    results = run_one("tinker-cookbook", "qwen3", "qwen3", spec, "Qwen/Qwen3-8B", properties=False)
    from cookbook.conformance.report import group_causes

    causes = group_causes(results)
    structural = {c.cases[0]: c for c in causes if not c.cases[0].startswith("parse:")}
    # three causes a reader checks against the template: tool results split into separate blocks,
    # `</think>` inside a history string (the template keeps only the text after it; tinker-cookbook keeps all), and
    # a tool declaration with non-ASCII text, which tinker-cookbook writes \u-escaped where the template's tojson
    # keeps the characters (found by the wide-input case tools_wide_declaration)
    assert sorted(structural) == ["consecutive_tool_responses", "think_tag_in_history", "tools_wide_declaration"], [
        c.key for c in causes
    ]
    assert "'R'" in structural["tools_wide_declaration"].key
    # the think cause explains a second case too: before a user-role prompt (a user simulator's), tinker-cookbook
    # still frames the last reply with a think block; the template renders that reply as history (no block)
    assert structural["think_tag_in_history"].cases == ["think_tag_in_history", "generation_for_user_role"]
    assert all(len(c.cases) == 1 for k, c in structural.items() if k != "think_tag_in_history")
    split = structural["consecutive_tool_responses"].key
    assert "'<|im_end|>'" in split and "151645" in split
    assert "151667 '<think>'" in structural["think_tag_in_history"].key
    assert not any("AttributeError" in c.key for c in causes)
