"""The `seqlab` command: train | tour (and, per era, eval | translate | sample | average | export | serve)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

from seqlab.errors import UserError, report_user_errors

MAX_TEMPERATURE = 100.0  # beyond this every distribution is uniform to within float precision


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from seqlab.config import load_config
    from seqlab.training import train

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out_dir={args.out}")
    config = load_config(args.config, overrides)
    try:
        result = train(config, out_dir=config.out_dir, resume=args.resume, resume_from=args.resume_from)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    if result.stop_reason == "diverged":
        print(f"seqlab train: error: the run diverged ({result.message}); see {config.out_dir}/final_metrics.json. "
              "Lower train.lr or set train.grad_clip, then resume or start anew.", file=sys.stderr)
        return 3
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

    from seqlab.data.vocab import Vocab
    from seqlab.inference.sampling import encode_prompt, load_language_model, sample

    if args.num < 1 or args.max_len < 1:
        raise UserError("--num and --max-len must be at least 1.")
    if not 0 <= args.temperature <= MAX_TEMPERATURE:
        raise UserError(f"--temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}, got {args.temperature}.")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}.")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}.")
    lm = load_language_model(args.checkpoint)
    text, prompt = encode_prompt(lm, args.prompt)
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


def _stdin_lines() -> Iterator[str]:
    """Lines of stdin, decoded by the same UTF-8 rule as --input files."""
    from seqlab.data.parallel import decode_line

    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text stream that is already decoded (e.g. in tests)
        yield from (line.rstrip("\r\n") for line in sys.stdin)
        return
    for number, raw in enumerate(binary, start=1):
        yield decode_line(raw.rstrip(b"\n"), "stdin", number)


def _read_text_lines(path: str | None) -> list[str]:
    """Lines of --input FILE (plain or .gz, UTF-8) or of stdin."""
    from seqlab.data.parallel import read_lines

    return read_lines(path) if path is not None else list(_stdin_lines())


def _check_decoding(args: argparse.Namespace) -> None:
    """The decoding options translate and eval share, checked once."""
    if args.beam < 1:
        raise UserError(f"--beam must be at least 1 (1 = greedy), got {args.beam}.")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.max_src_len is not None and args.max_src_len < 1:
        raise UserError(f"--max-src-len must be at least 1, got {args.max_src_len}.")
    if not 0 <= args.length_penalty <= 10:
        raise UserError(f"--length-penalty must be a number from 0 to 10, got {args.length_penalty}.")
    if args.patience is not None and not 0 < args.patience <= 10:
        raise UserError(f"--patience must be a number above 0 and at most 10 (1: stop at the first beam-size "
                        f"finished hypotheses), got {args.patience}.")


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

    _check_decoding(args)
    folder = Path(args.attention_dir) if args.attention_dir else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UserError(f"--attention-dir {folder} is a file; give a directory for the heatmaps.")
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device, quantize=args.quantize)
    options = dict(beam_size=args.beam, length_penalty=args.length_penalty, batch_size=args.batch_size, max_src_len=args.max_src_len,
                   patience=args.patience,
                   attention=folder is not None)  # attention rows only for heatmaps: decoding is faster without
    interactive = args.input is None and sys.stdin.isatty()
    chunks = ([line] for line in _stdin_lines()) if interactive else [_read_text_lines(args.input)]
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

    _check_decoding(args)
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device, quantize=args.quantize)
    pairs = read_parallel(args.src, args.ref)
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    began = time.perf_counter()
    translations = translator.translate(sources, beam_size=args.beam, length_penalty=args.length_penalty,
                                        batch_size=args.batch_size, max_src_len=args.max_src_len, attention=False,
                                        patience=args.patience)
    seconds = time.perf_counter() - began
    hypotheses = [t.text for t in translations]
    tokenize = args.tokenize or translator.codecs.bleu_tokenize
    lengths = [len(t.source_tokens) - 1 if t.source_tokens else 0 for t in translations]
    scores = score_translations(hypotheses, references, lengths, tokenize=tokenize, lowercase=args.lowercase)
    print(scores.summary())
    stop = "" if args.patience is None else f", patience {args.patience}"
    search = "greedy" if args.beam == 1 else f"beam {args.beam}, length penalty {args.length_penalty}{stop}"
    print(f"decoding: {search}; {len(sources)} sentences in {seconds:.1f} s")
    if args.hypotheses:
        save_hypotheses(args.hypotheses, sources, hypotheses, references, tokenize)
        print(f"per-sentence hypotheses: {args.hypotheses}")
    if args.json:
        record = {**scores.to_dict(), "beam": args.beam, "patience": args.patience, "seconds": seconds}
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from seqlab.inference.export import export_ctranslate2

    out = export_ctranslate2(args.checkpoint, args.out, args.quantization, args.force)
    print(f"CTranslate2 model ({args.quantization}) written to {out}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from seqlab.training.checkpoint import average_last

    if args.out and len(args.last) > 1:
        raise UserError(f"--out names one checkpoint, but --last gives {len(args.last)} counts; "
                        "give one count, or drop --out to write each average into the run.")
    run = Path(args.run)
    averages = [average_last(run, count, Path(args.out) if args.out else None) for count in args.last]
    for paths, out in averages:
        print(f"averaged {', '.join(p.name for p in paths)} into {out}")
    if args.evaluate:
        newest = averages[0][0][-1]  # every window ends at the newest step checkpoint
        _print_split_losses({f"newest ({newest.name})": newest,
                             **{f"mean of the last {len(paths)}": out for paths, out in averages}})
    return 0


def _print_split_losses(checkpoints: dict[str, Path]) -> None:
    """Validation and test loss of each checkpoint, scored by the trainer of the run they come from, and the
    one that validation picks. The task is rebuilt from the run's config; its vocabulary must be the saved one."""
    from seqlab.config import config_from_dict
    from seqlab.training import Trainer
    from seqlab.training.checkpoint import read_meta

    trainer = Trainer(config_from_dict(read_meta(next(iter(checkpoints.values())))["config"]), out_dir=None)
    losses = {}
    for name, path in checkpoints.items():
        trainer.load_weights(path)
        losses[name] = (trainer.evaluate("val")["loss"], trainer.evaluate("test")["loss"])
        print(f"{name}: validation loss {losses[name][0]:.4f}, test loss {losses[name][1]:.4f}", flush=True)
    picked = min(losses, key=lambda name: losses[name][0])
    print(f"validation picks the {picked}: test loss {losses[picked][1]:.4f}")


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    import torch
    import uvicorn

    from seqlab.serve import ServeLimits, ServeSettings, create_app, load_served_models

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be in 1–65535, got {args.port}.")
    if args.batch_wait_ms < 0 or args.max_batch < 1:
        raise UserError("--batch-wait-ms must be ≥ 0 and --max-batch at least 1.")
    torch.set_num_threads(args.threads)
    limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_texts=args.max_texts, max_beam=args.max_beam,
                         max_tokens=args.max_tokens)
    api_key = args.api_key or os.environ.get("SEQLAB_API_KEY") or None
    settings = ServeSettings(limits=limits, api_key=api_key, batching=not args.no_batching,
                             batch_wait_ms=args.batch_wait_ms, max_batch_sentences=args.max_batch)
    models = load_served_models(args.runs)
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        print(f"seqlab serve: warning: listening on {args.host} without --api-key: anyone who reaches it can use it",
              file=sys.stderr)
    names = ", ".join(f"{name} ({served.info.kind})" for name, served in models.items())
    print(f"serving {names} on http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again: end with status 0 then.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(create_app(models, settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=args.graceful_timeout)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_neighbours(args: argparse.Namespace) -> int:
    from seqlab.inference.vectors import load_vectors, query_neighbours

    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}.")
    neighbours, unseen = query_neighbours(load_vectors(args.run), args.word, args.k)
    if unseen:
        print(f"{args.word!r} is not in the vocabulary: its vector is the sum of its character n-grams")
    for item in neighbours:
        print(f"{item.word:20s} {item.cosine:.4f}")
    return 0


