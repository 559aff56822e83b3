"""Images in the qwen3_5 renderer: ``ImageChunk`` s with the image processor's token count.

Oracles:

* tml-renderers 0.2.1's ``Qwen35`` (Thinking Machines' official renderer; needs torch, test-time only):
  token-exact ids and weights of generation prompts and SFT examples, image chunk sizes (``num_tokens``);
* the Qwen3.5 chat template (its real tokenizer): the decoded text with the single ``<|image_pad|>`` that the
  HF processor expands to ``expected_tokens`` copies.

Template and tml-renderers disagree on whitespace next to an image: the template trims the message content as a
whole (``<|vision_end|> What`` keeps its space), tml-renderers trims each text part. The renderer follows the
template (the qwen3_5 spec's oracle); the tml comparisons use text parts without surrounding whitespace.

The images are PNGs written here with zlib/struct (:func:`cookbook.renderers.kit.vision.make_png`).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from vision_helpers import (
    assert_prompt_matches_tml,
    assert_sft_matches_tml,
    flat,
    image_convo,
    png,
    role_convos,
    tml_renderers,
)

from cookbook.errors import RendererError
from cookbook.renderers import TrainOnWhat
from cookbook.renderers.kit.vision import QWEN3_VL, data_uri, image_header, make_png
from cookbook.renderers.qwen3 import Qwen3Renderer
from cookbook.renderers.qwen3_5 import Qwen3_5Renderer
from cookbook.tokenizers import get_tokenizer

SIZES = [(32, 32), (64, 48), (100, 37), (1000, 20), (8, 8), (640, 480), (2000, 3000), (33, 31), (500, 3)]


@pytest.fixture(scope="module")
def renderer() -> Qwen3_5Renderer:
    return Qwen3_5Renderer(get_tokenizer("Qwen/Qwen3.5-4B"))


_convo = image_convo


def test_png_header_and_jpeg_header() -> None:
    assert image_header(make_png(17, 5)) == ("png", 17, 5)
    # a minimal JPEG: SOI, an APP0 segment, SOF0 with 40x30
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + bytes(9)
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 30, 40, 1) + bytes(3)
    assert image_header(b"\xff\xd8" + app0 + sof0 + b"\xff\xd9") == ("jpeg", 40, 30)
    for bad in (b"", b"GIF89a....", make_png(4, 4)[:20], b"\xff\xd8\xff\xe0\x00\x10"):
        with pytest.raises(ValueError):
            image_header(bad)


# ---------------------------------------------------------------------------------------------- tml oracle


@pytest.fixture(scope="module")
def tml() -> Any:
    return tml_renderers().Qwen35()


@pytest.mark.parametrize("size", SIZES)
def test_generation_prompt_matches_tml(renderer: Qwen3_5Renderer, tml: Any, size: tuple[int, int]) -> None:
    convo = _convo(*size)
    imgs = assert_prompt_matches_tml(renderer, tml, convo[:1])
    assert imgs[0][1] == QWEN3_VL.num_tokens(*size)
    assert imgs[0][2] == png(*size)
    mi = renderer.build_generation_prompt(convo[:1])
    assert mi.length == len(flat(mi)[0]) + imgs[0][1]


@pytest.mark.parametrize("size", [(64, 48), (640, 480)])
def test_supervised_example_matches_tml(renderer: Qwen3_5Renderer, tml: Any, size: tuple[int, int]) -> None:
    assert_sft_matches_tml(renderer, tml, _convo(*size))


def test_two_images_and_history(renderer: Qwen3_5Renderer, tml: Any) -> None:
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
    assert_prompt_matches_tml(renderer, tml, convo)


@pytest.mark.parametrize("role", ["tool", "assistant"])
def test_images_in_tool_results_and_assistant_history_match_tml(renderer: Qwen3_5Renderer, tml: Any, role: str) -> None:
    """Where template and tml-renderers agree (a one-image tool result, an assistant history message; the spec cases
    image_in_tool_result / image_in_assistant_history check the template's text): ids, images and weights."""
    convo = role_convos()[role]
    imgs = assert_prompt_matches_tml(renderer, tml, convo[:-1])
    assert len(imgs) == 1
    assert_sft_matches_tml(renderer, tml, convo, example=-1)


def test_image_in_a_system_message_is_refused(renderer: Qwen3_5Renderer) -> None:
    """The Qwen3.5 template raises 'System message cannot contain images.' (tml-renderers' Qwen35 writes the image;
    the renderer follows the template, the spec's oracle)."""
    convo = role_convos()["system"]
    with pytest.raises(RendererError):
        renderer.build_generation_prompt(convo[:-1])
    with pytest.raises(RendererError):
        renderer.build_supervised_example(convo)


# ---------------------------------------------------------------------------------------------- template oracle


def test_text_matches_template_with_expanded_pad(renderer: Qwen3_5Renderer) -> None:
    """The chat template writes one <|image_pad|>; the processor expands it to expected_tokens copies."""
    tok = renderer.tokenizer
    convo = _convo(64, 48, text=" What is this? ")
    tpl = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is this? "}]}],
        tokenize=False, add_generation_prompt=True,
    )
    n = QWEN3_VL.num_tokens(64, 48)
    expected = tpl.replace("<|image_pad|>", "<|image_pad|>" * n)
    tokens = renderer.generation_prompt_tokens(convo[:1])
    assert tok.decode(tokens) == expected


