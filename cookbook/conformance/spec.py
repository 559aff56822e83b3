"""Renderer spec files (``specs/renderers/<renderer>.yaml``): loading, validation and conversions.

The format is documented in ``specs/renderers/README.md``. This module

* loads and validates a spec (:func:`load_spec`), raising :class:`~cookbook.errors.SpecError` that names the
  file, the case and the field;
* parses ``⟦ ⟧`` marks into plain text plus trained character spans (:func:`parse_marked`);
* converts spec messages to cookbook :class:`~cookbook.renderers.base.Message` dicts (:func:`to_messages`) and
  to chat-template inputs (:func:`to_template_messages`, :func:`to_template_tools`);
* applies a deviation's ``template_edits`` to oracle text (:func:`apply_edits`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cookbook.errors import SpecError
from cookbook.renderers.base import ContentPart, Message, ToolCall, TrainOnWhat

OPEN, CLOSE = "⟦", "⟧"

SCENARIOS: tuple[str, ...] = (
    "user_only",
    "system_user",
    "multi_turn",
    "empty_assistant",
    "reasoning_last_turn",
    "reasoning_in_history",
    "tools_with_system",
    "tools_without_system",
    "one_tool_call",
    "several_tool_calls",
    "tool_response",
    "consecutive_tool_responses",
    "generation_after_tool_response",
    "whitespace_padded",
    "unicode",
    "special_token_text",
    *(f"train_on_{t.value}" for t in TrainOnWhat),
    "prefill",
    "images",
)
#: scenarios only a vision-language spec (one with ``image_token``) has: cases with ``{type: image}`` parts
IMAGE_SCENARIOS = ("images",)
#: scenarios that need a claim (``thinking`` / ``tools``); every other scenario is required of every renderer
THINKING_SCENARIOS = ("reasoning_last_turn", "reasoning_in_history")
TOOL_SCENARIOS = (
    "tools_with_system",
    "tools_without_system",
    "one_tool_call",
    "several_tool_calls",
    "tool_response",
    "consecutive_tool_responses",
    "generation_after_tool_response",
)
TERMINATIONS = ("stop_sequence", "eos", "malformed")
PROPERTY_INPUT_KEYS = (
    "strip_whitespace",
    "thinking",
    "tools",
    "tool_calls",
    "max_turns",
    "forbid",
    "empty_system",
    "missing_ids",
    "wide_tools",
    "inline_think",
    "literal_exempt",
    "scope",
)
_BOOL_INPUT_KEYS = ("strip_whitespace", "thinking", "tools", "tool_calls", "empty_system", "missing_ids", "wide_tools", "inline_think")

_ID = re.compile(r"^[a-z0-9_]+$")


# ----------------------------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Edit:
    """One ``template_edits`` entry: an exact ``replace`` or a Python ``regex`` substitution."""

    kind: Literal["replace", "regex"]
    pattern: str
    replacement: str
    optional: bool = False
    groups: bool = False  # regex only: ``with`` may refer to the match's groups (``\\1``, ``\\g<name>``)

    def apply(self, text: str) -> tuple[str, int]:
        """``(new_text, number_of_matches)``."""
        if self.kind == "replace":
            n = text.count(self.pattern)
            return (text.replace(self.pattern, self.replacement) if n else text), n
        if self.groups:
            return re.subn(self.pattern, lambda m: m.expand(self.replacement), text)
        new, n = re.subn(self.pattern, lambda _m: self.replacement, text)
        return new, n

    def describe(self) -> str:
        return f"{self.kind}: {self.pattern!r} -> {self.replacement!r}"


@dataclass(frozen=True)
class Deviation:
    id: str
    description: str
    reason: str
    template_edits: tuple[Edit, ...] = ()
    applies_to: Literal["cases", "all"] = "cases"
    compare: Literal["tokens", "text"] = "tokens"
    #: constraints on random conversations in property checks (see README "Deviations in property checks")
    property_inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageOptions:
    thinking: Literal["reasoning_content", "content_tags", "drop"] = "reasoning_content"
    tool_arguments: Literal["object", "string"] = "object"
    tools: Literal["openai", "raw"] = "openai"


@dataclass(frozen=True)
class TmlDifference:
    """A named difference between the renderer and tml-renderers' official renderer (``tml.differences``): a
    random conversation on which they disagree counts as this difference when it has every feature of ``when``
    (see :data:`cookbook.conformance.tml.FEATURES`)."""

    id: str
    description: str
    reason: str
    when: tuple[str, ...]


@dataclass(frozen=True)
class TmlRef:
    """The official renderer of the family (``tml:``): ``tml_renderers.renderers.<cls>.<constructor>(**kwargs)``."""

    cls: str
    constructor: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    follows: str = "template"  # where template and tml disagree, which one the renderer follows
    differences: tuple[TmlDifference, ...] = ()


@dataclass(frozen=True)
class Oracle:
    kind: Literal["chat_template", "spec", "tml_renderers"]
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    messages: MessageOptions = field(default_factory=MessageOptions)


@dataclass(frozen=True)
class Expect:
    supervised: str | None = None  # marked text (with ⟦ ⟧)
    generation_prompt: str | None = None
    raises: str | None = None
    token_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def supervised_text(self) -> str | None:
        return None if self.supervised is None else parse_marked(self.supervised)[0]

    @property
    def supervised_spans(self) -> list[tuple[int, int]]:
        return [] if self.supervised is None else parse_marked(self.supervised)[1]


@dataclass(frozen=True)
class Case:
    id: str
    scenario: str
    description: str
    messages: tuple[Mapping[str, Any], ...]
    expect: Expect
    tools: tuple[Mapping[str, Any], ...] = ()
    train_on_what: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_MESSAGE
    prefill: str | None = None
    deviations: tuple[str, ...] = ()
    template_skip: str | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: the role whose turn the generation prompt opens (``build_generation_prompt(..., role=...)``)
    role: str = "assistant"

    @property
    def prompt_messages(self) -> tuple[Mapping[str, Any], ...]:
        """``messages[:-1]`` when the last message is an assistant message (the reply to produce), else all
        messages; all messages for a case whose generation prompt opens another role's turn."""
        if self.role == "assistant" and self.messages and self.messages[-1].get("role") == "assistant":
            return self.messages[:-1]
        return self.messages


