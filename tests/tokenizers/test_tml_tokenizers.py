"""The tml-only tokenizers (Kimi K2 / K2.5 / K2.6, GLM, Nemotron 3, DeepSeek V4.1, Inkling) exported into tokenizer.json agree with tml itself.

The oracle is tml-renderers' own ``encode_ordinary``, run in the provisioning-only torch venv (a subprocess),
never the exported file. Provisioned on demand: the first run creates the tools venv (about 1.5 minutes), later
runs reuse the cache (the whole module then takes about half a minute, mostly torch's import in the worker).
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from cookbook.errors import ProvisioningError
from cookbook.tokenizers import get_tokenizer, tokenizer_dir
from cookbook.tokenizers import tml_export as tml
from cookbook.tokenizers.catalogue import FAMILIES, MODELS, model_entry
from cookbook.tokenizers.cli_fetch import CORE
from cookbook.tokenizers.provision import ensure_artifact, recipe_hash
from cookbook.tokenizers.sources import ARTIFACTS

TML_FAMILIES = {
    "kimi_k2_instruct": "KimiK2InstructTokenizer",
    "kimi_k2_thinking": "KimiK2ThinkingTokenizer",
    "glm": "GlmTokenizer",
    "nemotron3": "Nemotron3Tokenizer",
    "deepseek_v4_1": "DeepSeekV41Tokenizer",
    "kimi_k25": "KimiK25Tokenizer",
    "inkling": "O200kBaseChatTokenizer",
}
#: tml classes that tokenize exactly like a family's own class (checked against that family's folder too)
SAME_AS = {"KimiK26Tokenizer": "kimi_k25"}

HAND_CORPUS = [
    "Hello world, this is a test of the tokenizer.",
    "def f(x):\n    return x ** 2  # square\n\n\tindented\r\n",
    "你好，世界！这是中文文本。これは日本語です。한국어 텍스트",
    "Mixed 中文English混合text with 数字123 and ABCdef",
    "Emoji 🙂🚀 and accents: café, naïve, Ångström; combining e\u0301",
    "Numbers 1234567890 3.14159 -42 1e-9 0x1F 2024-11-21",
    "   leading and trailing spaces   \n\n\n",
    "ＡＢＣ full-width ﬁ ligature ① circled Ⅻ",
    "I'm sure they'll say it's OK, we'd've known; DON'T SHOUT, It'S fine",
    "path/to/file.py\n/usr/bin//env\n// comment /*block*/",
    "CamelCaseWord HTTPServer iPhone XMLHttpRequest snake_case_name",
    "<|im_end|> [BOS] <s> <think> [gMASK] <|user|> look special but are ordinary text here",
    "Ελληνικά, русский текст, עברית, العربية, हिन्दी, ไทย",
    "\u200b zero width \u00a0 nbsp \t\t tabs \r\n crlf",
]


def _corpus() -> list[str]:
    """Hand-written lines plus real English licence text and Python source (about 60 KB)."""
    wheel = ensure_artifact(ARTIFACTS["tml-renderers"], quiet=True)
    with zipfile.ZipFile(wheel) as zf:
        licence = zf.read("tml_renderers-0.2.1.dist-info/licenses/THIRD_PARTY_LICENSES.md").decode("utf-8")
    source = (Path(__file__).parents[2] / "cookbook" / "renderers" / "base.py").read_text(encoding="utf-8")
    lines = [ln for ln in licence.splitlines()[:600] if ln.strip()] + source.splitlines()
    blocks = ["\n".join(lines[i : i + 20]) for i in range(0, len(lines), 20)]
    return HAND_CORPUS + blocks


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _corpus()


@pytest.fixture(scope="module")
def tml_reference(corpus: list[str]) -> dict[str, list[list[int]]]:
    for fam in TML_FAMILIES:
        tokenizer_dir(fam)  # provision on demand (creates the tools venv the first time)
    return tml.tml_encode_ordinary([*TML_FAMILIES.values(), *SAME_AS], corpus)


@pytest.fixture(scope="module")
def literal_backends(tml_reference: Any) -> dict[str, Any]:
    from tokenizers import Tokenizer

    out = {}
    for fam in TML_FAMILIES:
        tok = Tokenizer.from_file(str(tokenizer_dir(fam) / "tokenizer.json"))
        tok.encode_special_tokens = True  # like encode_ordinary: special-token text is ordinary text
        out[fam] = tok
    return out


@pytest.mark.parametrize(
    ("family", "tml_class"), [*sorted(TML_FAMILIES.items()), *((fam, cls) for cls, fam in sorted(SAME_AS.items()))]
)
def test_export_matches_tml_encode_ordinary(
    family: str, tml_class: str, corpus: list[str], tml_reference: dict[str, list[list[int]]],
    literal_backends: dict[str, Any],
) -> None:
    expected = tml_reference[tml_class]
    got = [e.ids for e in literal_backends[family].encode_batch(corpus, add_special_tokens=False)]
    mismatches = [i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b]
    assert not mismatches, (
        f"{family}: {len(mismatches)} of {len(corpus)} texts differ; first {corpus[mismatches[0]][:80]!r}: "
        f"tml {expected[mismatches[0]][:20]} vs export {got[mismatches[0]][:20]}"
    )
    assert sum(len(ids) for ids in got) > 10_000, "the corpus must be large enough to exercise the merges"


@pytest.mark.parametrize("family", sorted(TML_FAMILIES))
def test_decode_roundtrips(family: str, literal_backends: dict[str, Any]) -> None:
    backend = literal_backends[family]
    for text in HAND_CORPUS:
        assert backend.decode(backend.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


@pytest.mark.parametrize(
    ("model", "token", "tid"),
    [
        ("moonshotai/Kimi-K2-Thinking", "[BOS]", 163584),
        ("moonshotai/Kimi-K2-Thinking", "[EOS]", 163585),
        ("moonshotai/Kimi-K2-Thinking", "<|im_end|>", 163586),
        ("moonshotai/Kimi-K2-Thinking", "<|im_user|>", 163587),
        ("moonshotai/Kimi-K2-Thinking", "<|im_assistant|>", 163588),
        ("moonshotai/Kimi-K2-Thinking", "<|im_system|>", 163594),
        ("moonshotai/Kimi-K2-Thinking", "<|im_middle|>", 163601),
        ("moonshotai/Kimi-K2-Thinking", "<think>", 163606),
        ("moonshotai/Kimi-K2-Thinking", "</think>", 163607),
        ("moonshotai/Kimi-K2-Instruct", "[BOS]", 163584),
        ("moonshotai/Kimi-K2-Instruct", "<|im_end|>", 163586),
        ("moonshotai/Kimi-K2-Instruct", "<|im_user|>", 163587),
        ("moonshotai/Kimi-K2-Instruct", "<|im_assistant|>", 163588),
        ("moonshotai/Kimi-K2-Instruct", "<|im_system|>", 163594),
        ("moonshotai/Kimi-K2-Instruct", "<|im_middle|>", 163601),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "<unk>", 0),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "<s>", 1),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "</s>", 2),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "<|im_start|>", 10),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "<|im_end|>", 11),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "<think>", 12),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "</think>", 13),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "<tool_call>", 14),
        ("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "<|im_start|>", 10),
        ("zai-org/GLM-4.7-Flash", "<|endoftext|>", 154820),
        ("zai-org/GLM-4.7-Flash", "[gMASK]", 154822),
        ("zai-org/GLM-4.7-Flash", "<sop>", 154824),
        ("zai-org/GLM-4.7-Flash", "<|system|>", 154826),
        ("zai-org/GLM-4.7-Flash", "<|user|>", 154827),
        ("zai-org/GLM-4.7-Flash", "<|assistant|>", 154828),
        ("zai-org/GLM-4.7-Flash", "<|observation|>", 154829),
        ("zai-org/GLM-4.7-Flash", "<think>", 154841),
    ],
)
def test_published_special_token_ids(model: str, token: str, tid: int, tml_reference: Any) -> None:
    tok = get_tokenizer(model)
    assert tok.convert_tokens_to_ids(token) == tid
    assert tok.decode([tid]) == token


@pytest.mark.parametrize(("family", "size"), [("kimi_k2_instruct", 163_840), ("kimi_k2_thinking", 163_840),
                                              ("glm", 154_856), ("nemotron3", 131_072),
                                              ("deepseek_v4_1", 129_280), ("kimi_k25", 163_840),
                                              ("inkling", 200_058)])
def test_vocabulary_size_and_embedding_rows(family: str, size: int, tml_reference: Any) -> None:
    assert len(get_tokenizer(family)) == size
    for m in MODELS.values():
        if m.family == family:
            assert m.vocab_size >= size and m.vocab_size % 64 == 0


@pytest.mark.parametrize("family", sorted(TML_FAMILIES))
def test_folder_provenance_and_template(family: str, tml_reference: Any) -> None:
    folder = tokenizer_dir(family)
    prov = json.loads((folder / "PROVENANCE.json").read_text())
    assert prov["recipe_sha256"] == recipe_hash(FAMILIES[family])
    assert "builder:tml_export" in prov["patches"] and TML_FAMILIES[family] in prov["patches"]["builder:tml_export"]
    assert prov["files"]["tokenizer.json"]["from"].endswith(TML_FAMILIES[family])
    assert "tml-renderers" in prov["artifacts"]
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    if FAMILIES[family].chat_template is None:  # no template of this family reaches any registry
        assert "chat_template" not in cfg and prov["chat_template"] is None
        return
    assert "llama-cpp-python" in prov["artifacts"]
    assert isinstance(cfg["chat_template"], str) and prov["chat_template"]["source"].endswith(".jinja")


def test_chat_templates_render_with_the_exported_tokenizers(tml_reference: Any) -> None:
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    kimi = get_tokenizer("moonshotai/Kimi-K2-Thinking")
    out: Any = kimi.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = list(out["input_ids"])
    assert ids[-3:] == [163588, *kimi.encode("assistant", add_special_tokens=False), 163601][-3:]
    nemo = get_tokenizer("nvidia/Nemotron-3-Nano-30B-A3B")
    text = str(nemo.apply_chat_template(conv, add_generation_prompt=True, tokenize=False))
    assert text.startswith("<|im_start|>system\nBe brief.") and text.endswith("<|im_start|>assistant\n<think>\n")
    glm = get_tokenizer("zai-org/GLM-4.7-Flash")
    text = str(glm.apply_chat_template(conv, add_generation_prompt=True, tokenize=False))
    assert text == "[gMASK]<sop><|system|>Be brief.<|user|>Hi<|assistant|><think>"


def test_tml_families_are_not_in_the_default_fetch() -> None:
    needs_torch = {name for name, fam in FAMILIES.items() if fam.needs_torch}
    assert needs_torch == set(TML_FAMILIES)
    assert not needs_torch & set(CORE)
    assert model_entry("nvidia/Nemotron-3-Nano-30B-A3B").family == "nemotron3"
    assert model_entry("moonshotai/Kimi-K2-Thinking").default_renderer == "kimi_k2_thinking"
    assert model_entry("moonshotai/Kimi-K2-Instruct").default_renderer == "kimi_k2"


def test_torch_install_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path / "cache"))
    real_run = tml._run

    def fake_run(cmd: list[str], what: str, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
        if "pip" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for torch==2.13.0")
        return real_run(cmd, what, timeout, **kw)

    monkeypatch.setattr(tml, "_run", fake_run)
    with pytest.raises(ProvisioningError, match=r"could not install torch==2\.13\.0.*No matching distribution"):
        tml.ensure_tools_venv(quiet=True)
    assert not tml.tools_venv_dir().exists(), "a failed venv is not left half-built"
    assert not list(tml.tools_root().glob(".tml-venv-*"))
