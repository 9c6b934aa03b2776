"""Tokenisers round-trip text, rebuild from their saved state, and feed a vocabulary with min frequency / max size."""

from __future__ import annotations

import json

import pytest

from seqlab.data.tokenizers import (
    CharTokenizer, Codec, SubwordTokenizer, WordTokenizer, build_tokenizer, tokenizer_from_state,
)
from seqlab.data.vocab import SPECIALS, Vocab
from seqlab.errors import UserError

CORPUS = [
    "ein mann fährt mit dem fahrrad durch die stadt .",
    "zwei hunde spielen im schnee .",
    "eine frau liest ein buch im park .",
    "ein kind spielt mit einem roten ball .",
    "männer arbeiten auf einer baustelle .",
] * 20


@pytest.fixture(scope="module")
def subword() -> SubwordTokenizer:
    return SubwordTokenizer.train(CORPUS, vocab_size=60, model_type="bpe")


def test_word_and_char_round_trip() -> None:
    text = "zwei  hunde spielen\tim schnee ."
    normalised = " ".join(text.split())
    for tokenizer in (WordTokenizer(), CharTokenizer()):
        assert tokenizer.detokenize(tokenizer.tokenize(text)) == normalised
    assert CharTokenizer().tokenize("ab c") == ["a", "b", " ", "c"]
    assert WordTokenizer().tokenize("") == [] and CharTokenizer().tokenize("   ") == []


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_subword_round_trips_and_splits_unseen_words(model_type: str) -> None:
    tokenizer = SubwordTokenizer.train(CORPUS, vocab_size=60, model_type=model_type)
    for text in ("ein mann liest im park .", "fahrradstadt schneehunde"):
        pieces = tokenizer.tokenize(text)
        assert tokenizer.detokenize(pieces) == text
    assert len(tokenizer.tokenize("schneehunde")) > 1  # an unseen compound is split into pieces


def test_subword_state_survives_json(subword: SubwordTokenizer) -> None:
    state = json.loads(json.dumps(subword.state_dict()))
    rebuilt = tokenizer_from_state(state)
    text = "eine frau fährt durch den schnee ."
    assert rebuilt.tokenize(text) == subword.tokenize(text)
    assert isinstance(tokenizer_from_state({"kind": "word"}), WordTokenizer)
    with pytest.raises(UserError, match="unknown tokenizer"):
        tokenizer_from_state({"kind": "bytes"})


def test_codec_vocabulary_min_frequency_and_max_size() -> None:
    codec = Codec.build(WordTokenizer(), ["a a a b b c", "a b d"], min_freq=2)
    assert codec.vocab.itos[: len(SPECIALS)] == list(SPECIALS)
    assert codec.vocab.itos[len(SPECIALS):] == ["a", "b"]
    assert codec.encode("a c b") == [4, Vocab.unk_id, 5]
    assert codec.decode([4, 5, Vocab.eos_id, 4]) == "a b"
    capped = Codec.build(WordTokenizer(), ["a a a b b c"], max_size=1)
    assert len(capped.vocab) == len(SPECIALS) + 1


def test_codec_round_trip_through_state_with_lowercasing(subword: SubwordTokenizer) -> None:
    codec = Codec.build(subword, CORPUS, lowercase=True)
    rebuilt = Codec.from_state(json.loads(json.dumps(codec.state_dict())))
    text = "Ein Kind liest im Park ."
    assert rebuilt.encode(text) == codec.encode(text)
    assert rebuilt.decode(rebuilt.encode(text)) == text.lower()


def test_build_tokenizer_names() -> None:
    assert isinstance(build_tokenizer("word"), WordTokenizer)
    assert isinstance(build_tokenizer("char"), CharTokenizer)
    assert isinstance(build_tokenizer("subword", CORPUS, 50, "unigram"), SubwordTokenizer)
    with pytest.raises(UserError):
        build_tokenizer("morpheme")  # type: ignore[arg-type]