@dataclass(frozen=True)
class ParseExpect:
    termination: str | None = None
    message: Mapping[str, Any] | None = None
    raises: str | None = None


@dataclass(frozen=True)
class ParseCase:
    id: str
    response: str
    expect: ParseExpect
    description: str = ""


@dataclass(frozen=True)
class Spec:
    path: Path
    renderer: str
    title: str
    tokenizer: str
    oracle: Oracle
    claims: Mapping[str, bool]
    stop_sequences: tuple[str, ...]
    deviations: Mapping[str, Deviation]
    cases: tuple[Case, ...]
    parse: tuple[ParseCase, ...]
    sha256: str
    tml: TmlRef | None = None
    #: the placeholder token the template writes for an image (``<|image_pad|>``); the runner compares a renderer's
    #: ``ImageChunk`` as this one token (see :func:`cookbook.conformance.properties.collapse_images`)
    image_token: str | None = None

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise SpecError(f"{self.path}: no case {case_id!r}")

    def claim(self, name: str) -> bool:
        return bool(self.claims.get(name, False))

    def general_deviations(self) -> list[Deviation]:
        """Deviations marked ``applies_to: all`` (applied to random conversations in property checks)."""
        return [d for d in self.deviations.values() if d.applies_to == "all"]

    def property_inputs(self, template: bool = True) -> dict[str, Any]:
        """The merged ``property_inputs`` of every deviation (``forbid`` and ``literal_exempt`` lists are
        concatenated).

        With ``template=False`` (the inputs of checks that need no template: extension, round trip, weights), the
        inputs of deviations that say ``scope: template`` are left out: a template's limit (e.g. its trimming)
        constrains only the comparisons with that template."""
        out: dict[str, Any] = {}
        for d in self.deviations.values():
            if not template and d.property_inputs.get("scope", "all") == "template":
                continue
            for k, v in d.property_inputs.items():
                if k == "scope":
                    continue
                if k in ("forbid", "literal_exempt"):
                    out[k] = [*out.get(k, []), *v]
                else:
                    out[k] = v
        return out


# ----------------------------------------------------------------------------------------------- marks


def parse_marked(text: str, where: str = "text") -> tuple[str, list[tuple[int, int]]]:
    """``"a⟦b⟧c"`` -> ``("abc", [(1, 2)])``: plain text and trained character spans (end exclusive).

    Marks may not nest; every ``⟦`` needs a ``⟧``. Empty spans are dropped.
    """
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    start: int | None = None
    for i, ch in enumerate(text):
        if ch == OPEN:
            if start is not None:
                raise SpecError(f"{where}: nested {OPEN} at character {i}")
            start = pos
        elif ch == CLOSE:
            if start is None:
                raise SpecError(f"{where}: {CLOSE} without an opening {OPEN} at character {i}")
            if pos > start:
                spans.append((start, pos))
            start = None
        else:
            out.append(ch)
            pos += 1
    if start is not None:
        raise SpecError(f"{where}: {OPEN} opened at plain offset {start} is never closed")
    return "".join(out), merge_spans(spans)


