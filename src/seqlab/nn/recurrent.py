"""Recurrent networks (seeds 000–002): the Elman and Jordan cells, and one runner that unrolls any cell.

A *cell* computes one time step, state_t = cell(x_t, state_{t−1}); its state is a tuple of
(batch, hidden) tensors: (h,) for Elman and GRU, (y,) for Jordan, (h, C) for the LSTM (seqlab.nn.gated).

`RecurrentStack` unrolls a cell over time with padding masks (each sequence's state is frozen after
its last valid step and its outputs are zero there), stacks layers with dropout between them, runs a
backward direction over each sequence's valid part reversed, and returns every step's output and the
final state. With ``fast=True`` an Elman, LSTM or GRU stack runs torch's fused kernels (the ones behind
nn.RNN / nn.LSTM / nn.GRU) on the very same parameters, mapped to torch's layout by each cell's
`fused_weights`; the reference loop and the fused kernel give the same outputs and gradients.
"""

from __future__ import annotations

import warnings
from typing import Callable, Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab.nn.cell import CellState, RecurrentCell
from seqlab.nn.gated import GRUCell, LSTMCell
from seqlab.nn.init import InitScheme

CellName = Literal["elman", "jordan", "lstm", "gru"]
Nonlinearity = Literal["tanh", "relu"]
State = Union[Tensor, tuple[Tensor, Tensor]]

FUSED_KERNELS = {"RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu, "LSTM": _VF.lstm, "GRU": _VF.gru}


class ElmanCell(RecurrentCell):
    """Elman (1990), seed 002: h_t = tanh(W_hh h_{t−1} + W_xh x_t + b) (ReLU instead of tanh for the IRNN)."""

    recurrent = ("W_hh",)

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: Nonlinearity = "tanh") -> None:
        super().__init__(input_size, hidden_size)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.W_xh = self._matrix(hidden_size, input_size)
        self.W_hh = self._matrix(hidden_size, hidden_size)
        self.b = self._vector(hidden_size)
        self.reset_parameters()

    def forward(self, x_t: Tensor, state: CellState) -> CellState:
        (h_prev,) = state
        z_t = F.linear(h_prev, self.W_hh) + F.linear(x_t, self.W_xh, self.b)
        h_t = torch.tanh(z_t) if self.nonlinearity == "tanh" else torch.relu(z_t)
        return (h_t,)

    @property
    def fused_mode(self) -> str:
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def fused_weights(self) -> list[Tensor]:
        # torch adds two biases, b_ih + b_hh; ours is their sum, so b_hh = 0.
        return [self.W_xh, self.W_hh, self.b, torch.zeros_like(self.b)]


class JordanCell(RecurrentCell):
    """Jordan (1986): the network feeds back its previous *output* y_{t−1}, not its hidden state.

    h_t = tanh(W_xh x_t + W_yh y_{t−1} + b_h),   y_t = tanh(W_hy h_t + b_y).

    The output y_t is the cell's output projection (same width as h_t, squashed by tanh so that the
    fed-back signal stays bounded); it is both what the cell emits and its whole state.
    """

    recurrent = ("W_yh",)

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.W_xh = self._matrix(hidden_size, input_size)
        self.W_yh = self._matrix(hidden_size, hidden_size)
        self.b_h = self._vector(hidden_size)
        self.W_hy = self._matrix(hidden_size, hidden_size)
        self.b_y = self._vector(hidden_size)
        self.reset_parameters()

    def forward(self, x_t: Tensor, state: CellState) -> CellState:
        (y_prev,) = state
        h_t = torch.tanh(F.linear(x_t, self.W_xh, self.b_h) + F.linear(y_prev, self.W_yh))
        y_t = torch.tanh(F.linear(h_t, self.W_hy, self.b_y))
        return (y_t,)


def make_cell(
    cell: CellName,
    input_size: int,
    hidden_size: int,
    nonlinearity: Nonlinearity = "tanh",
    gru_reset: Literal["after", "before"] = "after",
) -> RecurrentCell:
    """Build one cell by name."""
    if cell == "elman":
        return ElmanCell(input_size, hidden_size, nonlinearity)
    if cell == "jordan":
        return JordanCell(input_size, hidden_size)
    if cell == "lstm":
        return LSTMCell(input_size, hidden_size)
    if cell == "gru":
        return GRUCell(input_size, hidden_size, reset=gru_reset)
    raise ValueError(f"unknown cell {cell!r}; choose one of elman, jordan, lstm, gru")


