"""Nemotron 3 renderers: ``nemotron3`` (thinking) and ``nemotron3_disable_thinking``.

Oracle: the Nemotron 3 Nano chat template (llama.cpp's copy, ``NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja``) with
the Nemotron 3 tokenizer (exported from tml-renderers; control tokens ``<|im_start|>``=10, ``<|im_end|>``=11,
``<think>``=12, ``</think>``=13, ``<tool_call>``=14, ``</tool_call>``=15, ``<tool_response>``=16,
``</tool_response>``=17 are written as ids; content is encoded literally, see ``literal-special-text``).

Token format (ChatML, a close relative of Qwen3.5)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n...

* **System block always present.** When the conversation does not start with a system message, the template
  writes an empty one, ``<|im_start|>system\\n<|im_end|>\\n``; the renderer puts it in the (untrained) header of
  the first message. System, user and tool content is written verbatim (not trimmed).
* **Headers** ``\\n<|im_start|>{role}\\n``: the ``\\n`` after the previous ``<|im_end|>`` opens the next header.
* **Assistant messages at or after the last user message**: ``<think>\\n{reasoning}\\n</think>\\n{text}`` when the
  message reasons, else ``<think></think>{text}``; the whole is right-trimmed. With tool calls: that text, then
  ``\\n``, then each call as ``<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n</function>\\n
  </tool_call>\\n`` (V as in Qwen3.5: JSON for objects/arrays, Python ``str`` otherwise).
* **Assistant messages before the last user message** (history, ``truncate_history_thinking``): the reasoning is
  dropped and the message is ``<think></think>`` + the rest trimmed; a message that had reasoning keeps the
  ``\\n`` that followed ``</think>`` (``<think></think>\\n{text}``), and with tool calls ``<think></think>{text}\\n``.
  The ``<think></think>`` of such a message is its header (untrained: the model never wrote it that way).
* **The message being produced** (the last message of a supervised example, thinking mode): the ``<think>\\n``
  that the generation prompt ``...<|im_start|>assistant\\n<think>\\n`` supplies is header and the rest,
  ``{reasoning}\\n</think>\\n{text}``, is trained. When it does not reason the template writes
  ``<think></think>{text}``, which is not a continuation of that prompt (the sampler could never produce it); the
  renderer writes the empty block ``<think>\\n\\n</think>\\n{text}`` instead: named deviation
  ``produced-turn-empty-think`` (tinker-cookbook keeps the template's form and so trains an unsampleable turn).
* **Tool responses** are grouped in one ``user`` block: ``<tool_response>\\n{content}\\n</tool_response>\\n`` each,
  then ``<|im_end|>``.
* **Tool declarations** (:meth:`create_conversation_prefix_with_tools`): the system message
  ``{system}\\n\\n# Tools ... <tools>`` with one XML ``<function>`` element per tool (name, description,
  ``<parameters>`` with one ``<parameter>`` per property, extra keys, ``<required>``) and the same instructions
  block as Qwen3.5; the system prompt comes first.

``nemotron3_disable_thinking`` (``enable_thinking=False``): the generation prompt ends
``<|im_start|>assistant\\n<think></think>``; the ``<think></think>`` of a non-reasoning message after the last user
message is header; a trained message that reasons raises :class:`~cookbook.errors.RendererError`.

Stop sequence ``<|im_end|>``; ``</s>`` at the end of a response is an EOS termination. No extension property.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import (
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    ToolSpec,
    TrainOnWhat,
    last_user_index,
    text_of,
)
from cookbook.renderers.qwen3_5 import (
    QWEN3_5_TOOLS_PREAMBLE,
    TOOLS_INSTRUCTIONS,
    Lit,
    Piece,
    SegmentWriter,
    declaration_pieces,
    jinja_string,
    parse_think_and_xml_calls,
    split_reasoning,
    tojson,
    xml_tool_call_pieces,
)

NEMOTRON3_TOOLS_PREAMBLE = QWEN3_5_TOOLS_PREAMBLE  # identical text in both templates
_EMPTY_SYSTEM = "<|im_start|>system\n<|im_end|>\n"


def _extra_keys(obj: Any, handled: Sequence[str]) -> str:
    """The template's ``render_extra_keys``: ``\\n<key>value</key>`` for every unhandled key (JSON for objects and
    arrays, ``|string`` otherwise)."""
    if not isinstance(obj, Mapping):
        return ""
    out = []
    for key, value in obj.items():
        if key in handled:
            continue
        shown = tojson(value) if isinstance(value, Mapping | list | tuple) else jinja_string(value)
        out.append(f"\n<{key}>{shown}</{key}>")
    return "".join(out)


def tool_declaration_xml(tool: Mapping[str, Any]) -> str:
    """One tool as the template's ``<function>`` element (an OpenAI ``{"type": "function", "function": ...}``
    wrapper is unwrapped first)."""
    if isinstance(tool.get("function"), Mapping):
        tool = tool["function"]
    out = ["\n<function>\n<name>" + str(tool["name"]) + "</name>"]
    if "description" in tool:
        out.append("\n<description>" + str(tool["description"]).strip() + "</description>")
    out.append("\n<parameters>")
    params = tool.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    if isinstance(props, Mapping):
        for pname, fields in props.items():
            out.append("\n<parameter>\n<name>" + str(pname) + "</name>")
            if isinstance(fields, Mapping):
                if "type" in fields:
                    out.append("\n<type>" + jinja_string(fields["type"]) + "</type>")
                if "description" in fields:
                    out.append("\n<description>" + str(fields["description"]).strip() + "</description>")
                if "enum" in fields:
                    out.append("\n<enum>" + tojson(fields["enum"]) + "</enum>")
            out.append(_extra_keys(fields, ("name", "type", "description", "enum")))
            out.append("\n</parameter>")
    out.append(_extra_keys(params, ("type", "properties", "required")))
    if isinstance(params, Mapping) and "required" in params:
        out.append("\n<required>" + tojson(params["required"]) + "</required>")
    out.append("\n</parameters>")
    out.append(_extra_keys(tool, ("type", "name", "description", "parameters")))
    out.append("\n</function>")
    return "".join(out)


class Nemotron3Renderer(Renderer):
    """Nemotron 3 (Nano / Super) in thinking mode (the template with ``enable_thinking`` unset)."""

    name = "nemotron3"
    supports_thinking = True
    supports_tools = True
    has_extension_property = False
    #: what the generation prompt pre-fills after ``<|im_start|>assistant\n``
    prefill_block: str = "<think>\n"

    CONTROL_TOKENS = (
        "<|im_start|>", "<|im_end|>", "<think>", "</think>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
    )

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        self.w = SegmentWriter(self.enc, self.CONTROL_TOKENS)
        self.im_end = self.w.ids["<|im_end|>"]
        self.eos = self.enc.special("</s>")

    # ------------------------------------------------------------------------------------------ rendering
    def _open(self, role: str, ctx: RenderContext) -> str:
        if ctx.idx == 0:
            lead = "" if role == "system" else _EMPTY_SYSTEM
        else:
            lead = "\n"
        return lead + "<|im_start|>" + role + "\n"

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        if role == "assistant":
            return self._render_assistant(msg, ctx)
        if role == "tool":
            continues = ctx.prev is not None and ctx.prev["role"] == "tool"
            followed = ctx.next is not None and ctx.next["role"] == "tool"
            header = [] if continues else self.w(self._open("user", ctx))
            body: list[Piece] = ["<tool_response>\n", Lit(text_of(msg["content"])), "\n</tool_response>\n"]
            if not followed:
                body.append("<|im_end|>")
            return RenderedMessage(header=header, output=self.w(*body))
        text = text_of(msg["content"])
        pieces = declaration_pieces(text, NEMOTRON3_TOOLS_PREAMBLE) if role == "system" else [Lit(text)]
        return RenderedMessage(header=self.w(self._open(role, ctx)), output=self.w(*pieces, "<|im_end|>"))

    def _render_assistant(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        reasoning, text = split_reasoning(msg)
        reasons = bool(reasoning.strip())
        calls = msg.get("tool_calls") or []
        header: list[Piece] = [self._open("assistant", ctx)]
        body: list[Piece] = []
        if ctx.idx < ctx.last_user_index:  # history: reasoning truncated to <think></think>
            header.append("<think></think>")
            if calls:
                body += [Lit(text.strip()), "\n"]
            else:
                rest = ("<think></think>" + ("\n" + text if reasons else text)).strip()
                body.append(Lit(rest[len("<think></think>") :]))
        else:
            produced = ctx.is_last and not ctx.for_prompt and self.prefill_block == "<think>\n"
            if reasons or produced:  # a produced turn always continues the prompt's "<think>\n" (deviation)
                full = ("<think>\n" + reasoning + "\n</think>\n" + text).rstrip()
                if produced:
                    header.append("<think>\n")
                    full = full[len("<think>\n") :]
                body += self._split_think(full)
            elif self.prefill_block != "<think>\n":  # disabled: the prompt supplies <think></think>
                header.append("<think></think>")
                body.append(Lit(text.rstrip()))
            else:
                body += ["<think></think>", Lit(text.rstrip())]
            if calls:
                body.append("\n")
        for call in calls:
            body += [*xml_tool_call_pieces(call), "\n"]
        body.append("<|im_end|>")
        return RenderedMessage(header=self.w(*header), output=self.w(*body))

    @staticmethod
    def _split_think(full: str) -> list[Piece]:
        """``[<think>\\n]reasoning\\n</think>\\ntext``: the tags are structural, reasoning and text are content."""
        head, sep, tail = full.rpartition("\n</think>")
        if not sep:
            return [Lit(full)]
        opening = "<think>\n" if head.startswith("<think>\n") else ""
        return [opening, Lit(head[len(opening) :]), "\n</think>", Lit(tail)]

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``\\n<|im_start|>assistant\\n<think>\\n`` (thinking) or ``...<think></think>`` (disabled)."""
        if role != "assistant":
            return self.w(self._open(role, ctx))
        return self.w(self._open(role, ctx), self.prefill_block)


    # ------------------------------------------------------------------------------------------ tools
    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str | None = None
    ) -> list[Message]:
        """The system message: ``{system_prompt}\\n\\n`` (when non-empty), then the ``# Tools`` block with one XML
        ``<function>`` per tool and the template's instructions."""
        if not tools:
            return [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        decl = NEMOTRON3_TOOLS_PREAMBLE + "".join(tool_declaration_xml(dict(t)) for t in tools) + TOOLS_INSTRUCTIONS
        text = (system_prompt + "\n\n" if system_prompt else "") + decl
        return [{"role": "system", "content": text}]

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.im_end]

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]:
        """Sampled tokens (after the generation prompt) -> assistant message: one ``<|im_end|>`` at the end is
        ``STOP_SEQUENCE``, ``</s>`` at the end instead ``EOS``, neither ``MALFORMED`` (raw text, nothing parsed); a
        stop token that is not last, or two, raise. The prompt's ``<think>`` is restored when the text closes
        a think block; thinking, text and ``<tool_call>`` XML blocks are parsed as for Qwen3.5."""
        tokens = [int(t) for t in response]
        if tokens and tokens[-1] == self.eos and self.im_end not in tokens:
            body, term = tokens[:-1], ParseTermination.EOS
        else:
            body, term = self.split_on_stop_token(tokens, self.im_end)
        text = self.decode(body)
        if term is ParseTermination.MALFORMED:
            return {"role": "assistant", "content": text}, term
        if "</think>" in text and "<think>" not in text.split("</think>", 1)[0]:
            text = "<think>" + text
        return parse_think_and_xml_calls(text), term


class Nemotron3DisableThinkingRenderer(Nemotron3Renderer):
    """Nemotron 3 with ``enable_thinking=False``: the prompt pre-fills ``<think></think>``; a trained assistant
    message (at or after the boundary of the training mode) that reasons raises :class:`RendererError`."""

    name = "nemotron3_disable_thinking"
    disables_thinking = True
    prefill_block = "<think></think>"

    def _untrain_generation_prompt(
        self,
        messages: Sequence[Message],
        mode: TrainOnWhat,
        tokens: list[int],
        weights: list[float],
        memo: dict[str, list[int]] | None = None,
    ) -> list[float]:
        boundary = len(messages) - 1 if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE else last_user_index(messages) + 1
        for i in range(max(boundary, 0), len(messages)):
            if messages[i]["role"] == "assistant" and split_reasoning(messages[i])[0].strip():
                raise RendererError(
                    f"renderer {self.name!r} disables thinking, but assistant message {i} reasons; its generation "
                    "prompt pre-fills <think></think>, so the model could never have produced it. Use the "
                    "'nemotron3' renderer or remove the reasoning."
                )
        return weights
