"""gpt-oss (OpenAI harmony format): ``gpt_oss_{low,medium,high}_reasoning`` and ``gpt_oss_no_sysprompt``.

Token format (every ``<|...|>`` is a control token; no BOS)::

    <|start|>system<|message|>{model identity, knowledge cutoff, date, "Reasoning: {effort}", channels}<|end|>
    <|start|>developer<|message|># Instructions\\n\\n{system prompt}\\n\\n<|end|>
    <|start|>user<|message|>{text}<|end|>
    <|start|>assistant<|channel|>analysis<|message|>{reasoning}<|end|>
    <|start|>assistant<|channel|>final<|message|>{text}<|return|>

* The *system* block is written by the renderer (``*_reasoning`` renderers; ``gpt_oss_no_sysprompt`` writes
  none): ``You are ChatGPT, a large language model trained by OpenAI.\\nKnowledge cutoff: 2024-06\\nCurrent
  date: {date}\\n\\nReasoning: {effort}\\n\\n# Valid channels: analysis, commentary, final. Channel must be
  included for every message.`` plus ``\\nCalls to these tools must go to the commentary channel:
  'functions'.`` when tools are declared. The date is pinned (``current_date``, default
  :data:`DEFAULT_DATE`), not today's: named deviation ``pinned-date``. The block is the header of the first
  message (never trained, except under ``all_tokens``).
* A conversation's system message becomes the *developer* message ``# Instructions\\n\\n{text}\\n\\n`` (the
  trailing ``\\n\\n`` is the chat template's; openai-harmony omits it when no tools follow). A system message
  with empty content gives no instructions: no developer message at all without tools (the template's rule;
  openai-harmony would write an empty ``# Instructions`` section), only the tools with them.
* An assistant message opens with the header ``<|start|>assistant`` (the generation prompt's last tokens);
  its reasoning is an ``analysis`` message, its text a ``final`` message ending ``<|end|>`` in history and
  ``<|return|>`` (the stop token) when it is the last message of a supervised example.
* Chain of thought is dropped from history: reasoning is written only for assistant messages after the last
  final answer (the template's and harmony's rule), i.e. the turn being produced and an unfinished tool-using
  turn. Hence no extension property.
* Tool calls: each call is its own message ``<|start|>assistant to=functions.{name}<|channel|>commentary
  <|constrain|>json<|message|>{arguments}<|call|>`` (``<|call|>`` is the other stop token); text that
  accompanies calls is written as an ``analysis`` message before them, as the template writes it (and dropped
  with the chain of thought once a final answer follows). A tool output is ``<|start|>functions.{name}
  to=assistant<|channel|>commentary<|message|>{content}<|end|>`` (``name`` is required).
* Tools are declared by :meth:`GptOssRenderer.create_conversation_prefix_with_tools`: a ``tool_declare``
  message holding the TypeScript-like namespace, written in the developer message after the instructions.

Content text is encoded literally: text that looks like a control token stays ordinary text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import (
    ContentPart,
    Message,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolCall,
    ToolSpec,
    UnparsedToolCall,
    text_of,
    thinking_of,
)

DEFAULT_DATE = "2025-06-28"
IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
CHANNELS = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
TOOLS_LINE = "\nCalls to these tools must go to the commentary channel: 'functions'."

_HEADER_RE = re.compile(
    r"^(?: to=(?P<to1>[^\s<]+))?(?:<\|channel\|>(?P<channel>\w+))?(?: to=(?P<to2>[^\s<]+))?(?: ?<\|constrain\|>(?P<ctype>\S+))?$"
)


@dataclass
class _Ctx(RenderContext):
    """RenderContext plus what gpt-oss needs to know about later messages."""

    later_final: bool = False  # an assistant message without tool calls follows
    declares_tools: bool = False  # the conversation declares tools (a tool_declare message)


# the template's nested-object separator: its macro writes "{{ render_typescript_type(...) }}" on its own line, so
# the newline and the 16 spaces of indentation before it are part of the text
_NESTED_INDENT = "\n" + " " * 16


def _tojson(value: Any) -> str:
    """The template's ``|tojson`` (transformers: ``json.dumps`` keeping non-ASCII text)."""
    return json.dumps(value, ensure_ascii=False)


