"""The encoder–decoder and attention era (seeds 002–004): the fixed-vector bottleneck, attention as a learned
alignment, and the attention scorers compared for quality and speed.

Every model is trained by the one trainer on the built-in synthetic translation task (word-for-word
translation with adjective–noun swap and verb-final clauses, gold alignment known), decoded greedily, and
scored with sacreBLEU on the target words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from seqlab.data.base import IGNORE
from seqlab.data.translation_synthetic import SyntheticTranslationSpec, SyntheticTranslationTask
from seqlab.diagnostics.attention_maps import alignment_error_rate, alignment_from_attention, draw_attention
from seqlab.evaluation.bleu import Bucket, bleu_by_length, corpus_bleu
from seqlab.diagnostics.profile import operation_count
from seqlab.experiments.base import Context, Outcome, conclude, experiment, fit, median_times, quiet_config
from seqlab.inference.search import greedy_search
from seqlab.nn.attention import build_attention
from seqlab.report.plots import new_figure


def synthetic_task(seed: int, max_len: int, eval_size: int) -> SyntheticTranslationTask:
    return SyntheticTranslationTask(SyntheticTranslationSpec(max_len=max_len, eval_size=eval_size), seed)


def train_on(task: SyntheticTranslationTask, model: dict[str, Any], steps: int, seed: int, lr: float, batch_size: int = 64) -> nn.Module:
    """Train `model` on `task` with the one trainer (AdamW, clipping 1.0) and return it in eval mode."""
    config = quiet_config({"name": "synthetic_translation", "max_len": task.spec.max_len, "eval_size": task.spec.eval_size},
                          model, {"steps": steps, "lr": lr, "batch_size": batch_size, "grad_clip": 1.0, "eval_batches": 1},
                          seed)
    return fit(config, task=task).model.eval()


def greedy_translations(model: nn.Module, task: SyntheticTranslationTask, split: str = "val") -> tuple[list[str], list[str], list[int]]:
    """Greedy hypotheses, references and source lengths (words) of an evaluation split."""
    hypotheses, references, lengths = [], [], []
    vocab = task.target.vocab
    for batch in task.eval_batches(split, 256):
        for hypothesis, gold, length in zip(greedy_search(model, batch), batch["targets"], batch["src_lengths"]):
            hypotheses.append(" ".join(vocab.decode(hypothesis.tokens)))
            references.append(" ".join(vocab.decode(gold[gold != IGNORE].tolist())))
            lengths.append(int(length) - 1)
    return hypotheses, references, lengths


@torch.no_grad()
def alignment_error(model: nn.Module, task: SyntheticTranslationTask, split: str = "val") -> tuple[float, dict[str, Any]]:
    """Corpus AER of argmax attention against the gold alignment (teacher-forced on the reference), and one example."""
    predicted: set[tuple[int, int, int]] = set()
    sure: set[tuple[int, int, int]] = set()
    example: dict[str, Any] = {}
    sentence = 0
    for batch in task.eval_batches(split, 256):
        _, attention = model.teacher_forced(batch)
        for row in range(batch["src"].shape[0]):
            words = int((batch["targets"][row] != IGNORE).sum()) - 1  # target words, without <eos>
            weights = attention[row, :words, : int(batch["src_lengths"][row]) - 1]
            gold = {(j, int(i)) for j, i in enumerate(batch["alignment"][row, :words].tolist())}
            links = alignment_from_attention(weights)
            predicted |= {(sentence, j, i) for j, i in links}
            sure |= {(sentence, j, i) for j, i in gold}
            if not example and min(12, task.spec.max_len - 1) <= words <= 16:
                example = {
                    "weights": attention[row, : words + 1, : int(batch["src_lengths"][row])].numpy(),
                    "source": task.source.vocab.decode(batch["src"][row].tolist()) + ["<eos>"],
                    "target": task.target.vocab.decode(batch["targets"][row].tolist()) + ["<eos>"],
                    "gold": sorted(gold),
                }
            sentence += 1
    return alignment_error_rate(predicted, sure), example


def _bucket_bleu(buckets: list[Bucket]) -> dict[str, float]:
    return {bucket.label: round(bucket.bleu, 1) for bucket in buckets}


@experiment(
    name="bottleneck",
    era="attention",
    claim="Critical Limitation: All information about the input sequence must pass through a single fixed-size "
    "context vector [...] Performance Degradation: Quality decreases with input length [...] (with attention) "
    "Long Sequence Handling: Performance doesn't degrade with input length",
    source="seed 002 (Sutskever et al. 2014; Cho et al. 2014; Bahdanau et al. 2014, Figure 2)",
    threshold="greedy BLEU of a seq2seq LSTM without attention falls by ≥ 20 points from the shortest to the longest "
    "source-length bucket; the same model with (Luong dot) attention falls by ≤ 10 points",
)
def bottleneck(ctx: Context) -> Outcome:
    max_len, steps, lr = ctx.pick(24, 40), ctx.pick(200, 600), ctx.pick(1e-2, 5e-3)
    edges = ctx.pick((10, 20), (10, 20, 30))
    common = {"embed_size": 64, "hidden_size": 128, "num_layers": 1, "cell": "lstm"}
    models = {
        "no attention (Sutskever, reversed source)": {"name": "seq2seq", "reverse_source": True, **common},
        "attention (Luong, dot)": {"name": "luong", "score": "dot", "input_feeding": False, **common},
    }
    task = synthetic_task(ctx.seed, max_len, ctx.pick(400, 1000))
    curves: dict[str, list[Bucket]] = {}
    for label, spec in models.items():
        hypotheses, references, lengths = greedy_translations(train_on(task, spec, steps, ctx.seed, lr), task)
        curves[label] = bleu_by_length(hypotheses, references, lengths, edges, tokenize="none")
    plain, attended = curves.values()
    plain_drop, attended_drop = plain[0].bleu - plain[-1].bleu, attended[0].bleu - attended[-1].bleu
    checks = {"without attention BLEU falls ≥ 20 from shortest to longest": plain_drop >= 20,
              "with attention BLEU falls ≤ 10": attended_drop <= 10}
    figures = {
        "bleu_by_length_no_attention": _bucket_bleu(plain),
        "bleu_by_length_attention": _bucket_bleu(attended),
        "drop_no_attention": round(plain_drop, 1),
        "drop_attention": round(attended_drop, 1),
    }
    setup = (f"synthetic translation, source length 3–{max_len}; both models: LSTM 1 layer, hidden 128, embeddings 64, "
             f"{steps} steps of 64 sentences, AdamW {lr:g}, clip 1.0; greedy decoding of {task.spec.eval_size} held-out "
             f"sentences; sacreBLEU (tokenize none) per source-length bucket; labels {' vs '.join(map(repr, models))}")
    return conclude(ctx, checks, figures, setup, {"bleu-by-length": plot_bleu_by_length(curves)})


def plot_bleu_by_length(curves: dict[str, list[Bucket]]) -> Figure:
    """Greedy BLEU per source-length bucket, one line per model."""
    fig, (ax,) = new_figure(size=(5.5, 3.6))
    for (label, buckets), marker in zip(curves.items(), ("o", "s")):
        ax.plot([b.label for b in buckets], [b.bleu for b in buckets], marker=marker, label=label)
    ax.set(xlabel="source sentence length (words)", ylabel="BLEU (greedy)", ylim=(0, 100))
    ax.set_title("The fixed-vector bottleneck (cf. Bahdanau et al. 2014, Fig. 2)", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    return fig


@experiment(
    name="alignment",
    era="attention",
    claim="Alignment Discovery: Automatically learns input-output correspondences [...] After training, the network "
    "would learn to put most of the attention weight in one or two places.",
    source="seeds 002 and 003 (Bahdanau et al. 2014, Figure 3; Luong et al. 2015)",
    threshold="alignment error rate of argmax attention against the gold word alignment < 0.1 for both the "
    "Bahdanau (additive, from s_{t−1}) and the Luong (general, from h_t) model",
)
def alignment(ctx: Context) -> Outcome:
    max_len, lr, hidden = ctx.pick(12, 20), ctx.pick(1e-2, 5e-3), 64
    models = {
        "Bahdanau (additive)": ({"name": "bahdanau", "embed_size": 64, "hidden_size": hidden, "attention_size": hidden // 2,
                                 "maxout_size": hidden // 2}, ctx.pick(300, 1000)),
        "Luong (general)": ({"name": "luong", "embed_size": 64, "hidden_size": hidden, "num_layers": 1, "score": "general",
                             "input_feeding": False}, ctx.pick(150, 500)),
    }
    task = synthetic_task(ctx.seed, max_len, ctx.pick(256, 1000))
    rates: dict[str, float] = {}
    examples: dict[str, dict[str, Any]] = {}
    for label, (spec, steps) in models.items():
        rates[label], examples[label] = alignment_error(train_on(task, spec, steps, ctx.seed, lr), task)
    checks = {f"{label}: AER < 0.1": rate < 0.1 for label, rate in rates.items()}
    figures = {f"aer_{label.split()[0].lower()}": round(rate, 4) for label, rate in rates.items()}
    setup = (f"synthetic translation, source length 3–{max_len}; "
             + "; ".join(f"{label}: {steps} steps" for label, (_, steps) in models.items())
             + f" of 64 sentences, AdamW {lr:g}, clip 1.0; hidden {hidden}, embeddings 64; "
             "AER = 1 − 2|A∩S|/(|A|+|S|) over the held-out set, A = argmax of each target word's attention "
             "(teacher-forced on the reference), S = the gold word alignment; circles on the heatmaps mark S")
    return conclude(ctx, checks, figures, setup, {"heatmaps": plot_heatmaps(examples, rates)})


def plot_heatmaps(examples: dict[str, dict[str, Any]], rates: dict[str, float]) -> Figure:
    """One example's attention per model, the gold alignment circled."""
    fig, axes = new_figure(columns=len(examples), size=(4.4, 4.2))
    for ax, (label, example) in zip(axes, examples.items()):
        draw_attention(ax, example["weights"], example["source"], example["target"], f"{label}: AER {rates[label]:.3f}")
        gold = np.array(example["gold"])
        ax.scatter(gold[:, 1], gold[:, 0], s=14, facecolors="none", edgecolors="#c2541b", linewidths=1.0)
    return fig


