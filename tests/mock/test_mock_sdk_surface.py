"""Every public method of tinker's RestClient, ServiceClient, TrainingClient and SamplingClient either works
through the mock (exercised by a test) or is in the README's documented-unsupported list, where it answers a
400 naming it. Plus the checkpoint semantics behind the REST methods: ttl_seconds / expires_at (expired
checkpoints disappear), user_metadata, publish / unpublish, set_checkpoint_ttl; and cancel_future."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import tinker
from mock_helpers import TINY, ce_datum, train_client
from tinker import types
from tinker.lib.api_future_impl import QueueState

from cookbook.mock.protocol import UNSUPPORTED

pytestmark = pytest.mark.e2e

HANG = 5.0
ROOT = Path(__file__).resolve().parents[2]
CLASSES = (tinker.RestClient, tinker.ServiceClient, tinker.TrainingClient, tinker.SamplingClient)


def _public_methods() -> list[str]:
    return [f"{c.__name__}.{n}" for c in CLASSES for n, _ in inspect.getmembers(c) if not n.startswith("_")]


def _documented_unsupported() -> set[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"\*\*Not supported by the mock\*\*(.*?)\n\n", text, re.S)
    assert m, "README's mock section lists the unsupported SDK methods in a '**Not supported by the mock**' paragraph"
    return set(re.findall(r"`((?:Rest|Service|Training|Sampling)Client\.\w+)`", m.group(1)))


def _exercised(name: str, sources: str) -> bool:
    """A test calls (or reads) it; an ``*_async`` twin counts through its sync sibling (same request)."""
    method = name.split(".", 1)[1]
    stems = {method, method.removesuffix("_async")}
    return any(re.search(rf"\.{re.escape(s)}\b", sources) for s in stems)


def test_every_sdk_method_is_exercised_or_documented_unsupported():
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    unsupported = _documented_unsupported()
    methods = _public_methods()
    missing = [n for n in methods if n.removesuffix("_async") not in unsupported and not _exercised(n, sources)]
    assert not missing, f"SDK methods neither exercised by a test nor documented as unsupported: {missing}"
    stale = sorted(u for u in unsupported if u not in methods)
    assert not stale, f"README lists methods the SDK does not have: {stale}"


def test_documented_unsupported_methods_answer_400_naming_them(tinker_mock, monkeypatch):
    """README's list is exactly the methods the server refuses (or, for whoami, the SDK refuses itself)."""
    monkeypatch.setenv("TINKER_PROJECT_ID", "other-project")  # ServiceClient.copy_weights's destination
    service = tinker_mock.service_client()
    tc = train_client(service, seed=71)
    path = tc.save_state("s").result(timeout=HANG).path
    run = tc.get_info().model_id
    rest = tinker_mock.rest_client()
    calls = {
        "TrainingClient.save_weights_external": lambda: tc.save_weights_external("ext"),
        "ServiceClient.copy_weights": lambda: service.copy_weights(path),
        "RestClient.copy_weights": lambda: rest.copy_weights(path, "p"),
        "RestClient.get_external_weights_urls": lambda: rest.get_external_weights_urls(f"tinker://{run}/external_weights/x"),
        "RestClient.search_sessions": lambda: rest.search_sessions(types.SessionSearchRequest()),
        "RestClient.assign_session_project": lambda: rest.assign_session_project("s", "p"),
        "RestClient.export_session_trace": lambda: rest.export_session_trace("s"),
        "RestClient.get_audit_log": lambda: rest.get_audit_log(),
        "RestClient.get_billing_usage": lambda: rest.get_billing_usage("2026-01-01", "2026-01-02"),
        "RestClient.get_current_checkpoint_storage_usage": lambda: rest.get_current_checkpoint_storage_usage(),
        "RestClient.whoami": lambda: rest.whoami(),
    }
    assert set(calls) == _documented_unsupported()
    for name, call in calls.items():
        with pytest.raises((tinker.BadRequestError, tinker.RequestFailedError, RuntimeError)) as info:
            call().result(timeout=HANG)
        if name != "RestClient.whoami":  # refused by the SDK itself (it needs JWT auth, which stays off)
            assert name.split(".")[1] in str(info.value), (name, str(info.value))
            assert not isinstance(info.value, RuntimeError)
    # each server-side refusal above is one of the protocol's unsupported endpoints
    assert {"copy_weights", "external_weights_urls", "sessions/search", "audit"} <= set(UNSUPPORTED)


def _ck(rest: tinker.RestClient, run: str, cid: str) -> types.Checkpoint | None:
    return next((c for c in rest.list_checkpoints(run).result(timeout=HANG).checkpoints if c.checkpoint_id == cid), None)


