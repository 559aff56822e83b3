"""``cookbook conform renderer NAME|module:factory [options]``: a renderer against its spec, goldens and properties.

Examples::

    cookbook conform renderer llama3
    cookbook conform renderer mypkg.render:MyLlama --spec specs/renderers/llama3.yaml
    cookbook conform renderer --all --json report.json --junit report.xml

Exit codes: 0 every check passed (or skipped), 1 a check failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("renderer", nargs="?", help="registered renderer name or module:factory (factory(tokenizer) -> renderer)")
    parser.add_argument("--tokenizer", help="tokenizer folder or catalogue model (default: the spec's tokenizer)")
    parser.add_argument("--spec", type=Path, help="spec file (default: specs/renderers/<renderer>.yaml)")
    parser.add_argument("--all", action="store_true", help="every registered renderer that has a spec; one summary table")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="machine-readable report (to FILE, or stdout)")
    parser.add_argument("--junit", metavar="FILE", help="JUnit XML report")
    parser.add_argument("--no-properties", action="store_true", help="skip the random-conversation property checks")
    parser.add_argument("--examples", type=int, default=25, help="random conversations per property (default 25)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomised)")
    parser.add_argument("--color", action="store_true", default=None, help="force colour")
    parser.add_argument("--no-color", dest="color", action="store_false", help="no colour")
    parser.add_argument("-q", "--quiet", action="store_true", help="only failures and the summary")


def resolve_targets(args: argparse.Namespace) -> list[tuple[str, str, Path]]:
    """``(label, renderer ref, spec path)`` for each renderer to run."""
    from cookbook.conformance.spec import spec_path_for
    from cookbook.errors import ConfigurationError
    from cookbook.renderers.registry import registered_renderer_names

    if args.all:
        if args.renderer:
            raise ConfigurationError("give a renderer name or --all, not both")
        out = []
        for name in registered_renderer_names():
            p = spec_path_for(name)
            if p.exists():
                out.append((name, name, p))
        return out
    if not args.renderer:
        raise ConfigurationError("give a renderer name (or module:factory), or --all")
    ref = args.renderer
    spec = args.spec
    if spec is None:
        name = ref.split(":")[-1] if ":" in ref else ref
        spec = spec_path_for(name)
        if not spec.exists():
            raise ConfigurationError(
                f"no spec for {ref!r} at {spec}; pass --spec FILE (e.g. the spec of the family your renderer imitates)"
            )
    return [(ref, ref, Path(spec))]


def run_targets(
    targets: list[tuple[str, str, Path]],
    tokenizer: str | None = None,
    properties: bool = True,
    examples: int = 25,
    seed: int | None = None,
) -> list[Any]:
    from cookbook.conformance.renderer_runner import RunOptions, run_spec
    from cookbook.conformance.spec import load_spec
    from cookbook.renderers.registry import get_renderer
    from cookbook.tokenizers import get_tokenizer

    results: list[Any] = []
    for label, ref, path in targets:
        spec = load_spec(path)
        tok_name = tokenizer or spec.tokenizer
        tok = get_tokenizer(tok_name)
        renderer = get_renderer(ref, tok)
        results += run_spec(renderer, spec, tok, tok_name, RunOptions(properties=properties, examples=examples, seed=seed), label=label)
    return results


def emit(results: list[Any], args: argparse.Namespace, suite: str, meta: dict[str, Any]) -> int:
    from cookbook.conformance.report import (
        format_summary,
        format_table,
        to_json,
        use_colour,
        write_json,
        write_junit_report,
    )

    colour = use_colour(sys.stdout, args.color)
    json_to_stdout = getattr(args, "json", None) == "-"
    out = sys.stderr if json_to_stdout else sys.stdout
    shown = [r for r in results if r.status == "FAIL"] if args.quiet else results
    renderers = list(dict.fromkeys(r.renderer for r in results))
    if not getattr(args, "all", False) and len(renderers) == 1:
        print(format_table(shown, colour), file=out)
    else:
        for rn in renderers:
            part = [r for r in shown if r.renderer == rn]
            if part:
                print(f"== {rn}", file=out)
                print(format_table(part, colour), file=out)
                print(file=out)
    print(file=out)
    print(format_summary(results, colour), file=out)
    if getattr(args, "json", None):
        if json_to_stdout:
            print(json.dumps(to_json(results, meta), indent=2, ensure_ascii=False))
        else:
            p = write_json(args.json, results, meta)
            print(f"JSON report: {p}", file=out)
    if getattr(args, "junit", None):
        p = write_junit_report(args.junit, suite, results)
        print(f"JUnit report: {p}", file=out)
    return 0 if all(r.ok for r in results) else 1


def run(args: argparse.Namespace) -> int:
    targets = resolve_targets(args)
    if not targets:
        print("no registered renderer has a spec", file=sys.stderr)
        return 1
    results = run_targets(targets, args.tokenizer, not args.no_properties, args.examples, args.seed)
    meta = {"command": "conform renderer", "renderers": [t[0] for t in targets], "examples": args.examples}
    return emit(results, args, "renderer-conformance", meta)
