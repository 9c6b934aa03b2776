"""Attention scorers behind one interface: (query, keys, values, mask) → (context, weights) (seed 002, "Attention").

    e_{t,s} = score(q_t, k_s)                  energies, (batch, tgt, src)
    α_{t,s} = exp(e_{t,s}) / Σ_{s'} exp(e_{t,s'})   over the real (unmasked) source positions only
    c_t     = Σ_s α_{t,s} v_s                  context, (batch, tgt, value)

Scorers (Bahdanau et al. 2014; Luong et al. 2015 §3.1; Vaswani et al. 2017):

- ``additive``   e = v_aᵀ tanh(W_a s + U_a h); U_a h is computed once per source sentence by `project_keys`;
- ``dot``        e = hᵀ s;
- ``general``    e = hᵀ W_a s (the query is mapped by W_a at each step; the keys stay as they are);
- ``concat``     e = v_aᵀ tanh(W_a [s; h]) on the concatenation of every (query, key) pair, as written;
- ``scaled_dot`` e = hᵀ s / √d.

`LocalAttention` wraps any scorer into Luong's local attention: ``monotonic`` (local-m, p_t = t) or
``predictive`` (local-p, p_t = (S − 1)·σ(v_pᵀ tanh(W_p s)), weights times a Gaussian with σ = D/2), both
attending only to the window [p_t − D, p_t + D].

Every module holds parameters only: keys precomputed with `project_keys` are passed back in by the
caller at every decoder step. The query may be one step (batch, query) or many (batch, tgt, query);
the outputs follow its shape. `mask` is (batch, src) with True at real tokens; every row needs at least
one real token.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Score = Literal["additive", "dot", "general", "concat", "scaled_dot"]
SCORES: tuple[str, ...] = ("additive", "dot", "general", "concat", "scaled_dot")
Local = Literal["none", "monotonic", "predictive"]


class Attention(nn.Module):
    """Global attention: subclasses define `score`; masking, softmax and the weighted average live here."""

    def project_keys(self, memory: Tensor) -> Tensor:
        """Keys from the encoder states (batch, src, key), computed once per source sentence."""
        return memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """Energies e (batch, tgt, src) for queries (batch, tgt, query) and keys (batch, src, key)."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor, step: int = 0) -> tuple[Tensor, Tensor]:
        """Context (batch, [tgt,] value) and weights α (batch, [tgt,] src); `step` is unused by global attention."""
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query
        e = self.score(q, keys).masked_fill(~mask[:, None, :], float("-inf"))
        alpha = torch.softmax(e, dim=-1)
        context = torch.bmm(alpha, values)
        return (context.squeeze(1), alpha.squeeze(1)) if single else (context, alpha)


class DotScore(Attention):
    """Luong et al. 2015, eq. 8 (dot): score(h_t, h̄_s) = h_tᵀ h̄_s."""

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


class ScaledDotScore(Attention):
    """Vaswani et al. 2017, eq. 1: score(q, k) = qᵀk / √d_k."""

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2)) / math.sqrt(keys.shape[-1])


class GeneralScore(Attention):
    """Luong et al. 2015, eq. 8 (general): score(h_t, h̄_s) = h_tᵀ W_a h̄_s."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(query_size, key_size, bias=False)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(self.W_a(query), keys.transpose(1, 2))


class ConcatScore(Attention):
    """Luong et al. 2015, eq. 8 (concat): score(h_t, h̄_s) = v_aᵀ tanh(W_a [h_t; h̄_s])."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(query_size + key_size, attention_size, bias=False)
        self.v_a = nn.Linear(attention_size, 1, bias=False)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        batch, tgt, src = query.shape[0], query.shape[1], keys.shape[1]
        pairs = torch.cat(
            [query[:, :, None, :].expand(batch, tgt, src, -1), keys[:, None, :, :].expand(batch, tgt, src, -1)], dim=-1
        )  # (batch, tgt, src, query + key)
        return self.v_a(torch.tanh(self.W_a(pairs))).squeeze(-1)


