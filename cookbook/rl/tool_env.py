"""A multi-turn tool-use environment: arithmetic questions answered with a local calculator tool.

Episode (one :class:`CalculatorEnv`, single use):

1. Observation 0: the tool declaration (the renderer's ``create_conversation_prefix_with_tools`` system
   message for :data:`CALCULATOR`) and the question ``What is {x} {op} {y}?`` as a generation prompt.
2. Each sampled turn is parsed with the renderer (its own tool-call format). A turn with well-formed
   ``calculator`` calls (and turns left) runs each call locally (:func:`calculate`), appends the parsed
   assistant message and one ``{"role": "tool", "content": result}`` message per call, and the next
   observation is the generation prompt of the whole conversation. With a renderer that has the extension
   property (``qwen3_instruct``; the toy ``cookbook/tiny-chat-tools`` is byte-level, so a canonically
   written call re-renders to the sampled tokens) that prompt *extends* the previous prompt + the sampled
   tokens, and :func:`cookbook.rl.data.trajectory_to_data` merges the whole episode into one datum.
3. A turn without tool calls is the answer and ends the episode; so does a turn that does not end with
   the stop sequence, an unparsed tool call, or a call on the last allowed turn (``max_turns``).

Reward (at the final turn; earlier turns get 0)::

    reward = correct + format_coef · (well_formed - 1) + tool_coef · (used_tool - 1)

``correct``: the last integer of the answer equals the exact result; ``well_formed``: every turn ended with
the stop sequence, no tool call was unparsable, and the episode did not run out of turns; ``used_tool``: at
least one calculator call returned a result (an invalid expression or an unknown tool returns an
``error: ...`` result the model sees, and does not count) *and* an answer followed (calling until the turns
run out, or a malformed turn after a call, is not tool use: it earns the tool penalty too). Metrics (final turn): ``correct``, ``format``, ``used_tool``, ``tool_calls``,
``turns``; each tool-calling turn logs ``tool_call_ok``.
"""

from __future__ import annotations

import ast
import functools
import json
import operator
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cookbook.grading import last_integer
from cookbook.renderers.base import Message, ParseTermination, RendererProtocol, ToolCall, ToolSpec, text_of
from cookbook.rl.envs import ProblemGroupBuilder
from cookbook.rl.types import Action, Env, EnvGroupBuilder, StepResult, StopCondition

CALCULATOR: ToolSpec = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression of integers with + - * and parentheses.",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 12 * (3 + 4)"}},
        "required": ["expression"],
    },
}
SYSTEM_PROMPT = "Use the calculator tool, then answer with the number only."

_OPS: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
}
MAX_ABS = 10**12


def calculate(expression: str) -> str:
    """The calculator tool: integers, ``+ - *``, unary minus and parentheses; anything else is an error
    *result* (``"error: ..."``) the model sees, never an exception."""

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            v = _OPS[type(node.op)](ev(node.left), ev(node.right))
            if abs(v) > MAX_ABS:
                raise ValueError("result too large")
            return v
        raise ValueError(f"unsupported expression element {type(node).__name__}")

    if not isinstance(expression, str) or len(expression) > 200:
        return "error: expression must be a string of at most 200 characters"
    try:
        return str(ev(ast.parse(expression, mode="eval")))
    except (SyntaxError, ValueError, RecursionError) as exc:
        return f"error: {exc}"


def run_tool_call(call: ToolCall) -> tuple[str, bool]:
    """(result text, ok): only ``calculator`` with a string ``expression`` is a valid call."""
    if call.name != CALCULATOR["name"]:
        return f"error: unknown tool {call.name!r}; the only tool is {CALCULATOR['name']!r}", False
    try:
        args = json.loads(call.arguments)
    except json.JSONDecodeError:
        return "error: arguments are not JSON", False
    if not isinstance(args, dict) or not isinstance(args.get("expression"), str):
        return "error: calculator needs a string 'expression'", False
    result = calculate(args["expression"])
    return result, not result.startswith("error")


def question(x: int, op: str, y: int) -> str:
    return f"What is {x} {op} {y}?"


def conversation_prefix(renderer: Any) -> list[Message]:
    make = getattr(renderer, "create_conversation_prefix_with_tools", None)
    if make is None or not getattr(renderer, "supports_tools", False):
        raise ValueError(f"renderer {getattr(renderer, 'name', renderer)!r} has no tool-calling format; "
                         "use a renderer with tools (e.g. qwen3_instruct)")
    return list(make([CALCULATOR], SYSTEM_PROMPT))


