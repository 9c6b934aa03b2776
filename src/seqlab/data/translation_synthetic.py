"""The built-in synthetic translation task (offline default): a small English-like source language and a
target language whose grammar reorders words, with the gold word alignment known.

Source (subject–verb–object, adjective before noun, no articles)::

    old king sees red bird and child sleeps

Target (every word has its own translation; adjective after noun; verb at the end of each clause)::

    nemo raku ulo pirra vidi ta pelo dormu
    king old  bird red  sees and child sleeps

A clause is ``[A] N V_intr`` or ``[A] N V_tr [A] N``; clauses are joined by a conjunction until the
sentence has the drawn length (uniform in [min_len, max_len] words). The word-for-word mapping makes the
gold alignment a permutation; batches carry it as ``alignment`` (batch, tgt): for target position j the
source position of its word (the final <eos> aligns to the source's <eos>), IGNORE at padding.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from seqlab.registry import Spec
from seqlab.data.base import IGNORE, Batch, GeneratedTask, TaskInfo
from seqlab.data.batching import collate
from seqlab.data.parallel import translation_state
from seqlab.data.tokenizers import Codec, WordTokenizer
from seqlab.data.vocab import Vocab
from seqlab.registry import TASKS

#: source word → target word, by part of speech. Both languages have no articles (like Latin or Russian), and
#: the content words are many, as in a real language: a word's identity is then not cheaply copied into its
#: neighbours' encoder states, which would let attention drift off the word it translates.
ADJECTIVES = {
    "red": "pirra", "big": "gromo", "small": "pika", "old": "raku", "young": "junni", "happy": "felo",
    "green": "verda", "quiet": "silo", "fast": "rapa", "tall": "alto", "sad": "trista", "brave": "kura",
    "blue": "blua", "white": "bjanka", "black": "nigra", "clever": "saga", "lazy": "pigra", "kind": "bona",
    "strange": "stranja", "tired": "laca",
}
NOUNS = {
    "cat": "gato", "dog": "hundo", "bird": "ulo", "man": "viro", "woman": "ina", "child": "pelo",
    "horse": "ceva", "fish": "pisko", "teacher": "doka", "farmer": "agro", "king": "nemo", "baker": "pana",
    "river": "rivo", "house": "domo", "tree": "arbo", "car": "auto", "queen": "regina", "doctor": "medo",
    "singer": "kanto", "sailor": "maro", "girl": "knabina", "boy": "knabo", "friend": "amiko", "cook": "kuko",
    "soldier": "soldo", "student": "lerno", "painter": "pentro", "fox": "vulpo", "wolf": "lupo", "bear": "urso",
    "mouse": "muso", "goat": "kapro", "cow": "bovo", "sheep": "ovo", "duck": "anaso", "frog": "rano",
    "monkey": "simio", "lion": "leono", "tiger": "tigro", "rabbit": "kuniko",
}
TRANSITIVE = {
    "sees": "vidi", "likes": "amu", "follows": "sekvi", "helps": "helpu", "paints": "pentri",
    "finds": "trovi", "carries": "portu", "watches": "rigardu", "meets": "renkontu", "calls": "vokas",
    "feeds": "nutru", "chases": "casu", "teaches": "instru", "greets": "salutu", "hears": "audu",
    "loves": "karu", "pushes": "pusu", "pulls": "tiru", "visits": "vizitu", "thanks": "dankas",
}
INTRANSITIVE = {
    "sleeps": "dormu", "runs": "kuru", "sings": "kantu", "waits": "atendu", "laughs": "ridu", "swims": "naxu",
    "dances": "dancu", "cries": "ploru", "jumps": "saltu", "walks": "iru", "falls": "falu", "smiles": "ridetu",
}
CONJUNCTIONS = {
    "and": "ta", "but": "sed", "while": "dum", "because": "kaux", "so": "do", "although": "kvankam",
    "when": "kiam", "if": "se", "until": "gis", "before": "antau", "after": "post", "since": "ekde",
    "unless": "krom", "whereas": "dume", "though": "tamen", "once": "foje",
}
LEXICON = {**ADJECTIVES, **NOUNS, **TRANSITIVE, **INTRANSITIVE, **CONJUNCTIONS}
A, N, V_TR, V_INTR, CONJ = (tuple(words) for words in (ADJECTIVES, NOUNS, TRANSITIVE, INTRANSITIVE, CONJUNCTIONS))


def _noun_phrase(rng: random.Random, adjective: bool) -> tuple[list[str], list[int]]:
    """A source noun phrase [A] N and the order of its words in the target (N A: adjective after the noun)."""
    if adjective:
        return [rng.choice(A), rng.choice(N)], [1, 0]
    return [rng.choice(N)], [0]


def _clause(rng: random.Random, length: int) -> tuple[list[str], list[int]]:
    """A source clause of `length` words (2–5) and the order of its words in the target clause (verb last)."""
    if length == 2 or (length == 3 and rng.random() < 0.5):  # [A] N V_intr
        subject, subject_order = _noun_phrase(rng, adjective=length == 3)
        return subject + [rng.choice(V_INTR)], subject_order + [len(subject)]
    adjectives = [False, False] if length == 3 else rng.choice([[True, False], [False, True]]) if length == 4 else [True, True]
    subject, subject_order = _noun_phrase(rng, adjectives[0])
    obj, object_order = _noun_phrase(rng, adjectives[1])
    verb = len(subject)
    words = subject + [rng.choice(V_TR)] + obj
    return words, subject_order + [verb + 1 + position for position in object_order] + [verb]


def _clause_lengths(rng: random.Random, total: int) -> list[int]:
    """Clause lengths (2–5 words) that, with one conjunction between clauses, add up to `total` (≥ 3)."""
    lengths, remaining = [], total
    while True:
        k = rng.choice([k for k in range(2, 6) if k == remaining or remaining - k >= 3])
        lengths.append(k)
        remaining -= k
        if remaining == 0:
            return lengths
        remaining -= 1  # the conjunction


def sentence_pair(rng: random.Random, length: int) -> tuple[list[str], list[str], list[int]]:
    """A source sentence of `length` words, its translation, and alignment[j] = source position of target word j."""
    source: list[str] = []
    order: list[int] = []
    for index, clause_length in enumerate(_clause_lengths(rng, length)):
        if index:
            order.append(len(source))
            source.append(rng.choice(CONJ))
        words, clause_order = _clause(rng, clause_length)
        order.extend(len(source) + position for position in clause_order)
        source.extend(words)
    target = [LEXICON[source[position]] for position in order]
    return source, target, order


class SyntheticTranslationSpec(Spec):
    name: Literal["synthetic_translation"] = "synthetic_translation"
    min_len: int = Field(3, ge=3, description="fewest source words")
    max_len: int = Field(50, ge=3, description="most source words")
    eval_size: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SyntheticTranslationSpec":
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({self.max_len}) must be at least min_len ({self.min_len})")
        return self


class SyntheticTranslationTask(GeneratedTask):
    """Fresh sentence pairs every step; lengths uniform in [min_len, max_len]; batches carry the gold alignment."""

    def __init__(self, spec: SyntheticTranslationSpec, seed: int) -> None:
        super().__init__(seed, spec.eval_size)
        self.spec = spec
        self.source = Codec(WordTokenizer(), Vocab(LEXICON))
        self.target = Codec(WordTokenizer(), Vocab(LEXICON.values()))
        self.info = TaskInfo(
            kind="seq2seq", output_dim=len(self.target.vocab), vocab_size=len(self.source.vocab),
            extra={"src_lang": "synthetic-source", "tgt_lang": "synthetic-target"},
        )

    def pairs(self, n: int, rng: torch.Generator) -> list[tuple[list[str], list[str], list[int]]]:
        """`n` sentence pairs with their alignments, drawn with `rng`."""
        py_rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=rng)))
        return [sentence_pair(py_rng, py_rng.randint(self.spec.min_len, self.spec.max_len)) for _ in range(n)]

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        pairs = self.pairs(n, rng)
        batch = collate([self.source.vocab.encode(s) for s, _, _ in pairs], [self.target.vocab.encode(t) for _, t, _ in pairs])
        width = batch["targets"].shape[1]
        alignment = torch.tensor([[*order, len(source)] + [IGNORE] * (width - len(order) - 1) for source, _, order in pairs])
        batch["alignment"] = alignment
        return batch

    def state_dict(self) -> dict[str, Any]:
        return translation_state(self.source, self.target, self.spec.max_len, "none")


@TASKS.register("synthetic_translation", SyntheticTranslationSpec)
def build_synthetic_translation(spec: SyntheticTranslationSpec, seed: int) -> SyntheticTranslationTask:
    return SyntheticTranslationTask(spec, seed)