def batch_first_state(final: State) -> dict[str, Tensor]:
    """A RecurrentStack state (layers, batch, hidden) as the batch-first dict {"h": (batch, layers, hidden), "c": ...}."""
    if isinstance(final, tuple):
        return {"h": final[0].transpose(0, 1), "c": final[1].transpose(0, 1)}
    return {"h": final.transpose(0, 1)}


def stack_state(state: dict[str, Tensor]) -> State:
    """The batch-first dict back in RecurrentStack's layout (layers, batch, hidden)."""
    h = state["h"].transpose(0, 1).contiguous()
    return (h, state["c"].transpose(0, 1).contiguous()) if "c" in state else h


def valid_mask(lengths: Tensor | None, steps: int, device: torch.device) -> Tensor | None:
    """(batch, time) booleans, True at each sequence's valid steps; None when there are no lengths."""
    if lengths is None:
        return None
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def reverse_valid(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence's first `length` steps along time, leaving the padding where it is."""
    if lengths is None:
        return x.flip(1)
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index[..., None].expand_as(x))


def unroll(
    cell: RecurrentCell, x: Tensor, mask: Tensor | None, state: CellState, steps: list[Tensor] | None = None
) -> tuple[Tensor, CellState]:
    """Run `cell` over x (batch, time, features) from `state`; state frozen and output 0 where mask is False.

    If `steps` is a list, it receives each step's state_t[0] as used by the next step, so that
    torch.autograd.grad(loss, steps) gives the total derivative ∂L/∂h_t of seed 000's BPTT.
    """
    outputs = []
    for t in range(x.shape[1]):
        new_state = cell(x[:, t], state)
        if mask is None:
            state = new_state
            outputs.append(cell.output(state))
        else:
            valid = mask[:, t, None]
            state = tuple(torch.where(valid, new, old) for new, old in zip(new_state, state))
            outputs.append(torch.where(valid, cell.output(new_state), 0.0))
        if steps is not None:
            steps.append(state[0])
    return torch.stack(outputs, dim=1), state


