"""Golden fixtures for renderer specs, generated from the ORACLE (never from a renderer).

For every case of ``specs/renderers/<renderer>.yaml`` the generator renders the conversation with the model's
chat template (``oracle.kind: chat_template``), applies the case's declared deviations' ``template_edits``,
checks that the result equals the spec's expected text (a mismatch means the spec is wrong or a deviation is
undeclared: it stops with a unified diff) and writes ``golden/renderers/<renderer>/<case>.json``.

Cases of an ``oracle.kind: spec`` file, or with ``template: {skip: reason}``, take their text from the spec,
reviewed by hand; their token ids come from ``tokenizer.encode`` of that text with special tokens parsed
(a prefill is appended encoded as ordinary text), and the golden records ``"oracle": "spec"`` and the reason.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cookbook.conformance.oracle import GENERATOR, Codec, TemplateOracle, tokenizer_provenance
from cookbook.conformance.spec import (
    Case,
    Spec,
    apply_edits,
    mark,
    merge_spans,
    to_messages,
    to_template_messages,
    to_template_tools,
)
from cookbook.conformance.tml import TmlOracle, TmlRendered
from cookbook.errors import SpecError

SCHEMA = 1


def golden_root() -> Path:
    """``golden/renderers`` of the installed package (:func:`cookbook.data.golden_dir`)."""
    from cookbook.data import golden_dir

    return golden_dir("renderers")


def golden_path(renderer: str, case_id: str, root: Path | None = None) -> Path:
    return (root or golden_root()) / renderer / f"{case_id}.json"


def load_golden(renderer: str, case_id: str, root: Path | None = None) -> dict[str, Any] | None:
    p = golden_path(renderer, case_id, root)
    if not p.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(f"{p}: not valid JSON: {exc}") from exc
    return data


# ----------------------------------------------------------------------------------------------- formatting


def dumps(obj: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, lists of scalars on one line, UTF-8, final newline."""
    return _fmt(obj, 0) + "\n"


