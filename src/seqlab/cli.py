"""The `seqlab` command: train | tour (and, per era, eval | translate | sample)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from seqlab.errors import UserError, report_user_errors


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from seqlab.config import load_config
    from seqlab.training import train

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out_dir={args.out}")
    config = load_config(args.config, overrides)
    try:
        result = train(config, out_dir=config.out_dir, resume=args.resume)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    for split, metrics in result.final.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"{split}: {shown}")
    print(f"{result.steps} steps in {result.seconds:.1f} s; {result.parameters:,} parameters; run in {config.out_dir}")
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from seqlab.experiments import EXPERIMENTS
    from seqlab.tour import run_tour, select

    if args.list:
        for exp in EXPERIMENTS.values():
            print(f"{exp.name:32s} {exp.era:12s} {exp.claim[:100]}")
        return 0
    mode = "full" if args.full else "quick"
    chosen = select(args.only)
    print(f"seqlab tour ({mode}): {len(chosen)} experiment(s) → {args.out}", flush=True)

    def show(record: dict) -> None:
        print(f"  {record['name']:32s} {record['seconds']:7.1f} s  {record['verdict']}", flush=True)
        if record["verdict"] == "error":
            print(f"    {record['error']}", flush=True)

    report = run_tour(mode, Path(args.out), only=args.only, seed=args.seed, on_result=show)
    print(f"total {report['seconds']:.1f} s; report: {Path(args.out) / 'index.html'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from seqlab.data.text import tokenize
    from seqlab.data.vocab import Vocab
    from seqlab.inference.sampling import load_language_model, sample

    if args.num < 1 or args.max_len < 1:
        raise UserError("--num and --max-len must be at least 1.")
    if args.temperature < 0:
        raise UserError(f"--temperature must be ≥ 0 (0 = greedy), got {args.temperature}.")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}.")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}.")
    lm = load_language_model(args.checkpoint)
    text = args.prompt if args.prompt is not None else ("" if lm.line_format else "\n")
    tokens = tokenize(text, lm.level)  # type: ignore[arg-type]
    unknown = sorted({t for t in tokens if t not in lm.vocab.stoi})
    if unknown:
        raise UserError(f"the prompt holds tokens this model's vocabulary lacks: {unknown[:10]}; change --prompt.")
    prompt = ([Vocab.bos_id] if lm.line_format else []) + lm.vocab.encode(tokens)
    if not prompt:
        raise UserError("this model continues running text: give a non-empty --prompt.")
    generator = torch.Generator().manual_seed(args.seed)
    try:
        eos = Vocab.eos_id if lm.line_format else None  # running text has no <eos>: it never ends
        banned = (Vocab.pad_id, Vocab.bos_id) + (() if lm.line_format else (Vocab.eos_id,))
        samples = sample(lm.model, args.num, args.max_len, prompt, args.temperature, args.top_k, args.top_p,
                         eos, generator, banned)
    except ValueError as err:
        raise UserError(f"cannot sample {args.max_len} tokens from this model: {err}.") from None
    for ids in samples:
        print(text + lm.joiner.join(lm.vocab.decode(ids)))
        if not lm.line_format:
            print("---")
    return 0


def _read_text_lines(path: str | None) -> list[str]:
    """Lines of --input FILE (plain or .gz, UTF-8) or of stdin."""
    from seqlab.data.parallel import read_lines

    if path is not None:
        return read_lines(path)
    return [line.rstrip("\r\n") for line in sys.stdin]


def _write_heatmaps(translations: list, folder: Path, first_line: int) -> int:
    from seqlab.diagnostics.attention_maps import save_attention_map

    written = 0
    for number, item in enumerate(translations, start=first_line):
        if item.attention is not None and item.tokens:
            save_attention_map(item.attention, item.source_tokens, item.tokens, folder / f"line{number:05d}.png", title=f"line {number}")
            written += 1
    return written


def cmd_translate(args: argparse.Namespace) -> int:
    from seqlab.inference.translate import Translator

    if args.beam < 1:
        raise UserError(f"--beam must be at least 1, got {args.beam}.")
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
    options = dict(beam_size=args.beam, length_penalty=args.length_penalty, batch_size=args.batch_size, max_src_len=args.max_src_len)
    folder = Path(args.attention_dir) if args.attention_dir else None
    interactive = args.input is None and sys.stdin.isatty()
    chunks = ([line.rstrip("\r\n")] for line in sys.stdin) if interactive else [_read_text_lines(args.input)]
    number, heatmaps = 1, 0
    for lines in chunks:
        translations = translator.translate(lines, first_line=number, **options)
        for item in translations:
            print(item.text, flush=interactive)
        if folder is not None:
            heatmaps += _write_heatmaps(translations, folder, number)
        number += len(lines)
    if folder is not None:
        note = "" if heatmaps else " (this model has no attention, or every line was empty)"
        print(f"{heatmaps} attention heatmap(s) written to {folder}{note}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    import time

    from seqlab.data.parallel import read_parallel
    from seqlab.evaluation.bleu import save_hypotheses, score_translations
    from seqlab.inference.translate import Translator

    translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
    pairs = read_parallel(args.src, args.ref)
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    began = time.perf_counter()
    translations = translator.translate(sources, beam_size=args.beam, length_penalty=args.length_penalty,
                                        batch_size=args.batch_size, max_src_len=args.max_src_len)
    seconds = time.perf_counter() - began
    hypotheses = [t.text for t in translations]
    tokenize = args.tokenize or translator.codecs.bleu_tokenize
    lengths = [len(t.source_tokens) - 1 if t.source_tokens else 0 for t in translations]
    scores = score_translations(hypotheses, references, lengths, tokenize=tokenize, lowercase=args.lowercase)
    print(scores.summary())
    search = "greedy" if args.beam == 1 else f"beam {args.beam}, length penalty {args.length_penalty}"
    print(f"decoding: {search}; {len(sources)} sentences in {seconds:.1f} s")
    if args.hypotheses:
        save_hypotheses(args.hypotheses, sources, hypotheses, references, tokenize)
        print(f"per-sentence hypotheses: {args.hypotheses}")
    if args.json:
        Path(args.json).write_text(json.dumps({**scores.to_dict(), "beam": args.beam, "seconds": seconds}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", help="YAML run config (see configs/)")
    train.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config key")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    train.add_argument("--out", help="run directory (same as --set out_dir=...)")
    train.set_defaults(func=cmd_train)

    tour = commands.add_parser("tour", help="run the history tour and write its report")
    speed = tour.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="small, fast versions (default)")
    speed.add_argument("--full", action="store_true", help="longer, more thorough versions")
    tour.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    tour.add_argument("--list", action="store_true", help="list experiments with era and claim")
    tour.add_argument("--out", default="tour", help="report directory (default: ./tour)")
    tour.add_argument("--seed", type=int, default=0)
    tour.set_defaults(func=cmd_tour)

    sample = commands.add_parser("sample", help="sample text from a language-model checkpoint")
    sample.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else latest)")
    sample.add_argument("--num", type=int, default=10, help="how many samples (default 10)")
    sample.add_argument("--max-len", type=int, default=200, help="most new tokens per sample (default 200)")
    sample.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy")
    sample.add_argument("--top-k", type=int, help="sample only among the k most probable tokens")
    sample.add_argument("--top-p", type=float, help="sample only within the nucleus of probability p")
    sample.add_argument("--prompt", help="text to continue (default: a new line / a new sequence)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample)

    translate = commands.add_parser("translate", help="translate lines with a seq2seq checkpoint")
    translate.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else latest)")
    translate.add_argument("--input", help="file of source lines (plain or .gz); default: stdin")
    translate.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy (default)")
    translate.add_argument("--length-penalty", type=float, default=0.6, help="α of Wu et al. 2016 (default 0.6)")
    translate.add_argument("--attention-dir", help="write one attention heatmap PNG per sentence here")
    translate.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (default 64)")
    translate.add_argument("--max-src-len", type=int, help="longest source line in tokens (default: the training limit)")
    translate.add_argument("--device", default="cpu")
    translate.set_defaults(func=cmd_translate)

    evaluate = commands.add_parser("eval", help="BLEU, chrF and BLEU by length of a seq2seq checkpoint on a test set")
    evaluate.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else latest)")
    evaluate.add_argument("--src", required=True, help="source sentences, one per line (plain or .gz)")
    evaluate.add_argument("--ref", required=True, help="reference translations, line-aligned with --src")
    evaluate.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy (default)")
    evaluate.add_argument("--length-penalty", type=float, default=0.6, help="α of Wu et al. 2016 (default 0.6)")
    evaluate.add_argument("--tokenize", choices=["13a", "none", "intl", "char"],
                          help="sacreBLEU tokenisation (default: the one stored with the task)")
    evaluate.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU")
    evaluate.add_argument("--hypotheses", help="write per-sentence hypotheses with sentence BLEU (JSON lines) here")
    evaluate.add_argument("--json", help="write the scores as JSON here")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--max-src-len", type=int, help="longest source line in tokens (default: the training limit)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(func=cmd_eval)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(f"seqlab {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
