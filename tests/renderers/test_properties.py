"""Property checks on random conversations (hypothesis, profile ``ci``), with negative controls."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given

from cookbook.conformance.properties import (
    PropertyContext,
    check_extension,
    check_generation_parity,
    check_roundtrip,
    check_supervised_parity,
    check_weights,
    run_properties,
)
from cookbook.conformance.spec import load_spec, spec_path_for
from cookbook.renderers.base import Message, RenderContext, RenderedMessage
from cookbook.renderers.llama3 import Llama3Renderer
from cookbook.testing.strategies import DEFAULT_FORBID, Conversation, conversations, texts
from cookbook.tokenizers import get_tokenizer


@pytest.fixture(scope="session")
def llama_tok() -> Any:
    return get_tokenizer("meta-llama/Llama-3.1-8B-Instruct")


@pytest.fixture(scope="session")
def llama_ctx(llama_tok: Any) -> PropertyContext:
    return PropertyContext.build(Llama3Renderer(llama_tok), load_spec(spec_path_for("llama3")), llama_tok)


def _strategy(ctx: PropertyContext, template: bool = True, **over: Any) -> Any:
    return conversations(**{**ctx.strategy_options(template=template), **over})


def _assert_ok(failure: str | None) -> None:
    assert failure is None, failure


# ------------------------------------------------------------------------------------------ the strategy


@given(texts(forbid=("<|", "x")))
def test_texts_avoid_forbidden_substrings(t: str) -> None:
    assert "<|" not in t and "x" not in t
    assert unicodedata.normalize("NFC", t) == t


@given(texts(strip_whitespace=True))
def test_texts_strip_whitespace(t: str) -> None:
    assert t == t.strip()


@given(conversations(thinking=True, tools=True, end_with="assistant"))
def test_conversations_shape(conv: Conversation) -> None:
    import json

    roles = [m["role"] for m in conv.messages]
    assert roles[-1] == "assistant" and "user" in roles
    for m in conv.messages:
        for tc in m.get("tool_calls", []):
            assert isinstance(json.loads(tc.arguments), dict)
            assert tc.name in {t["name"] for t in conv.tools}
        if isinstance(m["content"], str):
            assert not any(f in m["content"] for f in DEFAULT_FORBID)


@given(conversations(end_with="user", system=True))
def test_conversations_end_with_user(conv: Conversation) -> None:
    assert conv.messages[0]["role"] == "system"
    assert conv.messages[-1]["role"] == "user"
    assert conv.prompt_messages == conv.messages


# ------------------------------------------------------------------------------------------ llama3


def test_llama3_spec_declares_how_no_trim_constrains_random_inputs(llama_ctx: PropertyContext) -> None:
    """The template trims content and the renderer does not (deviation no-trim): random conversations must
    therefore avoid leading/trailing whitespace, and the spec has to say so (property_inputs)."""
    assert llama_ctx.strategy_options()["strip_whitespace"], (
        "specs/renderers/llama3.yaml: add `property_inputs: {strip_whitespace: true}` to deviation no-trim"
    )


@pytest.mark.parametrize("check", [check_generation_parity, check_supervised_parity], ids=["generation", "supervised"])
def test_llama3_parity_with_template(llama_ctx: PropertyContext, check: Any) -> None:
    @given(_strategy(llama_ctx, strip_whitespace=True, end_with="any"))
    def run(conv: Conversation) -> None:
        _assert_ok(check(llama_ctx, conv))

    run()


@pytest.mark.parametrize("check", [check_weights, check_roundtrip], ids=["weights", "roundtrip"])
def test_llama3_weights_and_roundtrip(llama_ctx: PropertyContext, check: Any) -> None:
    @given(_strategy(llama_ctx, template=False))  # needs no template: padded content, empty systems too
    def run(conv: Conversation) -> None:
        _assert_ok(check(llama_ctx, conv))

    run()


def test_llama3_extension(llama_ctx: PropertyContext) -> None:
    assert llama_ctx.claims_extension

    @given(_strategy(llama_ctx, template=False, max_turns=3))  # un-stripped inputs: no template involved
    def run(conv: Conversation) -> None:
        _assert_ok(check_extension(llama_ctx, conv))

    run()


# ------------------------------------------------------------------------------------------ negative controls


class HistoryEditingLlama(Llama3Renderer):
    """Claims the extension property but rewrites earlier assistant messages (a trailing space)."""

    has_extension_property = True

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        r = super().render_message(msg, ctx)
        if msg["role"] == "assistant" and not ctx.is_last and ctx.idx < ctx.last_user_index:
            return RenderedMessage(header=r.header, output=[*r.output[:-1], " ", r.output[-1]])
        return r


class HeaderTrainingLlama(Llama3Renderer):
    """Trains the assistant header under last_assistant_message."""

    def supervised_tokens(self, messages: Any, train_on_what: Any = "last_assistant_message") -> Any:
        tokens, weights = super().supervised_tokens(messages, train_on_what)
        first = weights.index(1.0)
        weights[first - 2 : first] = [1.0, 1.0]
        return tokens, weights


class StrippingParseLlama(Llama3Renderer):
    def parse_response(self, response: Any) -> Any:
        msg, term = super().parse_response(response)
        return {"role": "assistant", "content": str(msg["content"]).strip()}, term


def _ctx(renderer: Any, tok: Any, claims: bool | None = None) -> PropertyContext:
    ctx = PropertyContext.build(renderer, load_spec(spec_path_for("llama3")), tok)
    if claims is not None:
        ctx.claims_extension = claims
    return ctx


def _outcomes(ctx: PropertyContext, n: int = 15) -> dict[str, Any]:
    return {o.name: o for o in run_properties(ctx, examples=n, only=["extension"])}


def test_false_extension_claim_is_caught(llama_tok: Any) -> None:
    out = _outcomes(_ctx(HistoryEditingLlama(llama_tok), llama_tok))
    ext = out["extension"]
    assert ext.status == "FAIL", ext
    assert "not a prefix of the generation prompt" in ext.detail and "first differing token" in ext.detail


def test_unclaimed_extension_gets_a_witness(llama_tok: Any) -> None:
    out = _outcomes(_ctx(HistoryEditingLlama(llama_tok), llama_tok, claims=False))
    assert out["extension"].status == "PASS" and "witness" in out["extension"].message
    # and a renderer that does have the property yields no witness
    honest = _outcomes(_ctx(Llama3Renderer(llama_tok), llama_tok, claims=False), n=10)
    assert honest["extension"].status == "SKIP"


def test_header_training_is_caught(llama_tok: Any) -> None:
    ctx = _ctx(HeaderTrainingLlama(llama_tok), llama_tok)
    conv = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    failure = check_weights(ctx, conv)
    assert failure is not None and "observation part" in failure


def test_lossy_parse_is_caught(llama_tok: Any) -> None:
    ctx = _ctx(StrippingParseLlama(llama_tok), llama_tok)
    conv = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Yo\n"}])
    failure = check_roundtrip(ctx, conv)
    assert failure is not None and "content: expected [('text', ' Yo\\n')]" in failure


def test_runner_driver_reports_every_property(llama_tok: Any) -> None:
    names = {o.name for o in run_properties(_ctx(Llama3Renderer(llama_tok), llama_tok), examples=5)}
    assert names == {"generation_parity", "supervised_parity", "roundtrip", "weights", "extension", "literal_control_tokens"}


@given(conversations(tools=True, system=True, wide=True, max_turns=3))
def test_wide_conversations_are_well_formed(conv) -> None:
    """``wide=True`` inputs: tool calls may lack ids, a tool message then has no tool_call_id."""
    for m in conv.messages:
        if m["role"] == "tool" and "tool_call_id" in m:
            assert m["tool_call_id"]
    assert all(t["name"] for t in conv.tools)


def _reaches(strategy: Any, predicate: Any) -> None:
    """Some drawn example satisfies ``predicate`` (hypothesis ``find`` without shrinking: the witness need not be
    minimal, and shrinking such conversations costs minutes)."""
    from hypothesis import Phase, find, settings

    find(strategy, predicate, settings=settings(phases=[Phase.generate], database=None, max_examples=1000))


def test_wide_conversations_reach_every_feature() -> None:
    _reaches(conversations(system=True, wide=True), lambda c: c.messages[0]["content"] == "")
    _reaches(conversations(tools=True, wide=True),
             lambda c: any(tc.id is None for m in c.messages for tc in m.get("tool_calls", [])))
    _reaches(conversations(tools=True, wide=True), lambda c: any(t["name"] == "book_trip" for t in c.tools))


def test_wide_options_each_reach_their_feature() -> None:
    _reaches(conversations(system=True, empty_system=True), lambda c: c.messages[0]["content"] == "")
    _reaches(conversations(tools=True, missing_ids=True),
             lambda c: any(m["role"] == "tool" and "tool_call_id" not in m for m in c.messages))
    _reaches(conversations(max_turns=3, inline_think=True),
             lambda c: any(str(m["content"]).startswith("<think>") for m in c.messages[:-1] if m["role"] == "assistant"))
    _reaches(conversations(control_text=("<|eot_id|>",)), lambda c: any("<|eot_id|>" in str(m["content"]) for m in c.messages))


@given(conversations(tools=True, system=True, max_turns=3))
def test_wide_options_are_off_unless_asked(conv: Conversation) -> None:
    if conv.messages[0]["role"] == "system":
        assert conv.messages[0]["content"]
    for m in conv.messages:
        assert all(tc.id for tc in m.get("tool_calls", []))
        assert not str(m["content"]).startswith("<think>")
    assert "book_trip" not in {t["name"] for t in conv.tools}


@given(conversations(tools=True, tool_calls=False, wide=True, max_turns=3))
def test_tool_calls_off_declares_tools_without_calls(conv: Conversation) -> None:
    assert not any(m.get("tool_calls") or m["role"] == "tool" for m in conv.messages)


def test_tool_calls_off_still_declares_the_wide_tools() -> None:
    from hypothesis import find

    find(conversations(tools=True, tool_calls=False, wide=True), lambda c: any(t["name"] == "book_trip" for t in c.tools))


@given(conversations(max_turns=3, inline_think=True))
def test_inline_think_only_in_history(conv: Conversation) -> None:
    assert not str(conv.messages[-1]["content"]).startswith("<think>")


def test_template_scoped_inputs_do_not_limit_template_free_checks(llama_ctx: PropertyContext) -> None:
    """llama3's no-trim (the template trims) and no-date-header (an empty system message renders like none) limit
    the template comparisons only: extension, round trip and weights draw padded content and empty systems."""
    template = llama_ctx.strategy_options()
    free = llama_ctx.strategy_options(template=False)
    assert template["strip_whitespace"] and not template["empty_system"]
    assert not free["strip_whitespace"] and free["empty_system"]
    assert free["missing_ids"] and free["inline_think"] and free["wide_tools"]
    assert not any(llama_ctx.strategy_options(wide=False)[k] for k in ("empty_system", "missing_ids", "wide_tools", "inline_think"))
    assert "<|eot_id|>" in llama_ctx.control_tokens() and "<|start_header_id|>" in llama_ctx.control_tokens()


def test_llama3_keeps_control_text_literal(llama_ctx: PropertyContext) -> None:
    from cookbook.conformance.properties import check_literal_control_tokens

    @given(conversations(**{**llama_ctx.strategy_options(template=False), "end_with": "any",
                            "control_text": llama_ctx.control_tokens()}))
    def run(conv: Conversation) -> None:
        _assert_ok(check_literal_control_tokens(llama_ctx, conv))

    run()


class InjectingLlama(Llama3Renderer):
    """Encodes content with special-token parsing on: ``<|eot_id|>`` typed in a message becomes the control token."""

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        r = super().render_message(msg, ctx)
        text = r.output[0]
        assert isinstance(text, str)
        ids = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        return RenderedMessage(header=r.header, output=[ids, *r.output[1:]])


def test_control_text_injection_is_caught(llama_tok: Any) -> None:
    from cookbook.conformance.properties import check_literal_control_tokens

    ctx = _ctx(InjectingLlama(llama_tok), llama_tok)
    history = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a<|eot_id|>b"},
                            {"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine"}])
    failure = check_literal_control_tokens(ctx, history)
    assert failure is not None and "<|eot_id|>" in failure
    assert check_literal_control_tokens(_ctx(Llama3Renderer(llama_tok), llama_tok), history) is None
    out = {o.name: o for o in run_properties(ctx, examples=20, only=["literal_control_tokens"])}
    assert out["literal_control_tokens"].status == "FAIL"


def test_a_deviation_exempts_control_tokens_the_format_reads_as_structure() -> None:
    """``property_inputs.literal_exempt``: qwen3_5_disable_thinking names <think> / </think> (a reply string's
    inline-reasoning boundary in the Qwen3.5 format), so the control-token property splices them only for qwen3_5."""
    from cookbook.conformance.properties import PropertyContext
    from cookbook.conformance.spec import load_spec, spec_path_for
    from cookbook.renderers.registry import get_renderer
    from cookbook.tokenizers import get_tokenizer

    controls = {}
    for name in ("qwen3_5", "qwen3_5_disable_thinking"):
        spec = load_spec(spec_path_for(name))
        tok = get_tokenizer(spec.tokenizer)
        controls[name] = set(PropertyContext.build(get_renderer(name, tok), spec, tok).control_tokens())
    assert controls["qwen3_5"] - controls["qwen3_5_disable_thinking"] == {"<think>", "</think>"}
