"""Images in the TMLv0 renderer (``tml_v0``, Inkling): a ``<|content_image|>`` message per image part, its
``ImageChunk`` of :data:`cookbook.renderers.kit.vision.INKLING` tokens.

Oracle: tml-renderers 0.2.1's ``v0.Renderer`` with its ``O200kBaseChatTokenizer`` (Thinking Machines' official
renderer; test-time only): token ids, per-token SFT weights, each image's position and token count. The renderer is
built without the thinking-effort message (``effort=None``) so that both render the same messages; the effort path is
the tml_v0 spec's.
"""

from __future__ import annotations

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

from cookbook.renderers import TrainOnWhat
from cookbook.renderers.kit.vision import INKLING, vision_config_for_model
from cookbook.renderers.tml_v0 import TmlV0Renderer
from cookbook.tokenizers import get_tokenizer

# every branch of the count: below, at and above one patch (40 px) on each side, exact multiples, large and thin
SIZES = [(1, 1), (39, 39), (40, 40), (41, 41), (79, 80), (80, 79), (64, 48), (100, 37), (500, 3), (1000, 20),
         (640, 480), (2000, 3000), (8192, 40), (40, 8192), (20000, 1), (1, 20000)]


@pytest.fixture(scope="module")
def ours() -> TmlV0Renderer:
    return TmlV0Renderer(get_tokenizer("thinkingmachines/Inkling"), effort=None)


@pytest.fixture(scope="module")
def tml() -> Any:
    tml_renderers()
    from tml_renderers import tokenizers, v0

    return v0.Renderer(tokenizers.O200kBaseChatTokenizer())


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_image_prompt_matches_tml(ours: TmlV0Renderer, tml: Any, size: tuple[int, int]) -> None:
    assert_image_prompt_matches_tml(ours, tml, size, INKLING)


def test_two_images_text_runs_and_sft_weights_match_tml(ours: TmlV0Renderer, tml: Any) -> None:
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [image(40, 40, 1), {"type": "text", "text": "and"}, {"type": "text", "text": " this"},
                                     image(300, 90, 2)]},
        {"role": "assistant", "content": "The second is wider."},
        {"role": "user", "content": [image(64, 64, 3)]},
        {"role": "assistant", "content": "A gradient."},
    ]
    assert_prompt_matches_tml(ours, tml, convo[:-1])
    assert_sft_matches_tml(ours, tml, convo, TrainOnWhat.ALL_ASSISTANT_MESSAGES)  # tml trains every model message


@pytest.mark.parametrize("role", ["tool", "assistant", "system"])
def test_images_in_every_role_match_tml(ours: TmlV0Renderer, tml: Any, role: str) -> None:
    """tml writes an image part as a ``<|content_image|>`` message of the part's role in every role."""
    convo = role_convos(call_id="call_1")[role]
    assert len(assert_prompt_matches_tml(ours, tml, convo[:-1])) == 1
    assert_sft_matches_tml(ours, tml, convo, TrainOnWhat.ALL_ASSISTANT_MESSAGES)


def test_image_in_a_reasoning_reply_matches_tml_and_is_never_trained(ours: TmlV0Renderer, tml: Any) -> None:
    convo = [{"role": "user", "content": "Draw a square."},
             {"role": "assistant", "content": [{"type": "thinking", "thinking": "A grey one."},
                                               {"type": "text", "text": "Here:"}, image(32, 32, 4)]}]
    assert_sft_matches_tml(ours, tml, convo, TrainOnWhat.ALL_ASSISTANT_MESSAGES)
    tokens, weights = ours.supervised_tokens(convo)  # type: ignore[arg-type]
    # the <|content_image|> token opening the image message is output (trained); the image's positions are not
    at_pad = [w for t, w in zip(tokens, weights, strict=True) if t == ours.image_pad]
    assert at_pad == [1.0] + [0.0] * INKLING.num_tokens(32, 32)


def test_text_parts_are_a_message_each_as_tml_writes_them(ours: TmlV0Renderer, tml: Any) -> None:
    """A list of text parts (no image) in a system or user message: a ``<|content_text|>`` message per part, as tml
    writes it (the renderer joined them into one message before images came in)."""
    convo = [{"role": "system", "content": [{"type": "text", "text": "Be"}, {"type": "text", "text": " brief."}]},
             {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
             {"role": "assistant", "content": "Hello!"}]
    assert_prompt_matches_tml(ours, tml, convo[:-1])
    assert_sft_matches_tml(ours, tml, convo, TrainOnWhat.ALL_ASSISTANT_MESSAGES)


def test_the_mock_knows_the_inkling_image_layout() -> None:
    assert vision_config_for_model("thinkingmachines/Inkling") is INKLING
    assert vision_config_for_model("thinkingmachines/Inkling-Small") is INKLING
    assert INKLING.num_tokens(640, 480) == 17 * 12
