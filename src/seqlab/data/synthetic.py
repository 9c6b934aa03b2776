"""Synthetic sequence tasks of the recurrent era (seeds 002 and 004), deterministic by seed, length configurable.

- ``adding``: the adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values of a long sequence.
- ``copy_memory``: copy memory (Arjovsky et al. 2016): reproduce ten symbols after a long blank gap.
- ``remember_first``: classify a sequence by its first symbol, read before `length` distractors.
- ``delayed_recall``: a stream of episodes (key, distractors); the key is asked `distance` steps later.
- ``future_context``: tag every position with the token `lookahead` steps ahead (needs a backward pass).
- ``fixed_window``: classify by the symbol `distance` steps from the end (an MLP sees only a window).
- ``order``: does symbol A come before symbol B? (a bag of words cannot tell).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from seqlab.registry import Spec
from seqlab.data.base import IGNORE, Batch, GeneratedTask, TaskInfo, step_generator
from seqlab.data.stream import StreamTask
from seqlab.registry import TASKS

Features = Literal["tokens", "bow", "window"]


def featurize(tokens: torch.Tensor, features: Features, n_symbols: int, window: int | None) -> torch.Tensor:
    """Token ids (n, T) in 1..n_symbols → ids as they are, bag-of-words counts (n, n_symbols), or the one-hot last `window` tokens flattened."""
    if features == "tokens":
        return tokens
    one_hot = torch.nn.functional.one_hot(tokens - 1, n_symbols).float()  # (n, T, n_symbols)
    if features == "bow":
        return one_hot.sum(1)
    assert window is not None
    return one_hot[:, -window:].flatten(1)


def features_info(kind_output: int, features: Features, n_symbols: int, window: int | None) -> TaskInfo:
    """TaskInfo for a symbol task shown as token ids (a sequence) or as fixed-size bow/window vectors."""
    if features == "tokens":
        return TaskInfo(kind="classify", output_dim=kind_output, vocab_size=n_symbols + 1, sequence=True)
    width = n_symbols if features == "bow" else n_symbols * (window or 0)
    return TaskInfo(kind="classify", output_dim=kind_output, input_dim=width, sequence=False)


class AddingSpec(Spec):
    name: Literal["adding"] = "adding"
    length: int = Field(100, ge=2, description="sequence length T")
    eval_size: int = Field(1000, ge=1)


class AddingTask(GeneratedTask):
    """Channel 0: values ~ U[0, 1]; channel 1: markers, one in each half; target: the sum of the two marked values."""

    def __init__(self, spec: AddingSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.length = spec.length
        self.info = TaskInfo(kind="regress", output_dim=1, input_dim=2, sequence=True,
                             extra={"constant_baseline_mse": 1.0 / 6.0})

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        half = self.length // 2
        values = torch.rand(n, self.length, generator=rng)
        first = torch.randint(0, half, (n,), generator=rng)
        second = torch.randint(half, self.length, (n,), generator=rng)
        markers = torch.zeros(n, self.length)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = (values * markers).sum(1, keepdim=True)
        return {"inputs": torch.stack([values, markers], dim=-1), "targets": targets}


class CopyMemorySpec(Spec):
    name: Literal["copy_memory"] = "copy_memory"
    delay: int = Field(100, ge=1, description="T: blanks between the symbols and the delimiter, plus one")
    copy_length: int = Field(10, ge=1)
    n_symbols: int = Field(8, ge=2)
    eval_size: int = Field(500, ge=1)


class CopyMemoryTask(GeneratedTask):
    """Input: `copy_length` symbols, T−1 blanks, a delimiter, `copy_length` blanks; output: blanks, then the symbols.

    Ids: 0 <pad> (unused), 1..n_symbols symbols, then blank, then delimiter. The memoryless baseline
    (blanks, then uniform guesses) scores copy_length·ln(n_symbols)/(T + 2·copy_length) nats per step.
    """

    def __init__(self, spec: CopyMemorySpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.blank, self.delimiter = spec.n_symbols + 1, spec.n_symbols + 2
        steps = spec.delay + 2 * spec.copy_length
        baseline = spec.copy_length * math.log(spec.n_symbols) / steps
        self.info = TaskInfo(kind="tokens", output_dim=spec.n_symbols + 3, vocab_size=spec.n_symbols + 3,
                             extra={"memoryless_baseline_loss": baseline})

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        k, delay = self.spec.copy_length, self.spec.delay
        symbols = torch.randint(1, self.spec.n_symbols + 1, (n, k), generator=rng)
        inputs = torch.full((n, delay + 2 * k), self.blank)
        inputs[:, :k] = symbols
        inputs[:, k + delay - 1] = self.delimiter
        targets = torch.full_like(inputs, self.blank)
        targets[:, -k:] = symbols
        return {"inputs": inputs, "targets": targets}


class RememberFirstSpec(Spec):
    name: Literal["remember_first"] = "remember_first"
    length: int = Field(50, ge=1, description="distractors after the first symbol")
    n_symbols: int = Field(4, ge=2, description="classes: symbols that can come first")
    n_distractors: int = Field(4, ge=1)
    eval_size: int = Field(1000, ge=1)


class RememberFirstTask(GeneratedTask):
    """[key, d_1, …, d_T] → key. Ids: 1..n_symbols keys (class = id − 1), then the distractors."""

    def __init__(self, spec: RememberFirstSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.info = TaskInfo(kind="classify", output_dim=spec.n_symbols,
                             vocab_size=spec.n_symbols + spec.n_distractors + 1, sequence=True)

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        keys = torch.randint(1, self.spec.n_symbols + 1, (n, 1), generator=rng)
        low = self.spec.n_symbols + 1
        distractors = torch.randint(low, low + self.spec.n_distractors, (n, self.spec.length), generator=rng)
        return {"inputs": torch.cat([keys, distractors], 1), "targets": keys.squeeze(1) - 1}


class DelayedRecallSpec(Spec):
    name: Literal["delayed_recall"] = "delayed_recall"
    distance: int = Field(30, ge=1, description="steps from a key to the first position where it is asked for")
    queries: int = Field(1, ge=1, description="consecutive positions, from `distance` steps after the key on, that ask for it")
    n_keys: int = Field(4, ge=2)
    n_distractors: int = Field(4, ge=1)
    episodes: int = Field(4, ge=1, description="episodes per training/evaluation sequence (without TBPTT)")
    eval_size: int = Field(500, ge=1)


class DelayedRecallTask(GeneratedTask, StreamTask):
    """A stream of episodes [key, d_1, …, d_{distance+queries−1}]; the targets at d_distance … are the key.

    Every asked position is at least `distance` steps after its key, so with truncated BPTT no gradient
    reaches the key unless k2 > `distance`. Ids: 0 <pad>, 1..n_keys keys, then distractors; targets are
    key ids, IGNORE where nothing is asked.
    """

    def __init__(self, spec: DelayedRecallSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.period = spec.distance + spec.queries
        vocab = spec.n_keys + spec.n_distractors + 1
        self.info = TaskInfo(kind="tokens", output_dim=vocab, vocab_size=vocab,
                             extra={"chance_accuracy": 1.0 / spec.n_keys})

    def episodes(self, n: int, count: int, rng: torch.Generator) -> Batch:
        """`count` consecutive episodes for each of `n` rows."""
        keys = torch.randint(1, self.spec.n_keys + 1, (n, count, 1), generator=rng)
        low = self.spec.n_keys + 1
        distractors = torch.randint(low, low + self.spec.n_distractors, (n, count, self.period - 1), generator=rng)
        targets = torch.full((n, count, self.period), IGNORE)
        targets[:, :, self.spec.distance :] = keys
        return {"inputs": torch.cat([keys, distractors], 2).flatten(1), "targets": targets.flatten(1)}

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        return self.episodes(n, self.spec.episodes, rng)

    def stream_window(self, batch_size: int, start: int, stop: int) -> Batch:
        first, last = start // self.period, (stop - 1) // self.period
        parts = [self.episodes(batch_size, 1, step_generator(self.seed, "stream", batch_size, e)) for e in range(first, last + 1)]
        offset = first * self.period
        return {key: torch.cat([p[key] for p in parts], 1)[:, start - offset : stop - offset] for key in ("inputs", "targets")}


class FutureContextSpec(Spec):
    name: Literal["future_context"] = "future_context"
    length: int = Field(20, ge=2)
    lookahead: int = Field(2, ge=1, description="the tag at t is the token at t + lookahead")
    n_symbols: int = Field(8, ge=2)
    min_length: int | None = Field(None, ge=2, description="draw lengths in [min_length, length] (padded)")
    eval_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "FutureContextSpec":
        shortest = self.min_length or self.length
        if self.lookahead >= shortest:
            raise ValueError(f"lookahead ({self.lookahead}) must be shorter than the shortest sequence ({shortest})")
        if self.min_length is not None and self.min_length > self.length:
            raise ValueError(f"min_length ({self.min_length}) exceeds length ({self.length})")
        return self


class FutureContextTask(GeneratedTask):
    """Tag y_t = x_{t+lookahead}: the past says nothing about it (chance 1/n_symbols), the future says everything."""

    def __init__(self, spec: FutureContextSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.info = TaskInfo(kind="tokens", output_dim=spec.n_symbols + 1, vocab_size=spec.n_symbols + 1,
                             extra={"chance_accuracy": 1.0 / spec.n_symbols})

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        length, ahead = self.spec.length, self.spec.lookahead
        tokens = torch.randint(1, self.spec.n_symbols + 1, (n, length), generator=rng)
        low = self.spec.min_length or length
        lengths = torch.randint(low, length + 1, (n,), generator=rng)
        positions = torch.arange(length)
        tokens = tokens.masked_fill(positions >= lengths[:, None], 0)
        targets = torch.full_like(tokens, IGNORE)
        targets[:, :-ahead] = tokens[:, ahead:]
        targets = targets.masked_fill(positions >= (lengths - ahead)[:, None], IGNORE)
        return {"inputs": tokens, "lengths": lengths, "targets": targets}


class FixedWindowSpec(Spec):
    name: Literal["fixed_window"] = "fixed_window"
    length: int = Field(20, ge=2)
    distance: int = Field(10, ge=1, description="the label is the symbol this many steps from the end (1 = last)")
    n_symbols: int = Field(4, ge=2)
    features: Features = "tokens"
    window: int | None = Field(None, ge=1, description="features=window: how many final tokens the vector shows")
    eval_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "FixedWindowSpec":
        if self.distance > self.length:
            raise ValueError(f"distance ({self.distance}) exceeds length ({self.length})")
        if self.features == "window" and (self.window is None or self.window > self.length):
            raise ValueError("features=window needs a window between 1 and length")
        return self


class FixedWindowTask(GeneratedTask):
    """Label = the symbol `distance` steps from the end; a window of w < distance final tokens cannot see it."""

    def __init__(self, spec: FixedWindowSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.info = features_info(spec.n_symbols, spec.features, spec.n_symbols, spec.window)
        self.info.extra["chance_accuracy"] = 1.0 / spec.n_symbols

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        tokens = torch.randint(1, self.spec.n_symbols + 1, (n, self.spec.length), generator=rng)
        targets = tokens[:, -self.spec.distance] - 1
        return {"inputs": featurize(tokens, self.spec.features, self.spec.n_symbols, self.spec.window), "targets": targets}


class OrderSpec(Spec):
    name: Literal["order"] = "order"
    length: int = Field(12, ge=2)
    n_fillers: int = Field(4, ge=1)
    features: Features = "tokens"
    window: int | None = Field(None, ge=1)
    eval_size: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "OrderSpec":
        if self.features == "window" and (self.window is None or self.window > self.length):
            raise ValueError("features=window needs a window between 1 and length")
        return self


class OrderTask(GeneratedTask):
    """One A (id 1) and one B (id 2) among fillers; label 1 when A comes before B. Swapping A and B flips it."""

    def __init__(self, spec: OrderSpec, seed: int) -> None:
        super().__init__(seed, eval_size=spec.eval_size)
        self.spec = spec
        self.n_symbols = spec.n_fillers + 2
        self.info = features_info(2, spec.features, self.n_symbols, spec.window)
        self.info.extra["chance_accuracy"] = 0.5

    def sequences(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (n, length) and labels (n,)."""
        tokens = torch.randint(3, self.n_symbols + 1, (n, self.spec.length), generator=rng)
        slots = torch.rand(n, self.spec.length, generator=rng).argsort(1)[:, :2]  # two distinct positions
        rows = torch.arange(n)
        tokens[rows, slots[:, 0]] = 1
        tokens[rows, slots[:, 1]] = 2
        return tokens, (slots[:, 0] < slots[:, 1]).long()

    def generate(self, n: int, rng: torch.Generator) -> Batch:
        tokens, labels = self.sequences(n, rng)
        return {"inputs": featurize(tokens, self.spec.features, self.n_symbols, self.spec.window), "targets": labels}


