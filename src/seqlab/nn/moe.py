"""Mixture-of-experts feed-forward layer (Shazeer et al. 2017; Switch Transformer, Fedus et al. 2021; seed 002,
"sparse models with large capacity").

A router W_r scores every token against E experts, p(x) = softmax(x W_r); each token goes to its top-k experts
and the layer's output is the gate-weighted sum of those experts' outputs, y = Σ_{i ∈ top-k} g_i(x) E_i(x).
With k = 1 the gate is p_i(x) itself (Switch, so the router gets a gradient); with k > 1 the kept
probabilities are renormalised, which is Shazeer's Softmax(KeepTopK(x W_g, k)) without the noise term.

Each expert computes only the tokens routed to it: the (token, expert) assignments are sorted by expert, each
expert gathers its tokens by index and its outputs are scattered back with `index_add_`. With a capacity
factor c an expert takes at most ⌈c · N k / E⌉ of the N tokens' assignments (first come, first served); the
rest are dropped and reach the next layer through the residual connection only.

Load balance (Switch eq. 4): aux = α · E · Σ_i f_i P_i, with f_i the fraction of the N k assignments sent to
expert i and P_i the mean router probability of expert i over the tokens; it is α when the load is uniform.
After each forward pass the layer exposes it as `aux_loss`, which the trainer adds to the objective.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.nn.transformer import Activation, FeedForward


class MoEFeedForward(nn.Module):
    """E position-wise feed-forward experts FFN_i(x) = max(0, xW_1 + b_1)W_2 + b_2 behind a top-k router."""

    def __init__(
        self, d_model: int, d_ff: int, experts: int, top_k: int = 1, capacity_factor: float | None = None,
        dropout: float = 0.0, activation: Activation = "relu", balance_weight: float = 0.01,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k = {top_k} must be between 1 and the number of experts ({experts})")
        self.num_experts, self.top_k = experts, top_k
        self.capacity_factor, self.balance_weight = capacity_factor, balance_weight
        self.W_r = nn.Linear(d_model, experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, dropout, activation) for _ in range(experts))
        self.aux_loss = torch.zeros(())

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens x (N, d_model) → router probabilities p (N, E), the top-k experts (N, k) and their gates (N, k)."""
        logits = self.W_r(x)
        p = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # float32 or wider
        gates, experts = p.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            gates = gates / gates.sum(-1, keepdim=True)
        return p, experts, gates

    def balance_loss(self, p: Tensor, experts: Tensor) -> Tensor:
        """α · E · Σ_i f_i P_i (Fedus et al. 2021, eq. 4), f_i over the N k assignments."""
        f = torch.bincount(experts.flatten(), minlength=self.num_experts).to(p.dtype) / experts.numel()
        return self.balance_weight * self.num_experts * (f * p.mean(0)).sum()

    def capacity(self, assignments: int) -> int | None:
        """Assignments one expert may take: ⌈c · N k / E⌉, or None without a capacity factor."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * assignments / self.num_experts)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_model) → y (..., d_model); sets `aux_loss` for this batch."""
        tokens = x.reshape(-1, x.shape[-1])  # (N, d_model)
        p, experts, gates = self.route(tokens)
        self.aux_loss = self.balance_loss(p, experts)
        expert_of = experts.flatten()  # (N k,), token-major: token 0's experts first
        token_of = torch.arange(tokens.shape[0], device=x.device).repeat_interleave(self.top_k)
        order = torch.argsort(expert_of, stable=True)
        counts = torch.bincount(expert_of, minlength=self.num_experts).tolist()
        limit = self.capacity(expert_of.numel())
        y = torch.zeros_like(tokens)
        for expert, mine, gate in zip(self.experts, token_of[order].split(counts), gates.flatten()[order].split(counts)):
            mine, gate = mine[:limit], gate[:limit]
            if mine.numel():
                y.index_add_(0, mine, gate[:, None].to(tokens.dtype) * expert(tokens[mine]))
        return y.reshape(x.shape)
