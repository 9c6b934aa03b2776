"""A tiny generated corpus for contextual embeddings (seed 004): "bank" by a river and "bank" for money.

Every sentence holds the word "bank" once, inside a frame that says nothing about its sense
("she went to the bank"); one cue word before it, after it, or on both sides tells the sense:

    after borrowing , she went to the bank at noon .              money, cue before
    yesterday , they walked to the bank to get some fish .        river, cue after
    the river bank was steep .                                    river, both sides (seed 004's example)

Cue words of one sense never occur with the other, so only the context separates the senses. The task
(``senses``) is to tell the topic of a sentence (class 0 money, 1 river); `probe` gives sentences with
the position, sense and cue side of "bank", to read the vectors a model gives that one word.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import Field

from seqlab.registry import Spec
from seqlab.data.base import Batch, GeneratedTask, TaskInfo
from seqlab.data.vocab import Vocab
from seqlab.registry import TASKS

WORD = "bank"
SENSES = ("money", "river")
CUES = ("before", "after", "both")

SUBJECTS = ("i", "she", "he", "they", "we", "my father", "the farmer", "our neighbour", "the tourist", "a student")
FRAMES = ("went to", "stopped at", "waited near", "walked to", "arrived at")
#: the cue words: one before "bank" ("after borrowing ,") and one after it ("to get some cash")
BEFORE = {"money": ("saving", "borrowing", "investing", "budgeting"), "river": ("fishing", "rowing", "swimming", "paddling")}
AFTER = {"money": ("cash", "coins", "credit", "money"), "river": ("fish", "ducks", "reeds", "frogs")}
NEUTRAL_BEFORE = ("in the morning ,", "yesterday ,", "after lunch ,", "on monday ,")
NEUTRAL_AFTER = ("to meet a friend", "with her brother", "at noon", "again")
#: seed 004's "The river bank was steep": a modifier before and a state after, both of one sense
MODIFIERS = {"money": ("city", "savings", "national"), "river": ("river", "grassy", "muddy")}
STATES = {"money": ("closed", "crowded", "robbed"), "river": ("steep", "flooded", "slippery")}


def sentence(rng: random.Random, sense: str, cue: str) -> list[str]:
    """One sentence with "bank" in `sense`, its cue `before`, `after` or on `both` sides (the other side
    neutral or empty)."""
    if cue == "both" and rng.random() < 0.3:
        return f"the {rng.choice(MODIFIERS[sense])} {WORD} was {rng.choice(STATES[sense])} .".split()
    if cue in ("before", "both"):
        before = f"after {rng.choice(BEFORE[sense])} ,"
    else:
        before = rng.choice(NEUTRAL_BEFORE) if rng.random() < 0.5 else ""
    if cue in ("after", "both"):
        after = f"to get some {rng.choice(AFTER[sense])}"
    else:
        after = rng.choice(NEUTRAL_AFTER) if rng.random() < 0.5 else ""
    return f"{before} {rng.choice(SUBJECTS)} {rng.choice(FRAMES)} the {WORD} {after} .".split()


def vocabulary() -> Vocab:
    """Every word the templates can produce, in a fixed order (ids never depend on the seed)."""
    phrases = [*SUBJECTS, *FRAMES, *NEUTRAL_BEFORE, *NEUTRAL_AFTER, f"the {WORD} was . to get some",
               *(word for table in (BEFORE, AFTER, MODIFIERS, STATES) for sense in SENSES for word in table[sense])]
    words: list[str] = []
    for phrase in phrases:
        words.extend(word for word in phrase.split() if word not in words)
    return Vocab(words)


class SensesSpec(Spec):
    name: Literal["senses"] = "senses"
    eval_size: int = Field(512, ge=1)


class SensesTask(GeneratedTask):
    """Sentence topic (money or river) from the words (kind ``classify``; senses and cue sides drawn uniformly)."""

    def __init__(self, spec: SensesSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.vocab = vocabulary()
        self.word_id = self.vocab.stoi[WORD]
        self.info = TaskInfo(kind="classify", output_dim=len(SENSES), vocab_size=len(self.vocab),
                             pad_id=Vocab.pad_id, extra={"word": WORD, "senses": list(SENSES)})

    def sentences(self, n: int, rng: torch.Generator) -> tuple[list[list[str]], list[int], list[int]]:
        """`n` sentences with the sense (index into SENSES) and cue side (index into CUES) of each."""
        py_rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=rng)))
        senses = [py_rng.randrange(len(SENSES)) for _ in range(n)]
        cues = [py_rng.randrange(len(CUES)) for _ in range(n)]
        return [sentence(py_rng, SENSES[s], CUES[c]) for s, c in zip(senses, cues)], senses, cues

    def encode(self, sentences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids padded with <pad> (n, longest) and the lengths (n,)."""
        lengths = torch.tensor([len(words) for words in sentences])
        inputs = torch.full((len(sentences), int(lengths.max())), Vocab.pad_id, dtype=torch.long)
        for row, words in enumerate(sentences):
            inputs[row, : len(words)] = torch.tensor(self.vocab.encode(words))
        return inputs, lengths

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        sentences, senses, _ = self.sentences(n, rng)
        inputs, lengths = self.encode(sentences)
        return {"inputs": inputs, "lengths": lengths, "targets": torch.tensor(senses)}

    def probe(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """`n` sentences: inputs, lengths, `position` of "bank", `sense` and `cue` indices."""
        sentences, senses, cues = self.sentences(n, torch.Generator().manual_seed(seed))
        inputs, lengths = self.encode(sentences)
        return {"inputs": inputs, "lengths": lengths, "position": (inputs == self.word_id).long().argmax(1),
                "sense": torch.tensor(senses), "cue": torch.tensor(cues)}

    def state_dict(self) -> dict:
        return {"vocab": self.vocab.state_dict()}


@TASKS.register("senses", SensesSpec)
def build_senses(spec: SensesSpec, seed: int) -> SensesTask:
    return SensesTask(spec, seed)
