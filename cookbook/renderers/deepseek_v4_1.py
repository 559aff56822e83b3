"""DeepSeek V4.1 renderers: ``deepseekv4_1`` (thinking, effort 75), ``deepseekv4_1_low_reasoning`` (50),
``deepseekv4_1_max_reasoning`` (100), ``deepseekv4_1_disable_thinking`` (chat mode) and
``deepseekv4_1_preserve_thinking`` (thinking, effort 75, reasoning kept in history).

The V4.1 format is not V3.1's: it has a ``<｜System｜>`` marker, a reasoning-effort line, DSML tool calls and tool
results inside user turns, so it is a family of its own. Oracle: tml-renderers 0.2.1's ``DeepSeekV41`` (no
DeepSeek V4.x chat template reaches any package registry); every control token below is one token::

    <｜begin▁of▁sentence｜><｜System｜>Reasoning Effort: 75 (range 1-100, the higher the value, the more thorough
    the reasoning)\\n\\n{system}<｜User｜>{user}<｜Assistant｜><think>{reasoning}</think>{answer}<｜end▁of▁sentence｜>

* **Opening.** Thinking mode opens every conversation with ``<｜System｜>`` and the effort line (effort ``N`` in
  1..100), also without a system message; the first system message's text (and the tool declaration) follows the
  line in the same text, encoded as one string (a BPE merge across the line's ``\\n\\n`` is kept in the header).
  Chat mode writes ``<｜System｜>{system}`` only when there is a system message or a tool declaration. The opening
  is the header of the first message.
* **User turns.** A run of consecutive user and tool messages is one user turn: ``<｜User｜>`` then the pieces
  joined by ``\\n\\n``, a tool message written ``<tool_result>{content}</tool_result>``. Tool results of a run are
  put in the order of the calls of the latest assistant message with tool calls (a stable sort by call index; an
  id no call has sorts as index 0). The first message of the run carries the whole text (one string, as the
  template encodes it); the others render nothing. A later system message is ``<｜System｜>{text}`` and counts as
  a user turn.
* **Assistant messages.** After a user turn the header is ``<｜Assistant｜><think>`` when the message keeps its
  reasoning and ``<｜Assistant｜></think>`` otherwise; after anything else there is no header. The output is
  ``{reasoning}</think>`` (when kept) + the text + the DSML calls + ``<｜end▁of▁sentence｜>``. Thinking parts and
  text parts are each joined with nothing; string content is text, written as it is.
* **Which messages keep reasoning.** Thinking mode keeps it in the messages after the last user turn; with tools
  declared, or with ``preserve_thinking``, in every message. Chat mode keeps none: a trained turn that reasons is
  refused (the prompt ends ``</think>``, so the model could never have produced it).
* **Tool calls.** ``\\n\\n<｜DSML｜ calls>\\n`` + one invoke per call, joined by ``\\n``, + ``\\n</｜DSML｜ calls>``;
  an invoke is ``<｜DSML｜ invoke name="{name}">\\n`` + its parameters joined by ``\\n`` + ``\\n</｜DSML｜ invoke>``,
  a parameter ``<｜DSML｜ parameter name="{key}" string="true">{value}</｜DSML｜ parameter>`` for a string value
  and ``string="false"`` with the JSON value (non-ASCII kept) otherwise.
* **Tool declarations** (:meth:`DeepSeekV41Renderer.create_conversation_prefix_with_tools`) are a ``tool_declare``
  message after the system prompt; it is written into the opening system turn as ``{system}\\n\\n`` + the tools
  prompt, whose schemas are one ``json.dumps`` line per tool.

Stop token ``<｜end▁of▁sentence｜>``. The generation prompt after a user turn ends ``<｜Assistant｜><think>``
(thinking) or ``<｜Assistant｜></think>`` (chat); after an assistant message or a leading system message it adds
nothing.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    TrainOnWhat,
    UnparsedToolCall,
    text_of,
    thinking_of,
)
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
SYSTEM = "<｜System｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
DSML = "｜DSML｜"

#: reasoning efforts by name, as tml-renderers' DeepSeekV41 maps them
EFFORTS = {"low": 50, "high": 75, "max": 100}

EFFORT_LINE = "Reasoning Effort: {effort} (range 1-100, the higher the value, the more thorough the reasoning)\n\n"

CALLS_OPEN = f"<{DSML} calls>"
CALLS_CLOSE = f"</{DSML} calls>"

TOOLS_PROMPT = (
    "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by "
    f'writing a "{CALLS_OPEN}" block like the following:\n\n{CALLS_OPEN}\n<{DSML} invoke name="$TOOL_NAME">\n'
    f'<{DSML} parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{DSML} parameter>\n...\n'
    f'</{DSML} invoke>\n<{DSML} invoke name="$TOOL_NAME2">\n...\n</{DSML} invoke>\n{CALLS_CLOSE}\n\n'
    'String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, '
    'arrays, objects), pass the value in JSON format and set `string="false"`.\n\n'
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
    "<think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n"
)
TOOLS_FOOTER = "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n"

_BLOCK = re.compile(r"\n\n" + re.escape(CALLS_OPEN) + r"(.*?)" + re.escape(CALLS_CLOSE), re.DOTALL)
_INVOKE = re.compile(r'<｜DSML｜ invoke name="([^"\n]*)">\n(.*?)\n?</｜DSML｜ invoke>', re.DOTALL)
_PARAM = re.compile(r'<｜DSML｜ parameter name="([^"\n]*)" string="(true|false)">(.*?)</｜DSML｜ parameter>', re.DOTALL)


def tool_schemas(tools: Sequence[ToolSpec]) -> str:
    """The ``### Available Tool Schemas`` lines: one ``json.dumps`` (non-ASCII kept) per tool spec, as given."""
    for t in tools:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t.get("name"):
            raise RendererError(f"tool declaration {t!r} needs a non-empty string 'name' (a ToolSpec)")
    return "\n".join(json.dumps(dict(t), ensure_ascii=False) for t in tools)