# ---------------------------------------------------------------------------------------------- behaviour


def test_image_positions_are_never_trained(renderer: Qwen3_5Renderer) -> None:
    pad = renderer.image_pad
    for mode in TrainOnWhat:
        if mode is TrainOnWhat.CUSTOMIZED:
            continue
        tokens, weights = renderer.supervised_tokens(_convo(64, 48), mode)
        assert [w for t, w in zip(tokens, weights) if t == pad] == [0.0] * QWEN3_VL.num_tokens(64, 48)
        assert len(tokens) == renderer.build_supervised_example(_convo(64, 48), mode)[0].length


def test_image_inputs_accepted(renderer: Qwen3_5Renderer, tmp_path: Any) -> None:
    data = make_png(64, 48)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    for image in (data, data_uri(data), str(path), f"file://{path}"):
        convo = [{"role": "user", "content": [{"type": "image", "image": image}]}]
        assert flat(renderer.build_generation_prompt(convo))[1][0][2] == data


@pytest.mark.parametrize(
    "image", [b"not an image", "https://example.com/cat.png", "data:image/png,abc", 42, make_png(1000, 2)]
)
def test_bad_images_raise(renderer: Qwen3_5Renderer, image: Any) -> None:
    with pytest.raises(RendererError):
        renderer.build_generation_prompt([{"role": "user", "content": [{"type": "image", "image": image}]}])


def test_text_only_renderer_refuses_images() -> None:
    r = Qwen3Renderer(get_tokenizer("Qwen/Qwen3-8B"))
    with pytest.raises(RendererError):
        r.build_generation_prompt(_convo(32, 32)[:1])
    with pytest.raises(RendererError):
        r.build_supervised_example(_convo(32, 32))


@pytest.mark.parametrize("role", ["tool", "assistant"])
def test_qwen3_8_images_in_tool_results_and_assistant_history_match_tml(tml: Any, role: str) -> None:
    """Qwen3.8 (the same renderer class; oracle tml-renderers' Qwen38, no Qwen3.8 template is public) writes a tool
    result's and an assistant message's images in place as tml does. An image in a system message stays refused, as
    the Qwen3.5 template refuses it (tml's Qwen38 writes it; qwen3_8_xhigh_reasoning.yaml names the difference)."""
    from cookbook.renderers import get_renderer

    ours = get_renderer("qwen3_8_xhigh_reasoning", get_tokenizer("Qwen/Qwen3.8-27B"))
    oracle = tml_renderers().Qwen38()
    convo = role_convos(call_id="call_1")[role]
    assert len(assert_prompt_matches_tml(ours, oracle, convo[:-1])) == 1
    assert_sft_matches_tml(ours, oracle, convo, example=-1)
    with pytest.raises(RendererError):
        ours.build_generation_prompt(role_convos()["system"][:-1])
