"""The HTTP layer: a Starlette app speaking the Tinker protocol (``/api/v1/...``) plus ``/_mock`` controls.

JSON everywhere except the ``forward_backward`` request body (protobuf, optionally zstd) and the
``forward_backward`` / ``asample`` results served by ``retrieve_future`` (protobuf). Every refusal is a
4xx JSON body ``{"detail": <what, where, what to do>, "field": <name>}``; unexpected exceptions become a
500 with the same shape and are logged (they are bugs: the fuzz test asserts there are none).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import zstandard
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cookbook.errors import CookbookError, DataError
from cookbook.mock.engine import AdamHyper, SampleSpec, check_images
from cookbook.mock.faults import Faults
from cookbook.mock.state import CheckpointStore, MockState, RequestLogEntry
from cookbook.mock.wire import (
    BadRequest,
    Fields,
    decode_forward_backward,
    model_input_arrays,
    parse_json_object,
)

log = logging.getLogger("cookbook.mock")

DEFAULT_MAX_BODY = 64 * 1024 * 1024
MAX_SAMPLES = 128
MAX_NEW_TOKENS = 16384
DEFAULT_MAX_TOKENS = 256
MAX_TOPK = 64
PROTO = "application/x-protobuf"


@dataclass
class ServerConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY
    compress_fwdbwd: bool = False  # ask the SDK to zstd-compress forward_backward bodies


@dataclass
class Ctx:
    endpoint: str
    model_id: str | None = None
    seq_id: int | None = None
    request_id: str | None = None


Handler = Callable[[Request, MockState, Ctx], Awaitable[Response]]


def _json(obj: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(obj, status_code=status)


def _fault_response(status: int) -> Response:
    headers = {"retry-after-ms": "10"}  # keep SDK back-off short in tests
    return JSONResponse(
        {"detail": f"injected fault: HTTP {status} from the mock server's fault configuration"},
        status_code=status,
        headers=headers,
    )


async def read_body(request: Request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None and (not cl.strip().isdigit() or int(cl) > limit):
        raise BadRequest(f"body: Content-Length {cl} exceeds the limit of {limit} bytes", "body", 413)
    chunks: list[bytes] = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise BadRequest(f"body: larger than the limit of {limit} bytes", "body", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    enc = request.headers.get("content-encoding", "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc != "zstd":
        raise BadRequest(f"Content-Encoding: {enc!r} is not supported (zstd or none)", "Content-Encoding", 415)
    return _unzstd(body, limit)


def _unzstd(body: bytes, limit: int) -> bytes:
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as r:
            while True:
                part = r.read(1 << 20)
                if not part:
                    break
                out.extend(part)
                if len(out) > limit:
                    raise BadRequest(
                        f"body: decompressed size exceeds the limit of {limit} bytes", "body", 413
                    )
    except zstandard.ZstdError as exc:
        raise BadRequest(f"body: invalid zstd data ({exc})", "body") from exc
    return bytes(out)


def _fp(obj: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).digest()


async def _json_body(request: Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request, request.app.state.config.max_body_bytes))


# ------------------------------------------------------------------------------------- handlers: session


async def client_config(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    cfg: dict[str, Any] = {"pjwt_auth_enabled": False}
    if request.app.state.config.compress_fwdbwd:
        cfg["proto_compress_fwdbwd"] = True
    return _json(cfg)


async def dynamic_config(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    return _json({})


async def create_session(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    tags = f.obj.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("tags: expected a list of strings", "tags")
    sid = st.create_session(tags, f.str_map("user_metadata"))
    return _json({"session_id": sid, "type": "create_session"})


async def heartbeat(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    sid = f.req_str("session_id")
    s = st.sessions.get(sid)
    if s is None or s.finished:
        return _json({"detail": f"session_id: session {sid!r} is unknown or finished"}, 410)
    s.last_heartbeat = time.monotonic()
    return _json({"type": "session_heartbeat"})


async def finish_session(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    sid = request.path_params["session_id"]
    st.session(sid, "session_id").finished = True
    return _json({})


async def telemetry(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    return _json({"status": "accepted"})


async def healthz(request: Request, st: MockState, ctx: Ctx) -> Response:
    return _json({"status": "ok"})


async def capabilities(request: Request, st: MockState, ctx: Ctx) -> Response:
    models = [
        {"model_name": n, "max_context_length": 32768, "trainable": True, "sampleable": True}
        for n in st.registry.names()
    ]
    return _json({"supported_models": models})


# ------------------------------------------------------------------------------------- handlers: training


async def create_model(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    session_id = f.req_str("session_id")
    model_seq_id = f.req_int("model_seq_id", 0, 1 << 40)
    base_model = f.req_str("base_model", 256)
    lc = f.obj_("lora_config", required=True)
    assert lc is not None
    lc.only(["rank", "seed", "train_unembed", "train_mlp", "train_attn"])
    lora = {
        "rank": lc.req_int("rank", 1, 512),
        "seed": lc.int_("seed", None, 0, (1 << 63) - 1),
        "train_unembed": lc.bool_("train_unembed", True),
        "train_mlp": lc.bool_("train_mlp", True),
        "train_attn": lc.bool_("train_attn", True),
    }
    oc = f.obj_("optimizer_config")
    if oc is not None and oc.obj.get("type", "adamw") != "adamw":
        raise BadRequest(
            f"optimizer_config.type: {oc.obj.get('type')!r} is not supported by the mock (use adamw)",
            "optimizer_config.type",
        )
    rid = st.create_model(session_id, model_seq_id, base_model, lora, f.str_map("user_metadata"), _fp(obj))
    ctx.request_id = rid
    return _json({"request_id": rid, "model_id": f"{session_id}:train:{model_seq_id}"})


async def get_info(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    m = st.model(f.req_str("model_id"))
    ctx.model_id = m.model_id
    tok = str(m.spec.tokenizer_dir) if m.spec.tokenizer_dir is not None else None
    return _json(
        {
            "model_id": m.model_id,
            "model_data": {"arch": "cookbook-mock-bigram", "model_name": m.spec.name, "tokenizer_id": tok},
            "is_lora": True,
            "lora_rank": m.trainer.adapter.rank,
            "model_name": m.spec.name,
            "optimizer_config": {"type": "adamw"},
            "type": "get_info",
        }
    )


async def forward_backward(request: Request, st: MockState, ctx: Ctx) -> Response:
    ctype = request.headers.get("content-type", "")
    if "protobuf" not in ctype:
        raise BadRequest(
            f"Content-Type: forward_backward takes {PROTO} (tinker_public.ForwardBackwardRequest), got {ctype!r}",
            "Content-Type",
            415,
        )
    body = await read_body(request, request.app.state.config.max_body_bytes)
    req, fp = decode_forward_backward(body)
    ctx.model_id, ctx.seq_id = req.model_id, req.seq_id
    rid = st.submit_ordered(
        req.model_id, req.seq_id, fp, "Forward" if req.forward_only else "ForwardBackward", st.op_forward_backward(req)
    )
    ctx.request_id = rid
    return _json({"request_id": rid, "model_id": req.model_id})


def _seq(f: Fields, ctx: Ctx) -> tuple[str, int | None]:
    model_id = f.req_str("model_id")
    seq_id = f.int_("seq_id", None, 0, 1 << 62)
    ctx.model_id, ctx.seq_id = model_id, seq_id
    return model_id, seq_id


async def optim_step(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    model_id, seq_id = _seq(f, ctx)
    if f.has("optimizer_params"):
        raise BadRequest("optimizer_params: only adam_params (AdamW) is supported by the mock", "optimizer_params")
    ap = f.obj_("adam_params") or f.obj_("optim_params")
    if ap is None:
        raise BadRequest("adam_params: required object is missing", "adam_params")
    ap.only(["learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm", "type"])
    hp = AdamHyper(
        learning_rate=ap.float_("learning_rate", 1e-4, 0.0, 1e3),
        beta1=ap.float_("beta1", 0.9, 0.0, 0.999999999),
        beta2=ap.float_("beta2", 0.95, 0.0, 0.999999999),
        eps=ap.float_("eps", 1e-12, 0.0, 1.0),
        weight_decay=ap.float_("weight_decay", 0.0, 0.0, 1e3),
        grad_clip_norm=ap.float_("grad_clip_norm", 0.0, 0.0, 1e12),
    )
    rid = st.submit_ordered(model_id, seq_id, _fp(obj), "OptimStep", st.op_optim_step(hp))
    ctx.request_id = rid
    return _json({"request_id": rid, "model_id": model_id})


async def save_weights(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    model_id, seq_id = _seq(f, ctx)
    name = CheckpointStore.check_name(f.req_str("path", 256))
    f.int_("ttl_seconds", None, 0, 1 << 40)
    op = st.op_save("weights", name, f.bool_("overwrite", False), f.str_map("user_metadata"))
    rid = st.submit_ordered(model_id, seq_id, _fp(obj), "SaveWeights", op)
    ctx.request_id = rid
    return _json({"request_id": rid, "model_id": model_id})


async def save_weights_for_sampler(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    model_id, seq_id = _seq(f, ctx)
    kind = f.str_("kind", False) or "snapshot"
    if kind not in ("snapshot", "inflight"):
        raise BadRequest(f"kind: {kind!r} must be 'snapshot' or 'inflight'", "kind")
    f.int_("ttl_seconds", None, 0, 1 << 40)
    path = f.str_("path", False, 256)
    if path is not None:
        CheckpointStore.check_name(path)
        op = st.op_save("sampler_weights", path, True, f.str_map("user_metadata"))
        rtype = "SaveWeightsForSampler"
    else:
        ssid = f.int_("sampling_session_seq_id", None, 0, 1 << 40)
        if ssid is None:
            raise BadRequest(
                "path or sampling_session_seq_id: one is required", "sampling_session_seq_id"
            )
        op = st.op_ephemeral_sampler(ssid)
        rtype = "SaveWeightsForSampler"
    rid = st.submit_ordered(model_id, seq_id, _fp(obj), rtype, op)
    ctx.request_id = rid
    return _json({"request_id": rid, "model_id": model_id})


async def load_weights(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    path = f.req_str("path", 1024)
    with_opt = f.bool_("optimizer", False)
    if f.has("model_id"):
        model_id, seq_id = _seq(f, ctx)
        rid = st.submit_ordered(model_id, seq_id, _fp(obj), "LoadWeights", st.op_load(path, with_opt))
        ctx.request_id = rid
        return _json({"request_id": rid, "model_id": model_id})
    session_id = f.req_str("session_id")
    model_seq_id = f.req_int("model_seq_id", 0, 1 << 40)
    oc = f.obj_("optimizer_config")
    if oc is not None and oc.obj.get("type", "adamw") != "adamw":
        raise BadRequest("optimizer_config.type: only adamw is supported by the mock", "optimizer_config.type")
    rid = st.create_model_from_checkpoint(
        session_id, model_seq_id, path, with_opt, f.str_map("user_metadata"), _fp(obj)
    )
    ctx.request_id = rid
    model_id = f"{session_id}:train:{model_seq_id}"
    ctx.model_id = model_id
    return _json({"request_id": rid, "model_id": model_id})


async def unsupported(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    raise BadRequest(
        f"{ctx.endpoint}: not supported by the mock server (feature flags stay off in /client/config)",
        ctx.endpoint,
        400,
    )


# ------------------------------------------------------------------------------------- handlers: sampling


async def create_sampling_session(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    sid = await st.create_sampler(
        f.req_str("session_id"),
        f.req_int("sampling_session_seq_id", 0, 1 << 40),
        f.str_("model_path", False, 1024),
        f.str_("base_model", False, 256),
        _fp(obj),
    )
    return _json({"sampling_session_id": sid, "type": "create_sampling_session"})


async def get_sampler(request: Request, st: MockState, ctx: Ctx) -> Response:
    s = st.sampler(request.path_params["sampler_id"], "sampler_id")
    return _json({"sampler_id": s.sampler_id, "base_model": s.spec.name, "model_path": s.model_path})


def _stop(f: Fields, vocab: int, eos: int | None) -> tuple[frozenset[int], tuple[str, ...]]:
    if "stop" not in f.obj or f.obj["stop"] is None:
        return (frozenset({eos}) if eos is not None else frozenset()), ()
    v = f.obj["stop"]
    name = f.name("stop")
    if isinstance(v, str):
        if not v:
            raise BadRequest(f"{name}: empty stop string", name)
        return frozenset(), (v,)
    if not isinstance(v, list) or len(v) > 64:
        raise BadRequest(f"{name}: expected a string, a list of strings or a list of token ids (<= 64)", name)
    if all(isinstance(x, str) for x in v):
        if any(not x for x in v):
            raise BadRequest(f"{name}: empty stop string", name)
        return frozenset(), tuple(v)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        for x in v:
            if not (0 <= x < vocab):
                raise BadRequest(f"{name}: stop token {x} is outside the vocabulary [0, {vocab})", name)
        return frozenset(v), ()
    raise BadRequest(f"{name}: mixes strings and token ids", name)


async def asample(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    sid = f.str_("sampling_session_id", False)
    if sid is not None:
        sampler = st.sampler(sid)
    else:
        base = f.str_("base_model", False, 256)
        path = f.str_("model_path", False, 1024)
        if base is None and path is None:
            raise BadRequest("sampling_session_id: required (or base_model / model_path)", "sampling_session_id")
        sessions = list(st.sessions)
        if not sessions:
            raise BadRequest("sampling_session_id: no session exists; create one first", "sampling_session_id")
        sampler = st.sampler(
            await st.create_sampler(sessions[0], 1_000_000 + len(st.samplers), path, base, _fp(obj))
        )
    seq_id = f.int_("seq_id", None, 0, 1 << 62)
    ctx.seq_id = seq_id
    spec = sampler.spec
    prompt, images = model_input_arrays(f, "prompt", spec.max_context_length)
    try:
        check_images(spec, images, "prompt")
    except DataError as exc:
        raise BadRequest(str(exc), "prompt") from exc
    if prompt.size == 0:
        raise BadRequest("prompt: empty prompt", "prompt")
    lo, hi = int(prompt.min()), int(prompt.max())
    if lo < 0 or hi >= spec.vocab_size:
        raise BadRequest(
            f"prompt: token id {lo if lo < 0 else hi} is outside the vocabulary [0, {spec.vocab_size}) of "
            f"{spec.name}",
            "prompt",
        )
    sp = f.obj_("sampling_params", required=True)
    assert sp is not None
    sp.only(["max_tokens", "seed", "stop", "temperature", "top_k", "top_p"])
    stop_tokens, stop_strings = _stop(sp, spec.vocab_size, spec.eos_token_id)
    if stop_strings and spec.tokenizer_dir is None and spec.vocab_size > 4096:
        raise BadRequest(
            f"sampling_params.stop: {spec.name} has no tokenizer in this mock, so stop strings cannot be "
            "matched; pass stop token ids",
            "sampling_params.stop",
        )
    seed = sp.int_("seed", None, -(1 << 63), (1 << 64) - 1)
    if f.int_("prompt_alt_tokens_k", 0, 0, 0) or f.obj.get("target_prompt_logprobs") is not None:
        raise BadRequest(
            "target_prompt_logprobs: not supported by the mock server", "target_prompt_logprobs"
        )
    last_n = f.int_("prompt_logprobs_last_n", None, 1, max(1, prompt.size - 1))
    s = SampleSpec(
        prompt=prompt,
        images=images,
        num_samples=f.int_("num_samples", 1, 1, MAX_SAMPLES) or 1,
        max_tokens=sp.int_("max_tokens", DEFAULT_MAX_TOKENS, 1, MAX_NEW_TOKENS) or DEFAULT_MAX_TOKENS,
        temperature=sp.float_("temperature", 1.0, 0.0, 100.0),
        top_k=sp.int_("top_k", -1, -1, 1 << 31) or -1,
        top_p=sp.float_("top_p", 1.0, 0.0, 1.0),
        seed=(seed % (1 << 64)) if seed is not None else st.next_sample_seed(),
        stop_tokens=stop_tokens,
        stop_strings=stop_strings,
        prompt_logprobs=f.bool_("prompt_logprobs", False),
        topk_prompt_logprobs=f.int_("topk_prompt_logprobs", 0, 0, MAX_TOPK) or 0,
        topk_sample_logprobs=f.int_("topk_sample_logprobs", 0, 0, MAX_TOPK) or 0,
        prompt_logprobs_last_n=last_n,
    )
    if s.top_p <= 0.0:
        raise BadRequest("sampling_params.top_p: must be in (0, 1]", "sampling_params.top_p")
    if s.top_k == 0:
        raise BadRequest("sampling_params.top_k: must be -1 (off) or >= 1", "sampling_params.top_k")
    fp = _fp(obj)
    if seq_id is not None and seed is None:
        # a retried request without a seed must get the same answer: derive the seed from its identity
        s.seed = int.from_bytes(hashlib.sha256(sampler.sampler_id.encode() + fp).digest()[:7], "little")
    key = (sampler.sampler_id, seq_id)
    seen = st.sample_seen.get(key) if seq_id is not None else None
    if seen is not None:
        if seen[0] != fp:
            raise BadRequest(f"seq_id: {seq_id} was already used by a different sample request", "seq_id")
        rid, seq_ids = seen[1], seen[2]
    else:
        rid, seq_ids = st.submit_sample(sampler, s)
        if seq_id is not None:
            st.sample_seen[key] = (fp, rid, seq_ids)
    ctx.request_id = rid
    return _json({"request_id": rid, "sample_sequence_ids": seq_ids})


# ------------------------------------------------------------------------------------- futures


async def retrieve_future(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    rid = f.req_str("request_id", 256)
    f.bool_("allow_metadata_only", False)
    ctx.request_id = rid
    decision = getattr(request.state, "fault", None)
    fut = st.futures.get(rid)
    if fut is None:
        raise BadRequest(f"request_id: unknown request id {rid!r}", "request_id", 404)
    if decision is not None and decision.try_again:
        return _json({"type": "try_again", "request_id": rid, "queue_state": "active"})
    fut = await st.wait(rid, st.long_poll_s)
    if not fut.event.is_set():
        return _json({"type": "try_again", "request_id": rid, "queue_state": "active"})
    if fut.error is not None:
        return _json(fut.error)
    if fut.proto is not None:
        return Response(fut.proto, media_type=PROTO)
    return _json(fut.json_result or {})


# ------------------------------------------------------------------------------------- REST


def _ck_public(ck: dict[str, Any] | None) -> dict[str, Any] | None:
    if ck is None:
        return None
    return {k: v for k, v in ck.items() if k != "meta"}


def _run_json(st: MockState, meta: dict[str, Any]) -> dict[str, Any]:
    rid = meta["training_run_id"]
    cks = st.store.list_checkpoints(rid)
    live = st.models.get(rid)
    train = [c for c in cks if c["checkpoint_type"] == "training"]
    samp = [c for c in cks if c["checkpoint_type"] == "sampler"]
    return {
        "training_run_id": rid,
        "base_model": meta["base_model"],
        "model_owner": meta.get("model_owner", "mock"),
        "is_lora": True,
        "corrupted": False,
        "lora_rank": meta.get("lora_rank"),
        "last_request_time": live.last_request_time if live else meta.get("created"),
        "last_checkpoint": _ck_public(train[-1]) if train else None,
        "last_sampler_checkpoint": _ck_public(samp[-1]) if samp else None,
        "user_metadata": meta.get("user_metadata"),
    }


def _page(request: Request) -> tuple[int, int]:
    def num(name: str, default: int) -> int:
        v = request.query_params.get(name)
        if v is None:
            return default
        if not v.isdigit() or int(v) > 1_000_000:
            raise BadRequest(f"{name}: expected a non-negative integer, got {v!r}", name)
        return int(v)

    return num("limit", 20), num("offset", 0)


async def list_runs(request: Request, st: MockState, ctx: Ctx) -> Response:
    limit, offset = _page(request)
    runs = st.store.list_runs()
    page = runs[offset : offset + limit]
    return _json(
        {
            "training_runs": [_run_json(st, r) for r in page],
            "cursor": {"offset": offset, "limit": limit, "total_count": len(runs)},
        }
    )


def _run_meta(st: MockState, run_id: str) -> dict[str, Any]:
    meta = st.store.load_run(run_id)
    if meta is None:
        raise BadRequest(f"training_run_id: unknown training run {run_id!r}", "training_run_id", 404)
    return meta


async def get_run(request: Request, st: MockState, ctx: Ctx) -> Response:
    return _json(_run_json(st, _run_meta(st, request.path_params["run_id"])))


async def list_run_checkpoints(request: Request, st: MockState, ctx: Ctx) -> Response:
    run_id = request.path_params["run_id"]
    _run_meta(st, run_id)
    cks = st.store.list_checkpoints(run_id)
    return _json({"checkpoints": cks, "cursor": {"offset": 0, "limit": len(cks), "total_count": len(cks)}})


async def delete_checkpoint(request: Request, st: MockState, ctx: Ctx) -> Response:
    run_id = request.path_params["run_id"]
    _run_meta(st, run_id)
    if not st.store.delete(run_id, request.path_params["checkpoint_id"]):
        raise BadRequest(f"checkpoint_id: {request.path_params['checkpoint_id']!r} not found", "checkpoint_id", 404)
    return Response(status_code=204)


async def list_user_checkpoints(request: Request, st: MockState, ctx: Ctx) -> Response:
    limit, offset = _page(request)
    cks = [c for r in st.store.list_runs() for c in st.store.list_checkpoints(r["training_run_id"])]
    cks.sort(key=lambda c: (c["time"], c["tinker_path"]))
    return _json(
        {"checkpoints": cks[offset : offset + limit], "cursor": {"offset": offset, "limit": limit, "total_count": len(cks)}}
    )


async def weights_info(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    path = f.req_str("tinker_path", 1024)
    run, _, _ = st.store.parse_path(path, "tinker_path")
    if not st.store.exists(path, "tinker_path"):
        raise BadRequest(f"tinker_path: checkpoint {path} not found", "tinker_path", 404)
    meta = _run_meta(st, run)
    lc = meta.get("lora_config") or {}
    return _json(
        {
            "base_model": meta["base_model"],
            "is_lora": True,
            "lora_rank": meta.get("lora_rank"),
            "train_unembed": lc.get("train_unembed"),
            "train_mlp": lc.get("train_mlp"),
            "train_attn": lc.get("train_attn"),
            "optimizer_config": {"type": "adamw"},
        }
    )


async def get_session(request: Request, st: MockState, ctx: Ctx) -> Response:
    s = st.session(request.path_params["session_id"])
    return _json({"training_run_ids": s.training_run_ids, "sampler_ids": s.sampler_ids, "user_metadata": s.user_metadata})


async def list_sessions(request: Request, st: MockState, ctx: Ctx) -> Response:
    limit, offset = _page(request)
    return _json({"sessions": list(st.sessions)[offset : offset + limit]})


# ------------------------------------------------------------------------------------- /_mock controls


async def mock_requests(request: Request, st: MockState, ctx: Ctx) -> Response:
    return _json({"requests": [asdict(e) for e in st.log]})


async def mock_reset(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    st.reset()
    st.faults.set(Faults())
    return _json({"status": "reset"})


async def mock_faults(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    st.faults.set(Faults.from_mapping(obj))
    return _json(st.faults.faults.to_dict())


async def mock_script(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    comps = f.obj.get("completions")
    if not isinstance(comps, list):
        raise BadRequest("completions: expected a list of strings or token-id lists", "completions")
    for i, c in enumerate(comps):
        ok = isinstance(c, str) or (isinstance(c, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in c))
        if not ok:
            raise BadRequest(f"completions[{i}]: expected a string or a list of token ids", f"completions[{i}]")
        st.scripted.append(c)
    return _json({"queued": len(st.scripted)})


async def mock_register(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    spec = st.registry.register(
        f.req_str("name", 200),
        f.req_int("vocab_size", 2, 1_000_000),
        f.str_("tokenizer_dir", False),
        f.int_("eos_token_id", None, 0, 1_000_000),
    )
    return _json({"name": spec.name, "vocab_size": spec.vocab_size, "eos_token_id": spec.eos_token_id})


# ------------------------------------------------------------------------------------- app


def _wrap(name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        st: MockState = request.app.state.mock
        ctx = Ctx(name)
        t0 = time.perf_counter()
        decision = st.faults.decide(name)
        request.state.fault = decision
        fault: str | None = None
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.status_before is not None:
            resp: Response = _fault_response(decision.status_before)
            fault = f"before:{decision.status_before}"
        else:
            try:
                resp = await handler(request, st, ctx)
            except BadRequest as exc:
                resp = _json(exc.body(), exc.status)
            except CookbookError as exc:
                resp = _json({"detail": str(exc)}, 400)
            except Exception as exc:  # a bug: answer, log, keep serving
                log.exception("mock server error on %s", request.url.path)
                resp = _json({"detail": f"mock server error: {type(exc).__name__}: {exc}"}, 500)
            if decision.status_after is not None:
                resp = _fault_response(decision.status_after)
                fault = f"after:{decision.status_after}"
            elif decision.try_again and name == "retrieve_future":
                fault = "try_again"
        st.log.append(
            RequestLogEntry(
                method=request.method,
                path=request.url.path,
                endpoint=name,
                status=resp.status_code,
                sdk_method=request.headers.get("x-sdk-method"),
                request_type=request.headers.get("x-tinker-request-type"),
                model_id=ctx.model_id,
                seq_id=ctx.seq_id,
                request_id=ctx.request_id,
                duration_ms=(time.perf_counter() - t0) * 1000,
                fault=fault,
            )
        )
        return resp

    return endpoint


async def not_found(request: Request, st: MockState, ctx: Ctx) -> Response:
    raise BadRequest(f"{request.method} {request.url.path}: no such endpoint on the mock Tinker server", "path", 404)


ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", "/api/v1/client/config", "client/config", client_config),
    ("POST", "/api/v1/client/dynamic_config", "client/dynamic_config", dynamic_config),
    ("POST", "/api/v1/create_session", "create_session", create_session),
    ("POST", "/api/v1/session_heartbeat", "session_heartbeat", heartbeat),
    ("POST", "/api/v1/sessions/{session_id}/finish", "sessions/finish", finish_session),
    ("POST", "/api/v1/telemetry", "telemetry", telemetry),
    ("GET", "/api/v1/healthz", "healthz", healthz),
    ("GET", "/api/v1/get_server_capabilities", "get_server_capabilities", capabilities),
    ("POST", "/api/v1/create_model", "create_model", create_model),
    ("POST", "/api/v1/get_info", "get_info", get_info),
    ("POST", "/api/v1/forward_backward", "forward_backward", forward_backward),
    ("POST", "/api/v1/optim_step", "optim_step", optim_step),
    ("POST", "/api/v1/save_weights", "save_weights", save_weights),
    ("POST", "/api/v1/save_weights_for_sampler", "save_weights_for_sampler", save_weights_for_sampler),
    ("POST", "/api/v1/load_weights", "load_weights", load_weights),
    ("POST", "/api/v1/save_weights_external", "save_weights_external", unsupported),
    ("POST", "/api/v1/create_custom_loss", "create_custom_loss", unsupported),
    ("POST", "/api/v1/create_sampling_session", "create_sampling_session", create_sampling_session),
    ("GET", "/api/v1/samplers/{sampler_id}", "samplers", get_sampler),
    ("POST", "/api/v1/asample", "asample", asample),
    ("POST", "/api/v1/retrieve_future", "retrieve_future", retrieve_future),
    ("GET", "/api/v1/training_runs", "training_runs", list_runs),
    ("GET", "/api/v1/training_runs/{run_id}", "training_run", get_run),
    ("GET", "/api/v1/training_runs/{run_id}/checkpoints", "checkpoints", list_run_checkpoints),
    ("DELETE", "/api/v1/training_runs/{run_id}/checkpoints/{checkpoint_id:path}", "delete_checkpoint", delete_checkpoint),
    ("GET", "/api/v1/checkpoints", "user_checkpoints", list_user_checkpoints),
    ("POST", "/api/v1/weights_info", "weights_info", weights_info),
    ("GET", "/api/v1/sessions/{session_id}", "session", get_session),
    ("GET", "/api/v1/sessions", "sessions", list_sessions),
    ("GET", "/_mock/requests", "_mock/requests", mock_requests),
    ("POST", "/_mock/reset", "_mock/reset", mock_reset),
    ("POST", "/_mock/faults", "_mock/faults", mock_faults),
    ("POST", "/_mock/script", "_mock/script", mock_script),
    ("POST", "/_mock/register_model", "_mock/register_model", mock_register),
]


def create_app(
    state: MockState,
    config: ServerConfig | None = None,
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Starlette:
    """The ASGI app over ``state`` (which must be used from this app's event loop only)."""
    routes = [Route(path, _wrap(name, h), methods=[method]) for method, path, name, h in ROUTES]
    catch_all = _wrap("unknown", not_found)
    routes.append(Route("/{rest:path}", catch_all, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for cb in on_startup:
            await cb()
        try:
            yield
        finally:
            state.closing.set()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.mock = state
    app.state.config = config or ServerConfig()
    return app
