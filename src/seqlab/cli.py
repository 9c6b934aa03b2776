"""The `seqlab` command: train | tour (and, per era, eval | translate | sample)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from seqlab.errors import UserError


def cmd_train(args: argparse.Namespace) -> int:
    from seqlab.config import load_config
    from seqlab.training import train

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out_dir={args.out}")
    config = load_config(args.config, overrides)
    result = train(config, out_dir=config.out_dir, resume=args.resume)
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

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"seqlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
