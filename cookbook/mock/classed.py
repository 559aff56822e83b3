"""The class-factored output layer the mock engine uses for real-size vocabularies.

A dense softmax over a 248,320-token vocabulary costs ``V · d`` multiply-adds and ``V`` exponentials per
position, which on numpy puts one sampled or trained token at milliseconds and a recipe that samples a few
hundred thousand tokens (tinker-cookbook's guess_number and twenty_questions evaluations) at an hour. From
:data:`CLASSED_VOCAB` tokens on, the mock's model therefore factors its output distribution in two levels
(a class-based softmax, as in Goodman 2001 and Morin & Bengio 2005)::

    S = ceil(sqrt(V)),  K = ceil(V / S),  class(t) = t // S      (K classes of S consecutive token ids)
    z = h · W + s · (h · A) · B                                  (W, B: K·S token columns, then K class columns)
    log p(t | h) = [z_cls[c] - logsumexp(z_cls)] + [z_tok[t] - logsumexp(z_tok[c·S : c·S + S])]

The last class is padded to ``S`` columns; padding columns are never tokens (their logit is ``-inf``). The model
is still exact: ``Σ_t p(t) = 1``, every logprob the server returns is this model's, the sampler draws from it
(class, then token) and its gradient is the analytic one. A position costs ``(K + S) · d`` instead of ``V · d``.

Each row's logits are computed on its own (one matrix-vector product per row and level), so a row's bits never
depend on the rows it is batched with; the learner and the sampler call the same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cookbook.mock import CLASSED_VOCAB

__all__ = ["CLASSED_VOCAB", "Layout", "backward", "class_logits", "draw", "forward", "full_logprobs"]


@dataclass(frozen=True)
class Layout:
    """Column layout of a class-factored head over ``V`` tokens."""

    V: int
    S: int  # tokens per class
    K: int  # classes

    @staticmethod
    def of(V: int) -> Layout:
        S = math.isqrt(V - 1) + 1 if V > 1 else 1  # ceil(sqrt(V))
        return Layout(V, S, -(-V // S))

    @property
    def token_cols(self) -> int:
        return self.K * self.S

    @property
    def width(self) -> int:
        """Columns of ``W`` and ``B``: ``K·S`` token columns (the last class padded), then ``K`` class columns."""
        return self.K * self.S + self.K


def lse_rows(Z: np.ndarray) -> np.ndarray:
    """Row-wise logsumexp of ``Z`` (``[n, m]``; ``-inf`` entries allowed): the one reduction the learner and the
    sampler use, so their logprobs are computed by the same code."""
    m = Z.max(axis=1)
    return m + np.log(np.exp(Z - m[:, None]).sum(axis=1))


def lse(z: np.ndarray) -> float:
    return float(lse_rows(z[None, :])[0])


def class_logits(L: Layout, W: np.ndarray, B: np.ndarray, H: np.ndarray, HA: np.ndarray | None) -> np.ndarray:
    """``z_cls`` for every row of ``H`` (``[n, K]``), one product per row."""
    out = np.empty((H.shape[0], L.K))
    Wc = W[:, L.token_cols :]
    Bc = B[:, L.token_cols :]
    for i in range(H.shape[0]):
        z = H[i] @ Wc
        if HA is not None:
            z += HA[i] @ Bc
        out[i] = z
    return out


def block_logits(L: Layout, W: np.ndarray, B: np.ndarray, h: np.ndarray, ha: np.ndarray | None, c: int) -> np.ndarray:
    """``z_tok`` over class ``c``'s ``S`` columns for one row (padding columns ``-inf``)."""
    c0 = c * L.S
    z = h @ W[:, c0 : c0 + L.S]
    if ha is not None:
        z += ha @ B[:, c0 : c0 + L.S]
    if c0 + L.S > L.V:
        z[L.V - c0 :] = -np.inf
    return z


def full_logprobs(L: Layout, W: np.ndarray, B: np.ndarray, h: np.ndarray, ha: np.ndarray | None) -> np.ndarray:
    """``log p(t | h)`` for every token (``[V]``): what top-k lists, temperature and top-p sampling need."""
    zc = class_logits(L, W, B, h[None, :], None if ha is None else ha[None, :])[0]
    lc = zc - lse(zc)
    out = np.empty(L.token_cols)
    for c in range(L.K):
        zb = block_logits(L, W, B, h, ha, c)
        out[c * L.S : (c + 1) * L.S] = zb - lse(zb) + lc[c]
    return out[: L.V]


@dataclass
class Forward:
    """One datum's class-factored forward pass, kept for backward."""

    lp: np.ndarray  # logprobs, shape of the targets
    pos: np.ndarray  # [n] position of each target (flattened targets)
    cls: np.ndarray  # [n] class of each target
    pc: np.ndarray  # [T, K] softmax over classes per position
    pb: np.ndarray  # [n, S] softmax over the target's class per target


