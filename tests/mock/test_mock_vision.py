"""Vision end to end: the qwen3_5 renderer's ImageChunks through the unmodified tinker SDK over HTTP to the mock.

* a VL SFT step (one image, Qwen/Qwen3.5-4B) — forward_backward + optim_step several times — and the loss falls;
* the image changes the model's output (its embedding depends on the image bytes) in forward, sampling and
  compute_logprobs;
* a wrong ``expected_tokens``, undecodable data, a format that does not match the data, or an image for a
  text-only model is refused as the user's error, never a 500 and never a hang: a 400
  (``tinker.BadRequestError``) for sampling; for training (which holds its seq_id) a failed future of category
  ``user``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import tinker
from tinker import types

from cookbook.renderers.kit.vision import QWEN3_VL, make_png
from cookbook.renderers.qwen3_5 import Qwen3_5Renderer
from cookbook.supervised.data import conversation_to_datum
from cookbook.tokenizers import get_tokenizer

pytestmark = pytest.mark.e2e

BASE = "Qwen/Qwen3.5-4B"


@pytest.fixture(scope="module")
def renderer() -> Qwen3_5Renderer:
    return Qwen3_5Renderer(get_tokenizer(BASE))


def _convo(seed: int = 0) -> list[Any]:
    return [
        {"role": "user", "content": [{"type": "image", "image": make_png(32, 32, seed)}, {"type": "text", "text": "Name it."}]},
        {"role": "assistant", "content": "A gradient."},
    ]


def _image_prompt(renderer: Qwen3_5Renderer, seed: int) -> types.ModelInput:
    return renderer.build_generation_prompt(_convo(seed)[:1])


def test_vl_sft_step_loss_falls(tinker_mock: Any, renderer: Qwen3_5Renderer) -> None:
    datum = conversation_to_datum(_convo(), renderer, train_on_what="last_assistant_message")
    assert any(ch.type == "image" for ch in datum.model_input.chunks)
    assert [ch.expected_tokens for ch in datum.model_input.chunks if ch.type == "image"] == [64]
    service = tinker_mock.service_client()
    tc = service.create_lora_training_client(base_model=BASE, rank=4, seed=0).result()
    losses = []
    for _ in range(4):
        fb = tc.forward_backward([datum], "cross_entropy").result()
        losses.append(fb.metrics["loss:sum"])
        tc.optim_step(types.AdamParams(learning_rate=5e-2)).result()
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses


def test_image_bytes_change_forward_and_sampling(tinker_mock: Any, renderer: Qwen3_5Renderer) -> None:
    service = tinker_mock.service_client()
    tc = service.create_lora_training_client(base_model=BASE, rank=4, seed=0).result()
    d0, d1 = (conversation_to_datum(_convo(s), renderer, train_on_what="last_assistant_message") for s in (0, 1))
    out = tc.forward([d0, d1, d0], "cross_entropy").result().loss_fn_outputs
    lp = [o["logprobs"].to_numpy() for o in out]
    np.testing.assert_array_equal(lp[0], lp[2])  # deterministic
    assert not np.array_equal(lp[0], lp[1])  # the image matters
    sampler = service.create_sampling_client(base_model=BASE).result()
    params = types.SamplingParams(max_tokens=4, seed=3)
    a = sampler.sample(_image_prompt(renderer, 0), num_samples=1, sampling_params=params).result()
    b = sampler.sample(_image_prompt(renderer, 0), num_samples=1, sampling_params=params).result()
    assert a.sequences[0].tokens == b.sequences[0].tokens
    p0 = sampler.compute_logprobs(_image_prompt(renderer, 0)).result()
    p1 = sampler.compute_logprobs(_image_prompt(renderer, 1)).result()
    assert len(p0) == _image_prompt(renderer, 0).length and p0[0] is None
    n_img_end = 3 + QWEN3_VL.num_tokens(32, 32)  # <|im_start|> user \n <|vision_start|> then the image
    assert p0[n_img_end + 1 :] != p1[n_img_end + 1 :]


def _with_image(prompt: types.ModelInput, **change: Any) -> types.ModelInput:
    chunks = [ch.model_copy(update=change) if ch.type == "image" else ch for ch in prompt.chunks]
    return types.ModelInput(chunks=chunks)


WAIT = 120  # seconds: a bound on every future, so a regression fails instead of hanging the suite


def test_bad_image_chunks_are_400(tinker_mock: Any, renderer: Qwen3_5Renderer) -> None:
    service = tinker_mock.service_client()
    tc = service.create_lora_training_client(base_model=BASE, rank=4, seed=0).result(timeout=WAIT)
    sampler = service.create_sampling_client(base_model=BASE).result(timeout=WAIT)
    good = conversation_to_datum(_convo(), renderer, train_on_what="last_assistant_message")
    prompt = _image_prompt(renderer, 0)
    bad_prompts = [
        _with_image(prompt, expected_tokens=63),  # mismatch with the image processor
        _with_image(prompt, data=b"\x89PNG garbage"),  # undecodable
        _with_image(prompt, format="jpeg"),  # format does not match the data
    ]
    params = types.SamplingParams(max_tokens=2)
    for bad in bad_prompts:
        with pytest.raises(tinker.BadRequestError):
            sampler.sample(bad, num_samples=1, sampling_params=params).result(timeout=WAIT)
        datum = types.Datum(model_input=_with_image(good.model_input, **_diff(bad, prompt)),
                            loss_fn_inputs=good.loss_fn_inputs)
        # a refused training request holds its seq_id: accepted, and its future fails as the user's error
        with pytest.raises(tinker.RequestFailedError) as info:
            tc.forward_backward([datum], "cross_entropy").result(timeout=WAIT)
        assert info.value.category == "user"
    # the refused requests consumed their seq_ids: the client keeps working
    assert tc.forward_backward([good], "cross_entropy").result(timeout=WAIT).metrics["loss:sum"] > 0
    # a text-only model refuses image chunks
    text_only = service.create_lora_training_client(base_model="cookbook/tiny-test", rank=4, seed=0).result(
        timeout=WAIT
    )
    with pytest.raises(tinker.RequestFailedError) as info:
        text_only.forward_backward([good], "cross_entropy").result(timeout=WAIT)
    assert info.value.category == "user"


def _diff(bad: types.ModelInput, good: types.ModelInput) -> dict[str, Any]:
    (b,) = [ch for ch in bad.chunks if ch.type == "image"]
    (g,) = [ch for ch in good.chunks if ch.type == "image"]
    return {k: getattr(b, k) for k in ("data", "format", "expected_tokens") if getattr(b, k) != getattr(g, k)}
