"""``cookbook tokenizers fetch [FAMILY|MODEL ...]``."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", help="tokenizer families or model names (default: the core families)")
    p.add_argument(
        "--all",
        action="store_true",
        help="every family in the catalogue, including the tml-only ones (Kimi K2, GLM, Nemotron 3) whose first "
        "export creates a provisioning-only torch venv (about 1.5 minutes, 1 GB)",
    )
    p.add_argument("--force", action="store_true", help="rebuild folders even if up to date")
    p.add_argument("-q", "--quiet", action="store_true")


#: the default set; tml-only families (Family.needs_torch) are never in it because of the torch tools venv
CORE = ["qwen3", "llama3", "llama3_1", "llama3_1_base", "deepseek_v3_1", "gpt_oss"]


def run(args: argparse.Namespace) -> int:
    from cookbook.errors import ConfigurationError
    from cookbook.tokenizers.catalogue import FAMILIES, model_entry
    from cookbook.tokenizers.provision import cache_root, fetch

    names: list[str] = []
    for n in args.names:
        fam = n if n in FAMILIES else model_entry(n).family
        if fam is None:
            raise ConfigurationError(f"{n!r} has no tokenizer family to fetch: {model_entry(n).note}")
        names.append(fam)
    if args.all:
        names = sorted(FAMILIES)
    elif not names:
        names = CORE
    paths = fetch(sorted(set(names)), quiet=args.quiet, force=args.force)
    if not args.quiet:
        print(f"cache: {cache_root()}")
        for p in paths:
            print(f"  {p.name:<16} {p}")
    return 0
