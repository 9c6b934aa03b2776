"""The language-model ladder below the Transformer (seeds 000, 002, 004):

- ``bigram``: p(x_{t+1} | x_t) from one V×V table of logits. Its maximum-likelihood solution is the
  count model P(b | a) = N(a, b) / Σ_c N(a, c): `count_table` computes that directly, and gradient
  training of the table converges to it;
- ``mlp_lm``: Bengio et al. 2003, eq. 1: y = b + W x + U tanh(d + H x), x = [C(w_{t−n+1}); …; C(w_t)],
  a fixed window of n previous tokens through shared embeddings C;
- ``wavenet_lm``: dilated causal convolutions with gated activations, skips summed, then
  ReLU → 1×1 → ReLU → 1×1 to logits (van den Oord et al. 2016, Fig. 4);
- ``bow_lm``: the causal bag of words, a_t = (1/t) Σ_{s≤t} x_s: attention whose scores are all equal
  (seed 004's α_{ts} = 1/t), the step from fixed windows to attention; its state is a running sum.

(The Elman / LSTM / GRU rungs are the ``rnn`` model; the Transformer and linear-Transformer rungs
are ``transformer_lm``.) Every model here generates through the decoding protocol of
`seqlab.inference.decoding` with empty memory, its state a dict of batch-first tensors.
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from seqlab.data.base import IGNORE, Batch, TaskInfo
from seqlab.models.base import LanguageModel, Memory
from seqlab.nn.convolution import WaveNetStack
from seqlab.registry import MODELS, Spec

State = dict[str, Tensor]


def _require_tokens(info: TaskInfo, name: str) -> int:
    if info.kind != "tokens" or info.vocab_size is None:
        raise ValueError(f"the {name} model is a language model: it needs a tokens task such as lm, not {info.kind!r}.")
    return info.vocab_size


# --- bigram --------------------------------------------------------------------------------------


class BigramSpec(Spec):
    name: Literal["bigram"] = "bigram"


@MODELS.register("bigram", BigramSpec)
class BigramLM(LanguageModel):
    """logits(x_{t+1} | x_t = a) = L[a], a learned V×V table (softmax rows are the bigram probabilities)."""

    def __init__(self, spec: BigramSpec, info: TaskInfo) -> None:
        super().__init__()
        self.L = nn.Parameter(torch.zeros(_require_tokens(info, "bigram"), info.output_dim))

    def forward(self, batch: Batch) -> Tensor:
        return self.L[batch["inputs"]]

    def init_state(self, memory: Memory, batch_size: int) -> State:
        return {}

    def step(self, memory: Memory, state: State, tokens: Tensor) -> tuple[Tensor, State, None]:
        return self.L[tokens], state, None


def count_table(batches: Iterable[Batch], vocab_size: int, smoothing: float = 1.0) -> Tensor:
    """log P(b | a) = log (N(a, b) + α) / Σ_c (N(a, c) + α): the bigram count model with add-α smoothing."""
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    for batch in batches:
        valid = batch["targets"] != IGNORE
        pairs = batch["inputs"][valid] * vocab_size + batch["targets"][valid]
        counts += torch.bincount(pairs, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)
    counts += smoothing
    return (counts / counts.sum(dim=1, keepdim=True)).log().float()


# --- Bengio et al. 2003 MLP ----------------------------------------------------------------------


class MLPLMSpec(Spec):
    name: Literal["mlp_lm"] = "mlp_lm"
    context: int = Field(3, ge=1, description="n − 1: previous tokens the model reads")
    embedding_dim: int = Field(10, ge=1, description="m: size of the shared feature vectors C(w)")
    hidden_size: int = Field(200, ge=1, description="h: tanh hidden units")
    direct: bool = Field(False, description="the optional direct connections W x from embeddings to outputs")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@MODELS.register("mlp_lm", MLPLMSpec)
class MLPLM(LanguageModel):
    """y = b + W x + U tanh(d + H x) with x the concatenated embeddings of the last n − 1 tokens (eq. 1)."""

    def __init__(self, spec: MLPLMSpec, info: TaskInfo) -> None:
        super().__init__()
        self.context, self.pad_id = spec.context, info.pad_id
        self.C = nn.Embedding(_require_tokens(info, "mlp_lm"), spec.embedding_dim)
        width = spec.context * spec.embedding_dim
        self.H = nn.Linear(width, spec.hidden_size)  # H and d
        self.U = nn.Linear(spec.hidden_size, info.output_dim)  # U and b
        self.W = nn.Linear(width, info.output_dim, bias=False) if spec.direct else None
        self.dropout = nn.Dropout(spec.dropout)

    def predict(self, windows: Tensor) -> Tensor:
        """windows (..., n − 1) token ids, oldest first → logits (..., V)."""
        x = self.C(windows).flatten(-2)
        y = self.U(self.dropout(torch.tanh(self.H(x))))
        return y + self.W(x) if self.W is not None else y

    def forward(self, batch: Batch) -> Tensor:
        inputs = batch["inputs"]
        padded = F.pad(inputs, (self.context - 1, 0), value=self.pad_id)
        windows = padded.unfold(1, self.context, 1)  # (batch, time, n − 1): tokens t−n+2 … t
        return self.predict(windows)

    def init_state(self, memory: Memory, batch_size: int) -> State:
        return {"window": torch.full((batch_size, self.context), self.pad_id, dtype=torch.long, device=self.C.weight.device)}

    def step(self, memory: Memory, state: State, tokens: Tensor) -> tuple[Tensor, State, None]:
        window = torch.cat([state["window"][:, 1:], tokens[:, None]], dim=1)
        return self.predict(window), {"window": window}, None


# --- WaveNet -------------------------------------------------------------------------------------


class WaveNetLMSpec(Spec):
    name: Literal["wavenet_lm"] = "wavenet_lm"
    channels: int = Field(64, ge=1, description="residual channels (also the embedding size)")
    skip_channels: int = Field(128, ge=1)
    kernel_size: int = Field(2, ge=2)
    layers: int = Field(6, ge=1, description="blocks per cycle, dilations 1, 2, …, 2^(layers−1)")
    cycles: int = Field(1, ge=1, description="repetitions of the dilation cycle")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@MODELS.register("wavenet_lm", WaveNetLMSpec)
class WaveNetLM(LanguageModel):
    """Token embedding → dilated causal gated convolutions → Σ skips → ReLU, 1×1, ReLU, 1×1 → logits."""

    def __init__(self, spec: WaveNetLMSpec, info: TaskInfo) -> None:
        super().__init__()
        self.embedding = nn.Embedding(_require_tokens(info, "wavenet_lm"), spec.channels)
        self.stack = WaveNetStack(spec.channels, spec.skip_channels, spec.kernel_size, spec.layers, spec.cycles)
        self.post = nn.Conv1d(spec.skip_channels, spec.skip_channels, 1)
        self.logits = nn.Conv1d(spec.skip_channels, info.output_dim, 1)
        self.dropout = nn.Dropout(spec.dropout)

    @property
    def receptive_field(self) -> int:
        return self.stack.receptive_field

    def head(self, skips: Tensor) -> Tensor:
        return self.logits(self.dropout(F.relu(self.post(F.relu(skips)))))

    def forward(self, batch: Batch) -> Tensor:
        x = self.embedding(batch["inputs"]).transpose(1, 2)  # (batch, channels, time)
        return self.head(self.stack(x)).transpose(1, 2)  # (batch, time, vocab)

    def init_state(self, memory: Memory, batch_size: int) -> list[Tensor]:
        """Each block's last (k−1)·d inputs: zeros before the first token."""
        return self.stack.empty_buffers(batch_size, self.embedding.weight)

    def step(self, memory: Memory, state: list[Tensor], tokens: Tensor) -> tuple[Tensor, list[Tensor], None]:
        x_t = self.embedding(tokens)[:, :, None]  # (batch, channels, 1)
        skips, state = self.stack.step(x_t, state)
        return self.head(skips)[:, :, 0], state, None


