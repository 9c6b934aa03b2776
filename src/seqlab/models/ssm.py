"""State-space models (seed 002, "The Future of Sequence Modeling"): S4D (Gu et al. 2022) and Mamba (Gu & Dao 2023).

- ``ssm_lm``: a language model, embedding → N residual blocks → LayerNorm → head tied to the embedding;
  each block is x ← x + SSM(LayerNorm(x)) and, with ``mlp: true``, x ← x + W_2(SiLU(W_1 x) ⊙ W_3 x) on
  LayerNorm(x) (a gated MLP). ``selective: false`` makes the SSM sublayer S4D → GELU → linear (S4D's layer:
  the SSM mixes time, the position-wise linear mixes channels), trained in convolutional form (FFT);
  ``selective: true`` makes it Mamba's block (selective SSM, chunked scan). Generation follows the decoding
  protocol of `seqlab.inference.decoding` in recurrent form: one token a step, a state of constant size
  (S4D: h per layer; Mamba: h and the last conv_size − 1 inputs of the convolution).
- ``ssm``: the same stack over token ids or numbers with a head for classify / regress (``pooling: last``,
  the last valid position, or ``mean``) or per-step tokens tasks, as ``rnn`` serves them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from seqlab.registry import Spec
from seqlab.data.base import Batch, TaskInfo
from seqlab.models.base import LanguageModel, Memory
from seqlab.nn.recurrent import valid_mask
from seqlab.nn.ssm import S4D, ScanKind, SelectiveSSM
from seqlab.registry import MODELS

State = dict[str, Tensor]


class _SSMSizes(Spec):
    d_model: int = Field(64, ge=1, description="width of the residual stream (S4D: H channels)")
    num_layers: int = Field(2, ge=1)
    state_size: int = Field(16, ge=1, description="N: state dimension per channel (S4D: complex modes)")
    dt_min: float = Field(1e-3, gt=0, description="Δ is initialised log-uniform on [dt_min, dt_max]")
    dt_max: float = Field(1e-1, gt=0)
    selective: bool = Field(False, description="Mamba's selective SSM (Δ, B, C from the input) instead of S4D")
    expand: int = Field(2, ge=1, description="selective: inner width = expand · d_model")
    conv_size: int = Field(4, ge=1, description="selective: width of the causal depthwise convolution")
    scan: ScanKind = Field("chunked", description="selective: the chunked scan or the sequential reference")
    mlp: bool = Field(True, description="a gated MLP after each SSM sublayer")
    d_ff: int = Field(128, ge=1, description="hidden width of the gated MLP")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_dt(self) -> "_SSMSizes":
        if self.dt_min >= self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must be below dt_max ({self.dt_max}): Δ starts in [dt_min, dt_max]")
        return self


class S4DMixer(nn.Module):
    """S4D → GELU → position-wise linear: y = W (GELU(x ∗ K̄ + D x)) + b."""

    def __init__(self, spec: _SSMSizes) -> None:
        super().__init__()
        self.ssm = S4D(spec.d_model, spec.state_size, spec.dt_min, spec.dt_max)
        self.out = nn.Linear(spec.d_model, spec.d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.gelu(self.ssm(x)))

    def init_state(self, batch_size: int, like: Tensor) -> State:
        return self.ssm.init_state(batch_size, like)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        y_t, state = self.ssm.step(x_t, state)
        return self.out(F.gelu(y_t)), state


class GatedMLP(nn.Module):
    """W_2 (SiLU(W_1 x) ⊙ W_3 x), position-wise."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.W_1 = nn.Linear(d_model, d_ff, bias=False)
        self.W_3 = nn.Linear(d_model, d_ff, bias=False)
        self.W_2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.W_2(F.silu(self.W_1(x)) * self.W_3(x))