def _fmt(obj: Any, level: int) -> str:
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, Mapping):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_fmt(obj[k], level + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list | tuple):
        if all(type(x) is int for x in obj):  # token ids: str(int) is json.dumps(int), without its overhead
            return "[" + ", ".join(map(str, obj)) + "]"
        if all(not isinstance(x, Mapping | list | tuple) for x in obj):
            return "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in obj) + "]"
        return "[\n" + ",\n".join(inner + _fmt(x, level + 1) for x in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def unified_diff(expected: str, actual: str, a: str = "expected", b: str = "actual") -> str:
    """A unified diff of two texts, with line ends made visible (``⏎``) so whitespace differences show."""

    def lines(s: str) -> list[str]:
        out = []
        for ln in re.findall(r"[^\n]*\n|[^\n]+", s):
            out.append(ln.replace("\r", "␍").replace("\n", "⏎"))
        return out or [""]

    exp, act = lines(expected), lines(actual)
    return "\n".join(difflib.unified_diff(exp, act, a, b, lineterm=""))


# ----------------------------------------------------------------------------------------------- generation


class GoldenMismatch(SpecError):
    """The spec's expected text differs from the oracle's."""


@dataclass
class GoldenSet:
    """Goldens of one spec: file path -> JSON text; mismatches found while checking the spec."""

    spec: Spec
    files: dict[Path, str] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    codec: Codec | None = None


def _prov(spec: Spec, base: Mapping[str, Any]) -> dict[str, Any]:
    return {**base, "spec_sha256": spec.sha256, "spec": f"specs/renderers/{spec.path.name}", "generator": GENERATOR}


def golden_for_case(
    spec: Spec,
    case: Case,
    codec: Codec,
    oracle: TemplateOracle | None,
    provenance: Mapping[str, Any],
    tml_oracle: TmlOracle | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The golden dict of one case and the list of mismatch reports (empty when the spec agrees)."""
    where = f"{spec.path}: case {case.id!r}: "
    g: dict[str, Any] = {
        "schema": SCHEMA,
        "renderer": spec.renderer,
        "case": case.id,
        "scenario": case.scenario,
        "model": spec.tokenizer,
        "train_on_what": case.train_on_what.value,
        "deviations": list(case.deviations),
        "provenance": _prov(spec, provenance),
    }
    compare = "text" if any(spec.deviations[d].compare == "text" for d in case.deviations) else "tokens"
    g["compare"] = compare
    if case.prefill is not None:
        g["prefill"] = case.prefill
    if case.role != "assistant":
        g["role"] = case.role
    exp = case.expect
    if exp.raises is not None:
        g["raises"] = exp.raises
        g["oracle"] = "spec"
        g["oracle_reason"] = "the renderer must refuse this conversation; the template is not consulted"
        return g, []
    if spec.oracle.kind == "tml_renderers" and case.template_skip is None and tml_oracle is not None:
        return _golden_from_tml(spec, case, codec, tml_oracle, g)
    use_template = spec.oracle.kind == "chat_template" and case.template_skip is None and oracle is not None
    problems: list[str] = []
    if not use_template:
        g["oracle"] = "spec"
        g["oracle_reason"] = case.template_skip or spec.oracle.reason or "no chat template"
        if exp.generation_prompt is not None:
            text = exp.generation_prompt
            if case.prefill:
                head = text[: len(text) - len(case.prefill)]
                tokens = codec.encode_special(head) + codec.encode_literal(case.prefill)
            else:
                tokens = codec.encode_special(text)
            g["generation_prompt"] = {"text": text, "tokens": tokens}
        if exp.supervised is not None:
            stext = exp.supervised_text or ""
            g["supervised"] = {
                "text": stext,
                "trained_spans": [list(s) for s in exp.supervised_spans],
                "template_tokens": codec.encode_special(stext),
            }
        return g, []

    assert oracle is not None
    g["oracle"] = "chat_template"
    opts = spec.oracle.messages
    tools = to_template_tools(case.tools, opts) or None
    devs = [spec.deviations[d] for d in case.deviations]
    gen = sup = None
    try:
        if exp.generation_prompt is not None and case.role != "assistant":
            # a template opens an assistant turn only; the prompt for another role is the rendering of an empty
            # message of that role, whose closing the case's deviation edits cut off
            empty = {"role": case.role, "content": ""}
            gen = oracle.render(to_template_messages([*case.prompt_messages, empty], opts), False, tools, case.template_kwargs)
        elif exp.generation_prompt is not None:
            gen = oracle.render(to_template_messages(case.prompt_messages, opts), True, tools, case.template_kwargs)
        if exp.supervised is not None:
            sup = oracle.render(to_template_messages(case.messages, opts), False, tools, case.template_kwargs)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(
            f"{where}the chat template failed: {type(exc).__name__}: {exc}; if the template cannot render this "
            "case, say so with template: {skip: reason}"
        ) from exc
    originals = [r.text if r is not None else "" for r in (gen, sup)]
    edited = apply_edits(originals, devs, where=where, strict=True)
    if gen is not None:
        text = edited[0]
        tokens = gen.tokens if text == gen.text else codec.encode_special(text)
        if case.prefill:
            text += case.prefill
            tokens = tokens + codec.encode_literal(case.prefill)
        if text != exp.generation_prompt:
            problems.append(
                f"{where}generation_prompt: the spec's text differs from the oracle's (template"
                f"{' + edits ' + ', '.join(case.deviations) if case.deviations else ''}); either the spec is "
                "wrong or a deviation is undeclared\n" + unified_diff(exp.generation_prompt or "", text, "spec", "oracle")
            )
        g["generation_prompt"] = {"text": text, "tokens": tokens}
    if sup is not None:
        stext = edited[1]
        stokens = sup.tokens if stext == sup.text else codec.encode_special(stext)
        if stext != exp.supervised_text:
            problems.append(
                f"{where}supervised: the spec's text differs from the oracle's (template"
                f"{' + edits ' + ', '.join(case.deviations) if case.deviations else ''}); either the spec is "
                "wrong or a deviation is undeclared\n" + unified_diff(exp.supervised_text or "", stext, "spec", "oracle")
            )
        g["supervised"] = {
            "text": stext,
            "trained_spans": [list(s) for s in exp.supervised_spans],
            "template_tokens": stokens,
        }
    return g, problems


def generate_spec(spec: Spec, tokenizer: Any | None = None, root: Path | None = None) -> GoldenSet:
    """All goldens of one spec (in memory) plus any spec/oracle mismatches."""
    if tokenizer is None:
        from cookbook.tokenizers import get_tokenizer

        tokenizer = get_tokenizer(spec.tokenizer)
    codec = Codec(tokenizer)
    oracle = TemplateOracle(tokenizer, spec.oracle.template_kwargs) if spec.oracle.kind == "chat_template" else None
    tml_oracle = None
    prov = tokenizer_provenance(spec.tokenizer, tokenizer)
    if spec.oracle.kind == "tml_renderers" and spec.tml is not None:
        tml_oracle = TmlOracle(spec.tml.cls, spec.tml.constructor, spec.tml.kwargs)
        prov = {**prov, "tml_renderer": tml_oracle.label, "tml_renderers_version": _tml_version()}
    out = GoldenSet(spec, codec=codec)
    for case in spec.cases:
        g, problems = golden_for_case(spec, case, codec, oracle, prov, tml_oracle)
        out.files[golden_path(spec.renderer, case.id, root)] = dumps(g)
        out.mismatches += problems
    return out


def stale_files(specs: Iterable[Spec], root: Path | None = None) -> list[Path]:
    """Golden files of the given renderers that no case produces any more."""
    out: list[Path] = []
    for spec in specs:
        folder = (root or golden_root()) / spec.renderer
        ids = {c.id for c in spec.cases}
        out += [p for p in sorted(folder.glob("*.json")) if p.stem not in ids]
    return out


# ----------------------------------------------------------------------------------------------- checking


VERSIONS_KEY = ("provenance", "versions")
TOKEN_KEYS = {"tokens", "template_tokens"}


@dataclass(frozen=True)
class GoldenDiff:
    """How a golden on disk compares with the one the oracle produces now.

    ``content`` is empty when everything but the recorded library versions agrees; otherwise it describes the
    first difference (a token list names the first differing position with both ids and decodings).
    ``versions`` maps a library to (recorded, running) where those differ: informative, never a failure.
    """

    content: str = ""
    versions: tuple[tuple[str, str, str], ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.content)


def compare_golden(old: Mapping[str, Any] | None, new: Mapping[str, Any], codec: Codec | None = None) -> GoldenDiff:
    """Compare a stored golden with a regenerated one; see :class:`GoldenDiff`."""
    if old is None:
        return GoldenDiff(content="missing: the oracle produces this golden but no file exists")
    rec = _get(old, VERSIONS_KEY) or {}
    run = _get(new, VERSIONS_KEY) or {}
    versions = tuple(
        (lib, str(rec.get(lib, "none")), str(run.get(lib, "none")))
        for lib in sorted(set(rec) | set(run))
        if rec.get(lib) != run.get(lib)
    )
    first = _first_difference(_without(old, VERSIONS_KEY), _without(new, VERSIONS_KEY), (), codec)
    return GoldenDiff(content=first or "", versions=versions)


def _get(d: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = d
    for k in path:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _without(d: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = dict(d)
    if len(path) == 1:
        out.pop(path[0], None)
    elif isinstance(out.get(path[0]), Mapping):
        out[path[0]] = _without(out[path[0]], path[1:])
    return out


def _first_difference(a: Any, b: Any, where: tuple[str, ...], codec: Codec | None) -> str | None:
    label = ".".join(where) or "(file)"
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                return f"{label}.{k}: absent in the stored golden, the oracle gives {_short(b[k])}"
            if k not in b:
                return f"{label}.{k}: the stored golden has {_short(a[k])}, the oracle gives none"
            found = _first_difference(a[k], b[k], (*where, str(k)), codec)
            if found:
                return found
        return None
    if where and where[-1] in TOKEN_KEYS and isinstance(a, list) and isinstance(b, list):
        return _token_difference(label, a, b, codec) if a != b else None
    if a != b:
        return f"{label}: stored {_short(a)}, the oracle gives {_short(b)}"
    return None


def _token_difference(label: str, a: list[Any], b: list[Any], codec: Codec | None) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def show(ids: list[Any]) -> str:
        if i >= len(ids):
            return "end of sequence"
        tok = ids[i]
        text = ""
        if codec is not None and isinstance(tok, int):
            try:
                text = " " + json.dumps(codec.decode([tok]), ensure_ascii=False)
            except Exception:
                text = ""
        return f"id {tok}{text}"

    return (
        f"{label}: first differing token at position {i} (stored {len(a)} tokens, the oracle {len(b)}): "
        f"stored {show(a)}, the oracle gives {show(b)}"
    )


def _short(x: Any, limit: int = 80) -> str:
    text = json.dumps(x, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------- tml oracle


def _tml_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tml-renderers")
    except PackageNotFoundError:
        return "unknown"


def _weighted_spans(oracle: TmlOracle, r: TmlRendered) -> list[tuple[int, int]]:
    """Character spans of ``r.text`` whose tokens carry weight (the oracle's own SFT weights)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, w in enumerate(r.weights):
        end = len(oracle.decode(r.tokens[: i + 1]))
        if w and end > pos:
            spans.append((pos, end))
        pos = max(pos, end)
    return merge_spans(spans)


def _golden_from_tml(
    spec: Spec, case: Case, codec: Codec, oracle: TmlOracle, g: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Golden of a case of an ``oracle.kind: tml_renderers`` spec: token ids, weights and stop values from the
    official renderer; its decoded text (after the case's ``template_edits``) must equal the spec's text, and
    the spec's ``⟦ ⟧`` marks must equal the characters the official renderer trains."""
    where = f"{spec.path}: case {case.id!r}: "
    exp = case.expect
    g["oracle"] = "tml_renderers"
    g["stop"] = oracle.stop()
    devs = [spec.deviations[d] for d in case.deviations]
    problems: list[str] = []
    try:
        # the spec's messages as cookbook messages (its image parts become their PNGs), which the oracle translates
        prompt, messages = to_messages(case.prompt_messages), to_messages(case.messages)
        gen = oracle.generation(prompt, case.tools) if exp.generation_prompt is not None else None
        sup = oracle.supervised(messages, case.tools, case.train_on_what.value) if exp.supervised is not None else None
        if spec.image_token is not None:  # images as the spec's placeholder token, as a template golden has them
            pad = codec.token_id(spec.image_token)
            if pad is None:
                raise SpecError(f"{where}image_token {spec.image_token!r} is not a token of {spec.tokenizer}")
            gen = gen.with_placeholder(pad, oracle.decode) if gen is not None else None
            sup = sup.with_placeholder(pad, oracle.decode) if sup is not None else None
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(
            f"{where}{oracle.label} failed: {type(exc).__name__}: {exc}; if it cannot render this case, say so "
            "with template: {skip: reason}"
        ) from exc
    edited = apply_edits([gen.text if gen else "", sup.text if sup else ""], devs, where=where, strict=True)
    label = f"{oracle.label}{' + edits ' + ', '.join(case.deviations) if case.deviations else ''}"
    if gen is not None:
        text = edited[0]
        tokens = gen.tokens if text == gen.text else codec.encode_special(text)
        if case.prefill:
            text += case.prefill
            tokens = tokens + [int(t) for t in oracle.tokenizer.encode_ordinary(case.prefill)]
        if text != exp.generation_prompt:
            problems.append(
                f"{where}generation_prompt: the spec's text differs from {label}; either the spec is wrong or a "
                "deviation is undeclared\n" + unified_diff(exp.generation_prompt or "", text, "spec", "oracle")
            )
        g["generation_prompt"] = {"text": text, "tokens": tokens}
    if sup is not None:
        stext = edited[1]
        spans = exp.supervised_spans
        if stext == sup.text:
            stokens, weights = sup.tokens, sup.weights
            theirs = _weighted_spans(oracle, sup)
            if stext == exp.supervised_text and merge_spans(spans) != theirs:
                problems.append(
                    f"{where}supervised: the spec's trained spans differ from the weights of {label}\n"
                    + unified_diff(mark(stext, spans), mark(stext, theirs), "spec", "oracle")
                )
        else:
            stokens, weights = codec.encode_special(stext), []
        if stext != exp.supervised_text:
            problems.append(
                f"{where}supervised: the spec's text differs from {label}; either the spec is wrong or a deviation "
                "is undeclared\n" + unified_diff(exp.supervised_text or "", stext, "spec", "oracle")
            )
        g["supervised"] = {"text": stext, "trained_spans": [list(x) for x in spans], "template_tokens": stokens}
        if weights:
            g["supervised"]["weights"] = weights
    return g, problems
