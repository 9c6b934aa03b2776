"""fp32 against bf16 autocast on this machine: matrix-multiply FLOP/s per dtype, then training throughput of
whole configs under `train.precision` fp32 and bf16, measured in one run and printed as ratios.

A CPU with AVX-512 BF16 or AMX multiplies bf16 in hardware; one without it emulates bf16 and fp16 many times
slower than fp32 (the trainer refuses `precision: bf16` there). Steps are timed after a warm-up, the same
global batches in both precisions.

    python benchmarks/precision.py --threads 1
    python benchmarks/precision.py configs/multi30k/transformer_reference.yaml --steps 40
    python benchmarks/precision.py configs/multi30k/transformer_reference.yaml --variant model.attention_dropout=0.0

`--variant KEY=VALUE` (repeatable) also times each config with those overrides, in both precisions, and prints
its throughput as a ratio to the config as shipped, measured in the same run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from seqlab.config import load_config
from seqlab.errors import report_user_errors
from seqlab.training.precision import cpu_summary, has_bf16
from seqlab.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multi30k_budget import gemm_peak

DEFAULT_CONFIGS = [
    "configs/multi30k/transformer_reference.yaml",
    "configs/multi30k/rnn_reference.yaml",
    "configs/multi30k/convs2s.yaml",
]


def tokens_per_second(config_path: str, precision: str, steps: int, threads: int | None,
                      variant: tuple[str, ...] = ()) -> float:
    """Non-padding target tokens per second of `steps` training steps after 3 warm-up steps."""
    overrides = [*variant, f"train.precision={precision}", "train.progress=false", "train.tensorboard=false"]
    if threads:
        overrides.append(f"train.threads={threads}")
    trainer = Trainer(load_config(config_path, overrides))
    for step in range(3):
        trainer.train_step(step)
    targets, began = 0.0, time.perf_counter()
    for step in range(3, 3 + steps):
        targets += trainer.train_step(step)["targets"]
    return targets / (time.perf_counter() - began)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=DEFAULT_CONFIGS, help="run configs (default: the Multi30k ones)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per precision (default 20)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="also time each config with this override (repeatable: one variant of them all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_bf16 = has_bf16(torch.device("cpu"))
    print(f"{torch.get_num_threads()} thread(s); CPU: {cpu_summary()}")
    fp32 = gemm_peak(torch.float32, size=512)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        flops = fp32 if dtype is torch.float32 else gemm_peak(dtype, size=512)
        print(f"matmul 512x512 {str(dtype).removeprefix('torch.'):<9} {flops / 1e9:8.1f} GFLOP/s  ({flops / fp32:.2f}x fp32)")
    precisions = ["fp32", "bf16"] if cpu_bf16 else ["fp32"]
    variants = [(), tuple(args.variant)] if args.variant else [()]
    for path in args.configs:
        speed = {(v, p): tokens_per_second(path, p, args.steps, args.threads, v) for v in variants for p in precisions}
        for variant in variants:
            label = f"{path} with {' '.join(variant)}" if variant else path
            parts = [f"fp32 {speed[variant, 'fp32']:,.0f} target tokens/s"]
            if cpu_bf16:
                ratio = speed[variant, "bf16"] / speed[variant, "fp32"]
                parts.append(f"bf16 {speed[variant, 'bf16']:,.0f} ({ratio:.2f}x)")
            else:
                parts.append("(no bf16 hardware: auto trains in fp32)")
            if variant:
                parts.append("against the config as shipped: " + ", ".join(
                    f"{p} {speed[variant, p] / speed[(), p]:.2f}x" for p in precisions))
            print(f"{label}: {', '.join(parts)}", flush=True)
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("precision", main))