def merge_spans(spans: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """Sorted, with touching or overlapping spans merged."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted((int(s[0]), int(s[1])) for s in spans if s[1] > s[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def mark(text: str, spans: Iterable[Sequence[int]]) -> str:
    """Inverse of :func:`parse_marked` (for reports)."""
    out: list[str] = []
    pos = 0
    for a, b in merge_spans(spans):
        out += [text[pos:a], OPEN, text[a:b], CLOSE]
        pos = b
    out.append(text[pos:])
    return "".join(out)


# ----------------------------------------------------------------------------------------------- loading


class _Ctx:
    def __init__(self, path: Path):
        self.path = path

    def err(self, msg: str, case: str | None = None, fld: str | None = None) -> SpecError:
        where = str(self.path)
        if case is not None:
            where += f": case {case!r}"
        if fld is not None:
            where += f": field {fld!r}"
        return SpecError(f"{where}: {msg}")


def _req(ctx: _Ctx, d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], case: str | None = None, prefix: str = "") -> Any:
    if key not in d:
        raise ctx.err("missing", case, prefix + key)
    v = d[key]
    if not isinstance(v, typ):
        raise ctx.err(f"expected {_tname(typ)}, got {type(v).__name__} {v!r}", case, prefix + key)
    return v


def _opt(ctx: _Ctx, d: Mapping[str, Any], key: str, typ: type | tuple[type, ...], default: Any, case: str | None = None, prefix: str = "") -> Any:
    v = d.get(key, default)
    if v is None:
        return default
    if not isinstance(v, typ):
        raise ctx.err(f"expected {_tname(typ)}, got {type(v).__name__} {v!r}", case, prefix + key)
    return v


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _unknown(ctx: _Ctx, d: Mapping[str, Any], allowed: Iterable[str], case: str | None = None, prefix: str = "") -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise ctx.err(f"unknown field(s) {extra}; allowed: {sorted(allowed)}", case, prefix.rstrip(".") or None)


_TOP_KEYS = ("renderer", "title", "tokenizer", "oracle", "claims", "stop_sequences", "deviations", "cases", "parse", "tml",
             "image_token")
#: keys only a spec that ``extends:`` another may use
_EXTENDS_KEYS = ("extends", "remove_deviations", "remove_cases", "remove_parse")
#: list fields whose entries are identified by ``id`` (merged by id when a spec extends another)
_BY_ID = {"deviations": "remove_deviations", "cases": "remove_cases", "parse": "remove_parse"}


#: libyaml's safe loader where PyYAML has it (the same documents, about ten times faster than the pure-Python
#: one: the specs are read by every conformance run, golden check and many tests)
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """A YAML document with the safe loader (libyaml's where available): what every spec reader uses."""
    return yaml.load(text, Loader=_YAML_LOADER)


def _read_doc(p: Path) -> tuple[dict[str, Any], bytes]:
    try:
        raw_bytes = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"{p}: cannot read spec: {exc}") from exc
    try:
        doc = parse_yaml(raw_bytes.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise SpecError(f"{p}: the top level must be a mapping, got {type(doc).__name__}")
    return doc, raw_bytes


def _merge(parent: Any, child: Any) -> Any:
    """``child`` over ``parent``: mappings are merged key by key (recursively), a ``null`` in the child removes the
    key, anything else (strings, lists) replaces the parent's value."""
    if not isinstance(parent, dict) or not isinstance(child, dict):
        return child
    out = dict(parent)
    for k, v in child.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out[k], v) if k in out else v
    return out


def _merge_by_id(ctx: _Ctx, key: str, parent: Any, child: Any, removed: Any) -> list[Any]:
    """The parent's ``key`` entries with ``removed`` ids dropped, each child entry merged into the parent entry of
    the same id (see :func:`_merge`) or appended when the id is new."""
    fld = _BY_ID[key]
    for what, val in ((key, parent), (key, child), (fld, removed)):
        if val is not None and not isinstance(val, list):
            raise ctx.err(f"expected a list, got {type(val).__name__}", fld=what)
    entries = [dict(e) if isinstance(e, dict) else e for e in parent or []]
    ids = [e.get("id") if isinstance(e, dict) else None for e in entries]
    for rid in removed or []:
        if rid not in ids:
            raise ctx.err(f"{rid!r} is not an id of the parent's {key}; the parent has {[i for i in ids if i]}", fld=fld)
        k = ids.index(rid)
        del entries[k], ids[k]
    for k, e in enumerate(child or []):
        if not isinstance(e, dict) or not isinstance(e.get("id"), str):
            raise ctx.err(f"an entry needs a string id to extend the parent's {key}, got {e!r}", fld=f"{key}[{k}]")
        if e["id"] in ids:
            j = ids.index(e["id"])
            entries[j] = _merge(entries[j], e)
        else:
            entries.append(e)
            ids.append(e["id"])
    return entries


def resolve_spec_doc(path: str | Path, _seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[bytes]]:
    """The spec document of ``path`` with its ``extends:`` chain applied, and the raw bytes of every file of the
    chain (the spec first). See ``specs/renderers/README.md`` "Variants: extends"."""
    p = Path(path)
    ctx = _Ctx(p)
    doc, raw = _read_doc(p)
    parent_ref = doc.get("extends")
    if parent_ref is None:
        extra = sorted(set(doc) & set(_EXTENDS_KEYS))
        if extra:
            raise ctx.err(f"{extra} only mean something in a spec that extends another (extends: PARENT.yaml)")
        return doc, [raw]
    if not isinstance(parent_ref, str) or not parent_ref.strip():
        raise ctx.err("must be the file name of the parent spec, e.g. qwen3.yaml", fld="extends")
    parent_path = (p.parent / parent_ref).resolve()
    if parent_path in _seen or parent_path == p.resolve():
        chain = " -> ".join(str(x.name) for x in (*_seen, p.resolve(), parent_path))
        raise ctx.err(f"extends forms a cycle: {chain}", fld="extends")
    if not parent_path.exists():
        raise ctx.err(f"parent spec {parent_ref!r} not found (looked for {parent_path})", fld="extends")
    _unknown(ctx, doc, (*_TOP_KEYS, *_EXTENDS_KEYS))
    if "renderer" not in doc:
        raise ctx.err("missing: a spec that extends another names its own renderer", fld="renderer")
    parent, raws = resolve_spec_doc(parent_path, (*_seen, p.resolve()))
    out: dict[str, Any] = {}
    for key in _TOP_KEYS:
        if key in _BY_ID:
            if key in parent or key in doc or _BY_ID[key] in doc:
                out[key] = _merge_by_id(ctx, key, parent.get(key), doc.get(key), doc.get(_BY_ID[key]))
        elif key in doc and doc[key] is not None:
            out[key] = _merge(parent.get(key), doc[key])
        elif key in parent and key not in doc:
            out[key] = parent[key]
    if "title" not in doc:
        out["title"] = doc["renderer"]  # a parent's title names the parent
    return out, [raw, *raws]


def load_spec(path: str | Path) -> Spec:
    """Load and validate one renderer spec file (with its ``extends:`` chain applied)."""
    p = Path(path)
    ctx = _Ctx(p)
    doc, raws = resolve_spec_doc(p)
    raw_bytes = raws[0] if len(raws) == 1 else b"".join(hashlib.sha256(r).digest() for r in raws)
    _unknown(ctx, doc, _TOP_KEYS)
    renderer = _req(ctx, doc, "renderer", str)
    title = _opt(ctx, doc, "title", str, renderer)
    tokenizer = _req(ctx, doc, "tokenizer", str)
    oracle = _load_oracle(ctx, _req(ctx, doc, "oracle", dict))
    tml = _load_tml(ctx, doc["tml"]) if doc.get("tml") is not None else None
    if oracle.kind == "tml_renderers" and tml is None:
        raise ctx.err("oracle.kind tml_renderers needs a tml: {class: ..., constructor: ...} section", fld="tml")
    claims_raw = _opt(ctx, doc, "claims", dict, {})
    for k, v in claims_raw.items():
        if k not in ("extension_property", "thinking", "tools"):
            raise ctx.err(f"unknown claim {k!r}; known: extension_property, thinking, tools", fld="claims")
        if not isinstance(v, bool):
            raise ctx.err(f"claim {k!r} must be true or false, got {v!r}", fld="claims")
    stops = _opt(ctx, doc, "stop_sequences", list, [])
    if not all(isinstance(s, str) for s in stops):
        raise ctx.err("every stop sequence must be a string", fld="stop_sequences")
    deviations: dict[str, Deviation] = {}
    for i, d in enumerate(_opt(ctx, doc, "deviations", list, [])):
        dev = _load_deviation(ctx, d, i)
        if dev.id in deviations:
            raise ctx.err(f"duplicate deviation id {dev.id!r}", fld="deviations")
        deviations[dev.id] = dev
    cases: list[Case] = []
    seen: set[str] = set()
    image_token = _opt(ctx, doc, "image_token", str, None)
    for i, c in enumerate(_req(ctx, doc, "cases", list)):
        case = _load_case(ctx, c, i, deviations, oracle)
        if _has_image(case.messages) and image_token is None:
            raise ctx.err("a case with an image part needs the spec's image_token (the template's image placeholder, "
                          "e.g. <|image_pad|>)", case.id, "messages")
        if case.id in seen:
            raise ctx.err("duplicate case id", case.id, "id")
        seen.add(case.id)
        cases.append(case)
    parse_cases: list[ParseCase] = []
    pseen: set[str] = set()
    for i, c in enumerate(_opt(ctx, doc, "parse", list, [])):
        pc = _load_parse_case(ctx, c, i)
        if pc.id in pseen:
            raise ctx.err("duplicate parse case id", pc.id, "id")
        pseen.add(pc.id)
        parse_cases.append(pc)
    return Spec(
        path=p,
        renderer=renderer,
        title=title,
        tokenizer=tokenizer,
        oracle=oracle,
        claims=dict(claims_raw),
        stop_sequences=tuple(stops),
        deviations=deviations,
        cases=tuple(cases),
        parse=tuple(parse_cases),
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        tml=tml,
        image_token=image_token,
    )


def _load_tml(ctx: _Ctx, d: Any) -> TmlRef:
    from cookbook.conformance.tml import FEATURES

    if not isinstance(d, dict):
        raise ctx.err(f"must be a mapping, got {type(d).__name__}", fld="tml")
    _unknown(ctx, d, ("class", "constructor", "kwargs", "follows", "differences"), prefix="tml.")
    cls = _req(ctx, d, "class", str, prefix="tml.")
    ctor = _opt(ctx, d, "constructor", str, "", prefix="tml.") or None
    kwargs = _opt(ctx, d, "kwargs", dict, {}, prefix="tml.")
    follows = _opt(ctx, d, "follows", str, "template", prefix="tml.")
    if follows not in ("template", "tml"):
        raise ctx.err(f"must be template or tml, got {follows!r}", fld="tml.follows")
    diffs: list[TmlDifference] = []
    for i, x in enumerate(_opt(ctx, d, "differences", list, [], prefix="tml.")):
        fld = f"tml.differences[{i}]"
        if not isinstance(x, dict):
            raise ctx.err("must be a mapping with id, description, reason, when", fld=fld)
        _unknown(ctx, x, ("id", "description", "reason", "when"), prefix=fld + ".")
        did = _req(ctx, x, "id", str, prefix=fld + ".")
        if not re.fullmatch(r"[a-z0-9_-]+", did) or any(t.id == did for t in diffs):
            raise ctx.err(f"id {did!r} must be unique and match [a-z0-9_-]+", fld=fld)
        reason = _req(ctx, x, "reason", str, prefix=fld + ".")
        when = _req(ctx, x, "when", list, prefix=fld + ".")
        bad = [w for w in when if w not in FEATURES]
        if not when or bad:
            raise ctx.err(f"when must list conversation features from {sorted(FEATURES)}; unknown: {bad}", fld=fld)
        diffs.append(TmlDifference(did, _opt(ctx, x, "description", str, "", prefix=fld + "."), reason, tuple(when)))
    return TmlRef(cls, ctor, dict(kwargs), follows, tuple(diffs))


def _load_oracle(ctx: _Ctx, d: Mapping[str, Any]) -> Oracle:
    _unknown(ctx, d, ("kind", "template_kwargs", "reason", "messages"), prefix="oracle.")
    kind = _req(ctx, d, "kind", str, prefix="oracle.")
    if kind not in ("chat_template", "spec", "tml_renderers"):
        raise ctx.err(f"must be chat_template, spec or tml_renderers, got {kind!r}", fld="oracle.kind")
    reason = _opt(ctx, d, "reason", str, "", prefix="oracle.")
    if kind == "spec" and not reason.strip():
        raise ctx.err("required when oracle.kind is spec: say why there is no template", fld="oracle.reason")
    kwargs = _opt(ctx, d, "template_kwargs", dict, {}, prefix="oracle.")
    m = _opt(ctx, d, "messages", dict, {}, prefix="oracle.")
    _unknown(ctx, m, ("thinking", "tool_arguments", "tools"), prefix="oracle.messages.")
    thinking = m.get("thinking", "reasoning_content")
    if thinking not in ("reasoning_content", "content_tags", "drop"):
        raise ctx.err(f"must be reasoning_content, content_tags or drop, got {thinking!r}", fld="oracle.messages.thinking")
    args = m.get("tool_arguments", "object")
    if args not in ("object", "string"):
        raise ctx.err(f"must be object or string, got {args!r}", fld="oracle.messages.tool_arguments")
    tools = m.get("tools", "openai")
    if tools not in ("openai", "raw"):
        raise ctx.err(f"must be openai or raw, got {tools!r}", fld="oracle.messages.tools")
    return Oracle(kind=kind, template_kwargs=dict(kwargs), reason=reason, messages=MessageOptions(thinking, args, tools))


def _load_deviation(ctx: _Ctx, d: Any, i: int) -> Deviation:
    pre = f"deviations[{i}]."
    if not isinstance(d, dict):
        raise ctx.err(f"expected a mapping, got {d!r}", fld=f"deviations[{i}]")
    _unknown(ctx, d, ("id", "description", "reason", "template_edits", "applies_to", "compare", "property_inputs"), prefix=pre)
    did = _req(ctx, d, "id", str, prefix=pre)
    pre = f"deviations[{did}]."
    description = _req(ctx, d, "description", str, prefix=pre)
    reason = _req(ctx, d, "reason", str, prefix=pre)
    edits: list[Edit] = []
    for j, e in enumerate(_opt(ctx, d, "template_edits", list, [], prefix=pre)):
        f = f"{pre}template_edits[{j}]"
        if not isinstance(e, dict):
            raise ctx.err(f"expected a mapping, got {e!r}", fld=f)
        _unknown(ctx, e, ("replace", "regex", "with", "optional", "groups"), prefix=f + ".")
        if ("replace" in e) == ("regex" in e):
            raise ctx.err("give exactly one of 'replace' or 'regex'", fld=f)
        kind: Literal["replace", "regex"] = "replace" if "replace" in e else "regex"
        pattern = e[kind]
        repl = e.get("with")
        if not isinstance(pattern, str) or not pattern:
            raise ctx.err(f"{kind} must be a non-empty string", fld=f)
        if not isinstance(repl, str):
            raise ctx.err("'with' must be a string (use \"\" to delete)", fld=f)
        if kind == "regex":
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ctx.err(f"invalid regex: {exc}", fld=f) from exc
        optional = e.get("optional", False)
        if not isinstance(optional, bool):
            raise ctx.err("optional must be true or false", fld=f)
        groups = e.get("groups", False)
        if not isinstance(groups, bool) or (groups and kind != "regex"):
            raise ctx.err("groups must be true or false, and only on a regex edit", fld=f)
        if groups:  # a reference to a group the regex lacks fails here, not in the generator
            rx = re.compile(pattern)
            for num, named in re.findall(r"\\(\d+)|\\g<(\w+)>", repl):
                ref = num or named
                if not (ref.isdigit() and int(ref) <= rx.groups) and ref not in rx.groupindex:
                    raise ctx.err(f"'with' refers to group {ref!r}, which the regex does not have", fld=f)
        edits.append(Edit(kind, pattern, repl, optional, groups))
    applies_to = _opt(ctx, d, "applies_to", str, "cases", prefix=pre)
    if applies_to not in ("cases", "all"):
        raise ctx.err(f"must be 'cases' or 'all', got {applies_to!r}", fld=pre + "applies_to")
    compare = _opt(ctx, d, "compare", str, "tokens", prefix=pre)
    if compare not in ("tokens", "text"):
        raise ctx.err(f"must be 'tokens' or 'text', got {compare!r}", fld=pre + "compare")
    pin = _opt(ctx, d, "property_inputs", dict, {}, prefix=pre)
    for k, v in pin.items():
        if k not in PROPERTY_INPUT_KEYS:
            raise ctx.err(f"unknown key {k!r}; known: {list(PROPERTY_INPUT_KEYS)}", fld=pre + "property_inputs")
        if k in ("forbid", "literal_exempt") and not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
            raise ctx.err(f"{k} must be a list of strings", fld=pre + "property_inputs")
        if k == "max_turns" and not isinstance(v, int):
            raise ctx.err("max_turns must be an integer", fld=pre + "property_inputs")
        if k in _BOOL_INPUT_KEYS and not isinstance(v, bool):
            raise ctx.err(f"{k} must be true or false", fld=pre + "property_inputs")
        if k == "scope" and v not in ("template", "all"):
            raise ctx.err(f"scope must be 'template' or 'all', got {v!r}", fld=pre + "property_inputs")
    return Deviation(did, description, reason, tuple(edits), applies_to, compare, dict(pin))  # type: ignore[arg-type]


_MSG_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name", "trainable")


def _check_message(ctx: _Ctx, m: Any, case: str, fld: str) -> None:
    if not isinstance(m, dict):
        raise ctx.err(f"expected a mapping, got {m!r}", case, fld)
    _unknown(ctx, m, _MSG_KEYS, case, fld + ".")
    if not isinstance(m.get("role"), str):
        raise ctx.err("role must be a string", case, fld + ".role")
    content = m.get("content", "")
    if isinstance(content, list):
        for k, part in enumerate(content):
            pf = f"{fld}.content[{k}]"
            if isinstance(part, dict) and part.get("type") == "image":
                _check_image_part(ctx, part, case, pf)
                continue
            if not isinstance(part, dict) or part.get("type") not in ("text", "thinking"):
                raise ctx.err(
                    f"a part must be {{type: text, text}}, {{type: thinking, thinking}} or {{type: image, png: [width, "
                    f"height]}}, got {part!r}", case, pf)
            key = part["type"]
            if not isinstance(part.get(key), str):
                raise ctx.err(f"a {key} part needs a string {key!r}", case, pf)
    elif not isinstance(content, str):
        raise ctx.err(f"content must be a string or a list of parts, got {content!r}", case, fld + ".content")
    for k, tc in enumerate(m.get("tool_calls") or []):
        pf = f"{fld}.tool_calls[{k}]"
        if not isinstance(tc, dict) or not isinstance(tc.get("name"), str):
            raise ctx.err(f"a tool call needs a string name, got {tc!r}", case, pf)
        _unknown(ctx, tc, ("id", "name", "arguments"), case, pf + ".")
        args = tc.get("arguments", "{}")
        if isinstance(args, str):
            try:
                json.loads(args)
            except json.JSONDecodeError as exc:
                raise ctx.err(f"arguments must be a JSON string: {exc}", case, pf + ".arguments") from exc
        elif not isinstance(args, dict):
            raise ctx.err("arguments must be a JSON string (or a mapping)", case, pf + ".arguments")
    if "trainable" in m and not isinstance(m["trainable"], bool):
        raise ctx.err("trainable must be true or false", case, fld + ".trainable")


def _check_image_part(ctx: _Ctx, part: Mapping[str, Any], case: str, pf: str) -> None:
    """``{type: image, png: [width, height], seed: N}``: the deterministic PNG of
    :func:`cookbook.renderers.kit.vision.make_png` (seed 0 by default)."""
    _unknown(ctx, part, ("type", "png", "seed"), case, pf + ".")
    size = part.get("png")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 4096 for x in size)):
        raise ctx.err(f"an image part needs png: [width, height] (integers 1..4096), got {size!r}", case, pf + ".png")
    seed = part.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ctx.err(f"seed must be an integer, got {seed!r}", case, pf + ".seed")


