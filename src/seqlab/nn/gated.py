"""Gated cells (seeds 001, 002, 004): the LSTM (Hochreiter & Schmidhuber 1997) and the GRU (Cho et al. 2014).

Both are written as the seeds write them; W_f · [h_{t−1}, x_t] is split into W_hf h_{t−1} + W_xf x_t
(the same product, the concatenated matrix cut in two).

GRU convention. The seeds (and Cho et al.) update with h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t: z_t is
the share of the *new* candidate. PyTorch's nn.GRU writes h_t = (1 − z'_t) ⊙ n_t + z'_t ⊙ h_{t−1}, so
its z' is the share of the *old* state: z' = 1 − z. Since 1 − σ(a) = σ(−a), torch's update-gate
weights and bias are exactly the negatives of ours (`GRUCell.fused_weights` does this mapping).
Where the reset gate acts is a second difference:

- ``reset="after"`` (default): h̃_t = tanh(W_xh̃ x_t + b_xh̃ + r_t ⊙ (W_hh̃ h_{t−1} + b_hh̃)), the placement
  of cuDNN and torch's nn.GRU, so the fused kernel computes this cell exactly;
- ``reset="before"``: h̃_t = tanh(W_hh̃ (r_t ⊙ h_{t−1}) + W_xh̃ x_t + b_h̃), the seeds' h̃_t =
  tanh(W · [r_t ⊙ h_{t−1}, x_t]) literally; no fused kernel computes it, so it always runs step by step.

Mapping to nn.GRU (gates stacked r, z, n in weight_ih / weight_hh; reset="after"):
weight_ih = [W_xr; −W_xz; W_xh̃], weight_hh = [W_hr; −W_hz; W_hh̃], bias_ih = [b_r; −b_z; b_xh̃],
bias_hh = [0; 0; b_hh̃]. Conversely, from a torch GRU: b_r = b_ir + b_hr and b_z = −(b_iz + b_hz).

LSTM mapping to nn.LSTM (gates stacked i, f, g, o): weight_ih = [W_xi; W_xf; W_xC; W_xo], likewise
weight_hh with W_h·; bias_ih = [b_i; b_f; b_C; b_o] and bias_hh = 0 (torch's two biases add up to ours).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.nn.init import InitScheme
from seqlab.nn.cell import CellState, RecurrentCell


class LSTMCell(RecurrentCell):
    """LSTM, seed 002: f_t, i_t, C̃_t, C_t = f_t ⊙ C_{t−1} + i_t ⊙ C̃_t, o_t, h_t = o_t ⊙ tanh(C_t)."""

    recurrent = ("W_hf", "W_hi", "W_hC", "W_ho")
    state_size = 2

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        for gate in ("f", "i", "C", "o"):
            setattr(self, f"W_x{gate}", self._matrix(hidden_size, input_size))
            setattr(self, f"W_h{gate}", self._matrix(hidden_size, hidden_size))
            setattr(self, f"b_{gate}", self._vector(hidden_size))
        self.reset_parameters()

    def reset_parameters(self, init: InitScheme = "default", forget_bias: float = 1.0) -> None:
        super().reset_parameters(init, forget_bias)
        with torch.no_grad():
            self.b_f.fill_(forget_bias)

    def forward(self, x_t: Tensor, state: CellState) -> CellState:
        h_prev, C_prev = state
        f_t = torch.sigmoid(F.linear(h_prev, self.W_hf) + F.linear(x_t, self.W_xf, self.b_f))
        i_t = torch.sigmoid(F.linear(h_prev, self.W_hi) + F.linear(x_t, self.W_xi, self.b_i))
        C_tilde = torch.tanh(F.linear(h_prev, self.W_hC) + F.linear(x_t, self.W_xC, self.b_C))
        C_t = f_t * C_prev + i_t * C_tilde
        o_t = torch.sigmoid(F.linear(h_prev, self.W_ho) + F.linear(x_t, self.W_xo, self.b_o))
        h_t = o_t * torch.tanh(C_t)
        return (h_t, C_t)

    @property
    def fused_mode(self) -> str:
        return "LSTM"

    def fused_weights(self) -> list[Tensor]:
        weight_ih = torch.cat([self.W_xi, self.W_xf, self.W_xC, self.W_xo])
        weight_hh = torch.cat([self.W_hi, self.W_hf, self.W_hC, self.W_ho])
        bias_ih = torch.cat([self.b_i, self.b_f, self.b_C, self.b_o])
        return [weight_ih, weight_hh, bias_ih, torch.zeros_like(bias_ih)]


class GRUCell(RecurrentCell):
    """GRU, seed 002: z_t, r_t, h̃_t, h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t (reset placement: module doc)."""

    recurrent = ("W_hz", "W_hr", "W_hh_tilde")

    def __init__(self, input_size: int, hidden_size: int, reset: Literal["after", "before"] = "after") -> None:
        super().__init__(input_size, hidden_size)
        if reset not in ("after", "before"):
            raise ValueError(f"reset must be 'after' or 'before', not {reset!r}")
        self.reset = reset
        for gate in ("z", "r", "h_tilde"):
            setattr(self, f"W_x{gate}", self._matrix(hidden_size, input_size))
            setattr(self, f"W_h{gate}", self._matrix(hidden_size, hidden_size))
        self.b_z, self.b_r = self._vector(hidden_size), self._vector(hidden_size)
        if reset == "after":
            self.b_xh_tilde, self.b_hh_tilde = self._vector(hidden_size), self._vector(hidden_size)
        else:
            self.b_h_tilde = self._vector(hidden_size)
        self.reset_parameters()

    def forward(self, x_t: Tensor, state: CellState) -> CellState:
        (h_prev,) = state
        z_t = torch.sigmoid(F.linear(h_prev, self.W_hz) + F.linear(x_t, self.W_xz, self.b_z))
        r_t = torch.sigmoid(F.linear(h_prev, self.W_hr) + F.linear(x_t, self.W_xr, self.b_r))
        if self.reset == "after":
            recurrent = F.linear(h_prev, self.W_hh_tilde, self.b_hh_tilde)
            h_tilde = torch.tanh(F.linear(x_t, self.W_xh_tilde, self.b_xh_tilde) + r_t * recurrent)
        else:
            recurrent = F.linear(r_t * h_prev, self.W_hh_tilde)
            h_tilde = torch.tanh(recurrent + F.linear(x_t, self.W_xh_tilde, self.b_h_tilde))
        h_t = (1 - z_t) * h_prev + z_t * h_tilde
        return (h_t,)

    @property
    def fused_mode(self) -> str | None:
        return "GRU" if self.reset == "after" else None

    def fused_weights(self) -> list[Tensor]:
        if self.reset != "after":
            raise NotImplementedError("no fused kernel computes the reset-before GRU")
        weight_ih = torch.cat([self.W_xr, -self.W_xz, self.W_xh_tilde])
        weight_hh = torch.cat([self.W_hr, -self.W_hz, self.W_hh_tilde])
        bias_ih = torch.cat([self.b_r, -self.b_z, self.b_xh_tilde])
        bias_hh = torch.cat([torch.zeros_like(self.b_r), torch.zeros_like(self.b_z), self.b_hh_tilde])
        return [weight_ih, weight_hh, bias_ih, bias_hh]
