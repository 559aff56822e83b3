"""Property checks on random conversations, usable from pytest (with ``@given``) and from the conform runner.

Every check is a plain function ``check_*(ctx, conversation) -> str | None`` returning a readable failure (or
``None``). :func:`run_properties` drives them with hypothesis at a fixed seed and example count.

* ``generation_parity``: ``build_generation_prompt`` equals the template's generation prompt (with the spec's
  ``applies_to: all`` deviation edits) token for token (as text when such a deviation says ``compare: text``);
* ``supervised_parity``: the decoded supervised example equals the template's text (edits applied);
* ``extension``: each turn's full sequence (observation + sampled action) is a token prefix of the next
  generation prompt, when the spec or the renderer claims the property; when neither does, a counterexample is
  searched for (a negative control: a renderer that claims it falsely is caught by the first branch);
* ``roundtrip``: render, slice the sampled part of the last assistant message, parse it back: same message,
  clean termination;
* ``weights``: ``len(weights) == len(tokens)``; 0/1 weights shaped ``0...0 1...1`` for
  ``last_assistant_message``; and ``build_generation_prompt(messages[:-1])`` equals the observation part.

This module also holds :class:`RendererAdapter`, the thin layer through which the runner calls ANY object that
implements :class:`~cookbook.renderers.base.RendererProtocol` (``ModelInput`` or ``list[int]``; weights as numpy,
lists, torch-like tensors or ``tinker.TensorData``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cookbook.conformance.oracle import Codec, TemplateOracle
from cookbook.conformance.spec import Deviation, Spec, apply_edits, to_template_messages, to_template_tools
from cookbook.renderers.base import Message, TrainOnWhat, model_input_tokens

# ----------------------------------------------------------------------------------------------- adapter


def as_float_list(weights: Any) -> list[float]:
    """Weights as floats, from numpy arrays, lists, torch-like tensors or ``tinker.TensorData``."""
    w = weights
    if hasattr(w, "to_numpy"):
        w = w.to_numpy()
    elif hasattr(w, "detach"):
        w = w.detach()
        w = w.cpu() if hasattr(w, "cpu") else w
    if hasattr(w, "tolist"):
        w = w.tolist()
    return [float(x) for x in np.asarray(w, dtype=np.float64).ravel().tolist()]


def as_tokens(model_input: Any) -> list[int]:
    if hasattr(model_input, "tolist") and not hasattr(model_input, "to_ints"):
        return [int(t) for t in model_input.tolist()]
    return model_input_tokens(model_input)


def collapse_images(model_input: Any, weights: Any | None, placeholder: int | None) -> tuple[list[int], list[float] | None]:
    """Tokens (and weights) of a ``ModelInput`` with every ``ImageChunk`` written as the one ``placeholder`` token
    a chat template writes for an image (the HF processor expands it to ``expected_tokens`` copies). The weight of
    that token is the largest weight over the image's positions, so a trained image position still shows."""
    chunks = getattr(model_input, "chunks", None)
    if chunks is None or not any(getattr(c, "type", "") == "image" for c in chunks):
        return as_tokens(model_input), None if weights is None else as_float_list(weights)
    if placeholder is None:
        from cookbook.conformance.impls import AdapterError

        raise AdapterError("the renderer wrote an ImageChunk, but the spec names no image_token to compare it as")
    w = None if weights is None else as_float_list(weights)
    toks: list[int] = []
    out_w: list[float] = []
    pos = 0
    for ch in chunks:
        n = int(ch.expected_tokens) if ch.type == "image" else len(ch.tokens)
        if ch.type == "image":
            toks.append(placeholder)
            if w is not None:
                out_w.append(max(w[pos : pos + n], default=0.0))
        else:
            toks += [int(t) for t in ch.tokens]
            if w is not None:
                out_w += w[pos : pos + n]
        pos += n
    return toks, None if w is None else out_w


def termination_name(term: Any) -> str:
    return str(getattr(term, "value", term))