class AdditiveScore(Attention):
    """Bahdanau et al. 2014, eq. 6 and A.1.2: e_ij = v_aᵀ tanh(W_a s_{i−1} + U_a h_j), U_a h_j precomputed."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(query_size, attention_size, bias=False)
        self.U_a = nn.Linear(key_size, attention_size)
        self.v_a = nn.Linear(attention_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.U_a(memory)  # (batch, src, attention): U_a h_j, once per sentence

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return self.v_a(torch.tanh(self.W_a(query)[:, :, None, :] + keys[:, None, :, :])).squeeze(-1)


class LocalAttention(Attention):
    """Luong et al. 2015 §3.2 (eqs. 9–10): attention restricted to the window [p_t − D, p_t + D] around p_t."""

    def __init__(self, scorer: Attention, window: int, predictive: bool, query_size: int, hidden_size: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"local attention needs a window half-width D >= 1, got {window}")
        self.scorer = scorer
        self.D = window
        self.sigma = window / 2
        self.predictive = predictive
        if predictive:
            self.W_p = nn.Linear(query_size, hidden_size, bias=False)
            self.v_p = nn.Linear(hidden_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.scorer.project_keys(memory)

    def aligned_position(self, query: Tensor, mask: Tensor, step: int) -> Tensor:
        """p_t (batch, tgt): t itself (local-m) or (S − 1)·σ(v_pᵀ tanh(W_p h_t)) (local-p, eq. 9), within the source."""
        last = (mask.sum(1, keepdim=True) - 1).to(query.dtype)  # (batch, 1): S − 1
        if self.predictive:
            return last * torch.sigmoid(self.v_p(torch.tanh(self.W_p(query))).squeeze(-1))
        t = torch.arange(step, step + query.shape[1], device=query.device, dtype=query.dtype)
        return torch.minimum(t[None, :], last)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor, step: int = 0) -> tuple[Tensor, Tensor]:
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query
        p_t = self.aligned_position(q, mask, step)  # (batch, tgt)
        s = torch.arange(keys.shape[1], device=q.device, dtype=q.dtype)
        distance = s[None, None, :] - p_t[:, :, None]  # (batch, tgt, src)
        inside = (distance.abs() <= self.D) & mask[:, None, :]
        e = self.scorer.score(q, keys).masked_fill(~inside, float("-inf"))
        alpha = torch.softmax(e, dim=-1)
        if self.predictive:
            alpha = alpha * torch.exp(-(distance**2) / (2 * self.sigma**2))  # eq. 10
        context = torch.bmm(alpha, values)
        return (context.squeeze(1), alpha.squeeze(1)) if single else (context, alpha)


def build_attention(
    score: Score,
    query_size: int,
    key_size: int,
    attention_size: int | None = None,
    local: Local = "none",
    window: int = 10,
) -> Attention:
    """The scorer `score` (optionally made local), sized for the decoder's queries and the encoder's keys."""
    attention_size = attention_size or query_size
    if score in ("dot", "scaled_dot") and query_size != key_size:
        raise ValueError(f"the {score} score needs queries and keys of one size, got {query_size} and {key_size}")
    if score == "additive":
        scorer: Attention = AdditiveScore(query_size, key_size, attention_size)
    elif score == "dot":
        scorer = DotScore()
    elif score == "scaled_dot":
        scorer = ScaledDotScore()
    elif score == "general":
        scorer = GeneralScore(query_size, key_size)
    elif score == "concat":
        scorer = ConcatScore(query_size, key_size, attention_size)
    else:
        raise ValueError(f"unknown attention score {score!r}; choose one of {', '.join(SCORES)}")
    if local == "none":
        return scorer
    return LocalAttention(scorer, window, predictive=local == "predictive", query_size=query_size, hidden_size=attention_size)

