"""Data read from files: language modelling on any text file, and forecasting a numeric series.

- ``lm``: character- or word-level language modelling. ``format: lines`` makes each line one sequence
  wrapped in <bos>/<eos> (names.txt, as in makemore); ``format: text`` reads one long text and trains
  on random windows of `block_size` tokens, or on parallel streams with truncated BPTT.
- ``forecast``: predict the next `horizon` values of a series from the `window` before them; the series
  is a sum of sines by default, or any numeric column of a CSV file.

Splits are contiguous (text, series) or a seeded shuffle of lines (`split_seed`), the same for every
run seed. The vocabulary is built from the training split and saved in `state_dict()` for decoding.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from pydantic import Field, model_validator

from seqlab.registry import Spec
from seqlab.data.base import IGNORE, Batch, Task, TaskInfo, step_generator
from seqlab.data.stream import StreamTask, batchify, cyclic_window
from seqlab.data.synthetic import sum_of_sines
from seqlab.data.vocab import Vocab
from seqlab.errors import UserError
from seqlab.registry import TASKS

WORD = re.compile(r"\w+|[^\w\s]|\n")


class DataFileError(UserError):
    """A data file that is missing, unreadable, empty or of the wrong shape."""


def read_text(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise DataFileError(f"text file {path!r} does not exist; set task.path to a plain-text file.")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path} is not UTF-8 text ({err}); convert it or choose another file.") from None
    if not text.strip():
        raise DataFileError(f"{path} is empty; choose a file with text in it.")
    return text


def tokenize(text: str, level: Literal["char", "word"]) -> list[str]:
    """Characters, or words, punctuation marks and newlines."""
    return list(text) if level == "char" else WORD.findall(text)


def split_sizes(total: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    val = max(1, int(total * val_fraction))
    test = max(1, int(total * test_fraction))
    return total - val - test, val, test


class TextCorpusSpec(Spec):
    """How a text file is read, split and turned into a vocabulary (shared by tasks that must agree on it)."""

    path: str = Field(..., description="a UTF-8 text file")
    level: Literal["char", "word"] = "char"
    lowercase: bool = False
    min_freq: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=1)
    val_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    split_seed: int = 0


class LMSpec(TextCorpusSpec):
    name: Literal["lm"] = "lm"
    format: Literal["text", "lines"] = "text"
    block_size: int = Field(128, ge=1, description="format=text: tokens per training window")


class LanguageModelTask(Task, StreamTask):
    """Next-token prediction: `inputs` (B, T) ids, `targets` (B, T) the following ids, IGNORE at padding."""

    def __init__(self, spec: LMSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        text = read_text(spec.path)
        if spec.lowercase:
            text = text.lower()
        self.joiner = "" if spec.level == "char" else " "
        if spec.format == "lines":
            self._init_lines(text)
        else:
            self._init_text(text)
        vocab_size = len(self.vocab)
        self.info = TaskInfo(kind="tokens", output_dim=vocab_size, vocab_size=vocab_size, pad_id=Vocab.pad_id,
                             extra={"level": spec.level, "format": spec.format})

    def _init_lines(self, text: str) -> None:
        lines = [tokenize(line, self.spec.level) for line in text.splitlines() if line.strip()]
        if len(lines) < 3:
            raise DataFileError(f"{self.spec.path} has {len(lines)} non-empty lines; format=lines needs at least 3.")
        order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(self.spec.split_seed)).tolist()
        n_train, n_val, _ = split_sizes(len(lines), self.spec.val_fraction, self.spec.test_fraction)
        parts = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        self.vocab = Vocab.build((lines[i] for i in parts["train"]), self.spec.min_freq, self.spec.max_vocab)
        self.lines = {split: [self.vocab.encode(lines[i], bos=True, eos=True) for i in index] for split, index in parts.items()}

    def _init_text(self, text: str) -> None:
        tokens = tokenize(text, self.spec.level)
        n_train, n_val, n_test = split_sizes(len(tokens), self.spec.val_fraction, self.spec.test_fraction)
        if min(n_val, n_test) < 2 or n_train <= self.spec.block_size:
            raise DataFileError(
                f"{self.spec.path} holds {len(tokens)} {self.spec.level} tokens: too few for block_size "
                f"{self.spec.block_size} with these split fractions; use a longer file or a smaller task.block_size."
            )
        self.vocab = Vocab.build([tokens[:n_train]], self.spec.min_freq, self.spec.max_vocab)
        ids = torch.tensor(self.vocab.encode(tokens), dtype=torch.long)
        self.ids = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}

    # -- batches -----------------------------------------------------------------------------------

    @staticmethod
    def pad_lines(sequences: list[list[int]]) -> Batch:
        """<bos> w_1 … w_n → w_1 … w_n <eos>, padded with <pad> (inputs) and IGNORE (targets)."""
        lengths = torch.tensor([len(s) - 1 for s in sequences])
        inputs = torch.full((len(sequences), int(lengths.max())), Vocab.pad_id)
        targets = torch.full_like(inputs, IGNORE)
        for row, sequence in enumerate(sequences):
            ids = torch.tensor(sequence)
            inputs[row, : len(ids) - 1] = ids[:-1]
            targets[row, : len(ids) - 1] = ids[1:]
        return {"inputs": inputs, "lengths": lengths, "targets": targets}

    def train_batch(self, step: int, batch_size: int) -> Batch:
        rng = step_generator(self.seed, "train", step)
        if self.spec.format == "lines":
            rows = torch.randint(0, len(self.lines["train"]), (batch_size,), generator=rng).tolist()
            return self.pad_lines([self.lines["train"][i] for i in rows])
        ids, block = self.ids["train"], self.spec.block_size
        starts = torch.randint(0, len(ids) - block, (batch_size,), generator=rng)
        windows = torch.stack([ids[s : s + block + 1] for s in starts.tolist()])
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        if self.spec.format == "lines":
            lines = self.lines[split]
            for start in range(0, len(lines), batch_size):
                yield self.pad_lines(lines[start : start + batch_size])
            return
        ids, block = self.ids[split], self.spec.block_size
        count = max(1, (len(ids) - 1) // block)
        block = min(block, len(ids) - 1)
        windows = torch.stack([ids[i * block : i * block + block + 1] for i in range(count)])
        for start in range(0, count, batch_size):
            chunk = windows[start : start + batch_size]
            yield {"inputs": chunk[:, :-1], "targets": chunk[:, 1:]}

    def stream_window(self, batch_size: int, start: int, stop: int) -> Batch:
        if self.spec.format == "lines":
            raise UserError("truncated BPTT needs task.format = text (one long stream), not lines.")
        ids = self.ids["train"]
        try:
            inputs, targets = batchify(ids[:-1], batch_size), batchify(ids[1:], batch_size)
        except ValueError as err:
            raise UserError(f"the training text is too short for {batch_size} streams: {err}.") from None
        return {"inputs": cyclic_window(inputs, start, stop), "targets": cyclic_window(targets, start, stop)}

    def splits(self) -> list[str]:
        return ["val", "test"]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Token ids back to text (stops at <eos>)."""
        return self.joiner.join(self.vocab.decode(ids))

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.state_dict(), "level": self.spec.level, "joiner": self.joiner}