def parameter_pieces(key: str, value: Any) -> list[Piece]:
    """One DSML parameter: a string value raw with ``string="true"``, anything else JSON with ``string="false"``."""
    is_str = isinstance(value, str)
    raw = value if is_str else json.dumps(value, ensure_ascii=False)
    return [
        f"<{DSML} parameter name=\"",
        Lit(str(key)),
        f'" string="{"true" if is_str else "false"}">',
        Lit(raw),
        f"</{DSML} parameter>",
    ]


def calls_pieces(calls: Sequence[ToolCall]) -> list[Piece]:
    """The DSML calls block of an assistant message, starting with its ``\\n\\n``."""
    out: list[Piece] = [f"\n\n{CALLS_OPEN}\n"]
    for i, call in enumerate(calls):
        args = call.arguments_dict()
        if not isinstance(args, dict):
            raise RendererError(f"tool call {call.name!r}: arguments must be a JSON object, got {call.arguments!r}")
        if i:
            out.append("\n")
        out += [f'<{DSML} invoke name="', Lit(call.name), '">\n']
        for j, (key, value) in enumerate(args.items()):
            if j:
                out.append("\n")
            out += parameter_pieces(key, value)
        out.append(f"\n</{DSML} invoke>")
    out.append(f"\n{CALLS_CLOSE}")
    return out


