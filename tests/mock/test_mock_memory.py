"""Bounded memory: a session that ends (close, or idle) drops its models and samplers; at most ``max_resident``
trainers/samplers keep their arrays in memory, the others are spilled and reloaded bit-for-bit; start-up
removes partial files a kill left behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tinker
from mock_helpers import TINY, adapter_of, ce_datum, corpus, train_client
from tinker import types

from cookbook.mock import MockTinker
from cookbook.mock.state import MockState

pytestmark = pytest.mark.e2e

HANG = 5.0


def _train(tc: tinker.TrainingClient, data: list[list[int]], steps: int) -> None:
    for i in range(steps):
        tc.forward_backward([ce_datum(data[i % len(data)])], "cross_entropy").result(timeout=HANG)
        tc.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=HANG)


def _loaded(mock: MockTinker) -> int:
    return mock.call(lambda: sum(r.loaded for r in [*mock.state.models.values(), *mock.state.samplers.values()]))


@pytest.fixture(scope="module")
def tight() -> Iterator[MockTinker]:
    with MockTinker(set_env=False, max_resident=1) as m:
        yield m


def test_closed_session_frees_models_and_checkpoints_still_load(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=51)
    _train(tc, corpus(2, 6, seed=1), 2)
    path = tc.save_state("kept").result(timeout=HANG).path
    model_id = tc.get_info().model_id
    weights = adapter_of(tinker_mock, model_id)
    sampler = tc.save_weights_and_get_sampling_client().result(timeout=HANG)
    assert tinker_mock.call(lambda: model_id in tinker_mock.state.models and len(tinker_mock.state.samplers) == 1)
    service.close("success").result(timeout=HANG)
    assert tinker_mock.call(lambda: (model_id not in tinker_mock.state.models, len(tinker_mock.state.samplers))) == (
        True,
        0,
    )
    # the checkpoint stays on disk and loads as before
    other = tinker_mock.service_client()
    tc2 = other.create_training_client_from_state_with_optimizer(path).result(timeout=HANG)
    A, B = adapter_of(tinker_mock, tc2.get_info().model_id)
    np.testing.assert_array_equal(A, weights[0])
    np.testing.assert_array_equal(B, weights[1])
    # the closed session's clients get a clear error, not a hang
    with pytest.raises((tinker.APIStatusError, tinker.RequestFailedError, RuntimeError)):
        sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(timeout=HANG)


def test_idle_session_ends(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=52)
    model_id = tc.get_info().model_id
    st: MockState = tinker_mock.state
    assert tinker_mock.call(lambda: st.reap_idle(time.monotonic())) == []  # heartbeats keep it alive
    ended = tinker_mock.call(lambda: st.reap_idle(time.monotonic() + st.session_idle_s + 1))
    assert model_id.split(":train:")[0] in ended
    assert tinker_mock.call(lambda: model_id not in st.models)
    with pytest.raises((tinker.APIStatusError, tinker.RequestFailedError)):
        tc.forward_backward([ce_datum([1, 2, 3])], "cross_entropy").result(timeout=HANG)


def test_spilled_models_train_bit_identically(tight: MockTinker, tinker_mock):
    """Interleaved clients on a server holding one model in memory end with the same weights (and optimizer
    state: several steps) as the same client alone on a server that never spills."""
    data = corpus(3, 8, seed=2)
    ref = train_client(tinker_mock.service_client(), seed=53)
    for i in range(3):
        ref.forward_backward([ce_datum(data[i])], "cross_entropy").result(timeout=HANG)
        ref.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=HANG)
    want = adapter_of(tinker_mock, ref.get_info().model_id)

    service = tight.service_client()
    a, b = train_client(service, seed=53), train_client(service, seed=53)
    for i in range(3):  # a's gradients are pending while b's ops evict it
        fa = a.forward_backward([ce_datum(data[i])], "cross_entropy")
        fb = b.forward_backward([ce_datum(data[i])], "cross_entropy")
        fa.result(timeout=HANG)
        fb.result(timeout=HANG)
        assert _loaded(tight) <= 1
        b.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=HANG)
        a.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=HANG)
    sampler = a.save_weights_and_get_sampling_client().result(timeout=HANG)
    out = sampler.sample(types.ModelInput.from_ints([1, 2]), 2, types.SamplingParams(max_tokens=3, seed=1))
    out.result(timeout=HANG)
    assert _loaded(tight) <= 1
    for tc in (a, b):
        tc.forward([ce_datum(data[0])], "cross_entropy").result(timeout=HANG)  # reloads it (weights unchanged)
        np.testing.assert_array_equal(adapter_of(tight, tc.get_info().model_id)[1], want[1])
        np.testing.assert_array_equal(adapter_of(tight, tc.get_info().model_id)[0], want[0])
    service.close("success").result(timeout=HANG)
    assert not list((tight.state_dir / "spill").glob("*.npz"))


def test_startup_removes_partial_files(tmp_path: Path):
    weights = tmp_path / "runs" / "r1" / "weights"
    weights.mkdir(parents=True)
    partial = weights / ".ck.npz.abc123.tmp"
    partial.write_bytes(b"half a checkpoint")
    complete = weights / "ck.json"
    complete.write_text("{}")
    st = MockState(tmp_path)
    assert not partial.exists() and complete.exists()
    assert st.store.removed_partial == 1
    st.shutdown()


def test_spill_uses_state_dir_only_while_needed(tight: MockTinker):
    service = tight.service_client()
    tcs = [train_client(service, seed=60 + i, base=TINY) for i in range(3)]
    for tc in tcs:
        tc.forward_backward([ce_datum([1, 2, 3])], "cross_entropy").result(timeout=HANG)
    assert _loaded(tight) <= 1
    assert len(list((tight.state_dir / "spill").glob("*.npz"))) >= 2
    service.close("success").result(timeout=HANG)
    assert not list((tight.state_dir / "spill").glob("*.npz"))
