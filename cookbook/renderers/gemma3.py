"""Gemma 3 instruction-tuned models (``google/gemma-3-*-it``), text only, no tools.

Token format (the official Gemma 3 chat template)::

    <bos><start_of_turn>user\\n{system}\\n\\n{user}<end_of_turn>\\n<start_of_turn>model\\n{reply}<end_of_turn>\\n...

* ``<bos>``, ``<start_of_turn>`` and ``<end_of_turn>`` are control tokens; the assistant role is written
  ``model``. The generation prompt ends with ``<start_of_turn>model\\n``; the model stops with
  ``<end_of_turn>`` (``<eos>`` instead gives :attr:`ParseTermination.EOS`).
* There is no system turn: a leading system message is written at the start of the first user turn,
  followed by ``\\n\\n``. Here the system message renders as the *header* ``<start_of_turn>user\\n`` plus the
  *output* ``{system}\\n\\n``, and the user message that follows gets no header of its own, so the system text
  is trained exactly when system messages are (``all_user_and_system_messages``, ``all_messages``...).
* The header of every later message is ``\\n<start_of_turn>{role}\\n``: the ``\\n`` the template writes after
  ``<end_of_turn>`` opens the *next* header, so a supervised example ends at the ``<end_of_turn>`` the model
  samples (named deviation ``no-trailing-newline``).
* Content is kept verbatim; the template trims it (named deviation ``no-trim``). Content text that looks like
  a control token is encoded as ordinary text (``literal-special-text``).

Refused, with a :class:`~cookbook.errors.RendererError` saying why: tool declarations, tool calls and tool
messages (the Gemma 3 template has no tool format and raises on a ``tool`` role), thinking parts, images, a
system message that is not first or not followed by a user message, and user/assistant messages that do not
alternate (the template raises ``Conversation roles must alternate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cookbook.errors import RendererError
from cookbook.renderers.base import (
    Message,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    text_of,
)


class Gemma3Renderer(Renderer):
    """Gemma 3 ``-it`` chat format (see the module docstring for the token layout)."""

    name = "gemma3"
    has_extension_property = True

    def __init__(self, tokenizer: Any):
        super().__init__(tokenizer)
        self.bos = self.enc.special("<bos>")
        self.eos_token_id = self.eos = self.enc.special("<eos>")
        self.start_of_turn = self.enc.special("<start_of_turn>")
        self.end_of_turn = self.enc.special("<end_of_turn>")

    def bos_tokens(self) -> list[int]:
        return [self.bos]

    # ------------------------------------------------------------------------------------------ checks
    def check_messages(self, messages: Sequence[Message]) -> None:
        for i, m in enumerate(messages):
            if isinstance(m, dict) and (m.get("tool_calls") or m.get("role") in ("tool", "tool_declare")):
                raise RendererError(
                    f"message {i} ({m.get('role')}) uses tools, but Gemma 3 has no tool-calling format (its chat "
                    "template raises on tool roles); describe tools in the system prompt as plain text, or use a "
                    "renderer with tool support"
                )
        super().check_messages(messages)
        expect_user = True
        for i, m in enumerate(messages):
            role = m["role"]
            if role == "system":
                if i != 0:
                    raise RendererError(
                        f"message {i} is a system message; Gemma 3 accepts one system message, first (it is "
                        "written at the start of the first user turn)"
                    )
                if len(messages) < 2 or messages[1]["role"] != "user":
                    raise RendererError(
                        "the system message must be followed by a user message: Gemma 3 writes it at the start "
                        "of the first user turn"
                    )
                continue
            if role not in ("user", "assistant"):
                raise RendererError(
                    f"message {i} has role {role!r}; Gemma 3 knows only system (first), user and assistant"
                )
            if (role == "user") != expect_user:
                raise RendererError(
                    f"message {i} ({role}): Gemma 3 conversations must alternate user/assistant/user/... "
                    "(the chat template raises otherwise); merge consecutive messages of the same role"
                )
            expect_user = not expect_user

    # ------------------------------------------------------------------------------------------ rendering
    def _turn_header(self, role: str, ctx: RenderContext) -> list[Segment]:
        """``<start_of_turn>{role}\\n``, preceded by ``\\n`` (the previous turn's line end) after a turn."""
        lead: list[Segment] = ["\n"] if ctx.prev is not None else []
        return [*lead, [self.start_of_turn], ("model" if role == "assistant" else role) + "\n"]

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        text = text_of(msg["content"])
        if role == "system":
            return RenderedMessage(header=self._turn_header("user", ctx), output=[text + "\n\n"])
        header: list[Segment] = (
            [] if ctx.prev is not None and ctx.prev["role"] == "system" else self._turn_header(role, ctx)
        )
        return RenderedMessage(header=header, output=[text, [self.end_of_turn]])

    # ------------------------------------------------------------------------------------------ sampling
    def get_stop_sequences(self) -> list[int]:
        return [self.end_of_turn]
