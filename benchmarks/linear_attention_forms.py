"""Causal linear attention in its three forms, forward and backward at one layer's training shape: the
cumulative-sum form (every prefix W_t stored), the chunked form training uses, and (short sequences only) the
token-by-token recurrence. Best of `--repeats`, one run, printed as ratios to the chunked form.

    python benchmarks/linear_attention_forms.py --threads 1                 # Performer rung: T 128, m 64
    python benchmarks/linear_attention_forms.py --length 512 --features 32
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import Tensor

from seqlab.nn.linear_attention import (
    causal_linear_attention, chunked_linear_attention, elu_feature_map, recurrent_linear_attention,
)


def seconds(form: Callable[[Tensor, Tensor, Tensor], Tensor], inputs: tuple[Tensor, ...], repeats: int) -> float:
    """Best wall time of forward + backward over `repeats` calls."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        form(*inputs).sum().backward()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--features", type=int, default=64, help="d_k: φ's width (Performer's m)")
    parser.add_argument("--values", type=int, default=32, help="d_v: a head's value width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.heads, args.length)
    inputs = (elu_feature_map(torch.randn(*shape, args.features, generator=g)).requires_grad_(),
              elu_feature_map(torch.randn(*shape, args.features, generator=g)).requires_grad_(),
              torch.randn(*shape, args.values, generator=g, requires_grad=True))
    forms = {"chunked (training)": chunked_linear_attention, "cumulative sum": causal_linear_attention}
    if args.length <= 256:
        forms["recurrent"] = recurrent_linear_attention
    times = {name: seconds(form, inputs, args.repeats) for name, form in forms.items()}
    print(f"batch {args.batch}, {args.heads} heads, T {args.length}, d_k {args.features}, d_v {args.values}; "
          f"{torch.get_num_threads()} thread(s); forward + backward, best of {args.repeats}")
    for name, value in times.items():
        print(f"  {name:<20} {value * 1e3:9.1f} ms  {value / times['chunked (training)']:6.1f}× the chunked form")


if __name__ == "__main__":
    main()
