"""Renderer core: the message model, ``TrainOnWhat``, the renderer protocol and the shared algorithms.

A renderer turns a conversation (a list of :class:`Message`) into tokens for Tinker:

* ``build_generation_prompt(messages, role, prefill)`` -> ``tinker.ModelInput``: what the sampler sees.
* ``build_supervised_example(messages, train_on_what)`` -> ``(ModelInput, weights)``: one weight per token.
* ``get_stop_sequences()``: token ids (or strings for text-delimited formats) that end a sampled turn.
* ``parse_response(tokens)`` -> ``(Message, ParseTermination)``: the sampled tokens back into a message.

Families implement :meth:`Renderer.render_message`, returning a :class:`RenderedMessage` made of *segments*:
a segment is either a ``list[int]`` of token ids (special tokens, fixed markers) or a ``str`` of ordinary
text. All text segments of a conversation are encoded in one batched tokenizer call, with special-token
parsing **off** for tokens the tokenizer flags special: text in a message that looks like ``<|im_end|>`` is
encoded as ordinary text, never as the control token (a deliberate, documented deviation from
``apply_chat_template``, which would parse it). Non-special added tokens (``<think>``, ``<tool_call>``) are
tokenized as the template tokenizes them unless a renderer sets ``literal_added_tokens``.

Weights follow tinker-cookbook's semantics (see ``shared/research/cookbook_inventory.md`` §1.2): a header is
trained only under ``ALL_TOKENS``; an output is trained according to :class:`TrainOnWhat`; the
``stop_overlap`` segment follows the last message with that message's output weight; and for
``LAST_ASSISTANT_MESSAGE`` / ``LAST_ASSISTANT_TURN``, tokens that the generation prompt itself supplies
(a ``<think>`` prefill, an empty think block) are not trained.
"""

from __future__ import annotations

import functools
import inspect
import json
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, NotRequired, Protocol, TypeAlias, TypedDict, runtime_checkable

import numpy as np

from cookbook.errors import RendererError
from cookbook.renderers.kit.vision import ImageSegment, model_input_from_tokens

if TYPE_CHECKING:
    import tinker

# ----------------------------------------------------------------------------------------------- messages


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ThinkingPart(TypedDict):
    type: Literal["thinking"]
    thinking: str


class ImagePart(TypedDict):
    type: Literal["image"]
    image: Any  # PNG/JPEG bytes, data URI, local path or PIL image (cookbook.renderers.kit.vision.image_bytes);
    # rendered by vision-language renderers (supports_images), refused by text-only ones


ContentPart: TypeAlias = TextPart | ThinkingPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    """A function call made by the assistant. ``arguments`` is a JSON *string*, as in the OpenAI format."""

    name: str
    arguments: str
    id: str | None = None

    def arguments_dict(self) -> Any:
        try:
            return json.loads(self.arguments)
        except json.JSONDecodeError as exc:
            raise RendererError(
                f"tool call {self.name!r} has arguments that are not valid JSON ({exc}); "
                "ToolCall.arguments must be a JSON string such as '{\"x\": 1}'"
            ) from exc


@dataclass(frozen=True)
class UnparsedToolCall:
    """A tool-call block found in sampled text that could not be parsed."""

    raw_text: str
    error: str


class Message(TypedDict):
    role: str
    content: str | list[ContentPart]
    tool_calls: NotRequired[list[ToolCall]]
    unparsed_tool_calls: NotRequired[list[UnparsedToolCall]]
    trainable: NotRequired[bool]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


class ToolSpec(TypedDict):
    name: str
    description: str
    parameters: dict[str, Any]


def text_of(content: str | list[ContentPart]) -> str:
    """Concatenated text parts (thinking dropped). A string is returned unchanged."""
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p["type"] == "text")


def thinking_of(content: str | list[ContentPart]) -> list[str]:
    if isinstance(content, str):
        return []
    return [p["thinking"] for p in content if p["type"] == "thinking"]


def has_images(content: str | list[ContentPart]) -> bool:
    return not isinstance(content, str) and any(p["type"] == "image" for p in content)


def message(role: str, content: str | list[ContentPart] = "", **extra: Any) -> Message:
    msg: dict[str, Any] = {"role": role, "content": content}
    msg.update(extra)
    return msg  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- enums


