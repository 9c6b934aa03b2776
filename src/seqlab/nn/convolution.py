"""Convolutional sequence blocks, the road beside recurrence (seed 004, "Alternative Approaches").

- `CausalConv1d`: y_t = Σ_{i<k} W_i x_{t−i·d} + b, left-padded so no output sees the future; dilation d
  doubles per layer in WaveNet so the receptive field 1 + Σ_l (k−1) d_l grows exponentially with depth;
- `WaveNetBlock`: gated activation z = tanh(W_f ∗ x) ⊙ σ(W_g ∗ x) with a residual and a skip 1×1
  convolution (van den Oord et al. 2016, eq. 2);
- `ConvEncoderBlock`, `ConvDecoderBlock`: ConvS2S (Gehring et al. 2017): a convolution to 2C
  channels, a gated linear unit GLU([A; B]) = A ⊙ σ(B), a residual scaled by √0.5, and in every decoder
  layer dot-product attention from d_i = W_d h_i + g_i over encoder outputs z_j, reading z_j + e_j.

Incremental generation: each causal convolution keeps the last (k−1)·d inputs it has seen in a buffer
(batch-first, zeros at the start exactly like the training-time left padding), passed explicitly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT_HALF = math.sqrt(0.5)


class CausalConv1d(nn.Conv1d):
    """y_t = Σ_{i<k} W_i x_{t−i·d} + b on (batch, channels, time): left padding of (k−1)·d zeros."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.history = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.history, 0)))

    def empty_buffer(self, batch_size: int, like: Tensor) -> Tensor:
        """The inputs before the first step: (batch, in_channels, (k−1)·d) zeros."""
        return like.new_zeros(batch_size, self.in_channels, self.history)

    def step(self, x_t: Tensor, buffer: Tensor) -> tuple[Tensor, Tensor]:
        """One new input x_t (batch, in_channels, 1) → (y_t (batch, out_channels, 1), the shifted buffer)."""
        window = torch.cat([buffer, x_t], dim=2)  # (batch, in_channels, (k−1)·d + 1)
        return super().forward(window), window[:, :, 1:]


class WaveNetBlock(nn.Module):
    """z = tanh(W_f ∗ x) ⊙ σ(W_g ∗ x); residual x + W_r z and skip W_s z (van den Oord et al. 2016, §2.3–2.4)."""

    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size, dilation)  # W_f and W_g stacked
        self.W_r = nn.Conv1d(channels, channels, 1)
        self.W_s = nn.Conv1d(channels, skip_channels, 1)

    def gate(self, filter_and_gate: Tensor) -> tuple[Tensor, Tensor]:
        f, g = filter_and_gate.chunk(2, dim=1)
        z = torch.tanh(f) * torch.sigmoid(g)
        return self.W_r(z), self.W_s(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (batch, channels, time) → (residual output, skip output)."""
        residual, skip = self.gate(self.conv(x))
        return x + residual, skip

    def step(self, x_t: Tensor, buffer: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out, buffer = self.conv.step(x_t, buffer)
        residual, skip = self.gate(out)
        return x_t + residual, skip, buffer


class WaveNetStack(nn.Module):
    """Blocks with dilations 1, 2, 4, ... 2^(L−1), repeated `cycles` times; the output is Σ skips."""

    def __init__(self, channels: int, skip_channels: int, kernel_size: int, layers: int, cycles: int = 1) -> None:
        super().__init__()
        dilations = [2**i for i in range(layers)] * cycles
        self.blocks = nn.ModuleList(WaveNetBlock(channels, skip_channels, kernel_size, d) for d in dilations)
        self.receptive_field = 1 + sum(block.conv.history for block in self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        total: Tensor | int = 0
        for block in self.blocks:
            x, skip = block(x)
            total = total + skip
        return total

    def empty_buffers(self, batch_size: int, like: Tensor) -> list[Tensor]:
        """Every block's convolution buffer, in order."""
        return [block.conv.empty_buffer(batch_size, like) for block in self.blocks]

    def step(self, x_t: Tensor, buffers: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One time step x_t (batch, channels, 1) through every block, each with its own input buffer."""
        total: Tensor | int = 0
        new = []
        for block, buffer in zip(self.blocks, buffers):
            x_t, skip, buffer = block.step(x_t, buffer)
            new.append(buffer)
            total = total + skip
        return total, new


def glu(x: Tensor) -> Tensor:
    """GLU([A; B]) = A ⊙ σ(B), split along channels (Dauphin et al. 2017; Gehring et al. 2017 §3.2)."""
    return F.glu(x, dim=1)


class ConvEncoderBlock(nn.Module):
    """h^l = (GLU(W ∗ h^{l−1} + b) + h^{l−1}) · √0.5, the convolution centred (sees both sides)."""

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"the encoder's kernel_size must be odd to centre it, got {kernel_size}")
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, padding: Tensor | None) -> Tensor:
        """h (batch, channels, src_len); `padding` (batch, src_len) True at pads, zeroed so they never leak in."""
        if padding is not None:
            h = h.masked_fill(padding[:, None, :], 0.0)
        return (glu(self.conv(self.dropout(h))) + h) * SQRT_HALF


class ConvDecoderBlock(nn.Module):
    """A causal GLU convolution followed by attention over the encoder (Gehring et al. 2017 §3.3):

    d_i = (W_d h_i + b_d + g_i) √0.5,  a_ij = softmax_j(d_i · z_j),  c_i = Σ_j a_ij (z_j + e_j),
    h_i ← (h_i + W_c c_i · √m) √0.5  (m source positions),  then the residual (h_i + h_i^{l−1}) √0.5.
    """

    def __init__(self, channels: int, embed_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, kernel_size)
        self.W_d = nn.Linear(channels, embed_dim)
        self.W_c = nn.Linear(embed_dim, channels)
        self.dropout = nn.Dropout(dropout)

    def attend(self, h: Tensor, g: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """h (batch, tgt_len, channels), g the target embeddings (batch, tgt_len, embed_dim)."""
        d = (self.W_d(h) + g) * SQRT_HALF
        scores = d @ memory["keys"].transpose(1, 2)  # (batch, tgt_len, src_len)
        scores = scores.masked_fill(memory["src_padding"][:, None, :], float("-inf"))
        a = scores.softmax(dim=-1)
        c = a @ memory["values"]
        m = memory["src_lengths"].to(h.dtype)[:, None, None]
        return (h + self.W_c(c) * m.sqrt()) * SQRT_HALF, a

    def _after_conv(self, conv_out: Tensor, h_prev: Tensor, g: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        h = glu(conv_out).transpose(1, 2)  # (batch, time, channels)
        h, a = self.attend(h, g, memory)
        return (h + h_prev) * SQRT_HALF, a

    def forward(self, h: Tensor, g: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """h (batch, tgt_len, channels) → (new h, attention (batch, tgt_len, src_len))."""
        conv_out = self.conv(self.dropout(h).transpose(1, 2))
        return self._after_conv(conv_out, h, g, memory)

    def step(
        self, h_t: Tensor, g_t: Tensor, memory: dict[str, Tensor], buffer: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One target position h_t (batch, 1, channels) with this layer's convolution buffer."""
        conv_out, buffer = self.conv.step(self.dropout(h_t).transpose(1, 2), buffer)
        h_t, a = self._after_conv(conv_out, h_t, g_t, memory)
        return h_t, a, buffer