# --- causal bag of words -------------------------------------------------------------------------


class BowLMSpec(Spec):
    name: Literal["bow_lm"] = "bow_lm"
    embedding_dim: int = Field(64, ge=1, description="d: token and position embeddings")
    hidden_size: int = Field(64, ge=1, description="tanh units of the output layer")
    ff_mult: int = Field(4, ge=1, description="width of the residual tanh MLP, in multiples of d")
    max_len: int = Field(32, ge=1, description="positions with a learned embedding")


@MODELS.register("bow_lm", BowLMSpec)
class BowLM(LanguageModel):
    """x_t = C(w_t) + P_t; a_t = (1/t) Σ_{s≤t} x_s; h_t = x_t + a_t; g_t = h_t + W_2 tanh(W_1 h_t);
    logits_t = U tanh(V g_t)."""

    def __init__(self, spec: BowLMSpec, info: TaskInfo) -> None:
        super().__init__()
        self.max_len = spec.max_len
        self.C = nn.Embedding(_require_tokens(info, "bow_lm"), spec.embedding_dim)
        self.P = nn.Embedding(spec.max_len, spec.embedding_dim)
        self.W_1 = nn.Linear(spec.embedding_dim, spec.ff_mult * spec.embedding_dim)
        self.W_2 = nn.Linear(spec.ff_mult * spec.embedding_dim, spec.embedding_dim)
        self.V = nn.Linear(spec.embedding_dim, spec.hidden_size)
        self.U = nn.Linear(spec.hidden_size, info.output_dim)

    def _check_length(self, length: int) -> None:
        if length > self.max_len:
            raise ValueError(f"bow_lm has {self.max_len} positions but got position {length}; raise model.max_len.")

    def head(self, x_t: Tensor, a_t: Tensor) -> Tensor:
        h_t = x_t + a_t
        g_t = h_t + self.W_2(torch.tanh(self.W_1(h_t)))
        return self.U(torch.tanh(self.V(g_t)))

    def forward(self, batch: Batch) -> Tensor:
        tokens = batch["inputs"]
        self._check_length(tokens.shape[1])
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.C(tokens) + self.P(positions)
        t = (positions + 1).to(x.dtype)[:, None]
        a = x.cumsum(dim=1) / t
        return self.head(x, a)

    def init_state(self, memory: Memory, batch_size: int) -> State:
        weight = self.C.weight
        return {"sum": weight.new_zeros(batch_size, weight.shape[1]),
                "t": torch.zeros(batch_size, dtype=torch.long, device=weight.device)}

    def step(self, memory: Memory, state: State, tokens: Tensor) -> tuple[Tensor, State, None]:
        self._check_length(int(state["t"].max()) + 1)
        x_t = self.C(tokens) + self.P(state["t"])
        total, t = state["sum"] + x_t, state["t"] + 1
        return self.head(x_t, total / t[:, None].to(x_t.dtype)), {"sum": total, "t": t}, None
