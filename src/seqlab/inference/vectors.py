"""Use trained static word vectors: load a run, nearest neighbours by cosine, export to word2vec text format.

A checkpoint of a word-vector run holds the weights (safetensors) and, in its task state, the vocabulary
(words by falling count, with their counts), so neither the corpus nor the trainer is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.errors import UserError
from seqlab.nn.word_vectors import WordVectors


@dataclass
class Neighbour:
    word: str
    cosine: float


@dataclass
class VectorSet:
    """The trained model, its vocabulary and its (vocabulary, dim) vectors."""

    model: WordVectors
    words: list[str]
    vectors: torch.Tensor
    meta: dict[str, Any]

    @classmethod
    def from_model(cls, model: WordVectors, meta: dict[str, Any] | None = None) -> "VectorSet":
        with torch.no_grad():
            return cls(model.eval(), model.words, model.vectors().detach().float().cpu(), meta or {})

    def vector(self, word: str) -> torch.Tensor | None:
        """The word's vector; for fastText an unseen word's vector from its n-grams; else None."""
        with torch.no_grad():
            found = self.model.vector_of(word)
        return None if found is None else found.detach().float().cpu()

    def neighbours(self, query: torch.Tensor, k: int = 10, exclude: tuple[str, ...] = ()) -> list[Neighbour]:
        """The k words whose vectors have the highest cosine with `query` (words in `exclude` skipped)."""
        cosines = F.normalize(self.vectors, dim=1) @ F.normalize(query, dim=0)
        for word in exclude:
            if word in self.model.index:
                cosines[self.model.index[word]] = -float("inf")
        top = cosines.topk(min(k, len(self.words) - len(exclude)))
        return [Neighbour(self.words[int(i)], float(c)) for c, i in zip(top.values, top.indices)]


def load_vectors(path: str | Path) -> VectorSet:
    """Rebuild the word-vector model of a run or checkpoint directory from its saved config and vocabulary."""
    from seqlab.models import build_model
    from seqlab.training.checkpoint import load_weights, resolve_checkpoint

    checkpoint = resolve_checkpoint(path)
    meta = checkpoint.meta
    state = meta.get("task_state", {})
    config = config_from_dict(meta["config"])
    if "words" not in state or config.task.name not in ("word_contexts", "cooccurrence"):
        raise UserError(f"{checkpoint.path} is not a word-vector run (task {config.task.name!r}); "
                        "train one with a config from configs/vectors/.")
    batches = "cooccurrence" if config.task.name == "cooccurrence" else "contexts"
    info = TaskInfo(kind="loss", output_dim=len(state["words"]), vocab_size=len(state["words"]), sequence=False,
                    extra={"words": state["words"], "batches": batches})
    model = build_model(config.model, info)
    load_weights(checkpoint.path, model)
    return VectorSet.from_model(model, meta)


def export_word2vec(vectors: VectorSet, path: str | Path) -> int:
    """Write the word2vec text format: a "count dim" header, then one "word v_1 … v_dim" line per word."""
    rows, dim = vectors.vectors.shape
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{rows} {dim}\n")
        for word, row in zip(vectors.words, vectors.vectors.tolist()):
            handle.write(word + " " + " ".join(f"{x:.6g}" for x in row) + "\n")
    return rows


def query_neighbours(vectors: VectorSet, word: str, k: int) -> tuple[list[Neighbour], bool]:
    """Neighbours of `word` and whether it was out of the vocabulary (answered from n-grams); a clear error
    when the model has no vector for it."""
    lowercase = vectors.meta.get("task_state", {}).get("lowercase", False)
    key = word.lower() if lowercase else word
    vector = vectors.vector(key)
    if vector is None:
        kind = vectors.meta.get("config", {}).get("model", {}).get("name", "this model")
        raise UserError(f"{word!r} is not in the vocabulary of {len(vectors.words)} words, and {kind} gives unseen "
                        "words no vector; try another word, or a fasttext run (it builds one from character n-grams).")
    return vectors.neighbours(vector, k, exclude=(key,)), key not in vectors.model.index
