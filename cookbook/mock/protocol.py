"""The HTTP layer: a Starlette app speaking the Tinker protocol (``/api/v1/...``) plus ``/_mock`` controls.

JSON everywhere except the ``forward_backward`` request body (protobuf, optionally zstd) and the
``forward_backward`` / ``asample`` results served by ``retrieve_future`` (protobuf). This layer alone knows
HTTP: the state layer raises :class:`~cookbook.mock.errors.MockError` (a kind and a field) and returns domain
results; here kinds become statuses (:data:`STATUS`) and results become replies. Every refusal is a 4xx JSON
body ``{"detail": <what, where, what to do>, "field": <name>}``; unexpected exceptions become a 500 with the
same shape and are logged (they are bugs: the fuzz test asserts there are none).

Training requests hand the state a ``build`` callable that parses everything but ``model_id`` / ``seq_id``, so
the request holds its sequence slot before any check can refuse it (a refusal never wedges the client).
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

from cookbook.errors import CookbookError
from cookbook.mock.engine import (
    AdamHyper,
    BaseModelSpec,
    ForwardResult,
    SampleResult,
    SampleSpec,
    check_images,
)
from cookbook.mock.errors import Kind, MockError, unsupported
from cookbook.mock.faults import Faults
from cookbook.mock.state import (
    CheckpointStore,
    ForwardBackwardOp,
    Loaded,
    LoadOp,
    MockState,
    ModelCreated,
    OpResult,
    OptimStepOp,
    OptimStepped,
    RequestLogEntry,
    SamplerCreated,
    SamplerSnapshotOp,
    Saved,
    SaveOp,
    Submitted,
    TrainingOp,
    UnsupportedOp,
)
from cookbook.mock.wire import (
    Fields,
    encode_forward_backward_output,
    encode_sample_response,
    forward_backward_request,
    model_input_arrays,
    parse_forward_backward,
    parse_json_object,
)

log = logging.getLogger("cookbook.mock")

DEFAULT_MAX_BODY = 64 * 1024 * 1024
MAX_SAMPLES = 128
MAX_NEW_TOKENS = 16384
DEFAULT_MAX_TOKENS = 256
MAX_TOPK = 64
PROTO = "application/x-protobuf"

# the one place where an error kind becomes an HTTP status (409 is avoided: the SDK retries it)
STATUS: dict[Kind, int] = {
    Kind.INVALID: 400,
    Kind.CONFLICT: 400,
    Kind.UNSUPPORTED: 400,
    Kind.NOT_FOUND: 404,
    Kind.GONE: 410,
    Kind.TOO_LARGE: 413,
    Kind.MEDIA_TYPE: 415,
}


def error_response(exc: MockError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(exc), "kind": exc.kind.value}
    if exc.field:
        body["field"] = exc.field
    return JSONResponse(body, status_code=STATUS[exc.kind])


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
        raise MockError("body", f"Content-Length {cl} exceeds the limit of {limit} bytes", Kind.TOO_LARGE)
    chunks: list[bytes] = []
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise MockError("body", f"larger than the limit of {limit} bytes", Kind.TOO_LARGE)
        chunks.append(chunk)
    body = b"".join(chunks)
    enc = request.headers.get("content-encoding", "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc != "zstd":
        raise MockError("Content-Encoding", f"{enc!r} is not supported (zstd or none)", Kind.MEDIA_TYPE)
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
                    raise MockError("body", f"decompressed size exceeds the limit of {limit} bytes", Kind.TOO_LARGE)
    except zstandard.ZstdError as exc:
        raise MockError("body", f"invalid zstd data ({exc})") from exc
    return bytes(out)


def _fp(obj: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).digest()


async def _json_body(request: Request) -> dict[str, Any]:
    return parse_json_object(await read_body(request, request.app.state.config.max_body_bytes))


# ------------------------------------------------------------------------------------- results -> replies


def encode_result(result: OpResult | None) -> Response:
    """A finished future's domain result as the reply the SDK expects for its request type."""
    if isinstance(result, ForwardResult):
        return Response(encode_forward_backward_output(result), media_type=PROTO)
    if isinstance(result, SampleResult):
        return Response(encode_sample_response(result), media_type=PROTO)
    if isinstance(result, ModelCreated):
        return _json({"model_id": result.model_id, "type": "create_model"})
    if isinstance(result, OptimStepped):
        return _json({"metrics": result.metrics, "type": "optim_step"})
    if isinstance(result, Saved):
        rtype = "save_weights" if result.kind == "weights" else "save_weights_for_sampler"
        return _json({"path": result.path, "type": rtype})
    if isinstance(result, SamplerCreated):
        return _json({"sampling_session_id": result.sampling_session_id, "type": "save_weights_for_sampler"})
    if isinstance(result, Loaded):
        out: dict[str, Any] = {"path": result.path, "type": "load_weights"}
        if result.model_id is not None:
            out["model_id"] = result.model_id
        return _json(out)
    raise TypeError(f"no wire encoding for {type(result).__name__}")  # a bug: answered as a 500


