"""Greedy and beam search: a known best sequence on a hand-built decoder, beam 1 = greedy, batching, limits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from seqlab.data.base import TaskInfo
from seqlab.data.batching import collate
from seqlab.data.vocab import Vocab
from seqlab.inference.search import (
    BOS, EOS, beam_search, beam_search_n_best, decode, decode_n_best, greedy_search, length_penalty,
)
from seqlab.models.seq2seq import Bahdanau, BahdanauSpec, Luong, LuongSpec, Sutskever, Seq2SeqSpec

A, B_, C = 4, 5, 6  # the toy decoder's three words

class MarkovDecoder(nn.Module):
    """A hand-built decoder: p(next | previous token) from a fixed table (as logits); attention = one-hot on the step."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 7) -> None:
        super().__init__()
        log_probs = torch.full((vocab, vocab), -1e9)
        for previous, row in table.items():
            for token, p in row.items():
                log_probs[previous, token] = math.log(p)
        self.register_buffer("log_probs", log_probs)
        self.calls = 0

    def encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"src": batch["src"]}

    def init_state(self, memory: dict[str, Tensor], batch_size: int) -> dict[str, Tensor]:
        return {"t": torch.zeros(memory["src"].shape[0], dtype=torch.long)}

    def step(self, memory, state, tokens):
        self.calls += 1
        attention = torch.nn.functional.one_hot(state["t"].clamp(max=memory["src"].shape[1] - 1), memory["src"].shape[1]).float()
        return self.log_probs[tokens], {"t": state["t"] + 1}, attention


# Greedy takes A (0.5) but every continuation of A is poor; B (0.4) then <eos> (0.9) is the best sentence.
TRAP = {
    BOS: {A: 0.5, B_: 0.4, C: 0.1},
    A: {A: 0.34, B_: 0.33, C: 0.33},
    B_: {EOS: 0.9, A: 0.1},
    C: {EOS: 0.5, C: 0.5},
}


def best_by_enumeration(table: dict[int, dict[int, float]], max_tokens: int) -> tuple[list[int], float]:
    best: tuple[list[int], float] = ([], -math.inf)
    for length in range(max_tokens):
        for words in itertools.product((A, B_, C), repeat=length):
            sequence = [BOS, *words, EOS]
            score = sum(math.log(table.get(p, {}).get(n, 1e-300)) for p, n in zip(sequence, sequence[1:]))
            if score > best[1]:
                best = (list(words), score)
    return best


def toy_batch(sizes: list[int]) -> dict[str, Tensor]:
    return collate([[A] * n for n in sizes], [[] for _ in sizes])


def test_beam_search_finds_the_known_best_sequence_that_greedy_misses() -> None:
    decoder = MarkovDecoder(TRAP)
    batch = toy_batch([3])  # 4 source tokens with <eos>: at most ⌊1.5·4⌋ + 5 = 11 target tokens
    best_words, best_score = best_by_enumeration(TRAP, max_tokens=6)
    assert best_words == [B_]
    greedy = greedy_search(decoder, batch)[0]
    assert greedy.tokens[0] == A and greedy.score < best_score
    beam = beam_search(decoder, batch, beam_size=3, length_penalty_alpha=0.0)[0]
    assert beam.tokens == best_words
    assert beam.score == pytest.approx(best_score, abs=1e-5)
    assert beam.attention is not None and beam.attention.shape == (2, 4)  # B, <eos> × source tokens


def test_length_penalty_prefers_longer_hypotheses_as_alpha_grows() -> None:
    table = {BOS: {EOS: 0.5, C: 0.5}, C: {EOS: 0.7, C: 0.3}}
    batch = toy_batch([3])
    short = beam_search(MarkovDecoder(table), batch, beam_size=2, length_penalty_alpha=0.0)[0]
    assert short.tokens == []
    long = beam_search(MarkovDecoder(table), batch, beam_size=2, length_penalty_alpha=4.0)[0]
    assert len(long.tokens) >= 1
    assert long.normalized == pytest.approx(long.score / length_penalty(len(long.tokens) + 1, 4.0))


