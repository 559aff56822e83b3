"""A self-contained HTML report of a run, readable offline: metric plots and samples.

``<log_path>/report.html`` is written atomically from ``metrics.jsonl``, ``config.json``,
``checkpoints.jsonl`` and ``samples.jsonl`` (:mod:`cookbook.samples`). No network is needed to view it:

* **Plots**: uPlot (MIT, the vendored, pinned copy in ``cookbook/_vendor/uplot``, sha256-checked when the
  report is written) is inlined with the data. One chart per metric with axes and ticks; hovering shows the
  step and the value. Charts are grouped by the metric's prefix (``env/``, ``optim/``, ``train/``,
  ``test/``...; names without ``/`` form the first group; ``time/`` is collapsed). Metrics that never change
  are listed in a collapsed table instead of being plotted.
* **Samples**: SFT and DPO datums with the trained tokens highlighted; RL groups (prompt, every response with
  its reward and advantage, trained tokens coloured, tool results, reasoning and tool calls in collapsible
  blocks) for the chosen ``steps`` (default: up to six evenly spaced recorded steps, first and last
  included).

``cookbook report LOG_PATH [--steps 0,10,29] [--out FILE]`` (re)writes a report.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from cookbook.errors import ConfigurationError
from cookbook.runlog import RunLog, atomic_write_text

VENDOR = Path(__file__).parent / "_vendor" / "uplot"
DEFAULT_STEPS = 6


# ----------------------------------------------------------------------------------------------- assets


@lru_cache(maxsize=1)
def _uplot() -> tuple[str, str, str]:
    """(js, css, version) of the vendored uPlot, each file checked against VENDOR.json's sha256."""
    meta = json.loads((VENDOR / "VENDOR.json").read_text(encoding="utf-8"))
    texts: dict[str, str] = {}
    for name, info in meta["files"].items():
        path = VENDOR / name
        if not path.exists():
            raise ConfigurationError(f"{path} is missing from the installation; reinstall cookbook")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ConfigurationError(f"{path} does not match its pinned sha256 in {VENDOR / 'VENDOR.json'}")
        texts[name] = data.decode("utf-8")
    return texts["uPlot.iife.min.js"], texts["uPlot.min.css"], str(meta["version"])


# ----------------------------------------------------------------------------------------------- metrics


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def metric_series(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float | None]]]:
    """Per numeric metric: (steps, values) in row order; ``None`` where a logged value is NaN/inf."""
    out: dict[str, tuple[list[float], list[float | None]]] = {}
    for r in rows:
        step = _number(r.get("step"))
        if step is None:
            continue
        for k, v in r.items():
            if k == "step":
                continue
            if v is None or (isinstance(v, str) and v in ("inf", "-inf")) or _number(v) is not None:
                xs, ys = out.setdefault(k, ([], []))
                xs.append(step)
                ys.append(_number(v))
    return {k: v for k, v in out.items() if any(y is not None for y in v[1])}


def group_of(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ""


def _is_constant(ys: Sequence[float | None]) -> bool:
    vals = {y for y in ys if y is not None}
    return len(vals) <= 1 and len(ys) > 1


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.6g}" if not float(v).is_integer() else str(int(v))


# ----------------------------------------------------------------------------------------------- samples


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _segments_html(segments: Sequence[Sequence[Any]] | None) -> str:
    parts = []
    for text, w in segments or []:
        if w > 0:
            parts.append(f'<span class="tr" title="trained, weight {w:.4g}">{_esc(text)}</span>')
        else:
            parts.append(f'<span class="nt">{_esc(text)}</span>')
    return _mark_invalid("".join(parts))


def _mark_invalid(markup: str) -> str:
    """U+FFFD left after run decoding stands for bytes that are not UTF-8 at all (a toy model's random bytes)."""
    return markup.replace("\ufffd", '<span class="bad-utf8" title="bytes that are not valid UTF-8">\ufffd</span>')


def _pre(segments: Sequence[Sequence[Any]] | None, cls: str = "") -> str:
    return f'<pre class="tok {cls}">{_segments_html(segments)}</pre>'


def _signed(v: float) -> str:
    return f"{v:+.3g}"


def _reward_class(v: float) -> str:
    return "good" if v > 0.5 else ("bad" if v <= 0 else "mid")


