"""The Transformer's blocks (Vaswani et al. 2017; seed 002, "The Transformer Breakthrough").

- `scaled_dot_product_attention`: Attention(Q, K, V) = softmax(QKᵀ/√d_k) V, with a boolean mask of
  allowed (query, key) pairs built by `attention_mask` from key padding and causality;
- `MultiHeadAttention`: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with
  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V); `fast=True` computes the same thing through
  `torch.nn.functional.scaled_dot_product_attention`, and `fast="auto"` takes whichever of the two paths
  is faster where it runs (`fused_attention_pays`);
- positional encodings: sinusoidal PE(pos, 2i) = sin(pos / 10000^{2i/d}), PE(pos, 2i+1) = cos(...),
  learned, or none;
- `EncoderLayer` and `DecoderLayer`: sublayers wrapped as LayerNorm(x + Dropout(Sublayer(x)))
  (post-norm, the paper) or x + Dropout(Sublayer(LayerNorm(x))) (pre-norm), and their stacks.

Incremental decoding: a self-attention module's cache (`KVCache`, the keys and values seen so far, for
softmax attention; fast weights for linear attention) is passed in and returned explicitly by `step`,
never kept on the module; a stack's cache (`StackCache`) holds one per layer and the next position.
Every cache tensor is batch-first so beam search can reorder it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

T = TypeVar("T")
PositionalKind = Literal["sinusoidal", "learned", "none"]
Activation = Literal["relu", "gelu"]
FastAttention = bool | Literal["auto"]


def fused_attention_pays(device: torch.device, q_len: int) -> bool:
    """Whether torch's fused attention kernel is the faster path for `q_len` queries on `device` as autocast
    stands. Everywhere but two places on the CPU (BENCHMARKS.md, issue 14): under bf16 autocast, where seqlab's
    QKᵀ and αV run as oneDNN bf16 GEMMs (training 1.34× faster, 53 % against 41 % of the bf16 peak), and for
    one query per row, a decoding step, where two small matmuls beat the flash kernel (1.1–2.5×)."""
    if device.type != "cpu":
        return True
    cpu_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return not cpu_bf16 and q_len > 1


def attention_mask(key_padding_mask: Tensor | None, causal: bool, q_len: int, k_len: int) -> Tensor | None:
    """Allowed (query, key) pairs, broadcastable to (batch, heads, q_len, k_len); None if all are allowed.

    `key_padding_mask` is (batch, k_len) with True at padding. With `causal`, the queries are the last
    `q_len` of the `k_len` positions and query i may see keys j ≤ k_len − q_len + i (never the future).
    """
    allowed = None
    if causal:
        device = key_padding_mask.device if key_padding_mask is not None else None
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)
    if key_padding_mask is not None:
        keys = ~key_padding_mask[:, None, None, :]  # (batch, 1, 1, k_len)
        allowed = keys if allowed is None else allowed & keys
    return allowed


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None, dropout: float = 0.0
) -> tuple[Tensor, Tensor]:
    """softmax(QKᵀ/√d_k) V (Vaswani et al. 2017, eq. 1) on (..., T, d) tensors; returns (output, weights α)."""
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., q_len, k_len)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    alpha = scores.softmax(dim=-1)
    dropped = F.dropout(alpha, dropout) if dropout > 0 else alpha
    return dropped @ v, alpha


@dataclass
class KVCache:
    """One self-attention layer's keys and values so far: (batch, heads, tokens, d_k) each."""

    k: Tensor
    v: Tensor


@dataclass
class StackCache:
    """A stack's incremental-decoding state: each layer's self-attention cache and the next position."""

    layers: list[Any]
    position: int = 0