class ForecastSpec(Spec):
    name: Literal["forecast"] = "forecast"
    path: str | None = Field(None, description="a CSV file with a header row; default: a sum of sines")
    column: str | None = Field(None, description="the CSV column to forecast (needed when there are several)")
    window: int = Field(32, ge=1, description="past values the model reads")
    horizon: int = Field(1, ge=1, description="future values it predicts")
    length: int = Field(4000, ge=10, description="sines: length of the generated series")
    n_sines: int = Field(3, ge=1)
    noise: float = Field(0.05, ge=0)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _check(self) -> "ForecastSpec":
        if self.column is not None and self.path is None:
            raise ValueError("column is set but path is not; give the CSV file as task.path")
        return self


def read_csv_column(path: str, column: str | None) -> torch.Tensor:
    """One numeric column of a CSV file with a header row, as float32; errors name the file, row and value."""
    file = Path(path)
    if not file.is_file():
        raise DataFileError(f"CSV file {path!r} does not exist; set task.path to a CSV file with a header row.")
    with open(file, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise DataFileError(f"{path} needs a header row and at least one data row.")
    header = [name.strip() for name in rows[0]]
    if column is None:
        if len(header) != 1:
            raise DataFileError(f"{path} has columns {header}; choose one with task.column.")
        column = header[0]
    if column not in header:
        raise DataFileError(f"{path} has no column {column!r}; its columns are {header}.")
    index = header.index(column)
    values = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cell = row[index].strip() if index < len(row) else ""
        try:
            value = float(cell)
        except ValueError:
            raise DataFileError(f"{path}, line {line}, column {column!r}: {cell!r} is not a number.") from None
        if not math.isfinite(value):
            raise DataFileError(f"{path}, line {line}, column {column!r}: {cell!r} is not a finite number.")
        values.append(value)
    return torch.tensor(values, dtype=torch.float32)


class ForecastTask(Task):
    """`inputs` (B, window, 1) z-scored with training-split statistics; `targets` (B, horizon) the next values."""

    def __init__(self, spec: ForecastSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        if spec.path is None:
            series = sum_of_sines(spec.length, spec.n_sines, spec.noise, torch.Generator().manual_seed(seed))
        else:
            series = read_csv_column(spec.path, spec.column)
        n_train, n_val, _ = split_sizes(len(series), spec.val_fraction, spec.test_fraction)
        span = spec.window + spec.horizon
        if min(n_train, n_val, len(series) - n_train - n_val) < span:
            raise DataFileError(
                f"the series has {len(series)} values: each split needs at least window + horizon = {span}; "
                "use a longer series, smaller split fractions or a smaller window."
            )
        train = series[:n_train]
        self.mean, self.std = float(train.mean()), float(train.std().clamp_min(1e-8))
        scaled = (series - self.mean) / self.std
        self.series = {"train": scaled[:n_train], "val": scaled[n_train : n_train + n_val], "test": scaled[n_train + n_val :]}
        self.info = TaskInfo(kind="regress", output_dim=spec.horizon, input_dim=1, sequence=True)

    def _windows(self, series: torch.Tensor, starts: torch.Tensor) -> Batch:
        span = self.spec.window + self.spec.horizon
        chunks = torch.stack([series[s : s + span] for s in starts.tolist()])
        return {"inputs": chunks[:, : self.spec.window, None], "targets": chunks[:, self.spec.window :]}

    def train_batch(self, step: int, batch_size: int) -> Batch:
        series = self.series["train"]
        starts = torch.randint(0, len(series) - self.spec.window - self.spec.horizon + 1, (batch_size,),
                               generator=step_generator(self.seed, "train", step))
        return self._windows(series, starts)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        series = self.series[split]
        starts = torch.arange(0, len(series) - self.spec.window - self.spec.horizon + 1)
        for first in range(0, len(starts), batch_size):
            yield self._windows(series, starts[first : first + batch_size])

    def splits(self) -> list[str]:
        return ["val", "test"]

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}


@TASKS.register("lm", LMSpec)
def build_lm(spec: LMSpec, seed: int) -> LanguageModelTask:
    return LanguageModelTask(spec, seed)


@TASKS.register("forecast", ForecastSpec)
def build_forecast(spec: ForecastSpec, seed: int) -> ForecastTask:
    return ForecastTask(spec, seed)
