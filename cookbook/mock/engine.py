"""The mock server's language model: a small deterministic numpy model with LoRA adapters.

Nothing here knows about HTTP. Inputs are numpy arrays, errors are :mod:`cookbook.errors` exceptions.

Model (per base model name, frozen, seeded from ``sha256(name)``)::

    c_0 = 0,   c_i = γ · (c_{i-1} + E[x_{i-1}])          (decayed sum of earlier tokens, γ = 1/2)
    h_i = E[x_i] + β · c_i                                 (context vector, d dims, β = 1/2)
    z_i = h_i · W  +  s · (h_i · A) · B                    (logits over the vocabulary)
    log p(y | x_{≤i}) = z_i[y] − logsumexp(z_i)

``E`` is ``[V, d]`` and ``W`` is ``[d, V]`` (frozen). ``A`` (``[d, r]``, seeded from ``lora_config.seed``) and
``B`` (``[r, V]``, zero at start, as in LoRA; ``A`` ~ N(0, 1)) are trainable; ``s = alpha / r`` with ``alpha = 32``.
The prediction at position ``i`` depends on the previous token ``x_i`` and, decayed, on every earlier one.

That is the **dense head**. From :data:`~cookbook.mock.classed.CLASSED_VOCAB` tokens on (every real model of the
lineup) the model's softmax is **class-factored** instead (``BaseModelSpec.head``; :mod:`cookbook.mock.classed`):
``W`` and ``B`` get ``K·S + K`` columns and ``log p(t) = log p(class(t)) + log p(t | class(t))``, about
``2·sqrt(V)`` logits per position instead of ``V``. Everything below holds for both heads; the chunking and
arena notes concern the dense one.

Exactness and determinism:

* everything is float64; the wire carries float32 logprobs;
* logits are computed in row blocks of ``rows = BLOCK_ELEMS // V`` positions (27 at V = 151,936) and column
  chunks that fit in cache (:data:`CACHE_ELEMS`), each chunk reduced while it is in cache (online logsumexp);
  block and chunk sizes depend only on V, never on the batch;
* the forward pass keeps each block's ``exp(z - m)`` for backward (up to :data:`STORE_ELEMS` per datum;
  blocks past that are recomputed with the same code); ``z = H·W + (s·H·A)·B`` is two GEMMs, so ``[W; B]``
  is never copied;
* gradients are accumulated **per datum in datum order**, so splitting a batch over several
  ``forward_backward`` calls before one ``optim_step`` gives bit-identical weights;
* the gradient of every built-in loss comes from :func:`cookbook.losses.tinker_loss` (dL / d target logprob),
  chained here through the log-softmax: ``dz = Σ_k g_k · onehot(y_k) − (Σ_k g_k) · softmax(z)``;
* AdamW follows ``torch.optim.AdamW`` exactly (decoupled weight decay, bias correction, global-norm clip);
* sampling uses ``numpy.random.PCG64`` seeded with ``(seed, sample index)``; sampled-token logprobs are taken
  at temperature 1 from the same model code as training, so ``sampler logprob == learner logprob`` for
  identical weights (what KL diagnostics assume);
* sampling is batched: all live sequences of all concurrent requests on one ``(base, adapter)`` advance
  together, one GEMM per step, on a multiple of :data:`ROW_TILE` rows with fixed chunks, so a sample's bits
  depend only on its own request and index (never on its batch, ``num_samples`` or concurrency).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cookbook.errors import DataError, LossInputError
from cookbook.mock import HEADS, classed
from cookbook.mock.errors import InvalidConfig, InvalidData, InvalidLossInput

GAMMA = 0.5
BETA = 0.5
LORA_ALPHA = 32.0
VOCAB_CHUNK = 16384  # max columns per logits chunk
ROW_BLOCK = 512  # max positions per block
BLOCK_ELEMS = 1 << 22  # logits per row block in forward_backward (4M float64 = 32 MiB): rows = BLOCK_ELEMS // V
CACHE_ELEMS = 1 << 15  # logits per column chunk of a row block (32k float64 = 256 KiB, stays in L2)
STORE_ELEMS = 1 << 26  # forward logits kept per datum for backward (64M float64 = 512 MiB); beyond: recomputed
SAMPLE_CHUNK = 2048  # columns per chunk when decoding (fixed: a sample never depends on its batch)
ROW_TILE = 8  # decoding GEMMs run on a multiple of this many rows (padded with zeros)
NOTICE_VOCAB = 32768  # vocabularies from this size on get a one-line speed notice
MAX_ARENAS = 2  # reusable logits buffers kept between requests
FB_PASSES = 1.7  # forward_backward costs about this many forward logits passes (measured at V = 151,936)
EXP_SAFE = 600.0  # |chunk max| up to which exp(z) needs no shift (exp overflows past 709, V·e^600 is finite)
MAX_RANK = 512
EMPTY_TOPK_LOGPROB = -99999.0

_log = logging.getLogger("cookbook.mock")

# keys of loss_fn_inputs that are token ids (int64) rather than float32 values
TOKEN_KEYS = frozenset({"target_tokens"})


# --------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class BaseModelSpec:
    """What the engine needs to know about a base model."""

    name: str
    vocab_size: int
    d_model: int = 32
    eos_token_id: int | None = None
    tokenizer_dir: Path | None = None
    max_context_length: int = 32768
    head: str = "auto"  # "dense" | "classed" | "auto" (classed from classed.CLASSED_VOCAB tokens on)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise InvalidConfig("head", f"must be one of {', '.join(HEADS)}, got {self.head!r}")

    @property
    def layout(self) -> classed.Layout | None:
        """The class-factored head's layout, or ``None`` for the dense softmax (see :mod:`cookbook.mock.classed`)."""
        if self.head == "classed" or (self.head == "auto" and self.vocab_size >= classed.CLASSED_VOCAB):
            return classed.Layout.of(self.vocab_size)
        return None

    @property
    def head_width(self) -> int:
        """Columns of ``W`` and of a LoRA ``B``."""
        lay = self.layout
        return self.vocab_size if lay is None else lay.width

    def fits(self, A: np.ndarray, B: np.ndarray) -> bool:
        """Whether LoRA arrays ``A`` [d, r] and ``B`` [r, head width] (a checkpoint's) belong to this model."""
        return A.ndim == B.ndim == 2 and A.shape[0] == self.d_model and B.shape[1] == self.head_width \
            and A.shape[1] == B.shape[0]

    def seed(self) -> int:
        return int.from_bytes(hashlib.sha256(self.name.encode("utf-8")).digest()[:8], "little")


@dataclass
class BaseWeights:
    spec: BaseModelSpec
    E: np.ndarray  # [V, d]
    W: np.ndarray  # [d, V]


@dataclass
class Adapter:
    """LoRA weights (``A`` [d, r], ``B`` [r, V]); ``rank == 0`` means the bare base model."""

    A: np.ndarray
    B: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.A.shape[1])

    @property
    def scale(self) -> float:
        return LORA_ALPHA / self.rank if self.rank else 0.0

    def copy(self) -> Adapter:
        return Adapter(self.A.copy(), self.B.copy())


@dataclass
class AdamState:
    step: int = 0
    m_A: np.ndarray | None = None
    v_A: np.ndarray | None = None
    m_B: np.ndarray | None = None
    v_B: np.ndarray | None = None


