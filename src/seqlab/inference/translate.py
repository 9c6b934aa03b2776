"""Translate raw text with any seq2seq checkpoint: the checkpoint's meta.json rebuilds the model and the
tokenisers/vocabularies of the task it was trained on, so the checkpoint directory alone is enough.

Handling of odd input, the same for `seqlab translate` and `seqlab eval`:
- an empty (or whitespace-only) line translates to an empty line, without running the model;
- a line with more source tokens than the model was trained on (the task's `max_len`, stored in the
  checkpoint) is an error naming the line and both lengths; `max_src_len` raises the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.data.parallel import TranslationCodecs
from seqlab.errors import UserError
from seqlab.inference.search import decode
from seqlab.models import build_model
from seqlab.training.checkpoint import load_weights, resolve_checkpoint


class SourceTooLong(UserError):
    """A source line longer than the model's limit."""


@dataclass
class Translation:
    source: str
    source_tokens: list[str]  # as the model saw them, ending with <eos>
    text: str
    tokens: list[str]  # target tokens, ending with <eos> (empty for an empty line)
    score: float
    attention: torch.Tensor | None  # (len(tokens), len(source_tokens))


class Translator:
    """A trained encoder–decoder with the codecs of its task."""

    def __init__(self, model: nn.Module, codecs: TranslationCodecs, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.codecs = codecs
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "Translator":
        checkpoint = resolve_checkpoint(path)
        codecs = TranslationCodecs.from_task_state(checkpoint.meta.get("task_state", {}))
        config = config_from_dict(checkpoint.meta["config"])
        info = TaskInfo(kind="seq2seq", output_dim=len(codecs.target.vocab), vocab_size=len(codecs.source.vocab))
        model = build_model(config.model, info)
        if not hasattr(model, "step"):
            raise UserError(f"{checkpoint.path} holds a {config.model.name!r} model, which cannot translate.")
        load_weights(checkpoint.path, model)
        return cls(model, codecs, device)

    def translate(
        self, lines: Sequence[str], beam_size: int = 1, length_penalty: float = 0.6, batch_size: int = 64,
        max_src_len: int | None = None, max_len_ratio: float = 1.5, max_len_offset: int = 5, first_line: int = 1,
    ) -> list[Translation]:
        """Translate `lines` in batches of similar length; results in input order."""
        limit = max_src_len if max_src_len is not None else self.codecs.max_len
        encoded = [self.codecs.source.encode(line) for line in lines]
        for number, ids in enumerate(encoded, start=first_line):
            if len(ids) > limit:
                raise SourceTooLong(
                    f"input line {number} has {len(ids)} source tokens; this model was trained on at most {limit}. "
                    "Split the line, or pass --max-src-len to translate it anyway."
                )
        results: list[Translation | None] = [None] * len(lines)
        for index, line in enumerate(lines):
            if not encoded[index]:
                results[index] = Translation(line, [], "", [], 0.0, None)
        order = sorted((i for i in range(len(lines)) if encoded[i]), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([encoded[i] for i in rows], [[] for _ in rows])
            batch = {key: value.to(self.device) for key, value in batch.items()}
            hypotheses = decode(self.model, batch, beam_size, length_penalty, max_len_ratio, max_len_offset)
            for row, hypothesis in zip(rows, hypotheses):
                source_vocab, target_vocab = self.codecs.source.vocab, self.codecs.target.vocab
                results[row] = Translation(
                    source=lines[row],
                    source_tokens=[source_vocab.itos[i] for i in encoded[row]] + ["<eos>"],
                    text=self.codecs.target.decode(hypothesis.tokens),
                    tokens=[target_vocab.itos[i] for i in hypothesis.tokens] + ["<eos>"],
                    score=hypothesis.score,
                    attention=hypothesis.attention,
                )
        return [r for r in results if r is not None]