def _submitted(ctx: Ctx, sub: Submitted) -> Response:
    ctx.request_id = sub.request_id
    return _json({"request_id": sub.request_id, "model_id": sub.model_id})


# ------------------------------------------------------------------------------------- handlers: session


async def client_config(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    cfg: dict[str, Any] = {"pjwt_auth_enabled": False}
    if request.app.state.config.compress_fwdbwd:
        cfg["proto_compress_fwdbwd"] = True
    return _json(cfg)


async def dynamic_config(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    return _json({"sample_cancel_enabled": True})  # abandoned sample polls send cancel_future


async def create_session(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    tags = f.obj.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise MockError("tags", "expected a list of strings")
    sid = st.create_session(tags, f.str_map("user_metadata"))
    return _json({"session_id": sid, "type": "create_session"})


async def heartbeat(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    sid = f.req_str("session_id")
    try:
        st.heartbeat(sid)
    except MockError as exc:
        raise MockError("session_id", f"session {sid!r} is unknown or has ended", Kind.GONE) from exc
    return _json({"type": "session_heartbeat"})


async def finish_session(request: Request, st: MockState, ctx: Ctx) -> Response:
    await _json_body(request)
    st.end_session(request.path_params["session_id"])
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


def _optimizer_config(f: Fields) -> None:
    oc = f.obj_("optimizer_config")
    if oc is not None and oc.obj.get("type", "adamw") != "adamw":
        raise unsupported("optimizer_config.type", f"{oc.obj.get('type')!r} is not supported by the mock (use adamw)")


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
    _optimizer_config(f)
    sub = st.create_model(session_id, model_seq_id, base_model, lora, f.str_map("user_metadata"), _fp(obj))
    ctx.model_id = sub.model_id
    return _submitted(ctx, sub)


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
            "lora_rank": m.rank,
            "model_name": m.spec.name,
            "optimizer_config": {"type": "adamw"},
            "type": "get_info",
        }
    )


def _seq(f: Fields, ctx: Ctx) -> tuple[str, int | None]:
    """The two fields a training request needs before it can hold its slot."""
    model_id = f.req_str("model_id")
    seq_id = f.int_("seq_id", None, 0, 1 << 62)
    ctx.model_id, ctx.seq_id = model_id, seq_id
    return model_id, seq_id


async def _training(request: Request, st: MockState, ctx: Ctx, build: Callable[[Fields], TrainingOp]) -> Response:
    """A JSON training request: slot first (model_id, seq_id), then ``build`` parses the rest."""
    obj = await _json_body(request)
    f = Fields(obj)
    model_id, seq_id = _seq(f, ctx)
    return _submitted(ctx, st.submit_training(model_id, seq_id, _fp(obj), lambda: build(f)))


async def forward_backward(request: Request, st: MockState, ctx: Ctx) -> Response:
    ctype = request.headers.get("content-type", "")
    if "protobuf" not in ctype:
        raise MockError(
            "Content-Type",
            f"forward_backward takes {PROTO} (tinker_public.ForwardBackwardRequest), got {ctype!r}",
            Kind.MEDIA_TYPE,
        )
    body = await read_body(request, request.app.state.config.max_body_bytes)
    msg, fp = parse_forward_backward(body)
    ctx.model_id, ctx.seq_id = msg.model_id, int(msg.seq_id)

    def build() -> TrainingOp:
        req = forward_backward_request(msg)
        return ForwardBackwardOp(req.loss_fn, req.data, req.loss_fn_config, req.forward_only)

    return _submitted(ctx, st.submit_training(msg.model_id, int(msg.seq_id), fp, build))


def _optim_op(f: Fields) -> TrainingOp:
    if f.has("optimizer_params"):
        raise unsupported("optimizer_params", "only adam_params (AdamW) is supported by the mock")
    ap = f.obj_("adam_params") or f.obj_("optim_params")
    if ap is None:
        raise MockError("adam_params", "required object is missing")
    ap.only(["learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm", "type"])
    return OptimStepOp(
        AdamHyper(
            learning_rate=ap.float_("learning_rate", 1e-4, 0.0, 1e3),
            beta1=ap.float_("beta1", 0.9, 0.0, 0.999999999),
            beta2=ap.float_("beta2", 0.95, 0.0, 0.999999999),
            eps=ap.float_("eps", 1e-12, 0.0, 1.0),
            weight_decay=ap.float_("weight_decay", 0.0, 0.0, 1e3),
            grad_clip_norm=ap.float_("grad_clip_norm", 0.0, 0.0, 1e12),
        )
    )


async def optim_step(request: Request, st: MockState, ctx: Ctx) -> Response:
    return await _training(request, st, ctx, _optim_op)


def _save_op(f: Fields) -> TrainingOp:
    name = CheckpointStore.check_name(f.req_str("path", 256))
    ttl = f.int_("ttl_seconds", None, 0, 1 << 40)
    return SaveOp("weights", name, f.bool_("overwrite", False), ttl, f.str_map("user_metadata"))


async def save_weights(request: Request, st: MockState, ctx: Ctx) -> Response:
    return await _training(request, st, ctx, _save_op)


def _save_for_sampler_op(f: Fields) -> TrainingOp:
    kind = f.str_("kind", False) or "snapshot"
    if kind not in ("snapshot", "inflight"):
        raise MockError("kind", f"{kind!r} must be 'snapshot' or 'inflight'")
    ttl = f.int_("ttl_seconds", None, 0, 1 << 40)
    path = f.str_("path", False, 256)
    if path is not None:
        CheckpointStore.check_name(path)
        return SaveOp("sampler_weights", path, True, ttl, f.str_map("user_metadata"))
    ssid = f.int_("sampling_session_seq_id", None, 0, 1 << 40)
    if ssid is None:
        raise MockError("sampling_session_seq_id", "path or sampling_session_seq_id: one is required")
    return SamplerSnapshotOp(ssid)


async def save_weights_for_sampler(request: Request, st: MockState, ctx: Ctx) -> Response:
    return await _training(request, st, ctx, _save_for_sampler_op)


def _load_op(f: Fields) -> TrainingOp:
    return LoadOp(f.req_str("path", 1024), f.bool_("optimizer", False))


async def load_weights(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    if f.has("model_id"):
        model_id, seq_id = _seq(f, ctx)
        return _submitted(ctx, st.submit_training(model_id, seq_id, _fp(obj), lambda: _load_op(f)))
    session_id = f.req_str("session_id")
    model_seq_id = f.req_int("model_seq_id", 0, 1 << 40)
    path = f.req_str("path", 1024)
    _optimizer_config(f)
    sub = st.create_model_from_checkpoint(
        session_id, model_seq_id, path, f.bool_("optimizer", False), f.str_map("user_metadata"), _fp(obj)
    )
    ctx.model_id = sub.model_id
    return _submitted(ctx, sub)


async def save_weights_external(request: Request, st: MockState, ctx: Ctx) -> Response:
    def build(f: Fields) -> TrainingOp:
        return UnsupportedOp(
            "TrainingClient.save_weights_external", "external (downloadable, encrypted) weights do not exist offline"
        )

    return await _training(request, st, ctx, build)


# Tinker features without an offline equivalent: endpoint name -> (SDK method(s), why). README lists these.
UNSUPPORTED: dict[str, tuple[str, str]] = {
    "create_custom_loss": ("ServiceClient.create_custom_loss (server-side)", "custom losses run client-side here"),
    "copy_weights": ("RestClient.copy_weights / ServiceClient.copy_weights", "there are no other projects"),
    "external_weights_urls": ("RestClient.get_external_weights_urls", "there are no external weights"),
    "sessions/search": ("RestClient.search_sessions", "session search is not implemented"),
    "sessions/project": ("RestClient.assign_session_project", "there are no projects"),
    "sessions/trace_export": ("RestClient.export_session_trace", "there are no traces"),
    "audit": ("RestClient.get_audit_log", "there is no audit log"),
    "billing/usage/events": ("RestClient.get_billing_usage", "there is no billing"),
    "billing/usage/checkpoints/current": (
        "RestClient.get_current_checkpoint_storage_usage",
        "there is no billing",
    ),
    "join_sampling_session": ("sample_join_sampling_session flag", "the flag stays off in /client/config"),
    "retrieve_futures": ("sample_use_retrieve_futures flag", "the flag stays off in /client/config"),
    "auth/token": ("JWT auth", "pjwt_auth_enabled stays off in /client/config"),
}


async def not_supported(request: Request, st: MockState, ctx: Ctx) -> Response:
    await read_body(request, request.app.state.config.max_body_bytes)  # drained, not parsed (GETs have none)
    method, why = UNSUPPORTED[ctx.endpoint]
    raise unsupported(
        None, f"{method} ({request.method} {request.url.path}) is not supported by the mock Tinker server: {why}"
    )


async def cancel_future(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    rid = f.req_str("request_id", 256)
    ctx.request_id = rid
    st.cancel(rid)
    return _json({})


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
            raise MockError(name, "empty stop string")
        return frozenset(), (v,)
    if not isinstance(v, list) or len(v) > 64:
        raise MockError(name, "expected a string, a list of strings or a list of token ids (<= 64)")
    if all(isinstance(x, str) for x in v):
        if any(not x for x in v):
            raise MockError(name, "empty stop string")
        return frozenset(), tuple(v)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        for x in v:
            if not (0 <= x < vocab):
                raise MockError(name, f"stop token {x} is outside the vocabulary [0, {vocab})")
        return frozenset(v), ()
    raise MockError(name, "mixes strings and token ids")


def _sample_spec(f: Fields, spec: BaseModelSpec) -> tuple[SampleSpec, bool]:
    prompt, images = model_input_arrays(f, "prompt", spec.max_context_length)
    check_images(spec, images, "prompt")  # InvalidData (400) before the request is queued
    if prompt.size == 0:
        raise MockError("prompt", "empty prompt")
    lo, hi = int(prompt.min()), int(prompt.max())
    if lo < 0 or hi >= spec.vocab_size:
        raise MockError(
            "prompt", f"token id {lo if lo < 0 else hi} is outside the vocabulary [0, {spec.vocab_size}) of {spec.name}"
        )
    sp = f.obj_("sampling_params", required=True)
    assert sp is not None
    sp.only(["max_tokens", "seed", "stop", "temperature", "top_k", "top_p"])
    stop_tokens, stop_strings = _stop(sp, spec.vocab_size, spec.eos_token_id)
    if stop_strings and spec.tokenizer_dir is None and spec.vocab_size > 4096:
        raise MockError(
            "sampling_params.stop",
            f"{spec.name} has no tokenizer in this mock, so stop strings cannot be matched; pass stop token ids",
        )
    seed = sp.int_("seed", None, -(1 << 63), (1 << 64) - 1)
    if f.int_("prompt_alt_tokens_k", 0, 0, 0) or f.obj.get("target_prompt_logprobs") is not None:
        raise unsupported("target_prompt_logprobs", "not supported by the mock server")
    last_n = f.int_("prompt_logprobs_last_n", None, 1, max(1, prompt.size - 1))
    s = SampleSpec(
        prompt=prompt,
        images=images,
        num_samples=f.int_("num_samples", 1, 1, MAX_SAMPLES) or 1,
        max_tokens=sp.int_("max_tokens", DEFAULT_MAX_TOKENS, 1, MAX_NEW_TOKENS) or DEFAULT_MAX_TOKENS,
        temperature=sp.float_("temperature", 1.0, 0.0, 100.0),
        top_k=sp.int_("top_k", -1, -1, 1 << 31) or -1,
        top_p=sp.float_("top_p", 1.0, 0.0, 1.0),
        seed=(seed % (1 << 64)) if seed is not None else 0,
        stop_tokens=stop_tokens,
        stop_strings=stop_strings,
        prompt_logprobs=f.bool_("prompt_logprobs", False),
        topk_prompt_logprobs=f.int_("topk_prompt_logprobs", 0, 0, MAX_TOPK) or 0,
        topk_sample_logprobs=f.int_("topk_sample_logprobs", 0, 0, MAX_TOPK) or 0,
        prompt_logprobs_last_n=last_n,
        record_stability_info=f.bool_("record_stability_info", False),
    )
    if s.top_p <= 0.0:
        raise MockError("sampling_params.top_p", "must be in (0, 1]")
    if s.top_k == 0:
        raise MockError("sampling_params.top_k", "must be -1 (off) or >= 1")
    return s, seed is not None


async def asample(request: Request, st: MockState, ctx: Ctx) -> Response:
    obj = await _json_body(request)
    f = Fields(obj)
    fp = _fp(obj)
    sid = f.str_("sampling_session_id", False)
    if sid is None:
        base = f.str_("base_model", False, 256)
        path = f.str_("model_path", False, 1024)
        if base is None and path is None:
            raise MockError("sampling_session_id", "required (or base_model / model_path)")
        sid = await st.ad_hoc_sampler(path, base, _fp({"model_path": path, "base_model": base}))
    seq_id = f.int_("seq_id", None, 0, 1 << 62)
    ctx.seq_id = seq_id
    sub = await st.submit_sample(sid, seq_id, fp, lambda spec: _sample_spec(f, spec))
    ctx.request_id = sub.request_id
    return _json({"request_id": sub.request_id, "sample_sequence_ids": list(sub.sample_sequence_ids)})


# ------------------------------------------------------------------------------------- futures


async def retrieve_future(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    rid = f.req_str("request_id", 256)
    f.bool_("allow_metadata_only", False)
    ctx.request_id = rid
    decision = getattr(request.state, "fault", None)
    st.future(rid)
    if decision is not None and decision.try_again:
        return _json({"type": "try_again", "request_id": rid, "queue_state": "active"})
    fut = await st.wait(rid, st.long_poll_s)
    if not fut.done:
        return _json({"type": "try_again", "request_id": rid, "queue_state": "active"})
    if fut.error is not None:
        return _json({"error": fut.error[0], "category": fut.error[1]})
    return encode_result(fut.result)


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
            raise MockError(name, f"expected a non-negative integer, got {v!r}")
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


async def get_run(request: Request, st: MockState, ctx: Ctx) -> Response:
    return _json(_run_json(st, st.run_meta(request.path_params["run_id"])))


async def list_run_checkpoints(request: Request, st: MockState, ctx: Ctx) -> Response:
    run_id = request.path_params["run_id"]
    st.run_meta(run_id)
    cks = st.store.list_checkpoints(run_id)
    return _json({"checkpoints": cks, "cursor": {"offset": 0, "limit": len(cks), "total_count": len(cks)}})


async def delete_checkpoint(request: Request, st: MockState, ctx: Ctx) -> Response:
    run_id = request.path_params["run_id"]
    st.run_meta(run_id)
    cid = request.path_params["checkpoint_id"]
    if not st.store.delete(run_id, cid):
        raise MockError("checkpoint_id", f"{cid!r} not found", Kind.NOT_FOUND)
    return Response(status_code=204)


def _checkpoint_id(request: Request) -> tuple[str, str]:
    p = request.path_params
    return p["run_id"], f"{p['kind']}/{p['name']}"


async def publish_checkpoint(request: Request, st: MockState, ctx: Ctx) -> Response:
    await read_body(request, request.app.state.config.max_body_bytes)  # the SDK sends no body
    st.set_public(*_checkpoint_id(request), public=request.method == "POST")
    return Response(status_code=204)


async def set_checkpoint_ttl(request: Request, st: MockState, ctx: Ctx) -> Response:
    f = Fields(await _json_body(request))
    st.set_ttl(*_checkpoint_id(request), ttl_seconds=f.int_("ttl_seconds", None, 0, 1 << 40))
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
    st.store.record(path, "tinker_path")
    meta = st.run_meta(run)
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
    s = st.session(request.path_params["session_id"], active=False)
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
        raise MockError("completions", "expected a list of strings or token-id lists")
    for i, c in enumerate(comps):
        ok = isinstance(c, str) or (isinstance(c, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in c))
        if not ok:
            raise MockError(f"completions[{i}]", "expected a string or a list of token ids")
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
            except MockError as exc:
                resp = error_response(exc)
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


async def no_such_endpoint(request: Request, st: MockState, ctx: Ctx) -> Response:
    raise MockError("path", f"{request.method} {request.url.path}: no such endpoint on the mock Tinker server", Kind.NOT_FOUND)


CKPT = "/api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}"
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
    ("POST", "/api/v1/save_weights_external", "save_weights_external", save_weights_external),
    ("POST", "/api/v1/cancel_future", "cancel_future", cancel_future),
    ("POST", "/api/v1/create_custom_loss", "create_custom_loss", not_supported),
    ("POST", "/api/v1/copy_weights", "copy_weights", not_supported),
    ("POST", "/api/v1/join_sampling_session", "join_sampling_session", not_supported),
    ("POST", "/api/v1/retrieve_futures", "retrieve_futures", not_supported),
    ("POST", "/api/v1/auth/token", "auth/token", not_supported),
    ("GET", "/api/v1/audit", "audit", not_supported),
    ("GET", "/api/v1/billing/usage/events", "billing/usage/events", not_supported),
    ("GET", "/api/v1/billing/usage/checkpoints/current", "billing/usage/checkpoints/current", not_supported),
    ("POST", "/api/v1/sessions/search", "sessions/search", not_supported),
    ("PUT", "/api/v1/sessions/{session_id}/project", "sessions/project", not_supported),
    ("GET", "/api/v1/sessions/{session_id}/trace_export", "sessions/trace_export", not_supported),
    ("POST", "/api/v1/create_sampling_session", "create_sampling_session", create_sampling_session),
    ("GET", "/api/v1/samplers/{sampler_id}", "samplers", get_sampler),
    ("POST", "/api/v1/asample", "asample", asample),
    ("POST", "/api/v1/retrieve_future", "retrieve_future", retrieve_future),
    ("GET", "/api/v1/training_runs", "training_runs", list_runs),
    ("GET", "/api/v1/training_runs/{run_id}", "training_run", get_run),
    ("GET", "/api/v1/training_runs/{run_id}/checkpoints", "checkpoints", list_run_checkpoints),
    ("POST", CKPT + "/publish", "publish_checkpoint", publish_checkpoint),
    ("DELETE", CKPT + "/publish", "unpublish_checkpoint", publish_checkpoint),
    ("PUT", CKPT + "/ttl", "set_checkpoint_ttl", set_checkpoint_ttl),
    ("GET", CKPT + "/external_weights_urls", "external_weights_urls", not_supported),
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
    catch_all = _wrap("unknown", no_such_endpoint)
    routes.append(Route("/{rest:path}", catch_all, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for cb in on_startup:
            await cb()
        housekeeping = asyncio.get_running_loop().create_task(state.housekeeping())
        try:
            yield
        finally:
            state.closing.set()
            housekeeping.cancel()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.mock = state
    app.state.config = config or ServerConfig()
    return app
