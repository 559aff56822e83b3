"""``cookbook conform matrix``: every (implementation x spec renderer name) pair the implementations offer.

Writes ``matrix.json``::

    {"implementations": [...], "renderers": [...], "unavailable": {impl: reason},
     "cells": [{"implementation", "renderer", "native", "passed", "failed", "skipped", "errors",
                "causes": [{"key", "status", "checks", "cases", "example"}]}]}

and a self-contained ``matrix.html`` (no external resources): rows are renderer names, columns implementations,
cells coloured by result; clicking a cell shows its grouped causes, each naming the first differing token.
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_IMPLS = ("cookbook", "tinker-cookbook", "tml-renderers", "pi-renderers", "hf-template")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impl", action="append", metavar="IMPL",
                        help=f"implementation (repeatable; default: {', '.join(DEFAULT_IMPLS)}; module:factory too)")
    parser.add_argument("--renderer", action="append", metavar="NAME", help="restrict to these spec renderer names")
    parser.add_argument("--out", type=Path, default=Path("reports/matrix"), help="output folder (default reports/matrix)")
    parser.add_argument("--no-properties", action="store_true", help="skip the random-conversation property checks")
    parser.add_argument("--examples", type=int, default=10, help="random conversations per property (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomised)")


def cell_of(impl: str, renderer: str, native: str, results: Sequence[Any]) -> dict[str, Any]:
    from cookbook.conformance.report import group_causes, summary_counts

    c = summary_counts(results)
    return {
        "implementation": impl,
        "renderer": renderer,
        "native": native,
        "passed": c["PASS"],
        "failed": c["FAIL"],
        "skipped": c["SKIP"],
        "errors": c["ERROR"],
        "causes": [
            {"key": k.key, "status": k.status, "checks": k.checks, "cases": k.cases, "example": k.example[:4000]}
            for k in group_causes(results)
        ],
    }


def run_matrix(
    impls: Sequence[str] = DEFAULT_IMPLS,
    renderers: Sequence[str] | None = None,
    properties: bool = True,
    examples: int = 10,
    seed: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run every offered pair; the ``matrix.json`` document."""
    from cookbook.conformance.impls import Unsupported, get_implementation
    from cookbook.conformance.renderer_cli import run_one
    from cookbook.conformance.spec import all_spec_paths, load_spec, spec_path_for
    from cookbook.errors import ConfigurationError

    names = [p.stem for p in all_spec_paths()]
    if renderers:
        unknown = sorted(set(renderers) - set(names))
        if unknown:
            raise ConfigurationError(f"--renderer: no spec for {unknown}; specs: {', '.join(names)}")
        names = [n for n in names if n in renderers]
    doc: dict[str, Any] = {"implementations": [], "renderers": names, "unavailable": {}, "cells": []}
    for key in impls:
        impl = get_implementation(key)
        doc["implementations"].append(key)
        why = impl.available()
        if why is not None:
            doc["unavailable"][key] = why
            continue
        for name in impl.offers(names):
            try:
                native = impl.native_name(name)
            except Unsupported:
                continue
            if progress:
                progress(f"{key} x {name} ({native})")
            results = run_one(key, name, name, load_spec(spec_path_for(name)), None, properties, examples, seed)
            doc["cells"].append(cell_of(key, name, native, results))
    return doc


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}
table{border-collapse:collapse}
th,td{border:1px solid #bbb;padding:.35em .6em;text-align:center;font-size:.9em}
th{background:#eee}
td.name{text-align:left;font-family:monospace}
td.cell{cursor:pointer;min-width:8em}
td.pass{background:#b7e4b0}td.fail{background:#f4b4ad}td.error{background:#d7b2ea}
td.skip{background:#e4e4e4}td.none{background:#fff;color:#aaa;cursor:default}
td.sel{outline:3px solid #333}
#detail{margin-top:1.2em;max-width:110em}
#detail pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.8em}
.key{font-family:monospace;font-weight:bold}
.legend span{display:inline-block;padding:.1em .5em;margin-right:.4em;border:1px solid #bbb}
"""

_JS = """
const data = JSON.parse(document.getElementById('matrix-data').textContent);
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function show(td){
  document.querySelectorAll('td.sel').forEach(e=>e.classList.remove('sel'));
  td.classList.add('sel');
  const c = data.cells[+td.dataset.i];
  let h = `<h2>${esc(c.implementation)} &times; ${esc(c.renderer)} <small>(${esc(c.native)})</small></h2>`;
  h += `<p>${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped, ${c.errors} errors</p>`;
  if(!c.causes.length){h += '<p>No failures.</p>';}
  c.causes.forEach((k,n)=>{
    h += `<h3>${n+1}. ${esc(k.status)} <span class="key">${esc(k.key)}</span></h3>`;
    h += `<p>checks: ${esc(k.checks.join(', '))}<br>cases: ${esc(k.cases.join(', '))}</p>`;
    if(k.example){h += `<pre>${esc(k.example)}</pre>`;}
  });
  document.getElementById('detail').innerHTML = h;
}
document.querySelectorAll('td.cell').forEach(td=>td.addEventListener('click',()=>show(td)));
"""


def _class(cell: dict[str, Any]) -> str:
    if cell["errors"]:
        return "error"
    if cell["failed"]:
        return "fail"
    return "pass" if cell["passed"] else "skip"


def render_html(doc: dict[str, Any]) -> str:
    """The self-contained page (inline CSS, JS and data)."""
    impls, names = doc["implementations"], doc["renderers"]
    index = {(c["implementation"], c["renderer"]): i for i, c in enumerate(doc["cells"])}
    head = "".join(f"<th>{html.escape(i)}</th>" for i in impls)
    rows = []
    for n in names:
        tds = [f'<td class="name">{html.escape(n)}</td>']
        for impl in impls:
            i = index.get((impl, n))
            if i is None:
                why = doc["unavailable"].get(impl, "not offered")
                tds.append(f'<td class="none" title="{html.escape(why)}">&mdash;</td>')
                continue
            c = doc["cells"][i]
            txt = f"{c['passed']}&#10003; {c['failed']}&#10007;"
            if c["errors"]:
                txt += f" {c['errors']}E"
            if c["causes"]:
                txt += f"<br><small>{len(c['causes'])} cause(s)</small>"
            tds.append(f'<td class="cell {_class(c)}" data-i="{i}" title="{html.escape(c["native"])}">{txt}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    unavailable = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in doc["unavailable"].items())
    payload = json.dumps(doc, ensure_ascii=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Renderer conformance matrix</title>
<style>{_CSS}</style></head><body>
<h1>Renderer conformance matrix</h1>
<p class="legend"><span style="background:#b7e4b0">all pass</span><span style="background:#f4b4ad">failures</span>
<span style="background:#d7b2ea">adapter errors</span><span style="background:#e4e4e4">skipped only</span>
<span>&mdash; not offered</span> Click a cell for its grouped causes.</p>
<table><thead><tr><th>renderer</th>{head}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
{f"<p>Unavailable here:</p><ul>{unavailable}</ul>" if unavailable else ""}
<div id="detail"></div>
<script type="application/json" id="matrix-data">{payload}</script>
<script>{_JS}</script>
</body></html>
"""


def summary_markdown(doc: dict[str, Any]) -> str:
    """A Markdown table (renderers x implementations: ``passed/failed/errors``, causes) for the README."""
    impls = doc["implementations"]
    index = {(c["implementation"], c["renderer"]): c for c in doc["cells"]}
    lines = ["| renderer | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
    for n in doc["renderers"]:
        row = []
        for impl in impls:
            c = index.get((impl, n))
            row.append("—" if c is None else f"{c['passed']}✓ {c['failed']}✗" + (f" {c['errors']}E" if c["errors"] else "")
                       + f" ({len(c['causes'])} causes)")
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_matrix(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    from cookbook.conformance.report import atomic_write_text

    j = atomic_write_text(out / "matrix.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    h = atomic_write_text(out / "matrix.html", render_html(doc))
    return j, h


def run(args: argparse.Namespace) -> int:
    import sys

    doc = run_matrix(args.impl or DEFAULT_IMPLS, args.renderer, not args.no_properties, args.examples, args.seed,
                     progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    j, h = write_matrix(doc, args.out)
    print(summary_markdown(doc))
    errors = sum(1 for c in doc["cells"] if c["errors"])
    print(f"\n{len(doc['cells'])} cells, {errors} with adapter errors; unavailable: {sorted(doc['unavailable']) or 'none'}")
    print(f"wrote {j} and {h}")
    return 1 if errors else 0
