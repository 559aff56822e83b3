"""The one result type of every conformance runner (renderer, property and maths checks) and its reporter.

:class:`CheckResult` is one (subject, case, check) outcome with a status ``PASS`` / ``FAIL`` / ``SKIP`` /
``ERROR``; ``ERROR`` means the check could not be run because an *adapter* broke (a bug in the translation
layer, not a conformance failure of the implementation). Each failure carries a ``cause``: a short key naming
what differs (e.g. the first differing token, with both ids and both decodings), so one planted bug that breaks
forty checks shows up as one line (:func:`group_causes`).

Outputs: a terminal table (colour on a TTY), grouped causes, a subject x check-group summary, JSON and JUnit.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

Status = Literal["PASS", "FAIL", "SKIP", "ERROR"]
STATUSES: tuple[Status, ...] = ("PASS", "FAIL", "SKIP", "ERROR")

_GREEN, _RED, _YELLOW, _CYAN, _MAGENTA, _BOLD, _RESET = (
    "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[35m", "\x1b[1m", "\x1b[0m",
)
_STATUS_COLOUR = {"PASS": _GREEN, "FAIL": _RED, "SKIP": _YELLOW, "ERROR": _MAGENTA}


@dataclass
class CheckResult:
    """One (subject, case, check) outcome.

    ``subject`` is the renderer name (or the quantity, for maths checks); ``message`` is one line; ``detail`` may
    hold token diffs and a unified text diff (lines starting with ``+``/``-``/``@@`` are coloured on a terminal);
    ``cause`` is the grouping key of a failure (defaults to ``check: message``); ``implementation`` names the
    adapter that was checked (``cookbook``, ``tinker-cookbook``, ...).
    """

    subject: str
    case: str
    check: str
    status: Status
    message: str = ""
    detail: str = ""
    cause: str = ""
    implementation: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("PASS", "SKIP")

    @property
    def renderer(self) -> str:
        return self.subject

    @property
    def quantity(self) -> str:
        return self.subject

    def cause_key(self) -> str:
        return self.cause or f"{self.check}: {self.message.splitlines()[0] if self.message else self.status}"


# ----------------------------------------------------------------------------------------------- colour


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
    return _c(s, _STATUS_COLOUR.get(s, ""), colour)


# ----------------------------------------------------------------------------------------------- tables


def format_table(results: Sequence[CheckResult], colour: bool = False, details: bool = True) -> str:
    """``case  check  STATUS  message`` rows; failures and errors followed by their details (indented)."""
    if not results:
        return "(no checks)"
    wc = max(len("case"), *(len(r.case) for r in results))
    wk = max(len("check"), *(len(r.check) for r in results))
    lines = [f"{'case':<{wc}}  {'check':<{wk}}  status  message", f"{'-' * wc}  {'-' * wk}  ------  -------"]
    for r in results:
        pad = " " * (6 - len(r.status))
        lines.append(f"{r.case:<{wc}}  {r.check:<{wk}}  {_status(r.status, colour)}{pad}  {r.message}")
        if details and r.status in ("FAIL", "ERROR") and r.detail:
            lines += ["    " + ln for ln in colour_detail(r.detail, colour).splitlines()]
    return "\n".join(lines)


def summary_counts(results: Iterable[CheckResult]) -> dict[str, int]:
    out: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for r in results:
        out[r.status] += 1
    return out


def verdict(counts: dict[str, int]) -> Status:
    """The status of a group of checks from its counts: ERROR, else FAIL, else PASS when any check passed, else
    SKIP (a group whose every check was skipped checked nothing)."""
    return "ERROR" if counts["ERROR"] else "FAIL" if counts["FAIL"] else "PASS" if counts["PASS"] else "SKIP"


def group_of(check: str) -> str:
    """The summary column of a check: ``prompt.tokens`` -> ``prompt``, ``property.roundtrip`` -> ``property``."""
    return check.split(".", 1)[0]


def _label(r: CheckResult, with_impl: bool) -> str:
    return f"{r.implementation}:{r.subject}" if with_impl and r.implementation else r.subject


def format_summary(results: Sequence[CheckResult], colour: bool = False) -> str:
    """One row per subject, one column per check group: ``passed/total`` with failures, skips, errors noted."""
    if not results:
        return "no checks run"
    with_impl = len({r.implementation for r in results}) > 1
    subjects = list(dict.fromkeys(_label(r, with_impl) for r in results))
    groups = list(dict.fromkeys(group_of(r.check) for r in results))
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for r in results:
        cnt = cells.setdefault((_label(r, with_impl), group_of(r.check)), dict.fromkeys(STATUSES, 0))
        cnt[r.status] += 1

    def cell(rn: str, g: str) -> tuple[str, str]:
        cnt = cells.get((rn, g))
        if not cnt:
            return "-", "-"
        total = sum(cnt.values())
        txt = f"{cnt['PASS']}/{total}"
        for st, letter in (("FAIL", "F"), ("ERROR", "E"), ("SKIP", "S")):
            if cnt[st]:
                txt += f" {cnt[st]}{letter}"
        return txt, verdict(cnt)

    head_name = "implementation:subject" if with_impl else "subject"
    wr = max(len(head_name), *(len(r) for r in subjects))
    widths = {g: max(len(g), *(len(cell(rn, g)[0]) for rn in subjects)) for g in groups}
    head = f"{head_name:<{wr}}  " + "  ".join(f"{g:<{widths[g]}}" for g in groups) + "  result"
    lines = [head, "-" * len(head)]
    for rn in subjects:
        row = [f"{rn:<{wr}}"]
        for g in groups:
            txt, st = cell(rn, g)
            padded = f"{txt:<{widths[g]}}"
            row.append(_c(padded, _STATUS_COLOUR[st], colour) if colour and txt != "-" else padded)
        row.append(_status(verdict(summary_counts(r for r in results if _label(r, with_impl) == rn)), colour))
        lines.append("  ".join(row))
    lines.append(summary_line(results))
    return "\n".join(lines)


def summary_line(results: Sequence[CheckResult]) -> str:
    """``N passed, N failed, N skipped, N errors`` (the plain closing line CI readers look for)."""
    c = summary_counts(results)
    return f"{c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped, {c['ERROR']} errors"


# ----------------------------------------------------------------------------------------------- causes


@dataclass
class Cause:
    """One distinct reason for failures: the key, the checks and cases it explains, an example detail."""

    key: str
    status: Status
    subject: str
    implementation: str
    checks: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    example: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def group_causes(results: Sequence[CheckResult]) -> list[Cause]:
    """Failures and errors grouped by (implementation, subject, cause key), in order of first appearance."""
    out: dict[tuple[str, str, str, str], Cause] = {}
    for r in results:
        if r.status not in ("FAIL", "ERROR"):
            continue
        k = (r.implementation, r.subject, r.status, r.cause_key())
        c = out.get(k)
        if c is None:
            c = out[k] = Cause(r.cause_key(), r.status, r.subject, r.implementation, example=r.detail)
        if r.check not in c.checks:
            c.checks.append(r.check)
        if r.case not in c.cases:
            c.cases.append(r.case)
    return list(out.values())


def _short_list(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def format_causes(results: Sequence[CheckResult], colour: bool = False, examples: bool = True) -> str:
    """One line per distinct cause with the checks and cases it explains (and one example detail)."""
    causes = group_causes(results)
    if not causes:
        return "no failures"
    with_impl = len({r.implementation for r in results}) > 1
    lines = []
    subjects = list(dict.fromkeys((c.implementation, c.subject) for c in causes))
    for impl, subj in subjects:
        mine = [c for c in causes if (c.implementation, c.subject) == (impl, subj)]
        n = sum(len(c.cases) for c in mine)
        title = f"{impl}:{subj}" if with_impl and impl else subj
        lines.append(_c(f"{title}: {len(mine)} distinct cause(s) explain {n} failing case(s)", _BOLD, colour))
        for i, c in enumerate(mine, 1):
            lines.append(f"  {i}. {_status(c.status, colour)} {c.key}")
            lines.append(f"     checks: {_short_list(c.checks)}")
            lines.append(f"     cases:  {_short_list(c.cases)}")
            if examples and c.example:
                ex = c.example.splitlines()[:14]
                lines += ["       " + ln for ln in colour_detail("\n".join(ex), colour).splitlines()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- files


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def run_ok(results: Sequence[CheckResult]) -> bool:
    """A run passes when no check failed or errored and at least one passed (every check skipped checks nothing)."""
    return verdict(summary_counts(results)) == "PASS"


def to_json(results: Sequence[CheckResult], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": 2,
        **(meta or {}),
        "summary": summary_counts(results),
        "ok": run_ok(results),
        "causes": [c.to_json() for c in group_causes(results)],
        "results": [asdict(r) for r in results],
    }


def write_json(path: str | Path, results: Sequence[CheckResult], meta: dict[str, Any] | None = None) -> Path:
    return atomic_write_text(path, json.dumps(to_json(results, meta), indent=2, ensure_ascii=False) + "\n")


def junit_xml(suite_name: str, results: Sequence[CheckResult]) -> str:
    """JUnit XML: one ``<testcase classname=suite.impl.subject.case name=check>`` per result, with ``<failure>``,
    ``<error>`` (adapter errors) or ``<skipped>``."""
    c = summary_counts(results)
    attrs = {"tests": str(len(results)), "failures": str(c["FAIL"]), "errors": str(c["ERROR"]), "skipped": str(c["SKIP"])}
    suite = ET.Element("testsuite", {"name": suite_name, **attrs})
    for r in results:
        cls = ".".join(p for p in (suite_name, r.implementation, r.subject, r.case) if p)
        tc = ET.SubElement(suite, "testcase", classname=cls, name=r.check)
        text = f"{r.message}\n{r.detail}".strip()
        if r.status == "FAIL":
            ET.SubElement(tc, "failure", message=r.cause_key()).text = text
        elif r.status == "ERROR":
            ET.SubElement(tc, "error", message=r.message or "adapter error").text = text
        elif r.status == "SKIP":
            ET.SubElement(tc, "skipped", message=r.message)
        elif text:
            ET.SubElement(tc, "system-out").text = text
    root = ET.Element("testsuites", {"name": suite_name, **attrs})
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit_report(path: str | Path, suite: str, results: Sequence[CheckResult]) -> Path:
    return atomic_write_text(path, junit_xml(suite, results))


# ----------------------------------------------------------------------------------------------- CLI output


def emit(
    results: Sequence[CheckResult],
    *,
    suite: str,
    meta: dict[str, Any],
    json_to: str | None = None,
    junit_to: str | None = None,
    verbose: bool = False,
    colour: bool | None = None,
    header: str | None = None,
) -> int:
    """Print a run's report and write the requested files; the exit code (0 ok, 1 a check failed or errored, or
    nothing passed: every check skipped, or none ran).

    The terminal shows the failures grouped by cause (``verbose``: every result as a table first), then the
    summary. ``json_to == "-"`` prints the JSON report to stdout and the human report to stderr.
    """
    out = sys.stderr if json_to == "-" else sys.stdout
    col = use_colour(out, colour)
    if header:
        print(header, file=out)
    if verbose:
        print(format_table(results, col), file=out)
        print(file=out)
    if any(r.status in ("FAIL", "ERROR") for r in results):
        print(format_causes(results, col), file=out)
        print(file=out)
    print(format_summary(results, col), file=out)
    if json_to:
        if json_to == "-":
            print(json.dumps(to_json(results, meta), indent=2, ensure_ascii=False))
        else:
            print(f"JSON report: {write_json(json_to, results, meta)}", file=out)
    if junit_to:
        print(f"JUnit report: {write_junit_report(junit_to, suite, results)}", file=out)
    status = verdict(summary_counts(results))
    if status == "SKIP":  # every check skipped, or none ran
        why = "no checks ran" if not results else f"all {len(results)} check(s) were skipped"
        print(f"nothing was checked ({why}), so the run does not pass", file=out)
        reasons = list(dict.fromkeys(r.message for r in results if r.message))
        for reason in reasons[:3]:
            print(f"  skipped: {reason}", file=out)
        if len(reasons) > 3:
            print(f"  ... and {len(reasons) - 3} other reason(s) (-v lists every check)", file=out)
    return 0 if status == "PASS" else 1
