"""Linear attention as a fast weight programmer (seed 003; Schmidhuber 1992; Katharopoulos et al. 2020;
Schlag, Irie & Schmidhuber 2021).

Replace softmax(q·k) by a kernel φ(q)·φ(k) with φ(x) = elu(x) + 1 > 0. Causal attention then becomes

    y_t = Σ_{s≤t} v_s φ(k_s)ᵀ φ(q_t) / Σ_{s≤t} φ(k_s)ᵀ φ(q_t) = W_t φ(q_t) / (z_tᵀ φ(q_t)),

with the fast weights W_t = W_{t−1} + v_t φ(k_t)ᵀ (an outer product: key = FROM, value = TO) and the
normaliser z_t = z_{t−1} + φ(k_t). Three ways to compute the same y:

- parallel form: every W_t at once as a cumulative sum over time, O(T d²) work and memory (the readable one);
- chunked form (training): within chunks of C tokens the masked C × C form, between chunks one W per chunk,
  O(T C d + T d²/C) work and O(T C + T d²/C) memory, in matrix products;
- recurrent form (generation): one fast-weight update per token, O(d²) memory whatever the length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.nn.transformer import HeadProjections

EPS = 1e-6


def elu_feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1, positive so that the normaliser never vanishes (Katharopoulos et al. 2020, eq. 7)."""
    return F.elu(x) + 1


def causal_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Parallel form: W_t = Σ_{s≤t} v_s φ(k_s)ᵀ by a cumulative sum; y_t = W_t φ(q_t) / (z_tᵀ φ(q_t)).

    phi_q, phi_k: (..., T, d_k); v: (..., T, d_v); returns (..., T, d_v).
    """
    W = torch.cumsum(v.unsqueeze(-1) * phi_k.unsqueeze(-2), dim=-3)  # (..., T, d_v, d_k)
    z = torch.cumsum(phi_k, dim=-2)  # (..., T, d_k)
    numerator = (W @ phi_q.unsqueeze(-1)).squeeze(-1)
    denominator = (z * phi_q).sum(-1, keepdim=True)
    return numerator / (denominator + eps)


def chunked_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = EPS, chunk: int = 64) -> Tensor:
    """The same y in chunks of `chunk` tokens: y_t = (W_{c−1} φ(q_t) + Σ_{s in c, s≤t} (φ(q_t)·φ(k_s)) v_s) / (same
    with z and 1), where W_{c−1}, z_{c−1} hold every position before chunk c. Arguments as `causal_linear_attention`."""
    T = v.shape[-2]
    pad = -T % chunk
    if pad:  # zero keys and values after the end write nothing
        phi_q, phi_k, v = (F.pad(x, (0, 0, 0, pad)) for x in (phi_q, phi_k, v))
    q, k, values = (x.unflatten(-2, (-1, chunk)) for x in (phi_q, phi_k, v))  # (..., chunks, C, d)
    scores = (q @ k.transpose(-2, -1)).tril()  # (..., chunks, C, C): φ(q_t)·φ(k_s), s ≤ t within the chunk
    W = k.transpose(-2, -1) @ values  # (..., chunks, d_k, d_v): what each chunk writes
    z = k.sum(-2)  # (..., chunks, d_k): what each chunk adds to the normaliser
    W_before, z_before = torch.cumsum(W, dim=-3) - W, torch.cumsum(z, dim=-2) - z
    numerator = scores @ values + q @ W_before
    denominator = scores.sum(-1, keepdim=True) + q @ z_before.unsqueeze(-1)
    return (numerator / (denominator + eps)).flatten(-3, -2)[..., :T, :]


def fast_weight_step(
    W: Tensor, z: Tensor, phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = EPS
) -> tuple[Tensor, Tensor, Tensor]:
    """Recurrent form, one step: W_t = W_{t−1} + v_t φ(k_t)ᵀ, z_t = z_{t−1} + φ(k_t), y_t = W_t φ(q_t) / (z_tᵀ φ(q_t)).

    W: (..., d_v, d_k); z, phi_q, phi_k: (..., d_k); v: (..., d_v). Returns (y_t, W_t, z_t).
    """
    W = W + v.unsqueeze(-1) * phi_k.unsqueeze(-2)
    z = z + phi_k
    y = (W @ phi_q.unsqueeze(-1)).squeeze(-1) / ((z * phi_q).sum(-1, keepdim=True) + eps)
    return y, W, z


def recurrent_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """The fast weight programmer run token by token over (..., T, d) inputs; equals the parallel form."""
    W = v.new_zeros(*v.shape[:-2], v.shape[-1], phi_k.shape[-1])
    z = phi_k.new_zeros(*phi_k.shape[:-2], phi_k.shape[-1])
    outputs = []
    for t in range(v.shape[-2]):
        y_t, W, z = fast_weight_step(W, z, phi_q[..., t, :], phi_k[..., t, :], v[..., t, :], eps)
        outputs.append(y_t)
    return torch.stack(outputs, dim=-2)


@dataclass
class FastWeights:
    """Linear attention's incremental cache: W (batch, heads, d_v, d_k) and z (batch, heads, d_k)."""

    W: Tensor
    z: Tensor


class LinearAttention(HeadProjections):
    """Multi-head linear attention with the projections of softmax multi-head attention (a drop-in
    replacement in `EncoderLayer`); its incremental cache is the fast weights (W, z), not a KV list."""

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        recurrent: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Chunked form by default; `recurrent=True` runs the fast-weight recurrence (same result)."""
        phi_q = elu_feature_map(self.split_heads(self.W_q(query)))
        phi_k = elu_feature_map(self.split_heads(self.W_k(key)))
        v = self.split_heads(self.W_v(value))
        if key_padding_mask is not None:
            keep = (~key_padding_mask)[:, None, :, None].to(v.dtype)
            phi_k, v = phi_k * keep, v * keep
        if causal:
            heads = (recurrent_linear_attention if recurrent else chunked_linear_attention)(phi_q, phi_k, v)
        else:
            W = v.transpose(-2, -1) @ phi_k  # (batch, heads, d_v, d_k): every key written once
            heads = (phi_q @ W.transpose(-2, -1)) / ((phi_q * phi_k.sum(-2, keepdim=True)).sum(-1, keepdim=True) + EPS)
        return self.merge_heads(heads), None

    def empty_cache(self, batch_size: int, like: Tensor) -> FastWeights:
        """Fast weights W_0 = 0 (batch, heads, d_v, d_k) and normaliser z_0 = 0 (batch, heads, d_k)."""
        return FastWeights(like.new_zeros(batch_size, self.num_heads, self.d_k, self.d_k),
                           like.new_zeros(batch_size, self.num_heads, self.d_k))

    def step(self, x_t: Tensor, cache: FastWeights) -> tuple[Tensor, FastWeights]:
        """New positions x_t (batch, n, d_model), one fast-weight update each; the cache never grows."""
        phi_q = elu_feature_map(self.split_heads(self.W_q(x_t)))
        phi_k = elu_feature_map(self.split_heads(self.W_k(x_t)))
        v = self.split_heads(self.W_v(x_t))
        W, z = cache.W, cache.z
        outputs = []
        for t in range(x_t.shape[1]):
            y_t, W, z = fast_weight_step(W, z, phi_q[:, :, t], phi_k[:, :, t], v[:, :, t])
            outputs.append(y_t)
        return self.merge_heads(torch.stack(outputs, dim=2)), FastWeights(W, z)