def _tool_call_html(call: dict[str, Any]) -> str:
    args = call.get("arguments", "")
    try:
        pretty = json.dumps(json.loads(args), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        pretty = str(args)
    short = " ".join(pretty.split())
    short = short if len(short) <= 60 else short[:57] + "…"
    return (f'<details class="tool"><summary>tool call <b>{_esc(call.get("name"))}</b> '
            f'<code>{_esc(short)}</code></summary><pre>{_esc(pretty)}</pre></details>')


def _turn_html(turn: dict[str, Any], ti: int) -> str:
    out = []
    if turn.get("ob"):
        label = "observation" if turn.get("extends") or ti == 0 else "new context (not merged)"
        out.append(f'<div class="ob"><span class="lab">{label}</span>{_pre(turn["ob"], "obs")}</div>')
    msg = turn.get("message") or {}
    out.append(f'<div class="ac">{_pre(turn.get("ac"))}</div>')
    extras = []
    for th in msg.get("thinking") or []:
        extras.append(f'<details class="think"><summary>reasoning · {len(th)} chars</summary>'
                      f"<pre>{_esc(th)}</pre></details>")
    for call in msg.get("tool_calls") or []:
        extras.append(_tool_call_html(call))
    for bad in msg.get("unparsed_tool_calls") or []:
        extras.append(f'<details class="tool bad"><summary>unparsed tool call: {_esc(bad.get("error"))}</summary>'
                      f'<pre>{_esc(bad.get("raw_text"))}</pre></details>')
    meta = [f"turn {ti}", _esc(msg.get("termination") or turn.get("stop_reason")).lower()]
    if turn.get("reward"):
        meta.append(f"step reward {_signed(turn['reward'])}")
    for k, v in sorted((turn.get("metrics") or {}).items()):
        meta.append(f"{_esc(k)}={v:.3g}")
    out.append(f'<div class="meta">{" · ".join(meta)}</div>{"".join(extras)}')
    return f'<div class="turn">{"".join(out)}</div>'


def _prompt_html(segments: Sequence[Sequence[Any]]) -> str:
    """The shared prompt, collapsed, its last line (usually the question) in the summary."""
    text = "".join(str(t) for t, _ in segments)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tail = next((ln for ln in reversed(lines) if not ln.strip().startswith("<|")), lines[-1] if lines else "")
    tail = tail if len(tail) <= 120 else "…" + tail[-119:]
    return (f'<details class="prompt"><summary><span class="lab">prompt</span> {len(text)} chars · '
            f"<code>{_esc(tail)}</code></summary>{_pre(segments, 'obs')}</details>")


def _rl_group_html(row: dict[str, Any]) -> str:
    rollouts = row.get("rollouts") or []
    rewards = [r["reward"] for r in rollouts]
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    tags = ", ".join(row.get("tags") or [])
    head = (f"group {row.get('group')}" + (f" [{_esc(tags)}]" if tags else "")
            + f" · {len(rollouts)} responses · mean reward {mean:.3g}")
    parts = [f'<div class="group"><div class="gh">{head}</div>']
    if row.get("prompt"):
        parts.append(_prompt_html(row["prompt"]))
    for ri, r in enumerate(rollouts):
        turns = r.get("turns") or []
        badge = (f'<span class="badge {_reward_class(r["reward"])}">reward {r["reward"]:.3g}</span>'
                 f'<span class="badge adv">advantage {_signed(r["advantage"])}</span>')
        n_turns = f" · {len(turns)} turns" if len(turns) != 1 else ""
        parts.append(f'<div class="rollout"><div class="rh">#{ri} {badge}{n_turns}</div>'
                     + "".join(_turn_html(t, ti) for ti, t in enumerate(turns)) + "</div>")
    parts.append("</div>")
    return "".join(parts)


def _sft_html(row: dict[str, Any]) -> str:
    return (f'<div class="sample"><div class="gh">datum {row.get("index")} · {row.get("num_tokens")} tokens, '
            f'{row.get("num_loss_tokens")} trained</div>{_pre(row.get("segments"))}</div>')


def _dpo_html(row: dict[str, Any]) -> str:
    return (f'<div class="sample pair"><div class="gh">pair {row.get("index")}</div>'
            f'<div class="side"><span class="lab good">chosen</span>{_pre(row.get("chosen"))}</div>'
            f'<div class="side"><span class="lab bad">rejected</span>{_pre(row.get("rejected"))}</div></div>')


RENDER = {"sft": _sft_html, "dpo": _dpo_html, "rl_group": _rl_group_html}
KIND_NAMES = {"sft": ("SFT datum", "SFT datums"), "dpo": ("DPO pair", "DPO pairs"),
              "rl_group": ("RL group", "RL groups")}


def choose_steps(available: Iterable[int], count: int = DEFAULT_STEPS) -> list[int]:
    """Up to ``count`` evenly spaced steps of ``available``, the first and the last included."""
    steps = sorted(set(available))
    if len(steps) <= count:
        return steps
    picks = {steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)}
    return sorted(picks)


