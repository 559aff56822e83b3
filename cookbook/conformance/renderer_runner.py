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
* ``raises``: building must be refused: any exception meets it (its message is shown, never matched);
* ``policy.literal_control_tokens`` (cases of scenario ``special_token_text``): control-token text inside message
  content renders as literal text, never as the control token (a policy check of its own);

per spec: ``stop_sequences``, ``claims`` (the renderer's ``has_extension_property`` / ``supports_*`` attributes,
when it has them, against the spec), ``golden.fresh``; per parse case ``parse`` (termination kind, role, content,
tool calls; an expected refusal is met by any exception or the ``malformed`` termination); and the
``property.*`` checks of :mod:`cookbook.conformance.properties`.

Statuses: a feature the implementation does not offer (:class:`~cookbook.conformance.impls.Unsupported`, or
``NotImplementedError``) is a SKIP with the reason; an :class:`~cookbook.conformance.impls.AdapterError` is an
ERROR; any other exception of the renderer is a FAIL. Every failure carries a ``cause`` naming the first
differing token (ids and decodings) or the first token whose weight differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cookbook.conformance.golden import load_golden, unified_diff
from cookbook.conformance.impls import AdapterError, Unsupported
from cookbook.conformance.oracle import Codec, tokenizer_provenance
from cookbook.conformance.properties import (
    PropertyContext,
    RendererAdapter,
    compare_messages,
    diff_cause,
    expected_weights,
    run_properties,
    text_diff_cause,
    token_diff,
    trained_char_spans,
    weight_diff,
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
    def __init__(self, renderer: str, implementation: str = ""):
        self.renderer = renderer
        self.implementation = implementation
        self.results: list[CheckResult] = []

    def add(self, case: str, check: str, status: Status, message: str = "", detail: str = "", cause: str = "") -> None:
        self.results.append(CheckResult(self.renderer, case, check, status, message, detail, cause, self.implementation))


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def outcome_of(exc: BaseException) -> tuple[Status, str]:
    """How an exception raised while running a check counts: (status, message)."""
    if isinstance(exc, Unsupported | NotImplementedError):
        return "SKIP", f"not offered by the implementation: {exc}"
    if isinstance(exc, AdapterError):
        return "ERROR", f"adapter error: {exc}"
    return "FAIL", f"the renderer raised {_err(exc)}"


def _guard(col: _Collector, case: str, checks: Sequence[str], fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on an exception, report every check in ``checks`` (SKIP / ERROR / FAIL, see
    :func:`outcome_of`) and return None."""
    try:
        return fn()
    except Exception as exc:
        status, msg = outcome_of(exc)
        first = (str(exc).splitlines() or [""])[0][:100]
        for ch in checks:
            col.add(case, ch, status, msg, cause=f"the renderer raised {type(exc).__name__}: {first}" if status == "FAIL" else "")
        return None


def run_spec(
    renderer: Any,
    spec: Spec,
    tokenizer: Any,
    tokenizer_name: str | None = None,
    options: RunOptions | None = None,
    label: str | None = None,
    implementation: str = "",
) -> list[CheckResult]:
    """Every check of ``spec`` against ``renderer`` (which uses ``tokenizer``)."""
    opts = options or RunOptions()
    codec = Codec(tokenizer)
    adapter = RendererAdapter(renderer, codec, spec.image_token)
    col = _Collector(label or spec.renderer, implementation)
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
        status, msg = outcome_of(exc)
        col.add("*", "stop_sequences", status, msg)
        return
    shown = [codec.token_text(s) if isinstance(s, int) else s for s in stops]
    if list(shown) == list(spec.stop_sequences):
        col.add("*", "stop_sequences", "PASS", f"{shown!r}")
    else:
        col.add("*", "stop_sequences", "FAIL", f"expected {list(spec.stop_sequences)!r}, got {shown!r} (raw {stops!r})",
                cause=f"stop sequences: expected {list(spec.stop_sequences)!r}, got {shown!r}")


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
        col.add(case.id, "tools", "SKIP", "not offered by the implementation: no create_conversation_prefix_with_tools(tools, system_prompt)")
        return
    if exp.raises is not None:
        _check_raises(col, case, adapter)
        return
    compare_text = any(spec.deviations[d].compare == "text" for d in case.deviations)
    if exp.generation_prompt is not None:
        checks = ["prompt.spec", "prompt.tokens"] + (["prompt.token_counts"] if exp.token_counts else [])
        tokens = _guard(col, case.id, checks, lambda: adapter.generation(_messages_for(adapter, case, case.prompt_messages), case.prefill, case.role))
        if tokens is not None:
            text = codec.decode(tokens)
            if text == exp.generation_prompt:
                col.add(case.id, "prompt.spec", "PASS", f"{len(tokens)} tokens")
            else:
                cause = text_diff_cause(exp.generation_prompt, tokens, codec)
                col.add(case.id, "prompt.spec", "FAIL", "decoded generation prompt differs from the spec's text",
                        f"{cause}\n" + unified_diff(exp.generation_prompt, text, "spec", "renderer"), cause)
            _check_prompt_golden(col, case, tokens, text, golden, no_golden, compare_text, codec)
            if exp.token_counts:
                bad = []
                for tok, n in exp.token_counts.items():
                    tid = codec.token_id(tok)
                    got = tokens.count(tid) if tid is not None else 0
                    if tid is None or got != n:
                        bad.append(f"{tok!r}: expected {n}, got {got}" + (" (not a token of this tokenizer)" if tid is None else ""))
                if bad:
                    col.add(case.id, "prompt.token_counts", "FAIL", "; ".join(bad), cause=f"special-token counts: {bad[0]}")
                else:
                    col.add(case.id, "prompt.token_counts", "PASS", ", ".join(f"{k}×{v}" for k, v in exp.token_counts.items()))
    if exp.supervised is not None:
        checks = ["supervised.spec", "supervised.text", "supervised.spans"]
        got = _guard(col, case.id, checks, lambda: adapter.supervised(_messages_for(adapter, case, case.messages), case.train_on_what))
        if got is not None:
            tokens, weights = got
            _check_supervised(col, case, tokens, weights, golden, no_golden, codec)
    if case.scenario == "special_token_text":
        _check_literal_control_tokens(col, case, adapter, codec)


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
            cause = text_diff_cause(gtext, tokens, codec, gtokens)
            col.add(case.id, "prompt.tokens", "FAIL", "generation prompt text differs from the golden's",
                    f"{cause}\n" + unified_diff(gtext, text, "golden", "renderer"), cause)
        return
    if tokens == gtokens:
        col.add(case.id, "prompt.tokens", "PASS", f"{len(tokens)} tokens, token-exact ({golden.get('oracle')})")
        return
    detail = token_diff(gtokens, tokens, codec)
    if text == gtext:
        msg = "same text as the golden but different token ids (a tokenization difference)"
        cause = "tokenization: " + diff_cause(gtokens, tokens, codec)
    else:
        msg = "generation prompt differs from the golden"
        detail += "\n" + unified_diff(gtext, text, "golden", "renderer")
        cause = text_diff_cause(gtext, tokens, codec, gtokens)
    col.add(case.id, "prompt.tokens", "FAIL", msg, detail, cause)


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
            col.add(case.id, ch, "FAIL", f"len(weights) = {len(weights)} but len(tokens) = {len(tokens)}",
                    cause="len(weights) != len(tokens)")
        return
    odd = sorted({w for w in weights if w not in (0.0, 1.0)})
    text, spans = trained_char_spans(tokens, weights, codec)
    marked = mark(text, spans)
    exp = case.expect
    assert exp.supervised is not None and exp.supervised_text is not None
    if text == exp.supervised_text and spans == exp.supervised_spans and not odd:
        col.add(case.id, "supervised.spec", "PASS", f"{len(tokens)} tokens, {sum(1 for w in weights if w)} trained")
    else:
        diff = unified_diff(exp.supervised, marked, "spec", "renderer")
        if odd:
            col.add(case.id, "supervised.spec", "FAIL", f"supervised example differs from the spec: weights other than 0/1 ({odd[:3]})",
                    diff, f"weights other than 0/1: {odd[:3]}")
        elif text != exp.supervised_text:
            cause = text_diff_cause(exp.supervised_text, tokens, codec)
            col.add(case.id, "supervised.spec", "FAIL", "supervised example differs from the spec: text", f"{cause}\n{diff}", cause)
        else:
            cause, where = weight_diff(tokens, expected_weights(tokens, exp.supervised_spans, codec), weights, codec)
            col.add(case.id, "supervised.spec", "FAIL", "supervised example differs from the spec: trained spans",
                    f"{where}\n{diff}", cause)
    g = (golden or {}).get("supervised")
    if golden is None or g is None:
        reason = no_golden if golden is None else "the golden has no supervised example"
        col.add(case.id, "supervised.text", "SKIP", reason)
        col.add(case.id, "supervised.spans", "SKIP", reason)
        return
    gt = [int(t) for t in g.get("template_tokens") or []] or None
    text_cause = ""
    if text == g["text"]:
        col.add(case.id, "supervised.text", "PASS", f"decoded text equals the golden ({golden.get('oracle')})")
    else:
        text_cause = text_diff_cause(g["text"], tokens, codec, gt)
        detail = f"{text_cause}\n" + unified_diff(g["text"], text, "golden", "renderer")
        col.add(case.id, "supervised.text", "FAIL", "decoded supervised text differs from the golden", detail, text_cause)
    gspans = merge_spans(g.get("trained_spans", []))
    if spans == gspans and not odd:
        col.add(case.id, "supervised.spans", "PASS", f"{len(spans)} trained span(s)")
        return
    diff = unified_diff(mark(g["text"], gspans), marked, "golden", "renderer")
    if text_cause:  # on a different text the spans cannot be compared token by token: the text is the cause
        col.add(case.id, "supervised.spans", "FAIL", "trained spans differ (on a different text)", diff, text_cause)
        return
    cause, where = weight_diff(tokens, expected_weights(tokens, gspans, codec), weights, codec)
    col.add(case.id, "supervised.spans", "FAIL", "trained spans differ from the golden's", f"{where}\n{diff}", cause)


def _check_literal_control_tokens(col: _Collector, case: Case, adapter: RendererAdapter, codec: Codec) -> None:
    """Control-token text in content (e.g. ``<|im_end|>`` typed by a user) must render as literal text: the
    rendered ids hold each control token exactly as often as when that text is replaced by a neutral word."""
    specials = [t for t in codec.special_token_strings() if t.strip()]

    def neutral(v: Any) -> Any:
        if isinstance(v, str):
            for t in specials:
                v = v.replace(t, "X")
            return v
        if isinstance(v, list):
            return [neutral(x) for x in v]
        if isinstance(v, Mapping):
            return {k: neutral(x) for k, x in v.items()}
        return v

    msgs = case.messages if case.expect.supervised is not None else case.prompt_messages
    present = [t for t in specials if any(t in json.dumps(m, ensure_ascii=False) for m in msgs)]
    if not present:
        col.add(case.id, "policy.literal_control_tokens", "SKIP", "the case has no control-token text in content")
        return
    if case.expect.supervised is not None:
        def build(ms: Sequence[Mapping[str, Any]]) -> list[int]:
            return adapter.supervised(_messages_for(adapter, case, ms), case.train_on_what)[0]
    else:
        def build(ms: Sequence[Mapping[str, Any]]) -> list[int]:
            return adapter.generation(_messages_for(adapter, case, ms), case.prefill, case.role)
    got = _guard(col, case.id, ["policy.literal_control_tokens"], lambda: (build(msgs), build([neutral(m) for m in msgs])))
    if got is None:
        return
    real, base = got
    bad = []
    for t in present:
        tid = codec.token_id(t)
        if tid is not None and real.count(tid) != base.count(tid):
            bad.append(f"{tid} {t!r}: {real.count(tid)} in the render, {base.count(tid)} without the text")
    if bad:
        col.add(case.id, "policy.literal_control_tokens", "FAIL", "control-token text in content became control tokens",
                "\n".join(bad), f"control-token text in content is rendered as the control token {bad[0].split(':')[0]}")
    else:
        col.add(case.id, "policy.literal_control_tokens", "PASS", f"{', '.join(present)} stay literal")


def _check_raises(col: _Collector, case: Case, adapter: RendererAdapter) -> None:
    """An expected refusal is met by ANY exception of either builder (the message is shown, never matched); the
    spec's ``raises`` text documents what is refused."""
    outcomes: list[str] = []
    attempts: list[tuple[str, Callable[[], Any]]] = [
        ("build_supervised_example", lambda: adapter.supervised(_messages_for(adapter, case, case.messages), case.train_on_what)),
        ("build_generation_prompt", lambda: adapter.generation(_messages_for(adapter, case, case.prompt_messages), case.prefill, case.role)),
    ]
    for what, fn in attempts:
        try:
            fn()
        except (AdapterError, Unsupported) as exc:
            status, msg = outcome_of(exc)
            col.add(case.id, "raises", status, msg)
            return
        except Exception as exc:
            col.add(case.id, "raises", "PASS", f"{what} refused: {_err(exc)}")
            return
        outcomes.append(f"{what} did not raise")
    col.add(case.id, "raises", "FAIL", f"expected a refusal ({case.expect.raises})", "\n".join(outcomes),
            f"not refused: {case.description or case.id}")


def _run_parse_case(col: _Collector, pc: Any, adapter: RendererAdapter, codec: Codec) -> None:
    """Termination kind, role, content and tool calls; never the wording of an error. An expected refusal
    (``raises``) is met by any exception or by the ``malformed`` termination (the documented error value)."""
    cid = f"parse:{pc.id}"
    tokens = codec.encode_special(pc.response)
    try:
        msg, term = adapter.parse(tokens)
    except Exception as exc:
        status, m = outcome_of(exc)
        if status == "FAIL" and pc.expect.raises is not None:
            col.add(cid, "parse", "PASS", f"refused: {_err(exc)}")
        else:
            col.add(cid, "parse", status, m, cause=f"parse: raised {type(exc).__name__}" if status == "FAIL" else "")
        return
    if pc.expect.raises is not None:
        if term == "malformed":
            col.add(cid, "parse", "PASS", "refused: malformed termination")
        else:
            col.add(cid, "parse", "FAIL", f"expected a refusal; got {term} {dict(msg)!r}", cause="parse: not refused")
        return
    problems = []
    if pc.expect.termination is not None and term != pc.expect.termination:
        problems.append(f"termination: expected {pc.expect.termination}, got {term}")
    if pc.expect.message is not None:
        problems += compare_messages(pc.expect.message, msg)
    if problems:
        col.add(cid, "parse", "FAIL", problems[0], "\n".join(problems) + f"\nresponse {pc.response!r} -> {dict(msg)!r}",
                f"parse: {problems[0].split(':')[0]}: " + problems[0].split(": ", 1)[-1][:160])
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
        status, msg = outcome_of(exc)
        col.add("*", "property", status, f"property checks could not run: {msg}")
        return
    for o in outcomes:
        col.add("*", f"property.{o.name}", o.status, o.message, o.detail, o.cause)  # type: ignore[arg-type]
