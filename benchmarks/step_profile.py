"""Where a training step's time goes: torch.profiler over a few steps of a config, grouped by kind of work.

Builds the one `Trainer` for the config, warms up, then profiles N whole training steps (batch, forward,
loss, backward, clipping, optimiser step) and prints each group's share of the wall time, from the
self time of the ATen operators in it:

- matrix multiplies (mm, addmm, bmm and oneDNN's matmul/linear kernels), and their FLOP/s;
- the fused attention kernel (`scaled_dot_product_attention`, forward and backward);
- softmax and cross-entropy (log-softmax, NLL), layer norm, dropout;
- precision casts (autocast's copies of fp32 weights and activations to bf16 and back);
- the optimiser step (everything under `Optimizer.step`, whichever operators it runs);
- building the batch (the task's `train_batch`);
- other operators (element-wise, reductions, indexing, embedding);
- outside any operator: Python and framework overhead (the wall time no operator accounts for).

The profiler changes what it measures: under it, the operators that write the large loss tensors (batch
tokens × vocabulary: log-softmax, its backward, the gradient's fill and add) took 12.9 % of a bf16 step on a
2-core AMD EPYC, where the whole loss takes 5.1 % without it (issue 14). So before profiling the script times N steps without the profiler,
split into phases by clocks at the model's forward hooks, a gradient hook on its output and the optimiser's
step hooks: the forward pass, the loss (its forward and the backward as far as the model's output), the
model's backward with gradient clipping, the optimiser step, and the rest (building the batch, logging).
The unprofiled throughput behind the model FLOP/s is taken from the same steps, before any profiling.

It then compares the run's model FLOP/s (matrix multiplies only, as `multi30k_budget.py --flops` counts them)
with a 1024 × 1024 GEMM in the same precision, measured in the same process.

    python benchmarks/step_profile.py configs/multi30k/transformer_reference.yaml --threads 1
    python benchmarks/step_profile.py configs/multi30k/transformer_reference.yaml --threads 1 --set train.precision=fp32
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from seqlab.config import load_config
from seqlab.errors import report_user_errors
from seqlab.training.precision import cpu_summary
from seqlab.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multi30k_budget import flops_per_target, gemm_peak

BATCH_SCOPE, OPTIMIZER_SCOPE = "seqlab::train_batch", "Optimizer.step"
GROUPS: dict[str, tuple[str, ...]] = {
    "matrix multiplies": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation",
                          "mkldnn", "onednn"),
    "fused attention": ("scaled_dot_product", "_flash_attention"),
    "softmax, cross-entropy": ("softmax", "nll_loss", "cross_entropy"),
    "layer norm": ("layer_norm",),
    "dropout": ("dropout", "bernoulli"),
    "precision casts": ("aten::_to_copy", "aten::to", "aten::copy_"),
}


def group_of(name: str) -> str:
    for group, patterns in GROUPS.items():
        if any(pattern in name for pattern in patterns):
            return group
    return "other operators"


def scope_self_time(events: list, scope: str) -> float:
    """Self CPU time (µs) of every operator called, at any depth, inside the record_function `scope`."""
    total = 0.0
    for event in events:
        if event.name.startswith(scope):
            stack = list(event.cpu_children)
            while stack:
                child = stack.pop()
                total += child.self_cpu_time_total
                stack.extend(child.cpu_children)
    return total


PHASES = ("forward", "loss (forward, and backward to the model's output)", "model backward and clipping",
          "optimiser step", "the rest (batch, logging)")


@contextmanager
def phase_clocks(trainer: Trainer) -> Iterator[dict[str, float]]:
    """Seconds per phase (`PHASES`) of the training steps run inside the block, from clocks at hooks; the
    phases add up to the block's wall time."""
    seconds: dict[str, float] = defaultdict(float)
    marks: dict[str, float] = {}

    def output_grad_ready(grad: torch.Tensor) -> None:
        marks["output grad"] = time.perf_counter()
        seconds[PHASES[1]] += marks["output grad"] - marks["forward end"]

    def backward_done(now: float) -> None:  # since the output's gradient (or, without one, the forward's end)
        seconds[PHASES[2]] += now - marks.pop("output grad", marks["forward end"])

    def forward_begins(module: torch.nn.Module, inputs: tuple) -> None:
        marks["forward"] = time.perf_counter()
        if "output grad" in marks:  # the previous micro-batch's backward
            backward_done(marks["forward"])

    def forward_ends(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        marks["forward end"] = time.perf_counter()
        seconds[PHASES[0]] += marks["forward end"] - marks["forward"]
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(output_grad_ready)

    def step_begins(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        marks["step"] = time.perf_counter()
        backward_done(marks["step"])

    def step_ends(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        seconds[PHASES[3]] += time.perf_counter() - marks["step"]

    handles = [trainer.module.register_forward_pre_hook(forward_begins),
               trainer.module.register_forward_hook(forward_ends),
               trainer.optimizer.register_step_pre_hook(step_begins),
               trainer.optimizer.register_step_post_hook(step_ends)]
    began = time.perf_counter()
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()
        seconds[PHASES[4]] = time.perf_counter() - began - sum(seconds[phase] for phase in PHASES[:4])


def profile_steps(trainer: Trainer, first: int, steps: int) -> tuple[dict[str, float], float, float]:
    """Seconds per group over `steps` training steps, their wall time, and the target tokens they trained on."""
    make_batch = trainer.task.train_batch

    def labelled_batch(step: int, batch_size: int):
        with record_function(BATCH_SCOPE):
            return make_batch(step, batch_size)

    trainer.task.train_batch = labelled_batch
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        targets = sum(trainer.train_step(step)["targets"] for step in range(first, first + steps))
        wall = time.perf_counter() - began
    trainer.task.train_batch = make_batch
    events = prof.events()
    optimizer = scope_self_time(events, OPTIMIZER_SCOPE)
    batch = scope_self_time(events, BATCH_SCOPE)
    seconds: dict[str, float] = defaultdict(float)
    for average in prof.key_averages():
        if average.key.startswith((OPTIMIZER_SCOPE, BATCH_SCOPE)) or average.key.startswith("ProfilerStep"):
            continue
        seconds[group_of(average.key)] += average.self_cpu_time_total / 1e6
    seconds["other operators"] -= (optimizer + batch) / 1e6  # counted above by operator name; moved to their scopes
    seconds["optimiser step"], seconds["building the batch"] = optimizer / 1e6, batch / 1e6
    seconds["outside any operator (Python, framework)"] = wall - sum(seconds.values())
    return dict(seconds), wall, targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a run config, e.g. configs/multi30k/transformer_reference.yaml")
    parser.add_argument("--steps", type=int, default=20, help="profiled training steps (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="steps before profiling (default 5)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = [*args.set, "train.progress=false", "train.tensorboard=false"]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    trainer = Trainer(load_config(args.config, overrides))
    for step in range(args.warmup):
        trainer.train_step(step)
    print(f"config {args.config}; {torch.get_num_threads()} thread(s); precision {trainer.precision}; CPU: {cpu_summary()}")
    with phase_clocks(trainer) as phases:
        targets = sum(trainer.train_step(step)["targets"] for step in range(args.warmup, args.warmup + args.steps))
    unprofiled = sum(phases.values())
    targets_per_s = targets / unprofiled
    print(f"{args.steps} steps without the profiler: {unprofiled:.2f} s ({unprofiled / args.steps * 1e3:.0f} ms per step)")
    for phase in PHASES:
        print(f"  {phase:<52} {phases[phase]:7.2f} s  {phases[phase] / unprofiled:6.1%}")
    first = args.warmup + args.steps
    seconds, wall, profiled_targets = profile_steps(trainer, first, args.steps)
    print(f"the next {args.steps} steps under torch.profiler: {wall:.2f} s wall ({wall / args.steps * 1e3:.0f} ms per step)")
    for group, value in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {group:<52} {value:7.2f} s  {value / wall:6.1%}")
    per_target = flops_per_target(trainer, first + args.steps, args.steps)
    model_flops = per_target * targets_per_s
    gemm_flops = per_target * profiled_targets / max(seconds["matrix multiplies"], 1e-9)
    dtype = trainer.autocast_dtype or torch.float32
    peak = gemm_peak(dtype)
    name = str(dtype).removeprefix("torch.")
    print(f"training: {targets_per_s:,.0f} target tokens/s unprofiled; model FLOP/s {model_flops / 1e9:.1f} G = "
          f"{model_flops / peak:.0%} of the {name} GEMM peak ({peak / 1e9:.1f} GFLOP/s, 1024x1024)")
    print(f"inside the matrix multiplies alone: about {gemm_flops / 1e9:.1f} GFLOP/s = "
          f"{gemm_flops / peak:.0%} of that peak (the profiled steps' FLOPs over their multiply time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("step_profile", main))
