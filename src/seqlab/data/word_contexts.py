"""Training data for static word vectors from any text file (tinyshakespeare, the Multi30k English side).

Words are runs of letters and digits (apostrophes inside a word kept), lowercased by default; words
seen fewer than `min_count` times are dropped from the text before windows are taken (as word2vec
does), and no window crosses a line. The last `val_fraction` of the lines is the validation split.

- ``word_contexts`` (skip-gram, CBOW, fastText): a batch is `batch_size` centre words with their windows:
  ``center`` (B,), ``context`` (B, 2·window) ids, ``context_mask`` (B, 2·window) which of them count,
  ``negatives`` (B, 2·window, k) noise words drawn from P_n(w) ∝ U(w)^{3/4} (Mikolov et al. 2013b §2.2).
  The window's size b is uniform in 1..window for every centre (word2vec's dynamic window), and
  frequent words are subsampled (§2.3): each occurrence of w is kept with probability
  min(1, √(t / f(w))), f the word's relative frequency: as a centre (centres are drawn in proportion
  to it) and as a context word (masked out otherwise).
- ``cooccurrence`` (GloVe): X_ij = Σ over the occurrences of i of 1/d for each j at distance d ≤ window
  in the same line, both directions (Pennington et al. 2014 §4.2); a batch is `batch_size` nonzero
  entries drawn uniformly: ``i``, ``j``, ``x`` (B,).

Both are of task kind "loss": the model computes its own loss. Batches are pure functions of (seed, step).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator, Literal

import torch
from pydantic import Field

from seqlab.data.base import Batch, Task, TaskInfo, step_generator
from seqlab.data.text import DataFileError, read_text
from seqlab.registry import TASKS, Spec

WORDS = re.compile(r"\w+(?:'\w+)*")
MIN_TYPES, MIN_TOKENS = 5, 100  # below these a corpus cannot train a vector space worth the name


def words_of(line: str, lowercase: bool) -> list[str]:
    return WORDS.findall(line.lower() if lowercase else line)


class CorpusSpec(Spec):
    """Fields every word-vector corpus shares."""

    path: str = Field(..., description="a UTF-8 text file, one sentence or line of verse per line")
    lowercase: bool = True
    min_count: int = Field(5, ge=1, description="drop words seen fewer times (word2vec's min_count)")
    max_vocab: int | None = Field(None, ge=MIN_TYPES, description="keep only the most frequent words")
    max_lines: int | None = Field(None, ge=2, description="read only the first lines (quick runs)")
    exclude: list[str] = Field(default_factory=list, description="words kept out of the vocabulary (held out)")
    window: int = Field(5, ge=1, description="context words on each side")
    val_fraction: float = Field(0.02, gt=0, lt=0.5)


class Corpus:
    """The vocabulary (by falling count) and the id stream of a text file, with the line of every token."""

    def __init__(self, spec: CorpusSpec) -> None:
        lines = [words_of(line, spec.lowercase) for line in read_text(spec.path).splitlines()]
        lines = [line for line in lines if line][: spec.max_lines]
        n_val = max(1, int(len(lines) * spec.val_fraction)) if len(lines) >= 2 else 0
        train, val = lines[: len(lines) - n_val], lines[len(lines) - n_val :]
        counts = Counter(word for line in train for word in line)
        held_out = set(spec.exclude)
        kept = [(w, c) for w, c in counts.most_common() if c >= spec.min_count and w not in held_out][: spec.max_vocab]
        tokens = sum(c for _, c in kept)
        if len(kept) < MIN_TYPES or tokens < MIN_TOKENS or not val:
            raise DataFileError(
                f"{spec.path} is too small for word vectors: {len(kept)} distinct words seen at least "
                f"min_count = {spec.min_count} times ({tokens} tokens) in {len(train)} training lines; it needs "
                f"≥ {MIN_TYPES} such words, ≥ {MIN_TOKENS} tokens and ≥ 2 lines. Use a longer file or lower task.min_count."
            )
        self.words = [w for w, _ in kept]
        self.counts = torch.tensor([c for _, c in kept], dtype=torch.float64)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.splits = {"train": self._encode(train), "val": self._encode(val)}

    def _encode(self, lines: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, line number of each id) over the in-vocabulary words of `lines`."""
        ids, line_of = [], []
        for number, line in enumerate(lines):
            kept = [self.index[w] for w in line if w in self.index]
            ids.extend(kept)
            line_of.extend([number] * len(kept))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(line_of, dtype=torch.long)

    def state_dict(self) -> dict[str, Any]:
        return {"words": self.words, "counts": [int(c) for c in self.counts]}


def sample(cdf: torch.Tensor, shape: tuple[int, ...], rng: torch.Generator) -> torch.Tensor:
    """Indices drawn from the distribution with cumulative sums `cdf` (inverse-CDF sampling)."""
    u = torch.rand(shape, generator=rng, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, u.reshape(-1), right=True).clamp(max=len(cdf) - 1).reshape(shape)


class WordContextsSpec(CorpusSpec):
    name: Literal["word_contexts"] = "word_contexts"
    negatives: int = Field(5, ge=1, description="k noise words per (centre, context) pair")
    noise_power: float = Field(0.75, ge=0, description="P_n(w) ∝ U(w)^power")
    subsample: float = Field(1e-3, ge=0, description="t of the subsampling of frequent words; 0 = off")
    dynamic_window: bool = Field(True, description="window size uniform in 1..window for every centre")
    eval_size: int = Field(4096, ge=1, description="validation centres (at most)")


