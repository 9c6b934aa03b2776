"""Tokenisers (word, character, subword) and the `Codec` that turns text into vocabulary ids and back.

- ``word``: split on whitespace, join with single spaces;
- ``char``: every character is a token (spaces included), joined without separator;
- ``subword``: a sentencepiece model (BPE or unigram; Sennrich et al. 2016, Kudo 2018) trained on the
  training split; its serialized model travels inside the checkpoint (base64), so a checkpoint alone
  can tokenise raw text.

Every tokeniser round-trips: ``detokenize(tokenize(text)) == text`` for whitespace-normalised text.
"""

from __future__ import annotations

import base64
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from seqlab.data.vocab import Vocab
from seqlab.errors import UserError

TokenizerKind = Literal["word", "char", "subword"]
SubwordModel = Literal["bpe", "unigram"]


class Tokenizer(ABC):
    """Text ↔ a list of string tokens."""

    kind: str

    @abstractmethod
    def tokenize(self, text: str) -> list[str]: ...

    @abstractmethod
    def detokenize(self, tokens: list[str]) -> str: ...

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


class WordTokenizer(Tokenizer):
    """Whitespace-separated words."""

    kind = "word"

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)


class CharTokenizer(Tokenizer):
    """Characters; runs of whitespace are normalised to one space."""

    kind = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(" ".join(text.split()))

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens)


class SubwordTokenizer(Tokenizer):
    """A sentencepiece model; tokens are its pieces (a word-initial piece starts with ▁)."""

    kind = "subword"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, model_type: SubwordModel = "bpe") -> "SubwordTokenizer":
        """Train on `sentences` (the training split only); `vocab_size` is an upper bound for small corpora."""
        import sentencepiece as spm

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(sentences)), model_writer=buffer, vocab_size=vocab_size,
                model_type=model_type, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2,
                bos_id=-1, eos_id=-1,
            )
        except RuntimeError as err:
            raise UserError(f"sentencepiece could not train a {model_type} model of {vocab_size} pieces: {err}") from None
        return cls(buffer.getvalue())

    def tokenize(self, text: str) -> list[str]:
        return list(self.processor.encode(text, out_type=str))

    def detokenize(self, tokens: list[str]) -> str:
        return str(self.processor.decode_pieces(tokens))

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokeniser saved by `state_dict` (as stored in a checkpoint's meta.json)."""
    kind = state.get("kind")
    if kind == "word":
        return WordTokenizer()
    if kind == "char":
        return CharTokenizer()
    if kind == "subword":
        return SubwordTokenizer(base64.b64decode(state["model"]))
    raise UserError(f"unknown tokenizer kind {kind!r} in checkpoint; expected word, char or subword.")


def build_tokenizer(
    kind: TokenizerKind, sentences: Iterable[str] = (), vocab_size: int = 8000, model_type: SubwordModel = "bpe"
) -> Tokenizer:
    """A tokeniser of `kind`; a subword model is trained on `sentences`."""
    if kind == "word":
        return WordTokenizer()
    if kind == "char":
        return CharTokenizer()
    if kind == "subword":
        return SubwordTokenizer.train(sentences, vocab_size, model_type)
    raise UserError(f"unknown tokenizer {kind!r}; choose word, char or subword.")


@dataclass
class Codec:
    """One language's text ↔ ids: a tokeniser and the vocabulary built on its tokens (optionally lowercasing)."""

    tokenizer: Tokenizer
    vocab: Vocab
    lowercase: bool = False

    @classmethod
    def build(
        cls, tokenizer: Tokenizer, sentences: Iterable[str], min_freq: int = 1, max_size: int | None = None,
        lowercase: bool = False,
    ) -> "Codec":
        """The vocabulary of `sentences` as `tokenizer` splits them (min frequency, max size)."""
        prepared = (s.lower() if lowercase else s for s in sentences)
        return cls(tokenizer, Vocab.build((tokenizer.tokenize(s) for s in prepared), min_freq, max_size), lowercase)

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text.lower() if self.lowercase else text)

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(self.tokens(text))

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def state_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.state_dict(), "vocab": self.vocab.state_dict(), "lowercase": self.lowercase}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Codec":
        return cls(tokenizer_from_state(state["tokenizer"]), Vocab.from_state(state["vocab"]), bool(state.get("lowercase")))
