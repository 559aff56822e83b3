"""``cookbook run RECIPE key=value ...``."""

from __future__ import annotations

import argparse
import importlib


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cookbook.recipes import RECIPES

    p.add_argument("recipe", choices=sorted(RECIPES), help="which recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (chz syntax)")


def run(args: argparse.Namespace) -> int:
    from cookbook.recipes import RECIPES

    module = importlib.import_module(RECIPES[args.recipe])
    module.run(args.overrides)
    return 0
