"""Differential test against tml-renderers, Thinking Machines' official native renderers.

For every spec with a ``tml:`` section, random conversations (tools, reasoning, multi-turn, per the spec's
claims) are rendered with the registered renderer and with the official renderer; supervised token ids and
weights and generation-prompt ids must agree token-exact, or the disagreement must be one of the spec's named
``tml.differences``. Skipped when tml_renderers (which imports torch) is not installed.

The full differential (every renderer name, ``COOKBOOK_TML_EXAMPLES`` conversations each) is ``nox -s tml``
(200 each): a heavy peer comparison, so it has a session of its own and the default suite keeps it off its
10-minute budget. Without ``COOKBOOK_TML_EXAMPLES`` set, the suite runs the same code on three names (``SAMPLE``,
5 conversations each), so the differential machinery itself stays tested; the goldens of the
``tml_renderers`` specs (tml's own output) are checked in full by the suite either way.
"""

from __future__ import annotations

import os

import pytest

from cookbook.conformance import tml
from cookbook.conformance.spec import Spec, all_spec_paths, load_spec

if not tml.available():
    pytest.skip("tml_renderers is not importable (pip install tml-renderers==0.2.1, needs torch)", allow_module_level=True)

FULL = "COOKBOOK_TML_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("COOKBOOK_TML_EXAMPLES", "5"))
ALL_SPECS = [s for s in (load_spec(p) for p in all_spec_paths()) if s.tml is not None]
#: the suite's sample (nox -s tml runs every name): a template-oracle family, a tml-oracle one and a
#: vision-language one (its random conversations carry image parts)
SAMPLE = ("qwen3", "deepseekv4_1", "qwen3_vl")
SPECS = ALL_SPECS if FULL else [s for s in ALL_SPECS if s.renderer in SAMPLE]


@pytest.mark.parametrize("spec", SPECS, ids=[s.renderer for s in SPECS])
def test_renderer_agrees_with_tml(spec: Spec) -> None:
    result = tml.differential(spec, examples=EXAMPLES)
    print(
        f"\n{spec.renderer} vs {result.oracle}: compared {result.compared}, agreements {result.agreements}, "
        f"named differences {result.named}, features {dict(sorted(result.features.items()))}"
    )
    assert result.compared > 0
    if FULL and result.images:  # a vision-language renderer: images must be among 200 random conversations
        assert result.features.get("images", 0) >= result.compared // 10, result.features
    assert not result.unexplained, (
        f"{len(result.unexplained)} of {result.compared} conversations differ from {result.oracle} in a way "
        f"specs/renderers/{spec.renderer}.yaml does not name (tml.differences); first:\n{result.unexplained[0]}"
    )


def test_every_named_difference_uses_known_features() -> None:
    for spec in ALL_SPECS:
        assert spec.tml is not None
        for d in spec.tml.differences:
            assert d.reason.strip() and set(d.when) <= set(tml.FEATURES)


def test_vision_conversations_carry_images_that_tml_reads() -> None:
    """The random conversations of a vision-language renderer hold image parts in user messages and tool results;
    the oracle's message translation turns each into tml's ImagePointer (format and size from the PNG header)."""
    from hypothesis import HealthCheck, given, settings

    from cookbook.testing.strategies import conversations

    seen: dict[str, int] = {"user": 0, "tool": 0}

    @settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(conversations(tools=True, images=True))
    def draw(conv: object) -> None:
        msgs = conv.messages  # type: ignore[attr-defined]
        for m in msgs:
            if isinstance(m["content"], list) and any(p["type"] == "image" for p in m["content"]):
                seen[m["role"]] += 1
        ml = tml.to_tml_messages(msgs, conv.tools)  # type: ignore[attr-defined]
        pointers = [c for msg in ml.messages for c in ([msg.content] if not isinstance(msg.content, list) else msg.content)
                    if type(c).__name__ == "ImagePointer"]
        n_images = sum(1 for m in msgs if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image")
        assert len(pointers) == n_images

    draw()
    assert seen["user"] > 0 and seen["tool"] > 0, seen


def test_features_of_a_conversation() -> None:
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "1", "tool_call_id": "c"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "x"}]},
    ]
    assert tml.conversation_features(msgs) == {"tool_calls", "thinking"}
    assert "empty_assistant" in tml.conversation_features([{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}])
    img = {"type": "image", "image": b"png"}
    assert tml.conversation_features([{"role": "user", "content": [{"type": "text", "text": "a"}, img]}]) == {"images"}
    for text, at in (("a ", 1), ("\nb", 0)):
        parts = [{"type": "text", "text": text}]
        parts.insert(at, img)  # text before the image ends, or text after it starts, with whitespace
        assert "image_beside_space" in tml.conversation_features([{"role": "user", "content": parts}])


def test_images_become_one_placeholder_token_for_goldens() -> None:
    """A tml rendering's image (``num_tokens`` positions of IMAGE) becomes the one image_token a template writes,
    its weight the largest over its positions; text tokens and their weights are kept."""
    r = tml.TmlRendered([5, tml.IMAGE, tml.IMAGE, tml.IMAGE, 6, tml.IMAGE, 7], [0, 0, 1, 0, 1, 0, 1], "")
    out = r.with_placeholder(99, lambda ids: ",".join(map(str, ids)))
    assert out.tokens == [5, 99, 6, 99, 7] and out.weights == [0, 1, 1, 0, 1] and out.text == "5,99,6,99,7"
    prompt = tml.TmlRendered([1, tml.IMAGE, tml.IMAGE], [], "").with_placeholder(99, str)
    assert prompt.tokens == [1, 99] and prompt.weights == []
    assert tml.show_tokens(lambda ids: "t" * len(ids), [1, 2, tml.IMAGE, tml.IMAGE, 3]) == "tt<image: 2 tokens>t"
