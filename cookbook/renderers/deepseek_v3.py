"""DeepSeek V3 / V3.1 chat renderers: ``deepseekv3`` (= ``deepseekv3_disable_thinking``, chat mode) and
``deepseekv3_thinking``.

Token format (the DeepSeek-V3.1 chat template; every marker below is one control token)::

    <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜></think>{reply}<｜end▁of▁sentence｜><｜User｜>...

* The system prompt follows the BOS token with no marker. A user message is ``<｜User｜>{text}`` with no end
  token. There is no separator token anywhere: turns are delimited by the markers alone.
* An assistant message that follows a user message is opened by ``<｜Assistant｜></think>`` (an *empty*
  reasoning block: V3.1 in chat mode answers straight after ``</think>``); every assistant message ends with
  ``<｜end▁of▁sentence｜>``, which is also the stop token. An assistant message that follows a tool output or
  another assistant message has no header at all (the template writes ``<｜Assistant｜>`` only after a user).
* Reasoning is never kept in history: the template writes only the text after ``</think>``.
* Tool calls follow the text: ``<｜tool▁calls▁begin｜>`` then, per call,
  ``<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{arguments}<｜tool▁call▁end｜>``, then ``<｜tool▁calls▁end｜>``,
  then ``<｜end▁of▁sentence｜>``. ``arguments`` is the JSON string exactly as given (the authentic template
  concatenates it; the llama.cpp copy used as oracle re-serialises it with ``|tojson``: named deviation
  ``llamacpp-tojson-arguments``).
* A tool output is ``<｜tool▁output▁begin｜>{content}<｜tool▁output▁end｜>``; consecutive outputs simply follow
  each other. The generation prompt after a tool output adds nothing: the model continues right there.
* Tools are declared in the system prompt with the text of the DeepSeek-V3.1 model card ("## Tools ...",
  :meth:`DeepSeekV3Renderer.create_conversation_prefix_with_tools`); the template itself ignores ``tools``.

Oracle: the only registry copy of the V3.1 template is llama.cpp's, which writes ``<think></think>`` where the
original writes ``</think>`` (named deviation ``llamacpp-empty-think``). The renderers follow the original.

Chat mode (``deepseekv3``): the generation prompt after a user message ends ``<｜Assistant｜></think>``. The
``</think>`` is part of the header, so it is never trained. A supervised example whose trained assistant
turn reasons raises :class:`~cookbook.errors.RendererError` (the template would silently drop the reasoning
from the trained text; named deviation ``refuse-reasoning-in-chat-mode``).

Thinking mode (``deepseekv3_thinking``): the generation prompt after a user message ends
``<｜Assistant｜><think>``. The *last* assistant message of a supervised example (the turn being produced) is
written ``<｜Assistant｜><think>{reasoning}</think>{text}...``: the ``<think>`` is pre-filled by the prompt and
not trained under ``last_assistant_*``; ``{reasoning}</think>`` is what the model samples, so it is trained
(named deviation ``keep-reasoning-in-last-turn``: the template drops the reasoning of every turn, the last
included). Earlier assistant messages are written as in chat mode (``</think>{text}``), so the renderer has
no extension property.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import (
    ContentPart,
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolCall,
    ToolSpec,
    TrainOnWhat,
    UnparsedToolCall,
    last_user_index,
    text_of,
    thinking_of,
)
from cookbook.renderers.vision import ImageSegment

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
TOOL_SEP = "<｜tool▁sep｜>"
OUTPUT_BEGIN = "<｜tool▁output▁begin｜>"
OUTPUT_END = "<｜tool▁output▁end｜>"

TOOLS_HEADER = "## Tools\nYou have access to the following tools:\n\n"
TOOLS_FOOTER = (
    "\n\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
    f"{CALLS_BEGIN}{CALL_BEGIN}tool_call_name{TOOL_SEP}tool_call_arguments{CALL_END}"
    "{{additional_tool_calls}}"
    f"{CALLS_END}\n\n"
    "Where:\n"
    "- `tool_call_name` must be an exact match to one of the available tools\n"
    "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"
    "- For multiple tool calls, chain them directly without separators or spaces"
)

_CALL_RE = re.compile(
    re.escape(CALL_BEGIN) + r"(.*?)" + re.escape(TOOL_SEP) + r"(.*?)" + re.escape(CALL_END), re.DOTALL
)


def split_reasoning(content: str | list[ContentPart]) -> tuple[str | None, str]:
    """``(reasoning or None, text)`` of an assistant message. Thinking parts are joined; a string with
    ``</think>`` is split there, as the template splits it (a leading ``<think>`` is removed)."""
    if isinstance(content, str):
        if END_THINK not in content:
            return None, content
        before, _, after = content.partition(END_THINK)
        return before.removeprefix(THINK), after
    thoughts = thinking_of(content)
    return ("".join(thoughts) if thoughts else None), text_of(content)


def tool_declaration(tools: Sequence[ToolSpec]) -> str:
    """The model card's tool block: per tool ``### {name}\\nDescription: {description}\\n\\nParameters:
    {json.dumps(parameters)}``, blocks separated by a blank line, then the format instructions."""
    blocks = [
        f"### {t['name']}\nDescription: {t.get('description', '')}\n\nParameters: {json.dumps(t.get('parameters', {}))}"
        for t in tools
    ]
    return TOOLS_HEADER + "\n\n".join(blocks) + TOOLS_FOOTER


class DeepSeekV3Renderer(Renderer):
    """DeepSeek V3.1 in chat (non-thinking) mode; also the ``deepseekv3_disable_thinking`` alias."""

    name = "deepseekv3"
    # DeepSeek's turn and tool markers (<｜User｜>, <｜tool▁calls▁begin｜>, ...) are *non-special* added tokens
    # and the model card's tool-declaration prompt carries them as control tokens, so (the base default)
    # only BOS/EOS are literal in content: marker text typed in a message is encoded as the marker, as the
    # template does.
    has_extension_property = True
    supports_thinking = True  # reasoning in history is accepted (and dropped, as the template drops it)
    supports_tools = True
    #: thinking mode: the produced turn is framed ``<think>{reasoning}</think>`` and the prompt ends ``<think>``
    thinking: bool = False

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        ids = {
            t: self.enc.special(t)
            for t in (
                BOS,
                EOS,
                USER,
                ASSISTANT,
                THINK,
                END_THINK,
                CALLS_BEGIN,
                CALLS_END,
                CALL_BEGIN,
                CALL_END,
                TOOL_SEP,
                OUTPUT_BEGIN,
                OUTPUT_END,
            )
        }
        self.ids = ids
        self.bos, self.eos = ids[BOS], ids[EOS]

    def bos_tokens(self) -> list[int]:
        return [self.bos]

    # ------------------------------------------------------------------------------------------ checks
    def check_messages(self, messages: Sequence[Message]) -> None:
        super().check_messages(messages)
        for i, m in enumerate(messages):
            if m["role"] == "system" and i != 0:
                raise RendererError(
                    f"message {i} is a system message; DeepSeek V3 has one system prompt, at the start (the "
                    "template moves every system message there); put it first"
                )
            if m["role"] not in ("system", "user", "assistant", "tool"):
                raise RendererError(
                    f"message {i} has role {m['role']!r}; DeepSeek V3 knows system, user, assistant, tool"
                )

    def supervised_tokens(
        self,
        messages: Sequence[Message],
        train_on_what: TrainOnWhat | str = TrainOnWhat.LAST_ASSISTANT_MESSAGE,
        _images: list[tuple[int, ImageSegment]] | None = None,
    ) -> tuple[list[int], list[float]]:
        if not self.thinking and messages:
            mode = TrainOnWhat(train_on_what)
            first = (
                len(messages) - 1
                if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE
                else last_user_index(messages) + 1
            )
            if mode in (TrainOnWhat.LAST_ASSISTANT_MESSAGE, TrainOnWhat.LAST_ASSISTANT_TURN):
                for i in range(max(first, 0), len(messages)):
                    m = messages[i]
                    if m["role"] == "assistant" and (split_reasoning(m["content"])[0] or "").strip():
                        raise RendererError(
                            f"renderer {self.name!r} is DeepSeek's chat mode (its prompt ends </think>), but the "
                            f"trained assistant message {i} reasons; the model could never have produced it. Use "
                            "'deepseekv3_thinking' or remove the reasoning"
                        )
        return super().supervised_tokens(messages, train_on_what, _images)

    # ------------------------------------------------------------------------------------------ rendering
    def _after_user(self, ctx: RenderContext) -> bool:
        return ctx.prev is not None and ctx.prev["role"] == "user"

    def _calls(self, calls: Sequence[ToolCall]) -> list[Segment]:
        out: list[Segment] = [[self.ids[CALLS_BEGIN]]]
        for c in calls:
            out += [[self.ids[CALL_BEGIN]], c.name, [self.ids[TOOL_SEP]], c.arguments, [self.ids[CALL_END]]]
        out.append([self.ids[CALLS_END]])
        return out

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        text = text_of(msg["content"])
        if role == "system":
            return RenderedMessage(output=[text])
        if role == "user":
            return RenderedMessage(header=[[self.ids[USER]]], output=[text])
        if role == "tool":
            return RenderedMessage(header=[[self.ids[OUTPUT_BEGIN]]], output=[text, [self.ids[OUTPUT_END]]])
        calls = msg.get("tool_calls") or []
        after_user = self._after_user(ctx)
        header: list[Segment] = []
        output: list[Segment] = []
        content = msg["content"]
        if self.thinking and ctx.is_last:
            # the turn being produced: <think>{reasoning}</think> is kept (the prompt pre-fills <think>)
            reasoning, body = split_reasoning(content)
            if after_user:
                header = [[self.ids[ASSISTANT]]]
            if after_user or reasoning:
                output = [[self.ids[THINK]], reasoning or "", [self.ids[END_THINK]]]
        else:
            if after_user:
                header = [[self.ids[ASSISTANT], self.ids[END_THINK]]]
            after_tool = ctx.prev is not None and ctx.prev["role"] == "tool"
            if isinstance(content, str) and (calls or after_tool):
                body = content  # the template splits on </think> only for a plain reply not after a tool
            else:
                body = split_reasoning(content)[1]
        output.append(body)
        if calls:
            output += self._calls(calls)
        output.append([self.eos])
        return RenderedMessage(header=header, output=output)

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """After a user message: ``<｜Assistant｜></think>`` (chat) or ``<｜Assistant｜><think>`` (thinking);
        after anything else nothing (the template adds no prompt after a tool output or an assistant turn)."""
        if role != "assistant":
            raise RendererError(f"DeepSeek V3 generates only assistant turns, not {role!r}")
        if not self._after_user(ctx):
            return []
        return [[self.ids[ASSISTANT], self.ids[THINK] if self.thinking else self.ids[END_THINK]]]

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message declaring ``tools`` in the model card's format, after ``system_prompt + "\\n\\n"``
        when one is given. With no tools this is just the system prompt (or nothing)."""
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        prefix = "" if not system_prompt else system_prompt + "\n\n"
        return [{"role": "system", "content": prefix + tool_declaration(tools)}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.eos]

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]:
        """Sampled tokens -> assistant message.

        * one ``<｜end▁of▁sentence｜>`` at the end: STOP_SEQUENCE (it is both the stop and the EOS token);
          none: MALFORMED with the raw decoded text as content; a stop token that is not last, or two:
          :class:`RendererError`.
        * ``{reasoning}</think>{text}`` (the prompt pre-filled ``<think>``) or ``<think>{reasoning}</think>{text}``
          -> a :class:`ThinkingPart` and a text part (an empty block is dropped); content is then a list.
        * ``<｜tool▁calls▁begin｜>...<｜tool▁calls▁end｜>`` after the text -> :class:`ToolCall`\\ s (arguments kept as
          the JSON string sampled); a call whose arguments are not JSON, or an unterminated block ->
          :class:`UnparsedToolCall`.
        """
        body, term = self.split_on_stop_token(response, self.eos)
        text = self.decode(body)
        if term is ParseTermination.MALFORMED:
            return {"role": "assistant", "content": text}, term
        return self.parse_text(text), term

    def parse_text(self, text: str) -> Message:
        reasoning: str | None = None
        if END_THINK in text:
            before, _, text = text.partition(END_THINK)
            reasoning = before.removeprefix(THINK)
        calls: list[ToolCall] = []
        unparsed: list[UnparsedToolCall] = []
        if CALLS_BEGIN in text:
            i = text.index(CALLS_BEGIN)
            block, text = text[i:], text[:i]
            if not block.endswith(CALLS_END):
                unparsed.append(
                    UnparsedToolCall(
                        raw_text=block, error=f"unterminated tool-call block (no {CALLS_END} at the end)"
                    )
                )
            else:
                inner = block[len(CALLS_BEGIN) : -len(CALLS_END)]
                rest = _CALL_RE.sub("", inner)
                for m in _CALL_RE.finditer(inner):
                    name, args = m.group(1), m.group(2)
                    try:
                        json.loads(args)
                    except json.JSONDecodeError as exc:
                        unparsed.append(
                            UnparsedToolCall(
                                raw_text=m.group(0), error=f"invalid JSON arguments for {name!r}: {exc}"
                            )
                        )
                        continue
                    calls.append(ToolCall(name=name, arguments=args))
                if rest.strip():
                    unparsed.append(
                        UnparsedToolCall(
                            raw_text=rest, error="text inside the tool-call block that is not a call"
                        )
                    )
        msg: Message
        if reasoning:
            msg = {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": reasoning}, {"type": "text", "text": text}],
            }
        else:
            msg = {"role": "assistant", "content": text}
        if calls:
            msg["tool_calls"] = calls
        if unparsed:
            msg["unparsed_tool_calls"] = unparsed
        return msg


class DeepSeekV3DisableThinkingRenderer(DeepSeekV3Renderer):
    """Alias of :class:`DeepSeekV3Renderer` (chat mode), registered as ``deepseekv3_disable_thinking``."""

    name = "deepseekv3_disable_thinking"


class DeepSeekV3ThinkingRenderer(DeepSeekV3Renderer):
    """DeepSeek V3.1 in thinking mode (the template with ``thinking=True``)."""

    name = "deepseekv3_thinking"
    has_extension_property = False
    thinking = True
