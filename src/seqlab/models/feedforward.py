"""Feedforward models for the trainer: an MLP classifier or regressor over fixed-size inputs."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from seqlab.data.base import Batch, TaskInfo
from seqlab.nn.mlp import MLP, Activation
from seqlab.registry import MODELS, Spec


class MLPSpec(Spec):
    name: Literal["mlp"] = "mlp"
    hidden_sizes: list[int] = [8]
    activation: Activation = "tanh"
    dropout: float = 0.0


@MODELS.register("mlp", MLPSpec)
class MLPModel(nn.Module):
    """An MLP on `inputs` (batch, features); sequence inputs are flattened (a fixed window)."""

    def __init__(self, spec: MLPSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.input_dim is None:
            raise ValueError("the mlp model needs a task with numeric inputs (input_dim)")
        self.mlp = MLP(info.input_dim, spec.hidden_sizes, info.output_dim, spec.activation, spec.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.mlp(batch["inputs"].flatten(1).float())
