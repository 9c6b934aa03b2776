"""Initialisations for recurrent cells (seed 004's table): default, Xavier, orthogonal W_hh, identity W_hh.

A cell names which of its matrices are *recurrent* (they multiply the fed-back state, e.g. W_hh); every
other matrix is an *input* matrix (W_xh, W_hy) and every vector a bias.

- ``default``: PyTorch's choice for nn.RNN/LSTM/GRU, every parameter ~ U(−1/√H, 1/√H);
- ``xavier``: every matrix Xavier/Glorot-uniform, U(±√(6 / (fan_in + fan_out))), biases 0;
- ``orthogonal``: recurrent matrices orthogonal (WᵀW = I, every singular value 1), input matrices Xavier,
  biases 0 (Saxe et al. 2014);
- ``identity``: recurrent matrices W = I, input matrices Xavier, biases 0 (the IRNN of Le et al. 2015,
  which pairs it with ReLU units).

Whatever the scheme, an LSTM's forget-gate bias b_f starts at `forget_bias` (Gers et al. 2000;
Jozefowicz et al. 2015): σ(1) ≈ 0.73, so the cell starts out remembering.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

InitScheme = Literal["default", "xavier", "orthogonal", "identity"]
INIT_SCHEMES: tuple[str, ...] = ("default", "xavier", "orthogonal", "identity")


@torch.no_grad()
def initialise_cell(cell: nn.Module, scheme: InitScheme, recurrent: tuple[str, ...], hidden_size: int) -> None:
    """Initialise every parameter of `cell` by `scheme`; `recurrent` names its recurrent matrices."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    bound = 1.0 / math.sqrt(hidden_size)
    for name, parameter in cell.named_parameters(recurse=False):
        if scheme == "default":
            nn.init.uniform_(parameter, -bound, bound)
        elif parameter.dim() == 1:
            nn.init.zeros_(parameter)
        elif name in recurrent and scheme == "orthogonal":
            nn.init.orthogonal_(parameter)
        elif name in recurrent and scheme == "identity":
            nn.init.eye_(parameter)
        else:
            nn.init.xavier_uniform_(parameter)
