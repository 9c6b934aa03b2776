"""The Neural Turing Machine's algorithmic tasks (Graves et al. 2014, §4.1 and §4.3), deterministic by seed.

Both are of kind ``bits``: ``inputs`` (batch, time, width + delimiter channels) floats, ``targets`` (batch, time,
width) bits, ``IGNORE`` (−100) wherever no output is asked (the input phase, and the steps after a shorter
sequence in a batch of mixed lengths); the loss is binary cross-entropy per bit.

- ``ntm_copy``: L random binary vectors, a delimiter (its own channel), then L blank steps in which the L vectors
  are to be reproduced; L uniform in [min_length, max_length]. Evaluation draws L from
  [eval_min_length, eval_max_length] (the training range by default), to test sequences longer than trained on.
- ``associative_recall``: n items of ``item_length`` vectors, each item opened by a delimiter (channel
  ``width``); then a query item between two query delimiters (channel ``width + 1``); the answer, over the next
  ``item_length`` blank steps, is the item that followed the query in the list. n uniform in [min_items, max_items].
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from seqlab.registry import Spec
from seqlab.data.base import IGNORE, Batch, GeneratedTask, TaskInfo, step_generator
from seqlab.registry import TASKS


class CopySpec(Spec):
    name: Literal["ntm_copy"] = "ntm_copy"
    width: int = Field(8, ge=1, description="bits per vector")
    min_length: int = Field(1, ge=1)
    max_length: int = Field(20, ge=1)
    eval_min_length: int | None = Field(None, ge=1, description="evaluation lengths (default: the training range)")
    eval_max_length: int | None = Field(None, ge=1)
    eval_size: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "CopySpec":
        low, high = self.eval_min_length or self.min_length, self.eval_max_length or self.max_length
        if self.min_length > self.max_length or low > high:
            raise ValueError(f"min_length must not exceed max_length (training {self.min_length}–{self.max_length}, "
                             f"evaluation {low}–{high})")
        return self


def copy_sequences(n: int, lengths: torch.Tensor, width: int, rng: torch.Generator) -> Batch:
    """Copy examples of the given lengths L (n,), padded to the longest; ``lengths`` holds the true 2·L + 1 steps."""
    longest = int(lengths.max())
    steps = 2 * longest + 1
    bits = torch.randint(0, 2, (n, longest, width), generator=rng).float()
    positions = torch.arange(longest)
    bits = bits * (positions[None, :, None] < lengths[:, None, None])
    inputs = torch.zeros(n, steps, width + 1)
    targets = torch.full((n, steps, width), float(IGNORE))
    inputs[:, :longest, :width] = bits
    inputs[torch.arange(n), lengths, width] = 1.0  # the delimiter right after each sequence
    rows, t = torch.nonzero(positions[None, :] < lengths[:, None], as_tuple=True)
    targets[rows, t + lengths[rows] + 1] = bits[rows, t]  # vector t again, L + 1 steps later
    return {"inputs": inputs, "targets": targets, "lengths": 2 * lengths + 1}


class CopyTask(GeneratedTask):
    """Random binary vectors, a delimiter, then reproduce them (Graves et al. 2014, §4.1)."""

    def __init__(self, spec: CopySpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.info = TaskInfo(kind="bits", output_dim=spec.width, input_dim=spec.width + 1, sequence=True,
                             extra={"chance_accuracy": 0.5})

    def sample(self, n: int, low: int, high: int, rng: torch.Generator) -> Batch:
        lengths = torch.randint(low, high + 1, (n,), generator=rng)
        return copy_sequences(n, lengths, self.spec.width, rng)

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        return self.sample(n, self.spec.min_length, self.spec.max_length, rng)

    def eval_set(self, split: str) -> Batch:
        if split not in self._eval_cache:
            low = self.spec.eval_min_length or self.spec.min_length
            high = self.spec.eval_max_length or self.spec.max_length
            self._eval_cache[split] = self.sample(self.eval_size, low, high, step_generator(self.seed, split))
        return self._eval_cache[split]

    def fixed_length(self, n: int, length: int, seed: int) -> Batch:
        """`n` copy examples all of length `length` (for generalisation curves)."""
        return copy_sequences(n, torch.full((n,), length), self.spec.width, step_generator(self.seed, "length", length, seed))


class RecallSpec(Spec):
    name: Literal["associative_recall"] = "associative_recall"
    width: int = Field(6, ge=1, description="bits per vector")
    item_length: int = Field(3, ge=1, description="vectors per item")
    min_items: int = Field(2, ge=2)
    max_items: int = Field(6, ge=2)
    eval_size: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "RecallSpec":
        if self.min_items > self.max_items:
            raise ValueError(f"min_items ({self.min_items}) exceeds max_items ({self.max_items})")
        return self


class RecallTask(GeneratedTask):
    """Items, a query item, and the item that followed it in the list (Graves et al. 2014, §4.3)."""

    def __init__(self, spec: RecallSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.info = TaskInfo(kind="bits", output_dim=spec.width, input_dim=spec.width + 2, sequence=True,
                             extra={"chance_accuracy": 0.5})

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        width, k = self.spec.width, self.spec.item_length
        counts = torch.randint(self.spec.min_items, self.spec.max_items + 1, (n,), generator=rng)
        most = self.spec.max_items
        items = torch.randint(0, 2, (n, most, k, width), generator=rng).float()
        queries = (torch.rand(n, generator=rng) * (counts - 1)).long()  # an item that has a successor
        steps = most * (k + 1) + (k + 2) + k
        inputs = torch.zeros(n, steps, width + 2)
        targets = torch.full((n, steps, width), float(IGNORE))
        for row in range(n):
            count, query = int(counts[row]), int(queries[row])
            t = 0
            for item in range(count):
                inputs[row, t, width] = 1.0
                inputs[row, t + 1 : t + 1 + k, :width] = items[row, item]
                t += k + 1
            inputs[row, t, width + 1] = 1.0
            inputs[row, t + 1 : t + 1 + k, :width] = items[row, query]
            inputs[row, t + 1 + k, width + 1] = 1.0
            t += k + 2
            targets[row, t : t + k] = items[row, query + 1]
        return {"inputs": inputs, "targets": targets}


@TASKS.register("ntm_copy", CopySpec)
def build_copy(spec: CopySpec, seed: int) -> CopyTask:
    return CopyTask(spec, seed)


@TASKS.register("associative_recall", RecallSpec)
def build_recall(spec: RecallSpec, seed: int) -> RecallTask:
    return RecallTask(spec, seed)
