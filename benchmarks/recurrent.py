"""Training throughput of the recurrent layers: reference cells vs fast path vs raw torch.nn, in one run.

Measures tokens/s of forward + backward (batch · time tokens per step) for each cell, for

- ``reference``: seqlab's cells unrolled step by step (RecurrentStack(fast=False));
- ``fast``: the same module on torch's fused kernel (RecurrentStack(fast=True));
- ``torch.nn``: a raw nn.RNN / nn.LSTM / nn.GRU of the same size.

The variants are timed in interleaved rounds (so machine load hits them alike) and the median round
is reported, with the ratios fast / torch.nn (target ≥ 0.95) and fast / reference.

    python benchmarks/recurrent.py                       # batch 64, T = 50, input 256, hidden 512
    python benchmarks/recurrent.py --cells lstm --rounds 10
    python benchmarks/recurrent.py --threads 1 --clock cpu     # on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

from seqlab.nn.recurrent import RecurrentStack

TORCH_MODULES: dict[str, type[nn.RNNBase]] = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def training_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of a sum-of-squares loss on all outputs."""

    def step() -> None:
        outputs = module(x)[0]
        outputs.pow(2).mean().backward()
        module.zero_grad(set_to_none=True)

    return step


def seconds_per_step(step: Callable[[], None], device: torch.device, clock: str) -> float:
    """Wall-clock seconds of one step, or CPU seconds of this process (robust on a shared machine)."""
    read = time.process_time if clock == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = read()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return read() - began


def benchmark_cell(cell: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Median tokens/s of each variant for one cell type."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.input, device=device)
    variants = {
        "reference": RecurrentStack(cell, args.input, args.hidden, num_layers=args.layers, fast=False),
        "fast": RecurrentStack(cell, args.input, args.hidden, num_layers=args.layers, fast=True),
        "torch.nn": TORCH_MODULES[cell](args.input, args.hidden, num_layers=args.layers, batch_first=True),
    }
    steps = {name: training_step(module.to(device), x) for name, module in variants.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(seconds_per_step(step, device, args.clock))
    tokens = args.batch * args.steps
    return {name: tokens / statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="sequence length T")
    parser.add_argument("--input", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--cells", nargs="+", default=["elman", "lstm", "gru"], choices=sorted(TORCH_MODULES))
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, robust when other jobs share the cores "
        "(use with --threads 1, where it equals the elapsed time of an idle machine)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = " ".join(shlex.quote(part) for part in ["python", "benchmarks/recurrent.py", *(argv or sys.argv[1:])])
    print(f"# reproduce: {command}")
    print(
        f"# torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"T {args.steps}, input {args.input}, hidden {args.hidden}, layers {args.layers}; "
        f"training tokens per {'CPU ' if args.clock == 'cpu' else ''}second (forward + backward), "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"{'cell':<6} {'reference':>11} {'fast':>11} {'torch.nn':>11} {'fast/torch.nn':>14} {'fast/reference':>15}")
    for cell in args.cells:
        rates = benchmark_cell(cell, args, device)
        print(
            f"{cell:<6} {rates['reference']:>11.0f} {rates['fast']:>11.0f} {rates['torch.nn']:>11.0f} "
            f"{rates['fast'] / rates['torch.nn']:>14.3f} {rates['fast'] / rates['reference']:>15.2f}"
        )


if __name__ == "__main__":
    main()