class SSMBlock(nn.Module):
    """x ← x + Dropout(SSM(LayerNorm(x))); with an MLP, x ← x + Dropout(MLP(LayerNorm(x)))."""

    def __init__(self, spec: _SSMSizes) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(spec.d_model)
        self.mixer: S4DMixer | SelectiveSSM
        if spec.selective:
            self.mixer = SelectiveSSM(spec.d_model, spec.state_size, spec.expand, spec.conv_size,
                                      dt_min=spec.dt_min, dt_max=spec.dt_max, scan=spec.scan)
        else:
            self.mixer = S4DMixer(spec)
        self.mlp_norm = nn.LayerNorm(spec.d_model) if spec.mlp else None
        self.mlp = GatedMLP(spec.d_model, spec.d_ff) if spec.mlp else None
        self.dropout = nn.Dropout(spec.dropout)

    def _mlp(self, x: Tensor) -> Tensor:
        if self.mlp is None or self.mlp_norm is None:
            return x
        return x + self.dropout(self.mlp(self.mlp_norm(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self._mlp(x + self.dropout(self.mixer(self.norm(x))))

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        y_t, state = self.mixer.step(self.norm(x_t), state)
        return self._mlp(x_t + y_t), state


class SSMStack(nn.Module):
    """Residual SSM blocks and a final LayerNorm, in parallel form (`forward`) or one step at a time (`step`)."""

    def __init__(self, spec: _SSMSizes) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SSMBlock(spec) for _ in range(spec.num_layers))
        self.norm = nn.LayerNorm(spec.d_model)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def init_state(self, batch_size: int, like: Tensor) -> list[State]:
        return [block.mixer.init_state(batch_size, like) for block in self.blocks]

    def step(self, x_t: Tensor, state: list[State]) -> tuple[Tensor, list[State]]:
        new_state = []
        for block, layer_state in zip(self.blocks, state):
            x_t, layer_state = block.step(x_t, layer_state)
            new_state.append(layer_state)
        return self.norm(x_t), new_state


# --- language model ---------------------------------------------------------------------------------------


class SSMLMSpec(_SSMSizes):
    """A state-space language model: S4D blocks, or Mamba blocks with ``selective: true``."""

    name: Literal["ssm_lm"] = "ssm_lm"
    tie_embeddings: bool = Field(True, description="output projection = token embedding")


class SSMLM(LanguageModel):
    """p(x_{t+1} | x_≤t) from causal state-space blocks; logits (batch, time, vocab)."""

    def __init__(self, spec: SSMLMSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "tokens" or info.vocab_size is None:
            raise ValueError(f"ssm_lm models token sequences (tokens tasks such as lm), not {info.kind!r}; "
                              "use the ssm model for classify / regress tasks.")
        self.embed = nn.Embedding(info.vocab_size, spec.d_model, padding_idx=info.pad_id)
        nn.init.normal_(self.embed.weight, std=spec.d_model**-0.5)  # tied: logits of unit scale at the start
        with torch.no_grad():
            self.embed.weight[info.pad_id].zero_()
        self.stack = SSMStack(spec)
        self.out = nn.Linear(spec.d_model, info.output_dim, bias=False)
        if spec.tie_embeddings and info.output_dim == info.vocab_size:
            self.out.weight = self.embed.weight

    def forward(self, batch: Batch) -> Tensor:
        return self.out(self.stack(self.embed(batch["inputs"])))

    def init_state(self, memory: Memory, batch_size: int) -> list[State]:
        """Every layer's zero state; its size does not change with the number of tokens fed."""
        return self.stack.init_state(batch_size, self.embed.weight)

    def step(self, memory: Memory, state: list[State], tokens: Tensor) -> tuple[Tensor, list[State], None]:
        """tokens (batch,) → next-token logits (batch, vocab) and the new state, by the recurrent form."""
        h_t, state = self.stack.step(self.embed(tokens), state)
        return self.out(h_t), state, None


@MODELS.register("ssm_lm", SSMLMSpec)
def build_ssm_lm(spec: SSMLMSpec, info: TaskInfo) -> nn.Module:
    return SSMLM(spec, info)


# --- encoder with a task head -----------------------------------------------------------------------------


class SSMSpec(_SSMSizes):
    """A state-space encoder for classify / regress / per-step tokens tasks, over token ids or numbers."""

    name: Literal["ssm"] = "ssm"
    pooling: Literal["last", "mean"] = Field("last", description="classify/regress: the last valid position, or the mean")


class SSMEncoder(nn.Module):
    """Embed (tokens) or project (numbers) → SSM stack → a linear head by task kind (causal throughout)."""

    def __init__(self, spec: SSMSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind not in ("classify", "regress", "tokens") or not info.sequence:
            raise ValueError(f"the ssm model needs a sequence task of kind classify, regress or tokens, not {info.kind!r}; "
                              "use ssm_lm for language modelling.")
        self.kind, self.pooling = info.kind, spec.pooling
        self.embed: nn.Module
        if info.vocab_size is not None:
            self.embed = nn.Embedding(info.vocab_size, spec.d_model, padding_idx=info.pad_id)
        elif info.input_dim is not None:
            self.embed = nn.Linear(info.input_dim, spec.d_model)
        else:
            raise ValueError("the ssm model needs token inputs (vocab_size) or numeric inputs (input_dim).")
        self.stack = SSMStack(spec)
        self.head = nn.Linear(spec.d_model, info.output_dim)

    def inputs(self, x: Tensor) -> Tensor:
        if isinstance(self.embed, nn.Embedding):
            return self.embed(x.long())
        x = x.float()
        return self.embed(x.unsqueeze(-1) if x.dim() == 2 else x)

    def forward(self, batch: Batch) -> Tensor:
        outputs = self.stack(self.inputs(batch["inputs"]))  # (batch, time, d_model)
        if self.kind == "tokens":
            return self.head(outputs)
        lengths = batch.get("lengths")
        if self.pooling == "last":
            last = (lengths.to(outputs.device) - 1 if lengths is not None
                    else torch.full((outputs.shape[0],), outputs.shape[1] - 1, device=outputs.device))
            summary = outputs[torch.arange(outputs.shape[0], device=outputs.device), last]
        else:
            mask = valid_mask(lengths, outputs.shape[1], outputs.device)
            summary = outputs.mean(1) if mask is None else (
                (outputs * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1))
        return self.head(summary)


@MODELS.register("ssm", SSMSpec)
def build_ssm(spec: SSMSpec, info: TaskInfo) -> nn.Module:
    return SSMEncoder(spec, info)