def sum_of_sines(length: int, n_sines: int, noise: float, rng: torch.Generator) -> torch.Tensor:
    """x_t = Σ_k a_k sin(2π t / p_k + φ_k) + ε_t, periods p_k ∈ [8, 64), amplitudes in [0.5, 1.5)."""
    periods = 8 + 56 * torch.rand(n_sines, generator=rng)
    phases = 2 * math.pi * torch.rand(n_sines, generator=rng)
    amplitudes = 0.5 + torch.rand(n_sines, generator=rng)
    t = torch.arange(length, dtype=torch.float32)[:, None]
    clean = (amplitudes * torch.sin(2 * math.pi * t / periods + phases)).sum(1)
    return clean + noise * torch.randn(length, generator=rng)


@TASKS.register("adding", AddingSpec)
def build_adding(spec: AddingSpec, seed: int) -> AddingTask:
    return AddingTask(spec, seed)


@TASKS.register("copy_memory", CopyMemorySpec)
def build_copy_memory(spec: CopyMemorySpec, seed: int) -> CopyMemoryTask:
    return CopyMemoryTask(spec, seed)


@TASKS.register("remember_first", RememberFirstSpec)
def build_remember_first(spec: RememberFirstSpec, seed: int) -> RememberFirstTask:
    return RememberFirstTask(spec, seed)


@TASKS.register("delayed_recall", DelayedRecallSpec)
def build_delayed_recall(spec: DelayedRecallSpec, seed: int) -> DelayedRecallTask:
    return DelayedRecallTask(spec, seed)


@TASKS.register("future_context", FutureContextSpec)
def build_future_context(spec: FutureContextSpec, seed: int) -> FutureContextTask:
    return FutureContextTask(spec, seed)


@TASKS.register("fixed_window", FixedWindowSpec)
def build_fixed_window(spec: FixedWindowSpec, seed: int) -> FixedWindowTask:
    return FixedWindowTask(spec, seed)


@TASKS.register("order", OrderSpec)
def build_order(spec: OrderSpec, seed: int) -> OrderTask:
    return OrderTask(spec, seed)
