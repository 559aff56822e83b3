"""Renderer registry: ``get_renderer(name, tokenizer)``; custom names shadow built-ins."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cookbook.errors import ConfigurationError
from cookbook.renderers.base import RendererFactory, RendererProtocol


@dataclass(frozen=True)
class BuiltinRenderer:
    """A registered name: the family's renderer class (``module:Class``) and the options it is built with.
    A variant is an entry, not a class: its name is the registry key, its difference the options."""

    factory: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _entry(factory: str, **options: Any) -> BuiltinRenderer:
    return BuiltinRenderer(factory, options)


_QWEN3 = "cookbook.renderers.qwen3:Qwen3Renderer"
_QWEN3_5 = "cookbook.renderers.qwen3_5:Qwen3_5Renderer"
#: the Qwen3.8 template's changes to the Qwen3.5 one (reasoning_effort is per entry)
_QWEN3_8: dict[str, Any] = {"preserve_thinking": True, "omit_empty_system": True, "json_arguments": True, "inline_thinking": False}
_DEEPSEEK_V3 = "cookbook.renderers.deepseek_v3:DeepSeekV3Renderer"
_GPT_OSS = "cookbook.renderers.gpt_oss:GptOssRenderer"
_NEMOTRON3 = "cookbook.renderers.nemotron3:Nemotron3Renderer"
_KIMI_K2 = "cookbook.renderers.kimi_k2:KimiK2Renderer"
_DEEPSEEK_V4_1 = "cookbook.renderers.deepseek_v4_1:DeepSeekV41Renderer"
_GLM = "cookbook.renderers.glm:GlmRenderer"

_BUILTIN: dict[str, BuiltinRenderer] = {
    "role_colon": _entry("cookbook.renderers.role_colon:RoleColonRenderer"),
    "llama3": _entry("cookbook.renderers.llama3:Llama3Renderer"),
    "qwen3": _entry(_QWEN3),
    "qwen3_disable_thinking": _entry(_QWEN3, enable_thinking=False),
    "qwen3_instruct": _entry(_QWEN3, instruct=True),
    "qwen3_vl_instruct": _entry(_QWEN3, instruct=True, vision=True),
    "qwen3_vl": _entry(_QWEN3, vision=True, think_opening=True),
    "deepseekv3": _entry(_DEEPSEEK_V3),
    "deepseekv3_disable_thinking": _entry(_DEEPSEEK_V3),  # the same chat mode under tinker-cookbook's other name
    "deepseekv3_thinking": _entry(_DEEPSEEK_V3, thinking=True),
    "deepseekv4_1": _entry(_DEEPSEEK_V4_1, reasoning_effort="high"),
    "deepseekv4_1_low_reasoning": _entry(_DEEPSEEK_V4_1, reasoning_effort="low"),
    "deepseekv4_1_max_reasoning": _entry(_DEEPSEEK_V4_1, reasoning_effort="max"),
    "deepseekv4_1_disable_thinking": _entry(_DEEPSEEK_V4_1, reasoning_effort=None),
    "deepseekv4_1_preserve_thinking": _entry(_DEEPSEEK_V4_1, reasoning_effort="high", preserve_thinking=True),
    "gpt_oss_low_reasoning": _entry(_GPT_OSS, reasoning_effort="low"),
    "gpt_oss_medium_reasoning": _entry(_GPT_OSS, reasoning_effort="medium"),
    "gpt_oss_high_reasoning": _entry(_GPT_OSS, reasoning_effort="high"),
    "gpt_oss_no_sysprompt": _entry(_GPT_OSS, reasoning_effort=None),
    "gemma3": _entry("cookbook.renderers.gemma3:Gemma3Renderer"),
    "qwen3_5": _entry(_QWEN3_5),
    "qwen3_5_disable_thinking": _entry(_QWEN3_5, enable_thinking=False),
    "qwen3_5_preserve_thinking": _entry(_QWEN3_5, bare_history_thinking=True),
    "qwen3_8_xhigh_reasoning": _entry(_QWEN3_5, reasoning_effort="xhigh", **_QWEN3_8),
    "qwen3_8_medium_reasoning": _entry(_QWEN3_5, reasoning_effort="medium", **_QWEN3_8),
    "qwen3_8_low_reasoning": _entry(_QWEN3_5, reasoning_effort="low", **_QWEN3_8),
    "qwen3_8_disable_thinking": _entry(_QWEN3_5, enable_thinking=False, **_QWEN3_8),
    "nemotron3": _entry(_NEMOTRON3),
    "nemotron3_disable_thinking": _entry(_NEMOTRON3, enable_thinking=False),
    "nemotron3_preserve_thinking": _entry(_NEMOTRON3, strip_thinking_from_history=False),
    "nemotron3_low_thinking": _entry(_NEMOTRON3, reasoning_effort="low"),
    "nemotron3_ultra": _entry(_NEMOTRON3, ultra=True),
    "nemotron3_ultra_disable_thinking": _entry(_NEMOTRON3, ultra=True, enable_thinking=False),
    "nemotron3_ultra_medium_thinking": _entry(_NEMOTRON3, ultra=True, reasoning_effort="medium"),
    "nemotron3_ultra_preserve_thinking": _entry(_NEMOTRON3, ultra=True, strip_thinking_from_history=False),
    "kimi_k2": _entry(_KIMI_K2),
    "kimi_k2_thinking": _entry(_KIMI_K2, thinking=True),
    "kimi_k25": _entry(_KIMI_K2, k25=True),
    "kimi_k25_disable_thinking": _entry(_KIMI_K2, k25=True, enable_thinking=False),
    # K2.6 renders as K2.5 (tinker-cookbook dispatches both names to its K2.5 classes), plus preserve_thinking
    "kimi_k26": _entry(_KIMI_K2, k25=True),
    "kimi_k26_disable_thinking": _entry(_KIMI_K2, k25=True, enable_thinking=False),
    "kimi_k26_preserve_thinking": _entry(_KIMI_K2, k25=True, preserve_thinking=True),
    "glm": _entry(_GLM),
    "glm5_3_max_reasoning": _entry(_GLM, reasoning_effort="max"),
    "glm5_3_high_reasoning": _entry(_GLM, reasoning_effort="high"),
    "glm5_3_low_reasoning": _entry(_GLM, reasoning_effort="low"),
    "tml_v0": _entry("cookbook.renderers.tml_v0:TmlV0Renderer"),
}
_CUSTOM: dict[str, RendererFactory] = {}


def register_renderer(name: str, factory: RendererFactory) -> None:
    """Register ``factory(tokenizer) -> renderer`` under ``name`` (shadows a built-in of the same name)."""
    _CUSTOM[name] = factory


def unregister_renderer(name: str) -> None:
    _CUSTOM.pop(name, None)


def builtin_renderer_names() -> list[str]:
    return sorted(_BUILTIN)


def registered_renderer_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_CUSTOM))


def load_factory(ref: str) -> RendererFactory:
    """``module:attribute`` -> the factory object."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected 'module:factory', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} (from {ref!r}): {exc}") from exc
    try:
        factory: RendererFactory = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from exc
    return factory


