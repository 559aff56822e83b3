"""``cookbook golden [RENDERER...] [--check]``: regenerate golden/renderers/ from the oracles, or check them.

``--check`` writes nothing and fails (exit 1) when a golden's content would change: its token ids, text,
trained spans, the tokenizer or template sha256, the spec it came from, or a golden that is missing or stale.
A difference only in the recorded library versions (transformers, tokenizers, jinja2) is reported on its own
line and does not fail: the content is what the goldens pin. Finding nothing to check (no spec, no golden)
is an error too, naming the folder it looked in.

Exit codes: 0 ok; 1 a spec disagrees with its oracle, or (``--check``) a golden's content would change;
2 nothing to check / bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

MAX_DIFFS = 5  # full unified diffs shown under --check; the rest are named with their first difference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("renderers", nargs="*", metavar="RENDERER", help="renderers to regenerate (default: every spec)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if any golden's content would change (library versions aside)")
    parser.add_argument("--specs", type=Path, default=None, help="spec folder (default: the package's specs/renderers)")
    parser.add_argument("--out", type=Path, default=None, help="golden folder (default: the package's golden/renderers)")


def run(args: argparse.Namespace) -> int:
    from cookbook.conformance.golden import (
        compare_golden,
        generate_spec,
        golden_root,
        stale_files,
        unified_diff,
    )
    from cookbook.conformance.spec import all_spec_paths, load_spec, spec_dir, spec_path_for
    from cookbook.errors import SpecError

    root: Path = args.out or golden_root()
    specs_folder: Path = args.specs or spec_dir()
    if args.renderers:
        paths = [spec_path_for(r, args.specs) for r in args.renderers]
        for r, p in zip(args.renderers, paths):
            if not p.exists():
                raise SpecError(f"no spec for renderer {r!r} ({p})")
    else:
        paths = all_spec_paths(args.specs)
    if not paths:
        print(f"cookbook golden: no renderer spec (*.yaml) found in {specs_folder}: nothing to check; pass --specs DIR",
              file=sys.stderr)
        return 2
    if args.check and not any(root.rglob("*.json")):
        print(f"cookbook golden: no golden file (*.json) found in {root}: nothing to check; run `cookbook golden` "
              "to write them from the oracles, or pass --out DIR", file=sys.stderr)
        return 2
    specs = [load_spec(p) for p in paths]
    failed = False
    content_changes: list[str] = []
    version_only: dict[tuple[str, str, str], int] = defaultdict(int)
    written = 0
    unchecked: list[str] = []
    from cookbook.conformance import tml

    for spec in specs:
        if args.check and spec.oracle.kind == "tml_renderers" and not tml.available():
            # the oracle is a test-time peer (tml-renderers needs torch), never a dependency: an installed toolkit
            # checks every other golden and names these; regenerating them (no --check) still needs the peer
            n = len(list((root / spec.renderer).glob("*.json")))
            unchecked.append(spec.renderer)
            print(f"{spec.renderer}: {n} golden(s) not checked: their oracle, tml-renderers, is not installed here "
                  "(pip install tml-renderers==0.2.1; it needs torch)", file=sys.stderr)
            continue
        gs = generate_spec(spec, root=root)
        if gs.mismatches:
            failed = True
            for m in gs.mismatches:
                print(m, file=sys.stderr)
                print(file=sys.stderr)
            print(f"{spec.renderer}: {len(gs.mismatches)} case text(s) disagree with the oracle; goldens not written",
                  file=sys.stderr)
            continue
        for path, text in sorted(gs.files.items()):
            old = path.read_text(encoding="utf-8") if path.exists() else None
            if old == text:
                continue
            rel = _rel(path)
            old_data = _parse(old)
            diff = compare_golden(old_data, json.loads(text), gs.codec)
            for v in diff.versions:
                version_only[v] += 0 if diff.failed else 1
            if args.check:
                if diff.failed:
                    content_changes.append(rel)
                    print(f"CHANGED {rel}: {diff.content}")
                    if len(content_changes) <= MAX_DIFFS:
                        print(unified_diff(old or "", text, f"a/{rel}" if old is not None else "/dev/null", f"b/{rel}"))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(path, text)
                written += 1
        for stale in stale_files([spec], root):
            rel = _rel(stale)
            if args.check:
                content_changes.append(rel)
                print(f"STALE {rel}: no case {stale.stem!r} in {spec.path.name}")
            else:
                stale.unlink()
        print(f"{spec.renderer}: {len(gs.files)} golden(s) {'checked' if args.check else 'up to date'}", file=sys.stderr)
    for (lib, recorded, running), n in sorted(version_only.items()):
        if n:
            print(f"content identical; recorded {lib} {recorded}, running {running} ({n} golden file(s))")
    if unchecked:
        print(f"not checked: {len(unchecked)} renderer(s) whose oracle is tml-renderers (not installed): "
              f"{', '.join(unchecked)}")
        if len(unchecked) == len(specs):
            print("cookbook golden: nothing was checked (every spec's oracle is missing here)", file=sys.stderr)
            return 2
    if args.check and content_changes:
        print(f"{len(content_changes)} golden file(s) would change in content; run `nox -s golden` (cookbook golden) "
              "and review the diff", file=sys.stderr)
        return 1
    if not args.check and written:
        print(f"wrote {written} golden file(s) under {_rel(root)}", file=sys.stderr)
    return 1 if failed else 0


def _parse(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text[:200]}
    return data if isinstance(data, dict) else {"unreadable": text[:200]}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)