def parse_calls_block(body: str, raw: str) -> tuple[list[ToolCall], list[UnparsedToolCall]]:
    """The inside of a ``<｜DSML｜ calls>`` block -> tool calls (one per invoke) and unparsed invokes."""
    calls: list[ToolCall] = []
    unparsed: list[UnparsedToolCall] = []
    invokes = list(_INVOKE.finditer(body))
    if not invokes or _INVOKE.sub("", body).strip():
        return [], [UnparsedToolCall(raw_text=raw, error="DSML calls block is not a sequence of invokes")]
    for inv in invokes:
        name, params = inv.group(1), inv.group(2)
        args: dict[str, Any] = {}
        error = None if name.strip() else "invoke has an empty name"
        if error is None and _PARAM.sub("", params).strip():
            error = "text inside the invoke that is not a parameter"
        for p in _PARAM.finditer(params) if error is None else ():
            key, is_str, value = p.groups()
            if key in args:
                error = f"duplicate parameter {key!r}"
                break
            if is_str == "true":
                args[key] = value
                continue
            try:
                args[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                error = f"parameter {key!r} is marked string=\"false\" but is not JSON ({exc})"
                break
        if error is not None:
            unparsed.append(UnparsedToolCall(raw_text=inv.group(0), error=error))
        else:
            calls.append(ToolCall(name=name, arguments=json.dumps(args, ensure_ascii=False)))
    return calls, unparsed


# ----------------------------------------------------------------------------------------------- the plan


@dataclass
class _Plan:
    """What a message's rendering needs from the whole conversation."""

    tools: list[ToolSpec] = field(default_factory=list)
    declares_tools: bool = False
    #: assistant messages at or before this index drop their reasoning (-1: none)
    drop_through: int = -1
    #: index of the first message of each user turn -> the turn's text
    turn_text: dict[int, str] = field(default_factory=dict)
    #: messages that belong to a user turn started by an earlier message (render nothing)
    absorbed: set[int] = field(default_factory=set)


_PLAN: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("deepseek_v4_1_plan", default=None)


def _is_user_turn(msg: Message) -> bool:
    return msg["role"] in ("user", "tool")


def split_content(content: str | list[ContentPart]) -> tuple[str, str]:
    """``(reasoning, text)``: thinking parts joined, text parts joined; a string is text, as it is."""
    if isinstance(content, str):
        return "", content
    return "".join(thinking_of(content)), text_of(content)


class DeepSeekV41Renderer(Renderer):
    """DeepSeek V4.1; the registry's variants set ``reasoning_effort`` (``None``: chat mode) and
    ``preserve_thinking``."""

    name = "deepseekv4_1"
    supports_thinking = True
    supports_tools = True
    disabled_thinking_prefill = "DeepSeek V4.1's chat mode: its prompt ends </think>"
    thinking_renderer = "deepseekv4_1"

    CONTROL_TOKENS = (BOS, EOS, SYSTEM, USER, ASSISTANT, THINK, END_THINK, DSML)

    def __init__(self, tokenizer: Any, reasoning_effort: int | str | None = "high", preserve_thinking: bool = False):
        """``reasoning_effort``: ``low`` / ``high`` / ``max`` (50 / 75 / 100), an int in 1..100, or ``None`` for chat
        mode (no effort line, reasoning never kept). ``preserve_thinking``: keep the reasoning of every message."""
        super().__init__(tokenizer)
        if isinstance(reasoning_effort, str):
            if reasoning_effort not in EFFORTS:
                raise RendererError(
                    f"reasoning_effort {reasoning_effort!r} is not one of {', '.join(EFFORTS)} (or an int in 1..100, "
                    "or None for chat mode)"
                )
            reasoning_effort = EFFORTS[reasoning_effort]
        if reasoning_effort is not None and (
            isinstance(reasoning_effort, bool) or not isinstance(reasoning_effort, int) or not 1 <= reasoning_effort <= 100
        ):
            raise RendererError(f"reasoning_effort must be low, high, max, an int in 1..100 or None, got {reasoning_effort!r}")
        if reasoning_effort is None and preserve_thinking:
            raise RendererError("preserve_thinking needs thinking mode (a reasoning_effort); chat mode keeps no reasoning")
        self.reasoning_effort = reasoning_effort
        self.thinking = reasoning_effort is not None
        self.preserve_thinking = preserve_thinking
        self.disables_thinking = not self.thinking
        self.has_extension_property = not self.thinking or preserve_thinking
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.bos, self.eos = self.w.ids[BOS], self.w.ids[EOS]

    def bos_tokens(self) -> list[int]:
        return [self.bos]

    # ------------------------------------------------------------------------------------------ checks
    def check_messages(self, messages: Sequence[Message]) -> None:
        super().check_messages(messages)
        for i, m in enumerate(messages):
            role = m["role"]
            if role not in ("system", "user", "assistant", "tool", "tool_declare"):
                raise RendererError(
                    f"message {i} has role {role!r}; DeepSeek V4.1 knows system, user, assistant, tool, tool_declare"
                )
            if role == "tool_declare" and not (i == 0 or (i == 1 and messages[0]["role"] == "system")):
                raise RendererError(
                    f"message {i} is a tool_declare message; DeepSeek V4.1 declares tools in the opening system turn, "
                    "so it must come first or right after the first system message "
                    "(create_conversation_prefix_with_tools gives that order)"
                )

    def reasons(self, msg: Message) -> bool:
        return bool(split_content(msg["content"])[0].strip())

    # ------------------------------------------------------------------------------------------ the plan
    def _make_plan(self, messages: Sequence[Message]) -> _Plan:
        plan = _Plan()
        for m in messages:
            if m["role"] == "tool_declare":
                plan.declares_tools = True
                plan.tools = _declared_tools(m)
        last_turn = max(
            (i for i, m in enumerate(messages) if _is_user_turn(m) or (m["role"] == "system" and i > 0)), default=-1
        )
        keep_all = self.preserve_thinking or plan.declares_tools
        plan.drop_through = -1 if keep_all else last_turn
        order: dict[str, int] = {}
        i = 0
        while i < len(messages):
            m = messages[i]
            if m.get("tool_calls"):
                order = {c.id: k for k, c in enumerate(m.get("tool_calls") or []) if c.id}
            if not _is_user_turn(m):
                i += 1
                continue
            end = i
            while end + 1 < len(messages) and _is_user_turn(messages[end + 1]):
                end += 1
            run = list(messages[i : end + 1])
            results = iter(
                sorted((r for r in run if r["role"] == "tool"), key=lambda r: order.get(r.get("tool_call_id") or "", 0))
            )
            pieces = []
            for r in run:
                if r["role"] == "tool":
                    r = next(results)
                    pieces.append("<tool_result>" + text_of(r["content"]) + "</tool_result>")
                else:
                    pieces.append(text_of(r["content"]))
            plan.turn_text[i] = "\n\n".join(pieces)
            plan.absorbed.update(range(i + 1, end + 1))
            i = end + 1
        return plan

    @contextmanager
    def _planned(self, messages: Sequence[Message]) -> Iterator[None]:
        token = _PLAN.set(self._make_plan(messages))
        try:
            yield
        finally:
            _PLAN.reset(token)

    def _plan(self) -> _Plan:
        plan = _PLAN.get()
        if plan is None:
            raise RendererError("DeepSeek V4.1 messages are rendered through build_generation_prompt / "
                                "build_supervised_example (render_message needs the whole conversation)")
        return plan

    def generation_prompt_tokens(
        self,
        messages: Sequence[Message],
        role: str = "assistant",
        prefill: str | None = None,
        _memo: dict[str, list[int]] | None = None,
        _images: Any = None,
    ) -> list[int]:
        self.check_messages(messages)
        with self._planned(messages):
            return super().generation_prompt_tokens(messages, role, prefill, _memo, _images)

    def supervised_tokens(
        self,
        messages: Sequence[Message],
        train_on_what: TrainOnWhat | str = TrainOnWhat.LAST_ASSISTANT_MESSAGE,
        _images: Any = None,
    ) -> tuple[list[int], list[float]]:
        self.check_messages(messages)
        with self._planned(messages):
            return super().supervised_tokens(messages, train_on_what)

    # ------------------------------------------------------------------------------------------ rendering
    def _opening(self) -> str:
        return EFFORT_LINE.format(effort=self.reasoning_effort) if self.thinking else ""

    def _system_turn(self, text: str, tools: Sequence[ToolSpec] | None) -> RenderedMessage:
        """The opening system turn: ``<｜System｜>`` + effort line (thinking) in the header, the system text (and the
        tools prompt) in the output; the effort line and the text are one string, split back at the line's end."""
        opening = self._opening()
        pieces: list[Piece] = [Lit(opening + text)]
        if tools is not None:
            pieces += ["\n\n" + TOOLS_PROMPT, Lit(tool_schemas(tools)), TOOLS_FOOTER]
        segs = self.w(*pieces)
        header: list[Segment] = [[self.w.ids[SYSTEM]]]
        if opening and segs and isinstance(segs[0], str):
            head, rest = self._split_prefix(segs[0], len(opening))
            header.append(head)
            segs = ([rest] if rest else []) + segs[1:]
        return RenderedMessage(header=header, output=segs)

    def _split_prefix(self, text: str, n_chars: int) -> tuple[list[int], list[int]]:
        """Token ids of ``text`` split after the tokens that cover its first ``n_chars`` characters (a token that
        straddles the boundary goes with the prefix)."""
        ids = self.enc.encode(text)
        covered = 0
        k = 0
        while k < len(ids) and covered < n_chars:
            covered += len(self.enc.decode([ids[k]]))
            k += 1
        return ids[:k], ids[k:]

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        plan = self._plan()
        role = msg["role"]
        first = ctx.idx == 0
        if role == "tool_declare":
            if first:  # no system prompt: the declaration opens the system turn with empty text
                return self._system_turn("", plan.tools)
            return RenderedMessage()
        if role == "system":
            if first:
                declares = ctx.next is not None and ctx.next["role"] == "tool_declare"
                return self._system_turn(text_of(msg["content"]), plan.tools if declares else None)
            return RenderedMessage(header=[[self.w.ids[SYSTEM]]], output=self.w(Lit(text_of(msg["content"]))))
        opening = self._opening() if first else ""
        lead: list[Segment] = self.w(SYSTEM, Lit(opening)) if opening else []
        if _is_user_turn(msg):
            if ctx.idx in plan.absorbed:
                return RenderedMessage()
            return RenderedMessage(header=[*lead, [self.w.ids[USER]]], output=self.w(Lit(plan.turn_text[ctx.idx])))
        if role != "assistant":  # pragma: no cover - check_messages refuses other roles
            raise RendererError(f"message {ctx.idx}: DeepSeek V4.1 has no role {role!r}")
        keeps = self.thinking and ctx.idx > plan.drop_through
        reasoning, text = split_content(msg["content"])
        header: list[Piece] = []
        if self._follows_user_turn(ctx):
            header = [ASSISTANT + (THINK if keeps else END_THINK)]
        body: list[Piece] = [Lit(reasoning), END_THINK] if keeps else []
        body.append(Lit(text))
        calls = msg.get("tool_calls") or []
        if calls:
            body += calls_pieces(calls)
        body.append(EOS)
        return RenderedMessage(header=[*lead, *self.w(*header)], output=self.w(*body))

    @staticmethod
    def _follows_user_turn(ctx: RenderContext) -> bool:
        prev = ctx.prev
        return prev is not None and (_is_user_turn(prev) or (prev["role"] == "system" and ctx.idx > 1))

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``<｜Assistant｜><think>`` (thinking) or ``<｜Assistant｜></think>`` (chat) after a user turn; nothing after
        an assistant message or a leading system message; the opening when the conversation is empty."""
        lead: list[Segment] = self.w(SYSTEM, Lit(self._opening())) if ctx.prev is None and self.thinking else []
        if role == "assistant":
            if not self._follows_user_turn(ctx):
                return lead
            return [*lead, *self.w(ASSISTANT + (THINK if self.thinking else END_THINK))]
        if role == "user":
            return [*lead, [self.w.ids[USER]]]
        if role == "system":
            return [*lead, [self.w.ids[SYSTEM]]]
        raise RendererError(f"DeepSeek V4.1 cannot open a message of role {role!r} (assistant, user, system)")

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """``[system prompt message?, tool_declare message]``: the declaration is written into the opening system
        turn after ``{system}\\n\\n``; declaring tools also keeps the reasoning of earlier turns (as the template
        does). ``""`` is no system prompt."""
        out: list[Message] = []
        if system_prompt:
            out.append({"role": "system", "content": system_prompt})
        if tools:
            tool_schemas(tools)  # validate now, not at render time
            out.append({"role": "tool_declare", "content": json.dumps([dict(t) for t in tools], ensure_ascii=False)})
        return out

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.eos]

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text (before ``<｜end▁of▁sentence｜>``) -> assistant message.

        * Thinking mode: ``{reasoning}</think>{text}`` (the prompt supplied ``<think>``) -> a thinking part and a
          text part (an empty reasoning is dropped; content is then the text). Chat mode does not split.
        * ``\\n\\n<｜DSML｜ calls>...</｜DSML｜ calls>`` at the end -> tool calls (``string="true"`` values raw, others
          JSON); a malformed invoke, text after the block, an unterminated block or a DSML marker elsewhere ->
          :class:`UnparsedToolCall`.
        """
        reasoning = ""
        if self.thinking and END_THINK in text:
            before, _, text = text.partition(END_THINK)
            reasoning = before.removeprefix(THINK)
        calls: list[ToolCall] = []
        unparsed: list[UnparsedToolCall] = []
        m = _BLOCK.search(text)
        if m is not None:
            calls, unparsed = parse_calls_block(m.group(1), m.group(0))
            after = text[m.end() :]
            if after.strip():
                unparsed.append(UnparsedToolCall(raw_text=after, error="text after the DSML calls block"))
            text = text[: m.start()]
        if DSML in text:  # an unterminated block, or a DSML marker outside a block: the rest is an unparsed call
            start = text.find(DSML)
            start -= 1 if text[start - 1 : start] == "<" else 0
            cut = start - 2 if text[start - 2 : start] == "\n\n" else start
            unparsed.append(UnparsedToolCall(raw_text=text[start:], error="unterminated or stray DSML calls block"))
            text = text[:cut]
        msg: Message
        if reasoning:
            msg = {"role": "assistant", "content": [{"type": "thinking", "thinking": reasoning}, {"type": "text", "text": text}]}
        else:
            msg = {"role": "assistant", "content": text}
        if calls:
            msg["tool_calls"] = calls
        if unparsed:
            msg["unparsed_tool_calls"] = unparsed
        return msg


def _declared_tools(msg: Message) -> list[ToolSpec]:
    """The tool specs of a ``tool_declare`` message: a JSON list of ToolSpecs (or of ``{"type": "function",
    "function": spec}``)."""
    try:
        data = json.loads(text_of(msg["content"]))
    except json.JSONDecodeError as exc:
        raise RendererError(
            f"tool_declare content is not JSON ({exc}); build it with create_conversation_prefix_with_tools"
        ) from exc
    if not isinstance(data, list):
        raise RendererError("tool_declare content must be a JSON list of tool specs")
    return [t["function"] if isinstance(t, dict) and t.get("type") == "function" and "function" in t else t for t in data]
