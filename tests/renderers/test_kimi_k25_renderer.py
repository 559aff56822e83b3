"""Kimi K2.5 / K2.6 renderers (kimi_k25, kimi_k25_disable_thinking, kimi_k26*, options of the Kimi K2 family).

The spec cases, goldens and property checks run through tests/renderers/test_conform_runner.py and the random
differential against tml-renderers through tests/renderers/test_vs_tml.py. That differential must excuse every
conversation with tool calls under the named difference ``given-tool-call-ids`` (random ids such as ``call_1``,
which KimiK25 writes verbatim and the renderer rewrites to ``functions.NAME:IDX``); the test here closes that gap:
the same random conversations with native ids must agree with the official renderer token for token.

Oracle: tml-renderers 0.2.1's ``KimiK25`` (Thinking Machines' official renderer; test-time only, it imports torch):
token ids, per-token SFT weights and image chunk sizes. Images and the tml comparisons: tests/renderers/vision_helpers.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from vision_helpers import (
    assert_image_prompt_matches_tml,
    assert_prompt_matches_tml,
    assert_sft_matches_tml,
    image,
    role_convos,
    tml_renderers,
)

from cookbook.conformance import tml
from cookbook.conformance.spec import load_spec, spec_path_for
from cookbook.errors import RendererError
from cookbook.renderers import ParseTermination, ToolCall, TrainOnWhat, get_renderer
from cookbook.renderers.base import Message
from cookbook.renderers.kimi_k2 import KimiK2Renderer
from cookbook.renderers.kit.vision import MOONVIT, make_png, vision_config_for_model
from cookbook.renderers.registry import builtin_renderer
from cookbook.tokenizers import get_tokenizer

WEATHER = {
    "name": "get_weather",
    "description": "Température à Zürich",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("moonshotai/Kimi-K2.5")


@pytest.fixture(scope="module")
def k25(tok: Any) -> KimiK2Renderer:
    r = get_renderer("kimi_k25", tok)
    assert isinstance(r, KimiK2Renderer)
    return r


@pytest.fixture(scope="module")
def off(tok: Any) -> KimiK2Renderer:
    r = get_renderer("kimi_k25_disable_thinking", tok)
    assert isinstance(r, KimiK2Renderer)
    return r


@pytest.fixture(scope="module")
def keep(tok: Any) -> KimiK2Renderer:
    r = get_renderer("kimi_k26_preserve_thinking", tok)
    assert isinstance(r, KimiK2Renderer)
    return r


@pytest.fixture(scope="module")
def by_name(k25: KimiK2Renderer, off: KimiK2Renderer, keep: KimiK2Renderer) -> dict[str, KimiK2Renderer]:
    """One renderer per distinct option set (building one parses the tokenizer again: seconds each)."""
    return {"kimi_k25": k25, "kimi_k25_disable_thinking": off, "kimi_k26_preserve_thinking": keep}


def _think(reasoning: str, text: str, **extra: Any) -> Message:
    return {"role": "assistant", "content": [{"type": "thinking", "thinking": reasoning}, {"type": "text", "text": text}], **extra}  # type: ignore[typeddict-item]


# ---------------------------------------------------------------------------------------------- behaviour


def test_prompt_opens_the_think_block_without_default_system(k25: KimiK2Renderer, off: KimiK2Renderer) -> None:
    msgs: list[Message] = [{"role": "user", "content": "Hi"}]
    base = "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
    assert k25.decode(k25.generation_prompt_tokens(msgs)) == base + "<think>"
    assert off.decode(off.generation_prompt_tokens(msgs)) == base + "<think></think>"


def test_trained_output_starts_after_the_prompt(k25: KimiK2Renderer, off: KimiK2Renderer) -> None:
    convo: list[Message] = [{"role": "user", "content": "Hi"}, _think("greet", "Hello!")]
    tokens, weights = k25.supervised_tokens(convo)
    assert k25.decode([t for t, w in zip(tokens, weights) if w]) == "greet</think>Hello!<|im_end|>"
    tokens, weights = off.supervised_tokens([convo[0], {"role": "assistant", "content": "Hello!"}])
    assert off.decode([t for t, w in zip(tokens, weights) if w]) == "Hello!<|im_end|>"


def test_disable_thinking_drops_history_reasoning_and_refuses_trained_reasoning(off: KimiK2Renderer) -> None:
    convo: list[Message] = [{"role": "user", "content": "Hi"}, _think("greet", "Hello!"), {"role": "user", "content": "Bye"}]
    text = off.decode(off.generation_prompt_tokens(convo))
    assert "greet" not in text and "<think></think>Hello!<|im_end|>" in text
    with pytest.raises(RendererError):
        off.supervised_tokens([*convo, _think("leaving", "Bye!")])
    # the reasoning of a message that is not trained is no reason to refuse
    off.supervised_tokens([*convo, {"role": "assistant", "content": "Bye!"}])


def test_parse_reads_the_response_from_inside_the_think_block(k25: KimiK2Renderer, off: KimiK2Renderer, tok: Any) -> None:
    def parse(r: KimiK2Renderer, text: str) -> tuple[Message, ParseTermination]:
        return r.parse_response(tok.encode(text, add_special_tokens=False))

    msg, term = parse(k25, "greet</think>Hello!<|im_end|>")
    assert term is ParseTermination.STOP_SEQUENCE
    assert msg["content"] == [{"type": "thinking", "thinking": "greet"}, {"type": "text", "text": "Hello!"}]
    assert parse(k25, "<think>greet</think>Hello!<|im_end|>")[0]["content"] == msg["content"]
    assert parse(k25, "still thinking<|im_end|>")[0]["content"] == [{"type": "thinking", "thinking": "still thinking"}]
    assert parse(k25, "</think>Hello!<|im_end|>")[0]["content"] == "Hello!"
    assert parse(off, "a</think>b<|im_end|>")[0]["content"] == "a</think>b"


def test_tool_prefix_is_compact_sorted_json_and_no_default_system(k25: KimiK2Renderer) -> None:
    prefix = k25.create_conversation_prefix_with_tools([WEATHER])
    assert [m["role"] for m in prefix] == ["tool_declare"]
    decl = prefix[0]["content"]
    assert isinstance(decl, str) and ", " not in decl and "Zürich" in decl
    assert json.loads(decl) == [{"type": "function", "function": WEATHER}]
    assert decl.index('"function"') < decl.index('"type":"function"}')  # keys sorted at every level
    assert [m["role"] for m in k25.create_conversation_prefix_with_tools([WEATHER], "Be brief.")] == ["tool_declare", "system"]


def test_k25_options_need_the_k25_format(tok: Any) -> None:
    with pytest.raises(ValueError):
        KimiK2Renderer(tok, thinking=True, enable_thinking=False)
    with pytest.raises(ValueError):
        KimiK2Renderer(tok, preserve_thinking=True)


def test_extension_claims(by_name: dict[str, KimiK2Renderer]) -> None:
    assert {n: r.has_extension_property for n, r in by_name.items()} == {
        "kimi_k25": False, "kimi_k25_disable_thinking": True, "kimi_k26_preserve_thinking": True}
    # K2.6's thinking and disable-thinking names are the K2.5 options
    assert builtin_renderer("kimi_k26").options == builtin_renderer("kimi_k25").options
    assert builtin_renderer("kimi_k26_disable_thinking").options == builtin_renderer("kimi_k25_disable_thinking").options


# ---------------------------------------------------------------------------------------------- tml oracle

needs_tml = pytest.mark.skipif(not tml.available(), reason="tml-renderers 0.2.1 (test extra, needs torch) is the oracle")



def _native_ids(messages: list[Message]) -> list[Message]:
    """Every tool call's id as ``functions.{name}:{k}`` (k counting the calls of the conversation) and each tool
    response's ``tool_call_id`` renamed to match: the ids the model samples, for which the format is unambiguous."""
    out: list[Message] = []
    rename: dict[str, str] = {}
    k = 0
    for m in messages:
        m = dict(m)  # type: ignore[assignment]
        calls = m.get("tool_calls")
        if calls:
            new = []
            for c in calls:
                cid = f"functions.{c.name}:{k}"
                if c.id:
                    rename[c.id] = cid
                new.append(ToolCall(name=c.name, arguments=c.arguments, id=cid))
                k += 1
            m["tool_calls"] = new
        if m["role"] == "tool" and m.get("tool_call_id") in rename:
            m["tool_call_id"] = rename[str(m["tool_call_id"])]
        out.append(m)
    return out