class TrainOnWhat(StrEnum):
    """Which tokens of a supervised example carry weight 1.

    * ``last_assistant_message``: the output of the final message, which must be an assistant message.
    * ``last_assistant_turn``: every assistant output after the last user message.
    * ``all_assistant_messages``: every assistant output.
    * ``all_messages``: every message output (headers excluded).
    * ``all_tokens``: everything, headers included (the BOS token is never trained).
    * ``all_user_and_system_messages``: user and system outputs (tool messages are not trained).
    * ``customized``: each message says ``trainable: true/false``; every message must say it.
    """

    LAST_ASSISTANT_MESSAGE = "last_assistant_message"
    LAST_ASSISTANT_TURN = "last_assistant_turn"
    ALL_ASSISTANT_MESSAGES = "all_assistant_messages"
    ALL_MESSAGES = "all_messages"
    ALL_TOKENS = "all_tokens"
    ALL_USER_AND_SYSTEM_MESSAGES = "all_user_and_system_messages"
    CUSTOMIZED = "customized"


class ParseTermination(StrEnum):
    """How a sampled response ended."""

    STOP_SEQUENCE = "stop_sequence"  # exactly one stop sequence, at the end
    EOS = "eos"  # the tokenizer's end-of-sequence token instead of the turn terminator
    MALFORMED = "malformed"  # truncated (no stop) or structurally broken

    @property
    def is_clean(self) -> bool:
        return self is not ParseTermination.MALFORMED


# ----------------------------------------------------------------------------------------------- rendering

#: token ids, ordinary text, or an image (``expected_tokens`` pad positions; an ``ImageChunk`` in the ModelInput)
Segment: TypeAlias = list[int] | str | ImageSegment


@dataclass
class RenderContext:
    idx: int
    is_last: bool
    prev: Message | None
    next: Message | None
    last_user_index: int
    in_last_assistant_turn: bool
    #: rendering a generation prompt (the last message is history, not the turn being produced)
    for_prompt: bool = False


@dataclass
class RenderedMessage:
    """One message: ``header`` (never trained unless ALL_TOKENS), ``output``, and an optional
    ``stop_overlap`` appended only after the final message of a supervised example (e.g. RoleColon's
    ``User:`` that the model must learn to emit as its stop sequence)."""

    header: list[Segment] = field(default_factory=list)
    output: list[Segment] = field(default_factory=list)
    stop_overlap: list[Segment] | None = None


@functools.cache
def _takes_memo(fn: Callable[..., Any]) -> bool:
    """Whether a ``generation_prompt_tokens`` accepts the private ``_memo`` argument (the base class's does)."""
    return "_memo" in inspect.signature(fn).parameters


@runtime_checkable
class RendererProtocol(Protocol):
    """What the conformance runner needs from any renderer (ours or a user's)."""

    def build_generation_prompt(
        self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None
    ) -> tinker.ModelInput: ...

    def build_supervised_example(
        self, messages: Sequence[Message], train_on_what: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_MESSAGE
    ) -> tuple[tinker.ModelInput, Any]: ...

    def get_stop_sequences(self) -> list[int] | list[str]: ...

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]: ...


def model_input_tokens(model_input: Any) -> list[int]:
    """Token ids of a ``tinker.ModelInput`` (text chunks only) or of a plain list."""
    if isinstance(model_input, list | tuple):
        return [int(t) for t in model_input]
    if hasattr(model_input, "to_ints"):
        return [int(t) for t in model_input.to_ints()]
    raise TypeError(f"expected tinker.ModelInput or list[int], got {type(model_input).__name__}")


#: literal copies already built, per backend tokenizer object (a renderer is cheap to build once its tokenizer has
#: been seen: the copy is a JSON round trip of the whole vocabulary, seconds for a 150k-token tokenizer)
_LITERAL_COPIES: weakref.WeakKeyDictionary[Any, dict[tuple[bool, int], Any]] = weakref.WeakKeyDictionary()


def _literal_copy(backend: Any, literal_added_tokens: bool) -> Any:
    """A copy of ``backend`` that encodes special-token text as ordinary text (``encode_special_tokens``). With
    ``literal_added_tokens``, *every* added token (special or not, e.g. DeepSeek's <｜User｜> or Qwen's <think>) is
    marked special first, so its text in content is literal too; without it, only tokens flagged special are.
    Cached per backend object, keyed also by its size so a tokenizer that gained tokens gets a fresh copy."""
    from tokenizers import Tokenizer

    key = (literal_added_tokens, int(backend.get_vocab_size(with_added_tokens=True)))
    try:
        per_backend = _LITERAL_COPIES.setdefault(backend, {})
    except TypeError:  # not weak-referenceable: no cache
        per_backend = {}
    if key not in per_backend:
        text = backend.to_str()
        if literal_added_tokens:  # only this variant edits the serialisation (a JSON round trip of the vocabulary)
            spec = json.loads(text)
            for added in spec.get("added_tokens", []):
                added["special"] = True
            text = json.dumps(spec)
        literal = Tokenizer.from_str(text)
        literal.encode_special_tokens = True
        literal.no_truncation()
        literal.no_padding()
        per_backend[key] = literal
    return per_backend[key]