def ts_type(spec: Any) -> str:
    """A JSON-schema property as the chat template's TypeScript-like type (its ``render_typescript_type`` macro).

    Arrays of string / number / integer / boolean are ``T[]``, other arrays the item type plus ``[]`` (``any[]``
    when that is longer than 50 characters or ``object | object``); a list of types is joined with `` | ``;
    ``oneOf`` is the union of its variants (with their descriptions and defaults as comments); a string enum is
    ``"a" | "b"``; a nested object is ``{\\n`` then ``name?: `` + newline and 16 spaces + type per property,
    joined ``, ``, then ``}`` (the template's whitespace, kept: it is what the model is prompted with);
    ``nullable`` adds `` | null`` to strings and arrays.
    """
    if not isinstance(spec, dict):
        return "any"
    t = spec.get("type")
    if t == "array":
        items = spec.get("items")
        if items:
            it = items.get("type") if isinstance(items, dict) else None
            if it == "string":
                out = "string[]"
            elif it in ("number", "integer"):
                out = "number[]"
            elif it == "boolean":
                out = "boolean[]"
            else:
                inner = ts_type(items)
                out = "any[]" if inner == "object | object" or len(inner) > 50 else inner + "[]"
        else:
            out = "any[]"
        return out + (" | null" if spec.get("nullable") else "")
    if isinstance(t, (list, tuple)) and t:
        return " | ".join(str(x) for x in t) if len(t) > 1 else str(t[0])
    if spec.get("oneOf"):
        # the macro means to write "any" for a union with an object among several variants, but the flag it sets
        # inside its loop never leaves the loop (Jinja scoping): every union is written out
        variants = spec["oneOf"]
        out = ""
        for i, v in enumerate(variants):
            out += ts_type(v)
            if isinstance(v, dict) and v.get("description"):
                out += "// " + str(v["description"])
            if isinstance(v, dict) and "default" in v:
                out += " " * 20 + "// default: " + _tojson(v["default"])
            if i < len(variants) - 1:
                out += " | \n"
        return out
    if t == "string":
        if spec.get("enum"):
            return '"' + '" | "'.join(str(v) for v in spec["enum"]) + '"'
        return "string" + (" | null" if spec.get("nullable") else "")
    if t in ("number", "integer"):
        return "number"
    if t == "boolean":
        return "boolean"
    if t == "object":
        props = spec.get("properties")
        if not props:
            return "object"
        required = spec.get("required") or []
        fields = [
            f"{name}{'' if name in required else '?'}: {_NESTED_INDENT}{ts_type(sub)}" for name, sub in props.items()
        ]
        return "{\n" + ", ".join(fields) + "}"
    return "any"


def _default_text(pspec: dict[str, Any]) -> str:
    """The ``// default: ...`` comment of a top-level parameter, as the template writes it: after ``, `` with the
    value as it is for an enum (``"metric"`` becomes ``metric``) and as JSON otherwise; right after the type for a
    ``oneOf``. The template cannot write a non-string default of an enum or ``oneOf`` parameter (it adds it to a
    string: a TypeError); the renderer writes it as JSON, as for any other parameter."""
    d = pspec["default"]
    if pspec.get("enum"):
        return ", // default: " + (d if isinstance(d, str) else _tojson(d))
    if pspec.get("oneOf"):
        return "// default: " + (d if isinstance(d, str) else _tojson(d))
    return ", // default: " + _tojson(d)


def tool_namespace(tools: Sequence[ToolSpec]) -> str:
    """``## functions\\n\\nnamespace functions {\\n\\n// {description}\\ntype {name} = (_: {\\n{param}: {type},\\n})
    => any;\\n\\n} // namespace functions``, as the chat template's ``render_tool_namespace`` writes it: optional
    parameters get ``?``, a parameter's description is a ``// ...`` line before it, a default a ``// default:``
    comment after its type (:func:`ts_type`, :func:`_default_text`)."""
    out = "## functions\n\nnamespace functions {\n\n"
    for t in tools:
        out += f"// {t.get('description', '')}\ntype {t['name']} = "
        params = t.get("parameters") or {}
        props = params.get("properties") or {}
        if props:
            out += "(_: {\n"
            required = params.get("required") or []
            for pname, pspec in props.items():
                pspec = pspec if isinstance(pspec, dict) else {}
                if pspec.get("description"):
                    out += f"// {pspec['description']}\n"
                out += pname + ("" if pname in required else "?") + ": " + ts_type(pspec)
                if "default" in pspec:
                    out += _default_text(pspec)
                out += ",\n"
            out += "}) => any;\n\n"
        else:
            out += "() => any;\n\n"
    return out + "} // namespace functions"


