"""Seed 004's hands-on claims: how to initialise a recurrent network, why to clip its gradients, what a
contextual embedding buys over a static one, and what a key/value cache does for generation."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.senses import CUES, SENSES, SensesTask
from seqlab.diagnostics.gradients import gradient_flow
from seqlab.diagnostics.profile import loglog_slope
from seqlab.experiments.base import Context, Outcome, experiment, torch_threads
from seqlab.models import build_model
from seqlab.models.seq2seq import Seq2SeqSpec
from seqlab.models.transformer import TransformerSpec
from seqlab.registry import TASKS
from seqlab.report.plots import new_figure, save
from seqlab.training import Callback, Trainer, TrainResult

SENSE_COLOURS = {"money": "#c2541b", "river": "#1f4e9c"}
CUE_MARKERS = {"before": "<", "after": ">", "both": "o"}


def run_config(task: dict[str, Any], model: dict[str, Any], train: dict[str, Any], seed: int) -> dict[str, Any]:
    return {"seed": seed, "task": task, "model": model,
            "train": {"progress": False, "tensorboard": False, "threads": 1, **train}}


class StopAtAccuracy(Callback):
    """Evaluate every `every` steps; stop once validation accuracy reaches `target`."""

    def __init__(self, every: int, target: float = 0.99) -> None:
        self.every, self.target = every, target

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        if step % self.every == 0 and trainer.evaluate("val")["accuracy"] >= self.target:
            trainer.stopped_early = True


# -- initialisation ------------------------------------------------------------------------------------

ELMAN_VARIANTS: dict[str, dict[str, Any]] = {
    "Elman, Xavier, tanh": {"cell": "elman", "init": "xavier"},
    "Elman, orthogonal, tanh": {"cell": "elman", "init": "orthogonal"},
    "Elman, Xavier, ReLU": {"cell": "elman", "init": "xavier", "nonlinearity": "relu"},
    "Elman, identity, ReLU (IRNN)": {"cell": "elman", "init": "identity", "nonlinearity": "relu"},
}
LSTM_VARIANTS: dict[str, dict[str, Any]] = {
    f"LSTM, forget bias {bias:g}": {"cell": "lstm", "forget_bias": bias} for bias in (0.0, 1.0, 2.0)
}
INIT_MARGIN = 0.2


def memory_task(length: int) -> dict[str, Any]:
    """Remember the first of 8 symbols across a blank gap of `length` steps (one distractor: the blank)."""
    return {"name": "remember_first", "length": length, "n_symbols": 8, "n_distractors": 1, "eval_size": 256}


@experiment(
    name="initialisation",
    era="gated",
    claim="Proper initialization can delay (but not prevent) gradient problems. The goal: keep the eigenvalues of "
    "W_hh close to 1. Xavier/Glorot — feedforward layers, not RNNs; Orthogonal — RNN hidden-to-hidden weights; "
    "Identity — simple RNNs, preserves gradients; LSTM bias init — set forget gate bias to 1-2, encourages "
    "remembering early.",
    source="seed 004 (initialisation strategies for RNNs; Saxe et al. 2014; Le et al. 2015; Gers et al. 2000)",
    threshold=f"remember the first of 8 symbols across a 20-step blank gap (chance 12.5%), mean test accuracy over "
    f"seeds after ≤ 150 steps: orthogonal or identity W_hh beats Xavier W_hh with the same nonlinearity by "
    f"≥ {INIT_MARGIN:.0%} points; an LSTM with forget-gate bias 1 beats bias 0 by ≥ {INIT_MARGIN:.0%} points "
    "(bias 2 and the gradient reaching step 1 at initialisation reported)",
)
def initialisation(ctx: Context) -> Outcome:
    length, probe_length, hidden = 20, 100, 32
    seeds = ctx.pick(3, 8)
    steps, every = 150, 25
    variants = {**ELMAN_VARIANTS, **LSTM_VARIANTS}
    accuracy: dict[str, list[float]] = {label: [] for label in variants}
    reach: dict[str, list[float]] = {label: [] for label in variants}
    profiles: dict[str, np.ndarray] = {}
    probe_tasks = [TASKS.build(config_from_dict(run_config(memory_task(probe_length), {"name": "rnn"}, {}, 0)).task, ctx.seed + s)
                   for s in range(seeds)]
    for label, options in variants.items():
        for s in range(seeds):
            model = {"name": "rnn", "hidden_size": hidden, **options}
            config = run_config(memory_task(length), model,
                                {"steps": steps, "batch_size": 64, "lr": 3e-3, "grad_clip": 1.0}, ctx.seed + s)
            trainer = Trainer(config_from_dict(config), callbacks=(StopAtAccuracy(every),))
            flow = gradient_flow(trainer.model, probe_tasks[s].train_batch(0, 64), "classify")
            reach[label].append(flow.ratio())
            if s == 0:
                profiles[label] = flow.norms() / flow.norms()[-1]
            accuracy[label].append(trainer.fit().final["test"]["accuracy"])
    mean = {label: float(np.mean(values)) for label, values in accuracy.items()}
    orthogonal_gain = mean["Elman, orthogonal, tanh"] - mean["Elman, Xavier, tanh"]
    identity_gain = mean["Elman, identity, ReLU (IRNN)"] - mean["Elman, Xavier, ReLU"]
    bias1_gain = mean["LSTM, forget bias 1"] - mean["LSTM, forget bias 0"]
    bias2_gain = mean["LSTM, forget bias 2"] - mean["LSTM, forget bias 0"]
    passed = max(orthogonal_gain, identity_gain) >= INIT_MARGIN and bias1_gain >= INIT_MARGIN

    figures: dict[str, Any] = {"chance": 1 / 8, "seeds": seeds}
    for label in variants:
        key = label.split(" (")[0].replace(", ", "_").replace(" ", "_").lower()
        figures[f"{key}_mean_test_accuracy"] = mean[label]
        figures[f"{key}_test_accuracy_by_seed"] = [round(a, 3) for a in accuracy[label]]
        figures[f"{key}_grad_h1_over_hT_at_init_T{probe_length}"] = float(np.exp(np.mean(np.log(np.maximum(reach[label], 1e-300)))))
    figures.update(orthogonal_minus_xavier_tanh=orthogonal_gain, identity_minus_xavier_relu=identity_gain,
                   bias1_minus_bias0=bias1_gain, bias2_minus_bias0=bias2_gain)

    fig, axes = new_figure(columns=2, size=(5.6, 4.2))
    labels = list(variants)
    colours = ["#9aa7bd", "#5a7bb5", "#d8b08a", "#c2541b", "#b8c9a8", "#6f9a55", "#2f6b2a"]
    axes[0].bar(range(len(labels)), [mean[label] for label in labels], color=colours)
    for index, label in enumerate(labels):
        axes[0].scatter([index] * len(accuracy[label]), accuracy[label], color="black", s=10, zorder=3)
    axes[0].axhline(1 / 8, color="grey", linestyle="--", linewidth=1, label="chance")
    axes[0].set_xticks(range(len(labels)), [label.replace(", ", "\n", 1) for label in labels], fontsize=6.5, rotation=45, ha="right")
    axes[0].set_ylabel("test accuracy (bars: mean, dots: seeds)")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(f"Remember the first symbol across {length} blank steps", fontsize=9)
    axes[0].legend(fontsize=7)
    for label, colour in zip(labels, colours):
        profile = profiles[label]
        axes[1].plot(np.arange(1, len(profile) + 1), np.where(profile > 0, profile, np.nan), color=colour, label=label)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("time step t (loss at the last step)")
    axes[1].set_ylabel("‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at initialisation")
    axes[1].set_title(f"How far the gradient reaches before training (T = {probe_length})", fontsize=9)
    axes[1].legend(fontsize=6)
    image = save(fig, ctx.image_path("initialisation"))
    setup = (f"remember_first: the first of 8 symbols, then {length} blanks; rnn hidden {hidden}, AdamW lr 3e-3, batch 64, "
             f"clip 1.0, ≤ {steps} steps (stopping at 99% validation accuracy); Elman with Xavier, orthogonal or identity "
             f"W_hh (input matrices Xavier, biases 0), LSTM with the default init and forget-gate bias 0, 1 or 2; "
             f"{seeds} seeds; gradient reach measured on {probe_length}-step sequences at initialisation"
             + (" — quick mode: 3 seeds" if ctx.quick else ""))
    return Outcome(passed=bool(passed), figures=figures, images=[image], setup=setup)


# -- gradient clipping ---------------------------------------------------------------------------------

def final_level(values: list[float]) -> float:
    """Mean of the last 10% of a loss curve."""
    return float(np.mean(values[-max(1, len(values) // 10):]))


@experiment(
    name="gradient-clipping",
    era="recurrent",
    claim="Add gradient clipping to that RNN and compare loss curves with and without clipping. [Symptoms:] Loss "
    "becomes NaN after N steps / training unstable (oscillates) — exploding gradients. Quick fix: add gradient "
    "clipping. torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)",
    source="seed 004 (hands-on drill; debugging table; Pascanu, Mikolov & Bengio 2013)",
    threshold="two-layer Elman RNN on copy memory, SGD at a learning rate where it explodes; in every seed: without "
    "clipping the training loss peaks ≥ 5× its initial value (or becomes NaN/inf) and ends (last 10% of steps) above "
    "the clipped run; with clipping at norm 1.0 it stays finite and ends at ≤ half its initial value",
)
def gradient_clipping(ctx: Context) -> Outcome:
    seeds = ctx.pick(3, 5)
    steps = ctx.pick(200, 600)
    task = {"name": "copy_memory", "delay": 10, "copy_length": 5, "n_symbols": 8, "eval_size": 500}
    model = {"name": "rnn", "cell": "elman", "num_layers": 2, "hidden_size": 64, "init": "orthogonal"}
    runs: dict[str, list[TrainResult]] = {"no clipping": [], "clipped at 1.0": []}
    baseline = math.nan
    for s in range(seeds):
        for label, clip in (("no clipping", None), ("clipped at 1.0", 1.0)):
            train = {"steps": steps, "batch_size": 64, "optimizer": "sgd", "lr": 0.5, "momentum": 0.9, "grad_clip": clip}
            trainer = Trainer(config_from_dict(run_config(task, model, train, ctx.seed + s)))
            baseline = trainer.task.info.extra["memoryless_baseline_loss"]
            runs[label].append(trainer.fit())
    figures: dict[str, Any] = {"seeds": seeds, "steps": steps, "memoryless_baseline_loss": baseline}
    passed = True
    for s in range(seeds):
        free = [h["loss"] for h in runs["no clipping"][s].history]
        clipped = [h["loss"] for h in runs["clipped at 1.0"][s].history]
        free_finite = len(free) == steps and all(math.isfinite(v) for v in free)
        clipped_finite = len(clipped) == steps and all(math.isfinite(v) for v in clipped)
        initial = free[0]  # the loss before any update: the same model and batch in both runs
        free_peak = max((v for v in free if math.isfinite(v)), default=math.inf) / initial
        free_end = final_level(free) if free_finite else math.inf
        clipped_end = final_level(clipped) if clipped_finite else math.inf
        passed &= ((free_peak >= 5 or not free_finite) and free_end > clipped_end
                   and clipped_finite and clipped_end <= clipped[0] / 2)
        figures[f"seed{s}_initial_loss"] = initial
        figures[f"seed{s}_unclipped_peak_over_initial"] = free_peak
        figures[f"seed{s}_unclipped_final_loss"] = free_end
        figures[f"seed{s}_unclipped_finite"] = free_finite
        figures[f"seed{s}_unclipped_max_grad_norm"] = max(h["grad_norm"] for h in runs["no clipping"][s].history)
        figures[f"seed{s}_clipped_final_loss"] = clipped_end
        figures[f"seed{s}_clipped_max_grad_norm_before_clipping"] = max(h["grad_norm"] for h in runs["clipped at 1.0"][s].history)

    fig, axes = new_figure(columns=2, size=(5.0, 3.8))
    for label, colour in (("no clipping", "#c2541b"), ("clipped at 1.0", "#1f4e9c")):
        for s, result in enumerate(runs[label]):
            x = [h["step"] for h in result.history]
            axes[0].plot(x, [h["loss"] for h in result.history], color=colour, alpha=0.8, linewidth=1,
                         label=label if s == 0 else None)
            axes[1].plot(x, [h["grad_norm"] for h in result.history], color=colour, alpha=0.8, linewidth=1,
                         label=label if s == 0 else None)
    axes[0].axhline(baseline, color="grey", linestyle=":", linewidth=1, label="memoryless baseline")
    for ax, name in zip(axes, ("training loss (cross-entropy per step)", "gradient norm (before clipping)")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    axes[0].set_title(f"Two-layer Elman RNN, SGD lr 0.5, momentum 0.9 ({seeds} seeds)", fontsize=9)
    axes[1].axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    image = save(fig, ctx.image_path("loss-curves"))
    setup = (f"copy_memory: 5 of 8 symbols, recalled after 10 blanks; rnn: two-layer Elman (tanh), hidden 64, orthogonal "
             f"W_hh; SGD lr 0.5, momentum 0.9, batch 64, {steps} steps, with and without clipping the global gradient "
             f"norm at 1.0; {seeds} seeds" + (" — quick mode: fewer steps and seeds" if ctx.quick else ""))
    return Outcome(passed=bool(passed), figures=figures, images=[image], setup=setup)


# -- contextual embeddings ---------------------------------------------------------------------------

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
    steps = ctx.pick(100, 400)
    probe_size = ctx.pick(300, 600)
    figures: dict[str, Any] = {}
    vectors: dict[str, Tensor] = {}
    probe: dict[str, Tensor] = {}
    for label, (model, lr) in CONTEXT_MODELS.items():
        config = config_from_dict(run_config({"name": "senses"}, model, {"steps": steps, "batch_size": 64, "lr": lr}, ctx.seed))
        trainer = Trainer(config)
        assert isinstance(trainer.task, SensesTask)
        probe = trainer.task.probe(probe_size, seed=10_000 + ctx.seed)
        untrained = similarity_figures(word_vectors(trainer.model, probe), probe)
        if label == "BiLSTM":
            vectors["static embedding"] = static_vectors(trainer.model, probe)
        result = trainer.fit()
        vectors[label] = word_vectors(result.model, probe)
        key = label.lower().replace("-", "_").replace(" ", "_")
        figures[f"{key}_topic_test_accuracy"] = result.final["test"]["accuracy"]
        figures.update({f"{key}_{name}": value for name, value in similarity_figures(vectors[label], probe).items()})
        figures.update({f"{key}_untrained_{name}": untrained[name] for name in ("within_sense_cosine", "across_sense_cosine", "centroid_accuracy")})
    static = vectors["static embedding"]
    static_unit = F.normalize(static.double(), dim=-1)
    figures["static_min_cosine"] = float((static_unit @ static_unit.T).min())
    figures["static_distinct_vectors"] = int(torch.unique(static, dim=0).shape[0])
    figures["static_within_sense_cosine"], figures["static_across_sense_cosine"] = sense_similarity(static, probe["sense"])

    contextual_ok = all(
        figures[f"{key}_gap"] >= 0.3 and all(figures[f"{key}_centroid_accuracy_cue_{cue}"] >= 0.95 for cue in CUES)
        for key in ("bilstm", "transformer")
    )
    passed = (figures["static_distinct_vectors"] == 1 and figures["static_min_cosine"] > 1 - 1e-6 and contextual_ok
              and figures["forward_only_lstm_centroid_accuracy_cue_after"] <= 0.70)

    shown = ["static embedding", "BiLSTM", "Transformer", "forward-only LSTM"]
    fig, axes = new_figure(columns=4, size=(3.3, 3.3))
    senses = [SENSES[int(s)] for s in probe["sense"]]
    cues = [CUES[int(c)] for c in probe["cue"]]
    for ax, label in zip(axes, shown):
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
    fig.suptitle(f"'bank' in {probe_size} probe sentences: its vectors projected on their two main axes", fontsize=9)
    pictures = [save(fig, ctx.image_path("bank-vectors"))]

    fig, axes = new_figure(size=(6.0, 3.4))
    keys = {"static embedding": "static", "BiLSTM": "bilstm", "Transformer": "transformer", "forward-only LSTM": "forward_only_lstm"}
    within = [figures[f"{key}_within_sense_cosine"] for key in keys.values()]
    across = [figures[f"{key}_across_sense_cosine"] for key in keys.values()]
    x = np.arange(len(keys))
    axes[0].bar(x - 0.2, within, width=0.4, color="#5a7bb5", label="same sense")
    axes[0].bar(x + 0.2, across, width=0.4, color="#d88a5a", label="different senses")
    axes[0].axhline(0, color="black", linewidth=0.6)
    axes[0].set_xticks(x, list(keys), fontsize=8)
    axes[0].set_ylabel("mean cosine similarity of 'bank' vectors")
    axes[0].legend(fontsize=8)
    pictures.append(save(fig, ctx.image_path("cosine")))
    setup = (f"senses corpus (templates: 'bank' in a neutral frame, one money or river cue word before it, after it or both; "
             f"also 'the river bank was steep'); each model trained {steps} steps to tell the sentence's topic "
             f"(AdamW, batch 64, mean-pooled head): BiLSTM hidden 32 per direction, embeddings 32 (lr 1e-2); Transformer "
             f"encoder d_model 64, 4 heads, 2 layers, d_ff 128 (lr 3e-3); forward-only LSTM hidden 32 (lr 1e-2); "
             f"the static embedding is the BiLSTM's input lookup table; vectors read at the top layer for {probe_size} "
             f"probe sentences drawn apart from the training batches (the template space is small, so many also occur there)" + (" — quick mode: fewer steps and sentences" if ctx.quick else ""))
    return Outcome(passed=bool(passed), figures=figures, images=pictures, setup=setup)


# -- sequential vs parallel decoding ------------------------------------------------------------------

DECODE_VOCAB, DECODE_BATCH, DECODE_SOURCE, DECODE_WIDTH = 1000, 8, 20, 64


def decoding_models() -> tuple[nn.Module, nn.Module]:
    """An LSTM encoder–decoder and a Transformer of the same width (untrained: timing does not depend on weights)."""
    info = TaskInfo(kind="seq2seq", output_dim=DECODE_VOCAB, vocab_size=DECODE_VOCAB)
    rnn = build_model(Seq2SeqSpec(embed_size=DECODE_WIDTH, hidden_size=DECODE_WIDTH, num_layers=2), info)
    transformer = build_model(TransformerSpec(d_model=DECODE_WIDTH, num_heads=4, d_ff=4 * DECODE_WIDTH, dropout=0.0,
                                              num_encoder_layers=2, num_decoder_layers=2), info)
    return rnn.eval(), transformer.eval()


@torch.no_grad()
def generate_stepwise(model: nn.Module, batch: dict[str, Tensor], length: int) -> Tensor:
    """Greedy generation through `step`: the RNN's state, or the Transformer's key/value cache, carried along."""
    memory = model.encode(batch)
    state = model.init_state(memory)
    tokens = torch.full((batch["src"].shape[0],), 2, dtype=torch.long)
    generated = []
    for _ in range(length):
        output, state, _ = model.step(memory, state, tokens)
        tokens = output.argmax(-1)
        generated.append(tokens)
    return torch.stack(generated, 1)


@torch.no_grad()
def generate_uncached(model: nn.Module, batch: dict[str, Tensor], length: int) -> Tensor:
    """Greedy generation without a cache: every step runs the Transformer decoder over the whole prefix again."""
    memory = model.encode(batch)
    prefix = torch.full((batch["src"].shape[0], 1), 2, dtype=torch.long)
    for _ in range(length):
        y, _ = model.decoder(model.tgt_embed(prefix), memory["memory"], memory["src_padding"])
        prefix = torch.cat([prefix, model.out(y[:, -1]).argmax(-1, keepdim=True)], dim=1)
    return prefix[:, 1:]


@torch.no_grad()
def score_parallel(model: nn.Module, batch: dict[str, Tensor], length: int) -> Tensor:
    """One teacher-forced pass over a known output of `length` tokens (how training reads a target)."""
    tgt_in = torch.randint(4, DECODE_VOCAB, (batch["src"].shape[0], length))
    return model({**batch, "tgt_in": tgt_in})


def time_per_token(run: Callable[[int], Any], length: int, repeats: int, min_total: float = 0.05) -> float:
    """The fastest of at least `repeats` runs of `run(length)` (more until `min_total` seconds are spent, so that
    short, cheap runs are timed many times), divided by `length`."""
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_total:
        began = time.perf_counter()
        run(length)
        times.append(time.perf_counter() - began)
    return min(times) / length


@experiment(
    name="sequential-vs-parallel-decoding",
    era="transformer",
    claim="RNNs process sequences one element at a time, in order [...] Transformer: parallel operations. "
    "[Generation stays token by token for both; a Transformer decoder that caches each layer's keys and values "
    "does a constant amount of new work per token, one that recomputes its whole prefix does more at every step.]",
    source="seed 004 (the sequential processing bottleneck); seed 002 (the Transformer decoder); issue 5 (KV cache)",
    threshold=f"greedy generation of 16…256 tokens (…512 with --full; batch {DECODE_BATCH}): fitted log-log slope of time per token against output "
    f"length ≥ 0.6 for the Transformer without a cache (upper half of the lengths; 1 = linear), ≤ 0.3 with the "
    "cache, ≤ 0.2 for the RNN decoder; at the longest output the cached decoder is ≥ 3× faster per token than the uncached",
)
def sequential_vs_parallel_decoding(ctx: Context) -> Outcome:
    lengths = ctx.pick([16, 32, 64, 128, 256], [16, 32, 64, 128, 256, 512])
    repeats = 2
    torch.manual_seed(ctx.seed)
    rnn, transformer = decoding_models()
    batch = {"src": torch.randint(4, DECODE_VOCAB, (DECODE_BATCH, DECODE_SOURCE)),
             "src_lengths": torch.full((DECODE_BATCH,), DECODE_SOURCE)}
    methods: dict[str, Callable[[int], Any]] = {
        "RNN decoder (LSTM, step by step)": lambda n: generate_stepwise(rnn, batch, n),
        "Transformer, key/value cache": lambda n: generate_stepwise(transformer, batch, n),
        "Transformer, no cache (recompute prefix)": lambda n: generate_uncached(transformer, batch, n),
        "Transformer, one parallel pass (known output)": lambda n: score_parallel(transformer, batch, n),
        "RNN, one teacher-forced pass (known output)": lambda n: score_parallel(rnn, batch, n),
    }
    per_token: dict[str, list[float]] = {label: [] for label in methods}
    with torch_threads(1):
        for method in methods.values():
            method(lengths[0])  # warm-up
        for n in lengths:
            for label, method in methods.items():
                per_token[label].append(time_per_token(method, n, repeats))
    upper = len(lengths) // 2
    slopes = {label: loglog_slope(lengths, times) for label, times in per_token.items()}
    uncached_upper = loglog_slope(lengths[upper:], per_token["Transformer, no cache (recompute prefix)"][upper:])
    speedup = per_token["Transformer, no cache (recompute prefix)"][-1] / per_token["Transformer, key/value cache"][-1]
    passed = (uncached_upper >= 0.6 and slopes["Transformer, key/value cache"] <= 0.3
              and slopes["RNN decoder (LSTM, step by step)"] <= 0.2 and speedup >= 3)
    short = {"RNN decoder (LSTM, step by step)": "rnn_stepwise", "Transformer, key/value cache": "transformer_cached",
             "Transformer, no cache (recompute prefix)": "transformer_uncached",
             "Transformer, one parallel pass (known output)": "transformer_parallel_pass",
             "RNN, one teacher-forced pass (known output)": "rnn_teacher_forced_pass"}
    figures: dict[str, Any] = {"lengths": lengths, "uncached_slope_upper_half": uncached_upper,
                               "cached_speedup_at_longest": speedup}
    for label, key in short.items():
        figures[f"{key}_ms_per_token"] = [round(1e3 * t, 4) for t in per_token[label]]
        figures[f"{key}_slope"] = slopes[label]

    fig, axes = new_figure(size=(6.4, 4.2))
    styles = {"rnn_stepwise": ("#2f6b2a", "-"), "transformer_cached": ("#1f4e9c", "-"),
              "transformer_uncached": ("#c2541b", "-"), "transformer_parallel_pass": ("#1f4e9c", ":"),
              "rnn_teacher_forced_pass": ("#2f6b2a", ":")}
    for label, key in short.items():
        colour, line = styles[key]
        axes[0].plot(lengths, [1e3 * t for t in per_token[label]], color=colour, linestyle=line, marker=".",
                     label=f"{label} (slope {slopes[label]:.2f})")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("output length (tokens)")
    axes[0].set_ylabel("time per token (ms)")
    axes[0].set_title(f"Time per generated token, batch {DECODE_BATCH}, width {DECODE_WIDTH}, 1 thread", fontsize=9)
    axes[0].legend(fontsize=6.5)
    image = save(fig, ctx.image_path("time-per-token"))
    setup = (f"untrained models, vocabulary {DECODE_VOCAB}, {DECODE_BATCH} sources of {DECODE_SOURCE} tokens; seq2seq: "
             f"two-layer LSTM encoder–decoder, width {DECODE_WIDTH}; transformer: 2+2 layers, d_model {DECODE_WIDTH}, 4 heads, "
             f"d_ff {4 * DECODE_WIDTH}; greedy generation of a fixed number of tokens (no <eos> stop); best of ≥ {repeats} "
             f"timings (more for short runs, ≥ 50 ms in all) on one thread; dotted: one pass over a known output of the same length (teacher forcing)"
             + (" — quick mode: lengths up to 256" if ctx.quick else ""))
    return Outcome(passed=bool(passed), figures=figures, images=[image], setup=setup)
