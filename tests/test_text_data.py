"""Language modelling on text files (lines and long text, char and word level) and CSV time series."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.config import config_from_dict
from seqlab.data.base import IGNORE
from seqlab.data.text import LanguageModelTask
from seqlab.data.vocab import Vocab
from seqlab.errors import UserError
from seqlab.registry import TASKS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAMES = DATA / "names" / "names.txt"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"


def build(seed: int = 0, **task):
    config = config_from_dict({"task": task, "model": {"name": "mlp"}})
    return TASKS.build(config.task, seed)


def needs(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (see ../shared/data/README.md)")


def test_names_one_line_per_sequence_with_bos_and_eos() -> None:
    needs(NAMES)
    task = build(name="lm", path=str(NAMES), format="lines")
    assert len(task.vocab) == 4 + 26
    sizes = {split: len(lines) for split, lines in task.lines.items()}
    names = [line for line in NAMES.read_text().splitlines() if line.strip()]
    assert sum(sizes.values()) == len(names) and sizes["val"] == sizes["test"] == len(names) // 20
    batch = task.train_batch(0, 32)
    inputs, targets, lengths = batch["inputs"], batch["targets"], batch["lengths"]
    assert torch.all(inputs[:, 0] == Vocab.bos_id)
    for row in range(32):
        n = int(lengths[row])
        assert targets[row, n - 1] == Vocab.eos_id and torch.all(targets[row, n:] == IGNORE)
        assert torch.equal(inputs[row, 1:n], targets[row, : n - 1]) and torch.all(inputs[row, n:] == Vocab.pad_id)
    assert task.decode(targets[0, : int(lengths[0])]).isalpha()
    again = build(seed=5, name="lm", path=str(NAMES), format="lines")
    assert again.lines["test"] == task.lines["test"]  # the split does not depend on the run seed


def test_long_text_windows_streams_and_vocab_state(tmp_path: Path) -> None:
    needs(SHAKESPEARE)
    task = build(name="lm", path=str(SHAKESPEARE), block_size=64)
    assert len(task.vocab) == 4 + 65 or len(task.vocab) < 70
    batch = task.train_batch(3, 8)
    assert batch["inputs"].shape == (8, 64)
    assert torch.equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert task.decode(task.ids["val"][:40]) == SHAKESPEARE.read_text()[len(task.ids["train"]) :][:40]
    windows = list(task.eval_batches("val", 16))
    assert sum(b["inputs"].shape[0] for b in windows) == (len(task.ids["val"]) - 1) // 64
    whole = task.stream_window(4, 100, 160)
    halves = [task.stream_window(4, 100, 130), task.stream_window(4, 130, 160)]
    assert torch.equal(whole["inputs"], torch.cat([h["inputs"] for h in halves], 1))
    assert torch.equal(whole["inputs"][:, 1:], whole["targets"][:, :-1])
    rebuilt = Vocab.from_state(task.state_dict()["vocab"])
    assert rebuilt.itos == task.vocab.itos


def test_word_level_lines_and_unknown_words(tmp_path: Path) -> None:
    text = "\n".join(["the cat sat on the mat ."] * 40 + ["a rare zebra !"] + ["the dog sat ."] * 20)
    file = tmp_path / "words.txt"
    file.write_text(text)
    task = build(name="lm", path=str(file), level="word", format="lines", min_freq=2, val_fraction=0.1, test_fraction=0.1)
    assert "the" in task.vocab.stoi and "zebra" not in task.vocab.stoi
    assert task.vocab.encode(["zebra"]) == [Vocab.unk_id]
    task = build(name="lm", path=str(file), level="word", block_size=5)
    assert task.decode(task.ids["train"][:7]) == "the cat sat on the mat ."


def test_text_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        build(name="lm", path=str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match="empty"):
        build(name="lm", path=str(tmp_path / "empty.txt"))
    (tmp_path / "short.txt").write_text("abcdefghij" * 5)
    with pytest.raises(UserError, match="block_size"):
        build(name="lm", path=str(tmp_path / "short.txt"), block_size=100)
    lines = build(name="lm", path=str(tmp_path / "short.txt"), block_size=4)
    assert isinstance(lines, LanguageModelTask)


def test_forecast_on_sines_and_on_a_csv_column(tmp_path: Path) -> None:
    task = build(name="forecast", window=16, horizon=2, length=500)
    batch = task.train_batch(0, 8)
    assert batch["inputs"].shape == (8, 16, 1) and batch["targets"].shape == (8, 2)
    assert abs(float(task.series["train"].mean())) < 1e-5 and abs(float(task.series["train"].std()) - 1) < 1e-3
    rows = ["day,temp,city"] + [f"{i},{20 + (i % 7)},x" for i in range(200)]
    (tmp_path / "w.csv").write_text("\n".join(rows))
    csv_task = build(name="forecast", path=str(tmp_path / "w.csv"), column="temp", window=8)
    first = next(csv_task.eval_batches("val", 4))
    expected = (torch.tensor([20 + (i % 7) for i in range(160, 168)], dtype=torch.float32) - csv_task.mean) / csv_task.std
    torch.testing.assert_close(first["inputs"][0, :, 0], expected)
    assert csv_task.state_dict()["mean"] == pytest.approx(sum(20 + (i % 7) for i in range(160)) / 160, rel=1e-5)


def test_forecast_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        build(name="forecast", path=str(tmp_path / "none.csv"))
    (tmp_path / "a.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(UserError, match=r"columns are \['x', 'y'\]"):
        build(name="forecast", path=str(tmp_path / "a.csv"), column="z")
    with pytest.raises(UserError, match="choose one with task.column"):
        build(name="forecast", path=str(tmp_path / "a.csv"))
    with pytest.raises(UserError, match="line 3.*'oops' is not a number"):
        build(name="forecast", path=str(tmp_path / "a.csv"), column="y")
    with pytest.raises(UserError, match="window"):
        build(name="forecast", path=str(tmp_path / "a.csv"), column="x")