class RendererAdapter:
    """Calls a renderer through :class:`RendererProtocol` and normalises what it returns."""

    def __init__(self, renderer: Any, codec: Codec, image_token: str | None = None):
        self.renderer = renderer
        self.codec = codec
        #: the token id an ImageChunk is compared as (the spec's ``image_token``)
        self.image_token = None if image_token is None else codec.token_id(image_token)

    @property
    def name(self) -> str:
        return str(getattr(self.renderer, "name", type(self.renderer).__name__))

    def generation(self, messages: Sequence[Message], prefill: str | None = None, role: str = "assistant") -> list[int]:
        kwargs: dict[str, Any] = {}
        if prefill is not None:
            kwargs["prefill"] = prefill
        if role != "assistant":
            kwargs["role"] = role
        return collapse_images(self.renderer.build_generation_prompt(list(messages), **kwargs), None, self.image_token)[0]

    def supervised(
        self, messages: Sequence[Message], train_on_what: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_MESSAGE
    ) -> tuple[list[int], list[float]]:
        mi, w = self.renderer.build_supervised_example(list(messages), train_on_what)
        toks, weights = collapse_images(mi, w, self.image_token)
        assert weights is not None
        return toks, weights

    def parse(self, tokens: Sequence[int]) -> tuple[Mapping[str, Any], str]:
        msg, term = self.renderer.parse_response(list(tokens))
        return msg, termination_name(term)

    def stop_sequences(self) -> list[int] | list[str]:
        return list(self.renderer.get_stop_sequences())

    def supports_tool_prefix(self) -> bool:
        return callable(getattr(self.renderer, "create_conversation_prefix_with_tools", None))

    def with_tools(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> list[Message]:
        """Tool declarations enter a conversation through the renderer's
        ``create_conversation_prefix_with_tools(tools, system_prompt)`` (tinker-cookbook's API): a leading system
        message is folded into the prefix; without one the method is called with ``tools`` only."""
        if not tools:
            return list(messages)
        fn = getattr(self.renderer, "create_conversation_prefix_with_tools", None)
        if not callable(fn):
            raise NotImplementedError(
                f"renderer {self.name!r} has no create_conversation_prefix_with_tools(tools, system_prompt); "
                "tool declarations cannot be given to it"
            )
        rest = list(messages)
        customized = any("trainable" in m for m in rest)

        def flagged(prefix: Sequence[Any], trainable: bool) -> list[Any]:
            # under train_on_what=customized every message says trainable; the prefix inherits the system's flag
            return [{**p, "trainable": trainable} if customized else p for p in prefix]

        if rest and rest[0]["role"] == "system":
            c = rest[0]["content"]
            system = c if isinstance(c, str) else "".join(str(p.get("text", "")) for p in c)
            return [*flagged(fn(list(tools), system), bool(rest[0].get("trainable", False))), *rest[1:]]
        return [*flagged(fn(list(tools)), False), *rest]


# ----------------------------------------------------------------------------------------------- helpers


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _tok(seq: Sequence[int], i: int, codec: Codec) -> str:
    return "<end of sequence>" if i >= len(seq) else f"{seq[i]} {codec.decode([seq[i]])!r}"


def classify_difference(expected: Sequence[int], i: int, actual: Sequence[int], j: int, codec: Codec, look: int = 2) -> str:
    """Name the difference that starts at ``expected[i]`` / ``actual[j]`` so that one bug reads the same in every
    case: a missing token, an extra token, a replaced token (the sequences re-align after it), each anchored on the
    token before it; otherwise both first differing tokens."""

    def same(a: Sequence[int], b: Sequence[int]) -> bool:
        n = min(look, len(a), len(b))
        return (n > 0 and list(a[:n]) == list(b[:n])) or (len(a) == 0 and len(b) == 0)

    prev = f" after {_tok(expected, i - 1, codec)}" if i > 0 else " at the start"
    if i < len(expected) and same(expected[i + 1 :], actual[j:]):
        return f"missing token {_tok(expected, i, codec)}{prev}"
    if j < len(actual) and same(expected[i:], actual[j + 1 :]):
        return f"extra token {_tok(actual, j, codec)}{prev}"
    if i < len(expected) and j < len(actual) and same(expected[i + 1 :], actual[j + 1 :]):
        return f"token {_tok(expected, i, codec)} replaced by {_tok(actual, j, codec)}{prev}"

    def realigns(a: Sequence[int], b: Sequence[int]) -> bool:  # a longer run: ask for a longer agreement
        n = min(look + 2, len(a), len(b))
        return (n > 0 and list(a[:n]) == list(b[:n])) or (len(a) == 0 and len(b) == 0)

    for k in range(2, 65):  # several tokens missing or extra: the content varies by case, the place does not
        if i + k <= len(expected) and realigns(expected[i + k :], actual[j:]):
            return f"missing tokens from {_tok(expected, i, codec)}{prev}, before {_tok(actual, j, codec)}"
        if j + k <= len(actual) and realigns(expected[i:], actual[j + k :]):
            return f"extra tokens from {_tok(actual, j, codec)}{prev}, before {_tok(expected, i, codec)}"
    text_cause = _text_region_cause(expected, actual, codec)
    if text_cause:
        return text_cause
    return f"first differing token{prev}: expected {_tok(expected, i, codec)}, got {_tok(actual, j, codec)}"


def _text_region_cause(expected: Sequence[int], actual: Sequence[int], codec: Codec) -> str | None:
    """When token runs do not re-align (BPE merges differ around the change), name the first differing text
    region by the renderer's tokens around it: ``missing text`` / ``extra text`` / ``other text`` after the last
    token before the region and before the first token after it."""
    import difflib

    a, b = codec.decode(expected), codec.decode(actual)
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return None
    tag, _i1, _i2, j1, j2 = ops[0]
    _, spans = token_char_spans(actual, codec)
    before = max((k for k, (_s, e) in enumerate(spans) if e <= j1 and e > _s), default=None)
    after = min((k for k, (st, _e) in enumerate(spans) if st >= j2 and _e > st), default=None)
    where = (f" after {_tok(actual, before, codec)}" if before is not None else " at the start") + (
        f", before {_tok(actual, after, codec)}" if after is not None else ", at the end"
    )
    what = {"delete": "missing text", "insert": "extra text", "replace": "other text"}[tag]
    return f"{what}{where}"


def diff_cause(expected: Sequence[int], actual: Sequence[int], codec: Codec) -> str:
    """The grouping key of a token difference (:func:`classify_difference` at the first differing index; no index,
    so one bug seen in many cases is one cause)."""
    i = first_difference(expected, actual)
    if i is None:
        return "token ids are identical"
    return classify_difference(expected, i, actual, i, codec)


def _token_at_char(tokens: Sequence[int], char: int, codec: Codec) -> int:
    _, spans = token_char_spans(tokens, codec)
    for k, (a, b) in enumerate(spans):
        if a <= char < b:
            return k
    return len(tokens)


def text_diff_cause(expected_text: str, actual: Sequence[int], codec: Codec, expected: Sequence[int] | None = None) -> str:
    """The cause of a text difference, on tokens: the token of each side that holds the first differing character
    (``expected`` tokens default to the expected text's tokenization)."""
    got = codec.decode(actual)
    if got == expected_text:
        return "same text, different token ids (a tokenization difference)"
    exp_tokens = list(expected) if expected is not None else codec.encode_special(expected_text)
    c = next((k for k, (x, y) in enumerate(zip(expected_text, got)) if x != y), min(len(expected_text), len(got)))
    ie, ia = _token_at_char(exp_tokens, c, codec), _token_at_char(actual, c, codec)
    return classify_difference(exp_tokens, ie, actual, ia, codec)


def token_diff(expected: Sequence[int], actual: Sequence[int], codec: Codec, context: int = 3) -> str:
    """The first differing token index, both ids and both decodings (with a little context), and a
    ``cause:`` line (:func:`diff_cause`)."""
    i = first_difference(expected, actual)
    if i is None:
        return "token ids are identical"
    lo = max(0, i - context)

    def window(seq: Sequence[int]) -> str:
        return " ".join(f"{t}:{codec.decode([t])!r}" for t in seq[lo : i + context + 1])

    return (
        f"first differing token at index {i} (expected {len(expected)} tokens, got {len(actual)}):\n"
        f"  expected {_tok(expected, i, codec)}\n"
        f"  actual   {_tok(actual, i, codec)}\n"
        f"  expected[{lo}:] {window(expected)}\n"
        f"  actual[{lo}:]   {window(actual)}\n"
        f"cause: {diff_cause(expected, actual, codec)}"
    )


def weight_diff(tokens: Sequence[int], expected: Sequence[float], actual: Sequence[float], codec: Codec, context: int = 3) -> tuple[str, str]:
    """(cause, detail) of the first token whose weight differs, shown on tokens with ⟦ ⟧ around trained ones."""
    i = next((k for k, (e, a) in enumerate(zip(expected, actual)) if (e >= 0.5) != (a >= 0.5)), min(len(expected), len(actual)))
    lo, hi = max(0, i - context), min(len(tokens), i + context + 1)

    def shown(ws: Sequence[float]) -> str:
        return " ".join(
            (f"⟦{t}:{codec.decode([t])!r}⟧" if k < len(ws) and ws[k] >= 0.5 else f"{t}:{codec.decode([t])!r}")
            for k, t in zip(range(lo, hi), tokens[lo:hi])
        )

    if i >= len(tokens):
        return "trained spans differ past the end of the sequence", ""
    e = "trained" if i < len(expected) and expected[i] >= 0.5 else "not trained"
    a = "trained" if i < len(actual) and actual[i] >= 0.5 else "not trained"
    cause = f"trained span differs at token {tokens[i]} {codec.decode([tokens[i]])!r}: expected {e}, got {a}"
    return cause, f"first token whose weight differs: index {i}\n  expected[{lo}:] {shown(expected)}\n  actual[{lo}:]   {shown(actual)}"


def expected_weights(tokens: Sequence[int], spans: Sequence[tuple[int, int]], codec: Codec) -> list[float]:
    """Per-token weights implied by trained character spans of the decoded ``tokens`` (a token is trained when
    its characters lie inside a span)."""
    _, cs = token_char_spans(tokens, codec)
    out = []
    for a, b in cs:
        inside = b > a and any(s <= a and b <= e for s, e in spans)
        out.append(1.0 if inside else 0.0)
    return out


def token_char_spans(tokens: Sequence[int], codec: Codec) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text and each token's character range in it (decoding token by token; a character made of
    bytes from several tokens belongs to the token that completes it)."""
    text = codec.decode(tokens)
    pieces = [codec.decode([t]) for t in tokens]
    if "".join(pieces) == text:
        spans, pos = [], 0
        for p in pieces:
            spans.append((pos, pos + len(p)))
            pos += len(p)
        return text, spans
    spans = []
    prev = 0
    for k in range(len(tokens)):
        end = len(codec.decode(tokens[: k + 1]).rstrip("\ufffd"))
        end = max(prev, min(end, len(text)))
        spans.append((prev, end))
        prev = end
    if spans:
        spans[-1] = (spans[-1][0], len(text))
    return text, spans


def trained_char_spans(tokens: Sequence[int], weights: Sequence[float], codec: Codec) -> tuple[str, list[tuple[int, int]]]:
    """Decoded text and merged character spans of the tokens with weight 1."""
    from cookbook.conformance.spec import merge_spans

    text, spans = token_char_spans(tokens, codec)
    return text, merge_spans(s for s, w in zip(spans, weights) if w >= 0.5)


def normalize_content(content: Any) -> list[tuple[str, str]]:
    """Content as ``[(kind, text)]`` with adjacent parts of one kind merged and empty parts dropped."""
    parts: list[tuple[str, str]] = []
    if isinstance(content, str):
        items = [("text", content)]
    else:
        items = []
        for p in content or []:
            kind = p.get("type")
            items.append((kind, p.get(kind, "") if kind in ("text", "thinking") else json.dumps(p, default=str)))
    for kind, txt in items:
        if not txt:
            continue
        if parts and parts[-1][0] == kind:
            parts[-1] = (kind, parts[-1][1] + txt)
        else:
            parts.append((kind, txt))
    return parts


def normalize_tool_calls(calls: Any) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for c in calls or []:
        if isinstance(c, Mapping):
            fn = c.get("function", c)
            name, args = fn.get("name"), fn.get("arguments", "{}")
        else:
            name, args = getattr(c, "name", None), getattr(c, "arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = ("<invalid JSON>", args)
        out.append((str(name), args))
    return out


def compare_messages(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Differences between two messages: role, content (text and thinking parts), tool calls (name and parsed
    JSON arguments; ids only when expected gives them), unparsed tool-call count (when expected gives it)."""
    problems: list[str] = []
    if "role" in expected and expected.get("role") != actual.get("role"):
        problems.append(f"role: expected {expected.get('role')!r}, got {actual.get('role')!r}")
    if "content" in expected:
        e, a = normalize_content(expected["content"]), normalize_content(actual.get("content", ""))
        if e != a:
            shown = (repr(e), repr(a)) if repr(e) != repr(a) else (ascii(e), ascii(a))
            problems.append(f"content: expected {shown[0]}, got {shown[1]}")
    exp_calls = expected.get("tool_calls") or []
    act_calls = actual.get("tool_calls") or []
    if "tool_calls" in expected or act_calls:
        e2, a2 = normalize_tool_calls(exp_calls), normalize_tool_calls(act_calls)
        if e2 != a2:
            problems.append(f"tool_calls: expected {e2!r}, got {a2!r}")
        for k, (ec, ac) in enumerate(zip(exp_calls, act_calls)):
            eid = ec.get("id") if isinstance(ec, Mapping) else getattr(ec, "id", None)
            aid = ac.get("id") if isinstance(ac, Mapping) else getattr(ac, "id", None)
            if eid is not None and eid != aid:
                problems.append(f"tool_calls[{k}].id: expected {eid!r}, got {aid!r}")
    if "unparsed_tool_calls" in expected:
        problems += _compare_unparsed(expected["unparsed_tool_calls"], list(actual.get("unparsed_tool_calls") or []))
    return problems


