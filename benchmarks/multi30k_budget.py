"""Time to quality on Multi30k: train a config for a wall-clock budget, then measure what it gives.

Trains with the one `seqlab` trainer (`train.time_budget_s` = the budget; time spent evaluating is not
counted), then translates test_2016_flickr greedy and with beam 5 (`benchmarks/decode_speed.py`, the
`seqlab eval` protocol) and prints:

- training throughput: non-padding target tokens per second of whole training steps;
- epochs done (target tokens trained on / target tokens in the training split);
- peak resident memory of the process (getrusage maxrss) and the parameter count;
- BLEU greedy and beam 5 with their decoding times;
- with --average N: the same for the element-wise mean of the run's last N checkpoints (`seqlab average`;
  set train.checkpoint.every so that N are kept, e.g. --set train.checkpoint.every=250 --set
  train.checkpoint.keep_last=5);
- with --flops: model FLOP/s (matrix-multiply FLOPs of forward + backward, counted by torch's FlopCounterMode
  over a few extra training steps, times the measured throughput) as a fraction of the GEMM peak (the faster
  of two measurements, before and after training, each the fastest of five rounds) measured in
  the precision the run trains in (fp32, or bf16 where `train.precision: auto` finds bf16 hardware).

    python benchmarks/multi30k_budget.py configs/multi30k/transformer_reference.yaml --budget 720 --threads 1
    python benchmarks/multi30k_budget.py configs/multi30k/rnn_reference.yaml --budget 120 --threads 1 --no-bleu
"""

from __future__ import annotations

import argparse
import math
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from seqlab.config import load_config
from seqlab.data.parallel import TranslationCodecs
from seqlab.errors import report_user_errors
from seqlab.inference.translate import Translator
from seqlab.training.checkpoint import average_last
from seqlab.training.precision import cpu_summary
from seqlab.training.trainer import Callback, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_speed import decode_test_set


class TargetCounter(Callback):
    """Sums the non-padding target tokens of every training step."""

    def __init__(self) -> None:
        self.targets = 0.0

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        self.targets += logs["targets"]


def peak_memory_gib() -> float:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def flops_per_target(trainer: Trainer, first_step: int, steps: int) -> float:
    """Forward + backward matmul FLOPs per non-padding target token, over `steps` more training steps."""
    targets = 0.0
    with FlopCounterMode(display=False) as counter:
        for step in range(first_step, first_step + steps):
            targets += trainer.train_step(step)["targets"]
    return counter.get_total_flops() / targets


def gemm_peak(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 20, rounds: int = 5) -> float:
    """FLOP/s of a square matrix multiplication in `dtype` with the current thread count: the fastest of
    `rounds` timings of `repeats` products, so that a burst of load during one of them cannot lower the peak
    (and raise the share of it that a model reaches)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    fastest = math.inf
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(repeats):
            a @ b
        fastest = min(fastest, time.perf_counter() - began)
    return 2 * size**3 * repeats / fastest


def report_bleu(trainer: Trainer, beam: int) -> None:
    """Translate test_2016_flickr with the trainer's model, greedy and with `beam`, and print BLEU and times."""
    translator = Translator(trainer.model, TranslationCodecs.from_task_state(trainer.task.state_dict()))
    for size in (1, beam):
        print(decode_test_set(translator, size).line(), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a translation run config, e.g. configs/multi30k/transformer_reference.yaml")
    parser.add_argument("--budget", type=float, default=720.0, help="training seconds (default 720 = 12 minutes)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config key")
    parser.add_argument("--out", help="run directory (default: a temporary one, deleted at the end)")
    parser.add_argument("--beam", type=int, default=5, help="beam size compared with greedy (default 5)")
    parser.add_argument("--no-bleu", action="store_true", help="only train (throughput, epochs, memory)")
    parser.add_argument("--average", type=int, metavar="N", help="also score the mean of the last N checkpoints")
    parser.add_argument("--flops", action="store_true", help="also model FLOP/s vs the GEMM peak (after BLEU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = [*args.set, f"train.time_budget_s={args.budget}", "train.progress=false"]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    config = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="multi30k_budget_") as scratch:
        counter = TargetCounter()
        trainer = Trainer(config, out_dir=args.out or scratch, callbacks=(counter,))
        dtype = trainer.autocast_dtype or torch.float32
        peak_before = gemm_peak(dtype) if args.flops else 0.0
        result = trainer.fit()
        epoch_targets = sum(len(target) + 1 for target in trainer.task.data["train"].targets)  # + <eos>
        threads = torch.get_num_threads()
        print(f"config {args.config}; {threads} thread(s); budget {args.budget:.0f} s; CPU: {cpu_summary()}")
        print(f"parameters: {result.parameters:,}; precision used: {result.precision} "
              f"(train.precision: {trainer.train_cfg.precision})")
        print(f"trained {result.steps} steps in {result.seconds:.1f} s: "
              f"{counter.targets / result.seconds:,.0f} target tokens/s, {counter.targets / epoch_targets:.2f} epochs")
        print(f"final validation loss {result.final['val']['loss']:.3f}, test loss {result.final['test']['loss']:.3f}")
        if not args.no_bleu:
            report_bleu(trainer, args.beam)
        if args.average:
            paths, averaged = average_last(Path(args.out or scratch), args.average)
            trainer.load_weights(averaged)
            print(f"average of {', '.join(p.name for p in paths)}: validation loss {trainer.evaluate('val')['loss']:.3f}, "
                  f"test loss {trainer.evaluate('test')['loss']:.3f}")
            if not args.no_bleu:
                report_bleu(trainer, args.beam)
        if args.flops:
            model_flops = flops_per_target(trainer, result.steps, 20) * counter.targets / result.seconds
            peak = max(peak_before, gemm_peak(dtype))  # before and after training: the host's speed may change
            name = str(dtype).removeprefix("torch.")
            print(f"model FLOP/s: {model_flops / 1e9:.1f} G = {model_flops / peak:.0%} of the {name} GEMM peak "
                  f"({peak / 1e9:.1f} GFLOP/s, 1024x1024, {threads} thread(s))")
        print(f"peak memory (maxrss): {peak_memory_gib():.2f} GiB")
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("multi30k_budget", main))
