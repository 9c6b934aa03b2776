"""`seqlab translate` and `seqlab eval` on a tiny checkpoint trained here (the synthetic translation task)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.config import config_from_dict
from seqlab.training import train

SENTENCES = ["old king sees red bird", "", "child sleeps and dog runs"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Bahdanau model trained for a few seconds; only its checkpoint directory is kept (moved elsewhere)."""
    run = tmp_path_factory.mktemp("run")
    config = config_from_dict({
        "seed": 0,
        "task": {"name": "synthetic_translation", "max_len": 8, "eval_size": 32},
        "model": {"name": "bahdanau", "embed_size": 16, "hidden_size": 24, "attention_size": 16, "maxout_size": 8},
        "train": {"steps": 40, "lr": 0.01, "batch_size": 32, "progress": False, "tensorboard": False},
    })
    train(config, out_dir=run)
    alone = tmp_path_factory.mktemp("moved") / "bahdanau-checkpoint"
    shutil.copytree(run / "checkpoints" / "best", alone)
    shutil.rmtree(run)  # the checkpoint directory alone must be enough to translate
    return alone


def run_cli(args: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_translate_stdin_keeps_one_output_line_per_input_line(checkpoint: Path, capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["translate", str(checkpoint)], capsys, monkeypatch, "\n".join(SENTENCES) + "\n")
    lines = out.split("\n")[:-1]
    assert code == 0 and len(lines) == 3
    assert lines[1] == ""  # an empty line translates to an empty line
    assert lines[0] and lines[2]
    code, beam_out, _ = run_cli(["translate", str(checkpoint), "--beam", "3"], capsys, monkeypatch, SENTENCES[0] + "\n")
    assert code == 0 and beam_out.strip()


def test_translate_file_with_attention_heatmaps(checkpoint: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    maps = tmp_path / "maps"
    code, out, err = run_cli(["translate", str(checkpoint), "--input", str(source), "--attention-dir", str(maps)], capsys, monkeypatch)
    assert code == 0 and len(out.split("\n")[:-1]) == 3
    pictures = sorted(p.name for p in maps.glob("*.png"))
    assert pictures == ["line00001.png", "line00003.png"]  # one per non-empty sentence
    assert all((maps / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pictures)
    assert "2 attention heatmap(s)" in err


def test_too_long_line_is_a_clear_error(checkpoint: Path, capsys, monkeypatch) -> None:
    long_line = " ".join(["king"] * 9)  # the model was trained on at most 8 source words
    code, _, err = run_cli(["translate", str(checkpoint)], capsys, monkeypatch, f"king sleeps\n{long_line}\n")
    assert code == 2 and "line 2 has 9 source tokens" in err and "--max-src-len" in err
    code, out, _ = run_cli(["translate", str(checkpoint), "--max-src-len", "20"], capsys, monkeypatch, long_line + "\n")
    assert code == 0 and out.strip()


def test_eval_prints_bleu_chrf_and_buckets(checkpoint: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    src, ref = tmp_path / "test.src", tmp_path / "test.ref"
    src.write_text("old king sees red bird\nchild sleeps\n", encoding="utf-8")
    ref.write_text("nemo raku ulo pirra vidi\npelo dormu\n", encoding="utf-8")
    hypotheses, scores = tmp_path / "hyp.jsonl", tmp_path / "scores.json"
    code, out, _ = run_cli(["eval", str(checkpoint), "--src", str(src), "--ref", str(ref), "--beam", "2",
                            "--hypotheses", str(hypotheses), "--json", str(scores)], capsys, monkeypatch)
    assert code == 0
    assert "BLEU" in out and "tok:none" in out and "chrF" in out and "BLEU by source length" in out
    records = [json.loads(line) for line in hypotheses.read_text(encoding="utf-8").splitlines()]
    assert [r["reference"] for r in records] == ["nemo raku ulo pirra vidi", "pelo dormu"]
    assert 0 <= json.loads(scores.read_text())["bleu"] <= 100
    code, out, _ = run_cli(["eval", str(checkpoint), "--src", str(src), "--ref", str(ref), "--beam", "2",
                            "--patience", "1", "--json", str(scores)], capsys, monkeypatch)
    assert code == 0 and "beam 2, length penalty 0.6, patience 1.0" in out
    assert json.loads(scores.read_text())["patience"] == 1.0
    ref.write_text("only one line\n", encoding="utf-8")
    code, _, err = run_cli(["eval", str(checkpoint), "--src", str(src), "--ref", str(ref)], capsys, monkeypatch)
    assert code == 2 and "has 2 lines" in err and "has 1" in err


def test_non_translation_checkpoint_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    config = config_from_dict({"task": {"name": "logic"}, "model": {"name": "mlp"},
                               "train": {"steps": 2, "progress": False, "tensorboard": False}})
    train(config, out_dir=tmp_path / "xor")
    code, _, err = run_cli(["translate", str(tmp_path / "xor")], capsys, monkeypatch, "hello\n")
    assert code == 2 and "not trained on a translation task" in err
