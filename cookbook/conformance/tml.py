"""tml-renderers (Thinking Machines' official native renderers) as an oracle.

``tml_renderers`` imports torch, so this module imports it lazily and only when an oracle or a test asks for it:
never at cookbook's run time. It is used by golden generation (``oracle.kind: tml_renderers``), by the
differential test ``tests/renderers/test_vs_tml.py`` and by tools.

A spec names the official renderer with ``oracle.tml: {class: Qwen3, constructor: disable_thinking, kwargs: {}}``
(a class of ``tml_renderers.renderers``; ``constructor`` is one of its classmethods, else the class itself is
called with ``kwargs``). :class:`TmlOracle` converts cookbook messages to tml's message model
(:func:`to_tml_messages`) and returns token ids, the per-token weights of ``render_for_sft`` (unshifted: one
weight per input token) and the stop values of ``stop()``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cookbook.errors import SpecError

__all__ = ["FEATURES", "TmlOracle", "TmlRendered", "available", "conversation_features", "load_tml_renderer", "to_tml_messages"]

#: Conversation features a named tml difference (``tml.differences[].when``) can require.
FEATURES: dict[str, str] = {
    "empty_assistant": "an assistant message with no text, no thinking and no tool calls",
    "no_thinking_last": "the last assistant message has no thinking part",
    "text_with_tool_calls": "an assistant message with non-blank text and tool calls",
    "tool_calls": "an assistant message with tool calls",
    "thinking": "an assistant message with a thinking part",
    "thinking_without_text": "an assistant message with a thinking part, no text and no tool calls",
    "tools": "tools are declared",
    "assistant_before_last_user": "an assistant message before the last user message",
    "images": "a message with an image part",
    "image_beside_space": "a text part that starts or ends with whitespace on its side next to an image part",
}

#: the token id an image position has in :class:`TmlRendered` tokens and in the differential's token lists (each
#: image is ``num_tokens`` of it, so two renderings agree on an image's position and token count, not its pixels)
IMAGE = -1


def conversation_features(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()) -> set[str]:
    """The :data:`FEATURES` a conversation has."""
    out: set[str] = {"tools"} if tools else set()
    assistants = [m for m in messages if m["role"] == "assistant"]
    for m in assistants:
        parts = _text_parts(m.get("content"))
        text = "".join(t for k, t in parts if k == "text")
        has_thinking = any(k == "thinking" and t for k, t in parts)
        calls = bool(m.get("tool_calls"))
        if has_thinking:
            out.add("thinking")
            if not text and not calls:
                out.add("thinking_without_text")
        if calls:
            out.add("tool_calls")
            if text.strip():
                out.add("text_with_tool_calls")
        if not text and not has_thinking and not calls:
            out.add("empty_assistant")
    if assistants and not any(k == "thinking" and t for k, t in _text_parts(assistants[-1].get("content"))):
        out.add("no_thinking_last")
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    if any(m["role"] == "assistant" for m in messages[:last_user]):
        out.add("assistant_before_last_user")
    for m in messages:
        parts = _content_parts(m.get("content"))
        kinds = [k for k, _ in parts]
        if "image" in kinds:
            out.add("images")
        for i, (k, v) in enumerate(parts):
            if k != "text" or not v:
                continue
            if (i > 0 and kinds[i - 1] == "image" and v[:1].isspace()) or (
                i + 1 < len(parts) and kinds[i + 1] == "image" and v[-1:].isspace()
            ):
                out.add("image_beside_space")
    return out


def available() -> bool:
    """Whether ``tml_renderers`` (and torch) can be imported here."""
    try:
        importlib.import_module("tml_renderers.renderers")
    except Exception:
        return False
    return True


def _mod(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SpecError(
            f"the tml_renderers oracle needs the tml-renderers package ({exc}); install it into the test or "
            "golden environment: pip install tml-renderers==0.2.1"
        ) from exc


#: ``tml.class`` of the TMLv0 renderer (``tml_renderers.v0.Renderer``, Inkling), built with a tokenizer class of
#: ``tml_renderers.tokenizers`` (``kwargs: {tokenizer: O200kBaseChatTokenizer}``)
V0 = "v0"


def load_tml_renderer(cls: str, constructor: str | None = None, kwargs: Mapping[str, Any] | None = None) -> Any:
    """An official renderer: ``tml_renderers.renderers.<cls>.<constructor>(**kwargs)`` (or ``<cls>(**kwargs)``);
    ``cls="v0"``: ``tml_renderers.v0.Renderer(tml_renderers.tokenizers.<kwargs["tokenizer"]>())``."""
    if cls == V0:
        opts = dict(kwargs or {})
        tok_name = str(opts.pop("tokenizer", "O200kBaseChatTokenizer"))
        if opts or constructor:
            raise SpecError(f"tml_renderers.v0.Renderer takes only a tokenizer (kwargs: {{tokenizer: ...}}), got {kwargs!r}")
        tok_cls = getattr(_mod("tml_renderers.tokenizers"), tok_name, None)
        if tok_cls is None:
            raise SpecError(f"tml_renderers.tokenizers has no tokenizer {tok_name!r} (tml-renderers 0.2.1)")
        return _mod("tml_renderers.v0").Renderer(tok_cls())
    renderers = _mod("tml_renderers.renderers")
    klass = getattr(renderers, cls, None)
    if klass is None:
        known = ", ".join(n for n in dir(renderers) if n[:1].isupper())
        raise SpecError(f"tml_renderers.renderers has no class {cls!r}; known: {known}")
    factory = klass
    if constructor:
        factory = getattr(klass, constructor, None)
        if factory is None or not callable(factory):
            raise SpecError(f"tml_renderers.renderers.{cls} has no constructor {constructor!r}")
    try:
        return factory(**dict(kwargs or {}))
    except TypeError as exc:
        raise SpecError(f"tml_renderers.renderers.{cls}{'.' + constructor if constructor else ''}: {exc}") from exc


# --------------------------------------------------------------------------------------------- messages


def _content_parts(content: Any) -> list[tuple[str, Any]]:
    """(kind, value) pairs of a cookbook message's content: ``text`` / ``thinking`` with their text, ``image``
    with the image part's ``image`` (bytes, a data: URI or a path)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [("text", content)]
    out: list[tuple[str, Any]] = []
    for p in content:
        kind = p.get("type")
        if kind == "text":
            out.append(("text", str(p.get("text", ""))))
        elif kind == "thinking":
            out.append(("thinking", str(p.get("thinking", ""))))
        elif kind == "image":
            out.append(("image", p.get("image")))
        else:
            raise SpecError(f"the tml_renderers oracle cannot convert a content part of type {kind!r}")
    return out


