"""Seed 004's contextual embeddings: a static lookup table gives 'bank' one vector; a BiLSTM or a Transformer
gives it one per sentence, and the money and river senses fall apart."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from seqlab.data.senses import CUES, SENSES, SensesTask
from seqlab.experiments.base import Context, Outcome, conclude, experiment, quiet_config
from seqlab.report.plots import new_figure
from seqlab.training import Trainer

SENSE_COLOURS = {"money": "#c2541b", "river": "#1f4e9c"}
CUE_MARKERS = {"before": "<", "after": ">", "both": "o"}


def sense_similarity(vectors: Tensor, senses: Tensor) -> tuple[float, float]:
    """Mean cosine similarity between vectors of the same sense (distinct pairs) and of different senses."""
    unit = F.normalize(vectors.double(), dim=-1)
    similarity = unit @ unit.T
    same = senses[:, None] == senses[None, :]
    distinct = ~torch.eye(len(senses), dtype=torch.bool)
    return float(similarity[same & distinct].mean()), float(similarity[~same].mean())


def centroid_accuracy(vectors: Tensor, senses: Tensor) -> float:
    """Leave-one-out nearest sense centroid by cosine: how often a vector is closest to its own sense's mean."""
    unit = F.normalize(vectors.double(), dim=-1)
    one_hot = F.one_hot(senses, int(senses.max()) + 1).double()  # (n, senses)
    sums = one_hot.T @ unit  # (senses, dim)
    left_out = sums[None, :, :] - one_hot[:, :, None] * unit[:, None, :]  # each vector removed from its own sum
    scores = torch.einsum("nsd,nd->ns", F.normalize(left_out, dim=-1), unit)
    return float((scores.argmax(1) == senses).double().mean())


def word_vectors(model: nn.Module, probe: dict[str, Tensor]) -> Tensor:
    """The top-layer vector each sentence gives the probed word: (sentences, width)."""
    rows = torch.arange(len(probe["position"]))
    model.eval()
    with torch.no_grad():
        if hasattr(model, "stack"):  # the rnn model
            states, _ = model.stack(model.embed(probe["inputs"]), probe["lengths"])
        else:  # transformer_encoder
            states = model.encode(probe)
    return states[rows, probe["position"]]


def static_vectors(model: nn.Module, probe: dict[str, Tensor]) -> Tensor:
    """What a static embedding gives the word in each sentence: its row of the lookup table."""
    rows = torch.arange(len(probe["position"]))
    with torch.no_grad():
        return model.embed(probe["inputs"])[rows, probe["position"]]


def similarity_figures(vectors: Tensor, probe: dict[str, Tensor]) -> dict[str, float]:
    within, across = sense_similarity(vectors, probe["sense"])
    figures = {"within_sense_cosine": within, "across_sense_cosine": across, "gap": within - across,
               "centroid_accuracy": centroid_accuracy(vectors, probe["sense"])}
    for index, cue in enumerate(CUES):
        chosen = probe["cue"] == index
        figures[f"centroid_accuracy_cue_{cue}"] = centroid_accuracy(vectors[chosen], probe["sense"][chosen])
    return figures


CONTEXT_MODELS: dict[str, tuple[dict[str, Any], float]] = {
    "BiLSTM": ({"name": "rnn", "cell": "lstm", "hidden_size": 32, "embedding_dim": 32, "bidirectional": True,
                "head": "mean"}, 1e-2),
    "Transformer": ({"name": "transformer_encoder", "d_model": 64, "num_heads": 4, "d_ff": 128, "num_layers": 2,
                     "dropout": 0.0, "pooling": "mean"}, 3e-3),
    "forward-only LSTM": ({"name": "rnn", "cell": "lstm", "hidden_size": 32, "embedding_dim": 32, "head": "mean"}, 1e-2),
}
FIGURE_KEYS = {"static embedding": "static", "BiLSTM": "bilstm", "Transformer": "transformer",
               "forward-only LSTM": "forward_only_lstm"}


