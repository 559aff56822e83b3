"""GLM renderers: ``glm`` (the GLM-4.7-Flash chat format, thinking on) and ``glm5_3_*`` (GLM-5.3, below).

Oracle: llama.cpp's copy of the GLM-4.7-Flash chat template (``GLM-4.7-Flash.jinja``, the newest GLM template in any
package registry) with tml-renderers' GLM tokenizer (a later, GLM-5.x-generation release with the same control
tokens: ``[gMASK]``=154822, ``<sop>``=154824, ``<|system|>``=154826, ``<|user|>``=154827, ``<|assistant|>``=154828,
``<|observation|>``=154829, ``<think>``=154841, ``</think>``=154842, ``<tool_call>``=154843 ... ``</arg_value>``=
154850). Every control token is special, so content is encoded literally (the spec's ``literal-special-text``).
The GLM-5.3 format (``glm5_3_*``, a ``Reasoning Effort`` system segment) is the option
``reasoning_effort`` of the same class; see **GLM-5.3** below.

Token format (no end-of-message token: a turn ends where the next role token begins)::

    [gMASK]<sop><|system|>{system}<|user|>{text}<|assistant|><think>{reasoning}</think>{answer}<|user|>...

* ``[gMASK]<sop>`` opens every conversation (never trained).
* **System, user and tool content** is written verbatim; headers are ``<|system|>`` / ``<|user|>``.
* **Assistant messages**: header ``<|assistant|>``; then ``<think>{reasoning}</think>`` (reasoning trimmed) when
  the message comes after the last user message and reasons, else the bare ``</think>`` the template writes for a
  message whose reasoning is cleared; then the text trimmed; then each tool call
  ``<tool_call>{name}<arg_key>{key}</arg_key><arg_value>{value}</arg_value>...</tool_call>`` (a string value raw,
  anything else JSON with non-ASCII kept).
* **The message being produced** (the last message of a supervised example) continues the generation prompt
  ``...<|assistant|><think>``: its header is ``<|assistant|><think>`` and its output ``{reasoning}</think>{text}``,
  also when it does not reason (the template writes ``<|assistant|></think>{text}``, which the sampler could never
  produce after the prompt's ``<think>``): named deviation ``think-block-in-last-turn``.
* **Terminators.** An assistant message ends by sampling the next role token: ``<|observation|>`` after tool calls,
  else ``<|user|>``. That token belongs to the assistant's (trained) output when the next message starts with it
  (the next message then has no header), and it is appended after the last message of a supervised example
  (``stop_overlap``; the template writes nothing there): named deviation ``terminator-after-last-turn``.
* **Tool responses**: ``<|observation|>`` once per run of tool messages, then ``<tool_response>{content}
  </tool_response>`` each.
* **Tool declarations** (:meth:`create_conversation_prefix_with_tools`) are a system message of their own, before the
  system prompt: ``<|system|>\\n# Tools\\n\\n...<tools>\\n{json}\\n...</tools>\\n\\nFor each function call...``
  with one ``tojson`` line per ``{"type": "function", "function": spec}``; the instructions' ``<tool_call>``,
  ``<arg_key>``, ``<arg_value>`` tags are control tokens, as in the template.

Stop sequences ``<|user|>`` and ``<|observation|>``; ``<|endoftext|>`` at the end of a response is an EOS
termination. No extension property: reasoning of earlier turns is cleared, and a produced ``<think></think>``
becomes ``</think>`` in later prompts.

**GLM-5.3** (``glm5_3_max_reasoning``, ``glm5_3_high_reasoning``, ``glm5_3_low_reasoning``: the option
``reasoning_effort``). Oracle: tml-renderers 0.2.1's ``Glm53`` / ``Glm53Flash`` with ``clear_thinking=False`` (the
HF template's default per tinker-cookbook; no GLM-5.x template reaches any registry). Same tokens, roles, tool-call
and tool-response format as above, except:

* ``[gMASK]<sop>`` is followed by ``<|system|>Reasoning Effort: {Max|High|Low}`` (part of the untrained opening).
* Every assistant message keeps its reasoning: header ``<|assistant|><think>``, output ``{reasoning}</think>{text}``
  (reasoning as given, text trimmed), ``</think>`` alone when it does not reason.
* The last message of a supervised example ends with ``<|endoftext|>`` (trained), as tml-renderers writes it; in the
  middle of a conversation an assistant message still ends with the next role token (``<|user|>`` /
  ``<|observation|>``). Stop sequences ``<|endoftext|>``, ``<|user|>``, ``<|observation|>`` (a clean stop each).
* The tool declaration lists each tool spec unwrapped (one line per spec, not ``{"type": "function", ...}``), as
  tml-renderers serialises it (:func:`glm5_3_tool_json`): ``name``, ``description``, ``parameters``, and in every
  JSON schema the keys ``type``, ``description``, ``properties`` (sorted by name), ``required``, ``items``, ``enum``,
  ``anyOf``, ``additionalProperties`` first, then the other keys sorted (their values with sorted keys throughout).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import (
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
from cookbook.renderers.kit.parsing import collect_arguments, parse_think_and_calls
from cookbook.renderers.kit.segments import Lit, Piece, SegmentWriter, tojson
from cookbook.renderers.kit.thinking import restore_think_opening, split_reasoning
from cookbook.renderers.kit.tools import function_tool, object_arguments, tool_run

GLM_TOOLS_PREAMBLE = (
    "\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\n<tools>\n"
)
GLM_TOOLS_INSTRUCTIONS = (
    "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"
    "<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>{arg-value-1}</arg_value><arg_key>"
    "{arg-key-2}</arg_key><arg_value>{arg-value-2}</arg_value>...</tool_call>"
)


def glm_argument_value(value: Any) -> str:
    """A tool-call argument value as the template writes it: a string raw, anything else ``tojson``."""
    return value if isinstance(value, str) else tojson(value)


_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_NAME = re.compile(r"^[\w.\-:/]+$")
_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


def parse_glm_tool_call(raw: str) -> ToolCall | UnparsedToolCall:
    """``<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value>...</tool_call>`` -> :class:`ToolCall` (each
    value ``json.loads``-ed when it is JSON, else kept as the string), or :class:`UnparsedToolCall`."""
    body = raw[len("<tool_call>") : -len("</tool_call>")]
    name, sep, rest = body.partition("<arg_key>")
    name = name.strip()
    if not _NAME.match(name):
        return UnparsedToolCall(raw_text=raw, error="<tool_call> block has no function name")
    args = collect_arguments(sep + rest, _ARG)
    if isinstance(args, str):
        return UnparsedToolCall(raw_text=raw, error=args)
    return ToolCall(name=name, arguments=json.dumps(args, ensure_ascii=False))


class GlmRenderer(Renderer):
    """GLM-4.7-Flash with thinking on (the template's default; generation prompt ``<|assistant|><think>``)."""

    name = "glm"
    supports_thinking = True
    supports_tools = True
    has_extension_property = False

    CONTROL_TOKENS = (
        "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<think>", "</think>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<arg_key>", "</arg_key>",
        "<arg_value>", "</arg_value>",
    )

    #: GLM-5.3 reasoning efforts, as the ``Reasoning Effort`` segment writes them
    EFFORTS = {"max": "Max", "high": "High", "low": "Low"}

    def __init__(self, tokenizer: Any, reasoning_effort: str | None = None):
        """``reasoning_effort=None``: GLM-4.7-Flash. ``max`` / ``high`` / ``low``: GLM-5.3 with that effort (see the
        module docs)."""
        super().__init__(tokenizer)
        if reasoning_effort is not None and reasoning_effort not in self.EFFORTS:
            raise RendererError(
                f"reasoning_effort {reasoning_effort!r} is not one of {', '.join(self.EFFORTS)} (GLM-5.3), or None "
                "(GLM-4.7)"
            )
        self.glm5_3 = reasoning_effort is not None
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.user = self.w.ids["<|user|>"]
        self.observation = self.w.ids["<|observation|>"]
        self.eos_token_id = self.endoftext = self.enc.special("<|endoftext|>")
        self._bos = [self.w.ids["[gMASK]"], self.w.ids["<sop>"]]
        if reasoning_effort is not None:
            self.has_extension_property = False  # the last turn ends <|endoftext|>, history turns <|user|>
            self._bos += [self.w.ids["<|system|>"], *self.enc.encode("Reasoning Effort: " + self.EFFORTS[reasoning_effort])]

    def bos_tokens(self) -> list[int]:
        return list(self._bos)

    # ------------------------------------------------------------------------------------------ rendering
    @staticmethod
    def _role_token(role: str) -> str:
        return {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "tool": "<|observation|>"}.get(
            role, "<|" + role + "|>"
        )

    @staticmethod
    def _terminator(msg: Message) -> str:
        return "<|observation|>" if msg.get("tool_calls") else "<|user|>"

    def _supplied_by_prev(self, msg: Message, ctx: RenderContext) -> bool:
        """The previous assistant message already wrote this message's role token as its terminator."""
        prev = ctx.prev
        return prev is not None and prev["role"] == "assistant" and self._terminator(prev) == self._role_token(msg["role"])

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "assistant":
            return self._render_assistant(msg, ctx)
        if role == "tool":
            continues, _ = tool_run(ctx)
            header = [] if continues or self._supplied_by_prev(msg, ctx) else self.w("<|observation|>")
            return RenderedMessage(
                header=header, output=self.w("<tool_response>", Lit(text_of(msg["content"])), "</tool_response>")
            )
        if role not in ("system", "user"):
            raise RendererError(f"message {ctx.idx}: GLM has no role {role!r} (system, user, assistant, tool)")
        header = [] if self._supplied_by_prev(msg, ctx) else self.w(self._role_token(role))
        text = text_of(msg["content"])
        body = _declaration_pieces(text) if role == "system" else [Lit(text)]
        return RenderedMessage(header=header, output=self.w(*body))

    def _render_assistant(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        if self.glm5_3:
            return self._render_assistant_5_3(msg, ctx)
        reasoning, text = split_reasoning(msg)
        reasoning, text = reasoning.strip(), text.strip()
        header: list[Piece] = [] if self._supplied_by_prev(msg, ctx) else ["<|assistant|>"]
        body: list[Piece] = []
        if ctx.is_last and not ctx.for_prompt:  # being produced: the prompt supplied "<think>"
            header.append("<think>")
            body += [Lit(reasoning), "</think>"]
        elif ctx.idx > ctx.last_user_index and reasoning:
            body += ["<think>", Lit(reasoning), "</think>"]
        else:
            body.append("</think>")
        body.append(Lit(text))
        for call in msg.get("tool_calls") or []:
            body += _call_pieces(call)
        nxt = ctx.next
        term = self._terminator(msg)
        stop_overlap: list[Segment] | None = None
        if nxt is not None and self._role_token(nxt["role"]) == term:
            body.append(term)
        elif nxt is None:
            stop_overlap = self.w(term)
        return RenderedMessage(header=self.w(*header), output=self.w(*body), stop_overlap=stop_overlap)

    def _render_assistant_5_3(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        """GLM-5.3: ``<|assistant|><think>`` (header) + ``{reasoning}</think>{text}{calls}`` + terminator; the last
        message of a supervised example ends ``<|endoftext|>``."""
        reasoning, text = _split_content(msg)
        header: list[Piece] = [] if self._supplied_by_prev(msg, ctx) else ["<|assistant|>"]
        header.append("<think>")
        body: list[Piece] = [Lit(reasoning), "</think>", Lit(text.strip())]
        for call in msg.get("tool_calls") or []:
            body += _call_pieces(call)
        nxt = ctx.next
        term = self._terminator(msg)
        stop_overlap: list[Segment] | None = None
        if nxt is not None and self._role_token(nxt["role"]) == term:
            body.append(term)
        elif nxt is None:
            stop_overlap = [[self.endoftext]]
        return RenderedMessage(header=self.w(*header), output=self.w(*body), stop_overlap=stop_overlap)

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``<|assistant|><think>``; the role token is left out when the previous assistant message wrote it."""
        msg: Message = {"role": role, "content": ""}
        lead: list[Piece] = [] if self._supplied_by_prev(msg, ctx) else [self._role_token(role)]
        return self.w(*lead, "<think>" if role == "assistant" else "")

    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """``[declaration system message, system prompt message]``: the template's ``# Tools`` block (one ``tojson``
        line per ``{"type": "function", "function": spec}``), then the system prompt as its own message."""
        system_prompt = system_prompt or None  # "" is no system prompt (tinker-cookbook passes "" by default)
        out: list[Message] = []
        if tools:
            # GLM-5.3 lists the specs as they are; the GLM-4.7 template wraps each in {"type": "function", ...}
            lines = "".join((glm5_3_tool_json(t) if self.glm5_3 else tojson(function_tool(t))) + "\n" for t in tools)
            out.append({"role": "system", "content": GLM_TOOLS_PREAMBLE + lines + GLM_TOOLS_INSTRUCTIONS})
        if system_prompt is not None:
            out.append({"role": "system", "content": system_prompt})
        return out

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        if self.glm5_3:
            return [self.endoftext, self.user, self.observation]
        return [self.user, self.observation]

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text (after ``<|assistant|><think>``; stops ``<|user|>`` / ``<|observation|>``,
        ``<|endoftext|>`` an EOS) -> assistant message: the prompt's ``<think>`` is restored when ``</think>``
        appears; reasoning and text are trimmed (as the template trims them); ``<tool_call>`` blocks become tool
        calls (an unterminated one is dropped from the text)."""
        return parse_think_and_calls(restore_think_opening(text), parse_glm_tool_call, keep_unterminated_text=False)


_SCHEMA_KEYS = ("type", "description", "properties", "required", "items", "enum", "anyOf", "additionalProperties")


def _sorted_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_json(v) for v in value]
    return value


def _schema(schema: Any) -> Any:
    """A JSON schema in tml-renderers' GLM key order (see the module docs)."""
    if not isinstance(schema, dict):
        return _sorted_json(schema)
    out: dict[str, Any] = {}
    for key in _SCHEMA_KEYS:
        if key not in schema:
            continue
        value = schema[key]
        if key == "properties" and isinstance(value, dict):
            value = {name: _schema(value[name]) for name in sorted(value)}
        elif key in ("items", "additionalProperties"):
            value = _schema(value)
        elif key == "anyOf" and isinstance(value, list):
            value = [_schema(v) for v in value]
        else:
            value = _sorted_json(value)
        out[key] = value
    for key in sorted(k for k in schema if k not in _SCHEMA_KEYS):
        out[key] = _sorted_json(schema[key])
    return out


def glm5_3_tool_json(tool: ToolSpec) -> str:
    """One GLM-5.3 declaration line: ``{"name", "description", "parameters"}`` with the schema in tml-renderers'
    key order (any other key of the spec follows, as given)."""
    spec: dict[str, Any] = dict(tool)
    if spec.get("type") == "function" and isinstance(spec.get("function"), dict):
        spec = dict(spec["function"])
    head = {
        "name": spec.get("name"),
        "description": spec.get("description", ""),
        "parameters": _schema(spec.get("parameters", {})),
    }
    rest = {k: v for k, v in spec.items() if k not in head}
    return tojson({**head, **rest})


def _call_pieces(call: ToolCall) -> list[Piece]:
    """``<tool_call>{name}<arg_key>{key}</arg_key><arg_value>{value}</arg_value>...</tool_call>``."""
    body: list[Piece] = ["<tool_call>", Lit(call.name)]
    for key, value in object_arguments(call).items():
        body += ["<arg_key>", Lit(str(key)), "</arg_key><arg_value>", Lit(glm_argument_value(value)), "</arg_value>"]
    body.append("</tool_call>")
    return body


def _split_content(msg: Message) -> tuple[str, str]:
    """GLM-5.3's ``(reasoning, text)``: thinking parts and text parts each joined with nothing (as tml-renderers
    joins them); string content is text, written as it is."""
    content = msg["content"]
    if isinstance(content, str):
        return "", content
    return "".join(thinking_of(content)), text_of(content)


def _declaration_pieces(text: str) -> list[Piece]:
    """System text -> pieces: the declaration scaffolding written by :meth:`create_conversation_prefix_with_tools` is
    structural (its tags become control tokens); everything else, the tool JSON included, is content."""
    if not text.startswith(GLM_TOOLS_PREAMBLE) or not text.endswith(GLM_TOOLS_INSTRUCTIONS):
        return [Lit(text)]
    middle = text[len(GLM_TOOLS_PREAMBLE) : len(text) - len(GLM_TOOLS_INSTRUCTIONS)]
    return [GLM_TOOLS_PREAMBLE, Lit(middle), GLM_TOOLS_INSTRUCTIONS]
