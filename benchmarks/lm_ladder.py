"""The names ladder at a fixed step budget: each configs/lm/names_*.yaml trained for N steps, test loss per model.

Every config is trained by the one `seqlab` trainer for exactly `--steps` updates (its time budget and periodic
evaluation switched off, nothing else changed) and evaluated on a test split of `--test-names` names. The
table puts each model's test loss and parameter count next to makemore's figures measured on this machine
(batch 32, 5,000 steps, AdamW 5e-4; issue 7).

    python benchmarks/lm_ladder.py --threads 1                      # every names_*.yaml, 5,000 steps
    python benchmarks/lm_ladder.py --only names_gru names_transformer --steps 1000 --threads 1
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from seqlab.config import load_config, read_yaml
from seqlab.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "lm"

# makemore at its defaults on names.txt: (its model, test loss, parameters); None where it has no counterpart.
MAKEMORE: dict[str, tuple[str, float, int | None]] = {
    "names_bigram": ("bigram", 2.50, None),
    "names_mlp": ("mlp", 2.09, 69_000),
    "names_elman": ("rnn", 2.11, 12_000),
    "names_gru": ("gru", 2.08, 28_000),
    "names_transformer": ("transformer", 2.01, 205_000),
}
MAKEMORE_ONLY = {"bow": 2.22}  # makemore's bag-of-words model: no seqlab config on this ladder yet


def test_fraction(config_path: Path, names: int) -> float:
    """The task.test_fraction that leaves exactly `names` lines in the test split."""
    data = Path(read_yaml(config_path)["task"]["path"])
    lines = sum(1 for line in data.read_text(encoding="utf-8").splitlines() if line.strip())
    return (names + 0.5) / lines


def run_rung(path: Path, steps: int, test_names: int, threads: int | None) -> dict[str, float]:
    overrides = [
        f"train.steps={steps}", "train.time_budget_s=null", "train.eval_every=0", "train.early_stopping=null",
        "train.progress=false", f"task.test_fraction={test_fraction(path, test_names)}",
    ]
    if threads:
        overrides.append(f"train.threads={threads}")
    began = time.perf_counter()
    result = Trainer(load_config(path, overrides)).fit()
    return {"test_loss": result.final["test"]["loss"], "parameters": result.parameters,
            "seconds": time.perf_counter() - began}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="updates per model (default 5000, makemore's)")
    parser.add_argument("--test-names", type=int, default=1000, help="names in the test split (default 1000)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="config stems, e.g. names_gru (default: all)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = sorted(CONFIGS.glob("names_*.yaml"))
    if args.only:
        unknown = set(args.only) - {p.stem for p in paths}
        if unknown:
            known = ", ".join(p.stem for p in paths)
            raise SystemExit(f"no config {', '.join(sorted(unknown))} in {CONFIGS}; known: {known}")
        paths = [p for p in paths if p.stem in args.only]
    print(f"{'config':<26} {'test loss':>9} {'params':>9} {'seconds':>8}   makemore (loss, params)", flush=True)
    for path in paths:
        figures = run_rung(path, args.steps, args.test_names, args.threads)
        reference = MAKEMORE.get(path.stem)
        versus = "—"
        if reference is not None:
            model, loss, params = reference
            verdict = "equal or lower" if figures["test_loss"] <= loss else "higher"
            size = f" ({params:,} params)" if params else ""
            versus = f"{model} {loss:.2f}{size}, seqlab {verdict}"
        row = f"{figures['test_loss']:>9.3f} {figures['parameters']:>9,} {figures['seconds']:>8.1f}"
        print(f"{path.stem:<26} {row}   {versus}", flush=True)
    for model, loss in MAKEMORE_ONLY.items():
        print(f"{'(no config)':<26} {'—':>9} {'—':>9} {'—':>8}   {model} {loss:.2f}")
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
