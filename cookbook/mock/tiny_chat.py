"""``cookbook/tiny-chat``: a toy chat model for fast offline recipes on the mock server.

Its tokenizer is a real Hugging Face tokenizer built locally (no download): byte-level, one token per byte
(ids 0-255, no merges), plus the Llama 3 control tokens (ids 256-266), so the ``llama3`` and ``role_colon``
renderers work unchanged and a turn ends with the single token ``<|eot_id|>``. The mock serves it with a
267-token vocabulary, so sampling and training are ~500x cheaper than at a real 128k vocabulary, and a
randomly initialised policy finds the stop token often enough for RL to get a signal. It is a test vehicle,
not a model of any real tokenizer: recipes use it only when they run on the embedded mock.

``cookbook/tiny-chat-tools`` is its sibling for tool use: the same 256 byte tokens plus Qwen3's ChatML
control tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) and its ordinary added tokens
(``<think>``, ``</think>``, ``<tool_call>``, ``</tool_call>``, ``<tool_response>``, ``</tool_response>``),
plus a few multi-byte tokens a real BPE vocabulary has as merges (the role names and the JSON scaffolding of
a ``calculator`` call: ``{"name": "``, ``calculator``, ``", "arguments": {"``, ``expression``, ``": "``, ``"}}``), so the
toy model, which sees only a few tokens of context, can learn the tool-call format. 274 ids in all; the
``qwen3`` renderers (and their tool-call format) work unchanged; a turn ends with ``<|im_end|>``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_CHAT = "cookbook/tiny-chat"
SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
)
VOCAB_SIZE = 256 + len(SPECIALS)
_VERSION = 1

TINY_CHAT_TOOLS = "cookbook/tiny-chat-tools"
TOOLS_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOOLS_ADDED = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
# multi-byte "merges" a real BPE vocabulary has: role names and the tool-call JSON scaffolding
TOOLS_MERGES = ("system", "user", "assistant", '{"name": "', '", "arguments": {"', "calculator", "expression", '": "', '"}}')
TOOLS_VOCAB_SIZE = 256 + len(TOOLS_SPECIALS) + len(TOOLS_ADDED) + len(TOOLS_MERGES)
_TOOLS_VERSION = 1
_TOOLS_TEMPLATE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_TEMPLATE = (
    "{{- bos_token }}{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
    "+ m['content'] + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _byte_symbols() -> list[str]:
    """The GPT-2 byte-to-unicode table (what byte-level BPE uses to name the 256 byte tokens)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


#: ``cookbook/tiny-test``'s byte-level detokenizer as a tokenizer: ids 256-510 print as ``<|tNNN|>``, 511 is EOS
TINY_TEST_SPECIALS = (*(f"<|t{i}|>" for i in range(256, 511)), "<|eos|>")


def build_tokenizer_json(specials: tuple[str, ...] = SPECIALS, added: tuple[str, ...] = ()) -> str:
    """Byte tokens 0-255, then ``specials`` (special added tokens), then ``added`` (ordinary added tokens)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {sym: i for i, sym in enumerate(_byte_symbols())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if added:
        tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in added])
    return str(tok.to_str())


def _write_folder(folder: Path, tokenizer_json: str, config: dict[str, object], description: str,
                  version: int = _VERSION) -> Path:
    if (folder / "tokenizer_config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    (tmp / "PROVENANCE.json").write_text(
        json.dumps({"family": folder.name, "description": description, "generated_by": "cookbook.mock.tiny_chat",
                    "version": version}, indent=1),
        encoding="utf-8",
    )
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _root(root: str | Path | None) -> Path:
    if root is None:
        from cookbook.tokenizers import cache_root

        return cache_root() / "tokenizers"
    return Path(root)


def tiny_chat_dir(root: str | Path | None = None, model: str = TINY_CHAT) -> Path:
    """The tokenizer folder of ``model`` (``cookbook/tiny-chat`` or ``cookbook/tiny-chat-tools``), built once,
    atomically, under ``root`` or the cookbook cache."""
    if model == TINY_CHAT_TOOLS:
        tools_config: dict[str, object] = {
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False, "model_max_length": 8192,
            "chat_template": _TOOLS_TEMPLATE,
        }
        return _write_folder(_root(root) / f"tiny_chat_tools_v{_TOOLS_VERSION}",
                             build_tokenizer_json(TOOLS_SPECIALS, TOOLS_ADDED + TOOLS_MERGES), tools_config,
                             "cookbook/tiny-chat-tools: byte tokens plus Qwen3's control and tool tokens",
                             _TOOLS_VERSION)
    if model != TINY_CHAT:
        raise ValueError(f"no toy tokenizer named {model!r}; expected {TINY_CHAT} or {TINY_CHAT_TOOLS}")
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "chat_template": _TEMPLATE,
    }
    return _write_folder(_root(root) / f"tiny_chat_v{_VERSION}", build_tokenizer_json(), config,
                         __doc__.split("\n\n")[0] if __doc__ else "")


def tiny_test_dir(root: str | Path | None = None) -> Path:
    """A Hugging Face tokenizer folder equal to ``cookbook/tiny-test``'s byte-level detokenizer (vocabulary 512).

    Lets code that loads a tokenizer by model name (tinker-cookbook's ``get_tokenizer``) use the tiny test models.
    """
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|eos|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
    }
    return _write_folder(_root(root) / f"tiny_test_v{_VERSION}", build_tokenizer_json(TINY_TEST_SPECIALS), config,
                         "cookbook/tiny-test's byte-level tokenizer: bytes 0-255, <|tNNN|> for 256-510, <|eos|> = 511")