def _has_image(messages: Iterable[Any]) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image" for p in m["content"])
               for m in messages if isinstance(m, dict))


def _load_case(ctx: _Ctx, c: Any, i: int, deviations: Mapping[str, Deviation], oracle: Oracle) -> Case:
    if not isinstance(c, dict):
        raise ctx.err(f"expected a mapping, got {c!r}", fld=f"cases[{i}]")
    cid = c.get("id")
    if not isinstance(cid, str) or not _ID.match(cid):
        raise ctx.err(f"must be a string of [a-z0-9_]+, got {cid!r}", f"#{i}", "id")
    _unknown(
        ctx,
        c,
        ("id", "scenario", "description", "messages", "tools", "train_on_what", "prefill", "deviations", "template", "template_kwargs", "expect",
         "role"),
        cid,
    )
    scenario = _req(ctx, c, "scenario", str, cid)
    if scenario not in SCENARIOS:
        raise ctx.err(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}", cid, "scenario")
    description = _opt(ctx, c, "description", str, "", cid)
    messages = _req(ctx, c, "messages", list, cid)
    if not messages:
        raise ctx.err("needs at least one message", cid, "messages")
    for k, m in enumerate(messages):
        _check_message(ctx, m, cid, f"messages[{k}]")
    tools = _opt(ctx, c, "tools", list, [], cid)
    for k, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ctx.err(f"a tool needs at least a string name (ToolSpec: name, description, parameters), got {t!r}", cid, f"tools[{k}]")
    tow = _opt(ctx, c, "train_on_what", str, TrainOnWhat.LAST_ASSISTANT_MESSAGE.value, cid)
    try:
        train_on_what = TrainOnWhat(tow)
    except ValueError as exc:
        raise ctx.err(f"unknown value {tow!r}; known: {[t.value for t in TrainOnWhat]}", cid, "train_on_what") from exc
    prefill = _opt(ctx, c, "prefill", str, None, cid)
    devs = _opt(ctx, c, "deviations", list, [], cid)
    for d in devs:
        if d not in deviations:
            raise ctx.err(f"unknown deviation {d!r}; declared: {sorted(deviations)}", cid, "deviations")
    template = _opt(ctx, c, "template", dict, {}, cid)
    _unknown(ctx, template, ("skip",), cid, "template.")
    skip = template.get("skip")
    if "skip" in template and (not isinstance(skip, str) or not skip.strip()):
        raise ctx.err("skip needs a reason (a non-empty string)", cid, "template.skip")
    tkw = _opt(ctx, c, "template_kwargs", dict, {}, cid)
    role = _opt(ctx, c, "role", str, "assistant", cid)
    if not role.strip():
        raise ctx.err("role must be a non-empty string", cid, "role")
    e = _req(ctx, c, "expect", dict, cid)
    _unknown(ctx, e, ("supervised", "generation_prompt", "raises", "token_counts"), cid, "expect.")
    sup = _opt(ctx, e, "supervised", str, None, cid, "expect.")
    gen = _opt(ctx, e, "generation_prompt", str, None, cid, "expect.")
    raises = _opt(ctx, e, "raises", str, None, cid, "expect.")
    counts = _opt(ctx, e, "token_counts", dict, {}, cid, "expect.")
    if raises is not None:
        try:
            re.compile(raises)
        except re.error as exc:
            raise ctx.err(f"invalid regex: {exc}", cid, "expect.raises") from exc
        if sup is not None or gen is not None:
            raise ctx.err("give either raises or supervised/generation_prompt, not both", cid, "expect")
    elif sup is None and gen is None:
        raise ctx.err("needs supervised and/or generation_prompt (or raises)", cid, "expect")
    if role != "assistant" and (gen is None or sup is not None):
        raise ctx.err(f"a case with role {role!r} checks a generation prompt only (expect.generation_prompt, no supervised)",
                      cid, "role")
    if sup is not None:
        parse_marked(sup, where=f"{ctx.path}: case {cid!r}: field 'expect.supervised'")
    for k, v in counts.items():
        if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ctx.err(f"token_counts maps token text to a count >= 0, got {k!r}: {v!r}", cid, "expect.token_counts")
    if prefill is not None and gen is not None and not gen.endswith(prefill):
        raise ctx.err(f"the generation prompt must end with the prefill {prefill!r}", cid, "expect.generation_prompt")
    return Case(
        id=cid,
        scenario=scenario,
        description=description,
        messages=tuple(messages),
        expect=Expect(sup, gen, raises, dict(counts)),
        tools=tuple(tools),
        train_on_what=train_on_what,
        prefill=prefill,
        deviations=tuple(devs),
        template_skip=skip,
        template_kwargs=dict(tkw),
        role=role,
    )


