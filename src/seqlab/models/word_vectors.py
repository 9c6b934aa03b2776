"""Static word-vector models (`seqlab.nn.word_vectors`) as configurable models of the one trainer.

``skipgram``, ``cbow`` and ``fasttext`` train on the ``word_contexts`` task, ``glove`` on ``cooccurrence``;
all read their vocabulary from the task (`TaskInfo.extra["words"]`), so a checkpoint rebuilds them from
its saved task state alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from seqlab.data.base import TaskInfo
from seqlab.nn.word_vectors import CBOW, FastText, GloVe, SkipGram, WordVectors
from seqlab.registry import MODELS, Spec


class VectorSpec(Spec):
    dim: int = Field(100, ge=1, description="vector dimension")


class SkipGramSpec(VectorSpec):
    name: Literal["skipgram"] = "skipgram"


class CBOWSpec(VectorSpec):
    name: Literal["cbow"] = "cbow"


class GloVeSpec(VectorSpec):
    name: Literal["glove"] = "glove"
    x_max: float = Field(100.0, gt=0, description="f(x) = 1 from x_max on (eq. 9)")
    alpha: float = Field(0.75, gt=0, description="f(x) = (x / x_max)^α below x_max")
    vectors: Literal["sum", "word"] = Field(
        "sum", description="the vectors a user gets: W + W̃ (§4.2, the default) or the word vectors W alone")


class FastTextSpec(VectorSpec):
    """Bojanowski et al. use K = 2·10⁶ buckets; the default here is smaller so a CPU run stays light."""

    name: Literal["fasttext"] = "fasttext"
    buckets: int = Field(200_000, ge=1, description="K: n-gram hash buckets")
    min_n: int = Field(3, ge=1)
    max_n: int = Field(6, ge=1)


def _words(info: TaskInfo, model: str, batches: str, task: str) -> list[str]:
    if info.kind != "loss" or info.extra.get("batches") != batches:
        raise ValueError(f"the {model} model trains on the {task} task (task.name: {task}).")
    return list(info.extra["words"])


@MODELS.register("skipgram", SkipGramSpec)
def build_skipgram(spec: SkipGramSpec, info: TaskInfo) -> WordVectors:
    return SkipGram(_words(info, "skipgram", "contexts", "word_contexts"), spec.dim)


@MODELS.register("cbow", CBOWSpec)
def build_cbow(spec: CBOWSpec, info: TaskInfo) -> WordVectors:
    return CBOW(_words(info, "cbow", "contexts", "word_contexts"), spec.dim)


@MODELS.register("glove", GloVeSpec)
def build_glove(spec: GloVeSpec, info: TaskInfo) -> WordVectors:
    return GloVe(_words(info, "glove", "cooccurrence", "cooccurrence"), spec.dim, spec.x_max, spec.alpha,
                 spec.vectors == "sum")


@MODELS.register("fasttext", FastTextSpec)
def build_fasttext(spec: FastTextSpec, info: TaskInfo) -> WordVectors:
    if spec.min_n > spec.max_n:
        raise ValueError(f"model.min_n = {spec.min_n} exceeds model.max_n = {spec.max_n}; make min_n ≤ max_n.")
    return FastText(_words(info, "fasttext", "contexts", "word_contexts"), spec.dim, spec.buckets, spec.min_n, spec.max_n)
