"""gpt-oss renderers (gpt_oss_{low,medium,high}_reasoning, gpt_oss_no_sysprompt) against their specs, the
llama.cpp gpt-oss chat template, and openai-harmony (the official renderer).

* every spec check of the conformance runner (decoded supervised text with trained spans, decoded generation
  prompt, token counts, raises, parse cases, stop sequences, claims; property checks on a few random
  conversations);
* the generation prompt's TOKENS against ``apply_chat_template(..., add_generation_prompt=True,
  tokenize=True)`` with the case's declared template edits (the date is pinned by the ``pinned-date`` edit);
* the generation prompt's TOKENS against openai-harmony's ``render_conversation_for_completion`` and the
  supervised text against ``render_conversation_for_training``, with the named template/harmony differences
  (the renderer follows the template): the template ends the developer instructions with ``\n\n`` when no
  tools follow, harmony does not (:func:`developer_newlines`); an empty system message gives the template no
  instructions, so the harmony conversation has none either (harmony would write an empty ``# Instructions``
  section); and the template writes a default of an enum parameter with a trailing comma and a nested object
  parameter on one line with its own whitespace, harmony indents it (:data:`HARMONY_TO_TEMPLATE_DECLARATION`);
* behaviour tests.

openai-harmony needs its vocabulary offline: ``TIKTOKEN_ENCODINGS_BASE`` is pointed at the tokenizer folder's
``harmony_vocab`` (provisioned with the gpt_oss family). The harmony tests are skipped, saying why, when the
package is not installed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from cookbook.conformance.oracle import Codec, TemplateOracle
from cookbook.conformance.spec import (
    Case,
    Spec,
    load_spec,
    to_messages,
)
from cookbook.data import specs_dir
from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, ToolSpec, TrainOnWhat
from cookbook.renderers.base import Message, model_input_tokens, text_of, thinking_of
from cookbook.renderers.gpt_oss import (
    DEFAULT_DATE,
    GptOssRenderer,
    tool_namespace,
)
from cookbook.tokenizers import get_tokenizer, tokenizer_dir

SPECS = specs_dir("renderers")
CLASSES: dict[str, str | None] = {  # registered name -> reasoning_effort
    "gpt_oss_low_reasoning": "low",
    "gpt_oss_medium_reasoning": "medium",
    "gpt_oss_high_reasoning": "high",
    "gpt_oss_no_sysprompt": None,
}


@pytest.fixture(scope="module")
def specs() -> dict[str, Spec]:
    return {n: load_spec(SPECS / f"{n}.yaml") for n in CLASSES}


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("openai/gpt-oss-20b")


@pytest.fixture(scope="module")
def renderers(tok: Any) -> dict[str, GptOssRenderer]:
    return {n: GptOssRenderer(tok, effort) for n, effort in CLASSES.items()}


@pytest.fixture(scope="module")
def harmony() -> Any:
    os.environ.setdefault(
        "TIKTOKEN_ENCODINGS_BASE", str(tokenizer_dir("openai/gpt-oss-20b") / "harmony_vocab")
    )
    h = pytest.importorskip(
        "openai_harmony", reason="openai-harmony is not installed (pip install openai-harmony==0.0.8)"
    )
    return h, h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)


def with_tools(renderer: GptOssRenderer, case: Case, messages: Any) -> list[Message]:
    msgs = to_messages(messages)
    if not case.tools:
        return msgs
    tools: list[ToolSpec] = [dict(t) for t in case.tools]  # type: ignore[misc]
    if msgs and msgs[0]["role"] == "system":
        return [*renderer.create_conversation_prefix_with_tools(tools, str(msgs[0]["content"])), *msgs[1:]]
    return [*renderer.create_conversation_prefix_with_tools(tools), *msgs]


def harmony_conversation(h: Any, renderer: GptOssRenderer, case: Case, messages: Any, training: bool) -> Any:
    """The case as an openai-harmony Conversation, built independently of the renderer: system content with
    effort and the pinned date, developer instructions and function tools, one harmony message per analysis /
    final / call / tool output. Chain of thought follows the template's rule (kept for the trained final answer
    and for tool-calling turns without a later final answer)."""
    msgs = to_messages(messages)
    out = []
    if renderer.reasoning_effort is not None:
        effort = {
            "low": h.ReasoningEffort.LOW,
            "medium": h.ReasoningEffort.MEDIUM,
            "high": h.ReasoningEffort.HIGH,
        }[renderer.reasoning_effort]
        out.append(
            h.Message.from_role_and_content(
                h.Role.SYSTEM,
                h.SystemContent.new()
                .with_reasoning_effort(effort)
                .with_conversation_start_date(DEFAULT_DATE),
            )
        )
    instructions = text_of(msgs[0]["content"]) if msgs and msgs[0]["role"] == "system" else None
    if instructions is not None:
        msgs = msgs[1:]
        instructions = instructions or None  # empty system content: no instructions (the template's rule)
    if instructions is not None or case.tools:
        dev = h.DeveloperContent.new()
        if instructions is not None:
            dev = dev.with_instructions(instructions)
        if case.tools:
            dev = dev.with_function_tools(
                [
                    h.ToolDescription.new(t["name"], t["description"], parameters=t["parameters"])
                    for t in case.tools
                ]
            )
        out.append(h.Message.from_role_and_content(h.Role.DEVELOPER, dev))
    A = h.Role.ASSISTANT
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            out.append(h.Message.from_role_and_content(h.Role.USER, text_of(m["content"])))
        elif m["role"] == "tool":
            author = h.Author.new(h.Role.TOOL, f"functions.{m['name']}")
            out.append(
                h.Message.from_author_and_content(author, text_of(m["content"]))
                .with_channel("commentary")
                .with_recipient("assistant")
            )
        else:
            calls = m.get("tool_calls") or []
            later_final = any(x["role"] == "assistant" and not x.get("tool_calls") for x in msgs[i + 1 :])
            keep = (not later_final) if calls else (training and i == len(msgs) - 1)
            if keep:
                for thought in thinking_of(m["content"]):
                    out.append(h.Message.from_role_and_content(A, thought).with_channel("analysis"))
                if calls and text_of(m["content"]):
                    out.append(
                        h.Message.from_role_and_content(A, text_of(m["content"])).with_channel("analysis")
                    )
            for c in calls:
                out.append(
                    h.Message.from_role_and_content(A, c.arguments)
                    .with_channel("commentary")
                    .with_recipient(f"functions.{c.name}")
                    .with_content_type("<|constrain|>json")
                )
            if not calls:
                out.append(h.Message.from_role_and_content(A, text_of(m["content"])).with_channel("final"))
    return h.Conversation.from_messages(out)


def developer_newlines(text: str, case: Case) -> str:
    """The one known harmony/template difference: '# Instructions\\n\\n{text}' + '\\n\\n' before <|end|> without tools."""
    msgs = case.messages
    if case.tools or not msgs or msgs[0]["role"] != "system":
        return text
    head = "# Instructions\n\n" + str(msgs[0]["content"])
    return text.replace(head + "<|end|>", head + "\n\n<|end|>", 1)


# openai-harmony's declaration of the wide tool (cookbook.testing.strategies.WIDE_TOOLS, case tools_wide_declaration)
# -> the chat template's: "// default: metric" gets the template's trailing comma, the nested object is written
# as the template's render_typescript_type writes it (one line, "\n" + 16 spaces before each property type)
HARMONY_TO_TEMPLATE_DECLARATION: tuple[tuple[str, str], ...] = (
    ('unit?: "metric" | "imperial", // default: metric\n', 'unit?: "metric" | "imperial", // default: metric,\n'),
    (
        "traveller?: {\n    name: string,\n    age?: number,\n    },\n",
        "traveller?: {\nname: \n" + " " * 16 + "string, age?: \n" + " " * 16 + "number},\n",
    ),
)


def template_declaration(text: str, case: Case) -> str:
    """harmony's text with the template's declaration of the wide tool (each edit must match once)."""
    if not any(t["name"] == "book_trip" for t in case.tools):
        return text
    for old, new in HARMONY_TO_TEMPLATE_DECLARATION:
        assert text.count(old) == 1, f"{case.id}: harmony's declaration changed: {old!r} not found once in {text!r}"
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("name", list(CLASSES))
def test_agrees_with_openai_harmony(
    name: str, specs: dict[str, Spec], tok: Any, renderers: dict[str, GptOssRenderer], harmony: Any
) -> None:
    h, enc = harmony
    spec, renderer, codec = specs[name], renderers[name], Codec(tok)
    checked = 0
    for case in spec.cases:
        if case.expect.raises is not None or any(
            spec.deviations[d].compare == "text" for d in case.deviations
        ):
            continue
        if case.expect.generation_prompt is not None and not case.prefill:
            ref = enc.render_conversation_for_completion(
                harmony_conversation(h, renderer, case, case.prompt_messages, False), h.Role.ASSISTANT
            )
            text = template_declaration(developer_newlines(codec.decode(ref), case), case)
            expected = list(ref) if text == codec.decode(ref) else codec.encode_special(text)
            got = model_input_tokens(
                renderer.build_generation_prompt(with_tools(renderer, case, case.prompt_messages))
            )
            assert got == expected, f"{case.id}: renderer {codec.decode(got)!r}\nharmony  {text!r}"
            checked += 1
        if case.expect.supervised is not None and case.train_on_what is TrainOnWhat.LAST_ASSISTANT_MESSAGE:
            cfg = h.RenderConversationConfig(auto_drop_analysis=False)
            ref = enc.render_conversation_for_training(
                harmony_conversation(h, renderer, case, case.messages, True), cfg
            )
            text = template_declaration(developer_newlines(codec.decode(ref), case), case)
            tokens, _ = renderer.supervised_tokens(with_tools(renderer, case, case.messages))
            assert codec.decode(tokens) == text, f"{case.id}: supervised text differs from openai-harmony"
            checked += 1
    assert checked >= 25


def test_reasoning_effort_and_date(tok: Any) -> None:
    r = GptOssRenderer(tok, "high", current_date="2030-01-02")
    text = r.decode(model_input_tokens(r.build_generation_prompt([{"role": "user", "content": "Hi"}])))
    assert "Current date: 2030-01-02\n\nReasoning: high\n\n" in text
    with pytest.raises(RendererError, match="reasoning_effort"):
        GptOssRenderer(tok, "extreme")
    empty = GptOssRenderer(tok, None)
    assert empty.decode(model_input_tokens(empty.build_generation_prompt([]))) == "<|start|>assistant"


def test_chain_of_thought_dropped_from_history(renderers: dict[str, GptOssRenderer]) -> None:
    r = renderers["gpt_oss_medium_reasoning"]
    think: Any = [{"type": "thinking", "thinking": "SECRET"}, {"type": "text", "text": "A"}]
    msgs: list[Any] = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": think},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": think},
    ]
    tokens, weights = r.supervised_tokens(msgs)
    assert r.decode(tokens).count("SECRET") == 1
    assert "SECRET" in r.decode([t for t, w in zip(tokens, weights) if w])
    prompt = r.decode(model_input_tokens(r.build_generation_prompt(msgs[:2])))
    assert "SECRET" not in prompt and prompt.endswith("<|channel|>final<|message|>A<|end|><|start|>assistant")


def test_parse_and_stops(renderers: dict[str, GptOssRenderer], tok: Any) -> None:
    r, codec = renderers["gpt_oss_low_reasoning"], Codec(tok)
    assert r.get_stop_sequences() == [codec.token_id("<|return|>"), codec.token_id("<|call|>")]
    msgs: list[Any] = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "R"}],
            "tool_calls": [ToolCall("f", '{"x": 1}')],
        },
    ]
    prompt = model_input_tokens(r.build_generation_prompt(msgs[:1]))
    tokens, _ = r.supervised_tokens(msgs)
    msg, term = r.parse_response(tokens[len(prompt) :])
    assert term is ParseTermination.STOP_SEQUENCE and msg["tool_calls"] == [ToolCall("f", '{"x": 1}')]
    assert msg["content"] == [{"type": "thinking", "thinking": "R"}]
    with pytest.raises(RendererError, match="no 'name'"):
        r.build_generation_prompt([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "1"}])


SCHEMA_SHAPES: list[dict[str, Any]] = [  # parameter shapes of the template's render_typescript_type macro
    {"type": "string", "enum": ["é", 'q"uote'], "default": "é"},
    {"type": "string", "nullable": True, "description": "a nullable string"},
    {"type": "number", "default": 1.5},
    {"type": "boolean", "default": False},
    {"type": "array", "items": {"type": "integer"}},
    {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
    {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}, "nullable": True},
    {"type": "array"},
    {"type": ["string", "null"]},
    {"oneOf": [{"type": "string", "description": "a name"}, {"type": "number", "default": 3}]},
    {"oneOf": [{"type": "object", "properties": {"a": {"type": "number"}}}, {"type": "boolean"}]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}},
    {"type": "object"},
    {"description": "no type"},
    {"type": "string", "default": "ü"},
]


def template_developer_message(tok: Any, tools: list[Any], system: str) -> str:
    """The chat template's text from its developer message on (the template is the oracle)."""
    msgs: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": "x"}]
    text = TemplateOracle(tok).render(msgs, True, [{"type": "function", "function": t} for t in tools]).text
    return text[text.index("<|start|>developer") :]


def test_tool_declaration_matches_the_template(renderers: dict[str, GptOssRenderer], tok: Any) -> None:
    """Every parameter shape of the template's TypeScript-like rendering, one tool per shape (the oracle is the
    chat template itself), and the tools of an empty system message: a developer message with the tools only."""
    r = renderers["gpt_oss_medium_reasoning"]
    tools: list[Any] = [
        {
            "name": f"t{i}",
            "description": "Dé",
            "parameters": {"type": "object", "properties": {"p": s, "q": s}, "required": ["q"]},
        }
        for i, s in enumerate(SCHEMA_SHAPES)
    ]
    tools.append({"name": "none", "description": "no parameters", "parameters": {"type": "object"}})
    for system in ("", "Be brief."):
        want = template_developer_message(tok, tools, system)
        # a system message (even an empty one) followed by the tool_declare message, written directly
        msgs: list[Any] = [
            {"role": "system", "content": system},
            {"role": "tool_declare", "content": tool_namespace(tools)},
            {"role": "user", "content": "x"},
        ]
        got = r.decode(model_input_tokens(r.build_generation_prompt(msgs)))
        assert got[got.index("<|start|>developer") :] == want