def _load_parse_case(ctx: _Ctx, c: Any, i: int) -> ParseCase:
    if not isinstance(c, dict):
        raise ctx.err(f"expected a mapping, got {c!r}", fld=f"parse[{i}]")
    cid = c.get("id")
    if not isinstance(cid, str) or not _ID.match(cid):
        raise ctx.err(f"must be a string of [a-z0-9_]+, got {cid!r}", f"parse#{i}", "id")
    where = f"parse:{cid}"
    _unknown(ctx, c, ("id", "response", "expect", "description"), where)
    response = _req(ctx, c, "response", str, where)
    e = _req(ctx, c, "expect", dict, where)
    _unknown(ctx, e, ("termination", "message", "raises"), where, "expect.")
    term = _opt(ctx, e, "termination", str, None, where, "expect.")
    if term is not None and term not in TERMINATIONS:
        raise ctx.err(f"must be one of {TERMINATIONS}, got {term!r}", where, "expect.termination")
    msg = _opt(ctx, e, "message", dict, None, where, "expect.")
    raises = _opt(ctx, e, "raises", str, None, where, "expect.")
    if raises is None and term is None and msg is None:
        raise ctx.err("needs termination and/or message, or raises", where, "expect")
    if raises is not None and (term is not None or msg is not None):
        raise ctx.err("give either raises or termination/message, not both", where, "expect")
    if msg is not None:
        _unknown(ctx, msg, (*_MSG_KEYS, "unparsed_tool_calls"), where, "expect.message.")
        _check_message(ctx, {k: v for k, v in msg.items() if k != "unparsed_tool_calls"}, where, "expect.message")
        up = msg.get("unparsed_tool_calls")
        ok = (isinstance(up, int) and not isinstance(up, bool) and up >= 0) or (
            isinstance(up, list) and all(isinstance(u, dict) and set(u) <= {"raw_text", "error"} for u in up)
        )
        if "unparsed_tool_calls" in msg and not ok:
            raise ctx.err("a count, or a list of {raw_text: exact text, error: regex}", where, "expect.message.unparsed_tool_calls")
    return ParseCase(cid, response, ParseExpect(term, msg, raises), _opt(ctx, c, "description", str, "", where))


