"""Seed 004's "Alternative Approaches (The Road Not Taken)": external memories read by attention (memory
networks), a differentiable tape with read and write heads (the Neural Turing Machine), and why they did not win.
A plain list of `@experiment` functions, one claim each."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data.babi import BabiTask
from seqlab.data.memory_tasks import CopyTask
from seqlab.data.word_contexts import (
    CooccurrenceSpec, CooccurrenceTask, Corpus, WordContextsSpec, WordContextsTask,
)
from seqlab.experiments.base import Context, Outcome, StopAt, conclude, experiment, fit, quiet_config
from seqlab.inference.vectors import VectorSet
from seqlab.models.bytenet import ResidualBlock
from seqlab.nn.convolution import CausalConv1d
from seqlab.report.plots import new_figure
from seqlab.training import TrainResult

# -- memory networks -------------------------------------------------------------------------------------

MEMN2N_TARGET, LSTM_CEILING, MEMORY_MARGIN = 0.90, 0.60, 0.30


def story_world(sentences: int) -> dict[str, Any]:
    return {"name": "babi", "supporting_facts": 2, "sentences": sentences, "memory_size": sentences,
            "n_people": 3, "n_objects": 2, "n_places": 4, "eval_size": 300}


@experiment(
    name="memory-networks",
    era="roads",
    claim="Memory Networks (Weston, 2014): External memory + attention-based retrieval.",
    source="seed 004 (Alternative Approaches: Memory Networks & Neural Turing Machines; Sukhbaatar et al. 2015)",
    threshold=f"generated bAbI task 2 (where is the object? two supporting facts; chance 25%), same stories, steps and "
    f"optimiser for both: the memory network (3 hops, adjacent tying, position and temporal encoding; best of its "
    f"seeds by validation accuracy, as the paper keeps the best of 10 runs) reaches ≥ {MEMN2N_TARGET:.0%} test accuracy, "
    f"an LSTM of similar size reading the same story word by word stays ≤ {LSTM_CEILING:.0%}, and the gap is "
    f"≥ {MEMORY_MARGIN:.0%} points",
)
def memory_networks(ctx: Context) -> Outcome:
    sentences = ctx.pick(6, 10)
    steps, seeds = ctx.pick(1500, 4000), ctx.pick(1, 3)
    task = story_world(sentences)
    train = {"steps": steps, "batch_size": 32, "lr": 1e-2, "grad_clip": 10.0}
    memn2n = {"name": "memn2n", "embedding_dim": 20, "hops": 3}
    lstm = {"name": "rnn", "cell": "lstm", "hidden_size": 32, "embedding_dim": 20}
    runs: dict[str, list[tuple[TrainResult, StopAt]]] = {"memn2n": [], "lstm": []}
    for label, model in (("memn2n", memn2n), ("lstm", lstm)):
        for s in range(seeds if label == "memn2n" else 1):
            stop = StopAt("accuracy", 0.98, every=100)
            runs[label].append((fit(quiet_config(task, model, train, seed=ctx.seed + s), callbacks=(stop,)), stop))
    best = max(runs["memn2n"], key=lambda run: run[0].final["val"]["accuracy"])[0]
    lstm_result = runs["lstm"][0][0]
    memory_accuracy, lstm_accuracy = best.final["test"]["accuracy"], lstm_result.final["test"]["accuracy"]

    story_task = BabiTask(quiet_config(task, memn2n).task, ctx.seed)  # type: ignore[arg-type]
    batch = story_task.eval_set("test")
    best.model.eval()
    with torch.no_grad():
        _, attention = best.model.forward_with_attention(batch)  # (n, hops, memory)
    on_support = []
    for hop in range(attention.shape[1]):
        top = attention[:, hop].argmax(-1)
        on_support.append(float((top[:, None] == batch["support"]).any(-1).float().mean()))

    figures = {
        "memn2n_test_accuracy": memory_accuracy, "lstm_test_accuracy": lstm_accuracy, "chance": 0.25,
        "memn2n_val_accuracy_by_seed": [round(r.final["val"]["accuracy"], 3) for r, _ in runs["memn2n"]],
        "memn2n_steps_by_seed": [r.steps for r, _ in runs["memn2n"]], "lstm_steps": lstm_result.steps,
        "memn2n_parameters": best.parameters, "lstm_parameters": lstm_result.parameters,
        "hop_argmax_on_a_supporting_fact": [round(x, 3) for x in on_support],
    }
    checks = {f"memory network ≥ {MEMN2N_TARGET:.0%}": memory_accuracy >= MEMN2N_TARGET,
              f"LSTM ≤ {LSTM_CEILING:.0%}": lstm_accuracy <= LSTM_CEILING,
              f"gap ≥ {MEMORY_MARGIN:.0%} points": memory_accuracy - lstm_accuracy >= MEMORY_MARGIN}

    example = int(torch.nonzero((batch["support"] >= 0).all(-1)).flatten()[0])
    filled = int((batch["story"][example] != 0).any(-1).sum())
    order = list(range(filled - 1, -1, -1))  # chronological: slot filled − 1 is the oldest sentence
    grid = attention[example][:, order].T.numpy()  # (sentences, hops)
    fig, axes = new_figure(columns=2, size=(5.2, 3.8))
    axes[0].imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    labels = [story_task.words(batch["story"][example, slot]) for slot in order]
    axes[0].set_yticks(range(filled), labels, fontsize=7)
    axes[0].set_xticks(range(grid.shape[1]), [f"hop {k + 1}" for k in range(grid.shape[1])], fontsize=8)
    for row, slot in enumerate(order):
        if slot in batch["support"][example].tolist():
            axes[0].text(-0.45, row, "★", color="#c2541b", va="center", ha="left", fontsize=9)
        for hop in range(grid.shape[1]):
            axes[0].text(hop, row, f"{grid[row, hop]:.2f}", ha="center", va="center", fontsize=6,
                         color="white" if grid[row, hop] > 0.5 else "black")
    answer = story_task.vocab[int(best.model(batch)[example].argmax())]
    axes[0].set_title(f"{story_task.words(batch['question'][example])} → {answer} (★ supporting facts)", fontsize=8)
    for label, colour in (("memn2n", "#1f4e9c"), ("lstm", "#c2541b")):
        for index, (_, stop) in enumerate(runs[label]):
            if stop.curve:
                axes[1].plot(*zip(*stop.curve), color=colour, alpha=1.0 if index == 0 else 0.5,
                             label=("memory network" if label == "memn2n" else "LSTM") if index == 0 else None)
    axes[1].axhline(0.25, color="grey", linestyle="--", linewidth=1, label="chance")
    axes[1].set_xlabel("training step")
    axes[1].set_ylabel("validation accuracy")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7)
    axes[1].set_title("Two supporting facts: learning curves", fontsize=9)
    setup = (f"babi task 2, {sentences} sentences, 3 people, 2 objects, 4 places, fresh stories every step; memn2n d 20, "
             f"3 hops ({best.parameters} parameters, {seeds} seeds) against an LSTM with 32 units and 20-wide embeddings "
             f"({lstm_result.parameters} parameters) reading the story and question as one token sequence; AdamW lr 1e-2, "
             f"batch 32, clip 10, ≤ {steps} steps (stopping at 98% validation accuracy); test 300 stories")
    return conclude(ctx, checks, figures, setup, pictures={"hops": fig}, quick="6-sentence stories, 1 seed, 1500 steps")


# -- the Neural Turing Machine -------------------------------------------------------------------------------

CONVERGED, GENERALISES, LSTM_LONG_CEILING, SLOWER = 0.99, 0.90, 0.80, 3.0


def bit_accuracy(model: torch.nn.Module, task: CopyTask, length: int, n: int = 100) -> float:
    """Fraction of output bits right on `n` copy sequences of exactly `length` vectors."""
    batch = task.fixed_length(n, length, seed=1)
    model.eval()
    with torch.no_grad():
        logits = model(batch)
    asked = batch["targets"] != -100
    return float(((logits > 0).float() == batch["targets"])[asked].float().mean())


@experiment(
    name="neural-turing-machine",
    era="roads",
    claim="Neural Turing Machines (Graves, 2014): Differentiable tape with read/write heads. Why they didn't win: "
    "Complex to train, hard to scale.",
    source="seed 004 (Alternative Approaches: Memory Networks & Neural Turing Machines; Graves et al. 2014, Fig. 4)",
    threshold=f"copy of 4-bit vectors, trained on lengths 1–L with no curriculum: some NTM seed converges (bit accuracy "
    f"≥ {CONVERGED:.0%} on lengths ≤ L) and copies sequences of length 2L with ≥ {GENERALISES:.0%} of bits right, "
    f"where the LSTM trained alike gets ≤ {LSTM_LONG_CEILING:.0%} at 2L. Reported beside the verdict: the fraction of "
    f"seeds of each that converge, steps and training seconds to the stop, seconds per step; \"hard to train\" reads "
    f"confirmed if fewer NTM seeds converge than LSTM seeds, or the NTM's median training time to its stop is "
    f"≥ {SLOWER:g}× the LSTM's",
)
def neural_turing_machine(ctx: Context) -> Outcome:
    L, steps, seeds = ctx.pick(4, 8), ctx.pick(600, 4000), ctx.pick(1, 5)
    task = {"name": "ntm_copy", "width": 4, "min_length": 1, "max_length": L, "eval_size": 200}
    train = {"steps": steps, "batch_size": 32, "lr": 1e-2, "grad_clip": 10.0}
    ntm = {"name": "ntm", "controller_size": 32, "memory_slots": 4 * L, "memory_width": 8}
    lstm = {"name": "rnn", "cell": "lstm", "hidden_size": 64}
    lengths = list(range(1, 3 * L + 1))
    runs: dict[str, list[dict[str, Any]]] = {"ntm": [], "lstm": []}
    copy = CopyTask(quiet_config(task, ntm).task, ctx.seed)  # type: ignore[arg-type]
    for label, model in (("ntm", ntm), ("lstm", lstm)):
        for s in range(seeds):
            stop = StopAt("accuracy", 0.995, every=100)
            result = fit(quiet_config(task, model, train, seed=ctx.seed + s), callbacks=(stop,))
            curve = [bit_accuracy(result.model, copy, n) for n in lengths]
            runs[label].append({"result": result, "curve": curve, "seconds_per_step": result.seconds / result.steps,
                                "converged": min(curve[:L]) >= CONVERGED})
    best = {label: max(rs, key=lambda r: (r["converged"], r["curve"][2 * L - 1])) for label, rs in runs.items()}
    converged = {label: sum(r["converged"] for r in rs) / len(rs) for label, rs in runs.items()}
    per_step = {label: float(np.median([r["seconds_per_step"] for r in rs])) for label, rs in runs.items()}
    slower = per_step["ntm"] / per_step["lstm"]
    to_stop = {label: float(np.median([r["result"].seconds for r in rs])) for label, rs in runs.items()}
    ntm_long, lstm_long = best["ntm"]["curve"][2 * L - 1], best["lstm"]["curve"][2 * L - 1]
    figures = {
        "trained_lengths": f"1–{L}", "ntm_converged_fraction": converged["ntm"], "lstm_converged_fraction": converged["lstm"],
        f"ntm_bit_accuracy_at_{2 * L}": ntm_long, f"lstm_bit_accuracy_at_{2 * L}": lstm_long,
        f"ntm_bit_accuracy_at_{3 * L}": best["ntm"]["curve"][-1], f"lstm_bit_accuracy_at_{3 * L}": best["lstm"]["curve"][-1],
        "ntm_steps_by_seed": [r["result"].steps for r in runs["ntm"]],
        "lstm_steps_by_seed": [r["result"].steps for r in runs["lstm"]],
        "ntm_ms_per_step": 1000 * per_step["ntm"], "lstm_ms_per_step": 1000 * per_step["lstm"], "ntm_over_lstm_time": slower,
        "ntm_parameters": best["ntm"]["result"].parameters, "lstm_parameters": best["lstm"]["result"].parameters,
        "ntm_median_train_seconds": to_stop["ntm"], "lstm_median_train_seconds": to_stop["lstm"],
        "hard_to_train": "confirmed" if converged["ntm"] < converged["lstm"] or to_stop["ntm"] >= SLOWER * to_stop["lstm"]
        else "not confirmed",
    }
    checks = {"an NTM seed converges": best["ntm"]["converged"],
              f"NTM ≥ {GENERALISES:.0%} of bits at length {2 * L}": ntm_long >= GENERALISES,
              f"LSTM ≤ {LSTM_LONG_CEILING:.0%} at length {2 * L}": lstm_long <= LSTM_LONG_CEILING}

    example = copy.fixed_length(1, 2 * L, seed=2)
    model = best["ntm"]["result"].model
    with torch.no_grad():
        logits, weightings = model.forward_with_weightings(example)
    steps_shown = 4 * L + 1
    fig, axes = new_figure(columns=2, rows=2, size=(4.0, 2.8))
    axes[0].imshow(example["inputs"][0].T.numpy(), cmap="Greys", aspect="auto", vmin=0, vmax=1)
    axes[0].set_title(f"input: {2 * L} vectors, then the delimiter (bottom row)", fontsize=8)
    axes[1].imshow(torch.sigmoid(logits[0]).T.numpy(), cmap="Greys", aspect="auto", vmin=0, vmax=1)
    axes[1].set_title(f"NTM output (probability of 1; asked from step {2 * L + 1})", fontsize=8)
    axes[2].imshow(weightings["write"][0, :, 0].T.numpy(), cmap="Blues", aspect="auto", vmin=0, vmax=1)
    axes[2].set_title("write weighting w_t over memory slots", fontsize=8)
    axes[3].imshow(weightings["read"][0, :, 0].T.numpy(), cmap="Oranges", aspect="auto", vmin=0, vmax=1)
    axes[3].set_title("read weighting w_t over memory slots", fontsize=8)
    for ax in axes:
        ax.set_xlabel(f"time step (of {steps_shown})", fontsize=7)
    axes[2].set_ylabel("slot", fontsize=7)
    axes[3].set_ylabel("slot", fontsize=7)
    fig2, [ax] = new_figure(size=(5.0, 3.4))
    for label, colour in (("ntm", "#1f4e9c"), ("lstm", "#c2541b")):
        for index, run in enumerate(runs[label]):
            ax.plot(lengths, run["curve"], color=colour, alpha=0.9 if run is best[label] else 0.35, marker=".",
                    label=("NTM" if label == "ntm" else "LSTM") + " (seeds)" if index == 0 else None)
    ax.axvline(L + 0.5, color="grey", linestyle=":", linewidth=1)
    ax.text(L + 0.6, 0.52, "longest trained", fontsize=7, color="grey")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("sequence length to copy")
    ax.set_ylabel("bits right")
    ax.set_ylim(0.45, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Copy: generalising past the trained lengths", fontsize=9)
    setup = (f"ntm_copy, 4-bit vectors, lengths uniform in 1–{L} (no curriculum), fresh sequences each step; NTM with "
             f"an LSTM controller of 32, {4 * L} × 8 memory, one read and one write head, shifts −1..1 "
             f"({best['ntm']['result'].parameters} parameters) against an LSTM of 64 units "
             f"({best['lstm']['result'].parameters}); AdamW lr 1e-2, batch 32, clip 10, ≤ {steps} steps (stopping at "
             f"99.5% validation bits), {seeds} seeds each; bits right on 100 sequences of each length 1–{3 * L}; time per "
             f"step = training seconds / steps (one thread)")
    return conclude(ctx, checks, figures, setup, pictures={"weightings": fig, "generalisation": fig2},
                    quick=f"L = {L}, 1 seed, ≤ {steps} steps")


# -- receptive field: dilated convolutions, ByteNet, one attention layer -----------------------------------

RANGE = 512


def gradient_reach(stack: Callable[[Tensor], Tensor], channels: int, length: int) -> int:
    """How many input positions p have ∂ output_last / ∂ x_p ≠ 0: the receptive field, measured."""
    x = torch.randn(1, channels, length, requires_grad=True)
    stack(x)[0, :, -1].sum().backward()
    assert x.grad is not None
    return int((x.grad[0].abs().sum(0) > 0).sum())


def conv_stack(dilations: list[int], kernel_size: int, channels: int) -> Callable[[Tensor], Tensor]:
    """Causal convolutions (WaveNet's, no gates) with tanh between them."""
    layers = [CausalConv1d(channels, channels, kernel_size, d) for d in dilations]

    def run(x: Tensor) -> Tensor:
        for layer in layers:
            x = torch.tanh(layer(x))
        return x

    return run


def bytenet_stack(dilations: list[int], channels: int) -> Callable[[Tensor], Tensor]:
    """ByteNet's target-network residual blocks (masked dilated 1×3 convolutions)."""
    blocks = nn.ModuleList(ResidualBlock(channels, 3, d, causal=True, dropout=0.0) for d in dilations)

    def run(x: Tensor) -> Tensor:
        for block in blocks:
            x = block(x)
        return x

    return run


def causal_attention(channels: int) -> Callable[[Tensor], Tensor]:
    """One single-head causal self-attention layer (softmax(QKᵀ/√d) V, PyTorch's fused kernel)."""
    W_q, W_k, W_v = (nn.Linear(channels, channels) for _ in range(3))

    def run(x: Tensor) -> Tensor:
        h = x.transpose(1, 2)  # (1, time, channels)
        y = F.scaled_dot_product_attention(W_q(h), W_k(h), W_v(h), is_causal=True)
        return y.transpose(1, 2)

    return run


def depth_for(reach: list[int], span: int) -> int | None:
    """The fewest layers (1-based) whose measured reach covers `span` positions."""
    return next((depth + 1 for depth, r in enumerate(reach) if r >= span), None)


@experiment(
    name="receptive-field",
    era="roads",
    claim="A 512-token dependency requires ~9 layers of dilated convolutions vs. a single attention layer [...] "
    "ByteNet: still O(log n) depth for range n.",
    source="seed 004 (Alternative Approaches: WaveNet, ByteNet; van den Oord et al. 2016; Kalchbrenner et al. 2016)",
    threshold=f"receptive field measured as the input positions p with ∂ output_last / ∂ x_p ≠ 0 (random weights, "
    f"1024 positions): kernel-2 causal convolutions with dilations 1, 2, 4, … first reach {RANGE} positions at depth 9; "
    f"undilated they reach exactly depth + 1 at every depth measured (so {RANGE - 1} layers for {RANGE}); one causal "
    f"attention layer reaches all {RANGE}+ positions; ByteNet's residual blocks (kernel 3) with doubling dilations need "
    "one more block per doubling of the range n = 16 … 512 (depth = log₂ n exactly)",
)
def receptive_field(ctx: Context) -> Outcome:
    torch.manual_seed(ctx.seed)
    length, channels, deepest = 1024, 8, ctx.pick(10, 12)
    measured: dict[str, list[int]] = {"dilated": [], "undilated": [], "bytenet": [], "bytenet_r16": []}
    for depth in range(1, deepest + 1):
        doubling = [2**i for i in range(depth)]
        measured["dilated"].append(gradient_reach(conv_stack(doubling, 2, channels), channels, length))
        measured["undilated"].append(gradient_reach(conv_stack([1] * depth, 2, channels), channels, length))
        measured["bytenet"].append(gradient_reach(bytenet_stack(doubling, channels), channels, length))
        capped = [2 ** (i % 5) for i in range(depth)]  # the paper's pattern 1, 2, 4, 8, 16, 1, 2, …
        measured["bytenet_r16"].append(gradient_reach(bytenet_stack(capped, channels), channels, length))
    attention = gradient_reach(causal_attention(channels), channels, length)
    ranges = [2**i for i in range(4, 10)]  # n = 16 … 512
    bytenet_depths = [depth_for(measured["bytenet"], n) for n in ranges]
    figures = {
        "depth_dilated_for_512": depth_for(measured["dilated"], RANGE),
        "depth_bytenet_for_512": depth_for(measured["bytenet"], RANGE),
        "depth_undilated_for_512_extrapolated": RANGE - 1,
        "attention_layers_for_512": 1, "attention_reach": attention,
        "reach_by_depth": {key: values for key, values in measured.items()},
        "bytenet_depth_by_range": dict(zip(map(str, ranges), bytenet_depths)),
    }
    checks = {
        f"dilated: depth 9 first reaches {RANGE}": figures["depth_dilated_for_512"] == 9,
        "undilated: reach = depth + 1": measured["undilated"] == [d + 1 for d in range(1, deepest + 1)],
        f"one attention layer reaches ≥ {RANGE}": attention >= RANGE,
        "ByteNet: depth = log₂ n for n = 16 … 512": bytenet_depths == [math.log2(n) for n in ranges],
    }
    fig, [ax] = new_figure(size=(5.6, 3.8))
    depths = list(range(1, deepest + 1))
    styles = {"dilated": ("dilated causal convolutions, k = 2 (WaveNet)", "#1f4e9c", "o"),
              "undilated": ("undilated causal convolutions, k = 2", "#888888", "s"),
              "bytenet": ("ByteNet blocks, k = 3, dilation doubling", "#2a8c4a", "^"),
              "bytenet_r16": ("ByteNet blocks, dilations 1…16 repeated", "#8fbf7a", "v")}
    for key, (label, colour, marker) in styles.items():
        ax.plot(depths, measured[key], label=label, color=colour, marker=marker, markersize=4)
    ax.scatter([1], [attention], color="#c2541b", marker="*", s=140, zorder=5, label="one causal attention layer")
    ax.axhline(RANGE, color="#c2541b", linestyle=":", linewidth=1)
    ax.text(deepest, RANGE * 1.08, f"{RANGE} tokens", fontsize=7, color="#c2541b", ha="right")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("layers")
    ax.set_ylabel("positions with ∂y_last/∂x_p ≠ 0")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Receptive field, measured by gradient reachability", fontsize=9)
    setup = (f"random weights, {channels} channels, {length} input positions, one backward pass from the last "
             f"output per stack; depths 1–{deepest}; convolutions with tanh between layers; ByteNet's residual blocks "
             "(LN, ReLU, 1×1, masked 1×3 dilated, 1×1, + x); attention: one head, PyTorch's scaled_dot_product_attention; "
             "counts stop at the 1024 inputs. With the paper's dilations capped at r = 16 (1, 2, 4, 8, 16 repeated) the "
             "reach grows by 62 positions per 5 blocks: linear in depth past 63 positions, O(log n) only while the "
             "dilation keeps doubling")
    return conclude(ctx, checks, figures, setup, pictures={"receptive-field": fig}, quick=f"depths up to {deepest}")


# -- static word vectors: one vector per word; fastText's n-grams for unseen words ---------------------------

CATEGORIES = {
    "colour": "red blue green black white yellow orange pink brown gray".split(),
    "number": "two three four five".split(),
    "clothing": "shirt jacket hat dress pants jeans coat shorts".split(),
    "person": "man woman boy girl child lady person baby".split(),
    "place": "beach street park field snow water city building road".split(),
    "sport": "soccer football baseball tennis basketball".split(),
}
CATEGORY_FACTOR, OOV_FACTOR, HELD_OUT = 2.0, 5.0, 40


VERBS = ("walk play watch climb paint jump kick carry push pull throw catch wash clean fix hold open lift drag "
         "touch help follow visit greet call read").split()


def generated_captions(path: Path, lines: int, seed: int) -> Path:
    """Caption-like sentences over the category words and made-up object nouns, with verbs in four forms (walk,
    walks, walking, walked) at Zipf-like frequencies, so some forms are rare: the stand-in when Multi30k is absent."""
    rng = random.Random(seed)
    syllables = ["".join(rng.choice("bcdfglmnprstvz") + rng.choice("aeiou") for _ in range(2)) for _ in range(40)]
    things = sorted({rng.choice(syllables) + rng.choice(syllables)[:2] for _ in range(200)})  # made-up object nouns
    forms = [f for verb in VERBS for f in (verb, verb + "s", verb + "ing", verb + "ed")]
    weights = [1.0 / (1 + i) ** 0.8 for i in range(len(forms))]
    rng.shuffle(weights)
    c = {name: members for name, members in CATEGORIES.items()}
    text = []
    for _ in range(lines):
        verb = rng.choices(forms, weights)[0]
        if rng.random() < 0.5:
            text.append(f"a {rng.choice(c['person'])} in a {rng.choice(c['colour'])} {rng.choice(c['clothing'])} "
                        f"{verb} a {rng.choice(things)} on the {rng.choice(c['place'])}")
        else:
            text.append(f"{rng.choice(c['number'])} {rng.choice(c['person'])} {verb} {rng.choice(c['sport'])} near "
                        f"the {rng.choice(c['place'])} with a {rng.choice(c['colour'])} {rng.choice(things)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def word_vector_corpus(ctx: Context) -> tuple[Path, str]:
    """The English side of Multi30k from ../shared/data, else generated captions written under out_dir."""
    path = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "multi30k" / "tok" / "train.lc.norm.tok.en"
    if path.is_file():
        return path, "Multi30k English train"
    return generated_captions(ctx.out_dir / "static-word-vectors-captions.txt", 6000, ctx.seed), \
        "generated captions (Multi30k not found)"


def category_accuracy(vectors: VectorSet, k: int = 3) -> tuple[float, float, int]:
    """Among the category words in the vocabulary: the fraction of each one's k nearest others (cosine) in its
    category, the same fraction for a random ranking (chance), and how many words were probed."""
    words = [(w, c) for c, members in CATEGORIES.items() for w in members if w in vectors.model.index]
    matrix = F.normalize(torch.stack([vectors.vectors[vectors.model.index[w]] for w, _ in words]), dim=1)
    cosines = matrix @ matrix.T
    cosines.fill_diagonal_(-2.0)
    top = cosines.topk(k, dim=1).indices
    hits = sum(words[j][1] == c for i, (_, c) in enumerate(words) for j in top[i].tolist()) / (k * len(words))
    size = {c: sum(1 for _, d in words if d == c) for c in CATEGORIES}
    chance = sum((size[c] - 1) / (len(words) - 1) for _, c in words) / len(words)
    return hits, chance, len(words)


def held_out_words(path: Path, task: dict[str, Any], seed: int) -> list[str]:
    """HELD_OUT words drawn (seeded) among those of 6+ letters seen 10–100 times and outside the categories."""
    corpus = Corpus(CooccurrenceSpec(**{**task, "name": "cooccurrence", "exclude": []}))
    probes = {w for members in CATEGORIES.values() for w in members}
    pool = [w for w, c in zip(corpus.words, corpus.counts.tolist())
            if 10 <= c <= 100 and len(w) >= 6 and w.isalpha() and w not in probes]
    return sorted(random.Random(seed).sample(pool, min(HELD_OUT, len(pool))))


@experiment(
    name="static-word-vectors",
    era="roads",
    claim="Word2Vec (2013): One vector per word (no context) [...] FastText (2016): Subword n-grams, better OOV, still static.",
    source="seed 004 (Word Representations Before Transformers; Mikolov et al. 2013; Pennington et al. 2014; "
    "Bojanowski et al. 2017)",
    threshold=f"on the English side of Multi30k (generated captions when it is absent), skip-gram, GloVe and fastText trained on the same text with "
    f"{HELD_OUT} held-out words (6+ letters, seen 10–100 times, drawn by seed) removed from their vocabulary: each "
    f"places words of the same category (colours, numbers, clothing, people, places, sports) among a category word's "
    f"3 nearest at ≥ {CATEGORY_FACTOR:.0f}× the chance rate; skip-gram and GloVe have a vector for none of the held-out "
    f"words and fastText for all of them; fastText's n-gram vectors for the held-out words share their 10 nearest words "
    f"with the 10 nearest those words have in a fastText run that saw them (their true neighbours) at ≥ "
    f"{OOV_FACTOR:.0f}× chance (10 / vocabulary)",
)
def static_word_vectors(ctx: Context) -> Outcome:
    path, corpus_name = word_vector_corpus(ctx)
    lines, dim, window = ctx.pick(5000, 29000), ctx.pick(24, 100), ctx.pick(3, 5)
    base = {"path": str(path), "max_lines": lines, "min_count": 5, "window": window}
    held_out = held_out_words(path, base, ctx.seed)
    task = {**base, "exclude": held_out}
    contexts = {**task, "name": "word_contexts", "negatives": 5, "subsample": 1e-3}
    epochs = ctx.pick(2, 5)
    probe_task = WordContextsTask(WordContextsSpec(**contexts), ctx.seed)
    steps = int(epochs * float(probe_task.center_cdf[-1])) // 512
    glove_task = CooccurrenceTask(CooccurrenceSpec(**{**task, "name": "cooccurrence"}), ctx.seed)
    glove_passes = ctx.pick(10, 25)
    glove_steps = glove_passes * len(glove_task.entries["train"][1]) // 2048
    fasttext_model = {"name": "fasttext", "dim": dim, "buckets": ctx.pick(20_000, 200_000)}
    train = {"steps": steps, "batch_size": 512, "optimizer": "adam", "lr": ctx.pick(0.01, 0.003)}
    runs = {
        "skip-gram": fit(quiet_config(contexts, {"name": "skipgram", "dim": dim}, train, seed=ctx.seed), task=probe_task),
        "GloVe": fit(quiet_config({**task, "name": "cooccurrence"}, {"name": "glove", "dim": dim, "x_max": 10.0},
                                  {**train, "steps": glove_steps, "batch_size": 2048, "lr": 0.03}, seed=ctx.seed),
                     task=glove_task),
        "fastText": fit(quiet_config(contexts, fasttext_model, train, seed=ctx.seed), task=probe_task),
    }
    vectors = {label: VectorSet.from_model(run.model) for label, run in runs.items()}
    accuracy = {label: category_accuracy(v) for label, v in vectors.items()}
    chance = accuracy["skip-gram"][1]
    covered = {label: sum(v.vector(w) is not None for w in held_out) for label, v in vectors.items()}

    fasttext = vectors["fastText"]
    seen = VectorSet.from_model(fit(quiet_config({**contexts, "exclude": []}, fasttext_model, train, seed=ctx.seed)).model)
    candidates = tuple(w for w in seen.words if w not in fasttext.model.index)  # only words both models know
    overlap = []  # the unseen word's 10 nearest (n-gram vector) ∩ its 10 nearest when it is seen in training
    for w in held_out:
        unseen_top = {n.word for n in fasttext.neighbours(fasttext.vector(w), 10)}
        seen_top = {n.word for n in seen.neighbours(seen.vector(w), 10, exclude=candidates)}
        overlap.append(len(unseen_top & seen_top) / 10)
    oov_overlap, oov_chance = sum(overlap) / len(overlap), 10 / len(fasttext.words)
    examples = {w: [n.word for n in fasttext.neighbours(fasttext.vector(w), 5)] for w in held_out[:6]}

    figures = {
        "category_accuracy_at_3": {label: round(a[0], 3) for label, a in accuracy.items()},
        "category_chance": round(chance, 3), "category_words": accuracy["skip-gram"][2],
        "held_out_words": len(held_out), "held_out_with_a_vector": covered,
        "fasttext_oov_overlap_at_10_with_seen": round(oov_overlap, 3), "oov_chance": round(oov_chance, 4),
        "fasttext_oov_examples": examples, "vocabulary": len(fasttext.words), "steps": steps, "glove_steps": glove_steps,
        "train_seconds": {label: round(run.seconds, 2) for label, run in runs.items()},
    }
    checks = {
        **{f"{label}: categories ≥ {CATEGORY_FACTOR:.0f}× chance": a[0] >= CATEGORY_FACTOR * chance
           for label, a in accuracy.items()},
        "skip-gram and GloVe: no held-out word has a vector": covered["skip-gram"] == 0 and covered["GloVe"] == 0,
        "fastText: every held-out word has a vector": covered["fastText"] == len(held_out),
        f"fastText OOV neighbours ≥ {OOV_FACTOR:.0f}× chance": oov_overlap >= OOV_FACTOR * oov_chance,
    }
    fig, axes = new_figure(columns=2, size=(4.2, 3.4))
    labels = list(accuracy)
    axes[0].bar(labels, [accuracy[label][0] for label in labels], color=["#1f4e9c", "#2a8c4a", "#c2541b"])
    axes[0].axhline(chance, color="grey", linestyle="--", linewidth=1)
    axes[0].text(2.4, chance + 0.02, "chance", fontsize=7, color="grey", ha="right")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("category words among the 3 nearest")
    axes[0].set_title("One static vector per word", fontsize=9)
    bars = {"skip-gram": covered["skip-gram"] / len(held_out), "GloVe": covered["GloVe"] / len(held_out),
            "fastText": covered["fastText"] / len(held_out)}
    axes[1].bar(list(bars), list(bars.values()), color="#bbbbbb", label="held-out words with a vector")
    axes[1].bar(["fastText"], [oov_overlap], color="#c2541b", width=0.5, label="their 10 nearest ∩ the 10 when seen")
    axes[1].axhline(oov_chance, color="grey", linestyle="--", linewidth=1)
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=7, loc="center left")
    axes[1].set_title(f"{len(held_out)} words never seen in training", fontsize=9)
    setup = (f"{corpus_name}, first {lines} lines, lowercased, min_count 5, window {window}; dim {dim}; "
             f"skip-gram and fastText (n = 3–6, {runs['fastText'].model.buckets} buckets): k = 5 negatives, t = 1e-3, "
             f"{epochs} passes ({steps} steps of 512 centres, Adam); true neighbours of a held-out word from a second fastText run "
             f"on the same text with the word kept; GloVe: x_max 10, α = 0.75, W + W̃, {glove_passes} passes "
             f"over the co-occurrence entries ({glove_steps} steps of 2048); categories: " + "; ".join(f"{c}: {' '.join(m)}" for c, m in CATEGORIES.items()))
    return conclude(ctx, checks, figures, setup, pictures={"word-vectors": fig},
                    quick=f"{lines} lines, dim {dim}, {epochs} passes")
