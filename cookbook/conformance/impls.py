"""Implementation adapters: run the conformance checks on cookbook's renderers, on the peers' and on a user's.

Every adapter turns "a spec renderer name + a tokenizer" into an object with cookbook's renderer protocol
(:class:`cookbook.renderers.base.RendererProtocol`) *over cookbook's message model*; inside, it translates the
messages to the implementation's own model and the results back. Selected with ``--impl``:

=================  ==============================================================================================
``cookbook``       ours (the default): the registry's renderer of that name
``tinker-cookbook``  ``tinker_cookbook.renderers.get_renderer``; messages with ``ToolCall(function=...)`` and
                   content parts, its ``TrainOnWhat``, ``ParseTermination``
``tml-renderers``  Thinking Machines' native renderers (``render_for_completion`` / ``render_for_sft`` on
                   ``chat.MessageList.from_oss_messages``); per-message training weights; parse errors and a
                   missing ``ModelEndSampling`` are the ``malformed`` termination
``pi-renderers``   PrimeIntellect ``renderers`` (``create_renderer(tokenizer, Config)``; OpenAI-format dicts;
                   ``build_training_sample`` with a per-message loss mask; tools passed to ``render``)
``hf-template``    the model's own ``apply_chat_template``: token-in/token-out; weights from the template's
                   ``{% generation %}`` marks where it has them, else from prefix renders (the trained span of an
                   assistant message is what its render adds after the generation prompt); no parser
``module:factory`` a user's ``factory(tokenizer) -> renderer`` imported from the current folder (like
                   ``python -m``), called directly
=================  ==============================================================================================

A feature the implementation does not offer raises :class:`Unsupported` (the check is a SKIP with the reason);
an exception in the adapter's own translation raises :class:`AdapterError` (an ERROR, counted apart from
conformance failures). Exceptions of the implementation itself pass through unchanged (a FAIL, or the PASS of an
expected refusal).

Peers import torch and other heavy packages: they are imported here only inside the adapter methods, never at
``import cookbook`` time.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cookbook.errors import ConfigurationError, SpecError
from cookbook.renderers.base import Message, ToolCall, TrainOnWhat, UnparsedToolCall

TOOLS_ROLE = "tool_declare"  # the pseudo message that carries tool declarations into message-less APIs


class Unsupported(Exception):
    """The implementation does not offer this feature (reported as SKIP with this reason)."""


class AdapterError(Exception):
    """The adapter could not translate between cookbook's message model and the implementation's (an ERROR)."""


@contextmanager
def translating(what: str) -> Iterator[None]:
    """Turn any exception raised while translating ``what`` into an :class:`AdapterError`."""
    try:
        yield
    except (Unsupported, AdapterError):
        raise
    except Exception as exc:
        raise AdapterError(f"translating {what}: {type(exc).__name__}: {exc}") from exc


#: what ``pip install`` takes for tinker-cookbook (the version its adapter is written against; no torch)
TINKER_COOKBOOK_PIP = "tinker-cookbook==0.6.1 --no-deps"


def _import(module: str, pip: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unsupported(f"{module} is not installed (pip install {pip}): {exc}") from exc


# ----------------------------------------------------------------------------------------------- messages


def text_and_thinking(content: Any) -> tuple[str, str | None]:
    """A content value as (text, joined thinking or None)."""
    if isinstance(content, str):
        return content, None
    if any(p.get("type") not in ("text", "thinking") for p in content):
        raise Unsupported("content parts other than text and thinking (images) are not translated")
    text = "".join(p["text"] for p in content if p.get("type") == "text")
    thinking = [p["thinking"] for p in content if p.get("type") == "thinking"]
    return text, ("".join(thinking) if thinking else None)


def split_tools(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]]]:
    """(tool specs from the leading :data:`TOOLS_ROLE` pseudo messages, the other messages)."""
    tools: list[dict[str, Any]] = []
    rest: list[Mapping[str, Any]] = []
    for m in messages:
        if m.get("role") == TOOLS_ROLE:
            tools += list(m.get("tools") or [])
        else:
            rest.append(m)
    return tools, rest


def tools_prefix(tools: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
    """The prefix for implementations whose API takes tools apart from the messages."""
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    out.append({"role": TOOLS_ROLE, "content": "", "tools": [dict(t) for t in tools]})
    return out  # type: ignore[return-value]


def openai_message(m: Mapping[str, Any], arguments_as: str = "string") -> dict[str, Any]:
    """A cookbook message as an OpenAI-format dict (``reasoning_content`` for thinking)."""
    text, thinking = text_and_thinking(m.get("content", ""))
    out: dict[str, Any] = {"role": m["role"], "content": text}
    if thinking is not None:
        out["reasoning_content"] = thinking
    calls = []
    for tc in m.get("tool_calls") or []:
        args: Any = tc.arguments
        if arguments_as == "object":
            args = json.loads(args)
        fn = {"name": tc.name, "arguments": args}
        calls.append({"type": "function", "function": fn, **({"id": tc.id} if tc.id is not None else {})})
    if calls:
        out["tool_calls"] = calls
    for k in ("tool_call_id", "name"):
        if k in m:
            out[k] = m[k]
    return out


def openai_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(t) if t.get("type") == "function" else {"type": "function", "function": dict(t)} for t in tools]


def from_openai_message(d: Mapping[str, Any]) -> Message:
    """An OpenAI-format (or tinker-cookbook) message dict back into cookbook's model."""
    content = d.get("content") or ""
    parts: list[dict[str, Any]] = []
    thinking = d.get("reasoning_content") or d.get("reasoning")
    if thinking:
        parts.append({"type": "thinking", "thinking": thinking})
    if isinstance(content, str):
        if content:
            parts.append({"type": "text", "text": content})
    else:
        for p in content:
            if p.get("type") in ("text", "thinking"):
                parts.append({"type": p["type"], p["type"]: p.get(p["type"], "")})
    has_thinking = any(p["type"] == "thinking" for p in parts)
    out: dict[str, Any] = {
        "role": d.get("role", "assistant"),
        "content": parts if has_thinking else "".join(p["text"] for p in parts),
    }
    calls = []
    for tc in d.get("tool_calls") or []:
        fn = tc.get("function", tc) if isinstance(tc, Mapping) else getattr(tc, "function", tc)
        name = fn.get("name") if isinstance(fn, Mapping) else fn.name
        args = fn.get("arguments", "{}") if isinstance(fn, Mapping) else fn.arguments
        tid = tc.get("id") if isinstance(tc, Mapping) else getattr(tc, "id", None)
        calls.append(ToolCall(str(name), args if isinstance(args, str) else json.dumps(args, ensure_ascii=False), tid))
    out["tool_calls"] = calls
    unparsed = []
    for u in d.get("unparsed_tool_calls") or []:
        raw = u.get("raw_text") if isinstance(u, Mapping) else getattr(u, "raw_text", "")
        err = u.get("error") if isinstance(u, Mapping) else getattr(u, "error", "")
        unparsed.append(UnparsedToolCall(str(raw), str(err)))
    if unparsed:
        out["unparsed_tool_calls"] = unparsed
    return out  # type: ignore[return-value]


