"""After the Transformer (seed 002, "The Future of Sequence Modeling"; seed 003): state-space models for long
sequences, the lesson that scale matters, delta-rule fast weights, Performer's random features, mixtures of experts
and pre-training then fine-tuning. A plain list of `@experiment` functions; helpers sit beside the one that uses
them."""

from __future__ import annotations

import math
import shutil
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ticker import NullLocator
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from seqlab.data.base import TaskInfo
from seqlab.diagnostics.profile import loglog_slope, peak_tensor_bytes
from seqlab.experiments.base import Context, Outcome, conclude, experiment, fit, median_times, quiet_config
from seqlab.models import build_model
from seqlab.models.ssm import SSMLMSpec
from seqlab.models.transformer import TransformerLMSpec
from seqlab.nn.fast_weights import delta_rule_step, favor_attention, iid_gaussian, orthogonal_gaussian
from seqlab.nn.moe import MoEFeedForward
from seqlab.nn.ssm import S4D
from seqlab.nn.state import state_tensors
from seqlab.nn.transformer import attention_mask, scaled_dot_product_attention
from seqlab.registry import TASKS
from seqlab.report.plots import new_figure
from seqlab.training.trainer import TrainResult

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"

# --- ssm-long-sequences -------------------------------------------------------------------------------------

SSM_WIDTH, SSM_MODES = 32, 16
ADDING_TARGET = 0.02
ADDING_SHORT, ADDING_LONG = 100, 1000
ADDING_MODEL = {"name": "ssm", "d_model": 64, "num_layers": 2, "state_size": 16, "dt_min": 1e-3, "dt_max": 1e-1,
                "d_ff": 64}
ADDING_TRAIN = {"steps": 400, "batch_size": 32, "lr": 1e-2, "warmup_steps": 20, "grad_clip": 1.0,
                "checkpoint": {"every": 0}}


def adding_curriculum(ctx: Context) -> list[tuple[int, TrainResult]]:
    """The adding problem at T = ADDING_SHORT, then (--full) the same model continued at T = ADDING_LONG.

    Started at T = 1000, S4D stays at the constant predictor (MSE 0.153 after 1,500 steps): among ~1,000 unmarked
    values the gradient toward gating the two marked ones is lost in noise. The kernel K̄ is defined for any
    length, so what is learnt at T = 100 (gate, then sum) carries over and only the time scales need to stretch."""
    run = ctx.out_dir / "ssm-long-sequences-adding"
    shutil.rmtree(run, ignore_errors=True)
    stages = [(ADDING_SHORT, fit(quiet_config({"name": "adding", "length": ADDING_SHORT, "eval_size": ctx.pick(256, 1000)},
                                              ADDING_MODEL, ADDING_TRAIN, seed=ctx.seed), out_dir=run))]
    if not ctx.quick:
        longer = {**ADDING_TRAIN, "schedule": "cosine", "init_from": str(run)}
        stages.append((ADDING_LONG, fit(quiet_config({"name": "adding", "length": ADDING_LONG, "eval_size": 1000},
                                                     ADDING_MODEL, longer, seed=ctx.seed))))
    return stages


def state_bytes(state: Any) -> int:
    """Bytes of every tensor in a decoding state (a pytree)."""
    return sum(t.numel() * t.element_size() for t in state_tensors(state))


def generation_memory(model: nn.Module, tokens: int) -> tuple[list[int], list[int]]:
    """Feed `tokens` greedy tokens through the decoding protocol: state bytes and peak tensor bytes of each step."""
    state = model.init_state({}, 1)
    token = torch.tensor([1])
    sizes, peaks = [], []
    with torch.no_grad():
        for _ in range(tokens):
            (logits, state, _), peak = peak_tensor_bytes(lambda: model.step({}, state, token))
            token = logits.argmax(-1)
            sizes.append(state_bytes(state))
            peaks.append(peak)
    return sizes, peaks


