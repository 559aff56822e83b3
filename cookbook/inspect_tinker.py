"""inspect-ai evaluations against a Tinker sampling client (the ``inspect`` extra: ``inspect-ai`` from PyPI).

:class:`TinkerModelAPI` is an inspect-ai ``ModelAPI`` whose ``generate`` renders inspect's chat messages with a
cookbook renderer, samples once from a ``tinker.SamplingClient`` (``await sample(...)``, the renderer's stop
sequences, ``max_tokens`` / ``temperature`` / ``seed`` from inspect's ``GenerateConfig``), and parses the
completion back with the renderer: text, reasoning and tool calls (``tools`` offered by the task are declared
with the renderer's ``create_conversation_prefix_with_tools``). It works the same on real Tinker and on the
mock, so a task runs offline::

    from cookbook.inspect_tinker import tinker_model
    model = tinker_model(sampling_client, renderer, "cookbook/tiny-chat", max_tokens=16)
    inspect_ai.eval(task, model=model, log_dir="runs/x/inspect")

Stop reasons: the renderer's stop sequence or EOS -> ``stop`` (``tool_calls`` when it called tools), a
truncated completion -> ``max_tokens``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cookbook.errors import ConfigurationError
from cookbook.renderers.base import Message, ParseTermination, ToolCall, text_of, thinking_of

if TYPE_CHECKING:
    from inspect_ai.model import ChatMessage, Model
    from inspect_ai.tool import ToolInfo


def to_messages(input: Sequence[ChatMessage], tools: Sequence[ToolInfo], renderer: Any) -> list[Message]:
    """inspect-ai chat messages (+ offered tools) -> cookbook messages for ``renderer``."""
    out: list[Message] = []
    system = [m.text for m in input if m.role == "system"]
    if tools:
        specs = [{"name": t.name, "description": t.description,
                  "parameters": t.parameters.model_dump(exclude_none=True)} for t in tools]
        out.extend(renderer.create_conversation_prefix_with_tools(specs, "\n\n".join(system) or None))
    elif system:
        out.append({"role": "system", "content": "\n\n".join(system)})
    for m in input:
        if m.role == "system":
            continue
        msg: Message = {"role": m.role, "content": m.text}
        if m.role == "assistant" and m.tool_calls:
            msg["tool_calls"] = [ToolCall(c.function, json.dumps(c.arguments, ensure_ascii=False), c.id)
                                 for c in m.tool_calls]
        if m.role == "tool" and m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


@functools.cache
def model_api_class() -> type:
    """The ``TinkerModelAPI`` class (registered with inspect-ai as ``tinker`` on first use); importing this
    module does not need inspect-ai."""
    try:
        from inspect_ai.model import (
            ChatCompletionChoice,
            ChatMessageAssistant,
            GenerateConfig,
            ModelAPI,
            ModelOutput,
            ModelUsage,
            StopReason,
            modelapi,
        )
        from inspect_ai.tool import ToolCall as InspectToolCall
        from inspect_ai.tool import ToolChoice
    except ImportError as exc:
        raise ConfigurationError(
            "inspect-ai is not installed; install the extra (pip install 'cookbook[inspect]')"
        ) from exc

    @modelapi(name="tinker")
    class TinkerModelAPI(ModelAPI):
        """inspect-ai model provider backed by a Tinker ``SamplingClient`` and a cookbook renderer."""

        def __init__(self, model_name: str, sampling_client: Any, renderer: Any, max_tokens: int = 256,
                     temperature: float = 1.0, config: GenerateConfig | None = None) -> None:
            super().__init__(model_name=model_name, config=config if config is not None else GenerateConfig())
            self.sampling_client = sampling_client
            self.renderer = renderer
            self.default_max_tokens = max_tokens
            self.default_temperature = temperature

        def max_tokens(self) -> int | None:
            return self.default_max_tokens

        async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                           config: GenerateConfig) -> ModelOutput:
            import tinker

            prompt = self.renderer.build_generation_prompt(to_messages(input, tools, self.renderer))
            params = tinker.SamplingParams(
                max_tokens=config.max_tokens or self.default_max_tokens,
                temperature=self.default_temperature if config.temperature is None else config.temperature,
                stop=self.renderer.get_stop_sequences(), seed=config.seed,
            )
            result = await self.sampling_client.sample(prompt=prompt, num_samples=1, sampling_params=params)
            tokens = [int(t) for t in result.sequences[0].tokens]
            msg, term = self.renderer.parse_response(tokens)
            calls = [InspectToolCall(id=c.id or f"call_{i}", function=c.name, arguments=c.arguments_dict())
                     for i, c in enumerate(msg.get("tool_calls") or [])]
            reasoning = "\n".join(thinking_of(msg["content"])) or None
            assistant = ChatMessageAssistant(content=text_of(msg["content"]), tool_calls=calls or None,
                                             model=self.model_name, source="generate")
            if reasoning:
                assistant.metadata = {"reasoning": reasoning}
            clean = term in (ParseTermination.STOP_SEQUENCE, ParseTermination.EOS)
            stop: StopReason = ("tool_calls" if calls else "stop") if clean else "max_tokens"
            usage = ModelUsage(input_tokens=prompt.length, output_tokens=len(tokens),
                               total_tokens=prompt.length + len(tokens))
            return ModelOutput(model=self.model_name, choices=[ChatCompletionChoice(message=assistant, stop_reason=stop)],
                               usage=usage)

    return TinkerModelAPI


def tinker_model(sampling_client: Any, renderer: Any, model_name: str = "tinker", max_tokens: int = 256,
                 temperature: float = 1.0, **generate: Any) -> Model:
    """An inspect-ai ``Model`` to pass as ``inspect_ai.eval(task, model=...)``."""
    api_class = model_api_class()
    from inspect_ai.model import GenerateConfig, Model

    config = GenerateConfig(**generate)
    return Model(api_class(model_name, sampling_client, renderer, max_tokens, temperature, config), config)
