"""The template oracle: the model's own chat template, run by ``transformers`` with the real tokenizer.

This module never imports a cookbook renderer: goldens are produced from the template (plus the spec's named
``template_edits``), never from the code they check.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cookbook.errors import SpecError

GENERATOR = "nox -s golden"


@dataclass(frozen=True)
class Rendered:
    text: str
    tokens: list[int]


# backend tokenizer id -> (backend, literal copy): building the copy costs ~1 s for a large vocabulary
_LITERAL_CACHE: dict[int, tuple[Any, Any]] = {}
#: held while :meth:`Codec.encode_literal` switches a shared backend's special-token parsing off for one call
_LITERAL_LOCK = threading.Lock()


class Codec:
    """Encoding and decoding helpers over a Hugging Face tokenizer.

    * :meth:`encode_special`: text with special-token text parsed as control tokens, no BOS added (how
      ``apply_chat_template(tokenize=True)`` tokenizes its rendered text);
    * :meth:`encode_literal`: ordinary text, special-token text stays literal (how renderers encode content);
    * :meth:`decode`: ids to text, special tokens kept, no clean-up.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._literal: Any = None

    def encode_special(self, text: str) -> list[int]:
        if not text:
            return []
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).ids)
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]

    def encode_literal(self, text: str) -> list[int]:
        if not text:
            return []
        if self._literal is None:
            if self._backend is None:
                raise SpecError(f"{type(self.tokenizer).__name__} has no fast backend; cannot encode literal text")
            backend = self._backend
            if backend.truncation is None and backend.padding is None:
                # the backend itself with special-token parsing switched off for the call encodes exactly as a
                # literal copy of it would (a copy is a JSON round trip of the vocabulary: ~1 s per tokenizer)
                with _LITERAL_LOCK:
                    before = backend.encode_special_tokens
                    backend.encode_special_tokens = True
                    try:
                        return list(backend.encode(text, add_special_tokens=False).ids)
                    finally:
                        backend.encode_special_tokens = before
            key = id(backend)
            cached = _LITERAL_CACHE.get(key)
            if cached is None or cached[0] is not backend:
                from tokenizers import Tokenizer

                lit = Tokenizer.from_str(backend.to_str())
                lit.encode_special_tokens = True
                lit.no_truncation()
                lit.no_padding()
                cached = _LITERAL_CACHE[key] = (backend, lit)
            self._literal = cached[1]
        return list(self._literal.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(t) for t in ids]
        if self._backend is not None:
            return str(self._backend.decode(ids, skip_special_tokens=False))
        return str(self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def token_id(self, token: str) -> int | None:
        if self._backend is not None:
            tid = self._backend.token_to_id(token)
            return None if tid is None else int(tid)
        tid = self.tokenizer.convert_tokens_to_ids(token)
        return None if tid is None or tid == getattr(self.tokenizer, "unk_token_id", object()) else int(tid)

    def token_text(self, tid: int) -> str:
        if self._backend is not None:
            tok = self._backend.id_to_token(int(tid))
            if tok is not None:
                return str(tok)
        return self.decode([tid])

    def special_token_strings(self) -> list[str]:
        """Text of every added/special token (used to keep random text free of control-token text)."""
        out: set[str] = set()
        try:
            out.update(str(t) for t in self.tokenizer.get_added_vocab())
        except Exception:
            pass
        out.update(str(t) for t in getattr(self.tokenizer, "all_special_tokens", []) or [])
        return sorted(t for t in out if t)

    def control_token_strings(self) -> list[str]:
        """Text of the added tokens flagged special (turn markers, BOS/EOS...): the ones a renderer must keep
        literal when they appear in content. Non-special added tokens (Qwen's ``<think>``) are left out: the
        template tokenizes their text as the token, and so do renderers."""
        out: set[str] = set()
        try:
            decoder = self.tokenizer.added_tokens_decoder
        except Exception:
            decoder = {}
        for tok in decoder.values():
            if getattr(tok, "special", False) and str(tok):
                out.add(str(tok))
        return sorted(out)


def _ids(result: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns a list in transformers 4 and a BatchEncoding (or dict) in 5."""
    if isinstance(result, Mapping) or hasattr(result, "input_ids"):
        result = result["input_ids"]
    if hasattr(result, "tolist"):
        result = result.tolist()
    if result and isinstance(result[0], list):  # batched
        result = result[0]
    return [int(t) for t in result]


class TemplateOracle:
    """``apply_chat_template`` with the real tokenizer and pinned template kwargs."""

    def __init__(self, tokenizer: Any, template_kwargs: Mapping[str, Any] | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise SpecError(
                f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; a spec whose "
                "oracle is chat_template needs one (use oracle.kind: spec when no authentic template exists)"
            )
        self.tokenizer = tokenizer
        self.codec = Codec(tokenizer)
        self.template_kwargs = dict(template_kwargs or {})

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_kwargs: Mapping[str, Any] | None = None,
    ) -> Rendered:
        kwargs = {**self.template_kwargs, **(extra_kwargs or {})}
        msgs = [dict(m) for m in messages]
        tl = [dict(t) for t in tools] if tools else None
        text = self.tokenizer.apply_chat_template(
            msgs, tools=tl, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
        ids = self.tokenizer.apply_chat_template(
            msgs, tools=tl, tokenize=True, add_generation_prompt=add_generation_prompt, **kwargs
        )
        return Rendered(str(text), _ids(ids))


# ----------------------------------------------------------------------------------------------- provenance


#: (path, size, mtime) -> sha256: the specs sharing a tokenizer folder hash its tokenizer.json once
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    got = _SHA_CACHE.get(key)
    if got is None:
        got = _SHA_CACHE[key] = _sha256_uncached(path)
    return got


def _sha256_uncached(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    import jinja2
    import tokenizers
    import transformers

    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__, "jinja2": jinja2.__version__}


def tokenizer_provenance(model: str, tokenizer: Any) -> dict[str, Any]:
    """Where the tokenizer and template came from: sha256 of ``tokenizer.json`` and of the template text, the
    registry packages (from the cache's ``PROVENANCE.json``) and the library versions."""
    from cookbook.tokenizers import tokenizer_dir

    folder: Path | None = None
    try:
        folder = tokenizer_dir(model, fetch=False)
    except Exception:
        name = str(getattr(tokenizer, "name_or_path", "") or "")
        folder = Path(name) if name and Path(name).is_dir() else None
    prov: dict[str, Any] = {}
    if folder is not None and (folder / "PROVENANCE.json").exists():
        prov = json.loads((folder / "PROVENANCE.json").read_text())
    tok_sha = ""
    if folder is not None and (folder / "tokenizer.json").exists():
        tok_sha = _sha256_file(folder / "tokenizer.json")
    template = getattr(tokenizer, "chat_template", None)
    tpl_sha = hashlib.sha256(template.encode("utf-8")).hexdigest() if isinstance(template, str) else None
    arts = prov.get("artifacts", {})
    source = ", ".join(f"{a.get('registry')}:{a.get('spec')} ({a.get('sha256', '')[:12]})" for a in arts.values())
    tpl = prov.get("chat_template") or {}
    return {
        "tokenizer_sha256": tok_sha,
        "template_sha256": tpl_sha,
        "tokenizer_family": prov.get("family", ""),
        "tokenizer_source": source or (str(folder) if folder else "unknown"),
        "template_source": tpl.get("origin") or tpl.get("source", "") if tpl_sha else "",
        "versions": library_versions(),
    }
