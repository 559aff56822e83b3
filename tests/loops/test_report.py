"""The HTML report: byte-exact sample decoding, metric grouping, and the page as headless Chromium renders it."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from cookbook.mock.tiny_chat import TINY_CHAT_TOOLS, tiny_chat_dir
from cookbook.renderers import get_renderer
from cookbook.renderers.base import ToolCall
from cookbook.report import choose_steps, metric_series, write_report
from cookbook.rl.types import TokensWithLogprobs, Trajectory, TrajectoryGroup, Transition
from cookbook.runlog import RunLog
from cookbook.samples import decode_segments, log_dpo_samples, log_rl_groups, log_sft_samples, read_samples

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
TEXT = "naïve café — 数学 😀 done"


@pytest.fixture(scope="module")
def llama() -> Any:
    return get_renderer("llama3", str(tiny_chat_dir()))


@pytest.fixture(scope="module")
def qwen_tools() -> Any:
    return get_renderer("qwen3_instruct", str(tiny_chat_dir(model=TINY_CHAT_TOOLS)))


# ----------------------------------------------------------------------------------------------- decoding


def test_runs_are_decoded_together_so_split_characters_survive(llama: Any) -> None:
    tokens = llama.enc.encode(TEXT)
    assert len(tokens) == len(TEXT.encode())  # one token per byte: every non-ASCII char is split
    per_token = "".join(llama.decode([t]) for t in tokens)
    assert "\ufffd" in per_token  # what decoding token by token (the old report) shows
    # a weight change in the middle of every multi-byte character
    for cut in range(1, len(tokens)):
        weights = [0.0] * cut + [1.0] * (len(tokens) - cut)
        segs = decode_segments(llama.decode, tokens, weights)
        assert "".join(t for t, _ in segs) == TEXT, cut
        assert all("\ufffd" not in t for t, _ in segs)
        assert [w for _, w in segs] == [0.0, 1.0]


def test_metric_series_and_step_choice() -> None:
    rows = [{"step": i, "a": float(i), "c": 1.0, "n": None if i == 2 else 0.5 * i} for i in range(5)]
    s = metric_series(rows)
    assert s["a"] == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]) and s["n"][1][2] is None
    assert choose_steps(range(100), 6)[0] == 0 and choose_steps(range(100), 6)[-1] == 99
    assert len(choose_steps(range(100), 6)) == 6 and choose_steps([3, 1], 6) == [1, 3]


# ----------------------------------------------------------------------------------------------- a run folder


def _datum(tokens: list[int], weights: list[float]) -> Any:
    import tinker

    n = len(tokens) - 1
    return tinker.Datum(model_input=tinker.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs={
        "target_tokens": tinker.TensorData(data=tokens[1:], dtype="int64", shape=[n]),
        "weights": tinker.TensorData(data=weights[1:], dtype="float32", shape=[n]),
    })


def _tool_group(r: Any) -> TrajectoryGroup:
    """Two rollouts of a calculator episode: tool call -> tool result -> answer, and a direct wrong answer."""
    import tinker

    from cookbook.rl.tool_env import CALCULATOR, conversation_prefix

    assert CALCULATOR["name"] == "calculator"
    convo = [*conversation_prefix(r), {"role": "user", "content": "What is 6 * 7? 😀"}]
    ob0 = r.build_generation_prompt(convo)
    call = {"role": "assistant", "content": "", "tool_calls": [ToolCall("calculator", '{"expression": "6 * 7"}')]}
    full, _ = r.supervised_tokens([*convo, call], "last_assistant_message")
    ac0 = full[ob0.length:]
    ob1 = r.build_generation_prompt([*convo, call, {"role": "tool", "content": "42"}])
    ac1 = r.enc.encode("42 — naïve") + r.get_stop_sequences()
    wrong = r.enc.encode("41") + r.get_stop_sequences()

    def tr(ob: Any, ac: list[int], reward: float, done: bool) -> Transition:
        return Transition(ob, TokensWithLogprobs(ac, [-0.5] * len(ac)), reward, done, {"correct": reward})

    t1 = Trajectory([tr(ob0, ac0, 0.0, False), tr(ob1, ac1, 1.0, True)], tinker.ModelInput.empty())
    t2 = Trajectory([tr(ob0, wrong, 0.0, True)], tinker.ModelInput.empty())
    return TrajectoryGroup([t1, t2], [0.0, 0.0])


def _make_run(path: Path, llama: Any, qwen_tools: Any) -> dict[str, int]:
    log = RunLog(path)
    log.write_config({"kind": "rl", "model_name": "cookbook/tiny-chat", "learning_rate": 0.05})
    for step in range(12):
        log.log_metrics(step, {"train_mean_nll": 2.0 / (step + 1), "env/all/reward/total": step / 11,
                               "env/all/correct": (step % 3) / 2, "optim/lr": 0.05, "optim/entropy": 3 - step / 6,
                               "time/step": 0.1 + step / 100, "progress": (step + 1) / 12})
    conv = [{"role": "user", "content": "Say café"}, {"role": "assistant", "content": TEXT}]
    toks, ws = llama.supervised_tokens(conv, "last_assistant_message")
    log_sft_samples(path, 0, llama, [_datum(toks, ws)])
    rej, rw = llama.supervised_tokens([conv[0], {"role": "assistant", "content": "no"}], "last_assistant_message")
    log_dpo_samples(path, 5, llama, [_datum(toks, ws), _datum(rej, rw)])
    group = _tool_group(qwen_tools)
    log_rl_groups(path, 11, qwen_tools, [group], [[0.5, -0.5]])
    log_rl_groups(path, 11, qwen_tools, [group], [[0.5, -0.5]])  # a resumed step: written twice, shown once
    return {"plotted": 6, "constant": 1}


def test_samples_rows(tmp_path: Path, llama: Any, qwen_tools: Any) -> None:
    _make_run(tmp_path, llama, qwen_tools)
    rows = read_samples(tmp_path)
    assert [r["kind"] for r in rows] == ["sft", "dpo", "rl_group"]
    sft = rows[0]
    assert "".join(t for t, w in sft["segments"] if w > 0).startswith(TEXT)
    rl = rows[2]
    assert "What is 6 * 7? 😀" in "".join(t for t, _ in rl["prompt"])
    first, second = rl["rollouts"]
    assert (first["reward"], first["advantage"], second["advantage"]) == (1.0, 0.5, -0.5)
    call_turn, answer_turn = first["turns"]
    assert call_turn["message"]["tool_calls"] == [{"name": "calculator", "arguments": '{"expression": "6 * 7"}'}]
    assert answer_turn["extends"] is True and "42" in "".join(t for t, _ in answer_turn["ob"])
    assert "".join(t for t, w in answer_turn["ac"] if w > 0).startswith("42 — naïve")


# ----------------------------------------------------------------------------------------------- the browser


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and raw RGB(A) rows of an 8-bit PNG (filters undone), enough to tell a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_the_report_renders_in_headless_chromium(tmp_path: Path, llama: Any, qwen_tools: Any) -> None:
    run = tmp_path / "run"
    counts = _make_run(run, llama, qwen_tools)
    report = write_report(run, title="report test")
    page = report.read_text()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page.split("<body>")[1]
    url = report.as_uri()

    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the plotting script ran: one drawn uPlot chart (with its canvas) per non-constant metric
    assert re.search(r'<body[^>]*data-charts="(\d+)"', html).group(1) == str(counts["plotted"])  # type: ignore[union-attr]
    assert html.count('class="uplot') == counts["plotted"] and html.count("<canvas") >= counts["plotted"]
    assert "constant · 1 metrics" in html and "optim/lr" in html
    for group in ("main", "env/", "optim/", "time/"):
        assert f"{group} ·" in html
    # samples: trained tokens highlighted, bytes decoded, RL group with rewards, advantages and tool calls
    assert html.count('class="tr"') >= 3 and "\ufffd" not in html
    assert "naïve café — 数学 😀" in html
    assert "reward 1" in html and "advantage +0.5" in html and "advantage -0.5" in html
    assert '<details class="tool">' in html and "calculator" in html
    assert "chosen" in html and "rejected" in html
    assert "step 11 · 1 RL group<" in html and "step 0 · 1 SFT datum<" in html and "step 5 · 1 DPO pair<" in html

    png = tmp_path / "report.png"
    shot = _chromium([f"--screenshot={png}", "--window-size=900,1100", url], tmp_path / "profile-shot")
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    width, height, rows = _png_pixels(png)
    assert (width, height) == (900, 1100)
    colours = {row[i:i + 3] for row in rows[::7] for i in range(0, len(row), 3 * 11)}
    assert len(colours) > 50, "the screenshot is (nearly) blank"


def test_report_cli(tmp_path: Path, llama: Any, qwen_tools: Any) -> None:
    from cookbook.cli import main

    _make_run(tmp_path, llama, qwen_tools)
    assert main(["report", str(tmp_path), "--steps", "5", "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "pair 0" in page and "group 0" not in page
    meta = json.loads((Path(__file__).parents[2] / "cookbook/_vendor/uplot/VENDOR.json").read_text())
    assert f"uPlot {meta['version']}" in page


def test_report_cli_bad_input_is_a_clear_error(tmp_path: Path, llama: Any, qwen_tools: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from cookbook.cli import main

    assert main(["report", str(tmp_path / "missing")]) != 0
    assert "metrics.jsonl" in capsys.readouterr().err
    _make_run(tmp_path, llama, qwen_tools)
    assert main(["report", str(tmp_path), "--steps", "1,x"]) != 0
    assert "--steps" in capsys.readouterr().err
