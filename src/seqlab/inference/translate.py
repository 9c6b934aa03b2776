"""Translate raw text with any seq2seq checkpoint: the checkpoint's meta.json rebuilds the model and the
tokenisers/vocabularies of the task it was trained on, so the checkpoint directory alone is enough.

Handling of odd input, the same for `seqlab translate` and `seqlab eval`:
- an empty (or whitespace-only) line translates to an empty line, without running the model;
- a line with more source tokens than the model was trained on (the task's `max_len`, stored in the
  checkpoint) is an error naming the line and both lengths; `max_src_len` raises the limit.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.data.parallel import TranslationCodecs
from seqlab.errors import UserError
from seqlab.inference.decoding import Decoder
from seqlab.inference.search import decode_n_best
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
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (text, score) of the n best, best first; [] unless asked


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose nn.Linear layers compute in int8: weights quantised per output channel once,
    activations per batch at run time (torch.ao dynamic quantisation); embeddings and LayerNorm stay fp32."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.(ao\.quantization|quantize_per_tensor)")  # deprecated for torchao
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def memory_budget() -> int:
    """Bytes one decoding batch may take: half of the memory the machine has free now."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 4 << 30


def decoding_bytes(src_len: int, rows: int, beam_size: int, max_len_ratio: float) -> int:
    """A rough upper estimate of what decoding `rows` sentences of `src_len` tokens takes: for every
    hypothesis, fp32 attention rows over the source for each generated token, twice (live and finished),
    plus the encoder's src_len × src_len self-attention weights."""
    out_len = int(max_len_ratio * src_len) + 5
    return 4 * rows * (2 * beam_size * out_len * src_len + src_len * src_len)


def memory_bounded_batches(order: list[int], encoded: list[list[int]], batch_size: int, beam_size: int,
                           max_len_ratio: float, budget: int, first_line: int) -> Iterator[list[int]]:
    """Consecutive rows of `order` (sorted by length) in batches of at most `batch_size` whose estimated
    decoding memory fits `budget`; a sentence that cannot fit even alone is refused with its estimate."""
    rows: list[int] = []
    for index in order:
        longest = len(encoded[index])
        alone = decoding_bytes(longest, 1, beam_size, max_len_ratio)
        if alone > budget:
            raise SourceTooLong(
                f"input line {first_line + index} has {longest} source tokens: decoding it with beam {beam_size} would "
                f"take about {alone / 2**30:.1f} GiB, more than the {budget / 2**30:.1f} GiB this machine can give "
                "it; split the line or lower --beam."
            )
        if rows and (len(rows) == batch_size or decoding_bytes(longest, len(rows) + 1, beam_size, max_len_ratio) > budget):
            yield rows
            rows = []
        rows.append(index)
    if rows:
        yield rows


class Translator:
    """A trained encoder–decoder with the codecs of its task."""

    def __init__(self, model: nn.Module, codecs: TranslationCodecs, device: str = "cpu", quantize: str | None = None) -> None:
        if quantize not in (None, "int8"):
            raise UserError(f"quantize must be int8 (or unset for fp32), got {quantize!r}.")
        if quantize and torch.device(device).type != "cpu":
            raise UserError(f"int8 quantisation decodes on the CPU only; drop --quantize or use --device cpu, not {device}.")
        self.model = model.to(device).eval()
        if quantize == "int8":
            self.model = quantize_int8(self.model)
        self.codecs = codecs
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", quantize: str | None = None) -> "Translator":
        """The checkpoint's model and codecs; `quantize="int8"` decodes with int8 Linear layers (see quantize_int8)."""
        checkpoint = resolve_checkpoint(path)
        codecs = TranslationCodecs.from_task_state(checkpoint.meta.get("task_state", {}))
        config = config_from_dict(checkpoint.meta["config"])
        info = TaskInfo(kind="seq2seq", output_dim=len(codecs.target.vocab), vocab_size=len(codecs.source.vocab))
        model = build_model(config.model, info)
        if not isinstance(model, Decoder):
            raise UserError(f"{checkpoint.path} holds a {config.model.name!r} model, which cannot translate.")
        load_weights(checkpoint.path, model)
        return cls(model, codecs, device, quantize)

    def translate(
        self, lines: Sequence[str], beam_size: int = 1, length_penalty: float = 0.6, batch_size: int = 64,
        max_src_len: int | None = None, max_len_ratio: float = 1.5, max_len_offset: int = 5, first_line: int = 1,
        n_best: int | None = None, attention: bool = True, patience: float | None = None,
    ) -> list[Translation]:
        """Translate `lines` in batches of similar length; results in input order. With `n_best` (≤ the beam),
        each Translation's `candidates` also holds the n best hypotheses of the beam (ranked by the
        length-normalised score; the first is the translation). `attention=False` leaves every
        Translation's `attention` None and decodes faster. `patience` p stops a sentence's beam search
        once round(p · beam) hypotheses have finished (None: once no live one can win; `beam_search_n_best`)."""
        if patience is not None and not patience > 0:
            raise UserError(f"patience is {patience}; it must be a positive number (1 stops at the first beam-size "
                            "finished hypotheses), or left unset for the exact stop.")
        if n_best is not None and not 1 <= n_best <= max(beam_size, 1):
            raise UserError(f"n_best is {n_best}; it must be from 1 to the beam size ({max(beam_size, 1)}): "
                            "ask for fewer candidates or a wider beam.")
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
                results[index] = Translation(line, [], "", [], 0.0, None, [("", 0.0)] if n_best else [])
        order = sorted((i for i in range(len(lines)) if encoded[i]), key=lambda i: len(encoded[i]))
        budget = memory_budget()
        for rows in memory_bounded_batches(order, encoded, batch_size, beam_size, max_len_ratio, budget, first_line):
            batch = collate([encoded[i] for i in rows], [[] for _ in rows])
            batch = {key: value.to(self.device) for key, value in batch.items()}
            found = decode_n_best(self.model, batch, beam_size, length_penalty, max_len_ratio, max_len_offset, n_best or 1,
                                  attention, patience)
            for row, hypotheses in zip(rows, found):
                hypothesis = hypotheses[0]
                source_vocab, target_vocab = self.codecs.source.vocab, self.codecs.target.vocab
                results[row] = Translation(
                    source=lines[row],
                    source_tokens=[source_vocab.itos[i] for i in encoded[row]] + ["<eos>"],
                    text=self.codecs.target.decode(hypothesis.tokens),
                    tokens=[target_vocab.itos[i] for i in hypothesis.tokens] + ["<eos>"],
                    score=hypothesis.score,
                    attention=hypothesis.attention,
                    candidates=[(self.codecs.target.decode(h.tokens), h.score) for h in hypotheses] if n_best else [],
                )
        return [r for r in results if r is not None]
