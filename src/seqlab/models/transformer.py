"""Whole Transformer models (Vaswani et al. 2017; seeds 002 and 004):

- ``transformer``: the encoder–decoder for translation (seq2seq tasks); it decodes through the protocol
  of `seqlab.inference.decoding` (encode / init_state / step), the self-attention key/value cache
  carried in the state, each layer's memory keys/values projected once in `encode`;
- ``transformer_lm``: a decoder-only language model (causal self-attention: softmax, linear, delta-rule
  fast weights or Performer; feed-forward: dense or a mixture of experts), its output projection tied to
  the token embedding; the same protocol with empty memory, the cache being keys/values (softmax) or
  fast weights of constant size (linear, delta, performer);
- ``transformer_encoder``: an encoder with a head for classify / regress / per-token tasks (the
  synthetic tasks of the tour: long-range dependencies, order sensitivity).

Token embeddings are multiplied by √d_model before the positional encoding is added (§3.4).
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from seqlab.data.base import Batch, TaskInfo
from seqlab.models.base import LanguageModel, Memory
from seqlab.nn.fast_weights import DeltaRuleAttention, PerformerAttention
from seqlab.nn.linear_attention import LinearAttention
from seqlab.nn.moe import MoEFeedForward
from seqlab.nn.transformer import (
    Activation, DecoderLayer, DecoderStack, EncoderLayer, EncoderStack, FastAttention, MultiHeadAttention,
    PositionalEncoding, PositionalKind, StackCache, attention_mask,
)
from seqlab.registry import MODELS, Spec

AttentionKind = Literal["softmax", "linear", "delta", "performer"]


class _TransformerSizes(Spec):
    d_model: int = Field(128, ge=1)
    num_heads: int = Field(4, ge=1)
    d_ff: int = Field(512, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    positional: PositionalKind = "sinusoidal"
    max_len: int = Field(1024, ge=1, description="learned positional encodings: positions in the table")
    norm_first: bool = Field(False, description="pre-norm (LayerNorm inside the residual) instead of the paper's post-norm")
    activation: Activation = "relu"
    fast_attention: FastAttention = Field(
        "auto", description="softmax attention through torch's fused scaled_dot_product_attention (true), seqlab's "
        "readable softmax(QKᵀ/√d_k)V (false), or whichever is faster where it runs (auto: the readable path on the "
        "CPU under bf16 autocast and for one query per row, as in a decoding step; the fused kernel elsewhere)")
    attention_dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="dropout on the attention weights (default: model.dropout); 0 keeps only the "
        "paper's residual and embedding dropout (§5.4), and lets torch's fused CPU attention kernel, which has no "
        "dropout, run in training too")

    @property
    def weights_dropout(self) -> float:
        """The dropout applied to the attention weights."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout


def _check_heads(spec: _TransformerSizes) -> None:
    if spec.d_model % spec.num_heads:
        raise ValueError(f"model.d_model = {spec.d_model} must be divisible by model.num_heads = {spec.num_heads}.")


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


