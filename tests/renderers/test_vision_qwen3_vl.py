"""Images in the Qwen3-VL Instruct renderer (``qwen3_vl_instruct``): ``ImageChunk`` s with Qwen3-VL's token
count and the ``<|vision_start|>`` / ``<|vision_end|>`` markers.

Oracle: tml-renderers 0.2.1's ``Qwen3.vision_instruct()`` (Thinking Machines' official
renderers; need torch, test-time only): token-exact ids of generation prompts and SFT examples, their weights, and
each image's position and token count (``num_tokens``). No Qwen3-VL chat template reaches a registry, so the
template is not an oracle here (the spec files say so).

The images are PNGs written here with zlib/struct (:func:`cookbook.renderers.kit.vision.make_png`).
"""

from __future__ import annotations

from typing import Any

import pytest
from vision_helpers import (
    assert_prompt_matches_tml,
    assert_sft_matches_tml,
    image,
    image_convo,
    png,
    role_convos,
    tml_renderers,
)

from cookbook.errors import RendererError
from cookbook.renderers import TrainOnWhat, get_renderer
from cookbook.renderers.base import ParseTermination
from cookbook.renderers.kit.vision import QWEN3_VL, make_png
from cookbook.tokenizers import get_tokenizer

NAMES = {"qwen3_vl_instruct": "vision_instruct", "qwen3_vl": "vision"}  # ours -> tml-renderers' Qwen3 constructor
SIZES = [(32, 32), (64, 48), (100, 37), (8, 8), (640, 480), (2000, 3000), (500, 3)]


@pytest.fixture(scope="module")
def tok() -> Any:
    return get_tokenizer("Qwen/Qwen3-VL-30B-A3B-Instruct")


@pytest.fixture(scope="module", params=sorted(NAMES))
def pair(request: Any, tok: Any) -> tuple[Any, Any]:
    return get_renderer(request.param, tok), getattr(tml_renderers().Qwen3, NAMES[request.param])()


_convo = image_convo


@pytest.mark.parametrize("size", SIZES)
def test_generation_prompt_matches_tml(pair: tuple[Any, Any], size: tuple[int, int]) -> None:
    ours, tml = pair
    imgs = assert_prompt_matches_tml(ours, tml, _convo(*size)[:1])
    assert imgs[0][1] == QWEN3_VL.num_tokens(*size)
    assert imgs[0][2] == png(*size)


@pytest.mark.parametrize("size", [(64, 48), (640, 480)])
def test_supervised_example_matches_tml(pair: tuple[Any, Any], size: tuple[int, int]) -> None:
    ours, tml = pair
    assert_sft_matches_tml(ours, tml, _convo(*size))


def test_two_images_text_between_and_history(pair: tuple[Any, Any]) -> None:
    ours, tml = pair
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image", "image": make_png(40, 40, 1)},
            {"type": "text", "text": "and"},
            {"type": "image", "image": make_png(300, 90, 2)},
        ]},
        {"role": "assistant", "content": "The second is wider."},
        {"role": "user", "content": [{"type": "image", "image": make_png(64, 64, 3)}]},
    ]
    assert_prompt_matches_tml(ours, tml, convo)


@pytest.mark.parametrize("role", ["tool", "assistant", "system"])
def test_images_in_every_role_match_tml(pair: tuple[Any, Any], role: str) -> None:
    """tml-renderers' Qwen3.vision() / vision_instruct() write an image part in place in a tool result, an assistant
    message and a system message alike: ids, images and weights (prompt and SFT example)."""
    ours, tml = pair
    convo = role_convos(call_id="call_1")[role]
    assert len(assert_prompt_matches_tml(ours, tml, convo[:-1])) == 1
    assert_sft_matches_tml(ours, tml, convo, example=-1)


def test_image_in_a_trained_reply_is_never_trained(pair: tuple[Any, Any]) -> None:
    ours, tml = pair
    convo = [{"role": "user", "content": "Draw a square."},
             {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, image(32, 32, 4)]}]
    assert_sft_matches_tml(ours, tml, convo, example=-1)
    tokens, weights = ours.supervised_tokens(convo)
    assert [w for t, w in zip(tokens, weights, strict=True) if t == ours.image_pad] == [0.0] * QWEN3_VL.num_tokens(32, 32)