def spec_dir() -> Path:
    """``specs/renderers`` of the installed package (:func:`cookbook.data.specs_dir`)."""
    from cookbook.data import specs_dir

    return specs_dir("renderers")


def spec_path_for(renderer: str, root: Path | None = None) -> Path:
    return (root or spec_dir()) / f"{renderer}.yaml"


def all_spec_paths(root: Path | None = None) -> list[Path]:
    return sorted((root or spec_dir()).glob("*.yaml"))


# ----------------------------------------------------------------------------------------------- conversions


def _parts(content: Any) -> list[ContentPart]:
    return [_part(p) for p in content]


def _part(p: Mapping[str, Any]) -> ContentPart:
    """A spec part as a cookbook part; ``{type: image, png: [w, h], seed}`` becomes an image part with that PNG."""
    if p.get("type") == "image" and "png" in p:
        from cookbook.renderers.kit.vision import make_png

        width, height = p["png"]
        return {"type": "image", "image": make_png(int(width), int(height), int(p.get("seed", 0)))}
    return dict(p)  # type: ignore[return-value]


def to_tool_call(tc: Mapping[str, Any]) -> ToolCall:
    args = tc.get("arguments", "{}")
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    return ToolCall(name=str(tc["name"]), arguments=args, id=tc.get("id"))


