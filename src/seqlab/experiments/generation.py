"""Seeds 002 and 004 on generation: every decoder emits one token at a time, but a Transformer that caches each
layer's keys and values does a constant amount of new work per token, while one that recomputes its prefix
does more at every step."""

from __future__ import annotations

from typing import Any, Callable

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from seqlab.data.base import TaskInfo
from seqlab.diagnostics.profile import loglog_slope, operation_count
from seqlab.experiments.base import Context, Outcome, conclude, experiment, median_times
from seqlab.inference.decoding import BOS
from seqlab.models import build_model
from seqlab.models.seq2seq import Seq2SeqSpec
from seqlab.models.transformer import TransformerSpec
from seqlab.report.plots import new_figure

DECODE_VOCAB, DECODE_BATCH, DECODE_SOURCE, DECODE_WIDTH = 1000, 8, 20, 64


def decoding_models() -> tuple[nn.Module, nn.Module]:
    """An LSTM encoder–decoder and a Transformer of the same width (untrained: the work does not depend on weights)."""
    info = TaskInfo(kind="seq2seq", output_dim=DECODE_VOCAB, vocab_size=DECODE_VOCAB)
    rnn = build_model(Seq2SeqSpec(embed_size=DECODE_WIDTH, hidden_size=DECODE_WIDTH, num_layers=2), info)
    transformer = build_model(TransformerSpec(d_model=DECODE_WIDTH, num_heads=4, d_ff=4 * DECODE_WIDTH, dropout=0.0,
                                              num_encoder_layers=2, num_decoder_layers=2), info)
    return rnn.eval(), transformer.eval()


@torch.no_grad()
def generate_stepwise(model: nn.Module, batch: dict[str, Tensor], length: int) -> Tensor:
    """Greedy generation through the decoding protocol's `step`: the RNN's state, or the Transformer's key/value
    cache, carried along."""
    memory = model.encode(batch)
    state = model.init_state(memory, batch["src"].shape[0])
    tokens = torch.full((batch["src"].shape[0],), BOS, dtype=torch.long)
    generated = []
    for _ in range(length):
        logits, state, _ = model.step(memory, state, tokens)
        tokens = logits.argmax(-1)
        generated.append(tokens)
    return torch.stack(generated, 1)


@torch.no_grad()
def generate_uncached(model: nn.Module, batch: dict[str, Tensor], length: int) -> Tensor:
    """Greedy generation without a cache: every step runs the Transformer decoder over the whole prefix again."""
    memory = model.encode(batch)
    prefix = torch.full((batch["src"].shape[0], 1), BOS, dtype=torch.long)
    for _ in range(length):
        y, _ = model.decoder(model.tgt_embed(prefix), memory["memory"], memory["src_padding"])
        prefix = torch.cat([prefix, model.out(y[:, -1]).argmax(-1, keepdim=True)], dim=1)
    return prefix[:, 1:]


@torch.no_grad()
def score_parallel(model: nn.Module, batch: dict[str, Tensor], length: int) -> Tensor:
    """One teacher-forced pass over a known output of `length` tokens (how training reads a target)."""
    tgt_in = torch.randint(4, DECODE_VOCAB, (batch["src"].shape[0], length))
    return model({**batch, "tgt_in": tgt_in})


SHORT = {"RNN decoder (LSTM, step by step)": "rnn_stepwise", "Transformer, key/value cache": "transformer_cached",
         "Transformer, no cache (recompute prefix)": "transformer_uncached",
         "Transformer, one parallel pass (known output)": "transformer_parallel_pass",
         "RNN, one teacher-forced pass (known output)": "rnn_teacher_forced_pass"}
RNN, CACHED, UNCACHED = "rnn_stepwise", "transformer_cached", "transformer_uncached"
LESS_WORK = 3


