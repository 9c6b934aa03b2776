"""The kernels of one Transformer decoding step, seqlab's choice against the alternatives, as ratios from one run.

At the Multi30k Transformer's decoding shapes (`--rows` live rows: 64 sentences greedy, 320 = 64 × 5 beams;
d_model 256, 4 heads, d_ff 1024, 5,921 target words, a self-attention cache of `--length` positions), each
group times seqlab's way and the alternatives round-robin (`seqlab.diagnostics.profile.median_times`) and prints
every time with its ratio to seqlab's:

- the self-attention cache, per layer and step of beam search: seqlab keeps exactly the positions so far
  (reorder the beams with `index_select`, then `cat` the new position, then QKᵀ and αV on contiguous
  tensors); the alternative preallocates room for `--room` more positions and writes the new one in place,
  so it skips the `cat` but reorders the spare room too and multiplies over views into the larger buffer;
- greedy search's score of the chosen word: log-softmax over the vocabulary then a gather, against the
  logit minus `logsumexp`;
- the linear layers in float32 (`nn.Linear`, MKL), torch.ao dynamic int8 (seqlab's `--quantize int8`:
  fbgemm, activations quantised per call) and weight-only int8 (`torch._weight_int8pack_mm`);
- the output layer's layout: seqlab's `TransformerSeq2Seq._step_logits` (the weight padded with zero rows to a
  multiple of 16 and stored transposed) against the plain nn.Linear and the padded weight in nn.Linear's layout;
- the self-attention projections: three d_model → d_model layers (W^Q, W^K, W^V) against one fused
  d_model → 3·d_model layer.

    python benchmarks/decode_kernels.py --threads 1
    python benchmarks/decode_kernels.py --threads 1 --rows 320 --length 20
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data.base import TaskInfo
from seqlab.diagnostics.profile import median_times
from seqlab.inference.translate import quantize_int8
from seqlab.models.transformer import TransformerSeq2Seq, TransformerSpec
from seqlab.training.precision import cpu_summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="live decoding rows (default 64)")
    parser.add_argument("--length", type=int, default=12, help="positions in the self-attention cache (default 12)")
    parser.add_argument("--room", type=int, default=8, help="spare positions of the preallocated cache (default 8)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=5921)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=15, help="round-robin samples per kernel (default 15)")
    args = parser.parse_args(argv)
    for name in ("rows", "length", "room", "d_model", "heads", "d_ff", "vocab", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    return args


def report(title: str, times: dict[str, float]) -> None:
    """Each kernel's median time and its ratio to the first (seqlab's choice)."""
    print(f"\n{title}")
    baseline = next(iter(times.values()))
    for name, seconds in times.items():
        print(f"  {name:58s} {seconds * 1e6:9.0f} µs  {seconds / baseline:5.2f}×")


def cache_kernels(args: argparse.Namespace) -> dict[str, float]:
    rows, heads, d_k, L = args.rows, args.heads, args.d_model // args.heads, args.length
    q = torch.randn(rows, heads, 1, d_k)
    new = torch.randn(rows, heads, 1, d_k)
    parents = torch.randint(0, rows, (rows,))
    exact = torch.randn(rows, heads, L - 1, d_k)
    roomy = torch.randn(rows, heads, L - 1 + args.room, d_k)

    def exact_step() -> Tensor:
        K = torch.cat([exact.index_select(0, parents), new], dim=2)
        return (q @ K.transpose(-2, -1)).softmax(-1) @ K

    def in_place_step() -> Tensor:
        buffer = roomy.index_select(0, parents)
        buffer[:, :, L - 1 : L] = new
        K = buffer[:, :, :L]
        return (q @ K.transpose(-2, -1)).softmax(-1) @ K

    contiguous, view = exact[:, :, : L - 1].contiguous(), roomy[:, :, : L - 1]
    return median_times({
        "seqlab: index_select + cat, QKᵀ and αV on contiguous keys": exact_step,
        "preallocated: index_select with room, write in place, views": in_place_step,
        "  of which QKᵀ on contiguous keys": lambda: q @ contiguous.transpose(-2, -1),
        "  of which QKᵀ on a view into the larger buffer": lambda: q @ view.transpose(-2, -1),
    }, repeats=args.repeats, min_seconds=0.02)


def scoring_kernels(args: argparse.Namespace) -> dict[str, float]:
    logits = torch.randn(args.rows, args.vocab)
    chosen = logits.argmax(-1, keepdim=True)
    return median_times({
        "seqlab: log_softmax, then gather the chosen word": lambda: torch.log_softmax(logits, -1).gather(1, chosen),
        "logit of the chosen word − logsumexp": lambda: logits.gather(1, chosen) - logits.logsumexp(-1, keepdim=True),
    }, repeats=args.repeats, min_seconds=0.02)


def linear_kernels(args: argparse.Namespace, fan_in: int, fan_out: int) -> dict[str, float]:
    fp32 = nn.Sequential(nn.Linear(fan_in, fan_out))
    int8 = quantize_int8(fp32)
    weight = fp32[0].weight.detach()
    scales = weight.abs().amax(1) / 127
    packed = torch.round(weight / scales[:, None]).to(torch.int8)
    x = torch.randn(args.rows, fan_in)
    return median_times({
        "float32": lambda: fp32(x),
        "dynamic int8 (seqlab)": lambda: int8(x),
        "weight-only int8": lambda: torch._weight_int8pack_mm(x, packed, scales),
    }, repeats=args.repeats, min_seconds=0.02)


def output_layouts(args: argparse.Namespace) -> dict[str, float]:
    spec = TransformerSpec(d_model=args.d_model, num_heads=args.heads, d_ff=args.d_ff, num_encoder_layers=1,
                           num_decoder_layers=1, dropout=0.0)
    model = TransformerSeq2Seq(spec, TaskInfo(kind="seq2seq", output_dim=args.vocab, vocab_size=args.vocab)).eval()
    weight = model.out.weight.detach()
    padded = torch.cat([weight, weight.new_zeros(-args.vocab % 16, args.d_model)])
    x = torch.randn(args.rows, args.d_model)
    return median_times({
        "seqlab: padded to 16 rows, stored transposed (_step_logits)": lambda: model._step_logits(x),
        "nn.Linear, unpadded": lambda: model.out(x),
        "padded, nn.Linear's layout": lambda: F.linear(x, padded)[:, : args.vocab].contiguous(),
    }, repeats=args.repeats, min_seconds=0.02)


def fused_projections(args: argparse.Namespace) -> dict[str, float]:
    q, k, v = (nn.Linear(args.d_model, args.d_model) for _ in range(3))
    qkv = nn.Linear(args.d_model, 3 * args.d_model)
    x = torch.randn(args.rows, args.d_model)
    return median_times({
        "seqlab: W^Q, W^K, W^V as three layers": lambda: (q(x), k(x), v(x)),
        "one fused d_model → 3·d_model layer, split": lambda: qkv(x).chunk(3, dim=-1),
    }, repeats=args.repeats, min_seconds=0.02)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_summary()}; {torch.get_num_threads()} thread(s); torch {torch.__version__}")
    with torch.no_grad():
        report(f"Self-attention cache, one layer and step ({args.rows} rows, {args.length} positions, "
               f"room {args.room})", cache_kernels(args))
        report(f"Greedy score of the chosen word ({args.rows} × {args.vocab})", scoring_kernels(args))
        layers = {"W^Q (d_model → d_model)": (args.d_model, args.d_model), "W_1 (d_model → d_ff)": (args.d_model, args.d_ff),
                  "W_2 (d_ff → d_model)": (args.d_ff, args.d_model), "output (d_model → vocab)": (args.d_model, args.vocab)}
        for name, (fan_in, fan_out) in layers.items():
            report(f"Linear layer {name}, {args.rows} rows", linear_kernels(args, fan_in, fan_out))
        report(f"Output layer's weight layout, float32, {args.rows} rows × {args.vocab} words", output_layouts(args))
        report(f"Self-attention projections, float32, {args.rows} rows", fused_projections(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
