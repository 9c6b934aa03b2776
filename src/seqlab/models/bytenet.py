"""ByteNet (Kalchbrenner et al. 2016, "Neural Machine Translation in Linear Time"; seed 004's road not taken).

The source network is a stack of residual blocks with centred dilated convolutions, the target network
a stack of the same blocks with masked (causal) dilated convolutions, stacked on the source network's
output (§3): the dilation doubles every block, 1, 2, 4, …, up to `max_dilation` (16 in the paper), and the
pattern repeats, so the receptive field grows exponentially with depth, O(log n) blocks for a range n.

A residual block (§3.5, Fig. 3 left, the translation variant), on 2d channels:

    x → LN → ReLU → 1×1 (2d → d) → LN → ReLU → 1×k dilated (d → d) → LN → ReLU → 1×1 (d → 2d), + x

Dynamic unfolding (§3.2): the source representation has length |t̂| = ⌊a·|s|⌋ + b per sentence (the
source is padded with zero embeddings to that length, and the representation is zero beyond it); at step
t the target network reads the stack [embedding of y_{t−1}; source column t], a source column of zeros
past |t̂|, mapped by a 1×1 convolution to 2d channels. Decoding keeps, per target block, the last
(k − 1)·dilation inputs of its masked convolution (`CausalConv1d.step`) and the position t.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from seqlab.data.base import Batch, TaskInfo
from seqlab.models.base import Memory
from seqlab.nn.convolution import CausalConv1d
from seqlab.registry import MODELS, Spec


class ByteNetSpec(Spec):
    """The paper's translation model: 2d = 1600 channels (d = 800), k = 3, 30 + 30 blocks, r = 16, a = 1.2."""

    name: Literal["bytenet"] = "bytenet"
    channels: int = Field(256, ge=2, description="2d: the residual stream's width (even)")
    kernel_size: int = Field(3, ge=2, description="k; odd, so the source network's convolutions centre")
    max_dilation: int = Field(16, ge=1, description="r: dilations 1, 2, 4, …, r (a power of two)")
    encoder_repeats: int = Field(2, ge=1, description="times the dilation pattern repeats in the source network")
    decoder_repeats: int = Field(2, ge=1, description="times it repeats in the target network")
    unfold_ratio: float = Field(1.2, gt=0, description="a of |t̂| = ⌊a·|s|⌋ + b")
    unfold_offset: int = Field(0, ge=0, description="b of |t̂| = ⌊a·|s|⌋ + b")
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "ByteNetSpec":
        if self.channels % 2:
            raise ValueError(f"channels (2d) must be even, got {self.channels}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the source convolutions centre, got {self.kernel_size}")
        if self.max_dilation & (self.max_dilation - 1):
            raise ValueError(f"max_dilation must be a power of two (1, 2, 4, …), got {self.max_dilation}")
        return self

    def dilations(self, repeats: int) -> list[int]:
        doubling = [2**i for i in range(self.max_dilation.bit_length())]
        return doubling * repeats