class GptOssRenderer(Renderer):
    """gpt-oss harmony chat format; ``reasoning_effort=None`` writes no system block."""

    name = "gpt_oss_medium_reasoning"
    has_extension_property = False
    supports_thinking = True
    supports_tools = True

    def __init__(
        self, tokenizer: Any, reasoning_effort: str | None = "medium", current_date: str = DEFAULT_DATE
    ):
        super().__init__(tokenizer)
        if reasoning_effort not in (None, "low", "medium", "high"):
            raise RendererError(
                f"reasoning_effort must be low, medium, high or None, got {reasoning_effort!r}"
            )
        self.reasoning_effort = reasoning_effort
        self.current_date = current_date
        tok = {
            n: self.enc.special(f"<|{n}|>")
            for n in ("start", "end", "message", "channel", "constrain", "return", "call")
        }
        self.tok = tok

    # ------------------------------------------------------------------------------------------ contexts
    def _contexts(
        self, messages: Sequence[Message], turn_start: int, for_prompt: bool = False
    ) -> list[RenderContext]:
        base = super()._contexts(messages, turn_start, for_prompt)
        finals = [m["role"] == "assistant" and not m.get("tool_calls") for m in messages]
        declares = any(m["role"] == "tool_declare" for m in messages)
        return [_Ctx(**vars(c), later_final=any(finals[c.idx + 1 :]), declares_tools=declares) for c in base]

    def check_messages(self, messages: Sequence[Message]) -> None:
        super().check_messages(messages)
        for i, m in enumerate(messages):
            role = m["role"]
            if role == "system" and i != 0:
                raise RendererError(
                    f"message {i} is a system message; gpt-oss takes one, first (it becomes the developer message)"
                )
            if role == "tool_declare" and not (i == 0 or (i == 1 and messages[0]["role"] == "system")):
                raise RendererError(
                    f"message {i} declares tools; it must come first or right after the system message"
                )
            if role == "tool" and not m.get("name"):
                raise RendererError(f"tool message {i} has no 'name'; gpt-oss writes it as functions.<name>")
            if role not in ("system", "tool_declare", "user", "assistant", "tool"):
                raise RendererError(
                    f"message {i} has role {role!r}; gpt-oss knows system, user, assistant, tool"
                )

    # ------------------------------------------------------------------------------------------ rendering
    def system_block(self, with_tools: bool) -> list[Segment]:
        """The harmony system message (empty for ``gpt_oss_no_sysprompt``)."""
        if self.reasoning_effort is None:
            return []
        body = (
            f"{IDENTITY}\nKnowledge cutoff: 2024-06\nCurrent date: {self.current_date}\n\n"
            f"Reasoning: {self.reasoning_effort}\n\n{CHANNELS}" + (TOOLS_LINE if with_tools else "")
        )
        return [[self.tok["start"]], "system", [self.tok["message"]], body, [self.tok["end"]]]

    def _start(self, role: str) -> list[Segment]:
        return [[self.tok["start"]], role]

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        c = ctx if isinstance(ctx, _Ctx) else _Ctx(**vars(ctx))
        pre: list[Segment] = self.system_block(c.declares_tools) if c.idx == 0 else []
        role = msg["role"]
        text = text_of(msg["content"])
        t = self.tok
        if role == "system":
            if not text:  # no instructions: the template writes no developer message (a tool_declare opens its own)
                return RenderedMessage(header=pre, output=[])
            follows = c.next is not None and c.next["role"] == "tool_declare"
            out: list[Segment] = ["# Instructions\n\n" + text + "\n\n"]
            if not follows:
                out.append([t["end"]])
            return RenderedMessage(header=[*pre, *self._start("developer"), [t["message"]]], output=out)
        if role == "tool_declare":
            cont = c.prev is not None and c.prev["role"] == "system" and bool(text_of(c.prev["content"]))
            header = pre if cont else [*pre, *self._start("developer"), [t["message"]]]
            return RenderedMessage(header=header, output=["# Tools\n\n" + text, [t["end"]]])
        if role == "user":
            return RenderedMessage(
                header=[*pre, *self._start("user"), [t["message"]]], output=[text, [t["end"]]]
            )
        if role == "tool":
            name = msg.get("name", "")
            return RenderedMessage(
                header=[*pre, [t["start"]], f"functions.{name} to=assistant"],
                output=[[t["channel"]], "commentary", [t["message"]], text, [t["end"]]],
            )
        return RenderedMessage(header=[*pre, *self._start("assistant")], output=self._assistant(msg, c))

    def _assistant(self, msg: Message, c: _Ctx) -> list[Segment]:
        t = self.tok
        calls = msg.get("tool_calls") or []
        reasoning = "".join(thinking_of(msg["content"]))
        text = text_of(msg["content"])
        parts: list[list[Segment]] = []
        # chain of thought is kept only where the template keeps it: the produced (last) final answer of a
        # supervised example, and tool-call messages of a turn that has no final answer yet
        last = c.is_last and not c.for_prompt  # a prompt's trailing message ends <|end|>, not <|return|>
        keep = (not c.later_final) if calls else last
        if reasoning and keep:
            parts.append([[t["channel"]], "analysis", [t["message"]], reasoning, [t["end"]]])
        if calls:
            if text and keep:  # the template writes the text of a tool-calling message as analysis, too
                parts.append([[t["channel"]], "analysis", [t["message"]], text, [t["end"]]])
            for call in calls:
                parts.append(
                    [
                        f" to=functions.{call.name}",
                        [t["channel"]],
                        "commentary ",
                        [t["constrain"]],
                        "json",
                        [t["message"]],
                        call.arguments,
                        [t["call"]],
                    ]
                )
        else:
            parts.append([[t["channel"]], "final", [t["message"]], text, [t["return"] if last else t["end"]]])
        out: list[Segment] = []
        for i, p in enumerate(parts):
            if i:
                out += self._start("assistant")
            out += p
        return out

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        pre = self.system_block(False) if ctx.idx == 0 else []
        return [*pre, *self._start(role)]

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """``[system?, tool_declare]``: the system prompt (the developer instructions) and a ``tool_declare``
        message holding :func:`tool_namespace`; the renderer then adds the tools line to its system block."""
        out: list[Message] = [] if not system_prompt else [{"role": "system", "content": system_prompt}]
        if tools:
            out.append({"role": "tool_declare", "content": tool_namespace(tools)})
        return out

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.tok["return"], self.tok["call"]]

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text (after ``<|start|>assistant``; stops ``<|return|>`` / ``<|call|>``) -> message: the
        harmony messages are split at ``<|start|>assistant``; ``analysis`` -> :class:`ThinkingPart`, ``final`` and
        ``commentary`` (without recipient) -> text, ``to=functions.{name}`` -> :class:`ToolCall` (arguments kept as
        sampled; not JSON -> :class:`UnparsedToolCall`)."""
        parts: list[ContentPart] = []
        calls: list[ToolCall] = []
        unparsed: list[UnparsedToolCall] = []
        for raw in text.split("<|start|>assistant"):
            if not raw:
                continue
            body = raw.removesuffix("<|end|>")
            head, sep, content = body.partition("<|message|>")
            m = _HEADER_RE.match(head) if sep else None
            if m is None:
                unparsed.append(
                    UnparsedToolCall(
                        raw_text=raw, error="not a harmony message (header <|channel|>...<|message|>)"
                    )
                )
                continue
            to = m.group("to1") or m.group("to2")
            if to:
                name = to.removeprefix("functions.")
                try:
                    json.loads(content)
                except json.JSONDecodeError as exc:
                    unparsed.append(
                        UnparsedToolCall(raw_text=raw, error=f"invalid JSON arguments for {name!r}: {exc}")
                    )
                    continue
                calls.append(ToolCall(name=name, arguments=content))
            elif m.group("channel") == "analysis":
                parts.append({"type": "thinking", "thinking": content})
            else:
                parts.append({"type": "text", "text": content})
        msg: Message = {"role": "assistant", "content": parts if thinking_of(parts) else text_of(parts)}
        if calls:
            msg["tool_calls"] = calls
        if unparsed:
            msg["unparsed_tool_calls"] = unparsed
        return msg