class HeadProjections(nn.Module):
    """The projections W^Q, W^K, W^V, W^O of multi-head attention (§3.2.2) and the split into h heads of
    d_k = d_model / h, shared by softmax and linear attention."""

    def __init__(self, d_model: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model = {d_model} must be divisible by num_heads = {num_heads}")
        self.num_heads, self.d_k = num_heads, d_model // num_heads
        self.W_q = nn.Linear(d_model, d_model, bias=bias)
        self.W_k = nn.Linear(d_model, d_model, bias=bias)
        self.W_v = nn.Linear(d_model, d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.d_k).transpose(1, 2)  # (batch, heads, length, d_k)

    def merge_heads(self, heads: Tensor) -> Tensor:
        """Concat(head_1, …, head_h) W^O: (batch, heads, length, d_k) → (batch, length, d_model)."""
        batch, _, length, _ = heads.shape
        return self.W_o(heads.transpose(1, 2).reshape(batch, length, self.num_heads * self.d_k))


class MultiHeadAttention(HeadProjections):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(QW_i^Q, KW_i^K, VW_i^V) (§3.2.2)."""

    def __init__(
        self, d_model: int, num_heads: int, dropout: float = 0.0, fast: FastAttention = True, bias: bool = True
    ) -> None:
        super().__init__(d_model, num_heads, bias)
        self.dropout, self.fast = dropout, fast

    def keys_values(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """K W^K and V W^V split into heads: (batch, heads, k_len, d_k) each."""
        return self.split_heads(self.W_k(key)), self.split_heads(self.W_v(value))

    def attend(
        self, query: Tensor, K: Tensor, V: Tensor, allowed: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `query` (batch, q_len, d_model) to projected keys/values; weights (batch, heads, q_len, k_len)."""
        Q = self.split_heads(self.W_q(query))
        dropout = self.dropout if self.training else 0.0
        fused = self.fast is True or (self.fast == "auto" and fused_attention_pays(Q.device, Q.shape[2]))
        if fused and not need_weights:
            heads = F.scaled_dot_product_attention(Q, K, V, attn_mask=allowed, dropout_p=dropout)
            alpha = None
        else:
            heads, alpha = scaled_dot_product_attention(Q, K, V, allowed, dropout)
        return self.merge_heads(heads), alpha

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        K, V = self.keys_values(key, value)
        allowed = attention_mask(key_padding_mask, causal, query.shape[1], key.shape[1])
        return self.attend(query, K, V, allowed, need_weights)

    def empty_cache(self, batch_size: int, like: Tensor) -> KVCache:
        """The self-attention cache before any token: no keys, no values."""
        empty = like.new_zeros(batch_size, self.num_heads, 0, self.d_k)
        return KVCache(empty, empty)

    def step(self, x_t: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        """Causal self-attention for new positions x_t (batch, n, d_model) given the cached keys and values."""
        k_t, v_t = self.keys_values(x_t, x_t)
        K, V = torch.cat([cache.k, k_t], dim=2), torch.cat([cache.v, v_t], dim=2)
        allowed = attention_mask(None, True, x_t.shape[1], K.shape[2]) if x_t.shape[1] > 1 else None
        output, _ = self.attend(x_t, K, V, allowed)
        return output, KVCache(K, V)


def sinusoids(length: int, d_model: int, start: int = 0, device: torch.device | None = None) -> Tensor:
    """PE(pos, 2i) = sin(pos/10000^{2i/d_model}), PE(pos, 2i+1) = cos(pos/10000^{2i/d_model}) (§3.5)."""
    pos = torch.arange(start, start + length, dtype=torch.float32, device=device)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
    angle = pos / 10000 ** (two_i / d_model)  # (length, ceil(d_model/2))
    pe = torch.zeros(length, d_model, device=device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe


class PositionalEncoding(nn.Module):
    """Adds position information to embeddings: sinusoidal (fixed), learned (a table), or none."""

    def __init__(self, kind: PositionalKind, d_model: int, max_len: int = 1024) -> None:
        super().__init__()
        self.kind, self.d_model, self.max_len = kind, d_model, max_len
        self.table = nn.Embedding(max_len, d_model) if kind == "learned" else None
        # The first max_len sinusoids, computed once (a decoding step would otherwise rebuild its row with ~10
        # operators); not saved with the weights, since they are a function of the position.
        self.register_buffer("sines", sinusoids(max_len, d_model) if kind == "sinusoidal" else None, persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """x (batch, length, d_model) holding positions start, start+1, ...; returns x + PE."""
        length = x.shape[1]
        if self.kind == "none":
            return x
        if self.kind == "sinusoidal":
            within = self.sines is not None and start + length <= self.sines.shape[0]
            pe = self.sines[start: start + length] if within else sinusoids(length, self.d_model, start, x.device)
            return x + pe.to(x.dtype)
        assert self.table is not None
        if start + length > self.max_len:
            raise ValueError(
                f"position {start + length - 1} is beyond the learned table of {self.max_len} positions; "
                "raise the model's max_len or use sinusoidal encodings"
            )
        return x + self.table(torch.arange(start, start + length, device=x.device))


class FeedForward(nn.Module):
    """FFN(x) = max(0, xW_1 + b_1) W_2 + b_2, applied at every position alike (§3.3)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: Activation = "relu") -> None:
        super().__init__()
        self.W_1, self.W_2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.activation = F.relu if activation == "relu" else F.gelu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.W_2(self.dropout(self.activation(self.W_1(x))))


class Residual(nn.Module):
    """A sublayer f in its residual connection (§5.4): LayerNorm(x + Dropout(f(x))) post-norm (the paper),
    or x + Dropout(f(LayerNorm(x))) pre-norm. An f that returns (output, extra) (attention weights, a
    cache) gets (the sum, extra) back."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    @overload
    def forward(self, x: Tensor, f: Callable[[Tensor], tuple[Tensor, T]]) -> tuple[Tensor, T]: ...
    @overload
    def forward(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor: ...

    def forward(self, x: Tensor, f: Callable[[Tensor], Any]) -> Any:
        out = f(self.norm(x)) if self.norm_first else f(x)
        output, extra = out if isinstance(out, tuple) else (out, None)
        y = x + self.dropout(output)
        y = y if self.norm_first else self.norm(y)
        return (y, extra) if isinstance(out, tuple) else y


class EncoderLayer(nn.Module):
    """Self-attention then a feed-forward network, each in a residual wrapper (§3.1, encoder).

    With `causal=True` it is also the decoder-only language model's layer; its self-attention may be
    softmax multi-head attention or linear attention (any module with the same forward/step/empty_cache),
    and its feed-forward network `ffn` any position-wise module (default: `FeedForward`; e.g. a mixture of experts).
    """

    def __init__(
        self, d_model: int, self_attn: nn.Module, d_ff: int, dropout: float = 0.1,
        norm_first: bool = False, activation: Activation = "relu", ffn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.ffn = FeedForward(d_model, d_ff, dropout, activation) if ffn is None else ffn
        self.attn_residual = Residual(d_model, dropout, norm_first)
        self.ffn_residual = Residual(d_model, dropout, norm_first)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        x, _ = self.attn_residual(x, lambda h: self.self_attn(h, h, h, key_padding_mask, causal))
        return self.ffn_residual(x, self.ffn)

    def step(self, x_t: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """The causal layer on new positions x_t (batch, n, d_model), given and returning its attention cache."""
        x_t, cache = self.attn_residual(x_t, lambda h: self.self_attn.step(h, cache))
        return self.ffn_residual(x_t, self.ffn), cache


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder's memory, feed-forward; each residual (§3.1, decoder)."""

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1,
        norm_first: bool = False, activation: Activation = "relu", fast: FastAttention = True,
        attention_dropout: float | None = None,
    ) -> None:
        super().__init__()
        on_weights = dropout if attention_dropout is None else attention_dropout  # dropout on the attention weights
        self.self_attn = MultiHeadAttention(d_model, num_heads, on_weights, fast)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, on_weights, fast)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.self_residual = Residual(d_model, dropout, norm_first)
        self.cross_residual = Residual(d_model, dropout, norm_first)
        self.ffn_residual = Residual(d_model, dropout, norm_first)

    def forward(
        self, y: Tensor, memory: Tensor, memory_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None, need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """y (batch, tgt_len, d_model) attends causally to itself and fully to memory (batch, src_len, d_model)."""
        y, _ = self.self_residual(y, lambda h: self.self_attn(h, h, h, tgt_padding_mask, causal=True))
        allowed = attention_mask(memory_padding_mask, False, y.shape[1], memory.shape[1])
        return self._cross_and_ffn(y, self.memory_cache(memory), allowed, need_weights)

    def memory_cache(self, memory: Tensor) -> KVCache:
        """The memory's keys and values for this layer's cross-attention, projected once per source sentence
        and laid out head by head (contiguous), so that no decoding step copies them to multiply."""
        K, V = self.cross_attn.keys_values(memory, memory)
        return KVCache(K.contiguous(), V.contiguous())

    def _cross_and_ffn(
        self, y: Tensor, memory: KVCache, allowed: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Attention over the memory's projected keys/values (at the `allowed` source positions), then the
        feed-forward network; and the weights α."""
        y, alpha = self.cross_residual(y, lambda h: self.cross_attn.attend(h, memory.k, memory.v, allowed, need_weights))
        return self.ffn_residual(y, self.ffn), alpha

    def step(
        self, y_t: Tensor, memory: KVCache, memory_allowed: Tensor | None, cache: KVCache,
        need_weights: bool = False,
    ) -> tuple[Tensor, KVCache, Tensor | None]:
        """One new target position y_t (batch, 1, d_model) with cached self-attention keys/values, the
        memory's keys/values projected once (`memory_cache`) and its `attention_mask` (batch, 1, 1, src_len)."""
        y_t, cache = self.self_residual(y_t, lambda h: self.self_attn.step(h, cache))
        y_t, alpha = self._cross_and_ffn(y_t, memory, memory_allowed, need_weights)
        return y_t, cache, alpha


class EncoderStack(nn.Module):
    """N encoder (or causal decoder-only) layers; pre-norm stacks end with one more LayerNorm."""

    def __init__(self, layers: list[EncoderLayer], d_model: int, norm_first: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask, causal)
        return self.final_norm(x)

    def empty_cache(self, batch_size: int, like: Tensor) -> StackCache:
        return StackCache([layer.self_attn.empty_cache(batch_size, like) for layer in self.layers])

    def step(self, x_t: Tensor, cache: StackCache) -> tuple[Tensor, StackCache]:
        """Run new positions x_t (batch, n, d_model) through every layer causally, extending the cache."""
        layers = []
        for layer, layer_cache in zip(self.layers, cache.layers):
            x_t, layer_cache = layer.step(x_t, layer_cache)
            layers.append(layer_cache)
        return self.final_norm(x_t), StackCache(layers, cache.position + x_t.shape[1])


class DecoderStack(nn.Module):
    """N decoder layers over an encoder's memory; pre-norm stacks end with one more LayerNorm."""

    def __init__(self, layers: list[DecoderLayer], d_model: int, norm_first: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(
        self, y: Tensor, memory: Tensor, memory_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None, need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Returns the decoder states and the last layer's cross-attention (batch, heads, tgt_len, src_len)."""
        alpha = None
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            y, alpha = layer(y, memory, memory_padding_mask, tgt_padding_mask, need_weights and last)
        return self.final_norm(y), alpha

    def memory_caches(self, memory: Tensor) -> list[KVCache]:
        """Each layer's cross-attention keys and values, projected once per source sentence."""
        return [layer.memory_cache(memory) for layer in self.layers]

    def empty_cache(self, batch_size: int, like: Tensor) -> StackCache:
        return StackCache([layer.self_attn.empty_cache(batch_size, like) for layer in self.layers])

    def step(
        self, y_t: Tensor, memory: list[KVCache], memory_allowed: Tensor | None, cache: StackCache
    ) -> tuple[Tensor, StackCache, Tensor]:
        """One target position y_t (batch, 1, d_model) over the memory's keys/values (`memory_caches`) at its
        allowed positions (`attention_mask` of its padding); returns states, new cache, last layer's cross-attention."""
        layers, alpha = [], None
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            y_t, layer_cache, alpha = layer.step(y_t, memory[index], memory_allowed, cache.layers[index], last)
            layers.append(layer_cache)
        assert alpha is not None
        return self.final_norm(y_t), StackCache(layers, cache.position + 1), alpha