def _encoder_layers(
    spec: _TransformerSizes, count: int, attention: Callable[[], nn.Module] | None = None,
    ffn: Callable[[], nn.Module] | None = None,
) -> EncoderStack:
    """`count` encoder layers; `attention` and `ffn` make each layer's modules (default: softmax, dense)."""
    def softmax_attention() -> nn.Module:
        return MultiHeadAttention(spec.d_model, spec.num_heads, spec.weights_dropout, spec.fast_attention)

    layers = [
        EncoderLayer(spec.d_model, (attention or softmax_attention)(), spec.d_ff, spec.dropout, spec.norm_first,
                     spec.activation, ffn() if ffn is not None else None)
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


@MODELS.register("transformer", TransformerSpec)
class TransformerSeq2Seq(nn.Module):
    """Encoder over `src`, decoder over `tgt_in` attending to it; logits (batch, tgt_len, tgt_vocab)."""

    def __init__(self, spec: TransformerSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "seq2seq" or info.vocab_size is None:
            raise ValueError(f"the transformer model translates (seq2seq tasks), not {info.kind!r} tasks; "
                              "use transformer_lm or transformer_encoder.")
        _check_heads(spec)
        self.pad_id = info.pad_id
        self.src_embed = TokenEmbedding(info.vocab_size, spec, info.pad_id)
        self.tgt_embed = TokenEmbedding(info.output_dim, spec, info.pad_id)
        self.encoder = _encoder_layers(spec, spec.num_encoder_layers)
        self.decoder = DecoderStack(
            [DecoderLayer(spec.d_model, spec.num_heads, spec.d_ff, spec.dropout, spec.norm_first,
                          spec.activation, spec.fast_attention, spec.weights_dropout)
             for _ in range(spec.num_decoder_layers)],
            spec.d_model, spec.norm_first,
        )
        self.out = nn.Linear(spec.d_model, info.output_dim, bias=False)
        if spec.tie_embeddings:
            self.out.weight = self.tgt_embed.table.weight
        self._padded_out: tuple[weakref.ref, tuple[int, int], Tensor] | None = None  # _step_logits

    def encode(self, batch: Batch) -> Memory:
        """Memory: encoder states (batch, src_len, d_model), the source padding mask, the source positions a
        decoding step may attend to (batch, 1, 1, src_len), and every decoder layer's cross-attention
        keys/values (a `KVCache` of (batch, heads, src_len, d_k)); all computed once per sentence."""
        memory, padding = self._encoder_states(batch["src"])
        return {"memory": memory, "src_padding": padding, "src_allowed": attention_mask(padding, False, 1, padding.shape[1]),
                "cross": self.decoder.memory_caches(memory)}

    def _encoder_states(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's states (batch, src_len, d_model) and the source padding mask (batch, src_len)."""
        padding = src == self.pad_id
        return self.encoder(self.src_embed(src), padding), padding

    def forward(self, batch: Batch) -> Tensor:
        memory, padding = self._encoder_states(batch["src"])
        y, _ = self.decoder(self.tgt_embed(batch["tgt_in"]), memory, padding)
        return self.out(y)

    def init_state(self, memory: Memory, batch_size: int) -> StackCache:
        """An empty key/value cache per decoder layer: (batch, heads, 0, d_k)."""
        return self.decoder.empty_cache(batch_size, memory["memory"])

    def step(self, memory: Memory, state: StackCache, tokens: Tensor) -> tuple[Tensor, StackCache, Tensor]:
        """Previous tokens (batch,) → logits (batch, tgt_vocab), the extended cache, and the
        last layer's cross-attention averaged over heads (batch, src_len)."""
        y_t = self.tgt_embed(tokens[:, None], start=state.position)
        y_t, state, alpha = self.decoder.step(y_t, memory["cross"], memory["src_allowed"], state)
        return self._step_logits(y_t[:, 0]), state, alpha.mean(dim=1)[:, 0]

    def _step_logits(self, y: Tensor) -> Tensor:
        """`self.out(y)`. Without autograd, a float32 bias-free nn.Linear on the CPU whose outputs are not a
        multiple of 16 multiplies by its weight padded with zero rows to one and stored transposed (kept until
        the weight changes): MKL's sgemm gives the same numbers for that shape, faster (issue 14, 5,921 target
        words: 0.80-0.97x the time of the padded weight in nn.Linear's layout, itself 0.71-1.0x the plain
        layer's; `benchmarks/decode_kernels.py`)."""
        out = self.out
        if torch.is_grad_enabled() or type(out) is not nn.Linear or out.bias is not None \
                or out.weight.device.type != "cpu" or out.weight.dtype != torch.float32 \
                or torch.is_autocast_enabled("cpu") or out.weight.shape[0] % 16 == 0:
            return out(y)
        weight = out.weight
        cached, version = self._padded_out, (weight._version, weight.data_ptr())
        if cached is None or cached[0]() is not weight or cached[1] != version:
            rows = -weight.shape[0] % 16
            padded_t = torch.cat([weight, weight.new_zeros(rows, weight.shape[1])]).t().contiguous()
            cached = self._padded_out = (weakref.ref(weight), version, padded_t)
        return (y @ cached[2])[:, : weight.shape[0]].contiguous()


# --- decoder-only language model -------------------------------------------------------------------


class TransformerLMSpec(_TransformerSizes):
    """A decoder-only language model (GPT-style); `attention: linear` makes it a linear Transformer."""

    name: Literal["transformer_lm"] = "transformer_lm"
    num_layers: int = Field(4, ge=1)
    attention: AttentionKind = Field(
        "softmax", description="softmax; linear (sum-rule fast weights); delta (delta-rule fast weights, "
        "Schlag et al. 2021); performer (FAVOR+ random features, Choromanski et al. 2020)")
    delta_features: Literal["dpfp", "elu"] = Field("dpfp", description="attention: delta: φ, sum-normalised")
    random_features: int = Field(64, ge=1, description="attention: performer: random features m per head")
    ffn: Literal["dense", "moe"] = Field("dense", description="dense feed-forward, or a mixture of experts")
    experts: int = Field(8, ge=1, description="ffn: moe: experts per layer, each a d_ff feed-forward network")
    top_k: int = Field(1, ge=1, description="ffn: moe: experts per token (1: Switch; 2: Shazeer et al.)")
    capacity_factor: float | None = Field(None, gt=0, description="ffn: moe: an expert takes ≤ c·tokens·k/E")
    balance_weight: float = Field(0.01, ge=0, description="ffn: moe: α of the load-balancing loss")
    tie_embeddings: bool = Field(True, description="output projection = token embedding (Press & Wolf 2017)")

    @model_validator(mode="after")
    def _check_experts(self) -> "TransformerLMSpec":
        if self.ffn == "moe" and self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) must not exceed experts ({self.experts}): each token picks "
                             "top_k different experts")
        return self


def _lm_attention(spec: TransformerLMSpec) -> Callable[[], nn.Module] | None:
    """The language model's self-attention per `spec.attention` (None: softmax)."""
    if spec.attention == "linear":
        return lambda: LinearAttention(spec.d_model, spec.num_heads)
    if spec.attention == "delta":
        return lambda: DeltaRuleAttention(spec.d_model, spec.num_heads, spec.delta_features)
    if spec.attention == "performer":
        return lambda: PerformerAttention(spec.d_model, spec.num_heads, spec.random_features)
    return None


def _lm_ffn(spec: TransformerLMSpec) -> Callable[[], nn.Module] | None:
    """A mixture-of-experts feed-forward network per layer when `spec.ffn` is moe (None: dense)."""
    if spec.ffn == "dense":
        return None
    return lambda: MoEFeedForward(spec.d_model, spec.d_ff, spec.experts, spec.top_k, spec.capacity_factor,
                                  spec.dropout, spec.activation, spec.balance_weight)


@MODELS.register("transformer_lm", TransformerLMSpec)
class TransformerLM(LanguageModel):
    """p(x_{t+1} | x_≤t) from causal self-attention layers; logits (batch, time, vocab)."""

    def __init__(self, spec: TransformerLMSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "tokens" or info.vocab_size is None:
            raise ValueError(f"transformer_lm models token sequences (tokens tasks such as lm), not {info.kind!r}.")
        _check_heads(spec)
        self.embed = TokenEmbedding(info.vocab_size, spec, info.pad_id)
        self.layers = _encoder_layers(spec, spec.num_layers, _lm_attention(spec), _lm_ffn(spec))
        self.out = nn.Linear(spec.d_model, info.output_dim, bias=False)
        if spec.tie_embeddings:
            self.out.weight = self.embed.table.weight

    def forward(self, batch: Batch) -> Tensor:
        return self.out(self.layers(self.embed(batch["inputs"]), causal=True))

    def init_state(self, memory: Memory, batch_size: int) -> StackCache:
        """Every layer's empty cache (keys/values, or fast weights W = 0, z = 0) at position 0."""
        return self.layers.empty_cache(batch_size, self.embed.table.weight)

    def step(self, memory: Memory, state: StackCache, tokens: Tensor) -> tuple[Tensor, StackCache, None]:
        """tokens (batch,) at the state's position → next-token logits (batch, vocab) and the new state."""
        h_t, state = self.layers.step(self.embed(tokens[:, None], start=state.position), state)
        return self.out(h_t[:, 0]), state, None


# --- encoder with a task head ----------------------------------------------------------------------


class TransformerEncoderSpec(_TransformerSizes):
    """An encoder for classify / regress / per-token tasks, over token ids or numeric inputs."""

    name: Literal["transformer_encoder"] = "transformer_encoder"
    num_layers: int = Field(2, ge=1)
    causal: bool = Field(False, description="mask the future (each position sees only itself and the past)")
    pooling: Literal["mean", "last", "first"] = Field("mean", description="classify/regress: how positions are pooled")


@MODELS.register("transformer_encoder", TransformerEncoderSpec)
class TransformerEncoderModel(nn.Module):
    """Embed (tokens) or project (numbers), add positions, encode; then a linear head per task kind."""

    def __init__(self, spec: TransformerEncoderSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind not in ("classify", "regress", "tokens") or not info.sequence:
            raise ValueError("transformer_encoder needs a sequence task of kind classify, regress or tokens; "
                              "use the transformer model for seq2seq.")
        _check_heads(spec)
        self.kind, self.pooling, self.causal, self.pad_id = info.kind, spec.pooling, spec.causal, info.pad_id
        self.embed: nn.Module
        if info.vocab_size is not None:
            self.embed = TokenEmbedding(info.vocab_size, spec, info.pad_id)
        elif info.input_dim is not None:
            self.embed = NumericEmbedding(info.input_dim, spec)
        else:
            raise ValueError("transformer_encoder needs token inputs (vocab_size) or numeric inputs (input_dim).")
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