@needs_tml
@pytest.mark.parametrize("name", ["kimi_k25", "kimi_k25_disable_thinking", "kimi_k26_preserve_thinking"])
def test_random_conversations_with_native_ids_agree_with_tml(name: str, tok: Any, by_name: dict[str, KimiK2Renderer]) -> None:
    """tml's differential on conversations whose tool calls carry the ids the model samples: then the spec's only
    named difference (given-tool-call-ids) cannot apply, so every conversation, images included, agrees exactly."""
    spec = load_spec(spec_path_for(name))
    examples = int(os.environ.get("COOKBOOK_TML_EXAMPLES", "20"))  # nox -s tml: 200
    result = tml.differential(spec, examples=examples, renderer=by_name[name], tokenizer=tok, transform=_native_ids)
    assert result.agreements == result.compared, (result.named, result.unexplained[:1])
    assert result.features.get("tool_calls"), "no conversation with tool calls was generated: the test would prove nothing"
    if by_name[name].supports_images:
        assert result.features.get("images"), "no conversation with an image was generated"


@pytest.fixture(scope="module")
def tml_k25() -> Any:
    return tml_renderers().KimiK25()


# sizes that exercise every branch of the resize: tiny, exact multiples, the one-side limit (7168 px), the
# 16,384-patch limit (2000 x 1700), and aspect ratios far above any limit
SIZES = [(1, 1), (13, 13), (14, 14), (27, 28), (29, 29), (64, 48), (100, 37), (500, 3), (1000, 20), (7200, 10),
         (10, 7200), (640, 480), (2000, 1700)]