@dataclass
class Trainer:
    """A training model: adapter + accumulated gradients + AdamW state."""

    spec: BaseModelSpec
    adapter: Adapter
    grad_A: np.ndarray
    grad_B: np.ndarray
    adam: AdamState = field(default_factory=AdamState)
    lora_seed: int = 0
    pending_grads: int = 0  # forward_backward calls since the last optim_step

    def zero_grad(self) -> None:
        self.grad_A[...] = 0.0
        self.grad_B[...] = 0.0
        self.pending_grads = 0


@dataclass(frozen=True)
class AdamHyper:
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass(frozen=True)
class ImageInput:
    """An image chunk of a model input: ``length`` positions from ``start`` (their token ids are 0)."""

    start: int
    length: int
    data: bytes
    format: str
    width: int
    height: int
    chunk: int = 0  # index of the chunk in the model input (for error fields)


@dataclass(frozen=True)
class ProvenanceSpan:
    """One run of a datum's provenance (Tinker ``PromptProvenanceSpan`` / ``SampledProvenanceSpan``): the next
    ``length`` positions of the field are positions ``[offset, offset + length)`` of the prompt
    (``sampled=False``) or of the sampled tokens (``sampled=True``) of sequence ``sequence_id``."""

    sequence_id: str
    offset: int
    length: int
    sampled: bool


@dataclass
class DatumArrays:
    """One datum: the flattened model input tokens and the loss inputs as numpy arrays; the provenance
    spans (``None``: none sent) tile ``tokens`` and ``inputs["target_tokens"]``."""

    tokens: np.ndarray  # int64 [N]
    inputs: dict[str, np.ndarray]
    images: tuple[ImageInput, ...] = ()
    model_input_spans: tuple[ProvenanceSpan, ...] | None = None
    loss_fn_input_spans: tuple[ProvenanceSpan, ...] | None = None


@dataclass
class ForwardResult:
    logprobs: list[np.ndarray]  # per datum, shape of target_tokens, float64
    metrics: dict[str, float]


@dataclass
class SampleSpec:
    prompt: np.ndarray  # int64 [P]
    num_samples: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int = 0
    stop_tokens: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    prompt_logprobs_last_n: int | None = None
    scripted: list[np.ndarray] | None = None  # forced completions, one per sample (teacher forcing)
    record_stability_info: bool = False  # keep prompt, tokens and logprobs for stable_reinforce (by sequence id)
    images: tuple[ImageInput, ...] = ()  # image chunks of the prompt


@dataclass
class SampledSequence:
    tokens: np.ndarray  # int64
    logprobs: np.ndarray  # float64
    stop_reason: str  # "stop" | "length"
    topk_ids: np.ndarray | None = None  # [len, k]
    topk_logprobs: np.ndarray | None = None


@dataclass
class SampleResult:
    sequences: list[SampledSequence]
    prompt_logprobs: np.ndarray | None = None  # [P], NaN at 0
    topk_prompt_ids: np.ndarray | None = None  # [P, k]
    topk_prompt_logprobs: np.ndarray | None = None


# --------------------------------------------------------------------------------------------- losses


def _losses() -> Any:
    import cookbook.losses as losses

    return losses


def loss_names() -> tuple[str, ...]:
    return tuple(_losses().LOSS_INPUTS)


# --------------------------------------------------------------------------------------------- engine