class RecurrentStack(nn.Module):
    """Stacked, optionally bidirectional recurrent layers of one cell type over padded batches.

    forward(x (batch, time, input_size), lengths (batch,) or None, state or None) returns
    outputs (batch, time, hidden_size · directions), zero at padded steps, and the final state: for the
    LSTM a tuple (h, C), otherwise h, each (layers · directions, batch, hidden_size) and taken at each
    sequence's last valid step (the backward direction ends at step 0), as torch's packed sequences do.
    Index of layer l, direction d in the state: l · directions + d.
    """

    def __init__(
        self,
        cell: CellName,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        init: InitScheme = "default",
        forget_bias: float = 1.0,
        fast: bool = True,
        nonlinearity: Nonlinearity = "tanh",
        gru_reset: Literal["after", "before"] = "after",
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError("input_size, hidden_size and num_layers must be at least 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.cell_name = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        self.fast = fast
        self.output_size = hidden_size * self.num_directions
        cells = []
        for layer in range(num_layers):
            width = input_size if layer == 0 else self.output_size
            for _ in range(self.num_directions):
                new_cell = make_cell(cell, width, hidden_size, nonlinearity, gru_reset)
                new_cell.reset_parameters(init, forget_bias)
                cells.append(new_cell)
        self.cells = nn.ModuleList(cells)

    @property
    def state_size(self) -> int:
        return self.cells[0].state_size

    @property
    def fused_mode(self) -> str | None:
        """The fused kernel the fast path uses, or None when this configuration has none."""
        return self.cells[0].fused_mode

    def initial_state(self, batch_size: int, like: Tensor | None = None) -> State:
        """The zero state for `batch_size` sequences (dtype and device of `like`, else of the parameters)."""
        like = like if like is not None else next(self.parameters())
        zeros = like.new_zeros(self.num_layers * self.num_directions, batch_size, self.hidden_size)
        return (zeros, zeros.clone()) if self.state_size == 2 else zeros

    def _checked_state(self, state: State | None, batch_size: int, like: Tensor) -> tuple[Tensor, ...]:
        """The initial state as a tuple of (layers · directions, batch, hidden) tensors, zeros if None."""
        if state is None:
            state = self.initial_state(batch_size, like)
        parts = state if isinstance(state, tuple) else (state,)
        expected = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        if len(parts) != self.state_size or any(tuple(part.shape) != expected for part in parts):
            shapes = [tuple(part.shape) for part in parts]
            raise ValueError(f"initial state has shape(s) {shapes}; expected {self.state_size} of {expected}")
        return parts

    def _split_state(self, state: State | None, batch_size: int, like: Tensor) -> list[CellState]:
        """The stacked State as one tuple per (layer, direction)."""
        parts = self._checked_state(state, batch_size, like)
        return [tuple(part[index] for part in parts) for index in range(len(self.cells))]

    def _join_state(self, states: list[CellState]) -> State:
        joined = tuple(torch.stack([state[k] for state in states]) for k in range(self.state_size))
        return joined if self.state_size == 2 else joined[0]

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State | None = None) -> tuple[Tensor, State]:
        # torch's packed sequences cannot hold an empty sequence; the step-by-step loop can
        if self.fast and self.fused_mode is not None and (lengths is None or bool((lengths > 0).all())):
            return self._forward_fused(x, lengths, state)
        outputs, final, _ = self.forward_reference(x, lengths, state)
        return outputs, final

    def forward_reference(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State, list[Tensor]]:
        """The cells unrolled step by step; also returns the top layer's forward-direction states h_t.

        Those per-step states are nodes of the graph, so torch.autograd.grad(loss, steps) gives the total
        ∂L/∂h_t for every t (the gradient-flow diagnostic).
        """
        batch_size, length, _ = x.shape
        mask = valid_mask(lengths, length, x.device)
        initial = self._split_state(state, batch_size, x)
        finals: list[CellState] = []
        steps: list[Tensor] = []
        layer_input = x
        for layer in range(self.num_layers):
            top = layer == self.num_layers - 1
            index = layer * self.num_directions
            forward_out, forward_final = unroll(
                self.cells[index], layer_input, mask, initial[index], steps if top else None
            )
            finals.append(forward_final)
            layer_output = forward_out
            if self.bidirectional:
                reversed_input = reverse_valid(layer_input, lengths)
                backward_out, backward_final = unroll(self.cells[index + 1], reversed_input, mask, initial[index + 1])
                finals.append(backward_final)
                layer_output = torch.cat([forward_out, reverse_valid(backward_out, lengths)], dim=-1)
            if not top:
                layer_output = F.dropout(layer_output, self.dropout, self.training)
            layer_input = layer_output
        return layer_input, self._join_state(finals), steps

    def _forward_fused(self, x: Tensor, lengths: Tensor | None, state: State | None) -> tuple[Tensor, State]:
        """The same computation by torch's fused kernel, on this module's parameters."""
        hx = list(self._checked_state(state, x.shape[0], x))
        weights = [weight for cell in self.cells for weight in cell.fused_weights()]
        if not x.is_cuda:
            return self._call_kernel(x, lengths, hx, weights)
        with warnings.catch_warnings():
            # cuDNN says at every call that these weights (mapped per call) are not one flat buffer and
            # copies them into one: the price of a single set of named parameters for both paths.
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            return self._call_kernel(x, lengths, hx, weights)

    def _call_kernel(
        self, x: Tensor, lengths: Tensor | None, hx: list[Tensor], weights: list[Tensor]
    ) -> tuple[Tensor, State]:
        assert self.fused_mode is not None
        kernel: Callable[..., tuple[Tensor, ...]] = FUSED_KERNELS[self.fused_mode]
        options = (True, self.num_layers, self.dropout, self.training, self.bidirectional)
        length = x.shape[1]
        if lengths is None or bool((lengths >= length).all()):
            result = kernel(x, hx if self.state_size == 2 else hx[0], weights, *options, True)
            output, final = result[0], list(result[1:])
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            hx = [h.index_select(1, packed.sorted_indices) for h in hx]
            result = kernel(packed.data, packed.batch_sizes, hx if self.state_size == 2 else hx[0], weights, *options)
            sorting = (packed.sorted_indices, packed.unsorted_indices)
            output_packed = PackedSequence(result[0], packed.batch_sizes, *sorting)
            output, _ = pad_packed_sequence(output_packed, batch_first=True, total_length=length)
            final = [h.index_select(1, packed.unsorted_indices) for h in result[1:]]
        return output, (final[0], final[1]) if self.state_size == 2 else final[0]
