"""``cookbook tokenizers list``: the model catalogue and what is cached."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--families", action="store_true", help="list tokenizer families instead of models")


def run(args: argparse.Namespace) -> int:
    from cookbook.tokenizers.catalogue import FAMILIES, MODELS
    from cookbook.tokenizers.provision import cache_root, is_built

    print(f"cache: {cache_root()}")
    if args.families:
        for name, fam in sorted(FAMILIES.items()):
            mark = "cached" if is_built(name) else "-"
            print(f"{name:<16} {mark:<7} {fam.description}")
        return 0
    print(f"{'model':<42} {'family':<14} {'cached':<7} renderers")
    for name, m in sorted(MODELS.items()):
        mark = "yes" if is_built(m.family) else "no"
        print(f"{name:<42} {m.family:<14} {mark:<7} {', '.join(m.renderers)}")
    return 0
