"""Contract tests: the unmodified tinker SDK over HTTP against the mock server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tinker
from mock_helpers import RL_LOSSES, TINY, adapter_of, ce_datum, corpus, rl_datum, train_client
from tinker import types

pytestmark = pytest.mark.e2e


def test_full_flow_every_loss(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, rank=8, seed=1)
    info = tc.get_info()
    assert info.model_data.model_name == TINY and info.lora_rank == 8
    data = [ce_datum(t) for t in corpus(4, 12, seed=0)]
    fb = tc.forward_backward(data, "cross_entropy").result()
    assert len(fb.loss_fn_outputs) == 4
    lp0 = fb.loss_fn_outputs[0]["logprobs"].to_numpy()
    assert lp0.shape == (11,) and np.all(lp0 < 0)
    assert fb.metrics["loss:sum"] == pytest.approx(-sum(o["logprobs"].to_numpy().sum() for o in fb.loss_fn_outputs), rel=1e-5)
    tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    path = tc.save_weights_for_sampler("flow").result().path
    assert path.startswith("tinker://") and path.endswith("/sampler_weights/flow")
    sampler = service.create_sampling_client(model_path=path).result()
    prompt = [10, 20, 30, 40]
    res = sampler.sample(
        types.ModelInput.from_ints(prompt), num_samples=3,
        sampling_params=types.SamplingParams(max_tokens=6, seed=7, temperature=1.0),
        include_prompt_logprobs=True, topk_prompt_logprobs=3,
    ).result()
    assert len(res.sequences) == 3
    for seq in res.sequences:
        assert 1 <= len(seq.tokens) <= 6 and seq.logprobs is not None and len(seq.logprobs) == len(seq.tokens)
        assert seq.sequence_id
    assert res.prompt_logprobs[0] is None and all(x is not None and x < 0 for x in res.prompt_logprobs[1:])
    assert res.topk_prompt_logprobs[0] is None and len(res.topk_prompt_logprobs[1]) == 3
    # sampler logprobs == learner logprobs for the same weights (what KL metrics assume)
    seq = res.sequences[0]
    d = rl_datum(prompt, list(seq.tokens), list(seq.logprobs), 1.0, "importance_sampling")
    fwd = tc.forward([d], "importance_sampling").result()
    learner = fwd.loss_fn_outputs[0]["logprobs"].to_numpy()[len(prompt) - 1 :]
    np.testing.assert_allclose(learner, seq.logprobs, atol=1e-5)
    # every RL loss: one forward_backward + optim_step each
    for loss in RL_LOSSES:
        cfg = {"beta": 0.05} if loss == "dro" else ({"clip_low_threshold": 0.8, "clip_high_threshold": 1.2} if loss != "importance_sampling" else None)
        batch = [rl_datum(prompt, list(s.tokens), list(s.logprobs), a, loss) for s, a in zip(res.sequences, (1.0, -0.5, 0.25))]
        out = tc.forward_backward(batch, loss, loss_fn_config=cfg).result()
        assert "loss:sum" in out.metrics and np.isfinite(out.metrics["loss:sum"]), loss
        tc.optim_step(types.AdamParams(learning_rate=1e-3)).result()
    # 2-D cross-entropy targets (top-k distillation shape)
    t2 = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int64)
    d2 = types.Datum(model_input=types.ModelInput.from_ints([7, 8, 9]),
                     loss_fn_inputs={"target_tokens": t2, "weights": np.full((3, 2), 0.5, dtype=np.float32)})
    o2 = tc.forward_backward([d2], "cross_entropy").result()
    assert o2.loss_fn_outputs[0]["logprobs"].to_numpy().reshape(3, 2).shape == (3, 2)
    # compute_logprobs and the base-model sampler
    base = service.create_sampling_client(base_model=TINY).result()
    lps = base.compute_logprobs(types.ModelInput.from_ints(prompt)).result()
    assert lps[0] is None and len(lps) == 4


def test_custom_loss_through_sdk_path(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=2)
    data = [ce_datum(t) for t in corpus(3, 8, seed=1)]

    def loss_fn(data, logprobs_list):

        loss = sum(-(lp * 2.0).sum() for lp in logprobs_list)
        return loss, {"custom:sum": float(loss)}

    pytest.importorskip("torch", reason="forward_backward_custom needs torch on the client side")
    out = tc.forward_backward_custom(data, loss_fn).result()
    assert "loss:sum" in out.metrics


def test_custom_loss_equivalent_requests(tinker_mock):
    """What forward_backward_custom sends (no torch needed): forward-only CE, then CE with weights = -dC/dlp."""
    service = tinker_mock.service_client()
    tc = train_client(service, seed=2)
    data = [ce_datum(t, [0.0] * 7) for t in corpus(2, 8, seed=1)]
    fwd = tc.forward(data, "cross_entropy").result()
    assert fwd.metrics["loss:sum"] == 0.0
    neg = [types.Datum(model_input=d.model_input, loss_fn_inputs={
        "target_tokens": d.loss_fn_inputs["target_tokens"], "weights": np.full(7, -2.0, dtype=np.float32)}) for d in data]
    out = tc.forward_backward(neg, "cross_entropy").result()
    total = sum(o["logprobs"].to_numpy().sum() for o in fwd.loss_fn_outputs)
    assert out.metrics["loss:sum"] == pytest.approx(2.0 * total, rel=1e-5)


def test_chunked_forward_backward_matches_single_datums(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=3)
    data = [ce_datum(t) for t in corpus(1100, 4, seed=2)]
    out = tc.forward_backward(data, "cross_entropy").result()
    assert len(out.loss_fn_outputs) == 1100
    chunk_reqs = tinker_mock.requests_to("forward_backward")
    seqs = sorted(r.seq_id for r in chunk_reqs)
    assert seqs == [1, 2]
    expected = -sum(o["logprobs"].to_numpy().astype(np.float64).sum() for o in out.loss_fn_outputs)
    assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result()


def test_save_state_and_from_state_with_optimizer(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=4)
    data = [ce_datum(t) for t in corpus(2, 10, seed=3)]
    adam = types.AdamParams(learning_rate=1e-2)
    for _ in range(2):
        tc.forward_backward(data, "cross_entropy").result()
        tc.optim_step(adam).result()
    path = tc.save_state("ckpt").result().path
    assert path.endswith("/weights/ckpt")
    # continue the original and a restored copy by one identical step: identical weights
    tc2 = service.create_training_client_from_state_with_optimizer(path).result()
    tc3 = service.create_training_client_from_state(path).result()
    for client in (tc, tc2, tc3):
        client.forward_backward(data, "cross_entropy").result()
        client.optim_step(adam).result()
    A1, B1 = adapter_of(tinker_mock, tc.get_info().model_id)
    A2, B2 = adapter_of(tinker_mock, tc2.get_info().model_id)
    _, B3 = adapter_of(tinker_mock, tc3.get_info().model_id)
    assert np.array_equal(A1, A2) and np.array_equal(B1, B2)
    assert not np.array_equal(B1, B3)  # fresh optimizer state: a different step
    # load_state on an existing client (weights only and with optimizer)
    with pytest.warns(FutureWarning):
        tc3.load_state_with_optimizer(path).result()
    tc3.forward_backward(data, "cross_entropy").result()
    tc3.optim_step(adam).result()
    assert np.array_equal(adapter_of(tinker_mock, tc3.get_info().model_id)[1], B1)


def test_async_api(tinker_mock):
    service = tinker_mock.service_client()

    async def main() -> float:
        tc = await service.create_lora_training_client(base_model=TINY, rank=4, seed=5)
        data = [ce_datum(t) for t in corpus(2, 6, seed=4)]
        fwd_bwd = tc.forward_backward(data, "cross_entropy")
        optim = tc.optim_step(types.AdamParams(learning_rate=1e-3))
        out = await fwd_bwd
        await optim
        sampler = await tc.save_weights_and_get_sampling_client()
        res = await sampler.sample(types.ModelInput.from_ints([1, 2]), 2, types.SamplingParams(max_tokens=3, seed=1))
        assert len(res.sequences) == 2
        return out.metrics["loss:sum"]

    assert asyncio.run(main()) > 0


def test_rest_client(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=6)
    model_id = tc.get_info().model_id
    tc.forward_backward([ce_datum([1, 2, 3])], "cross_entropy").result()
    p1 = tc.save_state("a").result().path
    p2 = tc.save_weights_for_sampler("b").result().path
    rest = tinker.RestClient(base_url=tinker_mock.base_url, api_key=tinker_mock.api_key)
    run = rest.get_training_run(model_id).result()
    assert run.base_model == TINY and run.lora_rank == 8
    assert run.last_checkpoint.tinker_path == p1 and run.last_sampler_checkpoint.tinker_path == p2
    assert rest.get_training_run_by_tinker_path(p2).result().training_run_id == model_id
    runs = rest.list_training_runs().result()
    assert [r.training_run_id for r in runs.training_runs] == [model_id]
    cks = rest.list_checkpoints(model_id).result().checkpoints
    assert sorted(c.tinker_path for c in cks) == sorted([p1, p2])
    info = rest.get_weights_info_by_tinker_path(p1).result()
    assert info.base_model == TINY and info.lora_rank == 8
    rest.delete_checkpoint_from_tinker_path(p2).result()
    assert [c.tinker_path for c in rest.list_checkpoints(model_id).result().checkpoints] == [p1]
    caps = rest.get_server_capabilities().result()
    assert TINY in [m.model_name for m in caps.supported_models]


def test_both_get_tokenizer_calls_offline(tinker_mock):
    tokenizers = pytest.importorskip("cookbook.tokenizers")
    try:
        tokenizers.tokenizer_dir("Qwen/Qwen3-8B", fetch=False)
    except Exception as exc:
        pytest.skip(f"the Qwen3 tokenizer is not provisioned in the cache ({exc}); run `cookbook tokenizers fetch`")
    service = tinker_mock.service_client()
    tc = service.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=4).result()
    tok = tc.get_tokenizer()
    ids = tok.encode("hello world", add_special_tokens=False)
    sampler = tc.save_weights_and_get_sampling_client().result()
    tok2 = sampler.get_tokenizer()
    assert tok2.encode("hello world", add_special_tokens=False) == ids
    # stop strings are matched on the detokenized text; the stop token of the base model is EOS by default
    res = sampler.sample(types.ModelInput.from_ints(ids), 1, types.SamplingParams(max_tokens=40, seed=3, stop=["e"])).result()
    seq = res.sequences[0]
    assert seq.stop_reason == "length" or "e" in tok.decode(seq.tokens)


def test_seed_three_arms(tinker_mock):
    service = tinker_mock.service_client()
    sampler = service.create_sampling_client(base_model=TINY).result()
    prompt = types.ModelInput.from_ints([5, 6, 7])

    def draw(seed: int) -> list[list[int]]:
        res = sampler.sample(prompt, 4, types.SamplingParams(max_tokens=12, seed=seed, stop=[])).result()
        return [list(s.tokens) for s in res.sequences]

    a, b, c = draw(11), draw(11), draw(12)
    assert a == b  # same seed: equal
    assert a != c  # different seed: differs
    assert len({tuple(x) for x in a}) > 1  # samples within one request differ


def test_same_seed_identical_runs(tinker_mock):
    def run() -> tuple[list[float], list[list[int]]]:
        service = tinker_mock.service_client()
        tc = train_client(service, seed=9)
        data = [ce_datum(t) for t in corpus(3, 9, seed=5)]
        losses = []
        for _ in range(3):
            losses.append(tc.forward_backward(data, "cross_entropy").result().metrics["loss:sum"])
            tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        s = tc.save_weights_and_get_sampling_client().result()
        res = s.sample(types.ModelInput.from_ints([1, 2]), 2, types.SamplingParams(max_tokens=8, seed=3)).result()
        return losses, [list(x.tokens) for x in res.sequences]

    assert run() == run()


def test_split_batch_gives_same_weights(tinker_mock):
    service = tinker_mock.service_client()
    data = [ce_datum(t) for t in corpus(6, 10, seed=6)]
    one = train_client(service, seed=10)
    split = train_client(service, seed=10)
    one.forward_backward(data, "cross_entropy").result()
    split.forward_backward(data[:2], "cross_entropy").result()
    split.forward_backward(data[2:5], "cross_entropy").result()
    split.forward_backward(data[5:], "cross_entropy").result()
    adam = types.AdamParams(learning_rate=1e-2, weight_decay=0.01, grad_clip_norm=1.0)
    one.optim_step(adam).result()
    split.optim_step(adam).result()
    A1, B1 = adapter_of(tinker_mock, one.get_info().model_id)
    A2, B2 = adapter_of(tinker_mock, split.get_info().model_id)
    assert np.array_equal(A1, A2) and np.array_equal(B1, B2)  # bit-identical
    assert not np.array_equal(B1, 0 * B1)


def test_zstd_compressed_forward_backward(tinker_mock):
    tinker_mock.config.compress_fwdbwd = True
    try:
        service = tinker_mock.service_client()
        tc = train_client(service, seed=11)
        out = tc.forward_backward([ce_datum([1, 2, 3, 4])], "cross_entropy").result()
        assert out.metrics["loss:sum"] > 0
    finally:
        tinker_mock.config.compress_fwdbwd = False


def test_scripted_sampling_and_stop_tokens(tinker_mock):
    service = tinker_mock.service_client()
    sampler = service.create_sampling_client(base_model=TINY).result()
    tinker_mock.script_samples([[65, 66, 67], "hi"])
    res = sampler.sample(types.ModelInput.from_ints([1]), 2, types.SamplingParams(max_tokens=10)).result()
    assert [list(s.tokens) for s in res.sequences] == [[65, 66, 67], [104, 105]]
    assert all(s.logprobs is not None for s in res.sequences)
    # stop token included, stop_reason "stop"; greedy decoding is deterministic
    greedy = sampler.sample(types.ModelInput.from_ints([3, 4]), 1, types.SamplingParams(max_tokens=5, temperature=0.0, stop=[])).result()
    first = greedy.sequences[0].tokens[1]
    stopped = sampler.sample(types.ModelInput.from_ints([3, 4]), 1,
                             types.SamplingParams(max_tokens=5, temperature=0.0, stop=[first])).result()
    assert list(stopped.sequences[0].tokens) == list(greedy.sequences[0].tokens[:2])
    assert stopped.sequences[0].stop_reason == "stop" and greedy.sequences[0].stop_reason == "length"
    # stop strings on the tiny byte-level model
    tinker_mock.script_samples(["abcXYZdef"])
    s2 = sampler.sample(types.ModelInput.from_ints([1]), 1, types.SamplingParams(max_tokens=20, stop=["XY"])).result()
    assert bytes(s2.sequences[0].tokens).decode() == "abcXY" and s2.sequences[0].stop_reason == "stop"


def test_failed_request_future_returns_error(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=12)
    name = tc.get_info().model_id
    with pytest.raises(tinker.RequestFailedError, match="not found"), pytest.warns(FutureWarning):
        tc.load_state(f"tinker://{name}/weights/missing").result()
    with pytest.raises(tinker.NotFoundError, match="not found"):
        service.create_training_client_from_state(f"tinker://{name}/weights/missing").result()


def test_bad_input_is_a_clear_4xx(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=13)
    bad = types.Datum(model_input=types.ModelInput.from_ints([1, 2]),
                      loss_fn_inputs={"target_tokens": np.array([3, 9999]), "weights": np.ones(2, dtype=np.float32)})
    # a refused training request holds its seq_id: it is accepted and its future fails, naming the field
    # (an HTTP 4xx at submission would wedge the SDK's turn-taking for chunked requests)
    with pytest.raises(tinker.RequestFailedError, match=r"target_tokens.*outside the vocabulary") as info:
        tc.forward_backward([bad], "cross_entropy").result()
    assert info.value.category == "user"
    # the refused request consumed its seq_id: the client keeps working
    out = tc.forward_backward([ce_datum([1, 2, 3])], "cross_entropy").result()
    assert out.metrics["loss:sum"] > 0
    with pytest.raises(tinker.RequestFailedError, match="unknown"):
        tc.forward_backward([ce_datum([1, 2, 3])], "nope").result()
    with pytest.raises(tinker.NotFoundError, match="unknown model"):
        service.create_lora_training_client(base_model="nobody/none", rank=4).result()
