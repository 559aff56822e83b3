"""A small generic JUnit XML writer for conformance reports (one testcase per (case, check))."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_junit"]


def write_junit(path: str | Path, suite_name: str, results: Sequence[tuple[str, str, bool, str]]) -> Path:
    """Write ``results`` as a JUnit XML file with one ``<testsuite name=suite_name>``.

    Each result is ``(case, check, ok, message)``: a ``<testcase classname=case name=check>``, with a
    ``<failure message=...>`` holding ``message`` when ``ok`` is false (a passing message goes to
    ``<system-out>``). Creates the parent folder; returns the path written.
    """
    failures = sum(1 for *_, ok, _ in results if not ok)
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(results)), failures=str(failures), errors="0")
    for case, check, ok, message in results:
        tc = ET.SubElement(suite, "testcase", classname=f"{suite_name}.{case}", name=check)
        if not ok:
            failure = ET.SubElement(tc, "failure", message=message.splitlines()[0] if message else "failed")
            failure.text = message
        elif message:
            ET.SubElement(tc, "system-out").text = message
    root = ET.Element("testsuites", name=suite_name, tests=str(len(results)), failures=str(failures))
    root.append(suite)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out