@experiment(
    name="contextual-embeddings",
    era="transformer",
    claim="In Word2Vec and GloVe, the word 'bank' has exactly ONE vector, whether it means a financial institution "
    "or a river bank. [...] ELMo (2018): BiLSTM-based contextual embeddings—same word gets different vectors in "
    "different sentences. Transformers (BERT, GPT): each token's representation depends on ALL other tokens.",
    source="seed 004 (static word embeddings; the shift to contextual embeddings; bidirectional RNNs)",
    threshold="on probe sentences of a generated corpus (money vs river 'bank'): the static embedding gives every "
    "sentence the same vector (all cosines 1); a BiLSTM and a Transformer encoder give 'bank' vectors whose mean "
    "within-sense cosine exceeds the across-sense cosine by ≥ 0.3, and a leave-one-out nearest-sense-centroid test "
    "on them is ≥ 95% right whether the cue comes before 'bank', after it or both; a forward-only LSTM is ≤ 70% "
    "when the cue comes after",
)
def contextual_embeddings(ctx: Context) -> Outcome:
    steps, probe_size = ctx.pick(100, 400), ctx.pick(300, 600)
    figures: dict[str, Any] = {}
    vectors: dict[str, Tensor] = {}
    probe: dict[str, Tensor] = {}
    for label, (model, lr) in CONTEXT_MODELS.items():
        trainer = Trainer(quiet_config({"name": "senses"}, model, {"steps": steps, "batch_size": 64, "lr": lr}, ctx.seed))
        assert isinstance(trainer.task, SensesTask)
        probe = trainer.task.probe(probe_size, seed=10_000 + ctx.seed)
        untrained = similarity_figures(word_vectors(trainer.model, probe), probe)
        if label == "BiLSTM":
            vectors["static embedding"] = static_vectors(trainer.model, probe)
        result = trainer.fit()
        vectors[label] = word_vectors(result.model, probe)
        key = FIGURE_KEYS[label]
        figures[f"{key}_topic_test_accuracy"] = result.final["test"]["accuracy"]
        figures.update({f"{key}_{name}": value for name, value in similarity_figures(vectors[label], probe).items()})
        figures.update({f"{key}_untrained_{name}": untrained[name]
                        for name in ("within_sense_cosine", "across_sense_cosine", "centroid_accuracy")})
    static = vectors["static embedding"]
    static_unit = F.normalize(static.double(), dim=-1)
    figures["static_min_cosine"] = float((static_unit @ static_unit.T).min())
    figures["static_distinct_vectors"] = int(torch.unique(static, dim=0).shape[0])
    figures["static_within_sense_cosine"], figures["static_across_sense_cosine"] = sense_similarity(static, probe["sense"])

    checks = {"the static embedding gives one vector (cosines 1)":
              figures["static_distinct_vectors"] == 1 and figures["static_min_cosine"] > 1 - 1e-6}
    for label in ("BiLSTM", "Transformer"):
        key = FIGURE_KEYS[label]
        checks[f"{label}: within − across sense cosine ≥ 0.3"] = figures[f"{key}_gap"] >= 0.3
        checks[f"{label}: nearest sense centroid ≥ 95% for every cue position"] = all(
            figures[f"{key}_centroid_accuracy_cue_{cue}"] >= 0.95 for cue in CUES)
    checks["forward-only LSTM ≤ 70% when the cue comes after"] = figures["forward_only_lstm_centroid_accuracy_cue_after"] <= 0.70
    setup = (f"senses corpus (templates: 'bank' in a neutral frame, one money or river cue word before it, after it or both; "
             f"also 'the river bank was steep'); each model trained {steps} steps to tell the sentence's topic "
             f"(AdamW, batch 64, mean-pooled head): BiLSTM hidden 32 per direction, embeddings 32 (lr 1e-2); Transformer "
             f"encoder d_model 64, 4 heads, 2 layers, d_ff 128 (lr 3e-3); forward-only LSTM hidden 32 (lr 1e-2); "
             f"the static embedding is the BiLSTM's input lookup table; vectors read at the top layer for {probe_size} "
             f"probe sentences drawn apart from the training batches (the template space is small, so many also occur there)")
    pictures = {"bank-vectors": plot_projections(vectors, probe), "cosine": plot_cosines(figures)}
    return conclude(ctx, checks, figures, setup, pictures, quick="fewer steps and sentences")


def plot_projections(vectors: dict[str, Tensor], probe: dict[str, Tensor]) -> Figure:
    """Each model's 'bank' vectors projected on their two main axes, coloured by sense, marked by cue."""
    fig, axes = new_figure(columns=4, size=(3.3, 3.3))
    senses = [SENSES[int(s)] for s in probe["sense"]]
    cues = [CUES[int(c)] for c in probe["cue"]]
    for ax, label in zip(axes, FIGURE_KEYS):
        centred = vectors[label].double() - vectors[label].double().mean(0)
        _, _, basis = torch.linalg.svd(centred, full_matrices=False)
        points = (centred @ basis[:2].T).numpy() if centred.abs().max() > 1e-9 else np.zeros((len(senses), 2))
        for sense in SENSES:
            for cue in CUES:
                chosen = [i for i in range(len(senses)) if senses[i] == sense and cues[i] == cue]
                ax.scatter(points[chosen, 0], points[chosen, 1], s=9, alpha=0.6, c=SENSE_COLOURS[sense],
                           marker=CUE_MARKERS[cue], label=f"{sense}, cue {cue}")
        ax.set_title(label + (" (one vector)" if label == "static embedding" else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"'bank' in {len(senses)} probe sentences: its vectors projected on their two main axes", fontsize=9)
    return fig


def plot_cosines(figures: dict[str, Any]) -> Figure:
    """Mean cosine of 'bank' vectors within a sense and across senses, per model."""
    fig, axes = new_figure(size=(6.0, 3.4))
    x = np.arange(len(FIGURE_KEYS))
    axes[0].bar(x - 0.2, [figures[f"{key}_within_sense_cosine"] for key in FIGURE_KEYS.values()], width=0.4,
                color="#5a7bb5", label="same sense")
    axes[0].bar(x + 0.2, [figures[f"{key}_across_sense_cosine"] for key in FIGURE_KEYS.values()], width=0.4,
                color="#d88a5a", label="different senses")
    axes[0].axhline(0, color="black", linewidth=0.6)
    axes[0].set_xticks(x, list(FIGURE_KEYS), fontsize=8)
    axes[0].set_ylabel("mean cosine similarity of 'bank' vectors")
    axes[0].legend(fontsize=8)
    return fig
