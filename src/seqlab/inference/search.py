"""Greedy and batched beam search for every model of the decoding protocol (`seqlab.inference.decoding`):
translators decode a source batch, language models continue a ``prompt`` (a batch with no source).

Beam search (Sutskever et al. 2014 §3.2; Wu et al. 2016 §7) keeps the `beam_size` best prefixes of
every sentence; a prefix that ends in <eos> is set aside and ranked by s(Y) = log P(Y|X) / lp(Y) with
the length penalty lp(Y) = (5 + |Y|)^α / 6^α. A sentence stops once it holds `beam_size` finished
hypotheses and no live prefix can still beat the worst of them (log-probabilities only fall as a
prefix grows), or at its length limit ⌊ratio · source length⌋ + offset, where <eos> is forced (a
language model has no source: `max_len_offset` tokens at most). With a `patience` factor p (Kasai et al.
2022), a sentence stops instead as soon as round(p · beam_size) hypotheses have finished, as fairseq and
CTranslate2 do (p = 1: the first beam_size); faster, and it may miss a better hypothesis still live.
`beam_search_n_best` returns the `n_best` ≤ `beam_size` best finished hypotheses of every sentence by
s(Y); the first is `beam_search`'s.
"""

from __future__ import annotations

import heapq
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
def greedy_search(
    model: nn.Module, batch: Batch, max_len_ratio: float = 1.5, max_len_offset: int = 5, attention: bool = True,
) -> list[Hypothesis]:
    """The most probable token at every step, for a whole batch; finished sentences leave the batch.
    With `attention=False` the hypotheses carry no attention rows."""
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
            logits, state, step_attention = model.step(memory, state, tokens)
            log_probs = _log_probs(logits)
            chosen = torch.where(t + 1 >= limit[rows], EOS, log_probs.argmax(-1))
            outputs[rows, t] = chosen
            scores[rows] += log_probs.gather(1, chosen[:, None]).squeeze(1)
            lengths[rows] = t + 1
            if attention and step_attention is not None:
                if attentions is None:
                    attentions = torch.zeros(size, steps, step_attention.shape[-1], device=device)
                attentions[rows, t] = step_attention.float()
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
    patience: float | None = None,
) -> list[Hypothesis]:
    """The best hypothesis of each sentence by beam search."""
    found = beam_search_n_best(model, batch, beam_size, length_penalty_alpha, max_len_ratio, max_len_offset,
                               patience=patience)
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
    attention: bool = True,
    patience: float | None = None,
) -> list[list[Hypothesis]]:
    """The `n_best` best finished hypotheses of each sentence, best first by s(Y) (fewer if fewer finished;
    an empty one with score −∞ if none did); all sentences and beams decode as one batch of rows,
    row = sentence · K + beam. With `attention=False` the hypotheses carry no attention rows (faster);
    with `patience` p a sentence stops once round(p · K) (at least `n_best`) hypotheses have finished."""
    K, alpha = beam_size, length_penalty_alpha
    if not 1 <= n_best <= K:
        raise ValueError(f"n_best must be from 1 to beam_size ({K}), got {n_best}")
    if patience is not None and not patience > 0:
        raise ValueError(f"patience must be a positive number (or None for the exact stop), got {patience}")
    enough = None if patience is None else max(n_best, round(patience * K))  # finished hypotheses that end a sentence
    with evaluating(model):
        memory, state, tokens = begin(model, batch)
        size, device = tokens.shape[0], tokens.device
        src_lengths = source_lengths(batch, size)
        limit = max_lengths(src_lengths, max_len_ratio, max_len_offset)
        sentences = torch.arange(size)  # the original sentence of each live group of K rows
        scores = torch.zeros(size, K, device=device)  # log P of each live prefix
        scores[:, 1:] = float("-inf")  # every beam starts as the same prompt: keep one copy
        prefixes = torch.zeros(size, 0, dtype=torch.long, device=device)  # tokens chosen so far, per row
        attentions: Tensor | None = None  # (rows, tokens so far, src_len)
        finished: list[list[Hypothesis]] = [[] for _ in range(size)]
        kept: list[list[float]] = [[] for _ in range(size)]  # min-heap of each sentence's K best s(Y) so far
        width = 1  # rows per sentence in memory and state: one until the first step spreads it over the K beams
        for t in range(int(limit.max())):
            logits, state, step_attention = model.step(memory, state, tokens)
            n = sentences.numel()
            log_probs = _log_probs(logits).view(n, width, -1)
            at_limit = t + 1 >= limit[sentences]
            if bool(at_limit.any()):
                _force_eos(log_probs, at_limit.to(device))  # only <eos> at the length limit
            if attention and step_attention is not None:
                step_attention = step_attention.float()[:, None]
                attentions = step_attention if attentions is None else torch.cat([attentions, step_attention], 1)

            # The 2K best one-token extensions of each sentence's K prefixes: at most K of them end in <eos>.
            count = min(2 * K, K * log_probs.shape[-1])
            top_scores, beams, words = _best_extensions(scores, log_probs.expand(n, K, -1), count)
            # The state row each one extends: before the first spread, its sentence's only row.
            parents = torch.arange(n, device=device)[:, None] * width + (beams if width == K else torch.zeros_like(beams))
            ends = words == EOS
            finishing = ends[:, :K] & torch.isfinite(top_scores[:, :K])
            if bool(finishing.any()):
                groups, ranks = finishing.nonzero(as_tuple=True)
                ending = parents[groups, ranks]
                ids, rows_attention = prefixes[ending].tolist(), None if attentions is None else attentions[ending]
                ending_scores = top_scores[groups, ranks].tolist()
                for index, (sentence, score) in enumerate(zip(sentences[groups].tolist(), ending_scores)):
                    weights = None if rows_attention is None else rows_attention[index, :, : int(src_lengths[sentence])].clone()
                    normalized = score / length_penalty(len(ids[index]) + 1, alpha)
                    finished[sentence].append(Hypothesis(ids[index], score, weights, normalized))
                    _keep_best(kept[sentence], normalized, K)

            # The K best extensions that do not end in <eos> live on; a sentence stops once it is done.
            live = ends.int().argsort(dim=1, stable=True)[:, :K]
            scores = top_scores.gather(1, live)
            rows, tokens = parents.gather(1, live).view(-1), words.gather(1, live).view(-1)
            if width < K:
                memory, width = select_rows(memory, torch.arange(n * K, device=device) // K), K
            going = torch.tensor([
                not _sentence_done(kept[s], best, t + 1, int(limit[s]), K, alpha, len(finished[s]), enough)
                for s, best in zip(sentences.tolist(), scores.max(dim=1).values.tolist())
            ])
            if not bool(going.any()):
                break
            if not bool(going.all()):
                keep = going.repeat_interleave(K).nonzero().squeeze(1).to(device)
                memory = select_rows(memory, keep)
                rows, tokens = rows[keep], tokens[keep]
                sentences, scores = sentences[going], scores[going.to(device)]
            state, prefixes, attentions = select_rows((state, prefixes, attentions), rows)
            prefixes = torch.cat([prefixes, tokens[:, None]], 1)
    ranked = (sorted(found, key=lambda h: h.normalized, reverse=True) for found in finished)  # stable: ties keep order
    return [best[:n_best] or [Hypothesis([], float("-inf"))] for best in ranked]


def _force_eos(log_probs: Tensor, at_limit: Tensor) -> None:
    """In place: every token but <eos> impossible for the sentences (groups of K rows) at their length limit."""
    eos = log_probs[:, :, EOS].clone()
    log_probs.masked_fill_(at_limit[:, None, None], float("-inf"))
    log_probs[:, :, EOS] = eos


def _best_extensions(scores: Tensor, log_probs: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The `count` best one-token extensions of each sentence's K prefixes by log P (scores (n, K) +
    log_probs (n, K, vocab)), best first: their scores, the beam each extends, its token, each (n, count).
    Only each prefix's `count` best tokens can be among its sentence's `count` best, so the sort is over those."""
    n = log_probs.shape[0]
    row_best, row_words = log_probs.topk(min(count, log_probs.shape[2]), dim=2)  # (n, K, c)
    top_scores, top = (scores[:, :, None] + row_best).view(n, -1).topk(count, dim=1)
    return top_scores, top // row_best.shape[2], row_words.reshape(n, -1).gather(1, top)


def _keep_best(best: list[float], normalized: float, K: int) -> None:
    """Add s(Y) to the min-heap `best` of a sentence's K best finished scores (its root: the K-th best)."""
    if len(best) < K:
        heapq.heappush(best, normalized)
    elif normalized > best[0]:
        heapq.heapreplace(best, normalized)


def _sentence_done(
    kept: list[float], best_live: float, length: int, limit: int, K: int, alpha: float, finished: int,
    enough: int | None,
) -> bool:
    """True at the length limit; with a patience stop (`enough` not None), once `finished` hypotheses ≥ `enough`;
    otherwise when no live prefix (the best with log P `best_live`) can still enter the K best finished
    hypotheses (`kept`, a min-heap of their s(Y))."""
    if length >= limit:
        return True
    if enough is not None:
        return finished >= enough
    if best_live == float("-inf"):
        return True
    if len(kept) < K:
        return False
    longest = limit if alpha >= 0 else length + 1
    return best_live / length_penalty(longest, alpha) <= kept[0]


def decode(
    model: nn.Module, batch: Batch, beam_size: int = 1, length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5, max_len_offset: int = 5, attention: bool = True, patience: float | None = None,
) -> list[Hypothesis]:
    """Greedy search for beam size 1, beam search otherwise."""
    return [found[0] for found in decode_n_best(model, batch, beam_size, length_penalty_alpha, max_len_ratio,
                                                max_len_offset, attention=attention, patience=patience)]


def decode_n_best(
    model: nn.Module, batch: Batch, beam_size: int = 1, length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5, max_len_offset: int = 5, n_best: int = 1, attention: bool = True,
    patience: float | None = None,
) -> list[list[Hypothesis]]:
    """`decode`, with the `n_best` best hypotheses of each sentence (best first; greedy search has one);
    `attention=False`: without attention rows; `patience`: beam search's stop (see `beam_search_n_best`)."""
    if beam_size <= 1:
        if n_best != 1:
            raise ValueError(f"n_best must be 1 for greedy search (beam_size 1), got {n_best}")
        return [[hypothesis] for hypothesis in greedy_search(model, batch, max_len_ratio, max_len_offset, attention)]
    return beam_search_n_best(model, batch, beam_size, length_penalty_alpha, max_len_ratio, max_len_offset, n_best,
                              attention, patience)