def _compare_unparsed(expected: Any, actual: list[Any]) -> list[str]:
    """``expected`` is a count, or a list of ``{raw_text: exact, error: ...}``. The raw text is behaviour and is
    compared; the error is the implementation's wording and is never matched (only shown)."""
    if isinstance(expected, int):
        return [] if len(actual) == expected else [f"unparsed_tool_calls: expected {expected}, got {len(actual)}"]
    if len(actual) != len(expected):
        return [f"unparsed_tool_calls: expected {len(expected)}, got {len(actual)}: {actual!r}"]
    problems = []
    for k, (e, a) in enumerate(zip(expected, actual)):
        raw = a.get("raw_text") if isinstance(a, Mapping) else getattr(a, "raw_text", None)
        if "raw_text" in e and e["raw_text"] != raw:
            problems.append(f"unparsed_tool_calls[{k}].raw_text: expected {e['raw_text']!r}, got {raw!r}")
    return problems


# ----------------------------------------------------------------------------------------------- context


@dataclass
class PropertyContext:
    """What the checks need: the renderer (through the adapter), the spec, the tokenizer codec, the template
    oracle (None for ``oracle.kind: spec``) and the claims."""

    adapter: RendererAdapter
    spec: Spec
    codec: Codec
    oracle: TemplateOracle | None
    claims_extension: bool
    general: list[Deviation] = field(default_factory=list)

    @classmethod
    def build(cls, renderer: Any, spec: Spec, tokenizer: Any) -> PropertyContext:
        codec = Codec(tokenizer)
        oracle = None
        if spec.oracle.kind == "chat_template" and getattr(tokenizer, "chat_template", None):
            oracle = TemplateOracle(tokenizer, spec.oracle.template_kwargs)
        claims = spec.claim("extension_property") or bool(getattr(renderer, "has_extension_property", False))
        return cls(RendererAdapter(renderer, codec, spec.image_token), spec, codec, oracle, claims, spec.general_deviations())

    @property
    def compare_text(self) -> bool:
        return any(d.compare == "text" for d in self.general)

    def strategy_options(self, template: bool = True, wide: bool = True) -> dict[str, Any]:
        """Keyword arguments for :func:`cookbook.testing.strategies.conversations` derived from the spec's claims
        and its deviations' ``property_inputs``; special-token text and string stop sequences are forbidden.

        ``template``: for a check that compares with the template (every declared input constraint applies);
        without it, constraints with ``scope: template`` are left out. ``wide``: the wide input classes (empty
        system content, tool calls without ids, the wide tool declaration, inline think blocks in history) are
        on unless the spec switches one off."""
        from cookbook.testing.strategies import DEFAULT_FORBID

        pin = self.spec.property_inputs(template=template)
        forbid = [*DEFAULT_FORBID, *self.codec.special_token_strings(), *pin.get("forbid", [])]
        forbid += [s.strip() for s in self.spec.stop_sequences if s.strip()]
        tools = bool(pin.get("tools", self.spec.claim("tools"))) and self.adapter.supports_tool_prefix()
        return {
            "thinking": bool(pin.get("thinking", self.spec.claim("thinking"))),
            "tools": tools,
            "tool_calls": bool(pin.get("tool_calls", True)),
            "max_turns": int(pin.get("max_turns", 3)),
            "strip_whitespace": bool(pin.get("strip_whitespace", False)),
            "forbid": tuple(dict.fromkeys(f for f in forbid if f.strip())),
            **{k: wide and bool(pin.get(k, True)) for k in ("empty_system", "missing_ids", "wide_tools")},
            # an inline think block is reasoning: a spec that declares `thinking: false` inputs gets none either
            "inline_think": wide and bool(pin.get("inline_think", pin.get("thinking", True))),
        }

    def control_tokens(self) -> list[str]:
        """The text of the tokenizer's special (control) tokens that a renderer must keep literal in content,
        without string stop sequences that are not one token (a text-delimited format cannot tell them from
        content), and without those a deviation exempts (``property_inputs.literal_exempt``)."""
        text_stops = {s.strip() for s in self.spec.stop_sequences if self.codec.token_id(s) is None}
        exempt = set(self.spec.property_inputs(template=False).get("literal_exempt", []))  # named in a deviation
        return [t for t in self.codec.control_token_strings() if t.strip() and t not in text_stops | exempt]

    def template(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]], generation: bool) -> tuple[str, list[int]]:
        assert self.oracle is not None
        opts = self.spec.oracle.messages
        r = self.oracle.render(
            to_template_messages(messages, opts), generation, to_template_tools(tools, opts) or None
        )
        (text,) = apply_edits([r.text], self.general, strict=False)
        tokens = r.tokens if text == r.text else self.codec.encode_special(text)
        return text, tokens