@experiment(
    name="ssm-long-sequences",
    era="beyond",
    claim="State Space Models (S4, Mamba): Alternative to attention for long sequences.",
    source="seed 002, \"The Future of Sequence Modeling\" (Gu et al. 2022, S4D; Gu & Dao 2023, Mamba)",
    threshold="fitted log-log slopes over n ≥ 512 of peak tensor memory (bytes counted): S4D's 1 ± 0.25 in both forms "
    "(convolutional by FFT, recurrent), softmax attention's 2 ± 0.25 (time slopes shown beside, not judged); "
    "S4D and Mamba language models "
    "generate with a state of constant bytes (and per-step peak within 5%) while a softmax KV cache grows; "
    f"S4D solves the adding problem read at the last step (test MSE ≤ {ADDING_TARGET}; constant predictor 0.167) "
    f"at T = {ADDING_SHORT} (quick) and, by a length curriculum that continues the same model, at T = {ADDING_LONG} (--full)",
)
def ssm_long_sequences(ctx: Context) -> Outcome:
    sizes = [256 * 2**i for i in range(ctx.pick(5, 7))]  # up to 4096 (quick) or 16384 (full)
    recurrent_sizes = [n for n in sizes if n <= ctx.pick(2048, 4096)]
    torch.manual_seed(ctx.seed)
    s4d = S4D(SSM_WIDTH, SSM_MODES).eval()

    def softmax_attention(x: Tensor) -> Tensor:
        n = x.shape[1]
        return scaled_dot_product_attention(x, x, x, attention_mask(None, True, n, n))[0]

    methods: dict[str, Callable[[Tensor], Any]] = {
        "S4D convolutional (FFT)": s4d, "S4D recurrent": s4d.forward_recurrent, "softmax attention": softmax_attention}
    lengths = {"S4D convolutional (FFT)": sizes, "S4D recurrent": recurrent_sizes, "softmax attention": sizes}
    inputs = {n: torch.randn(1, n, SSM_WIDTH) for n in sizes}
    calls = {(name, n): partial(fn, inputs[n]) for name, fn in methods.items() for n in lengths[name]}
    with torch.no_grad():
        seconds = median_times(calls, repeats=ctx.pick(3, 5))
        peaks = {key: peak_tensor_bytes(call)[1] for key, call in calls.items()}
        recurrent_difference = float((s4d(inputs[256]) - s4d.forward_recurrent(inputs[256])[0]).abs().max())
    time_slope, memory_slope = {}, {}
    for name in methods:
        fitted = [n for n in lengths[name] if n >= 512]
        time_slope[name] = loglog_slope(fitted, [seconds[name, n] for n in fitted])
        memory_slope[name] = loglog_slope(fitted, [peaks[name, n] for n in fitted])

    info = TaskInfo(kind="tokens", output_dim=32, vocab_size=32)
    torch.manual_seed(ctx.seed)
    generated = ctx.pick(100, 500)
    lms = {"S4D LM (state h per layer)": build_model(SSMLMSpec(d_model=32, num_layers=2, state_size=16, d_ff=64), info),
           "Mamba LM (h + conv buffer)": build_model(SSMLMSpec(d_model=32, num_layers=2, state_size=16, selective=True,
                                                               mlp=False), info),
           "softmax Transformer LM (KV cache)": build_model(TransformerLMSpec(
               d_model=32, num_heads=4, num_layers=2, d_ff=64, dropout=0.0, max_len=generated + 1), info)}
    memory = {name: generation_memory(model.eval(), generated) for name, model in lms.items()}

    stages = adding_curriculum(ctx)
    adding_mse = {length: result.final["test"]["loss"] for length, result in stages}

    soft, ssm_names = "softmax attention", ("S4D convolutional (FFT)", "S4D recurrent")
    kv = memory.pop("softmax Transformer LM (KV cache)")[0]
    constant = {name: len(set(s)) == 1 and max(p) <= 1.05 * min(p) for name, (s, p) in memory.items()}
    checks = {
        **{f"{name}: memory slope 1 ± 0.25": abs(memory_slope[name] - 1) <= 0.25 for name in ssm_names},
        "softmax attention: memory slope 2 ± 0.25": abs(memory_slope[soft] - 2) <= 0.25,
        **{f"{name}: constant state while generating": ok for name, ok in constant.items()},
        "softmax KV cache grows": kv[-1] > kv[0],
        **{f"adding T = {length}: test MSE ≤ {ADDING_TARGET}": mse <= ADDING_TARGET for length, mse in adding_mse.items()},
    }
    figures: dict[str, Any] = {"n": sizes, "recurrent_n": recurrent_sizes,
                               "conv_vs_recurrent_max_difference": recurrent_difference}
    for name in methods:
        figures[f"seconds[{name}]"] = [round(seconds[name, n], 5) for n in lengths[name]]
        figures[f"peak_MiB[{name}]"] = [round(peaks[name, n] / 2**20, 3) for n in lengths[name]]
        figures[f"time_slope[{name}]"] = round(time_slope[name], 3)
        figures[f"memory_slope[{name}]"] = round(memory_slope[name], 3)
    for name, (sizes_, peaks_) in memory.items():
        figures[f"state_bytes_first_last[{name}]"] = [sizes_[0], sizes_[-1]]
        figures[f"step_peak_bytes_min_max[{name}]"] = [min(peaks_), max(peaks_)]
    figures["kv_cache_bytes_first_last"] = [kv[0], kv[-1]]
    figures.update({"adding_test_mse": {length: round(mse, 5) for length, mse in adding_mse.items()},
                    "adding_constant_baseline_mse": 1 / 6, "adding_steps": {length: r.steps for length, r in stages},
                    "adding_parameters": stages[0][1].parameters})

    fig, axes = new_figure(columns=4, size=(4.2, 3.6))
    for name in methods:
        ns = lengths[name]
        axes[0].plot(ns, [seconds[name, n] for n in ns], marker="o", label=f"{name}: {time_slope[name]:.2f}")
        axes[1].plot(ns, [peaks[name, n] / 2**20 for n in ns], marker="o", label=f"{name}: {memory_slope[name]:.2f}")
    for ax, label in zip(axes[:2], ("seconds (forward)", "peak tensor memory (MiB)")):
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=label)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(sizes, [str(n) for n in sizes], fontsize=6)
        ax.legend(fontsize=6, title="log-log slope", title_fontsize=6)
    axes[0].set_title("Time", fontsize=9)
    axes[1].set_title("Memory", fontsize=9)
    for name, (sizes_, _) in memory.items():
        axes[2].plot(np.arange(1, generated + 1), np.array(sizes_) / 1024, label=name)
    axes[2].plot(np.arange(1, generated + 1), np.array(kv) / 1024, label="softmax Transformer LM (KV cache)")
    axes[2].set(xlabel="tokens generated", ylabel="decoder state (KiB)", title="State carried between tokens")
    axes[2].title.set_fontsize(9)
    axes[2].legend(fontsize=6)
    start = 0
    for length, result in stages:
        losses = [record["loss"] for record in result.history]
        axes[3].plot(np.arange(start + 1, start + len(losses) + 1), losses, linewidth=0.8, label=f"T = {length}")
        start += len(losses)
    axes[3].axhline(1 / 6, color="grey", linestyle="--", label="constant predictor")
    axes[3].axhline(ADDING_TARGET, color="black", linestyle=":", label=f"target {ADDING_TARGET}")
    axes[3].set(yscale="log", xlabel="training step", ylabel="training MSE", title="Adding problem, S4D")
    axes[3].title.set_fontsize(9)
    axes[3].legend(fontsize=6)
    setup = (f"S4D layer {SSM_WIDTH} channels × {SSM_MODES} complex modes, one sequence, forward without gradients, "
             f"median of interleaved repeats on one thread; softmax attention is the reference softmax(QKᵀ/√d)V "
             f"(d = {SSM_WIDTH}, causal) that materialises the n×n weights; peak memory counts tensor bytes per ATen "
             f"operation (seqlab.diagnostics.profile). Generation: {generated} greedy tokens through `step` of untrained "
             f"2-layer LMs 32 wide. Adding problem: `ssm` model (2 S4D blocks, 64 channels, 16 modes, Δ in [1e-3, 1e-1], "
             f"gated MLP, read at the last position), {ADDING_TRAIN['steps']} steps of AdamW {ADDING_TRAIN['lr']:g}, "
             f"batch {ADDING_TRAIN['batch_size']}, at "
             f"T = {ADDING_SHORT}; --full continues the same weights for {ADDING_TRAIN['steps']} steps at T = {ADDING_LONG} "
             f"(train.init_from, cosine decay), since from scratch at T = {ADDING_LONG} S4D stays at the constant predictor")
    return conclude(ctx, checks, figures, setup, {"time-memory-state": fig},
                    quick=f"n ≤ {sizes[-1]} (recurrent ≤ {recurrent_sizes[-1]}), adding at T = {ADDING_SHORT} only")


