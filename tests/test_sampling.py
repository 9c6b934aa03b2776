"""Sampling: temperature, top-k and top-p filters, stopping at <eos>, and `seqlab sample` on checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.config import config_from_dict, load_config
from seqlab.inference.sampling import filter_logits, load_language_model, next_token, sample
from seqlab.data.base import TaskInfo
from seqlab.models.language import BigramLM, BigramSpec
from seqlab.training import Trainer

REPO = Path(__file__).resolve().parents[1]


def test_top_k_keeps_the_k_most_probable() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.75)).tolist() == [[True, False, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, False, True, True]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1  # the most probable always stays


def test_temperature_sharpens_and_zero_is_greedy() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    hot = (next_token(logits, 2.0, generator=g) == 2).float().mean()
    cold = (next_token(logits, 0.25, generator=g) == 2).float().mean()
    expected_hot = torch.softmax(torch.tensor([0.0, 0.5, 1.0]), 0)[2]
    assert abs(float(hot) - float(expected_hot)) < 0.03 and float(cold) > 0.95
    assert next_token(logits[:2], 0.0).tolist() == [2, 2]


def test_sample_stops_at_eos_and_follows_the_prompt() -> None:
    model = BigramLM(BigramSpec(), TaskInfo("tokens", 6, vocab_size=6))
    with torch.no_grad():
        model.L.fill_(-30.0)
        model.L[2, 4] = model.L[4, 5] = model.L[5, 3] = model.L[0, 0] = 0.0  # <bos> → 4 → 5 → <eos>
    assert sample(model, 3, 10, prompt=[2]) == [[4, 5]] * 3
    assert sample(model, 1, 10, prompt=[2, 4]) == [[5]]
    assert sample(model, 1, 3, prompt=[0], eos_id=None, banned=()) == [[0, 0, 0]]


@pytest.fixture(scope="module")
def names_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("names")
    names = folder / "names.txt"
    names.write_text("\n".join(["anna", "emma", "ella", "ava", "mia", "noa", "lena", "nora"] * 20), encoding="utf-8")
    config = load_config(REPO / "configs" / "lm" / "names_linear_transformer.yaml", [
        f"task.path={names}", "train.steps=80", "train.eval_every=0", "train.progress=false",
        "train.tensorboard=false", "train.threads=1", "train.time_budget_s=null", f"out_dir={folder / 'run'}",
    ])
    Trainer(config, out_dir=config.out_dir).fit()
    return Path(config.out_dir)


def test_cli_samples_names_from_a_checkpoint(names_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(names_run), "--num", "6", "--top-k", "5", "--temperature", "0.8", "--prompt", "e"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(line.startswith("e") for line in lines)
    assert all(set(line) <= set("anemlvior") for line in lines)
    lm = load_language_model(names_run)
    assert lm.line_format and len(lm.vocab) == 13


def test_cli_sample_errors_are_one_line(names_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(names_run), "--prompt", "xyz"]) == 2
    assert "vocabulary lacks" in capsys.readouterr().err
    assert main(["sample", str(names_run), "--top-p", "1.5"]) == 2
    assert main(["sample", str(names_run / "nowhere")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_every_generating_model_samples_from_its_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Text-format (running text) checkpoints of the other rungs, including the recurrent `rnn` model."""
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    models = {
        "bigram": {"name": "bigram"},
        "mlp_lm": {"name": "mlp_lm", "hidden_size": 16},
        "wavenet_lm": {"name": "wavenet_lm", "channels": 8, "skip_channels": 8, "layers": 2},
        "transformer_lm": {"name": "transformer_lm", "d_model": 16, "num_heads": 2, "d_ff": 16, "num_layers": 1},
        "rnn": {"name": "rnn", "cell": "gru", "hidden_size": 16},
    }
    for name, model in models.items():
        config = config_from_dict({
            "task": {"name": "lm", "path": str(text), "block_size": 16},
            "model": model,
            "train": {"steps": 3, "progress": False, "tensorboard": False, "threads": 1},
        })
        Trainer(config, out_dir=tmp_path / name).fit()
        assert main(["sample", str(tmp_path / name), "--num", "2", "--max-len", "12", "--prompt", "the "]) == 0
        out = capsys.readouterr().out.split("---\n")
        assert len(out) == 3 and out[0].startswith("the ") and out[1].startswith("the ") and out[2] == "", name
