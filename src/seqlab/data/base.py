"""The task interface every data source implements, and the batch conventions the trainer relies on.

A batch is a dict of tensors. Conventions shared by all tasks:

- ``inputs``: (batch, features) vectors, (batch, time, features) floats or (batch, time) token ids;
- ``lengths``: (batch,) true lengths of padded sequences (absent when every sequence is full);
- ``targets``: (batch,) class ids, (batch, outputs) regression targets, or (batch, time) token ids
  with ``IGNORE`` (-100) at padded positions;
- ``bits`` tasks: ``targets`` (batch, time, bits) of 0/1 floats, ``IGNORE`` where no output is asked;
- sequence-to-sequence tasks add ``src``, ``src_lengths``, ``tgt_in`` (decoder input, starting with
  ``<bos>``) and use ``targets`` for the decoder output.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch

Batch = dict[str, torch.Tensor]
IGNORE = -100
TaskKind = Literal["classify", "regress", "tokens", "seq2seq", "loss", "bits"]  # loss: the model returns per-example losses; bits: per-bit logits, binary cross-entropy


@dataclass
class TaskInfo:
    """What a model builder needs to know about a task's inputs and outputs."""

    kind: TaskKind
    output_dim: int
    input_dim: int | None = None
    vocab_size: int | None = None
    sequence: bool = True
    pad_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def step_generator(seed: int, *keys: int | str) -> torch.Generator:
    """A torch RNG seeded from (seed, keys): batch `step` is the same on every run and after resume."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class Task(ABC):
    """A source of training and evaluation batches.

    A corpus task that can batch by token count sets `token_batching`; the trainer then hands it
    `train.batch_tokens` as `batch_tokens` (padded tokens per side per batch)."""

    info: TaskInfo
    token_batching: bool = False
    batch_tokens: int | None = None

    @abstractmethod
    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch for optimiser step `step`: a pure function of (seed, step)."""

    @abstractmethod
    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Batches of a fixed evaluation split ('val' or 'test')."""

    def splits(self) -> list[str]:
        return ["val"]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state a checkpoint needs to rebuild this task's vocabulary or scaling."""
        return {}


class GeneratedTask(Task):
    """A synthetic task: fresh examples each step from `generate`, fixed seeded sets for evaluation."""

    def __init__(self, seed: int, eval_size: int) -> None:
        self.seed = seed
        self.eval_size = eval_size
        self._eval_cache: dict[str, Batch] = {}

    @abstractmethod
    def generate(self, n: int, rng: torch.Generator) -> Batch:
        """`n` fresh examples drawn with `rng`."""

    def train_batch(self, step: int, batch_size: int) -> Batch:
        return self.generate(batch_size, step_generator(self.seed, "train", step))

    def eval_set(self, split: str) -> Batch:
        if split not in self._eval_cache:
            self._eval_cache[split] = self.generate(self.eval_size, step_generator(self.seed, split))
        return self._eval_cache[split]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        data = self.eval_set(split)
        n = next(iter(data.values())).shape[0]
        for start in range(0, n, batch_size):
            yield {key: value[start : start + batch_size] for key, value in data.items()}

    def splits(self) -> list[str]:
        return ["val", "test"]