def test_length_limit_forces_eos() -> None:
    loop = {BOS: {C: 1.0}, C: {C: 0.99, EOS: 0.01}}
    batch = toy_batch([1])  # 2 source tokens → at most ⌊0.5·2⌋ + 2 = 3 target tokens, <eos> included
    assert greedy_search(MarkovDecoder(loop), batch, 0.5, 2)[0].tokens == [C, C]
    # With α = 0 the shorter [C] wins (log 0.01 > log 0.99 + log 0.01); a strong length penalty reaches the limit.
    assert beam_search(MarkovDecoder(loop), batch, 3, 0.0, 0.5, 2)[0].tokens == [C]
    assert beam_search(MarkovDecoder(loop), batch, 3, 4.0, 0.5, 2)[0].tokens == [C, C]


def random_models() -> list[nn.Module]:
    torch.manual_seed(1)
    info = TaskInfo(kind="seq2seq", output_dim=9, vocab_size=11)
    small = {"embed_size": 8, "hidden_size": 12}
    return [
        Sutskever(Seq2SeqSpec(num_layers=2, **small), info),
        Bahdanau(BahdanauSpec(maxout_size=6, **small), info),
        Luong(LuongSpec(num_layers=1, score="general", **small), info),
    ]


def random_batch() -> dict[str, Tensor]:
    torch.manual_seed(2)
    sources = [torch.randint(4, 11, (n,)).tolist() for n in (5, 2, 7, 3)]
    return collate(sources, [[] for _ in sources])


def test_beam_of_one_without_length_penalty_equals_greedy() -> None:
    batch = random_batch()
    for model in random_models():
        greedy = greedy_search(model, batch)
        beam = beam_search(model, batch, beam_size=1, length_penalty_alpha=0.0)
        for g, b in zip(greedy, beam):
            assert b.tokens == g.tokens
            assert b.score == pytest.approx(g.score, abs=1e-4)
            if g.attention is not None:
                torch.testing.assert_close(b.attention, g.attention)


def test_batched_beam_search_equals_one_sentence_at_a_time() -> None:
    """Reordering beams and dropping finished sentences must not mix up sentences."""
    batch = random_batch()
    for model in random_models():
        together = beam_search(model, batch, beam_size=3, length_penalty_alpha=0.6)
        for row, hypothesis in enumerate(together):
            length = int(batch["src_lengths"][row])
            alone_batch = {"src": batch["src"][row : row + 1, :length], "src_lengths": batch["src_lengths"][row : row + 1]}
            alone = beam_search(model, alone_batch, beam_size=3, length_penalty_alpha=0.6)[0]
            assert alone.tokens == hypothesis.tokens
            assert alone.score == pytest.approx(hypothesis.score, abs=1e-4)


def test_attention_rows_match_tokens_and_sources() -> None:
    batch = random_batch()
    model = random_models()[1]
    for search in (greedy_search(model, batch), beam_search(model, batch, beam_size=2)):
        for row, hypothesis in enumerate(search):
            assert hypothesis.attention is not None
            assert hypothesis.attention.shape == (len(hypothesis.tokens) + 1, int(batch["src_lengths"][row]))
            torch.testing.assert_close(hypothesis.attention.sum(-1), torch.ones(len(hypothesis.tokens) + 1))


def test_additive_keys_are_projected_once_per_sentence() -> None:
    """Bahdanau's U_a h_j is computed once per source sentence, not at every decoder step."""
    model = random_models()[1]
    calls = []
    handle = model.attention.U_a.register_forward_hook(lambda *_: calls.append(1))
    hypotheses = greedy_search(model, random_batch())
    handle.remove()
    assert len(calls) == 1 and max(len(h.tokens) for h in hypotheses) > 1
    assert Vocab.pad_id == 0


def ranked_by_enumeration(table: dict[int, dict[int, float]], max_tokens: int) -> list[tuple[list[int], float]]:
    """Every sentence of fewer than `max_tokens` words with its log P, most probable first."""
    found = []
    for length in range(max_tokens):
        for words in itertools.product((A, B_, C), repeat=length):
            sequence = [BOS, *words, EOS]
            found.append((list(words), sum(math.log(table.get(p, {}).get(n, 1e-300)) for p, n in zip(sequence, sequence[1:]))))
    return sorted(found, key=lambda item: -item[1])