class CalculatorEnv(Env):
    def __init__(self, renderer: RendererProtocol, x: int, op: str, y: int, max_turns: int = 3,
                 format_coef: float = 0.1, tool_coef: float = 0.5):
        self.renderer = renderer
        self.answer = int(calculate(f"{x} {op} {y}"))
        self.messages: list[Message] = [*conversation_prefix(renderer), {"role": "user", "content": question(x, op, y)}]
        self.max_turns = max_turns
        self.format_coef, self.tool_coef = format_coef, tool_coef
        self.turn = 0
        self.well_formed = True
        self.calls = 0
        self.ok_calls = 0

    async def initial_observation(self) -> tuple[Any, StopCondition]:
        return self.renderer.build_generation_prompt(self.messages), self.renderer.get_stop_sequences()

    def _done(self, correct: float, answered: bool = False) -> StepResult:
        from tinker import ModelInput

        used = float(self.ok_calls > 0 and answered)
        fmt = float(self.well_formed)
        reward = correct + self.format_coef * (fmt - 1.0) + self.tool_coef * (used - 1.0)
        return StepResult(reward, True, ModelInput.empty(), self.renderer.get_stop_sequences(), {
            "correct": correct, "format": fmt, "used_tool": used, "tool_calls": float(self.calls),
            "turns": float(self.turn),
        })

    async def step(self, action: Action) -> StepResult:
        self.turn += 1
        msg, term = self.renderer.parse_response(action)
        if term is not ParseTermination.STOP_SEQUENCE or msg.get("unparsed_tool_calls"):
            self.well_formed = False
            return self._done(0.0)
        calls = msg.get("tool_calls") or []
        if not calls:
            return self._done(float(last_integer(text_of(msg["content"])) == self.answer), answered=True)
        if self.turn >= self.max_turns:
            self.well_formed = False
            return self._done(0.0)
        self.messages.append(msg)
        ok_all = True
        for call in calls:
            result, ok = run_tool_call(call)
            self.calls += 1
            self.ok_calls += int(ok)
            ok_all = ok_all and ok
            tool_msg: Message = {"role": "tool", "content": result}
            if call.id:
                tool_msg["tool_call_id"] = call.id
            self.messages.append(tool_msg)
        return StepResult(0.0, False, self.renderer.build_generation_prompt(self.messages),
                          self.renderer.get_stop_sequences(), {"tool_call_ok": float(ok_all)})


def worked_example(renderer: Any, x: int, op: str, y: int) -> list[Message]:
    """The conversation a good policy produces (for an SFT warm-up): one calculator call, then the answer."""
    expr = f"{x} {op} {y}"
    call = ToolCall(CALCULATOR["name"], json.dumps({"expression": expr}))
    return [*conversation_prefix(renderer), {"role": "user", "content": question(x, op, y)},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": calculate(expr)},
            {"role": "assistant", "content": calculate(expr)}]


def draw_problem(rng: random.Random, max_operand: int, ops: Sequence[str]) -> tuple[int, str, int]:
    return rng.randint(0, max_operand), rng.choice(list(ops)), rng.randint(0, max_operand)


@dataclass
class CalculatorDataset:
    """Batch ``i``: ``batch_size`` problems drawn with ``random.Random(f"{seed}:{i}")``, ``group_size``
    rollouts each. ``n_problems > 0``: the problems come from a fixed pool of that many, drawn once with
    ``random.Random(f"{seed}:pool")`` (batch ``i`` picks from it with the same per-batch generator)."""

    renderer: RendererProtocol
    batch_size: int
    group_size: int
    n_batches: int
    max_operand: int = 99
    ops: tuple[str, ...] = ("+", "-", "*")
    max_turns: int = 3
    seed: int = 0
    n_problems: int = 0
    tool_coef: float = 0.5

    def __len__(self) -> int:
        return self.n_batches

    def pool(self) -> list[tuple[int, str, int]]:
        """The fixed problem pool (empty when ``n_problems`` is 0: every group draws a new problem)."""
        rng = random.Random(f"{self.seed}:pool")
        return [draw_problem(rng, self.max_operand, self.ops) for _ in range(self.n_problems)]

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        rng = random.Random(f"{self.seed}:{index}")
        pool = self.pool()
        out: list[EnvGroupBuilder] = []
        for _ in range(self.batch_size):
            x, op, y = rng.choice(pool) if pool else draw_problem(rng, self.max_operand, self.ops)
            thunk = functools.partial(CalculatorEnv, self.renderer, x, op, y, self.max_turns, tool_coef=self.tool_coef)
            out.append(ProblemGroupBuilder(thunk, self.group_size, ["calculator"]))
        return out
