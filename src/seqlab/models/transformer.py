"""Whole Transformer models (Vaswani et al. 2017; seeds 002 and 004):

- ``transformer``: the encoder–decoder for translation (seq2seq tasks), with the incremental-decoding
  interface of `seqlab.inference.search` (encode / init_state / step, the self-attention key/value
  cache carried in the state, each layer's memory keys/values projected once in `encode`);
- ``transformer_lm``: a decoder-only language model (causal self-attention, softmax or linear), its
  output projection tied to the token embedding; generation by `init_state(batch_size)` and
  `step(state, tokens)`, the cache being keys/values (softmax) or fast weights (linear);
- ``transformer_encoder``: an encoder with a head for classify / regress / per-token tasks (the
  synthetic tasks of the tour: long-range dependencies, order sensitivity).

Token embeddings are multiplied by √d_model before the positional encoding is added (§3.4).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from seqlab.config import ConfigError, Spec
from seqlab.data.base import Batch, TaskInfo
from seqlab.nn.linear_attention import LinearAttention
from seqlab.nn.transformer import (
    Activation, Cache, DecoderLayer, DecoderStack, EncoderLayer, EncoderStack, MultiHeadAttention,
    PositionalEncoding, PositionalKind,
)
from seqlab.registry import MODELS

AttentionKind = Literal["softmax", "linear"]


class _TransformerSizes(Spec):
    d_model: int = Field(128, ge=1)
    num_heads: int = Field(4, ge=1)
    d_ff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    positional: PositionalKind = "sinusoidal"
    max_len: int = Field(1024, ge=1, description="learned positional encodings: positions in the table")
    norm_first: bool = Field(False, description="pre-norm (LayerNorm inside the residual) instead of the paper's post-norm")
    activation: Activation = "relu"
    fast_attention: bool = Field(True, description="softmax attention through torch's fused scaled_dot_product_attention")


def _check_heads(spec: _TransformerSizes) -> None:
    if spec.d_model % spec.num_heads:
        raise ConfigError(f"model.d_model = {spec.d_model} must be divisible by model.num_heads = {spec.num_heads}.")


class TokenEmbedding(nn.Module):
    """x = E[token] · √d_model + PE(position) (§3.4–3.5), then dropout."""

    def __init__(self, vocab_size: int, spec: _TransformerSizes, pad_id: int = 0) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, spec.d_model, padding_idx=pad_id)
        nn.init.normal_(self.table.weight, std=spec.d_model**-0.5)
        with torch.no_grad():
            self.table.weight[pad_id].zero_()
        self.scale = math.sqrt(spec.d_model)
        self.position = PositionalEncoding(spec.positional, spec.d_model, spec.max_len)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        return self.dropout(self.position(self.table(tokens) * self.scale, start))


class NumericEmbedding(nn.Module):
    """x = W_in u + b + PE(position) for numeric inputs u (batch, time, features), then dropout."""

    def __init__(self, input_dim: int, spec: _TransformerSizes) -> None:
        super().__init__()
        self.W_in = nn.Linear(input_dim, spec.d_model)
        self.position = PositionalEncoding(spec.positional, spec.d_model, spec.max_len)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, u: Tensor) -> Tensor:
        return self.dropout(self.position(self.W_in(u)))


def _encoder_layers(spec: _TransformerSizes, count: int, attention: AttentionKind = "softmax") -> EncoderStack:
    def attention_module() -> nn.Module:
        if attention == "linear":
            return LinearAttention(spec.d_model, spec.num_heads)
        return MultiHeadAttention(spec.d_model, spec.num_heads, spec.dropout, spec.fast_attention)

    layers = [
        EncoderLayer(spec.d_model, attention_module(), spec.d_ff, spec.dropout, spec.norm_first, spec.activation)
        for _ in range(count)
    ]
    return EncoderStack(layers, spec.d_model, spec.norm_first)


# --- encoder–decoder for translation ---------------------------------------------------------------


class TransformerSpec(_TransformerSizes):
    """The encoder–decoder Transformer (base: d_model 512, 8 heads, 6+6 layers, d_ff 2048)."""

    name: Literal["transformer"] = "transformer"
    num_encoder_layers: int = Field(3, ge=1)
    num_decoder_layers: int = Field(3, ge=1)
    tie_embeddings: bool = Field(True, description="decoder input embedding = output projection (§3.4)")


class TransformerSeq2Seq(nn.Module):
    """Encoder over `src`, decoder over `tgt_in` attending to it; logits (batch, tgt_len, tgt_vocab)."""

    def __init__(self, spec: TransformerSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "seq2seq" or info.vocab_size is None:
            raise ConfigError(f"the transformer model translates (seq2seq tasks), not {info.kind!r} tasks; "
                              "use transformer_lm or transformer_encoder.")
        _check_heads(spec)
        self.pad_id = info.pad_id
        self.src_embed = TokenEmbedding(info.vocab_size, spec, info.pad_id)
        self.tgt_embed = TokenEmbedding(info.output_dim, spec, info.pad_id)
        self.encoder = _encoder_layers(spec, spec.num_encoder_layers)
        self.decoder = DecoderStack(
            [DecoderLayer(spec.d_model, spec.num_heads, spec.d_ff, spec.dropout, spec.norm_first,
                          spec.activation, spec.fast_attention) for _ in range(spec.num_decoder_layers)],
            spec.d_model, spec.norm_first,
        )
        self.out = nn.Linear(spec.d_model, info.output_dim, bias=False)
        if spec.tie_embeddings:
            self.out.weight = self.tgt_embed.table.weight

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """Memory: encoder states (batch, src_len, d_model), the source padding mask, and every decoder
        layer's cross-attention keys/values (batch, heads, src_len, d_k), projected once."""
        src = batch["src"]
        padding = src == self.pad_id
        memory = self.encoder(self.src_embed(src), padding)
        return {"memory": memory, "src_padding": padding, **self.decoder.memory_keys_values(memory)}

    def forward(self, batch: Batch) -> Tensor:
        memory = self.encode(batch)
        y, _ = self.decoder(self.tgt_embed(batch["tgt_in"]), memory["memory"], memory["src_padding"])
        return self.out(y)

    def init_state(self, memory: dict[str, Tensor]) -> Cache:
        """An empty key/value cache per decoder layer: (batch, heads, 0, d_k)."""
        return self.decoder.empty_cache(memory["memory"].shape[0], memory["memory"])

    def step(self, memory: dict[str, Tensor], state: Cache, tokens: Tensor) -> tuple[Tensor, Cache, Tensor]:
        """Previous tokens (batch,) → log-probabilities (batch, tgt_vocab), the extended cache, and the
        last layer's cross-attention averaged over heads (batch, src_len)."""
        position = state["0.k"].shape[2]
        y_t = self.tgt_embed(tokens[:, None], start=position)
        y_t, state, alpha = self.decoder.step(y_t, memory, memory["src_padding"], state)
        return torch.log_softmax(self.out(y_t[:, 0]), dim=-1), state, alpha.mean(dim=1)[:, 0]


