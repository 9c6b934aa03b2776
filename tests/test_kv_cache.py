"""Incremental decoding with a key/value cache equals full recomputation, for the language model and the
encoder–decoder, and greedy search through the cache picks what a full recomputation would pick."""

from __future__ import annotations

import pytest
import torch

from seqlab.data.base import TaskInfo
from seqlab.inference.sampling import sample
from seqlab.inference.search import beam_search, greedy_search
from seqlab.models.transformer import TransformerLM, TransformerLMSpec, TransformerSeq2Seq, TransformerSpec


BOS, EOS = 2, 3


def _lm(attention: str, norm_first: bool, positional: str = "sinusoidal") -> TransformerLM:
    torch.manual_seed(0)
    spec = TransformerLMSpec(d_model=16, num_heads=2, d_ff=32, num_layers=2, attention=attention,
                             norm_first=norm_first, positional=positional, max_len=64)
    return TransformerLM(spec, TaskInfo(kind="tokens", output_dim=11, vocab_size=11)).double().eval()


@pytest.mark.parametrize("attention,norm_first,positional", [
    ("softmax", False, "sinusoidal"), ("softmax", True, "learned"), ("linear", False, "sinusoidal"), ("linear", True, "learned"),
])
def test_lm_cache_equals_full_recomputation(attention: str, norm_first: bool, positional: str) -> None:
    model = _lm(attention, norm_first, positional)
    tokens = torch.randint(0, 11, (3, 12))
    full = model({"inputs": tokens})
    state, steps = model.init_state({}, 3), []
    for t in range(12):
        logits, state, _ = model.step({}, state, tokens[:, t])
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-10)
    if attention == "softmax":
        assert state.layers[0].k.shape == (3, 2, 12, 8)  # (batch, heads, tokens so far, d_k): the cache grew
    else:
        assert state.layers[0].W.shape == (3, 2, 8, 8)  # the fast weights did not


def _seq2seq() -> tuple[TransformerSeq2Seq, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    spec = TransformerSpec(d_model=16, num_heads=2, d_ff=32, num_encoder_layers=2, num_decoder_layers=2)
    model = TransformerSeq2Seq(spec, TaskInfo(kind="seq2seq", output_dim=13, vocab_size=11)).double().eval()
    src = torch.randint(4, 11, (3, 7))
    src[0, 4:] = 0
    return model, {"src": src, "src_lengths": torch.tensor([4, 7, 7])}


@torch.no_grad()
def test_seq2seq_cache_equals_full_recomputation() -> None:
    model, batch = _seq2seq()
    tgt = torch.randint(4, 13, (3, 6))
    tgt[:, 0] = BOS
    full = model({**batch, "tgt_in": tgt})
    memory = model.encode(batch)
    state, steps = model.init_state(memory, 3), []
    for t in range(6):
        logits, state, attention = model.step(memory, state, tgt[:, t])
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-10)
    assert attention.shape == (3, 7) and float(attention[0, 4:].max()) == 0.0


def test_greedy_search_through_the_cache_equals_full_recomputation() -> None:
    model, batch = _seq2seq()
    hypotheses = greedy_search(model, batch, max_len_ratio=1.0, max_len_offset=4)
    for row, hyp in enumerate(hypotheses):
        single = {key: value[row : row + 1] for key, value in batch.items()}
        prefix = torch.tensor([[BOS]])
        chosen = []
        for _ in range(len(hyp.tokens) + 1):
            token = int(model({**single, "tgt_in": prefix})[0, -1].argmax())
            chosen.append(token)
            if token == EOS:
                break
            prefix = torch.cat([prefix, torch.tensor([[token]])], 1)
        assert chosen[: len(hyp.tokens)] == hyp.tokens
    beams = beam_search(model, batch, beam_size=1, length_penalty_alpha=0.0, max_len_ratio=1.0, max_len_offset=4)
    assert [h.tokens for h in beams] == [h.tokens for h in hypotheses]


def test_sampling_through_the_cache_equals_full_recomputation_greedy() -> None:
    model = _lm("softmax", True)
    generated = sample(model, 2, 8, prompt=[BOS], temperature=0.0, eos_id=None, banned=())
    sequence = torch.tensor([[BOS]])
    for _ in range(8):
        token = int(model({"inputs": sequence})[0, -1].argmax())
        sequence = torch.cat([sequence, torch.tensor([[token]])], 1)
    assert generated[0] == generated[1] == sequence[0, 1:].tolist()
