"""The language-model ladders at a fixed step budget: each configs/lm/names_*.yaml (or, with `--corpus
shakespeare`, each shakespeare_*.yaml) trained for N steps, test loss per model.

Every config is trained by the one `seqlab` trainer for exactly `--steps` updates (its time budget and periodic
evaluation switched off, nothing else changed) and evaluated on a test split of `--test-names` names. The
validation split is cut to `--val-names` names so that the training split is about makemore's (it trains on
all but its 1,000 test names). The table puts each model's test loss and parameter count next to makemore's
figures measured on this machine (batch 32, 5,000 steps, AdamW 5e-4; issue 7). With `--long` the
`names_*_long.yaml` configs run instead, each for its own number of steps, against issue 7's target for them.
The tinyshakespeare ladder keeps each config's own validation and test split and has no makemore column.

    python benchmarks/lm_ladder.py --threads 1                      # every names_*.yaml, 5,000 steps
    python benchmarks/lm_ladder.py --long --threads 1               # names_transformer_long.yaml, 12,000 steps
    python benchmarks/lm_ladder.py --only names_gru names_transformer --steps 1000 --threads 1
    python benchmarks/lm_ladder.py --only names_delta names_performer names_moe --threads 1   # issue 12's rungs
    python benchmarks/lm_ladder.py --only names_ssm names_selective_ssm --threads 1          # S4D and Mamba rungs
    python benchmarks/lm_ladder.py --corpus shakespeare --steps 1000 --threads 1 --only shakespeare_transformer \
        shakespeare_ssm shakespeare_selective_ssm shakespeare_delta shakespeare_performer shakespeare_moe

Rungs without a makemore counterpart (LSTM, WaveNet, linear Transformer, delta rule, Performer, mixture of
experts, S4D and selective state-space models) print "—" in its column; `names_moe` matches names_transformer's FLOPs per token, not its parameters.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from seqlab.config import load_config, read_yaml
from seqlab.errors import report_user_errors
from seqlab.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "lm"

# makemore at its defaults on names.txt: (its model, test loss, parameters); None where it has no counterpart.
MAKEMORE: dict[str, tuple[str, float, int | None]] = {
    "names_bigram": ("bigram", 2.50, None),
    "names_mlp": ("mlp", 2.09, 69_000),
    "names_elman": ("rnn", 2.11, 12_000),
    "names_gru": ("gru", 2.08, 28_000),
    "names_transformer": ("transformer", 2.01, 205_000),
    "names_bow": ("bow", 2.22, None),
    "names_transformer_long": ("target for a longer-trained transformer", 1.90, None),
}


def split_fractions(config_path: Path, val_names: int, test_names: int) -> tuple[float, float]:
    """The task.val_fraction and task.test_fraction that leave exactly these many lines in each split."""
    data = Path(read_yaml(config_path)["task"]["path"])
    if not data.is_file():
        raise SystemExit(f"{config_path.name} reads {data}, which does not exist here; run from the repository root.")
    lines = sum(1 for line in data.read_text(encoding="utf-8").splitlines() if line.strip())
    return (val_names + 0.5) / lines, (test_names + 0.5) / lines


def run_rung(path: Path, steps: int | None, val_names: int | None, test_names: int | None,
             threads: int | None) -> dict[str, float]:
    """Trains one config (for `steps` updates, or its own number if None) and returns its test loss; with
    `val_names` and `test_names` its splits are cut to that many lines."""
    overrides = ["train.time_budget_s=null", "train.eval_every=0", "train.early_stopping=null", "train.progress=false"]
    if val_names is not None and test_names is not None:
        val_fraction, test_fraction = split_fractions(path, val_names, test_names)
        overrides += [f"task.val_fraction={val_fraction}", f"task.test_fraction={test_fraction}"]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    if threads:
        overrides.append(f"train.threads={threads}")
    began = time.perf_counter()
    result = Trainer(load_config(path, overrides)).fit()
    return {"test_loss": result.final["test"]["loss"], "parameters": result.parameters,
            "seconds": time.perf_counter() - began}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["names", "shakespeare"], default="names",
                        help="which ladder: configs/lm/names_*.yaml (default) or shakespeare_*.yaml")
    parser.add_argument("--steps", type=int, default=5000, help="updates per model (default 5000, makemore's)")
    parser.add_argument("--test-names", type=int, default=1000, help="names in the test split (default 1000)")
    parser.add_argument("--val-names", type=int, default=100, help="names in the validation split (default 100)")
    parser.add_argument("--long", action="store_true", help="the names_*_long.yaml configs, at their own steps")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="config stems, e.g. names_gru (default: all)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = [p for p in sorted(CONFIGS.glob(f"{args.corpus}_*.yaml")) if p.stem.endswith("_long") == args.long]
    names = args.corpus == "names"
    if args.only:
        unknown = set(args.only) - {p.stem for p in paths}
        if unknown:
            known = ", ".join(p.stem for p in paths)
            raise SystemExit(f"no config {', '.join(sorted(unknown))} in {CONFIGS}; known: {known}")
        paths = [p for p in paths if p.stem in args.only]
    print(f"{'config':<26} {'test loss':>9} {'params':>9} {'seconds':>8}   makemore (loss, params)", flush=True)
    for path in paths:
        figures = run_rung(path, None if args.long else args.steps, args.val_names if names else None,
                           args.test_names if names else None, args.threads)
        reference = MAKEMORE.get(path.stem)
        versus = "—"
        if reference is not None:
            model, loss, params = reference
            verdict = "equal or lower" if figures["test_loss"] <= loss else "higher"
            size = f" ({params:,} params)" if params else ""
            versus = f"{model} {loss:.2f}{size}, seqlab {verdict}"
        row = f"{figures['test_loss']:>9.3f} {figures['parameters']:>9,} {figures['seconds']:>8.1f}"
        print(f"{path.stem:<26} {row}   {versus}", flush=True)
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("lm_ladder", main))
