"""`seqlab export --format ctranslate2` and int8 decoding, on a tiny Transformer trained here (synthetic translation).

The exported model is checked against seqlab itself, the independent reference being CTranslate2's own C++
implementation: the same greedy translations and scores on a trained model, and the same teacher-forced
log-probabilities for every architecture option (post-/pre-norm, sinusoidal/learned/no positions, ReLU/GELU,
tied or separate output projection) on randomly perturbed weights.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.data.parallel import TranslationCodecs
from seqlab.data.translation_synthetic import (
    SyntheticTranslationSpec,
    SyntheticTranslationTask,
    sentence_pair,
)
from seqlab.inference.translate import Translator
from seqlab.models import build_model
from seqlab.models.transformer import TransformerSpec
from seqlab.training import train

needs_ctranslate2 = pytest.mark.skipif(
    find_spec("ctranslate2") is None, reason="ctranslate2 is not installed (pip install 'seqlab[deploy]')"
)

TINY = {"name": "transformer", "d_model": 32, "num_heads": 2, "num_encoder_layers": 2, "num_decoder_layers": 2,
        "d_ff": 64, "dropout": 0.0, "norm_first": True}


def source_lines(count: int = 40, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(sentence_pair(rng, rng.randint(3, 8))[0]) for _ in range(count)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pre-norm Transformer trained for a few seconds on short synthetic sentences."""
    out = tmp_path_factory.mktemp("transformer")
    config = config_from_dict({
        "seed": 0,
        "task": {"name": "synthetic_translation", "max_len": 8, "eval_size": 32},
        "model": TINY,
        "train": {"steps": 100, "lr": 0.005, "batch_size": 32, "eval_every": 1000, "progress": False,
                  "tensorboard": False, "threads": 1},
    })
    train(config, out_dir=out)
    return out


def cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def export(run: Path, out: Path, capsys, monkeypatch, quantization: str = "float32") -> Path:
    code, _, err = cli(["export", str(run), "--format", "ctranslate2", "--out", str(out), "--quantization", quantization],
                       capsys, monkeypatch)
    assert code == 0, err
    return out


