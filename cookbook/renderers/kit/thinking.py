"""Reasoning in assistant messages: where it is, whether there is any, and the ``<think>`` framing of templates."""

from __future__ import annotations

from cookbook.renderers.base import ContentPart, Message, text_of, thinking_of

THINK, END_THINK = "<think>", "</think>"


def split_reasoning(msg: Message) -> tuple[str, str]:
    """``(reasoning, text)`` of an assistant message as a template sees it: thinking parts joined with ``\\n``
    (the ``reasoning_content`` field); for string content with inline ``</think>``, the template's split
    (the reasoning is what precedes the first ``</think>``, the text what follows the last one)."""
    content = msg["content"]
    if isinstance(content, str):
        if END_THINK in content:
            before, _, _ = content.partition(END_THINK)
            after = content.split(END_THINK)[-1]
            return before.rstrip("\n").split(THINK)[-1].lstrip("\n"), after.lstrip("\n")
        return "", content
    parts: list[ContentPart] = list(content)
    return "\n".join(thinking_of(parts)), text_of(parts)


def inline_think_block(content: str | list[ContentPart]) -> tuple[str, str, str] | None:
    """``(lead, reasoning, text)`` of string content that holds an inline think block, ``lead<think>reasoning</think>text``
    (the first ``<think>`` and the first ``</think>`` after it; the three parts are as written, untrimmed), else None
    (parts, or no such pair). For templates that keep such a string as written, its two tags being the format's own
    control tokens (the Nemotron 3 template)."""
    if not isinstance(content, str):
        return None
    lead, opened, rest = content.partition(THINK)
    reasoning, closed, text = rest.partition(END_THINK)
    if not (opened and closed):
        return None
    return lead, reasoning, text


def has_reasoning(msg: Message) -> bool:
    """True when an assistant message carries non-empty reasoning (a thinking part, or inline ``<think>``)."""
    return bool(split_reasoning(msg)[0].strip())


def frame_thinking(reasoning: str) -> str:
    """A ChatML template's block around a produced turn: ``<think>\\n{reasoning}\\n</think>\\n\\n``."""
    return THINK + "\n" + reasoning.strip("\n") + "\n" + END_THINK + "\n\n"


def restore_think_opening(text: str) -> str:
    """Sampled text that closes a think block it never opened (the generation prompt pre-filled ``<think>``)
    gets the opening back, so it parses like a whole block."""
    if END_THINK in text and THINK not in text.split(END_THINK, 1)[0]:
        return THINK + text
    return text
