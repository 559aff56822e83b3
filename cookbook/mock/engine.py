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

Exactness and determinism:

* everything is float64; the wire carries float32 logprobs;
* the log-softmax is computed over row blocks of at most :data:`BLOCK_ELEMS` logits (``rows = BLOCK_ELEMS // V``,
  so 27 positions at V = 151,936) and, when scoring prompts, in vocabulary chunks of :data:`VOCAB_CHUNK`
  columns, so memory stays bounded for 200k vocabularies; block sizes depend only on V, never on the batch;
* gradients are accumulated **per datum in datum order**, so splitting a batch over several
  ``forward_backward`` calls before one ``optim_step`` gives bit-identical weights;
* the gradient of every built-in loss comes from :func:`cookbook.losses.tinker_loss` (dL / d target logprob),
  chained here through the log-softmax: ``dz = Σ_k g_k · onehot(y_k) − (Σ_k g_k) · softmax(z)``;
* AdamW follows ``torch.optim.AdamW`` exactly (decoupled weight decay, bias correction, global-norm clip);
* sampling uses ``numpy.random.PCG64`` seeded with ``(seed, sample index)``; sampled-token logprobs are taken
  at temperature 1 from the same model code as training, so ``sampler logprob == learner logprob`` for
  identical weights (what KL diagnostics assume).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cookbook.errors import DataError, LossInputError
from cookbook.mock.errors import InvalidConfig, InvalidData, InvalidLossInput

GAMMA = 0.5
BETA = 0.5
LORA_ALPHA = 32.0
VOCAB_CHUNK = 16384  # column chunk of the online logsumexp (prompt scoring)
ROW_BLOCK = 512  # max positions per block
BLOCK_ELEMS = 1 << 22  # max logits held at once in forward_backward (4M float64 = 32 MiB)
MAX_RANK = 512
EMPTY_TOPK_LOGPROB = -99999.0

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