def cmd_export_vectors(args: argparse.Namespace) -> int:
    from seqlab.inference.vectors import export_word2vec, load_vectors

    vectors = load_vectors(args.run)
    rows = export_word2vec(vectors, args.out)
    print(f"{rows} vectors of dimension {vectors.vectors.shape[1]} written to {args.out} (word2vec text format)")
    return 0


def _add_decoding_options(command: argparse.ArgumentParser) -> None:
    """The decoding options of translate and eval (checked by `_check_decoding`)."""
    group = command.add_argument_group("decoding")
    group.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy (default)")
    group.add_argument("--length-penalty", type=float, default=0.6, help="α of Wu et al. 2016 (default 0.6)")
    group.add_argument("--patience", type=float,
                       help="stop a sentence's beam once round(P · beam) hypotheses end, as fairseq and CTranslate2 "
                            "do (faster; default: once no live hypothesis can still win)")
    group.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (default 64)")
    group.add_argument("--max-src-len", type=int, help="longest source line in tokens (default: the training limit)")
    group.add_argument("--device", default="cpu")
    group.add_argument("--quantize", choices=["int8"], help="decode with int8 Linear layers (torch.ao dynamic, CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", help="YAML run config (see configs/)")
    train.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a config key")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    train.add_argument("--resume-from", metavar="STEP", help="continue from this step's checkpoint (e.g. before a divergence)")
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
    translate.add_argument("--attention-dir", help="write one attention heatmap PNG per sentence here")
    _add_decoding_options(translate)
    translate.set_defaults(func=cmd_translate)

    evaluate = commands.add_parser("eval", help="BLEU, chrF and BLEU by length of a seq2seq checkpoint on a test set")
    evaluate.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else latest)")
    evaluate.add_argument("--src", required=True, help="source sentences, one per line (plain or .gz)")
    evaluate.add_argument("--ref", required=True, help="reference translations, line-aligned with --src")
    evaluate.add_argument("--tokenize", choices=["13a", "none", "intl", "char"],
                          help="sacreBLEU tokenisation (default: the one stored with the task)")
    evaluate.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU")
    evaluate.add_argument("--hypotheses", help="write per-sentence hypotheses with sentence BLEU (JSON lines) here")
    evaluate.add_argument("--json", help="write the scores as JSON here")
    _add_decoding_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    export = commands.add_parser("export", help="convert a Transformer checkpoint for a deployment engine")
    export.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its best, else latest)")
    export.add_argument("--format", required=True, choices=["ctranslate2"], help="target engine")
    export.add_argument("--out", required=True, help="directory to write the converted model to")
    export.add_argument("--quantization", choices=["float32", "int8"], default="float32",
                        help="weights stored as float32 (default) or int8")
    export.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    export.set_defaults(func=cmd_export)

    average = commands.add_parser("average", help="average a run's last checkpoints into one weights-only checkpoint")
    average.add_argument("run", help="a run directory")
    average.add_argument("--last", type=int, nargs="+", default=[5],
                         help="how many of its newest step checkpoints (default 5); several counts write one average each")
    average.add_argument("--out", help="checkpoint directory to write (default: RUN/checkpoints/average_last_N)")
    average.add_argument("--evaluate", action="store_true",
                         help="also print validation and test loss of the newest checkpoint and of each average, "
                              "and the one validation picks")
    average.set_defaults(func=cmd_average)

    serve = commands.add_parser("serve", help="serve checkpoints over HTTP: translate, generate, a web page")
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run or checkpoint directories; NAME=PATH names one")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="require this key on every request but /healthz (default: $SEQLAB_API_KEY)")
    serve.add_argument("--no-batching", action="store_true", help="decode each translate request alone")
    serve.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch gathers requests (default 5)")
    serve.add_argument("--max-batch", type=int, default=64, help="most sentences in one batched search (default 64)")
    serve.add_argument("--max-texts", type=int, default=32, help="most texts in one translate request (default 32)")
    serve.add_argument("--max-beam", type=int, default=8, help="largest beam a request may ask for (default 8)")
    serve.add_argument("--max-tokens", type=int, default=512, help="most tokens one generate request may ask for")
    serve.add_argument("--max-body-bytes", type=int, default=65536, help="largest request body (default 64 KiB)")
    serve.add_argument("--threads", type=int, default=1, help="torch CPU threads for the models (default 1)")
    serve.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds SIGTERM waits for requests in flight")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)

    neighbours = commands.add_parser("neighbours", help="nearest neighbours of a word by cosine in a word-vector run")
    neighbours.add_argument("run", help="a word-vector run or checkpoint directory")
    neighbours.add_argument("word")
    neighbours.add_argument("--k", type=int, default=10, help="how many neighbours (default 10)")
    neighbours.set_defaults(func=cmd_neighbours)

    export_vectors = commands.add_parser("export-vectors", help="write a word-vector run in word2vec text format")
    export_vectors.add_argument("run", help="a word-vector run or checkpoint directory")
    export_vectors.add_argument("--out", required=True, help="the text file to write")
    export_vectors.set_defaults(func=cmd_export_vectors)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(f"seqlab {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
