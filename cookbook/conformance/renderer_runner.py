"""Run a renderer spec, its goldens and the property checks against ANY renderer.

The renderer only has to implement :class:`cookbook.renderers.base.RendererProtocol`. Checks, per case:

* ``prompt.tokens``: ``build_generation_prompt`` token for token against the golden's oracle tokens (as text
  plus ``token_counts`` when a deviation of the case says ``compare: text``); skipped without a golden or when
  the tokenizer is not the golden's;
* ``prompt.spec``: the decoded generation prompt against the spec's text (needs no golden);
* ``prompt.token_counts``: how often each named special token occurs;
* ``supervised.text`` / ``supervised.spans``: the decoded supervised example and its trained character spans
  (token weights mapped onto characters) against the golden;
* ``supervised.spec``: text and spans against the spec's ``⟦ ⟧``-marked text directly;
* ``raises``: building must raise an error matching the spec's regex;

per spec: ``stop_sequences``, ``claims`` (the renderer's ``has_extension_property`` / ``supports_*`` attributes,
when it has them, against the spec), ``golden.fresh``; per parse case ``parse``; and the ``property.*`` checks of
:mod:`cookbook.conformance.properties`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cookbook.conformance.golden import load_golden, unified_diff
from cookbook.conformance.oracle import Codec, tokenizer_provenance
from cookbook.conformance.properties import (
    PropertyContext,
    RendererAdapter,
    compare_messages,
    run_properties,
    token_diff,
    trained_char_spans,
)
from cookbook.conformance.report import CheckResult, Status
from cookbook.conformance.spec import Case, Spec, mark, merge_spans, to_messages


@dataclass
class RunOptions:
    properties: bool = True
    examples: int = 25
    seed: int | None = None
    golden_root: Path | None = None


class _Collector:
    def __init__(self, renderer: str):
        self.renderer = renderer
        self.results: list[CheckResult] = []

    def add(self, case: str, check: str, status: Status, message: str = "", detail: str = "") -> None:
        self.results.append(CheckResult(self.renderer, case, check, status, message, detail))


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _guard(col: _Collector, case: str, checks: Sequence[str], fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on an exception, FAIL every check in ``checks`` with the error and return None."""
    try:
        return fn()
    except Exception as exc:
        for ch in checks:
            col.add(case, ch, "FAIL", f"the renderer raised {_err(exc)}")
        return None


def run_spec(
    renderer: Any,
    spec: Spec,
    tokenizer: Any,
    tokenizer_name: str | None = None,
    options: RunOptions | None = None,
    label: str | None = None,
) -> list[CheckResult]:
    """Every check of ``spec`` against ``renderer`` (which uses ``tokenizer``)."""
    opts = options or RunOptions()
    codec = Codec(tokenizer)
    adapter = RendererAdapter(renderer, codec)
    col = _Collector(label or spec.renderer)
    prov = tokenizer_provenance(tokenizer_name or spec.tokenizer, tokenizer)
    _check_stop_sequences(col, spec, adapter, codec)
    _check_claims(col, spec, renderer)
    stale: list[str] = []
    for case in spec.cases:
        golden = load_golden(spec.renderer, case.id, opts.golden_root)
        golden_ok, why = _golden_usable(golden, spec, prov)
        if golden is not None and golden.get("provenance", {}).get("spec_sha256") != spec.sha256:
            stale.append(case.id)
        _run_case(col, spec, case, adapter, codec, golden if golden_ok else None, why)
    if stale:
        col.add("*", "golden.fresh", "FAIL", f"{len(stale)} golden(s) were generated from another version of "
                f"{spec.path.name} (e.g. {stale[0]}): run `cookbook golden {spec.renderer}` and review the diff")
    else:
        col.add("*", "golden.fresh", "PASS", "goldens match the spec's sha256")
    for pc in spec.parse:
        _run_parse_case(col, pc, adapter, codec)
    if opts.properties:
        _run_properties(col, renderer, spec, tokenizer, opts)
    return col.results


def _golden_usable(golden: Mapping[str, Any] | None, spec: Spec, prov: Mapping[str, Any]) -> tuple[bool, str]:
    if golden is None:
        return False, f"no golden for this case (run `cookbook golden {spec.renderer}`)"
    gsha = golden.get("provenance", {}).get("tokenizer_sha256")
    if gsha and prov.get("tokenizer_sha256") and gsha != prov["tokenizer_sha256"]:
        return False, "the tokenizer differs from the golden's (tokenizer.json sha256); token checks need the spec's tokenizer"
    return True, ""


def _check_stop_sequences(col: _Collector, spec: Spec, adapter: RendererAdapter, codec: Codec) -> None:
    try:
        stops = adapter.stop_sequences()
    except Exception as exc:
        col.add("*", "stop_sequences", "FAIL", f"get_stop_sequences() raised {_err(exc)}")
        return
    shown = [codec.token_text(s) if isinstance(s, int) else s for s in stops]
    if list(shown) == list(spec.stop_sequences):
        col.add("*", "stop_sequences", "PASS", f"{shown!r}")
    else:
        col.add("*", "stop_sequences", "FAIL", f"expected {list(spec.stop_sequences)!r}, got {shown!r} (raw {stops!r})")


