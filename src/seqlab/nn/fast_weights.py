"""Fast weights beyond the sum rule: the delta rule (Schlag, Irie & Schmidhuber 2021) and Performer's
positive random features (Choromanski et al. 2020; seed 003).

Delta rule (Schlag et al. 2021, "the delta update rule"). The fast weights W (d_v × d_φ) are a key→value
memory; a write first reads what the key already retrieves, then moves it towards the new value by a learned
rate β_t:

    v̄_t = W_{t−1} φ(k_t),   W_t = W_{t−1} + β_t (v_t − v̄_t) φ(k_t)ᵀ,   y_t = W_t φ(q_t),   β_t = σ(w_β x_t).

φ is their deterministic parameter-free projection DPFP_ν (default ν = 1, d_φ = 2 d_k) or elu(x) + 1, each
sum-normalised (φ / Σ_i φ_i, as they do), so no separate denominator is needed. The sum rule of linear
attention is the same memory with v̄_t = 0 and β_t = 1: it can only add, never replace.

- recurrent form (generation): one update per token, O(d_v d_φ) state whatever the length;
- chunked form (training): exact, chunk by chunk. Inside a chunk the writes u_t = β_t (v_t − W_{t−1} φ(k_t))
  solve a unit lower-triangular system (the "UT transform" of Yang et al. 2024), after which outputs and the
  next chunk's W are matrix products: W_t = S + Σ_{s≤t} u_s φ(k_s)ᵀ for the chunk's initial state S.

Performer / FAVOR+ (Choromanski et al. 2020, Lemma 1): exp(qᵀk) = E_ω[φ(q)ᵀφ(k)] with the positive
random features φ(x) = exp(ωᵀx − ‖x‖²/2)/√m, ω ~ N(0, I_d), drawn in blocks of d exactly orthogonal rows
(each rescaled to a χ_d length). Softmax attention softmax(QKᵀ/√d)V is then linear attention over
φ(q/d^{1/4}), φ(k/d^{1/4}), non-causal or causal in chunks (prefix sums between them). Redraw policy: the features are drawn once
when the module is built (from torch's RNG, so the run's seed fixes them) and kept as a buffer, so training,
evaluation, checkpoints and token-by-token generation all use the same ω; `redraw()` draws new ones when a
caller wants to (Choromanski et al. also redraw during training; a fixed draw keeps outputs reproducible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.linear_attention import FastWeights, chunked_linear_attention, fast_weight_step
from seqlab.nn.transformer import HeadProjections

FeatureMap = Literal["dpfp", "elu"]
EPS = 1e-6


# --- delta rule --------------------------------------------------------------------------------------


def dpfp(x: Tensor, nu: int = 1) -> Tensor:
    """DPFP_ν (Schlag et al. 2021): r = [relu(x), relu(−x)], φ_{i,j}(x) = r_i r_{i+j}, j = 1..ν (2dν features)."""
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([r * torch.roll(r, shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)


def sum_normalised(phi: Tensor) -> Tensor:
    """φ / Σ_i φ_i (Schlag et al. 2021): every key and query is a convex weighting of the memory's columns."""
    return phi / (phi.sum(-1, keepdim=True) + EPS)


def delta_features(x: Tensor, kind: FeatureMap = "dpfp", nu: int = 1) -> Tensor:
    """The delta rule's φ: sum-normalised DPFP_ν or sum-normalised elu + 1."""
    return sum_normalised(dpfp(x, nu) if kind == "dpfp" else F.elu(x) + 1)