class WordContextsTask(Task):
    """(centre, context, negatives) batches for skip-gram, CBOW and fastText."""

    def __init__(self, spec: WordContextsSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed
        self.corpus = Corpus(spec)
        f = self.corpus.counts / self.corpus.counts.sum()
        self.keep = (spec.subsample / f).sqrt().clamp(max=1.0) if spec.subsample > 0 else torch.ones_like(f)
        self.noise_cdf = self.corpus.counts.pow(spec.noise_power).cumsum(0)
        ids, _ = self.corpus.splits["train"]
        self.center_cdf = self.keep[ids].cumsum(0)
        offsets = torch.arange(1, spec.window + 1)
        self.offsets = torch.cat([-offsets.flip(0), offsets])  # −W..−1, 1..W
        V = len(self.corpus.words)
        self.info = TaskInfo(kind="loss", output_dim=V, vocab_size=V, sequence=False,
                             extra={"words": self.corpus.words, "batches": "contexts"})

    def windows(self, split: str, centres: torch.Tensor, rng: torch.Generator) -> Batch:
        ids, line_of = self.corpus.splits[split]
        positions = centres[:, None] + self.offsets  # (B, 2W)
        inside = (positions >= 0) & (positions < len(ids))
        positions = positions.clamp(0, len(ids) - 1)
        mask = inside & (line_of[positions] == line_of[centres][:, None])
        if self.spec.dynamic_window:
            b = torch.randint(1, self.spec.window + 1, (len(centres), 1), generator=rng)
            mask &= self.offsets.abs() <= b
        context = ids[positions]
        mask &= torch.rand(context.shape, generator=rng, dtype=torch.float64) < self.keep[context]
        negatives = sample(self.noise_cdf, (*context.shape, self.spec.negatives), rng)
        return {"center": ids[centres], "context": context, "context_mask": mask, "negatives": negatives}

    def train_batch(self, step: int, batch_size: int) -> Batch:
        rng = step_generator(self.seed, "train", step)
        return self.windows("train", sample(self.center_cdf, (batch_size,), rng), rng)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        ids, _ = self.corpus.splits[split]
        rng = step_generator(self.seed, split)
        count = min(len(ids), self.spec.eval_size)
        centres = torch.randperm(len(ids), generator=rng)[:count].sort().values
        for start in range(0, count, batch_size):
            yield self.windows(split, centres[start : start + batch_size], rng)

    def state_dict(self) -> dict[str, Any]:
        return {**self.corpus.state_dict(), "lowercase": self.spec.lowercase}


class CooccurrenceSpec(CorpusSpec):
    name: Literal["cooccurrence"] = "cooccurrence"
    window: int = Field(10, ge=1, description="context words on each side (Pennington et al. use 10)")


def cooccurrence(ids: torch.Tensor, line_of: torch.Tensor, V: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonzero entries of X: (pairs (n, 2) of i, j; values (n,)), each pair at distance d adding 1/d both ways."""
    keys, values = [], []
    for d in range(1, window + 1):
        same = line_of[d:] == line_of[:-d]
        a, b = ids[:-d][same], ids[d:][same]
        weight = torch.full((2 * len(a),), 1.0 / d, dtype=torch.float64)
        keys.append(torch.cat([a * V + b, b * V + a]))
        values.append(weight)
    unique, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    X = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.cat(values))
    return torch.stack([unique // V, unique % V], dim=1), X.float()


class CooccurrenceTask(Task):
    """Batches of co-occurrence entries (i, j, X_ij) for GloVe."""

    def __init__(self, spec: CooccurrenceSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed
        self.corpus = Corpus(spec)
        V = len(self.corpus.words)
        self.entries = {split: cooccurrence(*self.corpus.splits[split], V, spec.window) for split in ("train", "val")}
        if len(self.entries["train"][1]) == 0 or len(self.entries["val"][1]) == 0:
            raise DataFileError(f"{spec.path}: no two vocabulary words share a line within {spec.window} words "
                                "in one of the splits; use a longer file or lower task.min_count.")
        self.info = TaskInfo(kind="loss", output_dim=V, vocab_size=V, sequence=False,
                             extra={"words": self.corpus.words, "batches": "cooccurrence"})

    def _batch(self, split: str, rows: torch.Tensor) -> Batch:
        pairs, X = self.entries[split]
        return {"i": pairs[rows, 0], "j": pairs[rows, 1], "x": X[rows]}

    def train_batch(self, step: int, batch_size: int) -> Batch:
        n = len(self.entries["train"][1])
        return self._batch("train", torch.randint(0, n, (batch_size,), generator=step_generator(self.seed, "train", step)))

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        n = len(self.entries[split][1])
        for start in range(0, n, batch_size):
            yield self._batch(split, torch.arange(start, min(n, start + batch_size)))

    def state_dict(self) -> dict[str, Any]:
        return {**self.corpus.state_dict(), "lowercase": self.spec.lowercase}


@TASKS.register("word_contexts", WordContextsSpec)
def build_word_contexts(spec: WordContextsSpec, seed: int) -> WordContextsTask:
    return WordContextsTask(spec, seed)


@TASKS.register("cooccurrence", CooccurrenceSpec)
def build_cooccurrence(spec: CooccurrenceSpec, seed: int) -> CooccurrenceTask:
    return CooccurrenceTask(spec, seed)