# ----------------------------------------------------------------------------------------------- checks

Check = Callable[[PropertyContext, Any], str | None]


def _msgs(ctx: PropertyContext, conv: Any, messages: Sequence[Message] | None = None) -> list[Message]:
    return ctx.adapter.with_tools(conv.messages if messages is None else messages, conv.tools)


def check_generation_parity(ctx: PropertyContext, conv: Any) -> str | None:
    if ctx.oracle is None:
        return None
    prompt = conv.prompt_messages
    text, expected = ctx.template(prompt, conv.tools, generation=True)
    actual = ctx.adapter.generation(_msgs(ctx, conv, prompt))
    if ctx.compare_text:
        got = ctx.codec.decode(actual)
        if got != text:
            from cookbook.conformance.golden import unified_diff

            return (
                "generation prompt text differs from the template's\n"
                + unified_diff(text, got, "template", "renderer")
                + f"\ncause: {text_diff_cause(text, actual, ctx.codec, expected)}"
            )
        return None
    if actual != expected:
        from cookbook.conformance.golden import unified_diff

        got = ctx.codec.decode(actual)
        extra = "" if got != text else "\n(same text, different tokenization: a BPE merge across a segment boundary)"
        return (
            "generation prompt differs from the template's\n"
            + token_diff(expected, actual, ctx.codec)
            + extra
            + ("\n" + unified_diff(text, got, "template", "renderer") if got != text else "")
        )
    return None