def trained_messages(messages: Sequence[Mapping[str, Any]], mode: TrainOnWhat | str) -> list[bool]:
    """Which messages' outputs carry weight 1 under ``mode`` (cookbook's semantics, see :class:`TrainOnWhat`),
    for implementations that take a per-message loss mask. ``all_tokens`` (headers trained) has no per-message
    form: :class:`Unsupported`."""
    mode = TrainOnWhat(mode)
    roles = [m["role"] for m in messages]
    last_user = max((i for i, r in enumerate(roles) if r == "user"), default=-1)
    if mode == TrainOnWhat.LAST_ASSISTANT_MESSAGE:
        return [i == len(roles) - 1 and r == "assistant" for i, r in enumerate(roles)]
    if mode == TrainOnWhat.LAST_ASSISTANT_TURN:
        return [r == "assistant" and i > last_user for i, r in enumerate(roles)]
    if mode == TrainOnWhat.ALL_ASSISTANT_MESSAGES:
        return [r == "assistant" for r in roles]
    if mode == TrainOnWhat.ALL_MESSAGES:
        return [True for _ in roles]
    if mode == TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES:
        return [r in ("user", "system") for r in roles]
    if mode == TrainOnWhat.CUSTOMIZED:
        return [bool(m.get("trainable", False)) for m in messages]
    raise Unsupported(f"train_on_what={mode.value} (headers trained) has no per-message loss mask")


def _tokens_of(x: Any) -> list[int]:
    if hasattr(x, "to_ints"):
        return [int(t) for t in x.to_ints()]
    return [int(t) for t in x]


# ----------------------------------------------------------------------------------------------- base


