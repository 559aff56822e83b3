"""Conformance results and their rendering: terminal tables (colour on a TTY), JSON and JUnit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

Status = Literal["PASS", "FAIL", "SKIP"]

_GREEN, _RED, _YELLOW, _CYAN, _BOLD, _RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[1m", "\x1b[0m"


@dataclass
class CheckResult:
    """One (renderer, case, check) outcome. ``message`` is one line; ``detail`` may hold token diffs and a
    unified text diff (lines starting with ``+``/``-``/``@@`` are coloured on a terminal)."""

    renderer: str
    case: str
    check: str
    status: Status
    message: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "FAIL"


def use_colour(stream: TextIO, force: bool | None = None) -> bool:
    if force is not None:
        return force
    return bool(getattr(stream, "isatty", lambda: False)())


def _c(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{_RESET}" if colour else text


def colour_detail(detail: str, colour: bool) -> str:
    if not colour:
        return detail
    out = []
    for ln in detail.splitlines():
        if ln.startswith(("+++", "---")):
            out.append(_c(ln, _BOLD, True))
        elif ln.startswith("+"):
            out.append(_c(ln, _GREEN, True))
        elif ln.startswith("-"):
            out.append(_c(ln, _RED, True))
        elif ln.startswith("@@"):
            out.append(_c(ln, _CYAN, True))
        else:
            out.append(ln)
    return "\n".join(out)


def _status(s: str, colour: bool) -> str:
    code = {"PASS": _GREEN, "FAIL": _RED, "SKIP": _YELLOW}.get(s, "")
    return _c(s, code, colour)


def format_table(results: Sequence[CheckResult], colour: bool = False, details: bool = True) -> str:
    """``case  check  STATUS  message`` rows; failures followed by their details (indented)."""
    if not results:
        return "(no checks)"
    wc = max(len("case"), *(len(r.case) for r in results))
    wk = max(len("check"), *(len(r.check) for r in results))
    lines = [f"{'case':<{wc}}  {'check':<{wk}}  status  message", f"{'-' * wc}  {'-' * wk}  ------  -------"]
    for r in results:
        pad = " " * (6 - len(r.status))
        lines.append(f"{r.case:<{wc}}  {r.check:<{wk}}  {_status(r.status, colour)}{pad}  {r.message}")
        if details and r.status == "FAIL" and r.detail:
            lines += ["    " + ln for ln in colour_detail(r.detail, colour).splitlines()]
    return "\n".join(lines)


def summary_counts(results: Iterable[CheckResult]) -> dict[str, int]:
    out = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    for r in results:
        out[r.status] += 1
    return out


def group_of(check: str) -> str:
    """The summary column of a check: ``prompt.tokens`` -> ``prompt``, ``property.roundtrip`` -> ``property``."""
    return check.split(".", 1)[0]


def format_summary(results: Sequence[CheckResult], colour: bool = False) -> str:
    """One row per renderer, one column per check group: ``passed/total`` with failures and skips noted."""
    renderers = list(dict.fromkeys(r.renderer for r in results))
    groups = list(dict.fromkeys(group_of(r.check) for r in results))
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        cnt = cells.setdefault((r.renderer, group_of(r.check)), {"PASS": 0, "FAIL": 0, "SKIP": 0})
        cnt[r.status] += 1

    def cell(rn: str, g: str) -> tuple[str, str]:
        cnt = cells.get((rn, g))
        if not cnt:
            return "-", "-"
        total = sum(cnt.values())
        txt = f"{cnt['PASS']}/{total}"
        if cnt["FAIL"]:
            txt += f" {cnt['FAIL']}F"
        if cnt["SKIP"]:
            txt += f" {cnt['SKIP']}S"
        return txt, ("FAIL" if cnt["FAIL"] else "PASS" if cnt["PASS"] else "SKIP")

    wr = max(len("renderer"), *(len(r) for r in renderers))
    widths = {g: max(len(g), *(len(cell(rn, g)[0]) for rn in renderers)) for g in groups}
    head = f"{'renderer':<{wr}}  " + "  ".join(f"{g:<{widths[g]}}" for g in groups) + "  result"
    lines = [head, "-" * len(head)]
    for rn in renderers:
        row = [f"{rn:<{wr}}"]
        for g in groups:
            txt, st = cell(rn, g)
            padded = f"{txt:<{widths[g]}}"
            row.append(_c(padded, {"FAIL": _RED, "PASS": _GREEN, "SKIP": _YELLOW}[st], colour) if colour and txt != "-" else padded)
        failed = any(r.status == "FAIL" for r in results if r.renderer == rn)
        row.append(_status("FAIL" if failed else "PASS", colour))
        lines.append("  ".join(row))
    c = summary_counts(results)
    lines.append(f"{c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped")
    return "\n".join(lines)


def to_json(results: Sequence[CheckResult], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": 1,
        **(meta or {}),
        "summary": summary_counts(results),
        "ok": all(r.ok for r in results),
        "results": [asdict(r) for r in results],
    }


def write_json(path: str | Path, results: Sequence[CheckResult], meta: dict[str, Any] | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_json(results, meta), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return p


def write_junit_report(path: str | Path, suite: str, results: Sequence[CheckResult]) -> Path:
    from cookbook.conformance.junit import write_junit

    rows = [
        (f"{r.renderer}.{r.case}", r.check, r.ok, (f"{r.status}: {r.message}\n{r.detail}".strip()))
        for r in results
    ]
    return write_junit(path, suite, rows)


def print_results(results: Sequence[CheckResult], stream: TextIO | None = None, colour: bool | None = None) -> None:
    out = stream or sys.stdout
    print(format_table(results, use_colour(out, colour)), file=out)
