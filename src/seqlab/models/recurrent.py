"""Whole recurrent models (model name ``rnn``): a `RecurrentStack` of Elman, Jordan, LSTM or GRU cells
with the head the task's kind asks for.

- many-to-one (``classify`` → logits (B, C), ``regress`` → (B, D)): a linear head on the top layer's
  last valid state (``head: last``; forward and backward finals concatenated when bidirectional) or on
  the mean of its outputs over the valid steps (``head: mean``);
- many-to-many (``tokens``: tagging, language modelling) → per-step logits (B, T, V);
- generation (tokens tasks): the decoding protocol of `seqlab.inference.decoding`, empty memory, one token a step.

`forward_with_state(batch, state)` also returns the final state, so truncated BPTT can carry it from
one chunk of a stream to the next; `forward(batch)` is the same from the zero state.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from seqlab.data.base import Batch, TaskInfo
from seqlab.models.base import LanguageModel, Memory
from seqlab.nn.recurrent import (
    CellName, Nonlinearity, RecurrentStack, State, batch_first_state, stack_state, valid_mask,
)
from seqlab.registry import MODELS, Spec

InitName = Literal["default", "xavier", "orthogonal", "identity"]


class RNNSpec(Spec):
    """A recurrent model; see seqlab.nn.recurrent and seqlab.nn.gated for the cells."""

    name: Literal["rnn"] = "rnn"
    cell: CellName = "lstm"
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="between stacked layers and before the head")
    init: InitName = "default"
    forget_bias: float = Field(1.0, description="LSTM forget-gate bias at initialisation")
    fast: bool = Field(True, description="run torch's fused kernels where the cell has one")
    embedding_dim: int = Field(32, ge=1, description="token-id inputs: size of the input embedding")
    head: Literal["last", "mean"] = Field("last", description="many-to-one pooling of the sequence")
    nonlinearity: Nonlinearity = Field("tanh", description="Elman cell only: tanh, or relu for the IRNN")
    gru_reset: Literal["after", "before"] = Field(
        "after", description="GRU only: reset gate after W_hh̃ (torch/cuDNN, fused) or before it (seeds)"
    )


@MODELS.register("rnn", RNNSpec)
class RecurrentModel(LanguageModel):
    """Embedding or numeric inputs → RecurrentStack → a head chosen by the task's kind."""

    def __init__(self, spec: RNNSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind not in ("classify", "regress", "tokens", "bits"):
            raise ValueError(
                f"the rnn model handles classify, regress, tokens and bits tasks, not {info.kind!r}; "
                "use an encoder–decoder model for seq2seq."
            )
        if not info.sequence:
            raise ValueError("the rnn model needs a sequence task; this task's inputs are fixed-size vectors.")
        self.kind = info.kind
        self.head_pooling = spec.head
        self.dropout = spec.dropout
        self.embedding: nn.Embedding | None = None
        if info.vocab_size is not None:
            self.embedding = nn.Embedding(info.vocab_size, spec.embedding_dim, padding_idx=info.pad_id)
            input_size = spec.embedding_dim
        elif info.input_dim is not None:
            input_size = info.input_dim
        else:
            raise ValueError("the rnn model needs a task with token inputs (vocab_size) or numeric ones (input_dim).")
        self.stack = RecurrentStack(
            spec.cell,
            input_size,
            spec.hidden_size,
            num_layers=spec.num_layers,
            bidirectional=spec.bidirectional,
            dropout=spec.dropout,
            init=spec.init,
            forget_bias=spec.forget_bias,
            fast=spec.fast,
            nonlinearity=spec.nonlinearity,
            gru_reset=spec.gru_reset,
        )
        self.head = nn.Linear(self.stack.output_size, info.output_dim)

    def embed(self, inputs: Tensor) -> Tensor:
        """(batch, time) token ids or (batch, time[, features]) numbers → (batch, time, input_size)."""
        if self.embedding is not None:
            return self.embedding(inputs.long())
        inputs = inputs.float()
        return inputs.unsqueeze(-1) if inputs.dim() == 2 else inputs

    def final_hidden(self, state: State) -> Tensor:
        """The top layer's final h: (batch, hidden · directions), forward and backward concatenated."""
        h = state[0] if isinstance(state, tuple) else state
        top = h[-self.stack.num_directions :]  # (directions, batch, hidden)
        return torch.cat(list(top), dim=-1)

    def forward_with_state(self, batch: Batch, state: State | None = None) -> tuple[Tensor, State]:
        """The task's output and the final state, starting from `state` (zeros when None)."""
        lengths = batch.get("lengths")
        outputs, final = self.stack(self.embed(batch["inputs"]), lengths, state)
        if self.kind in ("tokens", "bits"):  # one output per step
            return self.head(F.dropout(outputs, self.dropout, self.training)), final
        if self.head_pooling == "last":
            summary = self.final_hidden(final)
        else:
            mask = valid_mask(lengths, outputs.shape[1], outputs.device)
            if mask is None:
                summary = outputs.mean(dim=1)
            else:
                summary = outputs.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(outputs.dtype)
        return self.head(F.dropout(summary, self.dropout, self.training)), final

    def forward(self, batch: Batch, state: State | None = None) -> Tensor:
        return self.forward_with_state(batch, state)[0]

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        """The zero state for generating `batch_size` sequences, batch-first: {"h": (batch, layers, hidden), "c": ...}."""
        return batch_first_state(self.stack.initial_state(batch_size))

    def step(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Tensor, dict[str, Tensor], None]:
        """One generation step: tokens (batch,) → next-token logits (batch, vocab) and the new state."""
        if self.kind != "tokens" or self.embedding is None:
            raise ValueError("step-by-step generation needs a token-level (language model) task.")
        if self.stack.bidirectional:
            raise ValueError("a bidirectional model reads the future, so it cannot generate left to right.")
        outputs, final = self.stack(self.embedding(tokens.long())[:, None, :], None, stack_state(state))
        return self.head(outputs[:, 0]), batch_first_state(final), None