def check_supervised_parity(ctx: PropertyContext, conv: Any) -> str | None:
    if ctx.oracle is None or not conv.messages or conv.messages[-1]["role"] != "assistant":
        return None
    text, expected = ctx.template(conv.messages, conv.tools, generation=False)
    tokens, _w = ctx.adapter.supervised(_msgs(ctx, conv))
    got = ctx.codec.decode(tokens)
    if got != text:
        from cookbook.conformance.golden import unified_diff

        return (
            "supervised text differs from the template's\n"
            + unified_diff(text, got, "template", "renderer")
            + f"\ncause: {text_diff_cause(text, tokens, ctx.codec, expected)}"
        )
    return None


def extension_counterexample(ctx: PropertyContext, conv: Any) -> str | None:
    """A turn whose full sequence is not a prefix of the next turn's generation prompt, or None."""
    msgs = _msgs(ctx, conv)
    idx = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    for i, j in itertools.pairwise(idx):
        full, _ = ctx.adapter.supervised(msgs[: i + 1])
        nxt = ctx.adapter.generation(msgs[:j])
        if nxt[: len(full)] != full:
            return (
                f"the sequence after assistant message {i} (observation + sampled action, {len(full)} tokens) is not "
                f"a prefix of the generation prompt before message {j}\n" + token_diff(full, nxt[: len(full)], ctx.codec)
            )
    return None


