"""The fast paths of decoding (issue 14) give what the plain computations give."""

from __future__ import annotations

import heapq
import random

import torch

from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.inference.search import _best_extensions, _keep_best, beam_search_n_best, greedy_search
from seqlab.models.transformer import TransformerSeq2Seq, TransformerSpec


def small_transformer(vocab: int = 37) -> TransformerSeq2Seq:
    torch.manual_seed(0)
    spec = TransformerSpec(d_model=16, num_heads=2, d_ff=32, num_encoder_layers=1, num_decoder_layers=2, dropout=0.0)
    return TransformerSeq2Seq(spec, TaskInfo(kind="seq2seq", output_dim=vocab, vocab_size=vocab)).eval()


def test_best_extensions_equal_the_sort_over_every_beam_and_word() -> None:
    torch.manual_seed(1)
    n, K, vocab = 6, 4, 50
    scores = torch.randn(n, K).cumsum(1).neg()
    scores[0, 1:] = float("-inf")
    log_probs = torch.log_softmax(torch.randn(n, K, vocab), dim=-1)
    expected_scores, top = (scores[:, :, None] + log_probs).view(n, -1).topk(2 * K, dim=1)
    found_scores, beams, words = _best_extensions(scores, log_probs, 2 * K)
    finite = torch.isfinite(expected_scores)
    assert torch.equal(found_scores, expected_scores)
    assert torch.equal(beams[finite], (top // vocab)[finite]) and torch.equal(words[finite], (top % vocab)[finite])


def test_the_heap_root_is_the_kth_best_finished_score() -> None:
    rng = random.Random(0)
    kept: list[float] = []
    seen: list[float] = []
    for _ in range(40):
        score = rng.uniform(-10, 0)
        seen.append(score)
        _keep_best(kept, score, 5)
        assert len(kept) == min(len(seen), 5)
        if len(seen) >= 5:
            assert kept[0] == sorted(seen)[-5]
    assert sorted(kept) == heapq.nlargest(5, seen)[::-1]


def test_decoding_without_attention_rows_finds_the_same_hypotheses() -> None:
    model = small_transformer()
    batch = collate([[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]], [[] for _ in range(3)])
    with_rows = beam_search_n_best(model, batch, beam_size=4, n_best=3)
    without = beam_search_n_best(model, batch, beam_size=4, n_best=3, attention=False)
    for ours, theirs in zip(with_rows, without):
        assert [h.tokens for h in ours] == [h.tokens for h in theirs]
        assert [h.score for h in ours] == [h.score for h in theirs]
        assert all(h.attention is not None for h in ours) and all(h.attention is None for h in theirs)
    greedy = greedy_search(model, batch, attention=False)
    assert [h.tokens for h in greedy] == [h.tokens for h in greedy_search(model, batch)]
    assert all(h.attention is None for h in greedy)


def test_step_logits_through_the_padded_transposed_weight_equal_the_output_layer_and_follow_weight_updates() -> None:
    model = small_transformer(vocab=37)  # 37 outputs: padded to 48
    y = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(model._step_logits(y), model.out(y))
        assert model._padded_out is not None and model._padded_out[2].shape == (16, 48)
        model.out.weight.mul_(2.0)  # an optimiser step changes the weight in place
        assert torch.equal(model._step_logits(y), model.out(y))
    assert model._step_logits(y).requires_grad  # with autograd: the plain layer, gradients flow