class Engine:
    """Stateless maths plus a small cache of frozen base weights (thread-safe)."""

    def __init__(self, max_cached_bases: int = 4) -> None:
        self._bases: OrderedDict[str, BaseWeights] = OrderedDict()
        self._max = max_cached_bases
        self._lock = threading.Lock()
        self._batches: dict[tuple[BaseModelSpec, int], _DecodeBatch] = {}
        self._noticed: set[str] = set()
        self._arenas: list[np.ndarray] = []  # reusable logits buffers (fresh pages cost the kernel ~as much as exp)

    # ---------------------------------------------------------------- scratch memory

    def _take(self, elems: int) -> np.ndarray:
        """A float64 buffer of at least ``elems`` elements, reused across requests (see :meth:`release_buffers`)."""
        with self._lock:
            for i, arr in enumerate(self._arenas):
                if arr.size >= elems:
                    return self._arenas.pop(i)
        return np.empty(elems)

    def _give(self, arr: np.ndarray) -> None:
        with self._lock:
            self._arenas.append(arr)
            self._arenas.sort(key=lambda a: a.size)
            while len(self._arenas) > MAX_ARENAS:
                self._arenas.pop(0)

    def release_buffers(self) -> None:
        """Drop the reusable logits buffers (at most :data:`MAX_ARENAS`, each <= :data:`STORE_ELEMS` floats)."""
        with self._lock:
            self._arenas.clear()

    # ---------------------------------------------------------------- weights

    def base(self, spec: BaseModelSpec) -> BaseWeights:
        with self._lock:
            bw = self._bases.get(spec.name)
            if bw is not None and bw.spec == spec:
                self._bases.move_to_end(spec.name)
                return bw
        rng = np.random.Generator(np.random.PCG64(spec.seed()))
        d, V = spec.d_model, spec.vocab_size
        E = rng.standard_normal((V, d)) / math.sqrt(d)
        W = np.ascontiguousarray(rng.standard_normal((d, spec.head_width)))
        bw = BaseWeights(spec, E, W)
        with self._lock:
            self._bases[spec.name] = bw
            while len(self._bases) > self._max:
                self._bases.popitem(last=False)
            notice = V >= NOTICE_VOCAB and spec.name not in self._noticed
            self._noticed.add(spec.name)
        if notice:
            self._speed_notice(bw)
        return bw

    def _speed_notice(self, bw: BaseWeights) -> None:
        """One log line estimating this machine's seconds per step for a real-size vocabulary.

        Calibrated on a slice of the vocabulary (a warm-up pass, then a timed one) and scaled to V.
        """
        spec = bw.spec
        V = spec.vocab_size
        lay = spec.layout
        if lay is not None:
            _log.warning(
                "mock engine: %s has a %s-token vocabulary; the mock's model factors its softmax into %d classes "
                "of %d tokens (cookbook.mock.classed), about %d logits per position instead of %s",
                spec.name, f"{V:,}", lay.K, lay.S, lay.K + lay.S, f"{V:,}",
            )
            return
        rb = max(1, min(ROW_BLOCK, BLOCK_ELEMS // V))
        C = self._col_chunk(rb, V)
        cols = min(V, 16 * C)
        part = BaseWeights(spec, bw.E, bw.W[:, :cols])
        empty = self.empty_adapter(spec)
        buf = np.empty((rb, cols))
        timings = []
        for rows, chunk in ((rb, C), (ROW_TILE, SAMPLE_CHUNK)):
            H = np.zeros((rows, spec.d_model))
            self._chunk_pass(part, empty, H, None, buf[:rows], chunk, rows == rb)
            t0 = time.perf_counter()
            self._chunk_pass(part, empty, H, None, buf[:rows], chunk, rows == rb)
            timings.append((time.perf_counter() - t0) * V / cols)
        per_token = FB_PASSES * timings[0] / rb
        _log.warning(
            "mock engine: %s has a %s-token vocabulary; numpy float64 here needs about %.1f s per 1,000 "
            "forward_backward tokens and %.2f s per sampling step (one token for up to %d sequences)",
            spec.name, f"{V:,}", per_token * 1000, timings[1], ROW_TILE,
        )

    @staticmethod
    def new_adapter(spec: BaseModelSpec, rank: int, seed: int) -> Adapter:
        if not (1 <= rank <= MAX_RANK):
            raise InvalidConfig("lora_config.rank", f"must be between 1 and {MAX_RANK}, got {rank}")
        rng = np.random.Generator(np.random.PCG64(seed))
        A = rng.standard_normal((spec.d_model, rank))
        B = np.zeros((rank, spec.head_width))
        return Adapter(A, B)

    def new_trainer(self, spec: BaseModelSpec, rank: int, seed: int) -> Trainer:
        adapter = self.new_adapter(spec, rank, seed)
        return Trainer(spec, adapter, np.zeros_like(adapter.A), np.zeros_like(adapter.B), lora_seed=seed)

    @staticmethod
    def empty_adapter(spec: BaseModelSpec) -> Adapter:
        return Adapter(np.zeros((spec.d_model, 0)), np.zeros((0, spec.head_width)))

    # ---------------------------------------------------------------- model pieces

    @staticmethod
    def _hidden(bw: BaseWeights, tokens: np.ndarray, images: Sequence[ImageInput] = ()) -> np.ndarray:
        """Context vectors ``h_i`` for every position (sequential, deterministic)."""
        e = _embed(bw, tokens, images)  # [T, d]
        H = np.empty_like(e)
        c = np.zeros(e.shape[1])
        for i in range(e.shape[0]):
            if i:
                c = GAMMA * (c + e[i - 1])
            H[i] = e[i] + BETA * c
        return H

    @staticmethod
    def _extended(bw: BaseWeights, adapter: Adapter, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Hx = [H | s·H·A]`` and ``Wx = [W ; B]`` so that ``z = Hx · Wx``."""
        if adapter.rank == 0:
            return H, bw.W
        Hx = np.concatenate([H, adapter.scale * (H @ adapter.A)], axis=1)
        Wx = np.concatenate([bw.W, adapter.B], axis=0)
        return Hx, Wx

    @staticmethod
    def _lse(Hx: np.ndarray, Wx: np.ndarray) -> np.ndarray:
        """Row-wise logsumexp of ``Hx · Wx`` computed over vocabulary chunks (online max/sum)."""
        V = Wx.shape[1]
        m = np.full(Hx.shape[0], -np.inf)
        s = np.zeros(Hx.shape[0])
        for c0 in range(0, V, VOCAB_CHUNK):
            z = Hx @ Wx[:, c0 : c0 + VOCAB_CHUNK]
            cm = z.max(axis=1)
            new_m = np.maximum(m, cm)
            s = s * np.exp(m - new_m) + np.exp(z - new_m[:, None]).sum(axis=1)
            m = new_m
        return m + np.log(s)

    # ---------------------------------------------------------------- validation

    @staticmethod
    def validate_batch(
        spec: BaseModelSpec,
        loss_fn: str,
        data: Sequence[DatumArrays],
        loss_fn_config: Mapping[str, float] | None,
    ) -> None:
        """Raise :class:`InvalidData` / :class:`InvalidConfig` / :class:`InvalidLossInput` naming the offending field."""
        losses = _losses()
        if loss_fn not in losses.LOSS_INPUTS:
            raise InvalidConfig("loss_fn", f"unknown loss {loss_fn!r}; the mock supports {sorted(losses.LOSS_INPUTS)}")
        allowed = set(losses.LOSS_CONFIG_KEYS.get(loss_fn, ()))
        for key, value in (loss_fn_config or {}).items():
            if key not in allowed:
                raise InvalidConfig(
                    f"loss_fn_config.{key}", f"unknown key for loss {loss_fn!r} (allowed: {sorted(allowed) or 'none'})"
                )
            if not math.isfinite(value):
                raise InvalidData(f"loss_fn_config.{key}", f"must be finite, got {value}")
        if not data:
            raise InvalidData("data", "forward_backward needs at least one datum")
        required = losses.LOSS_INPUTS[loss_fn]
        V = spec.vocab_size
        for i, d in enumerate(data):
            where = f"data[{i}]"
            n = int(d.tokens.shape[0])
            if n == 0:
                raise InvalidData(f"{where}.model_input", "empty model input")
            if n > spec.max_context_length:
                raise InvalidData(
                    f"{where}.model_input", f"{n} tokens exceeds the context length {spec.max_context_length}"
                )
            _check_token_range(d.tokens, V, f"{where}.model_input")
            check_images(spec, d.images, f"{where}.model_input")
            for key in required:
                if key not in d.inputs:
                    raise InvalidLossInput(
                        f"{where}.loss_fn_inputs",
                        f"missing {key!r} required by loss {loss_fn!r} (required: {list(required)})",
                    )
            tt = d.inputs.get("target_tokens")
            for key, arr in d.inputs.items():
                f = f"{where}.loss_fn_inputs.{key}"
                if arr.ndim == 0 or arr.shape[0] != n:
                    raise InvalidData(
                        f,
                        f"leading dimension {arr.shape[0] if arr.ndim else 'scalar'} does not match "
                        f"the model input length {n} (shape {list(arr.shape)})",
                    )
                if arr.ndim > 2:
                    raise InvalidData(f, f"expected 1-D [N] or 2-D [N, K], got shape {list(arr.shape)}")
                if key in TOKEN_KEYS:
                    if arr.dtype.kind not in "iu":
                        raise InvalidData(f, f"token ids must be int64, got {arr.dtype}")
                    _check_token_range(arr, V, f)
                else:
                    if arr.dtype.kind != "f":
                        raise InvalidData(f, f"expected float32 values, got {arr.dtype}")
                    if not np.all(np.isfinite(arr)):
                        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
                        raise InvalidData(f, f"contains NaN or inf (first at flat index {bad})")
                if tt is not None and key not in TOKEN_KEYS and arr.shape != tt.shape:
                    raise InvalidData(f, f"shape {list(arr.shape)} does not match target_tokens {list(tt.shape)}")
            if tt is not None:
                try:  # the loss's own input checks (unknown keys, shapes, NaN), on dummy logprobs
                    losses.tinker_loss(loss_fn, np.zeros(tt.shape), d.inputs, loss_fn_config)
                except LossInputError as exc:
                    raise InvalidLossInput(where, str(exc)) from exc

    # ---------------------------------------------------------------- logits over column chunks

    @staticmethod
    def _col_chunk(rows: int, V: int) -> int:
        """Columns per chunk for a block of ``rows`` positions: about :data:`CACHE_ELEMS` logits stay in cache."""
        return max(1, min(VOCAB_CHUNK, V, CACHE_ELEMS // max(rows, 1)))

    @staticmethod
    def _chunk_pass(
        bw: BaseWeights,
        adapter: Adapter,
        H: np.ndarray,
        HA: np.ndarray | None,
        out: np.ndarray,
        C: int,
        exp_in_place: bool,
        gather: _Gather | None = None,
    ) -> _Block:
        """Logits ``z = H·W + (s·H·A)·B`` of a row block, one column chunk of ``C`` at a time.

        Each chunk is computed into ``out[:, c0:c1]`` and reduced while it is in cache: ``e = exp(z - m_c)``
        and ``s_c = Σ e`` with the shift ``m_c = 0`` when every row max of the chunk lies in
        ``[-EXP_SAFE, EXP_SAFE]`` (no overflow or loss of precision is possible, and a pass is saved), else the
        row max. With ``exp_in_place`` ``out`` keeps ``e`` (what backward needs), otherwise it keeps ``z``.
        ``lse = M + log Σ_c s_c·exp(m_c - M)`` with ``M = max_c m_c``. ``gather`` collects the logits at
        target columns before the exponential. The chunking depends only on ``C`` and ``V``, so equal inputs give
        bit-identical results whatever else is being computed.
        """
        W, B = bw.W, adapter.B
        rows, V = out.shape
        nch = -(-V // C)
        mc = np.empty((rows, nch))
        sc = np.empty((rows, nch))
        tmp = np.empty((rows, min(C, V))) if HA is not None else None
        scratch = None if exp_in_place else np.empty((rows, min(C, V)))
        zt = np.empty(gather.rows.shape[0]) if gather is not None else None
        for j in range(nch):
            c0 = j * C
            c1 = min(V, c0 + C)
            zc = out[:, c0:c1]
            np.matmul(H, W[:, c0:c1], out=zc)
            if HA is not None and tmp is not None:
                t = tmp[:, : c1 - c0]
                np.matmul(HA, B[:, c0:c1], out=t)
                zc += t
            if gather is not None and zt is not None:
                a, b = gather.bounds[j], gather.bounds[j + 1]
                if b > a:
                    zt[a:b] = zc[gather.rows[a:b], gather.cols[a:b] - c0]
            m = zc.max(axis=1)
            e = zc if exp_in_place else scratch[:, : c1 - c0]  # type: ignore[index]
            if -EXP_SAFE <= m.min() and m.max() <= EXP_SAFE:
                mc[:, j] = 0.0
                np.exp(zc, out=e)
            else:
                mc[:, j] = m
                np.subtract(zc, m[:, None], out=e)
                np.exp(e, out=e)
            sc[:, j] = e.sum(axis=1)
        top = mc.max(axis=1)
        scale = np.exp(mc - top[:, None])
        mass = sc * scale
        total = mass.sum(axis=1)
        lse = top + np.log(total)
        return _Block(mc, scale, mass, total, lse, zt)

    # ---------------------------------------------------------------- forward / backward

    def forward_backward(
        self,
        trainer: Trainer,
        loss_fn: str,
        data: Sequence[DatumArrays],
        loss_fn_config: Mapping[str, float] | None,
        forward_only: bool,
    ) -> ForwardResult:
        """Run the loss per datum, accumulate gradients (unless ``forward_only``), return target logprobs.

        The forward pass keeps each row block's ``exp(z - m_c)`` (up to :data:`STORE_ELEMS` logits per datum)
        so that backward does not recompute it; blocks beyond that budget are recomputed bit-identically.
        """
        self.validate_batch(trainer.spec, loss_fn, data, loss_fn_config)
        bw = self.base(trainer.spec)
        adapter = trainer.adapter
        out: list[np.ndarray] = []
        metric_acc: dict[str, list[float]] = {}
        cfg = dict(loss_fn_config) if loss_fn_config else None
        lay = trainer.spec.layout
        backward = not forward_only and adapter.rank > 0
        arena: np.ndarray | None = None
        datum: Callable[[int, DatumArrays], tuple[np.ndarray, Any]]
        if lay is not None:  # class-factored head: no logits arena
            def datum(i: int, d: DatumArrays) -> tuple[np.ndarray, Any]:
                return self._datum_classed(trainer, bw, lay, loss_fn, cfg, d, i, backward)
        else:
            V = trainer.spec.vocab_size
            rb = max(1, min(ROW_BLOCK, BLOCK_ELEMS // V))
            C = self._col_chunk(rb, V)
            longest = max(int(d.tokens.shape[0]) for d in data)
            stored_rows = min(longest, (STORE_ELEMS // V) // rb * rb) if backward else 0
            spill = rb if longest > stored_rows else 0  # one block of room for blocks past the budget
            arena = buf = self._take((stored_rows + spill) * V)

            def datum(i: int, d: DatumArrays) -> tuple[np.ndarray, Any]:
                return self._datum(trainer, bw, loss_fn, cfg, d, i, rb, C, buf, stored_rows, backward)
        try:
            # gradients are accumulated per datum in datum order (bit-identical under any split of the batch)
            for i, d in enumerate(data):
                lp, res = datum(i, d)
                for k, v in res.metrics.items():
                    metric_acc.setdefault(k, []).append(float(v))
                out.append(lp)
        finally:
            if arena is not None:
                self._give(arena)
        if not forward_only:
            trainer.pending_grads += 1
        return ForwardResult(out, _reduce_metrics(metric_acc))

    def _datum(
        self,
        trainer: Trainer,
        bw: BaseWeights,
        loss_fn: str,
        cfg: dict[str, float] | None,
        d: DatumArrays,
        i: int,
        rb: int,
        C: int,
        arena: np.ndarray,
        stored_rows: int,
        backward: bool,
    ) -> tuple[np.ndarray, Any]:
        """One datum: chunked forward (rows < ``stored_rows`` keep ``exp(z - m_c)`` in ``arena``), loss, backward."""
        adapter = trainer.adapter
        V = bw.spec.vocab_size
        targets = d.inputs["target_tokens"].astype(np.int64, copy=False)
        H = self._hidden(bw, d.tokens, d.images)
        HA = adapter.scale * (H @ adapter.A) if adapter.rank else None
        T = H.shape[0]
        lp = np.empty(targets.shape)
        blocks: list[tuple[_Block, _Gather]] = []
        for r0 in range(0, T, rb):
            r1 = min(T, r0 + rb)
            gather = _Gather.of(targets[r0:r1], C, V)
            base = r0 * V if r1 <= stored_rows else stored_rows * V  # past the budget: the spill block
            buf = arena[base : base + (r1 - r0) * V].reshape(r1 - r0, V)
            blk = self._chunk_pass(bw, adapter, H[r0:r1], None if HA is None else HA[r0:r1], buf, C, True, gather)
            lse_t = blk.lse[:, None] if targets.ndim == 2 else blk.lse
            lp[r0:r1] = gather.scatter(blk.zt, targets[r0:r1].shape) - lse_t  # type: ignore[arg-type]
            blocks.append((blk, gather))
        try:
            res = _losses().tinker_loss(loss_fn, lp, d.inputs, cfg)
        except LossInputError as exc:
            raise InvalidLossInput(f"data[{i}]", str(exc)) from exc
        if not backward or HA is None:
            return lp, res
        g = np.asarray(res.grad, dtype=np.float64).reshape(targets.shape)
        if not np.all(np.isfinite(g)):
            raise InvalidData(f"data[{i}]", "the loss gradient is not finite (check advantages/logprobs)")
        tmp = self._take(adapter.rank * V)
        try:
            dB = tmp[: adapter.rank * V].reshape(adapter.rank, V)
            if T <= stored_rows:  # every block kept: one pair of GEMMs for the whole datum
                for bi, (blk, gather) in enumerate(blocks):
                    r0, r1 = bi * rb, min(T, bi * rb + rb)
                    self._softmax_grad(arena[r0 * V : r1 * V].reshape(r1 - r0, V), blk, gather, g[r0:r1], C)
                dz = arena[: T * V].reshape(T, V)
                self._accumulate(trainer, H, HA, dz, dB)
            else:
                for bi, (blk, gather) in enumerate(blocks):
                    r0, r1 = bi * rb, min(T, bi * rb + rb)
                    if r1 > stored_rows:  # over the memory budget: recompute this block (same code, same bits)
                        e = arena[stored_rows * V : (stored_rows + r1 - r0) * V].reshape(r1 - r0, V)
                        self._chunk_pass(bw, adapter, H[r0:r1], HA[r0:r1], e, C, True, None)
                    else:
                        e = arena[r0 * V : r1 * V].reshape(r1 - r0, V)
                    self._softmax_grad(e, blk, gather, g[r0:r1], C)
                    self._accumulate(trainer, H[r0:r1], HA[r0:r1], e, dB)
        finally:
            self._give(tmp)
        return lp, res

    def _datum_classed(
        self,
        trainer: Trainer,
        bw: BaseWeights,
        lay: classed.Layout,
        loss_fn: str,
        cfg: dict[str, float] | None,
        d: DatumArrays,
        i: int,
        backward: bool,
    ) -> tuple[np.ndarray, Any]:
        """One datum through the class-factored head (:mod:`cookbook.mock.classed`): forward, loss, backward."""
        adapter = trainer.adapter
        targets = d.inputs["target_tokens"].astype(np.int64, copy=False)
        H = self._hidden(bw, d.tokens, d.images)
        HA = adapter.scale * (H @ adapter.A) if adapter.rank else None
        fwd = classed.forward(lay, bw.W, adapter.B, H, HA, targets)
        try:
            res = _losses().tinker_loss(loss_fn, fwd.lp, d.inputs, cfg)
        except LossInputError as exc:
            raise InvalidLossInput(f"data[{i}]", str(exc)) from exc
        if not backward or HA is None:
            return fwd.lp, res
        g = np.asarray(res.grad, dtype=np.float64).reshape(targets.shape)  # backward implies rank > 0
        if not np.all(np.isfinite(g)):
            raise InvalidData(f"data[{i}]", "the loss gradient is not finite (check advantages/logprobs)")
        classed.backward(lay, fwd, targets, g, H, HA, adapter.B, adapter.scale, trainer.grad_A, trainer.grad_B)
        return fwd.lp, res

    @staticmethod
    def _softmax_grad(e: np.ndarray, blk: _Block, gather: _Gather, g: np.ndarray, C: int) -> None:
        """Turn a block's ``e = exp(z - m_c)`` into ``dz = Σ_k g_k·onehot(y_k) − (Σ_k g_k)·softmax(z)`` in place
        (``softmax = e · exp(m_c - M) / S`` per chunk), one cache-sized chunk at a time."""
        V = e.shape[1]
        G = g.sum(axis=1) if g.ndim == 2 else g
        coef = -(G / blk.total)[:, None] * blk.scale  # [rows, chunks]
        gs = gather.take(g)
        for j in range(coef.shape[1]):
            c0 = j * C
            c1 = min(V, c0 + C)
            ec = e[:, c0:c1]
            ec *= coef[:, j][:, None]
            a, b = gather.bounds[j], gather.bounds[j + 1]
            if b > a:
                np.add.at(ec, (gather.rows[a:b], gather.cols[a:b] - c0), gs[a:b])

    @staticmethod
    def _accumulate(trainer: Trainer, H: np.ndarray, HA: np.ndarray, dz: np.ndarray, dB: np.ndarray) -> None:
        """``grad_B += (s·H·A)ᵀ dz`` and ``grad_A += Hᵀ (s · dz Bᵀ)`` (``dB`` is scratch of ``grad_B``'s shape)."""
        adapter = trainer.adapter
        np.matmul(HA.T, dz, out=dB)
        trainer.grad_B += dB
        trainer.grad_A += H.T @ (adapter.scale * (dz @ adapter.B.T))

    # ---------------------------------------------------------------- optimiser

    @staticmethod
    def optim_step(trainer: Trainer, hp: AdamHyper) -> dict[str, float]:
        """One ``torch.optim.AdamW`` step on the accumulated (summed) gradients, then zero them."""
        for name in ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm"):
            v = getattr(hp, name)
            if not math.isfinite(v):
                raise InvalidData(f"adam_params.{name}", f"must be finite, got {v}")
        if hp.learning_rate < 0:
            raise InvalidData("adam_params.learning_rate", f"must be >= 0, got {hp.learning_rate}")
        if not (0.0 <= hp.beta1 < 1.0) or not (0.0 <= hp.beta2 < 1.0):
            raise InvalidData("adam_params.beta1/beta2", f"must be in [0, 1), got {hp.beta1}, {hp.beta2}")
        if hp.eps < 0 or hp.weight_decay < 0 or hp.grad_clip_norm < 0:
            raise InvalidData("adam_params.eps/weight_decay/grad_clip_norm", "must be >= 0")
        a = trainer.adapter
        gA, gB = trainer.grad_A, trainer.grad_B
        norm = math.sqrt(float(np.sum(gA * gA)) + float(np.sum(gB * gB)))
        if hp.grad_clip_norm > 0:
            coef = hp.grad_clip_norm / (norm + 1e-6)
            if coef < 1.0:
                gA = gA * coef
                gB = gB * coef
        st = trainer.adam
        if st.m_A is None or st.v_A is None or st.m_B is None or st.v_B is None:
            st.m_A, st.v_A = np.zeros_like(a.A), np.zeros_like(a.A)
            st.m_B, st.v_B = np.zeros_like(a.B), np.zeros_like(a.B)
        st.step += 1
        bc1 = 1.0 - hp.beta1**st.step
        bc2 = 1.0 - hp.beta2**st.step
        step_size = hp.learning_rate / bc1
        bc2_sqrt = math.sqrt(bc2)
        for p, g, m, v in ((a.A, gA, st.m_A, st.v_A), (a.B, gB, st.m_B, st.v_B)):
            p *= 1.0 - hp.learning_rate * hp.weight_decay
            m *= hp.beta1
            m += (1.0 - hp.beta1) * g
            v *= hp.beta2
            v += (1.0 - hp.beta2) * (g * g)
            denom = np.sqrt(v) / bc2_sqrt + hp.eps
            p -= step_size * (m / denom)
        trainer.zero_grad()
        return {"grad_norm": norm, "learning_rate": hp.learning_rate, "step": float(st.step)}

    # ---------------------------------------------------------------- sampling

    def sample(
        self,
        spec: BaseModelSpec,
        adapter: Adapter,
        req: SampleSpec,
        decode: Callable[[Sequence[int]], str] | None = None,
    ) -> SampleResult:
        """Sample ``req.num_samples`` completions (thread-safe; blocks until they are done).

        Concurrent calls on the same ``(spec, adapter)`` join one decoding batch: every step computes the
        next-token logits of all their live sequences with one GEMM (:meth:`_decode_step`). A sequence's
        result depends only on its own request and sample index, never on what it was batched with.
        """
        V = spec.vocab_size
        _check_token_range(req.prompt, V, "prompt")
        check_images(spec, req.images, "prompt")
        if req.prompt.shape[0] == 0:
            raise InvalidData("prompt", "empty prompt")
        if req.stop_strings and decode is None:
            raise InvalidConfig(
                "sampling_params.stop",
                f"base model {spec.name!r} has no tokenizer, so stop strings cannot be matched; pass stop token ids",
            )
        bw, result, job = self._prepare(spec, adapter, req, decode)
        if any(not s.done for s in job.seqs):
            self._run_batched(spec, adapter, bw, job)
        if job.error is not None:
            raise job.error
        result.sequences = [s.finish() for s in job.seqs]
        return result

    def _prepare(
        self, spec: BaseModelSpec, adapter: Adapter, req: SampleSpec, decode: Callable[[Sequence[int]], str] | None
    ) -> tuple[BaseWeights, SampleResult, _Job]:
        """Prompt logprobs, the state after the prompt, and one sequence per sample (RNG ``(seed, index)``)."""
        bw = self.base(spec)
        prompt = req.prompt
        P = prompt.shape[0]
        result = SampleResult(sequences=[])
        if req.prompt_logprobs or req.topk_prompt_logprobs > 0:
            self._score_prompt(bw, adapter, req, result)
        e = _embed(bw, prompt, req.images)
        c = np.zeros(spec.d_model)
        for i in range(1, P):
            c = GAMMA * (c + e[i - 1])
        h_last = e[P - 1] + BETA * c
        job = _Job(req, decode, [])
        for si in range(req.num_samples):
            rng = np.random.Generator(np.random.PCG64([req.seed & 0xFFFFFFFFFFFFFFFF, si]))
            forced = req.scripted[si] if req.scripted is not None and si < len(req.scripted) else None
            limit = req.max_tokens if forced is None else min(req.max_tokens, len(forced))
            job.seqs.append(_Seq(job, rng, c.copy(), h_last.copy(), e[P - 1].copy(), forced, limit))
        return bw, result, job

    def _score_prompt(self, bw: BaseWeights, adapter: Adapter, req: SampleSpec, result: SampleResult) -> None:
        """Prompt logprobs (and top-k) with the training forward's chunked logits."""
        prompt = req.prompt
        P = prompt.shape[0]
        V = bw.spec.vocab_size
        plp = np.full(P, np.nan)
        k = req.topk_prompt_logprobs
        tids = np.zeros((P, k), dtype=np.int64) if k > 0 else None
        tlps = np.full((P, k), EMPTY_TOPK_LOGPROB) if k > 0 else None
        lay = bw.spec.layout
        H = self._hidden(bw, prompt[:-1], req.images) if P > 1 else None
        HA = adapter.scale * (H @ adapter.A) if H is not None and adapter.rank else None
        if H is not None and lay is not None:
            plp[1:] = classed.forward(lay, bw.W, adapter.B, H, HA, prompt[1:]).lp
            if k > 0 and tids is not None and tlps is not None:
                for j in range(P - 1):
                    full = classed.full_logprobs(lay, bw.W, adapter.B, H[j], None if HA is None else HA[j])
                    tids[j + 1], tlps[j + 1] = _topk(full, 0.0, k)
        elif H is not None:
            rb = max(1, min(ROW_BLOCK, BLOCK_ELEMS // V))
            C = self._col_chunk(rb, V)
            for r0 in range(0, P - 1, rb):
                r1 = min(P - 1, r0 + rb)
                tgt = prompt[r0 + 1 : r1 + 1]
                gather = _Gather.of(tgt, C, V)
                z = np.empty((r1 - r0, V))
                blk = self._chunk_pass(bw, adapter, H[r0:r1], None if HA is None else HA[r0:r1], z, C, False, gather)
                plp[r0 + 1 : r1 + 1] = gather.scatter(blk.zt, tgt.shape) - blk.lse  # type: ignore[arg-type]
                if k > 0 and tids is not None and tlps is not None:
                    for j in range(r1 - r0):
                        tids[r0 + 1 + j], tlps[r0 + 1 + j] = _topk(z[j], float(blk.lse[j]), k)
        if req.prompt_logprobs_last_n is not None:
            cut = max(0, P - req.prompt_logprobs_last_n)
            plp[:cut] = np.nan
            if tids is not None and tlps is not None:
                tids[:cut] = 0
                tlps[:cut] = EMPTY_TOPK_LOGPROB
        result.prompt_logprobs = plp if req.prompt_logprobs else None
        result.topk_prompt_ids, result.topk_prompt_logprobs = tids, tlps

    def _run_batched(self, spec: BaseModelSpec, adapter: Adapter, bw: BaseWeights, job: _Job) -> None:
        """Join the decoding batch of ``(spec, adapter)``; drive it while no other thread does."""
        key = (spec, id(adapter))
        with self._lock:
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = _DecodeBatch(spec, adapter, bw)
            batch.users += 1
        cond = batch.cond
        try:
            with cond:
                batch.pending.append(job)
                while not job.done:
                    if batch.driver is None:
                        batch.driver = job
                        break
                    cond.wait()
            if job.done:
                return
            try:
                while True:
                    with cond:
                        batch.adopt()
                        if job.done:
                            break
                    self._decode_step(batch)
                    with cond:
                        if any(j.done for j in batch.jobs):
                            batch.jobs = [j for j in batch.jobs if not j.done]
                            cond.notify_all()
            except BaseException as exc:  # a failed step fails every request in it, never hangs one
                with cond:
                    for j in batch.jobs:
                        if not j.done:
                            j.error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
                            j.done = True
                    batch.jobs = []
                    batch.active = []
                raise
            finally:
                with cond:
                    batch.driver = None
                    cond.notify_all()  # another member takes over driving if sequences remain
        finally:
            with self._lock:
                batch.users -= 1
                last = batch.users == 0 and self._batches.get(key) is batch
                if last:
                    del self._batches[key]
            if last:
                batch.close(self)

    def _decode_step(self, batch: _DecodeBatch) -> None:
        """One token for every live sequence of the batch: one GEMM over the vocabulary for all of them."""
        seqs = batch.active
        bw, adapter = batch.bw, batch.adapter
        V = bw.spec.vocab_size
        n = len(seqs)
        n_pad = -(-n // ROW_TILE) * ROW_TILE  # fixed row tiles: each row's bits do not depend on the batch
        H = np.zeros((n_pad, bw.spec.d_model))
        for i, s in enumerate(seqs):
            H[i] = s.h
        HA = adapter.scale * (H @ adapter.A) if adapter.rank else None
        lay = bw.spec.layout
        step: Callable[[int, _Seq], None]
        if lay is not None:
            zc = classed.class_logits(lay, bw.W, adapter.B, H[:n], None if HA is None else HA[:n])

            def step(i: int, s: _Seq) -> None:
                s.advance_classed(bw, lay, adapter.B, H[i], None if HA is None else HA[i], zc[i])
        else:
            z = batch.buffer(self, n_pad, V)
            blk = self._chunk_pass(bw, adapter, H, HA, z, SAMPLE_CHUNK, False, None)

            def step(i: int, s: _Seq) -> None:
                s.advance(bw, z[i], blk, i, SAMPLE_CHUNK)
        for i, s in enumerate(seqs):
            try:
                step(i, s)
            except Exception as exc:  # this request's own error (e.g. a scripted token out of range)
                s.job.error = exc
                s.job.done = True
        batch.active = [s for s in seqs if not s.done and not s.job.done]
        for s in seqs:
            job = s.job
            if not job.done and all(x.done for x in job.seqs):
                job.done = True



# --------------------------------------------------------------------------------------------- batching


@dataclass
class _Block:
    """Per-row reductions of one chunked logits pass (:meth:`Engine._chunk_pass`)."""

    mc: np.ndarray  # [rows, chunks] the shift m_c of each chunk's exponential (0 or the chunk's row max)
    scale: np.ndarray  # [rows, chunks] exp(m_c - M)
    mass: np.ndarray  # [rows, chunks] Σ_chunk exp(z - M)
    total: np.ndarray  # [rows] Σ exp(z - M)
    lse: np.ndarray  # [rows]
    zt: np.ndarray | None  # logits at the gathered targets, in gather order


@dataclass
class _Gather:
    """Target positions of a row block sorted by column, with the chunk boundaries in that order."""

    rows: np.ndarray
    cols: np.ndarray
    order: np.ndarray  # flat target index of each sorted entry
    bounds: np.ndarray  # [chunks + 1]

    @staticmethod
    def of(targets: np.ndarray, C: int, V: int) -> _Gather:
        flat = targets.reshape(-1).astype(np.int64, copy=False)
        per_row = targets.shape[1] if targets.ndim == 2 else 1
        order = np.argsort(flat, kind="stable")
        cols = flat[order]
        rows = order // per_row
        starts = np.arange(0, -(-V // C) + 1) * C
        bounds = np.searchsorted(cols, starts, side="left")
        return _Gather(rows, cols, order, bounds)

    def scatter(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(self.order.shape[0])
        out[self.order] = values
        return out.reshape(shape)

    def take(self, arr: np.ndarray) -> np.ndarray:
        return arr.reshape(-1)[self.order]


@dataclass
class _Job:
    """One sample request inside a decoding batch."""

    req: SampleSpec
    decode: Callable[[Sequence[int]], str] | None
    seqs: list[_Seq]
    done: bool = False
    error: Exception | None = None


@dataclass
class _Seq:
    """One sampled sequence: its RNG, model state and output so far."""

    job: _Job
    rng: np.random.Generator
    c: np.ndarray  # context for the next position
    h: np.ndarray  # hidden vector of the position being predicted from
    prompt_last: np.ndarray  # embedding of the prompt's last position (an image position's own vector)
    forced: np.ndarray | None
    limit: int
    toks: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    tk_ids: list[np.ndarray] = field(default_factory=list)
    tk_lps: list[np.ndarray] = field(default_factory=list)
    stop_reason: str = "length"
    text_start: int = 0
    done: bool = False

    def __post_init__(self) -> None:
        self.done = self.limit <= 0

    def advance(self, bw: BaseWeights, z: np.ndarray, blk: _Block, i: int, C: int) -> None:
        """Choose this step's token from the row's logits ``z``; prepare ``h`` for the next step."""
        req = self.job.req
        lse = float(blk.lse[i])
        step = len(self.toks)
        if self.forced is not None:
            tok = int(self.forced[step])
            _check_token_range(np.asarray([tok]), z.shape[0], "scripted completion")
        elif req.temperature == 1.0 and req.top_k <= 0 and req.top_p >= 1.0:
            tok = _draw_chunked(z, blk, i, C, self.rng)
        else:
            tok = _draw(z, req.temperature, req.top_k, req.top_p, self.rng)
        k = req.topk_sample_logprobs
        self._accept(bw, tok, float(z[tok] - lse), _topk(z, lse, k) if k > 0 else None)

    def advance_classed(
        self, bw: BaseWeights, lay: classed.Layout, B: np.ndarray, h: np.ndarray, ha: np.ndarray | None,
        zc: np.ndarray,
    ) -> None:
        """:meth:`advance` for the class-factored head, from this row's class logits ``zc``."""
        req = self.job.req
        step = len(self.toks)
        k = req.topk_sample_logprobs
        plain = req.temperature == 1.0 and req.top_k <= 0 and req.top_p >= 1.0
        # the full V-token distribution only for top-k logprobs or a draw other than plain temperature 1
        needs_full = k > 0 or (self.forced is None and not plain)
        full = classed.full_logprobs(lay, bw.W, B, h, ha) if needs_full else None
        if self.forced is not None:
            tok = int(self.forced[step])
            _check_token_range(np.asarray([tok]), lay.V, "scripted completion")
            lp = classed.token_logprob(lay, bw.W, B, h, ha, zc, tok)
        elif full is None or plain:  # the same draw whether or not top-k logprobs are asked for
            tok, lp = classed.draw(lay, bw.W, B, h, ha, zc, self.rng)
        else:
            tok = _draw(full, req.temperature, req.top_k, req.top_p, self.rng)
            lp = float(full[tok])
        self._accept(bw, tok, lp, _topk(full, 0.0, k) if full is not None and k > 0 else None)

    def _accept(self, bw: BaseWeights, tok: int, lp: float, topk: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Record the step's token and logprob (and top-k); stop checks; prepare ``h`` for the next step."""
        req = self.job.req
        step = len(self.toks)
        self.toks.append(tok)
        self.lps.append(lp)
        if topk is not None:
            self.tk_ids.append(topk[0])
            self.tk_lps.append(topk[1])
        if tok in req.stop_tokens:
            self.stop_reason = "stop"
            self.done = True
        elif req.stop_strings and self.job.decode is not None:
            text = self.job.decode(self.toks)
            if any(s in text[self.text_start :] for s in req.stop_strings):
                self.stop_reason = "stop"
                self.done = True
            self.text_start = max(0, len(text) - max(len(s) for s in req.stop_strings) - 8)
        if len(self.toks) >= self.limit:
            self.done = True
        if not self.done:
            prev = self.prompt_last if step == 0 else bw.E[self.toks[-2]]
            self.c = GAMMA * (self.c + prev)
            self.h = bw.E[tok] + BETA * self.c

    def finish(self) -> SampledSequence:
        req = self.job.req
        reason = self.stop_reason
        if self.forced is not None and reason == "length" and len(self.toks) == len(self.forced) < req.max_tokens:
            reason = "stop"
        seq = SampledSequence(np.asarray(self.toks, dtype=np.int64), np.asarray(self.lps, dtype=np.float64), reason)
        k = req.topk_sample_logprobs
        if k > 0:
            seq.topk_ids = np.asarray(self.tk_ids, dtype=np.int64).reshape(len(self.toks), k)
            seq.topk_logprobs = np.asarray(self.tk_lps).reshape(len(self.toks), k)
        return seq


class _DecodeBatch:
    """The live sequences of every concurrent request on one ``(spec, adapter)``; one thread drives it."""

    def __init__(self, spec: BaseModelSpec, adapter: Adapter, bw: BaseWeights) -> None:
        self.spec, self.adapter, self.bw = spec, adapter, bw
        self.cond = threading.Condition()
        self.pending: list[_Job] = []
        self.jobs: list[_Job] = []
        self.active: list[_Seq] = []
        self.driver: _Job | None = None
        self.users = 0
        self._buf: np.ndarray | None = None

    def adopt(self) -> None:
        """Move requests that arrived since the last step into the batch (called under ``cond``)."""
        for job in self.pending:
            if not job.done and all(job is not j for j in self.jobs):
                self.jobs.append(job)
                self.active.extend(s for s in job.seqs if not s.done)
        self.pending.clear()

    def buffer(self, engine: Engine, rows: int, V: int) -> np.ndarray:
        """``[rows, V]`` logits for this step, in an engine buffer kept while the batch lives."""
        if self._buf is None or self._buf.size < rows * V:
            if self._buf is not None:
                engine._give(self._buf)
            self._buf = engine._take(rows * V)
        return self._buf[: rows * V].reshape(rows, V)

    def close(self, engine: Engine) -> None:
        if self._buf is not None:
            engine._give(self._buf)
            self._buf = None


def _draw_chunked(z: np.ndarray, blk: _Block, i: int, C: int, rng: np.random.Generator) -> int:
    """Inverse-CDF draw from ``softmax(z)`` using the pass's per-chunk masses: find the chunk, then the token."""
    V = z.shape[0]
    cum = np.cumsum(blk.mass[i])
    u = rng.random() * cum[-1]
    j = int(min(np.searchsorted(cum, u, side="right"), cum.shape[0] - 1))
    rem = u - (cum[j - 1] if j else 0.0)
    c0, c1 = j * C, min(V, j * C + C)
    local = np.cumsum(np.exp(z[c0:c1] - blk.mc[i, j])) * blk.scale[i, j]
    return c0 + int(min(np.searchsorted(local, rem, side="right"), c1 - c0 - 1))


def _topk(z: np.ndarray, lse: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely tokens of logits ``z`` (ties by token id) and their logprobs, padded."""
    kk = min(k, z.shape[0])
    idx = np.argpartition(-z, kk - 1)[:kk]
    idx = idx[np.lexsort((idx, -z[idx]))]
    ids = np.zeros(k, dtype=np.int64)
    vals = np.full(k, EMPTY_TOPK_LOGPROB)
    ids[:kk] = idx
    vals[:kk] = z[idx] - lse
    return ids, vals


# --------------------------------------------------------------------------------------------- helpers


def _draw(z: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    """Draw one token from logits ``z`` with temperature, top-k and top-p (ties broken by token id)."""
    if temperature <= 0.0:
        return int(np.argmax(z))
    zt = z / temperature
    V = zt.shape[0]
    if 0 < top_k < V:
        cand = np.argpartition(-zt, top_k - 1)[:top_k]
        cand = cand[np.lexsort((cand, -zt[cand]))]
    elif top_p < 1.0:
        cand = np.lexsort((np.arange(V), -zt))
    else:
        cand = None
    if cand is None:
        p = np.exp(zt - zt.max())
        p /= p.sum()
        cdf = np.cumsum(p)
        u = rng.random() * cdf[-1]
        return int(min(np.searchsorted(cdf, u, side="right"), V - 1))
    zc = zt[cand]
    p = np.exp(zc - zc.max())
    p /= p.sum()
    if top_p < 1.0:
        cdf = np.cumsum(p)
        keep = int(np.searchsorted(cdf, top_p, side="left")) + 1
        cand, p = cand[:keep], p[:keep]
        p = p / p.sum()
    cdf = np.cumsum(p)
    u = rng.random() * cdf[-1]
    return int(cand[min(int(np.searchsorted(cdf, u, side="right")), len(cand) - 1)])


def _check_token_range(arr: np.ndarray, vocab: int, where: str) -> None:
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab:
        bad = lo if lo < 0 else hi
        raise InvalidData(where, f"token id {bad} is outside the vocabulary [0, {vocab})")


def _reduce_metrics(acc: Mapping[str, list[float]]) -> dict[str, float]:
    """Combine per-datum metrics by their reduction suffix (``name:sum|mean|min|max``)."""
    out: dict[str, float] = {}
    for key, vals in acc.items():
        if key.count(":") != 1:
            continue
        red = key.split(":")[1]
        if red == "sum":
            out[key] = float(math.fsum(vals))
        elif red == "mean":
            out[key] = float(math.fsum(vals) / len(vals))
        elif red == "min":
            out[key] = float(min(vals))
        elif red == "max":
            out[key] = float(max(vals))
    if "loss:sum" not in out:
        out["loss:sum"] = 0.0
    return out


def adapter_arrays(trainer: Trainer, with_optimizer: bool) -> dict[str, np.ndarray]:
    """Arrays to persist for a checkpoint."""
    arrs = {"A": trainer.adapter.A, "B": trainer.adapter.B}
    st = trainer.adam
    if with_optimizer and st.m_A is not None:
        assert st.v_A is not None and st.m_B is not None and st.v_B is not None
        arrs.update(m_A=st.m_A, v_A=st.v_A, m_B=st.m_B, v_B=st.v_B, adam_step=np.asarray(st.step))
    return arrs


def trainer_from_arrays(
    spec: BaseModelSpec, arrays: Mapping[str, np.ndarray], with_optimizer: bool, lora_seed: int = 0
) -> Trainer:
    A = np.array(arrays["A"], dtype=np.float64)
    B = np.array(arrays["B"], dtype=np.float64)
    if not spec.fits(A, B):
        raise DataError(
            f"checkpoint shapes A{list(A.shape)} B{list(B.shape)} do not fit base model {spec.name!r}"
        )
    tr = Trainer(spec, Adapter(A, B), np.zeros_like(A), np.zeros_like(B), lora_seed=lora_seed)
    if with_optimizer and "m_A" in arrays:
        tr.adam = AdamState(
            step=int(arrays["adam_step"]),
            m_A=np.array(arrays["m_A"], dtype=np.float64),
            v_A=np.array(arrays["v_A"], dtype=np.float64),
            m_B=np.array(arrays["m_B"], dtype=np.float64),
            v_B=np.array(arrays["v_B"], dtype=np.float64),
        )
    return tr


def trainer_state_arrays(trainer: Trainer) -> dict[str, np.ndarray]:
    """Every array of a live trainer (adapter, pending gradients, AdamW state, counters), for spilling it to
    disk; :func:`trainer_from_state_arrays` restores it bit-for-bit."""
    arrs = adapter_arrays(trainer, with_optimizer=True)
    arrs.update(
        grad_A=trainer.grad_A,
        grad_B=trainer.grad_B,
        adam_step=np.asarray(trainer.adam.step),
        pending_grads=np.asarray(trainer.pending_grads),
        lora_seed=np.asarray(trainer.lora_seed, dtype=np.uint64),
    )
    return arrs


def trainer_from_state_arrays(spec: BaseModelSpec, arrays: Mapping[str, np.ndarray]) -> Trainer:
    tr = trainer_from_arrays(spec, arrays, with_optimizer=True, lora_seed=int(arrays["lora_seed"]))
    tr.adam.step = int(arrays["adam_step"])
    tr.grad_A = np.array(arrays["grad_A"], dtype=np.float64)
    tr.grad_B = np.array(arrays["grad_B"], dtype=np.float64)
    tr.pending_grads = int(arrays["pending_grads"])
    return tr


# ---------------------------------------------------------------------------------------------- images


def _embed(bw: BaseWeights, tokens: np.ndarray, images: Sequence[ImageInput] = ()) -> np.ndarray:
    """Token embeddings ``E[x_i]``; an image's positions get vectors seeded from ``sha256(image bytes, position)``
    (same scale as ``E``), so equal images embed equally and different images differently."""
    e = bw.E[tokens]
    T, d = e.shape
    for img in images:
        seed = int.from_bytes(hashlib.sha256(img.data).digest()[:8], "little")
        rows = np.random.Generator(np.random.PCG64([seed, bw.spec.seed()])).standard_normal((img.length, d))
        r1 = min(T, img.start + img.length)
        if r1 > img.start:
            e[img.start : r1] = rows[: r1 - img.start] / math.sqrt(d)
    return e


def check_images(spec: BaseModelSpec, images: Sequence[ImageInput], where: str) -> None:
    """Each image's ``expected_tokens`` must be what the model's image processor makes of its size."""
    if not images:
        return
    from cookbook.renderers.kit.vision import vision_config_for_model

    config = vision_config_for_model(spec.name)
    for img in images:
        chunk = f"{where}.chunks[{img.chunk}]"
        if config is None:
            raise InvalidData(chunk, f"{spec.name} is a text-only model; it does not accept image chunks")
        try:
            n = config.num_tokens(img.width, img.height)
        except ValueError as exc:  # RendererError: an aspect ratio the processor refuses
            raise InvalidData(f"{chunk}.data", f"image at position {img.start}: {exc}") from exc
        if n != img.length:
            raise InvalidData(
                f"{chunk}.expected_tokens",
                f"image at position {img.start} ({img.format} {img.width}x{img.height}) has "
                f"expected_tokens={img.length}, but {spec.name}'s image processor makes {n} tokens of it",
            )
