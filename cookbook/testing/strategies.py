"""Hypothesis strategies for random conversations.

>>> from hypothesis import given
>>> from cookbook.testing.strategies import conversations
>>> @given(conversations(thinking=True, tools=False, max_turns=3))
... def test_my_renderer(conv): ...

A :class:`Conversation` holds cookbook :class:`~cookbook.renderers.base.Message` dicts and the tool
declarations (``ToolSpec``) the conversation may use. Text is printable Unicode (CJK, emoji with ZWJ and
skin tones, accents), with whitespace edge cases (leading/trailing spaces and newlines, tabs, runs of blank
lines) unless ``strip_whitespace=True``. Text is NFC-normalised: tokenizers with a normaliser (Qwen's NFC) cannot
give other forms back, so no renderer could round-trip them. Text never contains any of ``forbid`` (by default common control-token
markup such as ``<|``, ``<think>``, ``[INST]``); pass the tokenizer's special-token strings to be exact.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from cookbook.renderers.base import ContentPart, Message, ToolCall, ToolSpec

__all__ = [
    "DEFAULT_FORBID",
    "IMAGE_SIZES",
    "TOOLS",
    "WIDE_TOOLS",
    "Conversation",
    "conversations",
    "texts",
    "tool_arguments",
]

DEFAULT_FORBID: tuple[str, ...] = (
    "<|",
    "|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<｜",
    "｜>",
)

SNIPPETS: tuple[str, ...] = (
    "Hello",
    "What is 2+2?",
    "The answer is 4.",
    "你好，世界",
    "こんにちは",
    "안녕하세요",
    "👋",
    "🙂",
    "👩🏽‍💻",
    "🇫🇷",
    "café",
    "naïve",
    "¿qué tal?",
    "—",
    "Ωμέγα",
    "∑ x² ≤ 1",
    '{"k": [1, 2]}',
    "```python\nprint(1)\n```",
    "a, b; c.",
    "1.5e-3",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    " \n ",
)
WHITESPACE_EDGES: tuple[str, ...] = ("", "", "", " ", "  ", "\n", "\n\n", "\t", " \n")

TOOLS: tuple[ToolSpec, ...] = (
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {
        "name": "search",
        "description": "Search the web.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["query"],
        },
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}, "exact": {"type": "boolean"}},
            "required": ["a", "b"],
        },
    },
)
WIDE_TOOLS: tuple[ToolSpec, ...] = (
    {
        "name": "book_trip",
        "description": "Réserver un voyage — 旅行を予約する (non-ASCII description).",
        "parameters": {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["metric", "imperial"], "default": "metric"},
                "stops": {"type": "array", "items": {"type": "string"}},
                "traveller": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name"],
                },
            },
            "required": ["stops"],
        },
    },
)


@dataclass
class Conversation:
    """Messages plus the tools they were generated against (empty when no tools)."""

    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)

    def __repr__(self) -> str:  # compact, readable in hypothesis' falsifying examples
        return f"Conversation(messages={self.messages!r}, tools={[t['name'] for t in self.tools]!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # hypothesis' pretty printer
        p.text(repr(self))

    @property
    def prompt_messages(self) -> list[Message]:
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages[:-1]
        return list(self.messages)


def _char_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn", "Zl", "Zp")),
        max_size=max_size,
    )


def texts(
    *,
    min_size: int = 0,
    max_pieces: int = 6,
    strip_whitespace: bool = False,
    forbid: Sequence[str] = DEFAULT_FORBID,
) -> st.SearchStrategy[str]:
    """Printable text built from snippets (CJK, emoji, accents, JSON, code) and random characters.

    Without ``strip_whitespace`` it may start or end with whitespace (spaces, tabs, newlines). Never contains
    an element of ``forbid``. ``min_size`` is in characters (after stripping).
    """
    return _texts(min_size, max_pieces, strip_whitespace, tuple(f for f in forbid if f))


@functools.lru_cache(maxsize=256)
def _texts(min_size: int, max_pieces: int, strip_whitespace: bool, bad: tuple[str, ...]) -> st.SearchStrategy[str]:
    """:func:`texts`, built once per set of options (:func:`conversations` asks for its text strategies on every
    draw; a strategy is immutable, and a fresh one costs its construction and validation again)."""
    piece = st.one_of(st.sampled_from(SNIPPETS), _char_text(10))
    body = st.lists(piece, max_size=max_pieces).map(lambda ps: unicodedata.normalize("NFC", "".join(ps)))
    if strip_whitespace:
        s = body.map(str.strip)
    else:
        s = st.tuples(st.sampled_from(WHITESPACE_EDGES), body, st.sampled_from(WHITESPACE_EDGES)).map("".join)
    contains_forbidden = _forbidden_finder(bad)
    return s.filter(lambda t: len(t) >= min_size and not contains_forbidden(t))


@functools.lru_cache(maxsize=64)
def _forbidden_finder(bad: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a text contains any of ``bad`` (one compiled alternation of the escaped strings: ``forbid`` holds a
    tokenizer's special-token strings, hundreds for some, and every drawn text is checked against all of them)."""
    if not bad:
        return lambda t: False
    search = re.compile("|".join(map(re.escape, bad))).search
    return lambda t: search(t) is not None