SCORES = ("dot", "general", "concat", "additive")
SCORER_BATCH, SCORER_SOURCE, SCORER_SIZES = 64, 30, (64, 256)
FEWER = 1.5


def decoder_step(score: str, hidden: int) -> Any:
    """One decoder step's attention for a batch (keys projected beforehand, once per sentence), as a closure."""
    torch.manual_seed(0)
    module = build_attention(score, hidden, hidden, hidden).eval()
    annotations, query = torch.randn(SCORER_BATCH, SCORER_SOURCE, hidden), torch.randn(SCORER_BATCH, hidden)
    mask = torch.ones(SCORER_BATCH, SCORER_SOURCE, dtype=torch.bool)
    with torch.no_grad():
        keys = module.project_keys(annotations)

    @torch.no_grad()
    def step() -> Any:
        return module(query, keys, annotations, mask)

    return step


@experiment(
    name="attention-scorers",
    era="attention",
    claim="Simple dot-product attention works nearly as well as the more complex additive variant—and it's much "
    "faster because it's just a matrix multiply.",
    source="seed 004 (Luong et al. 2015, §3.1 scores dot, general, concat; Bahdanau et al. 2014 additive)",
    threshold="Luong models with the dot, general, concat and additive scores reach greedy BLEU within 5 points of "
    f"each other; per decoder step (batch {SCORER_BATCH}, source {SCORER_SOURCE}, hidden 64 and 256) the dot score does "
    f"the fewest arithmetic operations of the four, ≥ {FEWER:g}× fewer than each other score (counted; the median "
    "time of interleaved repeats is reported beside, not judged: on a loaded machine it reorders scores whose work "
    "differs by a few times)",
)
def attention_scorers(ctx: Context) -> Outcome:
    max_len, steps, lr = ctx.pick(10, 20), ctx.pick(180, 500), ctx.pick(1e-2, 5e-3)
    task = synthetic_task(ctx.seed, max_len, ctx.pick(200, 1000))
    bleu: dict[str, float] = {}
    for score in SCORES:
        spec = {"name": "luong", "embed_size": 64, "hidden_size": 64, "num_layers": 1, "score": score,
                "attention_size": 64, "input_feeding": False}
        hypotheses, references, _ = greedy_translations(train_on(task, spec, steps, ctx.seed, lr), task)
        bleu[score] = corpus_bleu(hypotheses, references, tokenize="none")[0]
    calls = {(size, score): decoder_step(score, size) for size in SCORER_SIZES for score in SCORES}
    work = {key: operation_count(call)[1] for key, call in calls.items()}
    seconds = median_times(calls, repeats=ctx.pick(5, 9), min_seconds=0.01)

    spread = max(bleu.values()) - min(bleu.values())
    checks = {"BLEU of the four within 5 points": spread <= 5}
    for size in SCORER_SIZES:
        checks[f"hidden {size}: dot does ≥ {FEWER:g}× fewer operations than any other"] = all(
            work[size, score] >= FEWER * work[size, "dot"] for score in SCORES[1:])
    figures = {
        "bleu": {s: round(v, 1) for s, v in bleu.items()},
        "bleu_spread": round(spread, 1),
        **{f"operations_per_step_hidden{size}": {s: work[size, s] for s in SCORES} for size in SCORER_SIZES},
        **{f"us_per_step_hidden{size}": {s: round(seconds[size, s] * 1e6, 1) for s in SCORES} for size in SCORER_SIZES},
        "fastest": {size: min(SCORES, key=lambda s: seconds[size, s]) for size in SCORER_SIZES},
    }
    setup = (f"synthetic translation, source length 3–{max_len}; Luong LSTM 1 layer, hidden 64, embeddings 64, no input "
             f"feeding, {steps} steps of 64 sentences, AdamW {lr:g}; one attention call per decoder step (keys projected "
             f"once per sentence beforehand), batch {SCORER_BATCH}, {SCORER_SOURCE} source positions, hidden 64 and 256: "
             "operations counted per ATen call (seqlab.diagnostics.profile.operation_count), time the median of "
             "interleaved repeats (each ≥ 10 ms) on one thread")
    return conclude(ctx, checks, figures, setup, {"quality-and-speed": plot_scorers(bleu, work, seconds, spread)})