@dataclass(frozen=True)
class Implementation:
    """An implementation the runner can check. ``names`` maps each spec renderer name it offers to its own name
    (None for implementations that take any name, e.g. ``cookbook``)."""

    key: str
    description: str
    package: str = ""
    names: Mapping[str, Any] | None = None
    install: str = ""  # what ``pip install`` takes to make ``package`` importable

    def load(self) -> Any:
        """``package``, imported; :class:`Unsupported` with the ``pip install`` line when it is not installed."""
        return _import(self.package, self.install)

    def available(self) -> str | None:
        """None when the implementation can be loaded here, else why not (and how to install it)."""
        if not self.package:
            return None
        try:
            self.load()
        except Unsupported as exc:
            return str(exc)
        except Exception as exc:  # installed, but its import fails
            return f"{self.package} cannot be imported: {type(exc).__name__}: {exc}"
        return None

    def name_map(self) -> Mapping[str, Any] | None:
        """``names``, or where an implementation reads its name map from elsewhere, that map."""
        return self.names

    def offers(self, spec_names: Sequence[str]) -> list[str]:
        """The spec renderer names (of ``spec_names``) this implementation has."""
        names = self.name_map()
        if names is None:
            return list(spec_names)
        return [n for n in spec_names if n in names]

    def native_name(self, spec_name: str) -> str:
        names = self.name_map()
        if names is None:
            return spec_name
        if spec_name not in names:
            raise Unsupported(f"{self.key} has no renderer for {spec_name!r} (it offers {', '.join(names)})")
        n = names[spec_name]
        if isinstance(n, str):
            return n
        head, arg = n
        if isinstance(arg, Mapping):
            return f"{head}({', '.join(f'{k}={v!r}' for k, v in arg.items())})"
        return f"{head}.{arg}()" if arg else f"{head}()"

    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------- cookbook


class _Cookbook(Implementation):
    def offers(self, spec_names: Sequence[str]) -> list[str]:
        from cookbook.renderers.registry import registered_renderer_names

        have = set(registered_renderer_names())
        return [n for n in spec_names if n in have]

    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        from cookbook.renderers.registry import get_renderer

        return get_renderer(spec_name, tokenizer)


# ----------------------------------------------------------------------------------------------- module:factory


def load_user_factory(ref: str, cwd: Path | None = None) -> Callable[[Any], Any]:
    """``module:factory`` imported with the current folder first on ``sys.path`` (as ``python -m`` does)."""
    from cookbook.renderers.registry import load_factory

    here = str((cwd or Path.cwd()).resolve())
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    importlib.invalidate_caches()
    return load_factory(ref)


@dataclass(frozen=True)
class UserFactory(Implementation):
    ref: str = ""

    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        return load_user_factory(self.ref)(tokenizer)


# ----------------------------------------------------------------------------------------------- tinker-cookbook

#: Where tinker-cookbook's name for a format is not ours: its ``kimi_k2`` renders the Kimi-K2-Thinking format (our
#: ``kimi_k2_thinking``), so our ``kimi_k2`` (the Kimi-K2-Instruct format) has no counterpart there (None). Every
#: other name is offered exactly when tinker-cookbook registers the same name (:func:`tinker_cookbook_names`).
TINKER_COOKBOOK_RENAMES: Mapping[str, str | None] = {"kimi_k2_thinking": "kimi_k2", "kimi_k2": None}


