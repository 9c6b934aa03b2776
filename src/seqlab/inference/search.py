"""Greedy and batched beam search for every encoder–decoder that implements `IncrementalDecoder`.

A model decodes one target token at a time through three methods:

    memory = model.encode(batch)                        # what the encoder computed, once per sentence
    state  = model.init_state(memory)                   # the decoder's starting state (a KV cache is state)
    output, state, attention = model.step(memory, state, tokens)

Every tensor in `memory` and `state` is batch-first (dim 0 = batch), so search reorders beams and drops
finished sentences with one `index_select(0, rows)` per tensor, whatever the model keeps there.

Beam search (Sutskever et al. 2014 §3.2; Wu et al. 2016 §7) keeps the `beam_size` best prefixes of
every sentence; a prefix that ends in <eos> is set aside and ranked by s(Y) = log P(Y|X) / lp(Y) with
the length penalty lp(Y) = (5 + |Y|)^α / 6^α. A sentence stops once it holds `beam_size` finished
hypotheses and no live prefix can still beat the worst of them (log-probabilities only fall as a
prefix grows), or at its length limit ⌊ratio · source length⌋ + offset, where <eos> is forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from seqlab.data.base import Batch
from seqlab.data.vocab import Vocab

BOS, EOS = Vocab.bos_id, Vocab.eos_id


class IncrementalDecoder(Protocol):
    """An encoder–decoder that search can drive token by token; every tensor batch-first."""

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """Memory of the source side (encoder states, precomputed keys, masks)."""
        ...

    def init_state(self, memory: dict[str, Tensor]) -> dict[str, Tensor]:
        """The decoder state before the first target token."""
        ...

    def step(self, memory: dict[str, Tensor], state: dict[str, Tensor], tokens: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """Feed the previous tokens (batch,) (<bos> first); return log-probabilities or logits (batch, vocab),
        the new state, and the attention over the source (batch, src) or None."""
        ...


@dataclass
class Hypothesis:
    """One decoded sentence: target ids (no <bos>/<eos>), log P(Y|X) including <eos>, and attention rows."""

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


def _select(tensors: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    return {key: value.index_select(0, rows) for key, value in tensors.items()}


def _log_probs(output: Tensor) -> Tensor:
    return torch.log_softmax(output.float(), dim=-1)


def _crop(attention: Tensor | None, src_length: int) -> Tensor | None:
    return None if attention is None else attention[:, :src_length].clone()


@torch.no_grad()
def greedy_search(model: nn.Module, batch: Batch, max_len_ratio: float = 1.5, max_len_offset: int = 5) -> list[Hypothesis]:
    """The most probable token at every step, for a whole batch; finished sentences leave the batch."""
    was_training = model.training
    model.eval()
    src_lengths = batch["src_lengths"].cpu()
    limit = max_lengths(src_lengths, max_len_ratio, max_len_offset)
    memory = model.encode(batch)
    state = model.init_state(memory)
    size, steps = src_lengths.shape[0], int(limit.max())
    device = next(iter(memory.values())).device
    tokens = torch.full((size,), BOS, dtype=torch.long, device=device)
    rows = torch.arange(size, device=device)  # original sentence of each live row
    limit = limit.to(device)
    outputs = torch.full((size, steps), EOS, dtype=torch.long, device=device)
    scores = torch.zeros(size, device=device)
    lengths = torch.zeros(size, dtype=torch.long, device=device)
    attentions: Tensor | None = None
    for t in range(steps):
        output, state, attention = model.step(memory, state, tokens)
        log_probs = _log_probs(output)
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
            memory, state = _select(memory, keep), _select(state, keep)
            rows, chosen = rows[keep], chosen[keep]
        tokens = chosen
    model.train(was_training)
    outputs, scores, lengths = outputs.cpu(), scores.cpu(), lengths.cpu()
    hypotheses = []
    for sentence in range(size):
        n = int(lengths[sentence])
        rows_attention = None if attentions is None else attentions[sentence, :n, : int(src_lengths[sentence])].cpu()
        score = float(scores[sentence])
        hypotheses.append(Hypothesis(outputs[sentence, : n - 1].tolist(), score, rows_attention, score))
    return hypotheses


@torch.no_grad()
def beam_search(
    model: nn.Module,
    batch: Batch,
    beam_size: int = 5,
    length_penalty_alpha: float = 0.6,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 5,
) -> list[Hypothesis]:
    """The best hypothesis of each sentence by beam search; all sentences and beams decode as one batch."""
    was_training = model.training
    model.eval()
    K = beam_size
    src_lengths = batch["src_lengths"].cpu()
    limit = max_lengths(src_lengths, max_len_ratio, max_len_offset)
    memory = model.encode(batch)
    state = model.init_state(memory)
    size = src_lengths.shape[0]
    device = next(iter(memory.values())).device
    expand = torch.arange(size, device=device).repeat_interleave(K)
    memory, state = _select(memory, expand), _select(state, expand)
    sentences = torch.arange(size)  # original sentence of each live group of K rows
    tokens = torch.full((size * K,), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(size, K, device=device)
    scores[:, 1:] = float("-inf")  # every beam starts as the same <bos>: keep one copy
    history = torch.zeros(size * K, 0, dtype=torch.long, device=device)
    history_attention: Tensor | None = None
    finished: list[list[Hypothesis]] = [[] for _ in range(size)]
    t = 0
    while sentences.numel():
        n = sentences.numel()
        output, state, attention = model.step(memory, state, tokens)
        log_probs = _log_probs(output)  # (n·K, V)
        vocab = log_probs.shape[-1]
        at_limit = (t + 1 >= limit[sentences]).to(device)
        if bool(at_limit.any()):
            forced = at_limit.repeat_interleave(K)[:, None] & (torch.arange(vocab, device=device) != EOS)[None, :]
            log_probs = log_probs.masked_fill(forced, float("-inf"))
        candidates = (scores.reshape(-1, 1) + log_probs).reshape(n, K * vocab)
        top_scores, top_index = candidates.topk(min(2 * K, K * vocab), dim=1)  # (n, 2K)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == EOS
        parents = torch.arange(n, device=device)[:, None] * K + top_beam  # rows the candidates extend

        step_attention = None if attention is None else attention.float()
        eos_rank = (is_eos & torch.isfinite(top_scores)).nonzero().tolist()
        for group, rank in eos_rank:
            if rank >= K:
                continue
            parent = int(parents[group, rank])
            sentence = int(sentences[group])
            ids = history[parent].tolist()
            rows = None
            if step_attention is not None:
                last = step_attention[parent][None]
                rows = last if history_attention is None else torch.cat([history_attention[parent], last])
            score = float(top_scores[group, rank])
            normalized = score / length_penalty(len(ids) + 1, length_penalty_alpha)
            finished[sentence].append(Hypothesis(ids, score, _crop(rows, int(src_lengths[sentence])), normalized))

        order = (is_eos.long() * top_scores.shape[1] + torch.arange(top_scores.shape[1], device=device)).argsort(dim=1)
        alive = order[:, :K]  # the K best candidates that do not end in <eos>
        scores = top_scores.gather(1, alive)
        new_parents = parents.gather(1, alive).reshape(-1)
        new_tokens = top_token.gather(1, alive).reshape(-1)

        done = []
        for group in range(n):
            sentence = int(sentences[group])
            done.append(_sentence_done(finished[sentence], scores[group], t + 1, int(limit[sentence]), K, length_penalty_alpha))
        keep_groups = torch.tensor([not d for d in done], dtype=torch.bool)
        keep_rows = keep_groups.repeat_interleave(K).to(device)
        rows = new_parents[keep_rows]
        history = torch.cat([history.index_select(0, rows), new_tokens[keep_rows][:, None]], dim=1)
        if step_attention is not None:
            last = step_attention.index_select(0, rows)[:, None]
            history_attention = last if history_attention is None else torch.cat([history_attention.index_select(0, rows), last], dim=1)
        state = _select(state, rows)
        if not bool(keep_groups.all()):
            memory = _select(memory, torch.arange(n * K, device=device)[keep_rows])
        sentences = sentences[keep_groups]
        scores = scores[keep_groups.to(device)]
        tokens = new_tokens[keep_rows]
        t += 1
    model.train(was_training)
    return [max(found, key=lambda h: h.normalized) if found else Hypothesis([], float("-inf")) for found in finished]


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