def check_extension(ctx: PropertyContext, conv: Any) -> str | None:
    if not ctx.claims_extension:
        return None
    return extension_counterexample(ctx, conv)


def check_roundtrip(ctx: PropertyContext, conv: Any) -> str | None:
    msgs = _msgs(ctx, conv)
    if not msgs or msgs[-1]["role"] != "assistant":
        return None
    prompt = ctx.adapter.generation(msgs[:-1])
    full, _ = ctx.adapter.supervised(msgs)
    if full[: len(prompt)] != prompt:
        return "cannot slice the sampled part: the generation prompt is not a prefix of the supervised example\n" + token_diff(
            prompt, full[: len(prompt)], ctx.codec
        )
    sampled = full[len(prompt) :]
    parsed, term = ctx.adapter.parse(sampled)
    problems = []
    if term not in ("stop_sequence", "eos"):
        problems.append(f"termination: expected stop_sequence, got {term}")
    expected = {k: v for k, v in msgs[-1].items() if k in ("role", "content", "tool_calls")}
    expected.setdefault("tool_calls", [])
    problems += compare_messages(expected, parsed)
    if problems:
        return f"sampled part {ctx.codec.decode(sampled)!r} parsed back differently:\n  " + "\n  ".join(problems)
    return None


def check_weights(ctx: PropertyContext, conv: Any) -> str | None:
    msgs = _msgs(ctx, conv)
    if not msgs or msgs[-1]["role"] != "assistant":
        return None
    tokens, weights = ctx.adapter.supervised(msgs, TrainOnWhat.LAST_ASSISTANT_MESSAGE)
    if len(tokens) != len(weights):
        return f"len(weights) = {len(weights)} but len(tokens) = {len(tokens)}"
    if any(w not in (0.0, 1.0) for w in weights):
        return f"weights must be 0 or 1, got {sorted(set(weights))}"
    k = weights.index(1.0) if 1.0 in weights else len(weights)
    if k == len(weights):
        return "last_assistant_message trains no token"
    if any(w != 1.0 for w in weights[k:]):
        bad = k + weights[k:].index(0.0)
        return f"weights are not 0...0 1...1: a 0 at token {bad} after the first 1 at token {k}"
    prompt = ctx.adapter.generation(msgs[:-1])
    if tokens[: len(prompt)] != prompt:
        return "build_generation_prompt(messages[:-1]) is not the observation part of the supervised example\n" + token_diff(
            prompt, tokens[: len(prompt)], ctx.codec
        )
    if k != len(prompt):
        return (
            f"the observation part (weight 0) has {k} tokens but build_generation_prompt(messages[:-1]) has "
            f"{len(prompt)}"
        )
    return None


