"""Parallel corpus reading (errors included), filtering reports, token-count batching, the translation task."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from seqlab.config import config_from_dict
from seqlab.data.base import IGNORE
from seqlab.data.batching import LengthBucketBatcher, collate, eval_batches
from seqlab.data.parallel import (
    ParallelCorpusError, TranslationCodecs, TranslationSpec, TranslationTask, read_lines, read_parallel, read_tsv,
)
from seqlab.data.vocab import Vocab
from seqlab.training.trainer import Trainer

MULTI30K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"

def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_line_aligned_files_plain_and_gzip(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de.gz", ["ein hund", "zwei katzen"], gz=True)
    tgt = write(tmp_path / "a.en", ["a dog", "two cats"])
    assert read_parallel(src, tgt) == [("ein hund", "a dog"), ("zwei katzen", "two cats")]


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path: Path) -> None:
    src = write(tmp_path / "train.de", ["a", "b", "c"])
    tgt = write(tmp_path / "train.en", ["a", "b"])
    with pytest.raises(ParallelCorpusError) as err:
        read_parallel(src, tgt)
    message = str(err.value)
    assert str(src) in message and str(tgt) in message and "3" in message and "2" in message


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_file_and_line(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("bad.de.gz" if gz else "bad.de")
    data = "gut\nauch gut\n".encode() + b"kaputt \xff\xfe\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ParallelCorpusError, match=r"line 3: invalid UTF-8") as err:
        read_lines(path)
    assert str(path) in str(err.value)


def test_missing_file_and_bad_tsv(tmp_path: Path) -> None:
    with pytest.raises(ParallelCorpusError, match="does not exist"):
        read_lines(tmp_path / "nothing.txt")
    tsv = write(tmp_path / "pairs.tsv", ["ein hund\ta dog", "nur eine spalte"])
    with pytest.raises(ParallelCorpusError, match=r"line 2: expected source<TAB>target"):
        read_tsv(tsv)
    assert read_tsv(write(tmp_path / "ok.tsv", ["x y\tu v"])) == [("x y", "u v")]


def test_collate_layout() -> None:
    batch = collate([[5, 6, 7], [8]], [[9], [10, 11]])
    assert batch["src"].tolist() == [[5, 6, 7, Vocab.eos_id], [8, Vocab.eos_id, 0, 0]]
    assert batch["src_lengths"].tolist() == [4, 2]
    assert batch["tgt_in"].tolist() == [[Vocab.bos_id, 9, 0], [Vocab.bos_id, 10, 11]]
    assert batch["targets"].tolist() == [[9, Vocab.eos_id, IGNORE], [10, 11, Vocab.eos_id]]


def test_bucket_batcher_covers_each_epoch_within_the_token_budget() -> None:
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(1, 40, (500,), generator=generator).tolist()
    tgt = [max(1, n + d) for n, d in zip(src, torch.randint(-3, 4, (500,), generator=generator).tolist())]
    batcher = LengthBucketBatcher(src, tgt, seed=3, batch_tokens=200)
    for epoch in range(2):
        batches = [batcher.batch(epoch * batcher.batches_per_epoch + i) for i in range(batcher.batches_per_epoch)]
        assert sorted(i for b in batches for i in b) == list(range(500))
        for rows in batches:
            assert len(rows) * (max(max(src[i], tgt[i]) for i in rows) + 1) <= 200
    assert batcher.batch(7) == LengthBucketBatcher(src, tgt, seed=3, batch_tokens=200).batch(7)  # a pure function of (seed, step)
    assert batcher.epoch_batches(0) != batcher.epoch_batches(1)  # reshuffled every epoch
    fixed = eval_batches(src, tgt, batch_size=64, batch_tokens=300)
    assert sorted(i for b in fixed for i in b) == list(range(500))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    lines_de = ["ein hund läuft", "", "zwei katzen schlafen", "ein " + "sehr " * 30 + "langer satz", "ein hund schläft"] * 4
    lines_en = ["a dog runs", "nothing", "two cats sleep", "a very long sentence", "a dog sleeps"] * 4
    for split in ("train", "val"):
        write(tmp_path / f"{split}.de", lines_de)
        write(tmp_path / f"{split}.en", lines_en)
    return tmp_path


def test_translation_task_filters_and_reports(corpus: Path, capsys) -> None:
    task = TranslationTask(TranslationSpec(data_dir=str(corpus), splits={"train": "train", "val": "val"}, max_len=10), seed=0)
    report = task.filter_reports["train"]
    assert (report.total, report.empty, report.too_long, report.kept) == (20, 4, 4, 12)
    printed = capsys.readouterr().err
    assert "train: kept 12 of 20 pairs" in printed and "4 with an empty side" in printed and "4 with a side over 10" in printed
    batch = task.train_batch(0, 4)
    assert batch["src"].shape[0] <= 4 and (batch["src"][:, 0] != 0).all()
    assert task.info.kind == "seq2seq" and task.info.vocab_size == len(task.source.vocab)
    codecs = TranslationCodecs.from_task_state(json.loads(json.dumps(task.state_dict())))
    assert codecs.source.encode("zwei katzen schlafen") == task.source.encode("zwei katzen schlafen")
    assert codecs.max_len == 10


def test_train_batch_tokens_reaches_the_task(corpus: Path) -> None:
    config = config_from_dict({
        "task": {"name": "translation", "data_dir": str(corpus), "splits": {"train": "train", "val": "val"}},
        "model": {"name": "seq2seq", "embed_size": 4, "hidden_size": 4, "num_layers": 1},
        "train": {"steps": 1, "batch_tokens": 12, "progress": False, "tensorboard": False},
    })
    trainer = Trainer(config)
    batch = trainer.task.train_batch(0, config.train.batch_size)
    assert batch["src"].numel() <= 12 and batch["tgt_in"].numel() <= 12


def test_multi30k_slice_word_and_subword() -> None:
    if not (MULTI30K / "tok" / "train.lc.norm.tok.de").is_file():
        pytest.skip(f"Multi30k is not available at {MULTI30K}")
    tok = TranslationTask(TranslationSpec(
        data_dir=str(MULTI30K / "tok"), pattern="{split}.lc.norm.tok.{lang}", max_train_pairs=300, max_eval_pairs=40,
        min_freq=2, bleu_tokenize="none"), seed=0)
    tok.batch_tokens = 400  # what the trainer hands over from train.batch_tokens
    assert set(tok.splits()) == {"val", "test"} and len(tok.data["test"].pairs) == 40
    assert tok.source.vocab.stoi["ein"] > 3 and tok.target.vocab.stoi["a"] > 3
    batch = tok.train_batch(0, 32)
    assert batch["src"].numel() <= 400
    raw = TranslationTask(TranslationSpec(
        data_dir=str(MULTI30K / "raw"), tokenizer="subword", subword_vocab_size=300, max_train_pairs=300,
        max_eval_pairs=20), seed=0)
    first = raw.data["train"].pairs[0][0]
    assert raw.source.decode(raw.source.encode(first)) == first  # raw German text round-trips through BPE