@experiment(
    name="sequential-vs-parallel-decoding",
    era="transformer",
    claim="RNNs process sequences one element at a time, in order [...] Transformer: parallel operations. "
    "[Generation stays token by token for both; a Transformer decoder that caches each layer's keys and values "
    "does a constant amount of new work per token, one that recomputes its whole prefix does more at every step.]",
    source="seed 004 (the sequential processing bottleneck); seed 002 (the Transformer decoder); issue 5 (KV cache)",
    threshold=f"greedy generation of 16…128 tokens (…512 with --full; batch {DECODE_BATCH}), work counted in "
    "arithmetic operations per generated token (FLOPs of matrix products + one per other computed element): fitted "
    "log-log slope against output length ≥ 0.6 for the Transformer without a cache (upper half of the lengths; "
    "1 = linear), ≤ 0.3 with the cache, ≤ 0.2 for the RNN decoder; at the longest output the cached decoder does "
    f"≥ {LESS_WORK}× less work per token than the uncached (the time per token, median of interleaved repeats, is "
    "reported beside, not judged)",
)
def sequential_vs_parallel_decoding(ctx: Context) -> Outcome:
    lengths = ctx.pick([16, 32, 64, 128], [16, 32, 64, 128, 256, 512])
    torch.manual_seed(ctx.seed)
    rnn, transformer = decoding_models()
    batch = {"src": torch.randint(4, DECODE_VOCAB, (DECODE_BATCH, DECODE_SOURCE)),
             "src_lengths": torch.full((DECODE_BATCH,), DECODE_SOURCE)}
    methods: dict[str, Callable[[int], Any]] = {
        "rnn_stepwise": lambda n: generate_stepwise(rnn, batch, n),
        "transformer_cached": lambda n: generate_stepwise(transformer, batch, n),
        "transformer_uncached": lambda n: generate_uncached(transformer, batch, n),
        "transformer_parallel_pass": lambda n: score_parallel(transformer, batch, n),
        "rnn_teacher_forced_pass": lambda n: score_parallel(rnn, batch, n),
    }
    work = {key: [operation_count(lambda: method(n))[1] / n for n in lengths] for key, method in methods.items()}
    seconds = median_times({(key, n): (lambda m=method, n=n: m(n)) for key, method in methods.items() for n in lengths},
                           repeats=ctx.pick(3, 5), warmup=0, min_seconds=0.02)  # counting warmed them up
    per_token = {key: [seconds[key, n] / n for n in lengths] for key in methods}

    upper = len(lengths) // 2
    work_slope = {key: loglog_slope(lengths, values) for key, values in work.items()}
    uncached_upper = loglog_slope(lengths[upper:], work[UNCACHED][upper:])
    work_ratio = work[UNCACHED][-1] / work[CACHED][-1]
    speedup = per_token[UNCACHED][-1] / per_token[CACHED][-1]
    checks = {
        "uncached: work per token grows (slope ≥ 0.6, upper half)": uncached_upper >= 0.6,
        "cached: work per token nearly constant (slope ≤ 0.3)": work_slope[CACHED] <= 0.3,
        "RNN decoder: work per token constant (slope ≤ 0.2)": work_slope[RNN] <= 0.2,
        f"longest output: cache does ≥ {LESS_WORK}× less work per token": work_ratio >= LESS_WORK,
    }
    figures: dict[str, Any] = {"lengths": lengths, "uncached_work_slope_upper_half": uncached_upper,
                               "cached_work_ratio_at_longest": work_ratio, "cached_speedup_at_longest": speedup}
    for key in SHORT.values():
        figures[f"{key}_operations_per_token"] = [round(w) for w in work[key]]
        figures[f"{key}_work_slope"] = work_slope[key]
        figures[f"{key}_ms_per_token"] = [round(1e3 * t, 4) for t in per_token[key]]
        figures[f"{key}_time_slope"] = loglog_slope(lengths, per_token[key])
    setup = (f"untrained models, vocabulary {DECODE_VOCAB}, {DECODE_BATCH} sources of {DECODE_SOURCE} tokens; seq2seq: "
             f"two-layer LSTM encoder–decoder, width {DECODE_WIDTH}; transformer: 2+2 layers, d_model {DECODE_WIDTH}, 4 heads, "
             f"d_ff {4 * DECODE_WIDTH}; greedy generation of a fixed number of tokens (no <eos> stop); operations counted "
             "per ATen call (seqlab.diagnostics.profile.operation_count); time: median of interleaved repeats (each ≥ 20 ms) "
             "on one thread; dotted: one pass over a known output of the same length (teacher forcing)")
    pictures = {"work-per-token": plot_per_token(lengths, work, per_token)}
    return conclude(ctx, checks, figures, setup, pictures, quick="lengths up to 128, 3 timing repeats")


STYLES = {"rnn_stepwise": ("#2f6b2a", "-"), "transformer_cached": ("#1f4e9c", "-"),
          "transformer_uncached": ("#c2541b", "-"), "transformer_parallel_pass": ("#1f4e9c", ":"),
          "rnn_teacher_forced_pass": ("#2f6b2a", ":")}


def plot_per_token(lengths: list[int], work: dict[str, list[float]], per_token: dict[str, list[float]]) -> Figure:
    """Operations (left) and milliseconds (right) per generated token against output length, log-log."""
    fig, axes = new_figure(columns=2, size=(5.0, 4.2))
    for label, key in SHORT.items():
        colour, line = STYLES[key]
        axes[0].plot(lengths, work[key], color=colour, linestyle=line, marker=".", label=label)
        axes[1].plot(lengths, [1e3 * t for t in per_token[key]], color=colour, linestyle=line, marker=".", label=label)
    for ax, unit in zip(axes, ("operations per token (counted)", "time per token (ms, median)")):
        ax.set(xscale="log", yscale="log", xlabel="output length (tokens)", ylabel=unit)
        ax.set_xscale("log", base=2)
    axes[0].set_title(f"Work per generated token, batch {DECODE_BATCH}, width {DECODE_WIDTH}", fontsize=9)
    axes[1].set_title("Time per generated token, 1 thread", fontsize=9)
    axes[0].legend(fontsize=6.5)
    return fig