def to_message(m: Mapping[str, Any]) -> Message:
    """A spec message as a cookbook :class:`Message` (content parts kept, tool calls as :class:`ToolCall`)."""
    content = m.get("content", "")
    out: dict[str, Any] = {"role": m["role"], "content": _parts(content) if isinstance(content, list) else content}
    if m.get("tool_calls"):
        out["tool_calls"] = [to_tool_call(tc) for tc in m["tool_calls"]]
    for k in ("tool_call_id", "name", "trainable"):
        if k in m:
            out[k] = m[k]
    return out  # type: ignore[return-value]


def to_messages(messages: Iterable[Mapping[str, Any]]) -> list[Message]:
    return [to_message(m) for m in messages]


def _text_and_thinking(content: Any) -> tuple[str, str | None]:
    if isinstance(content, str):
        return content, None
    text = "".join(p["text"] for p in content if p.get("type") == "text")
    thinking = [p["thinking"] for p in content if p.get("type") == "thinking"]
    return text, ("\n".join(thinking) if thinking else None)


def to_template_message(m: Mapping[str, Any], options: MessageOptions | None = None) -> dict[str, Any]:
    """A spec (or cookbook) message as chat-template input.

    Thinking parts become ``reasoning_content`` (or inline ``<think>\\n...\\n</think>\\n\\n`` before the text, or
    are dropped); tool calls become ``{type: function, id, function: {name, arguments}}`` with ``arguments``
    parsed JSON (``tool_arguments: object``) or the JSON string. ``trainable`` is dropped.
    """
    opts = options or MessageOptions()
    content = m.get("content", "")
    text, thinking = _text_and_thinking(content)
    out: dict[str, Any] = {"role": m["role"]}
    if isinstance(content, list) and any(p.get("type") == "image" for p in content):
        # images: a list of {type: text, text} and {type: image} parts, in order (the template places each image)
        parts: list[dict[str, Any]] = [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                                       for p in content if p.get("type") in ("text", "image")]
        if thinking is not None and opts.thinking == "content_tags":
            parts.insert(0, {"type": "text", "text": f"<think>\n{thinking}\n</think>\n\n"})
        out["content"] = parts
    else:
        if thinking is not None and opts.thinking == "content_tags":
            text = f"<think>\n{thinking}\n</think>\n\n{text}"
        out["content"] = text
    if thinking is not None and opts.thinking == "reasoning_content":
        out["reasoning_content"] = thinking
    calls = m.get("tool_calls") or []
    if calls:
        tcs = []
        for tc in calls:
            if isinstance(tc, ToolCall):
                name, args, tid = tc.name, tc.arguments, tc.id
            else:
                name, tid = tc["name"], tc.get("id")
                args = tc.get("arguments", "{}")
                if not isinstance(args, str):
                    args = json.dumps(args, ensure_ascii=False)
            fn: dict[str, Any] = {"name": name, "arguments": json.loads(args) if opts.tool_arguments == "object" else args}
            entry: dict[str, Any] = {"type": "function", "function": fn}
            if tid is not None:
                entry["id"] = tid
            tcs.append(entry)
        out["tool_calls"] = tcs
    for k in ("tool_call_id", "name"):
        if k in m:
            out[k] = m[k]
    return out


