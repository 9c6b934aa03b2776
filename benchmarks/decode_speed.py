"""Decoding speed and BLEU of a translation checkpoint on Multi30k test_2016_flickr (1,000 sentences).

Each search (greedy, beam B) translates the whole test set once through `seqlab.inference.Translator`
and is scored by `seqlab.evaluation.bleu.score_translations` with the checkpoint's own BLEU settings,
exactly as `seqlab eval` does; the figures are seconds, sentences/s and BLEU.

    python benchmarks/decode_speed.py /work/runs/bahdanau --threads 1
    python benchmarks/decode_speed.py runs/multi30k/transformer --beams 1 5 --batch-size 128
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from seqlab.data.parallel import read_parallel
from seqlab.errors import report_user_errors
from seqlab.evaluation.bleu import score_translations
from seqlab.inference.translate import Translator

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k" / "tok"
TEST_SRC = DATA / "test_2016_flickr.lc.norm.tok.de"
TEST_REF = DATA / "test_2016_flickr.lc.norm.tok.en"


@dataclass
class DecodeResult:
    beam: int
    sentences: int
    seconds: float
    bleu: float

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds

    def line(self) -> str:
        search = "greedy" if self.beam == 1 else f"beam {self.beam}"
        return (f"{search:>8}: {self.sentences} sentences in {self.seconds:6.1f} s "
                f"({self.sentences_per_s:6.1f} sentences/s), BLEU {self.bleu:5.2f}")


def decode_test_set(
    translator: Translator, beam: int, src: Path = TEST_SRC, ref: Path = TEST_REF, batch_size: int = 64,
    length_penalty: float = 0.6,
) -> DecodeResult:
    """Translate every line of `src` with one search and score it against `ref` (the `seqlab eval` protocol)."""
    pairs = read_parallel(src, ref)
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    began = time.perf_counter()
    translations = translator.translate(sources, beam_size=beam, length_penalty=length_penalty, batch_size=batch_size,
                                        attention=False)
    seconds = time.perf_counter() - began
    scores = score_translations([t.text for t in translations], references, tokenize=translator.codecs.bleu_tokenize)
    return DecodeResult(beam, len(sources), seconds, scores.bleu)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else latest)")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5], help="beam sizes; 1 = greedy (default: 1 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (default 64)")
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--src", type=Path, default=TEST_SRC)
    parser.add_argument("--ref", type=Path, default=TEST_REF)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
    print(f"checkpoint {args.checkpoint}; {torch.get_num_threads()} thread(s); device {args.device}")
    for beam in args.beams:
        print(decode_test_set(translator, beam, args.src, args.ref, args.batch_size, args.length_penalty).line(),
              flush=True)
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("decode_speed", main))
