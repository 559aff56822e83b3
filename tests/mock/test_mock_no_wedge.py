"""No request can wedge a client: through the unmodified tinker SDK over HTTP, for every endpoint and every
refusal path it has, the NEXT call on the same client completes.

The bounded waits (``result(timeout=...)``) are hang detection, not speed assertions: before the fix a refused
training request left its ``seq_id`` unfilled and every later call on that TrainingClient polled forever.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tinker
from mock_helpers import TINY, ce_datum, train_client
from tinker import types

pytestmark = pytest.mark.e2e

HANG = 5.0  # seconds: a call that has not completed by then is wedged
REFUSED = (tinker.APIStatusError, tinker.RequestFailedError, ValueError)
BAD_NAMES = ["epoch 1", "step:10", "run/step-10", "../x", "", ".hidden", "a" * 200]


def _refused(call: Callable[[], Any], wait: float = HANG) -> None:
    """The refusal itself must answer (an error, never a hang)."""
    with pytest.raises(REFUSED) as info:  # the SDK raises at submit or at result()
        out = call()
        if hasattr(out, "result"):
            out.result(timeout=wait)
    assert not isinstance(info.value, TimeoutError)


def _next_training_call_completes(tc: tinker.TrainingClient, wait: float = HANG) -> None:
    out = tc.forward_backward([ce_datum([1, 2, 3, 4])], "cross_entropy").result(timeout=wait)
    assert out.metrics["loss:sum"] > 0
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=wait)


def _bad_datum() -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"target_tokens": np.array([3, 99999]), "weights": np.ones(2, dtype=np.float32)},
    )


TRAINING_REFUSALS: list[tuple[str, Callable[[tinker.TrainingClient, str], Any]]] = [
    *[(f"save_state[{n!r}]", lambda tc, _, n=n: tc.save_state(n)) for n in BAD_NAMES],
    *[(f"save_weights_for_sampler[{n!r}]", lambda tc, _, n=n: tc.save_weights_for_sampler(n)) for n in BAD_NAMES],
    ("optim_step[lr<0]", lambda tc, _: tc.optim_step(types.AdamParams(learning_rate=-1.0))),
    ("optim_step[beta1>1]", lambda tc, _: tc.optim_step(types.AdamParams(learning_rate=1e-3, beta1=1.5))),
    ("optim_step[beta2=1]", lambda tc, _: tc.optim_step(types.AdamParams(learning_rate=1e-3, beta2=1.0))),
    ("optim_step[eps<0]", lambda tc, _: tc.optim_step(types.AdamParams(learning_rate=1e-3, eps=-1.0))),
    ("optim_step[huge lr]", lambda tc, _: tc.optim_step(types.AdamParams(learning_rate=1e9))),
    ("save_weights_external", lambda tc, _: tc.save_weights_external("ext")),
    ("load_state[not tinker://]", lambda tc, _: tc.load_state("file:///etc/passwd")),
    ("load_state[traversal]", lambda tc, _: tc.load_state("tinker://../weights/x")),
    ("load_state[bad kind]", lambda tc, mid: tc.load_state(f"tinker://{mid}/other/x")),
    ("load_state[missing]", lambda tc, mid: tc.load_state(f"tinker://{mid}/weights/missing")),
    ("load_state_with_optimizer[missing]", lambda tc, mid: tc.load_state_with_optimizer(f"tinker://{mid}/weights/nope")),
    ("forward_backward[token out of vocab]", lambda tc, _: tc.forward_backward([_bad_datum()], "cross_entropy")),
    ("forward_backward[unknown loss]", lambda tc, _: tc.forward_backward([ce_datum([1, 2, 3])], "nope")),
    ("forward_backward[missing inputs]", lambda tc, _: tc.forward_backward([ce_datum([1, 2, 3])], "ppo")),
    ("forward_backward[bad config]", lambda tc, _: tc.forward_backward([ce_datum([1, 2, 3])], "cross_entropy",
                                                                       loss_fn_config={"zzz": 1.0})),
    ("forward[token out of vocab]", lambda tc, _: tc.forward([_bad_datum()], "cross_entropy")),
]


@pytest.mark.parametrize("case", [c[0] for c in TRAINING_REFUSALS])
def test_training_refusal_does_not_wedge(tinker_mock, case: str):
    call = dict(TRAINING_REFUSALS)[case]
    service = tinker_mock.service_client()
    tc = train_client(service, seed=41)
    model_id = tc.get_info().model_id
    _next_training_call_completes(tc)
    _refused(lambda: call(tc, model_id))
    _next_training_call_completes(tc)
    _refused(lambda: call(tc, model_id))  # twice in a row, then a save and a sampler still work
    _next_training_call_completes(tc)
    path = tc.save_state("ok").result(timeout=HANG).path
    tc.load_state(path).result(timeout=HANG)
    sampler = tc.save_weights_and_get_sampling_client().result(timeout=HANG)
    sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(timeout=HANG)


def test_refused_chunk_of_a_chunked_forward_backward_does_not_wedge(tinker_mock):
    """A batch split into chunks (consecutive seq_ids, chunk 0 sent last) with one bad datum in chunk 1."""
    service = tinker_mock.service_client()
    tc = train_client(service, seed=42)
    data = [ce_datum([1, 2, 3]) for _ in range(1100)]
    data[1050] = _bad_datum()
    # the refused batch itself does real work on its 1,049 good datums first: a generous bound for it alone
    _refused(lambda: tc.forward_backward(data, "cross_entropy"), wait=12 * HANG)
    # ops run in seq_id order, so the follow-up also waits for the refused batch's good chunks to finish
    _next_training_call_completes(tc, wait=12 * HANG)


def test_sampling_refusals_do_not_wedge(tinker_mock):
    service = tinker_mock.service_client()
    sampler = service.create_sampling_client(base_model=TINY).result(timeout=HANG)
    ok = types.ModelInput.from_ints([1, 2])

    def next_call() -> None:
        sampler.sample(ok, 2, types.SamplingParams(max_tokens=3, seed=1)).result(timeout=HANG)
        sampler.compute_logprobs(types.ModelInput.from_ints([1, 2, 3])).result(timeout=HANG)

    refusals: list[Callable[[], Any]] = [
        lambda: sampler.sample(types.ModelInput.from_ints([1, 99999]), 1, types.SamplingParams(max_tokens=2)),
        lambda: sampler.sample(ok, 1, types.SamplingParams(max_tokens=2, top_p=0.0)),
        lambda: sampler.sample(ok, 1, types.SamplingParams(max_tokens=10**9)),
        lambda: sampler.sample(ok, 1, types.SamplingParams(max_tokens=2, stop=[1, 99999])),
        lambda: sampler.sample(ok, 0, types.SamplingParams(max_tokens=2)),
        lambda: sampler.compute_logprobs(types.ModelInput.from_ints([99999, 1])),
    ]
    next_call()
    for refuse in refusals:
        _refused(refuse)
        next_call()


def test_service_refusals_do_not_wedge(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=43)
    mid = tc.get_info().model_id
    refusals: list[Callable[[], Any]] = [
        lambda: service.create_lora_training_client(base_model="nobody/none", rank=4),
        lambda: service.create_lora_training_client(base_model=TINY, rank=0),
        lambda: service.create_lora_training_client(base_model=TINY, rank=100_000),
        lambda: service.create_training_client_from_state(f"tinker://{mid}/weights/missing"),
        lambda: service.create_training_client_from_state("tinker://x/weights/../../y"),
        lambda: service.create_training_client_from_state_with_optimizer(f"tinker://{mid}/weights/missing"),
        lambda: service.create_sampling_client(model_path=f"tinker://{mid}/sampler_weights/missing"),
        lambda: service.create_sampling_client(base_model="unknown/model"),
    ]
    for refuse in refusals:
        _refused(refuse)
        fresh = train_client(service, seed=44)  # the next call on the same ServiceClient completes
        _next_training_call_completes(fresh)
        _next_training_call_completes(tc)


def test_rest_refusals_do_not_wedge(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=45)
    path = tc.save_state("keep").result(timeout=HANG).path
    rest = service.create_rest_client()
    run = tc.get_info().model_id
    refusals: list[Callable[[], Any]] = [
        lambda: rest.get_training_run("nope"),
        lambda: rest.list_checkpoints("nope"),
        lambda: rest.get_weights_info_by_tinker_path(f"tinker://{run}/weights/missing"),
        lambda: rest.delete_checkpoint_from_tinker_path(f"tinker://{run}/weights/missing"),
        lambda: rest.publish_checkpoint_from_tinker_path(f"tinker://{run}/weights/missing"),
        lambda: rest.set_checkpoint_ttl_from_tinker_path(f"tinker://{run}/weights/missing", 60),
        lambda: rest.get_session("nope"),
        lambda: rest.get_sampler("nope"),
        lambda: rest.copy_weights(path, "other-project"),
        lambda: rest.get_external_weights_urls(f"tinker://{run}/external_weights/x"),
        lambda: rest.search_sessions(types.SessionSearchRequest()),
        lambda: rest.assign_session_project("nope", "p"),
        lambda: rest.export_session_trace("nope"),
        lambda: rest.get_audit_log(),
        lambda: rest.get_billing_usage("2026-01-01", "2026-01-02"),
        lambda: rest.get_current_checkpoint_storage_usage(),
    ]
    for refuse in refusals:
        _refused(refuse)
        assert rest.list_checkpoints(run).result(timeout=HANG).checkpoints
        _next_training_call_completes(tc)