def to_template_messages(messages: Iterable[Mapping[str, Any]], options: MessageOptions | None = None) -> list[dict[str, Any]]:
    return [to_template_message(m, options) for m in messages]


def to_template_tools(tools: Iterable[Mapping[str, Any]], options: MessageOptions | None = None) -> list[dict[str, Any]]:
    """ToolSpecs as the template's ``tools``: wrapped as ``{type: function, function: spec}`` (``tools: openai``,
    the default) or passed as they are (``tools: raw``). Already wrapped tools are passed unchanged."""
    opts = options or MessageOptions()
    out: list[dict[str, Any]] = []
    for t in tools:
        if opts.tools == "raw" or t.get("type") == "function":
            out.append(dict(t))
        else:
            out.append({"type": "function", "function": dict(t)})
    return out


# ----------------------------------------------------------------------------------------------- edits


def apply_edits(
    texts: Sequence[str], deviations: Iterable[Deviation], where: str = "", strict: bool = True
) -> list[str]:
    """Apply every deviation's ``template_edits``, in order, to each of ``texts`` (e.g. the oracle's generation
    prompt and supervised text of one case).

    With ``strict`` (the golden generator), a non-optional edit must match at least once in one of the texts,
    else :class:`SpecError`: a stale edit would otherwise hide silently. Property checks apply general deviations
    to random conversations with ``strict=False``.
    """
    out = list(texts)
    for dev in deviations:
        for edit in dev.template_edits:
            total = 0
            for i, t in enumerate(out):
                out[i], n = edit.apply(t)
                total += n
            if strict and total == 0 and not edit.optional:
                raise SpecError(
                    f"{where}deviation {dev.id!r}: template edit ({edit.describe()}) matched nothing in the "
                    "template's text; the edit is stale or the template changed (mark it optional: true only "
                    "if it legitimately applies to some cases only)"
                )
    return out
