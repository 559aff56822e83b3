"""``cookbook run RECIPE key=value ... [--debug]`` (``cookbook run RECIPE --help`` lists the recipe's keys)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cookbook.recipes import RECIPES

    p.add_argument("recipe", choices=sorted(RECIPES), help="which recipe (RECIPE --help lists its keys)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="config overrides (chz syntax); --debug shows tracebacks")


def run_argv(recipe: str, argv: Sequence[str]) -> int:
    from cookbook.recipes import RECIPES
    from cookbook.recipes.common import main_guard

    module = importlib.import_module(RECIPES[recipe])
    return main_guard(module.run, list(argv), recipe)


def run(args: argparse.Namespace) -> int:
    return run_argv(args.recipe, args.overrides)
