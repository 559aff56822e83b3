"""Where the toolkit's shipped data lives: the spec and golden folders, found through ``importlib.resources``.

The same code serves a source checkout (an editable install: ``cookbook/_data/specs`` links to the top-level
``specs/``) and an installed wheel (the files are package data under ``cookbook/_data``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cookbook.errors import CookbookError

KINDS = ("specs", "golden")


def data_root(kind: str) -> Path:
    """The folder of shipped data ``kind`` (``"specs"`` or ``"golden"``) as a file-system path."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(KINDS)}")
    node = resources.files("cookbook._data").joinpath(kind)
    path = Path(str(node))
    if not path.is_dir():
        raise CookbookError(
            f"the {kind}/ folder of the cookbook package is missing (looked in {path}); the installation is "
            "incomplete: reinstall the package (pip install --force-reinstall cookbook-verify), or from a source "
            "checkout run `pip install -e .`"
        )
    return path


def specs_dir(*parts: str) -> Path:
    """``specs/<parts...>`` of the installed package, e.g. ``specs_dir("renderers")``."""
    return data_root("specs").joinpath(*parts)


def golden_dir(*parts: str) -> Path:
    """``golden/<parts...>`` of the installed package, e.g. ``golden_dir("renderers")``."""
    return data_root("golden").joinpath(*parts)