# --- scale-matters --------------------------------------------------------------------------------------------


def power_law(N: np.ndarray, loss: np.ndarray) -> tuple[float, float, float]:
    """Least-squares L(N) = a·N^(−α) + c: for each c on a grid below min L, log(L − c) = log a − α log N is a line;
    the c whose line fits L best wins. Returns (a, α, c)."""
    best = (np.inf, 0.0, 0.0, 0.0)
    for c in np.linspace(0.0, 0.999 * float(loss.min()), 400):
        slope, intercept = np.polyfit(np.log(N), np.log(loss - c), 1)
        error = float(((np.exp(intercept) * N**slope + c - loss) ** 2).sum())
        if error < best[0]:
            best = (error, float(np.exp(intercept)), float(-slope), float(c))
    return best[1], best[2], best[3]


def scale_corpus(ctx: Context) -> tuple[dict[str, Any], str]:
    """names.txt (quick) or tinyshakespeare (full) from ../shared/data, else a generated text written under out_dir."""
    names, shakespeare = DATA / "names" / "names.txt", DATA / "tinyshakespeare" / "input.txt"
    if ctx.quick and names.is_file():
        return {"name": "lm", "path": str(names), "format": "lines", "level": "char"}, "names.txt"
    if not ctx.quick and shakespeare.is_file():
        return {"name": "lm", "path": str(shakespeare), "format": "text", "level": "char", "block_size": 64}, "tinyshakespeare"
    rng = np.random.default_rng(ctx.seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    syllables = ["".join(rng.choice(letters, size=int(rng.integers(2, 4)))) for _ in range(60)]
    words = ["".join(rng.choice(syllables, size=int(rng.integers(1, 4)))) for _ in range(400)]
    lines = [str(rng.choice(words)) for _ in range(20000)]
    path = ctx.out_dir / "scale-matters-words.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"name": "lm", "path": str(path), "format": "lines", "level": "char"}, "generated words (no data found)"


SCALE_STEP_TOLERANCE = 0.02
SCALE_LR, SCALE_LR_WIDTH = 1e-2, 32


def width_scaled_lr(d_model: int) -> float:
    """Adam's learning rate ∝ 1/width above SCALE_LR_WIDTH (μP, Yang & Hu 2021): at one fixed lr the widest
    models become unstable and the loss stops falling with size for want of tuning, not of capacity."""
    return SCALE_LR * min(1.0, SCALE_LR_WIDTH / d_model)


@experiment(
    name="scale-matters",
    era="beyond",
    claim="Scale matters: Larger models + more data = better performance.",
    source="seed 002, \"Lessons from History\" (GPT-2 2019, GPT-3 2020; Kaplan et al. 2020)",
    threshold=f"at one fixed token budget, the test loss of 6 Transformer LMs falls steadily with parameter count "
    f"(each size at most {SCALE_STEP_TOLERANCE} nats above the next smaller one, the largest ≥ 0.1 nats below the "
    "smallest) and the fitted power law L(N) = a·N^(−α) + c has α > 0",
)
def scale_matters(ctx: Context) -> Outcome:
    task, corpus = scale_corpus(ctx)
    widths = ctx.pick([8, 12, 16, 24, 32, 48], [16, 32, 48, 64, 96, 128])
    layers = ctx.pick(1, 2)
    steps, batch = ctx.pick(130, 1500), 32
    lrs = [width_scaled_lr(d) for d in widths]
    runs = []
    for d, lr in zip(widths, lrs):
        model = {"name": "transformer_lm", "d_model": d, "num_heads": 4 if d % 4 == 0 else 2, "num_layers": layers,
                 "d_ff": 4 * d, "dropout": 0.0, "positional": "learned", "norm_first": True,
                 "max_len": ctx.pick(32, 64)}
        train = {"steps": steps, "batch_size": batch, "lr": lr, "warmup_steps": 20, "schedule": "cosine",
                 "min_lr_ratio": 0.1, "grad_clip": 1.0, "eval_batches": ctx.pick(5, 20)}
        runs.append(fit(quiet_config(task, model, train, seed=ctx.seed)))
    N = np.array([run.parameters for run in runs], dtype=float)
    loss = np.array([run.final["test"]["loss"] for run in runs])
    a, alpha, c = power_law(N, loss)
    tokens = int(sum(record["targets"] for record in runs[0].history))

    steady = all(loss[i + 1] <= loss[i] + SCALE_STEP_TOLERANCE for i in range(len(loss) - 1))
    checks = {f"each larger model within {SCALE_STEP_TOLERANCE} nats of the smaller or below": steady,
              "largest ≥ 0.1 nats below the smallest": loss[-1] <= loss[0] - 0.1,
              "fitted α > 0": alpha > 0}
    fig, [ax] = new_figure(size=(5.0, 3.8))
    ax.plot(N, loss, "o", label="test loss")
    grid = np.geomspace(N.min(), N.max(), 100)
    ax.plot(grid, a * grid ** (-alpha) + c, "-", label=f"L(N) = {a:.2f}·N^(−{alpha:.2f}) + {c:.2f}")
    ax.set(xscale="log", xlabel="parameters N", ylabel="test loss (nats per character)",
           title=f"Transformer LMs on {corpus}, one token budget")
    ax.legend(fontsize=8)
    figures = {"corpus": corpus, "d_model": widths, "layers": layers, "parameters": [int(n) for n in N],
               "test_loss": [round(float(v), 4) for v in loss], "alpha": round(alpha, 4), "a": round(a, 4),
               "c": round(c, 4), "lr": lrs, "steps": steps, "batch_size": batch,
               "training_tokens_per_model": tokens}
    setup = (f"transformer_lm (pre-norm, learned positions, d_ff = 4·d_model, {layers} layer(s)) at d_model "
             f"{', '.join(map(str, widths))}; every model {steps} steps of {batch} sequences (the same tokens), AdamW at "
             f"{SCALE_LR:g}·min(1, {SCALE_LR_WIDTH}/d_model) with warm-up and cosine decay; test loss on the corpus's "
             f"held-out split; power law fitted by least squares with c on a grid")
    return conclude(ctx, checks, figures, setup, {"loss-vs-parameters": fig},
                    quick="names.txt, 1 layer, 130 steps (full: tinyshakespeare, 2 layers, 1500 steps)")


# --- fast-weight-capacity --------------------------------------------------------------------------

CAPACITY_D = 16  # key (feature) dimension of the memory
CAPACITY_KEYS = 8  # distinct keys in the update setting, each rewritten with new values


def _write_and_read(keys: Tensor, values: Tensor, queries: Tensor) -> dict[str, Tensor]:
    """Write the pairs (keys, values) (trials, n, d) in order with each rule, then read at `queries`:
    sum rule W = Σ v kᵀ, delta rule W ← W + (v − W k) kᵀ (β = 1), softmax attention over all n pairs."""
    W_sum = values.transpose(-2, -1) @ keys
    W_delta = values.new_zeros(keys.shape[0], values.shape[-1], keys.shape[-1])
    ones = values.new_ones(keys.shape[0])
    for t in range(keys.shape[1]):
        _, W_delta = delta_rule_step(W_delta, keys[:, t], keys[:, t], values[:, t], ones)
    softmax = torch.softmax(SOFTMAX_SHARPNESS * queries @ keys.transpose(-2, -1), dim=-1) @ values
    return {"sum rule (linear attention)": queries @ W_sum.transpose(-2, -1),
            "delta rule": queries @ W_delta.transpose(-2, -1), "softmax attention": softmax}


SOFTMAX_SHARPNESS = 8.0


def _recall_errors(n: int, rewrite: bool, trials: int, g: torch.Generator) -> dict[str, float]:
    """Relative squared error ‖ŷ − v‖²/‖v‖² of reading every key's latest value after n writes: with
    `rewrite`, n writes over CAPACITY_KEYS keys (each written once, then rewritten at random with new values);
    otherwise n distinct keys."""
    distinct = CAPACITY_KEYS if rewrite else n
    table = F.normalize(torch.randn(trials, distinct, CAPACITY_D, generator=g), dim=-1)
    if rewrite:
        order = torch.cat([torch.arange(min(n, distinct)).expand(trials, -1),
                           torch.randint(0, distinct, (trials, max(0, n - distinct)), generator=g)], dim=1)
    else:
        order = torch.arange(n).expand(trials, -1)
    keys = torch.gather(table, 1, order[..., None].expand(-1, -1, CAPACITY_D))
    values = torch.randn(trials, n, CAPACITY_D, generator=g)
    stored = min(n, distinct)
    last = torch.zeros(trials, stored, dtype=torch.long)
    for t in range(n):  # the time of each key's latest write
        last[torch.arange(trials), order[:, t]] = t
    target = torch.gather(values, 1, last[..., None].expand(-1, -1, CAPACITY_D))
    reads = _write_and_read(keys, values, table[:, :stored])
    norm = target.pow(2).sum(-1).mean()
    return {rule: float((y - target).pow(2).sum(-1).mean() / norm) for rule, y in reads.items()}


@experiment(
    name="fast-weight-capacity",
    era="beyond",
    claim="We infer a memory capacity limitation of recent linearised softmax attention variants, and replace "
    "the purely additive outer products by a delta rule-like programming instruction, such that the FWP can "
    "more easily learn to correct the current mapping from keys to values.",
    source="seed 003 (Schlag, Irie & Schmidhuber 2021, \"Linear Transformers Are Secretly Fast Weight Programmers\")",
    threshold=f"writing n = 8 … 256 pairs (up to 16× the key dimension d = {CAPACITY_D}) over {CAPACITY_KEYS} keys "
    "whose values are rewritten, then reading each key's latest value: the sum rule's relative error at n = 256 is "
    "≥ 10× its error at n = 8, the delta rule's at n = 256 is ≤ 2× its error at n = d and ≤ 1/10 of the sum rule's; "
    "softmax attention over the n pairs is exact (error < 0.01) while each key is written once; with n distinct "
    "keys, softmax stays below 0.1 at n = 8d while both fast-weight memories (d × d) exceed 0.5",
)
def fast_weight_capacity(ctx: Context) -> Outcome:
    g = torch.Generator().manual_seed(ctx.seed)
    trials = ctx.pick(64, 512)
    writes = [8, 16, 32, 64, 128, 256]
    rewritten = {n: _recall_errors(n, True, trials, g) for n in writes}
    distinct = {n: _recall_errors(n, False, trials, g) for n in [4, 8, 16, 32, 64, 128]}
    rules = list(rewritten[writes[0]])
    sum_rule, delta, softmax = rules

    fig, axes = new_figure(columns=2, size=(4.6, 3.6))
    for ax, table, title in ((axes[0], rewritten, f"{CAPACITY_KEYS} keys, values rewritten"),
                             (axes[1], distinct, "n distinct keys")):
        for rule in rules:
            ax.plot(list(table), [table[n][rule] for n in table], marker="o", label=rule)
        ax.axvline(CAPACITY_D, color="grey", linestyle=":", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="pairs written n (dotted: key dimension d)",
               ylabel="relative retrieval error", title=title)
        ax.legend(fontsize=7)

    checks = {
        "sum rule's error grows ≥ 10× from n = 8 to 256": rewritten[256][sum_rule] >= 10 * rewritten[8][sum_rule],
        "delta rule's error at n = 256 ≤ 2× its error at n = d": rewritten[256][delta] <= 2 * rewritten[CAPACITY_D][delta],
        "delta rule ≤ 1/10 of the sum rule at n = 256": rewritten[256][delta] <= 0.1 * rewritten[256][sum_rule],
        "softmax exact while each key is written once": rewritten[8][softmax] < 0.01,
        "distinct keys beyond d: softmax < 0.1, both d × d memories > 0.5":
            distinct[128][softmax] < 0.1 and min(distinct[128][sum_rule], distinct[128][delta]) > 0.5,
    }
    figures = {
        "key_dimension": CAPACITY_D,
        "rewritten_errors": {n: {rule: round(e, 4) for rule, e in errors.items()} for n, errors in rewritten.items()},
        "distinct_errors": {n: {rule: round(e, 4) for rule, e in errors.items()} for n, errors in distinct.items()},
    }
    setup = (f"keys: random unit vectors in d = {CAPACITY_D} (the φ(k) a memory sees), values N(0, I_{CAPACITY_D}); "
             f"{trials} trials per n; fast weights W ({CAPACITY_D} × {CAPACITY_D}) written by the sum rule "
             "W ← W + v kᵀ or the delta rule W ← W + β (v − W k) kᵀ with β = 1 (no training: the update rules "
             f"themselves); softmax attention softmax({SOFTMAX_SHARPNESS:g} qKᵀ)V over every pair written (its cache "
             "grows with n). Error: ‖ŷ − v‖²/‖v‖² for each key's latest value; 1 is the error of answering 0. "
             "Softmax attention averages a key's old and new values, so rewrites hurt it as they hurt the sum rule")
    return conclude(ctx, checks, figures, setup, pictures={"error-vs-pairs": fig}, quick=f"{trials} trials per n")


# --- performer-approximation -----------------------------------------------------------------------


PERFORMER_D, PERFORMER_T = 16, 64


def _favor_errors(features: list[int], draws: int, g: torch.Generator) -> dict[str, list[float]]:
    """Relative error ‖FAVOR+ − softmax attention‖/‖softmax attention‖, mean over `draws` feature draws."""
    q, k, v = (torch.randn(8, 1, PERFORMER_T, PERFORMER_D, generator=g) for _ in range(3))
    q, k = 0.5 * q, 0.5 * k
    exact = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(PERFORMER_D), dim=-1) @ v
    errors: dict[str, list[float]] = {}
    for label, draw in (("orthogonal ω", orthogonal_gaussian), ("independent ω", iid_gaussian)):
        errors[label] = []
        for m in features:
            runs = [float((favor_attention(q, k, v, draw(m, PERFORMER_D, g)) - exact).norm() / exact.norm())
                    for _ in range(draws)]
            errors[label].append(sum(runs) / draws)
    return errors


