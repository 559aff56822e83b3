"""RoleColon: the plain-text format for base models (``User: ...\\n\\nAssistant: ...``).

Header ``Role:``; output ``" " + text + "\\n\\n"``; after the final message of a supervised example the
assistant learns to write ``User:`` (a ``stop_overlap``), which with the preceding ``\\n\\n`` is the stop
string ``"\\n\\nUser:"``. No template exists (base models have none): the spec is the oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

from cookbook.renderers.base import (
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    Segment,
    text_of,
)


class RoleColonRenderer(Renderer):
    name = "role_colon"
    has_extension_property = True
    STOP = "\n\nUser:"

    def bos_tokens(self) -> list[int]:
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos:
            return [self.enc.special(bos)]
        return []

    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        role = msg["role"]
        header = role[:1].upper() + role[1:] + ":"
        text = text_of(msg["content"])
        # `User:` is the stop overlap after an assistant turn; other roles have nothing to overlap.
        overlap: list[Segment] | None = ["User:"] if role == "assistant" else None
        return RenderedMessage(header=[header], output=[" " + text + "\n\n"], stop_overlap=overlap)

    def get_stop_sequences(self) -> list[str]:
        return [self.STOP]

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]:
        tokens = [int(t) for t in response]
        eos = getattr(self.tokenizer, "eos_token_id", None)
        ended_eos = bool(tokens) and eos is not None and tokens[-1] == eos
        if ended_eos:
            tokens = tokens[:-1]
        pieces = self.decode(tokens).split(self.STOP)
        text = pieces[0]
        if text.startswith(" "):
            text = text[1:]
        if len(pieces) == 1 and text.endswith("\n\n"):  # EOS after the separator; a stop already removed it
            text = text[:-2]
        if len(pieces) == 1:
            term = ParseTermination.EOS if ended_eos else ParseTermination.MALFORMED
        elif len(pieces) == 2 and not ended_eos and pieces[1] == "":
            term = ParseTermination.STOP_SEQUENCE
        else:
            term = ParseTermination.MALFORMED
        return {"role": "assistant", "content": text}, term
