"""Renderer registry: ``get_renderer(name, tokenizer)``; custom names shadow built-ins."""

from __future__ import annotations

import importlib
from typing import Any

from cookbook.errors import ConfigurationError
from cookbook.renderers.base import RendererFactory, RendererProtocol

# name -> "module:attribute" of a factory taking the tokenizer
_BUILTIN: dict[str, str] = {
    "role_colon": "cookbook.renderers.role_colon:RoleColonRenderer",
    "llama3": "cookbook.renderers.llama3:Llama3Renderer",
    "qwen3": "cookbook.renderers.qwen3:Qwen3Renderer",
    "qwen3_disable_thinking": "cookbook.renderers.qwen3:Qwen3DisableThinkingRenderer",
    "qwen3_instruct": "cookbook.renderers.qwen3:Qwen3InstructRenderer",
    "deepseekv3": "cookbook.renderers.deepseek_v3:DeepSeekV3Renderer",
    "deepseekv3_disable_thinking": "cookbook.renderers.deepseek_v3:DeepSeekV3DisableThinkingRenderer",
    "deepseekv3_thinking": "cookbook.renderers.deepseek_v3:DeepSeekV3ThinkingRenderer",
    "gpt_oss_low_reasoning": "cookbook.renderers.gpt_oss:GptOssLowReasoningRenderer",
    "gpt_oss_medium_reasoning": "cookbook.renderers.gpt_oss:GptOssMediumReasoningRenderer",
    "gpt_oss_high_reasoning": "cookbook.renderers.gpt_oss:GptOssHighReasoningRenderer",
    "gpt_oss_no_sysprompt": "cookbook.renderers.gpt_oss:GptOssNoSysPromptRenderer",
    "gemma3": "cookbook.renderers.gemma3:Gemma3Renderer",
    "qwen3_5": "cookbook.renderers.qwen3_5:Qwen3_5Renderer",
    "qwen3_5_disable_thinking": "cookbook.renderers.qwen3_5:Qwen3_5DisableThinkingRenderer",
    "nemotron3": "cookbook.renderers.nemotron3:Nemotron3Renderer",
    "nemotron3_disable_thinking": "cookbook.renderers.nemotron3:Nemotron3DisableThinkingRenderer",
    "kimi_k2": "cookbook.renderers.kimi_k2:KimiK2Renderer",
    "kimi_k2_thinking": "cookbook.renderers.kimi_k2:KimiK2ThinkingRenderer",
    "glm": "cookbook.renderers.glm:GlmRenderer",
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
        factory = _CUSTOM[name]
    elif name in _BUILTIN:
        factory = load_factory(_BUILTIN[name])
    elif ":" in name:
        factory = load_factory(name)
    else:
        raise ConfigurationError(
            f"unknown renderer {name!r}. Registered: {', '.join(registered_renderer_names())}. "
            "Register your own with cookbook.renderers.register_renderer(name, factory) or pass 'module:factory'."
        )
    renderer = factory(tokenizer)
    if not hasattr(renderer, "name") or getattr(renderer, "name", None) in (None, "base"):
        try:
            renderer.name = name  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return renderer