def _neutral(value: Any, controls: Sequence[str]) -> Any:
    """``value`` with every control-token string replaced by ``X`` (strings, parts, tool-call arguments)."""
    from cookbook.renderers.base import ToolCall

    if isinstance(value, str):
        for t in controls:
            value = value.replace(t, "X")
        return value
    if isinstance(value, ToolCall):
        return ToolCall(value.name, _neutral(value.arguments, controls), value.id)
    if isinstance(value, list | tuple):
        return [_neutral(v, controls) for v in value]
    if isinstance(value, Mapping):
        return {k: _neutral(v, controls) for k, v in value.items()}
    return value


def check_literal_control_tokens(ctx: PropertyContext, conv: Any) -> str | None:
    """Control-token text inside content (any role, history or the produced reply, tool arguments and results)
    stays ordinary text: the generation prompt and the supervised example hold each control token exactly as
    often as when that text is replaced by a neutral word. Needs no template."""
    controls = ctx.control_tokens()
    shown = json.dumps([_neutral(m, ()) for m in conv.messages], ensure_ascii=False, default=repr)
    present = [t for t in controls if t in shown]
    if not present:
        return None
    neutral = type(conv)(_neutral(conv.messages, present), conv.tools)
    builds: list[tuple[str, Callable[[Any], list[int]]]] = [
        ("generation prompt", lambda c: ctx.adapter.generation(_msgs(ctx, c, c.prompt_messages)))
    ]
    if conv.messages and conv.messages[-1]["role"] == "assistant":
        builds.append(("supervised example", lambda c: ctx.adapter.supervised(_msgs(ctx, c))[0]))
    for what, build in builds:
        real, base = build(conv), build(neutral)
        for t in present:
            tid = ctx.codec.token_id(t)
            if tid is not None and real.count(tid) != base.count(tid):
                return (
                    f"control-token text {t!r} in content became the control token {tid} in the {what}: "
                    f"{real.count(tid)} in the render, {base.count(tid)} with the text replaced\n"
                    f"cause: control-token text in content is rendered as the control token {tid} {t!r}"
                )
    return None


PROPERTIES: dict[str, Check] = {
    "generation_parity": check_generation_parity,
    "supervised_parity": check_supervised_parity,
    "extension": check_extension,
    "roundtrip": check_roundtrip,
    "weights": check_weights,
    "literal_control_tokens": check_literal_control_tokens,
}


# ----------------------------------------------------------------------------------------------- driver


@dataclass
class PropertyOutcome:
    name: str
    status: str  # PASS | FAIL | SKIP | ERROR
    message: str
    detail: str = ""

    @property
    def cause(self) -> str:
        """The ``cause:`` line of the detail (a token-level key), or ``""``."""
        import re

        m = re.search(r"^cause: (.*)$", self.detail, re.M)
        return m.group(1) if m else ""


class _PropertyFailed(AssertionError):
    status = "FAIL"


class _PropertyUnsupported(_PropertyFailed):
    status = "SKIP"


class _PropertyAdapterError(_PropertyFailed):
    status = "ERROR"