def _text_parts(content: Any) -> list[tuple[str, str]]:
    """(kind, text) pairs of a cookbook message's text and thinking parts."""
    return [(k, str(v)) for k, v in _content_parts(content) if k != "image"]


def _image_pointer(chat: Any, image: Any) -> Any:
    """tml's ``ImagePointer`` for an image part: the bytes as a ``data:`` URI, with the format and size of their
    header (tml reads the pixels from the URI itself)."""
    from cookbook.renderers.kit.vision import data_uri, image_bytes, image_header

    data = image_bytes(image)
    fmt, width, height = image_header(data)
    return chat.ImagePointer(data_uri(data, fmt), chat.ImageFormat.from_str(fmt), width, height)


def _call_fields(tc: Any) -> tuple[str, str, str | None]:
    if isinstance(tc, Mapping):
        fn = tc.get("function") or tc
        return str(fn["name"]), str(fn.get("arguments", "{}")), tc.get("id")
    return str(tc.name), str(tc.arguments), getattr(tc, "id", None)


def _tool_decl(chat: Any, tools: Sequence[Mapping[str, Any]]) -> Any:
    specs = [
        chat.ToolSpecJson("function", str(t["name"]), str(t.get("description", "")), dict(t.get("parameters", {})))
        for t in tools
    ]
    return chat.OpenAIMessage(author=chat.Author(chat.AuthorKind.System, "tool_declare"), content=[chat.ToolDeclareJson(specs)])