NAMES = DATA / "names" / "names.txt"
NAMES_LM: dict[str, Any] = {"name": "transformer_lm", "d_model": 32, "num_heads": 4, "num_layers": 2, "d_ff": 128,
                            "dropout": 0.0, "positional": "learned", "norm_first": True, "max_len": 32}
NAMES_TRAIN: dict[str, Any] = {"batch_size": 32, "lr": 0.01, "warmup_steps": 20, "grad_clip": 1.0, "eval_batches": 8}


def _names_task(ctx: Context) -> dict[str, Any]:
    """names.txt (makemore's 32K names) as a character LM task, one name per sequence; where it is absent,
    3,000 names drawn from a fixed random letter bigram chain stand in (written under the tour's output)."""
    path = NAMES
    if not path.is_file():
        path = ctx.out_dir / "generated-names.txt"
        g = torch.Generator().manual_seed(0)
        chain = torch.softmax(3 * torch.randn(27, 27, generator=g), dim=-1)  # row 0: start, column 0: end
        names = []
        for _ in range(3000):
            letters, current = [], 0
            while len(letters) < 12 and (current := int(torch.multinomial(chain[current], 1, generator=g))) != 0:
                letters.append(chr(ord("a") + current - 1))
            names.append("".join(letters) or "a")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return {"name": "lm", "path": str(path), "format": "lines", "level": "char", "val_fraction": 0.02,
            "test_fraction": 0.03}