def tool_arguments(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with string, integer, float, boolean and null values (types must survive a round trip)."""
    value = st.one_of(
        text,
        st.integers(-1000, 10**6),
        st.booleans(),
        st.none(),
        st.sampled_from([0.5, 1.25, -3.0, 1e-3]),
    )
    return st.dictionaries(st.sampled_from(["city", "query", "n", "a", "b", "exact", "unit"]), value, max_size=3)


@st.composite
def conversations(
    draw: st.DrawFn,
    *,
    thinking: bool = False,
    tools: bool = False,
    tool_calls: bool = True,
    system: bool | None = None,
    max_turns: int = 3,
    end_with: str = "assistant",
    strip_whitespace: bool = False,
    forbid: Sequence[str] = DEFAULT_FORBID,
    empty_assistant: bool = True,
    wide: bool = False,
    empty_system: bool | None = None,
    missing_ids: bool | None = None,
    wide_tools: bool | None = None,
    inline_think: bool | None = None,
    control_text: Sequence[str] = (),
    images: bool = False,
) -> Conversation:
    """A random conversation: an optional system message, then ``1..max_turns`` user/assistant exchanges.

    * ``thinking``: assistant messages may carry a ThinkingPart before their text;
    * ``tools``: tools are declared, assistant messages may call them (one or several ToolCalls), each call is
      answered by a tool message and the assistant then replies;
    * ``tool_calls``: with ``False``, tools are still declared but no assistant message calls them (a comparison
      that covers the declarations but not the calls and outputs);
    * ``system``: True (always), False (never) or None (either);
    * ``end_with``: ``assistant`` (a supervised example), ``user`` (a generation prompt) or ``any``;
    * ``wide``: switches on the four input classes below (each can also be set on its own; ``None`` follows
      ``wide``). The conform runner's property checks switch them on unless the spec declares otherwise
      (``property_inputs``), plain pytest use keeps them off;
    * ``empty_system``: the system message may have empty content;
    * ``missing_ids``: tool calls may lack an id (their tool messages then have no ``tool_call_id``);
    * ``wide_tools``: the declared tools include :data:`WIDE_TOOLS` (a non-ASCII description; enum, default,
      array and nested-object parameters);
    * ``inline_think``: a string history reply (an assistant message before the last message) may carry an
      inline ``<think>...</think>`` block before its text;
    * ``control_text``: control-token strings (e.g. ``<|eot_id|>``) spliced into the text of every role, for
      checks that such text stays literal; empty (the default) keeps them out;
    * ``images``: a user message may carry image parts (PNGs of :data:`IMAGE_SIZES`, before, between or after
      its text parts), and a tool result may be one image (a screenshot tool): for vision-language renderers.
    """
    empty_system = wide if empty_system is None else empty_system
    missing_ids = wide if missing_ids is None else missing_ids
    wide_tools = wide if wide_tools is None else wide_tools
    inline_think = wide if inline_think is None else inline_think
    text = texts(strip_whitespace=strip_whitespace, forbid=forbid)
    thought = texts(min_size=1, strip_whitespace=True, forbid=forbid) if thinking else None
    nonempty = texts(min_size=1, strip_whitespace=strip_whitespace, forbid=forbid)
    if control_text:
        text, nonempty = _with_control(text, control_text), _with_control(nonempty, control_text)
    declared: list[ToolSpec] = []
    if tools and draw(st.booleans()):
        declared = [*TOOLS, *WIDE_TOOLS] if wide_tools else list(TOOLS)
    msgs: list[Message] = []
    with_system = draw(st.booleans()) if system is None else system
    if with_system:
        msgs.append({"role": "system", "content": draw(st.one_of(st.just(""), nonempty) if empty_system else nonempty)})
    n_turns = draw(st.integers(1, max(1, max_turns)))
    call_no = 0
    for turn in range(n_turns):
        msgs.append({"role": "user", "content": _user_content(draw, nonempty) if images else draw(nonempty)})
        last_turn = turn == n_turns - 1
        if last_turn and end_with == "user":
            break
        if last_turn and end_with == "any" and draw(st.booleans()):
            break
        call_tools: bool = draw(st.booleans()) if declared and tool_calls else False
        if call_tools:
            calls: list[ToolCall] = []
            for _ in range(draw(st.integers(1, 2))):
                tool = draw(st.sampled_from(declared))
                call_no += 1
                args = draw(tool_arguments(text))
                call_id = f"call_{call_no}" if not missing_ids or draw(st.booleans()) else None
                calls.append(ToolCall(name=tool["name"], arguments=json.dumps(args, ensure_ascii=False), id=call_id))
            msgs.append({"role": "assistant", "content": _assistant_content(draw, text, thought), "tool_calls": calls})
            for c in calls:
                result: str | list[ContentPart] = json.dumps({"result": draw(text)}, ensure_ascii=False)
                if images and draw(st.integers(0, 3)) == 0:
                    result = [_image_part(draw)]
                tool_msg: Message = {"role": "tool", "content": result, "name": c.name}
                if c.id is not None:
                    tool_msg["tool_call_id"] = c.id
                msgs.append(tool_msg)
        msgs.append({"role": "assistant", "content": _assistant_content(draw, text if empty_assistant else nonempty, thought)})
    if inline_think:
        think = texts(min_size=1, strip_whitespace=True, forbid=forbid)
        for m in msgs[:-1]:
            if m["role"] == "assistant" and isinstance(m["content"], str) and draw(st.booleans()):
                m["content"] = f"<think>{draw(think)}</think>{m['content']}"
    return Conversation(msgs, declared)


#: (width, height) of the images :func:`conversations` draws: square, wide, tall, sizes that are not multiples of
#: any patch size, and one below the smallest patch grid, so each family's resize and rounding rules are exercised
IMAGE_SIZES: tuple[tuple[int, int], ...] = ((32, 32), (64, 40), (40, 72), (27, 45), (90, 17), (120, 96), (8, 8))


@functools.lru_cache(maxsize=64)
def _png(width: int, height: int, seed: int) -> bytes:
    from cookbook.renderers.kit.vision import make_png

    return make_png(width, height, seed)


def _image_part(draw: st.DrawFn) -> ContentPart:
    width, height = draw(st.sampled_from(IMAGE_SIZES))
    return {"type": "image", "image": _png(width, height, draw(st.integers(0, 3)))}


def _user_content(draw: st.DrawFn, nonempty: st.SearchStrategy[str]) -> str | list[ContentPart]:
    """A user message's content: its text, or text and one or two images in some order (an image alone too)."""
    if draw(st.integers(0, 2)) != 0:
        return draw(nonempty)
    parts: list[ContentPart] = [{"type": "text", "text": draw(nonempty)} for _ in range(draw(st.integers(0, 2)))]
    for _ in range(draw(st.integers(1, 2))):
        parts.insert(draw(st.integers(0, len(parts))), _image_part(draw))
    return parts


def _with_control(text: st.SearchStrategy[str], control: Sequence[str]) -> st.SearchStrategy[str]:
    """``text``, or ``text`` with one of ``control`` spliced into it (at the start, the end or inside)."""
    spliced = st.tuples(text, st.sampled_from(list(control)), text).map("".join)
    return st.one_of(text, spliced)


def _assistant_content(
    draw: st.DrawFn, text: st.SearchStrategy[str], thought: st.SearchStrategy[str] | None
) -> str | list[ContentPart]:
    body = draw(text)
    if thought is not None and draw(st.booleans()):
        return [{"type": "thinking", "thinking": draw(thought)}, {"type": "text", "text": body}]
    return body
