"""A token vocabulary with the four special symbols every sequence model here uses."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """Token ↔ id; ids 0–3 are <pad> <unk> <bos> <eos>, then tokens by falling frequency (ties by first sight)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sequences: Iterable[Iterable[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Count tokens; keep those seen at least `min_freq` times, at most `max_size` (specials not counted)."""
        counts: Counter[str] = Counter()
        for sequence in sequences:
            counts.update(sequence)
        kept = [token for token, count in counts.most_common() if count >= min_freq]
        return cls(kept[:max_size] if max_size is not None else kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str], bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(token, self.unk_id) for token in tokens]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Ids → tokens, stopping at <eos> and dropping <pad>/<bos> when `strip_specials`."""
        tokens = []
        for index in ids:
            index = int(index)
            if strip_specials and index == self.eos_id:
                break
            if strip_specials and index in (self.pad_id, self.bos_id):
                continue
            tokens.append(self.itos[index] if 0 <= index < len(self.itos) else UNK)
        return tokens

    def state_dict(self) -> dict[str, Any]:
        return {"itos": self.itos}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Vocab":
        return cls(state["itos"][len(SPECIALS):])
