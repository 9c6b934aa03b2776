"""A tiny generated corpus for contextual embeddings (seed 004): "bank" by a river and "bank" for money.

Every sentence holds the word "bank" once, inside a frame that says nothing about its sense
("she went to the bank"); a cue before it, after it, or on both sides tells the sense:

    needing a loan , she went to the bank .                       money, cue before
    they walked to the bank to catch some fish .                  river, cue after
    the river bank was steep .                                    river, both sides (seed 004's example)

Cue words of one sense never occur with the other, so only the context separates the senses. The task
(``senses``) is masked-word prediction (Devlin et al. 2019): `masks` words of each sentence, never
"bank" itself, are replaced by <mask> and predicted from both sides; targets are IGNORE elsewhere.
`probe` gives unmasked sentences with the position and sense of "bank", to read its vectors.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import Field

from seqlab.config import Spec
from seqlab.data.base import IGNORE, Batch, GeneratedTask, TaskInfo
from seqlab.data.vocab import Vocab
from seqlab.registry import TASKS

WORD = "bank"
MASK = "<mask>"
SENSES = ("money", "river")
CUES = ("before", "after", "both")

SUBJECTS = ("i", "she", "he", "they", "we", "my father", "the farmer", "our neighbour", "the tourist", "a student")
FRAMES = ("went to", "stopped at", "waited near", "walked to", "arrived at")
BEFORE = {
    "money": ("needing a loan ,", "with the salary in cash ,", "after counting the coins ,", "to pay the mortgage ,",
              "holding a cheque ,"),
    "river": ("after fishing all morning ,", "with the boat on the water ,", "following the stream ,",
              "after swimming in the river ,", "carrying a fishing rod ,"),
}
AFTER = {
    "money": ("to deposit money", "to open an account", "to ask for a loan", "to withdraw some cash",
              "to pay in a cheque", "to check the interest"),
    "river": ("to watch the ducks", "to catch some fish", "to look at the water", "to sit in the reeds",
              "to launch the boat", "to see the flood"),
}
#: seed 004's "The river bank was steep": a modifier before and a state after, both of one sense
MODIFIERS = {"money": ("city", "savings", "national"), "river": ("river", "grassy", "muddy")}
STATES = {"money": ("closed", "crowded", "robbed"), "river": ("steep", "flooded", "slippery")}


def sentence(rng: random.Random, sense: str, cue: str) -> list[str]:
    """One sentence with "bank" in `sense`, its cue `before`, `after` or on `both` sides."""
    if cue == "both" and rng.random() < 0.3:
        return f"the {rng.choice(MODIFIERS[sense])} {WORD} was {rng.choice(STATES[sense])} .".split()
    words = f"{rng.choice(SUBJECTS)} {rng.choice(FRAMES)} the {WORD}".split()
    if cue in ("before", "both"):
        words = rng.choice(BEFORE[sense]).split() + words
    if cue in ("after", "both"):
        words = words + rng.choice(AFTER[sense]).split()
    return words + ["."]


def vocabulary() -> Vocab:
    """Every word the templates can produce (a fixed order, so ids never depend on the seed), plus <mask>."""
    phrases = [*SUBJECTS, *FRAMES, f"the {WORD} was .", *(p for table in (BEFORE, AFTER, MODIFIERS, STATES)
                                                          for sense in SENSES for p in table[sense])]
    words = [MASK]
    for phrase in phrases:
        words.extend(word for word in phrase.split() if word not in words)
    return Vocab(words)


class SensesSpec(Spec):
    name: Literal["senses"] = "senses"
    masks: int = Field(1, ge=1, le=3, description="words of each training sentence hidden behind <mask>")
    eval_size: int = Field(512, ge=1)


class SensesTask(GeneratedTask):
    """Masked-word prediction on the "bank" corpus (kind ``tokens``; senses and cue sides drawn uniformly)."""

    def __init__(self, spec: SensesSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.vocab = vocabulary()
        self.mask_id, self.word_id = self.vocab.stoi[MASK], self.vocab.stoi[WORD]
        self.info = TaskInfo(kind="tokens", output_dim=len(self.vocab), vocab_size=len(self.vocab),
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
        inputs, lengths = self.encode(self.sentences(n, rng)[0])
        valid = torch.arange(inputs.shape[1])[None, :] < lengths[:, None]
        candidates = valid & (inputs != self.word_id)
        scores = torch.rand(inputs.shape, generator=rng).masked_fill(~candidates, -1.0)
        hidden = torch.zeros_like(valid).scatter(1, scores.topk(self.spec.masks, dim=1).indices, True)
        targets = torch.where(hidden, inputs, IGNORE)
        return {"inputs": inputs.masked_fill(hidden, self.mask_id), "lengths": lengths, "targets": targets}

    def probe(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """`n` unmasked sentences: inputs, lengths, `position` of "bank", `sense` and `cue` indices."""
        sentences, senses, cues = self.sentences(n, torch.Generator().manual_seed(seed))
        inputs, lengths = self.encode(sentences)
        return {"inputs": inputs, "lengths": lengths, "position": (inputs == self.word_id).long().argmax(1),
                "sense": torch.tensor(senses), "cue": torch.tensor(cues)}

    def state_dict(self) -> dict:
        return {"vocab": self.vocab.state_dict()}


@TASKS.register("senses", SensesSpec)
def build_senses(spec: SensesSpec, seed: int) -> SensesTask:
    return SensesTask(spec, seed)
