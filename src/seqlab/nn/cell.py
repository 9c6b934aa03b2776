"""The recurrent cell's interface: one time step state_t = cell(x_t, state_{t−1}), the state a tuple of
(batch, hidden) tensors. The Elman and Jordan cells (`seqlab.nn.recurrent`) and the gated LSTM and GRU
cells (`seqlab.nn.gated`) implement it; `RecurrentStack` unrolls any of them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.nn.init import InitScheme, initialise_cell

CellState = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """One time step of a recurrent network: (x_t, state_{t−1}) → state_t."""

    #: names of the matrices that multiply the fed-back state (initialised as recurrent weights)
    recurrent: tuple[str, ...] = ()
    #: how many tensors the state holds
    state_size: int = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    def _matrix(self, rows: int, cols: int) -> nn.Parameter:
        return nn.Parameter(torch.empty(rows, cols))

    def _vector(self, size: int) -> nn.Parameter:
        return nn.Parameter(torch.empty(size))

    def reset_parameters(self, init: InitScheme = "default", forget_bias: float = 1.0) -> None:
        initialise_cell(self, init, self.recurrent, self.hidden_size)

    def initial_state(self, batch_size: int, like: Tensor) -> CellState:
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return tuple(zeros for _ in range(self.state_size))

    def output(self, state: CellState) -> Tensor:
        """What the cell emits at a step (h_t; y_t for Jordan)."""
        return state[0]

    @property
    def fused_mode(self) -> str | None:
        """The torch fused kernel computing this cell (a key of `seqlab.nn.recurrent.FUSED_KERNELS`), or None."""
        return None

    def fused_weights(self) -> list[Tensor]:
        """This cell's parameters in torch's layout: [weight_ih, weight_hh, bias_ih, bias_hh]."""
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")

    def forward(self, x_t: Tensor, state: CellState) -> CellState:
        raise NotImplementedError
