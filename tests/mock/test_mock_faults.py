"""Faults injected by the mock are retried by the unmodified SDK; the request log shows what happened."""

from __future__ import annotations

import numpy as np
import pytest
from mock_helpers import adapter_of, ce_datum, corpus, train_client
from tinker import types

pytestmark = pytest.mark.e2e

TRAIN_PATHS = ["create_model", "get_info", "forward_backward", "optim_step", "retrieve_future"]


def _flow(mock) -> float:
    service = mock.service_client()
    tc = train_client(service, seed=21)
    data = [ce_datum(t) for t in corpus(3, 8, seed=21)]
    out = None
    for _ in range(3):
        out = tc.forward_backward(data, "cross_entropy").result()
        tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert out is not None
    return out.metrics["loss:sum"]


@pytest.mark.tinker_faults(error_rates={500: 0.2, 503: 0.1, 429: 0.1}, paths=TRAIN_PATHS, seed=3)
def test_random_errors_are_retried(tinker_mock):
    with_faults = _flow(tinker_mock)
    injected = tinker_mock.injected_faults
    assert injected, "the fault configuration injected nothing"
    statuses = {r.status for r in tinker_mock.requests}
    assert statuses & {500, 503, 429}
    tinker_mock.reset()  # same flow without faults: same result (retries do not change the maths)
    assert _flow(tinker_mock) == with_faults


def test_lost_reply_returns_original_future(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=22)
    twin = train_client(service, seed=22)
    data = [ce_datum(t) for t in corpus(2, 8, seed=22)]
    tinker_mock.set_faults(script=[{"path": "forward_backward", "status": 500, "after": True}])
    out = tc.forward_backward(data, "cross_entropy").result()
    fb = tinker_mock.requests_to("forward_backward")
    assert [r.status for r in fb] == [500, 200]
    assert fb[0].seq_id == fb[1].seq_id and fb[0].request_id == fb[1].request_id  # deduplicated
    tinker_mock.set_faults()
    ref = twin.forward_backward(data, "cross_entropy").result()
    assert out.metrics == ref.metrics
    adam = types.AdamParams(learning_rate=1e-2)
    tc.optim_step(adam).result()
    twin.optim_step(adam).result()
    # the lost reply did not apply the gradient twice
    assert np.array_equal(adapter_of(tinker_mock, tc.get_info().model_id)[1],
                          adapter_of(tinker_mock, twin.get_info().model_id)[1])


@pytest.mark.tinker_faults(try_again=0.5, latency_ms=2, seed=4)
def test_try_again_and_latency(tinker_mock):
    assert _flow(tinker_mock) > 0
    assert any(r.fault == "try_again" for r in tinker_mock.requests)


def test_sampling_backpressure_429(tinker_mock):
    service = tinker_mock.service_client()
    sampler = service.create_sampling_client(base_model="cookbook/tiny-test").result()
    tinker_mock.set_faults(script=[{"path": "asample", "status": 429}])
    res = sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=3, seed=1)).result()
    assert len(res.sequences) == 1
    assert [r.status for r in tinker_mock.requests_to("asample")] == [429, 200]


def test_faults_parse_cli_form():
    from cookbook.errors import ConfigurationError
    from cookbook.mock import Faults

    f = Faults.parse("latency_ms=5,429=0.1,500=0.05,try_again=0.2,lost_reply=0.1,paths=asample|forward_backward,seed=1")
    assert f.error_rates == {429: 0.1, 500: 0.05} and f.paths == ("asample", "forward_backward") and f.seed == 1
    with pytest.raises(ConfigurationError, match="unknown key"):
        Faults.parse("bogus=1")
    with pytest.raises(ConfigurationError, match="probability"):
        Faults.parse("try_again=2")
