"""``cookbook golden [RENDERER...] [--check]``: regenerate golden/renderers/ from the oracles.

Exit codes: 0 ok; 1 a spec disagrees with its oracle, or (``--check``) regenerating would change a file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("renderers", nargs="*", metavar="RENDERER", help="renderers to regenerate (default: every spec)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 and show the diff if any golden would change")
    parser.add_argument("--specs", type=Path, default=None, help="spec folder (default: specs/renderers)")
    parser.add_argument("--out", type=Path, default=None, help="golden folder (default: golden/renderers)")


def run(args: argparse.Namespace) -> int:
    from cookbook.conformance.golden import generate_spec, golden_root, stale_files, unified_diff
    from cookbook.conformance.spec import all_spec_paths, load_spec, spec_path_for
    from cookbook.errors import SpecError

    root: Path = args.out or golden_root()
    if args.renderers:
        paths = [spec_path_for(r, args.specs) for r in args.renderers]
        for r, p in zip(args.renderers, paths):
            if not p.exists():
                raise SpecError(f"no spec for renderer {r!r} ({p})")
    else:
        paths = all_spec_paths(args.specs)
    specs = [load_spec(p) for p in paths]
    failed = False
    changed: list[str] = []
    written = 0
    for spec in specs:
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
            changed.append(rel)
            if args.check:
                print(unified_diff(old or "", text, f"a/{rel}" if old is not None else "/dev/null", f"b/{rel}"))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                written += 1
        for stale in stale_files([spec], root):
            rel = _rel(stale)
            changed.append(rel)
            if args.check:
                print(f"stale golden (no such case in {spec.path.name}): {rel}")
            else:
                stale.unlink()
        print(f"{spec.renderer}: {len(gs.files)} golden(s) {'checked' if args.check else 'up to date'}", file=sys.stderr)
    if args.check and changed:
        print(f"{len(changed)} golden file(s) would change; run `nox -s golden` (cookbook golden) and review the diff",
              file=sys.stderr)
        return 1
    if not args.check and written:
        print(f"wrote {written} golden file(s) under {_rel(root)}", file=sys.stderr)
    return 1 if failed else 0


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)
