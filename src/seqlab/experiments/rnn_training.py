"""Seed 004's advice for training a recurrent network: initialise W_hh to keep its eigenvalues near 1, and
clip the gradient norm so that an explosion cannot wreck a run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from seqlab.diagnostics.gradients import gradient_flow
from seqlab.experiments.base import Context, Outcome, StopAt, conclude, experiment, quiet_config
from seqlab.registry import TASKS
from seqlab.report.plots import new_figure
from seqlab.training import Trainer, TrainResult

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
INIT_COLOURS = ["#9aa7bd", "#5a7bb5", "#d8b08a", "#c2541b", "#b8c9a8", "#6f9a55", "#2f6b2a"]


def memory_task(length: int) -> dict[str, Any]:
    """Remember the first of 8 symbols across a blank gap of `length` steps (one distractor: the blank)."""
    return {"name": "remember_first", "length": length, "n_symbols": 8, "n_distractors": 1, "eval_size": 256}


def variant_key(label: str) -> str:
    """'Elman, identity, ReLU (IRNN)' → 'elman_identity_relu' (the figures' prefix)."""
    return label.split(" (")[0].replace(", ", "_").replace(" ", "_").lower()


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
    length, probe_length, hidden, steps = 20, 100, 32, 150
    seeds = range(ctx.seed, ctx.seed + ctx.pick(3, 8))
    variants = {**ELMAN_VARIANTS, **LSTM_VARIANTS}
    train = {"steps": steps, "batch_size": 64, "lr": 3e-3, "grad_clip": 1.0}
    probes = {s: TASKS.build(quiet_config(memory_task(probe_length), {"name": "rnn"}).task, s).train_batch(0, 64)
              for s in seeds}

    accuracy: dict[str, list[float]] = {label: [] for label in variants}
    reach: dict[str, list[float]] = {label: [] for label in variants}
    profiles: dict[str, np.ndarray] = {}
    for label, options in variants.items():
        for s in seeds:
            config = quiet_config(memory_task(length), {"name": "rnn", "hidden_size": hidden, **options}, train, s)
            trainer = Trainer(config, callbacks=(StopAt("accuracy", 0.99, every=25),))
            flow = gradient_flow(trainer.model, probes[s], "classify")
            reach[label].append(flow.ratio())
            profiles.setdefault(label, flow.norms() / flow.norms()[-1])
            accuracy[label].append(trainer.fit().final["test"]["accuracy"])

    mean = {label: float(np.mean(values)) for label, values in accuracy.items()}
    gains = {
        "orthogonal_minus_xavier_tanh": mean["Elman, orthogonal, tanh"] - mean["Elman, Xavier, tanh"],
        "identity_minus_xavier_relu": mean["Elman, identity, ReLU (IRNN)"] - mean["Elman, Xavier, ReLU"],
        "bias1_minus_bias0": mean["LSTM, forget bias 1"] - mean["LSTM, forget bias 0"],
        "bias2_minus_bias0": mean["LSTM, forget bias 2"] - mean["LSTM, forget bias 0"],
    }
    checks = {
        f"orthogonal or identity W_hh beats Xavier by ≥ {INIT_MARGIN:.0%}":
            max(gains["orthogonal_minus_xavier_tanh"], gains["identity_minus_xavier_relu"]) >= INIT_MARGIN,
        f"LSTM forget bias 1 beats bias 0 by ≥ {INIT_MARGIN:.0%}": gains["bias1_minus_bias0"] >= INIT_MARGIN,
    }
    figures: dict[str, Any] = {"chance": 1 / 8, "seeds": len(seeds), **gains}
    for label in variants:
        key = variant_key(label)
        figures[f"{key}_mean_test_accuracy"] = mean[label]
        figures[f"{key}_test_accuracy_by_seed"] = [round(a, 3) for a in accuracy[label]]
        figures[f"{key}_grad_h1_over_hT_at_init_T{probe_length}"] = float(np.exp(np.mean(np.log(np.maximum(reach[label], 1e-300)))))
    setup = (f"remember_first: the first of 8 symbols, then {length} blanks; rnn hidden {hidden}, AdamW lr 3e-3, batch 64, "
             f"clip 1.0, ≤ {steps} steps (stopping at 99% validation accuracy); Elman with Xavier, orthogonal or identity "
             f"W_hh (input matrices Xavier, biases 0), LSTM with the default init and forget-gate bias 0, 1 or 2; "
             f"{len(seeds)} seeds; gradient reach measured on {probe_length}-step sequences at initialisation")
    picture = plot_initialisation(accuracy, profiles, length, probe_length)
    return conclude(ctx, checks, figures, setup, {"initialisation": picture}, quick="3 seeds")


def plot_initialisation(accuracy: dict[str, list[float]], profiles: dict[str, np.ndarray], length: int,
                        probe_length: int) -> Figure:
    """Left: test accuracy per variant (bars: mean, dots: seeds); right: gradient reach at initialisation."""
    fig, axes = new_figure(columns=2, size=(5.6, 4.2))
    labels = list(accuracy)
    axes[0].bar(range(len(labels)), [np.mean(accuracy[label]) for label in labels], color=INIT_COLOURS)
    for index, label in enumerate(labels):
        axes[0].scatter([index] * len(accuracy[label]), accuracy[label], color="black", s=10, zorder=3)
    axes[0].axhline(1 / 8, color="grey", linestyle="--", linewidth=1, label="chance")
    axes[0].set_xticks(range(len(labels)), [label.replace(", ", "\n", 1) for label in labels], fontsize=6.5,
                       rotation=45, ha="right")
    axes[0].set(ylabel="test accuracy (bars: mean, dots: seeds)", ylim=(0, 1.05))
    axes[0].set_title(f"Remember the first symbol across {length} blank steps", fontsize=9)
    axes[0].legend(fontsize=7)
    for label, colour in zip(labels, INIT_COLOURS):
        profile = profiles[label]
        axes[1].plot(np.arange(1, len(profile) + 1), np.where(profile > 0, profile, np.nan), color=colour, label=label)
    axes[1].set(yscale="log", xlabel="time step t (loss at the last step)", ylabel="‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at initialisation")
    axes[1].set_title(f"How far the gradient reaches before training (T = {probe_length})", fontsize=9)
    axes[1].legend(fontsize=6)
    return fig


# -- gradient clipping ---------------------------------------------------------------------------------

def final_level(values: list[float]) -> float:
    """Mean of the last 10% of a loss curve."""
    return float(np.mean(values[-max(1, len(values) // 10):]))


CLIPPING_RUNS = {"no clipping": None, "clipped at 1.0": 1.0}


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
    seeds, steps = ctx.pick(3, 5), ctx.pick(200, 600)
    task = {"name": "copy_memory", "delay": 10, "copy_length": 5, "n_symbols": 8, "eval_size": 500}
    model = {"name": "rnn", "cell": "elman", "num_layers": 2, "hidden_size": 64, "init": "orthogonal"}
    sgd = {"steps": steps, "batch_size": 64, "optimizer": "sgd", "lr": 0.5, "momentum": 0.9}

    runs: dict[str, list[TrainResult]] = {label: [] for label in CLIPPING_RUNS}
    baseline = math.nan
    for s in range(seeds):
        for label, clip in CLIPPING_RUNS.items():
            trainer = Trainer(quiet_config(task, model, {**sgd, "grad_clip": clip}, ctx.seed + s))
            baseline = trainer.task.info.extra["memoryless_baseline_loss"]
            runs[label].append(trainer.fit())

    figures: dict[str, Any] = {"seeds": seeds, "steps": steps, "memoryless_baseline_loss": baseline}
    checks: dict[str, bool] = {}
    for s in range(seeds):
        free = [h["loss"] for h in runs["no clipping"][s].history]
        clipped = [h["loss"] for h in runs["clipped at 1.0"][s].history]
        free_finite = len(free) == steps and all(math.isfinite(v) for v in free)
        clipped_finite = len(clipped) == steps and all(math.isfinite(v) for v in clipped)
        initial = free[0]  # the loss before any update: the same model and batch in both runs
        free_peak = max((v for v in free if math.isfinite(v)), default=math.inf) / initial
        free_end = final_level(free) if free_finite else math.inf
        clipped_end = final_level(clipped) if clipped_finite else math.inf
        checks[f"seed {s}: unclipped loss peaks ≥ 5× or diverges"] = free_peak >= 5 or not free_finite
        checks[f"seed {s}: unclipped run ends above the clipped one"] = free_end > clipped_end
        checks[f"seed {s}: clipped run finite, ends ≤ half its initial loss"] = clipped_finite and clipped_end <= clipped[0] / 2
        figures.update({
            f"seed{s}_initial_loss": initial,
            f"seed{s}_unclipped_peak_over_initial": free_peak,
            f"seed{s}_unclipped_final_loss": free_end,
            f"seed{s}_unclipped_finite": free_finite,
            f"seed{s}_unclipped_max_grad_norm": max(h["grad_norm"] for h in runs["no clipping"][s].history),
            f"seed{s}_clipped_final_loss": clipped_end,
            f"seed{s}_clipped_max_grad_norm_before_clipping": max(h["grad_norm"] for h in runs["clipped at 1.0"][s].history),
        })
    setup = (f"copy_memory: 5 of 8 symbols, recalled after 10 blanks; rnn: two-layer Elman (tanh), hidden 64, orthogonal "
             f"W_hh; SGD lr 0.5, momentum 0.9, batch 64, {steps} steps, with and without clipping the global gradient "
             f"norm at 1.0; {seeds} seeds")
    picture = plot_clipping(runs, baseline)
    return conclude(ctx, checks, figures, setup, {"loss-curves": picture}, quick="fewer steps and seeds")


def plot_clipping(runs: dict[str, list[TrainResult]], baseline: float) -> Figure:
    """Training loss and gradient norm of every run, with and without clipping."""
    fig, axes = new_figure(columns=2, size=(5.0, 3.8))
    for label, colour in zip(runs, ("#c2541b", "#1f4e9c")):
        for s, result in enumerate(runs[label]):
            x = [h["step"] for h in result.history]
            for ax, key in zip(axes, ("loss", "grad_norm")):
                ax.plot(x, [h[key] for h in result.history], color=colour, alpha=0.8, linewidth=1,
                        label=label if s == 0 else None)
    axes[0].axhline(baseline, color="grey", linestyle=":", linewidth=1, label="memoryless baseline")
    for ax, name in zip(axes, ("training loss (cross-entropy per step)", "gradient norm (before clipping)")):
        ax.set(yscale="log", xlabel="step", ylabel=name)
        ax.legend(fontsize=7)
    seeds = len(next(iter(runs.values())))
    axes[0].set_title(f"Two-layer Elman RNN, SGD lr 0.5, momentum 0.9 ({seeds} seeds)", fontsize=9)
    axes[1].axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    return fig
