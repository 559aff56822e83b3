"""Run-directory files survive crashes; supervised datums shift, truncate and weight as specified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cookbook.errors import DataError
from cookbook.runlog import RunLog, read_jsonl
from cookbook.supervised.data import (
    ConversationDataset,
    conversation_to_datum,
    datum_from_tokens_weights,
    load_conversations,
    read_conversations_jsonl,
)


def test_torn_last_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    log.log_metrics(0, {"loss": 1.0})
    with open(log.metrics_path, "a") as f:
        f.write('{"step": 1, "lo')  # a crash mid-write
    assert [r["step"] for r in log.metrics()] == [0]
    log.log_metrics(1, {"loss": 0.5})
    assert [r["step"] for r in log.metrics()] == [0, 1]
    assert log.metrics_path.read_text().count("\n") == 2


def test_metrics_step_first_and_truncation(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    for s in range(5):
        log.log_metrics(s, {"a": s, "nan": float("nan")})
    first = log.metrics_path.read_text().splitlines()[0]
    assert first.startswith('{"step": 0')
    assert json.loads(first)["nan"] is None
    log.truncate_metrics(3)
    assert [r["step"] for r in log.metrics()] == [0, 1, 2]


def test_checkpoint_records_key_order_and_resume_point(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    log.record_checkpoint({"extra": 1, "sampler_path": "tinker://r/sampler_weights/000001", "name": "000001", "batch": 1})
    log.record_checkpoint({"name": "000002", "batch": 2, "state_path": "tinker://r/weights/000002", "epoch": None})
    line = log.checkpoints_path.read_text().splitlines()[0]
    assert list(json.loads(line)) == ["name", "batch", "sampler_path", "extra"]
    assert "epoch" not in json.loads(log.checkpoints_path.read_text().splitlines()[1])
    last = log.last_checkpoint()
    assert last is not None and last["name"] == "000002"
    with pytest.raises(DataError, match="name"):
        log.record_checkpoint({"batch": 3})


def test_config_is_replaced_atomically(tmp_path: Path) -> None:
    log = RunLog(tmp_path)
    log.write_config({"b": 1, "a": [1, 2]})
    log.write_config({"b": 2})
    assert log.read_config() == {"b": 2}
    assert not list(tmp_path.glob(".config.json.*"))


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(p)


def test_datum_shift_truncation_and_mean_reduction() -> None:
    d = datum_from_tokens_weights([10, 11, 12, 13, 14], [0, 0, 1, 1, 1], max_length=4)
    assert d.model_input.to_ints() == [10, 11, 12]
    assert d.loss_fn_inputs["target_tokens"].data == [11, 12, 13]
    assert d.loss_fn_inputs["weights"].data == pytest.approx([0.0, 0.5, 0.5])
    raw = datum_from_tokens_weights([1, 2, 3], [0, 1, 1], reduction="none")
    assert raw.loss_fn_inputs["weights"].data == [1.0, 1.0]
    zero = datum_from_tokens_weights([1, 2, 3], [0, 0, 0])
    assert zero.loss_fn_inputs["weights"].data == [0.0, 0.0]


@pytest.mark.parametrize(
    ("tokens", "weights", "kw", "msg"),
    [
        ([1, 2], [1], {}, "one weight per token"),
        ([1], [1], {}, "at least 2 tokens"),
        ([1, 2, 3], [0, 1, 1], {"max_length": 1}, "max_length"),
        ([1, 2, 3], [0, float("nan"), 1], {}, "NaN"),
        ([1, 2, 3], [0, 1, 1], {"reduction": "sum"}, "reduction"),
    ],
)
def test_datum_bad_input(tokens: list[int], weights: list[float], kw: dict[str, object], msg: str) -> None:
    with pytest.raises(DataError, match=msg):
        datum_from_tokens_weights(tokens, weights, **kw)  # type: ignore[arg-type]


def test_conversation_to_datum_with_a_real_renderer() -> None:
    from cookbook.renderers import get_renderer

    r = get_renderer("llama3", "meta-llama/Llama-3.1-8B-Instruct")
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    mi, w = r.build_supervised_example(conv)  # type: ignore[arg-type]
    d = conversation_to_datum(conv, r)  # type: ignore[arg-type]
    toks = mi.to_ints()
    assert d.model_input.to_ints() == toks[:-1]
    assert d.loss_fn_inputs["target_tokens"].data == toks[1:]
    expected = np.asarray(w[1:], dtype=np.float64)
    assert np.allclose(d.loss_fn_inputs["weights"].data, expected / expected.sum())


def test_jsonl_conversations_and_dataset(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(5)
    ]
    rows[1]["messages"][1] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
    }
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    convs = read_conversations_jsonl(p)
    assert convs[1][1]["tool_calls"][0].arguments == '{"x": 1}'
    ds = ConversationDataset(convs, batch_size=2)
    assert len(ds) == 2
    ds.set_epoch(0)
    a = ds.get_batch(0)
    ds.set_epoch(0)
    assert ds.get_batch(0) == a
    with pytest.raises(IndexError):
        ds.get_batch(2)
    via_datasets = load_conversations(p)
    assert [c[0]["content"] for c in via_datasets] == [f"q{i}" for i in range(5)]


def test_bad_jsonl_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{"nope": 1}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2"):
        read_conversations_jsonl(p)