def test_checkpoint_ttl_metadata_publish(tinker_mock):
    service = tinker_mock.service_client()
    tc = train_client(service, seed=72)
    run = tc.get_info().model_id
    rest = tinker_mock.rest_client()
    before = datetime.now(UTC)
    path = tc.save_state("a", ttl_seconds=3600, user_metadata={"epoch": "1"}).result(timeout=HANG).path
    tc.save_weights_for_sampler("s", user_metadata={"kind": "eval"}).result(timeout=HANG)
    a = _ck(rest, run, "weights/a")
    assert a is not None and a.user_metadata == {"epoch": "1"} and a.public is False and a.size_bytes
    assert a.expires_at is not None and before + timedelta(seconds=3599) <= a.expires_at
    s = _ck(rest, run, "sampler_weights/s")
    assert s is not None and s.user_metadata == {"kind": "eval"} and s.expires_at is None
    assert any(c.tinker_path == path for c in rest.list_user_checkpoints().result(timeout=HANG).checkpoints)

    rest.publish_checkpoint_from_tinker_path(path).result(timeout=HANG)
    assert _ck(rest, run, "weights/a").public is True  # type: ignore[union-attr]
    rest.unpublish_checkpoint_from_tinker_path(path).result(timeout=HANG)
    assert _ck(rest, run, "weights/a").public is False  # type: ignore[union-attr]

    rest.set_checkpoint_ttl_from_tinker_path(path, None).result(timeout=HANG)
    assert _ck(rest, run, "weights/a").expires_at is None  # type: ignore[union-attr]
    rest.set_checkpoint_ttl_from_tinker_path(path, 0).result(timeout=HANG)  # expires now: it disappears
    assert _ck(rest, run, "weights/a") is None
    with pytest.raises(tinker.NotFoundError):
        service.create_training_client_from_state(path).result(timeout=HANG)
    with pytest.raises(tinker.NotFoundError):
        rest.get_weights_info_by_tinker_path(path).result(timeout=HANG)
    # saved already expired: never listed; the name is free again
    tc.save_state("b", ttl_seconds=0).result(timeout=HANG)
    assert _ck(rest, run, "weights/b") is None
    tc.save_state("b").result(timeout=HANG)
    assert _ck(rest, run, "weights/b") is not None


def test_cancel_future(tinker_mock):
    """``cancel_future`` fails a pending future at once (category user); the SDK is told it may send it."""
    service = tinker_mock.service_client()
    tc = train_client(service, seed=73)
    model_id = tc.get_info().model_id
    with httpx.Client(base_url=tinker_mock.base_url, timeout=30) as http:
        assert http.post("/api/v1/client/dynamic_config", json={}).json()["sample_cancel_enabled"] is True
        # seq 2 waits for seq 1: cancel it while it is queued
        r = http.post("/api/v1/optim_step", json={"model_id": model_id, "seq_id": 2, "adam_params": {"learning_rate": 0.1}})
        rid = r.json()["request_id"]
        assert http.post("/api/v1/cancel_future", json={"request_id": rid}).status_code == 200
        ans = http.post("/api/v1/retrieve_future", json={"request_id": rid}).json()
        assert ans["category"] == "user" and "cancel" in ans["error"]
        assert http.post("/api/v1/cancel_future", json={"request_id": "nope"}).status_code == 404
    # the cancelled op is skipped (seq 1 and 3 run; the SDK's next seq is 1)
    before = tinker_mock.call(lambda: tinker_mock.state.models[model_id].trainer.adam.step)  # type: ignore[union-attr]
    tc.forward([ce_datum([1, 2, 3])], "cross_entropy").result(timeout=HANG)  # seq 1
    with pytest.raises(tinker.BadRequestError):  # seq 2 is taken (by the cancelled request)
        tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=HANG)
    out = tc.forward([ce_datum([1, 2, 3])], "cross_entropy").result(timeout=HANG)  # seq 3
    assert out.metrics["loss:sum"] > 0
    assert tinker_mock.call(lambda: tinker_mock.state.models[model_id].trainer.adam.step) == before  # type: ignore[union-attr]


def test_custom_loss_handle(tinker_mock):
    """``create_custom_loss`` (custom_loss_server_side stays off: the loss is traced and runs client-side)."""
    pytest.importorskip("torch", reason="custom losses are traced with torch.fx on the client side")
    service = tinker_mock.service_client()
    tc = train_client(service, seed=75)

    def neg_ll(logprobs, weights):  # type: ignore[no-untyped-def]
        loss = -(logprobs * weights).sum()
        return loss, {"custom/neg_ll:sum": loss}

    handle = service.create_custom_loss(neg_ll, input_ranks={"logprobs": 1, "weights": 1}).result(timeout=HANG)
    data = [ce_datum([1, 2, 3, 4]), ce_datum([5, 6, 7])]
    out = tc.forward_backward_custom(data, handle).result(timeout=HANG)
    ce = tc.forward(data, "cross_entropy").result(timeout=HANG)
    assert out.metrics["loss:sum"] == pytest.approx(ce.metrics["loss:sum"], rel=1e-5)


def test_client_side_methods(tinker_mock):
    """Methods that are (mostly) client-side still work against the mock."""
    service = tinker_mock.service_client()
    rest = tinker_mock.rest_client()
    tc = train_client(service, seed=74)
    run = tc.get_info().model_id
    assert service.get_telemetry() is None and rest.get_telemetry() is None and tc.get_telemetry() is None
    assert run in tc.get_console_url() and service.get_console_url()
    assert service.holder is not None
    sampler = service.create_sampling_client(base_model=TINY).result(timeout=HANG)
    assert sampler.get_telemetry() is None
    assert sampler.get_base_model() == TINY
    handle = sampler.get_sampler_handle()
    again = tinker.SamplingClient.from_sampler_handle(handle, api_key=tinker_mock.api_key)
    again.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(timeout=HANG)
    made = tinker.SamplingClient.create(service.holder, base_model=TINY).result(timeout=HANG)
    made.on_queue_state_change(QueueState.ACTIVE, None)
    made.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(timeout=HANG)
    tc.save_state("x").result(timeout=HANG)
    rest.delete_checkpoint(run, "weights/x").result(timeout=HANG)
    assert _ck(rest, run, "weights/x") is None
    assert any(s for s in rest.list_sessions().result(timeout=HANG).sessions)
