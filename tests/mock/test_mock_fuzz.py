"""Fuzz: >= 1,000 malformed requests straight over HTTP; zero 5xx, every refusal a 4xx naming the problem (or,
for a training request that holds its seq_id, an accepted request whose future fails as a user error), after
every refusal the next call on the same client completes, and the server still serves the real SDK afterwards."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import zstandard
from mock_helpers import TINY, ce_datum, train_client
from tinker.proto import tinker_public_pb2 as pb
from tinker.types import AdamParams

from cookbook.mock import MockTinker

pytestmark = pytest.mark.e2e

LIMIT = 1 << 20  # 1 MiB body limit for this server
JSON_ENDPOINTS = [
    "client/config", "create_session", "session_heartbeat", "create_model", "get_info", "optim_step",
    "save_weights", "save_weights_for_sampler", "load_weights", "create_sampling_session", "asample",
    "retrieve_future", "weights_info",
]


@pytest.fixture(scope="module")
def server() -> Iterator[MockTinker]:
    with MockTinker(max_body_bytes=LIMIT, set_env=False, long_poll_s=0.5) as m:
        yield m


def _tensor(arr: np.ndarray, dtype: int, shape: list[int] | None = None) -> pb.Tensor:
    return pb.Tensor(dense=arr.tobytes(), dtype=dtype, shape=list(arr.shape) if shape is None else shape)


def _fb(model_id: str, seq: int, tokens: list[int], inputs: dict[str, pb.Tensor], loss: str = "cross_entropy",
        config: dict[str, float] | None = None) -> bytes:
    msg = pb.ForwardBackwardRequest(model_id=model_id, seq_id=seq, loss_fn=loss)
    d = msg.data.add()
    d.model_input.add().encoded_text.tokens = np.asarray(tokens, dtype="<i4").tobytes()
    for k, t in inputs.items():
        d.loss_fn_inputs[k].CopyFrom(t)
    for k, v in (config or {}).items():
        msg.loss_fn_config[k] = v
    return msg.SerializeToString()


def _good_inputs(n: int) -> dict[str, pb.Tensor]:
    return {
        "target_tokens": _tensor(np.arange(1, n + 1, dtype="<i8"), pb.DTYPE_INT64),
        "weights": _tensor(np.ones(n, dtype="<f4"), pb.DTYPE_FLOAT32),
    }


def _bad_fb_bodies(model_id: str, rng: random.Random) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    ct = {"content-type": "application/x-protobuf"}
    seq = 1000
    for _ in range(60):  # random bytes
        yield "random-bytes", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), ct
    cases: list[tuple[str, dict[str, pb.Tensor], list[int], str, dict[str, float] | None]] = []
    n = 4
    good = _good_inputs(n)
    cases.append(("wrong-dtype", {**good, "target_tokens": _tensor(np.arange(n, dtype="<f4"), pb.DTYPE_FLOAT32)}, [1] * n, "cross_entropy", None))
    cases.append(("int32-dtype", {**good, "weights": pb.Tensor(dense=b"\0" * 16, dtype=pb.DTYPE_INT32, shape=[4])}, [1] * n, "cross_entropy", None))
    cases.append(("shape-mismatch", {**good, "weights": _tensor(np.ones(n + 1, dtype="<f4"), pb.DTYPE_FLOAT32)}, [1] * n, "cross_entropy", None))
    cases.append(("bytes-vs-shape", {**good, "weights": _tensor(np.ones(n, dtype="<f4"), pb.DTYPE_FLOAT32, [7])}, [1] * n, "cross_entropy", None))
    cases.append(("length-mismatch", good, [1] * (n + 2), "cross_entropy", None))
    cases.append(("token-out-of-vocab", good, [1, 2, 99999, 3], "cross_entropy", None))
    cases.append(("negative-token", good, [1, -5, 2, 3], "cross_entropy", None))
    cases.append(("target-out-of-vocab", {**good, "target_tokens": _tensor(np.array([1, 2, 3, 512], dtype="<i8"), pb.DTYPE_INT64)}, [1] * n, "cross_entropy", None))
    cases.append(("nan-weights", {**good, "weights": _tensor(np.array([1, np.nan, 1, 1], dtype="<f4"), pb.DTYPE_FLOAT32)}, [1] * n, "cross_entropy", None))
    cases.append(("inf-weights", {**good, "weights": _tensor(np.array([1, np.inf, 1, 1], dtype="<f4"), pb.DTYPE_FLOAT32)}, [1] * n, "cross_entropy", None))
    cases.append(("unknown-loss", good, [1] * n, "no_such_loss", None))
    cases.append(("custom-loss", good, [1] * n, "custom", None))
    cases.append(("unknown-config", good, [1] * n, "cross_entropy", {"temperature": 1.0}))
    cases.append(("nan-config", good, [1] * n, "dro", {"beta": float("nan")}))
    cases.append(("missing-input", {"target_tokens": good["target_tokens"]}, [1] * n, "cross_entropy", None))
    cases.append(("missing-advantages", good, [1] * n, "ppo", None))
    cases.append(("unknown-input-key", {**good, "zzz": _tensor(np.ones(n, dtype="<f4"), pb.DTYPE_FLOAT32)}, [1] * n, "cross_entropy", None))
    cases.append(("empty-input", {k: _tensor(np.zeros(0, dtype="<i8" if k == "target_tokens" else "<f4"), t.dtype) for k, t in good.items()}, [], "cross_entropy", None))
    bad_csr = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[4, 2])
    bad_csr.sparse_csr.values = np.ones(3, dtype="<f4").tobytes()
    bad_csr.sparse_csr.crow_indices = np.array([0, 1, 2], dtype="<i8").tobytes()
    bad_csr.sparse_csr.col_indices = np.array([0, 5, 1], dtype="<i8").tobytes()
    cases.append(("bad-csr", {**good, "weights": bad_csr}, [1] * n, "cross_entropy", None))
    cases.append(("huge-shape", {**good, "weights": pb.Tensor(dense=b"", dtype=pb.DTYPE_FLOAT32, shape=[1 << 40, 1 << 20])}, [1] * n, "cross_entropy", None))
    for name, inputs, toks, loss, cfg in cases:
        for _ in range(12):
            seq += 1
            yield name, _fb(model_id, seq, toks, inputs, loss, cfg), ct
    for _ in range(10):
        yield "unknown-model", _fb("nobody:train:0", 1, [1] * n, good), ct
        yield "odd-token-bytes", _fb(model_id, seq, [1] * n, good)[:-1] + b"", ct
        yield "wrong-content-type", _fb(model_id, seq, [1] * n, good), {"content-type": "application/json"}
        yield "bad-encoding", b"xx", {**ct, "content-encoding": "gzip"}
        yield "bad-zstd", b"\x28\xb5\x2f\xfd garbage", {**ct, "content-encoding": "zstd"}
    bomb = zstandard.ZstdCompressor(level=1).compress(b"\0" * (64 * LIMIT))
    for _ in range(10):
        yield "zstd-bomb", bomb, {**ct, "content-encoding": "zstd"}
        yield "over-limit", b"\0" * (LIMIT + 10), ct


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randint(0, 7 if depth < 3 else 4)
    if kind == 0:
        return rng.randint(-(1 << 70), 1 << 70)
    if kind == 1:
        return rng.choice(["", "x", "../../etc/passwd", "tinker://a/weights/..", "\u0000", "a" * 5000])
    if kind == 2:
        return rng.random() * rng.choice([1, -1e300, 1e300])
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return []
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["session_id", "model_id", "seq_id", "base_model", "lora_config", "path", "prompt", "sampling_params",
            "request_id", "num_samples", "adam_params", "model_seq_id", "sampling_session_id", "tinker_path"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def _bad_json_bodies(session_id: str, model_id: str, sampler_id: str, rng: random.Random) -> Iterator[tuple[str, str, bytes]]:
    for ep in JSON_ENDPOINTS:
        for body in (b"", b"{", b"[1,2]", b"null", b"\xff\xfe", b'{"a": NaN}', b"[" * 5000, b'"str"'):
            yield "malformed-json", ep, body
    targeted: list[tuple[str, dict[str, object]]] = [
        ("create_model", {"session_id": session_id, "model_seq_id": 5, "base_model": TINY, "lora_config": {"rank": 0}}),
        ("create_model", {"session_id": session_id, "model_seq_id": 5, "base_model": TINY, "lora_config": {"rank": 4, "alpha": 3}}),
        ("create_model", {"session_id": session_id, "model_seq_id": 5, "base_model": "no/such", "lora_config": {"rank": 4}}),
        ("create_model", {"session_id": "nope", "model_seq_id": 5, "base_model": TINY, "lora_config": {"rank": 4}}),
        ("create_model", {"session_id": session_id, "model_seq_id": "5", "base_model": TINY, "lora_config": {"rank": 4}}),
        ("optim_step", {"model_id": model_id, "seq_id": 9000, "adam_params": {"learning_rate": -1}}),
        ("optim_step", {"model_id": model_id, "seq_id": 9001, "adam_params": {"learning_rate": 1e-3, "momentum": 0.9}}),
        ("optim_step", {"model_id": model_id, "seq_id": 9002, "adam_params": {"beta1": 1.5}}),
        ("optim_step", {"model_id": model_id, "seq_id": 9003, "optimizer_params": {"type": "dimuon"}}),
        ("save_weights", {"model_id": model_id, "seq_id": 9004, "path": "../escape"}),
        ("save_weights", {"model_id": model_id, "seq_id": 9005, "path": "a/b"}),
        ("save_weights", {"model_id": model_id, "seq_id": 9006, "path": ".."}),
        ("save_weights_for_sampler", {"model_id": model_id, "seq_id": 9007, "path": "/abs"}),
        ("load_weights", {"model_id": model_id, "seq_id": 9008, "path": "tinker://../weights/x"}),
        ("load_weights", {"session_id": session_id, "model_seq_id": 77, "path": "tinker://x/weights/../../y"}),
        ("load_weights", {"session_id": session_id, "model_seq_id": 78, "path": f"tinker://{model_id}/weights/missing"}),
        ("load_weights", {"session_id": session_id, "model_seq_id": 79, "path": "file:///etc/passwd"}),
        ("create_sampling_session", {"session_id": session_id, "sampling_session_seq_id": 50, "model_path": "tinker://x/sampler_weights/nope"}),
        ("create_sampling_session", {"session_id": session_id, "sampling_session_seq_id": 51, "base_model": "unknown/model"}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"tokens": [1, 99999], "type": "encoded_text"}]}, "sampling_params": {}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"tokens": [1], "type": "encoded_text"}]}, "sampling_params": {"temperature": -1}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"tokens": [1], "type": "encoded_text"}]}, "sampling_params": {"top_p": 0}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"tokens": [1], "type": "encoded_text"}]}, "sampling_params": {"stop": [1, "x"]}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"tokens": [1], "type": "encoded_text"}]}, "sampling_params": {"max_tokens": 10**9}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"tokens": [1], "type": "encoded_text"}]}, "sampling_params": {"foo": 1}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": [{"type": "image", "data": "AA=="}]}, "sampling_params": {}}),
        ("asample", {"sampling_session_id": sampler_id, "prompt": {"chunks": []}, "sampling_params": {}}),
        ("asample", {"sampling_session_id": sampler_id, "num_samples": 0, "prompt": {"chunks": [{"tokens": [1]}]}, "sampling_params": {}}),
        ("asample", {"sampling_session_id": "nope", "prompt": {"chunks": [{"tokens": [1]}]}, "sampling_params": {}}),
        ("retrieve_future", {"request_id": "no-such-request"}),
        ("get_info", {"model_id": "nope"}),
        ("weights_info", {"tinker_path": "tinker://a/weights/../../../etc"}),
    ]
    for _ in range(8):
        for ep, body in targeted:
            yield "targeted", ep, json.dumps(body).encode()
    for _ in range(300):
        ep = rng.choice(JSON_ENDPOINTS[3:])
        yield "random-json", ep, json.dumps(_random_json(rng)).encode()


TRAINING = {"optim_step", "save_weights", "save_weights_for_sampler", "load_weights"}
POLLS = 20  # retrieve_future long-polls 0.5 s here: ~10 s without an answer means the client is wedged


def _answer(http: httpx.Client, request_id: str) -> dict[str, object] | bytes:
    """The future's final answer (JSON dict or protobuf bytes); fails if it never comes (hang detection)."""
    for _ in range(POLLS):
        r = http.post("/api/v1/retrieve_future", json={"request_id": request_id})
        assert r.status_code == 200, r.text[:200]
        if "protobuf" in r.headers.get("content-type", ""):
            return r.content
        body = r.json()
        if body.get("type") != "try_again":
            return body
    raise AssertionError(f"request {request_id} never completed: the client is wedged")


