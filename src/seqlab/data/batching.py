"""Sequence-to-sequence batches: padding (collate) and batching by token count with length buckets.

Examples whose longer side has a similar length share a bucket (width `bucket_width` tokens); a bucket's
batches hold `batch_tokens // longest` sentences, so every batch carries at most `batch_tokens` padded
tokens per side and little padding. The training batch of optimiser step `step` is a pure function of
(seed, step): epoch e = step // batches_per_epoch shuffles each bucket's members and the order of all
batches with a generator seeded by (seed, e), and each bucket yields the same number of batches in
every epoch. So a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from seqlab.data.base import IGNORE, Batch, step_generator
from seqlab.data.vocab import Vocab


def collate(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], index: Sequence[int] | None = None) -> Batch:
    """Pad a list of (source ids, target ids) pairs into a seq2seq batch (see seqlab.data.base).

    src = ids + <eos>, padded with <pad> = 0; tgt_in = <bos> + ids, padded with <pad>;
    targets = ids + <eos>, padded with IGNORE; `index` (the examples' positions in their split) is kept.
    """
    src_len = max(len(s) + 1 for s in sources)
    tgt_len = max(len(t) + 1 for t in targets)
    pad, bos, eos = Vocab.pad_id, Vocab.bos_id, Vocab.eos_id
    src = torch.tensor([[*s, eos] + [pad] * (src_len - len(s) - 1) for s in sources], dtype=torch.long)
    tgt_in = torch.tensor([[bos, *t] + [pad] * (tgt_len - len(t) - 1) for t in targets], dtype=torch.long)
    gold = torch.tensor([[*t, eos] + [IGNORE] * (tgt_len - len(t) - 1) for t in targets], dtype=torch.long)
    batch = {
        "src": src,
        "src_lengths": torch.tensor([len(s) + 1 for s in sources], dtype=torch.long),
        "tgt_in": tgt_in,
        "targets": gold,
    }
    if index is not None:
        batch["index"] = torch.tensor(list(index), dtype=torch.long)
    return batch


class LengthBucketBatcher:
    """Training batches of similar-length examples, by token count or by sentence count."""

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        seed: int,
        batch_tokens: int | None = None,
        batch_size: int = 32,
        bucket_width: int = 2,
    ) -> None:
        if not src_lengths:
            raise ValueError("cannot batch an empty corpus")
        self.seed = seed
        longest = [max(s, t) + 1 for s, t in zip(src_lengths, tgt_lengths)]  # + <eos> / <bos>
        buckets: dict[int, list[int]] = {}
        for example, length in enumerate(longest):
            buckets.setdefault((length - 1) // bucket_width, []).append(example)
        self.buckets: list[tuple[int, list[int]]] = []  # (sentences per batch, members)
        for key in sorted(buckets):
            upper = (key + 1) * bucket_width
            per_batch = max(1, batch_tokens // upper) if batch_tokens is not None else batch_size
            self.buckets.append((per_batch, buckets[key]))
        self.batches_per_epoch = sum(math.ceil(len(members) / per) for per, members in self.buckets)
        self._cached: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of `epoch` (lists of example indices), in the order they are trained on."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rng = step_generator(self.seed, "epoch", epoch)
        batches = []
        for per_batch, members in self.buckets:
            shuffled = [members[i] for i in torch.randperm(len(members), generator=rng).tolist()]
            batches.extend(shuffled[start : start + per_batch] for start in range(0, len(shuffled), per_batch))
        order = torch.randperm(len(batches), generator=rng).tolist()
        ordered = [batches[i] for i in order]
        self._cached = (epoch, ordered)
        return ordered

    def batch(self, step: int) -> list[int]:
        """The example indices of training step `step`."""
        epoch, position = divmod(step, self.batches_per_epoch)
        return self.epoch_batches(epoch)[position]


def eval_batches(src_lengths: Sequence[int], tgt_lengths: Sequence[int], batch_size: int, batch_tokens: int | None = None) -> list[list[int]]:
    """Fixed evaluation batches: examples sorted by length (then by position), cut by sentence or token count."""
    order = sorted(range(len(src_lengths)), key=lambda i: (max(src_lengths[i], tgt_lengths[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for example in order:
        longest = max(src_lengths[example], tgt_lengths[example]) + 1
        full = len(current) >= batch_size if batch_tokens is None else (len(current) + 1) * longest > batch_tokens
        if current and full:
            batches.append(current)
            current = []
        current.append(example)
    if current:
        batches.append(current)
    return batches