def _check_claims(col: _Collector, spec: Spec, renderer: Any) -> None:
    problems = []
    for claim, attr in (("extension_property", "has_extension_property"), ("thinking", "supports_thinking"), ("tools", "supports_tools")):
        if hasattr(renderer, attr):
            have = bool(getattr(renderer, attr))
            if have != spec.claim(claim):
                problems.append(f"{attr} = {have} but the spec claims {claim}: {str(spec.claim(claim)).lower()}")
    if problems:
        col.add("*", "claims", "FAIL", "; ".join(problems))
    else:
        col.add("*", "claims", "PASS", "renderer attributes agree with the spec's claims")


def _messages_for(adapter: RendererAdapter, case: Case, messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    msgs = to_messages(messages)
    return adapter.with_tools(msgs, case.tools) if case.tools else msgs


def _run_case(
    col: _Collector,
    spec: Spec,
    case: Case,
    adapter: RendererAdapter,
    codec: Codec,
    golden: Mapping[str, Any] | None,
    no_golden: str,
) -> None:
    exp = case.expect
    if case.tools and not adapter.supports_tool_prefix():
        status: Status = "FAIL" if spec.claim("tools") else "SKIP"
        col.add(case.id, "tools", status, "the renderer has no create_conversation_prefix_with_tools(tools, system_prompt)")
        return
    if exp.raises is not None:
        _check_raises(col, case, adapter)
        return
    compare_text = any(spec.deviations[d].compare == "text" for d in case.deviations)
    if exp.generation_prompt is not None:
        checks = ["prompt.spec", "prompt.tokens"] + (["prompt.token_counts"] if exp.token_counts else [])
        tokens = _guard(col, case.id, checks, lambda: adapter.generation(_messages_for(adapter, case, case.prompt_messages), case.prefill))
        if tokens is not None:
            text = codec.decode(tokens)
            if text == exp.generation_prompt:
                col.add(case.id, "prompt.spec", "PASS", f"{len(tokens)} tokens")
            else:
                col.add(case.id, "prompt.spec", "FAIL", "decoded generation prompt differs from the spec's text",
                        unified_diff(exp.generation_prompt, text, "spec", "renderer"))
            _check_prompt_golden(col, case, tokens, text, golden, no_golden, compare_text, codec)
            if exp.token_counts:
                bad = []
                for tok, n in exp.token_counts.items():
                    tid = codec.token_id(tok)
                    got = tokens.count(tid) if tid is not None else 0
                    if tid is None or got != n:
                        bad.append(f"{tok!r}: expected {n}, got {got}" + (" (not a token of this tokenizer)" if tid is None else ""))
                if bad:
                    col.add(case.id, "prompt.token_counts", "FAIL", "; ".join(bad))
                else:
                    col.add(case.id, "prompt.token_counts", "PASS", ", ".join(f"{k}×{v}" for k, v in exp.token_counts.items()))
    if exp.supervised is not None:
        checks = ["supervised.spec", "supervised.text", "supervised.spans"]
        got = _guard(col, case.id, checks, lambda: adapter.supervised(_messages_for(adapter, case, case.messages), case.train_on_what))
        if got is not None:
            tokens, weights = got
            _check_supervised(col, case, tokens, weights, golden, no_golden, codec)


def _check_prompt_golden(
    col: _Collector,
    case: Case,
    tokens: list[int],
    text: str,
    golden: Mapping[str, Any] | None,
    no_golden: str,
    compare_text: bool,
    codec: Codec,
) -> None:
    g = (golden or {}).get("generation_prompt")
    if golden is None or g is None:
        col.add(case.id, "prompt.tokens", "SKIP", no_golden if golden is None else "the golden has no generation prompt")
        return
    gtext, gtokens = g["text"], [int(t) for t in g["tokens"]]
    if compare_text:
        if text == gtext:
            col.add(case.id, "prompt.tokens", "PASS", "compared as text (deviation with compare: text)")
        else:
            col.add(case.id, "prompt.tokens", "FAIL", "generation prompt text differs from the golden's",
                    unified_diff(gtext, text, "golden", "renderer"))
        return
    if tokens == gtokens:
        col.add(case.id, "prompt.tokens", "PASS", f"{len(tokens)} tokens, token-exact ({golden.get('oracle')})")
        return
    detail = token_diff(gtokens, tokens, codec)
    if text == gtext:
        msg = "same text as the golden but different token ids (a tokenization difference)"
    else:
        msg = "generation prompt differs from the golden"
        detail += "\n" + unified_diff(gtext, text, "golden", "renderer")
    col.add(case.id, "prompt.tokens", "FAIL", msg, detail)


def _check_supervised(
    col: _Collector,
    case: Case,
    tokens: list[int],
    weights: list[float],
    golden: Mapping[str, Any] | None,
    no_golden: str,
    codec: Codec,
) -> None:
    if len(weights) != len(tokens):
        for ch in ("supervised.spec", "supervised.text", "supervised.spans"):
            col.add(case.id, ch, "FAIL", f"len(weights) = {len(weights)} but len(tokens) = {len(tokens)}")
        return
    odd = sorted({w for w in weights if w not in (0.0, 1.0)})
    text, spans = trained_char_spans(tokens, weights, codec)
    marked = mark(text, spans)
    exp = case.expect
    assert exp.supervised is not None
    if text == exp.supervised_text and spans == exp.supervised_spans and not odd:
        col.add(case.id, "supervised.spec", "PASS", f"{len(tokens)} tokens, {sum(1 for w in weights if w)} trained")
    else:
        what = "text" if text != exp.supervised_text else "trained spans (⟦ ⟧)"
        if odd:
            what = f"weights other than 0/1 ({odd[:3]})"
        col.add(case.id, "supervised.spec", "FAIL", f"supervised example differs from the spec: {what}",
                unified_diff(exp.supervised, marked, "spec", "renderer"))
    g = (golden or {}).get("supervised")
    if golden is None or g is None:
        reason = no_golden if golden is None else "the golden has no supervised example"
        col.add(case.id, "supervised.text", "SKIP", reason)
        col.add(case.id, "supervised.spans", "SKIP", reason)
        return
    if text == g["text"]:
        col.add(case.id, "supervised.text", "PASS", f"decoded text equals the golden ({golden.get('oracle')})")
    else:
        detail = unified_diff(g["text"], text, "golden", "renderer")
        gt = g.get("template_tokens")
        if gt:
            detail = token_diff([int(t) for t in gt], tokens, codec) + "\n" + detail
        col.add(case.id, "supervised.text", "FAIL", "decoded supervised text differs from the golden", detail)
    gspans = merge_spans(g.get("trained_spans", []))
    if spans == gspans and not odd:
        col.add(case.id, "supervised.spans", "PASS", f"{len(spans)} trained span(s)")
    else:
        col.add(case.id, "supervised.spans", "FAIL", f"trained spans {spans} differ from the golden's {gspans}",
                unified_diff(mark(g["text"], gspans), marked, "golden", "renderer"))


def _check_raises(col: _Collector, case: Case, adapter: RendererAdapter) -> None:
    pattern = case.expect.raises or ""
    errors: list[str] = []
    attempts: list[tuple[str, Callable[[], Any]]] = [
        ("build_supervised_example", lambda: adapter.supervised(_messages_for(adapter, case, case.messages), case.train_on_what)),
        ("build_generation_prompt", lambda: adapter.generation(_messages_for(adapter, case, case.prompt_messages), case.prefill)),
    ]
    for what, fn in attempts:
        try:
            fn()
        except Exception as exc:
            if re.search(pattern, str(exc)):
                col.add(case.id, "raises", "PASS", f"{what} raised {type(exc).__name__} matching {pattern!r}")
                return
            errors.append(f"{what} raised {_err(exc)}")
        else:
            errors.append(f"{what} did not raise")
    col.add(case.id, "raises", "FAIL", f"expected an error matching {pattern!r}", "\n".join(errors))


def _run_parse_case(col: _Collector, pc: Any, adapter: RendererAdapter, codec: Codec) -> None:
    cid = f"parse:{pc.id}"
    tokens = codec.encode_special(pc.response)
    try:
        msg, term = adapter.parse(tokens)
    except Exception as exc:
        if pc.expect.raises is not None and re.search(pc.expect.raises, str(exc)):
            col.add(cid, "parse", "PASS", f"raised {type(exc).__name__} matching {pc.expect.raises!r}")
        else:
            col.add(cid, "parse", "FAIL", f"parse_response raised {_err(exc)}" + (f"; expected a match for {pc.expect.raises!r}" if pc.expect.raises else ""))
        return
    if pc.expect.raises is not None:
        col.add(cid, "parse", "FAIL", f"expected an error matching {pc.expect.raises!r}; got {term} {dict(msg)!r}")
        return
    problems = []
    if pc.expect.termination is not None and term != pc.expect.termination:
        problems.append(f"termination: expected {pc.expect.termination}, got {term}")
    if pc.expect.message is not None:
        problems += compare_messages(pc.expect.message, msg)
    if problems:
        col.add(cid, "parse", "FAIL", problems[0], "\n".join(problems) + f"\nresponse {pc.response!r} -> {dict(msg)!r}")
    else:
        col.add(cid, "parse", "PASS", f"{term}")


def _run_properties(col: _Collector, renderer: Any, spec: Spec, tokenizer: Any, opts: RunOptions) -> None:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        col.add("*", "property", "SKIP", "hypothesis is not installed (pip install hypothesis)")
        return
    try:
        ctx = PropertyContext.build(renderer, spec, tokenizer)
        outcomes = run_properties(ctx, examples=opts.examples, seed=opts.seed)
    except Exception as exc:
        col.add("*", "property", "FAIL", f"property checks could not run: {_err(exc)}")
        return
    for o in outcomes:
        col.add("*", f"property.{o.name}", o.status, o.message, o.detail)  # type: ignore[arg-type]
