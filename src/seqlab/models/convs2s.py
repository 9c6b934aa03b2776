"""Convolutional sequence to sequence learning (Gehring et al. 2017; seed 004's "ConvSeq2Seq").

Encoder: e_j = w_j + p_j (token + learned position embeddings) → linear to C channels → blocks of
centred GLU convolutions with √0.5-scaled residuals → linear back: z_j. The decoder attends with keys
z_j and values z_j + e_j. Decoder: g_i = w_i + p_i → linear → blocks of causal GLU convolutions, each
followed by its own attention over the encoder (`ConvDecoderBlock`) → linear → dropout → logits.

Incremental decoding keeps, per decoder layer, the last k − 1 inputs of its convolution and the
position of the next target token; everything batch-first for beam search.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from seqlab.data.base import Batch, TaskInfo
from seqlab.nn.convolution import ConvDecoderBlock, ConvEncoderBlock
from seqlab.registry import MODELS, Spec


class ConvS2SSpec(Spec):
    """Gehring et al.'s IWSLT-sized model is embed 256, 512 channels, kernel 3; the tutorial uses 10 + 10 layers."""

    name: Literal["convs2s"] = "convs2s"
    embed_dim: int = Field(256, ge=1)
    channels: int = Field(512, ge=1, description="hidden channels of every convolution block")
    encoder_layers: int = Field(6, ge=1)
    decoder_layers: int = Field(6, ge=1)
    kernel_size: int = Field(3, ge=2)
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    max_len: int = Field(256, ge=1, description="positions in the learned position tables")


class PositionalTokenEmbedding(nn.Module):
    """e_j = w_j + p_j, then dropout (§3.1)."""

    def __init__(self, vocab_size: int, embed_dim: int, max_len: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_len, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.max_len:
            raise ValueError(f"a sequence is longer than the position table ({self.max_len}); raise model.max_len")
        return self.dropout(self.tokens(tokens) + self.positions(positions))


@MODELS.register("convs2s", ConvS2SSpec)
class ConvS2S(nn.Module):
    """The fully convolutional encoder–decoder; forward gives logits (batch, tgt_len, tgt_vocab)."""

    def __init__(self, spec: ConvS2SSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "seq2seq" or info.vocab_size is None:
            raise ValueError(f"convs2s translates (seq2seq tasks), not {info.kind!r} tasks.")
        self.pad_id = info.pad_id
        E, C = spec.embed_dim, spec.channels
        self.src_embed = PositionalTokenEmbedding(info.vocab_size, E, spec.max_len, spec.dropout, info.pad_id)
        self.tgt_embed = PositionalTokenEmbedding(info.output_dim, E, spec.max_len, spec.dropout, info.pad_id)
        self.enc_in, self.enc_out = nn.Linear(E, C), nn.Linear(C, E)
        self.encoder = nn.ModuleList(ConvEncoderBlock(C, spec.kernel_size, spec.dropout) for _ in range(spec.encoder_layers))
        self.dec_in, self.dec_out = nn.Linear(E, C), nn.Linear(C, E)
        self.decoder = nn.ModuleList(ConvDecoderBlock(C, E, spec.kernel_size, spec.dropout) for _ in range(spec.decoder_layers))
        self.dropout = nn.Dropout(spec.dropout)
        self.out = nn.Linear(E, info.output_dim)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """Memory: keys z (batch, src_len, E), values z + e, the padding mask and the source lengths."""
        src = batch["src"]
        padding = src == self.pad_id
        positions = torch.arange(src.shape[1], device=src.device).expand_as(src)
        e = self.src_embed(src, positions)
        h = self.enc_in(e).transpose(1, 2)  # (batch, C, src_len)
        for block in self.encoder:
            h = block(h, padding)
        z = self.enc_out(h.transpose(1, 2)).masked_fill(padding[..., None], 0.0)
        lengths = batch.get("src_lengths")
        if lengths is None:
            lengths = (~padding).sum(dim=1)
        return {"keys": z, "values": z + e, "src_padding": padding, "src_lengths": lengths.to(src.device)}

    def _decode(self, g: Tensor, h: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        attention = h.new_zeros(0)
        for block in self.decoder:
            h, attention = block(h, g, memory)
        return self.out(self.dropout(self.dec_out(h))), attention

    def forward(self, batch: Batch) -> Tensor:
        memory = self.encode(batch)
        tgt = batch["tgt_in"]
        positions = torch.arange(tgt.shape[1], device=tgt.device).expand_as(tgt)
        g = self.tgt_embed(tgt, positions)
        return self._decode(g, self.dec_in(g), memory)[0]

    def init_state(self, memory: dict[str, Tensor], batch_size: int) -> dict[str, Any]:
        """Zero inputs before the first target token for every decoder convolution, and position 0."""
        keys = memory["keys"]
        return {"buffers": [block.conv.empty_buffer(batch_size, keys) for block in self.decoder],
                "position": torch.zeros(batch_size, dtype=torch.long, device=keys.device)}

    def step(self, memory: dict[str, Tensor], state: dict[str, Any], tokens: Tensor) -> tuple[Tensor, dict[str, Any], Tensor]:
        """Previous tokens (batch,) → logits (batch, tgt_vocab), new state, last layer's attention (batch, src_len)."""
        g_t = self.tgt_embed(tokens[:, None], state["position"][:, None])  # (batch, 1, E)
        h_t = self.dec_in(g_t)
        buffers, attention = [], h_t.new_zeros(0)
        for block, buffer in zip(self.decoder, state["buffers"]):
            h_t, attention, buffer = block.step(h_t, g_t, memory, buffer)
            buffers.append(buffer)
        logits = self.out(self.dropout(self.dec_out(h_t)))[:, 0]
        return logits, {"buffers": buffers, "position": state["position"] + 1}, attention[:, 0]
