"""seqlab's decoding against CTranslate2 on the same weights and the same 1,000 test sentences.

Loads a Transformer checkpoint once, exports it (`seqlab.inference.export`, float32 and int8 weights), and
translates Multi30k test_2016_flickr with every combination of

- engine: seqlab (`Translator`; int8 = torch.ao dynamic quantisation of the nn.Linear layers) and CTranslate2
  (`compute_type` float32 / int8, its own quantisation);
- search: greedy and beam B (seqlab: Wu et al. length penalty α; CTranslate2: log P / |Y|^α'), both stopping
  a sentence once round(patience · B) hypotheses have finished (CTranslate2's rule; `--patience`, default 1);

one thread each, batches of 64 sentences sorted by length, the same length limit (⌊1.5 · source⌋ + 5),
neither engine returning attention rows.
Each pair (seqlab, CTranslate2) at one precision and search runs after a warm-up batch, `--repeats` times
in turn (seqlab, CTranslate2, seqlab, ...), so that a burst of load from other processes spoils one sample
rather than one engine: each time is the median of its samples, and the ratio is the median of the ratios
of the pairs run back to back, printed with the lowest and highest of them. BLEU is sacreBLEU with the checkpoint's settings, as
`seqlab eval` computes it. The goal (issue 14): seqlab's time within 1.5× of CTranslate2's at equal BLEU
(±0.3).

With `--per-step`, it also times one greedy step of each engine, at each precision asked for, at a full batch
(64), 8 and 1 live rows (the first rows of the middle batch by source length): every row decodes a forced
number of steps (CTranslate2: min = max decoding length; seqlab: `model.step` fed its own argmax, no row
stopping), and a step's time is the difference between 31 and 11 forced steps, over 20, each the median of
`--repeats` samples taken in turn; encoding cancels out.

    python benchmarks/ctranslate2_decode.py /work/runs/t_ref --threads 1 --repeats 3 [--per-step]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from seqlab.data.base import Batch
from seqlab.data.batching import collate
from seqlab.data.parallel import TranslationCodecs, read_parallel
from seqlab.diagnostics.profile import median_times
from seqlab.errors import report_user_errors
from seqlab.evaluation.bleu import score_translations
from seqlab.inference.export import (
    CTranslate2Translator,
    load_transformer,
    save_ctranslate2,
)
from seqlab.inference.decoding import begin, evaluating
from seqlab.inference.translate import Translator

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k" / "tok"


@dataclass
class Row:
    engine: str
    precision: str
    beam: int
    samples: list[float]
    sentences: int
    bleu: float

    @property
    def seconds(self) -> float:
        """The median of the timed samples."""
        return statistics.median(self.samples)

    def line(self) -> str:
        search = "greedy" if self.beam == 1 else f"beam {self.beam}"
        return (f"| {self.engine:11s} | {self.precision:7s} | {search:6s} | {self.seconds:7.1f} s | "
                f"{self.sentences / self.seconds:7.1f} | {self.bleu:5.2f} |")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def seqlab_forced_steps(model: torch.nn.Module, batch: Batch, steps: int) -> None:
    """`steps` greedy steps of every row of `batch`, none stopping at <eos>."""
    with torch.no_grad(), evaluating(model):
        memory, state, tokens = begin(model, batch)
        for _ in range(steps):
            logits, state, _ = model.step(memory, state, tokens)
            tokens = logits.argmax(-1)


def per_step_seconds(decode: Callable[[int], object], repeats: int, short: int = 11, long: int = 31) -> float:
    """A step's time: (median time of `long` forced steps − that of `short`) / (long − short), sampled in turn."""
    times = median_times({long: lambda: decode(long), short: lambda: decode(short)}, repeats=repeats)
    return (times[long] - times[short]) / (long - short)


