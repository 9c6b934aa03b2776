"""The Transformer's blocks (Vaswani et al. 2017; seed 002, "The Transformer Breakthrough").

- `scaled_dot_product_attention`: Attention(Q, K, V) = softmax(QKᵀ/√d_k) V, with a boolean mask of
  allowed (query, key) pairs built by `attention_mask` from key padding and causality;
- `MultiHeadAttention`: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with
  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V); `fast=True` computes the same thing through
  `torch.nn.functional.scaled_dot_product_attention`;
- positional encodings: sinusoidal PE(pos, 2i) = sin(pos / 10000^{2i/d}), PE(pos, 2i+1) = cos(...),
  learned, or none;
- `EncoderLayer` and `DecoderLayer`: sublayers wrapped as LayerNorm(x + Dropout(Sublayer(x)))
  (post-norm, the paper) or x + Dropout(Sublayer(LayerNorm(x))) (pre-norm), and their stacks.

Incremental decoding: a self-attention module's cache (keys and values seen so far for softmax
attention, fast weights for linear attention) is passed in and returned explicitly by `step`, never
kept on the module. Every cache tensor is batch-first so beam search can reorder it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Cache = dict[str, Tensor]
PositionalKind = Literal["sinusoidal", "learned", "none"]
Activation = Literal["relu", "gelu"]


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


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(QW_i^Q, KW_i^K, VW_i^V) (§3.2.2)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, fast: bool = True, bias: bool = True) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model = {d_model} must be divisible by num_heads = {num_heads}")
        self.num_heads, self.d_k = num_heads, d_model // num_heads
        self.dropout, self.fast = dropout, fast
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

    def keys_values(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """K W^K and V W^V split into heads: (batch, heads, k_len, d_k) each."""
        return self.split_heads(self.W_k(key)), self.split_heads(self.W_v(value))

    def attend(
        self, query: Tensor, K: Tensor, V: Tensor, allowed: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `query` (batch, q_len, d_model) to projected keys/values; weights (batch, heads, q_len, k_len)."""
        Q = self.split_heads(self.W_q(query))
        dropout = self.dropout if self.training else 0.0
        if self.fast and not need_weights:
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

    def empty_cache(self, batch_size: int, like: Tensor) -> Cache:
        """The self-attention cache before any token: no keys, no values."""
        empty = like.new_zeros(batch_size, self.num_heads, 0, self.d_k)
        return {"k": empty, "v": empty}

    def step(self, x_t: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        """Causal self-attention for new positions x_t (batch, n, d_model) given the cached keys and values."""
        k_t, v_t = self.keys_values(x_t, x_t)
        K, V = torch.cat([cache["k"], k_t], dim=2), torch.cat([cache["v"], v_t], dim=2)
        allowed = attention_mask(None, True, x_t.shape[1], K.shape[2]) if x_t.shape[1] > 1 else None
        output, _ = self.attend(x_t, K, V, allowed)
        return output, {"k": K, "v": V}


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

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """x (batch, length, d_model) holding positions start, start+1, ...; returns x + PE."""
        length = x.shape[1]
        if self.kind == "none":
            return x
        if self.kind == "sinusoidal":
            return x + sinusoids(length, self.d_model, start, x.device).to(x.dtype)
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
    """A sublayer's wrapper: LayerNorm(x + Dropout(Sublayer(x))) post-norm, or x + Dropout(Sublayer(LayerNorm(x))) pre-norm."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def inner(self, x: Tensor) -> Tensor:
        """What the sublayer reads."""
        return self.norm(x) if self.norm_first else x

    def outer(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        """The residual sum, normalised after it in post-norm."""
        y = x + self.dropout(sublayer_out)
        return y if self.norm_first else self.norm(y)


class EncoderLayer(nn.Module):
    """Self-attention then a feed-forward network, each in a residual wrapper (§3.1, encoder).

    With `causal=True` it is also the decoder-only language model's layer; its self-attention may be
    softmax multi-head attention or linear attention (any module with the same forward/step/empty_cache).
    """

    def __init__(
        self, d_model: int, self_attn: nn.Module, d_ff: int, dropout: float = 0.1,
        norm_first: bool = False, activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.attn_residual = Residual(d_model, dropout, norm_first)
        self.ffn_residual = Residual(d_model, dropout, norm_first)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, causal: bool = False) -> Tensor:
        h = self.attn_residual.inner(x)
        x = self.attn_residual.outer(x, self.self_attn(h, h, h, key_padding_mask, causal)[0])
        return self.ffn_residual.outer(x, self.ffn(self.ffn_residual.inner(x)))

    def step(self, x_t: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        """The causal layer on new positions x_t (batch, n, d_model), given and returning its attention cache."""
        attended, cache = self.self_attn.step(self.attn_residual.inner(x_t), cache)
        x_t = self.attn_residual.outer(x_t, attended)
        return self.ffn_residual.outer(x_t, self.ffn(self.ffn_residual.inner(x_t))), cache


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder's memory, feed-forward; each residual (§3.1, decoder)."""

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1,
        norm_first: bool = False, activation: Activation = "relu", fast: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, fast)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout, fast)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.self_residual = Residual(d_model, dropout, norm_first)
        self.cross_residual = Residual(d_model, dropout, norm_first)
        self.ffn_residual = Residual(d_model, dropout, norm_first)

    def _cross_and_ffn(
        self, y: Tensor, memory_kv: tuple[Tensor, Tensor], allowed: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        attended, alpha = self.cross_attn.attend(self.cross_residual.inner(y), *memory_kv, allowed, need_weights)
        y = self.cross_residual.outer(y, attended)
        return self.ffn_residual.outer(y, self.ffn(self.ffn_residual.inner(y))), alpha

    def forward(
        self, y: Tensor, memory: Tensor, memory_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None, need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """y (batch, tgt_len, d_model) attends causally to itself and fully to memory (batch, src_len, d_model)."""
        h = self.self_residual.inner(y)
        y = self.self_residual.outer(y, self.self_attn(h, h, h, tgt_padding_mask, causal=True)[0])
        allowed = attention_mask(memory_padding_mask, False, y.shape[1], memory.shape[1])
        return self._cross_and_ffn(y, self.cross_attn.keys_values(memory, memory), allowed, need_weights)

    def step(
        self, y_t: Tensor, memory_kv: tuple[Tensor, Tensor], memory_padding_mask: Tensor | None,
        cache: Cache, need_weights: bool = False,
    ) -> tuple[Tensor, Cache, Tensor | None]:
        """One new target position y_t (batch, 1, d_model) with cached self-attention keys/values and
        the memory's keys/values projected once (`cross_attn.keys_values`)."""
        attended, cache = self.self_attn.step(self.self_residual.inner(y_t), cache)
        y_t = self.self_residual.outer(y_t, attended)
        allowed = attention_mask(memory_padding_mask, False, y_t.shape[1], memory_kv[0].shape[2])
        y_t, alpha = self._cross_and_ffn(y_t, memory_kv, allowed, need_weights)
        return y_t, cache, alpha


def layer_caches(layers: nn.ModuleList, batch_size: int, like: Tensor) -> Cache:
    """Every layer's empty self-attention cache, keys prefixed by the layer index ('0.k', '0.v', ...)."""
    return {
        f"{index}.{key}": value
        for index, layer in enumerate(layers)
        for key, value in layer.self_attn.empty_cache(batch_size, like).items()
    }


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

    def empty_cache(self, batch_size: int, like: Tensor) -> Cache:
        return layer_caches(self.layers, batch_size, like)

    def step(self, x_t: Tensor, cache: Cache) -> tuple[Tensor, Cache]:
        """Run new positions x_t (batch, n, d_model) through every layer causally, extending the cache."""
        new_cache: Cache = {}
        for index, layer in enumerate(self.layers):
            prefix = f"{index}."
            mine = {key[len(prefix):]: value for key, value in cache.items() if key.startswith(prefix)}
            x_t, mine = layer.step(x_t, mine)
            new_cache.update({prefix + key: value for key, value in mine.items()})
        return self.final_norm(x_t), new_cache


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

    def memory_keys_values(self, memory: Tensor) -> Cache:
        """Each layer's cross-attention keys and values, projected once per source sentence."""
        cache: Cache = {}
        for index, layer in enumerate(self.layers):
            cache[f"cross.{index}.k"], cache[f"cross.{index}.v"] = layer.cross_attn.keys_values(memory, memory)
        return cache

    def empty_cache(self, batch_size: int, like: Tensor) -> Cache:
        return layer_caches(self.layers, batch_size, like)

    def step(
        self, y_t: Tensor, memory_kv: Cache, memory_padding_mask: Tensor | None, cache: Cache
    ) -> tuple[Tensor, Cache, Tensor]:
        """One target position y_t (batch, 1, d_model); returns states, new cache, last layer's cross-attention."""
        new_cache: Cache = {}
        alpha: Tensor | None = None
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            mine = {"k": cache[f"{index}.k"], "v": cache[f"{index}.v"]}
            kv = (memory_kv[f"cross.{index}.k"], memory_kv[f"cross.{index}.v"])
            y_t, mine, layer_alpha = layer.step(y_t, kv, memory_padding_mask, mine, need_weights=last)
            new_cache[f"{index}.k"], new_cache[f"{index}.v"] = mine["k"], mine["v"]
            alpha = layer_alpha if last else alpha
        assert alpha is not None
        return self.final_norm(y_t), new_cache, alpha