class TextEncoder:
    """Fast ordinary-text encoding (special-token parsing off) and special-token lookup for a HF tokenizer."""

    def __init__(self, tokenizer: Any, literal_added_tokens: bool = False):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise RendererError(
                f"{type(tokenizer).__name__} has no fast (tokenizers) backend; cookbook renderers need a "
                "tokenizer loaded from tokenizer.json (cookbook.tokenizers.get_tokenizer gives one)"
            )
        self._literal = _literal_copy(backend, literal_added_tokens)
        self._backend = backend
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self._literal.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if len(texts) == 1:
            return [self.encode(texts[0])]
        return [list(e.ids) for e in self._literal.encode_batch(texts, add_special_tokens=False)]

    def encode_cached(self, text: str) -> list[int]:
        """For short fixed strings such as ``user\\n`` in headers."""
        got = self._cache.get(text)
        if got is None:
            got = self._cache[text] = self.encode(text)
        return got

    def special(self, token: str) -> int:
        tid = self._backend.token_to_id(token)
        if tid is None:
            raise RendererError(f"the tokenizer has no token {token!r}; is this the right tokenizer for the renderer?")
        return int(tid)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._backend.decode(list(ids), skip_special_tokens=False))


# The flattening algorithm: segments -> (tokens, weights). Text segments are batch-encoded.
_Piece = tuple[Segment, float]


def _flatten(
    enc: TextEncoder,
    pieces: list[_Piece],
    memo: dict[str, list[int]] | None = None,
    images: list[tuple[int, ImageSegment]] | None = None,
) -> tuple[list[int], list[float]]:
    """Concatenate segments; text segments are encoded in one batch (``memo`` reuses earlier encodings).
    An image becomes ``expected_tokens`` pad tokens of weight 0 (never trained); its start goes to ``images``."""
    memo = {} if memo is None else memo
    todo = list(dict.fromkeys(seg for seg, _ in pieces if isinstance(seg, str) and seg and seg not in memo))
    memo.update(zip(todo, enc.encode_batch(todo)))
    tokens: list[int] = []
    weights: list[float] = []
    for seg, w in pieces:
        if isinstance(seg, ImageSegment):
            if images is not None:
                images.append((len(tokens), seg))
            tokens.extend([seg.pad_token] * seg.expected_tokens)
            weights.extend([0.0] * seg.expected_tokens)
            continue
        if isinstance(seg, str):
            if not seg:
                continue
            ids = memo[seg]
        else:
            ids = seg
        tokens.extend(ids)
        weights.extend([w] * len(ids))
    return tokens, weights


