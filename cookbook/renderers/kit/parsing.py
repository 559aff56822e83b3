"""Parsing sampled text: think blocks and tool-call blocks into a :class:`Message`.

The token-level part (stop sequences, EOS, truncation) is the base class's template method
:meth:`cookbook.renderers.base.Renderer.parse_response`; families give it ``parse_text``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from cookbook.renderers.base import ContentPart, Message, ToolCall, UnparsedToolCall, thinking_of

_THINK_OR_CALL = re.compile(r"<think>(.*?)</think>|<tool_call>(.*?)</tool_call>", re.DOTALL)

CallParser = Callable[[str], "ToolCall | UnparsedToolCall"]


def loads_or_str(value: str) -> Any:
    """A tool-call argument value written as text: its JSON value when it is JSON, else the string itself."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def collect_arguments(body: str, pattern: re.Pattern[str]) -> dict[str, Any] | str:
    """Arguments written as consecutive ``pattern`` matches (group 1: key, group 2: value) -> a dict (values via
    :func:`loads_or_str`), or an error string when text other than whitespace lies between or after them."""
    args: dict[str, Any] = {}
    pos = 0
    for m in pattern.finditer(body):
        if body[pos : m.start()].strip():
            return f"unexpected text in <tool_call>: {body[pos:m.start()]!r}"
        args[m.group(1).strip()] = loads_or_str(m.group(2))
        pos = m.end()
    if body[pos:].strip():
        return f"unexpected text in <tool_call>: {body[pos:]!r}"
    return args


def assistant_message(
    parts: list[ContentPart], body: str, calls: list[ToolCall], unparsed: list[UnparsedToolCall]
) -> Message:
    """The parsed message: content is the list of parts when there is reasoning, else the text ``body``."""
    msg: Message = {"role": "assistant", "content": parts if thinking_of(parts) else body}
    if calls:
        msg["tool_calls"] = calls
    if unparsed:
        msg["unparsed_tool_calls"] = unparsed
    return msg


def parse_think_and_calls(text: str, parse_call: CallParser, keep_unterminated_text: bool = True) -> Message:
    """Decoded assistant text (think block already opened) -> message: ``<think>...</think>`` -> a thinking part
    (trimmed; empty dropped), text trimmed, each ``<tool_call>...</tool_call>`` block -> ``parse_call(block)``.
    An unterminated ``<tool_call>`` at the end is an :class:`UnparsedToolCall`; its text stays in the message text
    unless ``keep_unterminated_text`` is false."""
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    unparsed: list[UnparsedToolCall] = []
    texts: list[str] = []
    pos = 0
    for m in _THINK_OR_CALL.finditer(text):
        texts.append(text[pos : m.start()])
        if m.group(1) is not None:
            if m.group(1).strip():
                parts.append({"type": "thinking", "thinking": m.group(1).strip()})
        else:
            parsed = parse_call(m.group(0))
            if isinstance(parsed, ToolCall):
                calls.append(parsed)
            else:
                unparsed.append(parsed)
        pos = m.end()
    tail = text[pos:]
    if tail.count("<tool_call>") > tail.count("</tool_call>"):
        start = tail.rindex("<tool_call>")
        unparsed.append(UnparsedToolCall(raw_text=tail[start:], error="unterminated <tool_call> block"))
        if not keep_unterminated_text:
            tail = tail[:start]
    texts.append(tail)
    body = "".join(texts).strip()
    if body:
        parts.append({"type": "text", "text": body})
    return assistant_message(parts, body, calls, unparsed)