def per_step_rows(models: dict[str, torch.nn.Module], codecs: TranslationCodecs, ct2: dict[str, CTranslate2Translator],
                  sources: list[str], args: argparse.Namespace) -> list[tuple[str, int, float, float]]:
    """(precision, live rows, seqlab's seconds a step, CTranslate2's) for each precision asked for, at a full batch,
    8 rows and 1 row of the middle batch by source length."""
    encoded = [codecs.source.encode(line) for line in sources]
    by_length = sorted(range(len(sources)), key=lambda i: len(encoded[i]))
    middle = by_length[len(sources) // 2 :][: args.batch_size]
    ids = [encoded[i] for i in middle]
    found = []
    for precision in args.precisions:
        model, engine = models[precision], ct2[precision]
        tokens = [engine.codecs.source.tokens(sources[i]) for i in middle]
        for rows in (len(middle), min(8, len(middle)), 1):
            batch = collate(ids[:rows], [[] for _ in ids[:rows]])
            ours = per_step_seconds(lambda n: seqlab_forced_steps(model, batch, n), args.repeats)
            theirs = per_step_seconds(lambda n: engine.engine.translate_batch(
                tokens[:rows], beam_size=1, max_decoding_length=n, min_decoding_length=n), args.repeats)
            found.append((precision, rows, ours, theirs))
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a Transformer checkpoint directory, or a run directory")
    parser.add_argument("--threads", type=int, default=1, help="threads for each engine (default 1)")
    parser.add_argument("--beam", type=int, default=5, help="beam size compared with greedy (default 5)")
    parser.add_argument("--length-penalty", type=float, default=0.6, help="seqlab's α (Wu et al. 2016; default 0.6)")
    parser.add_argument("--ct2-length-penalty", type=float, default=0.4,
                        help="CTranslate2's α' in log P / |Y|^α' (default 0.4: d log lp / d log |Y| of Wu et al.'s "
                             "α = 0.6 at |Y| ≈ 12, Multi30k's typical length; CTranslate2's own default is 1.0)")
    parser.add_argument("--patience", type=float, default=1.0,
                        help="both engines stop a sentence's beam once round(P · beam) hypotheses have finished "
                             "(default 1, CTranslate2's default; seqlab's own default stop is exact and slower)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"])
    parser.add_argument("--src", type=Path, default=DATA / "test_2016_flickr.lc.norm.tok.de")
    parser.add_argument("--ref", type=Path, default=DATA / "test_2016_flickr.lc.norm.tok.en")
    parser.add_argument("--limit", type=int, help="only the first N test sentences (a smoke run)")
    parser.add_argument("--per-step", action="store_true",
                        help="also time one greedy step of each engine at a full batch, 8 and 1 live rows (fp32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed translations of the test set per engine and "
                        "setting, taken in turn with the other engine's (default 3)")
    args = parser.parse_args(argv)
    if not args.patience > 0:
        parser.error(f"--patience must be above 0, got {args.patience}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = read_parallel(args.src, args.ref)[: args.limit]
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    model, spec, codecs = load_transformer(args.checkpoint)
    seqlab = {"fp32": Translator(model, codecs), "int8": Translator(model, codecs, quantize="int8")}
    rows: list[Row] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ct2_") as scratch:
        ct2 = {
            "fp32": CTranslate2Translator(save_ctranslate2(model, spec, codecs, Path(scratch) / "fp32"),
                                          compute_type="float32", threads=args.threads),
            "int8": CTranslate2Translator(save_ctranslate2(model, spec, codecs, Path(scratch) / "int8", "int8"),
                                          compute_type="int8", threads=args.threads),
        }
        for precision in args.precisions:
            for beam in (1, args.beam):
                engines = {
                    "seqlab": lambda lines, p=precision, b=beam: [t.text for t in seqlab[p].translate(
                        lines, beam_size=b, length_penalty=args.length_penalty, batch_size=args.batch_size,
                        attention=False, patience=args.patience)],
                    "CTranslate2": lambda lines, p=precision, b=beam: [t.text for t in ct2[p].translate(
                        lines, beam_size=b, length_penalty=args.ct2_length_penalty, batch_size=args.batch_size,
                        patience=args.patience)],
                }
                for translate in engines.values():
                    translate(sources[: args.batch_size])  # warm-up
                samples: dict[str, list[float]] = {engine: [] for engine in engines}
                hypotheses: dict[str, list[str]] = {}
                for _ in range(args.repeats):
                    for engine, translate in engines.items():
                        began = time.perf_counter()
                        hypotheses[engine] = translate(sources)
                        samples[engine].append(time.perf_counter() - began)
                for engine in engines:
                    bleu = score_translations(hypotheses[engine], references, tokenize=codecs.bleu_tokenize).bleu
                    rows.append(Row(engine, precision, beam, samples[engine], len(sources), bleu))
                    print(rows[-1].line(), flush=True)
        step_rows = per_step_rows({p: t.model for p, t in seqlab.items()}, codecs, ct2, sources, args) if args.per_step else []
    load_after = os.getloadavg()

    print(f"\ncheckpoint {args.checkpoint}; {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"{len(sources)} sentences; {args.threads} thread(s) per engine; torch {torch.__version__}")
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print("\n| engine | precision | search | time | sentences/s | BLEU |\n| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row.line())
    print(f"\n| precision | search | seqlab time / CTranslate2 time (median of {args.repeats} pairs) | lowest – highest "
          "| BLEU seqlab − CTranslate2 | goal ≤ 1.5× at ±0.3 BLEU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ours, theirs in zip(rows[::2], rows[1::2]):
        ratios = [mine / other for mine, other in zip(ours.samples, theirs.samples)]
        ratio, gap = statistics.median(ratios), ours.bleu - theirs.bleu
        met = "met" if ratio <= 1.5 and abs(gap) <= 0.3 else "not met"
        search = "greedy" if ours.beam == 1 else f"beam {ours.beam}"
        print(f"| {ours.precision} | {search} | {ratio:.2f}× | {min(ratios):.2f}× – {max(ratios):.2f}× | {gap:+.2f} | {met} |")
    if step_rows:
        print("\n| precision | live rows | seqlab ms / step | CTranslate2 ms / step | ratio |\n| --- | --- | --- | --- | --- |")
        for precision, rows, ours, theirs in step_rows:
            print(f"| {precision} | {rows} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | {ours / theirs:.2f}× |")
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("ctranslate2_decode", main))
