"""Supervised datums: conversation -> renderer -> (shift, truncate, weights) -> ``tinker.Datum``.

Semantics (tinker-cookbook 0.6.1 ``datum_from_model_input_weights``):

1. Truncate from the right to ``max_length`` tokens (``None``: no limit).
2. Shift: ``model_input = tokens[:-1]``, ``target_tokens = tokens[1:]``, ``weights = weights[1:]`` — position
   ``i`` of the input predicts ``target_tokens[i]`` and carries the weight of that target token.
3. ``reduction="mean"`` divides the weights by their sum when it is positive, so every example contributes
   the mean NLL of its trained tokens (Tinker itself *sums* the loss); ``"none"`` keeps raw weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cookbook.errors import DataError
from cookbook.renderers.base import Message, RendererProtocol, ToolCall, TrainOnWhat, model_input_tokens

Reduction = Literal["mean", "none"]


def datum_from_tokens_weights(
    tokens: Sequence[int],
    weights: Sequence[float] | np.ndarray,
    max_length: int | None = None,
    reduction: Reduction = "mean",
) -> Any:
    """A cross-entropy ``tinker.Datum`` from a full token sequence and one weight per token."""
    import tinker

    toks = [int(t) for t in tokens]
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != len(toks):
        raise DataError(f"need one weight per token: {len(toks)} tokens, weights of shape {w.shape}")
    if max_length is not None:
        if max_length < 2:
            raise DataError(f"max_length must be >= 2 to leave one target token, got {max_length}")
        toks, w = toks[:max_length], w[:max_length]
    if len(toks) < 2:
        raise DataError(f"a supervised example needs at least 2 tokens after truncation, got {len(toks)}")
    if not np.all(np.isfinite(w)):
        raise DataError("weights contain NaN or inf")
    target_w = w[1:]
    target_w = _reduced(target_w, reduction)
    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(toks[:-1]),
        loss_fn_inputs={
            "target_tokens": tinker.TensorData(data=toks[1:], dtype="int64", shape=[len(toks) - 1]),
            "weights": tinker.TensorData(
                data=[float(x) for x in target_w.astype(np.float32)], dtype="float32", shape=[len(toks) - 1]
            ),
        },
    )


def conversation_to_datum(
    messages: Sequence[Message],
    renderer: RendererProtocol,
    max_length: int | None = None,
    train_on_what: TrainOnWhat | str = TrainOnWhat.ALL_ASSISTANT_MESSAGES,
    reduction: Reduction = "mean",
) -> Any:
    model_input, weights = renderer.build_supervised_example(messages, TrainOnWhat(train_on_what))
    if any(getattr(ch, "type", "encoded_text") != "encoded_text" for ch in getattr(model_input, "chunks", [])):
        return datum_from_model_input_weights(model_input, np.asarray(weights), max_length, reduction)
    return datum_from_tokens_weights(model_input_tokens(model_input), np.asarray(weights), max_length, reduction)


def _reduced(target_w: np.ndarray, reduction: Reduction) -> np.ndarray:
    """Target weights under ``reduction``: ``mean`` divides by their sum (when positive), ``none`` keeps them."""
    if reduction == "mean":
        total = float(target_w.sum())
        return target_w / total if total > 0 else target_w
    if reduction != "none":
        raise DataError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return target_w


def datum_from_model_input_weights(
    model_input: Any,
    weights: Sequence[float] | np.ndarray,
    max_length: int | None = None,
    reduction: Reduction = "mean",
) -> Any:
    """A cross-entropy ``tinker.Datum`` from a ``ModelInput`` with image chunks and one weight per position.

    The input drops the last position; the targets are the next position's token (0 under an image, whose
    positions must have weight 0: an image is never a target). Truncation to ``max_length`` never splits an
    image: an image that would be cut is dropped with everything after it."""
    import tinker

    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) != model_input.length:
        raise DataError(f"need one weight per position: {model_input.length} positions, weights of shape {w.shape}")
    limit = model_input.length if max_length is None else max_length
    chunks: list[Any] = []
    ids: list[int] = []  # the token id at each kept position (0 for image positions)
    for ch in model_input.chunks:
        room = limit - len(ids)
        if room <= 0:
            break
        if ch.type == "encoded_text":
            toks = [int(t) for t in ch.tokens[:room]]
            chunks.append(tinker.types.EncodedTextChunk(tokens=toks))
            ids += toks
        elif ch.length <= room:
            if np.any(w[len(ids) : len(ids) + ch.length] != 0):
                raise DataError(f"image positions {len(ids)}..{len(ids) + ch.length - 1} have non-zero weights")
            chunks.append(ch)
            ids += [0] * ch.length
        else:
            break
    n = len(ids)
    if n < 2:
        raise DataError(f"a supervised example needs at least 2 positions after truncation, got {n}")
    last = chunks[-1]
    if last.type != "encoded_text":
        raise DataError("a supervised example cannot end with an image: the last position must be a text token")
    chunks[-1] = tinker.types.EncodedTextChunk(tokens=list(last.tokens[:-1]))
    if not chunks[-1].tokens:
        chunks.pop()
    target_w = w[1:n]
    if not np.all(np.isfinite(target_w)):
        raise DataError("weights contain NaN or inf")
    target_w = _reduced(target_w, reduction)
    return tinker.Datum(
        model_input=tinker.ModelInput(chunks=chunks),
        loss_fn_inputs={
            "target_tokens": tinker.TensorData(data=ids[1:], dtype="int64", shape=[n - 1]),
            "weights": tinker.TensorData(
                data=[float(x) for x in target_w.astype(np.float32)], dtype="float32", shape=[n - 1]
            ),
        },
    )


# ----------------------------------------------------------------------------------------------- JSON messages


KNOWN_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool", "developer", "tool_declare")
#: Role names of other chat formats (ShareGPT's ``from`` values) and what they are called here.
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant",
                "function": "tool", "observation": "tool"}


def check_role(role: str, where: str) -> None:
    """Unknown roles are refused at load (a ShareGPT ``human``/``gpt`` file would otherwise train on 0 tokens)."""
    if role in KNOWN_ROLES:
        return
    hint = f"; did you mean {ROLE_ALIASES[role]!r}? (convert the file's roles)" if role in ROLE_ALIASES else ""
    raise DataError(f"{where}: unknown role {role!r}; roles are {', '.join(KNOWN_ROLES)}{hint}")


def message_from_json(obj: Any, where: str) -> Message:
    """A message from OpenAI-style JSON: ``{"role", "content", "tool_calls"?: [{"id", "function": {...}}]}``
    or the flat ``{"name", "arguments"}`` tool-call form; ``reasoning_content`` becomes a thinking part.
    The role must be one of :data:`KNOWN_ROLES`."""
    if not isinstance(obj, dict) or not isinstance(obj.get("role"), str):
        raise DataError(f"{where}: a message must be an object with a string 'role', got {obj!r:.200}")
    check_role(obj["role"], where)
    content = obj.get("content", "")
    if content is None:
        content = ""
    if not isinstance(content, str | list):
        raise DataError(f"{where}: 'content' must be a string or a list of parts")
    msg: dict[str, Any] = {"role": obj["role"], "content": content}
    reasoning = obj.get("reasoning_content")
    if reasoning:
        text_parts: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        msg["content"] = [{"type": "thinking", "thinking": reasoning}, *text_parts]
    calls = obj.get("tool_calls")
    if calls:
        parsed = []
        for j, c in enumerate(calls):
            fn = c.get("function", c) if isinstance(c, dict) else None
            if not isinstance(fn, dict) or "name" not in fn:
                raise DataError(f"{where}: tool_calls[{j}] needs a function name")
            args = fn.get("arguments", "{}")
            if not isinstance(args, str):
                args = json.dumps(args, ensure_ascii=False)
            parsed.append(ToolCall(name=str(fn["name"]), arguments=args, id=c.get("id")))
        msg["tool_calls"] = parsed
    for key in ("tool_call_id", "name", "trainable"):
        if key in obj:
            msg[key] = obj[key]
    return msg  # type: ignore[return-value]


class Conversation(list):  # type: ignore[type-arg]
    """A list of messages that remembers where it was read from (``file:line``), for error messages."""

    where: str = ""


def _sourced(messages: list[Message], where: str) -> list[Message]:
    conv = Conversation(messages)
    conv.where = where
    return conv


def where_of(conversation: Any, default: str) -> str:
    return getattr(conversation, "where", "") or default


def read_jsonl_rows(path: str | Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, row)`` for every non-blank line; a malformed line is a :class:`DataError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist (or is not a file); check the path")
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{i}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove the line") from None
            yield f"{p}:{i}", row


def read_conversations_jsonl(path: str | Path, message_field: str = "messages") -> list[list[Message]]:
    """``{"messages": [...]}`` per line (tinker-cookbook's conversations.jsonl format)."""
    out: list[list[Message]] = []
    for where, row in read_jsonl_rows(path):
        msgs = row.get(message_field) if isinstance(row, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: expected an object with a non-empty {message_field!r} list")
        out.append(_sourced([message_from_json(m, f"{where} message {j}") for j, m in enumerate(msgs)], where))
    if not out:
        raise DataError(f"{path}: no conversations")
    return out


def _looks_local(source: str) -> bool:
    return source.endswith((".json", ".jsonl")) or source.startswith((".", "/", "~")) or os.sep in source


def load_rows(source: str | Path, split: str = "train") -> Iterator[tuple[str, Any]]:
    """``(where, row)`` from a local JSONL file (``file:line``), a local JSON file or a hub dataset
    (``source row i``). A local-looking path that does not exist is a :class:`DataError`, not a hub lookup."""
    text = os.path.expanduser(str(source))
    p = Path(text)
    if p.suffix == ".jsonl" or (p.is_file() and p.suffix != ".json"):
        yield from read_jsonl_rows(p)
        return
    if not p.exists() and _looks_local(str(source)):
        raise DataError(f"{source} does not exist; check the path (a hub dataset name has no file suffix)")
    import datasets

    try:
        ds = datasets.load_dataset("json", data_files=str(p), split=split) if p.exists() else \
            datasets.load_dataset(str(source), split=split)
    except Exception as exc:  # datasets raises many types; report the first line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{source}: cannot load the dataset (split {split!r}): {first}") from exc
    for i, row in enumerate(ds):
        yield f"{source} row {i}", dict(row)


@dataclass
class ConversationDataset:
    """Batches of conversations with a per-epoch shuffle (``set_epoch(seed)``); the last partial batch is dropped."""

    conversations: list[list[Message]]
    batch_size: int

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {self.batch_size}")
        self._order = list(range(len(self.conversations)))

    def set_epoch(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._order = [int(i) for i in rng.permutation(len(self.conversations))]

    def __len__(self) -> int:
        return len(self.conversations) // self.batch_size

    def get_batch(self, index: int) -> list[list[Message]]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.conversations[i] for i in idx]

    def __iter__(self) -> Iterator[list[list[Message]]]:
        return (self.get_batch(i) for i in range(len(self)))


def load_conversations(source: str | Path, split: str = "train", message_field: str = "messages") -> list[list[Message]]:
    """Conversations from a local JSONL/JSON file or a hub dataset (when online); every message is checked
    (:func:`message_from_json`) and errors name ``file:line``."""
    out: list[list[Message]] = []
    for where, row in load_rows(source, split):
        msgs = row.get(message_field) if isinstance(row, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: no non-empty {message_field!r} list")
        out.append(_sourced([message_from_json(m, f"{where} message {j}") for j, m in enumerate(msgs)], where))
    if not out:
        raise DataError(f"{source}: no conversations")
    return out
