"""The ``cookbook`` command.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules keep heavy imports (transformers, numpy, the SDK) inside ``run`` so that ``cookbook --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cookbook.errors import CookbookError

# (command path, module, one-line help)
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("tokenizers", "fetch"), "cookbook.tokenizers.cli_fetch", "download pinned tokenizers into the cache"),
    (("tokenizers", "list"), "cookbook.tokenizers.cli_list", "list known models, families and cache status"),
    (("conform", "renderer"), "cookbook.conformance.renderer_cli", "run renderer specs/goldens/properties"),
    (("conform", "math"), "cookbook.conformance.math_cli", "run math specs against an implementation"),
    (("conform", "matrix"), "cookbook.conformance.matrix", "every implementation x renderer pair: matrix.json + matrix.html"),
    (("parity",), "cookbook.conformance.parity_cli", "renderer parity suite over every built-in renderer"),
    (("golden",), "cookbook.conformance.golden_cli", "regenerate golden fixtures from the oracles"),
    (("mock", "serve"), "cookbook.mock.cli", "run the mock Tinker server"),
    (("report",), "cookbook.report", "write a run's HTML report (plots and samples, viewable offline)"),
    (("run",), "cookbook.recipes.cli", "run a recipe (offline on the embedded mock unless TINKER_API_KEY is set)"),
]

GROUP_HELP = {
    "tokenizers": "offline tokenizer provisioning",
    "conform": "conformance runners",
    "mock": "the mock Tinker server",
}


def _version() -> str:
    from cookbook import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cookbook",
        description="Verifiable Tinker post-training: renderers, losses, a mock Tinker server, conformance runners "
        "and recipes, offline.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name, help_text in COMMANDS:
        if len(path) == 1:
            p = sub.add_parser(path[0], help=help_text)
        else:
            if path[0] not in groups:
                gp = sub.add_parser(path[0], help=GROUP_HELP.get(path[0], ""))
                groups[path[0]] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            p = groups[path[0]].add_parser(path[1], help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a sub-command not built yet
            if exc.name != module_name:
                raise
            p.set_defaults(_missing=module_name)
            continue
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if len(args_list) >= 2 and args_list[0] == "run" and not args_list[1].startswith("-"):
        from cookbook.recipes import RECIPES

        if args_list[1] in RECIPES:  # the recipe's own --help / --debug, not argparse's
            from cookbook.recipes.cli import run_argv

            return run_argv(args_list[1], args_list[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        if getattr(args, "_missing", None):
            print(f"cookbook: this command is not available in this build ({args._missing})", file=sys.stderr)
            return 2
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except CookbookError as exc:
        print(f"cookbook: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
