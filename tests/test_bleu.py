"""BLEU/chrF through sacreBLEU with signatures, BLEU by source-length bucket, per-sentence hypotheses, alignment error rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqlab.diagnostics.attention_maps import alignment_error_rate, alignment_from_attention, save_attention_map
from seqlab.evaluation.bleu import bleu_by_length, corpus_bleu, corpus_chrf, save_hypotheses, score_translations

REFS = ["a man rides a bike .", "two dogs play in the snow .", "a woman reads a book in the park ."]


def test_identical_output_scores_100_with_signatures() -> None:
    bleu, signature = corpus_bleu(REFS, REFS, tokenize="none")
    chrf, chrf_signature = corpus_chrf(REFS, REFS)
    assert bleu == pytest.approx(100.0) and chrf == pytest.approx(100.0)
    assert "tok:none" in signature and "nrefs:1" in signature and "version:" in signature
    assert "nc:6" in chrf_signature


def test_bleu_is_known_value_for_a_partial_match() -> None:
    # one hypothesis, unigram..4-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty (same length)
    hypothesis, reference = "a man rides a red bike", "a man rides a blue bike"
    bleu, _ = corpus_bleu([hypothesis], [reference], tokenize="none")
    expected = 100 * np.exp(np.mean(np.log([5 / 6, 3 / 5, 2 / 4, 1 / 3])))
    assert bleu == pytest.approx(expected, abs=1e-6)
    upper = ["A Man Rides A Bike ."]
    assert corpus_bleu(upper, REFS[:1], tokenize="none", lowercase=True)[0] == pytest.approx(100.0)
    assert corpus_bleu(upper, REFS[:1], tokenize="none")[0] < 100.0


def test_bleu_by_length_buckets_sentences_by_source_length() -> None:
    hypotheses = ["a man rides a bike .", "completely wrong output here", "a woman reads a book in the park ."]
    buckets = bleu_by_length(hypotheses, REFS, source_lengths=[4, 15, 25], edges=(10, 20), tokenize="none")
    assert [(b.label, b.sentences) for b in buckets] == [("1–10", 1), ("11–20", 1), ("21+", 1)]
    assert buckets[0].bleu == pytest.approx(100.0) and buckets[1].bleu == pytest.approx(0.0)
    scores = score_translations(hypotheses, REFS, [4, 15, 25], tokenize="none", edges=(10, 20))
    assert 0 < scores.bleu < 100 and len(scores.by_length) == 3 and "BLEU by source length" in scores.summary()
    with pytest.raises(ValueError):
        score_translations(hypotheses[:2], REFS)


def test_per_sentence_hypotheses_are_saved(tmp_path: Path) -> None:
    path = save_hypotheses(tmp_path / "out" / "hyp.jsonl", ["ein mann", "zwei hunde", "eine frau"], REFS, REFS, "none")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2] and all(r["bleu"] == pytest.approx(100.0) for r in records)
    assert records[1]["source"] == "zwei hunde"


def test_alignment_error_rate_and_heatmap(tmp_path: Path) -> None:
    weights = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    predicted = alignment_from_attention(weights)
    assert predicted == {(0, 1), (1, 0), (2, 2)}
    assert alignment_error_rate(predicted, {(0, 1), (1, 0), (2, 2)}) == 0.0
    assert alignment_error_rate(predicted, {(0, 0), (1, 1), (2, 2)}) == pytest.approx(1 - 2 / 6)
    assert alignment_error_rate({(0, 0)}, {(1, 1)}, possible={(0, 0)}) == pytest.approx(1 - 1 / 2)
    png = save_attention_map(weights, ["x", "y", "<eos>"], ["b", "a", "<eos>"], tmp_path / "map.png", "test")
    assert png.read_bytes()[:4] == b"\x89PNG"