@experiment(
    name="performer-approximation",
    era="beyond",
    claim="Performers [...] use a novel Fast Attention Via positive Orthogonal Random features approach "
    "(FAVOR+) [...] to approximate softmax attention-kernels.",
    source="seed 003 (\"Rethinking Attention with Performers\", Choromanski et al. 2020)",
    threshold="the relative error of FAVOR+ against exact softmax attention falls with the number of random "
    "features m = 8 … 2048 with a fitted log-log slope between −0.7 and −0.3 (1/√m is −0.5) for both orthogonal "
    "and independent features, and the error at m = 2048 is ≤ 1/4 of that at m = 8; --full also trains "
    "softmax and Performer LMs of equal size on names and reports the test-loss gap (Performer ≤ 0.15 nats above)",
)
def performer_approximation(ctx: Context) -> Outcome:
    g = torch.Generator().manual_seed(ctx.seed)
    features = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    draws = ctx.pick(8, 32)
    errors = _favor_errors(features, draws, g)
    slopes = {label: loglog_slope(features, values) for label, values in errors.items()}

    fig, axes = new_figure()
    for label, values in errors.items():
        axes[0].plot(features, values, marker="o", label=f"{label} (slope {slopes[label]:.2f})")
    reference = [errors["independent ω"][0] * math.sqrt(features[0] / m) for m in features]
    axes[0].plot(features, reference, linestyle="--", color="grey", label="∝ 1/√m")
    axes[0].set(xscale="log", yscale="log", xlabel="random features m", ylabel="relative error of attention output",
                title="FAVOR+ against softmax attention")
    axes[0].legend(fontsize=7)
    pictures: dict[str, Any] = {"error-vs-features": fig}

    checks = {f"{label}: slope in [−0.7, −0.3]": -0.7 <= slope <= -0.3 for label, slope in slopes.items()}
    checks.update({f"{label}: error at m = 2048 ≤ 1/4 of m = 8": values[-1] <= 0.25 * values[0]
                   for label, values in errors.items()})
    figures: dict[str, Any] = {"features": features, "errors": {k: [round(e, 4) for e in v] for k, v in errors.items()},
                               "slopes": {k: round(s, 3) for k, s in slopes.items()}}
    setup = (f"q, k ~ N(0, 0.5² I), v ~ N(0, I) with d = {PERFORMER_D}, 8 sequences of T = {PERFORMER_T}; "
             f"non-causal attention; error ‖ŷ − y‖/‖y‖ averaged over {draws} draws of ω per m")
    if not ctx.quick:
        losses = {}
        for attention in ("softmax", "performer"):
            model = {**NAMES_LM, "attention": attention}
            result = fit(quiet_config(_names_task(ctx), model, {**NAMES_TRAIN, "steps": 2000}, seed=ctx.seed))
            losses[attention] = result.final["test"]["loss"]
        gap = losses["performer"] - losses["softmax"]
        figures.update({"names_test_loss": losses, "performer_minus_softmax": round(gap, 4)})
        checks["Performer LM within 0.15 nats of softmax"] = gap <= 0.15
        setup += "; LMs: 2-layer transformer_lm, d_model 32, 4 heads (m = 64 features per head), 2,000 steps on names"
    return conclude(ctx, checks, figures, setup, pictures=pictures,
                    quick=f"{draws} draws per m, no LM training (--full trains both LMs on names)")