@MODELS.register("transformer", TransformerSpec)
def build_transformer(spec: TransformerSpec, info: TaskInfo) -> nn.Module:
    return TransformerSeq2Seq(spec, info)


# --- decoder-only language model -------------------------------------------------------------------


class TransformerLMSpec(_TransformerSizes):
    """A decoder-only language model (GPT-style); `attention: linear` makes it a linear Transformer."""

    name: Literal["transformer_lm"] = "transformer_lm"
    num_layers: int = Field(4, ge=1)
    attention: AttentionKind = Field("softmax", description="softmax, or linear (a fast weight programmer)")
    tie_embeddings: bool = Field(True, description="output projection = token embedding (Press & Wolf 2017)")


class TransformerLM(nn.Module):
    """p(x_{t+1} | x_≤t) from causal self-attention layers; logits (batch, time, vocab)."""

    def __init__(self, spec: TransformerLMSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "tokens" or info.vocab_size is None:
            raise ConfigError(f"transformer_lm models token sequences (tokens tasks such as lm), not {info.kind!r}.")
        _check_heads(spec)
        self.embed = TokenEmbedding(info.vocab_size, spec, info.pad_id)
        self.layers = _encoder_layers(spec, spec.num_layers, spec.attention)
        self.out = nn.Linear(spec.d_model, info.output_dim, bias=False)
        if spec.tie_embeddings:
            self.out.weight = self.embed.table.weight

    def forward(self, batch: Batch) -> Tensor:
        return self.out(self.layers(self.embed(batch["inputs"]), causal=True))

    def init_state(self, batch_size: int) -> Cache:
        """Every layer's empty cache (keys/values, or fast weights W = 0, z = 0) and the position 0."""
        weight = self.embed.table.weight
        state = self.layers.empty_cache(batch_size, weight)
        state["position"] = torch.zeros(batch_size, dtype=torch.long, device=weight.device)
        return state

    def step(self, state: Cache, tokens: Tensor) -> tuple[Tensor, Cache]:
        """tokens (batch,) at the state's position → next-token logits (batch, vocab) and the new state."""
        position = state["position"]
        cache = {key: value for key, value in state.items() if key != "position"}
        x_t = self.embed(tokens[:, None], start=int(position[0]) if position.numel() else 0)
        h_t, cache = self.layers.step(x_t, cache)
        return self.out(h_t[:, 0]), {**cache, "position": position + 1}


@MODELS.register("transformer_lm", TransformerLMSpec)
def build_transformer_lm(spec: TransformerLMSpec, info: TaskInfo) -> nn.Module:
    return TransformerLM(spec, info)


# --- encoder with a task head ----------------------------------------------------------------------


class TransformerEncoderSpec(_TransformerSizes):
    """An encoder for classify / regress / per-token tasks, over token ids or numeric inputs."""

    name: Literal["transformer_encoder"] = "transformer_encoder"
    num_layers: int = Field(2, ge=1)
    causal: bool = Field(False, description="mask the future (each position sees only itself and the past)")
    pooling: Literal["mean", "last", "first"] = Field("mean", description="classify/regress: how positions are pooled")


class TransformerEncoderModel(nn.Module):
    """Embed (tokens) or project (numbers), add positions, encode; then a linear head per task kind."""

    def __init__(self, spec: TransformerEncoderSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind not in ("classify", "regress", "tokens") or not info.sequence:
            raise ConfigError("transformer_encoder needs a sequence task of kind classify, regress or tokens; "
                              "use the transformer model for seq2seq.")
        _check_heads(spec)
        self.kind, self.pooling, self.causal, self.pad_id = info.kind, spec.pooling, spec.causal, info.pad_id
        self.embed: nn.Module
        if info.vocab_size is not None:
            self.embed = TokenEmbedding(info.vocab_size, spec, info.pad_id)
        elif info.input_dim is not None:
            self.embed = NumericEmbedding(info.input_dim, spec)
        else:
            raise ConfigError("transformer_encoder needs token inputs (vocab_size) or numeric inputs (input_dim).")
        self.encoder = _encoder_layers(spec, spec.num_layers)
        self.head = nn.Linear(spec.d_model, info.output_dim)

    def inputs(self, batch: Batch) -> Tensor:
        x = batch["inputs"]
        if isinstance(self.embed, TokenEmbedding):
            return self.embed(x.long())
        x = x.float()
        return self.embed(x.unsqueeze(-1) if x.dim() == 2 else x)

    def encode(self, batch: Batch, x: Tensor | None = None) -> Tensor:
        """Encoder states (batch, time, d_model); `x` replaces the embedded inputs (gradient diagnostics)."""
        x = self.inputs(batch) if x is None else x
        lengths = batch.get("lengths")
        padding = None
        if lengths is not None:
            padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths.to(x.device)[:, None]
        return self.encoder(x, padding, self.causal)

    def head_output(self, h: Tensor, batch: Batch) -> Tensor:
        if self.kind == "tokens":
            return self.head(h)
        lengths = batch.get("lengths")
        if self.pooling == "first":
            return self.head(h[:, 0])
        if self.pooling == "last":
            last = (lengths.to(h.device) - 1) if lengths is not None else torch.full((h.shape[0],), h.shape[1] - 1, device=h.device)
            return self.head(h[torch.arange(h.shape[0], device=h.device), last.long()])
        if lengths is None:
            return self.head(h.mean(dim=1))
        valid = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths.to(h.device)[:, None]).to(h.dtype)
        return self.head((h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True))

    def forward(self, batch: Batch) -> Tensor:
        return self.head_output(self.encode(batch), batch)


@MODELS.register("transformer_encoder", TransformerEncoderSpec)
def build_transformer_encoder(spec: TransformerEncoderSpec, info: TaskInfo) -> nn.Module:
    return TransformerEncoderModel(spec, info)
