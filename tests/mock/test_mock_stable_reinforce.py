"""``stable_reinforce`` on the mock, through the unmodified tinker SDK: samples recorded with
``record_stability_info=True``, datums naming them by ``sequence_id`` in provenance spans
(``Datum.with_provenance``), and the refusals Tinker documents (no provenance, an unrecorded sequence, another
session, spans that do not reproduce the recorded tokens).

Expected values are transcribed here from ``specs/math/stable_reinforce.yaml`` (the mock's named stand-in:
``-Σ r·A + κ·Σ_sampled ½(lp - q)²``), with lp the logprobs the server returns and q the sampler logprobs the
client received.
"""

from __future__ import annotations

import numpy as np
import pytest
import tinker
from mock_helpers import train_client
from tinker import types

PROMPT = [5, 17, 42, 99, 3]


def _sample(tc: tinker.TrainingClient, record: bool = True, n: int = 2) -> list[types.SampledSequence]:
    sc = tc.save_weights_and_get_sampling_client(record_stability_info=record).result()
    params = types.SamplingParams(max_tokens=6, seed=7, temperature=1.0)
    return list(sc.sample(types.ModelInput.from_ints(PROMPT), num_samples=n, sampling_params=params).result().sequences)


def _datum(seq: types.SampledSequence, advantage: float, provenance: bool = True) -> types.Datum:
    """As tinker-cookbook builds it: targets shifted by one, q = 0 and A = 0 on the prompt positions."""
    tokens = PROMPT + list(seq.tokens)
    n, p, s = len(tokens) - 1, len(PROMPT), len(seq.tokens)
    q = np.zeros(n, dtype=np.float32)
    adv = np.zeros(n, dtype=np.float32)
    q[p - 1 :] = seq.logprobs
    adv[p - 1 :] = advantage
    d = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": np.asarray(tokens[1:], dtype=np.int64), "logprobs": q, "advantages": adv},
    )
    if not provenance:
        return d
    sid = seq.sequence_id
    return d.with_provenance(
        model_input=[types.PromptProvenanceSpan(sequence_id=sid, length=p),
                     types.SampledProvenanceSpan(sequence_id=sid, length=s - 1)],
        loss_fn_inputs=[types.PromptProvenanceSpan(sequence_id=sid, offset=1, length=p - 1),
                        types.SampledProvenanceSpan(sequence_id=sid, length=s)],
    )


def test_loss_uses_recorded_samples_and_masks_the_prompt(tinker_mock) -> None:
    service = tinker_mock.service_client()
    tc = train_client(service)
    seqs = _sample(tc)
    assert len({s.sequence_id for s in seqs}) == 2
    advantages = [1.0, -0.5]
    data = [_datum(s, a) for s, a in zip(seqs, advantages, strict=True)]
    for kl in (None, 0.5):
        cfg = None if kl is None else {"kl_coeff": kl}
        out = tc.forward_backward(data, loss_fn="stable_reinforce", loss_fn_config=cfg).result()
        expected = 0.0
        for d, o in zip(data, out.loss_fn_outputs, strict=True):
            lp = o["logprobs"].to_numpy().astype(np.float64)
            q = d.loss_fn_inputs["logprobs"].to_numpy().astype(np.float64)
            a = d.loss_fn_inputs["advantages"].to_numpy().astype(np.float64)
            sampled = np.arange(lp.size) >= len(PROMPT) - 1  # the prompt targets (q = 0 there) are not sampled
            expected += float(-np.sum(np.exp(lp - q) * a) + (0.01 if kl is None else kl) * np.sum(0.5 * (lp - q)[sampled] ** 2))
        assert out.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the KL term is over the sampled tokens only: with the prompt included the loss would be far larger
    prompt_lp = out.loss_fn_outputs[0]["logprobs"].to_numpy()[: len(PROMPT) - 1]
    assert 0.5 * 0.5 * float(np.sum(prompt_lp.astype(np.float64) ** 2)) > 1.0
    tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()


def test_on_policy_step_is_the_importance_sampling_step(tinker_mock) -> None:
    """On sampler-fresh data the stand-in's gradient is REINFORCE's (lp == q up to float32 rounding), so one
    step moves the weights like importance_sampling's."""
    service = tinker_mock.service_client()
    tc = train_client(service, seed=3)
    data = [_datum(s, a) for s, a in zip(_sample(tc), [1.0, -1.0], strict=True)]
    ref = train_client(service, seed=3)
    tc.forward_backward(data, loss_fn="stable_reinforce").result()
    ref.forward_backward(data, loss_fn="importance_sampling").result()
    for client in (tc, ref):
        client.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    st = tinker_mock.state
    b1 = st.models[tc.get_info().model_id].trainer.adapter.B
    b2 = st.models[ref.get_info().model_id].trainer.adapter.B
    assert np.abs(b1).max() > 0
    np.testing.assert_allclose(b1, b2, rtol=1e-3, atol=1e-7)


def _refused(tc: tinker.TrainingClient, data: list[types.Datum]) -> None:
    with pytest.raises(tinker.RequestFailedError) as info:
        tc.forward_backward(data, loss_fn="stable_reinforce").result()
    assert info.value.category == "user"


def test_refusals(tinker_mock) -> None:
    service = tinker_mock.service_client()
    tc = train_client(service)
    seq = _sample(tc, n=1)[0]
    _refused(tc, [_datum(seq, 1.0, provenance=False)])  # no provenance
    _refused(tc, [_datum(_sample(tc, record=False, n=1)[0], 1.0)])  # sampled without record_stability_info
    other = tinker_mock.service_client()  # another session's sample
    _refused(tc, [_datum(_sample(train_client(other), n=1)[0], 1.0)])
    d = _datum(seq, 1.0)  # the spans name the right sequence but the tokens differ
    wrong = list(d.loss_fn_inputs["target_tokens"].to_numpy())
    wrong[-1] = (int(wrong[-1]) + 1) % 256
    _refused(tc, [types.Datum(model_input=d.model_input, loss_fn_inputs={**d.loss_fn_inputs, "target_tokens": np.asarray(wrong)},
                              model_input_spans=d.model_input_spans, loss_fn_input_spans=d.loss_fn_input_spans)])
    # a mask is the server's to derive, never the client's
    _refused(tc, [types.Datum(model_input=d.model_input,
                              loss_fn_inputs={**d.loss_fn_inputs, "sampled_mask": np.ones(d.model_input.length, np.float32)},
                              model_input_spans=d.model_input_spans, loss_fn_input_spans=d.loss_fn_input_spans)])
    # the same datum with its true tokens is accepted after all these refusals (the model's queue is not wedged)
    out = tc.forward_backward([_datum(seq, 1.0)], loss_fn="stable_reinforce").result()
    assert np.isfinite(out.metrics["loss:sum"])


def test_recorded_samples_expire_a_day_after_their_last_use(tinker_mock) -> None:
    service = tinker_mock.service_client()
    tc = train_client(service)
    seq = _sample(tc, n=1)[0]
    rec = tinker_mock.state.stability[seq.sequence_id]
    rec.last_used -= 86_400 - 60  # a minute short of a day: still trainable, and the use restarts the day
    tc.forward_backward([_datum(seq, 1.0)], loss_fn="stable_reinforce").result()
    rec.last_used -= 86_400 + 60  # more than a day since that use
    _refused(tc, [_datum(seq, 1.0)])