@needs_tml
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_image_prompt_matches_tml(k25: KimiK2Renderer, tml_k25: Any, size: tuple[int, int]) -> None:
    assert_image_prompt_matches_tml(k25, tml_k25, size, MOONVIT)


@needs_tml
def test_images_in_history_and_sft_weights_match_tml(k25: KimiK2Renderer, tml_k25: Any) -> None:
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image", "image": make_png(40, 40, 1)}, {"type": "text", "text": "and"},
                                     {"type": "image", "image": make_png(300, 90, 2)}]},
        {"role": "assistant", "content": "The second is wider."},
        {"role": "user", "content": [{"type": "image", "image": make_png(64, 64, 3)}]},
        {"role": "assistant", "content": "A gradient."},
    ]
    # tml trains every model message by default
    imgs = assert_sft_matches_tml(k25, tml_k25, convo, TrainOnWhat.ALL_ASSISTANT_MESSAGES)
    for mode in (TrainOnWhat.ALL_MESSAGES, TrainOnWhat.ALL_TOKENS):  # image positions are never trained
        tokens, w = k25.supervised_tokens(convo, mode)  # type: ignore[arg-type]
        assert [x for t, x in zip(tokens, w) if t == k25.media_pad] == [0.0] * sum(n for _, n, _ in imgs)


@needs_tml
@pytest.mark.parametrize("role", ["tool", "assistant", "system"])
def test_images_in_every_role_match_tml(k25: KimiK2Renderer, tml_k25: Any, role: str) -> None:
    """KimiK25 writes an image part in place in a tool result, an assistant message and a system message alike:
    ids, images and weights (prompt and SFT example; tml trains every model message by default)."""
    convo = role_convos()[role]
    assert len(assert_prompt_matches_tml(k25, tml_k25, convo[:-1])) == 1
    assert_sft_matches_tml(k25, tml_k25, convo, TrainOnWhat.ALL_ASSISTANT_MESSAGES)


@needs_tml
def test_image_in_a_trained_reply_matches_tml_and_is_never_trained(k25: KimiK2Renderer, tml_k25: Any) -> None:
    convo = [{"role": "user", "content": "Draw a square."},
             {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, image(32, 32, 4)]}]
    assert_sft_matches_tml(k25, tml_k25, convo)
    tokens, weights = k25.supervised_tokens(convo)  # type: ignore[arg-type]
    assert [w for t, w in zip(tokens, weights) if t == k25.media_pad] == [0.0] * MOONVIT.num_tokens(32, 32)


def test_bad_images_are_refused(k25: KimiK2Renderer) -> None:
    with pytest.raises(RendererError):
        k25.generation_prompt_tokens([{"role": "user", "content": [{"type": "image", "image": b"not an image"}]}])
    with pytest.raises(RendererError):
        k25.supervised_tokens([{"role": "user", "content": "Draw"},  # type: ignore[list-item]
                               {"role": "assistant", "content": [{"type": "image", "image": b"GIF89a"}]}])


def test_mock_knows_the_kimi_image_processor() -> None:
    assert vision_config_for_model("moonshotai/Kimi-K2.5") is MOONVIT
    assert vision_config_for_model("moonshotai/Kimi-K2.6") is MOONVIT
    assert vision_config_for_model("moonshotai/Kimi-K2-Thinking") is None
    assert MOONVIT.num_tokens(640, 480) == 23 * 18  # 644 x 504 after padding to multiples of 28


@needs_tml
def test_adjacent_text_parts_are_one_text_as_tml_encodes_them(k25: KimiK2Renderer, tml_k25: Any) -> None:
    """Text parts next to each other (an image before or after them) are encoded as their joined text, as
    KimiK25 encodes them: ``" "`` + ``"\\n\\n"`` is the one token ``" \\n\\n"``, not two (found by the random tml
    differential once it drew image parts)."""
    convo = [{"role": "user", "content": [image(32, 32, 1), {"type": "text", "text": "Look "}, {"type": "text", "text": "\n\n"}]},
             {"role": "assistant", "content": "A gradient."}]
    assert_prompt_matches_tml(k25, tml_k25, convo[:-1])
    assert_sft_matches_tml(k25, tml_k25, convo)