def to_tml_messages(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    trained: set[int] | None = None,
) -> Any:
    """Cookbook messages (+ tool declarations) as a ``tml_renderers.chat.MessageList``.

    The tool declaration follows a leading system message (tinker-cookbook's
    ``create_conversation_prefix_with_tools`` order). ``trained``: indices of the assistant messages that carry
    weight; the others get ``TrainingMetadata(weight=0)`` (``None``: every assistant message is trained). Tool
    call arguments are passed as one JSON text per argument (``json.dumps``, tml's structured form).
    """
    chat = _mod("tml_renderers.chat")
    kinds = {"user": chat.AuthorKind.User, "assistant": chat.AuthorKind.Model, "system": chat.AuthorKind.System, "tool": chat.AuthorKind.Tool}
    out: list[Any] = []
    decl_pending = bool(tools)
    zero = chat.MessageMetadata(training_metadata=chat.TrainingMetadata(0.0, False))
    for i, m in enumerate(messages):
        role = str(m["role"])
        if decl_pending and role != "system":
            out += _tool_decl(chat, tools).to_messages()
            decl_pending = False
        if role not in kinds:
            raise SpecError(f"the tml_renderers oracle cannot convert role {role!r}")
        make = {"text": chat.Text, "thinking": chat.Thinking, "image": lambda v: _image_pointer(chat, v)}
        items: list[Any] = [make[k](v) for k, v in _content_parts(m.get("content"))]
        calls = []
        for tc in m.get("tool_calls") or []:
            name, arguments, cid = _call_fields(tc)
            args = json.loads(arguments)
            if not isinstance(args, dict):
                raise SpecError("tool call arguments must be a JSON object for the tml_renderers oracle")
            targs = [chat.ToolArg(k, json.dumps(v)) for k, v in args.items()]
            calls.append(chat.InvokeTool(chat.StructuredToolCall(name, args=targs, tool_call_id=cid)))
        if calls:
            items = [x for x in items if not (isinstance(x, chat.Text) and not x.text)]
        if not items and not calls:
            items = [chat.Text("")]
        tool_name = m.get("name") if role == "tool" else None
        om = chat.OpenAIMessage(
            author=chat.Author(kinds[role], tool_name),
            content=items + calls,
            tool_call_id=m.get("tool_call_id") if role == "tool" else None,
            tool_name=tool_name,
        )
        parts = om.to_messages()
        if role == "assistant" and trained is not None and i not in trained:
            parts = [p.copy(message_metadata=zero) if p.author.kind == chat.AuthorKind.Model else p for p in parts]
        out += parts
        if decl_pending and role == "system":
            out += _tool_decl(chat, tools).to_messages()
            decl_pending = False
    if decl_pending:
        out += _tool_decl(chat, tools).to_messages()
    return chat.MessageList(out)


def trained_indices(messages: Sequence[Mapping[str, Any]], train_on_what: str) -> set[int]:
    """The assistant messages that carry weight under ``train_on_what`` (tml trains whole model messages)."""
    idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on_what == "all_assistant_messages":
        return set(idx)
    if train_on_what == "last_assistant_message":
        return {idx[-1]} if idx else set()
    if train_on_what == "last_assistant_turn":
        start = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1) + 1
        return {i for i in idx if i >= start}
    raise SpecError(f"the tml_renderers oracle cannot express train_on_what={train_on_what!r}")


# --------------------------------------------------------------------------------------------- oracle


