"""Parallel corpora: line-aligned file pairs (plain or .gz) or TSV files, read with clear errors, and the
`translation` task built on them (tokenisers and vocabularies from the training split, length-bucketed
batches by token count).

Errors name what to fix: two files with different line counts (both files and both counts), bytes that
are not UTF-8 (file and line number), a missing file. Pairs with an empty side or a side longer than
`max_len` tokens are dropped from every split, and the counts are printed (stderr) and kept in
`TranslationTask.filter_reports`, never dropped silently.
"""

from __future__ import annotations

import gzip
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field

from seqlab.registry import Spec
from seqlab.data.base import Batch, Task, TaskInfo
from seqlab.data.batching import LengthBucketBatcher, collate, eval_batches
from seqlab.data.tokenizers import Codec, SubwordModel, TokenizerKind, build_tokenizer
from seqlab.errors import UserError
from seqlab.registry import TASKS

BleuTokenize = Literal["13a", "none", "intl", "char"]


class ParallelCorpusError(UserError):
    """A parallel corpus that cannot be read as line-aligned UTF-8 text."""


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (gzip if it ends in .gz), without line endings."""
    path = Path(path)
    if not path.is_file():
        raise ParallelCorpusError(f"{path} does not exist (relative paths are read from {Path.cwd()}).")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ParallelCorpusError(f"{path} cannot be read: {err}.") from None
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    return [decode_line(raw, str(path), number) for number, raw in enumerate(raw_lines, start=1)]


def decode_line(raw: bytes, where: str, number: int) -> str:
    """One line of UTF-8 text without its line ending; anything else is refused, naming the line."""
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as err:
        raise ParallelCorpusError(
            f"{where}, line {number}: invalid UTF-8 ({err.reason} at byte {err.start}); convert the text to UTF-8."
        ) from None


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> list[tuple[str, str]]:
    """(source, target) pairs from two line-aligned files."""
    sources, targets = read_lines(src_path), read_lines(tgt_path)
    if len(sources) != len(targets):
        raise ParallelCorpusError(
            f"{src_path} has {len(sources)} lines but {tgt_path} has {len(targets)}; "
            "the two sides of a parallel corpus must be line-aligned."
        )
    return list(zip(sources, targets))


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """(source, target) pairs from a file of `source<TAB>target` lines."""
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        columns = line.split("\t")
        if len(columns) != 2:
            raise ParallelCorpusError(
                f"{path}, line {number}: expected source<TAB>target (2 columns), found {len(columns)}."
            )
        pairs.append((columns[0], columns[1]))
    return pairs


@dataclass
class FilterReport:
    """What filtering did to one split."""

    split: str
    total: int
    empty: int
    too_long: int
    max_len: int

    @property
    def kept(self) -> int:
        return self.total - self.empty - self.too_long

    def __str__(self) -> str:
        return (
            f"{self.split}: kept {self.kept:,} of {self.total:,} pairs "
            f"(dropped {self.empty:,} with an empty side, {self.too_long:,} with a side over {self.max_len} tokens)"
        )


@dataclass
class EncodedSplit:
    """One split after tokenisation and filtering: ids per side and the kept raw pairs."""

    sources: list[list[int]]
    targets: list[list[int]]
    pairs: list[tuple[str, str]]
    report: FilterReport


def encode_pairs(split: str, pairs: list[tuple[str, str]], source: Codec, target: Codec, max_len: int) -> EncodedSplit:
    """Encode both sides, dropping (and counting) pairs with an empty side or a side over `max_len` tokens."""
    sources, targets, kept = [], [], []
    empty = too_long = 0
    for src_text, tgt_text in pairs:
        src_ids, tgt_ids = source.encode(src_text), target.encode(tgt_text)
        if not src_ids or not tgt_ids:
            empty += 1
        elif len(src_ids) > max_len or len(tgt_ids) > max_len:
            too_long += 1
        else:
            sources.append(src_ids)
            targets.append(tgt_ids)
            kept.append((src_text, tgt_text))
    return EncodedSplit(sources, targets, kept, FilterReport(split, len(pairs), empty, too_long, max_len))


class TranslationSpec(Spec):
    """A parallel corpus on disk: files `data_dir/pattern` per split and language (or `data_dir/tsv` per split)."""

    name: Literal["translation"] = "translation"
    data_dir: str = Field(..., description="folder of the corpus; relative paths are read from the current directory")
    src_lang: str = "de"
    tgt_lang: str = "en"
    pattern: str = Field("{split}.{lang}", description="file name per split and language; '.gz' is tried too")
    tsv: str | None = Field(None, description="instead of pattern: one 'source<TAB>target' file per split, e.g. '{split}.tsv'")
    splits: dict[str, str] = Field(
        {"train": "train", "val": "val", "test": "test_2016_flickr"},
        description="role → split name; 'train' and 'val' are required",
    )
    tokenizer: TokenizerKind = "word"
    subword_model: SubwordModel = "bpe"
    subword_vocab_size: int = Field(8000, ge=8)
    lowercase: bool = False
    min_freq: int = Field(1, ge=1)
    max_vocab: int | None = Field(None, ge=1)
    max_len: int = Field(100, ge=1, description="pairs with a side longer than this many tokens are dropped")
    max_train_pairs: int | None = Field(None, ge=1, description="use only the first N training pairs")
    max_eval_pairs: int | None = Field(None, ge=1, description="use only the first N pairs of each evaluation split")
    bucket_width: int = Field(2, ge=1)
    bleu_tokenize: BleuTokenize = Field("13a", description="sacreBLEU tokenisation; 'none' for pre-tokenised references")


class TranslationTask(Task):
    """Sentence pairs of a parallel corpus as seq2seq batches (source + <eos>; <bos> + target; target + <eos>);
    batched by `train.batch_tokens` padded tokens per side when set, else `train.batch_size` sentences."""

    token_batching = True

    def __init__(self, spec: TranslationSpec, seed: int) -> None:
        if "train" not in spec.splits or "val" not in spec.splits:
            raise UserError("task.splits needs at least 'train' and 'val' entries.")
        self.spec = spec
        self.seed = seed
        raw = {role: self._read(name) for role, name in spec.splits.items()}
        raw["train"] = raw["train"][: spec.max_train_pairs]
        for role in raw:
            if role != "train":
                raw[role] = raw[role][: spec.max_eval_pairs]
        self.source = self._codec([s for s, _ in raw["train"]])
        self.target = self._codec([t for _, t in raw["train"]])
        self.data = {role: encode_pairs(role, pairs, self.source, self.target, spec.max_len) for role, pairs in raw.items()}
        self.filter_reports = {role: split.report for role, split in self.data.items()}
        for report in self.filter_reports.values():
            print(f"translation: {report}", file=sys.stderr)
        if not self.data["train"].sources:
            raise UserError("no training pairs are left after filtering; check task.data_dir, task.pattern and task.max_len.")
        self._batchers: dict[int, LengthBucketBatcher] = {}
        self.info = TaskInfo(
            kind="seq2seq", output_dim=len(self.target.vocab), vocab_size=len(self.source.vocab),
            extra={"src_lang": spec.src_lang, "tgt_lang": spec.tgt_lang},
        )

    def _codec(self, sentences: list[str]) -> Codec:
        spec = self.spec
        prepared = [s.lower() for s in sentences] if spec.lowercase else sentences
        tokenizer = build_tokenizer(spec.tokenizer, prepared, spec.subword_vocab_size, spec.subword_model)
        return Codec.build(tokenizer, sentences, spec.min_freq, spec.max_vocab, spec.lowercase)

    def _read(self, split: str) -> list[tuple[str, str]]:
        folder = Path(self.spec.data_dir)
        if self.spec.tsv is not None:
            return read_tsv(_existing(folder / self.spec.tsv.format(split=split)))
        src = folder / self.spec.pattern.format(split=split, lang=self.spec.src_lang)
        tgt = folder / self.spec.pattern.format(split=split, lang=self.spec.tgt_lang)
        return read_parallel(_existing(src), _existing(tgt))

    def _batcher(self, batch_size: int) -> LengthBucketBatcher:
        if batch_size not in self._batchers:
            train = self.data["train"]
            self._batchers[batch_size] = LengthBucketBatcher(
                [len(s) for s in train.sources], [len(t) for t in train.targets], self.seed,
                self.batch_tokens, batch_size, self.spec.bucket_width,
            )
        return self._batchers[batch_size]

    def train_batch(self, step: int, batch_size: int) -> Batch:
        train = self.data["train"]
        rows = self._batcher(batch_size).batch(step)
        return collate([train.sources[i] for i in rows], [train.targets[i] for i in rows], rows)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        data = self.data[split]
        lengths = [len(s) for s in data.sources], [len(t) for t in data.targets]
        for rows in eval_batches(*lengths, batch_size, self.batch_tokens):
            yield collate([data.sources[i] for i in rows], [data.targets[i] for i in rows], rows)

    def splits(self) -> list[str]:
        return [role for role in self.data if role != "train"]

    def state_dict(self) -> dict[str, Any]:
        return translation_state(self.source, self.target, self.spec.max_len, self.spec.bleu_tokenize)


def _existing(path: Path) -> Path:
    """`path`, or `path.gz` when only the compressed file exists."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.is_file() and gz.is_file() else path


def translation_state(source: Codec, target: Codec, max_len: int, bleu_tokenize: str) -> dict[str, Any]:
    """What a checkpoint needs to translate raw text: both codecs, the length limit, the BLEU tokenisation."""
    return {
        "source": source.state_dict(), "target": target.state_dict(),
        "max_len": max_len, "bleu_tokenize": bleu_tokenize,
    }


@dataclass
class TranslationCodecs:
    """Text-side state of a translation checkpoint, rebuilt from its meta.json."""

    source: Codec
    target: Codec
    max_len: int
    bleu_tokenize: str

    @classmethod
    def from_task_state(cls, state: dict[str, Any]) -> "TranslationCodecs":
        if not isinstance(state, dict) or "source" not in state or "target" not in state:
            raise UserError(
                "this checkpoint was not trained on a translation task (its meta.json has no source/target vocabularies)."
            )
        source, target = Codec.from_state(state["source"]), Codec.from_state(state["target"])
        return cls(source, target, int(state["max_len"]), str(state["bleu_tokenize"]))


@TASKS.register("translation", TranslationSpec)
def build_translation(spec: TranslationSpec, seed: int) -> Task:
    return TranslationTask(spec, seed)