def delta_rule_step(W: Tensor, phi_q: Tensor, phi_k: Tensor, v: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """One write and one read: v̄ = W φ(k), W ← W + β (v − v̄) φ(k)ᵀ, y = W φ(q).

    W: (..., d_v, d_φ); phi_q, phi_k: (..., d_φ); v: (..., d_v); beta: (...). Returns (y_t, W_t).
    """
    v_bar = (W @ phi_k.unsqueeze(-1)).squeeze(-1)
    W = W + beta[..., None, None] * (v - v_bar).unsqueeze(-1) * phi_k.unsqueeze(-2)
    return (W @ phi_q.unsqueeze(-1)).squeeze(-1), W


def recurrent_delta_rule(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, beta: Tensor, W: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The delta rule token by token over (..., T, d) inputs, beta (..., T); returns (y (..., T, d_v), W_T)."""
    if W is None:
        W = v.new_zeros(*v.shape[:-2], v.shape[-1], phi_k.shape[-1])
    outputs = []
    for t in range(v.shape[-2]):
        y_t, W = delta_rule_step(W, phi_q[..., t, :], phi_k[..., t, :], v[..., t, :], beta[..., t])
        outputs.append(y_t)
    return torch.stack(outputs, dim=-2), W


def chunked_delta_rule(
    phi_q: Tensor, phi_k: Tensor, v: Tensor, beta: Tensor, chunk_size: int = 32, W: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The same outputs chunk by chunk (exact; at least float32 inside): per chunk with initial state S,

        (I + tril₋₁(diag β · K Kᵀ)) U = diag β · (V − K Sᵀ),   Y = Q Sᵀ + tril(Q Kᵀ) U,   S ← S + Uᵀ K.
    """
    dtype, T = v.dtype, v.shape[-2]
    chunk_size = max(1, min(chunk_size, T))
    work = torch.promote_types(dtype, torch.float32)
    phi_q, phi_k, v, beta = (x.to(work) for x in (phi_q, phi_k, v, beta))
    pad = -T % chunk_size
    if pad:  # padded positions write nothing (β = 0, φ(k) = 0) and their outputs are dropped
        phi_q, phi_k, v = (F.pad(x, (0, 0, 0, pad)) for x in (phi_q, phi_k, v))
        beta = F.pad(beta, (0, pad))
    S = v.new_zeros(*v.shape[:-2], v.shape[-1], phi_k.shape[-1]) if W is None else W.to(work)
    eye = torch.eye(chunk_size, dtype=work, device=v.device)
    outputs = []
    with torch.autocast(v.device.type, enabled=False):  # the triangular solve stays in float32 under bf16 autocast
        for start in range(0, T + pad, chunk_size):
            Q, K, V = (x[..., start : start + chunk_size, :] for x in (phi_q, phi_k, v))
            b = beta[..., start : start + chunk_size, None]  # (..., C, 1)
            A = eye + torch.tril(b * (K @ K.transpose(-2, -1)), diagonal=-1)
            U = torch.linalg.solve_triangular(A, b * (V - K @ S.transpose(-2, -1)), upper=False, unitriangular=True)
            outputs.append(Q @ S.transpose(-2, -1) + torch.tril(Q @ K.transpose(-2, -1)) @ U)
            S = S + U.transpose(-2, -1) @ K
    return torch.cat(outputs, dim=-2)[..., :T, :].to(dtype), S.to(dtype)


@dataclass
class DeltaFastWeights:
    """The delta rule's incremental cache: W (batch, heads, d_v, d_φ)."""

    W: Tensor


class DeltaRuleAttention(HeadProjections):
    """Multi-head delta-rule fast weights, a causal drop-in for self-attention (Schlag et al. 2021).

    `forward` runs the chunked form (or `recurrent=True`, the token loop); `step` carries W
    (batch, heads, d_k, d_φ), the same size after every token.
    """

    def __init__(
        self, d_model: int, num_heads: int, feature_map: FeatureMap = "dpfp", nu: int = 1, chunk_size: int = 32,
        bias: bool = True,
    ) -> None:
        super().__init__(d_model, num_heads, bias)
        self.feature_map, self.nu, self.chunk_size = feature_map, nu, chunk_size
        self.d_phi = 2 * self.d_k * nu if feature_map == "dpfp" else self.d_k
        self.W_beta = nn.Linear(d_model, num_heads)

    def programs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """φ(q), φ(k) (batch, heads, T, d_φ), v (batch, heads, T, d_k) and β = σ(w_β x) (batch, heads, T)."""
        phi_q = delta_features(self.split_heads(self.W_q(x)), self.feature_map, self.nu)
        phi_k = delta_features(self.split_heads(self.W_k(x)), self.feature_map, self.nu)
        beta = torch.sigmoid(self.W_beta(x)).transpose(1, 2)
        return phi_q, phi_k, self.split_heads(self.W_v(x)), beta

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        causal: bool = True, need_weights: bool = False, recurrent: bool = False,
    ) -> tuple[Tensor, None]:
        """Causal self-attention over x = query (key and value must be the same tensor); padded positions write nothing."""
        if not causal or key is not query or value is not query:
            raise ValueError("the delta rule is causal self-attention: call it with causal=True and query = key = value")
        phi_q, phi_k, v, beta = self.programs(query)
        if key_padding_mask is not None:
            beta = beta * (~key_padding_mask)[:, None, :].to(beta.dtype)
        heads, _ = (recurrent_delta_rule(phi_q, phi_k, v, beta) if recurrent
                    else chunked_delta_rule(phi_q, phi_k, v, beta, self.chunk_size))
        return self.merge_heads(heads), None

    def empty_cache(self, batch_size: int, like: Tensor) -> DeltaFastWeights:
        """Fast weights W_0 = 0: (batch, heads, d_k, d_φ)."""
        return DeltaFastWeights(like.new_zeros(batch_size, self.num_heads, self.d_k, self.d_phi))

    def step(self, x_t: Tensor, cache: DeltaFastWeights) -> tuple[Tensor, DeltaFastWeights]:
        """New positions x_t (batch, n, d_model), one delta-rule write and read each; the cache never grows."""
        phi_q, phi_k, v, beta = self.programs(x_t)
        heads, W = recurrent_delta_rule(phi_q, phi_k, v, beta, cache.W)
        return self.merge_heads(heads), DeltaFastWeights(W)


# --- Performer (FAVOR+) ------------------------------------------------------------------------------


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """m × d random features ω: blocks of d orthogonal directions (QR of a Gaussian matrix), each row given
    the length of an independent d-dimensional Gaussian vector, so every row is marginally N(0, I_d)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator))
        blocks.append(q.T)
    lengths = torch.randn(m, d, generator=generator).norm(dim=1, keepdim=True)
    return torch.cat(blocks)[:m] * lengths


def iid_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """m × d independent ω ~ N(0, I_d) (the estimator without the orthogonal coupling)."""
    return torch.randn(m, d, generator=generator)


def positive_random_features(x: Tensor, omega: Tensor, stabilise: bool = False) -> Tensor:
    """φ(x) = exp(ωᵀx − ‖x‖²/2)/√m for x (..., d), ω (m, d) → (..., m) (Choromanski et al. 2020, Lemma 1).

    With `stabilise` (queries only) each row is divided by its largest exp(·), a factor that cancels between
    the numerator and the denominator of attention.
    """
    exponent = x @ omega.T - (x * x).sum(-1, keepdim=True) / 2
    if stabilise:
        exponent = exponent - exponent.amax(-1, keepdim=True).detach()
    return torch.exp(exponent) / math.sqrt(omega.shape[0])


def favor_attention(
    q: Tensor, k: Tensor, v: Tensor, omega: Tensor, causal: bool = False, key_keep: Tensor | None = None
) -> Tensor:
    """FAVOR+ estimate of softmax(QKᵀ/√d)V on (..., T, d) tensors: D⁻¹ φ(Q)(φ(K)ᵀV), D = diag(φ(Q)φ(K)ᵀ1);
    causal in chunks (prefix sums between them). `key_keep` (..., T, 1) zeroes the features of padded keys."""
    scale = q.shape[-1] ** -0.25
    phi_q = positive_random_features(q * scale, omega, stabilise=True)
    phi_k = positive_random_features(k * scale, omega)
    if key_keep is not None:
        phi_k = phi_k * key_keep
    if causal:
        return chunked_linear_attention(phi_q, phi_k, v, EPS)
    numerator = phi_q @ (phi_k.transpose(-2, -1) @ v)
    return numerator / (phi_q @ phi_k.sum(-2).unsqueeze(-1) + EPS)


class PerformerAttention(HeadProjections):
    """Multi-head FAVOR+ attention with m orthogonal random features per head (shared by the heads); a
    drop-in for softmax self-attention whose incremental state is linear attention's (W, z) over φ."""

    def __init__(self, d_model: int, num_heads: int, features: int = 64, bias: bool = True) -> None:
        super().__init__(d_model, num_heads, bias)
        self.features = features
        self.register_buffer("omega", orthogonal_gaussian(features, self.d_k))  # from torch's RNG, like the weights

    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draw new orthogonal features ω in place (never called automatically)."""
        self.omega.copy_(orthogonal_gaussian(self.features, self.d_k, generator).to(self.omega))

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
        causal: bool = False, need_weights: bool = False,
    ) -> tuple[Tensor, None]:
        q, k, v = self.split_heads(self.W_q(query)), self.split_heads(self.W_k(key)), self.split_heads(self.W_v(value))
        keep = None if key_padding_mask is None else (~key_padding_mask)[:, None, :, None].to(q.dtype)
        return self.merge_heads(favor_attention(q, k, v, self.omega, causal, keep)), None

    def empty_cache(self, batch_size: int, like: Tensor) -> FastWeights:
        """W_0 = 0 (batch, heads, d_k, m) and z_0 = 0 (batch, heads, m) over the random features."""
        return FastWeights(like.new_zeros(batch_size, self.num_heads, self.d_k, self.features),
                           like.new_zeros(batch_size, self.num_heads, self.features))

    def step(self, x_t: Tensor, cache: FastWeights) -> tuple[Tensor, FastWeights]:
        """New positions x_t (batch, n, d_model): W += v φ(k)ᵀ, z += φ(k), y = W φ(q) / zᵀφ(q); the state never grows."""
        scale = self.d_k ** -0.25
        phi_q = positive_random_features(self.split_heads(self.W_q(x_t)) * scale, self.omega, stabilise=True)
        phi_k = positive_random_features(self.split_heads(self.W_k(x_t)) * scale, self.omega)
        v = self.split_heads(self.W_v(x_t))
        W, z = cache.W, cache.z
        outputs = []
        for t in range(x_t.shape[1]):
            y_t, W, z = fast_weight_step(W, z, phi_q[:, :, t], phi_k[:, :, t], v[:, :, t], EPS)
            outputs.append(y_t)
        return self.merge_heads(torch.stack(outputs, dim=2)), FastWeights(W, z)
