"""The model catalogue is Tinker's lineup: names, renderers, LR and LoRA helpers, user entries, the mock serves it.

Oracle: tinker-cookbook 0.6.1 (``model_info``, ``hyperparam_utils``) installed as a test-time peer; the tests that
need it are skipped with a reason when it is absent. Closed forms otherwise.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from cookbook import hyperparams as hp
from cookbook.errors import ConfigurationError, TokenizerNotAvailable
from cookbook.tokenizers import tokenizer_dir
from cookbook.tokenizers.catalogue import (
    FAMILIES,
    MODELS,
    USER_CATALOGUE_ENV,
    lineup,
    model_entry,
    suggest_models,
)

#: names whose recommended renderers differ from tinker-cookbook's on purpose (catalogue _NOTES says why)
RENAMED = {"moonshotai/Kimi-K2-Thinking": ("kimi_k2",)}


def _peer_table() -> dict[str, Any]:
    mi = pytest.importorskip("tinker_cookbook.model_info", reason="tinker-cookbook (test-time peer) not installed")
    orgs = {
        "meta-llama": mi.get_llama_info, "Qwen": mi.get_qwen_info, "deepseek-ai": mi.get_deepseek_info,
        "openai": mi.get_gpt_oss_info, "moonshotai": mi.get_moonshot_info, "zai-org": mi.get_zai_info,
        "nvidia": mi.get_nvidia_info, "thinkingmachines": mi.get_thinkingmachines_info,
    }
    getters = [n for n in dir(mi) if n.startswith("get_") and n.endswith("_info")]
    assert len(getters) == len(orgs), f"tinker-cookbook has new organisations: {getters}"
    return {f"{org}/{name}": attrs for org, get in orgs.items() for name, attrs in get().items()}


@pytest.fixture(scope="module")
def peer() -> dict[str, Any]:
    return _peer_table()


@pytest.fixture(scope="module")
def peer_hp() -> Any:
    return pytest.importorskip("tinker_cookbook.hyperparam_utils", reason="tinker-cookbook not installed")


def test_lineup_is_tinker_cookbooks_model_table(peer: dict[str, Any]) -> None:
    assert {m.name for m in lineup()} == set(peer)
    assert len(peer) == 46


def test_recommended_renderers_and_model_kinds(peer: dict[str, Any]) -> None:
    for name, attrs in peer.items():
        entry = model_entry(name)
        if name in RENAMED:
            assert tuple(attrs.recommended_renderers) == RENAMED[name]
            assert entry.note, "a renamed renderer is explained in the entry's note"
        else:
            assert entry.renderers == tuple(attrs.recommended_renderers), name
        assert entry.is_vl == attrs.is_vl, name
        assert entry.is_base == (not attrs.is_chat), name
        assert entry.size == attrs.size_str, name


def test_every_lineup_model_has_a_tokenizer_or_a_stated_reason() -> None:
    for entry in lineup():
        if entry.family is None:
            assert "tml-renderers" in entry.note
            with pytest.raises(TokenizerNotAvailable):
                tokenizer_dir(entry.name, fetch=False)
        else:
            assert entry.family in FAMILIES, entry.name
    without = {e.name for e in lineup() if e.family is None}
    assert without == {"moonshotai/Kimi-K3.1-Pro", "thinkingmachines/Inkling-2-Small"}


def test_get_lr_agrees_with_tinker_cookbook(peer: dict[str, Any], peer_hp: Any) -> None:
    import tinker_cookbook.exceptions as peer_errors

    calibrated = uncalibrated = 0
    for name in peer:
        for is_lora in (True, False):
            try:
                expected = peer_hp.get_lr(name, is_lora=is_lora)
            except (NotImplementedError, peer_errors.ConfigurationError):  # no formula for this model there
                rec = hp.lr_recommendation(name, is_lora)
                assert not rec.calibrated and rec.value == pytest.approx(5e-4 if is_lora else 5e-5)
                with pytest.raises(ConfigurationError):
                    hp.get_lr(name, is_lora, strict=True)
                uncalibrated += 1
                continue
            assert hp.get_lr(name, is_lora, strict=True) == pytest.approx(expected, rel=1e-12), name
            calibrated += 1
    assert calibrated == 2 * 26 and uncalibrated == 2 * 20  # Llama + Qwen calibrated; the rest are not


def test_peft_suffix_is_the_base_model(peer_hp: Any) -> None:
    for name in ("zai-org/GLM-5.3:peft:262144", "Qwen/Qwen3-8B:peft:131072"):
        base = name.split(":")[0]
        assert model_entry(name) is model_entry(base)
        assert hp.get_lora_param_count(name, 8) == hp.get_lora_param_count(base, 8) == peer_hp.get_lora_param_count(name, 8)
    assert hp.get_lr("Qwen/Qwen3-8B:peft:131072") == pytest.approx(peer_hp.get_lr("Qwen/Qwen3-8B:peft:131072"))


@pytest.mark.parametrize(
    ("rank", "mlp", "attn", "unembed"),
    [(32, True, True, True), (1, True, False, False), (8, False, True, False), (16, False, False, True), (4, True, True, False)],
)
def test_lora_param_count_agrees_with_tinker_cookbook(
    peer: dict[str, Any], peer_hp: Any, rank: int, mlp: bool, attn: bool, unembed: bool
) -> None:
    for name in peer:
        ours = hp.get_lora_param_count(name, rank, train_mlp=mlp, train_attn=attn, train_unembed=unembed)
        assert ours == peer_hp.get_lora_param_count(name, rank, train_mlp=mlp, train_attn=attn, train_unembed=unembed), name


def test_lora_param_count_closed_form_for_a_dense_model() -> None:
    # Llama 3.1 8B: 32 layers, hidden 4096, 32 query / 8 KV heads of 128, MLP 14336, vocabulary 128,256.
    # LoRA on an (a x b) matrix has rank * (a + b) parameters.
    attn = 32 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096))
    mlp = 32 * 3 * (4096 + 14336)
    unembed = 4096 + 128_256
    assert hp.get_lora_param_count("meta-llama/Llama-3.1-8B", 1) == attn + mlp + unembed
    with pytest.raises(ConfigurationError):
        hp.get_lora_param_count("meta-llama/Llama-3.1-8B", 8, train_mlp=False, train_attn=False, train_unembed=False)


def test_lr_multiplier_helpers(peer_hp: Any) -> None:
    assert hp.get_lora_lr_over_full_finetune_lr("Qwen/Qwen3-8B") == peer_hp.get_lora_lr_over_full_finetune_lr("Qwen/Qwen3-8B")
    assert hp.nominal_param_count("Qwen/Qwen3-30B-A3B") == 30e9
    assert hp.nominal_param_count("moonshotai/Kimi-K3.1-Pro") == 2.8e12
    for entry in lineup():
        m = hp.get_full_finetune_lr_multiplier(entry.name)
        assert m == pytest.approx(1 / math.sqrt(hp.nominal_param_count(entry.name)))
        assert hp.get_lora_lr_multiplier(entry.name) == pytest.approx(10 * m)
    # transfer rule: a model 4x the size gets half the LR multiplier
    assert hp.get_lora_lr_multiplier("Qwen/Qwen3-32B") / hp.get_lora_lr_multiplier("Qwen/Qwen3-8B") == pytest.approx(0.5)


def test_cli_list_shows_every_lineup_model(peer: dict[str, Any]) -> None:
    import argparse

    from cookbook.tokenizers import cli_list

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_list.run(argparse.Namespace(families=False)) == 0
    listed = {line.split()[0] for line in buf.getvalue().splitlines()[3:] if line.strip()}
    assert set(peer) <= listed
    assert set(MODELS) == listed


def test_unknown_name_suggests_close_ones() -> None:
    assert suggest_models("Qwen/Qwen3.5-9B-Bse")[0] == "Qwen/Qwen3.5-9B-Base"
    assert suggest_models("meta/Llama-3.1-8B")[0] == "meta-llama/Llama-3.1-8B"
    assert suggest_models("acme/NotAModel-7B") == []
    with pytest.raises(ConfigurationError):
        model_entry("Qwen/Qwen3.5-9B-Bse")
    assert model_entry("qwen/qwen3.5-9b-base").name == "Qwen/Qwen3.5-9B-Base"


def _user_catalogue(tmp_path: Path, models: list[dict[str, Any]]) -> Path:
    from cookbook.mock.tiny_chat import tiny_chat_dir

    tok = tiny_chat_dir(tmp_path / "toks")
    path = tmp_path / "models.json"
    for m in models:
        m.setdefault("tokenizer", str(tok))
    path.write_text(json.dumps({"models": models}))
    return path


@pytest.fixture
def clean_user_models() -> Any:
    from cookbook.tokenizers import catalogue

    before = dict(catalogue.MODELS)
    loaded = set(catalogue._loaded_user_catalogues)
    yield
    catalogue.MODELS.clear()
    catalogue.MODELS.update(before)
    catalogue._loaded_user_catalogues.clear()
    catalogue._loaded_user_catalogues.update(loaded)


def test_user_catalogue_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_user_models: Any) -> None:
    path = _user_catalogue(
        tmp_path,
        [{"name": "acme/Tiny-1", "vocab_size": 267, "renderers": ["llama3"], "hidden_size": 512},
         {"name": "acme/Tiny-Qwen-2", "tokenizer": "qwen3", "vocab_size": 151_936, "renderers": ["qwen3"],
          "hidden_size": 1024, "lr_scaling": "qwen"}],
    )
    monkeypatch.setenv(USER_CATALOGUE_ENV, str(path))
    entry = model_entry("acme/Tiny-1")
    assert entry.family is None and tokenizer_dir("acme/Tiny-1") == Path(entry.tokenizer_path or "")
    assert model_entry("acme/Tiny-Qwen-2").family == "qwen3"
    assert hp.get_lr("acme/Tiny-Qwen-2", strict=True) == pytest.approx(5e-4 * (2000 / 1024) ** 0.0775)
    assert not hp.lr_recommendation("acme/Tiny-1").calibrated

    from cookbook.mock.models import ModelRegistry, hf_repo_folders

    spec = ModelRegistry().resolve("acme/Tiny-1")
    assert spec.vocab_size == 267 and spec.tokenizer_dir == Path(entry.tokenizer_path or "")
    assert "acme/Tiny-1" in ModelRegistry().names()
    assert "acme/Tiny-1" in hf_repo_folders()


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "acme/X", "vocab_size": 10},  # no renderers
        {"name": "acme/X", "vocab_size": 10, "renderers": ["llama3"], "colour": "red"},
        {"name": "Qwen/Qwen3-8B", "vocab_size": 10, "renderers": ["qwen3"]},  # built-in name
        {"name": "acme/X", "vocab_size": 10, "renderers": ["llama3"], "tokenizer": "no-such-folder"},
        {"name": "acme/X", "vocab_size": 10, "renderers": ["llama3"], "lr_scaling": "gpt"},
    ],
)
def test_bad_user_catalogue_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_user_models: Any, bad: dict[str, Any]
) -> None:
    path = _user_catalogue(tmp_path, [bad])
    monkeypatch.setenv(USER_CATALOGUE_ENV, str(path))
    with pytest.raises(ConfigurationError):
        model_entry("acme/X")


def test_register_model_api(clean_user_models: Any) -> None:
    from dataclasses import replace

    from cookbook.tokenizers import register_model

    entry = replace(model_entry("Qwen/Qwen3-8B"), name="acme/Qwen3-8B-ft", in_lineup=False)
    register_model(entry)
    assert model_entry("acme/Qwen3-8B-ft").family == "qwen3"
    with pytest.raises(ConfigurationError):
        register_model(entry)  # exists: needs replace=True
    with pytest.raises(ConfigurationError):
        register_model(replace(entry, name="acme/Y", family="nope"))


def test_the_mock_serves_every_lineup_model(tinker_mock: Any) -> None:
    caps = tinker_mock.rest_client().get_server_capabilities().result()
    served = {m.model_name for m in caps.supported_models}
    assert {m.name for m in lineup()} <= served
    assert {"cookbook/tiny-test", "cookbook/tiny-chat"} <= served
    for entry in lineup():
        spec = tinker_mock.registry.resolve(entry.name)
        assert spec.vocab_size == entry.vocab_size
        if entry.family is None:
            assert spec.tokenizer_dir is None  # served without a tokenizer
