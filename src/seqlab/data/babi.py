"""A generated bAbI-style task (Weston et al. 2015, tasks 1 and 2): people move between places and carry
objects; the question at the end asks where someone or something is. No download, deterministic by seed.

- ``supporting_facts: 1`` (bAbI task 1): only moves; "Where is Mary?" is answered by Mary's last move.
- ``supporting_facts: 2`` (bAbI task 2): people also pick up and drop objects; "Where is the football?" needs
  the sentence that says who took (or dropped) it and that person's last move before the question (or the drop):
  ``john picked up the football . john went to the kitchen . where is the football ?`` → ``kitchen``.

A batch holds the story twice, for the two kinds of reader:

- ``story`` (batch, memory_size, 5) word ids, one sentence per memory slot, **slot 0 the most recent sentence**
  (so a temporal encoding T(i) means "i sentences ago"), empty slots all padding; ``question`` (batch, 5);
- ``inputs`` (batch, time) the same story read left to right (sentences ended by ``.``) then the question and
  ``?``, with ``lengths``, for a sequence model such as an LSTM;
- ``targets`` (batch,) the answer's word id (a place); ``support`` (batch, 2) the memory slots of the
  supporting facts (−1 where there is none: the second one of task 1, or one truncated away).

A story longer than ``memory_size`` sentences is refused at config load unless ``truncate: true``, which keeps
the ``memory_size`` most recent sentences (for both readers); a question whose supporting fact was cut off can
then be unanswerable, and its ``support`` slot is −1.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
from pydantic import Field, model_validator

from seqlab.registry import Spec
from seqlab.data.base import Batch, GeneratedTask, TaskInfo
from seqlab.registry import TASKS

PEOPLE = ("john", "mary", "sandra", "daniel", "fred", "julie")
PLACES = ("kitchen", "garden", "hallway", "bathroom", "office", "bedroom", "cellar", "park")
OBJECTS = ("football", "apple", "milk", "book")
FUNCTION_WORDS = ("where", "is", "the", "went", "to", "journeyed", "picked", "up", "got", "dropped", ".", "?")
VOCAB = ("<pad>",) + FUNCTION_WORDS + PEOPLE + PLACES + OBJECTS
SENTENCE_WORDS, QUESTION_WORDS = 5, 5

Sentence = tuple[str, ...]


class BabiSpec(Spec):
    name: Literal["babi"] = "babi"
    supporting_facts: Literal[1, 2] = Field(2, description="1: where is PERSON (task 1); 2: where is OBJECT (task 2)")
    sentences: int = Field(10, ge=1, description="sentences per story (the most)")
    min_sentences: int | None = Field(None, ge=1, description="draw story lengths in [min_sentences, sentences]")
    memory_size: int = Field(10, ge=1, description="memory slots: sentences a memory network holds")
    truncate: bool = Field(False, description="keep the memory_size most recent sentences of a longer story")
    n_people: int = Field(4, ge=1, le=len(PEOPLE))
    n_places: int = Field(6, ge=2, le=len(PLACES))
    n_objects: int = Field(3, ge=1, le=len(OBJECTS))
    eval_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "BabiSpec":
        if self.min_sentences is not None and self.min_sentences > self.sentences:
            raise ValueError(f"min_sentences ({self.min_sentences}) exceeds sentences ({self.sentences})")
        if self.sentences > self.memory_size and not self.truncate:
            raise ValueError(
                f"stories have up to {self.sentences} sentences but memory_size is {self.memory_size}; raise "
                f"memory_size to {self.sentences}, or set truncate: true to keep the {self.memory_size} most recent"
            )
        return self


class BabiTask(GeneratedTask):
    """Stories simulated in a small world; answers are place words (chance 1/n_places)."""

    def __init__(self, spec: BabiSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.vocab = list(VOCAB)
        self.ids = {word: index for index, word in enumerate(self.vocab)}
        self.people = PEOPLE[: spec.n_people]
        self.places = PLACES[: spec.n_places]
        self.objects = OBJECTS[: spec.n_objects]
        self.info = TaskInfo(kind="classify", output_dim=len(self.vocab), vocab_size=len(self.vocab), sequence=True,
                             extra={"memory_size": spec.memory_size, "chance_accuracy": 1.0 / spec.n_places})

    def story(self, rng: random.Random) -> tuple[list[Sentence], Sentence, str, list[int]]:
        """One story: sentences, question, answer, and the (chronological) indices of the supporting facts."""
        low = self.spec.min_sentences or self.spec.sentences
        length = rng.randint(low, self.spec.sentences)
        while True:
            drawn = self._simulate(length, rng) if self.spec.supporting_facts == 2 else self._moves(length, rng)
            if drawn is not None:
                return drawn

    def _moves(self, length: int, rng: random.Random) -> tuple[list[Sentence], Sentence, str, list[int]] | None:
        sentences: list[Sentence] = []
        last_move: dict[str, tuple[str, int]] = {}
        for index in range(length):
            person, place = rng.choice(self.people), rng.choice(self.places)
            sentences.append((person, rng.choice(("went", "journeyed")), "to", "the", place))
            last_move[person] = (place, index)
        person = rng.choice(sorted(last_move))
        place, index = last_move[person]
        return sentences, ("where", "is", person, "?"), place, [index]

    def _simulate(self, length: int, rng: random.Random) -> tuple[list[Sentence], Sentence, str, list[int]] | None:
        """Moves, pick-ups and drops of a consistent world; None when no object's place can be known."""
        sentences: list[Sentence] = []
        where: dict[str, tuple[str, int]] = {}  # person → (place, index of the move that put them there)
        holder: dict[str, tuple[str, int]] = {}  # object → (person, index of the pick-up)
        lying: dict[str, tuple[str, list[int]]] = {}  # object → (place, supporting facts of the drop)
        for index in range(length):
            located = [p for p in self.people if p in where]
            takers = [(p, o) for p in located for o in self.objects
                      if o not in holder and (o not in lying or lying[o][0] == where[p][0])]
            held = sorted(holder)
            roll = rng.random()
            if takers and roll < 0.3:
                person, thing = rng.choice(takers)
                sentences.append((person, *rng.choice((("picked", "up"), ("got",))), "the", thing))
                holder[thing] = (person, index)
                lying.pop(thing, None)
            elif held and roll < 0.45:
                thing = rng.choice(held)
                person, _ = holder.pop(thing)
                sentences.append((person, "dropped", "the", thing))
                lying[thing] = (where[person][0], [index, where[person][1]])
            else:
                person, place = rng.choice(self.people), rng.choice(self.places)
                sentences.append((person, rng.choice(("went", "journeyed")), "to", "the", place))
                where[person] = (place, index)
        answers = {thing: (where[p][0], [i, where[p][1]]) for thing, (p, i) in holder.items()}
        answers.update(lying)
        if not answers:
            return None
        thing = rng.choice(sorted(answers))
        place, support = answers[thing]
        return sentences, ("where", "is", "the", thing, "?"), place, sorted(support)

    def encode(self, words: Sentence, width: int) -> list[int]:
        return [self.ids[w] for w in words] + [0] * (width - len(words))

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        py_rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=rng)))
        memory = self.spec.memory_size
        blank = [0] * SENTENCE_WORDS
        story, question, support, flat, targets = [], [], [], [], []
        for sentences, asked, answer, facts in (self.story(py_rng) for _ in range(n)):
            kept = sentences[-memory:]
            dropped = len(sentences) - len(kept)
            slots = [self.encode(sentence, SENTENCE_WORDS) for sentence in reversed(kept)]
            story.append(slots + [blank] * (memory - len(slots)))
            question.append(self.encode(asked, QUESTION_WORDS))
            slot_of = [len(sentences) - 1 - fact if fact >= dropped else -1 for fact in facts]
            support.append(slot_of + [-1] * (2 - len(slot_of)))
            flat.append([self.ids[w] for sentence in kept for w in (*sentence, ".")] + [self.ids[w] for w in asked])
            targets.append(self.ids[answer])
        longest = max(len(tokens) for tokens in flat)
        return {"story": torch.tensor(story), "question": torch.tensor(question),
                "inputs": torch.tensor([tokens + [0] * (longest - len(tokens)) for tokens in flat]),
                "lengths": torch.tensor([len(tokens) for tokens in flat]),
                "targets": torch.tensor(targets), "support": torch.tensor(support)}

    def words(self, ids: torch.Tensor) -> str:
        """Word ids → text, padding left out."""
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != 0)


@TASKS.register("babi", BabiSpec)
def build_babi(spec: BabiSpec, seed: int) -> BabiTask:
    return BabiTask(spec, seed)