class ChannelNorm(nn.LayerNorm):
    """Layer normalisation over the channels of every position of (batch, channels, time)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ResidualBlock(nn.Module):
    """Fig. 3 (left): LN, ReLU, 1×1 to d, LN, ReLU, dilated 1×k (centred or masked), LN, ReLU, 1×1 to 2d, + x."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool, dropout: float) -> None:
        super().__init__()
        d = channels // 2
        self.norm_in, self.reduce = ChannelNorm(channels), nn.Conv1d(channels, d, 1)
        self.norm_mid = ChannelNorm(d)
        self.conv: nn.Conv1d = (CausalConv1d(d, d, kernel_size, dilation) if causal else
                                nn.Conv1d(d, d, kernel_size, dilation=dilation, padding=dilation * (kernel_size // 2)))
        self.norm_out, self.expand = ChannelNorm(d), nn.Conv1d(d, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def before_conv(self, x: Tensor) -> Tensor:
        return F.relu(self.norm_mid(self.reduce(F.relu(self.norm_in(x)))))

    def after_conv(self, x: Tensor, c: Tensor) -> Tensor:
        return x + self.dropout(self.expand(F.relu(self.norm_out(c))))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x (batch, 2d, time); `valid` (batch, time) zeroes what the convolution reads past a sentence's length."""
        u = self.before_conv(x)
        if valid is not None:
            u = u * valid[:, None, :]
        return self.after_conv(x, self.conv(u))

    def step(self, x_t: Tensor, buffer: Tensor) -> tuple[Tensor, Tensor]:
        """One target position x_t (batch, 2d, 1) with the masked convolution's input buffer."""
        assert isinstance(self.conv, CausalConv1d)
        c_t, buffer = self.conv.step(self.before_conv(x_t), buffer)
        return self.after_conv(x_t, c_t), buffer


@MODELS.register("bytenet", ByteNetSpec)
class ByteNet(nn.Module):
    """Source network, dynamic unfolding, target network; forward gives logits (batch, tgt_len, tgt_vocab)."""

    def __init__(self, spec: ByteNetSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "seq2seq" or info.vocab_size is None:
            raise ValueError(f"bytenet translates (seq2seq tasks), not {info.kind!r} tasks.")
        C, k = spec.channels, spec.kernel_size
        self.pad_id, self.a, self.b = info.pad_id, spec.unfold_ratio, spec.unfold_offset
        self.src_embed = nn.Embedding(info.vocab_size, C, padding_idx=info.pad_id)
        self.tgt_embed = nn.Embedding(info.output_dim, C, padding_idx=info.pad_id)
        self.encoder = nn.ModuleList(ResidualBlock(C, k, r, False, spec.dropout) for r in spec.dilations(spec.encoder_repeats))
        self.stack_in = nn.Conv1d(2 * C, C, 1)  # [embedding; source column] → 2d channels
        self.decoder = nn.ModuleList(ResidualBlock(C, k, r, True, spec.dropout) for r in spec.dilations(spec.decoder_repeats))
        self.out_norm = ChannelNorm(C)
        self.out = nn.Linear(C, info.output_dim)
        self.receptive_field = {"source": 1 + sum((k - 1) * block.conv.dilation[0] for block in self.encoder),
                                "target": 1 + sum((k - 1) * block.conv.dilation[0] for block in self.decoder)}

    def unfolded_lengths(self, src_lengths: Tensor) -> Tensor:
        """|t̂| = ⌊a·|s|⌋ + b, at least |s|."""
        return torch.maximum((src_lengths.float() * self.a).floor().long() + self.b, src_lengths)

    def encode(self, batch: Batch) -> Memory:
        """The source representation (batch, max |t̂|, 2d), zero past each sentence's |t̂|, and |t̂| (batch,)."""
        src = batch["src"]
        lengths = batch["src_lengths"].to(src.device) if "src_lengths" in batch else (src != self.pad_id).sum(1)
        unfold = self.unfolded_lengths(lengths)
        width = int(unfold.max())
        tokens = F.pad(src, (0, max(0, width - src.shape[1])), value=self.pad_id)[:, :width]
        positions = torch.arange(width, device=src.device)
        tokens = tokens.masked_fill(positions >= lengths[:, None], self.pad_id)  # zero embeddings past |s|
        valid = (positions < unfold[:, None]).to(self.src_embed.weight.dtype)  # (batch, |t̂|)
        h = self.src_embed(tokens).transpose(1, 2)  # (batch, 2d, |t̂|)
        for block in self.encoder:
            h = block(h, valid)
        return {"source": (h * valid[:, None, :]).transpose(1, 2), "unfold": unfold}

    def source_columns(self, memory: Memory, positions: Tensor) -> Tensor:
        """Source columns at target positions (batch, T) → (batch, T, 2d), zeros past the representation."""
        source = memory["source"]
        inside = positions < source.shape[1]
        columns = source.gather(1, positions.clamp(max=source.shape[1] - 1)[..., None].expand(-1, -1, source.shape[2]))
        return columns * inside[..., None]

    def decoder_input(self, memory: Memory, tokens: Tensor, positions: Tensor) -> Tensor:
        """The stack [e(y_{t−1}); source column t] → 1×1 → (batch, 2d, T)."""
        stacked = torch.cat([self.tgt_embed(tokens), self.source_columns(memory, positions)], dim=-1)
        return self.stack_in(stacked.transpose(1, 2))

    def readout(self, x: Tensor) -> Tensor:
        """(batch, 2d, T) → logits (batch, T, vocab): LN, ReLU, 1×1."""
        return self.out(F.relu(self.out_norm(x)).transpose(1, 2))

    def forward(self, batch: Batch) -> Tensor:
        memory = self.encode(batch)
        tgt = batch["tgt_in"]
        x = self.decoder_input(memory, tgt, torch.arange(tgt.shape[1], device=tgt.device).expand_as(tgt))
        for block in self.decoder:
            x = block(x)
        return self.readout(x)

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        """Zero inputs before the first target token for every masked convolution, and position 0."""
        like = memory["source"]
        state = {f"conv.{i}": block.conv.empty_buffer(batch_size, like) for i, block in enumerate(self.decoder)}
        state["position"] = torch.zeros(batch_size, dtype=torch.long, device=like.device)
        return state

    def step(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Tensor, dict[str, Tensor], None]:
        """Previous tokens (batch,) → logits (batch, tgt_vocab), the new state; ByteNet has no attention."""
        position = state["position"]
        x_t = self.decoder_input(memory, tokens[:, None], position[:, None])  # (batch, 2d, 1)
        new_state = {"position": position + 1}
        for i, block in enumerate(self.decoder):
            x_t, new_state[f"conv.{i}"] = block.step(x_t, state[f"conv.{i}"])
        return self.readout(x_t)[:, 0], new_state, None
