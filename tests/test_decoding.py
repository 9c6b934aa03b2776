"""The one decoding protocol: every generating model's steps equal its parallel forward; beam search drives
language models and sampling drives encoder–decoders; `select_rows` reorders any state pytree."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.inference.decoding import BOS, EOS, Decoder, run_steps, select_rows
from seqlab.inference.sampling import sample
from seqlab.inference.search import beam_search, greedy_search
from seqlab.models import build_model

V = 13
LM_INFO = TaskInfo(kind="tokens", output_dim=V, vocab_size=V)
S2S_INFO = TaskInfo(kind="seq2seq", output_dim=V, vocab_size=11)
LANGUAGE_MODELS = {
    "rnn": {"cell": "lstm", "hidden_size": 12, "num_layers": 2, "embedding_dim": 8},
    "bigram": {},
    "mlp_lm": {"context": 3, "embedding_dim": 4, "hidden_size": 8, "direct": True},
    "wavenet_lm": {"channels": 8, "skip_channels": 8, "layers": 3},
    "bow_lm": {"embedding_dim": 8, "hidden_size": 8, "max_len": 16},
    "transformer_lm": {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "dropout": 0.0},
    "transformer_lm/linear": {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "attention": "linear"},
    "transformer_lm/delta": {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "attention": "delta"},
    "transformer_lm/performer": {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "attention": "performer"},
    "transformer_lm/moe": {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_layers": 2, "ffn": "moe", "experts": 4, "top_k": 2},
}
TRANSLATORS = {
    "transformer": {"d_model": 16, "num_heads": 2, "d_ff": 32, "num_encoder_layers": 2, "num_decoder_layers": 2},
    "convs2s": {"embed_dim": 8, "channels": 12, "encoder_layers": 2, "decoder_layers": 2, "max_len": 32},
    "seq2seq": {"embed_size": 8, "hidden_size": 12, "num_layers": 2},
    "seq2seq_context": {"embed_size": 8, "hidden_size": 12, "maxout_size": 4},
    "bahdanau": {"embed_size": 8, "hidden_size": 12, "maxout_size": 4},
    "luong": {"embed_size": 8, "hidden_size": 12, "num_layers": 1},
}


def build(key: str, fields: dict, info: TaskInfo) -> torch.nn.Module:
    torch.manual_seed(0)
    task = {"name": "lm", "path": "unused.txt"} if info.kind == "tokens" else {"name": "synthetic_translation"}
    config = config_from_dict({"task": task, "model": {"name": key.split("/")[0], **fields}})
    return build_model(config.model, info).eval()


def source_batch() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(4, 11, (n,), generator=generator).tolist() for n in (6, 3, 5)]
    targets = [torch.randint(4, V, (n,), generator=generator).tolist() for n in (4, 6, 2)]
    return collate(sources, targets)


@pytest.mark.parametrize("key", LANGUAGE_MODELS)
@torch.no_grad()
def test_language_model_steps_equal_the_parallel_forward(key: str) -> None:
    model = build(key, LANGUAGE_MODELS[key], LM_INFO)
    assert isinstance(model, Decoder)
    tokens = torch.randint(0, V, (3, 10))
    memory = model.encode({"inputs": tokens})
    assert memory == {}
    logits, _, attention = run_steps(model, memory, model.init_state(memory, 3), tokens)
    torch.testing.assert_close(logits, model({"inputs": tokens}), rtol=1e-5, atol=1e-5)
    assert attention is None


@pytest.mark.parametrize("key", TRANSLATORS)
@torch.no_grad()
def test_translator_steps_equal_the_parallel_forward(key: str) -> None:
    model = build(key, TRANSLATORS[key], S2S_INFO)
    assert isinstance(model, Decoder)
    batch = source_batch()
    memory = model.encode(batch)
    logits, _, _ = run_steps(model, memory, model.init_state(memory, 3), batch["tgt_in"])
    torch.testing.assert_close(logits, model(batch), rtol=1e-5, atol=1e-5)  # logits, not log-probabilities


@pytest.mark.parametrize("key", ["rnn", "transformer_lm", "transformer_lm/linear", "wavenet_lm"])
def test_beam_search_drives_a_language_model(key: str) -> None:
    model = build(key, LANGUAGE_MODELS[key], LM_INFO)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(2.0)  # sharper distributions, where greedy and beam search part ways
    prompt = {"prompt": torch.tensor([[BOS, 5], [BOS, 7]])}
    greedy = greedy_search(model, prompt, max_len_offset=8)
    one = beam_search(model, prompt, beam_size=1, length_penalty_alpha=0.0, max_len_offset=8)
    assert [h.tokens for h in one] == [h.tokens for h in greedy]
    assert [h.score for h in one] == pytest.approx([h.score for h in greedy], abs=1e-4)
    wide = beam_search(model, prompt, beam_size=4, length_penalty_alpha=0.0, max_len_offset=8)
    for beam, first in zip(wide, greedy):
        assert 0 <= len(beam.tokens) < 8 and beam.attention is None
        assert beam.score >= first.score - 1e-4
    assert any(beam.score > first.score + 0.1 for beam, first in zip(wide, greedy))  # the beam found better


def test_greedy_search_of_a_language_model_continues_its_prompt() -> None:
    model = build("transformer_lm", LANGUAGE_MODELS["transformer_lm"], LM_INFO)
    prompt = torch.tensor([[BOS, 4, 9]])
    hypothesis = greedy_search(model, {"prompt": prompt}, max_len_offset=5)[0]
    sequence = prompt
    with torch.no_grad():
        for token in hypothesis.tokens:
            assert int(model({"inputs": sequence})[0, -1].argmax()) == token
            sequence = torch.cat([sequence, torch.tensor([[token]])], 1)


@pytest.mark.parametrize("key", ["transformer", "bahdanau"])
def test_sampling_from_an_encoder_decoder(key: str) -> None:
    model = build(key, TRANSLATORS[key], S2S_INFO)
    batch = source_batch()
    greedy = greedy_search(model, batch, max_len_ratio=0.0, max_len_offset=30)
    cold = sample(model, 2, 29, prompt=[BOS], temperature=0.0, banned=(), batch=batch)
    assert len(cold) == 6  # two samples of each of the three sentences, sentence by sentence
    for row, ids in enumerate(cold):
        assert ids == greedy[row // 2].tokens
    # At temperature 1 the first token of sentence 0 follows softmax(step logits).
    alone = {key: value[:1] for key, value in batch.items()}
    with torch.no_grad():
        memory = model.encode(alone)
        logits, _, _ = model.step(memory, model.init_state(memory, 1), torch.tensor([BOS]))
    expected = torch.softmax(logits[0].index_fill(0, torch.tensor([0, BOS, EOS]), float("-inf")), -1)
    drawn = sample(model, 3000, 1, prompt=[BOS], banned=(0, BOS, EOS), batch=alone,
                   generator=torch.Generator().manual_seed(0))
    frequency = torch.bincount(torch.tensor([ids[0] for ids in drawn]), minlength=V).float() / 3000
    assert float((frequency - expected).abs().max()) < 0.04


@dataclass
class Cache:
    k: Tensor
    position: int


def test_select_rows_reorders_every_tensor_of_a_pytree() -> None:
    tree = {"layers": [Cache(torch.arange(3)[:, None].expand(3, 2), 7)], "h": (torch.arange(3.0), None)}
    picked = select_rows(tree, torch.tensor([2, 2, 0]))
    assert picked["layers"][0].k[:, 0].tolist() == [2, 2, 0] and picked["layers"][0].position == 7
    assert picked["h"][0].tolist() == [2.0, 2.0, 0.0] and picked["h"][1] is None