def test_n_best_returns_the_known_best_sentences_in_order() -> None:
    batch = toy_batch([3])
    expected = ranked_by_enumeration(TRAP, max_tokens=6)[:2]  # [B] (0.36), then [A, B] (0.5 · 0.33 · 0.9)
    found = beam_search_n_best(MarkovDecoder(TRAP), batch, beam_size=3, length_penalty_alpha=0.0, n_best=2)[0]
    assert [h.tokens for h in found] == [words for words, _ in expected] == [[B_], [A, B_]]
    assert [h.score for h in found] == pytest.approx([score for _, score in expected], abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_n_best_starts_with_beam_search_and_is_distinct_and_ranked(alpha: float) -> None:
    batch = random_batch()
    for model in random_models():
        best = beam_search(model, batch, beam_size=4, length_penalty_alpha=alpha)
        found = beam_search_n_best(model, batch, beam_size=4, length_penalty_alpha=alpha, n_best=4)
        tokens = [[h.tokens for h in candidates] for candidates in found]
        assert [[h.tokens for h in c] for c in decode_n_best(model, batch, 4, alpha, n_best=4)] == tokens
        for one, candidates in zip(best, found):
            assert 1 < len(candidates) <= 4
            assert candidates[0].tokens == one.tokens and candidates[0].score == pytest.approx(one.score, abs=1e-5)
            assert len({tuple(h.tokens) for h in candidates}) == len(candidates)
            normalized = [h.normalized for h in candidates]
            assert normalized == sorted(normalized, reverse=True)
            for h in candidates:
                assert h.normalized == pytest.approx(h.score / length_penalty(len(h.tokens) + 1, alpha))


def test_n_best_beyond_the_beam_is_refused() -> None:
    batch, model = random_batch(), random_models()[0]
    with pytest.raises(ValueError, match=r"n_best must be from 1 to beam_size \(3\), got 4"):
        beam_search_n_best(model, batch, beam_size=3, n_best=4)
    with pytest.raises(ValueError, match="n_best"):
        beam_search_n_best(model, batch, beam_size=3, n_best=0)
    with pytest.raises(ValueError, match="greedy"):
        decode_n_best(model, batch, beam_size=1, n_best=2)
    greedy = decode_n_best(model, batch, beam_size=1)
    assert [[h.tokens for h in c] for c in greedy] == [[h.tokens] for h in decode(model, batch, beam_size=1)]


# <eos> at once (0.3), then A <eos> (0.7 · 0.35): two short sentences finish first, and A B <eos> (0.455) last.
LATE_BEST = {BOS: {EOS: 0.3, A: 0.7}, A: {EOS: 0.35, B_: 0.65}, B_: {EOS: 1.0}}


def test_patience_stops_at_the_first_finished_hypotheses_and_the_exact_stop_waits_for_the_best() -> None:
    batch = toy_batch([3])
    exact_decoder, patient_decoder, eager_decoder = MarkovDecoder(LATE_BEST), MarkovDecoder(LATE_BEST), MarkovDecoder(LATE_BEST)
    exact = beam_search(exact_decoder, batch, beam_size=2, length_penalty_alpha=0.0)[0]
    eager = beam_search(eager_decoder, batch, beam_size=2, length_penalty_alpha=0.0, patience=1.0)[0]
    patient = beam_search(patient_decoder, batch, beam_size=2, length_penalty_alpha=0.0, patience=2.0)[0]
    assert exact.tokens == patient.tokens == [A, B_] and exact.score == pytest.approx(math.log(0.455), abs=1e-5)
    assert eager.tokens == [] and eager.score == pytest.approx(math.log(0.3), abs=1e-5)
    assert eager_decoder.calls == 2 < exact_decoder.calls == 3


def test_patience_must_be_positive() -> None:
    with pytest.raises(ValueError, match="patience"):
        beam_search(MarkovDecoder(LATE_BEST), toy_batch([3]), beam_size=2, patience=0.0)
