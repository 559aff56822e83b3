"""The mock's offline Hugging Face hub cache covers every served model that has a tokenizer, the toy ones included,
so code that loads tokenizers by model name (tinker-cookbook's ``get_tokenizer``: ``AutoTokenizer.from_pretrained``)
works offline against the mock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cookbook.errors import CookbookError
from cookbook.mock.models import BUILTIN, LLAMA3_TOKENIZER_REPO, tiny_decode, tiny_encode
from cookbook.mock.tiny_chat import TINY_CHAT
from cookbook.tokenizers import tokenizer_dir


def _cached_file(repo: str, name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    got = try_to_load_from_cache(repo, name)
    return Path(got) if isinstance(got, str) else None


def test_every_served_model_with_a_tokenizer_is_in_the_hub_cache(tinker_mock: Any) -> None:
    served = tinker_mock.registry.names()
    covered = 0
    for name in served:
        if name in BUILTIN or name == TINY_CHAT:
            continue
        try:
            folder = tokenizer_dir(name, fetch=False)
        except CookbookError:  # not provisioned here, or in no registry (the entry's note says why)
            assert _cached_file(name, "tokenizer.json") is None
            continue
        got = _cached_file(name, "tokenizer.json")
        assert got is not None, f"{name} is served with a tokenizer but missing from the HF cache"
        assert got.resolve() == (folder / "tokenizer.json").resolve()
        covered += 1
    assert covered > 0
    assert _cached_file(LLAMA3_TOKENIZER_REPO, "tokenizer.json") is not None


def test_toy_models_load_by_name_offline(tinker_mock: Any) -> None:
    from transformers import AutoTokenizer

    for name in [*BUILTIN, TINY_CHAT]:
        assert _cached_file(name, "tokenizer.json") is not None, name
    tiny = AutoTokenizer.from_pretrained("cookbook/tiny-test")
    ids = [104, 105, 256, 300, 510, 511]
    assert tiny.decode(ids) == tiny_decode(ids)
    assert tiny.encode("héllo", add_special_tokens=False) == tiny_encode("héllo")
    assert tiny.eos_token_id == BUILTIN["cookbook/tiny-test"].eos_token_id
    chat = AutoTokenizer.from_pretrained(TINY_CHAT)
    assert chat.convert_tokens_to_ids("<|eot_id|>") == tinker_mock.registry.resolve(TINY_CHAT).eos_token_id


def test_sdk_tokenizers_of_a_toy_model(tinker_mock: Any) -> None:
    service = tinker_mock.service_client()
    sampler = service.create_sampling_client(base_model="cookbook/tiny-test")
    assert sampler.get_tokenizer().decode([104, 105, 511]) == tiny_decode([104, 105, 511])
