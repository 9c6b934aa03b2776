"""Greedy and batched beam search for every model of the decoding protocol (`seqlab.inference.decoding`):
translators decode a source batch, language models continue a ``prompt`` (a batch with no source).

Beam search (Sutskever et al. 2014 §3.2; Wu et al. 2016 §7) keeps the `beam_size` best prefixes of
every sentence; a prefix that ends in <eos> is set aside and ranked by s(Y) = log P(Y|X) / lp(Y) with
the length penalty lp(Y) = (5 + |Y|)^α / 6^α. A sentence stops once it holds `beam_size` finished
hypotheses and no live prefix can still beat the worst of them (log-probabilities only fall as a
prefix grows), or at its length limit ⌊ratio · source length⌋ + offset, where <eos> is forced (a
language model has no source: `max_len_offset` tokens at most). `beam_search_n_best` returns the
`n_best` ≤ `beam_size` best finished hypotheses of every sentence by s(Y); the first is `beam_search`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.data.base import Batch
from seqlab.inference.decoding import BOS, EOS, begin, evaluating, select_rows, source_lengths

__all__ = ["BOS", "EOS", "Hypothesis", "beam_search", "beam_search_n_best", "decode", "decode_n_best", "greedy_search",
           "length_penalty", "max_lengths"]


@dataclass
class Hypothesis:
    """One decoded sentence: target ids (no prompt/<eos>), log P(Y|X) including <eos>, and attention rows."""

    tokens: list[int]
    score: float
    attention: Tensor | None = None  # (generated tokens incl. <eos>, source length)
    normalized: float = 0.0  # the score beam search ranked by: log P / lp(Y)


def length_penalty(length: int, alpha: float) -> float:
    """Wu et al. 2016, eq. 14: lp(Y) = (5 + |Y|)^α / (5 + 1)^α."""
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lengths: Tensor, ratio: float, offset: int) -> Tensor:
    """The most target tokens (with <eos>) each sentence may get: ⌊ratio · source length⌋ + offset."""
    return (src_lengths.float() * ratio).floor().long() + offset


def _log_probs(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def greedy_search(model: nn.Module, batch: Batch, max_len_ratio: float = 1.5, max_len_offset: int = 5) -> list[Hypothesis]:
    """The most probable token at every step, for a whole batch; finished sentences leave the batch."""
    with evaluating(model):
        memory, state, tokens = begin(model, batch)
        size, device = tokens.shape[0], tokens.device
        src_lengths = source_lengths(batch, size)
        limit = max_lengths(src_lengths, max_len_ratio, max_len_offset).to(device)
        steps = int(limit.max())
        rows = torch.arange(size, device=device)  # original sentence of each live row
        outputs = torch.full((size, steps), EOS, dtype=torch.long, device=device)
        scores = torch.zeros(size, device=device)
        lengths = torch.zeros(size, dtype=torch.long, device=device)
        attentions: Tensor | None = None
        for t in range(steps):
            logits, state, attention = model.step(memory, state, tokens)
            log_probs = _log_probs(logits)
            chosen = torch.where(t + 1 >= limit[rows], EOS, log_probs.argmax(-1))
            outputs[rows, t] = chosen
            scores[rows] += log_probs.gather(1, chosen[:, None]).squeeze(1)
            lengths[rows] = t + 1
            if attention is not None:
                if attentions is None:
                    attentions = torch.zeros(size, steps, attention.shape[-1], device=device)
                attentions[rows, t] = attention.float()
            live = chosen != EOS
            if not bool(live.any()):
                break
            if not bool(live.all()):
                keep = live.nonzero().squeeze(1)
                memory, state, rows, chosen = select_rows((memory, state, rows, chosen), keep)
            tokens = chosen
    outputs, scores, lengths = outputs.cpu(), scores.cpu(), lengths.cpu()
    hypotheses = []
    for sentence in range(size):
        n = int(lengths[sentence])
        rows_attention = None if attentions is None else attentions[sentence, :n, : int(src_lengths[sentence])].cpu()
        score = float(scores[sentence])
        hypotheses.append(Hypothesis(outputs[sentence, : n - 1].tolist(), score, rows_attention, score))
    return hypotheses


def beam_search(
    model: nn.Module,
    batch: Batch,
    beam_size: int = 5,
    length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 5,
) -> list[Hypothesis]:
    """The best hypothesis of each sentence by beam search."""
    found = beam_search_n_best(model, batch, beam_size, length_penalty_alpha, max_len_ratio, max_len_offset)
    return [candidates[0] for candidates in found]


@torch.no_grad()
def beam_search_n_best(
    model: nn.Module,
    batch: Batch,
    beam_size: int = 5,
    length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 5,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """The `n_best` best finished hypotheses of each sentence, best first by s(Y) (fewer if fewer finished;
    an empty one with score −∞ if none did); all sentences and beams decode as one batch of rows,
    row = sentence · K + beam."""
    K, alpha = beam_size, length_penalty_alpha
    if not 1 <= n_best <= K:
        raise ValueError(f"n_best must be from 1 to beam_size ({K}), got {n_best}")
    with evaluating(model):
        memory, state, tokens = begin(model, batch)
        size, device = tokens.shape[0], tokens.device
        src_lengths = source_lengths(batch, size)
        limit = max_lengths(src_lengths, max_len_ratio, max_len_offset)
        memory, state, tokens = select_rows((memory, state, tokens), torch.arange(size).repeat_interleave(K))
        sentences = torch.arange(size)  # the original sentence of each live group of K rows
        scores = torch.zeros(size, K, device=device)  # log P of each live prefix
        scores[:, 1:] = float("-inf")  # every beam starts as the same prompt: keep one copy
        prefixes = torch.zeros(size * K, 0, dtype=torch.long, device=device)  # tokens chosen so far, per row
        attentions: Tensor | None = None  # (rows, tokens so far, src_len)
        finished: list[list[Hypothesis]] = [[] for _ in range(size)]
        for t in range(int(limit.max())):
            logits, state, attention = model.step(memory, state, tokens)
            n = sentences.numel()
            log_probs = _log_probs(logits).view(n, K, -1)
            vocab = log_probs.shape[-1]
            at_limit = (t + 1 >= limit[sentences]).to(device)
            forced = at_limit[:, None, None] & (torch.arange(vocab, device=device) != EOS)
            log_probs = log_probs.masked_fill(forced, float("-inf"))  # only <eos> at the length limit
            if attention is not None:
                step_attention = attention.float()[:, None]
                attentions = step_attention if attentions is None else torch.cat([attentions, step_attention], 1)

            # The 2K best one-token extensions of each sentence's K prefixes: at most K of them end in <eos>.
            top_scores, top = (scores[:, :, None] + log_probs).view(n, K * vocab).topk(min(2 * K, K * vocab), dim=1)
            parents = torch.arange(n, device=device)[:, None] * K + top // vocab  # the row each one extends
            words = top % vocab
            ends = words == EOS
            for group, rank in (ends[:, :K] & torch.isfinite(top_scores[:, :K])).nonzero().tolist():
                row, sentence = int(parents[group, rank]), int(sentences[group])
                ids, score = prefixes[row].tolist(), float(top_scores[group, rank])
                rows_attention = None if attentions is None else attentions[row, :, : int(src_lengths[sentence])].clone()
                finished[sentence].append(Hypothesis(ids, score, rows_attention, score / length_penalty(len(ids) + 1, alpha)))

            # The K best extensions that do not end in <eos> live on.
            live = ends.int().argsort(dim=1, stable=True)[:, :K]
            scores = top_scores.gather(1, live)
            rows, tokens = parents.gather(1, live).view(-1), words.gather(1, live).view(-1)
            state, prefixes, attentions = select_rows((state, prefixes, attentions), rows)
            prefixes = torch.cat([prefixes, tokens[:, None]], 1)

            going = torch.tensor([
                not _sentence_done(finished[int(s)], scores[group], t + 1, int(limit[s]), K, alpha)
                for group, s in enumerate(sentences)
            ])
            if not bool(going.any()):
                break
            if not bool(going.all()):
                keep = going.repeat_interleave(K).nonzero().squeeze(1)
                memory, state, tokens, prefixes, attentions = select_rows((memory, state, tokens, prefixes, attentions), keep)
                sentences, scores = sentences[going], scores[going.to(device)]
    ranked = (sorted(found, key=lambda h: h.normalized, reverse=True) for found in finished)  # stable: ties keep order
    return [best[:n_best] or [Hypothesis([], float("-inf"))] for best in ranked]


def _sentence_done(found: list[Hypothesis], live_scores: Tensor, length: int, limit: int, K: int, alpha: float) -> bool:
    """True when no live prefix can still enter the K best finished hypotheses (or the length limit is reached)."""
    if length >= limit:
        return True
    best_live = float(live_scores.max())
    if best_live == float("-inf"):
        return True
    if len(found) < K:
        return False
    worst_kept = sorted(h.normalized for h in found)[-K]
    longest = limit if alpha >= 0 else length + 1
    return best_live / length_penalty(longest, alpha) <= worst_kept


def decode(
    model: nn.Module, batch: Batch, beam_size: int = 1, length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5, max_len_offset: int = 5,
) -> list[Hypothesis]:
    """Greedy search for beam size 1, beam search otherwise."""
    if beam_size <= 1:
        return greedy_search(model, batch, max_len_ratio, max_len_offset)
    return beam_search(model, batch, beam_size, length_penalty_alpha, max_len_ratio, max_len_offset)


def decode_n_best(
    model: nn.Module, batch: Batch, beam_size: int = 1, length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5, max_len_offset: int = 5, n_best: int = 1,
) -> list[list[Hypothesis]]:
    """`decode`, with the `n_best` best hypotheses of each sentence (best first; greedy search has one)."""
    if beam_size <= 1:
        if n_best != 1:
            raise ValueError(f"n_best must be 1 for greedy search (beam_size 1), got {n_best}")
        return [[hypothesis] for hypothesis in greedy_search(model, batch, max_len_ratio, max_len_offset)]
    return beam_search_n_best(model, batch, beam_size, length_penalty_alpha, max_len_ratio, max_len_offset, n_best)
