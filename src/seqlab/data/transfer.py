"""A labelled task over the lines of a text file, for pre-train-then-fine-tune (seed 002: "pre-trained models
can be adapted to many downstream tasks").

``real_or_shuffled``: is this line real (label 1) or the same tokens with the inner ones in a random order
(label 0; the first and last stay in place, so a capital at the start or a full stop at the end cannot give a
shuffled line away without knowing the language)? It reads the
file, splits it and builds the vocabulary exactly as ``lm`` with ``format: lines`` does for the same fields, so
a language model pre-trained on that file (`train.init_from`) speaks the same vocabulary. Telling a real line
from a shuffled one needs what a language model learns (which token follows which); `train_size` keeps the
labelled set small, as fine-tuning sets are.
"""

from __future__ import annotations

from typing import Any, Iterator, Literal

import torch
from pydantic import Field

from seqlab.data.base import Batch, Task, TaskInfo, step_generator
from seqlab.data.text import LanguageModelTask, LMSpec, TextCorpusSpec
from seqlab.data.vocab import Vocab
from seqlab.errors import UserError
from seqlab.registry import TASKS


class RealOrShuffledSpec(TextCorpusSpec):
    name: Literal["real_or_shuffled"] = "real_or_shuffled"
    train_size: int = Field(300, ge=2, description="labelled training examples (the first lines of the train split)")
    min_tokens: int = Field(4, ge=4, description="shorter lines are left out (too few orders to tell apart)")


def shuffled(tokens: list[int], rng: torch.Generator) -> list[int] | None:
    """`tokens` with the inner ones (all but the first and last) in a random order different from the
    original, or None when every such order is the same."""
    first, inner, last = tokens[0], tokens[1:-1], tokens[-1]
    if len(set(inner)) < 2:
        return None
    while True:
        order = [inner[i] for i in torch.randperm(len(inner), generator=rng).tolist()]
        if order != inner:
            return [first, *order, last]


@TASKS.register("real_or_shuffled", RealOrShuffledSpec)
class RealOrShuffledTask(Task):
    """`inputs` (B, T) = <bos> + tokens, `lengths` (B,), `targets` (B,) 1 for a real line, 0 for a shuffled one."""

    def __init__(self, spec: RealOrShuffledSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed
        fields = spec.model_dump(include=set(TextCorpusSpec.model_fields) - {"name"})
        self.lines = LanguageModelTask(LMSpec(name="lm", format="lines", **fields), seed)
        self.vocab = self.lines.vocab
        self.examples = {split: self._label(split) for split in ("train", "val", "test")}
        self.examples["train"] = self.examples["train"][: spec.train_size]
        if len(self.examples["train"]) < 2:
            raise UserError(f"{spec.path} leaves fewer than 2 training lines of at least {spec.min_tokens} tokens; "
                            "use a larger file or a smaller task.min_tokens.")
        self.info = TaskInfo(kind="classify", output_dim=2, vocab_size=len(self.vocab), pad_id=Vocab.pad_id)

    def _label(self, split: str) -> list[tuple[list[int], int]]:
        """Each long-enough line of `split`, kept (1) or shuffled (0) by a seeded coin."""
        rng = step_generator(self.spec.split_seed, "real_or_shuffled", split)
        examples = []
        for encoded in self.lines.lines[split]:
            tokens = encoded[1:-1]  # without <bos>/<eos>
            if len(tokens) < self.spec.min_tokens:
                continue
            fake = shuffled(tokens, rng)
            real = fake is None or bool(torch.rand((), generator=rng) < 0.5)
            examples.append(([Vocab.bos_id] + (tokens if real else fake), int(real)))
        return examples

    @staticmethod
    def collate(examples: list[tuple[list[int], int]]) -> Batch:
        lengths = torch.tensor([len(ids) for ids, _ in examples])
        inputs = torch.full((len(examples), int(lengths.max())), Vocab.pad_id)
        for row, (ids, _) in enumerate(examples):
            inputs[row, : len(ids)] = torch.tensor(ids)
        return {"inputs": inputs, "lengths": lengths, "targets": torch.tensor([label for _, label in examples])}

    def train_batch(self, step: int, batch_size: int) -> Batch:
        train = self.examples["train"]
        rows = torch.randint(0, len(train), (batch_size,), generator=step_generator(self.seed, "train", step)).tolist()
        return self.collate([train[i] for i in rows])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        examples = self.examples[split]
        for start in range(0, len(examples), batch_size):
            yield self.collate(examples[start : start + batch_size])

    def splits(self) -> list[str]:
        return ["val", "test"]

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.state_dict(), "level": self.spec.level}