@needs_ctranslate2
def test_exported_model_translates_greedily_like_seqlab(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from seqlab.inference.export import CTranslate2Translator

    lines = source_lines()
    ours = Translator.from_checkpoint(run).translate(lines)
    theirs = CTranslate2Translator(export(run, tmp_path / "ct2", capsys, monkeypatch)).translate(lines, length_penalty=0.0)
    assert [t.text for t in theirs] == [t.text for t in ours]
    # seqlab forces <eos> at ⌊1.5·source length⌋ + 5 tokens, where CTranslate2 goes on to its batch's limit and
    # is cut: the scores agree on the sentences that ended by choosing <eos>.
    ended = [i for i, t in enumerate(ours) if len(t.tokens) < int(1.5 * len(t.source_tokens)) + 5]
    assert len(ended) >= len(lines) // 2
    for i in ended:
        assert theirs[i].score == pytest.approx(ours[i].score, abs=1e-4)


CT2_TRANSLATE = """
import json, sys
from seqlab.inference.export import CTranslate2Translator
lines = json.load(sys.stdin)
print(json.dumps([t.text for t in CTranslate2Translator(sys.argv[1], compute_type=sys.argv[2]).translate(lines)]))
"""


def ct2_with_mkl(model_dir: Path, lines: list[str], compute_type: str) -> list[str]:
    """CTranslate2's translations with its Intel MKL kernels on any x86 CPU (CT2_USE_MKL=1, read when ctranslate2
    is imported, hence a fresh process). Its default on other vendors' CPUs, oneDNN's u8s8 int8 GEMM, can saturate
    its 16-bit pair sums on CPUs without VNNI: on an AMD EPYC with AVX2 only it gave 24 of these 40 sentences as seqlab
    does, with MKL 37 (seqlab's own int8: 37); the Multi30k model lost little either way (greedy BLEU 33.44 and
    33.48 against 33.53 in float32; BENCHMARKS.md)."""
    done = subprocess.run([sys.executable, "-c", CT2_TRANSLATE, str(model_dir), compute_type], input=json.dumps(lines),
                          env={**os.environ, "CT2_USE_MKL": "1"}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@needs_ctranslate2
def test_exported_int8_model_mostly_agrees(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    lines = source_lines()
    ours = [t.text for t in Translator.from_checkpoint(run).translate(lines)]
    model = export(run, tmp_path / "ct2_int8", capsys, monkeypatch, quantization="int8")
    theirs = ct2_with_mkl(model, lines, "int8")
    assert sum(a == b for a, b in zip(ours, theirs)) >= 0.8 * len(lines)


variants = [
    {"norm_first": False, "positional": "sinusoidal", "activation": "relu", "tie_embeddings": True},
    {"norm_first": False, "positional": "learned", "activation": "gelu", "tie_embeddings": False, "max_len": 64},
    {"norm_first": True, "positional": "none", "activation": "gelu", "tie_embeddings": True},
]


@needs_ctranslate2
@pytest.mark.parametrize("options", variants, ids=["post-sinusoidal-relu", "post-learned-gelu-untied", "pre-none-gelu"])
def test_teacher_forced_log_probs_match_for_each_architecture(options: dict, tmp_path: Path) -> None:
    import ctranslate2

    from seqlab.inference.export import save_ctranslate2

    task = SyntheticTranslationTask(SyntheticTranslationSpec(max_len=8), seed=0)
    codecs = TranslationCodecs.from_task_state(task.state_dict())
    spec = TransformerSpec(**{**TINY, **options})
    model = build_model(spec, TaskInfo(kind="seq2seq", output_dim=len(codecs.target.vocab), vocab_size=len(codecs.source.vocab)))
    torch.manual_seed(0)
    with torch.no_grad():  # every weight off its initial value, LayerNorm gains and biases included
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    model.eval()
    save_ctranslate2(model, spec, codecs, tmp_path / "ct2")
    engine = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)

    rng = random.Random(3)
    pairs = [sentence_pair(rng, rng.randint(3, 8)) for _ in range(6)]
    batch = collate([codecs.source.vocab.encode(s) for s, _, _ in pairs], [codecs.target.vocab.encode(t) for _, t, _ in pairs])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(batch), dim=-1)
    scored = engine.score_batch([s for s, _, _ in pairs], [t for _, t, _ in pairs])
    for row, ((_, target, _), result) in enumerate(zip(pairs, scored)):
        ours = log_probs[row, : len(target) + 1].gather(1, batch["targets"][row, : len(target) + 1, None]).squeeze(1)
        assert result.tokens == [*target, "<eos>"]
        assert torch.tensor(result.log_probs) == pytest.approx(ours, abs=1e-4)


def test_int8_decoding_mostly_agrees_with_fp32(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    lines = source_lines()
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, fp32, _ = cli(["translate", str(run), "--input", str(source)], capsys, monkeypatch)
    assert code == 0
    code, int8, _ = cli(["translate", str(run), "--input", str(source), "--quantize", "int8"], capsys, monkeypatch)
    assert code == 0
    fp32_lines, int8_lines = fp32.splitlines(), int8.splitlines()
    assert len(int8_lines) == len(lines)
    assert sum(a == b for a, b in zip(fp32_lines, int8_lines)) >= 0.8 * len(lines)
    quantized = Translator.from_checkpoint(run, quantize="int8").model
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())  # every Linear was replaced


def test_export_refuses_a_model_it_cannot_convert(tmp_path: Path, capsys, monkeypatch) -> None:
    config = config_from_dict({
        "seed": 0,
        "task": {"name": "synthetic_translation", "max_len": 5, "eval_size": 4},
        "model": {"name": "bahdanau", "embed_size": 8, "hidden_size": 8, "attention_size": 8, "maxout_size": 4},
        "train": {"steps": 1, "batch_size": 4, "progress": False, "tensorboard": False},
    })
    train(config, out_dir=tmp_path / "rnn")
    code, _, err = cli(["export", str(tmp_path / "rnn"), "--format", "ctranslate2", "--out", str(tmp_path / "x")],
                       capsys, monkeypatch)
    assert code == 2
    assert "'bahdanau' model" in err and "supports only the encoder–decoder Transformer" in err
    assert not (tmp_path / "x").exists()