def names_compared_in(func: Any, parameter: str = "name") -> set[str]:
    """The string constants ``func``'s source compares with ``==`` against its ``parameter``: how a registry
    written as an ``if name == "..." / elif ...`` chain (tinker-cookbook's ``get_renderer``) lists its names."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == parameter:
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.Eq) and isinstance(right, ast.Constant) and isinstance(right.value, str):
                    names.add(right.value)
    return names


@functools.lru_cache(maxsize=1)
def tinker_cookbook_names() -> frozenset[str]:
    """The renderer names the installed tinker-cookbook registers (read from its ``get_renderer``)."""
    r = _import("tinker_cookbook.renderers", TINKER_COOKBOOK_PIP)
    return frozenset(names_compared_in(r.get_renderer))


class TinkerCookbookRenderer:
    """A tinker-cookbook renderer behind cookbook's protocol and message model."""

    def __init__(self, inner: Any, name: str):
        self.inner = inner
        self.name = name
        self.has_extension_property = bool(getattr(inner, "has_extension_property", False))
        self._base = importlib.import_module("tinker_cookbook.renderers.base")

    def _message(self, m: Mapping[str, Any]) -> dict[str, Any]:
        b = self._base
        content = m.get("content", "")
        out: dict[str, Any] = {"role": m["role"], "content": content if isinstance(content, str) else [dict(p) for p in content]}
        if m.get("tool_calls"):
            out["tool_calls"] = [
                b.ToolCall(function=b.ToolCall.FunctionBody(name=tc.name, arguments=tc.arguments), id=tc.id)
                for tc in m["tool_calls"]
            ]
        for k in ("tool_call_id", "name", "trainable"):
            if k in m:
                out[k] = m[k]
        return out

    def _messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        with translating("messages to tinker-cookbook's Message"):
            return [self._message(m) for m in messages]

    def build_generation_prompt(self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None) -> list[int]:
        msgs = self._messages(messages)
        return _tokens_of(self.inner.build_generation_prompt(msgs, role=role, prefill=prefill))

    def build_supervised_example(self, messages: Sequence[Message], train_on_what: Any = TrainOnWhat.LAST_ASSISTANT_MESSAGE) -> tuple[list[int], Any]:
        msgs = self._messages(messages)
        with translating("train_on_what"):
            tow = self._base.TrainOnWhat(TrainOnWhat(train_on_what).value)
        mi, w = self.inner.build_supervised_example(msgs, tow)
        return _tokens_of(mi), w

    def get_stop_sequences(self) -> list[int] | list[str]:
        return list(self.inner.get_stop_sequences())

    def parse_response(self, response: Sequence[int]) -> tuple[Message, str]:
        msg, term = self.inner.parse_response(list(response))
        with translating("tinker-cookbook's parsed Message"):
            return from_openai_message(dict(msg)), str(getattr(term, "value", term))

    def create_conversation_prefix_with_tools(self, tools: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
        out = self.inner.create_conversation_prefix_with_tools([dict(t) for t in tools], system_prompt or "")
        with translating("tinker-cookbook's tool prefix"):
            return [from_openai_message(dict(m)) | {"role": m["role"]} for m in out]  # type: ignore[misc]


class _TinkerCookbook(Implementation):
    def name_map(self) -> Mapping[str, Any]:
        theirs = tinker_cookbook_names()
        same = {n: n for n in theirs if n not in TINKER_COOKBOOK_RENAMES}
        renamed = {ours: t for ours, t in TINKER_COOKBOOK_RENAMES.items() if t is not None and t in theirs}
        return {**same, **renamed}

    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        r = self.load()
        name = self.native_name(spec_name)
        try:
            inner = r.get_renderer(name, tokenizer)
        except TypeError as exc:
            # renderers built on tml-renderers (tml_v0) take only tinker-cookbook's own tml tokenizer adapter: give
            # it the one its get_tokenizer returns for the spec's model (the same tml tokenizer our catalogue exports)
            if spec is None or "tokenizer" not in str(exc).lower():
                raise
            tu = _import("tinker_cookbook.tokenizer_utils", TINKER_COOKBOOK_PIP)
            inner = r.get_renderer(name, tu.get_tokenizer(spec.tokenizer))
        except Exception as exc:
            if "image_processor" in str(exc) or "image processor" in str(exc).lower():
                raise Unsupported(f"tinker-cookbook's {name} is a vision-language renderer (needs an image processor)") from exc
            raise
        return TinkerCookbookRenderer(inner, name)


# ----------------------------------------------------------------------------------------------- tml-renderers

#: Which tml-renderers class renders a spec renderer name is stated once, in that spec's ``tml:`` section
#: (class, constructor, keyword arguments; the same reference the differential run and the ``tml_renderers`` golden
#: oracle use). A spec without one is a family tml-renderers 0.2.1 does not have (Llama, role-colon, Gemma 3,
#: GLM-4.7, gpt-oss without a system message) and is not offered.


@functools.lru_cache(maxsize=1)
def tml_refs() -> Mapping[str, Any]:
    """``{spec renderer name: its spec's TmlRef}`` for every spec with a ``tml:`` section."""
    from cookbook.conformance.spec import all_spec_paths, load_spec

    specs = (load_spec(p) for p in all_spec_paths())
    return {s.renderer: s.tml for s in specs if s.tml is not None}


def _tml_tokens(spans: Sequence[Any]) -> list[int]:
    out: list[int] = []
    for s in spans:
        inner = getattr(s, "span", s)
        if not hasattr(inner, "tokens"):
            raise Unsupported(f"a non-text token span ({type(inner).__name__})")
        out += [int(t) for t in inner.tokens]
    return out


class TmlRenderer:
    """A tml-renderers renderer behind cookbook's protocol (OpenAI-format dicts in, native messages out). It makes
    no extension-property claim; a tool declaration its format has no place for is not offered (SKIP)."""

    def __init__(self, oracle: Any, name: str):
        self.oracle = oracle  # a cookbook.conformance.tml.TmlOracle: the one way this project drives tml-renderers
        self.inner = oracle.renderer
        self.name = name
        self.chat = importlib.import_module("tml_renderers.chat")

    def _message_list(self, messages: Sequence[Mapping[str, Any]], weights: Sequence[bool] | None = None) -> Any:
        """The conversation in tml-renderers' own message model, by the one translation the tml oracle and the
        differential run use (:func:`cookbook.conformance.tml.to_tml_messages`): thinking parts as ``Thinking``,
        tool calls as ``StructuredToolCall``, the tool declaration after a leading system message."""
        from cookbook.conformance.tml import to_tml_messages

        tools, rest = split_tools(messages)
        trained = None if weights is None else {i for i, w in enumerate(weights) if w}
        with translating("messages to tml_renderers.chat.MessageList"):
            try:
                return to_tml_messages(rest, tools, trained)
            except SpecError as exc:  # content the translation has no native form for
                raise Unsupported(f"tml-renderers: {exc}") from exc

    def build_generation_prompt(self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None) -> list[int]:
        if role != "assistant":
            raise Unsupported("tml-renderers renders generation prompts for the assistant only")
        if prefill:
            raise Unsupported("tml-renderers' render_for_completion takes no prefill")
        spans, _parser = self._unsupported_content(lambda: self.oracle.completion(self._message_list(messages)))
        return _tml_tokens(spans)

    @staticmethod
    def _unsupported_content(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ValueError as exc:  # the renderer's own "this format has no such content" (e.g. tool declarations)
            if str(exc).startswith("Unsupported content type"):
                raise Unsupported(f"tml-renderers: {exc}") from exc
            raise

    def build_supervised_example(self, messages: Sequence[Message], train_on_what: Any = TrainOnWhat.LAST_ASSISTANT_MESSAGE) -> tuple[list[int], list[float]]:
        _tools, rest = split_tools(messages)
        mask = trained_messages(rest, train_on_what)
        if any(m and r["role"] != "assistant" for m, r in zip(mask, rest)):
            raise Unsupported("tml-renderers trains model messages only (no weights on user/system/tool messages)")
        examples = self._unsupported_content(lambda: self.oracle.sft(self._message_list(messages, mask)))
        if len(examples) != 1:
            raise Unsupported(f"render_for_sft returned {len(examples)} training examples for one conversation")
        ex = examples[0]
        return _tml_tokens(ex.input_token_spans), [float(w) for w in ex.per_token_loss_weight_unshifted]

    def get_stop_sequences(self) -> list[int] | list[str]:
        stop = self.inner.stop()
        if stop is None:
            return []
        return [stop] if isinstance(stop, str) else list(stop)

    def parse_response(self, response: Sequence[int]) -> tuple[Message, str]:
        _spans, parser = self.oracle.completion(self.chat.MessageList([]))
        try:
            parsed = list(parser.parse_tokens(list(response)))
        except Exception:  # the native parser raises on truncated or broken structure: its "malformed"
            return {"role": "assistant", "content": self.inner.tokenizer.decode(list(response))}, "malformed"
        with translating("tml-renderers' parsed messages"):
            end = [m for m in parsed if isinstance(m.content, self.chat.ModelEndSampling)]
            body = [m for m in parsed if not isinstance(m.content, self.chat.ModelEndSampling)]
            dicts = self.chat.MessageList(body).to_oss_messages() if body else []
            msg = from_openai_message(dicts[-1]) if dicts else {"role": "assistant", "content": "", "tool_calls": []}
        # a stop: the parser's end-of-sampling message, or (renderers whose parser consumes the stop token without
        # one, e.g. DeepSeekV41) the response ending in one of the renderer's own stop() tokens
        stops = {t for t in self.get_stop_sequences() if isinstance(t, int)}
        stopped = bool(end) or (bool(response) and int(response[-1]) in stops)
        return msg, ("stop_sequence" if stopped else "malformed")  # type: ignore[return-value]

    def create_conversation_prefix_with_tools(self, tools: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
        return tools_prefix(tools, system_prompt)


class _Tml(Implementation):
    def name_map(self) -> Mapping[str, Any]:
        return tml_refs()

    def native_name(self, spec_name: str) -> str:
        ref = self.name_map().get(spec_name)
        if ref is None:
            raise Unsupported(f"{self.key} has no renderer for {spec_name!r} (no tml: section in its spec)")
        args = ", ".join(f"{k}={v!r}" for k, v in ref.kwargs.items())
        return f"{ref.cls}{'.' + ref.constructor if ref.constructor else ''}({args})"

    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        from cookbook.conformance.tml import TmlOracle

        self.load()
        name = self.native_name(spec_name)  # Unsupported for a family it does not have
        ref = tml_refs()[spec_name]
        return TmlRenderer(TmlOracle(ref.cls, ref.constructor, ref.kwargs), name)


# ----------------------------------------------------------------------------------------------- pi-renderers

#: spec renderer name -> (config class in ``renderers``, its keyword arguments). PrimeIntellect renderers 0.1.12
#: have no role-colon, Gemma 3 or DeepSeek-V3.1 (thinking) renderer; ``deepseek-v3`` renders the V3 format.
PI_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3": ("Llama3RendererConfig", {}),
    "qwen3": ("Qwen3RendererConfig", {}),
    "qwen3_disable_thinking": ("Qwen3RendererConfig", {"enable_thinking": False}),
    "qwen3_5": ("Qwen35RendererConfig", {}),
    "qwen3_5_disable_thinking": ("Qwen35RendererConfig", {"enable_thinking": False}),
    "deepseekv3": ("DeepSeekV3RendererConfig", {}),
    "kimi_k2_thinking": ("KimiK2RendererConfig", {}),
    "kimi_k2": ("KimiK2RendererConfig", {"enable_thinking": False}),
    "kimi_k25": ("KimiK25RendererConfig", {}),
    "kimi_k25_disable_thinking": ("KimiK25RendererConfig", {"thinking": False}),
    "kimi_k26": ("KimiK25RendererConfig", {}),
    "kimi_k26_disable_thinking": ("KimiK25RendererConfig", {"thinking": False}),
    "nemotron3": ("Nemotron3RendererConfig", {}),
    "nemotron3_disable_thinking": ("Nemotron3RendererConfig", {"enable_thinking": False}),
    "glm": ("GLM45RendererConfig", {}),
    "gpt_oss_no_sysprompt": ("GptOssRendererConfig", {"use_system_prompt": False}),
    "gpt_oss_low_reasoning": ("GptOssRendererConfig", {"reasoning_effort": "low"}),
    "gpt_oss_medium_reasoning": ("GptOssRendererConfig", {"reasoning_effort": "medium"}),
    "gpt_oss_high_reasoning": ("GptOssRendererConfig", {"reasoning_effort": "high"}),
}


class PiRenderer:
    """A PrimeIntellect renderer behind cookbook's protocol. Termination: the response ends with one of
    ``get_stop_token_ids()`` -> ``stop_sequence``, else ``malformed`` (the renderer reports none itself)."""

    def __init__(self, inner: Any, name: str, base: Any, wrap_tools: bool = True):
        self.inner = inner
        self.name = name
        self.base = base
        self.wrap_tools = wrap_tools
        self.has_extension_property = bool(getattr(inner, "is_prefix_stable", False))

    def _split(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]], list[Mapping[str, Any]]]:
        tools, rest = split_tools(messages)
        with translating("messages to OpenAI-format dicts"):
            specs = openai_tools(tools) if self.wrap_tools else [dict(t) for t in tools]
            return (specs or None), [openai_message(m, "object") for m in rest], rest

    def build_generation_prompt(self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None) -> list[int]:
        if role != "assistant":
            raise Unsupported("PrimeIntellect renderers render generation prompts for the assistant only")
        if prefill:
            raise Unsupported("PrimeIntellect renderers take no prefill")
        tools, dicts, _ = self._split(messages)
        return [int(t) for t in self.inner.render_ids(dicts, tools=tools, add_generation_prompt=True)]

    def build_supervised_example(self, messages: Sequence[Message], train_on_what: Any = TrainOnWhat.LAST_ASSISTANT_MESSAGE) -> tuple[list[int], list[float]]:
        tools, dicts, rest = self._split(messages)
        mask = trained_messages(rest, train_on_what)
        sample = self.base.build_training_sample(self.inner, dicts, tools=tools, message_loss_mask=mask)
        return [int(t) for t in sample.token_ids], [float(w) for w in sample.loss_mask]

    def get_stop_sequences(self) -> list[int] | list[str]:
        return [int(t) for t in self.inner.get_stop_token_ids()]

    def parse_response(self, response: Sequence[int]) -> tuple[Message, str]:
        r = self.inner.parse_response(list(response))
        stops = set(self.get_stop_sequences())
        with translating("PrimeIntellect's ParsedResponse"):
            ok = [tc for tc in r.tool_calls if str(getattr(tc.status, "value", tc.status)) == "ok"]
            bad = [tc for tc in r.tool_calls if tc not in ok]
            d = {
                "role": "assistant",
                "content": r.content or "",
                "reasoning_content": r.reasoning_content,
                "tool_calls": [{"id": tc.id, "function": {"name": tc.name, "arguments": tc.arguments if tc.arguments is not None else {}}} for tc in ok],
                "unparsed_tool_calls": [{"raw_text": tc.raw, "error": str(tc.status)} for tc in bad],
            }
            msg = from_openai_message(d)
        term = "stop_sequence" if response and int(response[-1]) in stops else "malformed"
        return msg, term

    def create_conversation_prefix_with_tools(self, tools: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
        return tools_prefix(tools, system_prompt)


def _harmony_vocab_offline(tokenizer: Any) -> None:
    """openai-harmony downloads its o200k vocabulary unless ``TIKTOKEN_ENCODINGS_BASE`` names a folder holding it;
    the provisioned gpt-oss tokenizer folder ships one (``harmony_vocab/``)."""
    import os

    folder = Path(str(getattr(tokenizer, "name_or_path", ""))) / "harmony_vocab"
    if "TIKTOKEN_ENCODINGS_BASE" not in os.environ and (folder / "o200k_base.tiktoken").exists():
        os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(folder)


class _Pi(Implementation):
    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        base = self.load()
        if spec_name.startswith("gpt_oss"):
            _harmony_vocab_offline(tokenizer)
        self.native_name(spec_name)
        cfg_name, kwargs = PI_NAMES[spec_name]
        cfg = getattr(base, cfg_name)(**kwargs)
        wrap = spec is None or spec.oracle.messages.tools == "openai"  # tools as the spec's oracle passes them
        return PiRenderer(base.create_renderer(tokenizer, cfg), f"{cfg_name}({kwargs})", base, wrap)


# ----------------------------------------------------------------------------------------------- hf-template


class TemplateRenderer:
    """Token-in/token-out over the tokenizer's own ``apply_chat_template`` (with the spec's template kwargs and
    message options). Supervised weights: the template's ``{% generation %}`` marks (``return_assistant_tokens_mask``)
    where it has them; otherwise each selected message's span is what rendering ``messages[:i+1]`` adds after the
    generation prompt of ``messages[:i]``, less trailing whitespace-only tokens (the separator after the turn), which
    needs those renders to be prefixes of the full render. Parsing and stop
    sequences are not part of a chat template (SKIP). A template makes no extension-property claim."""

    def __init__(self, tokenizer: Any, spec: Any):
        from cookbook.conformance.oracle import TemplateOracle

        if not getattr(tokenizer, "chat_template", None):
            raise Unsupported("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.spec = spec
        self.name = f"apply_chat_template({getattr(tokenizer, 'name_or_path', '')})"
        self.oracle = TemplateOracle(tokenizer, dict(spec.oracle.template_kwargs) if spec is not None else {})

    def _render(self, messages: Sequence[Mapping[str, Any]], generation: bool) -> list[int]:
        from cookbook.conformance.spec import to_template_messages, to_template_tools

        tools, rest = split_tools(messages)
        opts = self.spec.oracle.messages if self.spec is not None else None
        with translating("messages to chat-template input"):
            msgs = to_template_messages(rest, opts)
            tls = to_template_tools(tools, opts) or None
        return list(self.oracle.render(msgs, generation, tls).tokens)

    def build_generation_prompt(self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None) -> list[int]:
        if role != "assistant":
            raise Unsupported("apply_chat_template's add_generation_prompt opens an assistant turn only")
        if prefill:
            raise Unsupported("a chat template has no prefill")
        return self._render(messages, True)

    def _marks(self, messages: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """The template's ``{% generation %}`` marks over the full render, or None when it has none."""
        import re

        from cookbook.conformance.spec import to_template_messages, to_template_tools

        if not re.search(r"{%-?\s*generation\s*-?%}", self.tokenizer.chat_template or ""):
            return None
        tools, rest = split_tools(messages)
        opts = self.spec.oracle.messages if self.spec is not None else None
        out = self.tokenizer.apply_chat_template(
            to_template_messages(rest, opts), tools=to_template_tools(tools, opts) or None, tokenize=True,
            return_dict=True, return_assistant_tokens_mask=True, add_generation_prompt=False,
            **dict(self.oracle.template_kwargs),
        )
        return [float(x) for x in out["assistant_masks"]]

    def build_supervised_example(self, messages: Sequence[Message], train_on_what: Any = TrainOnWhat.LAST_ASSISTANT_MESSAGE) -> tuple[list[int], list[float]]:
        _tools, rest = split_tools(messages)
        prefix = [m for m in messages if m.get("role") == TOOLS_ROLE]
        mask = trained_messages(rest, train_on_what)
        full = self._render(messages, False)
        if TrainOnWhat(train_on_what) == TrainOnWhat.ALL_ASSISTANT_MESSAGES:
            marks = self._marks(messages)
            if marks is not None and len(marks) == len(full):
                return full, marks
        weights = [0.0] * len(full)
        for i, on in enumerate(mask):
            if not on:
                continue
            if rest[i]["role"] != "assistant":
                raise Unsupported("a chat template marks assistant spans only")
            start = self._render([*prefix, *rest[:i]], True)
            upto = self._render([*prefix, *rest[: i + 1]], False)
            if full[: len(start)] != start or full[: len(upto)] != upto or len(upto) < len(start):
                raise Unsupported(
                    "the template marks no assistant spans and its prefix renders are not prefixes of the full "
                    "render (it rewrites history), so trained spans cannot be derived"
                )
            end = len(upto)
            while end > len(start) and not self.tokenizer.decode([full[end - 1]]).strip():
                end -= 1  # the separator after the turn (e.g. "\n" after <|im_end|>) is the template's, not sampled
            for k in range(len(start), end):
                weights[k] = 1.0
        return full, weights

    def get_stop_sequences(self) -> list[int] | list[str]:
        raise Unsupported("a chat template does not define stop sequences")

    def parse_response(self, response: Sequence[int]) -> tuple[Message, str]:
        raise Unsupported("a chat template has no response parser")

    def create_conversation_prefix_with_tools(self, tools: Sequence[Mapping[str, Any]], system_prompt: str | None = None) -> list[Message]:
        return tools_prefix(tools, system_prompt)


class _HfTemplate(Implementation):
    def offers(self, spec_names: Sequence[str]) -> list[str]:
        from cookbook.conformance.spec import load_spec, spec_path_for

        out = []
        for n in spec_names:
            p = spec_path_for(n)
            if p.exists() and load_spec(p).oracle.kind == "chat_template":
                out.append(n)
        return out

    def make(self, spec_name: str, tokenizer: Any, spec: Any = None) -> Any:
        if spec is not None and spec.oracle.kind != "chat_template":
            raise Unsupported(f"the spec of {spec_name} has no chat-template oracle ({spec.oracle.reason})")
        return TemplateRenderer(tokenizer, spec)


# ----------------------------------------------------------------------------------------------- registry

IMPLEMENTATIONS: dict[str, Implementation] = {
    i.key: i
    for i in (
        _Cookbook("cookbook", "cookbook's own renderers"),
        _TinkerCookbook("tinker-cookbook", "tinker-cookbook 0.6.1 renderers", "tinker_cookbook.renderers",
                        install=TINKER_COOKBOOK_PIP),
        _Tml("tml-renderers", "Thinking Machines' tml-renderers 0.2.1", "tml_renderers.renderers",
             install="tml-renderers==0.2.1"),
        _Pi("pi-renderers", "PrimeIntellect renderers 0.1.12", "renderers", PI_NAMES, install="renderers==0.1.12"),
        _HfTemplate("hf-template", "the model's own chat template (apply_chat_template)", "transformers",
                    install="transformers"),
    )
}


def get_implementation(key: str) -> Implementation:
    """An implementation by ``--impl`` key, or a user's ``module:factory``."""
    if key in IMPLEMENTATIONS:
        return IMPLEMENTATIONS[key]
    if ":" in key:
        return UserFactory(key, f"{key} (a user's renderer factory)", ref=key)
    raise ConfigurationError(
        f"--impl: unknown implementation {key!r}; use one of {', '.join(IMPLEMENTATIONS)} or module:factory"
    )