def _run_one(
    ctx: PropertyContext, name: str, check: Check, strategy: Any, examples: int, seed: int | None, shrink: bool = True
) -> tuple[str, str] | None:
    """None when ``check`` holds on every example, else ``(status, text)``: FAIL with the (shrunk) failure, SKIP
    when the implementation does not offer a feature the check needs, ERROR when its adapter broke."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from cookbook.conformance.impls import AdapterError, Unsupported

    phases = [Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])]

    @settings(
        max_examples=examples,
        derandomize=seed is None,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(strategy)
    def prop(conv: Any) -> None:
        try:
            failure = check(ctx, conv)
        except _PropertyFailed:
            raise
        except (Unsupported, NotImplementedError) as exc:
            raise _PropertyUnsupported(f"not offered by the implementation: {exc}") from exc
        except AdapterError as exc:
            raise _PropertyAdapterError(f"{name}: adapter error: {exc}") from exc
        except Exception as exc:
            raise _PropertyFailed(f"{name}: the renderer raised {type(exc).__name__}: {exc}") from exc
        if failure is not None:
            raise _PropertyFailed(failure)

    test = hseed(seed)(prop) if seed is not None else prop
    try:
        test()
    except _PropertyFailed as exc:
        return exc.status, _describe(exc)
    except BaseExceptionGroup as group:  # hypothesis found several distinct failures
        found = [e for e in group.exceptions if isinstance(e, _PropertyFailed)]
        if not found:
            raise
        worst = next((e for e in found if e.status == "ERROR"), None) or next((e for e in found if e.status == "FAIL"), found[0])
        head = f"{len(found)} distinct failures; the first:\n" if len(found) > 1 else ""
        return worst.status, head + "\n\n".join(_describe(e) for e in found)
    return None


def _describe(exc: BaseException) -> str:
    notes = "\n".join(getattr(exc, "__notes__", []) or [])
    return f"{exc}\n{notes}".strip()


def run_properties(
    ctx: PropertyContext, examples: int = 25, seed: int | None = None, only: Sequence[str] | None = None
) -> list[PropertyOutcome]:
    """Run every property (or those named in ``only``) with hypothesis (derandomised unless ``seed`` is given)."""
    from cookbook.testing.strategies import conversations

    opts = ctx.strategy_options()  # template comparisons: every declared input constraint
    free = ctx.strategy_options(template=False)  # checks that need no template: not the template's limits
    out: list[PropertyOutcome] = []
    prompts = conversations(**{**opts, "end_with": "any"})
    full = conversations(**opts)
    free_full = conversations(**free)
    multi = conversations(**{**free, "max_turns": max(2, free["max_turns"])})
    controls = ctx.control_tokens()
    spliced = conversations(**{**free, "end_with": "any", "control_text": controls}) if controls else free_full
    plan: list[tuple[str, Check, Any]] = [
        ("generation_parity", check_generation_parity, prompts),
        ("supervised_parity", check_supervised_parity, full),
        ("roundtrip", check_roundtrip, free_full),
        ("weights", check_weights, free_full),
        ("literal_control_tokens", check_literal_control_tokens, spliced),
    ]
    for name, check, strat in plan:
        if only is not None and name not in only:
            continue
        if name.endswith("parity") and ctx.oracle is None:
            out.append(PropertyOutcome(name, "SKIP", f"no chat template (oracle: {ctx.spec.oracle.kind})"))
            continue
        failure = _run_one(ctx, name, check, strat, examples, seed)
        if failure is None:
            out.append(PropertyOutcome(name, "PASS", f"{examples} random conversations"))
        else:
            out.append(PropertyOutcome(name, failure[0], failure[1].splitlines()[0], failure[1]))
    # extension: claimed -> must hold; not claimed -> look for a counterexample (a negative control)
    if only is not None and "extension" not in only:
        return out
    if ctx.claims_extension:
        failure = _run_one(ctx, "extension", check_extension, multi, examples, seed)
        who = "the spec" if ctx.spec.claim("extension_property") else "the renderer (has_extension_property)"
        if failure is None:
            out.append(PropertyOutcome("extension", "PASS", f"claimed by {who}; holds on {examples} conversations"))
        elif failure[0] != "FAIL":
            out.append(PropertyOutcome("extension", failure[0], failure[1].splitlines()[0], failure[1]))
        else:
            out.append(PropertyOutcome("extension", "FAIL", f"claimed by {who} but broken: " + failure[1].splitlines()[0], failure[1]))
    else:

        def negative(c: PropertyContext, conv: Any) -> str | None:
            found = extension_counterexample(c, conv)
            return None if found is None else "counterexample: " + found

        found = _run_one(ctx, "extension_negative", negative, multi, examples, seed, shrink=False)
        if found is None:
            out.append(PropertyOutcome("extension", "SKIP", f"not claimed; no counterexample in {examples} conversations"))
        elif found[0] != "FAIL":
            out.append(PropertyOutcome("extension", found[0], found[1].splitlines()[0], found[1]))
        else:
            out.append(PropertyOutcome("extension", "PASS", "not claimed, and indeed broken (witness found)", found[1]))
    return out