def test_a_tool_result_with_text_and_an_image_is_one_tool_response(tok: Any) -> None:
    """Named difference from tml-renderers: tml writes each part of a tool message as a tool response of its own
    (it splits a multi-part message into messages); the renderer writes the message's parts in one
    ``<tool_response>``, as the Qwen3.5 template (same family, same format) writes tool content."""
    r = get_renderer("qwen3_vl_instruct", tok)
    convo = role_convos(call_id="call_1")["tool"]
    convo[2] = {**convo[2], "content": [{"type": "text", "text": "Screenshot:"}, image(40, 40, 1)]}
    text = r.decode(r.generation_prompt_tokens(convo[:-1]))
    assert text.count("<tool_response>") == 1
    assert "<tool_response>\nScreenshot:<|vision_start|>" + "<|image_pad|>" * QWEN3_VL.num_tokens(40, 40) in text


@pytest.mark.parametrize("history_thinks", [False, True])
def test_thinking_turn_with_images_matches_tml(tok: Any, history_thinks: bool) -> None:
    """qwen3_vl: a reasoning reply after images and an earlier turn (its reasoning stripped from history); ids and
    weights of the generation prompt and of the last SFT example as tml's (tml starts a new example where history
    reasoning is stripped, so its last example is the one with the trained reply)."""
    ours, tml = get_renderer("qwen3_vl", tok), tml_renderers().Qwen3.vision()
    earlier: Any = [{"type": "thinking", "thinking": "Four equal sides."}, {"type": "text", "text": "A square."}]
    convo: list[Any] = [
        {"role": "user", "content": [{"type": "image", "image": make_png(48, 48, 4)}, {"type": "text", "text": "Shape?"}]},
        {"role": "assistant", "content": earlier if history_thinks else "A square."},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}, {"type": "image", "image": make_png(80, 40, 5)}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "A gradient\nof grey."}, {"type": "text", "text": "Grey."}]},
    ]
    assert_prompt_matches_tml(ours, tml, convo[:-1])
    assert_sft_matches_tml(ours, tml, convo, example=-1)


def test_qwen3_vl_parses_a_response_that_starts_inside_the_think_block(tok: Any) -> None:
    """The prompt ends with ``<think>\n``, so the sampled text opens with the reasoning and closes the block."""
    r = get_renderer("qwen3_vl", tok)
    sampled = [*tok.encode("A gradient.\n</think>\n\nGrey.", add_special_tokens=False), r.get_stop_sequences()[0]]
    msg, termination = r.parse_response(sampled)
    assert termination == ParseTermination.STOP_SEQUENCE
    assert msg["content"] == [{"type": "thinking", "thinking": "A gradient."}, {"type": "text", "text": "Grey."}]


# ---------------------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", sorted(NAMES))
def test_image_positions_are_never_trained(tok: Any, name: str) -> None:
    r: Any = get_renderer(name, tok)
    n = QWEN3_VL.num_tokens(64, 48)
    for mode in TrainOnWhat:
        if mode is TrainOnWhat.CUSTOMIZED:
            continue
        tokens, weights = r.supervised_tokens(_convo(64, 48), mode)
        assert [w for t, w in zip(tokens, weights, strict=True) if t == r.image_pad] == [0.0] * n
        assert len(tokens) == r.build_supervised_example(_convo(64, 48), mode)[0].length


@pytest.mark.parametrize("name", sorted(NAMES))
def test_bad_images_are_refused(tok: Any, name: str) -> None:
    r = get_renderer(name, tok)
    with pytest.raises(RendererError):
        r.build_generation_prompt([{"role": "user", "content": [{"type": "image", "image": b"not an image"}]}])
    with pytest.raises(RendererError):  # in an assistant message too
        r.build_supervised_example([{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": [{"type": "image", "image": b"GIF89a"}]}])


def test_text_only_qwen3_still_refuses_images(tok: Any) -> None:
    with pytest.raises(RendererError):
        get_renderer("qwen3_instruct", tok).build_generation_prompt(_convo(32, 32)[:1])