# --- mixture-of-experts ----------------------------------------------------------------------------


MOE_EXPERTS, MOE_SIZES, MOE_BALANCE = 8, {"d_model": 32, "d_ff": 32}, 0.1


def _flops_per_token(model: nn.Module, batch: dict[str, Tensor]) -> float:
    """Matrix-multiply FLOPs of one forward pass over `batch` per token, as torch's FLOP counter counts the
    operations actually run (an expert's matrices count only for the rows routed to it)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(batch)
    return counter.get_total_flops() / batch["inputs"].numel()


def _routing(model: nn.Module, batch: dict[str, Tensor]) -> tuple[list[list[float]], int, int]:
    """Per MoE layer the fraction of `batch`'s tokens each expert computes; rows the experts computed in
    all; tokens × MoE layers."""
    layers = [module for module in model.modules() if isinstance(module, MoEFeedForward)]
    rows = [[0] * layer.num_experts for layer in layers]
    hooks = [expert.register_forward_hook(partial(_count_rows, rows[i], j))
             for i, layer in enumerate(layers) for j, expert in enumerate(layer.experts)]
    with torch.no_grad():
        model.eval()(batch)
    for hook in hooks:
        hook.remove()
    tokens = batch["inputs"].numel()
    return [[r / tokens for r in layer] for layer in rows], sum(map(sum, rows)), tokens * len(layers)


def _count_rows(counts: list[int], index: int, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    counts[index] += inputs[0].shape[0]


@experiment(
    name="mixture-of-experts",
    era="beyond",
    claim="Mixture of Experts: Sparse models with large capacity.",
    source="seed 002, \"The Future of Sequence Modeling\" (Shazeer et al. 2017; Fedus et al. 2021)",
    threshold=f"a Transformer LM whose feed-forward layers are {MOE_EXPERTS} top-1 experts of the dense model's size: "
    "matrix-multiply FLOPs per token (counted) ≤ 1.1× the dense model's, feed-forward parameters "
    f"≥ {0.95 * MOE_EXPERTS:g}× (≈ E×), the experts compute exactly one row per token and layer (sparse, not E), "
    "every expert takes ≥ 1/(4E) of the test tokens (balanced); --full: after the same 3,000 steps on names its "
    "test loss is below the dense model's",
)
def mixture_of_experts(ctx: Context) -> Outcome:
    dense_spec = {**NAMES_LM, **MOE_SIZES}
    moe_spec = {**dense_spec, "ffn": "moe", "experts": MOE_EXPERTS, "top_k": 1, "balance_weight": MOE_BALANCE}
    train = {**NAMES_TRAIN, "steps": ctx.pick(120, 3000)}
    configs = {label: quiet_config(_names_task(ctx), spec, train, seed=ctx.seed)
               for label, spec in (("dense", dense_spec), ("mixture of experts", moe_spec))}
    task = TASKS.build(configs["dense"].task, ctx.seed)  # read names.txt once for both runs
    results = {label: fit(config, task=task) for label, config in configs.items()}
    moe = results["mixture of experts"]
    losses = {label: result.final["test"]["loss"] for label, result in results.items()}
    ffn_params = {label: sum(p.numel() for name, p in result.model.named_parameters() if ".ffn." in name)
                  for label, result in results.items()}
    probe = next(iter(task.eval_batches("test", 256)))
    flops = {label: _flops_per_token(result.model, probe) for label, result in results.items()}
    load, rows, routed = _routing(moe.model, probe)

    fig, axes = new_figure(columns=2, size=(4.4, 3.4))
    width = 0.8 / len(load)
    for i, fractions in enumerate(load):
        axes[0].bar(np.arange(MOE_EXPERTS) + i * width, fractions, width, label=f"layer {i + 1}")
    axes[0].axhline(1 / MOE_EXPERTS, color="grey", linestyle="--", label="uniform 1/E")
    axes[0].set(xlabel="expert", ylabel="fraction of test tokens", title="Expert load after training")
    axes[0].legend(fontsize=7)
    for label, result in results.items():
        steps, values = zip(*[(r["step"], r["loss"]) for r in result.history if "loss" in r])
        axes[1].plot(steps, values, label=f"{label} ({result.parameters:,} parameters)", alpha=0.8)
    axes[1].set(xlabel="step", ylabel="training loss (nats/char)", title="Dense against mixture of experts")
    axes[1].legend(fontsize=7)

    checks = {
        "FLOPs per token ≤ 1.1× dense": flops["mixture of experts"] <= 1.1 * flops["dense"],
        f"feed-forward parameters ≥ {0.95 * MOE_EXPERTS:g}× dense":
            ffn_params["mixture of experts"] >= 0.95 * MOE_EXPERTS * ffn_params["dense"],
        "experts computed one row per token and layer": rows == routed,
        "every expert takes ≥ 1/(4E) of the tokens": min(map(min, load)) >= 1 / (4 * MOE_EXPERTS),
    }
    if not ctx.quick:
        checks["test loss below dense after the same steps"] = losses["mixture of experts"] < losses["dense"]
    figures = {
        "flops_per_token": {label: round(f) for label, f in flops.items()},
        "flop_ratio": round(flops["mixture of experts"] / flops["dense"], 3),
        "ffn_parameters": ffn_params,
        "ffn_parameter_ratio": round(ffn_params["mixture of experts"] / ffn_params["dense"], 3),
        "parameters": {label: result.parameters for label, result in results.items()},
        "test_loss": {label: round(loss, 4) for label, loss in losses.items()},
        "test_loss_moe_minus_dense": round(losses["mixture of experts"] - losses["dense"], 4),
        "expert_load": [[round(f, 3) for f in layer] for layer in load],
        "expert_rows_per_token_and_layer": rows / routed, "steps": train["steps"],
    }
    setup = (f"names.txt, character LM: {dense_spec['num_layers']} pre-norm layers, d_model {MOE_SIZES['d_model']}, "
             f"4 heads; dense d_ff {MOE_SIZES['d_ff']} against {MOE_EXPERTS} experts of d_ff {MOE_SIZES['d_ff']}, top-1 "
             f"(Switch) routing, load-balancing loss α = {MOE_BALANCE} (Switch uses 0.01, too weak to balance "
             f"within the quick run); both trained {train['steps']} steps of "
             f"{train['batch_size']} names (AdamW lr {train['lr']}, same seed and data order); FLOPs per token "
             "from torch.utils.flop_counter on a test batch of 256 names, expert rows and load from hooks on it")
    return conclude(ctx, checks, figures, setup, pictures={"experts": fig},
                    quick=f"{train['steps']} steps, the loss is reported but judged only in --full (3,000 steps)")


# --- pretrain-transfer -----------------------------------------------------------------------------

TRANSFER_MODEL: dict[str, Any] = {"name": "transformer_encoder", "d_model": 64, "num_heads": 4, "d_ff": 256,
                                  "num_layers": 2, "causal": True, "dropout": 0.0}
TRANSFER_LABELLED, TRANSFER_QUICK_GAP, TRANSFER_FULL_GAP = 200, 0.05, 0.08


def transfer_corpus(ctx: Context) -> tuple[dict[str, Any], str]:
    """Multi30k's 29,000 English training captions as lines of words; where they are absent, 20,000 sentences
    of a fixed random word-bigram chain (written under the tour's output) stand in."""
    fields = {"level": "word", "min_freq": 2, "max_vocab": 1000, "val_fraction": 0.03, "test_fraction": 0.03}
    captions = DATA / "multi30k" / "tok" / "train.lc.norm.tok.en"
    if captions.is_file():
        return {"path": str(captions), **fields}, "Multi30k English captions"
    g = torch.Generator().manual_seed(0)
    chain = torch.softmax(4 * torch.randn(300, 300, generator=g), dim=-1)
    sentences = []
    for _ in range(20000):
        words = [int(torch.randint(300, (1,), generator=g))]
        for _ in range(int(torch.randint(6, 14, (1,), generator=g))):
            words.append(int(torch.multinomial(chain[words[-1]], 1, generator=g)))
        sentences.append(" ".join(f"w{w}" for w in words))
    path = ctx.out_dir / "generated-sentences.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return {"path": str(path), **fields}, "generated word-bigram sentences (no data found)"


@experiment(
    name="pretrain-transfer",
    era="beyond",
    claim="Transfer Learning: Pre-trained models can be adapted to many downstream tasks.",
    source="seed 002, \"Lessons from History\" (BERT 2018, GPT-2 2019: pre-training + fine-tuning)",
    threshold=f"a causal Transformer pre-trained as a language model on unlabelled lines, then fine-tuned on "
    f"{TRANSFER_LABELLED} labelled lines (real, or the inner words shuffled), beats the same model trained from "
    f"scratch on them in test accuracy, in every seed, by ≥ {TRANSFER_QUICK_GAP:.0%} on average "
    f"(--full: ≥ {TRANSFER_FULL_GAP:.0%}, with a longer pre-training; it also reports 100 … 800 labelled lines)",
)
def pretrain_transfer(ctx: Context) -> Outcome:
    corpus, corpus_name = transfer_corpus(ctx)
    pre_steps = ctx.pick(250, 1500)
    run = ctx.out_dir / "pretrain-transfer-lm"
    shutil.rmtree(run, ignore_errors=True)
    pre_train = {"steps": pre_steps, "batch_size": 64, "lr": 1e-2, "warmup_steps": 50, "schedule": "cosine",
                 "grad_clip": 1.0, "eval_batches": 4, "checkpoint": {"every": 0}}
    pretrained = fit(quiet_config({"name": "lm", "format": "lines", **corpus}, TRANSFER_MODEL, pre_train,
                                  seed=ctx.seed), out_dir=run)
    sizes, seeds = ctx.pick([TRANSFER_LABELLED], [100, 200, 400, 800]), ctx.pick(2, 4)
    fine_tune = {"steps": ctx.pick(150, 300), "batch_size": 32, "lr": 1e-3, "warmup_steps": 20, "grad_clip": 1.0}
    accuracy: dict[str, dict[int, list[float]]] = {"pre-trained": {}, "from scratch": {}}
    curves: dict[str, list[float]] = {}
    for size in sizes:
        labelled = {"name": "real_or_shuffled", "train_size": size, "min_tokens": 6, **corpus}
        task = TASKS.build(quiet_config(labelled, {**TRANSFER_MODEL, "pooling": "mean"}).task, ctx.seed)
        for label, init in (("pre-trained", str(run)), ("from scratch", None)):
            for seed in range(ctx.seed, ctx.seed + seeds):
                config = quiet_config(labelled, {**TRANSFER_MODEL, "pooling": "mean"}, {**fine_tune, "init_from": init},
                                      seed=seed)
                result = fit(config, task=task)
                accuracy[label].setdefault(size, []).append(result.final["test"]["accuracy"])
                if size == TRANSFER_LABELLED and seed == ctx.seed:
                    curves[label] = [record["loss"] for record in result.history]
    gaps = {size: [p - s for p, s in zip(accuracy["pre-trained"][size], accuracy["from scratch"][size])]
            for size in sizes}
    mean_gap = float(np.mean(gaps[TRANSFER_LABELLED]))

    fig, axes = new_figure(columns=2, size=(4.4, 3.4))
    for offset, (label, by_size) in zip((-0.2, 0.2), accuracy.items()):
        means = [float(np.mean(by_size[size])) for size in sizes]
        axes[0].bar(np.arange(len(sizes)) + offset, means, 0.4, label=label)
        for i, size in enumerate(sizes):
            axes[0].plot([i + offset] * len(by_size[size]), by_size[size], "k.", markersize=4)
    axes[0].axhline(0.5, color="grey", linestyle="--", label="chance")
    axes[0].set(xticks=range(len(sizes)), xticklabels=[str(size) for size in sizes], ylim=(0.4, 1.0),
                xlabel="labelled training lines", ylabel="test accuracy", title="Real or shuffled?")
    axes[0].legend(fontsize=7)
    for label, losses in curves.items():
        axes[1].plot(range(1, len(losses) + 1), losses, label=label)
    axes[1].set(xlabel="fine-tuning step", ylabel="training loss (nats)",
                title=f"Fine-tuning on {TRANSFER_LABELLED} lines (seed {ctx.seed})")
    axes[1].legend(fontsize=7)

    bar = ctx.pick(TRANSFER_QUICK_GAP, TRANSFER_FULL_GAP)
    checks = {"pre-trained beats scratch in every seed": min(gaps[TRANSFER_LABELLED]) > 0,
              f"mean gap ≥ {bar:.0%}": mean_gap >= bar}
    figures = {"corpus": corpus_name, "pretraining_steps": pre_steps,
               "pretraining_test_loss": round(pretrained.final["test"]["loss"], 4),
               "test_accuracy": {label: {size: [round(a, 4) for a in values] for size, values in by_size.items()}
                                 for label, by_size in accuracy.items()},
               "mean_gap": {size: round(float(np.mean(values)), 4) for size, values in gaps.items()},
               "fine_tuning_steps": fine_tune["steps"], "seeds": seeds}
    setup = (f"{corpus_name}, word level (the 1,000 most frequent words); transformer_encoder, causal, 2 layers, "
             f"d_model 64, 4 heads, mean-pooled for classification. Pre-training: next-word prediction, {pre_steps} steps "
             f"of 64 lines, AdamW 1e-2 with warm-up and cosine decay, on the corpus's training split. Fine-tuning "
             f"(`train.init_from` the pre-trained run, a fresh 2-way head) and from scratch alike: {fine_tune['steps']} "
             f"steps of 32 from the first N training lines, each kept or its inner words shuffled by a seeded coin, "
             f"AdamW 1e-3; test accuracy on the held-out lines, {seeds} seeds")
    return conclude(ctx, checks, figures, setup, {"transfer": fig},
                    quick=f"{pre_steps} pre-training steps, {TRANSFER_LABELLED} labelled lines, {seeds} seeds "
                    "(full: 1,500 steps, 100 … 800 lines, 4 seeds)")