def _retarget(body: bytes, model_id: str, seq: int, proto: bool) -> bytes:
    """Point a fuzzed request at the fuzz model's next free seq_id (if it names that model)."""
    if proto:
        msg = pb.ForwardBackwardRequest()
        try:
            msg.ParseFromString(body)
        except Exception:
            return body
        if msg.model_id != model_id:
            return body
        msg.seq_id = seq
        return msg.SerializeToString()
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(obj, dict) or obj.get("model_id") != model_id:
        return body
    obj["seq_id"] = seq
    return json.dumps(obj).encode()


class FollowUp:
    """After every refusal, the next call on the same client (the fuzz model / the fuzz sampler) completes."""

    def __init__(self, http: httpx.Client, model_id: str, sampler_id: str) -> None:
        self.http, self.model_id, self.sampler_id = http, model_id, sampler_id
        self.seq = 1  # the fuzz model's next free seq_id (the SDK client made no training call)
        self.calls = 0

    def accepted_refusal(self, r: httpx.Response, what: str) -> str | None:
        """A slot-holding training request was accepted: its future must fail (category user)."""
        self.seq += 1
        ans = _answer(self.http, r.json()["request_id"])
        if not (isinstance(ans, dict) and ans.get("error") and ans.get("category") == "user"):
            return f"{what}: accepted and did not fail as a user error: {str(ans)[:200]}"
        return None

    def training(self) -> None:
        body = _fb(self.model_id, self.seq, [1, 2, 3, 4], _good_inputs(4))
        msg = pb.ForwardBackwardRequest()
        msg.ParseFromString(body)
        msg.forward_only = True
        r = self.http.post("/api/v1/forward_backward", content=msg.SerializeToString(),
                           headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 200, r.text[:200]
        self.seq += 1
        assert isinstance(_answer(self.http, r.json()["request_id"]), bytes)
        self.calls += 1

    def sampling(self) -> None:
        r = self.http.post("/api/v1/asample", json={
            "sampling_session_id": self.sampler_id, "num_samples": 1,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
            "sampling_params": {"max_tokens": 2, "seed": 1}})
        assert r.status_code == 200, r.text[:200]
        assert isinstance(_answer(self.http, r.json()["request_id"]), bytes)
        self.calls += 1


def test_fuzz_no_5xx(server: MockTinker):
    service = server.service_client()
    tc = train_client(service, seed=31)
    model_id = tc.get_info().model_id
    session_id = model_id.split(":train:")[0]
    sampler = service.create_sampling_client(base_model=TINY).result()
    sampler_id = sampler._sampling_session_id
    rng = random.Random(1234)
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    count = 0
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        follow = FollowUp(http, model_id, sampler_id)
        for kind, body, headers in _bad_fb_bodies(model_id, rng):
            body = _retarget(body, model_id, follow.seq, proto=True)
            r = http.post("/api/v1/forward_backward", content=body, headers=headers)
            count += 1
            statuses[r.status_code] += 1
            if r.status_code == 200:  # held its slot: the refusal is in the future
                if (err := follow.accepted_refusal(r, f"forward_backward {kind}")) is not None:
                    failures.append(err)
            elif not (400 <= r.status_code < 500) or "detail" not in r.json():
                failures.append(f"forward_backward {kind}: {r.status_code} {r.text[:200]}")
            follow.training()
        for kind, ep, body in _bad_json_bodies(session_id, model_id, sampler_id, rng):
            body = _retarget(body, model_id, follow.seq, proto=False)
            r = http.post(f"/api/v1/{ep}", content=body, headers={"content-type": "application/json"})
            count += 1
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                failures.append(f"{ep} {kind}: {r.status_code} {r.text[:200]} <- {body[:120]!r}")
            elif ep in TRAINING and r.status_code == 200 and _names(body, model_id):
                if (err := follow.accepted_refusal(r, f"{ep} {kind}")) is not None:
                    failures.append(err)
            elif kind != "random-json" and r.status_code < 400:
                failures.append(f"{ep} {kind}: accepted {r.status_code} {r.text[:200]} <- {body[:120]!r}")
            if r.status_code >= 400 or ep in TRAINING:
                follow.training()
                if ep in ("asample", "create_sampling_session", "retrieve_future"):
                    follow.sampling()
        for path in ("/api/v1/training_runs/..%2F..%2Fetc", "/api/v1/training_runs/nope/checkpoints",
                     "/api/v1/samplers/nope", "/api/v1/nowhere", "/api/v1/training_runs?limit=-1"):
            r = http.get(path)
            count += 1
            statuses[r.status_code] += 1
            if not (400 <= r.status_code < 500):
                failures.append(f"GET {path}: {r.status_code}")
            follow.training()
    assert count >= 1000
    assert follow.calls >= 1000  # a follow-up after every refusal
    assert not failures, "\n".join(failures[:20])
    assert not any(s >= 500 for s in statuses), statuses
    # still serving the real SDK
    fresh = train_client(service, seed=32)
    out = fresh.forward_backward([ce_datum([1, 2, 3, 4])], "cross_entropy").result()
    fresh.optim_step(AdamParams(learning_rate=1e-3)).result()
    assert out.metrics["loss:sum"] > 0
    assert not any(r.status >= 500 for r in server.requests)


def _names(body: bytes, model_id: str) -> bool:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and obj.get("model_id") == model_id