def _samples_section(samples: list[dict[str, Any]], steps: Sequence[int] | None) -> tuple[str, list[int]]:
    known = [r for r in samples if r.get("kind") in RENDER]
    available = sorted({int(r["step"]) for r in known})
    chosen = sorted(set(steps) & set(available)) if steps is not None else choose_steps(available)
    if not chosen:
        return "<p class='muted'>no samples recorded</p>", []
    blocks = []
    for s in chosen:
        rows = [r for r in known if int(r["step"]) == s]
        counts = {k: sum(1 for r in rows if r["kind"] == k) for k in KIND_NAMES}
        what = ", ".join(f"{n} {KIND_NAMES[k][n != 1]}" for k, n in counts.items() if n)
        body = "".join(RENDER[r["kind"]](r) for r in rows)
        is_open = " open" if s in (chosen[0], chosen[-1]) else ""
        blocks.append(f'<details class="step"{is_open}><summary>step {s} · {what}</summary>{body}</details>')
    note = (f"<p class='muted'>steps shown: {', '.join(map(str, chosen))} of {len(available)} recorded "
            f"({', '.join(map(str, available))}); pick others with <code>cookbook report LOG --steps ...</code>. "
            "<span class='tr'>Highlighted</span> tokens are trained.</p>")
    return note + "".join(blocks), chosen


# ----------------------------------------------------------------------------------------------- page

CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg2:#f6f8fa;--acc:#2f6fde;--tr:#d7f5dd;--trb:#4ac26b}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg)}
main{max-width:1280px;margin:0 auto;padding:18px 24px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
.muted{color:var(--muted);font-size:12.5px}.kv{display:flex;flex-wrap:wrap;gap:6px 18px;margin:8px 0;font-size:13px}
.kv b{font-weight:600}.kv span{white-space:nowrap}
details.mg{margin:6px 0 10px}details.mg>summary{font-weight:600;cursor:pointer;padding:2px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px;margin-top:6px}
.chart{border:1px solid var(--line);border-radius:6px;padding:6px 6px 2px;background:#fff;min-height:40px}
.chart .name{font:600 12px ui-monospace,SFMono-Regular,Menlo,monospace;margin:0 0 2px 4px;overflow-wrap:anywhere}
.chart .last{float:right;color:var(--muted);font-weight:400}.chart .last.hover{color:var(--fg);font-weight:600}
.chart .plot{margin-top:2px}.bad-utf8{background:#ffebe9;color:#cf222e}
.uplot .u-legend{font-size:11.5px;text-align:left}.uplot .u-legend .u-marker{width:.8em;height:.8em}
table{border-collapse:collapse;font-size:12.5px}td,th{border:1px solid var(--line);padding:3px 8px;text-align:left}
th{background:var(--bg2)}td.num{font-family:ui-monospace,monospace}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12.5px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace}
pre.tok{background:var(--bg2);border:1px solid var(--line);border-radius:5px;padding:6px 8px}
pre.obs{background:#fbfbfc}.tr{background:var(--tr);box-shadow:inset 0 -2px 0 var(--trb);border-radius:2px}
.nt{color:#57606a}
details.step{border:1px solid var(--line);border-radius:6px;margin:8px 0;padding:0 10px}
details.step>summary{cursor:pointer;font-weight:600;padding:7px 0}
.group,.sample{border-top:1px dashed var(--line);padding:8px 0 10px}.gh{font-weight:600;margin-bottom:6px}
.lab{display:inline-block;font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:2px 0}
.lab.good{color:#1a7f37}.lab.bad{color:#cf222e}
.rollout{border-left:3px solid var(--line);margin:8px 0 8px 4px;padding-left:10px}
.rh{font-size:12.5px;margin-bottom:3px;font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:0 8px;margin-left:6px;font-size:11.5px;font-weight:600;background:var(--bg2);border:1px solid var(--line)}
.badge.good{background:#dafbe1;border-color:#4ac26b}.badge.bad{background:#ffebe9;border-color:#ff8182}
.badge.mid{background:#fff8c5;border-color:#d4a72c}.badge.adv{font-family:ui-monospace,monospace}
.turn{margin:4px 0 8px}.meta{font-size:11.5px;color:var(--muted);margin:2px 0}
details.think,details.tool{margin:3px 0;font-size:12.5px}details.think>summary,details.tool>summary{cursor:pointer;color:#6639ba}
details.tool>summary{color:#0550ae}details.tool.bad>summary{color:#cf222e}
details.think pre,details.tool pre{background:#fbf8ff;border:1px solid #e5dcf7;border-radius:5px;padding:6px 8px;margin-top:3px}
.pair .side{margin:4px 0}details.prompt{margin:2px 0 6px}details.prompt>summary{cursor:pointer;font-size:12.5px}
details.prompt>summary code{color:var(--fg)}details.prompt pre{margin-top:4px}
"""

JS = """
(function(){
  const data = JSON.parse(document.getElementById('metric-data').textContent);
  const fmt = v => v == null ? '–' : (Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3)) ? v.toExponential(3)
    : (+v.toPrecision(5)).toString();
  const palette = ['#2f6fde','#d1495b','#00a388','#e08e0b','#7a4fd1','#1a9bd7'];
  const axis = {stroke: '#57606a', font: '11px system-ui,sans-serif', grid: {stroke: '#eaeef2', width: 1},
                ticks: {stroke: '#d0d7de', width: 1, size: 4}};
  document.querySelectorAll('.chart[data-key]').forEach(function(el){
    const s = data[el.dataset.key]; if (!s) return;
    const readout = el.querySelector('.last'), idle = readout.textContent;
    const color = palette[(+el.dataset.group) % palette.length];
    const opts = {
      width: Math.max(240, el.clientWidth - 14), height: 150, legend: {show: false},
      cursor: {points: {size: 7, fill: color}, drag: {x: true, y: false}},
      scales: {x: {time: false}},
      series: [{}, {stroke: color, width: 1.6, fill: color + '14', points: {show: s[0].length <= 60, size: 4}}],
      axes: [Object.assign({}, axis, {size: 26, values: (u, vals) => vals.map(v => Number.isInteger(v) ? String(v) : '')}),
             Object.assign({}, axis, {size: 50, values: (u, vals) => vals.map(fmt)})],
      hooks: {setCursor: [u => {
        const i = u.cursor.idx;
        readout.textContent = i == null ? idle : 'step ' + u.data[0][i] + ': ' + fmt(u.data[1][i]);
        readout.classList.toggle('hover', i != null);
      }]}
    };
    new uPlot(opts, s, el.querySelector('.plot'));
    el.classList.add('drawn');
  });
  document.body.dataset.charts = String(document.querySelectorAll('.chart.drawn').length);
})();
"""


def _charts_html(series: dict[str, tuple[list[float], list[float | None]]]) -> tuple[str, str, int]:
    """(plots html, constants html, number of plotted metrics)."""
    groups: dict[str, list[str]] = {}
    constants: list[str] = []
    for k, (_xs, ys) in series.items():
        if _is_constant(ys):
            constants.append(k)
        else:
            groups.setdefault(group_of(k), []).append(k)
    order = sorted(groups, key=lambda g: (g == "time", g != "", g))
    parts = []
    plotted = 0
    for gi, g in enumerate(order):
        keys = groups[g]
        charts = []
        for k in keys:
            ys = series[k][1]
            last = next((y for y in reversed(ys) if y is not None), None)
            charts.append(f'<div class="chart" data-key="{_esc(k)}" data-group="{gi}"><div class="name">{_esc(k)}'
                          f'<span class="last">last {_fmt(last)}</span></div><div class="plot"></div></div>')
        plotted += len(keys)
        title = f"{g}/" if g else "main"
        is_open = "" if g == "time" else " open"
        parts.append(f'<details class="mg"{is_open}><summary>{_esc(title)} · {len(keys)} '
                     f'metric{"s" if len(keys) != 1 else ""}</summary><div class="grid">{"".join(charts)}</div></details>')
    const_html = ""
    if constants:
        rows = "".join(
            f"<tr><td>{_esc(k)}</td><td class='num'>{_fmt(next((y for y in series[k][1] if y is not None), None))}"
            f"</td><td class='num'>{len(series[k][0])}</td></tr>" for k in sorted(constants)
        )
        const_html = (f'<details class="mg"><summary>constant · {len(constants)} metrics (not plotted)</summary>'
                      f"<table><tr><th>metric</th><th>value</th><th>rows</th></tr>{rows}</table></details>")
    return "".join(parts), const_html, plotted


def _headline(config: dict[str, Any], rows: list[dict[str, Any]], n_ckpt: int) -> str:
    items = []
    for key in ("kind", "model_name", "renderer_name", "learning_rate", "lora_rank", "mode"):
        if config.get(key) is not None:
            items.append(f"<span>{_esc(key)} <b>{_esc(config[key])}</b></span>")
    steps = [int(r["step"]) for r in rows if isinstance(r.get("step"), int)]
    if steps:
        items.append(f"<span>steps <b>{min(steps)}–{max(steps)}</b></span>")
    items.append(f"<span>metric rows <b>{len(rows)}</b></span><span>checkpoints <b>{n_ckpt}</b></span>")
    return f'<div class="kv">{"".join(items)}</div>'


def write_report(log_path: str | Path, title: str = "run", steps: Sequence[int] | None = None,
                 out: str | Path | None = None) -> Path:
    """Write the report (see the module doc); ``steps`` chooses the steps whose samples are shown."""
    from cookbook.samples import read_samples

    log = RunLog(log_path)
    rows = log.metrics()
    series = metric_series(rows)
    plots, constants, _ = _charts_html(series)
    config = log.read_config() or {}
    checkpoints = log.checkpoints()
    samples_html, _ = _samples_section(read_samples(log_path), steps)
    js, css, version = _uplot()
    data = {k: [xs, ys] for k, (xs, ys) in series.items()}
    ckpt_rows = "".join(
        f"<tr><td>{_esc(c.get('name'))}</td><td class='num'>{_esc(c.get('batch', ''))}</td>"
        f"<td>{_esc(c.get('state_path', ''))}</td><td>{_esc(c.get('sampler_path', ''))}</td></tr>"
        for c in checkpoints
    )
    metric_json = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_esc(title)}</title>
<!-- uPlot {_esc(version)} (MIT, (c) Leon Sorokin), inlined: the report needs no network -->
<style>{css}</style><style>{CSS}</style><script>{js}</script></head><body><main>
<h1>{_esc(title)}</h1><div class="muted">{_esc(log.dir)}</div>
{_headline(config, rows, len(checkpoints))}
<h2>Metrics</h2>{plots or "<p class='muted'>no metrics yet</p>"}{constants}
<h2>Samples</h2>{samples_html}
<h2>Checkpoints</h2>{f"<table><tr><th>name</th><th>batch</th><th>state</th><th>sampler</th></tr>{ckpt_rows}</table>" if checkpoints else "<p class='muted'>none</p>"}
<h2>Config</h2><details><summary class="muted">config.json</summary><pre class="tok">{_esc(json.dumps(config, indent=2, sort_keys=True))}</pre></details>
</main><script type="application/json" id="metric-data">{metric_json}</script><script>{JS}</script></body></html>"""
    target = Path(out) if out is not None else log.dir / "report.html"
    atomic_write_text(target, body)
    return target


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("log_path", help="a run directory (with metrics.jsonl)")
    p.add_argument("--steps", default=None, help="comma-separated steps whose samples to show (default: spread)")
    p.add_argument("--out", default=None, help="output file (default: LOG_PATH/report.html)")
    p.add_argument("--title", default=None, help="page title (default: the folder name)")


def run(args: argparse.Namespace) -> int:
    path = Path(args.log_path).expanduser()
    if not (path / "metrics.jsonl").exists():
        raise ConfigurationError(f"{path}: no metrics.jsonl here; pass a run's log_path")
    steps = None
    if args.steps:
        try:
            steps = [int(s) for s in args.steps.split(",") if s.strip()]
        except ValueError as exc:
            raise ConfigurationError(f"--steps {args.steps!r}: expected comma-separated integers") from exc
    out = write_report(path, title=args.title or path.name, steps=steps, out=args.out)
    print(out)
    return 0
