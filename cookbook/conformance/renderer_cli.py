"""``cookbook conform renderer NAME|module:factory [options]``: a renderer against its spec, goldens and properties.

Examples::

    cookbook conform renderer llama3
    cookbook conform renderer qwen3 --impl tinker-cookbook --tokenizer Qwen/Qwen3-8B
    cookbook conform renderer llama3 --impl mypkg.render:MyLlama      # a factory in the current folder
    cookbook conform renderer mypkg.render:MyLlama --spec specs/renderers/llama3.yaml
    cookbook conform renderer --all --json report.json --junit report.xml

The report groups failures by cause (one line per distinct first differing token or trained-span difference,
with the cases it explains); ``--verbose`` lists every check.

Exit codes: 0 every check passed (or skipped), 1 a check failed or an adapter errored, 2 a usage or configuration
error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

IMPL_HELP = (
    "implementation to check: cookbook (default), tinker-cookbook, tml-renderers, pi-renderers, hf-template, "
    "or module:factory (factory(tokenizer) -> renderer, imported from the current folder)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("renderer", nargs="?", help="spec renderer name (or module:factory, with --spec)")
    parser.add_argument("--impl", default="cookbook", metavar="IMPL", help=IMPL_HELP)
    parser.add_argument("--tokenizer", help="tokenizer folder or catalogue model (default: the spec's tokenizer)")
    parser.add_argument("--spec", type=Path, help="spec file (default: specs/renderers/<renderer>.yaml)")
    parser.add_argument("--all", action="store_true", help="every renderer name the implementation offers that has a spec")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="machine-readable report (to FILE, or stdout)")
    parser.add_argument("--junit", metavar="FILE", help="JUnit XML report")
    parser.add_argument("--no-properties", action="store_true", help="skip the random-conversation property checks")
    parser.add_argument("--examples", type=int, default=25, help="random conversations per property (default 25)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomised)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every check, not only the grouped causes")
    parser.add_argument("--color", action="store_true", default=None, help="force colour")
    parser.add_argument("--no-color", dest="color", action="store_false", help="no colour")
    parser.add_argument("-q", "--quiet", action="store_true", help="(kept for compatibility: the default is terse)")


def resolve_targets(args: argparse.Namespace) -> list[tuple[str, str, Path]]:
    """``(label, renderer ref, spec path)`` for each renderer to run."""
    from cookbook.conformance.impls import get_implementation
    from cookbook.conformance.spec import all_spec_paths, spec_path_for
    from cookbook.errors import ConfigurationError

    impl = get_implementation(getattr(args, "impl", "cookbook"))
    why = impl.available()
    if why is not None:  # asked for by name: a run that could only skip every check would pass having checked nothing
        raise ConfigurationError(f"--impl {impl.key}: {why}")
    if args.all:
        if args.renderer:
            raise ConfigurationError("give a renderer name or --all, not both")
        names = [p.stem for p in all_spec_paths()]
        return [(n, n, spec_path_for(n)) for n in impl.offers(names)]
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
    if not Path(spec).exists():
        raise ConfigurationError(f"--spec: {spec} does not exist")
    return [(ref, ref, Path(spec))]


def make_renderer(impl_key: str, ref: str, tokenizer: Any, spec: Any) -> Any:
    """The renderer object for ``ref`` under ``impl_key`` (a ``module:factory`` ref is a user's factory, checked
    against the spec given)."""
    from cookbook.conformance.impls import get_implementation

    if ":" in ref:
        return get_implementation(ref).make(spec.renderer, tokenizer, spec)
    return get_implementation(impl_key).make(ref, tokenizer, spec)


def run_one(
    impl_key: str,
    label: str,
    ref: str,
    spec: Any,
    tokenizer_name: str | None = None,
    properties: bool = True,
    examples: int = 25,
    seed: int | None = None,
) -> list[Any]:
    """Every check of ``spec`` on ``ref`` under ``impl_key``. A renderer that cannot be built is one result:
    SKIP (the implementation does not offer it), ERROR (its adapter broke) or FAIL (its constructor raised)."""
    from cookbook.conformance.renderer_runner import RunOptions, outcome_of, run_spec
    from cookbook.conformance.report import CheckResult
    from cookbook.tokenizers import get_tokenizer

    tok_name = tokenizer_name or spec.tokenizer
    tok = get_tokenizer(tok_name)
    impl_label = ref if (impl_key == "cookbook" and ":" in ref) else impl_key
    try:
        renderer = make_renderer(impl_key, ref, tok, spec)
    except Exception as exc:
        from cookbook.errors import ConfigurationError

        if isinstance(exc, ConfigurationError):
            raise
        status, msg = outcome_of(exc)
        return [CheckResult(label, "*", "construct", status, msg, cause=msg if status == "FAIL" else "", implementation=impl_label)]
    opts = RunOptions(properties=properties, examples=examples, seed=seed)
    return run_spec(renderer, spec, tok, tok_name, opts, label=label, implementation=impl_label)


def run_targets(
    targets: list[tuple[str, str, Path]],
    tokenizer: str | None = None,
    properties: bool = True,
    examples: int = 25,
    seed: int | None = None,
    impl: str = "cookbook",
) -> list[Any]:
    from cookbook.conformance.spec import load_spec

    results: list[Any] = []
    for label, ref, path in targets:
        results += run_one(impl, label, ref, load_spec(path), tokenizer, properties, examples, seed)
    return results


def run(args: argparse.Namespace) -> int:
    from cookbook.conformance.report import emit

    targets = resolve_targets(args)
    if not targets:
        print(f"{args.impl} offers no renderer that has a spec")
        return 1
    results = run_targets(targets, args.tokenizer, not args.no_properties, args.examples, args.seed, args.impl)
    meta = {"command": "conform renderer", "implementation": args.impl, "renderers": [t[0] for t in targets],
            "examples": args.examples}
    return emit(results, suite="renderer-conformance", meta=meta, json_to=args.json, junit_to=args.junit,
                verbose=args.verbose, colour=args.color)
