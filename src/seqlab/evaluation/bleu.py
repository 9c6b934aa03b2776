"""Translation quality with sacreBLEU (Post 2018): corpus BLEU and chrF with their signatures, BLEU by
source-length bucket (Bahdanau et al. 2014, Figure 2), and per-sentence hypotheses saved as JSON lines.

The signature records every setting that changes the number (tokenisation, casing, smoothing, version);
report it next to the score. For references that are already tokenised (Multi30k's ``*.lc.norm.tok.*``)
use ``tokenize="none"`` so the score is computed on exactly those tokens (sacreBLEU's warning about
tokenised input is then silenced: it is what was asked for).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF

DEFAULT_EDGES = (10, 20, 30, 40, 50)


@dataclass
class Bucket:
    """BLEU of the sentences whose source has `low`–`high` tokens (high None: no upper bound)."""

    low: int
    high: int | None
    sentences: int
    bleu: float

    @property
    def label(self) -> str:
        return f"{self.low}–{self.high}" if self.high is not None else f"{self.low}+"


@dataclass
class TranslationScores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str
    sentences: int
    by_length: list[Bucket] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"BLEU {self.bleu:.2f}  ({self.bleu_signature})",
            f"chrF {self.chrf:.2f}  ({self.chrf_signature})",
            f"sentences {self.sentences}",
        ]
        if self.by_length:
            lines.append("BLEU by source length: " + ", ".join(f"{b.label}: {b.bleu:.1f} ({b.sentences})" for b in self.by_length))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**asdict(self), "by_length": [{**asdict(b), "label": b.label} for b in self.by_length]}


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a", lowercase: bool = False) -> tuple[float, str]:
    """Corpus BLEU (Papineni et al. 2002) over one reference per sentence, and its sacreBLEU signature."""
    metric = BLEU(tokenize=tokenize, lowercase=lowercase, force=tokenize == "none")
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus chrF (Popović 2015), character n-gram F-score, and its signature."""
    metric = CHRF()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def bleu_by_length(
    hypotheses: Sequence[str], references: Sequence[str], source_lengths: Sequence[int],
    edges: Sequence[int] = DEFAULT_EDGES, tokenize: str = "13a", lowercase: bool = False,
) -> list[Bucket]:
    """Corpus BLEU within each source-length bucket (1–10, 11–20, …, last edge + 1 and longer); empty buckets skipped."""
    bounds = [(low + 1, high) for low, high in zip([0, *edges[:-1]], edges)] + [(edges[-1] + 1, None)]
    buckets = []
    for low, high in bounds:
        rows = [i for i, n in enumerate(source_lengths) if n >= low and (high is None or n <= high)]
        if rows:
            bleu, _ = corpus_bleu([hypotheses[i] for i in rows], [references[i] for i in rows], tokenize, lowercase)
            buckets.append(Bucket(low, high, len(rows), bleu))
    return buckets


def score_translations(
    hypotheses: Sequence[str], references: Sequence[str], source_lengths: Sequence[int] | None = None,
    tokenize: str = "13a", lowercase: bool = False, edges: Sequence[int] = DEFAULT_EDGES,
) -> TranslationScores:
    """BLEU and chrF of a test set, and BLEU by source length when the lengths are given."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, bleu_signature = corpus_bleu(hypotheses, references, tokenize, lowercase)
    chrf, chrf_signature = corpus_chrf(hypotheses, references)
    by_length = bleu_by_length(hypotheses, references, source_lengths, edges, tokenize, lowercase) if source_lengths else []
    return TranslationScores(bleu, chrf, bleu_signature, chrf_signature, len(hypotheses), by_length)


def save_hypotheses(
    path: str | Path, sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a",
) -> Path:
    """One JSON line per sentence: index, source, hypothesis, reference and its sentence BLEU."""
    metric = BLEU(tokenize=tokenize, effective_order=True, force=tokenize == "none")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for index, (source, hypothesis, reference) in enumerate(zip(sources, hypotheses, references)):
            sentence_bleu = metric.sentence_score(hypothesis, [reference]).score
            record = {"index": index, "source": source, "hypothesis": hypothesis, "reference": reference, "bleu": round(sentence_bleu, 2)}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