@dataclass
class DatumArrays:
    """One datum: the flattened model input tokens and the loss inputs as numpy arrays."""

    tokens: np.ndarray  # int64 [N]
    inputs: dict[str, np.ndarray]


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
        W = np.ascontiguousarray(rng.standard_normal((d, V)))
        bw = BaseWeights(spec, E, W)
        with self._lock:
            self._bases[spec.name] = bw
            while len(self._bases) > self._max:
                self._bases.popitem(last=False)
        return bw

    @staticmethod
    def new_adapter(spec: BaseModelSpec, rank: int, seed: int) -> Adapter:
        if not (1 <= rank <= MAX_RANK):
            raise InvalidConfig("lora_config.rank", f"must be between 1 and {MAX_RANK}, got {rank}")
        rng = np.random.Generator(np.random.PCG64(seed))
        A = rng.standard_normal((spec.d_model, rank))
        B = np.zeros((rank, spec.vocab_size))
        return Adapter(A, B)

    def new_trainer(self, spec: BaseModelSpec, rank: int, seed: int) -> Trainer:
        adapter = self.new_adapter(spec, rank, seed)
        return Trainer(spec, adapter, np.zeros_like(adapter.A), np.zeros_like(adapter.B), lora_seed=seed)

    @staticmethod
    def empty_adapter(spec: BaseModelSpec) -> Adapter:
        return Adapter(np.zeros((spec.d_model, 0)), np.zeros((0, spec.vocab_size)))

    # ---------------------------------------------------------------- model pieces

    @staticmethod
    def _hidden(bw: BaseWeights, tokens: np.ndarray) -> np.ndarray:
        """Context vectors ``h_i`` for every position (sequential, deterministic)."""
        e = bw.E[tokens]  # [T, d]
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

    @staticmethod
    def _gather(Hx: np.ndarray, Wx: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Logits at ``targets`` ([T] or [T, K]) without materialising a full row."""
        cols = Wx[:, targets.reshape(-1)]  # [D, T*K]
        rows = np.repeat(np.arange(Hx.shape[0]), targets[0].size if targets.ndim > 1 else 1)
        return np.einsum("td,dt->t", Hx[rows], cols).reshape(targets.shape)

    # ---------------------------------------------------------------- validation

    @staticmethod
    def validate_batch(
        spec: BaseModelSpec,
        loss_fn: str,
        data: Sequence[DatumArrays],
        loss_fn_config: Mapping[str, float] | None,
    ) -> None:
        """Raise :class:`DataError` / :class:`ConfigurationError` naming the offending field."""
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

    # ---------------------------------------------------------------- forward / backward

    def forward_backward(
        self,
        trainer: Trainer,
        loss_fn: str,
        data: Sequence[DatumArrays],
        loss_fn_config: Mapping[str, float] | None,
        forward_only: bool,
    ) -> ForwardResult:
        """Run the loss per datum, accumulate gradients (unless ``forward_only``), return target logprobs."""
        losses = _losses()
        self.validate_batch(trainer.spec, loss_fn, data, loss_fn_config)
        bw = self.base(trainer.spec)
        adapter = trainer.adapter
        d_model = trainer.spec.d_model
        out: list[np.ndarray] = []
        metric_acc: dict[str, list[float]] = {}
        cfg = dict(loss_fn_config) if loss_fn_config else None
        # gradients are accumulated per datum in datum order (bit-identical under any split of the batch)
        V = trainer.spec.vocab_size
        rb = max(1, min(ROW_BLOCK, BLOCK_ELEMS // V))
        for i, d in enumerate(data):
            targets = d.inputs["target_tokens"].astype(np.int64, copy=False)
            H = self._hidden(bw, d.tokens)
            Hx, Wx = self._extended(bw, adapter, H)
            lp = np.empty(targets.shape)
            for r0 in range(0, H.shape[0], rb):
                z = Hx[r0 : r0 + rb] @ Wx
                zmax = z.max(axis=1)
                lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
                t = targets[r0 : r0 + rb]
                rows = np.arange(z.shape[0])
                zt = z[rows[:, None], t] if t.ndim == 2 else z[rows, t]
                lp[r0 : r0 + rb] = zt - (lse[:, None] if t.ndim == 2 else lse)
            try:
                res = losses.tinker_loss(loss_fn, lp, d.inputs, cfg)
            except LossInputError as exc:
                raise InvalidLossInput(f"data[{i}]", str(exc)) from exc
            for k, v in res.metrics.items():
                metric_acc.setdefault(k, []).append(float(v))
            out.append(lp)
            if forward_only or adapter.rank == 0:
                continue
            g = np.asarray(res.grad, dtype=np.float64).reshape(targets.shape)
            if not np.all(np.isfinite(g)):
                raise InvalidData(f"data[{i}]", "the loss gradient is not finite (check advantages/logprobs)")
            self._backward(trainer, Hx, Wx, H, targets, g, d_model, rb)
        if not forward_only:
            trainer.pending_grads += 1
        return ForwardResult(out, _reduce_metrics(metric_acc))

    @staticmethod
    def _backward(
        trainer: Trainer,
        Hx: np.ndarray,
        Wx: np.ndarray,
        H: np.ndarray,
        targets: np.ndarray,
        g: np.ndarray,
        d_model: int,
        rb: int,
    ) -> None:
        """``dz = Σ_k g_k·onehot(y_k) − (Σ_k g_k)·softmax(z)``; ``dB += (s·H·A)ᵀ dz``; ``dA += Hᵀ (s · dz Bᵀ)``."""
        adapter = trainer.adapter
        s = adapter.scale
        for r0 in range(0, Hx.shape[0], rb):
            hx = Hx[r0 : r0 + rb]
            z = hx @ Wx
            zmax = z.max(axis=1)
            np.subtract(z, zmax[:, None], out=z)
            np.exp(z, out=z)
            z /= z.sum(axis=1)[:, None]  # softmax
            gb = g[r0 : r0 + rb]
            tb = targets[r0 : r0 + rb]
            g2 = gb if gb.ndim == 2 else gb[:, None]
            t2 = tb if tb.ndim == 2 else tb[:, None]
            z *= -g2.sum(axis=1)[:, None]
            rows = np.repeat(np.arange(hx.shape[0]), t2.shape[1])
            np.add.at(z, (rows, t2.reshape(-1)), g2.reshape(-1))
            trainer.grad_B += hx[:, d_model:].T @ z
            trainer.grad_A += H[r0 : r0 + rb].T @ (s * (z @ adapter.B.T))

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
        V = spec.vocab_size
        _check_token_range(req.prompt, V, "prompt")
        if req.prompt.shape[0] == 0:
            raise InvalidData("prompt", "empty prompt")
        if req.stop_strings and decode is None:
            raise InvalidConfig(
                "sampling_params.stop",
                f"base model {spec.name!r} has no tokenizer, so stop strings cannot be matched; pass stop token ids",
            )
        bw = self.base(spec)
        H = self._hidden(bw, req.prompt)
        Hx, Wx = self._extended(bw, adapter, H)
        result = SampleResult(sequences=[])
        P = req.prompt.shape[0]
        if req.prompt_logprobs or req.topk_prompt_logprobs > 0:
            plp = np.full(P, np.nan)
            k = req.topk_prompt_logprobs
            tids = np.zeros((P, k), dtype=np.int64) if k > 0 else None
            tlps = np.full((P, k), EMPTY_TOPK_LOGPROB) if k > 0 else None
            if P > 1:
                for r0 in range(0, P - 1, ROW_BLOCK):
                    r1 = min(P - 1, r0 + ROW_BLOCK)
                    hx = Hx[r0:r1]
                    lse = self._lse(hx, Wx)
                    tgt = req.prompt[r0 + 1 : r1 + 1]
                    plp[r0 + 1 : r1 + 1] = self._gather(hx, Wx, tgt) - lse
                    if k > 0 and tids is not None and tlps is not None:
                        for j in range(hx.shape[0]):
                            ids, vals = self._topk_row(hx[j], Wx, lse[j], k)
                            tids[r0 + 1 + j] = ids
                            tlps[r0 + 1 + j] = vals
            if req.prompt_logprobs_last_n is not None:
                cut = max(0, P - req.prompt_logprobs_last_n)
                plp[:cut] = np.nan
                if tids is not None and tlps is not None:
                    tids[:cut] = 0
                    tlps[:cut] = EMPTY_TOPK_LOGPROB
            result.prompt_logprobs = plp if req.prompt_logprobs else None
            result.topk_prompt_ids, result.topk_prompt_logprobs = tids, tlps
        # state after the prompt: context c for the next position
        e = bw.E
        c = np.zeros(spec.d_model)
        for i in range(1, P):
            c = GAMMA * (c + e[req.prompt[i - 1]])
        h_last = H[-1]
        for si in range(req.num_samples):
            rng = np.random.Generator(np.random.PCG64([req.seed & 0xFFFFFFFFFFFFFFFF, si]))
            forced = req.scripted[si] if req.scripted is not None and si < len(req.scripted) else None
            result.sequences.append(
                self._sample_one(bw, adapter, Wx, req, rng, c.copy(), h_last.copy(), decode, forced)
            )
        return result

    def _topk_row(self, hx: np.ndarray, Wx: np.ndarray, lse: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        z = hx @ Wx
        kk = min(k, z.shape[0])
        idx = np.argpartition(-z, kk - 1)[:kk]
        order = np.lexsort((idx, -z[idx]))
        idx = idx[order]
        ids = np.zeros(k, dtype=np.int64)
        vals = np.full(k, EMPTY_TOPK_LOGPROB)
        ids[:kk] = idx
        vals[:kk] = z[idx] - lse
        return ids, vals

    def _sample_one(
        self,
        bw: BaseWeights,
        adapter: Adapter,
        Wx: np.ndarray,
        req: SampleSpec,
        rng: np.random.Generator,
        c: np.ndarray,
        h: np.ndarray,
        decode: Callable[[Sequence[int]], str] | None,
        forced: np.ndarray | None,
    ) -> SampledSequence:
        toks: list[int] = []
        lps: list[float] = []
        k = req.topk_sample_logprobs
        tk_ids: list[np.ndarray] = []
        tk_lps: list[np.ndarray] = []
        prompt = req.prompt
        prev = int(prompt[-1])
        stop_reason = "length"
        limit = req.max_tokens if forced is None else min(req.max_tokens, len(forced))
        text_start = 0
        for step in range(limit):
            if step:
                c = GAMMA * (c + bw.E[prev])
                h = bw.E[toks[-1]] + BETA * c
            hx = h if adapter.rank == 0 else np.concatenate([h, adapter.scale * (h @ adapter.A)])
            z = hx @ Wx
            zmax = z.max()
            ez = np.exp(z - zmax)
            lse = zmax + math.log(float(ez.sum()))
            if forced is not None:
                tok = int(forced[step])
                _check_token_range(np.asarray([tok]), z.shape[0], "scripted completion")
            elif req.temperature == 1.0 and req.top_k <= 0 and req.top_p >= 1.0:
                cdf = np.cumsum(ez)
                tok = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), z.shape[0] - 1))
            else:
                tok = _draw(z, req.temperature, req.top_k, req.top_p, rng)
            toks.append(tok)
            lps.append(float(z[tok] - lse))
            if k > 0:
                ids, vals = self._topk_row(hx, Wx, lse, k)
                tk_ids.append(ids)
                tk_lps.append(vals)
            prev = int(prompt[-1]) if step == 0 else toks[-2]
            if tok in req.stop_tokens:
                stop_reason = "stop"
                break
            if req.stop_strings and decode is not None:
                text = decode(toks)
                if any(s in text[text_start:] for s in req.stop_strings):
                    stop_reason = "stop"
                    break
                text_start = max(0, len(text) - max(len(s) for s in req.stop_strings) - 8)
        if forced is not None and stop_reason == "length" and len(toks) == len(forced) < req.max_tokens:
            stop_reason = "stop"
        seq = SampledSequence(np.asarray(toks, dtype=np.int64), np.asarray(lps), stop_reason)
        if k > 0:
            seq.topk_ids = np.asarray(tk_ids).reshape(len(toks), k)
            seq.topk_logprobs = np.asarray(tk_lps).reshape(len(toks), k)
        return seq


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
    if A.shape[0] != spec.d_model or B.shape[1] != spec.vocab_size or A.shape[1] != B.shape[0]:
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