def plot_scorers(bleu: dict[str, float], work: dict[tuple[int, str], int], seconds: dict[tuple[int, str], float],
                 spread: float) -> Figure:
    """BLEU per score (left); operations (middle) and µs (right) per decoder step, per hidden size, log scale."""
    fig, axes = new_figure(columns=3, size=(3.6, 3.4))
    axes[0].bar(SCORES, [bleu[s] for s in SCORES], color="#1f4e9c")
    axes[0].set(ylim=(0, 100), ylabel="BLEU (greedy)")
    axes[0].set_title(f"quality (spread {spread:.1f} BLEU)", fontsize=9)
    width = 0.38
    for ax, values, unit, scale in ((axes[1], work, "operations per decoder step (counted)", 1.0),
                                    (axes[2], seconds, "µs per decoder step (median)", 1e6)):
        for offset, size in zip((-width / 2, width / 2), SCORER_SIZES):
            ax.bar(np.arange(len(SCORES)) + offset, [values[size, s] * scale for s in SCORES], width, label=f"hidden {size}")
        ax.set_xticks(range(len(SCORES)), SCORES)
        ax.set(yscale="log", ylabel=unit)
        ax.legend(fontsize=8)
    axes[1].set_title(f"work (batch {SCORER_BATCH}, source {SCORER_SOURCE})", fontsize=9)
    axes[2].set_title("speed (one thread)", fontsize=9)
    return fig