def get_renderer(name: str, tokenizer: Any) -> RendererProtocol:
    """A renderer by registered name (or ``module:factory``) for ``tokenizer``.

    ``tokenizer`` may be a tokenizer object, or a model name / local folder for
    :func:`cookbook.tokenizers.get_tokenizer`.
    """
    if isinstance(tokenizer, str):
        from cookbook.tokenizers import get_tokenizer

        tokenizer = get_tokenizer(tokenizer)
    if name in _CUSTOM:
        renderer = _CUSTOM[name](tokenizer)
    elif name in _BUILTIN:
        entry = _BUILTIN[name]
        renderer = load_factory(entry.factory)(tokenizer, **entry.options)  # type: ignore[call-arg]
        renderer.name = name  # type: ignore[attr-defined]
        return renderer
    elif ":" in name:
        renderer = load_factory(name)(tokenizer)
    else:
        raise ConfigurationError(
            f"unknown renderer {name!r}. Registered: {', '.join(registered_renderer_names())}. "
            "Register your own with cookbook.renderers.register_renderer(name, factory) or pass 'module:factory'."
        )
    if not hasattr(renderer, "name") or getattr(renderer, "name", None) in (None, "base"):
        try:
            renderer.name = name  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return renderer


def builtin_renderer(name: str) -> BuiltinRenderer:
    """The built-in entry of ``name`` (its renderer class and options)."""
    try:
        return _BUILTIN[name]
    except KeyError:
        raise ConfigurationError(
            f"no built-in renderer {name!r}; built-in: {', '.join(builtin_renderer_names())}"
        ) from None
