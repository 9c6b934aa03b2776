"""Models with an external memory: ``memn2n`` (end-to-end memory network, Sukhbaatar et al. 2015) reads a story
task's ``story`` and ``question`` (see `seqlab.data.babi`); ``ntm`` (Neural Turing Machine, Graves et al. 2014)
reads ``inputs`` step by step and emits one output per step (``bits`` tasks: logits of each bit; ``tokens``
tasks: logits over the vocabulary). `forward_with_attention` / `forward_with_weightings` also return what the
memory was asked (hop attentions p, head weightings w) for pictures.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from seqlab.registry import Spec
from seqlab.data.base import Batch, TaskInfo
from seqlab.errors import UserError
from seqlab.nn.memory_networks import MemN2N, Tying
from seqlab.nn.ntm import NTM
from seqlab.registry import MODELS


class MemN2NSpec(Spec):
    """End-to-end memory network; see seqlab.nn.memory_networks."""

    name: Literal["memn2n"] = "memn2n"
    embedding_dim: int = Field(20, ge=1, description="d: size of the memory and controller vectors")
    hops: int = Field(3, ge=1, description="K: memory reads per question")
    tying: Tying = Field("adjacent", description="adjacent (A^{k+1} = C^k, W^T = C^K, B = A^1) or layerwise (+ H)")
    position_encoding: bool = Field(True, description="l_j-weighted sum of word vectors (False: bag of words)")
    temporal_encoding: bool = Field(True, description="add T_A(i), T_C(i) for the i-th most recent sentence")
    init_std: float = Field(0.1, gt=0, description="weights ~ N(0, init_std²), as in the paper")


class MemoryNetworkModel(nn.Module):
    """A batch's story and question → answer logits over the vocabulary."""

    def __init__(self, spec: MemN2NSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind != "classify" or info.vocab_size is None or "memory_size" not in info.extra:
            raise ValueError("the memn2n model reads a story task (task.name: babi) with a story, a question and "
                              "a one-word answer.")
        self.memory_size = int(info.extra["memory_size"])
        self.memory = MemN2N(info.vocab_size, spec.embedding_dim, spec.hops, self.memory_size, spec.tying,
                             spec.position_encoding, spec.temporal_encoding, info.pad_id, spec.init_std)

    def forward_with_attention(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Logits (batch, vocab) and the attention p of every hop (batch, hops, memory)."""
        story = batch["story"]
        if story.shape[1] > self.memory_size:
            raise UserError(f"the story has {story.shape[1]} sentences but the model's memory holds "
                            f"{self.memory_size}; train with a larger task.memory_size or truncate the story.")
        return self.memory(story, batch["question"])

    def forward(self, batch: Batch) -> Tensor:
        return self.forward_with_attention(batch)[0]


class NTMSpec(Spec):
    """Neural Turing Machine; see seqlab.nn.ntm."""

    name: Literal["ntm"] = "ntm"
    controller_size: int = Field(100, ge=1, description="LSTM controller units")
    memory_slots: int = Field(128, ge=2, description="N: memory locations")
    memory_width: int = Field(20, ge=1, description="W: size of each location")
    read_heads: int = Field(1, ge=1)
    write_heads: int = Field(1, ge=1)
    shift_range: int = Field(1, ge=0, description="S: the shift weighting covers −S..S")
    memory_init: float = Field(1e-6, description="the constant every cell of M_0 starts at")
    embedding_dim: int = Field(16, ge=1, description="token-id inputs: size of the input embedding")


class NTMModel(nn.Module):
    """Numeric (or embedded token) inputs → NTM → one output per step."""

    def __init__(self, spec: NTMSpec, info: TaskInfo) -> None:
        super().__init__()
        if info.kind not in ("bits", "tokens") or not info.sequence:
            raise ValueError(f"the ntm model emits one output per step (bits or tokens tasks), not {info.kind!r}.")
        if 2 * spec.shift_range + 1 > spec.memory_slots:
            raise ValueError(f"model.shift_range = {spec.shift_range} shifts past {spec.memory_slots} memory slots; "
                              "use at most (memory_slots − 1) / 2.")
        self.embedding = nn.Embedding(info.vocab_size, spec.embedding_dim) if info.vocab_size is not None else None
        input_size = spec.embedding_dim if self.embedding is not None else info.input_dim
        if input_size is None:
            raise ValueError("the ntm model needs a task with numeric inputs (input_dim) or token ids (vocab_size).")
        self.ntm = NTM(input_size, info.output_dim, spec.controller_size, spec.memory_slots, spec.memory_width,
                       spec.read_heads, spec.write_heads, spec.shift_range, spec.memory_init)

    def forward_with_weightings(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Outputs (batch, time, outputs) and the read/write weightings (batch, time, heads, N)."""
        x = batch["inputs"]
        x = self.embedding(x.long()) if self.embedding is not None else x.float()
        return self.ntm(x)

    def forward(self, batch: Batch) -> Tensor:
        return self.forward_with_weightings(batch)[0]


@MODELS.register("memn2n", MemN2NSpec)
def build_memn2n(spec: MemN2NSpec, info: TaskInfo) -> nn.Module:
    return MemoryNetworkModel(spec, info)


@MODELS.register("ntm", NTMSpec)
def build_ntm(spec: NTMSpec, info: TaskInfo) -> nn.Module:
    return NTMModel(spec, info)
