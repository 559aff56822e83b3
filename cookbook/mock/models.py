"""Base models the mock serves: built-in tiny test models, the tokenizer catalogue, and registrations.

One function, :meth:`ModelRegistry.resolve`, turns a Tinker base-model name into a
:class:`~cookbook.mock.engine.BaseModelSpec` (vocabulary size, tokenizer folder, EOS id).

* ``cookbook/tiny-test`` (vocab 512) and ``cookbook/tiny-test-b`` (vocab 512, different frozen weights) need no
  tokenizer. Their detokenizer is byte-level: ids 0-255 are bytes, 256-510 print as ``<|tNNN|>`` and
  511 is ``<|eos|>`` (the EOS / default stop token).
* Any model of the :mod:`cookbook.tokenizers` catalogue (``Qwen/Qwen3-8B`` ...) uses the catalogue's embedding
  size and the provisioned tokenizer folder (offline; never fetched by the server).
* :meth:`ModelRegistry.register` adds more (e.g. a teacher and a student for distillation tests).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cookbook.errors import ConfigurationError, CookbookError
from cookbook.mock import HEADS
from cookbook.mock.engine import BaseModelSpec
from cookbook.mock.tiny_chat import TINY_CHAT, TINY_CHAT_TOOLS, TOOLS_VOCAB_SIZE, tiny_chat_dir
from cookbook.mock.tiny_chat import VOCAB_SIZE as TINY_CHAT_VOCAB

# toy chat models served from tokenizers built locally: name -> (vocabulary size, end-of-turn token)
TOY_CHATS = {TINY_CHAT: (TINY_CHAT_VOCAB, "<|eot_id|>"), TINY_CHAT_TOOLS: (TOOLS_VOCAB_SIZE, "<|im_end|>")}

TINY_VOCAB = 512
TINY_EOS = TINY_VOCAB - 1

BUILTIN: dict[str, BaseModelSpec] = {
    "cookbook/tiny-test": BaseModelSpec("cookbook/tiny-test", TINY_VOCAB, eos_token_id=TINY_EOS),
    "cookbook/tiny-test-b": BaseModelSpec("cookbook/tiny-test-b", TINY_VOCAB, eos_token_id=TINY_EOS),
}


def tiny_decode(tokens: Sequence[int]) -> str:
    """Byte-level detokenizer of the built-in tiny models."""
    out = bytearray()
    for t in tokens:
        if 0 <= t < 256:
            out.extend(bytes([t]))
        elif t == TINY_EOS:
            out.extend(b"<|eos|>")
        else:
            out.extend(f"<|t{t}|>".encode())
    return out.decode("utf-8", errors="replace")


def tiny_encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


@functools.lru_cache(maxsize=16)
def _hf_tokenizer(folder: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))


def _eos_from_folder(folder: Path) -> int | None:
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    eos = cfg.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    if not isinstance(eos, str):
        return None
    tid = _hf_tokenizer(str(folder)).token_to_id(eos)
    return int(tid) if tid is not None else None


class ModelRegistry:
    """Thread-safe name -> :class:`BaseModelSpec` resolution with caching."""

    def __init__(self, head: str = "auto") -> None:
        if head not in HEADS:
            raise ConfigurationError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        self.head = head  # output layer of every model served: see BaseModelSpec.head and cookbook.mock.classed
        self._extra: dict[str, BaseModelSpec] = {}
        self._cache: dict[str, BaseModelSpec] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        vocab_size: int,
        tokenizer_dir: str | Path | None = None,
        eos_token_id: int | None = None,
        d_model: int = 32,
    ) -> BaseModelSpec:
        """Add (or replace) a base model; the tokenizer folder must hold ``tokenizer.json``."""
        if not name or "\n" in name or len(name) > 200:
            raise ConfigurationError(f"register: invalid base model name {name!r}")
        if not (2 <= vocab_size <= 1_000_000):
            raise ConfigurationError(f"register: vocab_size must be in [2, 1e6], got {vocab_size}")
        folder = Path(tokenizer_dir).resolve() if tokenizer_dir is not None else None
        if folder is not None:
            if not (folder / "tokenizer.json").exists():
                raise ConfigurationError(f"register: {folder} has no tokenizer.json")
            if ":" in str(folder):
                raise ConfigurationError(f"register: tokenizer folder {folder} must not contain ':'")
            if eos_token_id is None:
                eos_token_id = _eos_from_folder(folder)
        elif eos_token_id is None:
            eos_token_id = vocab_size - 1
        spec = BaseModelSpec(
            name, vocab_size, d_model=d_model, eos_token_id=eos_token_id, tokenizer_dir=folder, head=self.head
        )
        with self._lock:
            self._extra[name] = spec
            self._cache.pop(name, None)
        return spec

    def resolve(self, name: str) -> BaseModelSpec:
        """The spec for ``name``; :class:`ConfigurationError` naming the model if unknown."""
        if name in TOY_CHATS:
            with self._lock:
                known = name in self._extra
            if not known:
                vocab, eot = TOY_CHATS[name]
                folder = tiny_chat_dir(model=name)
                return self.register(name, vocab, folder, eos_token_id=_hf_tokenizer(str(folder)).token_to_id(eot))
        with self._lock:
            if name in self._extra:
                return self._extra[name]
            if name in BUILTIN:
                return BUILTIN[name]
            if name in self._cache:
                return self._cache[name]
        spec = self._from_catalogue(name)
        with self._lock:
            self._cache[name] = spec
        return spec

    def _from_catalogue(self, name: str) -> BaseModelSpec:
        try:
            from cookbook.tokenizers import model_entry, tokenizer_dir
        except ImportError as exc:  # pragma: no cover - the tokenizers package is part of cookbook
            raise ConfigurationError(f"base_model: unknown model {name!r} ({exc})") from exc
        try:
            entry = model_entry(name)
        except CookbookError as exc:
            from cookbook.tokenizers.catalogue import USER_CATALOGUE_ENV, suggest_models

            close = suggest_models(name)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigurationError(
                f"base_model: unknown model {name!r}.{hint} get_server_capabilities lists the served models. "
                f"Serve another one with MockTinker.register_base_model(...), or point ${USER_CATALOGUE_ENV} "
                "at a model catalogue file (see cookbook.tokenizers.catalogue.load_user_catalogue) before starting "
                "the server"
            ) from exc
        try:
            folder: Path | None = tokenizer_dir(name, fetch=False)
        except CookbookError:
            folder = None  # served without a tokenizer (no stop strings, get_tokenizer unavailable)
        eos = _eos_from_folder(folder) if folder is not None else None
        return BaseModelSpec(name, int(entry.vocab_size), eos_token_id=eos, tokenizer_dir=folder, head=self.head)

    def names(self) -> list[str]:
        names = [*BUILTIN, TINY_CHAT, *sorted(n for n in self._extra if n != TINY_CHAT)]
        try:
            from cookbook.tokenizers import known_model_names

            names += [n for n in known_model_names() if n not in names]
        except ImportError:  # pragma: no cover
            pass
        return names

    def registered(self) -> list[BaseModelSpec]:
        with self._lock:
            return list(self._extra.values())

    def reset(self) -> None:
        with self._lock:
            self._extra.clear()
            self._cache.clear()

    @staticmethod
    def with_context_length(spec: BaseModelSpec, n: int) -> BaseModelSpec:
        return replace(spec, max_context_length=n)


def decoder_for(spec: BaseModelSpec) -> Callable[[Sequence[int]], str] | None:
    if spec.tokenizer_dir is not None:
        tok = _hf_tokenizer(str(spec.tokenizer_dir))
        return lambda ids: str(tok.decode(list(ids), skip_special_tokens=False))
    if spec.name in BUILTIN or spec.vocab_size <= 4096:
        return tiny_decode
    return None


def encoder_for(spec: BaseModelSpec) -> Callable[[str], list[int]]:
    if spec.tokenizer_dir is not None:
        tok = _hf_tokenizer(str(spec.tokenizer_dir))
        return lambda text: list(tok.encode(text, add_special_tokens=False).ids)
    return tiny_encode


# ------------------------------------------------------------------------------------- Hugging Face hub cache
#: the tokenizer repo the tinker SDK and tinker-cookbook load for every meta-llama/Llama-3* model (no gating)
LLAMA3_TOKENIZER_REPO = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"
_MODEL_TYPE = {
    "qwen3": "qwen3",
    "llama3": "llama",
    "llama3_1": "llama",
    "llama3_1_base": "llama",
    "deepseek_v3": "deepseek_v3",
    "deepseek_v3_1": "deepseek_v3",
    "gpt_oss": "gpt_oss",
    "gemma3": "gemma3_text",
}


def hf_repo_folders(registry: ModelRegistry | None = None) -> dict[str, tuple[Path, str]]:
    """repo id -> (tokenizer folder, model_type) for every served model that has a tokenizer.

    Covers the toy models (``cookbook/tiny-test``, ``cookbook/tiny-test-b``, ``cookbook/tiny-chat``,
    ``cookbook/tiny-chat-tools``), every
    catalogue model whose tokenizer is provisioned (user catalogue entries included), the Llama 3 tokenizer repo
    the SDK substitutes for ``meta-llama/Llama-3*``, and the registrations of ``registry``. A catalogue model whose
    tokenizer is not provisioned (or exists in no registry) is left out: loading it by name then fails offline.
    """
    from cookbook.mock.tiny_chat import tiny_test_dir
    from cookbook.tokenizers import MODELS, known_model_names, tokenizer_dir

    out: dict[str, tuple[Path, str]] = {}
    test_folder = tiny_test_dir()
    for name in BUILTIN:
        out[name] = (test_folder, "llama")
    out[TINY_CHAT] = (tiny_chat_dir(), "llama")
    out[TINY_CHAT_TOOLS] = (tiny_chat_dir(model=TINY_CHAT_TOOLS), "qwen3")
    for name in known_model_names():
        entry = MODELS[name]
        try:
            folder = tokenizer_dir(name, fetch=False)
        except CookbookError:
            continue
        out[name] = (folder, _MODEL_TYPE.get(entry.family or "", "llama"))
    llama3 = [n for n in sorted(out) if n.startswith("meta-llama/Llama-3")]
    instruct = [n for n in llama3 if MODELS[n].family in ("llama3", "llama3_1") and not MODELS[n].is_base]
    if instruct or llama3:
        out.setdefault(LLAMA3_TOKENIZER_REPO, out[(instruct or llama3)[0]])
    for spec in registry.registered() if registry else []:
        if spec.tokenizer_dir is not None and spec.name.count("/") == 1:
            out[spec.name] = (spec.tokenizer_dir, "llama")
    return out
