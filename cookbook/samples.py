"""Samples a person reads in the report: ``<log_path>/samples.jsonl``, one JSON object per line.

Every row has ``kind`` and ``step``; text is stored already decoded, as *segments* ``[text, weight]``:
consecutive tokens with the same weight are decoded **together**, so the bytes of a character that a
byte-level BPE tokenizer split over several tokens come out as that character, never as U+FFFD. When a
character's bytes straddle a weight change, the straddling tokens join the run that completes it.

* ``{"kind": "sft", "step", "index", "segments", "num_tokens", "num_loss_tokens"}``: a supervised datum
  (weight > 0 = trained).
* ``{"kind": "dpo", "step", "index", "chosen": segments, "rejected": segments}``: one preference pair.
* ``{"kind": "rl_group", "step", "group", "tags", "prompt": segments | None, "rollouts": [...]}``: one RL
  group. Each rollout: ``reward`` (total), ``advantage`` (the trajectory's scalar advantage, before any KL
  penalty), ``final_reward``, ``turns``. Each turn: ``ob`` (the observation tokens that are new in this
  turn: the prompt for turn 0 when the group's rollouts do not share one, the tool results and the next
  header later; ``extends`` says whether the observation extended the previous prompt, i.e. the turns were
  merged into one datum), ``ac`` (sampled tokens; weight 1 = trained, 0 = masked), ``reward``,
  ``stop_reason``, ``metrics`` and ``message`` (the renderer's parse: ``text``, ``thinking``,
  ``tool_calls`` ``[{"name", "arguments"}]``, ``unparsed_tool_calls``, ``termination``).

Which steps are recorded: :func:`sample_steps` (about ten evenly spaced steps, the first and the last).
A resumed run writes its re-run steps again; readers keep the last row of each (kind, step, index/group).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cookbook.runlog import append_jsonl, read_jsonl

SAMPLES_FILE = "samples.jsonl"
REPLACEMENT = "\ufffd"

Decode = Callable[[Sequence[int]], str]
Segment = list[Any]  # [text: str, weight: float]


def sample_steps(total: int, count: int = 10) -> set[int]:
    """The steps whose samples are recorded: ``0``, ``total - 1`` and every ``ceil(total / count)``-th."""
    if total <= 0:
        return set()
    every = max(1, -(-total // count))
    return set(range(0, total, every)) | {total - 1}


def decoder(renderer: Any) -> Decode:
    dec = getattr(renderer, "decode", None)
    if callable(dec):
        return dec  # type: ignore[no-any-return]
    enc = getattr(renderer, "enc", None)
    if enc is not None:
        return enc.decode  # type: ignore[no-any-return]
    tok = getattr(renderer, "tokenizer", None)
    if tok is not None:
        return lambda ts: str(tok.decode(list(ts)))
    return lambda ts: " ".join(str(t) for t in ts)


def decode_segments(decode: Decode, tokens: Sequence[int], weights: Sequence[float]) -> list[Segment]:
    """``[[text, weight], ...]`` for runs of equal weight, each run decoded as a whole (see the module doc)."""
    runs: list[list[Any]] = []  # [tokens, weight]
    for t, w in zip(tokens, weights):
        w = float(w)
        if runs and runs[-1][1] == w:
            runs[-1][0].append(int(t))
        else:
            runs.append([[int(t)], w])
    # a character split over a weight change: move its first bytes (at most 3 tokens) to the next run
    for i in range(len(runs) - 1):
        head, nxt = runs[i][0], runs[i + 1][0]
        if not decode(head).endswith(REPLACEMENT):
            continue
        base = decode(head).count(REPLACEMENT) + decode(nxt).count(REPLACEMENT)
        for k in range(1, min(3, len(head) - 1) + 1):
            moved = decode(head[:-k]).count(REPLACEMENT) + decode(head[-k:] + nxt).count(REPLACEMENT)
            if moved < base:
                runs[i + 1][0] = head[-k:] + nxt
                runs[i][0] = head[:-k]
                break
    return [[decode(toks), w] for toks, w in runs if toks]


def _ints(x: Any) -> list[int]:
    if isinstance(x, list):
        return [int(t) for t in x]
    to_ints = getattr(x, "to_ints", None)
    return [int(t) for t in to_ints()] if callable(to_ints) else [int(t) for t in x]


def datum_tokens(datum: Any, weight_key: str = "weights") -> tuple[list[int], list[float]]:
    """A shifted datum back to its full sequence: ``input + [last target]``, the first token weight 0."""
    inputs = _ints(datum.model_input)
    targets = [int(t) for t in datum.loss_fn_inputs["target_tokens"].tolist()]
    weights = [float(w) for w in datum.loss_fn_inputs[weight_key].tolist()]
    return inputs + targets[-1:], [0.0, *weights]


def _append(log_dir: str | Path, row: dict[str, Any]) -> None:
    append_jsonl(Path(log_dir) / SAMPLES_FILE, row)


def log_sft_samples(log_dir: str | Path, step: int, renderer: Any, data: Sequence[Any], n: int = 2) -> None:
    decode = decoder(renderer)
    for i, d in enumerate(list(data)[:n]):
        toks, ws = datum_tokens(d)
        _append(log_dir, {"kind": "sft", "step": step, "index": i, "segments": decode_segments(decode, toks, ws),
                          "num_tokens": len(toks), "num_loss_tokens": sum(1 for w in ws if w > 0)})


def log_dpo_samples(log_dir: str | Path, step: int, renderer: Any, data: Sequence[Any], n: int = 2) -> None:
    """``data`` is ``[chosen_0, rejected_0, chosen_1, ...]``."""
    decode = decoder(renderer)
    for i in range(min(n, len(data) // 2)):
        rows = [decode_segments(decode, *datum_tokens(d)) for d in (data[2 * i], data[2 * i + 1])]
        _append(log_dir, {"kind": "dpo", "step": step, "index": i, "chosen": rows[0], "rejected": rows[1]})


def _message_summary(renderer: Any, tokens: list[int]) -> dict[str, Any]:
    from cookbook.renderers.base import text_of, thinking_of

    try:
        msg, term = renderer.parse_response(tokens)
    except Exception as exc:  # a response the renderer refuses is still shown, with the reason
        return {"text": None, "termination": f"unparseable: {type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {
        "text": text_of(msg["content"]),
        "thinking": thinking_of(msg["content"]),
        "termination": getattr(term, "name", str(term)),
    }
    calls = msg.get("tool_calls") or []
    if calls:
        out["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in calls]
    unparsed = msg.get("unparsed_tool_calls") or []
    if unparsed:
        out["unparsed_tool_calls"] = [{"raw_text": u.raw_text, "error": u.error} for u in unparsed]
    return out


def rl_group_row(step: int, index: int, group: Any, advantages: Sequence[float], renderer: Any,
                 tags: Sequence[str] = ()) -> dict[str, Any]:
    """One ``rl_group`` row (see the module doc) from a :class:`~cookbook.rl.types.TrajectoryGroup`."""
    from cookbook.rl.data import PARSE_ERROR_MASKED

    decode = decoder(renderer)
    firsts = [_ints(t.transitions[0].ob) if t.transitions else [] for t in group.trajectories]
    shared = bool(firsts) and all(f == firsts[0] for f in firsts)
    rollouts = []
    for traj, adv, total, fr in zip(group.trajectories, advantages, group.total_rewards(), group.final_rewards):
        turns = []
        seq: list[int] = []
        for ti, tr in enumerate(traj.transitions):
            ob = _ints(tr.ob)
            extends = bool(seq) and ob[: len(seq)] == seq
            delta = ob[len(seq):] if extends else ob
            if ti == 0 and shared:
                delta = []
            masked = tr.metrics.get(PARSE_ERROR_MASKED, 0.0) >= 1
            ac = list(tr.ac.tokens)
            turns.append({
                "ob": decode_segments(decode, delta, [0.0] * len(delta)),
                "extends": extends,
                "ac": decode_segments(decode, ac, [0.0 if masked else 1.0] * len(ac)),
                "reward": float(tr.reward),
                "stop_reason": tr.ac.stop_reason,
                "metrics": {k: float(v) for k, v in tr.metrics.items()},
                "message": _message_summary(renderer, ac),
            })
            seq = ob + ac
        rollouts.append({"reward": float(total), "advantage": float(adv), "final_reward": float(fr), "turns": turns})
    prompt = decode_segments(decode, firsts[0], [0.0] * len(firsts[0])) if shared else None
    return {"kind": "rl_group", "step": step, "group": index, "tags": list(tags), "prompt": prompt,
            "rollouts": rollouts}


def log_rl_groups(log_dir: str | Path, step: int, renderer: Any, groups: Sequence[Any],
                  advantages: Sequence[Sequence[float]], tags: Sequence[Sequence[str]] | None = None) -> None:
    for gi, (g, advs) in enumerate(zip(groups, advantages)):
        _append(log_dir, rl_group_row(step, gi, g, advs, renderer, tags[gi] if tags else ()))


def read_samples(log_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``samples.jsonl``, the last of each (kind, step, index/group) kept, in step order."""
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in read_jsonl(Path(log_dir) / SAMPLES_FILE):
        key = (row.get("kind", "legacy"), row.get("step"), row.get("index", row.get("group")))
        latest.pop(key, None)
        latest[key] = row
    return sorted(latest.values(), key=lambda r: (int(r.get("step", 0)), r.get("index", r.get("group", 0)) or 0))