class Renderer:
    """Base class with the shared algorithms. Families override :meth:`render_message` and friends."""

    name: str = "base"
    #: each generation prompt is a token prefix of the next full sequence (multi-turn RL merges turns)
    has_extension_property: bool = False
    #: a renderer that prefills an empty think block refuses supervised turns that reasoned
    disables_thinking: bool = False
    #: the renderer can render ThinkingParts
    supports_thinking: bool = False
    #: the renderer can render tool declarations / calls / responses
    supports_tools: bool = False
    #: True: text in content that matches *any* added token is encoded as ordinary text. False (default):
    #: only tokens the tokenizer flags special (turn terminators, BOS/EOS) are kept literal; non-special
    #: added tokens such as Qwen's <tool_call>/<think> or DeepSeek's tool markers are tokenized as those
    #: tokens, exactly as the chat template does (tool declarations rely on it).
    literal_added_tokens: bool = False
    #: the tokenizer's end-of-sequence token, when a response may end with it instead of a stop token (EOS)
    eos_token_id: int | None = None
    #: disable-thinking mode: what the generation prompt pre-fills, and the renderer to use instead (for the
    #: refusal of a trained turn that reasons)
    disabled_thinking_prefill: str = "an empty think block"
    thinking_renderer: str = "a thinking renderer"
    #: the renderer writes ImageParts (as ImageChunks); text-only renderers refuse them
    supports_images: bool = False

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.enc = TextEncoder(tokenizer, self.literal_added_tokens)

    # ---------------------------------------------------------------------------------- family hooks
    def render_message(self, msg: Message, ctx: RenderContext) -> RenderedMessage:
        raise NotImplementedError

    def bos_tokens(self) -> list[int]:
        return []

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[Segment]:
        """What follows the conversation in a generation prompt: by default the header of an empty message."""
        return self.render_message(message(role, ""), ctx).header

    def last_assistant_turn_start(self, messages: Sequence[Message]) -> int:
        """First index of the last assistant turn: by default just after the last user message."""
        return last_user_index(messages) + 1

    def get_stop_sequences(self) -> list[int] | list[str]:
        raise NotImplementedError

    def parse_response(self, response: Sequence[int]) -> tuple[Message, ParseTermination]:
        """Sampled tokens (after the generation prompt) -> assistant message (the template method).

        :meth:`split_response` decides the termination from the stop tokens (:meth:`stop_token_ids`) and
        :attr:`eos_token_id`; a ``MALFORMED`` (truncated) response is returned as its raw decoded text, parsed
        no further; otherwise the decoded text before the stop token goes to the family's :meth:`parse_text`.
        """
        body, term = self.split_response(response)
        text = self.decode(body)
        if term is ParseTermination.MALFORMED:
            return {"role": "assistant", "content": text}, term
        return self.parse_text(text), term

    def parse_text(self, text: str) -> Message:
        """Decoded sampled text (without its stop token) -> message. By default the text itself."""
        return {"role": "assistant", "content": text}

    def stop_token_ids(self) -> list[int]:
        """The stop sequences that are token ids (a text-delimited format overrides :meth:`parse_response`)."""
        return [s for s in self.get_stop_sequences() if isinstance(s, int)]

    def reasons(self, msg: Message) -> bool:
        """Whether an assistant message carries reasoning (for the disable-thinking refusal): a non-empty
        thinking part, or inline ``<think>``...``</think>`` text."""
        from cookbook.renderers.kit.thinking import has_reasoning

        return has_reasoning(msg)

    # ---------------------------------------------------------------------------------- checks
    def check_messages(self, messages: Sequence[Message]) -> None:
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise RendererError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
            content = m["content"]
            if not isinstance(content, str | list):
                raise RendererError(f"message {i}: content must be a str or a list of parts, got {type(content).__name__}")
            if isinstance(content, list):
                for j, p in enumerate(content):
                    if not isinstance(p, dict) or p.get("type") not in ("text", "thinking", "image"):
                        raise RendererError(f"message {i} part {j}: unknown content part {p!r}")
            if has_images(content) and not self.supports_images:
                raise RendererError(
                    f"message {i} ({m['role']}) has an image part, but renderer {self.name!r} is text-only; "
                    "use a vision-language renderer or remove the image"
                )
            if isinstance(content, list):
                if thinking_of(content) and not self.supports_thinking:
                    raise RendererError(
                        f"message {i} has a thinking part, but renderer {self.name!r} has no thinking format"
                    )
            if (m.get("tool_calls") or m["role"] in ("tool", "tool_declare")) and not self.supports_tools:
                raise RendererError(
                    f"message {i} ({m['role']}) uses tools, but renderer {self.name!r} has no tool-calling format"
                )

    # ---------------------------------------------------------------------------------- algorithms
    def _contexts(
        self, messages: Sequence[Message], turn_start: int, for_prompt: bool = False
    ) -> list[RenderContext]:
        lui = last_user_index(messages)
        n = len(messages)
        return [
            RenderContext(
                idx=i,
                is_last=i == n - 1,
                prev=messages[i - 1] if i > 0 else None,
                next=messages[i + 1] if i + 1 < n else None,
                last_user_index=lui,
                in_last_assistant_turn=i >= turn_start,
                for_prompt=for_prompt,
            )
            for i in range(n)
        ]

    def generation_prompt_tokens(
        self,
        messages: Sequence[Message],
        role: str = "assistant",
        prefill: str | None = None,
        _memo: dict[str, list[int]] | None = None,
        _images: list[tuple[int, ImageSegment]] | None = None,
    ) -> list[int]:
        self.check_messages(messages)
        pieces: list[_Piece] = [(self.bos_tokens(), 0.0)]
        # The conversation is rendered as it is when a message of ``role`` follows it: for another role than the
        # assistant's (a user simulator, say) the messages so far are history of that coming message, as a
        # template sees them when it renders them followed by one.
        ahead = [*messages, message(role, "")] if role != "assistant" else list(messages)
        turn_start = self.last_assistant_turn_start(ahead)
        for m, ctx in zip(messages, self._contexts(ahead, turn_start, for_prompt=True)):
            r = self.render_message(m, ctx)
            pieces += [(s, 0.0) for s in r.header] + [(s, 0.0) for s in r.output]
        suffix_ctx = RenderContext(
            idx=len(messages),
            is_last=True,
            prev=messages[-1] if messages else None,
            next=None,
            last_user_index=last_user_index(ahead),
            in_last_assistant_turn=role == "assistant" or len(messages) >= turn_start,
            for_prompt=True,
        )
        pieces += [(s, 0.0) for s in self.generation_suffix(role, suffix_ctx)]
        if prefill:
            pieces.append((prefill, 0.0))
        return _flatten(self.enc, pieces, _memo, _images)[0]

    def build_generation_prompt(
        self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None
    ) -> tinker.ModelInput:
        images: list[tuple[int, ImageSegment]] = []
        if self.supports_images:
            tokens = self.generation_prompt_tokens(messages, role, prefill, _images=images)
        else:
            tokens = self.generation_prompt_tokens(messages, role, prefill)
        return model_input_from_tokens(tokens, images)

    def supervised_tokens(
        self,
        messages: Sequence[Message],
        train_on_what: TrainOnWhat | str = TrainOnWhat.LAST_ASSISTANT_MESSAGE,
        _images: list[tuple[int, ImageSegment]] | None = None,
    ) -> tuple[list[int], list[float]]:
        """Tokens and weights; an image is ``expected_tokens`` pad tokens (weight 0), its start in ``_images``."""
        mode = TrainOnWhat(train_on_what)
        self.check_messages(messages)
        if not messages:
            raise RendererError("cannot build a supervised example from an empty conversation")
        marked = ["trainable" in m for m in messages]
        if mode is TrainOnWhat.CUSTOMIZED and not all(marked):
            missing = [i for i, k in enumerate(marked) if not k]
            raise RendererError(f"train_on_what=customized needs 'trainable' on every message; missing on {missing}")
        if mode is not TrainOnWhat.CUSTOMIZED and any(marked):
            raise RendererError(
                f"messages {[i for i, k in enumerate(marked) if k]} set 'trainable', which only "
                "train_on_what=customized honours; remove it or use customized"
            )
        if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE and messages[-1]["role"] != "assistant":
            raise RendererError(
                f"train_on_what=last_assistant_message needs the last message to be an assistant message, "
                f"got role {messages[-1]['role']!r}"
            )
        turn_start = self.last_assistant_turn_start(messages[:-1])
        contexts = self._contexts(messages, turn_start)
        pieces: list[_Piece] = [(self.bos_tokens(), 0.0)]
        last_w = 0.0
        last_r: RenderedMessage | None = None
        for m, ctx in zip(messages, contexts):
            r = self.render_message(m, ctx)
            hw = 1.0 if mode is TrainOnWhat.ALL_TOKENS else 0.0
            ow = 1.0 if output_is_trained(m, ctx, mode) else 0.0
            pieces += [(s, hw) for s in r.header] + [(s, ow) for s in r.output]
            last_w, last_r = ow, r
        if last_r is not None and last_r.stop_overlap:
            pieces += [(s, last_w) for s in last_r.stop_overlap]
        memo: dict[str, list[int]] = {}
        tokens, weights = _flatten(self.enc, pieces, memo, _images)
        if mode in (TrainOnWhat.LAST_ASSISTANT_MESSAGE, TrainOnWhat.LAST_ASSISTANT_TURN):
            weights = self._untrain_generation_prompt(messages, mode, tokens, weights, memo)
        return tokens, weights

    def _untrain_generation_prompt(
        self,
        messages: Sequence[Message],
        mode: TrainOnWhat,
        tokens: list[int],
        weights: list[float],
        memo: dict[str, list[int]] | None = None,
    ) -> list[float]:
        """Tokens that the generation prompt already supplies (a ``<think>`` prefill, an empty think block)
        are not trained: the model never samples them."""
        boundary = len(messages) - 1 if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE else last_user_index(messages) + 1
        if self.disables_thinking:
            self._refuse_trained_reasoning(messages, boundary)
        if boundary >= len(messages) or messages[boundary]["role"] != "assistant":
            return weights
        if _takes_memo(type(self).generation_prompt_tokens):  # the example's encodings serve the prompt too
            prompt = self.generation_prompt_tokens(messages[:boundary], _memo=memo)
        else:  # a subclass's own generation_prompt_tokens may predate the private memo argument
            prompt = self.generation_prompt_tokens(messages[:boundary])
        if tokens[: len(prompt)] == prompt:
            return [0.0] * len(prompt) + weights[len(prompt) :]
        return weights

    def _refuse_trained_reasoning(self, messages: Sequence[Message], boundary: int) -> None:
        """Disable-thinking mode: a trained assistant message (from ``boundary`` on) that reasons is refused;
        the generation prompt pre-fills an empty think block, so the model could never have produced it."""
        for i in range(max(boundary, 0), len(messages)):
            if messages[i]["role"] == "assistant" and self.reasons(messages[i]):
                raise RendererError(
                    f"renderer {self.name!r} disables thinking ({self.disabled_thinking_prefill}), but trained "
                    f"assistant message {i} reasons; the model could never have produced it. Use "
                    f"{self.thinking_renderer!r} or remove the reasoning."
                )

    def build_supervised_example(
        self, messages: Sequence[Message], train_on_what: TrainOnWhat | str = TrainOnWhat.LAST_ASSISTANT_MESSAGE
    ) -> tuple[tinker.ModelInput, np.ndarray]:
        images: list[tuple[int, ImageSegment]] = []
        # only a vision renderer is handed the image list: subclasses written against the text-only signature
        # (``supervised_tokens(messages, train_on_what)``) keep working
        if self.supports_images:
            tokens, weights = self.supervised_tokens(messages, train_on_what, _images=images)
        else:
            tokens, weights = self.supervised_tokens(messages, train_on_what)
        return model_input_from_tokens(tokens, images), np.asarray(weights, dtype=np.float32)

    # ---------------------------------------------------------------------------------- parsing helpers
    def decode(self, tokens: Sequence[int]) -> str:
        return self.enc.decode(tokens)

    def split_response(self, response: Sequence[int]) -> tuple[list[int], ParseTermination]:
        """``(tokens before the stop, termination)``: exactly one stop token (any of :meth:`stop_token_ids`), at
        the end: STOP_SEQUENCE. None, but :attr:`eos_token_id` at the end: EOS. Neither: MALFORMED (truncated; all
        tokens returned). A stop token that is not last, or more than one: RendererError, because the sampler
        stops at the first one."""
        resp = [int(t) for t in response]
        stops = set(self.stop_token_ids())
        at = [i for i, t in enumerate(resp) if t in stops]
        if not at:
            if self.eos_token_id is not None and resp and resp[-1] == self.eos_token_id:
                return resp[:-1], ParseTermination.EOS
            return resp, ParseTermination.MALFORMED
        if len(at) > 1 or at[0] != len(resp) - 1:
            raise RendererError(
                f"expected at most one stop token {sorted(stops)} at the end of the response, found {len(at)} "
                f"(first at position {at[0]} of {len(resp)}); the sampler stops at the first stop token, so "
                "pass only the tokens up to and including it"
            )
        return resp[:-1], ParseTermination.STOP_SEQUENCE


# ----------------------------------------------------------------------------------------------- helpers


def last_user_index(messages: Sequence[Message]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i
    return -1


def output_is_trained(msg: Message, ctx: RenderContext, mode: TrainOnWhat) -> bool:
    role = msg["role"]
    if mode is TrainOnWhat.LAST_ASSISTANT_MESSAGE:
        return ctx.is_last and role == "assistant"
    if mode is TrainOnWhat.LAST_ASSISTANT_TURN:
        return role == "assistant" and ctx.in_last_assistant_turn
    if mode is TrainOnWhat.ALL_ASSISTANT_MESSAGES:
        return role == "assistant"
    if mode in (TrainOnWhat.ALL_MESSAGES, TrainOnWhat.ALL_TOKENS):
        return True
    if mode is TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES:
        return role in ("user", "system")
    if mode is TrainOnWhat.CUSTOMIZED:
        return bool(msg.get("trainable", False))
    raise RendererError(f"unknown train_on_what {mode!r}")


RendererFactory: TypeAlias = Callable[[Any], RendererProtocol]
