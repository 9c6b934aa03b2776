"""`train.init_from`: pre-train a model, then fine-tune it on another task (seed 002's transfer claim)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO, run_seqlab
from safetensors.torch import load_file

from seqlab.config import config_from_dict
from seqlab.data.transfer import RealOrShuffledSpec, RealOrShuffledTask
from seqlab.training import Trainer
from seqlab.training import checkpoint as ckpt


ENCODER = {"name": "transformer_encoder", "d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 1, "causal": True}
QUIET = {"progress": False, "tensorboard": False, "batch_size": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "lines.txt"
    words = ["abcde", "bcdea", "cdeab", "deabc", "eabcd", "abdce", "acbde", "edcba"]
    path.write_text("".join(f"{w}\n" for w in words * 10), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pretrained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pre") / "run"
    Trainer(config_from_dict({"task": {"name": "lm", "path": str(corpus), "format": "lines"}, "model": ENCODER,
                              "train": {"steps": 5, **QUIET}}), out_dir=run).fit()
    return run


def fine_tune_config(corpus: Path, init_from: Path | None, model: dict | None = None, **task) -> dict:
    return {"task": {"name": "real_or_shuffled", "path": str(corpus), "train_size": 16, **task},
            "model": model or {**ENCODER, "pooling": "last"},
            "train": {"steps": 2, "init_from": str(init_from) if init_from else None, **QUIET}}


def test_the_body_is_copied_and_the_new_head_is_fresh(corpus: Path, pretrained: Path):
    trainer = Trainer(config_from_dict(fine_tune_config(corpus, pretrained)))
    saved = load_file(str(ckpt.resolve_checkpoint(pretrained).path / ckpt.WEIGHTS))
    state = trainer.model.state_dict()
    body = [key for key in state if not key.startswith("head.")]
    assert body and set(trainer.initialised_from) == set(body)
    for key in body:
        assert torch.equal(state[key], saved[key]), key
    assert state["head.weight"].shape == (2, 16) and saved["head.weight"].shape[0] > 2  # vocabulary head dropped
    scratch = Trainer(config_from_dict(fine_tune_config(corpus, None))).model.state_dict()
    assert any(not torch.equal(scratch[key], saved[key]) for key in body)  # from scratch is another start


def test_the_task_reads_lines_with_the_language_models_vocabulary(corpus: Path, pretrained: Path):
    task = RealOrShuffledTask(RealOrShuffledSpec(path=str(corpus), train_size=16), seed=0)
    saved = ckpt.resolve_checkpoint(pretrained).meta["task_state"]["vocab"]
    assert task.state_dict()["vocab"] == saved
    labels = torch.cat([b["targets"] for b in task.eval_batches("test", 64)])
    assert set(labels.tolist()) <= {0, 1}
    batch = task.train_batch(0, 8)
    assert batch["inputs"][:, 0].eq(2).all()  # every example starts with <bos> like the LM's inputs


def test_a_shuffled_line_keeps_its_ends_and_its_tokens(corpus: Path):
    task = RealOrShuffledTask(RealOrShuffledSpec(path=str(corpus), train_size=16), seed=0)
    lines = [encoded[1:-1] for encoded in task.lines.lines["test"]]  # without <bos>/<eos>
    fakes = [ids[1:] for ids, label in task.examples["test"] if label == 0]
    assert fakes and len(fakes) < len(lines)
    for fake in fakes:  # some line of the split, its inner tokens reordered: same ends, same tokens, another order
        assert any(line[0] == fake[0] and line[-1] == fake[-1] and sorted(line) == sorted(fake) and line != fake
                   for line in lines)


def test_another_vocabulary_is_refused_naming_both(corpus: Path, pretrained: Path, tmp_path: Path):
    other = tmp_path / "other.txt"
    other.write_text("".join(f"{w}\n" for w in ["xyzzy", "zyxxy", "yzzxy"] * 10), encoding="utf-8")
    with pytest.raises(ckpt.CheckpointError, match=r"vocabulary \(\d+ symbols, task 'lm'\) differs from this task's"):
        Trainer(config_from_dict(fine_tune_config(other, pretrained)))


def test_another_model_family_is_refused(corpus: Path, pretrained: Path):
    rnn = {"name": "rnn", "cell": "gru", "hidden_size": 8}
    with pytest.raises(ckpt.CheckpointError, match="none of its weights \\(model 'transformer_encoder'\\) matches"):
        Trainer(config_from_dict(fine_tune_config(corpus, pretrained, model=rnn)))


def test_fine_tuning_trains(corpus: Path, pretrained: Path):
    result = Trainer(config_from_dict(fine_tune_config(corpus, pretrained))).fit()
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


def test_the_shipped_pre_train_and_fine_tune_configs_run_in_turn(corpus: Path, tmp_path: Path):
    pre, fine = REPO / "configs" / "transfer" / "captions_lm.yaml", REPO / "configs" / "transfer" / "captions_real_or_shuffled.yaml"
    tiny = ["--set", f"task.path={corpus}", "--set", "task.level=char", "--set", "train.progress=false",
            "--set", "train.tensorboard=false", "--set", "task.min_tokens=4", "--set", "task.train_size=16"]
    pre_run, fine_run = tmp_path / "pre", tmp_path / "fine"
    first = run_seqlab("train", str(pre), *tiny[:8], "--set", "train.steps=3", "--set", f"out_dir={pre_run}")
    assert first.returncode == 0, first.stderr
    second = run_seqlab("train", str(fine), *tiny, "--set", "train.steps=3", "--set", f"out_dir={fine_run}",
                        "--set", f"train.init_from={pre_run}")
    assert second.returncode == 0, second.stderr
    assert (fine_run / "final_metrics.json").is_file()
