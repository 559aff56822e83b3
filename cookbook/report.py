"""A self-contained HTML report of a run: metric plots (inline SVG) and sample rollouts.

``<log_path>/report.html`` is written atomically from ``metrics.jsonl``, ``config.json``,
``checkpoints.jsonl`` and, when present, ``samples.jsonl`` (rows ``{"step", "tokens": [str, ...],
"weights": [float, ...], "reward"?}``), whose trained tokens (weight > 0) are coloured.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cookbook.runlog import RunLog, atomic_write_text, read_jsonl

_W, _H, _PAD = 360, 160, 28


def _svg_plot(name: str, xs: Sequence[float], ys: Sequence[float]) -> str:
    pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return _PAD + (x - x0) / (x1 - x0) * (_W - 2 * _PAD)

    def sy(y: float) -> float:
        return _H - _PAD - (y - y0) / (y1 - y0) * (_H - 2 * _PAD)

    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="1.8"/>' for x, y in pts) if len(pts) <= 60 else ""
    return (
        f'<figure><svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(name)}">'
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fafafa" stroke="#ddd"/>'
        f'<path d="{path}" fill="none" stroke="#3568d4" stroke-width="1.6"/><g fill="#3568d4">{dots}</g>'
        f'<text x="{_PAD}" y="14" font-size="11">{y1:.4g}</text>'
        f'<text x="{_PAD}" y="{_H - 8}" font-size="11">{y0:.4g}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 8}" font-size="11" text-anchor="end">step {x1:.0f}</text>'
        f"</svg><figcaption>{html.escape(name)}</figcaption></figure>"
    )


def _samples_html(samples: list[dict[str, Any]], limit: int = 12) -> str:
    parts = []
    for s in samples[-limit:]:
        toks = s.get("tokens", [])
        ws = s.get("weights", [0.0] * len(toks))
        spans = "".join(
            f'<span class="{"t" if w > 0 else "o"}">{html.escape(str(t))}</span>' for t, w in zip(toks, ws)
        )
        head = f"step {s.get('step', '?')}" + (f" · reward {s['reward']:.3g}" if "reward" in s else "")
        parts.append(f"<div class='sample'><div class='h'>{html.escape(head)}</div><pre>{spans}</pre></div>")
    return "".join(parts)


def write_report(log_path: str | Path, title: str = "run") -> Path:
    log = RunLog(log_path)
    rows = log.metrics()
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    plots = []
    for k in keys:
        xs = [float(r["step"]) for r in rows if isinstance(r.get(k), int | float)]
        ys = [float(r[k]) for r in rows if isinstance(r.get(k), int | float)]
        if len(xs) > 1 and not k.startswith("time/"):
            plots.append(_svg_plot(k, xs, ys))
    config = log.read_config() or {}
    samples = read_jsonl(Path(log_path) / "samples.jsonl")
    checkpoints = log.checkpoints()
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}figure{{display:inline-block;margin:6px}}
figcaption{{font-size:12px;text-align:center}}pre{{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:6px}}
.t{{background:#cdeccd}}.o{{color:#666}}.sample .h{{font-size:12px;font-weight:600}}table{{font-size:12px;border-collapse:collapse}}
td,th{{border:1px solid #ddd;padding:2px 6px}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{len(rows)} metric rows · {len(checkpoints)} checkpoints · log: {html.escape(str(log_path))}</p>
<h2>Metrics</h2>{"".join(plots) or "<p>no metrics yet</p>"}
<h2>Samples</h2><p>Trained tokens are <span class="t">highlighted</span>.</p>{_samples_html(samples) or "<p>none recorded</p>"}
<h2>Checkpoints</h2><table><tr><th>name</th><th>batch</th><th>state</th></tr>{"".join(
        f"<tr><td>{html.escape(str(c.get('name')))}</td><td>{c.get('batch')}</td><td>{html.escape(str(c.get('state_path', '')))}</td></tr>"
        for c in checkpoints)}</table>
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre></body></html>"""
    out = Path(log_path) / "report.html"
    atomic_write_text(out, body)
    return out