@dataclass(frozen=True)
class TmlRendered:
    """Token ids (an image is ``num_tokens`` positions of :data:`IMAGE`), per-token weights (empty for a prompt
    they are all 0) and the decoded text."""

    tokens: list[int]
    weights: list[float]
    text: str

    def with_placeholder(self, placeholder: int, decode: Callable[[Sequence[int]], str]) -> TmlRendered:
        """Each image written as the one ``placeholder`` token a chat template writes for it (a spec's
        ``image_token``), its weight the largest over the image's positions: the form goldens and spec texts use."""
        toks: list[int] = []
        weights: list[float] = []
        for i, t in enumerate(self.tokens):
            w = self.weights[i] if self.weights else 0.0
            if t == IMAGE and i > 0 and self.tokens[i - 1] == IMAGE:
                weights[-1] = max(weights[-1], w)
                continue
            toks.append(placeholder if t == IMAGE else t)
            weights.append(w)
        return TmlRendered(toks, weights if self.weights else [], decode(toks))


class TmlOracle:
    """One official renderer with its own tokenizer."""

    def __init__(self, cls: str, constructor: str | None = None, kwargs: Mapping[str, Any] | None = None):
        self.cls, self.constructor = cls, constructor
        opts = dict(kwargs or {})
        #: TMLv0's thinking effort in [0, 1) (``kwargs: {effort: 0.9}``): the generation prompt is
        #: ``render_for_completion_with_effort``; an SFT conversation gets the same ``ThinkingEffort`` system message
        #: after its leading system messages (tinker-cookbook's tml_v0 does both, default 0.9)
        self.effort: float | None = opts.pop("effort", None) if cls == V0 else None
        self.renderer = load_tml_renderer(cls, constructor, opts)
        self.tokenizer = self.renderer.tokenizer

    @property
    def label(self) -> str:
        if self.cls == V0:
            return "tml_renderers.v0.Renderer" + (f" (effort {self.effort})" if self.effort is not None else "")
        return f"tml_renderers.renderers.{self.cls}" + (f".{self.constructor}()" if self.constructor else "()")

    def _with_effort(self, ml: Any) -> Any:
        """``ml`` with the ``ThinkingEffort`` system message after its leading system messages."""
        if self.effort is None:
            return ml
        chat = _mod("tml_renderers.chat")
        msgs = list(ml.messages)
        at = 0
        while at < len(msgs) and msgs[at].author.kind == chat.AuthorKind.System:
            at += 1
        effort = chat.Message(content=chat.ThinkingEffort(round(self.effort * 1000)), author=chat.Author(chat.AuthorKind.System))
        return chat.MessageList([*msgs[:at], effort, *msgs[at:]])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids; each run of :data:`IMAGE` positions is shown as ``<image: N tokens>``."""
        return show_tokens(lambda t: str(self.tokenizer.decode(list(t))), ids)

    @staticmethod
    def _span_tokens(spans: Sequence[Any]) -> list[int]:
        """Token ids of tml's spans; an image span is its ``num_tokens`` positions of :data:`IMAGE`."""
        toks: list[int] = []
        for s in spans:
            inner = s.span
            if hasattr(inner, "tokens"):
                toks += [int(t) for t in inner.tokens]
            elif isinstance(inner, _mod("tml_renderers.chat").ImageAssetPointerTokenSpan):
                toks += [IMAGE] * int(inner.num_tokens)
            else:
                raise SpecError(f"the tml_renderers oracle produced a span it cannot compare ({type(inner).__name__})")
        return toks

    def completion(self, ml: Any) -> tuple[Any, Any]:
        """``render_for_completion`` of a native message list (with the effort, for TMLv0): (spans, parser)."""
        if self.effort is not None:
            return self.renderer.render_for_completion_with_effort(ml, self.effort)
        return self.renderer.render_for_completion(ml)

    def sft(self, ml: Any) -> list[Any]:
        """``render_for_sft`` of a native message list (with the effort message, for TMLv0)."""
        return list(self.renderer.render_for_sft(self._with_effort(ml)))

    def generation(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> TmlRendered:
        spans, _parser = self.completion(to_tml_messages(messages, tools))
        toks = self._span_tokens(spans)
        return TmlRendered(toks, [0.0] * len(toks), self.decode(toks))

    def supervised(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        train_on_what: str = "last_assistant_message",
    ) -> TmlRendered:
        examples = self.sft(to_tml_messages(messages, tools, trained_indices(messages, train_on_what)))
        if len(examples) != 1:
            raise SpecError(f"{self.label}.render_for_sft produced {len(examples)} examples, expected one")
        ex = examples[0]
        toks = self._span_tokens(ex.input_token_spans)
        weights = [float(w) for w in ex.per_token_loss_weight_unshifted]
        if len(weights) != len(toks):
            raise SpecError(f"{self.label}: {len(weights)} weights for {len(toks)} tokens")
        return TmlRendered(toks, weights, self.decode(toks))

    def stop(self) -> list[int] | list[str]:
        s = self.renderer.stop()
        if s is None:
            return []
        if isinstance(s, str):
            return [s]
        return list(s)


# --------------------------------------------------------------------------------------------- differential


def show_tokens(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> str:
    """``decode`` of the text runs of ``ids``, each run of :data:`IMAGE` written ``<image: N tokens>``."""
    if IMAGE not in ids:  # one text run (the common case, and the golden generator decodes every prefix)
        whole = [int(t) for t in ids]
        return decode(whole) if whole else ""
    out: list[str] = []
    run: list[int] = []
    images = 0
    for t in [*ids, None]:
        if t == IMAGE:
            if run:
                out.append(decode(run))
                run = []
            images += 1
            continue
        if images:
            out.append(f"<image: {images} tokens>")
            images = 0
        if t is not None:
            run.append(int(t))
    if run:
        out.append(decode(run))
    return "".join(out)


def _images_marked(tokens: Sequence[int], images: Sequence[tuple[int, Any]]) -> list[int]:
    """Our token list with each image's pad positions (``(start, ImageSegment)``) written as :data:`IMAGE`."""
    out = [int(t) for t in tokens]
    for start, seg in images:
        out[start : start + seg.expected_tokens] = [IMAGE] * seg.expected_tokens
    return out


@dataclass
class Differential:
    """Result of :func:`differential`: how many random conversations agreed token-exact, how many differed in a
    named way (per difference id), and the unexplained ones (each a readable report)."""

    renderer: str
    oracle: str
    compared: int = 0
    agreements: int = 0
    named: dict[str, int] = field(default_factory=dict)
    unexplained: list[str] = field(default_factory=list)
    #: how many of the compared conversations had each :data:`FEATURES` entry (what the comparison covered)
    features: dict[str, int] = field(default_factory=dict)
    #: whether the conversations could carry image parts (the renderer is vision-language)
    images: bool = False


def _first_diff(a: str, b: str) -> str:
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    return f"at character {i}:\n  ours: {a[max(0, i - 80) : i + 60]!r}\n  tml:  {b[max(0, i - 80) : i + 60]!r}"


def _token_diff(ours: Sequence[int], theirs: Sequence[int], decode: Callable[[Sequence[int]], str]) -> str:
    """Where two token lists first differ: the text when it differs, else the token ids there (the same text
    split into other tokens, or an image with another token count)."""
    a, b = show_tokens(decode, ours), show_tokens(decode, theirs)
    if a != b:
        return _first_diff(a, b)
    i = next((k for k in range(min(len(ours), len(theirs))) if ours[k] != theirs[k]), min(len(ours), len(theirs)))
    lo = max(0, i - 3)
    return (
        f"the same text, other tokens from token {i}:\n  ours: {list(ours[lo : i + 4])} "
        f"{[show_tokens(decode, [t]) for t in ours[lo : i + 4]]!r}\n  tml:  {list(theirs[lo : i + 4])} "
        f"{[show_tokens(decode, [t]) for t in theirs[lo : i + 4]]!r}"
    )


def differential(
    spec: Any,
    examples: int = 200,
    seed: int = 0,
    renderer: Any = None,
    tokenizer: Any = None,
    transform: Callable[[list[Any]], list[Any]] | None = None,
) -> Differential:
    """Render ``examples`` random conversations (tools, reasoning, multi-turn, per the spec's claims; image parts
    for a vision-language renderer) with the registered renderer and with the spec's official tml renderer
    (``spec.tml``); compare the supervised token ids and weights (``last_assistant_message``) and the generation
    prompt's token ids, token-exact. ``transform`` rewrites each conversation (and its prompt) before both render it,
    e.g. to give tool calls the ids the model itself samples.

    A disagreement is counted under the first ``tml.differences`` entry whose ``when`` features the conversation
    has; otherwise it is reported in ``unexplained`` (never skipped silently).
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    from cookbook.conformance.properties import PropertyContext
    from cookbook.renderers.registry import get_renderer
    from cookbook.testing.strategies import conversations

    if spec.tml is None:
        raise SpecError(f"{spec.path}: no tml: section; the renderer has no official tml renderer to compare with")
    if tokenizer is None:
        from cookbook.tokenizers import get_tokenizer

        tokenizer = get_tokenizer(spec.tokenizer)
    ours: Any = renderer if renderer is not None else get_renderer(spec.renderer, tokenizer)
    ctx = PropertyContext.build(ours, spec, tokenizer)
    oracle = TmlOracle(spec.tml.cls, spec.tml.constructor, spec.tml.kwargs)
    out = Differential(spec.renderer, oracle.label, images=bool(getattr(ours, "supports_images", False)))
    decode = ctx.codec.decode

    def one(conv: Any) -> None:
        out.compared += 1
        messages, prompt = list(conv.messages), list(conv.prompt_messages)
        if transform is not None:
            messages, prompt = transform(messages), transform(prompt)
        feats = conversation_features(messages, conv.tools)
        for f in feats:
            out.features[f] = out.features.get(f, 0) + 1
        sup_imgs: list[tuple[int, Any]] = []
        gen_imgs: list[tuple[int, Any]] = []
        sup_t, sup_w = ours.supervised_tokens(
            ctx.adapter.with_tools(messages, conv.tools), "last_assistant_message", _images=sup_imgs
        )
        gen_t = ours.generation_prompt_tokens(
            ctx.adapter.with_tools(prompt, conv.tools), "assistant", None, _images=gen_imgs
        )
        t_sup = oracle.supervised(messages, conv.tools)
        t_gen = oracle.generation(prompt, conv.tools)
        sup_t, gen_t = _images_marked(sup_t, sup_imgs), _images_marked(gen_t, gen_imgs)
        weights = [float(x) for x in sup_w]
        if gen_t != t_gen.tokens:
            what = "generation prompt " + _token_diff(gen_t, t_gen.tokens, decode)
        elif sup_t != t_sup.tokens:
            what = "supervised tokens " + _token_diff(sup_t, t_sup.tokens, decode)
        elif weights != t_sup.weights:
            mine = decode([t for t, w in zip(sup_t, weights, strict=True) if w])
            theirs = oracle.decode([t for t, w in zip(t_sup.tokens, t_sup.weights, strict=True) if w])
            what = f"weights: trained text\n  ours: {mine!r}\n  tml:  {theirs!r}"
        else:
            out.agreements += 1
            return
        for d in spec.tml.differences:
            if set(d.when) <= feats:
                out.named[d.id] = out.named.get(d.id, 0) + 1
                return
        shown = repr(conv) if transform is None else f"{conv!r}\n  transformed: {messages!r}"
        out.unexplained.append(f"{shown}\n{what}\n  features: {sorted(feats)}")

    run = settings(
        max_examples=examples,
        derandomize=seed == 0,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(given(conversations(**ctx.strategy_options(wide=False), images=out.images))(one))
    # the peer comparison keeps to the classic inputs, with image parts for a vision-language renderer
    if seed:
        run = hseed(seed)(run)
    run()
    return out
