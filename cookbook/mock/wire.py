"""Wire encoding: the SDK's own protobuf module (``tinker.proto.tinker_public_pb2``) and JSON field checks.

Every decoding error is a :class:`~cookbook.mock.errors.MockError` (a kind and the offending field);
:mod:`cookbook.mock.protocol` maps kinds to HTTP statuses.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tinker.proto import tinker_public_pb2 as pb

from cookbook.mock.engine import DatumArrays, ForwardResult, ImageInput, ProvenanceSpan, SampleResult
from cookbook.mock.errors import MockError

MAX_TENSOR_ELEMENTS = 50_000_000

# ---------------------------------------------------------------------------------------------- JSON


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MockError("body", f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise MockError("body", f"malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except RecursionError as exc:
        raise MockError("body", "JSON nested too deeply") from exc
    except ValueError as exc:
        raise MockError("body", f"{exc}") from exc
    if not isinstance(obj, dict):
        raise MockError("body", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed in JSON")


class Fields:
    """Typed access to a JSON object; errors name the dotted field path."""

    def __init__(self, obj: Mapping[str, Any], prefix: str = "") -> None:
        self.obj = obj
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def str_(self, key: str, required: bool = True, max_len: int = 4096) -> str | None:
        v = self.obj.get(key)
        if v is None:
            if required:
                raise MockError(self.name(key), "required string is missing")
            return None
        if not isinstance(v, str):
            raise MockError(self.name(key), f"expected a string, got {type(v).__name__}")
        if len(v) > max_len:
            raise MockError(self.name(key), f"longer than {max_len} characters")
        return v

    def req_str(self, key: str, max_len: int = 4096) -> str:
        v = self.str_(key, True, max_len)
        assert v is not None
        return v

    def int_(
        self, key: str, default: int | None = None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        v = self.obj.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise MockError(self.name(key), f"expected an integer, got {type(v).__name__}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise MockError(self.name(key), f"{v} is outside [{lo}, {hi}]")
        return v

    def req_int(self, key: str, lo: int | None = None, hi: int | None = None) -> int:
        if self.obj.get(key) is None:
            raise MockError(self.name(key), "required integer is missing")
        v = self.int_(key, None, lo, hi)
        assert v is not None
        return v

    def float_(self, key: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        v = self.obj.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MockError(self.name(key), f"expected a number, got {type(v).__name__}")
        f = float(v)
        if not math.isfinite(f):
            raise MockError(self.name(key), "must be finite")
        if (lo is not None and f < lo) or (hi is not None and f > hi):
            raise MockError(self.name(key), f"{f} is outside [{lo}, {hi}]")
        return f

    def bool_(self, key: str, default: bool) -> bool:
        v = self.obj.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise MockError(self.name(key), f"expected true/false, got {type(v).__name__}")
        return v

    def obj_(self, key: str, required: bool = False) -> Fields | None:
        v = self.obj.get(key)
        if v is None:
            if required:
                raise MockError(self.name(key), "required object is missing")
            return None
        if not isinstance(v, dict):
            raise MockError(self.name(key), f"expected an object, got {type(v).__name__}")
        return Fields(v, f"{self.name(key)}.")

    def str_map(self, key: str) -> dict[str, str] | None:
        v = self.obj.get(key)
        if v is None:
            return None
        if not isinstance(v, dict) or len(v) > 256:
            raise MockError(self.name(key), "expected an object of at most 256 strings")
        out: dict[str, str] = {}
        for k, val in v.items():
            if not isinstance(val, (str, int, float, bool)) or len(str(val)) > 4096:
                raise MockError(f"{self.name(key)}.{k}", "expected a short string")
            out[str(k)] = str(val)
        return out

    def only(self, allowed: Sequence[str]) -> None:
        unknown = sorted(set(self.obj) - set(allowed))
        if unknown:
            raise MockError(self.name(unknown[0]), f"unknown keys {unknown} (allowed: {sorted(allowed)})")


def decode_image_chunk(data: Any, fmt: Any, expected: Any, start: int, where: str, chunk: int = 0) -> ImageInput:
    """An image chunk (bytes or base64 text, ``png``/``jpeg``, ``expected_tokens``) -> :class:`ImageInput`;
    the width and height come from the image header. The engine checks the token count against the model."""
    from cookbook.renderers.kit.vision import image_header

    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError as exc:
            raise MockError(f"{where}.data", f"not valid base64 ({exc})") from exc
    if not isinstance(data, bytes) or not data:
        raise MockError(f"{where}.data", "expected the image bytes (base64)")
    if fmt not in ("png", "jpeg"):
        raise MockError(f"{where}.format", f"expected 'png' or 'jpeg', got {fmt!r}")
    try:
        found, width, height = image_header(data)
    except ValueError as exc:
        raise MockError(f"{where}.data", f"cannot decode the image ({exc})") from exc
    if found != fmt:
        raise MockError(f"{where}.format", f"says {fmt!r} but the data is {found}")
    if not isinstance(expected, int) or isinstance(expected, bool) or not (1 <= expected <= MAX_TENSOR_ELEMENTS):
        raise MockError(f"{where}.expected_tokens", "required (a positive integer; the mock places the image by it)")
    return ImageInput(start, expected, data, fmt, width, height, chunk)


def model_input_tokens(f: Fields, key: str = "prompt", max_tokens: int = 1_000_000) -> np.ndarray:
    """Flatten a JSON ``ModelInput`` (encoded_text chunks only) to int64 tokens."""
    tokens, images = model_input_arrays(f, key, max_tokens)
    if images:
        raise MockError(f.name(key), "image chunks are not accepted here")
    return tokens


def model_input_arrays(
    f: Fields, key: str = "prompt", max_tokens: int = 1_000_000
) -> tuple[np.ndarray, tuple[ImageInput, ...]]:
    """Flatten a JSON ``ModelInput`` to int64 tokens (0 at image positions) and its image chunks."""
    mi = f.obj_(key, required=True)
    assert mi is not None
    chunks = mi.obj.get("chunks")
    if not isinstance(chunks, list):
        raise MockError(mi.name("chunks"), "expected a list of chunks")
    toks: list[int] = []
    images: list[ImageInput] = []
    for j, ch in enumerate(chunks):
        where = f"{mi.name('chunks')}[{j}]"
        if not isinstance(ch, dict):
            raise MockError(where, "expected an object")
        ctype = ch.get("type", "encoded_text")
        if ctype == "image":
            img = decode_image_chunk(ch.get("data"), ch.get("format"), ch.get("expected_tokens"), len(toks), where, j)
            if len(toks) + img.length > max_tokens:
                raise MockError(mi.name("chunks"), f"more than {max_tokens} tokens")
            images.append(img)
            toks.extend([0] * img.length)
            continue
        if ctype != "encoded_text":
            raise MockError(f"{where}.type", f"{ctype!r} chunks are not supported by the mock model")
        t = ch.get("tokens")
        if not isinstance(t, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in t):
            raise MockError(f"{where}.tokens", "expected a list of integers")
        toks.extend(t)
        if len(toks) > max_tokens:
            raise MockError(mi.name("chunks"), f"more than {max_tokens} tokens")
    try:
        return np.asarray(toks, dtype=np.int64), tuple(images)
    except OverflowError as exc:
        raise MockError(mi.name("chunks"), "token id does not fit in int64") from exc


# ---------------------------------------------------------------------------------------------- protobuf


@dataclass
class FwdBwdRequest:
    model_id: str
    seq_id: int
    loss_fn: str
    forward_only: bool
    loss_fn_config: dict[str, float]
    data: list[DatumArrays]


_NP: dict[int, np.dtype[Any]] = {pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_INT64: np.dtype("<i8")}


def parse_forward_backward(body: bytes) -> tuple[pb.ForwardBackwardRequest, bytes]:
    """Parse the ``ForwardBackwardRequest`` envelope (enough to know ``model_id`` and ``seq_id``); returns the
    message and a canonical fingerprint. The data is checked by :func:`forward_backward_request`."""
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise MockError("body", f"not a valid tinker_public.ForwardBackwardRequest protobuf ({exc})") from exc
    if not msg.model_id:
        raise MockError("model_id", "required")
    return msg, msg.SerializeToString(deterministic=True)


def forward_backward_request(msg: pb.ForwardBackwardRequest) -> FwdBwdRequest:
    """Check and convert a parsed ``ForwardBackwardRequest`` (tokens, tensors, config)."""
    if not msg.loss_fn:
        raise MockError("loss_fn", "required")
    config: dict[str, float] = {}
    for k, v in msg.loss_fn_config.items():
        config[k] = float(v)
    for k, cv in msg.loss_fn_config_v2.items():
        which = cv.WhichOneof("value") if cv.DESCRIPTOR.oneofs else None
        if which == "text" or (which is None and cv.text):
            raise MockError(f"loss_fn_config.{k}", "text values are not supported by built-in losses")
        config[k] = float(cv.number)
    data: list[DatumArrays] = []
    total = 0
    for i, d in enumerate(msg.data):
        toks: list[np.ndarray] = []
        images: list[ImageInput] = []
        pos = 0
        for j, ch in enumerate(d.model_input):
            kind = ch.WhichOneof("chunk") if ch.DESCRIPTOR.oneofs else None
            where = f"data[{i}].model_input[{j}]"
            if kind == "image":
                im = ch.image
                expected = int(im.expected_tokens) if im.HasField("expected_tokens") else None
                img = decode_image_chunk(bytes(im.data), im.format, expected, pos, where, j)
                if total + pos + img.length > MAX_TENSOR_ELEMENTS:
                    raise MockError("data", "too many tokens in one request")
                images.append(img)
                toks.append(np.zeros(img.length, dtype=np.int64))
                pos += img.length
                continue
            if kind != "encoded_text":
                raise MockError(where, f"{kind or 'empty'} chunks are not supported (text and image only)")
            raw = ch.encoded_text.tokens
            if len(raw) % 4:
                raise MockError(f"{where}.tokens", f"byte length {len(raw)} is not a multiple of 4 (int32)")
            toks.append(np.frombuffer(raw, dtype="<i4").astype(np.int64))
            pos += toks[-1].size
        tokens = np.concatenate(toks) if toks else np.zeros(0, dtype=np.int64)
        total += tokens.size
        if total > MAX_TENSOR_ELEMENTS:
            raise MockError("data", "too many tokens in one request")
        inputs: dict[str, np.ndarray] = {}
        for key, t in d.loss_fn_inputs.items():
            inputs[key] = _tensor(t, f"data[{i}].loss_fn_inputs.{key}")
        mspans = _spans(d.model_input_spans, f"data[{i}].model_input_spans")
        lspans = _spans(d.loss_fn_input_spans, f"data[{i}].loss_fn_input_spans")
        if (mspans is None) != (lspans is None):
            raise MockError(f"data[{i}]", "provenance comes as a pair: set both model_input_spans and loss_fn_input_spans "
                            "(Datum.with_provenance) or neither")
        data.append(DatumArrays(tokens, inputs, tuple(images), mspans, lspans))
    return FwdBwdRequest(msg.model_id, int(msg.seq_id), msg.loss_fn, bool(msg.forward_only), config, data)


def _spans(msgs: Any, where: str) -> tuple[ProvenanceSpan, ...] | None:
    """A datum's provenance runs (proto ``ProvenanceSpan``: ``prompt_tokens`` or ``sampled_tokens``); ``None``
    when there are none (proto3 cannot tell an absent list from an empty one)."""
    if not len(msgs):
        return None
    out: list[ProvenanceSpan] = []
    for k, msg in enumerate(msgs):
        kind = msg.WhichOneof("span")
        w = f"{where}[{k}]"
        if kind is None:
            raise MockError(w, "empty provenance span: set prompt_tokens or sampled_tokens")
        arm = getattr(msg, kind)
        if not arm.sequence_id:
            raise MockError(f"{w}.sequence_id", "required (the sequence_id of a sampled sequence)")
        if arm.offset < 0 or arm.length < 0:
            raise MockError(w, f"offset ({arm.offset}) and length ({arm.length}) must be >= 0")
        out.append(ProvenanceSpan(arm.sequence_id, int(arm.offset), int(arm.length), kind == "sampled_tokens"))
    return tuple(out)


def _tensor(t: pb.Tensor, where: str) -> np.ndarray:
    dt = _NP.get(t.dtype)
    if dt is None:
        name = pb.DType.Name(t.dtype) if t.dtype in pb.DType.values() else t.dtype
        raise MockError(f"{where}.dtype", f"{name} is not allowed (float32 or int64)")
    shape = [int(s) for s in t.shape]
    if any(s < 0 for s in shape) or len(shape) > 4:
        raise MockError(f"{where}.shape", f"invalid shape {shape}")
    n = 1
    for s in shape:
        n *= s
        if n > MAX_TENSOR_ELEMENTS:
            raise MockError(f"{where}.shape", f"{shape} has too many elements")
    enc = t.WhichOneof("encoding")
    if enc == "sparse_csr":
        if len(shape) != 2:
            raise MockError(where, f"sparse CSR tensors must be 2-D, got shape {shape}")
        csr = t.sparse_csr
        if len(csr.values) % dt.itemsize or len(csr.crow_indices) % 8 or len(csr.col_indices) % 8:
            raise MockError(f"{where}.sparse_csr", "byte lengths do not match the dtypes")
        vals = np.frombuffer(csr.values, dtype=dt)
        crow = np.frombuffer(csr.crow_indices, dtype="<i8")
        col = np.frombuffer(csr.col_indices, dtype="<i8")
        rows, cols = shape
        if (
            crow.size != rows + 1
            or col.size != vals.size
            or (crow.size and (crow[0] != 0 or crow[-1] != vals.size))
            or np.any(np.diff(crow) < 0)
            or (col.size and (col.min() < 0 or col.max() >= cols))
        ):
            raise MockError(f"{where}.sparse_csr", f"inconsistent crow/col indices for shape {shape}")
        dense = np.zeros((rows, cols), dtype=dt)
        row_of = np.repeat(np.arange(rows), np.diff(crow))
        dense[row_of, col] = vals
        arr = dense
    else:
        raw = t.dense
        if len(raw) != n * dt.itemsize:
            raise MockError(
                where, f"{len(raw)} bytes of {dt.name} do not match shape {shape} ({n * dt.itemsize} bytes expected)"
            )
        arr = np.frombuffer(raw, dtype=dt).reshape(shape)
    if dt.kind == "f":
        return arr.astype(np.float64)
    return arr.astype(np.int64, copy=True)


def encode_forward_backward_output(res: ForwardResult) -> bytes:
    out = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    rec = out.loss_fn_outputs.add()
    rec.type_tag = "ArrayRecord"
    rec.num_datums = len(res.logprobs)
    bt = rec.fields["logprobs"]
    bt.dtype = pb.DTYPE_FLOAT32
    arrays = [np.ascontiguousarray(lp, dtype="<f4") for lp in res.logprobs]
    trailing = list(arrays[0].shape[1:]) if arrays else []
    if any(list(a.shape[1:]) != trailing for a in arrays):
        # ragged trailing shapes: one record per datum
        del out.loss_fn_outputs[:]
        for a in arrays:
            r = out.loss_fn_outputs.add()
            r.type_tag = "ArrayRecord"
            r.num_datums = 1
            b = r.fields["logprobs"]
            b.dtype = pb.DTYPE_FLOAT32
            b.data = a.tobytes()
            b.offsets = np.asarray([0, a.nbytes], dtype="<i8").tobytes()
            b.trailing_shape.extend(a.shape[1:])
    else:
        bt.data = b"".join(a.tobytes() for a in arrays)
        offs = np.concatenate([[0], np.cumsum([a.nbytes for a in arrays])]).astype("<i8")
        bt.offsets = offs.tobytes()
        bt.trailing_shape.extend(trailing)
    for k, v in res.metrics.items():
        out.metrics[k] = float(v)
    return out.SerializeToString()


def _topk(ids: np.ndarray, lps: np.ndarray) -> pb.TopkLogprobs:
    return pb.TopkLogprobs(
        token_ids=np.ascontiguousarray(ids, dtype="<i4").tobytes(),
        logprobs=np.ascontiguousarray(lps, dtype="<f4").tobytes(),
        k=int(ids.shape[1]),
        length=int(ids.shape[0]),
    )


def encode_sample_response(res: SampleResult) -> bytes:
    out = pb.SampleResponse()
    for s in res.sequences:
        seq = out.sequences.add()
        seq.stop_reason = pb.STOP_REASON_STOP if s.stop_reason == "stop" else pb.STOP_REASON_LENGTH
        seq.tokens = np.asarray(s.tokens, dtype="<i4").tobytes()
        seq.logprobs = np.asarray(s.logprobs, dtype="<f4").tobytes()
        if s.topk_ids is not None and s.topk_logprobs is not None:
            seq.topk_sampled_logprobs.CopyFrom(_topk(s.topk_ids, s.topk_logprobs))
    if res.prompt_logprobs is not None:
        out.prompt_logprobs = np.asarray(res.prompt_logprobs, dtype="<f4").tobytes()
    if res.topk_prompt_ids is not None and res.topk_prompt_logprobs is not None:
        out.topk_prompt_logprobs.CopyFrom(_topk(res.topk_prompt_ids, res.topk_prompt_logprobs))
    return out.SerializeToString()