def forward(
    L: Layout, W: np.ndarray, B: np.ndarray, H: np.ndarray, HA: np.ndarray | None, targets: np.ndarray
) -> Forward:
    """Target logprobs of every position (``targets`` ``[T]`` or ``[T, k]``)."""
    T = H.shape[0]
    per = targets.shape[1] if targets.ndim == 2 else 1
    flat = targets.reshape(-1).astype(np.int64, copy=False)
    pos = np.repeat(np.arange(T), per)
    cls = flat // L.S
    zc = class_logits(L, W, B, H, HA)
    lc = zc - lse_rows(zc)[:, None]
    pc = np.exp(lc)
    pb = np.empty((flat.shape[0], L.S))
    lp = np.empty(flat.shape[0])
    for j in range(flat.shape[0]):
        p, c = int(pos[j]), int(cls[j])
        zb = block_logits(L, W, B, H[p], None if HA is None else HA[p], c)
        m = lse(zb)
        lp[j] = lc[p, c] + (zb[flat[j] - c * L.S] - m)
        np.exp(zb - m, out=pb[j])
    return Forward(lp.reshape(targets.shape), pos, cls, pc, pb)


def backward(
    L: Layout,
    f: Forward,
    targets: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    HA: np.ndarray,
    B: np.ndarray,
    scale: float,
    grad_A: np.ndarray,
    grad_B: np.ndarray,
) -> None:
    """Add one datum's gradients (``g = dL / d logprob`` per target) to ``grad_A`` and ``grad_B``.

    Through the two log-softmaxes: ``dz_cls = Σ g·onehot(c) − (Σ g)·p_cls`` per position and
    ``dz_tok = g·(onehot(t) − p_tok|c)`` per target; then ``grad_B += (s·H·A)ᵀ dz`` and
    ``grad_A += Hᵀ (s · dz Bᵀ)``, as for the dense head.
    """
    T = H.shape[0]
    gf = g.reshape(-1).astype(np.float64, copy=False)
    flat = targets.reshape(-1).astype(np.int64, copy=False)
    G = np.zeros(T)
    np.add.at(G, f.pos, gf)
    dzc = -G[:, None] * f.pc
    np.add.at(dzc, (f.pos, f.cls), gf)
    dzb = -gf[:, None] * f.pb
    dzb[np.arange(flat.shape[0]), flat - f.cls * L.S] += gf
    KS = L.token_cols
    U = dzc @ B[:, KS:].T  # [T, r]: dz Bᵀ, class part
    grad_B[:, KS:] += HA.T @ dzc
    order = np.argsort(f.cls, kind="stable")
    cls_sorted = f.cls[order]
    starts = np.flatnonzero(np.r_[True, cls_sorted[1:] != cls_sorted[:-1]])
    ends = np.r_[starts[1:], cls_sorted.shape[0]]
    for a, b in zip(starts.tolist(), ends.tolist()):
        idx = order[a:b]
        c0 = int(cls_sorted[a]) * L.S
        rows = f.pos[idx]
        d = dzb[idx]
        grad_B[:, c0 : c0 + L.S] += HA[rows].T @ d
        np.add.at(U, rows, d @ B[:, c0 : c0 + L.S].T)
    grad_A += H.T @ (scale * U)


def token_logprob(
    L: Layout, W: np.ndarray, B: np.ndarray, h: np.ndarray, ha: np.ndarray | None, zc: np.ndarray, tok: int
) -> float:
    """``log p(tok | h)`` of one row from its class logits ``zc``."""
    c = tok // L.S
    zb = block_logits(L, W, B, h, ha, c)
    return float((zc[c] - lse(zc)) + (zb[tok - c * L.S] - lse(zb)))


def draw(
    L: Layout, W: np.ndarray, B: np.ndarray, h: np.ndarray, ha: np.ndarray | None, zc: np.ndarray,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Draw a token at temperature 1 (class by inverse CDF, then token in it); return it and its logprob."""
    m = lse(zc)
    pc = np.cumsum(np.exp(zc - m))
    c = int(min(np.searchsorted(pc, rng.random() * pc[-1], side="right"), L.K - 1))
    zb = block_logits(L, W, B, h, ha, c)
    mb = lse(zb)
    pb = np.cumsum(np.exp(zb - mb))
    last = min(L.S, L.V - c * L.S) - 1
    j = int(min(np.searchsorted(pb, rng.random() * pb[-1], side="right"), last))
    return c * L.S + j, float((zc[c] - m) + (zb[j] - mb))
